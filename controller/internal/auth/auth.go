// Package auth identifies callers of the controller's gRPC APIs: agents by
// their client certificate, people and automation by bearer API tokens. It
// owns the token format and the principal types every service layer checks.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/berthhq/berth/controller/internal/store"
)

// TokenPrefix marks Berth API tokens, so secret scanners and people can
// recognise one that leaked.
const TokenPrefix = "berth_"

// NewToken makes an API token (256 random bits) and the hash to store.
func NewToken() (token string, hash []byte) {
	var b [32]byte
	_, _ = rand.Read(b[:])
	token = TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return token, HashToken(token)
}

// HashToken is what the database keeps of a token.
func HashToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// WellFormed says whether s could be a token at all, so garbage never
// reaches the database.
func WellFormed(token string) bool {
	rest, ok := strings.CutPrefix(token, TokenPrefix)
	if !ok || len(rest) != 43 {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(rest)
	return err == nil
}

// Principal is a person (through an API token or a web session).
type Principal struct {
	UserID  store.ID
	Email   string
	TokenID *store.ID // nil for web sessions
	Scopes  []store.Scope
	IP      string
}

// scopeRank orders scopes: each includes the ones below it.
var scopeRank = map[store.Scope]int{store.ScopeRead: 1, store.ScopeWrite: 2, store.ScopeDeploy: 3, store.ScopeAdmin: 4}

// Allows reports whether the principal holds need (or a scope above it).
func (p *Principal) Allows(need store.Scope) bool {
	return slices.ContainsFunc(p.Scopes, func(s store.Scope) bool { return scopeRank[s] >= scopeRank[need] })
}

// Require is the authorisation check every service makes first: a caller,
// holding need or a scope above it.
func Require(pr *Principal, need store.Scope) error {
	if pr == nil {
		return ErrUnauthenticated
	}
	if !pr.Allows(need) {
		return fmt.Errorf("%w: needs the %s scope", ErrForbidden, need)
	}
	return nil
}

// Agent is an agent authenticated by its client certificate.
type Agent struct {
	ServerID store.ID
	Serial   string
	Peer     string
}

type principalKey struct{}
type agentKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the caller, or nil.
func PrincipalFrom(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey{}).(*Principal)
	return p
}

// WithAgent returns ctx carrying a.
func WithAgent(ctx context.Context, a *Agent) context.Context {
	return context.WithValue(ctx, agentKey{}, a)
}

// AgentFrom returns the calling agent, or nil.
func AgentFrom(ctx context.Context) *Agent {
	a, _ := ctx.Value(agentKey{}).(*Agent)
	return a
}

// Errors the service layer maps to Unauthenticated / PermissionDenied.
var (
	ErrUnauthenticated = errors.New("unauthenticated")
	ErrForbidden       = errors.New("permission denied")
)
