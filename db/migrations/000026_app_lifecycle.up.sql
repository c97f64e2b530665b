-- 000026: app lifecycle.
--
-- Deleting an app is a soft delete (apps.deleted_at): deployments reference
-- apps ON DELETE CASCADE and backups ON DELETE SET NULL, so removing the row
-- would take the app's deployment history with it. A deleted app's name and
-- deploy path are free for a new app (the unique indexes become partial);
-- lists and lookups by name skip deleted apps, while its deployments still
-- name it. Its secrets and credential link are cleared when it is deleted.
ALTER TABLE apps ADD COLUMN deleted_at timestamptz;

DROP INDEX apps_name_key;
CREATE UNIQUE INDEX apps_name_key ON apps (name) WHERE deleted_at IS NULL;
DROP INDEX apps_server_id_deploy_path_key;
CREATE UNIQUE INDEX apps_server_id_deploy_path_key ON apps (server_id, deploy_path) WHERE deleted_at IS NULL;

-- The deploy script may come from the release being deployed: a path
-- relative to the release, never absolute, never through '..'. An app has
-- a stored script or a script path, not both.
ALTER TABLE apps ADD COLUMN deploy_script_path text;
ALTER TABLE apps ADD CONSTRAINT apps_deploy_script_path_check CHECK (
    deploy_script_path IS NULL OR (
        deploy_script_path <> '' AND length(deploy_script_path) <= 1024
        AND deploy_script_path !~ '^/' AND deploy_script_path !~ '(^|/)\.\.(/|$)'
        AND deploy_script = ''
    )
);

-- A deployment row is a job of the app: a deploy (or rollback, see
-- triggered_by) or the removal of the app's files from its server when the
-- app is deleted. The delete job runs through the same queue, one per app
-- at a time, and waits for an offline agent like a deploy does.
ALTER TABLE deployments ADD COLUMN kind text NOT NULL DEFAULT 'deploy';
ALTER TABLE deployments ADD CONSTRAINT deployments_kind_check CHECK (kind IN ('deploy', 'delete'));
ALTER TABLE deployments ADD CONSTRAINT deployments_kind_rollback_check CHECK (kind = 'deploy' OR triggered_by <> 'rollback');
