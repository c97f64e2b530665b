ALTER TABLE server_metrics
    DROP COLUMN inodes_free,
    DROP COLUMN inodes_total,
    DROP COLUMN disk_avail;
