package store_test

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/store"
)

func TestSecurityEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, st := keyedStore(t)
	u := mkUser(t, st, "ops@example.com")
	srv := mkServer(t, st, "web")
	ip1, ip2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")

	ev := func(p store.CreateSecurityEventParams) store.SecurityEvent {
		t.Helper()
		e, err := st.CreateSecurityEvent(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	var all []store.ID
	first := ev(store.CreateSecurityEventParams{Type: "login.failed_burst", UserID: &u.ID, Actor: "ops@example.com", IPAddress: &ip1, UserAgent: "curl", Details: map[string]any{"reason": "bad_password", "attempt": 3}})
	if first.Severity != store.SeverityInfo || first.Details["reason"] != "bad_password" || first.Details["attempt"] != 3.0 || first.UserAgent != "curl" || *first.UserID != u.ID {
		t.Fatalf("created = %+v", first)
	}
	all = append(all, first.ID)
	all = append(all, ev(store.CreateSecurityEventParams{Type: "login.failed_burst", UserID: &u.ID, IPAddress: &ip1}).ID)
	all = append(all, ev(store.CreateSecurityEventParams{Type: "login.throttled", Severity: store.SeverityWarning, UserID: &u.ID, IPAddress: &ip1}).ID)
	all = append(all, ev(store.CreateSecurityEventParams{Type: "agent.connection_refused", Severity: store.SeverityWarning, ServerID: &srv.ID, Actor: "agent:web", IPAddress: &ip2}).ID)
	all = append(all, ev(store.CreateSecurityEventParams{Type: "server.removed", Severity: store.SeverityCritical, UserID: &u.ID, ServerID: &srv.ID}).ID)
	noDetails := ev(store.CreateSecurityEventParams{Type: "agent.enrolled", Actor: "system"})
	all = append(all, noDetails.ID)
	if noDetails.Details == nil || len(noDetails.Details) != 0 {
		t.Fatalf("empty details = %v", noDetails.Details)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE security_events SET created_at = now() - interval '2 days' WHERE id = $1`, rawID(first.ID)); err != nil {
		t.Fatal(err)
	}

	for name, c := range map[string]struct {
		p    store.CreateSecurityEventParams
		want error
	}{
		"bad type":       {store.CreateSecurityEventParams{Type: "Login Failed"}, store.ErrInvalid},
		"empty type":     {store.CreateSecurityEventParams{}, store.ErrInvalid},
		"bad severity":   {store.CreateSecurityEventParams{Type: "token.created", Severity: "fatal"}, store.ErrInvalid},
		"unknown user":   {store.CreateSecurityEventParams{Type: "token.created", UserID: refTo(store.NewID())}, store.ErrMissingParent},
		"unknown server": {store.CreateSecurityEventParams{Type: "token.created", ServerID: refTo(store.NewID())}, store.ErrMissingParent},
	} {
		if _, err := st.CreateSecurityEvent(ctx, c.p); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}

	var got []store.ID
	var before *store.ID
	for range 10 {
		page, err := st.SecurityEvents(ctx, store.SecurityEventFilter{Before: before, Limit: 4})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page {
			got = append(got, e.ID)
		}
		if len(page) < 4 {
			break
		}
		before = &page[len(page)-1].ID
	}
	want := slices.Clone(all)
	slices.Reverse(want)
	if !slices.Equal(got, want) {
		t.Fatalf("paged = %v, want %v", got, want)
	}

	day := refTo(time.Now().Add(-24 * time.Hour))
	for name, c := range map[string]struct {
		f    store.SecurityEventFilter
		want []store.ID
	}{
		"type":           {store.SecurityEventFilter{Type: "login.failed_burst"}, []store.ID{all[1], all[0]}},
		"type, since":    {store.SecurityEventFilter{Type: "login.failed_burst", Since: day}, []store.ID{all[1]}},
		"severity":       {store.SecurityEventFilter{Severity: store.SeverityWarning}, []store.ID{all[3], all[2]}},
		"user":           {store.SecurityEventFilter{UserID: &u.ID}, []store.ID{all[4], all[2], all[1], all[0]}},
		"server":         {store.SecurityEventFilter{ServerID: &srv.ID}, []store.ID{all[4], all[3]}},
		"ip":             {store.SecurityEventFilter{IP: &ip2}, []store.ID{all[3]}},
		"user and sev":   {store.SecurityEventFilter{UserID: &u.ID, Severity: store.SeverityCritical}, []store.ID{all[4]}},
		"nothing passes": {store.SecurityEventFilter{Type: "login.failed_burst", ServerID: &srv.ID}, []store.ID{}},
	} {
		list, err := st.SecurityEvents(ctx, c.f)
		ids := []store.ID{}
		for _, e := range list {
			ids = append(ids, e.ID)
		}
		if err != nil || !slices.Equal(ids, c.want) {
			t.Errorf("%s = %v, %v; want %v", name, ids, err, c.want)
		}
		if c.f.Since == nil && c.f.Before == nil {
			n, err := st.CountSecurityEvents(ctx, c.f)
			if err != nil || n != int64(len(c.want)) {
				t.Errorf("count %s = %d, %v; want %d", name, n, err, len(c.want))
			}
		}
	}
	if n, err := st.CountSecurityEvents(ctx, store.SecurityEventFilter{Type: "login.failed_burst", IP: &ip1, Since: day}); err != nil || n != 1 {
		t.Fatalf("burst count = %d, %v", n, err)
	}

	// The log outlives users and servers.
	if err := st.DeleteUser(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteServer(ctx, srv.ID); err != nil {
		t.Fatal(err)
	}
	list, err := st.SecurityEvents(ctx, store.SecurityEventFilter{Type: "server.removed"})
	if err != nil || len(list) != 1 || list[0].UserID != nil || list[0].ServerID != nil || list[0].Severity != store.SeverityCritical {
		t.Fatalf("after deletes = %+v, %v", list, err)
	}
}

// A kind missing from the one list (audit/kind) is refused while tests
// run, so every emitter's tests check the names it writes.
func TestUnlistedEventKindRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, st := keyedStore(t)
	if _, err := st.CreateSecurityEvent(ctx, store.CreateSecurityEventParams{Type: "token_created"}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("unlisted security event kind: %v", err)
	}
	if _, err := st.CreateActivity(ctx, store.CreateActivityParams{ActorType: store.ActorSystem, Actor: "s", Action: "api_token.create"}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("unlisted activity kind: %v", err)
	}
	if _, err := st.CreateSecurityEvent(ctx, store.CreateSecurityEventParams{Type: kind.TokenCreated}); err != nil {
		t.Fatalf("listed kind: %v", err)
	}
}
