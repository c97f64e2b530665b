-- 000012 backups: one row per backup job and the object it produced. A dump
-- (PostgreSQL, MySQL) or a directory archive is streamed from the agent,
-- compressed, encrypted and checksummed on its way to the destination. Same job
-- states and deadline rules as deployments. A backup is 'succeeded' only once
-- its object is stored at the destination (object_key, size, checksum present).
--
-- Backups outlive their app: the row is the only index of an object in a
-- bucket, and the data of a deleted app is exactly what someone may need back.
-- So app_id is SET NULL on delete and app_name keeps the label.

CREATE TABLE backups (
    id                    uuid        PRIMARY KEY,
    app_id                uuid        REFERENCES apps (id) ON DELETE SET NULL,
    app_name              text        NOT NULL,
    -- The server that made it (and, for a local destination, holds it).
    server_id             uuid        REFERENCES servers (id) ON DELETE SET NULL,
    -- RESTRICT: a destination cannot be removed while backups point into it.
    backup_destination_id uuid        NOT NULL REFERENCES backup_destinations (id) ON DELETE RESTRICT,
    -- The schedule that made it (NULL: manual). FK added in 000013.
    backup_schedule_id    uuid,
    triggered_by          text        NOT NULL,
    kind                  text        NOT NULL,
    -- Database name (postgres, mysql) or directory path (directory).
    source                text        NOT NULL,
    status                text        NOT NULL DEFAULT 'queued',
    -- Key of the object within the destination (bucket key, or path under
    -- the destination's directory).
    object_key            text,
    compression           text        NOT NULL DEFAULT 'zstd',
    -- Keyring key id the object's data key is wrapped with (not a secret).
    encryption_key_id     text,
    -- Bytes stored at the destination, and the SHA-256 of those bytes.
    size_bytes            bigint,
    checksum_sha256       bytea,
    failure_reason        text,
    timeout_seconds       int         NOT NULL,
    deadline_at           timestamptz NOT NULL,
    cancel_requested_at   timestamptz,
    queued_at             timestamptz NOT NULL DEFAULT now(),
    dispatched_at         timestamptz,
    started_at            timestamptz,
    finished_at           timestamptz,
    -- Last successful verification (object read back, checksum and
    -- decryption/decompression checked), and the last verification failure.
    verified_at           timestamptz,
    verification_error    text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT backups_triggered_by_check CHECK (triggered_by IN ('user', 'api_token', 'schedule')),
    CONSTRAINT backups_kind_check CHECK (kind IN ('postgres', 'mysql', 'directory')),
    CONSTRAINT backups_source_check CHECK (source <> ''),
    CONSTRAINT backups_status_check CHECK (status IN ('queued', 'dispatched', 'running', 'succeeded', 'failed', 'canceled', 'timed_out')),
    CONSTRAINT backups_compression_check CHECK (compression IN ('zstd', 'gzip', 'none')),
    CONSTRAINT backups_size_bytes_check CHECK (size_bytes >= 0),
    CONSTRAINT backups_checksum_sha256_check CHECK (octet_length(checksum_sha256) = 32),
    CONSTRAINT backups_timeout_seconds_check CHECK (timeout_seconds > 0),
    CONSTRAINT backups_dispatched_check CHECK (status <> 'dispatched' OR dispatched_at IS NOT NULL),
    CONSTRAINT backups_running_check CHECK (status <> 'running' OR started_at IS NOT NULL),
    CONSTRAINT backups_finished_check CHECK (
        (status IN ('succeeded', 'failed', 'canceled', 'timed_out')) = (finished_at IS NOT NULL)
    ),
    -- Never green without the object at its destination.
    CONSTRAINT backups_succeeded_check CHECK (
        status <> 'succeeded' OR (object_key IS NOT NULL AND size_bytes IS NOT NULL
            AND checksum_sha256 IS NOT NULL AND encryption_key_id IS NOT NULL)
    )
);

CREATE INDEX backups_created_at_idx ON backups (created_at DESC);
CREATE INDEX backups_app_id_created_at_idx ON backups (app_id, created_at DESC);
CREATE INDEX backups_server_id_idx ON backups (server_id);
CREATE INDEX backups_backup_destination_id_idx ON backups (backup_destination_id);
-- Retention per schedule: newest first.
CREATE INDEX backups_backup_schedule_id_created_at_idx ON backups (backup_schedule_id, created_at DESC);
CREATE INDEX backups_status_idx ON backups (status);
CREATE INDEX backups_kind_idx ON backups (kind);
CREATE INDEX backups_triggered_by_idx ON backups (triggered_by);
CREATE INDEX backups_compression_idx ON backups (compression);
CREATE INDEX backups_deadline_at_idx ON backups (deadline_at)
    WHERE status IN ('queued', 'dispatched', 'running');
-- A schedule never overlaps itself: while one run is unfinished the next
-- tick's insert conflicts and is recorded as skipped.
CREATE UNIQUE INDEX backups_one_active_per_schedule_key ON backups (backup_schedule_id)
    WHERE status IN ('queued', 'dispatched', 'running');

CREATE TRIGGER backups_set_updated_at BEFORE UPDATE ON backups
    FOR EACH ROW EXECUTE FUNCTION berth_set_updated_at();
