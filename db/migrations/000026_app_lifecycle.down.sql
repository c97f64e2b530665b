-- Deleted apps go for good (with their deployments): the unique indexes
-- without deleted_at would refuse them.
DELETE FROM apps WHERE deleted_at IS NOT NULL;
ALTER TABLE deployments DROP CONSTRAINT deployments_kind_rollback_check;
ALTER TABLE deployments DROP CONSTRAINT deployments_kind_check;
ALTER TABLE deployments DROP COLUMN kind;
ALTER TABLE apps DROP CONSTRAINT apps_deploy_script_path_check;
ALTER TABLE apps DROP COLUMN deploy_script_path;
DROP INDEX apps_server_id_deploy_path_key;
CREATE UNIQUE INDEX apps_server_id_deploy_path_key ON apps (server_id, deploy_path);
DROP INDEX apps_name_key;
CREATE UNIQUE INDEX apps_name_key ON apps (name);
ALTER TABLE apps DROP COLUMN deleted_at;
