package fleet

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// columns builds a well-formed batch of n samples at t, each with the
// given filesystems (indexes into mounts).
func columns(n int, t time.Time, mounts []string, disks ...uint32) *agentv1.MetricColumns {
	c := &agentv1.MetricColumns{Mounts: mounts}
	for i := range n {
		c.RecordedAtUnixMicros = append(c.RecordedAtUnixMicros, t.Add(time.Duration(i)*time.Second).UnixMicro())
		c.CpuPercent = append(c.CpuPercent, float64(i))
		c.Load1, c.Load5, c.Load15 = append(c.Load1, 1), append(c.Load5, 2), append(c.Load15, 3)
		c.MemUsedBytes, c.MemTotalBytes = append(c.MemUsedBytes, 1<<30), append(c.MemTotalBytes, 1<<63)
		c.SwapUsedBytes, c.SwapTotalBytes = append(c.SwapUsedBytes, 0), append(c.SwapTotalBytes, 0)
		c.DiskUsedBytes, c.DiskTotalBytes = append(c.DiskUsedBytes, 5), append(c.DiskTotalBytes, 6)
		c.DiskAvailBytes = append(c.DiskAvailBytes, 4)
		c.DiskInodesTotalCount, c.DiskInodesFreeCount = append(c.DiskInodesTotalCount, 9), append(c.DiskInodesFreeCount, 3)
		c.HasRates = append(c.HasRates, i%2 == 1)
		c.DiskReadBps, c.DiskWriteBps = append(c.DiskReadBps, 7), append(c.DiskWriteBps, 8)
		c.NetRxBps, c.NetTxBps = append(c.NetRxBps, 12.5), append(c.NetTxBps, 10)
		c.DiskCount = append(c.DiskCount, uint32(len(disks)))
		for _, d := range disks {
			c.DiskMount = append(c.DiskMount, d)
			c.DiskUsed, c.DiskTotal = append(c.DiskUsed, uint64(i)), append(c.DiskTotal, 100)
			c.DiskAvail = append(c.DiskAvail, 50)
			c.DiskInodesTotal, c.DiskInodesFree = append(c.DiskInodesTotal, 10), append(c.DiskInodesFree, 1)
		}
	}
	return c
}

func TestColumnsOf(t *testing.T) {
	now := time.Now()
	odd := "/mnt/\"odd\" \\ \u00e9\n"
	long := strings.Repeat("m", maxMountBytes+10)
	c := columns(3, now, []string{"/", odd, long}, 0, 1, 2)
	got, err := columnsOf(c, now)
	if err != nil {
		t.Fatal(err)
	}
	// The wire's columns are handed on, not copied.
	if &got.CPUPercent[0] != &c.CpuPercent[0] || &got.FSUsed[0] != &c.DiskUsed[0] || len(got.RecordedAt) != 3 {
		t.Fatal("columns were copied")
	}
	// Available bytes and inodes, per sample and per filesystem, go along.
	if len(got.DiskAvail) != 3 || got.DiskAvail[0] != 4 || got.InodesTotal[1] != 9 || got.InodesFree[2] != 3 ||
		len(got.FSAvail) != 9 || got.FSAvail[8] != 50 || got.FSInodesTotal[0] != 10 || got.FSInodesFree[4] != 1 {
		t.Fatalf("avail and inodes: %+v", got)
	}
	// An agent that predates them sends none: accepted, stored as unknown.
	older := columns(2, now, []string{"/"}, 0)
	older.DiskAvailBytes, older.DiskInodesTotalCount, older.DiskInodesFreeCount = nil, nil, nil
	older.DiskAvail, older.DiskInodesTotal, older.DiskInodesFree = nil, nil, nil
	if got, err := columnsOf(older, now); err != nil || len(got.DiskAvail) != 0 || len(got.FSAvail) != 0 {
		t.Fatalf("an older agent's batch: %v", err)
	}
	// Mount points become JSON strings, long ones cut.
	var mounts []string
	for _, m := range got.Mounts {
		var s string
		if err := json.Unmarshal(m, &s); err != nil {
			t.Fatalf("mount %s: %v", m, err)
		}
		mounts = append(mounts, s)
	}
	if len(mounts) != 3 || mounts[0] != "/" || mounts[1] != odd || mounts[2] != long[:maxMountBytes] {
		t.Fatalf("mounts %q", mounts)
	}
	// Samples outside retention or far in the future fall outside the bounds.
	if !got.NotBefore.After(now.Add(-7*24*time.Hour)) || !got.NotAfter.After(now) || got.NotAfter.After(now.Add(time.Hour)) {
		t.Fatalf("bounds %v .. %v", got.NotBefore, got.NotAfter)
	}

	for name, mangle := range map[string]func(c *agentv1.MetricColumns){
		"short column":          func(c *agentv1.MetricColumns) { c.Load5 = c.Load5[:1] },
		"long column":           func(c *agentv1.MetricColumns) { c.HasRates = append(c.HasRates, true) },
		"missing column":        func(c *agentv1.MetricColumns) { c.DiskCount = nil },
		"disk count too high":   func(c *agentv1.MetricColumns) { c.DiskCount[0]++ },
		"disk column short":     func(c *agentv1.MetricColumns) { c.DiskTotal = c.DiskTotal[1:] },
		"mount index too large": func(c *agentv1.MetricColumns) { c.DiskMount[1] = 2 },
		"avail column short":    func(c *agentv1.MetricColumns) { c.DiskAvailBytes = c.DiskAvailBytes[:1] },
		"inodes column long":    func(c *agentv1.MetricColumns) { c.DiskInodesFreeCount = append(c.DiskInodesFreeCount, 1) },
		"fs avail short":        func(c *agentv1.MetricColumns) { c.DiskAvail = c.DiskAvail[1:] },
		"fs inodes long":        func(c *agentv1.MetricColumns) { c.DiskInodesTotal = append(c.DiskInodesTotal, 1) },
		"too many samples":      func(c *agentv1.MetricColumns) { *c = *columns(MaxBatchSamples+1, now, nil) },
	} {
		t.Run(name, func(t *testing.T) {
			c := columns(2, now, []string{"/", "/srv"}, 0, 1)
			mangle(c)
			if _, err := columnsOf(c, now); !errors.Is(err, ErrProtocol) {
				t.Fatalf("got %v, want a protocol error", err)
			}
		})
	}
	// No columns at all is an empty batch.
	if got, err := columnsOf(nil, now); err != nil || len(got.RecordedAt) != 0 {
		t.Fatalf("nil columns: %v", err)
	}
}
