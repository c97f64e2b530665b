ALTER TABLE backup_schedules DROP COLUMN IF EXISTS verify;
ALTER TABLE backups DROP COLUMN IF EXISTS held;
DROP INDEX IF EXISTS backups_schedule_run_key;
ALTER TABLE backups DROP COLUMN IF EXISTS scheduled_for;
