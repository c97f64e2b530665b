-- 000006 server_metrics: the hot table. One row per agent sample, written with
-- COPY, range-partitioned by day (UTC) on recorded_at so the 7-day retention is
-- a partition drop. No surrogate id and no primary key: measured on this
-- machine, COPY into daily partitions ran ~300k rows/s without one against
-- ~200k rows/s with a ULID primary key (see db/README.md). Exactly-once ingest
-- is servers.metrics_seq, not a unique key. No default partition: a row outside
-- every partition is an error, never a silent pile-up.
--
-- Metric columns are nullable: NULL means "not measured in this sample" (the
-- first sample after a start has no rates; a failing collector loses one value,
-- not the sample).

CREATE TABLE server_metrics (
    server_id      uuid             NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    recorded_at    timestamptz      NOT NULL,
    cpu_percent    double precision,
    load1          double precision,
    load5          double precision,
    load15         double precision,
    -- bytes
    mem_used       bigint,
    mem_total      bigint,
    swap_used      bigint,
    swap_total     bigint,
    -- bytes, root filesystem (or the aggregate of real mounts); per mount in disks
    disk_used      bigint,
    disk_total     bigint,
    -- bytes per second over the sample interval, all physical disks / interfaces
    disk_read_bps  double precision,
    disk_write_bps double precision,
    net_rx_bps     double precision,
    net_tx_bps     double precision,
    -- [{"mount":"/","used":123,"total":456}, ...] for every real mount
    disks          jsonb
) PARTITION BY RANGE (recorded_at);

CREATE INDEX server_metrics_server_id_recorded_at_idx ON server_metrics (server_id, recorded_at DESC);

-- berth_ensure_metrics_partitions creates the missing daily partitions
-- server_metrics_pYYYYMMDD for from_day .. from_day + days - 1, each covering
-- [day 00:00 UTC, day+1 00:00 UTC). Idempotent; returns how many it created.
-- Serialised by a transaction-scoped advisory lock so several controllers
-- starting at once cannot race on the same partition.
CREATE FUNCTION berth_ensure_metrics_partitions(from_day date, days int) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_schema  name;
    v_day     date;
    v_name    text;
    v_created int := 0;
BEGIN
    IF from_day IS NULL OR days IS NULL OR days < 0 OR days > 3660 THEN
        RAISE EXCEPTION 'berth_ensure_metrics_partitions: bad arguments (from_day %, days %)', from_day, days
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    PERFORM pg_advisory_xact_lock(hashtext('berth_metrics_partitions'));

    SELECT n.nspname INTO v_schema
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = 'server_metrics'::regclass;

    FOR i IN 0 .. days - 1 LOOP
        v_day  := from_day + i;
        v_name := 'server_metrics_p' || to_char(v_day, 'YYYYMMDD');
        IF to_regclass(format('%I.%I', v_schema, v_name)) IS NULL THEN
            -- CREATE then ATTACH (not CREATE ... PARTITION OF): ATTACH takes
            -- only SHARE UPDATE EXCLUSIVE on server_metrics, so COPY ingest and
            -- chart reads carry on; the empty table makes the attach instant.
            -- The parent's index and foreign key are added to it on attach.
            EXECUTE format('CREATE TABLE %I.%I (LIKE %I.server_metrics INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                v_schema, v_name, v_schema);
            EXECUTE format(
                'ALTER TABLE %I.server_metrics ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L)',
                v_schema, v_schema, v_name,
                (v_day::timestamp AT TIME ZONE 'UTC'),
                ((v_day + 1)::timestamp AT TIME ZONE 'UTC'));
            v_created := v_created + 1;
        END IF;
    END LOOP;

    RETURN v_created;
END;
$$;

-- berth_drop_metrics_partitions_before drops every partition of server_metrics
-- whose upper bound is at or before cutoff 00:00 UTC (so only whole days older
-- than the cutoff go). Idempotent; returns how many it dropped. Dropping a
-- partition takes an ACCESS EXCLUSIVE lock on server_metrics for a moment:
-- callers should SET LOCAL lock_timeout and simply retry on the next run.
CREATE FUNCTION berth_drop_metrics_partitions_before(cutoff date) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_cutoff  timestamptz;
    v_part    record;
    v_dropped int := 0;
BEGIN
    IF cutoff IS NULL THEN
        RAISE EXCEPTION 'berth_drop_metrics_partitions_before: cutoff is NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_cutoff := cutoff::timestamp AT TIME ZONE 'UTC';

    PERFORM pg_advisory_xact_lock(hashtext('berth_metrics_partitions'));

    FOR v_part IN
        SELECT c.oid::regclass AS rel,
               -- relpartbound renders as: FOR VALUES FROM ('...') TO ('...'),
               -- timestamps printed with their UTC offset, so the cast is exact.
               substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']+)''\)')::timestamptz AS upper_bound
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'server_metrics'::regclass
    LOOP
        IF v_part.upper_bound IS NOT NULL AND v_part.upper_bound <= v_cutoff THEN
            EXECUTE format('DROP TABLE %s', v_part.rel);
            v_dropped := v_dropped + 1;
        END IF;
    END LOOP;

    RETURN v_dropped;
END;
$$;

-- A new database accepts metrics at once: yesterday through a week ahead.
SELECT berth_ensure_metrics_partitions(current_date - 1, 9);
