-- sessions: only the SHA-256 of the cookie value is stored (token_hash).

-- name: CreateSession :one
INSERT INTO sessions (id, user_id, token_hash, status, ip_address, user_agent, expires_at)
VALUES (sqlc.arg(id), sqlc.arg(user_id), sqlc.arg(token_hash), sqlc.arg(status),
        sqlc.narg(ip_address), sqlc.narg(user_agent), sqlc.arg(expires_at))
RETURNING *;

-- name: GetSessionByTokenHash :one
-- The session behind a cookie, with its user, unless past its absolute
-- expiry. The idle timeout is the caller's (it is configurable): compare
-- last_seen_at.
SELECT sqlc.embed(sessions), sqlc.embed(users)
FROM sessions
JOIN users ON users.id = sessions.user_id
WHERE sessions.token_hash = sqlc.arg(token_hash) AND sessions.expires_at > now();

-- name: GetSession :one
SELECT * FROM sessions WHERE id = sqlc.arg(id);

-- name: TouchSession :exec
-- At most one write a minute per session, so page loads do not all write;
-- the idle timeout (30 min by default) does not need finer steps.
UPDATE sessions
SET last_seen_at = now(), ip_address = coalesce(sqlc.narg(ip_address), ip_address)
WHERE id = sqlc.arg(id) AND last_seen_at < now() - interval '1 minute';

-- name: ListSessionsForUser :many
-- "Your sessions": the live ones, most recently active first.
SELECT * FROM sessions
WHERE user_id = sqlc.arg(user_id) AND expires_at > now()
ORDER BY last_seen_at DESC, id DESC;

-- name: DeleteSession :execrows
-- Scoped to the user, so one user cannot revoke another's session by id.
DELETE FROM sessions WHERE id = sqlc.arg(id) AND user_id = sqlc.arg(user_id);

-- name: DeleteSessionByTokenHash :execrows
DELETE FROM sessions WHERE token_hash = sqlc.arg(token_hash);

-- name: DeleteUserSessions :execrows
-- Every session of a user except keep (NULL: all of them): after a password
-- or 2FA change, or when the user is disabled.
DELETE FROM sessions
WHERE user_id = sqlc.arg(user_id)
  AND (sqlc.narg(keep)::uuid IS NULL OR id <> sqlc.narg(keep));

-- name: DeleteExpiredSessions :execrows
-- The sweep: past the absolute expiry, or idle since before idle_before.
DELETE FROM sessions
WHERE expires_at <= now() OR last_seen_at < sqlc.arg(idle_before)::timestamptz;

-- name: SetSessionLastSeen :execrows
-- TouchSession with the time given by the caller (whose clock the idle
-- timeout is checked on); never moves last_seen_at backwards. The caller
-- decides how often to write.
UPDATE sessions
SET last_seen_at = sqlc.arg(seen_at)::timestamptz, ip_address = coalesce(sqlc.narg(ip_address), ip_address)
WHERE id = sqlc.arg(id) AND last_seen_at < sqlc.arg(seen_at)::timestamptz;
