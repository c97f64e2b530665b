package accounts

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
)

// CreateToken makes an API token for the actor and returns it (shown once)
// with its record. Each scope must be within the actor's role (viewer:
// read; operator: up to deploy; admin: all) and, when the actor is itself
// a token, within that token's scopes. expiresAt nil: no expiry.
func (s *Service) CreateToken(ctx context.Context, a Actor, name string, scopes []store.Scope, expiresAt *time.Time) (string, store.APIToken, error) {
	if err := s.require(a, store.ScopeRead); err != nil {
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
		if scopeRank[sc] == 0 {
			return "", store.APIToken{}, invalid("unknown scope %q (read, write, deploy, admin)", sc)
		}
		if !a.Allows(sc) {
			return "", store.APIToken{}, fmt.Errorf("%w: your role %s cannot grant scope %s", ErrForbidden, a.Role, sc)
		}
		if !slices.Contains(clean, sc) {
			clean = append(clean, sc)
		}
	}
	if expiresAt != nil && !expiresAt.After(s.now()) {
		return "", store.APIToken{}, invalid("expiry must be in the future")
	}
	tok, hash := auth.NewToken()
	var t store.APIToken
	err := s.st.InTx(ctx, func(tx *store.Store) error {
		var err error
		if t, err = tx.CreateAPIToken(ctx, store.CreateAPITokenParams{
			UserID: a.UserID, Name: name, TokenHash: hash, Scopes: clean, ExpiresAt: expiresAt,
		}); err != nil {
			return err
		}
		details := map[string]any{"token_id": t.ID.String(), "name": name, "scopes": scopeStrings(clean)}
		if expiresAt != nil {
			details["expires_at"] = *expiresAt
		}
		if err := s.event(ctx, tx, "token_created", store.SeverityInfo, &a.UserID, a.label(), a.Meta, details); err != nil {
			return err
		}
		changes := map[string]any{"name": change(nil, name), "scopes": change(nil, scopeStrings(clean))}
		if expiresAt != nil {
			changes["expires_at"] = change(nil, *expiresAt)
		}
		return s.activity(ctx, tx, a, "api_token.create", "api_token", &t.ID, name, changes)
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

// RevokeToken revokes one of the actor's tokens; admins may revoke anyone's.
// Revoking a revoked token is a no-op; another user's token is ErrNotFound
// to a non-admin.
func (s *Service) RevokeToken(ctx context.Context, a Actor, id store.ID) error {
	if err := s.require(a, store.ScopeRead); err != nil {
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
		if t.RevokedAt != nil {
			return nil
		}
		if _, err := tx.RevokeAPIToken(ctx, id); errors.Is(err, store.ErrNotFound) {
			return nil // revoked concurrently
		} else if err != nil {
			return err
		}
		if err := s.event(ctx, tx, "token_revoked", store.SeverityInfo, &t.UserID, a.label(), a.Meta,
			map[string]any{"token_id": t.ID.String(), "name": t.Name}); err != nil {
			return err
		}
		return s.activity(ctx, tx, a, "api_token.revoke", "api_token", &t.ID, t.Name,
			map[string]any{"revoked": change(false, true)})
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
