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
	"time"

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

// Principal is a person acting through an API token or a web session: the
// one caller type every service checks (accounts, fleet, deploys, audit),
// whether the request came from the web UI or the gRPC API.
type Principal struct {
	UserID store.ID
	Email  string
	// Role is the user's role when the request was authenticated. Scopes
	// are already capped by it; services read it only to word messages
	// and to cap what a web session may grant.
	Role store.UserRole
	// SessionID is the browser session (nil for API tokens).
	SessionID *store.ID
	// TokenID, TokenName and TokenExpiresAt describe the acting API token
	// (nil, "" and nil for a web session).
	TokenID        *store.ID
	TokenName      string
	TokenExpiresAt *time.Time
	// Scopes are what the caller may do now: a token's scopes capped by
	// its user's current role, or a web session's role scopes.
	Scopes []store.Scope
	IP     string
}

// Scopes, lowest first. Each includes the ones before it.
var allScopes = []store.Scope{store.ScopeRead, store.ScopeWrite, store.ScopeDeploy, store.ScopeAdmin}

// Rank orders scopes: each includes the ones ranked below it. 0 for an
// unknown scope. This is the only ranking of scopes in the controller.
func Rank(sc store.Scope) int {
	for i, s := range allScopes {
		if s == sc {
			return i + 1
		}
	}
	return 0
}

// ValidScope says whether sc is one of read, write, deploy, admin.
func ValidScope(sc store.Scope) bool { return Rank(sc) > 0 }

// RoleScope is the most a role may do: viewers read, operators may
// deploy, admins may do everything. "" for an unknown role.
func RoleScope(r store.UserRole) store.Scope {
	switch r {
	case store.RoleAdmin:
		return store.ScopeAdmin
	case store.RoleOperator:
		return store.ScopeDeploy
	case store.RoleViewer:
		return store.ScopeRead
	}
	return ""
}

// RoleScopes are the scopes a role grants, lowest first.
func RoleScopes(r store.UserRole) []store.Scope {
	var out []store.Scope
	for _, sc := range allScopes {
		if Rank(sc) <= Rank(RoleScope(r)) {
			out = append(out, sc)
		}
	}
	return out
}

// CapScopes is a token's scopes as its user's role allows them now (not
// when the token was made): a scope above the role becomes the role's
// highest, so demoting a user demotes their tokens at once.
func CapScopes(scopes []store.Scope, r store.UserRole) []store.Scope {
	top := RoleScope(r)
	out := make([]store.Scope, 0, len(scopes))
	for _, sc := range scopes {
		switch {
		case !ValidScope(sc) || top == "":
		case Rank(sc) <= Rank(top):
			out = append(out, sc)
		default:
			out = append(out, top)
		}
	}
	return out
}

// Allows reports whether the principal holds need (or a scope above it).
// A nil principal allows nothing.
func (p *Principal) Allows(need store.Scope) bool {
	if p == nil || p.UserID == (store.ID{}) || !ValidScope(need) {
		return false
	}
	return slices.ContainsFunc(p.Scopes, func(s store.Scope) bool { return Rank(s) >= Rank(need) })
}

// IsToken says whether the principal acts through an API token.
func (p *Principal) IsToken() bool { return p != nil && p.TokenID != nil }

// Require is the authorisation check every service makes first: a caller,
// holding need or a scope above it.
func Require(pr *Principal, need store.Scope) error {
	if pr == nil || pr.UserID == (store.ID{}) {
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

// Actor is how the activity log names who acted: the principal's user
// through an API token or a web session, or the system for a nil principal.
// Every service records activity with it, so an act reads the same
// whichever capability logged it.
func (p *Principal) Actor() (typ store.ActorType, name string, userID *store.ID) {
	switch {
	case p == nil:
		return store.ActorSystem, "system", nil
	case p.TokenID != nil:
		return store.ActorAPIToken, p.Email, &p.UserID
	default:
		return store.ActorUser, p.Email, &p.UserID
	}
}
