package migrate_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/berthhq/berth/controller/internal/migrate"
	"github.com/berthhq/berth/controller/internal/testdb"
)

// 000030 creates alert_rules (with its three defaults and the NOTIFY
// trigger) and alert_states, goes down with states present, and comes up
// again with the defaults seeded once more; its CHECKs refuse a threshold
// on offline, a mount on cpu, and a server and a label together.
func TestMigration30RoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testdb.New(t)
	mg, err := migrate.Open(ctx, db.DSN, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer mg.Close()
	count := func(q string) int {
		t.Helper()
		var n int
		if err := db.Pool.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return n
	}
	exec := func(q string) error {
		_, err := db.Pool.Exec(ctx, q)
		return err
	}
	if n := count(`SELECT count(*) FROM alert_rules WHERE name IN ('disk-above-90', 'memory-above-95', 'server-offline')`); n != 3 {
		t.Fatalf("%d default rules", n)
	}
	if n := count(`SELECT count(*) FROM pg_trigger WHERE tgname = 'alert_rules_changed'`); n != 1 {
		t.Fatalf("notify trigger: %d", n)
	}
	for _, bad := range []string{
		`INSERT INTO alert_rules (id, name, metric, above, resolve_below, for_seconds) VALUES (gen_random_uuid(), 'a', 'offline', 1, 1, 60)`,
		`INSERT INTO alert_rules (id, name, metric, above, resolve_below, for_seconds, mount) VALUES (gen_random_uuid(), 'b', 'cpu', 50, 45, 60, '/')`,
		`INSERT INTO alert_rules (id, name, metric, above, resolve_below, for_seconds) VALUES (gen_random_uuid(), 'c', 'cpu', 50, 60, 60)`,
		`INSERT INTO alert_rules (id, name, metric, above, resolve_below, for_seconds) VALUES (gen_random_uuid(), 'd', 'cpu', 50, 45, 90000)`,
		`INSERT INTO alert_rules (id, name, metric, above, resolve_below, for_seconds, label_key) VALUES (gen_random_uuid(), 'e', 'cpu', 50, 45, 60, 'env')`,
	} {
		if err := exec(bad); err == nil {
			t.Errorf("accepted: %s", bad)
		}
	}
	if err := exec(`INSERT INTO servers (id, name) VALUES ('00000000-0000-0000-0000-000000000001', 'web-1')`); err != nil {
		t.Fatal(err)
	}
	if err := exec(`INSERT INTO alert_states (rule_id, server_id, mount, status, pending_since, firing_since, value)
		VALUES ('01900000-0000-7000-8000-000000000011', '00000000-0000-0000-0000-000000000001', '/', 'firing', now(), now(), 93)`); err != nil {
		t.Fatal(err)
	}
	if err := exec(`UPDATE alert_states SET status = 'resolved'`); err == nil {
		t.Errorf("resolved without resolved_at accepted")
	}
	if err := downTo(mg, 29); err != nil {
		t.Fatal(err)
	}
	if n := count(`SELECT count(*) FROM pg_class WHERE relname IN ('alert_rules', 'alert_states')`); n != 0 {
		t.Fatalf("%d alert tables left after down", n)
	}
	if n := count(`SELECT count(*) FROM pg_proc WHERE proname = 'berth_alert_rules_changed'`); n != 0 {
		t.Fatalf("trigger function left after down")
	}
	if err := mg.Up(); err != nil {
		t.Fatal(err)
	}
	if n := count(`SELECT count(*) FROM alert_rules`); n != 3 {
		t.Fatalf("%d rules after up again", n)
	}
}
