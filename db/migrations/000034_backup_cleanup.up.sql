-- 000034 backup cleanup (issue 18 §2 "An interrupted upload leaves no
-- object that any row calls good", and no debris at all): a backup that
-- ends failed, canceled or timed out after it was sent to an agent may have
-- left a temporary file or an unfinished multipart upload under its key
-- (the agent was killed, or lost its destination, before it could clean up).
-- Such a backup gets a cleanup task on its server: the agent deletes
-- whatever is under the backup's key, and the key's leftovers. Keys are
-- unique per backup, so this touches no other backup's data.

-- cleanup_status: NULL no cleanup needed (succeeded, or never dispatched);
-- 'pending' while a cleanup task is queued or runs; 'done'; 'failed' with
-- cleanup_error (queued again once the retry interval has passed since
-- cleanup_at, as failed deletes are). A succeeded backup is never cleaned
-- up: the CHECK says so.
ALTER TABLE backups ADD COLUMN cleanup_status text;
ALTER TABLE backups ADD COLUMN cleanup_error text;
ALTER TABLE backups ADD COLUMN cleanup_at timestamptz;
ALTER TABLE backups ADD CONSTRAINT backups_cleanup_status_check
    CHECK (cleanup_status IN ('pending', 'done', 'failed'));
ALTER TABLE backups ADD CONSTRAINT backups_cleanup_unsucceeded_check
    CHECK (cleanup_status IS NULL OR status IN ('failed', 'canceled', 'timed_out'));
CREATE INDEX backups_cleanup_failed_idx ON backups (cleanup_at) WHERE cleanup_status = 'failed';

-- The task kind, queued by the controller itself (triggered_by 'system').
ALTER TABLE backup_tasks DROP CONSTRAINT backup_tasks_kind_check;
ALTER TABLE backup_tasks ADD CONSTRAINT backup_tasks_kind_check
    CHECK (kind IN ('verify', 'restore', 'download', 'probe', 'delete', 'cleanup'));
ALTER TABLE backup_tasks DROP CONSTRAINT backup_tasks_triggered_by_check;
ALTER TABLE backup_tasks ADD CONSTRAINT backup_tasks_triggered_by_check
    CHECK (triggered_by IN ('user', 'api_token', 'schedule', 'system'));

-- One cleanup of a backup at a time.
CREATE UNIQUE INDEX backup_tasks_one_active_cleanup_key ON backup_tasks (backup_id)
    WHERE kind = 'cleanup' AND status IN ('queued', 'dispatched', 'running');
