-- 000001 users: admin accounts with TOTP two-factor authentication.
--
-- Also creates berth_set_updated_at(), the trigger function every table with an
-- updated_at column uses (000001's down drops it last, after every table).

CREATE FUNCTION berth_set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Respect an explicit value (tests inject the clock); otherwise stamp now().
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END;
$$;

CREATE TABLE users (
    id                          uuid        PRIMARY KEY,
    email                       text        NOT NULL,
    name                        text        NOT NULL DEFAULT '',
    -- argon2id PHC string ($argon2id$v=19$m=...,t=...,p=...$salt$hash).
    -- NULL only while an invited user has not chosen a password yet.
    password_hash               text,
    password_changed_at         timestamptz,
    role                        text        NOT NULL DEFAULT 'admin',
    status                      text        NOT NULL DEFAULT 'active',
    -- Encrypted (AES-256-GCM envelope, AD = users/<column>/<id>).
    two_factor_secret           bytea,
    -- Set when the enrolment was confirmed with a valid code; 2FA is enforced
    -- at login only when this is set.
    two_factor_confirmed_at     timestamptz,
    -- Highest TOTP time step (unix/30) ever accepted: a code is accepted once,
    -- so a login must present a step greater than this one.
    two_factor_last_used_step   bigint,
    -- Encrypted JSON list of the remaining single-use recovery codes (or
    -- their hashes); rewritten when one is used.
    recovery_codes              bytea,
    recovery_codes_generated_at timestamptz,
    last_login_at               timestamptz,
    last_login_ip               inet,
    disabled_at                 timestamptz,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT users_email_check CHECK (
        email = btrim(email) AND char_length(email) BETWEEN 3 AND 254 AND position('@' IN email) > 1
    ),
    CONSTRAINT users_role_check CHECK (role IN ('admin', 'operator', 'viewer')),
    CONSTRAINT users_status_check CHECK (status IN ('invited', 'active', 'disabled')),
    CONSTRAINT users_active_password_check CHECK (status <> 'active' OR password_hash IS NOT NULL),
    CONSTRAINT users_disabled_at_check CHECK ((status = 'disabled') = (disabled_at IS NOT NULL)),
    CONSTRAINT users_two_factor_check CHECK (two_factor_confirmed_at IS NULL OR two_factor_secret IS NOT NULL)
);

-- Case-insensitive uniqueness: look users up with lower(email) = lower($1).
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
CREATE INDEX users_status_idx ON users (status);
CREATE INDEX users_role_idx ON users (role);

CREATE TRIGGER users_set_updated_at BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION berth_set_updated_at();
