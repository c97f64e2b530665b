package web

import (
	"errors"
	"net/http"
	"time"

	"github.com/berthhq/berth/controller/internal/accounts"
	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
)

// accountsStatus maps the remaining service errors to HTTP statuses;
// anything unknown is a 500.
func accountsStatus(err error) int {
	switch {
	case errors.Is(err, accounts.ErrThrottled):
		return http.StatusTooManyRequests
	case errors.Is(err, auth.ErrUnauthenticated), errors.Is(err, accounts.ErrSessionInvalid):
		return http.StatusUnauthorized
	case errors.Is(err, auth.ErrForbidden), errors.Is(err, accounts.ErrCannotDisableSelf), errors.Is(err, accounts.ErrLastAdmin):
		return http.StatusForbidden
	case errors.Is(err, accounts.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, accounts.ErrEmailTaken), errors.Is(err, accounts.ErrTwoFactorEnabled):
		return http.StatusConflict
	case errors.Is(err, accounts.ErrInvalidCredentials), errors.Is(err, accounts.ErrWrongPassword),
		errors.Is(err, accounts.ErrWeakPassword), errors.Is(err, accounts.ErrInvalidCode),
		errors.Is(err, accounts.ErrInvalidInput), errors.Is(err, accounts.ErrLinkInvalid),
		errors.Is(err, accounts.ErrTwoFactorNotEnabled), errors.Is(err, accounts.ErrNoTwoFactorSetup),
		errors.Is(err, accounts.ErrAccountDisabled):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// publicMessage is what a person is told. Service errors are written to be
// shown; anything unexpected (a database error, say) stays in the log.
func publicMessage(err error) string {
	if statusOf(err) == http.StatusInternalServerError {
		return "The request failed. The error was logged; try again, or tell your administrator."
	}
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, accounts.ErrNotFound) {
		return "There is no such thing here, or you may not see it."
	}
	// A refusal names its real limit (the scope needed, the role's cap),
	// as the services word it.
	return err.Error()
}

func retryAfter(err error) time.Duration {
	var te *accounts.ThrottledError
	if errors.As(err, &te) {
		return te.RetryAfter
	}
	return 0
}
