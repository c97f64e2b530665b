-- notifications: each user's in-app inbox.

-- name: CreateNotification :one
-- With a dedupe_key, at most one unread notification per user and key: a
-- repeat inserts nothing and returns no row.
INSERT INTO notifications (id, user_id, kind, level, title, body, link, dedupe_key)
VALUES (sqlc.arg(id), sqlc.arg(user_id), sqlc.arg(kind), sqlc.arg(level), sqlc.arg(title),
        sqlc.arg(body), sqlc.narg(link), sqlc.narg(dedupe_key))
ON CONFLICT (user_id, dedupe_key) WHERE read_at IS NULL AND dedupe_key IS NOT NULL DO NOTHING
RETURNING *;

-- name: GetNotification :one
SELECT * FROM notifications WHERE id = sqlc.arg(id) AND user_id = sqlc.arg(user_id);

-- name: ListNotifications :many
-- A user's inbox, newest first; keyset paging on the ULID id.
SELECT * FROM notifications
WHERE user_id = sqlc.arg(user_id)
  AND (NOT sqlc.arg(unread_only)::boolean OR read_at IS NULL)
  AND (sqlc.narg(before)::uuid IS NULL OR id < sqlc.narg(before))
ORDER BY id DESC
LIMIT sqlc.arg(lim);

-- name: CountUnreadNotifications :one
SELECT count(*) FROM notifications WHERE user_id = sqlc.arg(user_id) AND read_at IS NULL;

-- name: MarkNotificationRead :one
-- Idempotent: an already read notification keeps its first read_at.
UPDATE notifications SET read_at = coalesce(read_at, now())
WHERE id = sqlc.arg(id) AND user_id = sqlc.arg(user_id)
RETURNING *;

-- name: MarkAllNotificationsRead :execrows
UPDATE notifications SET read_at = now() WHERE user_id = sqlc.arg(user_id) AND read_at IS NULL;

-- name: DeleteNotification :execrows
DELETE FROM notifications WHERE id = sqlc.arg(id) AND user_id = sqlc.arg(user_id);

-- name: ResolveNotifications :execrows
-- A "resolved" event closes the unread notifications of the condition it
-- ends (every user's): they are marked read.
UPDATE notifications SET read_at = sqlc.arg(at)
WHERE dedupe_key = sqlc.arg(dedupe_key) AND read_at IS NULL;

-- name: ActiveAdminIDs :many
SELECT id FROM users WHERE role = 'admin' AND status = 'active' ORDER BY id;
