-- 000033 backup schedule runs (issue 18 §3): the run key that makes a
-- schedule's tick run once whoever runs it, the agent-held runs, and
-- automatic verification per schedule.

-- scheduled_for: the cron tick a scheduled backup is the run of. A tick is
-- run by the controller (while the schedule's agent is connected) or by the
-- agent itself from the schedule it holds (while no controller is
-- reachable); both name the same tick, so the unique key below makes the
-- second copy impossible: the controller never runs a tick the agent
-- already ran, and the agent's report of its run is stored once.
ALTER TABLE backups ADD COLUMN scheduled_for timestamptz;
CREATE UNIQUE INDEX backups_schedule_run_key ON backups (backup_schedule_id, scheduled_for)
    WHERE scheduled_for IS NOT NULL;

-- held: the agent ran this backup from its held copy of the schedule while
-- the controller was unreachable (the row was made from its report).
ALTER TABLE backups ADD COLUMN held boolean NOT NULL DEFAULT false;

-- Held runs are reported together when the agent is back, each still
-- 'running' until its events arrive; the agent already ran them one after
-- the other (it never starts a schedule's run beside the previous one), so
-- they are outside the one-active-run index. The controller still starts
-- no run of its own while any run of the schedule, held or not, is
-- unfinished (it checks before inserting).
DROP INDEX backups_one_active_per_schedule_key;
CREATE UNIQUE INDEX backups_one_active_per_schedule_key ON backups (backup_schedule_id)
    WHERE status IN ('queued', 'dispatched', 'running') AND NOT held;

-- verify: each backup this schedule makes is verified once it succeeded.
ALTER TABLE backup_schedules ADD COLUMN verify boolean NOT NULL DEFAULT false;
