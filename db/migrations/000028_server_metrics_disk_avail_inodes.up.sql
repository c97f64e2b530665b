-- 000028 server_metrics: what df needs to tell how full a disk is, and inodes.
-- disk_used / disk_total alone overstate the room left: reserved blocks (5%
-- of an ext4 by default, most of some filesystems) are neither used nor
-- available to ordinary processes, so df's use % is used / (used + avail).
-- For the root filesystem (or the aggregate, like disk_used):
--   disk_avail   bytes available to unprivileged users (statfs f_bavail)
--   inodes_total inodes in all (0: the filesystem has no fixed count)
--   inodes_free  inodes free
-- NULL in rows from agents that predate them (readers then fall back to
-- used / total). The per-mount objects in disks gain "avail",
-- "inodes_total" and "inodes_free" the same way.
--
-- Nullable columns without a default: adding them rewrites no partition,
-- and partitions created later get them through LIKE server_metrics.
ALTER TABLE server_metrics
    ADD COLUMN disk_avail   bigint,
    ADD COLUMN inodes_total bigint,
    ADD COLUMN inodes_free  bigint;
