package fleet

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/ca"
	"github.com/berthhq/berth/controller/internal/notify"
	"github.com/berthhq/berth/controller/internal/secrets"
	"github.com/berthhq/berth/controller/internal/store"
	"github.com/berthhq/berth/controller/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// A server whose heartbeats stop is marked offline and server.offline is
// published in the same transaction, once: the admin's inbox (default
// rule) gets it, and another liveness pass adds nothing.
func TestLivenessPublishesServerOffline(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kr, err := secrets.Generate()
	if err != nil {
		t.Fatal(err)
	}
	db := testdb.New(t)
	st := store.New(db.Pool, secrets.NewSource(kr, ""))
	authority, _, err := ca.LoadOrCreate(t.TempDir(), ca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := st.CreateUser(ctx, store.CreateUserParams{Email: "ops@example.com", PasswordHash: "$argon2id$x", Role: store.RoleAdmin, Status: store.UserActive})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := st.CreateServer(ctx, store.CreateServerParams{Name: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.ServerHello(ctx, srv.ID, store.ServerFacts{}, nil); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := New(st, authority, slog.New(slog.NewTextHandler(io.Discard, nil)), Config{HeartbeatInterval: time.Second, StartGrace: time.Second, Now: clock})
	mu.Lock()
	now = now.Add(time.Hour) // past the start grace and the heartbeat cutoff
	mu.Unlock()
	go s.Liveness(ctx)

	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := st.Server(ctx, srv.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status == store.ServerOffline {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("never marked offline")
		}
		time.Sleep(50 * time.Millisecond) // polling a condition
	}
	inbox, err := st.Notifications(ctx, admin.ID, store.NotificationFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(inbox) != 1 || inbox[0].Kind != notify.KindServerOffline || inbox[0].Title != "Server web-1 is offline" ||
		inbox[0].DedupeKey != "server.offline:"+srv.ID.String() || inbox[0].Link != "/servers/"+srv.ID.String() {
		t.Fatalf("inbox %+v", inbox)
	}
	var events int
	if err := db.Pool.QueryRow(ctx, "SELECT count(*) FROM notify_events WHERE kind = 'server.offline' AND server_id = $1", srv.ID).Scan(&events); err != nil || events != 1 {
		t.Fatalf("events %d %v", events, err)
	}
}
