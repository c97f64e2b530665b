package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/berthhq/berth/controller/internal/store"
	"github.com/berthhq/berth/controller/internal/testdb"
)

func TestMarkServersSeen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testdb.New(t)
	st := store.New(db.Pool, nil)
	ids := map[string]store.ID{}
	for _, n := range []string{"a", "b", "off"} {
		ids[n] = store.NewID()
		if _, err := db.Pool.Exec(ctx, `INSERT INTO servers (id, name) VALUES ($1, $2)`, pgtype.UUID{Bytes: ids[n], Valid: true}, n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.DisableServer(ctx, ids["off"]); err != nil {
		t.Fatal(err)
	}
	at := time.Now().UTC().Truncate(time.Microsecond)
	n, err := st.MarkServersSeen(ctx, map[store.ID]time.Time{ids["a"]: at, ids["b"]: at.Add(-time.Second), ids["off"]: at, store.NewID(): at})
	if err != nil || n != 2 {
		t.Fatalf("marked %d (%v), want 2: disabled and unknown servers are left alone", n, err)
	}
	a, _ := st.Server(ctx, ids["a"])
	off, _ := st.Server(ctx, ids["off"])
	if a.Status != store.ServerOnline || a.LastSeenAt == nil || !a.LastSeenAt.Equal(at) || off.Status != store.ServerDisabled {
		t.Fatalf("a = %s %v, off = %s", a.Status, a.LastSeenAt, off.Status)
	}
	// An older heartbeat arriving late never moves last_seen_at back.
	if _, err := st.MarkServersSeen(ctx, map[store.ID]time.Time{ids["a"]: at.Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if a, _ = st.Server(ctx, ids["a"]); !a.LastSeenAt.Equal(at) {
		t.Fatalf("last_seen_at went back to %v", a.LastSeenAt)
	}
	if n, err := st.MarkServersSeen(ctx, nil); err != nil || n != 0 {
		t.Fatalf("empty batch: %d %v", n, err)
	}
}
