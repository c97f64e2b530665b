-- notify_channels: where notifications go.

-- name: CreateNotifyChannel :one
INSERT INTO notify_channels (id, name, kind, to_admins, recipients, url_host, config, rate_limit_per_hour)
VALUES (sqlc.arg(id), sqlc.arg(name), sqlc.arg(kind), sqlc.arg(to_admins), sqlc.arg(recipients),
        sqlc.narg(url_host), sqlc.narg(config), sqlc.arg(rate_limit_per_hour))
RETURNING *;

-- name: GetNotifyChannel :one
SELECT * FROM notify_channels WHERE id = sqlc.arg(id);

-- name: GetNotifyChannelByName :one
SELECT * FROM notify_channels WHERE name = sqlc.arg(name);

-- name: ListNotifyChannels :many
SELECT * FROM notify_channels ORDER BY name;

-- name: DeleteNotifyChannel :execrows
DELETE FROM notify_channels WHERE id = sqlc.arg(id);

-- name: CountNotifyChannelsOfKind :one
SELECT count(*) FROM notify_channels WHERE kind = sqlc.arg(kind);

-- name: NotifyChannelDelivered :exec
-- Skipped while the channel is healthy and its last delivery is under a
-- second old: every delivery updating the one channel row would make the
-- channel's concurrent sends wait on each other's commits (a row lock held
-- through each fsync), capping a channel at one delivery per commit.
UPDATE notify_channels
SET last_delivered_at = sqlc.arg(at), last_error = NULL, failing_since = NULL
WHERE id = sqlc.arg(id)
  AND (last_error IS NOT NULL OR failing_since IS NOT NULL OR last_delivered_at IS NULL
       OR last_delivered_at < sqlc.arg(at)::timestamptz - interval '1 second'
       OR last_delivered_at > sqlc.arg(at)::timestamptz);

-- name: NotifyChannelFailed :exec
-- failing_since keeps the first failure of the current run of failures.
UPDATE notify_channels
SET last_error = sqlc.arg(last_error), failing_since = coalesce(failing_since, sqlc.arg(at))
WHERE id = sqlc.arg(id);

-- name: MatchNotifyChannels :many
-- The enabled channels with a rule matching an event: a pattern equal to the
-- kind, '*', or 'prefix.*' where the kind starts with 'prefix.'; the rule's
-- server and app, when set, equal the event's; the event's level is at least
-- the rule's.
SELECT c.* FROM notify_channels c
WHERE c.enabled AND EXISTS (
    SELECT 1 FROM notify_rules r
    WHERE r.channel_id = c.id
      AND (r.server_id IS NULL OR r.server_id = sqlc.narg(server_id))
      AND (r.app_id IS NULL OR r.app_id = sqlc.narg(app_id))
      AND array_position(ARRAY['info', 'warning', 'critical'], r.min_level)
          <= array_position(ARRAY['info', 'warning', 'critical'], sqlc.arg(level)::text)
      AND EXISTS (SELECT 1 FROM unnest(r.events) AS p
                  WHERE p = '*' OR p = sqlc.arg(kind)::text
                     OR (right(p, 2) = '.*' AND starts_with(sqlc.arg(kind)::text, left(p, -1)))))
ORDER BY c.name;

-- name: AdminEmails :many
SELECT email FROM users
WHERE role = 'admin' AND status = 'active' AND disabled_at IS NULL
ORDER BY email;

-- name: SetNotifyChannelRateLimit :one
-- Read by every publish and delivery, so a change holds from the next
-- message on.
UPDATE notify_channels
SET rate_limit_per_hour = sqlc.arg(rate_limit_per_hour), updated_at = now()
WHERE id = sqlc.arg(id)
RETURNING *;
