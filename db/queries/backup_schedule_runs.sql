-- backup schedule runs (issue 18 §3): firing a schedule's tick once under a
-- run key, adopting the runs an agent made from its held schedules, and
-- retention. See controller/internal/backups/schedules.go.

-- name: InsertBackupSchedule :one
-- A new schedule with every setting (verify and connection_env included).
INSERT INTO backup_schedules (
    id, app_id, backup_destination_id, kind, source, cron, timezone,
    retention_count, retention_days, enabled, next_run_at, connection_env, verify
) VALUES (
    sqlc.arg(id), sqlc.arg(app_id), sqlc.arg(backup_destination_id), sqlc.arg(kind), sqlc.arg(source),
    sqlc.arg(cron), sqlc.arg(timezone), sqlc.narg(retention_count), sqlc.narg(retention_days),
    true, sqlc.arg(next_run_at), sqlc.narg(connection_env), sqlc.arg(verify)
)
RETURNING *;

-- name: ClaimDueBackupSchedulesForServers :many
-- Enabled schedules whose tick is due, of apps on the given servers (the
-- agents connected to the calling controller), locked for the caller's
-- transaction and skipped by any other controller (FOR UPDATE SKIP LOCKED).
SELECT s.* FROM backup_schedules s
JOIN apps a ON a.id = s.app_id
WHERE s.enabled AND s.next_run_at <= sqlc.arg(now)::timestamptz
  AND a.deleted_at IS NULL
  AND a.server_id = ANY (sqlc.arg(server_ids)::uuid[])
ORDER BY s.next_run_at, s.id
LIMIT sqlc.arg(lim)
FOR UPDATE OF s SKIP LOCKED;

-- name: ListHeldBackupSchedulesForServer :many
-- The enabled schedules of a server's apps: what its agent holds.
SELECT s.* FROM backup_schedules s
JOIN apps a ON a.id = s.app_id
WHERE s.enabled AND a.deleted_at IS NULL AND a.server_id = sqlc.arg(server_id)
ORDER BY s.id;

-- name: InsertScheduledBackup :one
-- A tick's backup. Inserts nothing (no row) when the tick already has a
-- run (backups_schedule_run_key) or the schedule's previous run is
-- unfinished (backups_one_active_per_schedule_key); the caller tells which.
-- held: the agent's report of a run it made (status running from
-- started_at); otherwise queued. The deadline counts from now even for a
-- held run that started long ago: its agent is connected (it just
-- reported the run) and its events come next, so the sweep must not end
-- it as unreachable in between (and clean up the object it stored).
INSERT INTO backups (
    id, app_id, app_name, server_id, backup_destination_id, backup_schedule_id, scheduled_for, held,
    triggered_by, kind, source, status, encryption_key_id, timeout_seconds, deadline_at, connection_env,
    dispatched_at, started_at
) VALUES (
    sqlc.arg(id), sqlc.arg(app_id), sqlc.arg(app_name), sqlc.arg(server_id), sqlc.arg(backup_destination_id),
    sqlc.arg(backup_schedule_id), sqlc.arg(scheduled_for), sqlc.arg(held),
    'schedule', sqlc.arg(kind), sqlc.arg(source),
    CASE WHEN sqlc.arg(held)::boolean THEN 'running' ELSE 'queued' END,
    sqlc.arg(encryption_key_id), sqlc.arg(timeout_seconds)::int,
    greatest(coalesce(sqlc.narg(started_at)::timestamptz, now()), now()) + sqlc.arg(timeout_seconds)::int * interval '1 second',
    sqlc.narg(connection_env),
    CASE WHEN sqlc.arg(held)::boolean THEN sqlc.narg(started_at)::timestamptz END,
    CASE WHEN sqlc.arg(held)::boolean THEN sqlc.narg(started_at)::timestamptz END
)
ON CONFLICT DO NOTHING
RETURNING *;

-- name: GetBackupByRunKey :one
SELECT * FROM backups
WHERE backup_schedule_id = sqlc.arg(backup_schedule_id) AND scheduled_for = sqlc.arg(scheduled_for);

-- name: GetActiveBackupForSchedule :one
-- A schedule's unfinished run (held ones included), oldest first.
SELECT * FROM backups
WHERE backup_schedule_id = sqlc.arg(backup_schedule_id) AND status IN ('queued', 'dispatched', 'running')
ORDER BY id
LIMIT 1;

-- name: SupersedeScheduledBackup :one
-- A queued or dispatched run the agent never started gives way to the run
-- the agent made of the same schedule while unreachable: it is canceled
-- and loses its run key.
UPDATE backups
SET status = 'canceled', finished_at = now(), scheduled_for = NULL,
    failure_reason = sqlc.arg(failure_reason)
WHERE id = sqlc.arg(id) AND status IN ('queued', 'dispatched')
RETURNING *;

-- name: SetBackupScheduleVerify :one
UPDATE backup_schedules SET verify = sqlc.arg(verify) WHERE id = sqlc.arg(id) RETURNING *;

-- name: ClaimRetentionDeletes :many
-- A schedule's succeeded backups its retention no longer keeps, oldest
-- first, locked (SKIP LOCKED: two controllers never queue the same
-- delete). Kept: the newest retention_count, those younger than
-- retention_days (either rule that is set keeps a backup), the newest
-- succeeded one and the newest verified one. Left out as well: a backup
-- whose delete is running, or whose last delete ended after retry_after
-- (a failed delete is retried once that is past).
SELECT b.* FROM backups b
WHERE b.id IN (
    SELECT r.id
    FROM (SELECT x.id, x.created_at, row_number() OVER (ORDER BY x.id DESC) AS rn
          FROM backups x
          WHERE x.backup_schedule_id = sqlc.arg(backup_schedule_id) AND x.status = 'succeeded') r
    JOIN backup_schedules s ON s.id = sqlc.arg(backup_schedule_id)
    WHERE r.rn > 1
      AND (s.retention_count IS NULL OR r.rn > s.retention_count)
      AND (s.retention_days IS NULL
           OR r.created_at < sqlc.arg(now)::timestamptz - s.retention_days * interval '1 day'))
  AND b.id IS DISTINCT FROM (
    SELECT v.id FROM backups v
    WHERE v.backup_schedule_id = sqlc.arg(backup_schedule_id) AND v.status = 'succeeded' AND v.verified_at IS NOT NULL
    ORDER BY v.id DESC LIMIT 1)
  AND NOT EXISTS (
    SELECT 1 FROM backup_tasks t
    WHERE t.backup_id = b.id AND t.kind = 'delete'
      AND (t.status IN ('queued', 'dispatched', 'running') OR t.finished_at > sqlc.arg(retry_after)::timestamptz))
ORDER BY b.id
LIMIT sqlc.arg(lim)
FOR UPDATE OF b SKIP LOCKED;

-- name: ListRetentionSchedules :many
-- Schedules with at least one succeeded backup beyond the newest (the
-- only ones retention can prune), of apps on the given servers.
SELECT s.* FROM backup_schedules s
JOIN apps a ON a.id = s.app_id
WHERE a.server_id = ANY (sqlc.arg(server_ids)::uuid[])
  AND (SELECT count(*) FROM backups b WHERE b.backup_schedule_id = s.id AND b.status = 'succeeded') > 1
ORDER BY s.id;
