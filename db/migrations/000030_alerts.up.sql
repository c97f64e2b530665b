-- 000030 threshold alerts on server metrics (issue 17 §3).
--
-- alert_rules: "metric above X for D", on one server, on the servers whose
-- labels hold one key=value, or on every server. A rule fires per
-- (server, mount) once the metric stayed above `above` for for_seconds,
-- and resolves once it fell below resolve_below (hysteresis: a value
-- wobbling around the threshold does not fire and resolve on every sample).
-- offline has no threshold: it fires once a server has been offline (no
-- heartbeat) for for_seconds.
CREATE TABLE alert_rules (
    id            uuid             PRIMARY KEY,
    name          text             NOT NULL,
    -- cpu, memory, swap, disk, inodes: percent; load: load1 per core;
    -- net_rx, net_tx: bytes per second; offline: none.
    metric        text             NOT NULL,
    above         double precision,
    resolve_below double precision,
    for_seconds   integer          NOT NULL,
    -- disk and inodes: one mount point; NULL for every mount.
    mount         text,
    -- The selector: server_id, or label_key = label_value, or neither
    -- (every server).
    server_id     uuid             REFERENCES servers (id) ON DELETE CASCADE,
    label_key     text,
    label_value   text,
    level         text             NOT NULL DEFAULT 'warning',
    created_at    timestamptz      NOT NULL DEFAULT now(),
    updated_at    timestamptz      NOT NULL DEFAULT now(),

    CONSTRAINT alert_rules_name_key UNIQUE (name),
    CONSTRAINT alert_rules_name_check CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    CONSTRAINT alert_rules_metric_check CHECK (metric IN ('cpu', 'memory', 'swap', 'load', 'disk', 'inodes', 'net_rx', 'net_tx', 'offline')),
    CONSTRAINT alert_rules_threshold_check CHECK (
        (metric = 'offline') = (above IS NULL)
        AND (above IS NULL) = (resolve_below IS NULL)
        AND (above IS NULL OR (above >= 0 AND resolve_below >= 0 AND resolve_below <= above))
    ),
    CONSTRAINT alert_rules_for_check CHECK (for_seconds BETWEEN 0 AND 86400),
    CONSTRAINT alert_rules_mount_check CHECK (mount IS NULL OR (metric IN ('disk', 'inodes') AND mount LIKE '/%' AND length(mount) <= 4096)),
    CONSTRAINT alert_rules_selector_check CHECK (
        (label_key IS NULL) = (label_value IS NULL)
        AND (server_id IS NULL OR label_key IS NULL)
    ),
    CONSTRAINT alert_rules_level_check CHECK (level IN ('warning', 'critical'))
);
CREATE INDEX alert_rules_server_id_idx ON alert_rules (server_id);

-- alert_states: one row per (rule, server, mount) that ever fired. Written
-- only on transitions, by conditional statements (fire: only when not
-- firing; resolve: only when firing), so two controllers evaluating the
-- same server never fire or resolve twice. pending_since is when the
-- condition began (kept in memory until it fires). mount is '' for
-- metrics that are not per mount.
CREATE TABLE alert_states (
    rule_id       uuid             NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    server_id     uuid             NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    mount         text             NOT NULL DEFAULT '',
    status        text             NOT NULL,
    pending_since timestamptz      NOT NULL,
    firing_since  timestamptz      NOT NULL,
    resolved_at   timestamptz,
    -- The value that fired it, and the last one that resolved it.
    value         double precision,
    updated_at    timestamptz      NOT NULL DEFAULT now(),

    PRIMARY KEY (rule_id, server_id, mount),
    CONSTRAINT alert_states_status_check CHECK (status IN ('firing', 'resolved')),
    CONSTRAINT alert_states_resolved_check CHECK ((status = 'resolved') = (resolved_at IS NOT NULL))
);
CREATE INDEX alert_states_server_id_idx ON alert_states (server_id) WHERE status = 'firing';
CREATE INDEX alert_states_firing_idx ON alert_states (status) WHERE status = 'firing';

CREATE TRIGGER alert_rules_set_updated_at BEFORE UPDATE ON alert_rules
    FOR EACH ROW EXECUTE FUNCTION berth_set_updated_at();

-- Every controller keeps the rules in memory and reloads them when told.
CREATE FUNCTION berth_alert_rules_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('berth_alert_rules', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER alert_rules_changed AFTER INSERT OR UPDATE OR DELETE ON alert_rules
    FOR EACH STATEMENT EXECUTE FUNCTION berth_alert_rules_changed();

-- Defaults on a new install (seeded once; an admin may remove them).
INSERT INTO alert_rules (id, name, metric, above, resolve_below, for_seconds, level) VALUES
    ('01900000-0000-7000-8000-000000000011', 'disk-above-90', 'disk', 90, 85, 300, 'critical'),
    ('01900000-0000-7000-8000-000000000012', 'memory-above-95', 'memory', 95, 90, 600, 'warning'),
    ('01900000-0000-7000-8000-000000000013', 'server-offline', 'offline', NULL, NULL, 120, 'critical');
