package store_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
)

func TestSessions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, st := keyedStore(t)
	u := mkUser(t, st, "Ops@example.com")
	other := mkUser(t, st, "other@example.com")
	ip := netip.MustParseAddr("198.51.100.4")
	exp := time.Now().Add(12 * time.Hour).UTC().Truncate(time.Microsecond)

	s1, err := st.CreateSession(ctx, store.CreateSessionParams{UserID: u.ID, TokenHash: hash32(1), Status: store.SessionPendingTwoFactor, IPAddress: &ip, UserAgent: "Firefox", ExpiresAt: exp})
	if err != nil {
		t.Fatal(err)
	}
	if s1.UserID != u.ID || s1.Status != store.SessionPendingTwoFactor || s1.UserAgent != "Firefox" || *s1.IPAddress != ip || !s1.ExpiresAt.Equal(exp) {
		t.Fatalf("created = %+v", s1)
	}
	s2, err := st.CreateSession(ctx, store.CreateSessionParams{UserID: u.ID, TokenHash: hash32(2), ExpiresAt: exp})
	if err != nil || s2.Status != store.SessionActive || s2.UserAgent != "" || s2.IPAddress != nil {
		t.Fatalf("defaults = %+v, %v", s2, err)
	}
	s3, _ := st.CreateSession(ctx, store.CreateSessionParams{UserID: u.ID, TokenHash: hash32(3), ExpiresAt: exp})
	so, _ := st.CreateSession(ctx, store.CreateSessionParams{UserID: other.ID, TokenHash: hash32(4), ExpiresAt: exp})

	for name, c := range map[string]struct {
		p    store.CreateSessionParams
		want error
	}{
		"same hash":    {store.CreateSessionParams{UserID: u.ID, TokenHash: hash32(1), ExpiresAt: exp}, store.ErrConflict},
		"short hash":   {store.CreateSessionParams{UserID: u.ID, TokenHash: []byte("short"), ExpiresAt: exp}, store.ErrInvalid},
		"no user":      {store.CreateSessionParams{UserID: store.NewID(), TokenHash: hash32(9), ExpiresAt: exp}, store.ErrMissingParent},
		"bad status":   {store.CreateSessionParams{UserID: u.ID, TokenHash: hash32(9), Status: "half", ExpiresAt: exp}, store.ErrInvalid},
		"expired born": {store.CreateSessionParams{UserID: u.ID, TokenHash: hash32(9), ExpiresAt: time.Now().Add(-time.Minute)}, store.ErrInvalid},
	} {
		if _, err := st.CreateSession(ctx, c.p); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}

	got, err := st.SessionByTokenHash(ctx, hash32(1))
	if err != nil || got.ID != s1.ID || got.User.ID != u.ID || got.User.Email != "Ops@example.com" || got.Status != store.SessionPendingTwoFactor {
		t.Fatalf("by hash = %+v, %v", got, err)
	}
	if _, err := st.SessionByTokenHash(ctx, hash32(8)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown hash: %v", err)
	}
	if g, err := st.Session(ctx, s2.ID); err != nil || g.ID != s2.ID {
		t.Fatalf("get = %+v, %v", g, err)
	}

	// Past its absolute expiry a session is not found, and not listed.
	if _, err := db.Pool.Exec(ctx, `UPDATE sessions SET created_at = now() - interval '13 hours', expires_at = now() - interval '1 hour' WHERE id = $1`, rawID(s3.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.SessionByTokenHash(ctx, hash32(3)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("expired session: %v", err)
	}

	// Touch: moves last_seen_at (and the address), at most once a minute.
	if _, err := db.Pool.Exec(ctx, `UPDATE sessions SET last_seen_at = now() - interval '10 minutes' WHERE id = $1`, rawID(s2.ID)); err != nil {
		t.Fatal(err)
	}
	ip2 := netip.MustParseAddr("2001:db8::1")
	if err := st.TouchSession(ctx, s2.ID, &ip2); err != nil {
		t.Fatal(err)
	}
	t2, _ := st.Session(ctx, s2.ID)
	if time.Since(t2.LastSeenAt) > time.Minute || t2.IPAddress == nil || *t2.IPAddress != ip2 {
		t.Fatalf("touched = %v %v", t2.LastSeenAt, t2.IPAddress)
	}
	if err := st.TouchSession(ctx, s2.ID, &ip); err != nil {
		t.Fatal(err)
	}
	if t3, _ := st.Session(ctx, s2.ID); !t3.LastSeenAt.Equal(t2.LastSeenAt) || *t3.IPAddress != ip2 {
		t.Fatalf("a second touch within a minute wrote: %v %v", t3.LastSeenAt, t3.IPAddress)
	}

	// Listing: live sessions of that user only, most recently active first.
	list, err := st.UserSessions(ctx, u.ID)
	if err != nil || len(list) != 2 || list[0].ID != s2.ID || list[1].ID != s1.ID {
		t.Fatalf("list = %+v, %v", list, err)
	}

	// Revoking: only one's own, once.
	if err := st.RevokeSession(ctx, other.ID, s1.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoking another user's session: %v", err)
	}
	if err := st.RevokeSession(ctx, u.ID, s1.ID); err != nil {
		t.Fatal(err)
	}
	if err := st.RevokeSession(ctx, u.ID, s1.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoke twice: %v", err)
	}
	s5, _ := st.CreateSession(ctx, store.CreateSessionParams{UserID: u.ID, TokenHash: hash32(5), ExpiresAt: exp})
	s6, _ := st.CreateSession(ctx, store.CreateSessionParams{UserID: u.ID, TokenHash: hash32(6), ExpiresAt: exp})
	if n, err := st.RevokeUserSessions(ctx, u.ID, &s6.ID); err != nil || n != 3 { // s2, s3 (expired), s5
		t.Fatalf("revoke others = %d, %v", n, err)
	}
	if list, _ := st.UserSessions(ctx, u.ID); len(list) != 1 || list[0].ID != s6.ID {
		t.Fatalf("after revoking others: %+v", list)
	}
	if _, err := st.Session(ctx, s5.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("s5 survived: %v", err)
	}
	if _, err := st.Session(ctx, so.ID); err != nil {
		t.Fatalf("another user's session was revoked: %v", err)
	}
	if ok, err := st.DeleteSessionByTokenHash(ctx, hash32(6)); err != nil || !ok {
		t.Fatalf("logout = %v, %v", ok, err)
	}
	if ok, err := st.DeleteSessionByTokenHash(ctx, hash32(6)); err != nil || ok {
		t.Fatalf("logout twice = %v, %v", ok, err)
	}

	// The sweep: expired or idle too long.
	idle, _ := st.CreateSession(ctx, store.CreateSessionParams{UserID: u.ID, TokenHash: hash32(10), ExpiresAt: exp})
	old, _ := st.CreateSession(ctx, store.CreateSessionParams{UserID: u.ID, TokenHash: hash32(11), ExpiresAt: exp})
	fresh, _ := st.CreateSession(ctx, store.CreateSessionParams{UserID: u.ID, TokenHash: hash32(12), ExpiresAt: exp})
	if _, err := db.Pool.Exec(ctx, `UPDATE sessions SET last_seen_at = now() - interval '2 hours' WHERE id = $1`, rawID(idle.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE sessions SET created_at = now() - interval '13 hours', expires_at = now() - interval '1 second' WHERE id = $1`, rawID(old.ID)); err != nil {
		t.Fatal(err)
	}
	if n, err := st.DeleteExpiredSessions(ctx, time.Now().Add(-30*time.Minute)); err != nil || n != 2 {
		t.Fatalf("sweep = %d, %v", n, err)
	}
	if _, err := st.Session(ctx, fresh.ID); err != nil {
		t.Fatalf("the sweep took a live session: %v", err)
	}

	// A user's sessions go with the user.
	if err := st.DeleteUser(ctx, other.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Session(ctx, so.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("session outlived its user: %v", err)
	}
}
