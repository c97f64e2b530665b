-- app_schedules: scheduled commands. Cron and time zone are validated and
-- evaluated in Go; next_run_at is what the schedule loop reads.

-- name: CreateAppSchedule :one
INSERT INTO app_schedules (id, app_id, name, cron, command, timezone, next_run_at)
VALUES (sqlc.arg(id), sqlc.arg(app_id), sqlc.arg(name), sqlc.arg(cron), sqlc.arg(command), sqlc.arg(timezone), sqlc.arg(next_run_at))
RETURNING *;

-- name: ReplaceAppSchedule :one
UPDATE app_schedules SET
    cron = sqlc.arg(cron), command = sqlc.arg(command), timezone = sqlc.arg(timezone), next_run_at = sqlc.arg(next_run_at)
WHERE app_id = sqlc.arg(app_id) AND name = sqlc.arg(name)
RETURNING *;

-- name: GetAppScheduleByName :one
SELECT * FROM app_schedules WHERE app_id = sqlc.arg(app_id) AND name = sqlc.arg(name);

-- name: ListAppSchedules :many
SELECT * FROM app_schedules WHERE app_id = sqlc.arg(app_id) ORDER BY name;

-- name: DeleteAppSchedule :execrows
DELETE FROM app_schedules WHERE app_id = sqlc.arg(app_id) AND name = sqlc.arg(name);

-- name: DeleteAppSchedules :execrows
-- A deleted app runs nothing any more.
DELETE FROM app_schedules WHERE app_id = sqlc.arg(app_id);

-- name: ClaimDueAppSchedules :many
-- Schedules of live apps whose run is due, locked for the caller's
-- transaction (FOR UPDATE SKIP LOCKED, so several controllers may run the
-- loop): enqueue the run and move next_run_at in it.
SELECT s.* FROM app_schedules s
JOIN apps a ON a.id = s.app_id AND a.deleted_at IS NULL
WHERE s.next_run_at <= sqlc.arg(now)::timestamptz
ORDER BY s.next_run_at, s.id
LIMIT sqlc.arg(lim)
FOR UPDATE OF s SKIP LOCKED;

-- name: SetAppScheduleNextRun :exec
UPDATE app_schedules SET next_run_at = sqlc.arg(next_run_at) WHERE id = sqlc.arg(id);

-- name: UnfinishedScheduleRun :one
-- The schedule's unfinished run, if any.
SELECT * FROM deployments
WHERE schedule_id = sqlc.arg(schedule_id) AND status IN ('queued', 'dispatched', 'running')
LIMIT 1;

-- name: ListScheduleRuns :many
-- A schedule's runs, newest first.
SELECT * FROM deployments
WHERE schedule_id = sqlc.arg(schedule_id)
ORDER BY created_at DESC, id DESC
LIMIT sqlc.arg(lim);

-- name: LastScheduleRuns :many
-- The newest run of each of an app's schedules.
SELECT DISTINCT ON (schedule_id) * FROM deployments
WHERE app_id = sqlc.arg(app_id) AND schedule_id IS NOT NULL
ORDER BY schedule_id, created_at DESC, id DESC;

-- name: PruneScheduleRuns :execrows
-- Keeps the newest keep finished runs of every schedule (retention);
-- unfinished runs are never pruned.
DELETE FROM deployments d
USING (
    SELECT id, row_number() OVER (PARTITION BY schedule_id ORDER BY created_at DESC, id DESC) AS n
    FROM deployments WHERE schedule_id IS NOT NULL
) r
WHERE d.id = r.id AND r.n > sqlc.arg(keep)::int
  AND d.status IN ('succeeded', 'failed', 'canceled', 'timed_out');
