-- Dropping the partitioned table drops every partition with it.
DROP TABLE IF EXISTS server_metrics;
DROP FUNCTION IF EXISTS berth_drop_metrics_partitions_before(date);
DROP FUNCTION IF EXISTS berth_ensure_metrics_partitions(date, int);
