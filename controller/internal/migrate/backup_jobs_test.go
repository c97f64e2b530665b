package migrate_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/berthhq/berth/controller/internal/migrate"
	"github.com/berthhq/berth/controller/internal/testdb"
)

// 000031 adds the backup keyring, backup tasks and logs and the backups'
// job columns; it goes down with a backup present (keeping the row) and
// comes up again.
func TestMigration31RoundTrip(t *testing.T) {
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
	count := func(q string) int {
		t.Helper()
		var n int
		if err := db.Pool.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return n
	}
	const tables = `SELECT count(*) FROM pg_class WHERE relname IN ('backup_encryption_keys', 'backup_tasks', 'backup_logs') AND relkind = 'r'`
	const cols = `SELECT count(*) FROM pg_attribute WHERE attrelid = 'backups'::regclass AND NOT attisdropped
		AND attname IN ('connection_env', 'agent_seq', 'log_bytes', 'log_truncated', 'delete_requested_at', 'delete_error')`
	if n := count(tables); n != 3 {
		t.Fatalf("%d of the 3 tables", n)
	}
	if n := count(cols); n != 6 {
		t.Fatalf("%d of the 6 backups columns", n)
	}
	exec(`INSERT INTO servers (id, name) VALUES ('00000000-0000-0000-0000-000000000001', 'web-1')`)
	exec(`INSERT INTO backup_destinations (id, name, kind, config) VALUES ('00000000-0000-0000-0000-000000000002', 'vault', 'local', '{"path": "/b"}')`)
	exec(`INSERT INTO backups (id, app_name, server_id, backup_destination_id, triggered_by, kind, source, timeout_seconds, deadline_at, connection_env)
		VALUES ('00000000-0000-0000-0000-000000000003', 'shop', '00000000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-000000000002',
		'user', 'postgres', 'shop', 60, now(), 'DATABASE_URL')`)
	// The checks hold: a bad variable name, a bad recipient, a task kind.
	for _, q := range []string{
		`UPDATE backups SET connection_env = 'DATABASE-URL'`,
		`INSERT INTO backup_encryption_keys (id, recipient, identity) VALUES (gen_random_uuid(), 'age1short', '\x00')`,
		`INSERT INTO backup_tasks (id, kind, backup_destination_id, triggered_by, timeout_seconds, deadline_at)
			VALUES (gen_random_uuid(), 'copy', '00000000-0000-0000-0000-000000000002', 'user', 60, now())`,
	} {
		if _, err := db.Pool.Exec(ctx, q); err == nil {
			t.Fatalf("accepted: %s", q)
		}
	}

	for {
		st, err := mg.Status()
		if err != nil {
			t.Fatal(err)
		}
		if st.Version <= 30 {
			break
		}
		if err := mg.Down(1); err != nil {
			t.Fatal(err)
		}
	}
	if n := count(tables); n != 0 {
		t.Fatalf("%d tables left after down", n)
	}
	if n := count(cols); n != 0 {
		t.Fatalf("%d columns left after down", n)
	}
	if n := count(`SELECT count(*) FROM backups`); n != 1 {
		t.Fatalf("the backup after down: %d rows", n)
	}
	if err := mg.Up(); err != nil {
		t.Fatal(err)
	}
	if n := count(`SELECT count(*) FROM backups WHERE connection_env IS NULL AND agent_seq = 0`); n != 1 {
		t.Fatalf("the backup after up again: %d rows with the new columns' defaults", n)
	}
	if st, err := mg.Status(); err != nil || st.Version != latest || st.Dirty {
		t.Fatalf("status %+v %v, want version %d", st, err, latest)
	}
}
