-- 000003 password_reset_tokens: single-use, short-lived links sent by email,
-- for password resets and for invitations (an invited user sets a first
-- password through the same mechanism). Only the SHA-256 of the token is kept.
--
-- Departure from the seed ("no dependencies", Laravel keys the row by email):
-- the row points at the user, so deleting the user deletes its links and a link
-- can never be redeemed against a later account that reuses the address. The
-- address it was sent to is kept too: redeeming checks it still equals the
-- user's email, so changing the email voids outstanding links. See db/README.md.

CREATE TABLE password_reset_tokens (
    id           uuid        PRIMARY KEY,
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email        text        NOT NULL,
    purpose      text        NOT NULL DEFAULT 'reset',
    token_hash   bytea       NOT NULL,
    requested_ip inet,
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT password_reset_tokens_purpose_check CHECK (purpose IN ('reset', 'invite')),
    CONSTRAINT password_reset_tokens_token_hash_check CHECK (octet_length(token_hash) = 32),
    CONSTRAINT password_reset_tokens_expires_at_check CHECK (expires_at > created_at)
);

CREATE UNIQUE INDEX password_reset_tokens_token_hash_key ON password_reset_tokens (token_hash);
-- At most one live link per user and purpose (Laravel keeps one row per email):
-- issuing a new one replaces the old (INSERT ... ON CONFLICT (user_id, purpose)
-- WHERE used_at IS NULL DO UPDATE).
CREATE UNIQUE INDEX password_reset_tokens_user_purpose_live_key
    ON password_reset_tokens (user_id, purpose) WHERE used_at IS NULL;
CREATE INDEX password_reset_tokens_user_id_idx ON password_reset_tokens (user_id);
CREATE INDEX password_reset_tokens_purpose_idx ON password_reset_tokens (purpose);
CREATE INDEX password_reset_tokens_expires_at_idx ON password_reset_tokens (expires_at);
