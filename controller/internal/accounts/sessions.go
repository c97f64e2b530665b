package accounts

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
)

// Session is an authenticated browser session with its user.
type Session struct {
	ID         store.ID
	User       store.User
	Status     store.SessionStatus
	IP         *netip.Addr
	UserAgent  string
	CreatedAt  time.Time
	LastSeenAt time.Time
	ExpiresAt  time.Time
}

func sessionOf(r store.Session, u store.User) Session {
	return Session{
		ID: r.ID, User: u, Status: r.Status, IP: r.IPAddress, UserAgent: r.UserAgent,
		CreatedAt: r.CreatedAt, LastSeenAt: r.LastSeenAt, ExpiresAt: r.ExpiresAt,
	}
}

// Actor is the session's user acting from the client described by meta.
func (s *Session) Actor(meta Meta) Actor {
	return userActor(s.User, idPtr(s.ID), meta)
}

// Principal is the session as the auth package sees it (scopes from role).
func (s *Session) Principal() *auth.Principal {
	a := s.Actor(Meta{})
	return &a.Principal
}

// String names the session by id, never by its token.
func (s *Session) String() string { return "session " + s.ID.String() }

// Authenticate resolves a session cookie. It returns ErrSessionInvalid for
// an unknown token or a disabled user, ErrSessionExpired past the idle or
// absolute timeout (the session is then deleted), and ErrTwoFactorPending
// for a login still waiting for its second factor. It records activity at
// most once per TouchInterval.
func (s *Service) Authenticate(ctx context.Context, token string, meta Meta) (*Session, error) {
	if token == "" {
		return nil, ErrSessionInvalid
	}
	h := hashToken(token)
	sw, err := s.st.SessionByTokenHash(ctx, h)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrSessionInvalid
	}
	if err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	now := s.now()
	if !now.Before(sw.ExpiresAt) || now.Sub(sw.LastSeenAt) > s.cfg.IdleTimeout {
		if _, err := s.st.DeleteSessionByTokenHash(ctx, h); err != nil {
			return nil, fmt.Errorf("authenticate: %w", err)
		}
		return nil, ErrSessionExpired
	}
	if sw.User.Status != store.UserActive {
		// Disabling deletes sessions already; this covers a race with it.
		if _, err := s.st.DeleteSessionByTokenHash(ctx, h); err != nil {
			return nil, fmt.Errorf("authenticate: %w", err)
		}
		return nil, ErrSessionInvalid
	}
	if sw.Status != store.SessionActive {
		return nil, ErrTwoFactorPending
	}
	sess := sessionOf(sw.Session, sw.User)
	if now.Sub(sw.LastSeenAt) >= s.cfg.TouchInterval {
		if _, err := s.st.SetSessionLastSeen(ctx, sw.ID, meta.ip(), now); err != nil {
			return nil, fmt.Errorf("authenticate: %w", err)
		}
		sess.LastSeenAt = now
		if ip := meta.ip(); ip != nil {
			sess.IP = ip
		}
	}
	return &sess, nil
}

// Logout ends the session behind token, active or pending. Unknown tokens
// are not an error: the cookie is gone either way.
func (s *Service) Logout(ctx context.Context, token string, meta Meta) error {
	if token == "" {
		return nil
	}
	h := hashToken(token)
	sw, err := s.st.SessionByTokenHash(ctx, h)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("logout: %w", err)
	}
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		if ok, err := tx.DeleteSessionByTokenHash(ctx, h); err != nil || !ok {
			return err
		}
		sess := sessionOf(sw.Session, sw.User)
		return s.activity(ctx, tx, sess.Actor(meta), kind.UserLoggedOut, "session", &sw.ID, "", nil)
	})
	if err != nil {
		return fmt.Errorf("logout: %w", err)
	}
	return nil
}

// SessionInfo is one of a user's sessions for the "your sessions" page.
type SessionInfo struct {
	ID         store.ID
	IP         *netip.Addr
	UserAgent  string
	CreatedAt  time.Time
	LastSeenAt time.Time
	ExpiresAt  time.Time
	// Current: the session making the request.
	Current bool
}

// ListSessions lists the actor's live signed-in sessions, most recently
// active first.
func (s *Service) ListSessions(ctx context.Context, a Actor) ([]SessionInfo, error) {
	if a.UserID == (store.ID{}) {
		return nil, ErrUnauthenticated
	}
	rows, err := s.st.UserSessions(ctx, a.UserID)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	now := s.now()
	out := []SessionInfo{}
	for _, r := range rows {
		if r.Status != store.SessionActive || !now.Before(r.ExpiresAt) || now.Sub(r.LastSeenAt) > s.cfg.IdleTimeout {
			continue
		}
		out = append(out, SessionInfo{
			ID: r.ID, IP: r.IPAddress, UserAgent: r.UserAgent, CreatedAt: r.CreatedAt,
			LastSeenAt: r.LastSeenAt, ExpiresAt: r.ExpiresAt, Current: a.SessionID != nil && *a.SessionID == r.ID,
		})
	}
	return out, nil
}

// RevokeSession ends one of the actor's own sessions (the current one too:
// that is a logout). ErrNotFound for another user's session.
func (s *Service) RevokeSession(ctx context.Context, a Actor, id store.ID) error {
	if a.UserID == (store.ID{}) {
		return ErrUnauthenticated
	}
	err := s.st.InTx(ctx, func(tx *store.Store) error {
		if err := tx.RevokeSession(ctx, a.UserID, id); errors.Is(err, store.ErrNotFound) {
			return ErrNotFound
		} else if err != nil {
			return err
		}
		current := a.SessionID != nil && *a.SessionID == id
		if err := s.event(ctx, tx, kind.SessionRevoked, store.SeverityInfo, &a.UserID, a.label(), a.Meta,
			map[string]any{"session_id": id.String(), "current": current}); err != nil {
			return err
		}
		return s.activity(ctx, tx, a, kind.SessionRevoked, "session", &id, "", nil)
	})
	if err != nil {
		return fmt.Errorf("revoke session: %w", err)
	}
	return nil
}

// SweepSessions deletes sessions past their absolute or idle timeout; for
// a periodic job. Authenticate refuses them anyway.
func (s *Service) SweepSessions(ctx context.Context) (int64, error) {
	n, err := s.st.DeleteExpiredSessions(ctx, s.now().Add(-s.cfg.IdleTimeout))
	if err != nil {
		return 0, fmt.Errorf("sweep sessions: %w", err)
	}
	return n, nil
}
