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

// 000036 adds the outbox's per-recipient record (delivered_to, refused_to):
// an existing row gets empty ones, refused_to must be a JSON object, and
// the migration goes down (keeping the rows) and up again.
func TestMigration36NotifyRecipientsRoundTrip(t *testing.T) {
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
	str := func(q string) string {
		t.Helper()
		var s string
		if err := db.Pool.QueryRow(ctx, q).Scan(&s); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return s
	}
	const cols = `SELECT count(*)::text FROM pg_attribute WHERE attrelid = 'notify_outbox'::regclass AND NOT attisdropped
		AND attname IN ('delivered_to', 'refused_to')`

	// A row queued before 000036.
	if err := downTo(mg, 35); err != nil {
		t.Fatal(err)
	}
	if n := str(cols); n != "0" {
		t.Fatalf("%s columns before 000036", n)
	}
	exec(`INSERT INTO notify_channels (id, name, kind, recipients) VALUES ('00000000-0000-0000-0000-000000000001', 'ops', 'email', '{ops@example.test}')`)
	exec(`INSERT INTO notify_outbox (id, channel_id, status, digest_title, digest_body, next_attempt_at, created_at)
		VALUES ('00000000-0000-0000-0000-000000000002', '00000000-0000-0000-0000-000000000001', 'pending', 't', 'b', now(), now())`)
	if err := mg.Up(); err != nil {
		t.Fatal(err)
	}
	if got := str(`SELECT delivered_to::text || ' ' || refused_to::text FROM notify_outbox`); got != "{} {}" {
		t.Fatalf("the old row after up: %q", got)
	}
	exec(`UPDATE notify_outbox SET delivered_to = '{ops@example.test}', refused_to = '{"x@example.test": "550 no"}'`)
	for _, q := range []string{
		`UPDATE notify_outbox SET refused_to = '["x@example.test"]'`,
		`UPDATE notify_outbox SET refused_to = NULL`,
		`UPDATE notify_outbox SET delivered_to = NULL`,
	} {
		if _, err := db.Pool.Exec(ctx, q); err == nil || !strings.Contains(err.Error(), "notify_outbox") {
			t.Fatalf("%s: %v, want a violation", q, err)
		}
	}
	if err := downTo(mg, 35); err != nil {
		t.Fatal(err)
	}
	if n := str(cols); n != "0" {
		t.Fatalf("%s columns left after down", n)
	}
	if n := str(`SELECT count(*)::text FROM notify_outbox`); n != "1" {
		t.Fatalf("%s rows after down", n)
	}
	if err := mg.Up(); err != nil {
		t.Fatal(err)
	}
	if st, err := mg.Status(); err != nil || st.Version != latest || st.Dirty {
		t.Fatalf("status %+v %v, want version %d", st, err, latest)
	}
}
