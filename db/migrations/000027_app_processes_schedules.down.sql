-- Process and schedule jobs go with the tables they belong to.
DELETE FROM deployments WHERE kind IN ('process', 'schedule');
DROP INDEX deployments_schedule_id_created_at_idx;
DROP INDEX deployments_one_unfinished_per_schedule_key;
DROP INDEX deployments_one_active_per_app_key;
CREATE UNIQUE INDEX deployments_one_active_per_app_key
    ON deployments (app_id) WHERE status IN ('dispatched', 'running');
ALTER TABLE deployments DROP CONSTRAINT deployments_skipped_check;
ALTER TABLE deployments DROP COLUMN skip_reason;
ALTER TABLE deployments DROP COLUMN skipped;
ALTER TABLE deployments DROP CONSTRAINT deployments_schedule_check;
ALTER TABLE deployments DROP COLUMN schedule_command;
ALTER TABLE deployments DROP COLUMN schedule_name;
ALTER TABLE deployments DROP COLUMN schedule_id;
ALTER TABLE deployments DROP CONSTRAINT deployments_process_names_check;
ALTER TABLE deployments DROP CONSTRAINT deployments_process_action_check;
ALTER TABLE deployments DROP COLUMN process_names;
ALTER TABLE deployments DROP COLUMN process_action;
ALTER TABLE deployments DROP CONSTRAINT deployments_kind_check;
ALTER TABLE deployments ADD CONSTRAINT deployments_kind_check CHECK (kind IN ('deploy', 'delete'));
DROP TABLE app_schedules;
DROP TABLE app_process_status;
DROP TABLE app_processes;
DROP INDEX apps_server_id_upstream_port_key;
ALTER TABLE apps DROP CONSTRAINT apps_upstream_port_check;
ALTER TABLE apps DROP COLUMN upstream_port;
