// Package web serves the controller's admin UI: server-rendered HTML from
// html/template, assets embedded in the binary, live updates by server-sent
// events. Handlers stay thin: every rule (authorisation, validation, audit)
// lives in the service packages the gRPC API calls too.
package web

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strings"
	"time"

	"github.com/berthhq/berth/controller/internal/accounts"
	"github.com/berthhq/berth/controller/internal/audit"
	"github.com/berthhq/berth/controller/internal/deploys"
	"github.com/berthhq/berth/controller/internal/fleet"
	"github.com/berthhq/berth/controller/internal/store"
)

//go:embed assets
var assetsFS embed.FS

//go:embed templates/*.html
var templatesFS embed.FS

// Config is how the UI is served.
type Config struct {
	// Secure: served over TLS. Cookies get the Secure flag and the __Host-
	// prefix, and responses carry HSTS.
	Secure bool
	// TrustedProxies are addresses whose X-Forwarded-For is believed for
	// the client IP; empty trusts nobody.
	TrustedProxies []netip.Prefix
	// EventsPoll is how often the live-status feed looks at the database.
	EventsPoll time.Duration
	Now        func() time.Time
}

// Deps are the services the pages call.
type Deps struct {
	Log      *slog.Logger
	Store    *store.Store
	Fleet    *fleet.Service
	Accounts *accounts.Service
	Audit    *audit.Service
	Deploys  *deploys.Service
}

// Server is the web UI.
type Server struct {
	d      Deps
	cfg    Config
	pages  *pages
	events *broadcaster
	static http.Handler
}

// New parses the templates and prepares the handlers.
func New(d Deps, cfg Config) (*Server, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.EventsPoll <= 0 {
		cfg.EventsPoll = 2 * time.Second
	}
	p, err := parsePages()
	if err != nil {
		return nil, err
	}
	sub, err := fs.Sub(assetsFS, "assets")
	if err != nil {
		return nil, err
	}
	s := &Server{d: d, cfg: cfg, pages: p, static: http.StripPrefix("/assets/", http.FileServerFS(sub))}
	s.events = newBroadcaster(d.Store, d.Log, cfg.EventsPoll)
	return s, nil
}

// Run runs the live-status feed until ctx ends.
func (s *Server) Run(ctx context.Context) { s.events.run(ctx) }

// Register mounts the UI's routes on mux.
func (s *Server) Register(mux *http.ServeMux) {
	mux.Handle("GET /assets/", s.assets())
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/assets/favicon.svg", http.StatusMovedPermanently)
	})
	mux.HandleFunc("GET /{$}", s.page(s.dashboard))

	// Signing in: reachable without a session.
	mux.HandleFunc("GET /login", s.public(s.loginForm))
	mux.HandleFunc("POST /login", s.public(s.login))
	mux.HandleFunc("GET /login/2fa", s.public(s.twoFactorForm))
	mux.HandleFunc("POST /login/2fa", s.public(s.twoFactor))
	mux.HandleFunc("POST /logout", s.public(s.logout))
	mux.HandleFunc("GET /forgot", s.public(s.forgotForm))
	mux.HandleFunc("POST /forgot", s.public(s.forgot))
	mux.HandleFunc("GET /reset/{token}", s.public(s.resetForm))
	mux.HandleFunc("POST /reset/{token}", s.public(s.reset))
	mux.HandleFunc("GET /invite/{token}", s.public(s.inviteForm))
	mux.HandleFunc("POST /invite/{token}", s.public(s.acceptInvite))

	// The fleet.
	mux.HandleFunc("GET /servers", s.page(s.serverList))
	mux.HandleFunc("GET /servers/new", s.page(s.serverNewForm))
	mux.HandleFunc("POST /servers", s.page(s.serverCreate))
	mux.HandleFunc("GET /servers/{name}", s.page(s.serverShow))
	mux.HandleFunc("GET /servers/{name}/metrics.json", s.page(s.serverMetrics))
	mux.HandleFunc("POST /servers/{name}/disable", s.page(s.serverDisable))
	mux.HandleFunc("POST /servers/{name}/enable", s.page(s.serverEnable))
	mux.HandleFunc("POST /servers/{name}/remove", s.page(s.serverRemove))
	mux.HandleFunc("GET /events", s.page(s.eventStream))

	// Your account.
	mux.HandleFunc("GET /settings", s.page(s.settings))
	mux.HandleFunc("POST /settings/password", s.page(s.changePassword))
	mux.HandleFunc("POST /settings/2fa/begin", s.page(s.beginTwoFactor))
	mux.HandleFunc("POST /settings/2fa/confirm", s.page(s.confirmTwoFactor))
	mux.HandleFunc("POST /settings/2fa/disable", s.page(s.disableTwoFactor))
	mux.HandleFunc("POST /settings/2fa/recovery-codes", s.page(s.regenerateCodes))
	mux.HandleFunc("POST /settings/sessions/{id}/revoke", s.page(s.revokeSession))
	mux.HandleFunc("GET /tokens", s.page(s.tokenList))
	mux.HandleFunc("POST /tokens", s.page(s.tokenCreate))
	mux.HandleFunc("POST /tokens/{id}/revoke", s.page(s.tokenRevoke))

	// Administration and audit.
	mux.HandleFunc("GET /users", s.page(s.userList))
	mux.HandleFunc("POST /users", s.page(s.userCreate))
	mux.HandleFunc("POST /users/{id}/disable", s.page(s.userDisable))
	mux.HandleFunc("POST /users/{id}/enable", s.page(s.userEnable))
	mux.HandleFunc("GET /security", s.page(s.securityEvents))
	mux.HandleFunc("GET /activity", s.page(s.activityLog))

	// Apps and deployments.
	mux.HandleFunc("GET /apps", s.page(s.appList))
	mux.HandleFunc("GET /apps/new", s.page(s.appNew))
	mux.HandleFunc("POST /apps", s.page(s.appCreate))
	mux.HandleFunc("GET /apps/{app}", s.page(s.appShow))
	mux.HandleFunc("POST /apps/{app}/env", s.page(s.appEnv))
	mux.HandleFunc("POST /apps/{app}/webhook-secret", s.page(s.appWebhook))
	mux.HandleFunc("POST /apps/{app}/deploy", s.page(s.appDeploy))
	mux.HandleFunc("POST /apps/{app}/rollback", s.page(s.appRollback))
	mux.HandleFunc("GET /deployments", s.page(s.deploymentList))
	mux.HandleFunc("GET /deployments/{id}", s.page(s.deploymentShow))
	mux.HandleFunc("GET /deployments/{id}/log", s.page(s.deploymentLog))
	mux.HandleFunc("POST /deployments/{id}/cancel", s.page(s.deploymentCancel))
	mux.HandleFunc("GET /git-credentials", s.page(s.credentialList))
	mux.HandleFunc("POST /git-credentials", s.page(s.credentialCreate))
	mux.HandleFunc("POST /git-credentials/{name}/delete", s.page(s.credentialDelete))

	// Capabilities whose pages come with their own services.
	for _, sec := range upcoming {
		mux.HandleFunc("GET "+sec.Path, s.page(s.upcomingPage(sec)))
	}
}

// Wrap adds what every response needs: security headers, protection from
// cross-site request forgery, and a last-resort recover. It wraps the whole
// HTTP mux, so the health and download endpoints get the headers too.
func (s *Server) Wrap(h http.Handler) http.Handler {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.d.Log.Warn("cross-origin request refused", "method", r.Method, "path", r.URL.Path,
			"origin", r.Header.Get("Origin"), "ip", s.clientIP(r))
		s.errorPage(w, r, http.StatusForbidden, "Cross-origin request refused", "This form was submitted from another site. Go back to Berth and try again.")
	}))
	return s.headers(cop.Handler(s.recoverer(h)))
}

func (s *Server) headers(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		// No inline script or style anywhere: everything comes from /assets.
		hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
			"connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		hd.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
		if s.cfg.Secure {
			hd.Set("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
		}
		h.ServeHTTP(w, r)
	})
}

func (s *Server) recoverer(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.d.Log.Error("panic in web handler", "path", r.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				s.errorPage(w, r, http.StatusInternalServerError, "Something went wrong", "The error was logged. Try again, or tell your administrator.")
			}
		}()
		h.ServeHTTP(w, r)
	})
}

func (s *Server) assets() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Assets change only with the binary; names of vendored files carry
		// their version.
		w.Header().Set("Cache-Control", "public, max-age=3600")
		s.static.ServeHTTP(w, r)
	})
}

// clientIP is the peer's address, or the forwarded one when the peer is a
// trusted proxy.
func (s *Server) clientIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	ip := ap.Addr().Unmap()
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(ip) {
			if fwd, err := netip.ParseAddr(lastForwarded(r.Header.Get("X-Forwarded-For"))); err == nil {
				return fwd.Unmap()
			}
		}
	}
	return ip
}

// lastForwarded is the address the trusted proxy itself saw: the last
// entry of X-Forwarded-For (earlier ones are the client's to forge).
func lastForwarded(h string) string {
	return strings.TrimSpace(h[strings.LastIndexByte(h, ',')+1:])
}

// statusOf maps service errors to HTTP statuses.
func statusOf(err error) int {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrReferenced), errors.Is(err, store.ErrWrongState):
		return http.StatusConflict
	case errors.Is(err, store.ErrInvalid), errors.Is(err, fleet.ErrInvalid), errors.Is(err, deploys.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, deploys.ErrPruned), errors.Is(err, deploys.ErrRefused):
		return http.StatusConflict
	}
	return accountsStatus(err)
}
