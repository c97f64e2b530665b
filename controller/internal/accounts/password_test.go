package accounts_test

import (
	"testing"
	"time"

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
