-- notify_events: what happened, written in the transaction of the change.

-- name: InsertNotifyEvent :one
INSERT INTO notify_events (id, kind, level, title, body, server_id, app_id, deployment_id, link, dedupe_key, resolves, created_at)
VALUES (sqlc.arg(id), sqlc.arg(kind), sqlc.arg(level), sqlc.arg(title), sqlc.arg(body), sqlc.narg(server_id),
        sqlc.narg(app_id), sqlc.narg(deployment_id), sqlc.narg(link), sqlc.narg(dedupe_key), sqlc.arg(resolves),
        sqlc.arg(created_at))
RETURNING *;

-- name: GetNotifyEvent :one
SELECT * FROM notify_events WHERE id = sqlc.arg(id);

-- name: DeleteNotifyEventsBefore :execrows
-- Retention: events no outbox row still needs (a pending, held or failed row
-- keeps its event).
DELETE FROM notify_events e
WHERE e.created_at < sqlc.arg(before)
  AND NOT EXISTS (SELECT 1 FROM notify_outbox o
                  WHERE o.event_id = e.id AND o.status IN ('pending', 'held'));

