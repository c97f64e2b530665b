package accounts_test

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/berthhq/berth/controller/internal/accounts"
	"github.com/berthhq/berth/controller/internal/store"
)

const newPW = "a-brand-new-long-passphrase"

func TestChangePassword(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.secret(newPW)
	e.user(store.RoleOperator, "ada@example.com", adaPW)
	sess, tok := e.login("ada@example.com", adaPW, meta(ipA, "laptop"))
	_, otherTok := e.login("ada@example.com", adaPW, meta(ipB, "phone"))
	a := sess.Actor(meta(ipA, "laptop"))

	wantErr(t, "wrong current", e.svc.ChangePassword(e.ctx, a, "not-my-password-at-all", newPW), accounts.ErrWrongPassword)
	wantErr(t, "too short", e.svc.ChangePassword(e.ctx, a, adaPW, "short"), accounts.ErrWeakPassword)
	wantErr(t, "common", e.svc.ChangePassword(e.ctx, a, adaPW, "111111111111"), accounts.ErrWeakPassword)
	must(t, e.svc.ChangePassword(e.ctx, a, adaPW, newPW))

	if _, err := e.svc.Authenticate(e.ctx, tok, meta(ipA, "")); err != nil {
		t.Errorf("current session revoked: %v", err)
	}
	_, err := e.svc.Authenticate(e.ctx, otherTok, meta(ipB, ""))
	wantErr(t, "other session", err, accounts.ErrSessionInvalid)
	_, err = e.svc.Login(e.ctx, "ada@example.com", adaPW, meta(ipA, ""))
	wantErr(t, "old password", err, accounts.ErrInvalidCredentials)
	e.login("ada@example.com", newPW, meta(ipA, ""))
	if ev := e.events("password.changed"); len(ev) != 1 || ev[0].Details["sessions_revoked"] != float64(1) {
		t.Errorf("password.changed events = %+v", ev)
	}
	if act := e.activities("password.changed"); len(act) != 1 || act[0].Actor != "ada@example.com" {
		t.Errorf("activities = %+v", act)
	}
}

func TestPasswordReset(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.secret(newPW)
	ada := e.user(store.RoleAdmin, "ada@example.com", adaPW)
	_, tok := e.login("ada@example.com", adaPW, meta(ipA, ""))

	// Unknown and known addresses get the same answer; only one mail goes out.
	must(t, e.svc.RequestPasswordReset(e.ctx, "nobody@example.com", meta(ipB, "")))
	must(t, e.svc.RequestPasswordReset(e.ctx, "not an address", meta(ipB, "")))
	must(t, e.svc.RequestPasswordReset(e.ctx, "ADA@example.com", meta(ipB, "")))
	link := e.mailedToken("ada@example.com", "reset")
	e.svc.Wait()
	if msgs := e.smtp.Messages(); len(msgs) != 1 {
		t.Fatalf("%d mails sent, want 1 (none for unknown addresses)", len(msgs))
	}
	if ev := e.events("password.reset_requested"); len(ev) != 1 {
		t.Errorf("password_reset_requested events = %+v", ev)
	}

	wantErr(t, "garbage link", e.svc.ResetPassword(e.ctx, "nonsense", newPW, meta(ipB, "")), accounts.ErrLinkInvalid)
	// A refused password does not spend the link.
	wantErr(t, "weak", e.svc.ResetPassword(e.ctx, link, "short", meta(ipB, "")), accounts.ErrWeakPassword)
	must(t, e.svc.ResetPassword(e.ctx, link, newPW, meta(ipB, "")))
	wantErr(t, "reused link", e.svc.ResetPassword(e.ctx, link, newPW, meta(ipB, "")), accounts.ErrLinkUsed)

	_, err := e.svc.Authenticate(e.ctx, tok, meta(ipA, ""))
	wantErr(t, "session after reset", err, accounts.ErrSessionInvalid)
	e.login("ada@example.com", newPW, meta(ipA, ""))
	if ev := e.events("password.reset"); len(ev) != 1 || ev[0].UserID == nil || *ev[0].UserID != ada.ID {
		t.Errorf("password_reset events = %+v", ev)
	}
	if n := len(e.activities("password.reset")); n != 1 {
		t.Errorf("%d user.password_reset activities", n)
	}

	// Expired links are refused with a clear error.
	must(t, e.svc.RequestPasswordReset(e.ctx, "ada@example.com", meta(ipB, "")))
	old := e.mailedToken("ada@example.com", "reset")
	e.clock.Advance(61 * time.Minute)
	wantErr(t, "expired link", e.svc.ResetPassword(e.ctx, old, adaPW+"!", meta(ipB, "")), accounts.ErrLinkExpired)

	// A newer link voids the older one.
	must(t, e.svc.RequestPasswordReset(e.ctx, "ada@example.com", meta(ipB, "")))
	first := e.mailedToken("ada@example.com", "reset")
	must(t, e.svc.RequestPasswordReset(e.ctx, "ada@example.com", meta(ipB, "")))
	second := e.mailedToken("ada@example.com", "reset")
	wantErr(t, "replaced link", e.svc.ResetPassword(e.ctx, first, adaPW, meta(ipB, "")), accounts.ErrLinkInvalid)
	must(t, e.svc.ResetPassword(e.ctx, second, adaPW, meta(ipB, "")))
}

func TestResetDoesNotBypassTwoFactor(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.secret(newPW)
	e.user(store.RoleAdmin, "ada@example.com", adaPW)
	secret, _ := e.enrol(e.actor("ada@example.com", adaPW))
	must(t, e.svc.RequestPasswordReset(e.ctx, "ada@example.com", meta(ipB, "")))
	must(t, e.svc.ResetPassword(e.ctx, e.mailedToken("ada@example.com", "reset"), newPW, meta(ipB, "")))
	pend := e.pending("ada@example.com", newPW)
	res, err := e.svc.VerifySecondFactor(e.ctx, pend, e.code(secret), meta(ipA, ""))
	must(t, err)
	e.secret(res.Token)
}

// A reset request is answered before anything that depends on whether the
// account exists (the lookup, the link, the mail) happens, so the answer's
// timing cannot tell a registered address from another: with the
// background part held back, both requests have returned and no link
// exists yet; released, the registered one gets its link.
func TestPasswordResetAnswersBeforeTheAccountLookup(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ada := e.user(store.RoleAdmin, "ada@example.com", adaPW)
	release := make(chan struct{})
	started := make(chan struct{}, 2)
	accounts.SetResetHook(e.svc, func() { started <- struct{}{}; <-release })

	must(t, e.svc.RequestPasswordReset(e.ctx, "ada@example.com", meta(ipB, "")))
	must(t, e.svc.RequestPasswordReset(e.ctx, "nobody@example.com", meta(ipB, "")))
	<-started
	<-started
	if n := e.resetTokens(ada.ID); n != 0 {
		t.Fatalf("%d reset links exist before the background part ran", n)
	}
	if ev := e.events("password.reset_requested"); len(ev) != 0 {
		t.Fatalf("password_reset_requested written before the answer: %+v", ev)
	}
	close(release)
	e.svc.Wait()
	if n := e.resetTokens(ada.ID); n != 1 {
		t.Fatalf("%d reset links after the background part, want 1", n)
	}
	e.mailedToken("ada@example.com", "reset")
	if msgs := e.smtp.Messages(); len(msgs) != 1 {
		t.Fatalf("%d mails, want 1", len(msgs))
	}
}

// Reset requests are throttled per account (the email as typed, whether or
// not it is registered, so the throttle tells nothing) and per address.
func TestPasswordResetThrottled(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *accounts.Config) {
		c.ResetThrottle = accounts.ResetThrottle{Window: time.Hour, PerAccount: 3, PerIP: 5}
	})
	e.user(store.RoleAdmin, "ada@example.com", adaPW)
	for _, email := range []string{"ada@example.com", "nobody@example.com"} {
		for i := range 3 {
			// Each from its own address: the account limit holds across them.
			ip := netip.AddrFrom4([4]byte{10, 1, byte(len(email)), byte(i + 1)})
			must(t, e.svc.RequestPasswordReset(e.ctx, email, meta(ip, "")))
		}
		err := e.svc.RequestPasswordReset(e.ctx, strings.ToUpper(email), meta(netip.MustParseAddr("10.9.9.9"), ""))
		var te *accounts.ThrottledError
		if !errors.As(err, &te) || te.Seconds() <= 0 {
			t.Fatalf("%s: 4th request in the window: %v, want throttled", email, err)
		}
	}
	e.svc.Wait()
	if msgs := e.smtp.Messages(); len(msgs) != 3 {
		t.Fatalf("%d mails, want 3 (the throttled request sends none)", len(msgs))
	}

	// Per address: 5 different emails from one address, then the 6th is refused.
	ip := netip.MustParseAddr("10.7.7.7")
	for i := range 5 {
		must(t, e.svc.RequestPasswordReset(e.ctx, fmt.Sprintf("user%d@example.com", i), meta(ip, "")))
	}
	wantErr(t, "6th from one address", e.svc.RequestPasswordReset(e.ctx, "user9@example.com", meta(ip, "")), accounts.ErrThrottled)
	if ev := e.events("password.reset_throttled"); len(ev) != 3 {
		t.Errorf("password_reset_throttled events = %d, want 3", len(ev))
	}

	// The window moves on: an hour later the account may ask again.
	e.clock.Advance(time.Hour + time.Second)
	must(t, e.svc.RequestPasswordReset(e.ctx, "ada@example.com", meta(ip, "")))
	e.svc.Wait()
}

// resetTokens counts the reset links made for a user.
func (e *env) resetTokens(userID store.ID) int {
	e.t.Helper()
	var n int
	if err := e.db.Pool.QueryRow(e.ctx, "SELECT count(*) FROM password_reset_tokens WHERE user_id = $1 AND purpose = 'reset'", pgtype.UUID{Bytes: userID, Valid: true}).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// A burst of parallel requests for one address passes the limit no more
// than requests made one after another: the count and the record are
// taken under the window's lock.
func TestPasswordResetBurstThrottled(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.user(store.RoleAdmin, "ada@example.com", adaPW)
	errs := make(chan error, 12)
	for i := range 12 {
		go func() {
			errs <- e.svc.RequestPasswordReset(e.ctx, "ada@example.com", meta(netip.AddrFrom4([4]byte{10, 3, 0, byte(i + 1)}), ""))
		}()
	}
	accepted := 0
	for range 12 {
		err := <-errs
		switch {
		case err == nil:
			accepted++
		case !errors.Is(err, accounts.ErrThrottled):
			t.Fatal(err)
		}
	}
	e.svc.Wait()
	if accepted != 3 || len(e.smtp.Messages()) != 3 {
		t.Fatalf("%d of 12 parallel requests accepted, %d mails; want 3 and 3", accepted, len(e.smtp.Messages()))
	}
}
