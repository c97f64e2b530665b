package accounts_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/berthhq/berth/controller/internal/accounts"
	"github.com/berthhq/berth/controller/internal/mail/mailtest"
	"github.com/berthhq/berth/controller/internal/password"
	"github.com/berthhq/berth/controller/internal/secrets"
	"github.com/berthhq/berth/controller/internal/store"
	"github.com/berthhq/berth/controller/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

const publicURL = "https://berth.example.test"

// clock is the service's injected time. It starts in the middle of a TOTP
// step (so a code made at "now" is not at a step's edge) and only moves
// forward, never behind the database's own clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type env struct {
	t     *testing.T
	ctx   context.Context
	db    *testdb.DB
	st    *store.Store
	svc   *accounts.Service
	smtp  *mailtest.Server
	clock *clock
	logs  *syncBuffer

	mu      sync.Mutex
	secrets []string // every secret the test handled: must not leak
}

// newEnv gives a service on a fresh database with a real SMTP capture
// server, an injected clock and a captured logger. When the test ends it
// checks that no secret the test registered appears in the logs or in the
// audit tables.
func newEnv(t *testing.T, tune ...func(*accounts.Config)) *env {
	t.Helper()
	db := testdb.New(t)
	kr, err := secrets.Generate()
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(db.Pool, secrets.NewSource(kr, ""))
	start := time.Now().Truncate(30 * time.Second).Add(15 * time.Second)
	e := &env{t: t, ctx: context.Background(), db: db, st: st, smtp: mailtest.Start(t), clock: &clock{t: start}, logs: &syncBuffer{}}
	cfg := accounts.Config{
		PublicURL: publicURL,
		Now:       e.clock.Now,
		Logger:    slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, f := range tune {
		f(&cfg)
	}
	e.svc, err = accounts.New(st, e.smtp.Mailer(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.checkNoLeaks)
	return e
}

// secret registers values that must never show up in logs or audit rows.
func (e *env) secret(vals ...string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, v := range vals {
		if v != "" {
			e.secrets = append(e.secrets, v)
		}
	}
}

func (e *env) checkNoLeaks() {
	e.svc.Wait()
	var audit strings.Builder
	for _, q := range []string{
		"SELECT coalesce(string_agg(row_to_json(x)::text, E'\\n'), '') FROM activity_log x",
		"SELECT coalesce(string_agg(row_to_json(x)::text, E'\\n'), '') FROM security_events x",
		"SELECT coalesce(string_agg(row_to_json(x)::text, E'\\n'), '') FROM login_attempts x",
	} {
		var s string
		if err := e.db.Pool.QueryRow(context.Background(), q).Scan(&s); err != nil {
			e.t.Errorf("read audit rows: %v", err)
			return
		}
		audit.WriteString(s)
	}
	logs := e.logs.String()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.secrets {
		if strings.Contains(logs, s) {
			e.t.Errorf("a secret (%.4s…) appears in the logs", s)
		}
		if strings.Contains(audit.String(), s) {
			e.t.Errorf("a secret (%.4s…) appears in the audit tables", s)
		}
	}
}

var (
	ipA = netip.MustParseAddr("192.0.2.10")
	ipB = netip.MustParseAddr("198.51.100.7")
)

func meta(ip netip.Addr, ua string) accounts.Meta { return accounts.Meta{IP: ip, UserAgent: ua} }

// user creates an active account directly in the store.
func (e *env) user(role store.UserRole, email, pw string) store.User {
	e.t.Helper()
	e.secret(pw)
	h, err := password.Hash(pw)
	if err != nil {
		e.t.Fatal(err)
	}
	u, err := e.st.CreateUser(e.ctx, store.CreateUserParams{Email: email, PasswordHash: h, Role: role})
	if err != nil {
		e.t.Fatal(err)
	}
	return u
}

// login signs in without 2FA and returns the session and its token.
func (e *env) login(email, pw string, m accounts.Meta) (*accounts.Session, string) {
	e.t.Helper()
	res, err := e.svc.Login(e.ctx, email, pw, m)
	if err != nil {
		e.t.Fatalf("login %s: %v", email, err)
	}
	if res.TwoFactorRequired {
		e.t.Fatalf("login %s: unexpected 2FA step", email)
	}
	e.secret(res.Token)
	sess, err := e.svc.Authenticate(e.ctx, res.Token, m)
	if err != nil {
		e.t.Fatalf("authenticate %s: %v", email, err)
	}
	return sess, res.Token
}

// actor signs in and returns the session's actor.
func (e *env) actor(email, pw string) accounts.Actor {
	e.t.Helper()
	s, _ := e.login(email, pw, meta(ipA, "test"))
	return s.Actor(meta(ipA, "test"))
}

// code is the TOTP code for secret at the service's current time.
func (e *env) code(secret string) string {
	e.t.Helper()
	c, err := totp.GenerateCode(secret, e.clock.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *env) events(typ string) []store.SecurityEvent {
	e.t.Helper()
	evs, err := e.st.SecurityEvents(e.ctx, store.SecurityEventFilter{Type: typ, Limit: 1000})
	if err != nil {
		e.t.Fatal(err)
	}
	return evs
}

func (e *env) activities(action string) []store.Activity {
	e.t.Helper()
	as, err := e.st.ActivityLog(e.ctx, store.ActivityFilter{Action: action, Limit: 1000})
	if err != nil {
		e.t.Fatal(err)
	}
	return as
}

func (e *env) attempts(email string) []store.LoginAttempt {
	e.t.Helper()
	as, err := e.st.LoginAttempts(e.ctx, store.LoginAttemptFilter{Email: email, Limit: 1000})
	if err != nil {
		e.t.Fatal(err)
	}
	return as
}

// mailedToken waits for the next mail to `to` and returns the token of
// its /kind/{token} link.
func (e *env) mailedToken(to, kind string) string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	m, err := e.smtp.WaitFor(ctx, to)
	if err != nil {
		e.t.Fatal(err)
	}
	re := regexp.MustCompile(regexp.QuoteMeta(publicURL+"/"+kind+"/") + `([A-Za-z0-9_-]+)`)
	sub := re.FindStringSubmatch(m.Text)
	if sub == nil {
		e.t.Fatalf("no %s link in mail: %q", kind, m.Text)
	}
	e.secret(sub[1])
	return sub[1]
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: err = %v, want %v", what, err, want)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
