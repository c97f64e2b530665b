-- backup cleanup (000034): what an unsucceeded backup that reached an agent
-- may have left under its key at the destination is removed by a cleanup
-- task. See controller/internal/backups/cleanup.go.

-- name: MarkBackupCleanupPending :one
-- A cleanup task is being queued for this backup (first time or a retry).
UPDATE backups
SET cleanup_status = 'pending', cleanup_at = now()
WHERE id = sqlc.arg(id) AND status IN ('failed', 'canceled', 'timed_out')
  AND (cleanup_status IS NULL OR cleanup_status = 'failed')
RETURNING *;

-- name: RecordBackupCleanup :one
-- A cleanup task ended: done, or failed with the reason.
UPDATE backups
SET cleanup_status = CASE WHEN sqlc.narg(cleanup_error)::text IS NULL THEN 'done' ELSE 'failed' END,
    cleanup_error = sqlc.narg(cleanup_error)::text,
    cleanup_at = now()
WHERE id = sqlc.arg(id) AND cleanup_status = 'pending'
RETURNING *;

-- name: ClaimBackupCleanupRetries :many
-- Failed cleanups of the given servers' backups whose last attempt ended
-- before the cutoff, locked for the caller's transaction, which queues
-- them again (FOR UPDATE SKIP LOCKED: one controller takes each).
SELECT * FROM backups
WHERE cleanup_status = 'failed' AND cleanup_at < sqlc.arg(cutoff)::timestamptz
  AND server_id = ANY (sqlc.arg(server_ids)::uuid[])
ORDER BY cleanup_at, id
LIMIT sqlc.arg(lim)
FOR UPDATE SKIP LOCKED;
