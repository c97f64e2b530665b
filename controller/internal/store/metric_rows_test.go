package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
)

// columns makes a batch of n samples every 10 s from base: cpu i, mem_used
// 1<<63 (clamped when stored), rates on odd samples, and two filesystems
// per sample.
func columns(base time.Time, n int) *store.MetricColumns {
	c := &store.MetricColumns{Mounts: [][]byte{[]byte(`"/"`), []byte(`"/srv \"x\""`)}}
	for i := range n {
		c.RecordedAt = append(c.RecordedAt, base.Add(time.Duration(i)*10*time.Second).UnixMicro())
		c.CPUPercent = append(c.CPUPercent, float64(i))
		c.Load1, c.Load5, c.Load15 = append(c.Load1, 1), append(c.Load5, 2), append(c.Load15, 3)
		c.MemUsed, c.MemTotal = append(c.MemUsed, 1<<63), append(c.MemTotal, 8000)
		c.SwapUsed, c.SwapTotal = append(c.SwapUsed, 0), append(c.SwapTotal, 0)
		c.DiskUsed, c.DiskTotal = append(c.DiskUsed, 5), append(c.DiskTotal, 6)
		c.HasRates = append(c.HasRates, i%2 == 1)
		c.DiskReadBps, c.DiskWriteBps = append(c.DiskReadBps, 7), append(c.DiskWriteBps, 8)
		c.NetRxBps, c.NetTxBps = append(c.NetRxBps, float64(100*i)), append(c.NetTxBps, 10)
		c.DiskCount = append(c.DiskCount, 2)
		c.FSMount = append(c.FSMount, 0, 1)
		c.FSUsed, c.FSTotal = append(c.FSUsed, uint64(i), 1), append(c.FSTotal, 100, 2)
	}
	return c
}

// A batch in column form lands row by row with its values, NULL rates where
// the agent had none, its filesystems as JSON, and without the samples
// outside its time bounds (whose filesystems are skipped with them).
func TestIngestMetricColumns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, st := keyedStore(t)
	base := metricsWindow(t, st)
	srv := mkServer(t, st, "cols")
	other := mkServer(t, st, "samples")

	c := columns(base, 5)
	c.NotBefore, c.NotAfter = base.Add(5*time.Second), base.Add(35*time.Second) // skips samples 0 and 4
	res, err := st.IngestMetricsBatches(ctx, []store.MetricsBatch{
		{ServerID: srv.ID, Seq: 1, Columns: c},
		{ServerID: other.ID, Seq: 1, Samples: samples(base, 2)}, // both forms in one COPY
	})
	if err != nil || res[srv.ID] != store.IngestStored || res[other.ID] != store.IngestStored {
		t.Fatalf("ingest: %v %v", res, err)
	}
	rows, err := db.Pool.Query(ctx, `SELECT recorded_at, cpu_percent, mem_used, mem_total, net_rx_bps, net_tx_bps, disks::text
		FROM server_metrics WHERE server_id = $1 ORDER BY recorded_at`, srv.ID[:])
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []int
	for rows.Next() {
		var (
			at          time.Time
			cpu         float64
			used, total int64
			rx, tx      *float64
			disks       string
		)
		if err := rows.Scan(&at, &cpu, &used, &total, &rx, &tx, &disks); err != nil {
			t.Fatal(err)
		}
		i := int(cpu)
		got = append(got, i)
		if !at.Equal(base.Add(time.Duration(i)*10*time.Second)) || used != 1<<62 || total != 8000 {
			t.Fatalf("sample %d: at %v used %d total %d", i, at, used, total)
		}
		if (rx != nil) != (i%2 == 1) || (rx != nil && (*rx != float64(100*i) || *tx != 10)) {
			t.Fatalf("sample %d rates: %v %v", i, rx, tx)
		}
		want := `[{"used": ` + string(rune('0'+i)) + `, "mount": "/", "total": 100}, {"used": 1, "mount": "/srv \"x\"", "total": 2}]`
		if disks != want {
			t.Fatalf("sample %d disks:\n got %s\nwant %s", i, disks, want)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0] != 1 || got[2] != 3 {
		t.Fatalf("stored samples %v, want 1..3", got)
	}

	// Columns that disagree are refused before anything is written.
	for name, mangle := range map[string]func(c *store.MetricColumns){
		"short column":        func(c *store.MetricColumns) { c.Load5 = c.Load5[:1] },
		"long column":         func(c *store.MetricColumns) { c.HasRates = append(c.HasRates, true) },
		"disk count too high": func(c *store.MetricColumns) { c.DiskCount[0]++ },
		"filesystem missing":  func(c *store.MetricColumns) { c.FSTotal = c.FSTotal[1:] },
		"mount out of range":  func(c *store.MetricColumns) { c.FSMount[1] = 2 },
	} {
		c := columns(base, 2)
		mangle(c)
		if _, err := st.IngestMetricsBatches(ctx, []store.MetricsBatch{{ServerID: srv.ID, Seq: 2, Columns: c}}); !errors.Is(err, store.ErrInvalid) {
			t.Fatalf("%s: got %v, want ErrInvalid", name, err)
		}
	}
	if n, err := st.CountMetrics(ctx, srv.ID, base.Add(-time.Hour), base.Add(time.Hour)); err != nil || n != 3 {
		t.Fatalf("%d rows after refused batches (%v)", n, err)
	}
}

// More filesystems than a sample may keep are cut to MaxSampleDisks.
func TestIngestMetricColumnsManyDisks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, st := keyedStore(t)
	base := metricsWindow(t, st)
	srv := mkServer(t, st, "disks")
	c := columns(base, 1)
	c.DiskCount[0] = store.MaxSampleDisks + 3
	c.FSMount, c.FSUsed, c.FSTotal = make([]uint32, store.MaxSampleDisks+3), make([]uint64, store.MaxSampleDisks+3), make([]uint64, store.MaxSampleDisks+3)
	if _, err := st.IngestMetricsBatches(ctx, []store.MetricsBatch{{ServerID: srv.ID, Seq: 1, Columns: c}}); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.Pool.QueryRow(ctx, `SELECT jsonb_array_length(disks) FROM server_metrics WHERE server_id = $1`, srv.ID[:]).Scan(&n); err != nil || n != store.MaxSampleDisks {
		t.Fatalf("%d filesystems stored (%v), want %d", n, err, store.MaxSampleDisks)
	}
}
