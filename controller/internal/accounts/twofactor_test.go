package accounts_test

import (
	"bytes"
	"image/png"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/accounts"
	"github.com/berthhq/berth/controller/internal/store"
)

// enrol turns 2FA on for the actor and returns the secret and recovery codes.
func (e *env) enrol(a accounts.Actor) (string, []string) {
	e.t.Helper()
	setup, err := e.svc.BeginTwoFactor(e.ctx, a)
	must(e.t, err)
	e.secret(setup.Secret)
	codes, err := e.svc.ConfirmTwoFactor(e.ctx, a, e.code(setup.Secret))
	must(e.t, err)
	e.secret(codes...)
	// The confirming code's step is used up; later logins need the next.
	e.clock.Advance(30 * time.Second)
	return setup.Secret, codes
}

// pending signs in with the password of a 2FA account.
func (e *env) pending(email, pw string) string {
	e.t.Helper()
	res, err := e.svc.Login(e.ctx, email, pw, meta(ipA, "test"))
	must(e.t, err)
	if !res.TwoFactorRequired || res.Session.Status != store.SessionPendingTwoFactor {
		e.t.Fatalf("login did not ask for the second factor: %+v", res)
	}
	e.secret(res.Token)
	return res.Token
}

func TestTwoFactorEnrolment(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ada := e.user(store.RoleAdmin, "ada@example.com", adaPW)
	a := e.actor("ada@example.com", adaPW)
	_, otherTok := e.login("ada@example.com", adaPW, meta(ipB, "phone"))

	setup, err := e.svc.BeginTwoFactor(e.ctx, a)
	must(t, err)
	e.secret(setup.Secret)
	if !strings.HasPrefix(setup.URL, "otpauth://totp/Berth:ada@example.com?") || !strings.Contains(setup.URL, "secret="+setup.Secret) {
		t.Errorf("url = %q", setup.URL)
	}
	if img, err := png.Decode(bytes.NewReader(setup.QRPNG)); err != nil || img.Bounds().Dx() < 100 {
		t.Errorf("QR code is not a usable PNG: %v", err)
	}
	// Stored encrypted, and not enforced before confirmation.
	var raw []byte
	must(t, e.db.Pool.QueryRow(e.ctx, "SELECT two_factor_secret FROM users WHERE id = $1", ada.ID[:]).Scan(&raw))
	if bytes.Contains(raw, []byte(setup.Secret)) {
		t.Error("TOTP secret stored in plaintext")
	}
	if u, _ := e.st.User(e.ctx, ada.ID); u.TwoFactorEnabled || !u.TwoFactorPending {
		t.Errorf("after begin: enabled=%v pending=%v", u.TwoFactorEnabled, u.TwoFactorPending)
	}
	if res, err := e.svc.Login(e.ctx, "ada@example.com", adaPW, meta(ipA, "")); err != nil || res.TwoFactorRequired {
		t.Fatalf("unconfirmed 2FA was enforced: %+v %v", res, err)
	} else {
		e.secret(res.Token)
	}

	_, err = e.svc.ConfirmTwoFactor(e.ctx, a, "000000")
	wantErr(t, "wrong confirm code", err, accounts.ErrInvalidCode)
	codes, err := e.svc.ConfirmTwoFactor(e.ctx, a, e.code(setup.Secret))
	must(t, err)
	e.secret(codes...)
	if len(codes) != 10 {
		t.Fatalf("%d recovery codes", len(codes))
	}
	seen := map[string]bool{}
	for _, c := range codes {
		if len(c) != 11 || c[5] != '-' || seen[c] {
			t.Errorf("bad or repeated recovery code %q", c)
		}
		seen[c] = true
	}
	if u, _ := e.st.User(e.ctx, ada.ID); !u.TwoFactorEnabled || !u.HasRecoveryCodes {
		t.Errorf("after confirm: %+v", u)
	}
	// Stored hashed inside the encrypted column.
	stored, err := e.st.UserRecoveryCodes(e.ctx, ada.ID)
	must(t, err)
	for _, s := range stored {
		if seen[s] || strings.Contains(s, strings.ReplaceAll(codes[0], "-", "")) {
			t.Error("a recovery code is stored as is")
		}
	}
	// Other sessions die, this one stays.
	if _, err := e.svc.Authenticate(e.ctx, otherTok, meta(ipB, "")); err == nil {
		t.Error("other session survived enabling 2FA")
	}
	if _, err := e.svc.Authenticate(e.ctx, "", meta(ipA, "")); err == nil {
		t.Error("empty token authenticated")
	}
	if n := len(e.events("two_factor.enabled")); n != 1 {
		t.Errorf("%d two_factor_enabled events", n)
	}
	if n := len(e.activities("two_factor.enabled")); n != 1 {
		t.Errorf("%d user.two_factor_enable activities", n)
	}
	_, err = e.svc.BeginTwoFactor(e.ctx, a)
	wantErr(t, "begin while enabled", err, accounts.ErrTwoFactorEnabled)
}

func TestSecondFactorLogin(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.user(store.RoleOperator, "ada@example.com", adaPW)
	secret, codes := e.enrol(e.actor("ada@example.com", adaPW))

	pend := e.pending("ada@example.com", adaPW)
	_, err := e.svc.Authenticate(e.ctx, pend, meta(ipA, ""))
	wantErr(t, "pending session", err, accounts.ErrTwoFactorPending)

	// A code that is certainly wrong: the right one with its last digit changed.
	right := e.code(secret)
	wrong := right[:5] + string('0'+(right[5]-'0'+1)%10)
	_, err = e.svc.VerifySecondFactor(e.ctx, pend, wrong, meta(ipA, ""))
	wantErr(t, "wrong code", err, accounts.ErrInvalidCode)

	code := e.code(secret)
	res, err := e.svc.VerifySecondFactor(e.ctx, pend, code, meta(ipA, "ua"))
	must(t, err)
	e.secret(res.Token)
	if res.Token == pend || res.TwoFactorRequired || res.Session.Status != store.SessionActive {
		t.Fatalf("second step did not rotate to an active session: %+v", res)
	}
	// Session fixation: the pending token is dead, the new one works.
	_, err = e.svc.Authenticate(e.ctx, pend, meta(ipA, ""))
	wantErr(t, "old pending token", err, accounts.ErrSessionInvalid)
	if _, err := e.svc.Authenticate(e.ctx, res.Token, meta(ipA, "")); err != nil {
		t.Fatalf("new session: %v", err)
	}

	// The same code again (same step) is a replay.
	pend = e.pending("ada@example.com", adaPW)
	_, err = e.svc.VerifySecondFactor(e.ctx, pend, code, meta(ipA, ""))
	wantErr(t, "replayed code", err, accounts.ErrCodeReused)
	if ev := e.events("two_factor.code_replayed"); len(ev) != 1 || ev[0].Severity != store.SeverityWarning {
		t.Errorf("totp_replay events = %+v", ev)
	}
	// The used code stays refused while it is within the skew window.
	e.clock.Advance(30 * time.Second)
	if _, err := e.svc.VerifySecondFactor(e.ctx, pend, code, meta(ipA, "")); err == nil {
		t.Fatal("an older code was accepted")
	}
	// The next step's code works (with one step of skew).
	res, err = e.svc.VerifySecondFactor(e.ctx, pend, e.code(secret), meta(ipA, ""))
	must(t, err)
	e.secret(res.Token)

	// Recovery codes: accepted once, whatever the case and dashes.
	pend = e.pending("ada@example.com", adaPW)
	res, err = e.svc.VerifySecondFactor(e.ctx, pend, strings.ToUpper(strings.ReplaceAll(codes[0], "-", " ")), meta(ipA, ""))
	must(t, err)
	e.secret(res.Token)
	if ev := e.events("two_factor.recovery_code_used"); len(ev) != 1 || ev[0].Details["remaining"] != float64(9) {
		t.Errorf("recovery_code_used events = %+v", ev)
	}
	pend = e.pending("ada@example.com", adaPW)
	_, err = e.svc.VerifySecondFactor(e.ctx, pend, codes[0], meta(ipA, ""))
	wantErr(t, "reused recovery code", err, accounts.ErrInvalidCode)

	reasons := map[string]int{}
	for _, a := range e.attempts("ada@example.com") {
		if a.Stage == store.StageTwoFactor {
			reasons[string(a.Result)+":"+a.Reason]++
		}
	}
	if reasons["failed:bad_totp"] < 1 || reasons["failed:totp_replay"] != 2 || reasons["failed:bad_recovery_code"] != 1 || reasons["succeeded:"] != 3 {
		t.Errorf("two-factor attempts = %v", reasons)
	}

	// The pending session has a short life.
	e.clock.Advance(6 * time.Minute)
	_, err = e.svc.VerifySecondFactor(e.ctx, pend, e.code(secret), meta(ipA, ""))
	wantErr(t, "expired pending session", err, accounts.ErrSessionExpired)
	// And an active session's token is not a pending one.
	_, err = e.svc.VerifySecondFactor(e.ctx, res.Token, e.code(secret), meta(ipA, ""))
	wantErr(t, "active token as pending", err, accounts.ErrSessionInvalid)
}

func TestWrongCodesAreThrottled(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.user(store.RoleViewer, "ada@example.com", adaPW)
	secret, _ := e.enrol(e.actor("ada@example.com", adaPW))
	pend := e.pending("ada@example.com", adaPW)
	wrong := "000000"
	if e.code(secret) == wrong {
		wrong = "111111"
	}
	for range 5 {
		_, err := e.svc.VerifySecondFactor(e.ctx, pend, wrong, meta(ipA, ""))
		wantErr(t, "wrong code", err, accounts.ErrInvalidCode)
	}
	_, err := e.svc.VerifySecondFactor(e.ctx, pend, e.code(secret), meta(ipA, ""))
	wantErr(t, "right code while throttled", err, accounts.ErrThrottled)
	// The password step is throttled too: the failures count per account.
	_, err = e.svc.Login(e.ctx, "ada@example.com", adaPW, meta(ipA, ""))
	wantErr(t, "password while throttled", err, accounts.ErrThrottled)
	e.clock.Advance(2 * time.Second)
	res, err := e.svc.VerifySecondFactor(e.ctx, pend, e.code(secret), meta(ipA, ""))
	must(t, err)
	e.secret(res.Token)
}

func TestDisableTwoFactorAndRegenerateCodes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.user(store.RoleAdmin, "ada@example.com", adaPW)
	a := e.actor("ada@example.com", adaPW)
	secret, codes := e.enrol(a)
	// Sign in on a second device (2FA), to see it revoked later.
	pend := e.pending("ada@example.com", adaPW)
	other, err := e.svc.VerifySecondFactor(e.ctx, pend, e.code(secret), meta(ipB, "phone"))
	must(t, err)
	e.secret(other.Token)
	e.clock.Advance(30 * time.Second)

	_, err = e.svc.RegenerateRecoveryCodes(e.ctx, a, "wrong-password-123", e.code(secret))
	wantErr(t, "regenerate, wrong password", err, accounts.ErrWrongPassword)
	_, err = e.svc.RegenerateRecoveryCodes(e.ctx, a, adaPW, "")
	wantErr(t, "regenerate, no code", err, accounts.ErrInvalidCode)
	fresh, err := e.svc.RegenerateRecoveryCodes(e.ctx, a, adaPW, e.code(secret))
	must(t, err)
	e.secret(fresh...)
	if len(fresh) != 10 || fresh[0] == codes[0] {
		t.Fatalf("regenerated codes = %v", fresh)
	}
	if _, err := e.svc.Authenticate(e.ctx, other.Token, meta(ipB, "")); err == nil {
		t.Error("other session survived regenerating codes")
	}
	if n := len(e.events("two_factor.recovery_codes_regenerated")); n != 1 {
		t.Errorf("%d recovery_codes_regenerated events", n)
	}
	// Old codes are dead, new ones work (here as the re-authentication).
	err = e.svc.DisableTwoFactor(e.ctx, a, adaPW, codes[1])
	wantErr(t, "disable with an old recovery code", err, accounts.ErrInvalidCode)
	// A token actor cannot change credentials.
	tokActor := a
	tokActor.TokenID, tokActor.SessionID, tokActor.Scopes = &a.UserID, nil, []store.Scope{store.ScopeAdmin}
	err = e.svc.DisableTwoFactor(e.ctx, tokActor, adaPW, fresh[0])
	wantErr(t, "disable via a token", err, accounts.ErrForbidden)

	must(t, e.svc.DisableTwoFactor(e.ctx, a, adaPW, fresh[0]))
	if ev := e.events("two_factor.disabled"); len(ev) != 1 || ev[0].Severity != store.SeverityWarning {
		t.Errorf("two_factor_disabled events = %+v", ev)
	}
	if n := len(e.activities("two_factor.disabled")); n != 1 {
		t.Errorf("%d user.two_factor_disable activities", n)
	}
	if _, err := e.svc.Authenticate(e.ctx, "", meta(ipA, "")); err == nil {
		t.Error("empty token")
	}
	e.login("ada@example.com", adaPW, meta(ipA, "")) // no second step any more
	err = e.svc.DisableTwoFactor(e.ctx, a, adaPW, "")
	wantErr(t, "disable when off", err, accounts.ErrTwoFactorNotEnabled)
	_, err = e.svc.RegenerateRecoveryCodes(e.ctx, a, adaPW, "")
	wantErr(t, "regenerate when off", err, accounts.ErrTwoFactorNotEnabled)
	_, err = e.svc.ConfirmTwoFactor(e.ctx, a, "123456")
	wantErr(t, "confirm without setup", err, accounts.ErrNoTwoFactorSetup)
}
