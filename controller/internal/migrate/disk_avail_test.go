package migrate_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/berthhq/berth/controller/internal/migrate"
	"github.com/berthhq/berth/controller/internal/testdb"
)

// 000028 adds server_metrics' disk_avail and inode columns to the table
// and its existing partitions, goes down with rows present (keeping them)
// and comes up again.
func TestMigration28RoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testdb.New(t)
	mg, err := migrate.Open(ctx, db.DSN, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer mg.Close()
	latest, err := migrate.LatestVersion()
	if err != nil {
		t.Fatal(err)
	}
	exec := func(q string) {
		t.Helper()
		if _, err := db.Pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	cols := func() int {
		t.Helper()
		var n int
		// Every partition and the parent: 3 columns each.
		if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
			WHERE c.relname LIKE 'server_metrics%' AND c.relkind IN ('r', 'p') AND NOT a.attisdropped
			AND a.attname IN ('disk_avail', 'inodes_total', 'inodes_free')`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	var tables int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_class WHERE relname LIKE 'server_metrics%' AND relkind IN ('r', 'p')`).Scan(&tables); err != nil || tables < 2 {
		t.Fatalf("server_metrics and its partitions: %d %v", tables, err)
	}
	if n := cols(); n != 3*tables {
		t.Fatalf("%d new columns over %d tables, want 3 each", n, tables)
	}
	exec(`INSERT INTO servers (id, name) VALUES ('00000000-0000-0000-0000-000000000001', 'web-1')`)
	exec(`INSERT INTO server_metrics (server_id, recorded_at, disk_used, disk_total, disk_avail, inodes_total, inodes_free)
		VALUES ('00000000-0000-0000-0000-000000000001', now(), 1, 3, 1, 10, 4)`)

	if err := downTo(mg, 27); err != nil {
		t.Fatal(err)
	}
	if n := cols(); n != 0 {
		t.Fatalf("%d columns left after down", n)
	}
	var used int64
	if err := db.Pool.QueryRow(ctx, `SELECT disk_used FROM server_metrics`).Scan(&used); err != nil || used != 1 {
		t.Fatalf("the sample after down: %d %v", used, err)
	}
	if err := mg.Up(); err != nil {
		t.Fatal(err)
	}
	var avail *int64
	if err := db.Pool.QueryRow(ctx, `SELECT disk_avail FROM server_metrics`).Scan(&avail); err != nil || avail != nil {
		t.Fatalf("the sample after up again: avail %v %v (want NULL: not measured)", avail, err)
	}
	if st, err := mg.Status(); err != nil || st.Version != latest || st.Dirty {
		t.Fatalf("status %+v %v, want version %d", st, err, latest)
	}
}
