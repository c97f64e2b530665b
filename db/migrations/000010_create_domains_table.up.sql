-- 000010 domains: host names routed to an app by the reverse proxy on its
-- server, with TLS. Certificates are obtained and renewed on the server (ACME
-- HTTP-01 by the agent's proxy) so private keys never leave it; this table
-- keeps the desired state and what the agent last reported.

CREATE TABLE domains (
    id                  uuid        PRIMARY KEY,
    app_id              uuid        NOT NULL,
    -- Always the app's server (composite FK below); ON UPDATE CASCADE carries
    -- the domains along when an app moves to another server.
    server_id           uuid        NOT NULL,
    -- Lowercase, no trailing dot; IDNs in punycode; '*.' only as first label.
    hostname            text        NOT NULL,
    -- The app's canonical name (used for generated links); one per app.
    is_primary          boolean     NOT NULL DEFAULT false,
    -- When set, this host only redirects (e.g. www -> apex) to this URL or host.
    redirect_to         text,
    redirect_status     smallint    NOT NULL DEFAULT 301,
    force_https         boolean     NOT NULL DEFAULT true,
    -- Routing on the server: pending (not yet applied by the agent), active,
    -- failed (see last_error).
    status              text        NOT NULL DEFAULT 'pending',
    last_error          text,
    -- off: plain HTTP; acme: automatic certificates (Let's Encrypt unless
    -- acme_directory_url names another CA); custom: a certificate the operator
    -- placed on the server at tls_cert_path / tls_key_path (paths, not keys).
    tls_mode            text        NOT NULL DEFAULT 'acme',
    acme_directory_url  text,
    tls_cert_path       text,
    tls_key_path        text,
    tls_status          text        NOT NULL DEFAULT 'pending',
    tls_issuer          text,
    tls_not_before      timestamptz,
    tls_expires_at      timestamptz,
    tls_last_attempt_at timestamptz,
    -- Next issuance/renewal attempt (backoff after failures).
    tls_next_attempt_at timestamptz,
    tls_last_error      text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT domains_app_server_fkey FOREIGN KEY (app_id, server_id)
        REFERENCES apps (id, server_id) ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT domains_server_id_fkey FOREIGN KEY (server_id)
        REFERENCES servers (id) ON DELETE RESTRICT,
    CONSTRAINT domains_hostname_check CHECK (
        char_length(hostname) <= 253
        AND hostname ~ '^(\*\.)?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$'
    ),
    CONSTRAINT domains_redirect_status_check CHECK (redirect_status IN (301, 302, 307, 308)),
    CONSTRAINT domains_redirect_to_check CHECK (redirect_to IS NULL OR redirect_to <> ''),
    CONSTRAINT domains_status_check CHECK (status IN ('pending', 'active', 'failed')),
    CONSTRAINT domains_tls_mode_check CHECK (tls_mode IN ('off', 'acme', 'custom')),
    CONSTRAINT domains_tls_status_check CHECK (tls_status IN ('disabled', 'pending', 'issuing', 'active', 'failed', 'expired')),
    CONSTRAINT domains_tls_off_check CHECK ((tls_mode = 'off') = (tls_status = 'disabled')),
    CONSTRAINT domains_tls_custom_check CHECK (
        (tls_mode = 'custom') = (tls_cert_path IS NOT NULL AND tls_key_path IS NOT NULL)
    ),
    CONSTRAINT domains_tls_active_check CHECK (tls_status <> 'active' OR tls_expires_at IS NOT NULL)
);

CREATE UNIQUE INDEX domains_hostname_key ON domains (hostname);
CREATE UNIQUE INDEX domains_one_primary_per_app_key ON domains (app_id) WHERE is_primary;
CREATE INDEX domains_app_id_server_id_idx ON domains (app_id, server_id);
CREATE INDEX domains_server_id_idx ON domains (server_id);
CREATE INDEX domains_status_idx ON domains (status);
CREATE INDEX domains_tls_mode_idx ON domains (tls_mode);
CREATE INDEX domains_tls_status_idx ON domains (tls_status);
-- Renewal scan (certificates expiring within N days) and retry scheduling.
CREATE INDEX domains_tls_expires_at_idx ON domains (tls_expires_at) WHERE tls_mode = 'acme';
CREATE INDEX domains_tls_next_attempt_at_idx ON domains (tls_next_attempt_at) WHERE tls_next_attempt_at IS NOT NULL;

CREATE TRIGGER domains_set_updated_at BEFORE UPDATE ON domains
    FOR EACH ROW EXECUTE FUNCTION berth_set_updated_at();
