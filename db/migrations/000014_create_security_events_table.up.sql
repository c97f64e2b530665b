-- 000014 security_events: the security audit log (failed-login bursts,
-- throttling, 2FA changes, recovery code use, TOTP replays, password changes
-- and resets, session and token revocation, user invites and disabling, agent
-- enrolment, certificates issued or revoked, servers removed, refused agent
-- connections). Rows outlive the users and servers they mention: both
-- references are SET NULL, and actor/details keep the human-readable names.
-- Retention: 90 days, weekly.

CREATE TABLE security_events (
    id         uuid        PRIMARY KEY,
    -- Dotted lowercase name, e.g. login.throttled, two_factor.enabled,
    -- totp.replayed, agent.connection_refused, certificate.revoked.
    type       text        NOT NULL,
    severity   text        NOT NULL DEFAULT 'info',
    -- The user acting or affected, if any.
    user_id    uuid        REFERENCES users (id) ON DELETE SET NULL,
    -- The server concerned, if any.
    server_id  uuid        REFERENCES servers (id) ON DELETE SET NULL,
    -- Display string: an email, 'token:<name>', 'agent:<server>', 'system'.
    actor      text        NOT NULL DEFAULT '',
    ip_address inet,
    user_agent text,
    -- Event specifics; never secrets (no passwords, codes, tokens or keys).
    details    jsonb       NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT security_events_type_check CHECK (type ~ '^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$'),
    CONSTRAINT security_events_severity_check CHECK (severity IN ('info', 'warning', 'critical')),
    CONSTRAINT security_events_details_check CHECK (jsonb_typeof(details) = 'object')
);

CREATE INDEX security_events_created_at_idx ON security_events (created_at DESC);
CREATE INDEX security_events_type_created_at_idx ON security_events (type, created_at DESC);
CREATE INDEX security_events_severity_created_at_idx ON security_events (severity, created_at DESC);
CREATE INDEX security_events_user_id_created_at_idx ON security_events (user_id, created_at DESC);
CREATE INDEX security_events_server_id_created_at_idx ON security_events (server_id, created_at DESC);
CREATE INDEX security_events_ip_address_idx ON security_events (ip_address);
