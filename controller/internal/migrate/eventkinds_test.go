package migrate_test

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/berthhq/berth/controller/internal/migrate"
	"github.com/berthhq/berth/controller/internal/testdb"
)

// Migration 000022 renames event kinds written under the old names to the
// one dotted scheme, per table, and its down migration gives them back.
func TestEventKindsRenamedBy22(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testdb.New(t)
	mg, err := migrate.Open(ctx, db.DSN, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer mg.Close()
	const toBefore22 = 21 // the version before 000022
	if err := downTo(mg, toBefore22); err != nil {
		t.Fatal(err)
	}
	exec := func(q string) {
		t.Helper()
		if _, err := db.Pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`INSERT INTO security_events (id, type, severity, actor) VALUES
		(gen_random_uuid(), 'token_created', 'info', 'a'), (gen_random_uuid(), 'login_throttled', 'warning', 'a'),
		(gen_random_uuid(), 'server.removed', 'warning', 'a')`)
	exec(`INSERT INTO activity_log (id, actor_type, actor, action) VALUES
		(gen_random_uuid(), 'user', 'a', 'api_token.create'), (gen_random_uuid(), 'user', 'a', 'user.invite'),
		(gen_random_uuid(), 'user', 'a', 'server.created')`)
	kinds := func() ([]string, []string) {
		t.Helper()
		sec := strings1(t, db.Pool, `SELECT type FROM security_events ORDER BY type`)
		act := strings1(t, db.Pool, `SELECT action FROM activity_log ORDER BY action`)
		return sec, act
	}

	if err := mg.Up(); err != nil {
		t.Fatal(err)
	}
	sec, act := kinds()
	if want := []string{"login.throttled", "server.removed", "token.created"}; !slices.Equal(sec, want) {
		t.Errorf("security events after up: %v, want %v", sec, want)
	}
	if want := []string{"server.created", "token.created", "user.invited"}; !slices.Equal(act, want) {
		t.Errorf("activity after up: %v, want %v", act, want)
	}

	if err := downTo(mg, toBefore22); err != nil {
		t.Fatal(err)
	}
	sec, act = kinds()
	if want := []string{"login_throttled", "server.removed", "token_created"}; !slices.Equal(sec, want) {
		t.Errorf("security events after down: %v, want %v", sec, want)
	}
	if want := []string{"api_token.create", "server.created", "user.invite"}; !slices.Equal(act, want) {
		t.Errorf("activity after down: %v, want %v", act, want)
	}
}
