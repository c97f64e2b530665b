// Package accounts is the controller's authentication and account service:
// logins with throttling, TOTP second factor and recovery codes, browser
// sessions, password reset and invitation links, user administration and
// API tokens. The web UI and the gRPC API call the same methods, so every
// rule (who may do what, what is audited) is checked here, not in handlers.
//
// Secrets (passwords, session and link tokens, TOTP secrets, recovery codes)
// are returned to the caller at most once and never logged or written to
// the activity log or security events.
package accounts

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/mail"
	"github.com/berthhq/berth/controller/internal/password"
	"github.com/berthhq/berth/controller/internal/store"
)

// Config tunes the service. Zero fields take the defaults shown.
type Config struct {
	// PublicURL is where people reach the web UI, e.g.
	// "https://berth.example.com"; mailed links are built on it
	// (/reset/{token}, /invite/{token}). Required.
	PublicURL string
	// IdleTimeout ends a session not used for this long (30 min).
	IdleTimeout time.Duration
	// AbsoluteTimeout ends a session this long after login, used or not (12 h).
	AbsoluteTimeout time.Duration
	// TwoFactorTimeout is how long the second step of a login may take
	// after the password was accepted (5 min).
	TwoFactorTimeout time.Duration
	// TouchInterval: a session's last-seen time is written at most this
	// often (1 min), so page loads do not all write.
	TouchInterval time.Duration
	// ResetTTL is a password reset link's lifetime (60 min).
	ResetTTL time.Duration
	// InviteTTL is an invitation link's lifetime (72 h).
	InviteTTL time.Duration
	// Throttle slows down password and code guessing.
	Throttle Throttle
	// ResetThrottle bounds password reset requests.
	ResetThrottle ResetThrottle
	// Issuer names Berth in authenticator apps ("Berth").
	Issuer string
	// MailTimeout bounds one mail sent in the background (30 s).
	MailTimeout time.Duration
	// Now is the clock (time.Now); tests inject one to move time.
	Now func() time.Time
	// Logger receives operational logs (slog.Default()). It never gets a
	// secret.
	Logger *slog.Logger
}

// Throttle is the login throttling policy. Failed attempts (wrong password,
// unknown email, wrong second factor) are counted over Window, per account
// (email as typed, any case) and per client IP. Once a count reaches its
// threshold, each further attempt must wait BaseDelay after the latest
// failure, doubling with every failure beyond the threshold up to MaxDelay.
// There is no permanent lockout: failures age out of the window, so an
// attacker cannot lock a real user out for longer than MaxDelay.
type Throttle struct {
	Window           time.Duration // 15 min
	AccountThreshold int           // 5
	IPThreshold      int           // 20: one office or NAT shares an IP
	BaseDelay        time.Duration // 1 s
	MaxDelay         time.Duration // 15 min
}

// ResetThrottle bounds password reset requests, which send mail and so
// could flood an inbox or a mail relay: at most PerAccount per email (as
// typed, any case) and PerIP per client address within Window.
type ResetThrottle struct {
	Window     time.Duration // 1 h
	PerAccount int           // 3
	PerIP      int           // 10
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.IdleTimeout, 30*time.Minute)
	def(&c.AbsoluteTimeout, 12*time.Hour)
	def(&c.TwoFactorTimeout, 5*time.Minute)
	def(&c.TouchInterval, time.Minute)
	def(&c.ResetTTL, 60*time.Minute)
	def(&c.InviteTTL, 72*time.Hour)
	def(&c.MailTimeout, 30*time.Second)
	def(&c.Throttle.Window, 15*time.Minute)
	def(&c.Throttle.BaseDelay, time.Second)
	def(&c.Throttle.MaxDelay, 15*time.Minute)
	def(&c.ResetThrottle.Window, time.Hour)
	if c.ResetThrottle.PerAccount <= 0 {
		c.ResetThrottle.PerAccount = 3
	}
	if c.ResetThrottle.PerIP <= 0 {
		c.ResetThrottle.PerIP = 10
	}
	if c.Throttle.AccountThreshold <= 0 {
		c.Throttle.AccountThreshold = 5
	}
	if c.Throttle.IPThreshold <= 0 {
		c.Throttle.IPThreshold = 20
	}
	if c.Issuer == "" {
		c.Issuer = "Berth"
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Service is the accounts service. It is safe for concurrent use.
type Service struct {
	st   *store.Store
	mail mail.Mailer
	cfg  Config
	log  *slog.Logger
	base string // PublicURL without a trailing slash

	// dummyHash is verified against when the email is unknown (or the
	// account has no password), so that a login for an account that does
	// not exist costs the same argon2id work as a wrong password.
	dummyHash string

	mailWG sync.WaitGroup // mails being sent in the background

	// resetHook, when set (by tests in this package), runs at the start
	// of a reset request's background part.
	resetHook func()
}

// New returns a service on st. A nil mailer drops mails with a log line
// (mail.Log). st must have keys: the 2FA columns are encrypted.
func New(st *store.Store, m mail.Mailer, cfg Config) (*Service, error) {
	cfg.setDefaults()
	u, err := url.Parse(cfg.PublicURL)
	if cfg.PublicURL == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("accounts: Config.PublicURL must be the UI's absolute http(s) URL (mailed links use it), got %q", cfg.PublicURL)
	}
	if m == nil {
		m = mail.Log{Logger: cfg.Logger}
	}
	dummy, err := password.Hash(randomToken())
	if err != nil {
		return nil, fmt.Errorf("accounts: dummy hash: %w", err)
	}
	return &Service{
		st: st, mail: m, cfg: cfg, log: cfg.Logger.With("component", "accounts"),
		base: strings.TrimRight(cfg.PublicURL, "/"), dummyHash: dummy,
	}, nil
}

// Config returns the effective configuration (defaults filled in).
func (s *Service) Config() Config { return s.cfg }

// Wait blocks until the mails being sent in the background (password
// resets) are done: for shutdown, and for tests.
func (s *Service) Wait() { s.mailWG.Wait() }

func (s *Service) now() time.Time { return s.cfg.Now() }

// Meta describes the client making a request.
type Meta struct {
	IP        netip.Addr // zero when unknown (e.g. a unix socket)
	UserAgent string
}

func (m Meta) ip() *netip.Addr {
	if !m.IP.IsValid() {
		return nil
	}
	a := m.IP.Unmap()
	return &a
}

// Actor is who performs an action: the one principal type of package auth
// (a signed-in user or an API token) with the client's address and agent
// for the audit trail. It adds no rule of its own: every check is
// auth.Require or Principal.Allows on the embedded principal. Get one from
// Session.Actor or Service.TokenActor.
type Actor struct {
	auth.Principal
	Meta
}

// userActor is u acting through a browser session (sessionID may be nil
// while a mailed link is being used): its scopes are its role's.
func userActor(u store.User, sessionID *store.ID, meta Meta) Actor {
	p := auth.Principal{UserID: u.ID, Email: u.Email, Role: u.Role, SessionID: sessionID, Scopes: auth.RoleScopes(u.Role)}
	if meta.IP.IsValid() {
		p.IP = meta.IP.String()
	}
	return Actor{Principal: p, Meta: meta}
}

// label names the actor in audit rows: the email, or token:<name>.
func (a Actor) label() string {
	if a.TokenID != nil {
		return "token:" + a.TokenName
	}
	return a.Email
}

func (s *Service) require(a Actor, need store.Scope) error {
	return auth.Require(&a.Principal, need)
}

// requireSession: credential changes (password, 2FA) need a signed-in
// person, not an API token, because they re-authenticate with the password.
func (s *Service) requireSession(a Actor) error {
	if a.UserID == (store.ID{}) {
		return ErrUnauthenticated
	}
	if a.TokenID != nil || a.SessionID == nil {
		return fmt.Errorf("%w: only a signed-in user can change their credentials", ErrForbidden)
	}
	return nil
}

// TokenActor turns an authenticated API token (grpcapi's principal) into an
// actor, reloading the token and its user: the user must be active and the
// token live. Scopes are the token's, capped by the user's current role.
func (s *Service) TokenActor(ctx context.Context, p *auth.Principal, meta Meta) (Actor, error) {
	if p == nil || p.TokenID == nil {
		return Actor{}, ErrUnauthenticated
	}
	u, err := s.st.User(ctx, p.UserID)
	if errors.Is(err, store.ErrNotFound) {
		return Actor{}, ErrUnauthenticated
	}
	if err != nil {
		return Actor{}, fmt.Errorf("token actor: %w", err)
	}
	if u.Status != store.UserActive {
		return Actor{}, ErrUnauthenticated
	}
	t, err := s.st.APIToken(ctx, *p.TokenID)
	if err != nil {
		return Actor{}, fmt.Errorf("token actor: %w", err)
	}
	if t.RevokedAt != nil || t.UserID != u.ID || (t.ExpiresAt != nil && !s.now().Before(*t.ExpiresAt)) {
		return Actor{}, ErrUnauthenticated
	}
	pr := auth.Principal{
		UserID: u.ID, Email: u.Email, Role: u.Role, TokenID: &t.ID, TokenName: t.Name, TokenExpiresAt: t.ExpiresAt,
		Scopes: auth.CapScopes(t.Scopes, u.Role), IP: p.IP,
	}
	if pr.IP == "" && meta.IP.IsValid() {
		pr.IP = meta.IP.String()
	}
	return Actor{Principal: pr, Meta: meta}, nil
}

// ResolveUser turns a user reference (a user id, or an email) into a user
// id for an action on that user. Looking a user up by email tells whether
// an account exists, so it needs the admin scope like the actions that use
// it; an id is passed through for the action itself to check.
func (s *Service) ResolveUser(ctx context.Context, a Actor, ref string) (store.ID, error) {
	if err := s.require(a, store.ScopeRead); err != nil {
		return store.ID{}, err
	}
	if id, err := store.ParseID(ref); err == nil {
		return id, nil
	}
	if err := s.require(a, store.ScopeAdmin); err != nil {
		return store.ID{}, err
	}
	if len(ref) > 254 || !strings.Contains(ref, "@") {
		return store.ID{}, invalid("user must be an id or an email")
	}
	u, err := s.st.UserByEmail(ctx, ref)
	if errors.Is(err, store.ErrNotFound) {
		return store.ID{}, ErrNotFound
	}
	if err != nil {
		return store.ID{}, fmt.Errorf("resolve user: %w", err)
	}
	return u.ID, nil
}

// randomToken is 256 random bits, URL-safe: session cookies and mailed
// link tokens.
func randomToken() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("accounts: crypto/rand: %v", err)) // never happens on Linux
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// hashToken is what the database stores and looks up instead of a token.
func hashToken(tok string) []byte {
	sum := sha256.Sum256([]byte(tok))
	return sum[:]
}

func idPtr(id store.ID) *store.ID { return &id }
