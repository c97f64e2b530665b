-- 000011 backup_destinations: where backups are stored. local: a directory on
-- the server that made the backup; s3: any S3-compatible service; sftp.
-- Non-secret settings are in config, secrets only in credentials (encrypted).

CREATE TABLE backup_destinations (
    id               uuid        PRIMARY KEY,
    name             text        NOT NULL,
    kind             text        NOT NULL,
    -- local: {"path": "/var/backups/berth"}
    -- s3:    {"bucket": "...", "region": "...", "endpoint": "https://...",
    --         "prefix": "berth/", "path_style": false}
    -- sftp:  {"host": "...", "port": 22, "username": "...", "path": "...",
    --         "host_key_fingerprint": "SHA256:..."}
    config           jsonb       NOT NULL DEFAULT '{}',
    -- Encrypted JSON: s3 {"access_key_id", "secret_access_key"}; sftp
    -- {"password"} or {"private_key"}. NULL for local, or s3 with an
    -- instance role.
    credentials      bytea,
    -- Result of the last connection test ("Test" in the UI, and each backup).
    last_checked_at  timestamptz,
    last_check_ok    boolean,
    last_check_error text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT backup_destinations_name_check CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    CONSTRAINT backup_destinations_kind_check CHECK (kind IN ('local', 's3', 'sftp')),
    CONSTRAINT backup_destinations_config_check CHECK (jsonb_typeof(config) = 'object')
);

CREATE UNIQUE INDEX backup_destinations_name_key ON backup_destinations (name);
CREATE INDEX backup_destinations_kind_idx ON backup_destinations (kind);

CREATE TRIGGER backup_destinations_set_updated_at BEFORE UPDATE ON backup_destinations
    FOR EACH ROW EXECUTE FUNCTION berth_set_updated_at();
