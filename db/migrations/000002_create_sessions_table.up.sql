-- 000002 sessions: browser login sessions. The cookie carries a random 256-bit
-- identifier; only its SHA-256 is stored, so a database dump cannot be replayed.

CREATE TABLE sessions (
    id           uuid        PRIMARY KEY,
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash   bytea       NOT NULL,
    -- pending_two_factor: password accepted, TOTP/recovery step not done yet
    -- (grants nothing but the 2FA form); active: fully authenticated. Login and
    -- the 2FA step each create a new session row (fixation defence).
    status       text        NOT NULL DEFAULT 'active',
    ip_address   inet,
    user_agent   text,
    -- Idle timeout is enforced against last_seen_at, the absolute one by expires_at.
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT sessions_token_hash_check CHECK (octet_length(token_hash) = 32),
    CONSTRAINT sessions_status_check CHECK (status IN ('pending_two_factor', 'active')),
    CONSTRAINT sessions_expires_at_check CHECK (expires_at > created_at)
);

CREATE UNIQUE INDEX sessions_token_hash_key ON sessions (token_hash);
CREATE INDEX sessions_user_id_idx ON sessions (user_id, last_seen_at DESC);
CREATE INDEX sessions_status_idx ON sessions (status);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);
CREATE INDEX sessions_last_seen_at_idx ON sessions (last_seen_at);
