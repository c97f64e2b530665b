-- deployment_logs: output chunks by the agent's event number. Writers lock
-- the deployment row (LockDeploymentSeq) first, so the seq check and the
-- insert are one step per deployment.

-- name: LockDeploymentSeq :one
-- The deployment (with its committed event number and log size), row
-- locked until the transaction ends.
SELECT * FROM deployments
WHERE id = sqlc.arg(id)
FOR UPDATE;

-- name: AdvanceDeploymentSeq :exec
UPDATE deployments
SET agent_seq = sqlc.arg(agent_seq), log_bytes = sqlc.arg(log_bytes), log_truncated = sqlc.arg(log_truncated)
WHERE id = sqlc.arg(id);

-- name: InsertDeploymentLog :exec
INSERT INTO deployment_logs (deployment_id, seq, step, data)
VALUES (sqlc.arg(deployment_id), sqlc.arg(seq), sqlc.arg(step), sqlc.arg(data));

-- name: ListDeploymentLogs :many
-- Chunks after a seq, in order.
SELECT deployment_id, seq, step, data, created_at FROM deployment_logs
WHERE deployment_id = sqlc.arg(deployment_id) AND seq > sqlc.arg(after)
ORDER BY seq
LIMIT sqlc.arg(lim);

-- name: GetDeploymentServer :one
-- The server whose agent runs the deployment (its app's server).
SELECT a.server_id FROM deployments d JOIN apps a ON a.id = d.app_id
WHERE d.id = sqlc.arg(id);

-- name: ListDeploymentLogTail :many
-- The last chunks of a deployment's log, newest first (a schedule run's
-- output tail).
SELECT deployment_id, seq, step, data, created_at FROM deployment_logs
WHERE deployment_id = sqlc.arg(deployment_id)
ORDER BY seq DESC
LIMIT sqlc.arg(lim);
