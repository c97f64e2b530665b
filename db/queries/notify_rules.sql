-- notify_rules: which events go to which channel.

-- name: CreateNotifyRule :one
INSERT INTO notify_rules (id, channel_id, events, server_id, app_id, min_level)
VALUES (sqlc.arg(id), sqlc.arg(channel_id), sqlc.arg(events), sqlc.narg(server_id), sqlc.narg(app_id), sqlc.arg(min_level))
RETURNING *;

-- name: ListNotifyRules :many
SELECT * FROM notify_rules ORDER BY id;

-- name: DeleteNotifyRule :execrows
DELETE FROM notify_rules WHERE id = sqlc.arg(id);
