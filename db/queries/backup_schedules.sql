-- backup_schedules: cron schedules with retention. Cron and time zone are
-- validated and evaluated in Go; next_run_at is what the leader reads.

-- name: CreateBackupSchedule :one
INSERT INTO backup_schedules (
    id, app_id, backup_destination_id, kind, source, cron, timezone,
    retention_count, retention_days, enabled, next_run_at
) VALUES (
    sqlc.arg(id), sqlc.arg(app_id), sqlc.arg(backup_destination_id), sqlc.arg(kind), sqlc.arg(source),
    sqlc.arg(cron), sqlc.arg(timezone), sqlc.narg(retention_count), sqlc.narg(retention_days),
    sqlc.arg(enabled), sqlc.narg(next_run_at)
)
RETURNING *;

-- name: GetBackupSchedule :one
SELECT * FROM backup_schedules WHERE id = sqlc.arg(id);

-- name: ListBackupSchedules :many
-- Newest first with optional filters; keyset paging.
SELECT * FROM backup_schedules
WHERE (sqlc.narg(app_id)::uuid IS NULL OR app_id = sqlc.narg(app_id))
  AND (sqlc.narg(backup_destination_id)::uuid IS NULL OR backup_destination_id = sqlc.narg(backup_destination_id))
  AND (sqlc.narg(enabled)::boolean IS NULL OR enabled = sqlc.narg(enabled))
  AND (sqlc.narg(before)::uuid IS NULL OR id < sqlc.narg(before))
ORDER BY id DESC
LIMIT sqlc.arg(lim);

-- name: ListDueBackupSchedules :many
-- Enabled schedules whose run is due, locked for the caller's transaction
-- (FOR UPDATE SKIP LOCKED): enqueue the backup and move next_run_at in it.
SELECT * FROM backup_schedules
WHERE enabled AND next_run_at <= sqlc.arg(now)::timestamptz
ORDER BY next_run_at, id
LIMIT sqlc.arg(lim)
FOR UPDATE SKIP LOCKED;

-- name: UpdateBackupSchedule :one
-- Replaces the settings (the app stays).
UPDATE backup_schedules SET
    backup_destination_id = sqlc.arg(backup_destination_id),
    kind = sqlc.arg(kind),
    source = sqlc.arg(source),
    cron = sqlc.arg(cron),
    timezone = sqlc.arg(timezone),
    retention_count = sqlc.narg(retention_count),
    retention_days = sqlc.narg(retention_days),
    enabled = sqlc.arg(enabled),
    next_run_at = sqlc.narg(next_run_at)
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: SetBackupScheduleRun :one
-- After a tick: when it ran and when it runs next.
UPDATE backup_schedules SET last_run_at = sqlc.narg(last_run_at), next_run_at = sqlc.narg(next_run_at)
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: SetBackupScheduleEnabled :one
UPDATE backup_schedules SET enabled = sqlc.arg(enabled), next_run_at = sqlc.narg(next_run_at)
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: DeleteBackupSchedule :execrows
DELETE FROM backup_schedules WHERE id = sqlc.arg(id);
