-- security_events: the security audit log. details never holds secrets.

-- name: CreateSecurityEvent :one
INSERT INTO security_events (id, type, severity, user_id, server_id, actor, ip_address, user_agent, details)
VALUES (sqlc.arg(id), sqlc.arg(type), sqlc.arg(severity), sqlc.narg(user_id), sqlc.narg(server_id),
        sqlc.arg(actor), sqlc.narg(ip_address), sqlc.narg(user_agent), sqlc.arg(details)::jsonb)
RETURNING *;

-- name: ListSecurityEvents :many
-- The security page: newest first, keyset paging on the ULID id, every
-- filter optional.
SELECT * FROM security_events
WHERE (sqlc.narg(type)::text IS NULL OR type = sqlc.narg(type))
  AND (sqlc.narg(severity)::text IS NULL OR severity = sqlc.narg(severity))
  AND (sqlc.narg(user_id)::uuid IS NULL OR user_id = sqlc.narg(user_id))
  AND (sqlc.narg(server_id)::uuid IS NULL OR server_id = sqlc.narg(server_id))
  AND (sqlc.narg(ip)::inet IS NULL OR ip_address = sqlc.narg(ip))
  AND (sqlc.narg(since)::timestamptz IS NULL OR created_at >= sqlc.narg(since))
  AND (sqlc.narg(before)::uuid IS NULL OR id < sqlc.narg(before))
ORDER BY id DESC
LIMIT sqlc.arg(lim);

-- name: CountSecurityEvents :one
-- e.g. failed-login bursts: events of a type from one address since a time.
SELECT count(*) FROM security_events
WHERE (sqlc.narg(type)::text IS NULL OR type = sqlc.narg(type))
  AND (sqlc.narg(severity)::text IS NULL OR severity = sqlc.narg(severity))
  AND (sqlc.narg(user_id)::uuid IS NULL OR user_id = sqlc.narg(user_id))
  AND (sqlc.narg(server_id)::uuid IS NULL OR server_id = sqlc.narg(server_id))
  AND (sqlc.narg(ip)::inet IS NULL OR ip_address = sqlc.narg(ip))
  AND created_at >= sqlc.arg(since)::timestamptz;
