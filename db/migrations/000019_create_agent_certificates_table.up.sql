-- 000019 agent_certificates: every client certificate the controller CA
-- issued to an agent. The controller checks on every agent connection that
-- the presented serial is recorded here for that server and not revoked, so
-- removing or disabling a server shuts its agent out at once, whatever the
-- certificate's own expiry says.

CREATE TABLE agent_certificates (
    id            uuid        PRIMARY KEY,
    -- Removing a server removes its certificates with it: the server row is
    -- gone, so its agent is refused anyway; security_events keeps the trail.
    server_id     uuid        NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    -- Lowercase hex of the 128-bit random serial.
    serial        text        NOT NULL,
    -- enroll (join token) or renew (over the authenticated stream).
    issued_for    text        NOT NULL,
    not_before    timestamptz NOT NULL,
    not_after     timestamptz NOT NULL,
    revoked_at    timestamptz,
    revoke_reason text,
    created_at    timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT agent_certificates_serial_check CHECK (serial ~ '^[0-9a-f]{1,40}$'),
    CONSTRAINT agent_certificates_issued_for_check CHECK (issued_for IN ('enroll', 'renew')),
    CONSTRAINT agent_certificates_validity_check CHECK (not_after > not_before),
    CONSTRAINT agent_certificates_revoked_check CHECK ((revoked_at IS NULL) = (revoke_reason IS NULL))
);

CREATE UNIQUE INDEX agent_certificates_serial_key ON agent_certificates (serial);
CREATE INDEX agent_certificates_server_id_idx ON agent_certificates (server_id, not_after DESC);
CREATE INDEX agent_certificates_not_after_idx ON agent_certificates (not_after);
