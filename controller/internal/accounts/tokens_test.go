package accounts_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/accounts"
	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
)

func TestTokenScopesFollowRole(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.user(store.RoleAdmin, "ada@example.com", adaPW)
	e.user(store.RoleOperator, "bob@example.com", bobPW)
	e.user(store.RoleViewer, "vic@example.com", "victor-reads-but-never-writes")
	admin := e.actor("ada@example.com", adaPW)
	op := e.actor("bob@example.com", bobPW)
	viewer := e.actor("vic@example.com", "victor-reads-but-never-writes")
	S := func(s ...store.Scope) []store.Scope { return s }

	cases := []struct {
		who    accounts.Actor
		scopes []store.Scope
		ok     bool
	}{
		{viewer, S(store.ScopeRead), true},
		{viewer, S(store.ScopeWrite), false},
		{op, S(store.ScopeRead, store.ScopeDeploy), true},
		{op, S(store.ScopeAdmin), false},
		{admin, S(store.ScopeAdmin), true},
	}
	for i, c := range cases {
		tok, rec, err := e.svc.CreateToken(e.ctx, c.who, "t", c.scopes, nil)
		if c.ok {
			must(t, err)
			e.secret(tok)
			if !auth.WellFormed(tok) {
				t.Errorf("case %d: malformed token", i)
			}
			got, err := e.st.APITokenByHash(e.ctx, auth.HashToken(tok))
			if err != nil || got.ID != rec.ID || len(got.Scopes) != len(c.scopes) {
				t.Errorf("case %d: stored token = %+v, %v", i, got, err)
			}
		} else {
			wantErr(t, "scope beyond role", err, accounts.ErrForbidden)
		}
	}
	_, _, err := e.svc.CreateToken(e.ctx, admin, "t", S("root"), nil)
	wantErr(t, "unknown scope", err, accounts.ErrInvalidInput)
	_, _, err = e.svc.CreateToken(e.ctx, admin, "t", nil, nil)
	wantErr(t, "no scope", err, accounts.ErrInvalidInput)
	_, _, err = e.svc.CreateToken(e.ctx, admin, " ", S(store.ScopeRead), nil)
	wantErr(t, "no name", err, accounts.ErrInvalidInput)
	past := e.clock.Now().Add(-time.Minute)
	_, _, err = e.svc.CreateToken(e.ctx, admin, "t", S(store.ScopeRead), &past)
	wantErr(t, "expiry in the past", err, accounts.ErrInvalidInput)

	// Through an API token, managing tokens needs the admin scope, whatever
	// the user's role: a read token of an admin mints nothing.
	readTok, readRec, err := e.svc.CreateToken(e.ctx, admin, "read-only", S(store.ScopeRead), nil)
	must(t, err)
	e.secret(readTok)
	ta, err := e.svc.TokenActor(e.ctx, &auth.Principal{UserID: admin.UserID, TokenID: &readRec.ID}, meta(ipA, "cli"))
	must(t, err)
	_, _, err = e.svc.CreateToken(e.ctx, ta, "child", S(store.ScopeRead), nil)
	wantErr(t, "read token mints a token", err, accounts.ErrForbidden)
	_, err = e.svc.ListUsers(e.ctx, ta)
	wantErr(t, "read token lists users", err, accounts.ErrForbidden)
	if n := len(e.events("token.created")); n != 4 {
		t.Errorf("%d token.created events, want 4", n)
	}
}

// tokenActor is the actor of the token rec, as the gRPC API makes it.
func (e *env) tokenActor(t *testing.T, a accounts.Actor, rec store.APIToken) accounts.Actor {
	t.Helper()
	ta, err := e.svc.TokenActor(e.ctx, &auth.Principal{UserID: a.UserID, TokenID: &rec.ID}, meta(ipA, "cli"))
	must(t, err)
	return ta
}

// Issue 15: a read token made a child token and revoked its owner's admin
// token. Through a token, both need the admin scope, and the refusal says
// so rather than blaming the role.
func TestReadTokenCannotManageTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.user(store.RoleAdmin, "ada@example.com", adaPW)
	admin := e.actor("ada@example.com", adaPW)
	mk := func(name string, sc store.Scope) store.APIToken {
		tok, rec, err := e.svc.CreateToken(e.ctx, admin, name, []store.Scope{sc}, nil)
		must(t, err)
		e.secret(tok)
		return rec
	}
	adminTok := mk("admin", store.ScopeAdmin)
	for _, sc := range []store.Scope{store.ScopeRead, store.ScopeWrite, store.ScopeDeploy} {
		ta := e.tokenActor(t, admin, mk(string(sc), sc))
		_, _, err := e.svc.CreateToken(e.ctx, ta, "child", []store.Scope{store.ScopeRead}, nil)
		wantErr(t, string(sc)+" token creates a token", err, accounts.ErrForbidden)
		if !strings.Contains(err.Error(), "an API token needs the admin scope to manage tokens") || strings.Contains(err.Error(), "role") {
			t.Errorf("refusal names the wrong limit: %v", err)
		}
		err = e.svc.RevokeToken(e.ctx, ta, adminTok.ID)
		wantErr(t, string(sc)+" token revokes the admin token", err, accounts.ErrForbidden)
	}
	e.tokenActor(t, admin, adminTok) // still live
	if n := len(e.events("token.revoked")); n != 0 {
		t.Errorf("%d token.revoked events", n)
	}
}

// A child token gets at most its parent's expiry, records its parent, and
// dies with it (at any depth, in the same transaction).
func TestChildTokensCappedAndRevokedWithParent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.user(store.RoleAdmin, "ada@example.com", adaPW)
	admin := e.actor("ada@example.com", adaPW)
	day := e.clock.Now().Add(24 * time.Hour)
	tok, parent, err := e.svc.CreateToken(e.ctx, admin, "parent", []store.Scope{store.ScopeAdmin}, &day)
	must(t, err)
	e.secret(tok)
	pa := e.tokenActor(t, admin, parent)

	// No expiry asked, or a later one: the parent's.
	tok, child, err := e.svc.CreateToken(e.ctx, pa, "child", []store.Scope{store.ScopeAdmin}, nil)
	must(t, err)
	e.secret(tok)
	if child.ExpiresAt == nil || !child.ExpiresAt.Equal(day) || child.ParentTokenID == nil || *child.ParentTokenID != parent.ID {
		t.Fatalf("child = expiry %v, parent %v", child.ExpiresAt, child.ParentTokenID)
	}
	later := day.Add(time.Hour)
	tok, outlives, err := e.svc.CreateToken(e.ctx, pa, "outlives", []store.Scope{store.ScopeRead}, &later)
	must(t, err)
	e.secret(tok)
	if outlives.ExpiresAt == nil || !outlives.ExpiresAt.Equal(day) {
		t.Fatalf("child asking to outlive its parent expires %v, want %v", outlives.ExpiresAt, day)
	}
	hour := e.clock.Now().Add(time.Hour)
	tok, grand, err := e.svc.CreateToken(e.ctx, e.tokenActor(t, admin, child), "grandchild", []store.Scope{store.ScopeRead}, &hour)
	must(t, err)
	e.secret(tok)
	if grand.ExpiresAt == nil || !grand.ExpiresAt.Equal(hour) {
		t.Fatalf("grandchild expiry %v", grand.ExpiresAt)
	}
	// A token made in a web session has no parent and no forced expiry.
	tok, other, err := e.svc.CreateToken(e.ctx, admin, "other", []store.Scope{store.ScopeRead}, nil)
	must(t, err)
	e.secret(tok)
	if other.ParentTokenID != nil || other.ExpiresAt != nil {
		t.Fatalf("session token = parent %v, expiry %v", other.ParentTokenID, other.ExpiresAt)
	}

	must(t, e.svc.RevokeToken(e.ctx, admin, parent.ID))
	for _, rec := range []store.APIToken{parent, child, outlives, grand} {
		_, err := e.svc.TokenActor(e.ctx, &auth.Principal{UserID: admin.UserID, TokenID: &rec.ID}, meta(ipA, ""))
		wantErr(t, rec.Name+" after its parent was revoked", err, accounts.ErrUnauthenticated)
	}
	e.tokenActor(t, admin, other)
	if ev := e.events("token.revoked"); len(ev) != 4 {
		t.Errorf("%d token.revoked events, want 4", len(ev))
	}
}

func TestListAndRevokeTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.user(store.RoleAdmin, "ada@example.com", adaPW)
	e.user(store.RoleOperator, "bob@example.com", bobPW)
	admin := e.actor("ada@example.com", adaPW)
	op := e.actor("bob@example.com", bobPW)
	mk := func(a accounts.Actor, name string) store.APIToken {
		tok, rec, err := e.svc.CreateToken(e.ctx, a, name, []store.Scope{store.ScopeRead}, nil)
		must(t, err)
		e.secret(tok)
		return rec
	}
	adaTok := mk(admin, "ada-ci")
	bobTok1, bobTok2 := mk(op, "bob-ci"), mk(op, "bob-cli")

	list, err := e.svc.ListTokens(e.ctx, op)
	must(t, err)
	if len(list) != 2 || list[0].ID != bobTok2.ID {
		t.Fatalf("bob's tokens = %+v", list)
	}
	wantErr(t, "revoke someone else's", e.svc.RevokeToken(e.ctx, op, adaTok.ID), accounts.ErrNotFound)
	// An operator's strongest token (deploy) cannot either; an admin's
	// session can, below.
	tok, deployRec, err := e.svc.CreateToken(e.ctx, op, "bob-deploy", []store.Scope{store.ScopeDeploy}, nil)
	must(t, err)
	e.secret(tok)
	wantErr(t, "operator token revokes someone else's", e.svc.RevokeToken(e.ctx, e.tokenActor(t, op, deployRec), adaTok.ID), accounts.ErrForbidden)
	must(t, e.svc.RevokeToken(e.ctx, op, deployRec.ID))
	must(t, e.svc.RevokeToken(e.ctx, op, bobTok1.ID))
	must(t, e.svc.RevokeToken(e.ctx, op, bobTok1.ID)) // no-op
	must(t, e.svc.RevokeToken(e.ctx, admin, bobTok2.ID))
	wantErr(t, "unknown token", e.svc.RevokeToken(e.ctx, op, store.NewID()), accounts.ErrNotFound)

	list, _ = e.svc.ListTokens(e.ctx, op)
	for _, tk := range list {
		if tk.RevokedAt == nil {
			t.Errorf("%s not revoked", tk.Name)
		}
	}
	_, err = e.svc.TokenActor(e.ctx, &auth.Principal{UserID: op.UserID, TokenID: &bobTok1.ID}, meta(ipA, ""))
	wantErr(t, "revoked token", err, accounts.ErrUnauthenticated)
	if ev := e.events("token.revoked"); len(ev) != 3 {
		t.Errorf("token_revoked events = %+v", ev)
	}
	if n := len(e.activities("token.revoked")); n != 3 {
		t.Errorf("%d token.revoked activities", n)
	}
}

// A child asked for while its parent is being revoked is either revoked
// with it or never made: here the revocation holds the parent's row when
// the child is asked for, and the child is refused once it commits.
func TestChildTokenRacingParentRevocation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.user(store.RoleAdmin, "ada@example.com", adaPW)
	admin := e.actor("ada@example.com", adaPW)
	tok, parent, err := e.svc.CreateToken(e.ctx, admin, "parent", []store.Scope{store.ScopeAdmin}, nil)
	must(t, err)
	e.secret(tok)
	pa := e.tokenActor(t, admin, parent)

	done := make(chan error, 1)
	err = e.st.InTx(e.ctx, func(tx *store.Store) error {
		if _, err := tx.LockAPIToken(e.ctx, parent.ID); err != nil {
			return err
		}
		if _, err := tx.RevokeAPITokenTree(e.ctx, parent.ID); err != nil {
			return err
		}
		go func() {
			_, _, err := e.svc.CreateToken(e.ctx, pa, "racer", []store.Scope{store.ScopeRead}, nil)
			done <- err
		}()
		// Commit only once the child's transaction waits on the parent's row.
		for {
			var n int
			if err := e.db.Pool.QueryRow(e.ctx, `SELECT count(*) FROM pg_stat_activity
				WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%FOR UPDATE%'`).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			time.Sleep(2 * time.Millisecond) // between polls of the event
		}
	})
	must(t, err)
	if err := <-done; !errors.Is(err, accounts.ErrUnauthenticated) {
		t.Fatalf("child made while its parent was revoked: %v", err)
	}
	var live int
	if err := e.db.Pool.QueryRow(e.ctx, `SELECT count(*) FROM api_tokens WHERE revoked_at IS NULL AND name = 'racer'`).Scan(&live); err != nil || live != 0 {
		t.Fatalf("%d live children (%v)", live, err)
	}
}
