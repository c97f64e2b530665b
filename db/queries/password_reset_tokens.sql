-- password_reset_tokens: reset and invite links; only the SHA-256 is stored.

-- name: CreatePasswordResetToken :one
-- One live link per user and purpose: a new one replaces the unused one
-- (new id, hash and expiry), so the old link stops working.
INSERT INTO password_reset_tokens (id, user_id, email, purpose, token_hash, requested_ip, expires_at)
VALUES (sqlc.arg(id), sqlc.arg(user_id), sqlc.arg(email), sqlc.arg(purpose), sqlc.arg(token_hash),
        sqlc.narg(requested_ip), sqlc.arg(expires_at))
ON CONFLICT (user_id, purpose) WHERE used_at IS NULL DO UPDATE
SET id = EXCLUDED.id, email = EXCLUDED.email, token_hash = EXCLUDED.token_hash,
    requested_ip = EXCLUDED.requested_ip, expires_at = EXCLUDED.expires_at, created_at = now()
RETURNING *;

-- name: ConsumePasswordResetToken :one
-- Single use in one statement: of two concurrent redemptions one updates the
-- row and the other finds used_at set. The link only works while the user's
-- email is still the address it was sent to, and never for a disabled user.
UPDATE password_reset_tokens t
SET used_at = now()
FROM users u
WHERE t.token_hash = sqlc.arg(token_hash)
  AND t.purpose = sqlc.arg(purpose)
  AND t.used_at IS NULL
  AND t.expires_at > now()
  AND u.id = t.user_id
  AND lower(u.email) = lower(t.email)
  AND u.status <> 'disabled'
RETURNING t.*;

-- name: GetLivePasswordResetToken :one
-- The outstanding link of a user for a purpose (e.g. "invitation pending"),
-- expired or not.
SELECT * FROM password_reset_tokens
WHERE user_id = sqlc.arg(user_id) AND purpose = sqlc.arg(purpose) AND used_at IS NULL;

-- name: DeleteUserPasswordResetTokens :execrows
-- Voids a user's outstanding links (after a password change, or on disable).
DELETE FROM password_reset_tokens WHERE user_id = sqlc.arg(user_id) AND used_at IS NULL;

-- name: DeleteExpiredPasswordResetTokens :execrows
-- The sweep: expired links, and used ones older than the cutoff.
DELETE FROM password_reset_tokens
WHERE expires_at <= now() OR used_at < sqlc.arg(used_before)::timestamptz;

-- name: GetPasswordResetTokenByHash :one
-- After ConsumePasswordResetToken refused a link: tells "expired" and
-- "already used" apart from "unknown", so the user gets a clear message.
SELECT * FROM password_reset_tokens WHERE token_hash = sqlc.arg(token_hash) AND purpose = sqlc.arg(purpose);
