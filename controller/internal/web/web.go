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
	"github.com/berthhq/berth/controller/internal/alert"
	"github.com/berthhq/berth/controller/internal/audit"
	"github.com/berthhq/berth/controller/internal/backups"
	"github.com/berthhq/berth/controller/internal/deploys"
	"github.com/berthhq/berth/controller/internal/domains"
	"github.com/berthhq/berth/controller/internal/fleet"
	"github.com/berthhq/berth/controller/internal/notify"
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
	// BellStreams bounds the open unread-count streams of this controller
	// (default 256); one more is refused with 503 and the browser retries.
	BellStreams int
	Now         func() time.Time
}

// Deps are the services the pages call.
type Deps struct {
	Log      *slog.Logger
	Store    *store.Store
	Fleet    *fleet.Service
	Accounts *accounts.Service
	Audit    *audit.Service
	Deploys  *deploys.Service
	// Notify serves the inbox, channels and rules. Nil: the UI makes its
	// own on Store, which is enough for those calls (it is never Run, so
	// it delivers nothing but the test messages asked for, and it refuses
	// private targets).
	Notify *notify.Service
	// Alerts serves the Alerts page and a server's firing alerts. Nil: the
	// UI makes its own on Store (reads and rule changes; the daemon's
	// engine picks changes up through NOTIFY).
	Alerts *alert.Service
	// Domains serves the Domains pages. Nil: the UI makes its own on Store
	// and Deploys, which registers the domain job kinds on Deploys; so the
	// daemon must pass the one whose renewal loop it runs.
	Domains *domains.Service
	// Backups serves the Backups pages. Nil until SetBackups: the service
	// is the fleet's one job handler, so the UI never makes its own.
	Backups *backups.Service
}

// Server is the web UI.
type Server struct {
	d      Deps
	cfg    Config
	pages  *pages
	events *broadcaster
	static http.Handler
	// bellSlots bounds the open unread-count streams (maxBellStreams).
	bellSlots chan struct{}
}

// New parses the templates and prepares the handlers.
func New(d Deps, cfg Config) (*Server, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.BellStreams <= 0 {
		cfg.BellStreams = maxBellStreams
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
	if d.Notify == nil {
		if d.Notify, err = notify.New(notify.Config{Store: d.Store, Logger: d.Log, Now: cfg.Now}); err != nil {
			return nil, fmt.Errorf("web: inbox: %w", err)
		}
	}
	if d.Alerts == nil {
		d.Alerts = alert.NewService(d.Store, nil, d.Log)
	}
	if d.Domains == nil && d.Deploys != nil {
		if d.Domains, err = domains.New(d.Store, d.Deploys, d.Log, domains.Config{Now: cfg.Now}); err != nil {
			return nil, fmt.Errorf("web: domains: %w", err)
		}
	}
	s := &Server{d: d, cfg: cfg, pages: p, static: http.StripPrefix("/assets/", http.FileServerFS(sub)),
		bellSlots: make(chan struct{}, cfg.BellStreams)}
	s.events = newBroadcaster(d.Store, d.Log, cfg.EventsPoll)
	return s, nil
}

// Run runs the live-status feed until ctx ends.
func (s *Server) Run(ctx context.Context) { s.events.run(ctx) }

// route is one pattern of the UI and its handler.
type route struct {
	pattern string
	h       http.Handler
}

// routes is every route of the UI: Register mounts exactly these, and
// Routes lists them for the scope matrix test, so a route added here
// without a row in that test's table fails it.
func (s *Server) routes() []route {
	rs := []route{
		{"GET /assets/", s.assets()},
		{"GET /favicon.ico", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/assets/favicon.svg", http.StatusMovedPermanently)
		})},
		{"GET /{$}", s.page(s.dashboard)},

		// Signing in: reachable without a session.
		{"GET /login", s.public(s.loginForm)},
		{"POST /login", s.public(s.login)},
		{"GET /login/2fa", s.public(s.twoFactorForm)},
		{"POST /login/2fa", s.public(s.twoFactor)},
		{"POST /logout", s.public(s.logout)},
		{"GET /forgot", s.public(s.forgotForm)},
		{"POST /forgot", s.public(s.forgot)},
		{"GET /reset/{token}", s.public(s.resetForm)},
		{"POST /reset/{token}", s.public(s.reset)},
		{"GET /invite/{token}", s.public(s.inviteForm)},
		{"POST /invite/{token}", s.public(s.acceptInvite)},

		// The fleet.
		{"GET /servers", s.page(s.serverList)},
		{"GET /servers/new", s.page(s.serverNewForm)},
		{"POST /servers", s.page(s.serverCreate)},
		{"GET /servers/{name}", s.page(s.serverShow)},
		{"GET /servers/{name}/metrics.json", s.page(s.serverMetrics)},
		{"POST /servers/{name}/disable", s.page(s.serverDisable)},
		{"POST /servers/{name}/enable", s.page(s.serverEnable)},
		{"POST /servers/{name}/remove", s.page(s.serverRemove)},
		{"GET /events", s.page(s.eventStream)},

		// Your account.
		{"GET /settings", s.page(s.settings)},
		{"POST /settings/password", s.page(s.changePassword)},
		{"POST /settings/2fa/begin", s.page(s.beginTwoFactor)},
		{"POST /settings/2fa/confirm", s.page(s.confirmTwoFactor)},
		{"POST /settings/2fa/disable", s.page(s.disableTwoFactor)},
		{"POST /settings/2fa/recovery-codes", s.page(s.regenerateCodes)},
		{"POST /settings/sessions/{id}/revoke", s.page(s.revokeSession)},
		{"GET /tokens", s.page(s.tokenList)},
		{"POST /tokens", s.page(s.tokenCreate)},
		{"POST /tokens/{id}/revoke", s.page(s.tokenRevoke)},

		// Administration and audit.
		{"GET /users", s.page(s.userList)},
		{"POST /users", s.page(s.userCreate)},
		{"POST /users/{id}/disable", s.page(s.userDisable)},
		{"POST /users/{id}/enable", s.page(s.userEnable)},
		{"GET /security", s.page(s.securityEvents)},
		{"GET /activity", s.page(s.activityLog)},

		// Apps and deployments.
		{"GET /apps", s.page(s.appList)},
		{"GET /apps/new", s.page(s.appNew)},
		{"POST /apps", s.page(s.appCreate)},
		{"GET /apps/{app}", s.page(s.appShow)},
		{"POST /apps/{app}/env", s.page(s.appEnv)},
		{"POST /apps/{app}/webhook-secret", s.page(s.appWebhook)},
		{"POST /apps/{app}/deploy", s.page(s.appDeploy)},
		{"POST /apps/{app}/rollback", s.page(s.appRollback)},
		{"GET /apps/{app}/edit", s.page(s.appEdit)},
		{"POST /apps/{app}/edit", s.page(s.appUpdate)},
		{"POST /apps/{app}/delete", s.page(s.appDelete)},
		{"POST /apps/{app}/processes", s.page(s.processAdd)},
		{"POST /apps/{app}/processes/control", s.page(s.processControl)},
		{"GET /apps/{app}/processes.json", s.page(s.processStates)},
		{"POST /apps/{app}/processes/{name}/remove", s.page(s.processRemove)},
		{"POST /apps/{app}/schedules", s.page(s.scheduleAdd)},
		{"POST /apps/{app}/schedules/{name}/remove", s.page(s.scheduleRemove)},
		{"GET /apps/{app}/schedules/{name}/runs", s.page(s.scheduleRuns)},
		{"GET /apps/{app}/logs", s.page(s.appLogs)},
		{"GET /apps/{app}/logs/stream", s.page(s.appLogStream)},
		{"GET /apps/{app}/domains", s.page(s.appDomains)},
		{"POST /apps/{app}/domains", s.page(s.domainAdd)},
		{"GET /apps/{app}/domains.json", s.page(s.appDomainStates)},
		{"GET /domains", s.page(s.domainList)},
		{"POST /domains/{host}/renew", s.page(s.domainRenew)},
		{"POST /domains/{host}/remove", s.page(s.domainRemove)},
		{"GET /deployments", s.page(s.deploymentList)},
		{"GET /deployments/{id}", s.page(s.deploymentShow)},
		{"GET /deployments/{id}/log", s.page(s.deploymentLog)},
		{"POST /deployments/{id}/cancel", s.page(s.deploymentCancel)},
		{"GET /git-credentials", s.page(s.credentialList)},

		// Your inbox.
		{"GET /notifications", s.page(s.notificationList)},
		{"GET /notifications/stream", s.page(s.bellStream)},
		{"POST /notifications/{id}/read", s.page(s.notificationRead)},
		{"POST /notifications/read-all", s.page(s.notificationReadAll)},
		// Notification channels and rules (admin).
		{"GET /notify/channels", s.page(s.channelList)},
		{"POST /notify/channels", s.page(s.channelCreate)},
		{"GET /notify/channels/{name}", s.page(s.channelShow)},
		{"POST /notify/channels/{name}/test", s.page(s.channelTest)},
		{"POST /notify/channels/{name}/remove", s.page(s.channelRemove)},
		{"POST /notify/channels/{name}/update", s.page(s.channelUpdate)},
		{"GET /notify/deliveries", s.page(s.deliveryList)},
		{"GET /notify/rules", s.page(s.ruleList)},
		{"POST /notify/rules", s.page(s.ruleCreate)},
		{"POST /notify/rules/{id}/remove", s.page(s.ruleRemove)},

		// Threshold alerts.
		{"GET /alerts", s.page(s.alertList)},
		{"POST /alerts", s.page(s.alertCreate)},
		{"POST /alerts/{name}/remove", s.page(s.alertRemove)},
		{"GET /alerts/{name}/edit", s.page(s.alertEdit)},
		{"POST /alerts/{name}/edit", s.page(s.alertUpdate)},
		{"POST /git-credentials", s.page(s.credentialCreate)},
		{"POST /git-credentials/{name}/delete", s.page(s.credentialDelete)},
	}
	rs = append(rs, s.backupRoutes()...)
	return rs
}

// Register mounts the UI's routes on mux.
func (s *Server) Register(mux *http.ServeMux) {
	for _, r := range s.routes() {
		mux.Handle(r.pattern, r.h)
	}
}

// Routes lists the patterns Register mounts ("GET /servers/{name}", ...).
func (s *Server) Routes() []string {
	rs := s.routes()
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.pattern
	}
	return out
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
	case errors.Is(err, store.ErrInvalid), errors.Is(err, fleet.ErrInvalid), errors.Is(err, deploys.ErrInvalid), errors.Is(err, notify.ErrInvalid), errors.Is(err, alert.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, deploys.ErrPruned), errors.Is(err, deploys.ErrRefused):
		return http.StatusConflict
	case errors.Is(err, deploys.ErrUnavailable):
		return http.StatusServiceUnavailable
	}
	return accountsStatus(err)
}

// SetAlerts gives the UI the daemon's alert service (whose engine reloads
// at once on a change made here).
func (s *Server) SetAlerts(a *alert.Service) {
	if a != nil {
		s.d.Alerts = a
	}
}
