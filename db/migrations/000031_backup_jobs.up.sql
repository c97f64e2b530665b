-- 000031 backup jobs: what the seed's backups tables need to run as jobs on
-- the one job machinery of deployments (numbered agent events stored once,
-- a capped log, cancel, deadlines), the controller's age keyring the
-- objects are encrypted to, and the jobs that act on a stored object
-- (verify, restore, download, delete) or test a destination (probe).

-- The keyring: age X25519 identities. The agent encrypts with a key's
-- recipient (public); the identity (secret) is sealed with the controller's
-- secrets keyring, the row id and column bound in, and leaves the
-- controller only inside a verify or restore job. New backups use the
-- newest key; an old backup names its key in backups.encryption_key_id
-- (the key's id as a ULID string), so rotation never strands an object.
CREATE TABLE backup_encryption_keys (
    id         uuid        PRIMARY KEY,
    -- age1... (bech32), not a secret.
    recipient  text        NOT NULL,
    -- Sealed AGE-SECRET-KEY-1... .
    identity   bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT backup_encryption_keys_recipient_check CHECK (recipient ~ '^age1[02-9ac-hj-np-z]{58}$')
);

CREATE UNIQUE INDEX backup_encryption_keys_recipient_key ON backup_encryption_keys (recipient);

-- How a dump connects (issue 18 §2): NULL as the local database superuser
-- over the unix socket; otherwise the name of the variable in the app's
-- merged environment that holds a connection URL. The value itself is
-- read at dispatch and sent inside the job only.
ALTER TABLE backups ADD COLUMN connection_env text;
ALTER TABLE backups ADD CONSTRAINT backups_connection_env_check
    CHECK (connection_env ~ '^[A-Za-z_][A-Za-z0-9_]{0,127}$');
ALTER TABLE backup_schedules ADD COLUMN connection_env text;
ALTER TABLE backup_schedules ADD CONSTRAINT backup_schedules_connection_env_check
    CHECK (connection_env ~ '^[A-Za-z_][A-Za-z0-9_]{0,127}$');

-- Numbered agent events and the capped log, as deployments (000020).
ALTER TABLE backups ADD COLUMN agent_seq bigint NOT NULL DEFAULT 0;
ALTER TABLE backups ADD COLUMN log_bytes bigint NOT NULL DEFAULT 0;
ALTER TABLE backups ADD COLUMN log_truncated boolean NOT NULL DEFAULT false;
ALTER TABLE backups ADD CONSTRAINT backups_agent_seq_check CHECK (agent_seq >= 0);

-- Deleting a backup deletes its object first (a delete job on the server
-- that can reach it), then the row. While that runs, and after it failed,
-- the row says so: delete_requested_at is set, delete_error holds the last
-- failure (visible; a later delete or retention run retries it).
ALTER TABLE backups ADD COLUMN delete_requested_at timestamptz;
ALTER TABLE backups ADD COLUMN delete_error text;

-- backup_tasks: the jobs that are not backups. verify, restore, download
-- and delete act on a stored backup; probe writes, reads back and deletes
-- a small object at a destination. Same states, deadlines and event
-- numbering as backups and deployments; they run on one server's agent.
CREATE TABLE backup_tasks (
    id                    uuid        PRIMARY KEY,
    kind                  text        NOT NULL,
    -- SET NULL: a delete task outlives the row it deleted.
    backup_id             uuid        REFERENCES backups (id) ON DELETE SET NULL,
    -- CASCADE: a destination's probes go with it (backups restrict its
    -- removal already).
    backup_destination_id uuid        NOT NULL REFERENCES backup_destinations (id) ON DELETE CASCADE,
    server_id             uuid        REFERENCES servers (id) ON DELETE SET NULL,
    triggered_by          text        NOT NULL,
    -- restore: the database or directory restored into (NULL: the
    -- backup's source); force: into a non-empty database.
    target                text,
    force                 boolean     NOT NULL DEFAULT false,
    -- restore with a connection URL from the app's environment.
    connection_env        text,
    status                text        NOT NULL DEFAULT 'queued',
    failure_reason        text,
    timeout_seconds       int         NOT NULL,
    deadline_at           timestamptz NOT NULL,
    cancel_requested_at   timestamptz,
    queued_at             timestamptz NOT NULL DEFAULT now(),
    dispatched_at         timestamptz,
    started_at            timestamptz,
    finished_at           timestamptz,
    agent_seq             bigint      NOT NULL DEFAULT 0,
    log_bytes             bigint      NOT NULL DEFAULT 0,
    log_truncated         boolean     NOT NULL DEFAULT false,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT backup_tasks_kind_check CHECK (kind IN ('verify', 'restore', 'download', 'probe', 'delete')),
    CONSTRAINT backup_tasks_triggered_by_check CHECK (triggered_by IN ('user', 'api_token', 'schedule')),
    CONSTRAINT backup_tasks_status_check CHECK (status IN ('queued', 'dispatched', 'running', 'succeeded', 'failed', 'canceled', 'timed_out')),
    CONSTRAINT backup_tasks_target_check CHECK (target <> ''),
    CONSTRAINT backup_tasks_connection_env_check CHECK (connection_env ~ '^[A-Za-z_][A-Za-z0-9_]{0,127}$'),
    CONSTRAINT backup_tasks_timeout_seconds_check CHECK (timeout_seconds > 0),
    CONSTRAINT backup_tasks_agent_seq_check CHECK (agent_seq >= 0),
    CONSTRAINT backup_tasks_dispatched_check CHECK (status <> 'dispatched' OR dispatched_at IS NOT NULL),
    CONSTRAINT backup_tasks_running_check CHECK (status <> 'running' OR started_at IS NOT NULL),
    CONSTRAINT backup_tasks_finished_check CHECK (
        (status IN ('succeeded', 'failed', 'canceled', 'timed_out')) = (finished_at IS NOT NULL)
    )
);

CREATE INDEX backup_tasks_backup_id_idx ON backup_tasks (backup_id);
CREATE INDEX backup_tasks_backup_destination_id_idx ON backup_tasks (backup_destination_id);
CREATE INDEX backup_tasks_server_id_idx ON backup_tasks (server_id);
CREATE INDEX backup_tasks_status_idx ON backup_tasks (status);
CREATE INDEX backup_tasks_deadline_at_idx ON backup_tasks (deadline_at)
    WHERE status IN ('queued', 'dispatched', 'running');

CREATE TRIGGER backup_tasks_set_updated_at BEFORE UPDATE ON backup_tasks
    FOR EACH ROW EXECUTE FUNCTION berth_set_updated_at();

-- backup_logs: the output of backups and backup tasks, in the agent's
-- numbered chunks (as deployment_logs). job_id is a backup's or a task's id
-- (ULIDs never collide); rows are deleted with their job by the store.
CREATE TABLE backup_logs (
    job_id     uuid        NOT NULL,
    seq        bigint      NOT NULL,
    step       text        NOT NULL DEFAULT '',
    data       bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),

    PRIMARY KEY (job_id, seq),
    CONSTRAINT backup_logs_seq_check CHECK (seq > 0),
    CONSTRAINT backup_logs_data_check CHECK (octet_length(data) <= 1048576)
);

CREATE INDEX backup_logs_created_at_idx ON backup_logs (created_at);
