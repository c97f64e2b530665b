ALTER TABLE backups DROP CONSTRAINT IF EXISTS backups_backup_schedule_id_fkey;
DROP TABLE IF EXISTS backup_schedules;
