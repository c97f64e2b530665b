package store

import (
	"context"
	"net/netip"
	"time"

	"github.com/berthhq/berth/gen/dbsqlc"
)

// LoginStage is the step of a login an attempt was at.
type LoginStage string

// The login stages.
const (
	StagePassword  LoginStage = "password"
	StageTwoFactor LoginStage = "two_factor" // TOTP or recovery code
	// StagePasswordReset is a request for a reset link: recorded succeeded
	// (accepted) or throttled, never failed, so it is no login failure.
	StagePasswordReset LoginStage = "password_reset"
)

// LoginResult is how an attempt ended.
type LoginResult string

// The login results.
const (
	LoginSucceeded LoginResult = "succeeded"
	LoginFailed    LoginResult = "failed"
	LoginThrottled LoginResult = "throttled"
)

// LoginAttempt is one recorded login attempt.
type LoginAttempt struct {
	ID        ID
	UserID    *ID    // nil when the email matched no user
	Email     string // as submitted
	IPAddress *netip.Addr
	UserAgent string
	Stage     LoginStage
	Result    LoginResult
	Reason    string // required unless succeeded: bad_password, bad_totp, throttled, ...
	CreatedAt time.Time
}

func loginAttemptFromRow(r dbsqlc.LoginAttempt) LoginAttempt {
	return LoginAttempt{
		ID: fromPG(r.ID), UserID: fromOptPG(r.UserID), Email: r.Email, IPAddress: r.IpAddress,
		UserAgent: textOf(r.UserAgent), Stage: LoginStage(r.Stage), Result: LoginResult(r.Result),
		Reason: textOf(r.Reason), CreatedAt: r.CreatedAt,
	}
}

// CreateLoginAttemptParams describes an attempt; Stage defaults to password.
type CreateLoginAttemptParams struct {
	ID        ID
	UserID    *ID
	Email     string
	IPAddress *netip.Addr
	UserAgent string
	Stage     LoginStage
	Result    LoginResult
	Reason    string
}

// CreateLoginAttempt records an attempt; ErrInvalid for a failure without a
// reason.
func (s *Store) CreateLoginAttempt(ctx context.Context, p CreateLoginAttemptParams) (LoginAttempt, error) {
	if p.ID == (ID{}) {
		p.ID = NewID()
	}
	if p.Stage == "" {
		p.Stage = StagePassword
	}
	r, err := s.q.CreateLoginAttempt(ctx, dbsqlc.CreateLoginAttemptParams{
		ID: pgID(p.ID), UserID: pgOptID(p.UserID), Email: p.Email, IpAddress: p.IPAddress,
		UserAgent: nullText(p.UserAgent), Stage: string(p.Stage), Result: string(p.Result), Reason: nullText(p.Reason),
	})
	if err != nil {
		return LoginAttempt{}, mapErr("create login attempt", err)
	}
	return loginAttemptFromRow(r), nil
}

// LoginFailures is a throttling window's count: failed attempts (throttled
// ones excluded) and when the latest happened (nil when none).
type LoginFailures struct {
	Count  int64
	LastAt *time.Time
}

func loginFailures(n int64, last time.Time) LoginFailures {
	if n == 0 {
		return LoginFailures{}
	}
	return LoginFailures{Count: n, LastAt: &last}
}

// LoginFailuresByEmail counts failed attempts for an address (any case)
// since a time.
func (s *Store) LoginFailuresByEmail(ctx context.Context, email string, since time.Time) (LoginFailures, error) {
	r, err := s.q.CountLoginFailuresByEmail(ctx, dbsqlc.CountLoginFailuresByEmailParams{Email: email, Since: since})
	if err != nil {
		return LoginFailures{}, mapErr("count login failures", err)
	}
	return loginFailures(r.Failures, r.LastFailureAt), nil
}

// ResetRequests is a reset throttling window: accepted requests and when
// the oldest of them was made (nil when none).
type ResetRequests struct {
	Count    int64
	OldestAt *time.Time
}

// PasswordResetRequests counts accepted password reset requests since a
// time, for an email (any case) when email is not "", else from ip.
func (s *Store) PasswordResetRequests(ctx context.Context, email string, ip *netip.Addr, since time.Time) (ResetRequests, error) {
	p := dbsqlc.CountPasswordResetRequestsParams{Since: since, Ip: ip}
	if email != "" {
		p.Email, p.Ip = &email, nil
	}
	r, err := s.q.CountPasswordResetRequests(ctx, p)
	if err != nil {
		return ResetRequests{}, mapErr("count password reset requests", err)
	}
	out := ResetRequests{Count: r.Requests}
	if r.Requests > 0 {
		at := r.OldestAt
		out.OldestAt = &at
	}
	return out, nil
}

// LoginFailuresByIP counts failed attempts from an address since a time.
func (s *Store) LoginFailuresByIP(ctx context.Context, ip netip.Addr, since time.Time) (LoginFailures, error) {
	r, err := s.q.CountLoginFailuresByIP(ctx, dbsqlc.CountLoginFailuresByIPParams{Ip: ip, Since: since})
	if err != nil {
		return LoginFailures{}, mapErr("count login failures", err)
	}
	return loginFailures(r.Failures, r.LastFailureAt), nil
}

// LoginAttemptFilter selects attempts; zero fields do not filter.
type LoginAttemptFilter struct {
	UserID *ID
	Email  string // any case
	IP     *netip.Addr
	Result LoginResult
	Since  *time.Time
	Before *ID
	Limit  int
}

// LoginAttempts lists attempts, newest first.
func (s *Store) LoginAttempts(ctx context.Context, f LoginAttemptFilter) ([]LoginAttempt, error) {
	before, lim := keyset(f.Before, f.Limit)
	rows, err := s.q.ListLoginAttempts(ctx, dbsqlc.ListLoginAttemptsParams{
		UserID: pgOptID(f.UserID), Email: nullText(f.Email), Ip: f.IP, Result: nullEnum(f.Result),
		Since: f.Since, Before: before, Lim: lim,
	})
	if err != nil {
		return nil, mapErr("list login attempts", err)
	}
	out := make([]LoginAttempt, len(rows))
	for i, r := range rows {
		out[i] = loginAttemptFromRow(r)
	}
	return out, nil
}

// CreateLoginAttemptAt records an attempt stamped with at rather than the
// database's clock, for callers that count throttling windows on their own
// (injectable) clock.
func (s *Store) CreateLoginAttemptAt(ctx context.Context, p CreateLoginAttemptParams, at time.Time) (LoginAttempt, error) {
	if p.ID == (ID{}) {
		p.ID = NewID()
	}
	if p.Stage == "" {
		p.Stage = StagePassword
	}
	r, err := s.q.CreateLoginAttemptAt(ctx, dbsqlc.CreateLoginAttemptAtParams{
		ID: pgID(p.ID), UserID: pgOptID(p.UserID), Email: p.Email, IpAddress: p.IPAddress,
		UserAgent: nullText(p.UserAgent), Stage: string(p.Stage), Result: string(p.Result), Reason: nullText(p.Reason),
		CreatedAt: at,
	})
	if err != nil {
		return LoginAttempt{}, mapErr("create login attempt", err)
	}
	return loginAttemptFromRow(r), nil
}

// LockPasswordResetWindow holds, until the transaction ends, the lock of
// one reset throttling key (an email, lowercased, or an address).
func (s *Store) LockPasswordResetWindow(ctx context.Context, key string) error {
	if err := s.q.LockPasswordResetWindow(ctx, key); err != nil {
		return mapErr("lock password reset window", err)
	}
	return nil
}
