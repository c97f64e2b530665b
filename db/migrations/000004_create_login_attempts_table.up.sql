-- 000004 login_attempts: every login attempt (password step and 2FA step),
-- for the audit trail and for throttling per account and per IP.
-- Retention: 30 days, weekly.

CREATE TABLE login_attempts (
    id         uuid        PRIMARY KEY,
    -- NULL for addresses that match no user (the attempt is still recorded),
    -- and after the user is deleted (the trail outlives the account).
    user_id    uuid        REFERENCES users (id) ON DELETE SET NULL,
    -- As submitted (trimmed); throttling compares lower(email).
    email      text        NOT NULL,
    ip_address inet,
    user_agent text,
    -- password or two_factor (TOTP or recovery code).
    stage      text        NOT NULL DEFAULT 'password',
    result     text        NOT NULL,
    -- Why it failed or was throttled, e.g. unknown_email, bad_password,
    -- user_disabled, bad_totp, totp_replay, bad_recovery_code, throttled.
    reason     text,
    created_at timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT login_attempts_stage_check CHECK (stage IN ('password', 'two_factor')),
    CONSTRAINT login_attempts_result_check CHECK (result IN ('succeeded', 'failed', 'throttled')),
    CONSTRAINT login_attempts_reason_check CHECK (result = 'succeeded' OR reason IS NOT NULL)
);

CREATE INDEX login_attempts_user_id_idx ON login_attempts (user_id, created_at DESC);
-- Throttling windows: per account and per source address.
CREATE INDEX login_attempts_email_created_at_idx ON login_attempts (lower(email), created_at DESC);
CREATE INDEX login_attempts_ip_created_at_idx ON login_attempts (ip_address, created_at DESC);
CREATE INDEX login_attempts_result_idx ON login_attempts (result);
CREATE INDEX login_attempts_stage_idx ON login_attempts (stage);
CREATE INDEX login_attempts_created_at_idx ON login_attempts (created_at);
