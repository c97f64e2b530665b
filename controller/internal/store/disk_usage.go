package store

import (
	"encoding/json"
	"fmt"
)

// MountUsage is one filesystem of a sample, as stored in server_metrics'
// disks. Avail and the inode counts are nil in rows from agents that
// predate them.
type MountUsage struct {
	Mount       string  `json:"mount"`
	Used        uint64  `json:"used"`
	Total       uint64  `json:"total"`
	Avail       *uint64 `json:"avail,omitempty"`
	InodesTotal *uint64 `json:"inodes_total,omitempty"`
	InodesFree  *uint64 `json:"inodes_free,omitempty"`
}

// UsePercent is the mount's use as df computes it (see DiskUsePercent).
func (u MountUsage) UsePercent() (pct float64, ok bool) {
	if u.Avail != nil {
		return usePercent(float64(u.Used), float64(*u.Avail), true, 0)
	}
	return usePercent(float64(u.Used), 0, false, float64(u.Total))
}

// InodesPercent is the share of the mount's inodes in use; ok is false
// without inode figures or for a filesystem without an inode count.
func (u MountUsage) InodesPercent() (pct float64, ok bool) {
	if u.InodesTotal == nil || u.InodesFree == nil {
		return 0, false
	}
	return inodesPercent(float64(*u.InodesTotal), float64(*u.InodesFree))
}

// Mounts decodes the sample's per-filesystem figures (nil for none).
func (m *MetricSample) Mounts() ([]MountUsage, error) {
	if len(m.Disks) == 0 || string(m.Disks) == "null" {
		return nil, nil
	}
	var out []MountUsage
	if err := json.Unmarshal(m.Disks, &out); err != nil {
		return nil, fmt.Errorf("metrics disks: %w", err)
	}
	return out, nil
}

// DiskPercent is sample i's disk use as df computes it, straight from an
// agent's columns (for evaluating a batch as it arrives); ok is false when
// it cannot be told. i must be below the number of samples.
func (c *MetricColumns) DiskPercent(i int) (pct float64, ok bool) {
	if len(c.DiskAvail) > 0 {
		return usePercent(float64(c.DiskUsed[i]), float64(c.DiskAvail[i]), true, 0)
	}
	return usePercent(float64(c.DiskUsed[i]), 0, false, float64(c.DiskTotal[i]))
}

// InodesPercent is sample i's inode use from an agent's columns; ok is
// false from an agent that does not send inodes or for a filesystem
// without an inode count.
func (c *MetricColumns) InodesPercent(i int) (pct float64, ok bool) {
	if len(c.InodesTotal) == 0 || len(c.InodesFree) == 0 {
		return 0, false
	}
	return inodesPercent(float64(c.InodesTotal[i]), float64(c.InodesFree[i]))
}

// usePercent is DiskUsePercent's rule on floats: used / (used + avail)
// when avail is known, else used / total.
func usePercent(used, avail float64, haveAvail bool, total float64) (float64, bool) {
	if haveAvail {
		if used+avail <= 0 {
			return 0, false
		}
		return used * 100 / (used + avail), true
	}
	if total <= 0 {
		return 0, false
	}
	return used * 100 / total, true
}

func inodesPercent(total, free float64) (float64, bool) {
	if total <= 0 {
		return 0, false
	}
	return (total - min(max(free, 0), total)) * 100 / total, true
}
