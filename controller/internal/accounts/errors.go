package accounts

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/berthhq/berth/controller/internal/auth"
)

// Errors callers branch on (errors.Is). Their messages are fit to show.
var (
	// ErrUnauthenticated: no valid actor (shared with package auth).
	ErrUnauthenticated = auth.ErrUnauthenticated
	// ErrForbidden: the actor's role or token scopes do not allow it.
	ErrForbidden = auth.ErrForbidden

	// ErrInvalidCredentials: unknown email or wrong password; the two are
	// deliberately not told apart.
	ErrInvalidCredentials = errors.New("invalid email or password")
	// ErrAccountDisabled: the password was right but the account is
	// disabled (only someone who knows the password learns this).
	ErrAccountDisabled = errors.New("this account is disabled")
	// ErrWrongPassword: re-authentication failed (current password).
	ErrWrongPassword = errors.New("current password is wrong")
	// ErrWeakPassword wraps the reason a new password was refused.
	ErrWeakPassword = errors.New("password not accepted")
	// ErrThrottled: too many failed attempts; the error is a
	// *ThrottledError with the wait.
	ErrThrottled = errors.New("too many attempts")

	// ErrInvalidCode: a wrong TOTP or recovery code.
	ErrInvalidCode = errors.New("invalid authentication code")
	// ErrCodeReused: a TOTP code that was already used (a replay). It
	// also matches ErrInvalidCode.
	ErrCodeReused = fmt.Errorf("%w: code already used, wait for the next one", ErrInvalidCode)
	// ErrTwoFactorEnabled: 2FA is on; disable it first to enrol anew.
	ErrTwoFactorEnabled = errors.New("two-factor authentication is already enabled")
	// ErrTwoFactorNotEnabled: there is no 2FA to disable or codes to renew.
	ErrTwoFactorNotEnabled = errors.New("two-factor authentication is not enabled")
	// ErrNoTwoFactorSetup: confirm called without BeginTwoFactor first.
	ErrNoTwoFactorSetup = errors.New("no two-factor setup in progress: start again")

	// ErrSessionInvalid: no such session, or it ended. Sign in again.
	ErrSessionInvalid = errors.New("session is invalid, sign in again")
	// ErrSessionExpired: the session timed out (idle or absolute). It
	// also matches ErrSessionInvalid.
	ErrSessionExpired = fmt.Errorf("%w: it expired", ErrSessionInvalid)
	// ErrTwoFactorPending: the session still needs the second factor.
	ErrTwoFactorPending = errors.New("two-factor code required")

	// ErrLinkInvalid: a reset or invite link that does not exist (or was
	// replaced by a newer one, or its account changed).
	ErrLinkInvalid = errors.New("this link is not valid")
	// ErrLinkExpired: the link is past its lifetime. Matches ErrLinkInvalid.
	ErrLinkExpired = fmt.Errorf("%w: it has expired, ask for a new one", ErrLinkInvalid)
	// ErrLinkUsed: the link was already used. Matches ErrLinkInvalid.
	ErrLinkUsed = fmt.Errorf("%w: it was already used", ErrLinkInvalid)

	// ErrNotFound: no such user, session or token (for this actor).
	ErrNotFound = errors.New("not found")
	// ErrEmailTaken: another account has this email.
	ErrEmailTaken = errors.New("an account with this email already exists")
	// ErrInvalidInput wraps what is wrong with an argument (email, role,
	// token name, scopes, expiry).
	ErrInvalidInput = errors.New("invalid input")
	// ErrCannotDisableSelf: an admin cannot disable their own account.
	ErrCannotDisableSelf = errors.New("you cannot disable your own account")
	// ErrLastAdmin: the action would leave no active admin.
	ErrLastAdmin = errors.New("this is the last active admin")
	// ErrMailFailed: the action was done but its mail could not be sent;
	// the wrapped error says why.
	ErrMailFailed = errors.New("mail could not be sent")
)

// ThrottledError says how long to wait before the next attempt.
type ThrottledError struct {
	RetryAfter time.Duration
}

func (e *ThrottledError) Error() string {
	if n := e.Seconds(); n != 1 {
		return fmt.Sprintf("too many attempts, try again in %d seconds", n)
	}
	return "too many attempts, try again in 1 second"
}

// Seconds is RetryAfter rounded up, for a Retry-After header.
func (e *ThrottledError) Seconds() int {
	return int(math.Ceil(e.RetryAfter.Seconds()))
}

// Is makes errors.Is(err, ErrThrottled) true.
func (e *ThrottledError) Is(target error) bool { return target == ErrThrottled }

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidInput, fmt.Sprintf(format, a...))
}
