DROP INDEX IF EXISTS backup_tasks_one_active_cleanup_key;
-- The old CHECKs would refuse cleanup tasks and system triggers.
DELETE FROM backup_tasks WHERE kind = 'cleanup' OR triggered_by = 'system';
ALTER TABLE backup_tasks DROP CONSTRAINT backup_tasks_triggered_by_check;
ALTER TABLE backup_tasks ADD CONSTRAINT backup_tasks_triggered_by_check
    CHECK (triggered_by IN ('user', 'api_token', 'schedule'));
ALTER TABLE backup_tasks DROP CONSTRAINT backup_tasks_kind_check;
ALTER TABLE backup_tasks ADD CONSTRAINT backup_tasks_kind_check
    CHECK (kind IN ('verify', 'restore', 'download', 'probe', 'delete'));
DROP INDEX IF EXISTS backups_cleanup_failed_idx;
ALTER TABLE backups DROP CONSTRAINT IF EXISTS backups_cleanup_unsucceeded_check;
ALTER TABLE backups DROP CONSTRAINT IF EXISTS backups_cleanup_status_check;
ALTER TABLE backups DROP COLUMN IF EXISTS cleanup_at;
ALTER TABLE backups DROP COLUMN IF EXISTS cleanup_error;
ALTER TABLE backups DROP COLUMN IF EXISTS cleanup_status;
