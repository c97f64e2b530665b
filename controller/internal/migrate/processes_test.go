package migrate_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/berthhq/berth/controller/internal/migrate"
	"github.com/berthhq/berth/controller/internal/testdb"
)

// 000027 goes down with process and schedule rows present (their jobs go
// with them; deploys stay) and comes up again.
func TestMigration27RoundTrip(t *testing.T) {
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
	exec(`INSERT INTO servers (id, name) VALUES ('00000000-0000-0000-0000-000000000001', 'web-1')`)
	exec(`INSERT INTO apps (id, server_id, name, repository_url, deploy_path, upstream_port) VALUES
		('00000000-0000-0000-0000-000000000002', '00000000-0000-0000-0000-000000000001', 'shop', 'https://h/x.git', '/srv/shop', 10000)`)
	exec(`INSERT INTO app_processes (id, app_id, name, command) VALUES ('00000000-0000-0000-0000-000000000003', '00000000-0000-0000-0000-000000000002', 'web', './s')`)
	exec(`INSERT INTO app_schedules (id, app_id, name, cron, command, next_run_at) VALUES
		('00000000-0000-0000-0000-000000000004', '00000000-0000-0000-0000-000000000002', 'tick', '@hourly', 'true', now())`)
	exec(`INSERT INTO deployments (id, app_id, triggered_by, branch, timeout_seconds, deadline_at, kind) VALUES
		('00000000-0000-0000-0000-000000000005', '00000000-0000-0000-0000-000000000002', 'user', 'main', 60, now(), 'deploy')`)
	exec(`INSERT INTO deployments (id, app_id, triggered_by, branch, timeout_seconds, deadline_at, kind, process_action) VALUES
		('00000000-0000-0000-0000-000000000006', '00000000-0000-0000-0000-000000000002', 'user', 'main', 60, now(), 'process', 'apply')`)
	exec(`INSERT INTO deployments (id, app_id, triggered_by, branch, timeout_seconds, deadline_at, kind, schedule_id, schedule_name, schedule_command) VALUES
		('00000000-0000-0000-0000-000000000007', '00000000-0000-0000-0000-000000000002', 'schedule', 'main', 60, now(), 'schedule',
		 '00000000-0000-0000-0000-000000000004', 'tick', 'true')`)
	// The constraints hold: a process job without an action, a skipped deploy.
	for _, bad := range []string{
		`INSERT INTO deployments (id, app_id, triggered_by, branch, timeout_seconds, deadline_at, kind) VALUES
			('00000000-0000-0000-0000-000000000008', '00000000-0000-0000-0000-000000000002', 'user', 'main', 60, now(), 'process')`,
		`INSERT INTO deployments (id, app_id, triggered_by, branch, timeout_seconds, deadline_at, kind, skipped, skip_reason) VALUES
			('00000000-0000-0000-0000-000000000008', '00000000-0000-0000-0000-000000000002', 'user', 'main', 60, now(), 'deploy', true, 'x')`,
		`UPDATE apps SET upstream_port = 80`,
	} {
		if _, err := db.Pool.Exec(ctx, bad); err == nil {
			t.Errorf("accepted: %s", bad)
		}
	}
	// Down to 26, through any later migrations (their numbers need not be
	// contiguous while branches land).
	for {
		st, err := mg.Status()
		if err != nil {
			t.Fatal(err)
		}
		if st.Version <= 26 {
			break
		}
		if err := mg.Down(1); err != nil {
			t.Fatal(err)
		}
	}
	var n int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM deployments`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("deployments after down: %d %v", n, err)
	}
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_class WHERE relname IN ('app_processes', 'app_schedules', 'app_process_status')`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("tables left after down: %d %v", n, err)
	}
	if err := mg.Up(); err != nil {
		t.Fatal(err)
	}
	st, err := mg.Status()
	if err != nil || st.Version != latest || st.Dirty {
		t.Fatalf("status %+v %v, want version %d", st, err, latest)
	}
}
