package client

import (
	"slices"
	"testing"
	"time"

	"github.com/berthhq/berth/agent/internal/metrics"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

func TestSentBatchesAck(t *testing.T) {
	var s sentBatches
	t0 := time.Unix(1000, 0)
	s.record(1, 10, t0)
	s.record(2, 20, t0.Add(time.Second))
	s.record(3, 30, t0.Add(2*time.Second))

	// An ack releases its batch and every earlier one (whose ack was lost).
	got := s.ack(&agentv1.MetricsAck{Seq: 2, Duplicate: true})
	want := Ack{Seq: 2, Samples: 20, SentAt: t0.Add(time.Second), Duplicate: true}
	if got != want {
		t.Fatalf("ack 2 = %+v, want %+v", got, want)
	}
	if len(s.m) != 1 {
		t.Fatalf("after ack 2, %d batches remembered, want 1 (batch 3)", len(s.m))
	}
	if got := s.ack(&agentv1.MetricsAck{Seq: 1}); !got.SentAt.IsZero() || got.Samples != 0 {
		t.Fatalf("ack for a forgotten batch = %+v, want no send time", got)
	}
	if got := s.ack(&agentv1.MetricsAck{Seq: 3}); got.Samples != 30 || !got.SentAt.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("ack 3 = %+v", got)
	}
	if len(s.m) != 0 {
		t.Fatalf("%d batches remembered after the last ack", len(s.m))
	}
}

func TestBatchToProto(t *testing.T) {
	t0 := time.Unix(1700000000, 123456789)
	b := metrics.Batch{Seq: 7, Samples: []metrics.Sample{
		{RecordedAt: t0, CPUPercent: 1, MemUsed: 10, DiskUsed: 1, DiskTotal: 2, DiskAvail: 8, InodesTotal: 9, InodesFree: 5,
			Disks: []metrics.Disk{{Mount: "/", Used: 1, Total: 2, Avail: 8, InodesTotal: 9, InodesFree: 5}, {Mount: "/srv", Used: 3, Total: 4, Avail: 11, InodesTotal: 12, InodesFree: 13}}},
		{RecordedAt: t0.Add(time.Second), CPUPercent: 2, HasRates: true, NetRxBps: 5},
		{RecordedAt: t0.Add(2 * time.Second), CPUPercent: 3, HasRates: true, Disks: []metrics.Disk{{Mount: "/srv", Used: 6, Total: 7, Avail: 14, InodesTotal: 15, InodesFree: 16}}},
	}}
	m := batchToProto(b, 4)
	c := m.GetColumns()
	if m.GetSeq() != 7 || m.GetDroppedTotal() != 4 {
		t.Fatalf("header: %v", m)
	}
	if want := []int64{t0.UnixMicro(), t0.Add(time.Second).UnixMicro(), t0.Add(2 * time.Second).UnixMicro()}; !slices.Equal(c.GetRecordedAtUnixMicros(), want) {
		t.Fatalf("times %v, want %v", c.GetRecordedAtUnixMicros(), want)
	}
	if !slices.Equal(c.GetCpuPercent(), []float64{1, 2, 3}) || !slices.Equal(c.GetHasRates(), []bool{false, true, true}) ||
		!slices.Equal(c.GetNetRxBps(), []float64{0, 5, 0}) || !slices.Equal(c.GetMemUsedBytes(), []uint64{10, 0, 0}) {
		t.Fatalf("columns: %v", c)
	}
	// Each mount point is named once; filesystems follow their samples.
	if !slices.Equal(c.GetMounts(), []string{"/", "/srv"}) || !slices.Equal(c.GetDiskCount(), []uint32{2, 0, 1}) ||
		!slices.Equal(c.GetDiskMount(), []uint32{0, 1, 1}) || !slices.Equal(c.GetDiskUsed(), []uint64{1, 3, 6}) || !slices.Equal(c.GetDiskTotal(), []uint64{2, 4, 7}) {
		t.Fatalf("filesystems: %v", c)
	}
	// What df needs (available bytes) and inodes, per sample and per
	// filesystem.
	if !slices.Equal(c.GetDiskAvailBytes(), []uint64{8, 0, 0}) || !slices.Equal(c.GetDiskInodesTotalCount(), []uint64{9, 0, 0}) ||
		!slices.Equal(c.GetDiskInodesFreeCount(), []uint64{5, 0, 0}) || !slices.Equal(c.GetDiskUsedBytes(), []uint64{1, 0, 0}) ||
		!slices.Equal(c.GetDiskAvail(), []uint64{8, 11, 14}) || !slices.Equal(c.GetDiskInodesTotal(), []uint64{9, 12, 15}) ||
		!slices.Equal(c.GetDiskInodesFree(), []uint64{5, 13, 16}) {
		t.Fatalf("available bytes and inodes: %v", c)
	}
}
