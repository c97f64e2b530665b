package accounts

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
)

// Who may manage API tokens:
//
//   - A person signed in to the web UI manages their own tokens, whatever
//     their role; a new token's scopes are capped by the role (viewer: read;
//     operator: up to deploy; admin: all).
//   - Through an API token, creating or revoking tokens needs the admin
//     scope. Otherwise a leaked read token could mint itself a fresh token
//     or revoke its owner's others.
//   - A token made through a token (a child) gets at most the calling
//     token's scopes and expiry: a caller with an expiry gives the child
//     that expiry when none is asked for, and refuses a later one. The
//     child records its parent and is revoked with it, at any depth, in the
//     same transaction.
//   - Revoking another user's token needs the admin scope; to anyone else it
//     does not exist.
//
// Listing one's own tokens needs only read.

// errTokenNeedsAdmin is the refusal for a token without the admin scope.
var errTokenNeedsAdmin = fmt.Errorf("%w: an API token needs the admin scope to manage tokens", ErrForbidden)

// requireTokenManager checks that a may create or revoke tokens at all.
func (s *Service) requireTokenManager(a Actor) error {
	if err := s.require(a, store.ScopeRead); err != nil {
		return err
	}
	if a.IsToken() && !a.Allows(store.ScopeAdmin) {
		return errTokenNeedsAdmin
	}
	return nil
}

// CreateToken makes an API token for the actor and returns it (shown once)
// with its record. See the rules above. expiresAt nil: no expiry, unless
// the calling token has one (then its expiry).
func (s *Service) CreateToken(ctx context.Context, a Actor, name string, scopes []store.Scope, expiresAt *time.Time) (string, store.APIToken, error) {
	if err := s.requireTokenManager(a); err != nil {
		return "", store.APIToken{}, err
	}
	name = strings.TrimSpace(name)
	if name == "" || len([]rune(name)) > 100 {
		return "", store.APIToken{}, invalid("token name must be 1 to 100 characters")
	}
	if len(scopes) == 0 {
		return "", store.APIToken{}, invalid("a token needs at least one scope")
	}
	var clean []store.Scope
	for _, sc := range scopes {
		if !auth.ValidScope(sc) {
			return "", store.APIToken{}, invalid("unknown scope %q (read, write, deploy, admin)", sc)
		}
		if !a.Allows(sc) {
			if a.IsToken() {
				return "", store.APIToken{}, fmt.Errorf("%w: scope %s exceeds the calling token's scopes (%s)", ErrForbidden, sc, strings.Join(scopeStrings(a.Scopes), ", "))
			}
			return "", store.APIToken{}, fmt.Errorf("%w: your role %s cannot grant scope %s", ErrForbidden, a.Role, sc)
		}
		if !slices.Contains(clean, sc) {
			clean = append(clean, sc)
		}
	}
	if expiresAt != nil && !expiresAt.After(s.now()) {
		return "", store.APIToken{}, invalid("expiry must be in the future")
	}
	var parent *store.ID
	if a.IsToken() {
		parent = a.TokenID
		if pe := a.TokenExpiresAt; pe != nil && (expiresAt == nil || expiresAt.After(*pe)) {
			// A child never outlives its parent: asking for no expiry, or a
			// later one, gives it the parent's (the answer shows it).
			expiresAt = pe
		}
	}
	tok, hash := auth.NewToken()
	var t store.APIToken
	err := s.st.InTx(ctx, func(tx *store.Store) error {
		if parent != nil {
			// Under the parent's row lock: a revocation running now either
			// finished first (refused here) or waits and then sees this child.
			revoked, err := tx.LockAPIToken(ctx, *parent)
			if errors.Is(err, store.ErrNotFound) || (err == nil && revoked) {
				return ErrUnauthenticated
			}
			if err != nil {
				return err
			}
		}
		var err error
		if t, err = tx.CreateAPIToken(ctx, store.CreateAPITokenParams{
			UserID: a.UserID, Name: name, TokenHash: hash, Scopes: clean, ExpiresAt: expiresAt, ParentTokenID: parent,
		}); err != nil {
			return err
		}
		details := map[string]any{"token_id": t.ID.String(), "name": name, "scopes": scopeStrings(clean)}
		if expiresAt != nil {
			details["expires_at"] = *expiresAt
		}
		if parent != nil {
			details["parent_token_id"] = parent.String()
		}
		if err := s.event(ctx, tx, kind.TokenCreated, store.SeverityInfo, &a.UserID, a.label(), a.Meta, details); err != nil {
			return err
		}
		changes := map[string]any{"name": change(nil, name), "scopes": change(nil, scopeStrings(clean))}
		if expiresAt != nil {
			changes["expires_at"] = change(nil, *expiresAt)
		}
		return s.activity(ctx, tx, a, kind.TokenCreated, "api_token", &t.ID, name, changes)
	})
	if err != nil {
		return "", store.APIToken{}, fmt.Errorf("create token: %w", err)
	}
	return tok, t, nil
}

// ListTokens lists the actor's own tokens, revoked ones included, newest
// first.
func (s *Service) ListTokens(ctx context.Context, a Actor) ([]store.APIToken, error) {
	if err := s.require(a, store.ScopeRead); err != nil {
		return nil, err
	}
	ts, err := s.st.APITokensForUser(ctx, a.UserID)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return ts, nil
}

// RevokeToken revokes a token and every token made from it. One's own
// tokens: any signed-in person, or an API token with the admin scope;
// another user's: the admin scope (to anyone else it is ErrNotFound).
// Revoking a revoked token is a no-op.
func (s *Service) RevokeToken(ctx context.Context, a Actor, id store.ID) error {
	if err := s.requireTokenManager(a); err != nil {
		return err
	}
	err := s.st.InTx(ctx, func(tx *store.Store) error {
		t, err := tx.APIToken(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return ErrNotFound
		} else if err != nil {
			return err
		}
		if t.UserID != a.UserID && !a.Allows(store.ScopeAdmin) {
			return ErrNotFound
		}
		// The token's row lock first (children are made under their
		// parent's lock), then the tree until a pass finds nothing more: a
		// pass's snapshot is taken when it starts, so a child committed
		// while it waited on a row is caught by the next one, and none can
		// be made under a token this transaction has revoked and locked.
		if _, err := tx.LockAPIToken(ctx, id); err != nil {
			return err
		}
		var revoked []store.APIToken
		for {
			more, err := tx.RevokeAPITokenTree(ctx, id)
			if err != nil {
				return err
			}
			if len(more) == 0 {
				break
			}
			revoked = append(revoked, more...)
		}
		for _, r := range revoked {
			details := map[string]any{"token_id": r.ID.String(), "name": r.Name}
			changes := map[string]any{"revoked": change(false, true)}
			if r.ID != id {
				details["reason"], changes["reason"] = "parent revoked", "parent revoked"
				details["revoked_with"] = id.String()
			}
			if err := s.event(ctx, tx, kind.TokenRevoked, store.SeverityInfo, &r.UserID, a.label(), a.Meta, details); err != nil {
				return err
			}
			if err := s.activity(ctx, tx, a, kind.TokenRevoked, "api_token", &r.ID, r.Name, changes); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("revoke token: %w", err)
	}
	return nil
}

func scopeStrings(sc []store.Scope) []string {
	out := make([]string, len(sc))
	for i, s := range sc {
		out[i] = string(s)
	}
	return out
}
