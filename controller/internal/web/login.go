package web

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/berthhq/berth/controller/internal/accounts"
)

func (s *Server) loginForm(w http.ResponseWriter, r *http.Request, v *viewer) {
	next := safeNext(r.URL.Query().Get("next"))
	if v != nil {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	s.render(w, r, "login", view{Title: "Sign in", Data: map[string]any{"Next": next}})
}

func (s *Server) login(w http.ResponseWriter, r *http.Request, _ *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	email, pw := r.PostFormValue("email"), r.PostFormValue("password")
	next := safeNext(r.PostFormValue("next"))
	again := func(status int, msg string) {
		s.render(w, r, "login", view{Title: "Sign in", Status: status, Error: msg, Data: map[string]any{"Next": next, "Email": email}})
	}
	if strings.TrimSpace(email) == "" || pw == "" {
		again(http.StatusBadRequest, "Enter your email and password.")
		return
	}
	res, err := s.d.Accounts.Login(r.Context(), email, pw, s.meta(r))
	if err != nil {
		s.loginError(w, r, err, again)
		return
	}
	// A new session at login: whatever cookie came in is replaced.
	s.clearCookie(w, s.sessionCookie())
	if res.TwoFactorRequired {
		s.setCookie(w, s.pendingCookie(), res.Token, int(s.d.Accounts.Config().TwoFactorTimeout.Seconds()))
		http.Redirect(w, r, "/login/2fa?next="+url.QueryEscape(next), http.StatusSeeOther)
		return
	}
	s.setCookie(w, s.sessionCookie(), res.Token, 0)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// loginError tells people what went wrong without telling an attacker
// whether an account exists.
func (s *Server) loginError(w http.ResponseWriter, r *http.Request, err error, again func(int, string)) {
	var te *accounts.ThrottledError
	switch {
	case errors.As(err, &te):
		w.Header().Set("Retry-After", strconv.Itoa(te.Seconds()))
		again(http.StatusTooManyRequests, "Too many attempts. Try again in "+strconv.Itoa(te.Seconds())+" seconds.")
	case errors.Is(err, accounts.ErrCodeReused):
		again(http.StatusUnauthorized, "That code was already used. Wait for the next one.")
	case errors.Is(err, accounts.ErrInvalidCode):
		again(http.StatusUnauthorized, "That code is not valid.")
	case errors.Is(err, accounts.ErrInvalidCredentials):
		again(http.StatusUnauthorized, "Invalid email or password.")
	case errors.Is(err, accounts.ErrAccountDisabled):
		again(http.StatusForbidden, "This account is disabled. Ask an administrator.")
	case errors.Is(err, accounts.ErrSessionInvalid):
		s.clearCookie(w, s.pendingCookie())
		s.redirect(w, r, "/login", "The sign-in took too long. Start again.")
	default:
		s.d.Log.Error("login failed", "err", err)
		again(http.StatusInternalServerError, "Signing in failed. Try again shortly.")
	}
}

func (s *Server) twoFactorForm(w http.ResponseWriter, r *http.Request, v *viewer) {
	if _, err := r.Cookie(s.pendingCookie()); err != nil {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	s.render(w, r, "login_2fa", view{Title: "Two-factor authentication", Data: map[string]any{"Next": safeNext(r.URL.Query().Get("next"))}})
}

func (s *Server) twoFactor(w http.ResponseWriter, r *http.Request, _ *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	next := safeNext(r.PostFormValue("next"))
	c, err := r.Cookie(s.pendingCookie())
	if err != nil || c.Value == "" || len(c.Value) > 128 {
		s.redirect(w, r, "/login", "Sign in first.")
		return
	}
	code := strings.TrimSpace(r.PostFormValue("code"))
	recovery := strings.TrimSpace(r.PostFormValue("recovery_code"))
	if code == "" {
		code = recovery
	}
	again := func(status int, msg string) {
		s.render(w, r, "login_2fa", view{Title: "Two-factor authentication", Status: status, Error: msg,
			Data: map[string]any{"Next": next, "Recovery": recovery != ""}})
	}
	if code == "" {
		again(http.StatusBadRequest, "Enter the code from your authenticator app, or a recovery code.")
		return
	}
	res, err := s.d.Accounts.VerifySecondFactor(r.Context(), c.Value, code, s.meta(r))
	if err != nil {
		s.loginError(w, r, err, again)
		return
	}
	s.clearCookie(w, s.pendingCookie())
	s.setCookie(w, s.sessionCookie(), res.Token, 0)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, _ *viewer) {
	if c, err := r.Cookie(s.sessionCookie()); err == nil && len(c.Value) <= 128 {
		if err := s.d.Accounts.Logout(r.Context(), c.Value, s.meta(r)); err != nil {
			s.d.Log.Error("logout", "err", err)
		}
	}
	if c, err := r.Cookie(s.pendingCookie()); err == nil && len(c.Value) <= 128 {
		_ = s.d.Accounts.Logout(r.Context(), c.Value, s.meta(r))
	}
	s.clearCookie(w, s.sessionCookie())
	s.clearCookie(w, s.pendingCookie())
	s.redirect(w, r, "/login", "You are signed out.")
}

func (s *Server) forgotForm(w http.ResponseWriter, r *http.Request, _ *viewer) {
	s.render(w, r, "forgot", view{Title: "Reset your password", Data: map[string]any{}})
}

// forgot answers the same whether or not the address has an account.
func (s *Server) forgot(w http.ResponseWriter, r *http.Request, _ *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	err := s.d.Accounts.RequestPasswordReset(r.Context(), r.PostFormValue("email"), s.meta(r))
	var te *accounts.ThrottledError
	switch {
	case errors.As(err, &te):
		w.Header().Set("Retry-After", strconv.Itoa(te.Seconds()))
		s.render(w, r, "forgot", view{Title: "Reset your password", Status: http.StatusTooManyRequests,
			Error: "Too many requests. Try again in " + strconv.Itoa(te.Seconds()) + " seconds.", Data: map[string]any{}})
		return
	case errors.Is(err, accounts.ErrInvalidInput):
		s.render(w, r, "forgot", view{Title: "Reset your password", Status: http.StatusBadRequest, Error: "Enter a valid email address.", Data: map[string]any{}})
		return
	case err != nil:
		s.d.Log.Error("password reset request", "err", err)
	}
	s.render(w, r, "forgot", view{Title: "Reset your password", Data: map[string]any{"Sent": true}})
}

func (s *Server) resetForm(w http.ResponseWriter, r *http.Request, _ *viewer) {
	s.render(w, r, "reset", view{Title: "Choose a new password", Data: map[string]any{
		"Action": "/reset/" + url.PathEscape(r.PathValue("token")), "Button": "Set new password"}})
}

func (s *Server) reset(w http.ResponseWriter, r *http.Request, _ *viewer) {
	s.newPassword(w, r, "Choose a new password", "/reset/", "Set new password", func(token, pw string) error {
		return s.d.Accounts.ResetPassword(r.Context(), token, pw, s.meta(r))
	}, "Your password was changed. Sign in with it.")
}

func (s *Server) inviteForm(w http.ResponseWriter, r *http.Request, _ *viewer) {
	s.render(w, r, "reset", view{Title: "Welcome to Berth", Data: map[string]any{
		"Action": "/invite/" + url.PathEscape(r.PathValue("token")), "Button": "Create account"}})
}

func (s *Server) acceptInvite(w http.ResponseWriter, r *http.Request, _ *viewer) {
	s.newPassword(w, r, "Welcome to Berth", "/invite/", "Create account", func(token, pw string) error {
		_, err := s.d.Accounts.AcceptInvite(r.Context(), token, pw, s.meta(r))
		return err
	}, "Your account is ready. Sign in.")
}

// newPassword handles the reset and invitation forms: both set a password
// from a single-use link, then send the person to sign in (so a reset
// never skips the second factor).
func (s *Server) newPassword(w http.ResponseWriter, r *http.Request, title, prefix, button string, set func(token, pw string) error, done string) {
	if !s.parseForm(w, r) {
		return
	}
	token := r.PathValue("token")
	again := func(status int, msg string) {
		s.render(w, r, "reset", view{Title: title, Status: status, Error: msg, Data: map[string]any{"Action": prefix + url.PathEscape(token), "Button": button}})
	}
	pw := r.PostFormValue("password")
	if pw != r.PostFormValue("password_confirm") {
		again(http.StatusBadRequest, "The two passwords differ.")
		return
	}
	if len(token) > 128 {
		again(http.StatusBadRequest, accounts.ErrLinkInvalid.Error())
		return
	}
	if err := set(token, pw); err != nil {
		switch st := statusOf(err); st {
		case http.StatusBadRequest, http.StatusNotFound, http.StatusTooManyRequests:
			again(st, publicMessage(err))
		default:
			s.d.Log.Error("set password from link", "err", err)
			again(http.StatusInternalServerError, publicMessage(err))
		}
		return
	}
	s.clearCookie(w, s.sessionCookie())
	s.redirect(w, r, "/login", done)
}
