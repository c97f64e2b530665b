-- name: EnsureMetricsPartitions :one
SELECT berth_ensure_metrics_partitions(sqlc.arg(from_day)::date, sqlc.arg(days)::int)::int AS created;

-- name: DropMetricsPartitionsBefore :one
SELECT berth_drop_metrics_partitions_before(sqlc.arg(cutoff)::date)::int AS dropped;

-- name: ListMetricsPartitions :many
-- Partitions of server_metrics by name (server_metrics_pYYYYMMDD), oldest first.
SELECT c.relname::text AS name
FROM pg_catalog.pg_inherits i
JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'server_metrics'::regclass
ORDER BY c.relname;

-- name: GetMaintenanceRun :one
SELECT * FROM maintenance_runs WHERE job = $1;

-- name: RecordMaintenanceRun :exec
INSERT INTO maintenance_runs (job, last_run_at, last_affected, updated_at)
VALUES ($1, $2, $3, now())
ON CONFLICT (job) DO UPDATE
SET last_run_at = EXCLUDED.last_run_at, last_affected = EXCLUDED.last_affected, updated_at = now();

-- name: DeleteLoginAttemptsBefore :execrows
DELETE FROM login_attempts WHERE id IN (
    SELECT old.id FROM login_attempts AS old WHERE old.created_at < sqlc.arg(cutoff)::timestamptz LIMIT sqlc.arg(batch)::int);

-- name: DeleteSecurityEventsBefore :execrows
DELETE FROM security_events WHERE id IN (
    SELECT old.id FROM security_events AS old WHERE old.created_at < sqlc.arg(cutoff)::timestamptz LIMIT sqlc.arg(batch)::int);

-- name: DeleteNotificationsBefore :execrows
DELETE FROM notifications WHERE id IN (
    SELECT old.id FROM notifications AS old WHERE old.created_at < sqlc.arg(cutoff)::timestamptz LIMIT sqlc.arg(batch)::int);

-- name: DeleteActivityLogBefore :execrows
DELETE FROM activity_log WHERE id IN (
    SELECT old.id FROM activity_log AS old WHERE old.created_at < sqlc.arg(cutoff)::timestamptz LIMIT sqlc.arg(batch)::int);
