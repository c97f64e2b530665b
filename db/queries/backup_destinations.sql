-- backup_destinations: credentials is sealed in Go with the row id bound in.

-- name: CreateBackupDestination :one
INSERT INTO backup_destinations (id, name, kind, config, credentials)
VALUES (sqlc.arg(id), sqlc.arg(name), sqlc.arg(kind), sqlc.arg(config), sqlc.narg(credentials))
RETURNING *;

-- name: GetBackupDestination :one
SELECT * FROM backup_destinations WHERE id = sqlc.arg(id);

-- name: GetBackupDestinationByName :one
SELECT * FROM backup_destinations WHERE name = sqlc.arg(name);

-- name: ListBackupDestinations :many
-- Newest first; keyset paging.
SELECT * FROM backup_destinations
WHERE (sqlc.narg(kind)::text IS NULL OR kind = sqlc.narg(kind))
  AND (sqlc.narg(before)::uuid IS NULL OR id < sqlc.narg(before))
ORDER BY id DESC
LIMIT sqlc.arg(lim);

-- name: UpdateBackupDestination :one
-- Name and non-secret settings; the kind stays.
UPDATE backup_destinations SET name = sqlc.arg(name), config = sqlc.arg(config)
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: SetBackupDestinationCredentials :execrows
UPDATE backup_destinations SET credentials = sqlc.narg(credentials) WHERE id = sqlc.arg(id);

-- name: GetBackupDestinationCredentials :one
SELECT credentials FROM backup_destinations WHERE id = sqlc.arg(id);

-- name: RecordBackupDestinationCheck :one
UPDATE backup_destinations
SET last_checked_at = coalesce(sqlc.narg(at)::timestamptz, now()), last_check_ok = sqlc.arg(ok)::boolean,
    last_check_error = sqlc.narg(check_error)
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: DeleteBackupDestination :execrows
DELETE FROM backup_destinations WHERE id = sqlc.arg(id);

-- name: ListBackupDestinationUsers :many
-- The first schedules and backups that keep a destination from being
-- removed, to name them in the refusal.
(SELECT 'schedule'::text AS what, s.id, a.name::text AS app_name
   FROM backup_schedules s JOIN apps a ON a.id = s.app_id
  WHERE s.backup_destination_id = sqlc.arg(id)
  ORDER BY s.id LIMIT 5)
UNION ALL
(SELECT 'backup'::text, b.id, b.app_name::text
   FROM backups b
  WHERE b.backup_destination_id = sqlc.arg(id)
  ORDER BY b.id DESC LIMIT 5);
