package store_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/secrets"
	"github.com/berthhq/berth/controller/internal/store"
)

func mkServer(t *testing.T, st *store.Store, name string) store.Server {
	t.Helper()
	s, err := st.CreateServer(context.Background(), store.CreateServerParams{Name: name})
	if err != nil {
		t.Fatalf("create server %s: %v", name, err)
	}
	return s
}

func TestServers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, st := keyedStore(t)
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Microsecond)

	web, err := st.CreateServer(ctx, store.CreateServerParams{Name: "web-1", Labels: map[string]string{"env": "prod", "role": "web"}, JoinTokenHash: hash32(1), JoinTokenExpiresAt: &exp})
	if err != nil {
		t.Fatal(err)
	}
	if web.Status != store.ServerPending || !web.HasJoinToken || !web.JoinTokenExpiresAt.Equal(exp) || web.Labels["env"] != "prod" || web.MetricsSeq != 0 || web.HasSSHKey || string(web.Facts) != "{}" {
		t.Fatalf("created = %+v", web)
	}
	db1, err := st.CreateServer(ctx, store.CreateServerParams{Name: "db-1", Labels: map[string]string{"env": "prod"}})
	if err != nil || db1.HasJoinToken || len(db1.Labels) != 1 {
		t.Fatalf("created = %+v, %v", db1, err)
	}
	stg := mkServer(t, st, "stage.1")
	if stg.Labels == nil || len(stg.Labels) != 0 {
		t.Fatalf("nil labels stored as %v", stg.Labels)
	}

	for name, c := range map[string]struct {
		p    store.CreateServerParams
		want error
	}{
		"taken":          {store.CreateServerParams{Name: "web-1"}, store.ErrConflict},
		"upper case":     {store.CreateServerParams{Name: "Web-2"}, store.ErrInvalid},
		"slash":          {store.CreateServerParams{Name: "a/b"}, store.ErrInvalid},
		"empty":          {store.CreateServerParams{Name: ""}, store.ErrInvalid},
		"hash, no exp":   {store.CreateServerParams{Name: "x1", JoinTokenHash: hash32(2)}, store.ErrInvalid},
		"short hash":     {store.CreateServerParams{Name: "x2", JoinTokenHash: []byte{1}, JoinTokenExpiresAt: &exp}, store.ErrInvalid},
		"same join hash": {store.CreateServerParams{Name: "x3", JoinTokenHash: hash32(1), JoinTokenExpiresAt: &exp}, store.ErrConflict},
	} {
		if _, err := st.CreateServer(ctx, c.p); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}

	if got, err := st.Server(ctx, web.ID); err != nil || got.Name != "web-1" || !maps.Equal(got.Labels, web.Labels) {
		t.Fatalf("get = %+v, %v", got, err)
	}
	if got, err := st.ServerByName(ctx, "db-1"); err != nil || got.ID != db1.ID {
		t.Fatalf("by name = %+v, %v", got, err)
	}
	if _, err := st.ServerByName(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown name: %v", err)
	}
	if _, err := st.Server(ctx, store.NewID()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}

	// Labels: a selector matches supersets; setting replaces.
	ids := func(ss []store.Server) []store.ID {
		out := make([]store.ID, len(ss))
		for i, s := range ss {
			out[i] = s.ID
		}
		return out
	}
	prod, err := st.Servers(ctx, store.ServerFilter{Labels: map[string]string{"env": "prod"}})
	if err != nil || !slices.Equal(ids(prod), []store.ID{db1.ID, web.ID}) {
		t.Fatalf("env=prod = %v, %v", ids(prod), err)
	}
	if webs, _ := st.Servers(ctx, store.ServerFilter{Labels: map[string]string{"env": "prod", "role": "web"}}); !slices.Equal(ids(webs), []store.ID{web.ID}) {
		t.Fatalf("env=prod,role=web = %v", ids(webs))
	}
	if _, err := st.SetServerLabels(ctx, db1.ID, map[string]string{"env": "staging"}); err != nil {
		t.Fatal(err)
	}
	if prod, _ := st.Servers(ctx, store.ServerFilter{Labels: map[string]string{"env": "prod"}}); !slices.Equal(ids(prod), []store.ID{web.ID}) {
		t.Fatalf("after relabel = %v", ids(prod))
	}
	if _, err := st.SetServerLabels(ctx, store.NewID(), nil); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("relabel unknown: %v", err)
	}

	// Facts from the agent; zero fields keep what is there.
	f, err := st.UpdateServerFacts(ctx, web.ID, store.ServerFacts{Facts: json.RawMessage(`{"os":"linux","cpus":4}`), Hostname: "web-1.example.com", AgentVersion: "1.2.3"})
	if err != nil || f.Hostname != "web-1.example.com" || f.AgentVersion != "1.2.3" {
		t.Fatalf("facts = %+v, %v", f, err)
	}
	var facts map[string]any
	if err := json.Unmarshal(f.Facts, &facts); err != nil || facts["os"] != "linux" || facts["cpus"] != 4.0 {
		t.Fatalf("facts json = %s, %v", f.Facts, err)
	}
	if f2, err := st.UpdateServerFacts(ctx, web.ID, store.ServerFacts{AgentVersion: "1.2.4"}); err != nil || f2.Hostname != "web-1.example.com" || f2.AgentVersion != "1.2.4" || !bytes.Equal(f2.Facts, f.Facts) {
		t.Fatalf("partial facts = %+v, %v", f2, err)
	}
	if _, err := st.UpdateServerFacts(ctx, web.ID, store.ServerFacts{Facts: json.RawMessage(`[1,2]`)}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("facts not an object: %v", err)
	}

	// Paging: all three servers, newest first, each once.
	var got []store.ID
	var before *store.ID
	for range 5 {
		page, err := st.Servers(ctx, store.ServerFilter{Before: before, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ids(page)...)
		if len(page) < 2 {
			break
		}
		before = &page[len(page)-1].ID
	}
	if !slices.Equal(got, []store.ID{stg.ID, db1.ID, web.ID}) {
		t.Fatalf("paged = %v", got)
	}

	// Status and counts.
	if _, err := st.SetServerStatus(ctx, db1.ID, store.ServerOffline); err != nil {
		t.Fatal(err)
	}
	if _, err := st.SetServerStatus(ctx, db1.ID, store.ServerDisabled); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("disabling through SetServerStatus: %v", err)
	}
	if _, err := st.SetServerStatus(ctx, db1.ID, "zombie"); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("unknown status: %v", err)
	}
	counts, err := st.ServerCounts(ctx)
	if err != nil || !maps.Equal(counts, map[store.ServerStatus]int64{store.ServerPending: 2, store.ServerOffline: 1}) {
		t.Fatalf("counts = %v, %v", counts, err)
	}
	if off, _ := st.Servers(ctx, store.ServerFilter{Status: store.ServerOffline}); !slices.Equal(ids(off), []store.ID{db1.ID}) {
		t.Fatalf("offline = %v", ids(off))
	}

	// Delete: gone once; refused while an app lives on it.
	if err := st.DeleteServer(ctx, stg.ID); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteServer(ctx, stg.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO apps (id, server_id, name, repository_url, deploy_path) VALUES ($1, $2, 'shop', 'https://example.com/shop.git', '/srv/berth/shop')`, rawID(store.NewID()), rawID(db1.ID)); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteServer(ctx, db1.ID); !errors.Is(err, store.ErrReferenced) {
		t.Fatalf("delete with an app: %v", err)
	}
}

func TestServerLiveness(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, st := keyedStore(t)
	a, b, c := mkServer(t, st, "a"), mkServer(t, st, "b"), mkServer(t, st, "c")
	ip := netip.MustParseAddr("10.0.0.5")

	seen, prev, err := st.MarkServerSeen(ctx, a.ID, &ip)
	if err != nil || prev != store.ServerPending || seen.Status != store.ServerOnline || seen.LastSeenAt == nil || *seen.IPAddress != ip {
		t.Fatalf("first heartbeat = %+v, %q, %v", seen, prev, err)
	}
	if _, prev, err := st.MarkServerSeen(ctx, a.ID, nil); err != nil || prev != store.ServerOnline {
		t.Fatalf("second heartbeat: %q, %v", prev, err)
	}
	if s, _ := st.Server(ctx, a.ID); *s.IPAddress != ip {
		t.Fatalf("a nil address cleared the stored one: %v", s.IPAddress)
	}
	if _, _, err := st.MarkServerSeen(ctx, store.NewID(), nil); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown server: %v", err)
	}
	for _, s := range []store.Server{b, c} {
		if _, _, err := st.MarkServerSeen(ctx, s.ID, nil); err != nil {
			t.Fatal(err)
		}
	}
	// a and b fall silent; c keeps beating.
	if _, err := db.Pool.Exec(ctx, `UPDATE servers SET last_seen_at = now() - interval '10 minutes' WHERE id = ANY($1)`, []any{rawID(a.ID), rawID(b.ID)}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE servers SET last_seen_at = now() - interval '20 minutes' WHERE id = $1`, rawID(b.ID)); err != nil {
		t.Fatal(err)
	}
	cutoff := time.Now().Add(-5 * time.Minute)
	stale, err := st.StaleServers(ctx, cutoff)
	if err != nil || len(stale) != 2 || stale[0].ID != b.ID || stale[1].ID != a.ID {
		t.Fatalf("stale = %+v, %v", stale, err)
	}
	marked, err := st.MarkStaleServersOffline(ctx, cutoff)
	if err != nil || len(marked) != 2 {
		t.Fatalf("marked = %+v, %v", marked, err)
	}
	for _, m := range marked {
		if m.Status != store.ServerOffline || (m.ID != a.ID && m.ID != b.ID) {
			t.Fatalf("marked %+v", m)
		}
	}
	if again, _ := st.MarkStaleServersOffline(ctx, cutoff); len(again) != 0 {
		t.Fatalf("marked twice: %+v", again)
	}
	if s, _ := st.Server(ctx, c.ID); s.Status != store.ServerOnline {
		t.Fatalf("live server marked %s", s.Status)
	}
	if _, prev, _ := st.MarkServerSeen(ctx, a.ID, nil); prev != store.ServerOffline {
		t.Fatalf("back online from %q", prev)
	}

	// Disabled: heartbeats and status changes do not touch it; enable brings
	// it back offline, or pending if it never enrolled.
	d, err := st.DisableServer(ctx, a.ID)
	if err != nil || d.Status != store.ServerDisabled || d.DisabledAt == nil {
		t.Fatalf("disable = %+v, %v", d, err)
	}
	if d2, _ := st.DisableServer(ctx, a.ID); !d2.DisabledAt.Equal(*d.DisabledAt) {
		t.Fatal("disabling twice moved disabled_at")
	}
	if _, _, err := st.MarkServerSeen(ctx, a.ID, nil); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("heartbeat of a disabled server: %v", err)
	}
	if _, err := st.SetServerStatus(ctx, a.ID, store.ServerOnline); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("status of a disabled server: %v", err)
	}
	if s, _ := st.Server(ctx, a.ID); s.Status != store.ServerDisabled {
		t.Fatalf("disabled server is %s", s.Status)
	}
	if e, err := st.EnableServer(ctx, a.ID); err != nil || e.Status != store.ServerPending || e.DisabledAt != nil {
		t.Fatalf("enable never-enrolled = %+v, %v", e, err)
	}
	if _, err := st.EnableServer(ctx, a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("enable twice: %v", err)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE servers SET enrolled_at = now() WHERE id = $1`, rawID(b.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.DisableServer(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	if e, err := st.EnableServer(ctx, b.ID); err != nil || e.Status != store.ServerOffline {
		t.Fatalf("enable enrolled = %+v, %v", e, err)
	}
	if _, err := st.DisableServer(ctx, store.NewID()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("disable unknown: %v", err)
	}
}

func TestServerJoinToken(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, st := keyedStore(t)
	exp := time.Now().Add(time.Hour)
	s, err := st.CreateServer(ctx, store.CreateServerParams{Name: "web", JoinTokenHash: hash32(1), JoinTokenExpiresAt: &exp})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.ConsumeServerJoinToken(ctx, hash32(9)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown token: %v", err)
	}

	// Many enrolments at once with one token: exactly one gets it.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := st.ConsumeServerJoinToken(ctx, hash32(1))
			switch {
			case err == nil:
				if got.ID != s.ID || got.EnrolledAt == nil || got.HasJoinToken || got.JoinTokenExpiresAt != nil {
					t.Errorf("consumed = %+v", got)
				}
				mu.Lock()
				wins++
				mu.Unlock()
			case !errors.Is(err, store.ErrNotFound):
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("join token used %d times", wins)
	}
	if _, err := st.ConsumeServerJoinToken(ctx, hash32(1)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("reused token: %v", err)
	}

	// Re-enrolment: a new token into the same row.
	r, err := st.SetServerJoinToken(ctx, s.ID, hash32(2), exp)
	if err != nil || !r.HasJoinToken {
		t.Fatalf("reissue = %+v, %v", r, err)
	}
	if _, err := st.SetServerJoinToken(ctx, s.ID, []byte("short"), exp); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("short hash: %v", err)
	}
	if _, err := st.SetServerJoinToken(ctx, store.NewID(), hash32(3), exp); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown server: %v", err)
	}
	// Expired: refused, and stays unused.
	if _, err := db.Pool.Exec(ctx, `UPDATE servers SET join_token_expires_at = now() - interval '1 second' WHERE id = $1`, rawID(s.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ConsumeServerJoinToken(ctx, hash32(2)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("expired token: %v", err)
	}
	// Disabled: refused even with a live token.
	if _, err := st.SetServerJoinToken(ctx, s.ID, hash32(4), exp); err != nil {
		t.Fatal(err)
	}
	if _, err := st.DisableServer(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ConsumeServerJoinToken(ctx, hash32(4)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("token of a disabled server: %v", err)
	}
	if _, err := st.EnableServer(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if got, err := st.ConsumeServerJoinToken(ctx, hash32(4)); err != nil || got.ID != s.ID {
		t.Fatalf("after enable = %+v, %v", got, err)
	}
}

func TestServerSSHKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, st := keyedStore(t)
	a, b := mkServer(t, st, "a"), mkServer(t, st, "b")
	key := []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n")

	if _, err := st.ServerSSHKey(ctx, a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("no key yet: %v", err)
	}
	if err := st.SetServerSSHKey(ctx, a.ID, key); err != nil {
		t.Fatal(err)
	}
	if got, err := st.ServerSSHKey(ctx, a.ID); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("key = %q, %v", got, err)
	}
	if s, _ := st.Server(ctx, a.ID); !s.HasSSHKey {
		t.Fatal("HasSSHKey false after set")
	}
	var raw []byte
	if err := db.Pool.QueryRow(ctx, `SELECT ssh_private_key FROM servers WHERE id = $1`, rawID(a.ID)).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("OPENSSH")) || bytes.Contains(raw, []byte("b3BlbnNzaC1rZXktdjEAAAAA")) {
		t.Fatalf("stored value reveals the key: %q", raw)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE servers SET ssh_private_key = $1 WHERE id = $2`, raw, rawID(b.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ServerSSHKey(ctx, b.ID); !errors.Is(err, secrets.ErrCorrupt) {
		t.Fatalf("moved key opened: %v", err)
	}
	if err := st.SetServerSSHKey(ctx, a.ID, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ServerSSHKey(ctx, a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("cleared key: %v", err)
	}
	if s, _ := st.Server(ctx, a.ID); s.HasSSHKey {
		t.Fatal("HasSSHKey true after clear")
	}
	if err := st.SetServerSSHKey(ctx, store.NewID(), key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown server: %v", err)
	}
}

// A hello sets the facts and marks the server online in one statement,
// reporting the status before; a disabled server is not found and keeps
// its facts.
func TestServerHello(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, st := keyedStore(t)
	a := mkServer(t, st, "hello")
	ip := netip.MustParseAddr("192.0.2.7")
	srv, prev, err := st.ServerHello(ctx, a.ID, store.ServerFacts{Facts: json.RawMessage(`{"os":"linux"}`), Hostname: "h1", AgentVersion: "1.0.0"}, &ip)
	if err != nil || prev != store.ServerPending || srv.Status != store.ServerOnline || srv.Hostname != "h1" || srv.AgentVersion != "1.0.0" ||
		srv.LastSeenAt == nil || srv.IPAddress == nil || *srv.IPAddress != ip {
		t.Fatalf("first hello: %+v, %s, %v", srv, prev, err)
	}
	// Zero fields keep what is there; the previous status is reported.
	srv, prev, err = st.ServerHello(ctx, a.ID, store.ServerFacts{AgentVersion: "1.0.1"}, nil)
	if err != nil || prev != store.ServerOnline || srv.Hostname != "h1" || srv.AgentVersion != "1.0.1" || string(srv.Facts) != `{"os": "linux"}` || *srv.IPAddress != ip {
		t.Fatalf("second hello: %+v (facts %s), %s, %v", srv, srv.Facts, prev, err)
	}
	if _, _, err := st.ServerHello(ctx, a.ID, store.ServerFacts{Facts: json.RawMessage(`[1]`)}, nil); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("facts not an object: %v", err)
	}
	if _, _, err := st.ServerHello(ctx, store.NewID(), store.ServerFacts{}, nil); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown server: %v", err)
	}
	if _, err := st.DisableServer(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.ServerHello(ctx, a.ID, store.ServerFacts{Hostname: "h2"}, nil); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("disabled server: %v", err)
	}
	if got, err := st.Server(ctx, a.ID); err != nil || got.Hostname != "h1" || got.Status != store.ServerDisabled {
		t.Fatalf("disabled server changed: %+v, %v", got, err)
	}
}
