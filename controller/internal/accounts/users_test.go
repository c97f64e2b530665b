package accounts_test

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/accounts"
	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/mail"
	"github.com/berthhq/berth/controller/internal/store"
)

func TestCreateUserIsAdminOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.user(store.RoleAdmin, "ada@example.com", adaPW)
	e.user(store.RoleOperator, "bob@example.com", bobPW)
	admin := e.actor("ada@example.com", adaPW)
	op := e.actor("bob@example.com", bobPW)
	carolPW := "carol-has-a-long-password"
	e.secret(carolPW)

	_, err := e.svc.CreateUser(e.ctx, op, store.RoleViewer, "carol@example.com", carolPW)
	wantErr(t, "operator creates", err, accounts.ErrForbidden)
	_, err = e.svc.CreateUser(e.ctx, accounts.Actor{}, store.RoleViewer, "carol@example.com", carolPW)
	wantErr(t, "nobody creates", err, accounts.ErrUnauthenticated)
	_, err = e.svc.CreateUser(e.ctx, admin, store.RoleViewer, "carol", carolPW)
	wantErr(t, "bad email", err, accounts.ErrInvalidInput)
	_, err = e.svc.CreateUser(e.ctx, admin, "root", "carol@example.com", carolPW)
	wantErr(t, "bad role", err, accounts.ErrInvalidInput)
	_, err = e.svc.CreateUser(e.ctx, admin, store.RoleViewer, "carol@example.com", "short")
	wantErr(t, "weak password", err, accounts.ErrWeakPassword)
	u, err := e.svc.CreateUser(e.ctx, admin, store.RoleViewer, "carol@example.com", carolPW)
	must(t, err)
	if u.Status != store.UserActive || u.Role != store.RoleViewer {
		t.Errorf("created = %+v", u)
	}
	_, err = e.svc.CreateUser(e.ctx, admin, store.RoleViewer, "CAROL@example.com", carolPW)
	wantErr(t, "duplicate", err, accounts.ErrEmailTaken)
	e.login("carol@example.com", carolPW, meta(ipA, ""))
	if ev := e.events("user.created"); len(ev) != 1 {
		t.Errorf("user_created events = %+v", ev)
	}
	if act := e.activities("user.created"); len(act) != 1 || act[0].SubjectID == nil || *act[0].SubjectID != u.ID {
		t.Errorf("user.create activities = %+v", act)
	}

	users, err := e.svc.ListUsers(e.ctx, admin)
	must(t, err)
	if len(users) != 3 {
		t.Errorf("%d users listed", len(users))
	}
	_, err = e.svc.ListUsers(e.ctx, op)
	wantErr(t, "operator lists", err, accounts.ErrForbidden)
	if _, err := e.svc.User(e.ctx, op, op.UserID); err != nil {
		t.Errorf("operator reads self: %v", err)
	}
	_, err = e.svc.User(e.ctx, op, u.ID)
	wantErr(t, "operator reads another", err, accounts.ErrNotFound)
}

func TestInvitation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.user(store.RoleAdmin, "ada@example.com", adaPW)
	admin := e.actor("ada@example.com", adaPW)
	carolPW := "carol-has-a-long-password"
	e.secret(carolPW)

	inv, err := e.svc.InviteUser(e.ctx, admin, "carol@example.com", store.RoleOperator)
	must(t, err)
	u := inv.User
	if u.Status != store.UserInvited || !inv.Mailed || inv.Link != "" {
		t.Fatalf("invited user = %+v", inv)
	}
	link := e.mailedToken("carol@example.com", "invite")
	_, err = e.svc.InviteUser(e.ctx, admin, "carol@example.com", store.RoleOperator)
	wantErr(t, "invite twice", err, accounts.ErrEmailTaken)

	_, err = e.svc.AcceptInvite(e.ctx, link, "short", meta(ipB, ""))
	wantErr(t, "weak", err, accounts.ErrWeakPassword)
	got, err := e.svc.AcceptInvite(e.ctx, link, carolPW, meta(ipB, ""))
	must(t, err)
	if got.Status != store.UserActive || got.ID != u.ID {
		t.Fatalf("accepted = %+v", got)
	}
	_, err = e.svc.AcceptInvite(e.ctx, link, carolPW, meta(ipB, ""))
	wantErr(t, "reused invite", err, accounts.ErrLinkUsed)
	e.login("carol@example.com", carolPW, meta(ipB, ""))
	for _, typ := range []string{"user.invited", "user.invite_accepted"} {
		if n := len(e.events(typ)); n != 1 {
			t.Errorf("%d %s events", n, typ)
		}
	}
	for _, action := range []string{"user.invited", "user.invite_accepted"} {
		if n := len(e.activities(action)); n != 1 {
			t.Errorf("%d %s activities", n, action)
		}
	}

	// Invitations expire; a resent one works.
	daveInv, err := e.svc.InviteUser(e.ctx, admin, "dave@example.com", store.RoleViewer)
	must(t, err)
	dave := daveInv.User
	old := e.mailedToken("dave@example.com", "invite")
	e.clock.Advance(73 * time.Hour)
	_, err = e.svc.AcceptInvite(e.ctx, old, carolPW, meta(ipB, ""))
	wantErr(t, "expired invite", err, accounts.ErrLinkExpired)
	admin = e.actor("ada@example.com", adaPW) // the old session timed out meanwhile
	_, err = e.svc.ResendInvite(e.ctx, admin, dave.ID)
	must(t, err)
	if _, err := e.svc.AcceptInvite(e.ctx, e.mailedToken("dave@example.com", "invite"), carolPW, meta(ipB, "")); err != nil {
		t.Fatalf("resent invite: %v", err)
	}
	_, err = e.svc.ResendInvite(e.ctx, admin, dave.ID)
	wantErr(t, "resend to an active user", err, accounts.ErrInvalidInput)
}

// Without a mail server an invitation is not reported as sent: nothing is
// mailed, and the single-use link comes back for the admin to hand over
// (and is never logged).
func TestInvitationWithoutMailServer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.user(store.RoleAdmin, "ada@example.com", adaPW)
	svc, err := accounts.New(e.st, mail.Log{Logger: slog.New(slog.NewTextHandler(e.logs, nil))}, accounts.Config{PublicURL: publicURL, Now: e.clock.Now,
		Logger: slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	must(t, err)
	res, err := svc.Login(e.ctx, "ada@example.com", adaPW, meta(ipA, ""))
	must(t, err)
	e.secret(res.Token)
	sess, err := svc.Authenticate(e.ctx, res.Token, meta(ipA, ""))
	must(t, err)
	inv, err := svc.InviteUser(e.ctx, sess.Actor(meta(ipA, "")), "erin@example.com", store.RoleViewer)
	must(t, err)
	if inv.Mailed || !strings.HasPrefix(inv.Link, publicURL+"/invite/") {
		t.Fatalf("invitation without a mail server: mailed=%v link=%q", inv.Mailed, inv.Link)
	}
	tok := strings.TrimPrefix(inv.Link, publicURL+"/invite/")
	e.secret(tok)
	if n := len(e.smtp.Messages()); n != 0 {
		t.Fatalf("%d mails went out", n)
	}
	erinPW := "erin-chose-a-long-password"
	e.secret(erinPW)
	got, err := svc.AcceptInvite(e.ctx, tok, erinPW, meta(ipB, ""))
	must(t, err)
	if got.ID != inv.User.ID || got.Status != store.UserActive {
		t.Fatalf("accepted = %+v", got)
	}
}

func TestDisableUserKillsAccess(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.user(store.RoleAdmin, "ada@example.com", adaPW)
	bob := e.user(store.RoleOperator, "bob@example.com", bobPW)
	admin := e.actor("ada@example.com", adaPW)
	bobSess, bobTok := e.login("bob@example.com", bobPW, meta(ipA, "one"))
	_, bobTok2 := e.login("bob@example.com", bobPW, meta(ipB, "two"))
	bobActor := bobSess.Actor(meta(ipA, ""))
	var tokenIDs []store.ID
	for _, name := range []string{"ci", "cli"} {
		tok, rec, err := e.svc.CreateToken(e.ctx, bobActor, name, []store.Scope{store.ScopeDeploy}, nil)
		must(t, err)
		e.secret(tok)
		tokenIDs = append(tokenIDs, rec.ID)
	}

	_, err := e.svc.DisableUser(e.ctx, bobActor, admin.UserID)
	wantErr(t, "operator disables", err, accounts.ErrForbidden)
	_, err = e.svc.DisableUser(e.ctx, admin, admin.UserID)
	wantErr(t, "disable self", err, accounts.ErrCannotDisableSelf)

	u, err := e.svc.DisableUser(e.ctx, admin, bob.ID)
	must(t, err)
	if u.Status != store.UserDisabled || u.DisabledAt == nil {
		t.Fatalf("disabled = %+v", u)
	}
	for _, tok := range []string{bobTok, bobTok2} {
		_, err := e.svc.Authenticate(e.ctx, tok, meta(ipA, ""))
		wantErr(t, "disabled user's session", err, accounts.ErrSessionInvalid)
	}
	if n, _ := e.st.UserSessions(e.ctx, bob.ID); len(n) != 0 {
		t.Errorf("%d sessions left", len(n))
	}
	toks, err := e.st.APITokensForUser(e.ctx, bob.ID)
	must(t, err)
	for _, tk := range toks {
		if tk.RevokedAt == nil {
			t.Errorf("token %s not revoked", tk.Name)
		}
	}
	_, err = e.svc.TokenActor(e.ctx, &auth.Principal{UserID: bob.ID, TokenID: &tokenIDs[0]}, meta(ipA, ""))
	wantErr(t, "disabled user's token", err, accounts.ErrUnauthenticated)
	if ev := e.events("user.disabled"); len(ev) != 1 || ev[0].Details["tokens_revoked"] != float64(2) || ev[0].Details["sessions_revoked"] != float64(2) {
		t.Errorf("user_disabled events = %+v", ev)
	}
	if act := e.activities("user.disabled"); len(act) != 1 {
		t.Errorf("user.disable activities = %+v", act)
	}

	u, err = e.svc.EnableUser(e.ctx, admin, bob.ID)
	must(t, err)
	if u.Status != store.UserActive {
		t.Fatalf("enabled = %+v", u)
	}
	e.login("bob@example.com", bobPW, meta(ipA, ""))
	toks, _ = e.st.APITokensForUser(e.ctx, bob.ID)
	for _, tk := range toks {
		if tk.RevokedAt == nil {
			t.Errorf("token %s came back", tk.Name)
		}
	}
	if n := len(e.events("user.enabled")); n != 1 {
		t.Errorf("%d user_enabled events", n)
	}
}

func TestLastActiveAdminStays(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ada := e.user(store.RoleAdmin, "ada@example.com", adaPW)
	bob := e.user(store.RoleAdmin, "bob@example.com", bobPW)
	adaActor := e.actor("ada@example.com", adaPW)
	bobActor := e.actor("bob@example.com", bobPW)

	// Two admins disabling each other at once: exactly one wins.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, step := range []struct {
		a  accounts.Actor
		id store.ID
	}{{adaActor, bob.ID}, {bobActor, ada.ID}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = e.svc.DisableUser(e.ctx, step.a, step.id)
		}()
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) {
		t.Fatalf("concurrent disables: %v / %v, want exactly one to succeed", errs[0], errs[1])
	}
	for _, err := range errs {
		if err != nil {
			wantErr(t, "the loser", err, accounts.ErrLastAdmin)
		}
	}
	if n, _ := e.st.CountUsers(e.ctx, store.UserActive, store.RoleAdmin); n != 1 {
		t.Fatalf("%d active admins left", n)
	}
}
