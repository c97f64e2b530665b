package web_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/accounts"
	"github.com/berthhq/berth/controller/internal/audit"
	"github.com/berthhq/berth/controller/internal/backups"
	"github.com/berthhq/berth/controller/internal/ca"
	"github.com/berthhq/berth/controller/internal/deploys"
	"github.com/berthhq/berth/controller/internal/domains"
	"github.com/berthhq/berth/controller/internal/fleet"
	"github.com/berthhq/berth/controller/internal/mail"
	"github.com/berthhq/berth/controller/internal/mail/mailtest"
	"github.com/berthhq/berth/controller/internal/notify"
	"github.com/berthhq/berth/controller/internal/password"
	"github.com/berthhq/berth/controller/internal/secrets"
	"github.com/berthhq/berth/controller/internal/store"
	"github.com/berthhq/berth/controller/internal/testdb"
	"github.com/berthhq/berth/controller/internal/web"
)

func TestMain(m *testing.M) { testdb.Main(m) }

const adminPassword = "a long admin passphrase 42"

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
	t    *testing.T
	st   *store.Store
	db   *testdb.DB
	srv  *httptest.Server
	smtp *mailtest.Server
	logs *syncBuffer
	acc  *accounts.Service
	ui   *web.Server
	dep  *deploys.Service
	// notify is the UI's notifications service when newEnvWith made it.
	notify *notify.Service
	// dom is the UI's domains service (its renewal loop is not run).
	dom *domains.Service
	bk  *backups.Service
	fl  *fleet.Service
}

func newEnv(t *testing.T, secure bool) *env {
	t.Helper()
	return newEnvMail(t, secure, nil)
}

// newEnvMail is newEnv with another mailer than the test SMTP server's
// (mail.Log: a controller without a mail server).
func newEnvMail(t *testing.T, secure bool, mailer mail.Mailer) *env {
	t.Helper()
	return newEnvWith(t, secure, mailer, nil)
}

// newEnvWith is newEnvMail with the UI's notifications service made from
// notifyCfg (its Store and Logger filled in), e.g. one that allows private
// webhook targets; nil lets the UI make its own.
func newEnvWith(t *testing.T, secure bool, mailer mail.Mailer, notifyCfg *notify.Config) *env {
	t.Helper()
	db := testdb.New(t)
	kr, err := secrets.Generate()
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(db.Pool, secrets.NewSource(kr, ""))
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	authority, _, err := ca.LoadOrCreate(t.TempDir(), ca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fl := fleet.New(st, authority, log, fleet.Config{ControllerAddr: "127.0.0.1:7443", InstallURL: "http://127.0.0.1:8080",
		AgentSHA256: map[string]string{"amd64": strings.Repeat("a1", 32), "arm64": strings.Repeat("b2", 32)}})
	smtp := mailtest.Start(t)
	e := &env{t: t, st: st, db: db, smtp: smtp, logs: logs}
	mux := http.NewServeMux()
	srv := httptest.NewUnstartedServer(nil)
	srv.Start()
	t.Cleanup(srv.Close)
	if mailer == nil {
		mailer = smtp.Mailer()
	}
	e.acc, err = accounts.New(st, mailer, accounts.Config{PublicURL: srv.URL, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	e.dep = deploys.New(st, fl, log, deploys.Config{})
	if e.dom, err = domains.New(st, e.dep, log, domains.Config{}); err != nil {
		t.Fatal(err)
	}
	// Not Run: jobs stay queued (no agent here); the backups pages' reads
	// and refusals need no dispatcher.
	e.bk = backups.New(st, fl, e.dep, log, backups.Config{})
	e.fl = fl
	var ns *notify.Service
	if notifyCfg != nil {
		cfg := *notifyCfg
		cfg.Store, cfg.Logger = st, log
		if ns, err = notify.New(cfg); err != nil {
			t.Fatal(err)
		}
		e.notify = ns
	}
	ui, err := web.New(web.Deps{Log: log, Store: st, Fleet: fl, Accounts: e.acc, Audit: audit.New(st), Deploys: e.dep, Notify: ns, Domains: e.dom},
		web.Config{Secure: secure, EventsPoll: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go ui.Run(ctx)
	ui.SetBackups(e.bk)
	ui.Register(mux)
	e.ui = ui
	srv.Config.Handler = ui.Wrap(mux)
	e.srv = srv
	return e
}

func (e *env) user(email string, role store.UserRole) store.User {
	e.t.Helper()
	h, err := password.Hash(adminPassword)
	if err != nil {
		e.t.Fatal(err)
	}
	u, err := e.st.CreateUser(context.Background(), store.CreateUserParams{Email: email, PasswordHash: h, Role: role})
	if err != nil {
		e.t.Fatal(err)
	}
	return u
}

// client is a browser-like client: a cookie jar, redirects not followed,
// and same-origin headers like a browser's form post.
type client struct {
	e   *env
	hc  *http.Client
	jar *cookiejar.Jar
}

func (e *env) client() *client {
	jar, _ := cookiejar.New(nil)
	return &client{e: e, jar: jar, hc: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (c *client) do(req *http.Request) (*http.Response, string) {
	c.e.t.Helper()
	resp, err := c.hc.Do(req)
	if err != nil {
		c.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func (c *client) get(path string) (*http.Response, string) {
	req, _ := http.NewRequest(http.MethodGet, c.e.srv.URL+path, nil)
	req.Header.Set("Accept", "text/html")
	return c.do(req)
}

func (c *client) post(path string, form url.Values) (*http.Response, string) {
	req, _ := http.NewRequest(http.MethodPost, c.e.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "text/html")
	req.Header.Set("Origin", c.e.srv.URL)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	return c.do(req)
}

func (c *client) login(email, pw string) *http.Response {
	resp, body := c.post("/login", url.Values{"email": {email}, "password": {pw}})
	if resp.StatusCode != http.StatusSeeOther {
		c.e.t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	return resp
}

func TestSecurityHeadersOnEveryPage(t *testing.T) {
	e := newEnv(t, true)
	c := e.client()
	for _, p := range []string{"/login", "/forgot", "/servers", "/assets/app.js", "/nope"} {
		resp, _ := c.get(p)
		h := resp.Header
		csp := h.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: CSP %q", p, csp)
		}
		if h.Get("Referrer-Policy") == "" || h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: missing Referrer-Policy or nosniff: %v", p, h)
		}
		if !strings.HasPrefix(h.Get("Strict-Transport-Security"), "max-age=") {
			t.Errorf("%s: no HSTS when served as secure", p)
		}
	}
	// No inline script anywhere in a page.
	_, body := c.get("/login")
	if strings.Contains(body, "<script>") || strings.Contains(body, " onclick=") || strings.Contains(body, "style=") {
		t.Errorf("login page has inline script or style:\n%s", body)
	}
}

func TestNoHSTSOnPlainHTTP(t *testing.T) {
	e := newEnv(t, false)
	resp, _ := e.client().get("/login")
	if resp.Header.Get("Strict-Transport-Security") != "" {
		t.Fatal("HSTS sent over plain HTTP")
	}
}

func TestLoginSessionAndLogout(t *testing.T) {
	e := newEnv(t, false)
	e.user("admin@example.com", store.RoleAdmin)
	c := e.client()

	// Signed out: people go to the login page and come back afterwards.
	resp, _ := c.get("/servers?status=online")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login?next=%2Fservers%3Fstatus%3Donline" {
		t.Fatalf("signed out: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	// Scripts get a 401, not a redirect.
	resp, _ = c.post("/servers", url.Values{"name": {"web-1"}})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("signed-out POST: %d", resp.StatusCode)
	}

	// Plant a cookie: login must replace it, never adopt it (fixation).
	u, _ := url.Parse(e.srv.URL)
	c.jar.SetCookies(u, []*http.Cookie{{Name: "berth_session", Value: "attacker-chosen", Path: "/"}})
	resp, body := c.post("/login", url.Values{"email": {"admin@example.com"}, "password": {adminPassword}, "next": {"/servers?status=online"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/servers?status=online" {
		t.Fatalf("login: %d %s %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	var sess *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == "berth_session" && ck.Value != "" {
			sess = ck
		}
	}
	if sess == nil || sess.Value == "attacker-chosen" || !sess.HttpOnly || sess.SameSite != http.SameSiteLaxMode || sess.Secure {
		t.Fatalf("session cookie: %+v", sess)
	}
	if len(sess.Value) < 43 {
		t.Fatalf("session token too short: %d chars", len(sess.Value))
	}
	resp, body = c.get("/servers")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "No servers") {
		t.Fatalf("servers page: %d %s", resp.StatusCode, body)
	}
	// Only the token's hash is stored.
	var n int
	if err := e.db.Pool.QueryRow(context.Background(), "SELECT count(*) FROM sessions WHERE token_hash::text LIKE '%'||$1||'%'", sess.Value).Scan(&n); err != nil || n != 0 {
		t.Fatalf("raw token stored? %d %v", n, err)
	}

	resp, _ = c.post("/logout", nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	// The old cookie is dead server-side, even if a client kept it.
	c2 := e.client()
	c2.jar.SetCookies(u, []*http.Cookie{{Name: "berth_session", Value: sess.Value, Path: "/"}})
	if resp, _ := c2.get("/servers"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("session after logout: %d", resp.StatusCode)
	}
}

func TestSecureCookieAndHostPrefixOverTLS(t *testing.T) {
	e := newEnv(t, true)
	e.user("admin@example.com", store.RoleAdmin)
	resp := e.client().login("admin@example.com", adminPassword)
	found := false
	for _, ck := range resp.Cookies() {
		if ck.Name == "__Host-berth_session" {
			found = true
			if !ck.Secure || !ck.HttpOnly || ck.Path != "/" || ck.Domain != "" {
				t.Fatalf("cookie %+v", ck)
			}
		}
	}
	if !found {
		t.Fatal("no __Host- session cookie")
	}
}

func TestLoginFailuresAndThrottle(t *testing.T) {
	e := newEnv(t, false)
	e.user("admin@example.com", store.RoleAdmin)
	c := e.client()
	for i := 0; i < 5; i++ {
		resp, body := c.post("/login", url.Values{"email": {"admin@example.com"}, "password": {"wrong password " + string(rune('a'+i))}})
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Invalid email or password") {
			t.Fatalf("attempt %d: %d", i, resp.StatusCode)
		}
		if strings.Contains(body, "wrong password") {
			t.Fatal("the typed password is echoed back")
		}
	}
	resp, body := c.post("/login", url.Values{"email": {"admin@example.com"}, "password": {adminPassword}})
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "Too many attempts. Try again in") {
		t.Fatalf("throttled: %d %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// Unknown emails get the same answer as wrong passwords.
	resp, body = c.post("/login", url.Values{"email": {"nobody@example.com"}, "password": {"whatever at all"}})
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Invalid email or password") {
		t.Fatalf("unknown email: %d", resp.StatusCode)
	}
	var n int
	if err := e.db.Pool.QueryRow(context.Background(), "SELECT count(*) FROM login_attempts").Scan(&n); err != nil || n < 7 {
		t.Fatalf("attempts recorded: %d %v", n, err)
	}
	// Empty and oversized input: a clear answer, nothing crashes.
	if resp, _ := c.post("/login", url.Values{}); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("empty login: %d", resp.StatusCode)
	}
	if resp, _ := c.post("/login", url.Values{"email": {"a@b.c"}, "password": {strings.Repeat("x", 70<<10)}}); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized login: %d", resp.StatusCode)
	}
}

func TestCrossOriginPostRefused(t *testing.T) {
	e := newEnv(t, false)
	e.user("admin@example.com", store.RoleAdmin)
	c := e.client()
	c.login("admin@example.com", adminPassword)
	for name, hdr := range map[string]map[string]string{
		"fetch metadata": {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
		"origin only":    {"Origin": "https://evil.example"},
	} {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/servers", strings.NewReader("name=evil"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, body := c.do(req)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "Cross-origin request refused") {
			t.Errorf("%s: %d %s", name, resp.StatusCode, body)
		}
	}
	if _, err := e.st.ServerByName(context.Background(), "evil"); err == nil {
		t.Fatal("a cross-origin POST created a server")
	}
	// The same form from the same origin works.
	resp, body := c.post("/servers", url.Values{"name": {"web-1"}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "install.sh") {
		t.Fatalf("same-origin add: %d %s", resp.StatusCode, body)
	}
}

func TestOpenRedirectRefused(t *testing.T) {
	e := newEnv(t, false)
	e.user("admin@example.com", store.RoleAdmin)
	c := e.client()
	// The last ones are what a browser turns into "//evil.example" (tab and
	// newline dropped, backslash read as slash): /login?next=/%09/evil.example
	// decodes to the third from last.
	for _, next := range []string{"//evil.example/x", "https://evil.example", "/\\evil.example", "javascript:alert(1)",
		"/\t/evil.example", "/\n/evil.example", " //evil.example"} {
		resp, _ := c.post("/login", url.Values{"email": {"admin@example.com"}, "password": {adminPassword}, "next": {next}})
		if loc := resp.Header.Get("Location"); loc != "/" {
			t.Errorf("next=%q redirected to %q", next, loc)
		}
	}
}

func TestRolesEnforcedOnPages(t *testing.T) {
	e := newEnv(t, false)
	e.user("viewer@example.com", store.RoleViewer)
	c := e.client()
	c.login("viewer@example.com", adminPassword)
	if resp, _ := c.get("/servers"); resp.StatusCode != http.StatusOK {
		t.Fatalf("viewer reads servers: %d", resp.StatusCode)
	}
	if resp, _ := c.post("/servers", url.Values{"name": {"web-1"}}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("viewer adds a server: %d", resp.StatusCode)
	}
	if resp, _ := c.get("/security"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("viewer reads security events: %d", resp.StatusCode)
	}
	if resp, _ := c.get("/users"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("viewer lists users: %d", resp.StatusCode)
	}
	if resp, _ := c.get("/activity"); resp.StatusCode != http.StatusOK {
		t.Fatalf("viewer reads activity: %d", resp.StatusCode)
	}
	// A viewer's tokens can only read.
	resp, body := c.post("/tokens", url.Values{"name": {"ci"}, "scope": {"admin"}})
	if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("viewer made an admin token: %d %s", resp.StatusCode, body)
	}
}

func TestTokenShownOnce(t *testing.T) {
	e := newEnv(t, false)
	e.user("admin@example.com", store.RoleAdmin)
	c := e.client()
	c.login("admin@example.com", adminPassword)
	resp, body := c.post("/tokens", url.Values{"name": {"ci"}, "scope": {"deploy"}, "expires": {"720h"}})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create token: %d %s", resp.StatusCode, body)
	}
	i := strings.Index(body, "berth_")
	if i < 0 {
		t.Fatal("token not shown")
	}
	token := body[i : i+len("berth_")+43]
	_, list := c.get("/tokens")
	if strings.Contains(list, token) {
		t.Fatal("token shown again on the list")
	}
	if !strings.Contains(list, "ci") {
		t.Fatal("token not listed")
	}
	for _, page := range []string{"/activity", "/security"} {
		if _, b := c.get(page); strings.Contains(b, token) {
			t.Fatalf("token appears on %s", page)
		}
	}
	if strings.Contains(e.logs.String(), token) {
		t.Fatal("token in the logs")
	}
}

func TestFleetPagesAndMetricsJSON(t *testing.T) {
	e := newEnv(t, false)
	e.user("admin@example.com", store.RoleAdmin)
	c := e.client()
	c.login("admin@example.com", adminPassword)
	if resp, body := c.post("/servers", url.Values{"name": {"Bad Name!"}}); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "lowercase slug") {
		t.Fatalf("bad name: %d", resp.StatusCode)
	}
	resp, body := c.post("/servers", url.Values{"name": {"web-1"}, "labels": {"env=prod\nrole=web"}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "curl -fsSL") || !strings.Contains(body, "bjt_") {
		t.Fatalf("add: %d", resp.StatusCode)
	}
	if resp, _ := c.post("/servers", url.Values{"name": {"web-1"}}); resp.StatusCode != http.StatusConflict {
		t.Fatalf("duplicate: %d", resp.StatusCode)
	}
	srv, err := e.st.ServerByName(context.Background(), "web-1")
	if err != nil {
		t.Fatal(err)
	}
	_, list := c.get("/servers")
	if !strings.Contains(list, `data-server-id="`+srv.ID.String()+`"`) || strings.Contains(list, "bjt_") {
		t.Fatal("server row missing, or the join token shown again")
	}
	if resp, body := c.get("/servers/web-1"); resp.StatusCode != http.StatusOK || !strings.Contains(body, `data-metrics="/servers/web-1/metrics.json?range=1h"`) {
		t.Fatalf("server page: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/servers/web-1/metrics.json?range=1h", nil)
	resp, body = c.do(req)
	var data struct {
		T      []int64               `json:"t"`
		Series map[string][]*float64 `json:"series"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &data) != nil {
		t.Fatalf("metrics: %d %s", resp.StatusCode, body)
	}
	req, _ = http.NewRequest(http.MethodGet, e.srv.URL+"/servers/web-1/metrics.json?range=10y", nil)
	if resp, _ := c.do(req); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad range: %d", resp.StatusCode)
	}
	// Removal needs the name typed; then the server is gone.
	c.post("/servers/web-1/remove", url.Values{"confirm": {"nope"}})
	if _, err := e.st.ServerByName(context.Background(), "web-1"); err != nil {
		t.Fatal("removed without confirmation")
	}
	if resp, _ := c.post("/servers/web-1/remove", url.Values{"confirm": {"web-1"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("remove: %d", resp.StatusCode)
	}
	if _, err := e.st.ServerByName(context.Background(), "web-1"); err == nil {
		t.Fatal("server still there")
	}
	// Every change above is in the activity log, shown on its page.
	_, act := c.get("/activity")
	for _, a := range []string{"server.created", "server.removed"} {
		if !strings.Contains(act, a) {
			t.Errorf("activity page lacks %s", a)
		}
	}
}

func TestLiveStatusOverServerSentEvents(t *testing.T) {
	e := newEnv(t, false)
	e.user("admin@example.com", store.RoleAdmin)
	c := e.client()
	c.login("admin@example.com", adminPassword)
	c.post("/servers", url.Values{"name": {"web-1"}})
	srv, err := e.st.ServerByName(context.Background(), "web-1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/events", nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	lines := bufio.NewScanner(resp.Body)
	next := func(want string) {
		t.Helper()
		for lines.Scan() {
			if strings.HasPrefix(lines.Text(), "data: ") && strings.Contains(lines.Text(), want) {
				return
			}
		}
		t.Fatalf("stream ended before %s: %v", want, lines.Err())
	}
	next(`"status":"pending"`)
	// The agent's first hello turns the server online in the database;
	// open pages see it without a reload.
	if _, _, err := e.st.MarkServerSeen(context.Background(), srv.ID, nil); err != nil {
		t.Fatal(err)
	}
	next(`"status":"online"`)
}

// The forgot-password form answers the same for any address and says when
// to try again once an address has asked too often (3 an hour by default),
// whether or not it has an account.
func TestForgotPasswordThrottled(t *testing.T) {
	e := newEnv(t, false)
	e.user("admin@example.com", store.RoleAdmin)
	c := e.client()
	for _, email := range []string{"admin@example.com", "nobody@example.com"} {
		for i := range 3 {
			resp, body := c.post("/forgot", url.Values{"email": {email}})
			if resp.StatusCode != http.StatusOK || strings.Contains(body, "Too many") {
				t.Fatalf("%s request %d: %d", email, i, resp.StatusCode)
			}
		}
		resp, body := c.post("/forgot", url.Values{"email": {email}})
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "Too many requests. Try again in") {
			t.Fatalf("%s: 4th request: %d %q", email, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	e.acc.Wait()
}

// The add-server page prints the install one-liner with the CA pin and the
// agent binaries' SHA-256s, and shows the join token beside it, never in a
// command (it would land in ps and the shell's history).
func TestAddServerPageKeepsTokenOffCommands(t *testing.T) {
	e := newEnv(t, false)
	e.user("admin@example.com", store.RoleAdmin)
	c := e.client()
	c.login("admin@example.com", adminPassword)
	resp, body := c.post("/servers", url.Values{"name": {"web-1"}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("add: %d %s", resp.StatusCode, body)
	}
	token := regexp.MustCompile(`id="join-token" readonly class="mono" value="(bjt_[A-Za-z0-9_-]+)"`).FindStringSubmatch(body)
	if token == nil {
		t.Fatalf("no join token shown: %s", body)
	}
	want := regexp.MustCompile(`curl -fsSL http://127\.0\.0\.1:8080/install\.sh \| sudo sh -s -- --controller 127\.0\.0\.1:7443 --ca-pin sha256:[0-9a-f]{64} --sha256-amd64 (a1){32} --sha256-arm64 (b2){32}</textarea>`)
	if !want.MatchString(body) {
		t.Fatalf("install command not as documented: %s", body)
	}
	if !strings.Contains(body, "berth-agent enroll --controller 127.0.0.1:7443 --ca-pin sha256:") {
		t.Fatalf("enroll command: %s", body)
	}
	if strings.Count(body, token[1]) != 1 || strings.Contains(body, "--token ") {
		t.Fatalf("the join token appears in a command: %s", body)
	}
}

// An invitation made without a mail server says it was not sent and shows
// the admin the single-use link once; the link works; nothing is mailed.
func TestInviteWithoutMailServerShowsLink(t *testing.T) {
	e := newEnvMail(t, false, mail.Log{})
	e.user("admin@example.com", store.RoleAdmin)
	c := e.client()
	c.login("admin@example.com", adminPassword)
	resp, body := c.post("/users", url.Values{"email": {"new@example.com"}, "role": {"viewer"}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Not sent") || strings.Contains(body, "Invitation mailed") {
		t.Fatalf("invite without mail: %d\n%s", resp.StatusCode, body)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("the page with the link may be cached: Cache-Control %q", cc)
	}
	i := strings.Index(body, e.srv.URL+"/invite/")
	if i < 0 {
		t.Fatalf("no invitation link on the page:\n%s", body)
	}
	link := body[i:]
	link = link[:strings.IndexByte(link, '"')]
	if len(e.smtp.Messages()) != 0 {
		t.Fatal("a mail went out")
	}
	// The link is the invitee's: it opens the set-password page.
	if resp, page := e.client().get(strings.TrimPrefix(link, e.srv.URL)); resp.StatusCode != http.StatusOK || !strings.Contains(page, "password") {
		t.Fatalf("invitation link: %d\n%s", resp.StatusCode, page)
	}
	// Shown once: the users page does not show it again.
	if _, again := c.get("/users"); strings.Contains(again, "/invite/") {
		t.Fatal("the invitation link is shown again")
	}
}

// The add-server page warns when its commands name loopback addresses
// (this test controller's are 127.0.0.1) and names the flags that fix it.
func TestAddServerWarnsOfLoopbackAddresses(t *testing.T) {
	e := newEnv(t, false)
	e.user("admin@example.com", store.RoleAdmin)
	c := e.client()
	c.login("admin@example.com", adminPassword)
	resp, body := c.post("/servers", url.Values{"name": {"web-1"}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("add server: %d\n%s", resp.StatusCode, body)
	}
	for _, want := range []string{"data-warning", "--advertise-addr", "--public-url"} {
		if !strings.Contains(body, want) {
			t.Errorf("the add-server page does not say %q:\n%s", want, body)
		}
	}
}
