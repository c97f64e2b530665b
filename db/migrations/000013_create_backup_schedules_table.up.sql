-- 000013 backup_schedules: cron schedules for an app's backups, with
-- retention. The leader controller runs due schedules (next_run_at <= now(),
-- FOR UPDATE SKIP LOCKED), enqueues a backup, and computes the next run from
-- cron in the schedule's time zone. Retention prunes this schedule's
-- succeeded backups beyond retention_count and/or older than retention_days.

CREATE TABLE backup_schedules (
    id                    uuid        PRIMARY KEY,
    -- A schedule means nothing without its app.
    app_id                uuid        NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    -- RESTRICT: removing a destination must not silently stop backups.
    backup_destination_id uuid        NOT NULL REFERENCES backup_destinations (id) ON DELETE RESTRICT,
    kind                  text        NOT NULL,
    source                text        NOT NULL,
    -- Five-field cron expression (validated in Go), e.g. '0 3 * * *'.
    cron                  text        NOT NULL,
    -- IANA zone the cron expression is read in (validated in Go).
    timezone              text        NOT NULL DEFAULT 'UTC',
    retention_count       int,
    retention_days        int,
    enabled               boolean     NOT NULL DEFAULT true,
    -- NULL only while disabled.
    next_run_at           timestamptz,
    last_run_at           timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT backup_schedules_kind_check CHECK (kind IN ('postgres', 'mysql', 'directory')),
    CONSTRAINT backup_schedules_source_check CHECK (source <> ''),
    CONSTRAINT backup_schedules_cron_check CHECK (cron <> ''),
    CONSTRAINT backup_schedules_timezone_check CHECK (timezone <> ''),
    CONSTRAINT backup_schedules_retention_count_check CHECK (retention_count >= 1),
    CONSTRAINT backup_schedules_retention_days_check CHECK (retention_days >= 1),
    -- A schedule that never prunes fills the destination: one rule at least.
    CONSTRAINT backup_schedules_retention_check CHECK (retention_count IS NOT NULL OR retention_days IS NOT NULL),
    CONSTRAINT backup_schedules_next_run_check CHECK (NOT enabled OR next_run_at IS NOT NULL)
);

CREATE INDEX backup_schedules_app_id_idx ON backup_schedules (app_id);
CREATE INDEX backup_schedules_backup_destination_id_idx ON backup_schedules (backup_destination_id);
CREATE INDEX backup_schedules_kind_idx ON backup_schedules (kind);
CREATE INDEX backup_schedules_enabled_idx ON backup_schedules (enabled);
CREATE INDEX backup_schedules_next_run_at_idx ON backup_schedules (next_run_at) WHERE enabled;

CREATE TRIGGER backup_schedules_set_updated_at BEFORE UPDATE ON backup_schedules
    FOR EACH ROW EXECUTE FUNCTION berth_set_updated_at();

-- backups made by a schedule keep their rows when the schedule is deleted.
ALTER TABLE backups ADD CONSTRAINT backups_backup_schedule_id_fkey
    FOREIGN KEY (backup_schedule_id) REFERENCES backup_schedules (id) ON DELETE SET NULL;
