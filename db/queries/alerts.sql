-- alert_rules and alert_states: threshold alerts on server metrics.

-- name: CreateAlertRule :one
INSERT INTO alert_rules (id, name, metric, above, resolve_below, for_seconds, mount, server_id, label_key, label_value, level)
VALUES (sqlc.arg(id), sqlc.arg(name), sqlc.arg(metric), sqlc.narg(above), sqlc.narg(resolve_below), sqlc.arg(for_seconds),
        sqlc.narg(mount), sqlc.narg(server_id), sqlc.narg(label_key), sqlc.narg(label_value), sqlc.arg(level))
RETURNING *;

-- name: ListAlertRules :many
SELECT * FROM alert_rules ORDER BY name;

-- name: GetAlertRuleByName :one
SELECT * FROM alert_rules WHERE name = sqlc.arg(name);

-- name: DeleteAlertRule :execrows
DELETE FROM alert_rules WHERE id = sqlc.arg(id);

-- name: FireAlertState :one
-- Opens a firing state unless it is firing already (another controller
-- fired it): no row back means nothing to publish.
INSERT INTO alert_states AS s (rule_id, server_id, mount, status, pending_since, firing_since, value, updated_at)
VALUES (sqlc.arg(rule_id), sqlc.arg(server_id), sqlc.arg(mount), 'firing', sqlc.arg(pending_since), sqlc.arg(firing_since),
        sqlc.arg(value), sqlc.arg(firing_since))
ON CONFLICT (rule_id, server_id, mount) DO UPDATE
    SET status = 'firing', pending_since = excluded.pending_since, firing_since = excluded.firing_since,
        resolved_at = NULL, value = excluded.value, updated_at = excluded.updated_at
    WHERE s.status <> 'firing'
RETURNING *;

-- name: ResolveAlertState :one
-- Closes a firing state; no row back when it was not firing (resolved
-- already, by another controller).
UPDATE alert_states
SET status = 'resolved', resolved_at = sqlc.arg(resolved_at), value = sqlc.arg(value), updated_at = sqlc.arg(resolved_at)
WHERE rule_id = sqlc.arg(rule_id) AND server_id = sqlc.arg(server_id) AND mount = sqlc.arg(mount) AND status = 'firing'
RETURNING *;

-- name: ListFiringAlertStates :many
SELECT * FROM alert_states WHERE status = 'firing' ORDER BY firing_since;

-- name: ListAlertStatesOfRule :many
SELECT * FROM alert_states WHERE rule_id = sqlc.arg(rule_id) AND status = 'firing' ORDER BY firing_since;

-- name: ListFiringAlertsOfServer :many
SELECT s.*, r.name AS rule_name, r.metric, r.level, r.above
FROM alert_states s JOIN alert_rules r ON r.id = s.rule_id
WHERE s.server_id = sqlc.arg(server_id) AND s.status = 'firing'
ORDER BY s.firing_since;

-- name: ListAlertTargets :many
-- What evaluation needs to know of every server: its name, labels and CPU
-- count (load is per core), and for offline rules its liveness.
SELECT id, name, labels, status, last_seen_at,
       coalesce(CASE WHEN jsonb_typeof(facts -> 'cpus') = 'number' THEN (facts ->> 'cpus')::integer END, 0)::integer AS cpus
FROM servers;

-- name: ListOfflineAlertTargets :many
SELECT id, name, labels, status, last_seen_at, 0::integer AS cpus
FROM servers WHERE status = 'offline';

-- name: UpdateAlertRule :one
-- Replaces a rule's definition, keeping its id and name.
UPDATE alert_rules
SET metric = sqlc.arg(metric), above = sqlc.narg(above), resolve_below = sqlc.narg(resolve_below),
    for_seconds = sqlc.arg(for_seconds), mount = sqlc.narg(mount), server_id = sqlc.narg(server_id),
    label_key = sqlc.narg(label_key), label_value = sqlc.narg(label_value), level = sqlc.arg(level)
WHERE id = sqlc.arg(id)
RETURNING *;
