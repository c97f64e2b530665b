package web

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"github.com/berthhq/berth/controller/internal/accounts"
)

// handler is a page handler; v is the signed-in person (nil on public
// pages when nobody is signed in).
type handler func(w http.ResponseWriter, r *http.Request, v *viewer)

type viewerKey struct{}

func viewerFrom(r *http.Request) *viewer {
	v, _ := r.Context().Value(viewerKey{}).(*viewer)
	return v
}

// Cookie names. Over TLS the __Host- prefix pins the cookie to this exact
// origin (Secure, Path=/, no Domain), so a sibling subdomain cannot plant
// or overwrite it.
func (s *Server) sessionCookie() string {
	if s.cfg.Secure {
		return "__Host-berth_session"
	}
	return "berth_session"
}

func (s *Server) pendingCookie() string {
	if s.cfg.Secure {
		return "__Host-berth_2fa"
	}
	return "berth_2fa"
}

func (s *Server) setCookie(w http.ResponseWriter, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: s.cfg.Secure, SameSite: http.SameSiteLaxMode,
	})
}

func (s *Server) clearCookie(w http.ResponseWriter, name string) { s.setCookie(w, name, "", -1) }

func (s *Server) meta(r *http.Request) accounts.Meta {
	return accounts.Meta{IP: s.clientIP(r), UserAgent: truncateUA(r.UserAgent())}
}

// authenticate resolves the session cookie.
func (s *Server) authenticate(r *http.Request) (*viewer, error) {
	c, err := r.Cookie(s.sessionCookie())
	if err != nil || c.Value == "" {
		return nil, accounts.ErrSessionInvalid
	}
	if len(c.Value) > 128 {
		return nil, accounts.ErrSessionInvalid
	}
	meta := s.meta(r)
	sess, err := s.d.Accounts.Authenticate(r.Context(), c.Value, meta)
	if err != nil {
		return nil, err
	}
	v := &viewer{
		UserID: sess.User.ID, Email: sess.User.Email, Name: sess.User.Name, Role: sess.User.Role,
		SessionID: sess.ID, TwoFactor: sess.User.TwoFactorEnabled, Actor: sess.Actor(meta),
	}
	// One principal: the services see the same caller the accounts
	// service does.
	v.Principal = &v.Actor.Principal
	return v, nil
}

// page requires a signed-in session: people are sent to the login page
// (and back afterwards), scripts get a 401.
func (s *Server) page(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := s.authenticate(r)
		if err != nil {
			if !errors.Is(err, accounts.ErrSessionInvalid) && !errors.Is(err, accounts.ErrTwoFactorPending) {
				s.d.Log.Error("authenticate session", "err", err)
				s.errorPage(w, r, http.StatusServiceUnavailable, "Unavailable", "Berth cannot check your session right now. Try again shortly.")
				return
			}
			if _, e := r.Cookie(s.sessionCookie()); e == nil {
				s.clearCookie(w, s.sessionCookie())
			}
			if r.Method == http.MethodGet && wantsHTML(r) && r.Header.Get("Accept") != "text/event-stream" {
				to := "/login"
				if r.URL.Path != "/" {
					to += "?next=" + url.QueryEscape(r.URL.RequestURI())
				}
				if errors.Is(err, accounts.ErrSessionExpired) {
					s.flash(w, "Your session expired. Sign in again.")
				}
				http.Redirect(w, r, to, http.StatusSeeOther)
				return
			}
			s.errorPage(w, r, http.StatusUnauthorized, "Sign in again", "Your session has ended.")
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), viewerKey{}, v)), v)
	}
}

// public pages work signed out; v is set when a valid session exists.
func (s *Server) public(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := s.authenticate(r)
		if err != nil {
			v = nil
		} else {
			r = r.WithContext(context.WithValue(r.Context(), viewerKey{}, v))
		}
		h(w, r, v)
	}
}
