package accounts_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/accounts"
	"github.com/berthhq/berth/controller/internal/store"
)

const (
	adaPW = "ada-lovelace-analytical-1843"
	bobPW = "bob-the-builder-can-we-fix-it"
)

func TestLoginOutcomesAreRecorded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ada := e.user(store.RoleAdmin, "ada@example.com", adaPW)
	m := meta(ipA, "Firefox/130")

	res, err := e.svc.Login(e.ctx, " ADA@example.com ", adaPW, m)
	must(t, err)
	e.secret(res.Token)
	if res.TwoFactorRequired || res.Session.Status != store.SessionActive || res.Session.User.ID != ada.ID {
		t.Fatalf("login result = %+v", res)
	}
	if !res.Session.ExpiresAt.Equal(e.clock.Now().Add(12 * time.Hour)) {
		t.Errorf("expires at %v, want 12 h from now", res.Session.ExpiresAt)
	}
	if _, err := e.svc.Authenticate(e.ctx, res.Token, m); err != nil {
		t.Fatalf("authenticate: %v", err)
	}
	if u, _ := e.st.User(e.ctx, ada.ID); u.LastLoginAt == nil || u.LastLoginIP == nil || *u.LastLoginIP != ipA {
		t.Errorf("last login not recorded: %+v", u)
	}

	_, err = e.svc.Login(e.ctx, "ada@example.com", "wrong-password-123", m)
	wantErr(t, "wrong password", err, accounts.ErrInvalidCredentials)
	_, err = e.svc.Login(e.ctx, "nobody@example.com", "wrong-password-123", m)
	wantErr(t, "unknown email", err, accounts.ErrInvalidCredentials)
	if err.Error() != accounts.ErrInvalidCredentials.Error() {
		t.Errorf("unknown email message %q differs from a wrong password's", err)
	}

	got := e.attempts("ada@example.com")
	if len(got) != 2 || got[1].Result != store.LoginSucceeded || got[0].Result != store.LoginFailed || got[0].Reason != "bad_password" {
		t.Fatalf("attempts = %+v", got)
	}
	if got[0].UserAgent != "Firefox/130" || got[0].IPAddress == nil || *got[0].IPAddress != ipA || got[0].UserID == nil {
		t.Errorf("attempt fields = %+v", got[0])
	}
	if a := e.attempts("nobody@example.com"); len(a) != 1 || a[0].Reason != "unknown_email" || a[0].UserID != nil {
		t.Errorf("unknown email attempt = %+v", a)
	}
}

func TestInvitedAndDisabledCannotLogIn(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.user(store.RoleAdmin, "ada@example.com", adaPW)
	admin := e.actor("ada@example.com", adaPW)
	bob := e.user(store.RoleOperator, "bob@example.com", bobPW)
	_, err := e.svc.InviteUser(e.ctx, admin, "carol@example.com", store.RoleViewer)
	must(t, err)
	e.mailedToken("carol@example.com", "invite")

	_, err = e.svc.Login(e.ctx, "carol@example.com", "", meta(ipA, ""))
	wantErr(t, "invited user", err, accounts.ErrInvalidCredentials)

	_, err = e.svc.DisableUser(e.ctx, admin, bob.ID)
	must(t, err)
	_, err = e.svc.Login(e.ctx, "bob@example.com", bobPW, meta(ipA, ""))
	wantErr(t, "disabled user, right password", err, accounts.ErrAccountDisabled)
	_, err = e.svc.Login(e.ctx, "bob@example.com", "wrong-password-123", meta(ipA, ""))
	wantErr(t, "disabled user, wrong password", err, accounts.ErrInvalidCredentials)

	reasons := map[string]bool{}
	for _, email := range []string{"carol@example.com", "bob@example.com"} {
		for _, a := range e.attempts(email) {
			reasons[a.Reason] = true
		}
	}
	if !reasons["user_invited"] || !reasons["user_disabled"] || !reasons["bad_password"] {
		t.Errorf("reasons = %v", reasons)
	}
}

func TestThrottlingGrowsAndRecovers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.user(store.RoleViewer, "ada@example.com", adaPW)
	m := meta(ipA, "")
	fail := func() error {
		_, err := e.svc.Login(e.ctx, "ada@example.com", "wrong-password-123", m)
		return err
	}
	for i := range 5 {
		wantErr(t, "failure "+string(rune('1'+i)), fail(), accounts.ErrInvalidCredentials)
	}
	if n := len(e.events("login.failed_burst")); n != 1 {
		t.Fatalf("%d login_failed_burst events after 5 failures, want 1", n)
	}

	// Now even the right password waits.
	_, err := e.svc.Login(e.ctx, "Ada@Example.com", adaPW, m)
	var te *accounts.ThrottledError
	if !errors.As(err, &te) || !errors.Is(err, accounts.ErrThrottled) {
		t.Fatalf("6th attempt: err = %v, want throttled", err)
	}
	if te.RetryAfter <= 0 || te.RetryAfter > time.Second {
		t.Fatalf("first delay = %v, want (0, 1s]", te.RetryAfter)
	}
	if !strings.HasPrefix(err.Error(), "too many attempts, try again in 1 second") {
		t.Errorf("message = %q", err)
	}
	first := te.RetryAfter

	// After the wait, another failure doubles the delay.
	e.clock.Advance(first)
	wantErr(t, "failure after waiting", fail(), accounts.ErrInvalidCredentials)
	err = fail()
	if !errors.As(err, &te) || te.RetryAfter <= first || te.RetryAfter > 2*time.Second {
		t.Fatalf("second delay: err = %v (%v), want in (%v, 2s]", err, te, first)
	}
	if n := len(e.events("login.failed_burst")); n != 1 {
		t.Errorf("%d login_failed_burst events, want still 1", n)
	}
	evs := e.events("login.throttled")
	if len(evs) != 2 || evs[0].Severity != store.SeverityWarning || evs[0].Details["scope"] != "account" {
		t.Errorf("login_throttled events = %+v", evs)
	}
	throttled := 0
	for _, a := range e.attempts("ada@example.com") {
		if a.Result == store.LoginThrottled {
			throttled++
		}
	}
	if throttled != 2 {
		t.Errorf("%d throttled attempts recorded, want 2", throttled)
	}

	// Waiting it out works with the right password: no permanent lockout.
	e.clock.Advance(te.RetryAfter)
	if _, err := e.svc.Login(e.ctx, "ada@example.com", adaPW, m); err != nil {
		t.Fatalf("after the delay: %v", err)
	}

	// Many more failures are capped at MaxDelay, and everything ages out of
	// the window.
	for range 12 {
		err := fail()
		if errors.As(err, &te) {
			if te.RetryAfter > 15*time.Minute {
				t.Fatalf("delay %v beyond the cap", te.RetryAfter)
			}
			e.clock.Advance(te.RetryAfter)
		}
	}
	e.clock.Advance(16 * time.Minute)
	if _, err := e.svc.Login(e.ctx, "ada@example.com", adaPW, m); err != nil {
		t.Fatalf("after the window: %v", err)
	}
}

func TestThrottlingPerIP(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *accounts.Config) { c.Throttle.IPThreshold = 6 })
	e.user(store.RoleViewer, "ada@example.com", adaPW)
	// Spraying one password over many accounts from one address.
	for i := range 6 {
		_, err := e.svc.Login(e.ctx, "user"+string(rune('a'+i))+"@example.com", "wrong-password-123", meta(ipB, ""))
		wantErr(t, "spray", err, accounts.ErrInvalidCredentials)
	}
	_, err := e.svc.Login(e.ctx, "ada@example.com", adaPW, meta(ipB, ""))
	wantErr(t, "same IP", err, accounts.ErrThrottled)
	// Another address is not affected.
	if _, err := e.svc.Login(e.ctx, "ada@example.com", adaPW, meta(ipA, "")); err != nil {
		t.Fatalf("other IP: %v", err)
	}
	bursts := e.events("login.failed_burst")
	if len(bursts) != 1 || bursts[0].Details["scope"] != "ip" {
		t.Errorf("bursts = %+v", bursts)
	}
	if ev := e.events("login.throttled"); len(ev) != 1 || ev[0].Details["scope"] != "ip" {
		t.Errorf("throttled events = %+v", ev)
	}
}
