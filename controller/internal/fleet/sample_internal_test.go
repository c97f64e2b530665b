package fleet

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
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
		c.HasRates = append(c.HasRates, i%2 == 1)
		c.DiskReadBps, c.DiskWriteBps = append(c.DiskReadBps, 7), append(c.DiskWriteBps, 8)
		c.NetRxBps, c.NetTxBps = append(c.NetRxBps, 12.5), append(c.NetTxBps, 10)
		c.DiskCount = append(c.DiskCount, uint32(len(disks)))
		for _, d := range disks {
			c.DiskMount = append(c.DiskMount, d)
			c.DiskUsed, c.DiskTotal = append(c.DiskUsed, uint64(i)), append(c.DiskTotal, 100)
		}
	}
	return c
}

func TestSamplesOf(t *testing.T) {
	now := time.Now()
	id := store.NewID()
	odd := "/mnt/\"odd\" \\ \u00e9\n"
	got, err := samplesOf(id, columns(3, now, []string{"/", odd}, 0, 1), now)
	if err != nil || len(got) != 3 {
		t.Fatalf("samplesOf: %d samples, %v", len(got), err)
	}
	for i, m := range got {
		if m.ServerID != id || !m.RecordedAt.Equal(now.Add(time.Duration(i)*time.Second).Truncate(time.Microsecond)) ||
			*m.CPUPercent != float64(i) || *m.Load15 != 3 || *m.MemUsed != 1<<30 || *m.MemTotal != 1<<62 || *m.DiskTotal != 6 {
			t.Fatalf("sample %d: %+v", i, m)
		}
		// Rates only where the agent had them.
		if (m.NetRxBps != nil) != (i%2 == 1) || (m.NetRxBps != nil && (*m.NetRxBps != 12.5 || *m.NetTxBps != 10 || *m.DiskReadBps != 7)) {
			t.Fatalf("sample %d rates: %+v", i, m)
		}
		var disks []struct {
			Mount       string
			Used, Total uint64
		}
		if err := json.Unmarshal(m.Disks, &disks); err != nil {
			t.Fatalf("disks JSON %s: %v", m.Disks, err)
		}
		if len(disks) != 2 || disks[0].Mount != "/" || disks[1].Mount != odd || disks[1].Used != uint64(i) || disks[1].Total != 100 {
			t.Fatalf("sample %d disks: %+v", i, disks)
		}
	}
	// Values of one sample never alias another's.
	if *got[0].CPUPercent != 0 || *got[2].CPUPercent != 2 || got[0].CPUPercent == got[1].CPUPercent {
		t.Fatal("samples share values")
	}

	t.Run("no filesystems, clock far off", func(t *testing.T) {
		c := columns(3, now, nil)
		c.RecordedAtUnixMicros[0] = now.Add(time.Hour).UnixMicro()           // from the future
		c.RecordedAtUnixMicros[2] = now.Add(-8 * 24 * time.Hour).UnixMicro() // past retention
		got, err := samplesOf(id, c, now)
		if err != nil || len(got) != 1 || got[0].Disks != nil || *got[0].CPUPercent != 1 {
			t.Fatalf("got %+v, %v", got, err)
		}
	})
	t.Run("many filesystems and a long mount are cut", func(t *testing.T) {
		idx := make([]uint32, maxSampleDisks+5)
		got, err := samplesOf(id, columns(1, now, []string{strings.Repeat("m", maxMountBytes+10)}, idx...), now)
		if err != nil {
			t.Fatal(err)
		}
		var disks []struct{ Mount string }
		if err := json.Unmarshal(got[0].Disks, &disks); err != nil || len(disks) != maxSampleDisks || len(disks[0].Mount) > maxMountBytes {
			t.Fatalf("%d disks, mount %d bytes, %v", len(disks), len(disks[0].Mount), err)
		}
	})
	for name, mangle := range map[string]func(c *agentv1.MetricColumns){
		"short column":          func(c *agentv1.MetricColumns) { c.Load5 = c.Load5[:1] },
		"long column":           func(c *agentv1.MetricColumns) { c.HasRates = append(c.HasRates, true) },
		"missing column":        func(c *agentv1.MetricColumns) { c.DiskCount = nil },
		"disk count too high":   func(c *agentv1.MetricColumns) { c.DiskCount[0]++ },
		"disk column short":     func(c *agentv1.MetricColumns) { c.DiskTotal = c.DiskTotal[1:] },
		"mount index too large": func(c *agentv1.MetricColumns) { c.DiskMount[1] = 2 },
		"too many samples": func(c *agentv1.MetricColumns) {
			*c = *columns(MaxBatchSamples+1, now, nil)
		},
	} {
		t.Run(name, func(t *testing.T) {
			c := columns(2, now, []string{"/", "/srv"}, 0, 1)
			mangle(c)
			if _, err := samplesOf(id, c, now); !errors.Is(err, ErrProtocol) {
				t.Fatalf("got %v, want a protocol error", err)
			}
		})
	}
}
