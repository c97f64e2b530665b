package store

import (
	"context"
	"net/netip"
	"time"

	"github.com/berthhq/berth/gen/dbsqlc"
)

// SessionStatus says how far a login got.
type SessionStatus string

// The session statuses. A pending_two_factor session grants nothing but the
// 2FA form; completing it creates a new, active session.
const (
	SessionPendingTwoFactor SessionStatus = "pending_two_factor"
	SessionActive           SessionStatus = "active"
)

// Session is a browser login. The cookie value is never stored, only its
// SHA-256, which is not a field either.
type Session struct {
	ID         ID
	UserID     ID
	Status     SessionStatus
	IPAddress  *netip.Addr
	UserAgent  string
	LastSeenAt time.Time
	ExpiresAt  time.Time
	CreatedAt  time.Time
}

// SessionWithUser is a session looked up from its cookie, with its user.
type SessionWithUser struct {
	Session
	User User
}

func sessionFromRow(r dbsqlc.Session) Session {
	return Session{
		ID: fromPG(r.ID), UserID: fromPG(r.UserID), Status: SessionStatus(r.Status),
		IPAddress: r.IpAddress, UserAgent: textOf(r.UserAgent),
		LastSeenAt: r.LastSeenAt, ExpiresAt: r.ExpiresAt, CreatedAt: r.CreatedAt,
	}
}

// CreateSessionParams describes a new session. TokenHash is the SHA-256 of
// the cookie value (32 bytes). Status defaults to active. ExpiresAt is the
// absolute lifetime.
type CreateSessionParams struct {
	ID        ID
	UserID    ID
	TokenHash []byte
	Status    SessionStatus
	IPAddress *netip.Addr
	UserAgent string
	ExpiresAt time.Time
}

// CreateSession stores a session.
func (s *Store) CreateSession(ctx context.Context, p CreateSessionParams) (Session, error) {
	if p.ID == (ID{}) {
		p.ID = NewID()
	}
	if p.Status == "" {
		p.Status = SessionActive
	}
	r, err := s.q.CreateSession(ctx, dbsqlc.CreateSessionParams{
		ID: pgID(p.ID), UserID: pgID(p.UserID), TokenHash: p.TokenHash, Status: string(p.Status),
		IpAddress: p.IPAddress, UserAgent: nullText(p.UserAgent), ExpiresAt: p.ExpiresAt,
	})
	if err != nil {
		return Session{}, mapErr("create session", err)
	}
	return sessionFromRow(r), nil
}

// SessionByTokenHash finds the session behind a cookie, with its user.
// ErrNotFound for an unknown hash or a session past its absolute expiry; the
// idle timeout is the caller's to check against LastSeenAt, as are the
// session's status and the user's.
func (s *Store) SessionByTokenHash(ctx context.Context, hash []byte) (SessionWithUser, error) {
	r, err := s.q.GetSessionByTokenHash(ctx, hash)
	if err != nil {
		return SessionWithUser{}, mapErr("get session", err)
	}
	return SessionWithUser{Session: sessionFromRow(r.Session), User: userFromRow(r.User)}, nil
}

// Session gets a session by id.
func (s *Store) Session(ctx context.Context, id ID) (Session, error) {
	r, err := s.q.GetSession(ctx, pgID(id))
	if err != nil {
		return Session{}, mapErr("get session", err)
	}
	return sessionFromRow(r), nil
}

// TouchSession records activity (at most one write a minute per session).
// ip, when not nil, becomes the session's latest address.
func (s *Store) TouchSession(ctx context.Context, id ID, ip *netip.Addr) error {
	return mapErr("touch session", s.q.TouchSession(ctx, dbsqlc.TouchSessionParams{ID: pgID(id), IpAddress: ip}))
}

// UserSessions lists a user's unexpired sessions, most recently active first.
func (s *Store) UserSessions(ctx context.Context, userID ID) ([]Session, error) {
	rows, err := s.q.ListSessionsForUser(ctx, pgID(userID))
	if err != nil {
		return nil, mapErr("list sessions", err)
	}
	out := make([]Session, len(rows))
	for i, r := range rows {
		out[i] = sessionFromRow(r)
	}
	return out, nil
}

// RevokeSession deletes one of userID's sessions; ErrNotFound when it does
// not exist or belongs to someone else.
func (s *Store) RevokeSession(ctx context.Context, userID, id ID) error {
	n, err := s.q.DeleteSession(ctx, dbsqlc.DeleteSessionParams{ID: pgID(id), UserID: pgID(userID)})
	return affected("revoke session", n, err)
}

// DeleteSessionByTokenHash ends the session behind a cookie (logout, or the
// pending session replaced after the 2FA step) and reports whether one was.
func (s *Store) DeleteSessionByTokenHash(ctx context.Context, hash []byte) (bool, error) {
	n, err := s.q.DeleteSessionByTokenHash(ctx, hash)
	return n > 0, mapErr("delete session", err)
}

// RevokeUserSessions deletes every session of a user except keep (nil: all),
// after a password or 2FA change or when the user is disabled.
func (s *Store) RevokeUserSessions(ctx context.Context, userID ID, keep *ID) (int64, error) {
	n, err := s.q.DeleteUserSessions(ctx, dbsqlc.DeleteUserSessionsParams{UserID: pgID(userID), Keep: pgOptID(keep)})
	return n, mapErr("revoke user sessions", err)
}

// DeleteExpiredSessions sweeps sessions past their absolute expiry or idle
// since before idleBefore.
func (s *Store) DeleteExpiredSessions(ctx context.Context, idleBefore time.Time) (int64, error) {
	n, err := s.q.DeleteExpiredSessions(ctx, idleBefore)
	return n, mapErr("delete expired sessions", err)
}

// SetSessionLastSeen records activity at a time given by the caller, whose
// clock the idle timeout is checked on; it never moves last_seen_at
// backwards and reports whether it wrote. ip, when not nil, becomes the
// session's latest address. How often to write is the caller's choice.
func (s *Store) SetSessionLastSeen(ctx context.Context, id ID, ip *netip.Addr, at time.Time) (bool, error) {
	n, err := s.q.SetSessionLastSeen(ctx, dbsqlc.SetSessionLastSeenParams{ID: pgID(id), IpAddress: ip, SeenAt: at})
	return n > 0, mapErr("set session last seen", err)
}
