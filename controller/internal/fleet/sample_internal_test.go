package fleet

import (
	"encoding/json"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

func TestSampleOf(t *testing.T) {
	rx := 12.5
	p := &agentv1.MetricSample{
		RecordedAt: timestamppb.Now(), CpuPercent: 42, Load1: 1, Load5: 2, Load15: 3,
		MemUsedBytes: 1 << 30, MemTotalBytes: 1 << 63, DiskUsedBytes: 5, DiskTotalBytes: 6, NetRxBps: &rx,
		Disks: []*agentv1.DiskUsage{{Mount: "/", UsedBytes: 1, TotalBytes: 2}, {Mount: "/mnt/\"odd\" \\ \u00e9\n", UsedBytes: 3, TotalBytes: 4}},
	}
	id := store.NewID()
	m := sampleOf(id, p)
	if m.ServerID != id || *m.CPUPercent != 42 || *m.Load15 != 3 || *m.MemUsed != 1<<30 || *m.MemTotal != 1<<62 || *m.DiskTotal != 6 || *m.NetRxBps != 12.5 || m.NetTxBps != nil {
		t.Fatalf("values: %+v", m)
	}
	var disks []struct {
		Mount       string
		Used, Total uint64
	}
	if err := json.Unmarshal(m.Disks, &disks); err != nil {
		t.Fatalf("disks JSON %s: %v", m.Disks, err)
	}
	if len(disks) != 2 || disks[1].Mount != "/mnt/\"odd\" \\ \u00e9\n" || disks[1].Used != 3 || disks[1].Total != 4 {
		t.Fatalf("disks: %+v", disks)
	}
	// Pointers of one sample never alias another's.
	m2 := sampleOf(id, &agentv1.MetricSample{RecordedAt: timestamppb.Now(), CpuPercent: 7})
	if *m.CPUPercent != 42 || *m2.CPUPercent != 7 || m2.Disks != nil {
		t.Fatal("samples share values")
	}
}
