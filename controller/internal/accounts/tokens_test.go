package accounts_test

import (
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

	// A token cannot mint a stronger token than itself, even for an admin.
	readTok, readRec, err := e.svc.CreateToken(e.ctx, admin, "read-only", S(store.ScopeRead), nil)
	must(t, err)
	e.secret(readTok)
	ta, err := e.svc.TokenActor(e.ctx, &auth.Principal{UserID: admin.UserID, TokenID: &readRec.ID}, meta(ipA, "cli"))
	must(t, err)
	_, _, err = e.svc.CreateToken(e.ctx, ta, "escalate", S(store.ScopeWrite), nil)
	wantErr(t, "token escalates", err, accounts.ErrForbidden)
	_, err = e.svc.ListUsers(e.ctx, ta)
	wantErr(t, "read token lists users", err, accounts.ErrForbidden)
	future := e.clock.Now().Add(24 * time.Hour)
	tok, rec, err := e.svc.CreateToken(e.ctx, ta, "child", S(store.ScopeRead), &future)
	must(t, err)
	e.secret(tok)
	if rec.ExpiresAt == nil || !rec.ExpiresAt.Equal(future) {
		t.Errorf("expiry = %v", rec.ExpiresAt)
	}
	if act := e.activities("api_token.create"); len(act) == 0 || act[0].ActorType != store.ActorAPIToken || act[0].Actor != "token:read-only" {
		t.Errorf("activity by token = %+v", act)
	}
	if n := len(e.events("token_created")); n != 5 {
		t.Errorf("%d token_created events, want 5", n)
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
	if ev := e.events("token_revoked"); len(ev) != 2 {
		t.Errorf("token_revoked events = %+v", ev)
	}
	if n := len(e.activities("api_token.revoke")); n != 2 {
		t.Errorf("%d api_token.revoke activities", n)
	}
}
