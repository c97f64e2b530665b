-- backups: backup jobs and the objects they produced. Same job states,
-- compare-and-set transitions and deadlines as deployments.

-- name: CreateBackup :one
-- Enqueues a backup. app_name and server_id default to the app's. A
-- schedule whose previous run is unfinished inserts nothing and returns no
-- row (the tick is skipped) without aborting the caller's transaction.
INSERT INTO backups (
    id, app_id, app_name, server_id, backup_destination_id, backup_schedule_id, triggered_by,
    kind, source, compression, timeout_seconds, deadline_at, connection_env
) VALUES (
    sqlc.arg(id), sqlc.narg(app_id),
    coalesce(sqlc.narg(app_name)::text, (SELECT a.name FROM apps a WHERE a.id = sqlc.narg(app_id))),
    coalesce(sqlc.narg(server_id)::uuid, (SELECT a.server_id FROM apps a WHERE a.id = sqlc.narg(app_id))),
    sqlc.arg(backup_destination_id), sqlc.narg(backup_schedule_id), sqlc.arg(triggered_by),
    sqlc.arg(kind), sqlc.arg(source), sqlc.arg(compression), sqlc.arg(timeout_seconds)::int,
    coalesce(sqlc.narg(deadline_at)::timestamptz, now() + sqlc.arg(timeout_seconds)::int * interval '1 second'),
    sqlc.narg(connection_env)
)
ON CONFLICT (backup_schedule_id) WHERE status IN ('queued', 'dispatched', 'running') AND NOT held DO NOTHING
RETURNING *;

-- name: GetBackup :one
SELECT * FROM backups WHERE id = sqlc.arg(id);

-- name: ListBackups :many
-- Newest first with optional filters; keyset paging.
SELECT * FROM backups
WHERE (sqlc.narg(app_id)::uuid IS NULL OR app_id = sqlc.narg(app_id))
  AND (sqlc.narg(server_id)::uuid IS NULL OR server_id = sqlc.narg(server_id))
  AND (sqlc.narg(backup_destination_id)::uuid IS NULL OR backup_destination_id = sqlc.narg(backup_destination_id))
  AND (sqlc.narg(backup_schedule_id)::uuid IS NULL OR backup_schedule_id = sqlc.narg(backup_schedule_id))
  AND (sqlc.narg(status)::text IS NULL OR status = sqlc.narg(status))
  AND (sqlc.narg(kind)::text IS NULL OR kind = sqlc.narg(kind))
  AND (sqlc.narg(before)::uuid IS NULL OR id < sqlc.narg(before))
ORDER BY id DESC
LIMIT sqlc.arg(lim);

-- name: ClaimQueuedBackups :many
-- Moves the oldest queued backups to dispatched (deadline = now + timeout),
-- skipping rows another dispatcher holds. server_ids NULL means every
-- server. The candidates are picked once (see ClaimQueuedDeployments).
WITH next AS MATERIALIZED (
    SELECT b.id FROM backups b
    WHERE b.status = 'queued'
      AND (sqlc.narg(server_ids)::uuid[] IS NULL OR b.server_id = ANY (sqlc.narg(server_ids)::uuid[]))
    ORDER BY b.queued_at, b.id
    LIMIT sqlc.arg(lim)
    FOR UPDATE SKIP LOCKED
)
UPDATE backups u
SET status = 'dispatched', dispatched_at = now(), deadline_at = now() + u.timeout_seconds * interval '1 second'
FROM next
WHERE u.id = next.id AND u.status = 'queued'
RETURNING u.*;

-- name: DispatchBackup :one
-- queued -> dispatched.
UPDATE backups
SET status = 'dispatched', dispatched_at = now(), deadline_at = now() + timeout_seconds * interval '1 second'
WHERE id = sqlc.arg(id) AND status = 'queued'
RETURNING *;

-- name: StartBackup :one
-- dispatched -> running.
UPDATE backups
SET status = 'running', started_at = coalesce(sqlc.narg(at)::timestamptz, now())
WHERE id = sqlc.arg(id) AND status = 'dispatched'
RETURNING *;

-- name: SucceedBackup :one
-- running -> succeeded, with the stored object (backups_succeeded_check
-- refuses success without it).
UPDATE backups
SET status = 'succeeded', finished_at = coalesce(sqlc.narg(at)::timestamptz, now()),
    object_key = sqlc.arg(object_key), size_bytes = sqlc.arg(size_bytes),
    checksum_sha256 = sqlc.arg(checksum_sha256), encryption_key_id = sqlc.arg(encryption_key_id)
WHERE id = sqlc.arg(id) AND status = 'running'
RETURNING *;

-- name: FinishBackup :one
-- -> failed, canceled or timed_out from the states the caller allows.
UPDATE backups
SET status = sqlc.arg(status), finished_at = coalesce(sqlc.narg(at)::timestamptz, now()),
    failure_reason = coalesce(sqlc.narg(failure_reason), failure_reason)
WHERE id = sqlc.arg(id) AND status = ANY (sqlc.arg(from_statuses)::text[])
RETURNING *;

-- name: RequestBackupCancel :one
UPDATE backups
SET cancel_requested_at = coalesce(cancel_requested_at, now())
WHERE id = sqlc.arg(id) AND status IN ('queued', 'dispatched', 'running')
RETURNING *;

-- name: RecordBackupVerification :one
-- A succeeded backup's verification: success stamps verified_at and clears
-- the error; failure records the error and keeps the last success.
UPDATE backups
SET verified_at = CASE WHEN sqlc.narg(verification_error)::text IS NULL
                       THEN coalesce(sqlc.narg(at)::timestamptz, now()) ELSE verified_at END,
    verification_error = sqlc.narg(verification_error)::text
WHERE id = sqlc.arg(id) AND status = 'succeeded'
RETURNING *;

-- name: ListOverdueBackups :many
SELECT * FROM backups
WHERE status IN ('queued', 'dispatched', 'running') AND deadline_at < sqlc.arg(now)::timestamptz
ORDER BY deadline_at
LIMIT sqlc.arg(lim);

-- name: ListActiveBackupsForServer :many
SELECT * FROM backups
WHERE status IN ('dispatched', 'running') AND server_id = sqlc.arg(server_id)
ORDER BY id;

-- name: GetLatestSucceededBackupForSchedule :one
SELECT * FROM backups
WHERE backup_schedule_id = sqlc.arg(backup_schedule_id) AND status = 'succeeded'
ORDER BY id DESC
LIMIT 1;

-- name: GetLatestSucceededBackupForApp :one
SELECT * FROM backups
WHERE app_id = sqlc.arg(app_id) AND status = 'succeeded'
ORDER BY id DESC
LIMIT 1;

-- name: ListBackupRetentionCandidates :many
-- A schedule's succeeded backups that no retention rule keeps, oldest first.
-- A backup is kept while it is among the newest retention_count or younger
-- than retention_days (either rule keeps it); the newest succeeded backup is
-- always kept, so a schedule that stopped running never loses its last copy.
SELECT * FROM backups
WHERE id IN (
    SELECT r.id
    FROM (SELECT b.id, b.created_at, row_number() OVER (ORDER BY b.id DESC) AS rn
          FROM backups b
          WHERE b.backup_schedule_id = sqlc.arg(backup_schedule_id) AND b.status = 'succeeded') r
    JOIN backup_schedules s ON s.id = sqlc.arg(backup_schedule_id)
    WHERE r.rn > 1
      AND (s.retention_count IS NULL OR r.rn > s.retention_count)
      AND (s.retention_days IS NULL
           OR r.created_at < sqlc.arg(now)::timestamptz - s.retention_days * interval '1 day'))
ORDER BY id;

-- name: DeleteBackup :execrows
DELETE FROM backups WHERE id = sqlc.arg(id);
