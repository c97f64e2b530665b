-- apps: webhook_secret, env_vars, env_production and env_staging are sealed
-- in Go with the row id bound in; these queries only move ciphertext.

-- name: CreateApp :one
INSERT INTO apps (
    id, server_id, git_credential_id, name, repository_url, branch, deploy_path, run_as_user,
    deploy_script, deploy_script_path, health_check_command, health_check_url, health_check_timeout_seconds,
    reload_command, releases_to_keep, shared_paths, timeout_seconds,
    webhook_secret, env_vars, env_production, env_staging
) VALUES (
    sqlc.arg(id), sqlc.arg(server_id), sqlc.narg(git_credential_id), sqlc.arg(name), sqlc.arg(repository_url),
    sqlc.arg(branch), sqlc.arg(deploy_path), sqlc.arg(run_as_user), sqlc.arg(deploy_script), sqlc.narg(deploy_script_path),
    sqlc.narg(health_check_command), sqlc.narg(health_check_url), sqlc.arg(health_check_timeout_seconds),
    sqlc.narg(reload_command), sqlc.arg(releases_to_keep), sqlc.arg(shared_paths)::text[], sqlc.arg(timeout_seconds),
    sqlc.narg(webhook_secret), sqlc.narg(env_vars), sqlc.narg(env_production), sqlc.narg(env_staging)
)
RETURNING *;

-- name: GetApp :one
SELECT * FROM apps WHERE id = sqlc.arg(id);

-- name: GetAppByName :one
-- Deleted apps are not found by name: their name is free.
SELECT * FROM apps WHERE name = sqlc.arg(name) AND deleted_at IS NULL;

-- name: ListApps :many
-- Newest first; keyset paging on the ULID id.
SELECT * FROM apps
WHERE deleted_at IS NULL
  AND (sqlc.narg(server_id)::uuid IS NULL OR server_id = sqlc.narg(server_id))
  AND (sqlc.narg(git_credential_id)::uuid IS NULL OR git_credential_id = sqlc.narg(git_credential_id))
  AND (sqlc.narg(before)::uuid IS NULL OR id < sqlc.narg(before))
ORDER BY id DESC
LIMIT sqlc.arg(lim);

-- name: ListAppNamesByGitCredential :many
-- The apps that keep a credential from being deleted, by name.
SELECT name FROM apps WHERE git_credential_id = sqlc.arg(git_credential_id) AND deleted_at IS NULL ORDER BY name;

-- name: UpdateApp :one
-- Replaces every setting that is not a secret. Moving server_id carries the
-- app's domains along (ON UPDATE CASCADE).
UPDATE apps SET
    server_id = sqlc.arg(server_id),
    git_credential_id = sqlc.narg(git_credential_id),
    name = sqlc.arg(name),
    repository_url = sqlc.arg(repository_url),
    branch = sqlc.arg(branch),
    deploy_path = sqlc.arg(deploy_path),
    run_as_user = sqlc.arg(run_as_user),
    deploy_script = sqlc.arg(deploy_script),
    deploy_script_path = sqlc.narg(deploy_script_path),
    health_check_command = sqlc.narg(health_check_command),
    health_check_url = sqlc.narg(health_check_url),
    health_check_timeout_seconds = sqlc.arg(health_check_timeout_seconds),
    reload_command = sqlc.narg(reload_command),
    releases_to_keep = sqlc.arg(releases_to_keep),
    shared_paths = sqlc.arg(shared_paths)::text[],
    timeout_seconds = sqlc.arg(timeout_seconds)
WHERE id = sqlc.arg(id) AND deleted_at IS NULL
RETURNING *;

-- name: SetAppCurrentDeployment :one
-- The composite foreign key refuses a deployment of another app.
UPDATE apps SET current_deployment_id = sqlc.narg(deployment_id) WHERE id = sqlc.arg(id) RETURNING *;

-- name: GetAppSecrets :one
SELECT id, webhook_secret, env_vars, env_production, env_staging FROM apps WHERE id = sqlc.arg(id);

-- name: GetAppSecretsForUpdate :one
-- Locks the row for a read-modify-write of an environment.
SELECT id, webhook_secret, env_vars, env_production, env_staging FROM apps WHERE id = sqlc.arg(id) FOR UPDATE;

-- name: SetAppWebhookSecret :execrows
-- set_by is the user whose deploy rights the webhook's deliveries use.
UPDATE apps SET webhook_secret = sqlc.narg(ciphertext), webhook_secret_set_by = sqlc.narg(set_by) WHERE id = sqlc.arg(id);

-- name: SetAppEnvVars :execrows
UPDATE apps SET env_vars = sqlc.narg(ciphertext) WHERE id = sqlc.arg(id);

-- name: SetAppEnvProduction :execrows
UPDATE apps SET env_production = sqlc.narg(ciphertext) WHERE id = sqlc.arg(id);

-- name: SetAppEnvStaging :execrows
UPDATE apps SET env_staging = sqlc.narg(ciphertext) WHERE id = sqlc.arg(id);

-- name: DeleteApp :execrows
DELETE FROM apps WHERE id = sqlc.arg(id);

-- name: SoftDeleteApp :execrows
-- Marks the app deleted, keeping the row for its deployments' history: its
-- name and deploy path are free again, and its secrets and credential link
-- go (nothing may deploy it any more).
UPDATE apps SET
    deleted_at = now(), git_credential_id = NULL, webhook_secret = NULL, webhook_secret_set_by = NULL,
    env_vars = NULL, env_production = NULL, env_staging = NULL
WHERE id = sqlc.arg(id) AND deleted_at IS NULL;

-- name: CountUnfinishedDeployments :one
SELECT count(*) FROM deployments WHERE app_id = sqlc.arg(app_id) AND status IN ('queued', 'dispatched', 'running');

-- name: PurgeDeletedAppsOfServer :execrows
-- Removing a server takes the history of its deleted apps with it (their
-- deployments cascade); apps not deleted still refuse the removal.
DELETE FROM apps WHERE server_id = sqlc.arg(server_id) AND deleted_at IS NOT NULL;

-- name: LockApp :one
-- Reads a live app and locks its row until the transaction ends, so an
-- update made from an earlier read can tell whether someone changed the
-- app's settings in between.
SELECT * FROM apps WHERE id = sqlc.arg(id) AND deleted_at IS NULL FOR UPDATE;
