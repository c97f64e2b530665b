package accounts_test

import (
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/accounts"
	"github.com/berthhq/berth/controller/internal/store"
)

func TestIdleTimeoutAndTouch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.user(store.RoleViewer, "ada@example.com", adaPW)
	sess, tok := e.login("ada@example.com", adaPW, meta(ipA, "laptop"))

	// Use keeps the session alive past the idle timeout...
	for range 3 {
		e.clock.Advance(20 * time.Minute)
		s, err := e.svc.Authenticate(e.ctx, tok, meta(ipB, "laptop"))
		must(t, err)
		if !s.LastSeenAt.Equal(e.clock.Now()) || s.IP == nil || *s.IP != ipB {
			t.Fatalf("not touched: last seen %v, ip %v", s.LastSeenAt, s.IP)
		}
	}
	// ...but writes at most once per TouchInterval.
	e.clock.Advance(30 * time.Second)
	s, err := e.svc.Authenticate(e.ctx, tok, meta(ipA, ""))
	must(t, err)
	row, err := e.st.Session(e.ctx, sess.ID)
	must(t, err)
	if !row.LastSeenAt.Equal(e.clock.Now().Add(-30*time.Second)) || !s.LastSeenAt.Equal(row.LastSeenAt) {
		t.Errorf("touched again within a minute: %v", row.LastSeenAt)
	}
	// Idle for longer than 30 minutes: gone for good.
	e.clock.Advance(31 * time.Minute)
	_, err = e.svc.Authenticate(e.ctx, tok, meta(ipA, ""))
	wantErr(t, "idle session", err, accounts.ErrSessionExpired)
	_, err = e.svc.Authenticate(e.ctx, tok, meta(ipA, ""))
	wantErr(t, "idle session again", err, accounts.ErrSessionInvalid)
}

func TestAbsoluteTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *accounts.Config) { c.AbsoluteTimeout = 2 * time.Hour })
	e.user(store.RoleViewer, "ada@example.com", adaPW)
	_, tok := e.login("ada@example.com", adaPW, meta(ipA, ""))
	for range 5 { // 100 minutes of steady use
		e.clock.Advance(20 * time.Minute)
		_, err := e.svc.Authenticate(e.ctx, tok, meta(ipA, ""))
		must(t, err)
	}
	e.clock.Advance(21 * time.Minute)
	_, err := e.svc.Authenticate(e.ctx, tok, meta(ipA, ""))
	wantErr(t, "past the absolute lifetime", err, accounts.ErrSessionExpired)
}

func TestListRevokeAndLogout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.user(store.RoleViewer, "ada@example.com", adaPW)
	e.user(store.RoleViewer, "bob@example.com", bobPW)
	laptop, laptopTok := e.login("ada@example.com", adaPW, meta(ipA, "Firefox on Linux"))
	phone, phoneTok := e.login("ada@example.com", adaPW, meta(ipB, "Safari on iOS"))
	bob, bobTok := e.login("bob@example.com", bobPW, meta(ipA, ""))
	a := laptop.Actor(meta(ipA, "Firefox on Linux"))

	list, err := e.svc.ListSessions(e.ctx, a)
	must(t, err)
	if len(list) != 2 {
		t.Fatalf("%d sessions listed, want 2", len(list))
	}
	byID := map[store.ID]accounts.SessionInfo{}
	for _, s := range list {
		byID[s.ID] = s
	}
	if !byID[laptop.ID].Current || byID[phone.ID].Current {
		t.Errorf("current marker wrong: %+v", list)
	}
	if p := byID[phone.ID]; p.UserAgent != "Safari on iOS" || p.IP == nil || *p.IP != ipB || p.LastSeenAt.IsZero() {
		t.Errorf("phone session = %+v", p)
	}

	// Someone else's session is not found.
	wantErr(t, "revoke another user's session", e.svc.RevokeSession(e.ctx, a, bob.ID), accounts.ErrNotFound)
	if _, err := e.svc.Authenticate(e.ctx, bobTok, meta(ipA, "")); err != nil {
		t.Fatalf("bob's session was hurt: %v", err)
	}

	must(t, e.svc.RevokeSession(e.ctx, a, phone.ID))
	_, err = e.svc.Authenticate(e.ctx, phoneTok, meta(ipB, ""))
	wantErr(t, "revoked session", err, accounts.ErrSessionInvalid)
	if ev := e.events("session.revoked"); len(ev) != 1 || ev[0].Details["session_id"] != phone.ID.String() {
		t.Errorf("session_revoked events = %+v", ev)
	}
	if n := len(e.activities("session.revoked")); n != 1 {
		t.Errorf("%d session.revoke activities", n)
	}

	must(t, e.svc.Logout(e.ctx, laptopTok, meta(ipA, "")))
	_, err = e.svc.Authenticate(e.ctx, laptopTok, meta(ipA, ""))
	wantErr(t, "after logout", err, accounts.ErrSessionInvalid)
	must(t, e.svc.Logout(e.ctx, laptopTok, meta(ipA, ""))) // twice is fine
	if n := len(e.activities("user.logged_out")); n != 1 {
		t.Errorf("%d user.logout activities", n)
	}
	if p := laptop.Principal(); !p.Allows(store.ScopeRead) || p.Allows(store.ScopeWrite) || p.TokenID != nil {
		t.Errorf("viewer session principal = %+v", p)
	}
}
