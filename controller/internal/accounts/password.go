package accounts

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/mail"
	"github.com/berthhq/berth/controller/internal/password"
	"github.com/berthhq/berth/controller/internal/store"
)

// hashNew validates and hashes a new password.
func hashNew(pw string) (string, error) {
	if err := password.Validate(pw); err != nil {
		return "", fmt.Errorf("%w: %w", ErrWeakPassword, err)
	}
	h, err := password.Hash(pw)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return h, nil
}

// ChangePassword sets a new password after checking the current one (a
// failed check counts toward throttling). Every other session of the user
// is revoked and outstanding reset links die; the current session stays.
func (s *Service) ChangePassword(ctx context.Context, a Actor, current, next string) error {
	if err := s.requireSession(a); err != nil {
		return err
	}
	u, err := s.st.User(ctx, a.UserID)
	if err != nil {
		return fmt.Errorf("change password: %w", err)
	}
	// Validate before checking the old password, so a weak choice does not
	// cost an attempt.
	if err := password.Validate(next); err != nil {
		return fmt.Errorf("%w: %w", ErrWeakPassword, err)
	}
	at := attempt{email: u.Email, userID: &u.ID, stage: store.StagePassword, meta: a.Meta}
	if err := s.checkThrottle(ctx, at); err != nil {
		return err
	}
	hash, err := s.st.UserPasswordHash(ctx, u.ID)
	if err != nil {
		return fmt.Errorf("change password: %w", err)
	}
	if hash == "" || password.Verify(hash, current) != nil {
		return s.loginFailed(ctx, at, "bad_password", ErrWrongPassword)
	}
	newHash, err := hashNew(next)
	if err != nil {
		return err
	}
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		if _, err := tx.SetUserPassword(ctx, u.ID, newHash); err != nil {
			return err
		}
		n, err := tx.RevokeUserSessions(ctx, u.ID, a.SessionID)
		if err != nil {
			return err
		}
		if _, err := tx.DeleteUserPasswordResetTokens(ctx, u.ID); err != nil {
			return err
		}
		if err := s.event(ctx, tx, kind.PasswordChanged, store.SeverityInfo, &u.ID, a.label(), a.Meta,
			map[string]any{"sessions_revoked": n}); err != nil {
			return err
		}
		return s.activity(ctx, tx, a, kind.PasswordChanged, "user", &u.ID, u.Email,
			map[string]any{"password": changed})
	})
	if err != nil {
		return fmt.Errorf("change password: %w", err)
	}
	return nil
}

// RequestPasswordReset mails a single-use reset link (valid ResetTTL) to an
// active account with this email. It returns nil whether or not such an
// account exists, so the answer does not tell whether the email is
// registered, and neither does its timing: before answering it does only
// what it does for every address (check the address, the throttle windows,
// record the request); looking the account up, making the link and mailing
// it happen after the answer, in the background.
//
// Requests are throttled per account (the email as typed, any case, whether
// or not it has an account, so the throttle itself tells nothing) and per
// client address: *ThrottledError past Config.ResetThrottle's limits.
// Only infrastructure failures (the database) return another error.
func (s *Service) RequestPasswordReset(ctx context.Context, email string, meta Meta) error {
	email, err := normalizeEmail(email)
	if err != nil {
		return nil // same answer as for an unknown address
	}
	at := attempt{email: email, stage: store.StagePasswordReset, meta: meta}
	// Counting and recording happen under the window's locks (the email's,
	// then the address's: always in that order), so a burst of parallel
	// requests cannot all pass the count before any is recorded.
	var throttled *ThrottledError
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		if err := tx.LockPasswordResetWindow(ctx, "email:"+strings.ToLower(email)); err != nil {
			return err
		}
		if ip := at.meta.ip(); ip != nil {
			if err := tx.LockPasswordResetWindow(ctx, "ip:"+ip.String()); err != nil {
				return err
			}
		}
		var err error
		if throttled, err = s.checkResetThrottle(ctx, tx, at); err != nil || throttled != nil {
			return err
		}
		if _, err := tx.CreateLoginAttemptAt(ctx, at.params(store.LoginSucceeded, ""), s.now()); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("request password reset: %w", err)
	}
	if throttled != nil {
		return throttled
	}
	s.mailWG.Add(1)
	go func() {
		defer s.mailWG.Done()
		if s.resetHook != nil {
			s.resetHook()
		}
		// The request's context ends with the answer; this work must not.
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.MailTimeout)
		defer cancel()
		if err := s.sendResetLink(bctx, email, meta); err != nil {
			s.log.ErrorContext(bctx, "password reset request", "ip", meta.IP, "err", err)
		}
	}()
	return nil
}

// checkResetThrottle refuses a reset request past the per-account or the
// per-address limit of the window, saying when the window frees up.
// The refusal is recorded in tx (the attempt and a security event) and
// returned as the first result.
func (s *Service) checkResetThrottle(ctx context.Context, tx *store.Store, at attempt) (*ThrottledError, error) {
	th := s.cfg.ResetThrottle
	now := s.now()
	since := now.Add(-th.Window)
	wait, scope := time.Duration(0), ""
	check := func(r store.ResetRequests, limit int, sc string) {
		if r.Count >= int64(limit) && r.OldestAt != nil {
			if w := max(r.OldestAt.Add(th.Window).Sub(now), time.Second); w > wait {
				wait, scope = w, sc
			}
		}
	}
	r, err := tx.PasswordResetRequests(ctx, at.email, nil, since)
	if err != nil {
		return nil, fmt.Errorf("throttle: %w", err)
	}
	check(r, th.PerAccount, "account")
	if ip := at.meta.ip(); ip != nil {
		r, err := tx.PasswordResetRequests(ctx, "", ip, since)
		if err != nil {
			return nil, fmt.Errorf("throttle: %w", err)
		}
		check(r, th.PerIP, "ip")
	}
	if wait <= 0 {
		return nil, nil
	}
	if _, err := tx.CreateLoginAttemptAt(ctx, at.params(store.LoginThrottled, "throttled"), s.now()); err != nil {
		return nil, err
	}
	terr := &ThrottledError{RetryAfter: wait}
	if err := s.event(ctx, tx, kind.PasswordResetLimit, store.SeverityWarning, nil, at.email, at.meta, map[string]any{
		"scope": scope, "email": at.email, "retry_after_seconds": terr.Seconds(),
	}); err != nil {
		return nil, err
	}
	return terr, nil
}

// sendResetLink is the part of a reset request that depends on whether the
// account exists; it runs after the answer.
func (s *Service) sendResetLink(ctx context.Context, email string, meta Meta) error {
	u, err := s.st.UserByEmail(ctx, email)
	if errors.Is(err, store.ErrNotFound) || (err == nil && u.Status != store.UserActive) {
		s.log.InfoContext(ctx, "password reset requested for no active account", "ip", meta.IP)
		return nil
	}
	if err != nil {
		return err
	}
	tok := randomToken()
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		t, err := tx.CreatePasswordResetToken(ctx, store.CreatePasswordResetTokenParams{
			UserID: u.ID, Email: u.Email, Purpose: store.PurposeReset, TokenHash: hashToken(tok),
			RequestedIP: meta.ip(), ExpiresAt: s.now().Add(s.cfg.ResetTTL),
		})
		if err != nil {
			return err
		}
		if err := s.event(ctx, tx, kind.PasswordResetAsked, store.SeverityInfo, &u.ID, "anonymous", meta, nil); err != nil {
			return err
		}
		// Not yet proven to be the user: recorded without the user as actor.
		return s.activity(ctx, tx, Actor{Meta: meta}, kind.PasswordResetAsked, "user", &u.ID, u.Email,
			map[string]any{"expires_at": t.ExpiresAt})
	})
	if err != nil {
		return err
	}
	m := mail.Message{
		To:      u.Email,
		Subject: "Reset your Berth password",
		Text: fmt.Sprintf("Someone (hopefully you) asked to reset the password of the Berth account %s.\n\n"+
			"Open this link within %s to choose a new password:\n\n%s\n\n"+
			"If you did not ask for this, ignore this mail: your password stays as it is.\n",
			u.Email, humanDuration(s.cfg.ResetTTL), s.link("reset", tok)),
	}
	if err := s.mail.Send(ctx, m); err != nil {
		s.log.ErrorContext(ctx, "sending mail failed", "to", m.To, "subject", m.Subject, "err", err)
	}
	return nil
}

// ResetPassword redeems a reset link: the link is used up, the password
// set, and every session of the user revoked. It does not sign the user in,
// and 2FA stays as it was: the next login still asks for the code.
// ErrLinkExpired, ErrLinkUsed or ErrLinkInvalid for a bad link;
// ErrWeakPassword (link not used up) for a refused password.
func (s *Service) ResetPassword(ctx context.Context, token, newPassword string, meta Meta) error {
	newHash, err := hashNew(newPassword)
	if err != nil {
		return err
	}
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		t, err := s.consumeLink(ctx, tx, token, store.PurposeReset)
		if err != nil {
			return err
		}
		u, err := tx.SetUserPassword(ctx, t.UserID, newHash)
		if err != nil {
			return err
		}
		n, err := tx.RevokeUserSessions(ctx, u.ID, nil)
		if err != nil {
			return err
		}
		a := userActor(u, nil, meta)
		if err := s.event(ctx, tx, kind.PasswordReset, store.SeverityWarning, &u.ID, a.label(), meta,
			map[string]any{"sessions_revoked": n}); err != nil {
			return err
		}
		return s.activity(ctx, tx, a, kind.PasswordReset, "user", &u.ID, u.Email, map[string]any{"password": changed})
	})
	if err != nil {
		return fmt.Errorf("reset password: %w", err)
	}
	return nil
}

// consumeLink uses up a reset or invite link inside tx, or says why not.
func (s *Service) consumeLink(ctx context.Context, tx *store.Store, token string, purpose store.ResetPurpose) (store.PasswordResetToken, error) {
	h := hashToken(token)
	t, err := tx.ConsumePasswordResetToken(ctx, h, purpose)
	if errors.Is(err, store.ErrNotFound) {
		old, lerr := tx.PasswordResetTokenByHash(ctx, h, purpose)
		switch {
		case errors.Is(lerr, store.ErrNotFound):
			return t, ErrLinkInvalid
		case lerr != nil:
			return t, lerr
		case old.UsedAt != nil:
			return t, ErrLinkUsed
		case !s.now().Before(old.ExpiresAt):
			return t, ErrLinkExpired
		}
		return t, ErrLinkInvalid // the account changed (email, disabled)
	}
	if err != nil {
		return t, err
	}
	// The database checked expiry on its own clock; check ours too (the
	// transaction rolls back, so the link is not spent by this refusal).
	if !s.now().Before(t.ExpiresAt) {
		return t, ErrLinkExpired
	}
	return t, nil
}

func (s *Service) link(kind, tok string) string { return s.base + "/" + kind + "/" + tok }

func humanDuration(d time.Duration) string {
	switch {
	case d%time.Hour == 0 && d >= 2*time.Hour:
		return fmt.Sprintf("%d hours", d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("%d minutes", d/time.Minute)
	}
	return d.String()
}
