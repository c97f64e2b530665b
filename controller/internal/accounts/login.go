package accounts

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"time"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/password"
	"github.com/berthhq/berth/controller/internal/store"
)

// LoginResult is a successful first or second login step. Token is the
// new session's cookie value, returned only here.
type LoginResult struct {
	Token   string
	Session Session
	// TwoFactorRequired: Token belongs to a pending session that grants
	// nothing but VerifySecondFactor; Session.ExpiresAt is the deadline
	// for the code.
	TwoFactorRequired bool
}

// attempt is one login attempt to record.
type attempt struct {
	email  string
	userID *store.ID
	stage  store.LoginStage
	meta   Meta
}

// Login checks an email and password. On success it returns an active
// session, or a pending one when the account has 2FA. Failures are
// ErrInvalidCredentials (unknown email, wrong password, account not yet
// activated, all alike), ErrAccountDisabled, or a *ThrottledError.
func (s *Service) Login(ctx context.Context, email, pw string, meta Meta) (*LoginResult, error) {
	email = strings.TrimSpace(email)
	at := attempt{email: email, stage: store.StagePassword, meta: meta}
	if err := s.checkThrottle(ctx, at); err != nil {
		return nil, err
	}

	u, err := s.st.UserByEmail(ctx, email)
	if errors.Is(err, store.ErrNotFound) {
		_ = password.Verify(s.dummyHash, pw) // same cost as a real account
		return nil, s.loginFailed(ctx, at, "unknown_email", ErrInvalidCredentials)
	}
	if err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	at.userID = idPtr(u.ID)
	hash, err := s.st.UserPasswordHash(ctx, u.ID)
	if err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	if hash == "" { // invited, no password yet
		_ = password.Verify(s.dummyHash, pw)
		return nil, s.loginFailed(ctx, at, "user_invited", ErrInvalidCredentials)
	}
	if err := password.Verify(hash, pw); err != nil {
		if !errors.Is(err, password.ErrMismatch) {
			s.log.ErrorContext(ctx, "stored password hash unusable", "user", u.ID, "err", err)
		}
		return nil, s.loginFailed(ctx, at, "bad_password", ErrInvalidCredentials)
	}
	// Checked after the password, so only someone who knows it learns that
	// the account exists and is disabled.
	if u.Status != store.UserActive {
		return nil, s.loginFailed(ctx, at, "user_disabled", ErrAccountDisabled)
	}
	if password.NeedsRehash(hash) {
		s.rehash(ctx, u.ID, pw)
	}

	if u.TwoFactorEnabled {
		res, err := s.newSession(ctx, s.st, u, store.SessionPendingTwoFactor, meta)
		if err != nil {
			return nil, err
		}
		// The password step succeeded; the login completes only with the
		// second factor, recorded as its own attempt.
		if err := s.recordAttempt(ctx, at, store.LoginSucceeded, ""); err != nil {
			return nil, err
		}
		return res, nil
	}
	return s.completeLogin(ctx, s.st, u, at)
}

// VerifySecondFactor completes a login with a TOTP code or a recovery code
// for the pending session behind pendingToken. On success the pending
// session is deleted and a new, active session (with a new token) is
// returned, so a token seen before the second factor is worth nothing
// after it (session fixation). A wrong code counts toward throttling like
// a wrong password; the pending session stays usable until it expires.
func (s *Service) VerifySecondFactor(ctx context.Context, pendingToken, code string, meta Meta) (*LoginResult, error) {
	sw, err := s.st.SessionByTokenHash(ctx, hashToken(pendingToken))
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrSessionInvalid
	}
	if err != nil {
		return nil, fmt.Errorf("verify second factor: %w", err)
	}
	if sw.Status != store.SessionPendingTwoFactor {
		return nil, ErrSessionInvalid
	}
	u := sw.User
	if !s.now().Before(sw.ExpiresAt) || u.Status != store.UserActive || !u.TwoFactorEnabled {
		_, _ = s.st.DeleteSessionByTokenHash(ctx, hashToken(pendingToken))
		return nil, ErrSessionExpired
	}
	at := attempt{email: u.Email, userID: idPtr(u.ID), stage: store.StageTwoFactor, meta: meta}
	if err := s.checkThrottle(ctx, at); err != nil {
		return nil, err
	}
	if reason, err := s.checkSecondFactor(ctx, u, code, meta); err != nil {
		if reason == "" {
			return nil, err
		}
		return nil, s.loginFailed(ctx, at, reason, err)
	}

	var res *LoginResult
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		if ok, err := tx.DeleteSessionByTokenHash(ctx, hashToken(pendingToken)); err != nil {
			return err
		} else if !ok {
			return ErrSessionInvalid // completed concurrently
		}
		var err error
		res, err = s.completeLogin(ctx, tx, u, at)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("verify second factor: %w", err)
	}
	return res, nil
}

// completeLogin creates the active session and records the success.
func (s *Service) completeLogin(ctx context.Context, st *store.Store, u store.User, at attempt) (*LoginResult, error) {
	res, err := s.newSession(ctx, st, u, store.SessionActive, at.meta)
	if err != nil {
		return nil, err
	}
	if err := st.RecordUserLogin(ctx, u.ID, at.meta.ip()); err != nil {
		return nil, err
	}
	if _, err := st.CreateLoginAttemptAt(ctx, at.params(store.LoginSucceeded, ""), s.now()); err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "login", "user", u.ID, "email", u.Email, "ip", at.meta.IP, "stage", at.stage)
	return res, nil
}

func (s *Service) newSession(ctx context.Context, st *store.Store, u store.User, status store.SessionStatus, meta Meta) (*LoginResult, error) {
	tok := randomToken()
	ttl := s.cfg.AbsoluteTimeout
	if status == store.SessionPendingTwoFactor {
		ttl = s.cfg.TwoFactorTimeout
	}
	row, err := st.CreateSession(ctx, store.CreateSessionParams{
		UserID: u.ID, TokenHash: hashToken(tok), Status: status,
		IPAddress: meta.ip(), UserAgent: meta.UserAgent, ExpiresAt: s.now().Add(ttl),
	})
	if err != nil {
		return nil, fmt.Errorf("create session: %w", err)
	}
	// The row's last_seen_at is the database's clock; the idle timeout is
	// measured on ours, so start it from ours.
	if now := s.now(); row.LastSeenAt.Before(now) {
		if _, err := st.SetSessionLastSeen(ctx, row.ID, nil, now); err != nil {
			return nil, fmt.Errorf("create session: %w", err)
		}
		row.LastSeenAt = now
	}
	return &LoginResult{Token: tok, Session: sessionOf(row, u), TwoFactorRequired: status == store.SessionPendingTwoFactor}, nil
}

// rehash upgrades a password hash made with weaker parameters. A failure
// only costs the upgrade.
func (s *Service) rehash(ctx context.Context, id store.ID, pw string) {
	h, err := password.Hash(pw)
	if err == nil {
		_, err = s.st.SetUserPassword(ctx, id, h)
	}
	if err != nil {
		s.log.WarnContext(ctx, "password rehash failed", "user", id, "err", err)
	}
}

func (a attempt) params(result store.LoginResult, reason string) store.CreateLoginAttemptParams {
	return store.CreateLoginAttemptParams{
		UserID: a.userID, Email: a.email, IPAddress: a.meta.ip(), UserAgent: a.meta.UserAgent,
		Stage: a.stage, Result: result, Reason: reason,
	}
}

func (s *Service) recordAttempt(ctx context.Context, at attempt, result store.LoginResult, reason string) error {
	if _, err := s.st.CreateLoginAttemptAt(ctx, at.params(result, reason), s.now()); err != nil {
		return fmt.Errorf("record login attempt: %w", err)
	}
	return nil
}

// loginFailed records a failed attempt, raises login_failed_burst when the
// failure brings the account (or IP) to its threshold, and returns fail.
func (s *Service) loginFailed(ctx context.Context, at attempt, reason string, fail error) error {
	if err := s.recordAttempt(ctx, at, store.LoginFailed, reason); err != nil {
		return err
	}
	s.log.InfoContext(ctx, "login failed", "email", at.email, "ip", at.meta.IP, "stage", at.stage, "reason", reason)
	th := s.cfg.Throttle
	since := s.now().Add(-th.Window)
	f, err := s.st.LoginFailuresByEmail(ctx, at.email, since)
	if err != nil {
		return fmt.Errorf("count login failures: %w", err)
	}
	// Exactly at the threshold, so one burst raises one event, not one per
	// further failure.
	if f.Count == int64(th.AccountThreshold) {
		if err := s.event(ctx, s.st, kind.LoginFailedBurst, store.SeverityWarning, at.userID, at.email, at.meta, map[string]any{
			"scope": "account", "email": at.email, "failures": f.Count, "window_seconds": int(th.Window.Seconds()),
		}); err != nil {
			return err
		}
	}
	if ip := at.meta.ip(); ip != nil {
		f, err := s.st.LoginFailuresByIP(ctx, *ip, since)
		if err != nil {
			return fmt.Errorf("count login failures: %w", err)
		}
		if f.Count == int64(th.IPThreshold) {
			if err := s.event(ctx, s.st, kind.LoginFailedBurst, store.SeverityWarning, nil, "anonymous", at.meta, map[string]any{
				"scope": "ip", "failures": f.Count, "window_seconds": int(th.Window.Seconds()),
			}); err != nil {
				return err
			}
		}
	}
	return fail
}

// checkThrottle refuses an attempt while the account's or the IP's
// failures call for a wait, recording the refusal.
func (s *Service) checkThrottle(ctx context.Context, at attempt) error {
	th := s.cfg.Throttle
	now := s.now()
	since := now.Add(-th.Window)
	f, err := s.st.LoginFailuresByEmail(ctx, at.email, since)
	if err != nil {
		return fmt.Errorf("throttle: %w", err)
	}
	wait, scope := th.wait(f, th.AccountThreshold, now), "account"
	if ip := at.meta.ip(); ip != nil {
		f, err := s.st.LoginFailuresByIP(ctx, *ip, since)
		if err != nil {
			return fmt.Errorf("throttle: %w", err)
		}
		if w := th.wait(f, th.IPThreshold, now); w > wait {
			wait, scope = w, "ip"
		}
	}
	if wait <= 0 {
		return nil
	}
	if err := s.recordAttempt(ctx, at, store.LoginThrottled, "throttled"); err != nil {
		return err
	}
	terr := &ThrottledError{RetryAfter: wait}
	if err := s.event(ctx, s.st, kind.LoginThrottled, store.SeverityWarning, at.userID, at.email, at.meta, map[string]any{
		"scope": scope, "email": at.email, "stage": string(at.stage), "retry_after_seconds": terr.Seconds(),
	}); err != nil {
		return err
	}
	return terr
}

// wait is how long after now the next attempt must wait given the failures
// in the window: none below the threshold, then BaseDelay after the latest
// failure, doubling per failure beyond the threshold, capped at MaxDelay.
func (th Throttle) wait(f store.LoginFailures, threshold int, now time.Time) time.Duration {
	if f.Count < int64(threshold) || f.LastAt == nil {
		return 0
	}
	d := th.BaseDelay
	for i := int64(threshold); i < f.Count && d < th.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, th.MaxDelay)
	return max(f.LastAt.Add(d).Sub(now), 0)
}

// normalizeEmail trims an address and checks that it is a bare address.
func normalizeEmail(email string) (string, error) {
	email = strings.TrimSpace(email)
	if len(email) < 3 || len(email) > 254 {
		return "", invalid("email must be 3 to 254 characters")
	}
	a, err := mail.ParseAddress(email)
	if err != nil || a.Address != email || a.Name != "" {
		return "", invalid("%q is not an email address", email)
	}
	return email, nil
}
