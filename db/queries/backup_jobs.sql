-- backup jobs: the keyring, backup tasks (verify, restore, download,
-- probe, delete) and the numbered events and logs of backups and tasks.
-- Writers of events lock the job's row first (LockBackupSeq,
-- LockBackupTaskSeq), so the seq check and the insert are one step per job.

-- name: CreateBackupEncryptionKey :one
INSERT INTO backup_encryption_keys (id, recipient, identity)
VALUES (sqlc.arg(id), sqlc.arg(recipient), sqlc.arg(identity))
RETURNING *;

-- name: GetNewestBackupEncryptionKey :one
SELECT * FROM backup_encryption_keys ORDER BY id DESC LIMIT 1;

-- name: GetBackupEncryptionKey :one
SELECT * FROM backup_encryption_keys WHERE id = sqlc.arg(id);

-- name: ListBackupEncryptionKeys :many
SELECT * FROM backup_encryption_keys ORDER BY id DESC;

-- name: LockBackupEncryptionKeys :exec
-- Serialises creating the first key among controllers.
SELECT pg_advisory_xact_lock(hashtext('berth_backup_encryption_keys'));

-- name: SetBackupConnectionEnv :exec
UPDATE backups SET connection_env = sqlc.narg(connection_env) WHERE id = sqlc.arg(id);

-- name: LockBackupSeq :one
SELECT * FROM backups WHERE id = sqlc.arg(id) FOR UPDATE;

-- name: AdvanceBackupSeqRows :execrows
UPDATE backups
SET agent_seq = sqlc.arg(agent_seq), log_bytes = sqlc.arg(log_bytes), log_truncated = sqlc.arg(log_truncated)
WHERE id = sqlc.arg(id);

-- name: RequestBackupDelete :one
-- Marks a finished backup as being deleted; the caller starts the delete
-- job. Unfinished backups are canceled instead.
UPDATE backups SET delete_requested_at = now(), delete_error = NULL
WHERE id = sqlc.arg(id) AND status IN ('succeeded', 'failed', 'canceled', 'timed_out')
RETURNING *;

-- name: RecordBackupDeleteError :exec
UPDATE backups SET delete_error = sqlc.arg(delete_error) WHERE id = sqlc.arg(id);

-- name: CountBackupDestinationUse :one
-- What keeps a destination from being removed.
SELECT (SELECT count(*) FROM backups b WHERE b.backup_destination_id = sqlc.arg(id))::bigint AS backups,
       (SELECT count(*) FROM backup_schedules s WHERE s.backup_destination_id = sqlc.arg(id))::bigint AS schedules;

-- name: CreateBackupTask :one
INSERT INTO backup_tasks (
    id, kind, backup_id, backup_destination_id, server_id, triggered_by, target, force,
    connection_env, timeout_seconds, deadline_at
) VALUES (
    sqlc.arg(id), sqlc.arg(kind), sqlc.narg(backup_id), sqlc.arg(backup_destination_id), sqlc.narg(server_id),
    sqlc.arg(triggered_by), sqlc.narg(target), sqlc.arg(force), sqlc.narg(connection_env),
    sqlc.arg(timeout_seconds)::int, now() + sqlc.arg(timeout_seconds)::int * interval '1 second'
)
RETURNING *;

-- name: GetBackupTask :one
SELECT * FROM backup_tasks WHERE id = sqlc.arg(id);

-- name: ListBackupTasks :many
-- A backup's tasks, newest first.
SELECT * FROM backup_tasks WHERE backup_id = sqlc.arg(backup_id) ORDER BY id DESC LIMIT sqlc.arg(lim);

-- name: ClaimQueuedBackupTasks :many
WITH next AS MATERIALIZED (
    SELECT t.id FROM backup_tasks t
    WHERE t.status = 'queued'
      AND (sqlc.narg(server_ids)::uuid[] IS NULL OR t.server_id = ANY (sqlc.narg(server_ids)::uuid[]))
    ORDER BY t.queued_at, t.id
    LIMIT sqlc.arg(lim)
    FOR UPDATE SKIP LOCKED
)
UPDATE backup_tasks u
SET status = 'dispatched', dispatched_at = now(), deadline_at = now() + u.timeout_seconds * interval '1 second'
FROM next
WHERE u.id = next.id AND u.status = 'queued'
RETURNING u.*;

-- name: StartBackupTask :one
UPDATE backup_tasks
SET status = 'running', started_at = coalesce(sqlc.narg(at)::timestamptz, now())
WHERE id = sqlc.arg(id) AND status = 'dispatched'
RETURNING *;

-- name: FinishBackupTask :one
UPDATE backup_tasks
SET status = sqlc.arg(status), finished_at = coalesce(sqlc.narg(at)::timestamptz, now()),
    failure_reason = coalesce(sqlc.narg(failure_reason), failure_reason)
WHERE id = sqlc.arg(id) AND status = ANY (sqlc.arg(from_statuses)::text[])
RETURNING *;

-- name: RequestBackupTaskCancel :one
UPDATE backup_tasks
SET cancel_requested_at = coalesce(cancel_requested_at, now())
WHERE id = sqlc.arg(id) AND status IN ('queued', 'dispatched', 'running')
RETURNING *;

-- name: ListOverdueBackupTasks :many
SELECT * FROM backup_tasks
WHERE status IN ('queued', 'dispatched', 'running') AND deadline_at < sqlc.arg(now)::timestamptz
ORDER BY deadline_at
LIMIT sqlc.arg(lim);

-- name: ListActiveBackupTasksForServer :many
SELECT * FROM backup_tasks
WHERE status IN ('dispatched', 'running') AND server_id = sqlc.arg(server_id)
ORDER BY id;

-- name: LockBackupTaskSeq :one
SELECT * FROM backup_tasks WHERE id = sqlc.arg(id) FOR UPDATE;

-- name: AdvanceBackupTaskSeq :exec
UPDATE backup_tasks
SET agent_seq = sqlc.arg(agent_seq), log_bytes = sqlc.arg(log_bytes), log_truncated = sqlc.arg(log_truncated)
WHERE id = sqlc.arg(id);

-- name: GetBackupJobServer :one
-- Which kind of backup job an id is, and the server that runs it: 'backup'
-- or 'task'; no row when it is neither.
SELECT 'backup'::text AS job, server_id FROM backups WHERE backups.id = sqlc.arg(id)
UNION ALL
SELECT 'task'::text AS job, server_id FROM backup_tasks WHERE backup_tasks.id = sqlc.arg(id)
LIMIT 1;

-- name: InsertBackupLog :exec
INSERT INTO backup_logs (job_id, seq, step, data)
VALUES (sqlc.arg(job_id), sqlc.arg(seq), sqlc.arg(step), sqlc.arg(data));

-- name: ListBackupLogs :many
SELECT job_id, seq, step, data, created_at FROM backup_logs
WHERE job_id = sqlc.arg(job_id) AND seq > sqlc.arg(after)
ORDER BY seq
LIMIT sqlc.arg(lim);

-- name: DeleteBackupLogs :exec
DELETE FROM backup_logs WHERE job_id = sqlc.arg(job_id);

-- name: SetBackupEncryptionKey :one
-- The key a queued backup encrypts to, chosen when it is queued and kept.
UPDATE backups SET encryption_key_id = sqlc.arg(encryption_key_id)
WHERE id = sqlc.arg(id) AND status = 'queued'
RETURNING *;
