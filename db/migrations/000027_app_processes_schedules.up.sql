-- 000027: apps that keep running (issue 16 §1): declared processes, their
-- last reported state, scheduled commands, and the jobs that apply them.

-- upstream_port: the app's local upstream on its server (127.0.0.1:port),
-- which forwards to the instances of every process with a port. Allocated
-- from the install's range (berth serve --upstream-ports, default
-- 10000-19999) when the first process with a port is added, unique per
-- server among live apps (a deleted app's port is free again).
ALTER TABLE apps ADD COLUMN upstream_port int;
ALTER TABLE apps ADD CONSTRAINT apps_upstream_port_check CHECK (upstream_port BETWEEN 1024 AND 65535);
CREATE UNIQUE INDEX apps_server_id_upstream_port_key ON apps (server_id, upstream_port)
    WHERE deleted_at IS NULL AND upstream_port IS NOT NULL;

-- app_processes: the processes an app declares (web, worker, ...). A job
-- hands the whole set to the agent, which supervises them.
CREATE TABLE app_processes (
    id                 uuid        PRIMARY KEY,
    app_id             uuid        NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    name               text        NOT NULL,
    command            text        NOT NULL,
    instances          int         NOT NULL DEFAULT 1,
    port               boolean     NOT NULL DEFAULT false,
    health_path        text        NOT NULL DEFAULT '',
    stop_signal        text        NOT NULL DEFAULT 'TERM',
    stop_grace_seconds int         NOT NULL DEFAULT 30,
    restart            text        NOT NULL DEFAULT 'always',
    memory_max_bytes   bigint      NOT NULL DEFAULT 0,
    cpu_max_percent    int         NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT app_processes_app_id_name_key UNIQUE (app_id, name),
    CONSTRAINT app_processes_name_check CHECK (name ~ '^[a-z][a-z0-9-]*$' AND length(name) <= 32),
    CONSTRAINT app_processes_command_check CHECK (command <> '' AND length(command) <= 4096),
    CONSTRAINT app_processes_instances_check CHECK (instances BETWEEN 1 AND 32),
    CONSTRAINT app_processes_health_path_check CHECK (health_path = '' OR (health_path ~ '^/' AND length(health_path) <= 1024)),
    CONSTRAINT app_processes_stop_signal_check CHECK (stop_signal IN ('TERM', 'INT', 'QUIT', 'HUP', 'USR1', 'USR2', 'KILL')),
    CONSTRAINT app_processes_stop_grace_check CHECK (stop_grace_seconds BETWEEN 0 AND 3600),
    CONSTRAINT app_processes_restart_check CHECK (restart IN ('always', 'on-failure', 'never')),
    CONSTRAINT app_processes_memory_max_check CHECK (memory_max_bytes >= 0),
    CONSTRAINT app_processes_cpu_max_check CHECK (cpu_max_percent BETWEEN 0 AND 100000)
);

CREATE TRIGGER app_processes_set_updated_at BEFORE UPDATE ON app_processes
    FOR EACH ROW EXECUTE FUNCTION berth_set_updated_at();

-- app_process_status: the last ProcessReport entry (AppProcesses, as
-- protobuf JSON) the app's agent sent, one row per app. A report replaces
-- the app's whole set, so a process that is gone from the server is gone
-- from here too; reported_at says how fresh it is. Bounded in size.
CREATE TABLE app_process_status (
    app_id      uuid        PRIMARY KEY REFERENCES apps (id) ON DELETE CASCADE,
    report      jsonb       NOT NULL,
    reported_at timestamptz NOT NULL,

    CONSTRAINT app_process_status_report_check CHECK (octet_length(report::text) <= 262144)
);

-- app_schedules: scheduled commands (cron). next_run_at is when the next
-- run is due; a controller's schedule loop claims due rows (FOR UPDATE SKIP
-- LOCKED), advances next_run_at from now (never a burst of catch-up runs)
-- and enqueues a schedule job.
CREATE TABLE app_schedules (
    id          uuid        PRIMARY KEY,
    app_id      uuid        NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    name        text        NOT NULL,
    cron        text        NOT NULL,
    command     text        NOT NULL,
    -- An IANA zone name; '' is UTC.
    timezone    text        NOT NULL DEFAULT '',
    next_run_at timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT app_schedules_app_id_name_key UNIQUE (app_id, name),
    CONSTRAINT app_schedules_name_check CHECK (name ~ '^[a-z][a-z0-9-]*$' AND length(name) <= 63),
    CONSTRAINT app_schedules_cron_check CHECK (cron <> '' AND length(cron) <= 256),
    CONSTRAINT app_schedules_command_check CHECK (command <> '' AND length(command) <= 4096),
    CONSTRAINT app_schedules_timezone_check CHECK (length(timezone) <= 64)
);

-- The schedule loop's scan.
CREATE INDEX app_schedules_next_run_at_idx ON app_schedules (next_run_at);

CREATE TRIGGER app_schedules_set_updated_at BEFORE UPDATE ON app_schedules
    FOR EACH ROW EXECUTE FUNCTION berth_set_updated_at();

-- Jobs: a process job applies a change to the app's processes (apply,
-- start, stop, restart; process_names limits it, empty is all); a schedule
-- job is one run of a scheduled command. Both are deployments rows, so they
-- share the queue, dispatch, deadline, cancel and journal of deploys.
ALTER TABLE deployments DROP CONSTRAINT deployments_kind_check;
ALTER TABLE deployments ADD CONSTRAINT deployments_kind_check CHECK (kind IN ('deploy', 'delete', 'process', 'schedule'));
ALTER TABLE deployments ADD COLUMN process_action text;
ALTER TABLE deployments ADD COLUMN process_names text[] NOT NULL DEFAULT '{}';
ALTER TABLE deployments ADD CONSTRAINT deployments_process_action_check CHECK (
    (kind = 'process') = (process_action IS NOT NULL)
    AND (process_action IS NULL OR process_action IN ('apply', 'start', 'stop', 'restart'))
);
ALTER TABLE deployments ADD CONSTRAINT deployments_process_names_check CHECK (
    kind = 'process' OR cardinality(process_names) = 0
);
-- schedule_id loses its target when the schedule is removed; schedule_name
-- and schedule_command (a snapshot at enqueue: a run does what was
-- scheduled when it was due) keep the history readable.
ALTER TABLE deployments ADD COLUMN schedule_id uuid REFERENCES app_schedules (id) ON DELETE SET NULL;
ALTER TABLE deployments ADD COLUMN schedule_name text;
ALTER TABLE deployments ADD COLUMN schedule_command text;
ALTER TABLE deployments ADD CONSTRAINT deployments_schedule_check CHECK (
    (kind = 'schedule') = (schedule_name IS NOT NULL AND schedule_command IS NOT NULL)
    AND (kind = 'schedule' OR schedule_id IS NULL)
);
-- A run that was due while the schedule's previous run was unfinished is
-- recorded as skipped: a row that never ran, finished at once as
-- 'canceled' with skipped set and the reason. A flag rather than a new
-- status keeps the job state machine (and everything that reads it:
-- follow, the reaper, the UI) as it is; 'canceled' rather than 'failed'
-- because nothing failed and no failure notification is due.
ALTER TABLE deployments ADD COLUMN skipped boolean NOT NULL DEFAULT false;
ALTER TABLE deployments ADD COLUMN skip_reason text;
ALTER TABLE deployments ADD CONSTRAINT deployments_skipped_check CHECK (
    NOT skipped OR (kind = 'schedule' AND status = 'canceled' AND skip_reason IS NOT NULL)
);

-- One job per app at a time, except schedule runs: a scheduled command runs
-- beside the app's deploys (the agent runs it from the release current
-- points at), so a long run does not hold back a deploy. Two runs of one
-- schedule never overlap: at most one unfinished run per schedule.
DROP INDEX deployments_one_active_per_app_key;
CREATE UNIQUE INDEX deployments_one_active_per_app_key
    ON deployments (app_id) WHERE status IN ('dispatched', 'running') AND kind <> 'schedule';
CREATE UNIQUE INDEX deployments_one_unfinished_per_schedule_key
    ON deployments (schedule_id) WHERE status IN ('queued', 'dispatched', 'running') AND schedule_id IS NOT NULL;
-- A schedule's runs, newest first (listing and retention: the last 100).
CREATE INDEX deployments_schedule_id_created_at_idx ON deployments (schedule_id, created_at DESC)
    WHERE schedule_id IS NOT NULL;
