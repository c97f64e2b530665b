package migrate_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/berthhq/berth/controller/internal/migrate"
	"github.com/berthhq/berth/controller/internal/testdb"
)

// 000034 adds the backups' cleanup columns and the cleanup task kind; its
// checks refuse a cleanup of a succeeded backup and a second active
// cleanup; it goes down with a failed backup under cleanup (keeping the
// row, dropping the cleanup task the old kind check would refuse) and
// comes up again.
func TestMigration34RoundTrip(t *testing.T) {
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
	const cols = `SELECT count(*) FROM pg_attribute WHERE attrelid = 'backups'::regclass AND NOT attisdropped
		AND attname IN ('cleanup_status', 'cleanup_error', 'cleanup_at')`
	if n := count(cols); n != 3 {
		t.Fatalf("%d of the 3 backups columns", n)
	}
	exec(`INSERT INTO servers (id, name) VALUES ('00000000-0000-0000-0000-000000000001', 'web-1')`)
	exec(`INSERT INTO backup_destinations (id, name, kind, config) VALUES ('00000000-0000-0000-0000-000000000002', 'vault', 'local', '{"path": "/b"}')`)
	exec(`INSERT INTO backups (id, app_name, server_id, backup_destination_id, triggered_by, kind, source, timeout_seconds, deadline_at,
		status, dispatched_at, finished_at, failure_reason, cleanup_status, cleanup_at)
		VALUES ('00000000-0000-0000-0000-000000000003', 'shop', '00000000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-000000000002',
		'user', 'postgres', 'shop', 60, now(), 'failed', now(), now(), 'agent unreachable', 'pending', now())`)
	task := func(id string) string {
		return `INSERT INTO backup_tasks (id, kind, backup_id, backup_destination_id, server_id, triggered_by, timeout_seconds, deadline_at)
			VALUES ('` + id + `', 'cleanup', '00000000-0000-0000-0000-000000000003', '00000000-0000-0000-0000-000000000002',
			'00000000-0000-0000-0000-000000000001', 'system', 60, now())`
	}
	exec(task("00000000-0000-0000-0000-000000000004"))
	for q, constraint := range map[string]string{
		task("00000000-0000-0000-0000-000000000005"):  "backup_tasks_one_active_cleanup_key", // a second active cleanup
		`UPDATE backups SET cleanup_status = 'maybe'`: "backups_cleanup_status_check",
		`UPDATE backups SET status = 'succeeded', object_key = 'shop/x.pgdump.zst.age', size_bytes = 1,
			checksum_sha256 = sha256('x'), encryption_key_id = 'x'`: "backups_cleanup_unsucceeded_check",
	} {
		_, err := db.Pool.Exec(ctx, q)
		if err == nil || !strings.Contains(err.Error(), constraint) {
			t.Fatalf("%s: %v, want a violation of %s", q, err, constraint)
		}
	}
	if err := downTo(mg, 33); err != nil {
		t.Fatal(err)
	}
	if n := count(cols); n != 0 {
		t.Fatalf("%d columns left after down", n)
	}
	if n := count(`SELECT count(*) FROM backups`) + count(`SELECT count(*) FROM backup_tasks`); n != 1 {
		t.Fatalf("after down: %d rows, want the backup alone", n)
	}
	if err := mg.Up(); err != nil {
		t.Fatal(err)
	}
	if n := count(`SELECT count(*) FROM backups WHERE cleanup_status IS NULL`); n != 1 {
		t.Fatalf("the backup after up again: %d", n)
	}
	if st, err := mg.Status(); err != nil || st.Version != latest || st.Dirty {
		t.Fatalf("status %+v %v, want version %d", st, err, latest)
	}
}
