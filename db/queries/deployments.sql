-- deployments: a durable job queue. Every state change is a compare-and-set
-- on the previous state, so a caller that lost a race changes nothing and
-- gets no row back.

-- name: CreateDeployment :one
-- Enqueues a deployment. The branch and timeout default to the app's
-- (snapshot at enqueue). A replayed webhook delivery (same app and
-- trigger_ref) inserts nothing and returns no row; so does an unknown app.
-- With dispatch the deployment is created already dispatched (its
-- deadline then counts from now, as the dispatcher's claim would set it)
-- when the app has no unfinished deployment, and nothing is inserted when
-- it has one; one dispatched meanwhile is a unique violation of
-- deployments_one_active_per_app_key.
INSERT INTO deployments (
    id, app_id, user_id, triggered_by, trigger_ref, environment, branch, commit_sha,
    commit_message, commit_author, release_path, rollback_from_id, timeout_seconds, deadline_at,
    status, dispatched_at, kind, process_action, process_names, schedule_id, schedule_name, schedule_command
)
SELECT sqlc.arg(id)::uuid, a.id, sqlc.narg(user_id)::uuid, sqlc.arg(triggered_by)::text, sqlc.narg(trigger_ref)::text,
       sqlc.arg(environment)::text, coalesce(sqlc.narg(branch)::text, a.branch), sqlc.narg(commit_sha)::text,
       sqlc.narg(commit_message)::text, sqlc.narg(commit_author)::text, sqlc.narg(release_path)::text, sqlc.narg(rollback_from_id)::uuid,
       coalesce(sqlc.narg(timeout_seconds)::int, a.timeout_seconds),
       coalesce(sqlc.narg(deadline_at)::timestamptz,
                now() + coalesce(sqlc.narg(timeout_seconds)::int, a.timeout_seconds) * interval '1 second'),
       CASE WHEN sqlc.arg(dispatch)::boolean THEN 'dispatched' ELSE 'queued' END,
       CASE WHEN sqlc.arg(dispatch)::boolean THEN now() END,
       sqlc.arg(kind)::text, sqlc.narg(process_action)::text, coalesce(sqlc.narg(process_names)::text[], '{}'),
       sqlc.narg(schedule_id)::uuid, sqlc.narg(schedule_name)::text, sqlc.narg(schedule_command)::text
FROM apps a
WHERE a.id = sqlc.arg(app_id) AND a.deleted_at IS NULL
  AND NOT (sqlc.arg(dispatch)::boolean AND EXISTS (
      SELECT 1 FROM deployments x WHERE x.app_id = a.id AND x.status IN ('queued', 'dispatched', 'running')
                                    AND x.kind <> 'schedule'))
ON CONFLICT (app_id, trigger_ref) WHERE triggered_by = 'webhook' DO NOTHING
RETURNING *;

-- name: AppExists :one
SELECT EXISTS (SELECT 1 FROM apps WHERE id = sqlc.arg(id) AND deleted_at IS NULL)::boolean AS app_exists;

-- name: GetDeployment :one
SELECT * FROM deployments WHERE id = sqlc.arg(id);

-- name: ListDeployments :many
-- Newest first, optionally one app's and/or one status; keyset paging.
SELECT * FROM deployments
WHERE (sqlc.narg(app_id)::uuid IS NULL OR app_id = sqlc.narg(app_id))
  AND (sqlc.narg(status)::text IS NULL OR status = sqlc.narg(status))
  AND (sqlc.narg(before)::uuid IS NULL OR id < sqlc.narg(before))
ORDER BY id DESC
LIMIT sqlc.arg(lim);

-- name: NextQueuedDeployments :many
-- The oldest queued deployment of each app that may start now: none of the
-- app's deployments is dispatched or running, and no older one of it is
-- queued. Schedule runs are not counted and always may start: they run
-- beside the app's jobs (a schedule's runs never overlap, see
-- deployments_one_unfinished_per_schedule_key). Rows are locked (FOR UPDATE SKIP LOCKED): call inside a
-- transaction and move them to dispatched in it. An app whose oldest queued
-- row another dispatcher holds is skipped, never its second one.
-- server_ids NULL means every server.
SELECT * FROM deployments d
WHERE d.status = 'queued'
  AND (sqlc.narg(server_ids)::uuid[] IS NULL
       OR d.app_id IN (SELECT a.id FROM apps a WHERE a.server_id = ANY (sqlc.narg(server_ids)::uuid[])))
  AND (d.kind = 'schedule' OR (
      NOT EXISTS (SELECT 1 FROM deployments x
                  WHERE x.app_id = d.app_id AND x.status IN ('dispatched', 'running') AND x.kind <> 'schedule')
      AND NOT EXISTS (SELECT 1 FROM deployments o
                      WHERE o.app_id = d.app_id AND o.status = 'queued' AND o.kind <> 'schedule'
                        AND (o.queued_at, o.id) < (d.queued_at, d.id))))
ORDER BY d.queued_at, d.id
LIMIT sqlc.arg(lim)
FOR UPDATE SKIP LOCKED;

-- name: ClaimQueuedDeployments :many
-- NextQueuedDeployments and the move to dispatched in one statement: the
-- deadline becomes dispatch time + timeout. The candidates are picked once
-- (a MATERIALIZED CTE): as an IN subquery the planner may rescan it and,
-- with SKIP LOCKED, pick more rows than the limit. The partial unique index
-- deployments_one_active_per_app_key backs the one-per-app rule.
WITH next AS MATERIALIZED (
    SELECT d.id FROM deployments d
    WHERE d.status = 'queued'
      AND (sqlc.narg(server_ids)::uuid[] IS NULL
           OR d.app_id IN (SELECT a.id FROM apps a WHERE a.server_id = ANY (sqlc.narg(server_ids)::uuid[])))
      AND (d.kind = 'schedule' OR (
          NOT EXISTS (SELECT 1 FROM deployments x
                      WHERE x.app_id = d.app_id AND x.status IN ('dispatched', 'running') AND x.kind <> 'schedule')
          AND NOT EXISTS (SELECT 1 FROM deployments o
                          WHERE o.app_id = d.app_id AND o.status = 'queued' AND o.kind <> 'schedule'
                            AND (o.queued_at, o.id) < (d.queued_at, d.id))))
    ORDER BY d.queued_at, d.id
    LIMIT sqlc.arg(lim)
    FOR UPDATE SKIP LOCKED
)
UPDATE deployments u
SET status = 'dispatched', dispatched_at = now(), deadline_at = now() + u.timeout_seconds * interval '1 second'
FROM next
WHERE u.id = next.id AND u.status = 'queued'
RETURNING u.*;

-- name: DispatchDeployment :one
-- queued -> dispatched. A unique violation means another deployment of the
-- app is already dispatched or running.
UPDATE deployments
SET status = 'dispatched', dispatched_at = now(), deadline_at = now() + timeout_seconds * interval '1 second'
WHERE id = sqlc.arg(id) AND status = 'queued'
RETURNING *;

-- name: StartDeployment :one
-- dispatched -> running, at the agent's time when it reports one.
UPDATE deployments
SET status = 'running', started_at = coalesce(sqlc.narg(at)::timestamptz, now())
WHERE id = sqlc.arg(id) AND status = 'dispatched'
RETURNING *;

-- name: FinishDeployment :one
-- Any -> a terminal status, from the states the caller allows.
UPDATE deployments
SET status = sqlc.arg(status),
    finished_at = coalesce(sqlc.narg(at)::timestamptz, now()),
    failed_step = coalesce(sqlc.narg(failed_step), failed_step),
    exit_code = coalesce(sqlc.narg(exit_code), exit_code),
    failure_reason = coalesce(sqlc.narg(failure_reason), failure_reason)
WHERE id = sqlc.arg(id) AND status = ANY (sqlc.arg(from_statuses)::text[])
RETURNING *;

-- name: RequestDeploymentCancel :one
-- Records a cancel request on an unfinished deployment (the first request's
-- time is kept).
UPDATE deployments
SET cancel_requested_at = coalesce(cancel_requested_at, now())
WHERE id = sqlc.arg(id) AND status IN ('queued', 'dispatched', 'running')
RETURNING *;

-- name: SetDeploymentCommit :one
-- The commit the agent resolved; message and author are kept when not given.
UPDATE deployments
SET commit_sha = sqlc.arg(commit_sha),
    commit_message = coalesce(sqlc.narg(commit_message), commit_message),
    commit_author = coalesce(sqlc.narg(commit_author), commit_author)
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: ListOverdueDeployments :many
-- The reaper's scan: unfinished deployments past their deadline, oldest
-- deadline first.
SELECT * FROM deployments
WHERE status IN ('queued', 'dispatched', 'running') AND deadline_at < sqlc.arg(now)::timestamptz
ORDER BY deadline_at
LIMIT sqlc.arg(lim);

-- name: ListActiveDeploymentsForServer :many
-- Dispatched and running deployments of the server's apps, to re-send when
-- its agent reconnects.
SELECT * FROM deployments
WHERE status IN ('dispatched', 'running')
  AND app_id IN (SELECT a.id FROM apps a WHERE a.server_id = sqlc.arg(server_id))
ORDER BY id;

-- name: ListSucceededDeployments :many
-- An app's succeeded deployments, newest first: rollback targets.
SELECT * FROM deployments
WHERE app_id = sqlc.arg(app_id) AND status = 'succeeded'
  AND (sqlc.narg(before)::uuid IS NULL OR id < sqlc.narg(before))
ORDER BY id DESC
LIMIT sqlc.arg(lim);

-- name: GetDeploymentByTriggerRef :one
-- The deployment a webhook delivery created.
SELECT * FROM deployments
WHERE app_id = sqlc.arg(app_id) AND triggered_by = 'webhook' AND trigger_ref = sqlc.arg(trigger_ref);

-- name: DeleteDeployment :execrows
DELETE FROM deployments WHERE id = sqlc.arg(id);

-- name: SetDeploymentReleasePath :exec
-- The release directory the agent built or rolled back to.
UPDATE deployments SET release_path = sqlc.arg(release_path) WHERE id = sqlc.arg(id);

-- name: CreateSkippedScheduleRun :one
-- Records a run that was due while the schedule's previous one was
-- unfinished: it never runs (canceled at once, skipped, with the reason).
INSERT INTO deployments (
    id, app_id, triggered_by, environment, branch, timeout_seconds, deadline_at, status, finished_at, kind,
    schedule_id, schedule_name, schedule_command, skipped, skip_reason
)
SELECT sqlc.arg(id)::uuid, a.id, 'schedule', 'production', a.branch, a.timeout_seconds, now(), 'canceled', now(), 'schedule',
       sqlc.arg(schedule_id)::uuid, sqlc.arg(schedule_name)::text, sqlc.arg(schedule_command)::text, true, sqlc.arg(skip_reason)::text
FROM apps a WHERE a.id = sqlc.arg(app_id)
RETURNING *;
