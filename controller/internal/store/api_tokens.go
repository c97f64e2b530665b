package store

import (
	"context"
	"net/netip"
	"time"

	"github.com/berthhq/berth/gen/dbsqlc"
)

// Scope is what an API token may do. Each scope includes the ones before it:
// read < write < deploy < admin.
type Scope string

// The API token scopes.
const (
	ScopeRead   Scope = "read"
	ScopeWrite  Scope = "write"
	ScopeDeploy Scope = "deploy"
	ScopeAdmin  Scope = "admin"
)

// APIToken is a bearer token's record; the token itself is never stored.
type APIToken struct {
	ID         ID
	UserID     ID
	Name       string
	Scopes     []Scope
	ExpiresAt  *time.Time
	LastUsedAt *time.Time
	LastUsedIP *netip.Addr
	RevokedAt  *time.Time
	CreatedAt  time.Time
	// ParentTokenID is the API token this one was made through (nil when
	// made in a web session or by the CLI on the controller's host). A
	// child is revoked with its parent.
	ParentTokenID *ID
}

// APITokenWithUser is a token looked up for authentication.
type APITokenWithUser struct {
	APIToken
	UserEmail  string
	UserStatus string
	// UserRole caps what the token may do: a token never outranks its
	// user's current role, even when the role was lowered after it was made.
	UserRole UserRole
}

func apiTokenFromRow(r dbsqlc.ApiToken) APIToken {
	scopes := make([]Scope, len(r.Scopes))
	for i, s := range r.Scopes {
		scopes[i] = Scope(s)
	}
	return APIToken{
		ID: fromPG(r.ID), UserID: fromPG(r.UserID), Name: r.Name, Scopes: scopes,
		ExpiresAt: r.ExpiresAt, LastUsedAt: r.LastUsedAt, LastUsedIP: r.LastUsedIp,
		RevokedAt: r.RevokedAt, CreatedAt: r.CreatedAt, ParentTokenID: fromOptPG(r.ParentTokenID),
	}
}

// CreateAPITokenParams describes a new token; TokenHash is SHA-256 of the
// token shown to the user once.
type CreateAPITokenParams struct {
	ID        ID
	UserID    ID
	Name      string
	TokenHash []byte
	Scopes    []Scope
	ExpiresAt *time.Time
	// ParentTokenID: the API token making this one, if any.
	ParentTokenID *ID
}

// CreateAPIToken stores a token's hash.
func (s *Store) CreateAPIToken(ctx context.Context, p CreateAPITokenParams) (APIToken, error) {
	if p.ID == (ID{}) {
		p.ID = NewID()
	}
	scopes := make([]string, len(p.Scopes))
	for i, sc := range p.Scopes {
		scopes[i] = string(sc)
	}
	r, err := s.q.CreateAPIToken(ctx, dbsqlc.CreateAPITokenParams{
		ID: pgID(p.ID), UserID: pgID(p.UserID), Name: p.Name, TokenHash: p.TokenHash, Scopes: scopes, ExpiresAt: p.ExpiresAt,
		ParentTokenID: pgOptID(p.ParentTokenID),
	})
	if err != nil {
		return APIToken{}, mapErr("create api token", err)
	}
	return apiTokenFromRow(r), nil
}

// APITokenByHash finds a token by the hash of its value.
func (s *Store) APITokenByHash(ctx context.Context, hash []byte) (APITokenWithUser, error) {
	r, err := s.q.GetAPITokenByHash(ctx, hash)
	if err != nil {
		return APITokenWithUser{}, mapErr("get api token", err)
	}
	return APITokenWithUser{APIToken: apiTokenFromRow(r.ApiToken), UserEmail: r.UserEmail, UserStatus: r.UserStatus, UserRole: UserRole(r.UserRole)}, nil
}

// TouchAPIToken records a use (at most once a minute).
func (s *Store) TouchAPIToken(ctx context.Context, id ID, ip *netip.Addr) error {
	return mapErr("touch api token", s.q.TouchAPIToken(ctx, dbsqlc.TouchAPITokenParams{ID: pgID(id), Ip: ip}))
}

// APITokensForUser lists a user's tokens, newest first.
func (s *Store) APITokensForUser(ctx context.Context, userID ID) ([]APIToken, error) {
	rows, err := s.q.ListAPITokensForUser(ctx, pgID(userID))
	if err != nil {
		return nil, mapErr("list api tokens", err)
	}
	out := make([]APIToken, len(rows))
	for i, r := range rows {
		out[i] = apiTokenFromRow(r)
	}
	return out, nil
}

// RevokeAPIToken revokes a token; ErrNotFound when missing or already revoked.
func (s *Store) RevokeAPIToken(ctx context.Context, id ID) (APIToken, error) {
	r, err := s.q.RevokeAPIToken(ctx, pgID(id))
	if err != nil {
		return APIToken{}, mapErr("revoke api token", err)
	}
	return apiTokenFromRow(r), nil
}

// APIToken gets a token's record by id.
func (s *Store) APIToken(ctx context.Context, id ID) (APIToken, error) {
	r, err := s.q.GetAPIToken(ctx, pgID(id))
	if err != nil {
		return APIToken{}, mapErr("get api token", err)
	}
	return apiTokenFromRow(r), nil
}

// RevokeUserAPITokens revokes every live token of a user (when the user is
// disabled) and reports how many.
func (s *Store) RevokeUserAPITokens(ctx context.Context, userID ID) (int64, error) {
	n, err := s.q.RevokeUserAPITokens(ctx, pgID(userID))
	return n, mapErr("revoke user api tokens", err)
}

// RevokeAPITokenTree revokes a token and every token made from it, at any
// depth, and returns the ones this call revoked (none when all already
// were). Run it in the transaction that audits the revocation.
func (s *Store) RevokeAPITokenTree(ctx context.Context, id ID) ([]APIToken, error) {
	rows, err := s.q.RevokeAPITokenTree(ctx, pgID(id))
	if err != nil {
		return nil, mapErr("revoke api token tree", err)
	}
	out := make([]APIToken, len(rows))
	for i, r := range rows {
		out[i] = apiTokenFromRow(r)
	}
	return out, nil
}

// LockAPIToken locks a token's row until the transaction ends and says
// whether it is revoked. Making a child of a token and revoking a token
// both take this lock first (see accounts), so a revocation never misses a
// child made at the same moment. ErrNotFound for no such token.
func (s *Store) LockAPIToken(ctx context.Context, id ID) (revoked bool, err error) {
	at, err := s.q.LockAPIToken(ctx, pgID(id))
	if err != nil {
		return false, mapErr("lock api token", err)
	}
	return at != nil, nil
}
