ALTER TABLE backup_schedules DROP COLUMN IF EXISTS verify;
DROP INDEX IF EXISTS backups_one_active_per_schedule_key;
CREATE UNIQUE INDEX backups_one_active_per_schedule_key ON backups (backup_schedule_id)
    WHERE status IN ('queued', 'dispatched', 'running');
ALTER TABLE backups DROP COLUMN IF EXISTS held;
DROP INDEX IF EXISTS backups_schedule_run_key;
ALTER TABLE backups DROP COLUMN IF EXISTS scheduled_for;
