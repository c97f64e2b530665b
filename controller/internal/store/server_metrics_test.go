package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
)

// metricsWindow is the start of an hour two hours back, UTC, with partitions
// for its day and today guaranteed (the template database may be older than
// today when tests share a server).
func metricsWindow(t *testing.T, st *store.Store) time.Time {
	t.Helper()
	base := time.Now().UTC().Truncate(time.Hour).Add(-2 * time.Hour)
	if _, err := st.EnsureMetricsPartitions(context.Background(), base, 2); err != nil {
		t.Fatal(err)
	}
	return base
}

// samples makes n samples every 10 s from base: cpu i, mem_used 1000+i,
// load1 i/10; rates missing from the first minute.
func samples(base time.Time, n int) []store.MetricSample {
	out := make([]store.MetricSample, n)
	for i := range out {
		cpu, load, mem := float64(i), float64(i)/10, int64(1000+i)
		m := store.MetricSample{
			RecordedAt: base.Add(time.Duration(i) * 10 * time.Second),
			CPUPercent: &cpu, Load1: &load, MemUsed: &mem, MemTotal: refTo(int64(8000 + i%2)),
			Disks: json.RawMessage(`[{"mount":"/","used":1,"total":2}]`),
		}
		if i >= 6 {
			m.NetRxBps = refTo(float64(100 * i))
		}
		out[i] = m
	}
	return out
}

func TestMetricsIngest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, st := keyedStore(t)
	srv := mkServer(t, st, "web")
	base := metricsWindow(t, st)
	from, to := base.Add(-time.Hour), base.Add(3*time.Hour)
	count := func() int64 {
		t.Helper()
		n, err := st.CountMetrics(ctx, srv.ID, from, to)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	batch1, batch2 := samples(base, 6), samples(base.Add(time.Minute), 3)

	if ok, err := st.IngestMetricsBatch(ctx, srv.ID, 1, batch1); err != nil || !ok {
		t.Fatalf("batch 1 = %v, %v", ok, err)
	}
	// A batch re-sent after a lost ack is acknowledged and not stored again.
	if ok, err := st.IngestMetricsBatch(ctx, srv.ID, 1, batch1); err != nil || ok {
		t.Fatalf("replayed batch 1 = %v, %v", ok, err)
	}
	if n := count(); n != 6 {
		t.Fatalf("rows after replay = %d, want 6", n)
	}
	if ok, err := st.IngestMetricsBatch(ctx, srv.ID, 2, batch2); err != nil || !ok {
		t.Fatalf("batch 2 = %v, %v", ok, err)
	}
	if ok, _ := st.IngestMetricsBatch(ctx, srv.ID, 1, batch1); ok {
		t.Fatal("an older batch was stored after a newer one")
	}
	if n := count(); n != 9 {
		t.Fatalf("rows = %d, want 9", n)
	}
	if s, _ := st.Server(ctx, srv.ID); s.MetricsSeq != 2 {
		t.Fatalf("metrics_seq = %d", s.MetricsSeq)
	}

	// The same batch delivered on two connections at once: stored once.
	batch3 := samples(base.Add(2*time.Minute), 4)
	var wg sync.WaitGroup
	var mu sync.Mutex
	stored := 0
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := st.IngestMetricsBatch(ctx, srv.ID, 3, batch3)
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				stored++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if stored != 1 || count() != 13 {
		t.Fatalf("concurrent deliveries stored %d times, %d rows", stored, count())
	}

	if _, err := st.IngestMetricsBatch(ctx, store.NewID(), 1, batch1); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown server: %v", err)
	}
	if _, err := st.IngestMetricsBatch(ctx, srv.ID, 0, batch1); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("sequence 0: %v", err)
	}
	// A sample outside every partition fails the whole batch, sequence included.
	bad := append(samples(base.Add(3*time.Minute), 2), store.MetricSample{RecordedAt: time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)})
	if _, err := st.IngestMetricsBatch(ctx, srv.ID, 4, bad); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("sample outside partitions: %v", err)
	}
	if s, _ := st.Server(ctx, srv.ID); s.MetricsSeq != 3 || count() != 13 {
		t.Fatalf("failed batch left seq %d, %d rows", s.MetricsSeq, count())
	}

	// The samples' own ServerID is ignored: the batch belongs to its stream.
	other := mkServer(t, st, "other")
	spoof := samples(base.Add(4*time.Minute), 1)
	spoof[0].ServerID = other.ID
	if ok, err := st.IngestMetricsBatch(ctx, srv.ID, 4, spoof); err != nil || !ok {
		t.Fatalf("batch 4 = %v, %v", ok, err)
	}
	if n, _ := st.CountMetrics(ctx, other.ID, from, to); n != 0 {
		t.Fatalf("a batch wrote %d rows for another server", n)
	}

	// The round trip keeps every column.
	latest, err := st.LatestMetrics(ctx, []store.ID{srv.ID, other.ID}, base)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := latest[other.ID]; ok || len(latest) != 1 {
		t.Fatalf("latest = %+v", latest)
	}
	l := latest[srv.ID]
	if !l.RecordedAt.Equal(base.Add(4*time.Minute)) || *l.CPUPercent != 0 || *l.MemUsed != 1000 || *l.MemTotal != 8000 || l.NetRxBps != nil || l.Load5 != nil {
		t.Fatalf("latest sample = %+v", l)
	}
	var disks []map[string]any
	if err := json.Unmarshal(l.Disks, &disks); err != nil || len(disks) != 1 || disks[0]["mount"] != "/" {
		t.Fatalf("disks = %s, %v", l.Disks, err)
	}
	if got, _ := st.LatestMetrics(ctx, []store.ID{srv.ID}, base.Add(5*time.Minute)); len(got) != 0 {
		t.Fatalf("latest since after the last sample = %+v", got)
	}

	// Removing the server removes its metrics.
	if err := st.DeleteServer(ctx, srv.ID); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 0 {
		t.Fatalf("%d samples outlived their server", n)
	}
}

func TestMetricsSeries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, st := keyedStore(t)
	a, b := mkServer(t, st, "a"), mkServer(t, st, "b")
	base := metricsWindow(t, st)

	// 10 minutes at 10 s for a, 5 minutes for b, via plain COPY.
	sa, sb := samples(base, 60), samples(base, 30)
	for i := range sa {
		sa[i].ServerID = a.ID
	}
	for i := range sb {
		sb[i].ServerID = b.ID
	}
	if n, err := st.InsertMetrics(ctx, append(slices.Clone(sa), sb...)); err != nil || n != 90 {
		t.Fatalf("copy = %d, %v", n, err)
	}

	pts, err := st.MetricsSeries(ctx, a.ID, base, base.Add(10*time.Minute), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) != 10 {
		t.Fatalf("%d buckets, want 10", len(pts))
	}
	for k, p := range pts {
		// Bucket k holds samples 6k .. 6k+5.
		var cpu, load, mem, rx float64
		rxn, maxTotal := 0, int64(0)
		for i := 6 * k; i < 6*k+6; i++ {
			cpu += *sa[i].CPUPercent
			load += *sa[i].Load1
			mem += float64(*sa[i].MemUsed)
			maxTotal = max(maxTotal, *sa[i].MemTotal)
			if sa[i].NetRxBps != nil {
				rx += *sa[i].NetRxBps
				rxn++
			}
		}
		if p.ServerID != a.ID || !p.T.Equal(base.Add(time.Duration(k)*time.Minute)) || p.Samples != 6 {
			t.Fatalf("point %d = %v %v %d", k, p.ServerID, p.T, p.Samples)
		}
		near := func(name string, got *float64, want float64) {
			switch {
			case got == nil:
				t.Errorf("point %d %s = nil, want %v", k, name, want)
			case math.Abs(*got-want) > 1e-9:
				t.Errorf("point %d %s = %v, want %v", k, name, *got, want)
			}
		}
		near("cpu", p.CPUPercent, cpu/6)
		near("cpu max", p.CPUPercentMax, float64(6*k+5))
		near("load1", p.Load1, load/6)
		near("mem used", p.MemUsed, mem/6)
		near("mem total", p.MemTotal, float64(maxTotal))
		if rxn == 0 {
			if p.NetRxBps != nil {
				t.Errorf("point %d: rx = %v from no measurement", k, *p.NetRxBps)
			}
		} else {
			near("rx", p.NetRxBps, rx/float64(rxn))
		}
		if p.Load5 != nil || p.DiskUsed != nil {
			t.Errorf("point %d: unmeasured metrics have values", k)
		}
	}

	// A window inside the data: only its buckets; 5-minute steps: 2 buckets.
	if pts, _ := st.MetricsSeries(ctx, a.ID, base.Add(2*time.Minute), base.Add(5*time.Minute), time.Minute); len(pts) != 3 || !pts[0].T.Equal(base.Add(2*time.Minute)) {
		t.Fatalf("sub-window = %d points", len(pts))
	}
	if pts, _ := st.MetricsSeries(ctx, a.ID, base, base.Add(time.Hour), 5*time.Minute); len(pts) != 2 || pts[0].Samples != 30 || *pts[1].CPUPercent != 44.5 {
		t.Fatalf("5m steps = %+v", pts)
	}
	// Buckets are aligned on the step, not on since: a window starting at
	// :30 s still yields whole-minute buckets, the first one partial.
	if pts, _ := st.MetricsSeries(ctx, a.ID, base.Add(30*time.Second), base.Add(2*time.Minute), time.Minute); len(pts) != 2 || !pts[0].T.Equal(base) || pts[0].Samples != 3 {
		t.Fatalf("unaligned window = %+v", pts)
	}

	// Several servers in one query, for the sparklines.
	all, err := st.MetricsSeriesForServers(ctx, []store.ID{a.ID, b.ID, store.NewID()}, base, base.Add(time.Hour), 5*time.Minute)
	if err != nil || len(all) != 2 || len(all[a.ID]) != 2 || len(all[b.ID]) != 1 || all[b.ID][0].Samples != 30 {
		t.Fatalf("multi = %v, %v", all, err)
	}

	for name, c := range map[string]struct {
		since, until time.Time
		step         time.Duration
	}{
		"zero step":      {base, base.Add(time.Hour), 0},
		"sub-second":     {base, base.Add(time.Hour), time.Millisecond},
		"empty window":   {base, base, time.Minute},
		"reverse window": {base.Add(time.Hour), base, time.Minute},
	} {
		if _, err := st.MetricsSeries(ctx, a.ID, c.since, c.until, c.step); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestMetricsPartitions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, st := keyedStore(t)
	srv := mkServer(t, st, "web")
	base := metricsWindow(t, st)

	if _, err := st.InsertMetrics(ctx, []store.MetricSample{{ServerID: srv.ID, RecordedAt: base.Add(time.Minute)}}); err != nil {
		t.Fatal(err)
	}
	var part string
	if err := db.Pool.QueryRow(ctx, `SELECT tableoid::regclass::text FROM server_metrics WHERE server_id = $1`, rawID(srv.ID)).Scan(&part); err != nil {
		t.Fatal(err)
	}
	if want := "server_metrics_p" + base.Format("20060102"); part != want {
		t.Fatalf("sample landed in %s, want %s", part, want)
	}

	// Old days: create their partitions, put a sample in one, drop them.
	old := time.Now().UTC().AddDate(0, 0, -40)
	if n, err := st.EnsureMetricsPartitions(ctx, old, 3); err != nil || n != 3 {
		t.Fatalf("ensure old = %d, %v", n, err)
	}
	if n, err := st.EnsureMetricsPartitions(ctx, old, 3); err != nil || n != 0 {
		t.Fatalf("ensure again = %d, %v", n, err)
	}
	if _, err := st.InsertMetrics(ctx, []store.MetricSample{{ServerID: srv.ID, RecordedAt: old.Add(time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	if n, _ := st.CountMetrics(ctx, srv.ID, old.AddDate(0, 0, -1), time.Now().Add(time.Hour)); n != 2 {
		t.Fatalf("rows = %d", n)
	}
	oldNames := []string{}
	for i := range 3 {
		oldNames = append(oldNames, "server_metrics_p"+old.AddDate(0, 0, i).Format("20060102"))
	}
	before, err := st.MetricsPartitions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range oldNames {
		if !slices.Contains(before, n) {
			t.Fatalf("partition %s missing from %v", n, before)
		}
	}
	dropped, err := st.DropMetricsPartitionsBefore(ctx, time.Now().UTC().AddDate(0, 0, -7))
	if err != nil || dropped < 3 {
		t.Fatalf("dropped = %d, %v", dropped, err)
	}
	after, _ := st.MetricsPartitions(ctx)
	for _, n := range oldNames {
		if slices.Contains(after, n) {
			t.Fatalf("partition %s survived the drop", n)
		}
	}
	if !slices.Contains(after, part) {
		t.Fatalf("the drop took the current partition %s", part)
	}
	if n, _ := st.CountMetrics(ctx, srv.ID, old.AddDate(0, 0, -1), time.Now().Add(time.Hour)); n != 1 {
		t.Fatalf("rows after the drop = %d, want 1", n)
	}
	// Nothing left to drop: idempotent.
	if n, err := st.DropMetricsPartitionsBefore(ctx, time.Now().UTC().AddDate(0, 0, -7)); err != nil || n != 0 {
		t.Fatalf("second drop = %d, %v", n, err)
	}
}
