package store_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
)

// The figures df needs (available bytes) and the inode counts round-trip
// from an agent's columns to server_metrics, LatestMetrics and
// MetricsSeries, and every reader's disk percentage is df's used / (used +
// avail), not used / total. Rows from older agents (no avail) fall back to
// used / total, also within one bucket shared with newer rows.
func TestIngestDiskAvailAndInodes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, st := keyedStore(t)
	base := metricsWindow(t, st)
	srv := mkServer(t, st, "df")

	// Samples 0..5 (one minute) from a new agent: / has 1000 bytes, 100
	// used, 500 available (400 reserved): 16.67% full as df says, 10% as
	// used / total says. Inodes: 200 of 1000 free.
	c := columns(base, 6)
	for i := range 6 {
		c.DiskUsed[i], c.DiskTotal[i] = 100, 1000
		c.DiskAvail = append(c.DiskAvail, 500)
		c.InodesTotal = append(c.InodesTotal, 1000)
		c.InodesFree = append(c.InodesFree, 200)
		c.FSAvail = append(c.FSAvail, 7, 11)
		c.FSInodesTotal = append(c.FSInodesTotal, 9, 0)
		c.FSInodesFree = append(c.FSInodesFree, uint64(i), 0)
	}
	if _, err := st.IngestMetricsBatches(ctx, []store.MetricsBatch{{ServerID: srv.ID, Seq: 1, Columns: c}}); err != nil {
		t.Fatal(err)
	}
	var avail, itotal, ifree *int64
	var disks string
	if err := db.Pool.QueryRow(ctx, `SELECT disk_avail, inodes_total, inodes_free, disks::text FROM server_metrics
		WHERE server_id = $1 AND recorded_at = $2`, srv.ID[:], base.Add(20*time.Second)).Scan(&avail, &itotal, &ifree, &disks); err != nil {
		t.Fatal(err)
	}
	if avail == nil || *avail != 500 || itotal == nil || *itotal != 1000 || ifree == nil || *ifree != 200 {
		t.Fatalf("stored avail %v inodes %v/%v", avail, itotal, ifree)
	}
	want := `[{"used": 2, "avail": 7, "mount": "/", "total": 100, "inodes_free": 2, "inodes_total": 9}, ` +
		`{"used": 1, "avail": 11, "mount": "/srv \"x\"", "total": 2, "inodes_free": 0, "inodes_total": 0}]`
	if disks != want {
		t.Fatalf("disks:\n got %s\nwant %s", disks, want)
	}

	// Samples 6..11 (the next minute) from an older agent: no avail, no
	// inodes; used 300 of 1000 = 30%.
	old := columns(base.Add(time.Minute), 6)
	for i := range 6 {
		old.DiskUsed[i], old.DiskTotal[i] = 300, 1000
	}
	// Sample 12 in the second minute's bucket too, from the new agent
	// again: used 100, avail 100 = 50%.
	mixed := columns(base.Add(time.Minute+55*time.Second), 1)
	mixed.DiskUsed[0], mixed.DiskTotal[0] = 100, 1000
	mixed.DiskAvail, mixed.InodesTotal, mixed.InodesFree = []uint64{100}, []uint64{0}, []uint64{0} // no inode count (btrfs)
	for seq, b := range []*store.MetricColumns{old, mixed} {
		if _, err := st.IngestMetricsBatches(ctx, []store.MetricsBatch{{ServerID: srv.ID, Seq: int64(seq + 2), Columns: b}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Pool.QueryRow(ctx, `SELECT disk_avail, inodes_total, disks::text FROM server_metrics
		WHERE server_id = $1 AND recorded_at = $2`, srv.ID[:], base.Add(time.Minute)).Scan(&avail, &itotal, &disks); err != nil {
		t.Fatal(err)
	}
	if avail != nil || itotal != nil || disks != `[{"used": 0, "mount": "/", "total": 100}, {"used": 1, "mount": "/srv \"x\"", "total": 2}]` {
		t.Fatalf("an older agent's row: avail %v inodes %v disks %s", avail, itotal, disks)
	}

	pts, err := st.MetricsSeries(ctx, srv.ID, base, base.Add(2*time.Minute), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) != 2 {
		t.Fatalf("%d buckets, want 2", len(pts))
	}
	p := pts[0]
	if !eqPtr(p.DiskPercent, 100.0/6) || !eqPtr(p.DiskAvail, 500) || !eqPtr(p.InodesTotal, 1000) || !eqPtr(p.InodesFree, 200) ||
		!eqPtr(p.InodesPercent, 80) || !eqPtr(p.DiskUsed, 100) || !eqPtr(p.DiskTotal, 1000) {
		t.Fatalf("new agent's bucket: %s", pointString(p))
	}
	// Six samples at 30% (used / total) and one at 50% (df); no inode
	// count anywhere in the bucket.
	p = pts[1]
	if !eqPtr(p.DiskPercent, (6*30.0+50)/7) || !eqPtr(p.DiskAvail, 100) || p.InodesPercent != nil || !eqPtr(p.InodesTotal, 0) {
		t.Fatalf("mixed bucket: %s", pointString(p))
	}

	latest, err := st.LatestMetrics(ctx, []store.ID{srv.ID}, base)
	if err != nil {
		t.Fatal(err)
	}
	m := latest[srv.ID]
	if pct, ok := m.DiskPercent(); !ok || pct != 50 || m.DiskAvail == nil || *m.DiskAvail != 100 {
		t.Fatalf("latest: %v%% (%v), avail %v", pct, ok, m.DiskAvail)
	}
	if _, ok := m.InodesPercent(); ok {
		t.Fatal("latest: an inode percentage for a filesystem without an inode count")
	}

	// Columns of the wrong length are refused.
	for name, mangle := range map[string]func(c *store.MetricColumns){
		"avail short":        func(c *store.MetricColumns) { c.DiskAvail = c.DiskAvail[:1] },
		"inodes long":        func(c *store.MetricColumns) { c.InodesFree = append(c.InodesFree, 1) },
		"fs avail short":     func(c *store.MetricColumns) { c.FSAvail = c.FSAvail[:3] },
		"fs inodes too many": func(c *store.MetricColumns) { c.FSInodesTotal = append(c.FSInodesTotal, 1) },
	} {
		c := columns(base, 2)
		c.DiskAvail, c.InodesTotal, c.InodesFree = []uint64{1, 2}, []uint64{1, 2}, []uint64{1, 2}
		c.FSAvail, c.FSInodesTotal, c.FSInodesFree = make([]uint64, 4), make([]uint64, 4), make([]uint64, 4)
		mangle(c)
		if _, err := st.IngestMetricsBatches(ctx, []store.MetricsBatch{{ServerID: srv.ID, Seq: 9, Columns: c}}); !errors.Is(err, store.ErrInvalid) {
			t.Fatalf("%s: got %v, want ErrInvalid", name, err)
		}
	}

	// The sample form (InsertMetrics) stores them too.
	other := mkServer(t, st, "df-samples")
	s := samples(base, 1)
	s[0].ServerID, s[0].DiskUsed, s[0].DiskAvail, s[0].InodesTotal, s[0].InodesFree = other.ID, refTo(int64(3)), refTo(int64(1)), refTo(int64(10)), refTo(int64(4))
	s[0].Disks = []byte(`[{"mount":"/","used":3,"total":9,"avail":1,"inodes_total":10,"inodes_free":4},{"mount":"/old","used":1,"total":4}]`)
	if _, err := st.InsertMetrics(ctx, s); err != nil {
		t.Fatal(err)
	}
	latest, err = st.LatestMetrics(ctx, []store.ID{other.ID}, base)
	if err != nil {
		t.Fatal(err)
	}
	m = latest[other.ID]
	dp, dok := m.DiskPercent()
	ip, iok := m.InodesPercent()
	if !dok || dp != 75 || !iok || ip != 60 {
		t.Fatalf("sample form: disk %v%% (%v), inodes %v%% (%v), %+v", dp, dok, ip, iok, m)
	}
	// Per mount, from the stored disks: df's figure where the agent sent
	// avail, used / total where it did not.
	mounts, err := m.Mounts()
	if err != nil || len(mounts) != 2 {
		t.Fatalf("mounts %+v, %v", mounts, err)
	}
	p0, ok0 := mounts[0].UsePercent()
	i0, iok0 := mounts[0].InodesPercent()
	p1, ok1 := mounts[1].UsePercent()
	_, iok1 := mounts[1].InodesPercent()
	if mounts[0].Mount != "/" || p0 != 75 || !ok0 || i0 != 60 || !iok0 || mounts[1].Mount != "/old" || p1 != 25 || !ok1 || iok1 {
		t.Fatalf("per mount: %+v: %v %v %v %v / %v %v %v", mounts, p0, ok0, i0, iok0, p1, ok1, iok1)
	}
	bad := store.MetricSample{Disks: []byte(`{"not":"a list"}`)}
	if _, err := bad.Mounts(); err == nil {
		t.Fatal("malformed disks decoded without an error")
	}
}

func TestDiskUsePercent(t *testing.T) {
	t.Parallel()
	i := func(v int64) *int64 { return &v }
	for _, c := range []struct {
		used       int64
		avail, tot *int64
		want       float64
		ok         bool
	}{
		{100, i(500), i(1000), 100.0 / 6, true}, // df: reserved blocks are not room
		{95, i(0), i(100), 100, true},           // full for ordinary processes
		{0, i(0), i(0), 0, false},               // an empty, sizeless filesystem
		{300, nil, i(1000), 30, true},           // an older agent: used / total
		{300, nil, i(0), 0, false},
		{300, nil, nil, 0, false},
	} {
		got, ok := store.DiskUsePercent(c.used, c.avail, c.tot)
		if ok != c.ok || math.Abs(got-c.want) > 1e-9 {
			t.Errorf("DiskUsePercent(%d, %v, %v) = %v, %v; want %v, %v", c.used, c.avail, c.tot, got, ok, c.want, c.ok)
		}
	}
	// From an agent's columns as a batch arrives: sample 0 sent avail and
	// inodes, an older agent's batch did not.
	c := &store.MetricColumns{DiskUsed: []uint64{100, 95}, DiskTotal: []uint64{1000, 100}, DiskAvail: []uint64{500, 0},
		InodesTotal: []uint64{1000, 0}, InodesFree: []uint64{200, 0}}
	if p, ok := c.DiskPercent(0); !ok || math.Abs(p-100.0/6) > 1e-9 {
		t.Errorf("columns disk %% of sample 0 = %v, %v", p, ok)
	}
	if p, ok := c.DiskPercent(1); !ok || p != 100 {
		t.Errorf("columns disk %% of sample 1 = %v, %v; want 100 (full for ordinary users)", p, ok)
	}
	if p, ok := c.InodesPercent(0); !ok || p != 80 {
		t.Errorf("columns inodes %% = %v, %v", p, ok)
	}
	if _, ok := c.InodesPercent(1); ok {
		t.Error("columns: an inode percentage without an inode count")
	}
	older := &store.MetricColumns{DiskUsed: []uint64{300}, DiskTotal: []uint64{1000}}
	if p, ok := older.DiskPercent(0); !ok || p != 30 {
		t.Errorf("older agent's columns: %v, %v; want used / total", p, ok)
	}
	if _, ok := older.InodesPercent(0); ok {
		t.Error("older agent's columns: an inode percentage")
	}
	for _, c := range []struct {
		total, free int64
		want        float64
		ok          bool
	}{{1000, 200, 80, true}, {0, 0, 0, false}, {10, 20, 0, true}, {10, -1, 100, true}} {
		got, ok := store.InodesUsePercent(c.total, c.free)
		if ok != c.ok || got != c.want {
			t.Errorf("InodesUsePercent(%d, %d) = %v, %v; want %v, %v", c.total, c.free, got, ok, c.want, c.ok)
		}
	}
}

func eqPtr(p *float64, want float64) bool { return p != nil && math.Abs(*p-want) < 1e-9 }

func pointString(p store.MetricPoint) string {
	f := func(v *float64) any {
		if v == nil {
			return nil
		}
		return *v
	}
	return fmt.Sprint(map[string]any{"disk_percent": f(p.DiskPercent), "disk_avail": f(p.DiskAvail), "disk_used": f(p.DiskUsed),
		"disk_total": f(p.DiskTotal), "inodes_total": f(p.InodesTotal), "inodes_free": f(p.InodesFree), "inodes_percent": f(p.InodesPercent)})
}
