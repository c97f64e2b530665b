-- name: InsertWebhookDelivery :one
-- A replayed delivery (same app, provider and id) inserts nothing and
-- returns no row.
INSERT INTO webhook_deliveries (id, app_id, provider, delivery_id, ref, result)
VALUES (sqlc.arg(id), sqlc.arg(app_id), sqlc.arg(provider), sqlc.arg(delivery_id), sqlc.arg(ref), sqlc.arg(result))
ON CONFLICT (app_id, provider, delivery_id) DO NOTHING
RETURNING *;

-- name: SetWebhookDeliveryDeployment :exec
UPDATE webhook_deliveries SET deployment_id = sqlc.arg(deployment_id) WHERE id = sqlc.arg(id);
