package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/berthhq/berth/controller/internal/store"
	"github.com/berthhq/berth/controller/internal/testdb"
)

func hash32(b byte) []byte {
	h := make([]byte, 32)
	for i := range h {
		h[i] = b
	}
	return h
}

func TestAPITokens(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testdb.New(t)
	st := store.New(db.Pool, nil)
	user := store.NewID()
	if _, err := db.Pool.Exec(ctx, `INSERT INTO users (id, email, password_hash) VALUES ($1, 'Ops@Example.com', 'x')`, pgtype.UUID{Bytes: user, Valid: true}); err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Microsecond)
	tok, err := st.CreateAPIToken(ctx, store.CreateAPITokenParams{UserID: user, Name: "ci", TokenHash: hash32(1), Scopes: []store.Scope{store.ScopeRead, store.ScopeDeploy}, ExpiresAt: &exp})
	if err != nil {
		t.Fatal(err)
	}
	got, err := st.APITokenByHash(ctx, hash32(1))
	if err != nil || got.ID != tok.ID || got.UserEmail != "Ops@Example.com" || got.UserStatus != "active" || len(got.Scopes) != 2 || !got.ExpiresAt.Equal(exp) {
		t.Fatalf("by hash = %+v, %v", got, err)
	}
	if _, err := st.APITokenByHash(ctx, hash32(2)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown hash: %v", err)
	}
	// Same name again while the first is live: conflict. Bad scope: invalid.
	if _, err := st.CreateAPIToken(ctx, store.CreateAPITokenParams{UserID: user, Name: "ci", TokenHash: hash32(3), Scopes: []store.Scope{store.ScopeRead}}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate name: %v", err)
	}
	if _, err := st.CreateAPIToken(ctx, store.CreateAPITokenParams{UserID: user, Name: "x", TokenHash: hash32(4), Scopes: []store.Scope{"root"}}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("bad scope: %v", err)
	}
	if _, err := st.CreateAPIToken(ctx, store.CreateAPITokenParams{UserID: store.NewID(), Name: "x", TokenHash: hash32(5), Scopes: []store.Scope{store.ScopeRead}}); !errors.Is(err, store.ErrMissingParent) {
		t.Fatalf("unknown user: %v", err)
	}
	if err := st.TouchAPIToken(ctx, tok.ID, nil); err != nil {
		t.Fatal(err)
	}
	if r, err := st.RevokeAPIToken(ctx, tok.ID); err != nil || r.RevokedAt == nil {
		t.Fatalf("revoke: %+v %v", r, err)
	}
	if _, err := st.RevokeAPIToken(ctx, tok.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoke twice: %v", err)
	}
	// The name is free again once the old token is revoked.
	if _, err := st.CreateAPIToken(ctx, store.CreateAPITokenParams{UserID: user, Name: "ci", TokenHash: hash32(6), Scopes: []store.Scope{store.ScopeAdmin}}); err != nil {
		t.Fatal(err)
	}
	list, err := st.APITokensForUser(ctx, user)
	if err != nil || len(list) != 2 || list[0].RevokedAt != nil || list[1].RevokedAt == nil {
		t.Fatalf("list = %d, %v", len(list), err)
	}
}

func TestAgentCertificates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testdb.New(t)
	st := store.New(db.Pool, nil)
	srv, other := store.NewID(), store.NewID()
	for i, id := range []store.ID{srv, other} {
		if _, err := db.Pool.Exec(ctx, `INSERT INTO servers (id, name) VALUES ($1, $2)`, pgtype.UUID{Bytes: id, Valid: true}, []string{"web-1", "web-2"}[i]); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC().Truncate(time.Second)
	c, err := st.RecordAgentCertificate(ctx, store.AgentCertificate{ServerID: srv, Serial: "0abc", IssuedFor: "enroll", NotBefore: now, NotAfter: now.Add(time.Hour)})
	if err != nil || c.ServerID != srv {
		t.Fatalf("record: %+v %v", c, err)
	}
	if _, err := st.RecordAgentCertificate(ctx, store.AgentCertificate{ServerID: srv, Serial: "0abc", IssuedFor: "renew", NotBefore: now, NotAfter: now.Add(time.Hour)}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate serial: %v", err)
	}
	if _, err := st.RecordAgentCertificate(ctx, store.AgentCertificate{ServerID: srv, Serial: "NOT-HEX", IssuedFor: "renew", NotBefore: now, NotAfter: now.Add(time.Hour)}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("bad serial: %v", err)
	}
	stt, err := st.CheckAgentCertificate(ctx, srv, "0abc")
	if err != nil || stt.Revoked || stt.ServerStatus != "pending" {
		t.Fatalf("check: %+v %v", stt, err)
	}
	// A serial issued to one server does not vouch for another.
	if _, err := st.CheckAgentCertificate(ctx, other, "0abc"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("serial on the wrong server: %v", err)
	}
	if n, err := st.RevokeServerCertificates(ctx, srv, "server disabled"); err != nil || n != 1 {
		t.Fatalf("revoke: %d %v", n, err)
	}
	if stt, err := st.CheckAgentCertificate(ctx, srv, "0abc"); err != nil || !stt.Revoked {
		t.Fatalf("after revoke: %+v %v", stt, err)
	}
	if _, err := st.RevokeAgentCertificate(ctx, "0abc", "again"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoking a revoked certificate: %v", err)
	}
	// Removing the server removes its certificates: the check then fails closed.
	if _, err := db.Pool.Exec(ctx, `DELETE FROM servers WHERE id = $1`, pgtype.UUID{Bytes: srv, Valid: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CheckAgentCertificate(ctx, srv, "0abc"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after server delete: %v", err)
	}
}
