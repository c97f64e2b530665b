-- name: CreateAPIToken :one
INSERT INTO api_tokens (id, user_id, name, token_hash, scopes, expires_at, parent_token_id)
VALUES (sqlc.arg(id), sqlc.arg(user_id), sqlc.arg(name), sqlc.arg(token_hash), sqlc.arg(scopes)::text[], sqlc.narg(expires_at),
        sqlc.narg(parent_token_id))
RETURNING *;

-- name: GetAPITokenByHash :one
-- The token, its user, and whether both are usable now.
SELECT sqlc.embed(api_tokens), u.email AS user_email, u.status AS user_status, u.role AS user_role
FROM api_tokens
JOIN users u ON u.id = api_tokens.user_id
WHERE api_tokens.token_hash = sqlc.arg(token_hash);

-- name: TouchAPIToken :exec
-- Record use at most once a minute per token, so a busy client does not
-- turn every call into a write.
UPDATE api_tokens SET last_used_at = now(), last_used_ip = sqlc.narg(ip)
WHERE id = sqlc.arg(id) AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute');

-- name: ListAPITokensForUser :many
SELECT * FROM api_tokens WHERE user_id = sqlc.arg(user_id) ORDER BY id DESC;

-- name: RevokeAPIToken :one
UPDATE api_tokens SET revoked_at = now() WHERE id = sqlc.arg(id) AND revoked_at IS NULL RETURNING *;

-- name: GetAPIToken :one
SELECT * FROM api_tokens WHERE id = sqlc.arg(id);

-- name: RevokeUserAPITokens :execrows
-- Every live token of a user at once, when the user is disabled.
UPDATE api_tokens SET revoked_at = now() WHERE user_id = sqlc.arg(user_id) AND revoked_at IS NULL;

-- name: RevokeAPITokenTree :many
-- A token and every token made from it, at any depth, in one statement: a
-- child never outlives its parent. Returns the rows this call revoked
-- (already revoked ones are left as they were).
WITH RECURSIVE tree AS (
    SELECT api_tokens.id FROM api_tokens WHERE api_tokens.id = sqlc.arg(id)
    UNION
    SELECT c.id FROM api_tokens c JOIN tree ON c.parent_token_id = tree.id
)
UPDATE api_tokens SET revoked_at = now()
WHERE api_tokens.id IN (SELECT tree.id FROM tree) AND api_tokens.revoked_at IS NULL
RETURNING *;

-- name: LockAPIToken :one
-- Locks a token's row for the transaction: making a child of it and
-- revoking it take this lock first, so a child is either seen by the
-- revocation (and revoked with it) or never made.
SELECT revoked_at FROM api_tokens WHERE id = sqlc.arg(id) FOR UPDATE;
