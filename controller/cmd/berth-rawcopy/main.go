// Command berth-rawcopy is the ceiling for the fleet backfill benchmark
// (scripts/fleet-bench.sh); it is not shipped. It writes -rows metrics rows
// into a running controller's database with a bare COPY — the same columns
// and the same shape of rows that agents send, -per rows per COPY (an hour at
// 10 s by default), for the servers whose names start with -prefix, on
// -conns connections at once (by default as many as the controller's pool
// has) — and prints the rate as key=value lines. No sequence check, no
// transaction around it, no gRPC: what is left is PostgreSQL's own cost.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/berthhq/berth/controller/internal/daemon"
)

var cols = []string{"server_id", "recorded_at", "cpu_percent", "load1", "load5", "load15", "mem_used", "mem_total", "swap_used", "swap_total", "disk_used", "disk_total", "disk_read_bps", "disk_write_bps", "net_rx_bps", "net_tx_bps", "disks", "disk_avail", "inodes_total", "inodes_free"}

func main() {
	dataDir := flag.String("data-dir", "", "the running controller's data dir (its embedded PostgreSQL)")
	url := flag.String("database-url", "", "PostgreSQL URL instead of -data-dir")
	rows := flag.Int("rows", 360000, "rows to copy")
	per := flag.Int("per", 360, "rows per COPY")
	conns := flag.Int("conns", max(4, runtime.NumCPU()), "COPYs at once (default: pgxpool's default size, as the controller's pool)")
	prefix := flag.String("prefix", "sim", "copy for the servers named PREFIX-*")
	flag.Parse()
	if err := run(context.Background(), *dataDir, *url, *rows, *per, *conns, *prefix); err != nil {
		fmt.Fprintf(os.Stderr, "berth-rawcopy: %s\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dataDir, url string, total, per, conns int, prefix string) error {
	db, err := daemon.OpenDatabase(ctx, dataDir, url, true, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer db.Close(ctx)
	cfg, err := pgxpool.ParseConfig(db.DSN)
	if err != nil {
		return err
	}
	cfg.MaxConns = int32(conns)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()

	var ids []pgtype.UUID
	r, err := pool.Query(ctx, `SELECT id FROM servers WHERE name LIKE $1 || '-%' ORDER BY name`, prefix)
	if err != nil {
		return err
	}
	ids, err = pgx.CollectRows(r, pgx.RowTo[pgtype.UUID])
	if err != nil {
		return err
	}
	if len(ids) == 0 {
		return fmt.Errorf("no servers named %s-*", prefix)
	}

	// Build every row first: only the COPYs are timed.
	now := time.Now()
	var batches [][][]any
	for done := 0; done < total; {
		k := min(per, total-done)
		srv := ids[len(batches)%len(ids)]
		b := make([][]any, k)
		for j := range b {
			b[j] = row(srv, now.Add(-time.Duration(k-j)*10*time.Second))
		}
		batches = append(batches, b)
		done += k
	}

	var (
		next   atomic.Int64
		copied atomic.Int64
		wg     sync.WaitGroup
		errMu  sync.Mutex
		first  error
	)
	start := time.Now()
	for range conns {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(batches) {
					return
				}
				n, err := pool.CopyFrom(ctx, pgx.Identifier{"server_metrics"}, cols, pgx.CopyFromRows(batches[i]))
				if err != nil {
					errMu.Lock()
					first = errors.Join(first, err)
					errMu.Unlock()
					return
				}
				copied.Add(n)
			}
		})
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	if first != nil {
		return first
	}
	fmt.Printf("raw_rows=%d\nraw_conns=%d\nraw_seconds=%.1f\nraw_rows_per_second=%.0f\n", copied.Load(), conns, secs, float64(copied.Load())/secs)
	return nil
}

type disk struct {
	Mount  string `json:"mount"`
	Used   uint64 `json:"used"`
	Total  uint64 `json:"total"`
	Avail  uint64 `json:"avail"`
	ITotal uint64 `json:"inodes_total"`
	IFree  uint64 `json:"inodes_free"`
}

// row is what the controller stores for one of berth-fleetsim's samples.
func row(srv pgtype.UUID, t time.Time) []any {
	r := rand.Float64()
	disks, _ := json.Marshal([]disk{{"/", 10<<30 + uint64(r*(1<<30)), 40 << 30, 28<<30 - uint64(r*(1<<30)), 2621440, 2500000 - uint64(r*1000)}})
	return []any{srv, t, 100 * r, 2 * r, 1.5 * r, r,
		int64(1<<30 + r*(1<<30)), int64(4 << 30), int64(0), int64(1 << 30), int64(10<<30 + r*(1<<30)), int64(40 << 30),
		1e4 * r, 5e4 * r, 1e5 * r, 2e4 * r, disks, int64(28<<30 - r*(1<<30)), int64(2621440), int64(2500000 - r*1000)}
}
