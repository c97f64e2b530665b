package web

import (
	"context"
	"encoding/base64"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/berthhq/berth/controller/internal/accounts"
	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
)

type sessionRow struct {
	ID       store.ID
	Device   string
	IP       string
	LastSeen time.Time
	Created  time.Time
	Current  bool
}

// settingsView renders the settings page; extra carries what a POST shows
// once (a new TOTP secret, recovery codes).
func (s *Server) settingsView(w http.ResponseWriter, r *http.Request, v *viewer, status int, errMsg string, extra map[string]any) {
	list, err := s.d.Accounts.ListSessions(r.Context(), v.Actor)
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	rows := make([]sessionRow, len(list))
	for i, si := range list {
		rows[i] = sessionRow{ID: si.ID, Device: device(si.UserAgent), LastSeen: si.LastSeenAt, Created: si.CreatedAt, Current: si.Current}
		if si.IP != nil {
			rows[i].IP = si.IP.String()
		}
	}
	data := map[string]any{"Sessions": rows}
	for k, val := range extra {
		data[k] = val
	}
	// A change on this request (2FA switched on or off) shows at once.
	if on, ok := extra["TwoFactorOn"].(bool); ok {
		v.TwoFactor = on
	}
	s.render(w, r, "settings", view{Title: "Settings", Nav: "settings", User: v, Status: status, Error: errMsg, Data: data})
}

func (s *Server) settings(w http.ResponseWriter, r *http.Request, v *viewer) {
	s.settingsView(w, r, v, 0, "", nil)
}

func (s *Server) changePassword(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	if r.PostFormValue("new_password") != r.PostFormValue("new_password_confirm") {
		s.settingsView(w, r, v, http.StatusBadRequest, "The two new passwords differ.", nil)
		return
	}
	err := s.d.Accounts.ChangePassword(r.Context(), v.Actor, r.PostFormValue("current_password"), r.PostFormValue("new_password"))
	if err != nil {
		s.formError(w, r, v, err)
		return
	}
	s.redirect(w, r, "/settings", "Password changed. Your other sessions were signed out.")
}

// formError re-renders settings with a service error, or fails the page.
func (s *Server) formError(w http.ResponseWriter, r *http.Request, v *viewer, err error) {
	st := statusOf(err)
	if st == http.StatusBadRequest || st == http.StatusConflict || st == http.StatusTooManyRequests {
		s.settingsView(w, r, v, st, publicMessage(err), nil)
		return
	}
	s.fail(w, r, v, err)
}

func (s *Server) beginTwoFactor(w http.ResponseWriter, r *http.Request, v *viewer) {
	setup, err := s.d.Accounts.BeginTwoFactor(r.Context(), v.Actor)
	if err != nil {
		s.formError(w, r, v, err)
		return
	}
	// Shown on this response only; the secret is stored encrypted.
	s.settingsView(w, r, v, 0, "", map[string]any{"Enrol": map[string]any{
		"Secret": setup.Secret, "QR": qrDataURL(setup.QRPNG),
	}})
}

func qrDataURL(png []byte) any {
	return template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(png))
}

func (s *Server) confirmTwoFactor(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	codes, err := s.d.Accounts.ConfirmTwoFactor(r.Context(), v.Actor, strings.TrimSpace(r.PostFormValue("code")))
	if err != nil {
		s.formError(w, r, v, err)
		return
	}
	s.settingsView(w, r, v, 0, "", map[string]any{"Codes": codes, "TwoFactorOn": true})
}

func (s *Server) disableTwoFactor(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	err := s.d.Accounts.DisableTwoFactor(r.Context(), v.Actor, r.PostFormValue("password"), strings.TrimSpace(r.PostFormValue("code")))
	if err != nil {
		s.formError(w, r, v, err)
		return
	}
	s.redirect(w, r, "/settings", "Two-factor authentication is off. Your other sessions were signed out.")
}

func (s *Server) regenerateCodes(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	codes, err := s.d.Accounts.RegenerateRecoveryCodes(r.Context(), v.Actor, r.PostFormValue("password"), strings.TrimSpace(r.PostFormValue("code")))
	if err != nil {
		s.formError(w, r, v, err)
		return
	}
	s.settingsView(w, r, v, 0, "", map[string]any{"Codes": codes})
}

func (s *Server) revokeSession(w http.ResponseWriter, r *http.Request, v *viewer) {
	id, err := store.ParseID(r.PathValue("id"))
	if err != nil {
		s.errorPage(w, r, http.StatusBadRequest, "Bad request", "not a session id")
		return
	}
	if err := s.d.Accounts.RevokeSession(r.Context(), v.Actor, id); err != nil {
		s.fail(w, r, v, err)
		return
	}
	if id == v.SessionID {
		s.clearCookie(w, s.sessionCookie())
		s.redirect(w, r, "/login", "You are signed out.")
		return
	}
	s.redirect(w, r, "/settings", "Session revoked.")
}

// device names a browser from its user agent, roughly.
func device(ua string) string {
	if ua == "" {
		return "unknown"
	}
	browser := "browser"
	for _, b := range []struct{ needle, name string }{{"Edg/", "Edge"}, {"Firefox/", "Firefox"}, {"HeadlessChrome", "Headless Chrome"}, {"Chrome/", "Chrome"}, {"Safari/", "Safari"}, {"curl/", "curl"}} {
		if strings.Contains(ua, b.needle) {
			browser = b.name
			break
		}
	}
	osName := ""
	for _, o := range []struct{ needle, name string }{{"Android", "Android"}, {"iPhone", "iPhone"}, {"iPad", "iPad"}, {"Windows", "Windows"}, {"Mac OS X", "macOS"}, {"Linux", "Linux"}} {
		if strings.Contains(ua, o.needle) {
			osName = o.name
			break
		}
	}
	if osName == "" {
		return browser
	}
	return browser + " on " + osName
}

// tokens

func (s *Server) tokensView(w http.ResponseWriter, r *http.Request, v *viewer, status int, errMsg, newToken string) {
	list, err := s.d.Accounts.ListTokens(r.Context(), v.Actor)
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	s.render(w, r, "tokens", view{Title: "API tokens", Nav: "tokens", User: v, Status: status, Error: errMsg, Data: map[string]any{
		"Tokens": list, "Scopes": auth.RoleScopes(v.Role), "NewToken": newToken,
	}})
}

func (s *Server) tokenList(w http.ResponseWriter, r *http.Request, v *viewer) {
	s.tokensView(w, r, v, 0, "", "")
}

func (s *Server) tokenCreate(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	var exp *time.Time
	if e := r.PostFormValue("expires"); e != "" {
		d, err := time.ParseDuration(e)
		if err != nil || d <= 0 {
			s.tokensView(w, r, v, http.StatusBadRequest, "Expiry must be a duration like 720h.", "")
			return
		}
		t := s.cfg.Now().Add(d)
		exp = &t
	}
	scopes := []store.Scope{}
	for _, sc := range r.PostForm["scope"] {
		scopes = append(scopes, store.Scope(sc))
	}
	tok, _, err := s.d.Accounts.CreateToken(r.Context(), v.Actor, r.PostFormValue("name"), scopes, exp)
	if err != nil {
		if st := statusOf(err); st == http.StatusBadRequest || st == http.StatusForbidden || st == http.StatusConflict {
			s.tokensView(w, r, v, st, publicMessage(err), "")
			return
		}
		s.fail(w, r, v, err)
		return
	}
	// The token is in this response only; the database keeps its hash.
	s.tokensView(w, r, v, http.StatusCreated, "", tok)
}

func (s *Server) tokenRevoke(w http.ResponseWriter, r *http.Request, v *viewer) {
	id, err := store.ParseID(r.PathValue("id"))
	if err != nil {
		s.errorPage(w, r, http.StatusBadRequest, "Bad request", "not a token id")
		return
	}
	if err := s.d.Accounts.RevokeToken(r.Context(), v.Actor, id); err != nil {
		s.fail(w, r, v, err)
		return
	}
	s.redirect(w, r, "/tokens", "Token revoked.")
}

// users

func (s *Server) usersView(w http.ResponseWriter, r *http.Request, v *viewer, status int, errMsg string) {
	s.usersPage(w, r, v, status, errMsg, nil)
}

// usersPage renders the users page; inv, when set, is an invitation made
// without a mail server, whose link is shown this once.
func (s *Server) usersPage(w http.ResponseWriter, r *http.Request, v *viewer, status int, errMsg string, inv *accounts.Invitation) {
	list, err := s.d.Accounts.ListUsers(r.Context(), v.Actor)
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	s.render(w, r, "users", view{Title: "Users", Nav: "users", User: v, Status: status, Error: errMsg, Form: r.PostForm, Data: map[string]any{"Users": list, "Invitation": inv}})
}

func (s *Server) userList(w http.ResponseWriter, r *http.Request, v *viewer) {
	s.usersView(w, r, v, 0, "")
}

func (s *Server) userCreate(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	inv, err := s.d.Accounts.InviteUser(r.Context(), v.Actor, r.PostFormValue("email"), store.UserRole(r.PostFormValue("role")))
	if err != nil {
		if st := statusOf(err); st == http.StatusBadRequest || st == http.StatusConflict {
			s.usersView(w, r, v, st, publicMessage(err))
			return
		}
		s.fail(w, r, v, err)
		return
	}
	if !inv.Mailed {
		// No mail server: the link is on this answer only (not in a
		// flash cookie or a URL), for the admin to hand over.
		w.Header().Set("Cache-Control", "no-store")
		s.usersPage(w, r, v, http.StatusOK, "", &inv)
		return
	}
	s.redirect(w, r, "/users", "Invitation mailed to "+inv.User.Email+".")
}

func (s *Server) userDisable(w http.ResponseWriter, r *http.Request, v *viewer) {
	s.userStatus(w, r, v, s.d.Accounts.DisableUser, "User disabled: their sessions and tokens stopped.")
}

func (s *Server) userEnable(w http.ResponseWriter, r *http.Request, v *viewer) {
	s.userStatus(w, r, v, s.d.Accounts.EnableUser, "User enabled.")
}

func (s *Server) userStatus(w http.ResponseWriter, r *http.Request, v *viewer, fn func(ctx context.Context, a accounts.Actor, id store.ID) (store.User, error), done string) {
	id, err := store.ParseID(r.PathValue("id"))
	if err != nil {
		s.errorPage(w, r, http.StatusBadRequest, "Bad request", "not a user id")
		return
	}
	if _, err := fn(r.Context(), v.Actor, id); err != nil {
		s.fail(w, r, v, err)
		return
	}
	s.redirect(w, r, "/users", done)
}
