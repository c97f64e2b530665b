-- name: InsertWebhookDelivery :one
-- A replayed delivery (same app, provider and id) inserts nothing and
-- returns no row.
INSERT INTO webhook_deliveries (id, app_id, provider, delivery_id, ref, result, body_digest)
VALUES (sqlc.arg(id), sqlc.arg(app_id), sqlc.arg(provider), sqlc.arg(delivery_id), sqlc.arg(ref), sqlc.arg(result), sqlc.narg(body_digest))
ON CONFLICT (app_id, provider, delivery_id) DO NOTHING
RETURNING *;

-- name: SetWebhookDeliveryDeployment :exec
UPDATE webhook_deliveries SET deployment_id = sqlc.arg(deployment_id) WHERE id = sqlc.arg(id);

-- name: LockWebhookBody :exec
-- Serialises deliveries of one body to one app until the transaction ends,
-- so two replays racing with new delivery ids cannot both miss each other.
SELECT pg_advisory_xact_lock(hashtextextended(sqlc.arg(app_id)::uuid::text || encode(sqlc.arg(body_digest)::bytea, 'hex'), 0));

-- name: WebhookBodySeen :one
-- Whether the same body reached this app from this provider since a time.
SELECT EXISTS (
    SELECT 1 FROM webhook_deliveries
    WHERE app_id = sqlc.arg(app_id) AND provider = sqlc.arg(provider)
      AND body_digest = sqlc.arg(body_digest)::bytea AND created_at >= sqlc.arg(since)
) AS seen;
