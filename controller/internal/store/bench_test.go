package store_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/berthhq/berth/controller/internal/store"
	"github.com/berthhq/berth/controller/internal/testdb"
)

// benchFleet makes n servers and returns their ids.
func benchFleet(b *testing.B, db *testdb.DB, n int) []store.ID {
	b.Helper()
	ids := make([]store.ID, n)
	for i := range ids {
		ids[i] = store.NewID()
		if _, err := db.Pool.Exec(context.Background(), `INSERT INTO servers (id, name) VALUES ($1, $2)`,
			pgtype.UUID{Bytes: ids[i], Valid: true}, fmt.Sprintf("bench-%d", i)); err != nil {
			b.Fatal(err)
		}
	}
	return ids
}

func benchSamples(server store.ID, start time.Time, n int) []store.MetricSample {
	out := make([]store.MetricSample, n)
	for i := range out {
		cpu, mem := float64(i%100), int64(1<<30+i)
		out[i] = store.MetricSample{ServerID: server, RecordedAt: start.Add(time.Duration(i) * 10 * time.Second), CPUPercent: &cpu, Load1: &cpu, MemUsed: &mem, MemTotal: &mem}
	}
	return out
}

// BenchmarkIngestBatch is the controller's ingest path: one agent batch of
// 360 samples (an hour at 10 s, a backfill after an outage) stored exactly
// once (sequence compare-and-set plus COPY in one transaction).
func BenchmarkIngestBatch(b *testing.B) {
	db := testdb.New(b)
	st := store.New(db.Pool, nil)
	ids := benchFleet(b, db, 50)
	start := time.Now().Add(-2 * time.Hour)
	const per = 360
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		srv := ids[i%len(ids)]
		if _, err := st.IngestMetricsBatch(context.Background(), srv, int64(i+1), benchSamples(srv, start, per)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(per*b.N)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkRawCopy is the same rows by a bare COPY: the ceiling the ingest
// path is measured against (target: at least half of it).
func BenchmarkRawCopy(b *testing.B) {
	db := testdb.New(b)
	ids := benchFleet(b, db, 50)
	start := time.Now().Add(-2 * time.Hour)
	const per = 360
	cols := []string{"server_id", "recorded_at", "cpu_percent", "load1", "mem_used", "mem_total"}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		srv := ids[i%len(ids)]
		rows := make([][]any, per)
		for j, s := range benchSamples(srv, start, per) {
			rows[j] = []any{pgtype.UUID{Bytes: srv, Valid: true}, s.RecordedAt, *s.CPUPercent, *s.Load1, *s.MemUsed, *s.MemTotal}
		}
		if _, err := db.Pool.CopyFrom(context.Background(), pgx.Identifier{"server_metrics"}, cols, pgx.CopyFromRows(rows)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(per*b.N)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkBackfillParallel: many servers replay an hour-long buffer at
// once (after a controller outage), each through the exactly-once path on
// its own connection.
func BenchmarkBackfillParallel(b *testing.B) {
	db := testdb.New(b)
	st := store.New(db.Pool, nil)
	ids := benchFleet(b, db, 200)
	start := time.Now().Add(-2 * time.Hour)
	const per = 360
	var next, stored atomic.Int64
	b.ResetTimer()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			srv := ids[int(i)%len(ids)]
			ok, err := st.IngestMetricsBatch(context.Background(), srv, i, benchSamples(srv, start, per))
			if err != nil {
				b.Error(err)
				return
			}
			if ok { // a batch overtaken by a later one for its server is a replay
				stored.Add(per)
			}
		}
	})
	// Committed rows only: replays are acknowledged but store nothing.
	b.ReportMetric(float64(stored.Load())/b.Elapsed().Seconds(), "rows/s")
}
