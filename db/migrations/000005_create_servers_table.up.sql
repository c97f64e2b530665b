-- 000005 servers: managed Linux servers, each running berth-agent, which dials
-- the controller over mutual TLS. Removing a server deletes its row (its
-- metrics go with it; apps must be deleted or moved first, see db/README.md).

CREATE TABLE servers (
    id                    uuid        PRIMARY KEY,
    -- Addressed by name in the CLI, globally unique; a lowercase slug.
    name                  text        NOT NULL,
    -- Reported by the agent (also in facts); NULL until the first hello.
    hostname              text,
    -- Last peer address the controller saw the agent connect from.
    ip_address            inet,
    labels                jsonb       NOT NULL DEFAULT '{}',
    status                text        NOT NULL DEFAULT 'pending',
    -- Host facts from the agent: os, platform, platform_version, kernel, arch,
    -- cpus, memory_bytes, hostname, boot_time, ...
    facts                 jsonb       NOT NULL DEFAULT '{}',
    agent_version         text,
    -- One-time join token (SHA-256), single use: enrolment consumes it by
    -- setting both columns to NULL in the same UPDATE that sets enrolled_at.
    join_token_hash       bytea,
    join_token_expires_at timestamptz,
    enrolled_at           timestamptz,
    last_seen_at          timestamptz,
    -- Highest metrics batch sequence number committed for this server, updated
    -- in the same transaction as the batch's COPY: a re-sent batch whose
    -- sequence is <= this value is acknowledged without storing it again.
    metrics_seq           bigint      NOT NULL DEFAULT 0,
    disabled_at           timestamptz,
    -- Optional, encrypted: a break-glass or imported key kept for the operator.
    -- Berth itself never connects over SSH.
    ssh_private_key       bytea,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT servers_name_check CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    CONSTRAINT servers_status_check CHECK (status IN ('pending', 'online', 'offline', 'disabled')),
    CONSTRAINT servers_disabled_at_check CHECK ((status = 'disabled') = (disabled_at IS NOT NULL)),
    CONSTRAINT servers_labels_check CHECK (jsonb_typeof(labels) = 'object'),
    CONSTRAINT servers_facts_check CHECK (jsonb_typeof(facts) = 'object'),
    CONSTRAINT servers_join_token_check CHECK (
        (join_token_hash IS NULL) = (join_token_expires_at IS NULL)
        AND (join_token_hash IS NULL OR octet_length(join_token_hash) = 32)
    ),
    CONSTRAINT servers_metrics_seq_check CHECK (metrics_seq >= 0)
);

CREATE UNIQUE INDEX servers_name_key ON servers (name);
CREATE UNIQUE INDEX servers_join_token_hash_key ON servers (join_token_hash) WHERE join_token_hash IS NOT NULL;
CREATE INDEX servers_status_idx ON servers (status);
CREATE INDEX servers_last_seen_at_idx ON servers (last_seen_at);
-- Label selectors: labels @> '{"env":"prod"}'.
CREATE INDEX servers_labels_idx ON servers USING gin (labels jsonb_path_ops);

CREATE TRIGGER servers_set_updated_at BEFORE UPDATE ON servers
    FOR EACH ROW EXECUTE FUNCTION berth_set_updated_at();
