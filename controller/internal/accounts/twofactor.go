package accounts

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"image/png"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/password"
	"github.com/berthhq/berth/controller/internal/store"
)

// TOTP parameters (RFC 6238 defaults, which every authenticator app
// supports): SHA-1, 6 digits, 30 s steps, one step of clock skew either way.
const (
	totpPeriod = 30
	totpSkew   = 1
	// RecoveryCodeCount is how many recovery codes a user gets.
	RecoveryCodeCount = 10
)

var totpOpts = totp.ValidateOpts{Period: totpPeriod, Skew: 0, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}

// TwoFactorSetup is a new, unconfirmed TOTP enrolment, shown once.
type TwoFactorSetup struct {
	Secret string // base32, for typing into an app
	URL    string // otpauth:// URL
	QRPNG  []byte // the URL as a QR code
}

// BeginTwoFactor starts enrolment: a new secret is stored (encrypted) but
// not enforced until ConfirmTwoFactor. With 2FA already on it is refused:
// replacing the secret would switch 2FA off without re-authentication.
func (s *Service) BeginTwoFactor(ctx context.Context, a Actor) (*TwoFactorSetup, error) {
	if err := s.requireSession(a); err != nil {
		return nil, err
	}
	u, err := s.st.User(ctx, a.UserID)
	if err != nil {
		return nil, fmt.Errorf("begin two-factor: %w", err)
	}
	if u.TwoFactorEnabled {
		return nil, ErrTwoFactorEnabled
	}
	key, err := totp.Generate(totp.GenerateOpts{
		Issuer: s.cfg.Issuer, AccountName: u.Email, Period: totpPeriod, SecretSize: 20,
		Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1,
	})
	if err != nil {
		return nil, fmt.Errorf("begin two-factor: %w", err)
	}
	img, err := key.Image(256, 256)
	if err != nil {
		return nil, fmt.Errorf("begin two-factor: qr: %w", err)
	}
	var qr bytes.Buffer
	if err := png.Encode(&qr, img); err != nil {
		return nil, fmt.Errorf("begin two-factor: qr: %w", err)
	}
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		if err := tx.SetUserTwoFactor(ctx, u.ID, []byte(key.Secret())); err != nil {
			return err
		}
		return s.activity(ctx, tx, a, kind.TwoFactorSetup, "user", &u.ID, u.Email,
			map[string]any{"two_factor_secret": changed})
	})
	if err != nil {
		return nil, fmt.Errorf("begin two-factor: %w", err)
	}
	return &TwoFactorSetup{Secret: key.Secret(), URL: key.URL(), QRPNG: qr.Bytes()}, nil
}

// ConfirmTwoFactor turns 2FA on with a first valid code and returns the
// recovery codes, shown once. The user's other sessions are revoked.
func (s *Service) ConfirmTwoFactor(ctx context.Context, a Actor, code string) ([]string, error) {
	if err := s.requireSession(a); err != nil {
		return nil, err
	}
	u, err := s.st.User(ctx, a.UserID)
	if err != nil {
		return nil, fmt.Errorf("confirm two-factor: %w", err)
	}
	if u.TwoFactorEnabled {
		return nil, ErrTwoFactorEnabled
	}
	if !u.TwoFactorPending {
		return nil, ErrNoTwoFactorSetup
	}
	secret, err := s.st.UserTwoFactorSecret(ctx, u.ID)
	if err != nil {
		return nil, fmt.Errorf("confirm two-factor: %w", err)
	}
	step, ok := matchTOTP(string(secret), code, s.now())
	if !ok {
		return nil, ErrInvalidCode
	}
	codes, hashes := newRecoveryCodes()
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		if _, err := tx.ConfirmUserTwoFactor(ctx, u.ID, step); errors.Is(err, store.ErrNotFound) {
			return ErrNoTwoFactorSetup
		} else if err != nil {
			return err
		}
		if err := tx.SetUserRecoveryCodes(ctx, u.ID, hashes); err != nil {
			return err
		}
		n, err := tx.RevokeUserSessions(ctx, u.ID, a.SessionID)
		if err != nil {
			return err
		}
		if err := s.event(ctx, tx, kind.TwoFactorEnabled, store.SeverityInfo, &u.ID, a.label(), a.Meta,
			map[string]any{"sessions_revoked": n}); err != nil {
			return err
		}
		return s.activity(ctx, tx, a, kind.TwoFactorEnabled, "user", &u.ID, u.Email,
			map[string]any{"two_factor": change(false, true), "recovery_codes": changed})
	})
	if err != nil {
		return nil, fmt.Errorf("confirm two-factor: %w", err)
	}
	return codes, nil
}

// DisableTwoFactor turns 2FA off (or abandons an unconfirmed setup). It
// needs the current password and, when 2FA is on, a current TOTP or
// recovery code. The user's other sessions are revoked.
func (s *Service) DisableTwoFactor(ctx context.Context, a Actor, currentPassword, code string) error {
	if err := s.requireSession(a); err != nil {
		return err
	}
	u, err := s.st.User(ctx, a.UserID)
	if err != nil {
		return fmt.Errorf("disable two-factor: %w", err)
	}
	if !u.TwoFactorEnabled && !u.TwoFactorPending {
		return ErrTwoFactorNotEnabled
	}
	if err := s.reauthenticate(ctx, a, u, currentPassword, code); err != nil {
		return err
	}
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		if _, err := tx.DisableUserTwoFactor(ctx, u.ID); err != nil {
			return err
		}
		n, err := tx.RevokeUserSessions(ctx, u.ID, a.SessionID)
		if err != nil {
			return err
		}
		if err := s.event(ctx, tx, kind.TwoFactorDisabled, store.SeverityWarning, &u.ID, a.label(), a.Meta,
			map[string]any{"sessions_revoked": n, "was_enabled": u.TwoFactorEnabled}); err != nil {
			return err
		}
		return s.activity(ctx, tx, a, kind.TwoFactorDisabled, "user", &u.ID, u.Email,
			map[string]any{"two_factor": change(u.TwoFactorEnabled, false)})
	})
	if err != nil {
		return fmt.Errorf("disable two-factor: %w", err)
	}
	return nil
}

// RegenerateRecoveryCodes replaces the recovery codes (the old ones stop
// working) after re-authentication with the password and a current code,
// and returns the new ones, shown once. Other sessions are revoked.
func (s *Service) RegenerateRecoveryCodes(ctx context.Context, a Actor, currentPassword, code string) ([]string, error) {
	if err := s.requireSession(a); err != nil {
		return nil, err
	}
	u, err := s.st.User(ctx, a.UserID)
	if err != nil {
		return nil, fmt.Errorf("regenerate recovery codes: %w", err)
	}
	if !u.TwoFactorEnabled {
		return nil, ErrTwoFactorNotEnabled
	}
	if err := s.reauthenticate(ctx, a, u, currentPassword, code); err != nil {
		return nil, err
	}
	codes, hashes := newRecoveryCodes()
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		if err := tx.SetUserRecoveryCodes(ctx, u.ID, hashes); err != nil {
			return err
		}
		n, err := tx.RevokeUserSessions(ctx, u.ID, a.SessionID)
		if err != nil {
			return err
		}
		if err := s.event(ctx, tx, kind.RecoveryCodesNew, store.SeverityInfo, &u.ID, a.label(), a.Meta,
			map[string]any{"sessions_revoked": n}); err != nil {
			return err
		}
		return s.activity(ctx, tx, a, kind.RecoveryCodesNew, "user", &u.ID, u.Email,
			map[string]any{"recovery_codes": changed})
	})
	if err != nil {
		return nil, fmt.Errorf("regenerate recovery codes: %w", err)
	}
	return codes, nil
}

// reauthenticate checks the password (and, with 2FA on, a code) before a
// sensitive change. It is throttled and recorded like a login, so a stolen
// session cannot be used to guess the password.
func (s *Service) reauthenticate(ctx context.Context, a Actor, u store.User, pw, code string) error {
	at := attempt{email: u.Email, userID: &u.ID, stage: store.StagePassword, meta: a.Meta}
	if err := s.checkThrottle(ctx, at); err != nil {
		return err
	}
	hash, err := s.st.UserPasswordHash(ctx, u.ID)
	if err != nil {
		return fmt.Errorf("re-authenticate: %w", err)
	}
	if hash == "" || password.Verify(hash, pw) != nil {
		return s.loginFailed(ctx, at, "bad_password", ErrWrongPassword)
	}
	if !u.TwoFactorEnabled {
		return nil
	}
	at.stage = store.StageTwoFactor
	if reason, err := s.checkSecondFactor(ctx, u, code, a.Meta); err != nil {
		if reason == "" {
			return err
		}
		return s.loginFailed(ctx, at, reason, err)
	}
	return nil
}

// checkSecondFactor accepts a current TOTP code (each time step once) or
// an unused recovery code (then spent). On refusal it returns the login
// attempt reason with ErrInvalidCode or ErrCodeReused; reason "" means an
// internal error.
func (s *Service) checkSecondFactor(ctx context.Context, u store.User, code string, meta Meta) (reason string, err error) {
	code = strings.Join(strings.Fields(code), "")
	if isTOTPCode(code) {
		secret, err := s.st.UserTwoFactorSecret(ctx, u.ID)
		if err != nil {
			return "", fmt.Errorf("second factor: %w", err)
		}
		step, ok := matchTOTP(string(secret), code, s.now())
		if !ok {
			return "bad_totp", ErrInvalidCode
		}
		fresh, err := s.st.UseUserTOTPStep(ctx, u.ID, step)
		if err != nil {
			return "", fmt.Errorf("second factor: %w", err)
		}
		if !fresh {
			if err := s.event(ctx, s.st, kind.TwoFactorReplayed, store.SeverityWarning, &u.ID, u.Email, meta,
				map[string]any{"step": step}); err != nil {
				return "", err
			}
			return "totp_replay", ErrCodeReused
		}
		return "", nil
	}

	want := hashRecoveryCode(code)
	used, remaining, err := s.st.ConsumeUserRecoveryCode(ctx, u.ID, func(stored string) bool {
		return subtle.ConstantTimeCompare([]byte(stored), []byte(want)) == 1
	})
	if err != nil {
		return "", fmt.Errorf("second factor: %w", err)
	}
	if !used {
		return "bad_recovery_code", ErrInvalidCode
	}
	sev := store.SeverityWarning
	if err := s.event(ctx, s.st, kind.RecoveryCodeUsed, sev, &u.ID, u.Email, meta,
		map[string]any{"remaining": remaining}); err != nil {
		return "", err
	}
	return "", nil
}

func isTOTPCode(code string) bool {
	if len(code) != 6 {
		return false
	}
	for _, c := range code {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// matchTOTP checks code against the steps around now and returns the
// matching step (unix time / 30), which the caller marks as used.
func matchTOTP(secret, code string, now time.Time) (int64, bool) {
	code = strings.Join(strings.Fields(code), "")
	if !isTOTPCode(code) {
		return 0, false
	}
	var step int64
	found := false
	for off := -totpSkew; off <= totpSkew; off++ {
		t := now.Add(time.Duration(off) * totpPeriod * time.Second)
		want, err := totp.GenerateCodeCustom(secret, t, totpOpts)
		if err != nil {
			return 0, false
		}
		// No early exit: every candidate is compared.
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 && !found {
			step, found = t.Unix()/totpPeriod, true
		}
	}
	return step, found
}

// Recovery codes are 10 characters of base32 (50 bits), shown as
// "xxxxx-xxxxx". Only their SHA-256 is stored (inside the encrypted
// column): they are random enough that a fast hash does not help guessing.
var recoveryEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func newRecoveryCodes() (codes, hashes []string) {
	for range RecoveryCodeCount {
		var b [7]byte
		if _, err := rand.Read(b[:]); err != nil {
			panic(fmt.Sprintf("accounts: crypto/rand: %v", err))
		}
		c := recoveryEncoding.EncodeToString(b[:])[:10]
		codes = append(codes, c[:5]+"-"+c[5:])
		hashes = append(hashes, hashRecoveryCode(c))
	}
	return codes, hashes
}

// hashRecoveryCode normalises what was typed (case, dashes, spaces) and
// hashes it.
func hashRecoveryCode(code string) string {
	code = strings.ToLower(strings.NewReplacer("-", "", " ", "").Replace(code))
	sum := sha256.Sum256([]byte("berth-recovery-code:" + code))
	return hex.EncodeToString(sum[:])
}
