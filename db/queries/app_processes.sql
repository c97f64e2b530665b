-- app_processes: the processes an app declares, and the last state its
-- agent reported (app_process_status).

-- name: CreateAppProcess :one
-- Inserts a process; a second one of the same name is a unique violation
-- (app_processes_app_id_name_key).
INSERT INTO app_processes (
    id, app_id, name, command, instances, port, health_path, stop_signal, stop_grace_seconds,
    restart, memory_max_bytes, cpu_max_percent
) VALUES (
    sqlc.arg(id), sqlc.arg(app_id), sqlc.arg(name), sqlc.arg(command), sqlc.arg(instances), sqlc.arg(port),
    sqlc.arg(health_path), sqlc.arg(stop_signal), sqlc.arg(stop_grace_seconds), sqlc.arg(restart),
    sqlc.arg(memory_max_bytes), sqlc.arg(cpu_max_percent)
)
RETURNING *;

-- name: ReplaceAppProcess :one
-- Changes every setting of an existing process (its id and created_at stay).
UPDATE app_processes SET
    command = sqlc.arg(command), instances = sqlc.arg(instances), port = sqlc.arg(port),
    health_path = sqlc.arg(health_path), stop_signal = sqlc.arg(stop_signal),
    stop_grace_seconds = sqlc.arg(stop_grace_seconds), restart = sqlc.arg(restart),
    memory_max_bytes = sqlc.arg(memory_max_bytes), cpu_max_percent = sqlc.arg(cpu_max_percent)
WHERE app_id = sqlc.arg(app_id) AND name = sqlc.arg(name)
RETURNING *;

-- name: ListAppProcesses :many
SELECT * FROM app_processes WHERE app_id = sqlc.arg(app_id) ORDER BY name;

-- name: DeleteAppProcess :execrows
DELETE FROM app_processes WHERE app_id = sqlc.arg(app_id) AND name = sqlc.arg(name);

-- name: AllocateUpstreamPort :one
-- Gives the app the lowest free port of 10000-19999 on its server (among
-- live apps) unless it has one; returns the app's port. Call with the app
-- locked (LockApp, apps.sql); two apps of one server allocating at once are told
-- apart by apps_server_id_upstream_port_key (the caller retries).
UPDATE apps a SET upstream_port = coalesce(a.upstream_port, (
    SELECT p FROM generate_series(10000, 19999) p
    WHERE NOT EXISTS (SELECT 1 FROM apps o WHERE o.server_id = a.server_id AND o.deleted_at IS NULL AND o.upstream_port = p)
    ORDER BY p LIMIT 1))
WHERE a.id = sqlc.arg(id)
RETURNING a.upstream_port;

-- name: UpsertAppProcessStatus :execrows
-- Records an app's reported processes, only for an app of that server (a
-- report about another server's app changes nothing) and never older than
-- what is stored.
INSERT INTO app_process_status (app_id, report, reported_at)
SELECT a.id, sqlc.arg(report), sqlc.arg(reported_at)
FROM apps a WHERE a.id = sqlc.arg(app_id) AND a.server_id = sqlc.arg(server_id)
ON CONFLICT (app_id) DO UPDATE SET report = excluded.report, reported_at = excluded.reported_at
WHERE app_process_status.reported_at <= excluded.reported_at;

-- name: ClearServerProcessStatus :execrows
-- A report lists every app with processes on the server: the live apps of
-- that server it leaves out have none running there, recorded as an empty
-- report (their declared processes read stopped, not unknown). An empty
-- report already stored is rewritten only when 30 s old, so heartbeats do
-- not rewrite every app's row.
INSERT INTO app_process_status (app_id, report, reported_at)
SELECT a.id, '{}'::jsonb, sqlc.arg(reported_at)::timestamptz
FROM apps a
WHERE a.server_id = sqlc.arg(server_id) AND a.deleted_at IS NULL
  AND NOT (a.id = ANY (sqlc.arg(keep)::uuid[]))
ON CONFLICT (app_id) DO UPDATE SET report = excluded.report, reported_at = excluded.reported_at
WHERE app_process_status.reported_at <= excluded.reported_at
  AND (app_process_status.report <> '{}'::jsonb
       OR app_process_status.reported_at < excluded.reported_at - interval '30 seconds');

-- name: GetAppProcessStatus :one
SELECT * FROM app_process_status WHERE app_id = sqlc.arg(app_id);
