-- server_metrics: written with COPY in binary form by the store
-- (controller/internal/store/metric_rows.go), read downsampled.

-- name: MetricsSeries :many
-- One point per server and step-wide bucket in [since, until): averages,
-- plus the peak CPU and the largest totals (a total only changes when the
-- hardware does). Buckets are aligned on origin so a chart's buckets do not
-- shift as time passes. Partition pruning keeps it to the days involved.
-- Buckets without samples are absent. A value no sample in the bucket
-- measured comes back as NaN, not NULL: sqlc cannot type a nullable
-- aggregate, and the store maps NaN back to "no value".
SELECT
    server_id,
    date_bin(sqlc.arg(step)::interval, recorded_at, sqlc.arg(origin)::timestamptz)::timestamptz AS bucket,
    count(*) AS samples,
    coalesce(avg(cpu_percent)::float8, 'NaN')::float8 AS cpu_percent,
    coalesce(max(cpu_percent)::float8, 'NaN')::float8 AS cpu_percent_max,
    coalesce(avg(load1)::float8, 'NaN')::float8 AS load1,
    coalesce(avg(load5)::float8, 'NaN')::float8 AS load5,
    coalesce(avg(load15)::float8, 'NaN')::float8 AS load15,
    coalesce(avg(mem_used)::float8, 'NaN')::float8 AS mem_used,
    coalesce(max(mem_total)::float8, 'NaN')::float8 AS mem_total,
    coalesce(avg(swap_used)::float8, 'NaN')::float8 AS swap_used,
    coalesce(max(swap_total)::float8, 'NaN')::float8 AS swap_total,
    coalesce(avg(disk_used)::float8, 'NaN')::float8 AS disk_used,
    coalesce(max(disk_total)::float8, 'NaN')::float8 AS disk_total,
    coalesce(avg(disk_read_bps)::float8, 'NaN')::float8 AS disk_read_bps,
    coalesce(avg(disk_write_bps)::float8, 'NaN')::float8 AS disk_write_bps,
    coalesce(avg(net_rx_bps)::float8, 'NaN')::float8 AS net_rx_bps,
    coalesce(avg(net_tx_bps)::float8, 'NaN')::float8 AS net_tx_bps,
    coalesce(avg(disk_avail)::float8, 'NaN')::float8 AS disk_avail,
    coalesce(max(inodes_total)::float8, 'NaN')::float8 AS inodes_total,
    coalesce(avg(inodes_free)::float8, 'NaN')::float8 AS inodes_free,
    -- Use % per sample, averaged: as df computes it, used / (used + avail),
    -- where the agent sent avail; used / total for older rows.
    coalesce(avg(CASE
        WHEN disk_avail IS NOT NULL THEN
            CASE WHEN disk_used + disk_avail > 0 THEN disk_used::float8 * 100 / (disk_used + disk_avail) END
        WHEN disk_total > 0 THEN disk_used::float8 * 100 / disk_total
    END)::float8, 'NaN')::float8 AS disk_percent,
    coalesce(avg(CASE WHEN inodes_total > 0
        THEN greatest(inodes_total - inodes_free, 0)::float8 * 100 / inodes_total END)::float8, 'NaN')::float8 AS inodes_percent
FROM server_metrics
WHERE server_id = ANY(sqlc.arg(server_ids)::uuid[])
  AND recorded_at >= sqlc.arg(since)::timestamptz
  AND recorded_at < sqlc.arg(until)::timestamptz
GROUP BY server_id, bucket
ORDER BY server_id, bucket;

-- name: LatestMetrics :many
-- The newest sample since a time for each of the given servers (the
-- dashboard): one index probe per server and partition, newest first.
SELECT m.*
FROM unnest(sqlc.arg(server_ids)::uuid[]) AS s(id)
CROSS JOIN LATERAL (
    SELECT * FROM server_metrics sm
    WHERE sm.server_id = s.id AND sm.recorded_at >= sqlc.arg(since)::timestamptz
    ORDER BY sm.recorded_at DESC
    LIMIT 1
) m;

-- name: CountServerMetrics :one
SELECT count(*) FROM server_metrics
WHERE server_id = sqlc.arg(server_id)
  AND recorded_at >= sqlc.arg(since)::timestamptz
  AND recorded_at < sqlc.arg(until)::timestamptz;
