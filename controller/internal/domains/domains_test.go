package domains

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/ca"
	"github.com/berthhq/berth/controller/internal/deploys"
	"github.com/berthhq/berth/controller/internal/fleet"
	"github.com/berthhq/berth/controller/internal/secrets"
	"github.com/berthhq/berth/controller/internal/store"
	"github.com/berthhq/berth/controller/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

func TestNormalizeHost(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"Shop.Example.COM.":       "shop.example.com",
		"  www.example.com  ":     "www.example.com",
		"bücher.example":          "xn--bcher-kva.example",
		"BÜCHER.Example.":         "xn--bcher-kva.example",
		"*.Example.com":           "*.example.com",
		"xn--bcher-kva.example":   "xn--bcher-kva.example",
		"a-b.c-d.example.org":     "a-b.c-d.example.org",
		"123.example.com":         "123.example.com",
		"*.xn--bcher-kva.example": "*.xn--bcher-kva.example",
	} {
		got, err := NormalizeHost(in)
		if err != nil || got != want {
			t.Errorf("NormalizeHost(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 62) + ".com"
	for _, in := range []string{"", ".", "localhost", "1.2.3.4", "[::1]", "::1", "a..b.com", "-a.example.com", "a-.example.com",
		"a_b.example.com", "*.com", "a.*.example.com", "*", "**.example.com", "exa mple.com", "example.com/x", "http://example.com",
		strings.Repeat("a", 64) + ".com", long, "a;b.example.com", "a\nb.example.com"} {
		if got, err := NormalizeHost(in); err == nil || !errors.Is(err, ErrInvalid) {
			t.Errorf("NormalizeHost(%q) = %q, %v; want ErrInvalid", in, got, err)
		}
	}
}

func TestRedirectAndPaths(t *testing.T) {
	t.Parallel()
	for in, want := range map[string][2]string{
		"Example.COM":              {"example.com", "example.com"},
		"https://Example.com/a/b":  {"https://example.com/a/b", "example.com"},
		"http://example.com:8080/": {"http://example.com:8080/", "example.com"},
		"https://bücher.example/":  {"https://xn--bcher-kva.example/", "xn--bcher-kva.example"},
	} {
		stored, host, err := redirectTarget(in)
		if err != nil || stored != want[0] || host != want[1] {
			t.Errorf("redirectTarget(%q) = %q %q %v; want %v", in, stored, host, err, want)
		}
	}
	for _, in := range []string{"", "ftp://example.com", "https://", "https://u:p@example.com/", "https://example.com/a b",
		"https://example.com/\"x", "*.example.com", "https://1.2.3.4/", "https://example.com/;return 200"} {
		if _, _, err := redirectTarget(in); err == nil {
			t.Errorf("redirectTarget(%q) accepted", in)
		}
	}
	for in, want := range map[string]string{"http://127.0.0.1:3000": "http://127.0.0.1:3000", "http://127.0.0.1:3000/": "http://127.0.0.1:3000",
		"unix:/run/app.sock": "unix:/run/app.sock"} {
		if got, err := checkUpstream(in); err != nil || got != want {
			t.Errorf("checkUpstream(%q) = %q %v", in, got, err)
		}
	}
	for _, in := range []string{"127.0.0.1:3000", "http://127.0.0.1:3000/path", "unix:relative.sock", "http://h:1/?q", "unix:/a b.sock", "http://h:1;x"} {
		if _, err := checkUpstream(in); err == nil {
			t.Errorf("checkUpstream(%q) accepted", in)
		}
	}
	for _, in := range []string{"relative.pem", "/a/../b.pem", "/a b.pem", "/a;b", "/a$b", ""} {
		if _, err := checkServerPath("--cert-path", in); err == nil {
			t.Errorf("checkServerPath(%q) accepted", in)
		}
	}
	for _, in := range []string{"../x", "a/../../x", "a b", "a;b"} {
		if _, err := checkStaticRoot(in); err == nil {
			t.Errorf("checkStaticRoot(%q) accepted", in)
		}
	}
	if got := certName("*.example.com"); got != "_wildcard.example.com" {
		t.Errorf("certName: %q", got)
	}
}

// env is a domains service on a real database, with a server and an app.
type env struct {
	st  *store.Store
	db  *testdb.DB
	s   *Service
	app store.App
	pr  *auth.Principal
	now time.Time
}

func setup(t *testing.T) *env {
	t.Helper()
	kr, err := secrets.Generate()
	if err != nil {
		t.Fatal(err)
	}
	db := testdb.New(t)
	st := store.New(db.Pool, secrets.NewSource(kr, ""))
	authority, _, err := ca.LoadOrCreate(t.TempDir(), ca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	fl := fleet.New(st, authority, log, fleet.Config{ControllerAddr: "127.0.0.1:7443"})
	dep := deploys.New(st, fl, log, deploys.Config{})
	e := &env{st: st, db: db, now: time.Date(2030, 1, 10, 12, 0, 0, 0, time.UTC)}
	// The CA's directory is a closed port on loopback: an attempt a tick
	// starts fails at once, and no test reaches out to a public CA.
	s, err := New(st, dep, log, Config{Now: func() time.Time { return e.now }, RetryBase: time.Minute, RetryMax: time.Hour,
		ACMEDirectory: "https://127.0.0.1:1/directory"})
	if err != nil {
		t.Fatal(err)
	}
	e.s = s
	ctx := context.Background()
	srv := store.NewID()
	if _, err := db.Pool.Exec(ctx, `INSERT INTO servers (id, name) VALUES ($1, 'web-1')`, pgtype.UUID{Bytes: srv, Valid: true}); err != nil {
		t.Fatal(err)
	}
	uid := store.NewID()
	if _, err := db.Pool.Exec(ctx, `INSERT INTO users (id, email, password_hash, role) VALUES ($1, 'ops@example.com', 'x', 'admin')`, pgtype.UUID{Bytes: uid, Valid: true}); err != nil {
		t.Fatal(err)
	}
	e.app, err = st.CreateApp(ctx, store.CreateAppParams{AppSettings: store.AppSettings{ServerID: srv, Name: "shop", RepositoryURL: "https://git.example.com/shop.git"}})
	if err != nil {
		t.Fatal(err)
	}
	e.pr = &auth.Principal{UserID: uid, Email: "ops@example.com", Role: store.RoleAdmin, Scopes: []store.Scope{store.ScopeAdmin}}
	return e
}

func (e *env) events(t *testing.T, kind string) []string {
	t.Helper()
	rows, err := e.db.Pool.Query(context.Background(), `SELECT title FROM notify_events WHERE kind = $1 ORDER BY created_at`, kind)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func (e *env) addCert(t *testing.T, host string, notBefore, notAfter time.Time) store.Domain {
	t.Helper()
	ctx := context.Background()
	d, err := e.s.Add(ctx, e.pr, Peer{}, AddParams{App: "shop", Host: host})
	if err != nil {
		t.Fatal(err)
	}
	issuer, serial := "Test CA", host+"-1"
	next := notBefore.Add(notAfter.Sub(notBefore) * 2 / 3)
	dom, err := e.st.SetDomainTLSAttempt(ctx, d.ID, store.TLSAttempt{Status: store.TLSActive, Issuer: &issuer, NotBefore: &notBefore,
		ExpiresAt: &notAfter, Serial: &serial, NextAttemptAt: &next})
	if err != nil {
		t.Fatal(err)
	}
	return dom
}

// Expiry: a certificate within 14 days of expiry (a third of its life for
// a short one) raises certificate.expiring once; one past expiry is
// expired, never active, and says so.
func TestExpiryWarningsAndExpired(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	day := 24 * time.Hour
	e.addCert(t, "late.example.com", e.now.Add(-80*day), e.now.Add(10*day))    // 90-day, 10 left: warn
	e.addCert(t, "fresh.example.com", e.now.Add(-10*day), e.now.Add(80*day))   // 90-day, 80 left: no
	e.addCert(t, "short.example.com", e.now.Add(-time.Hour), e.now.Add(6*day)) // 6-day, just issued: no
	e.addCert(t, "shortlate.example.com", e.now.Add(-5*day), e.now.Add(day))   // 6-day, 1 left: warn
	gone := e.addCert(t, "gone.example.com", e.now.Add(-90*day), e.now.Add(-time.Minute))
	e.s.Tick(ctx)
	// The tick also starts renewal attempts of the due ones; they mark
	// their domains issuing until they end: wait for them.
	e.attemptsDone()
	warned := e.events(t, KindExpiring)
	if len(warned) != 2 || !strings.Contains(strings.Join(warned, "|"), "late.example.com") || !strings.Contains(strings.Join(warned, "|"), "shortlate.example.com") {
		t.Fatalf("expiring warnings: %v", warned)
	}
	d, err := e.st.Domain(ctx, gone.ID)
	if err != nil || d.TLSStatus != store.TLSExpired {
		t.Fatalf("past expiry: %+v %v", d.TLSStatus, err)
	}
	if exp := e.events(t, KindExpired); len(exp) != 1 || !strings.Contains(exp[0], "gone.example.com") {
		t.Fatalf("expired events: %v", exp)
	}
	// Once per certificate.
	e.s.Tick(ctx)
	e.attemptsDone()
	if n := len(e.events(t, KindExpiring)); n != 2 {
		t.Fatalf("warnings after a second tick: %d", n)
	}
	if n := len(e.events(t, KindExpired)); n != 1 {
		t.Fatalf("expired events after a second tick: %d", n)
	}
}

// A failed attempt: failed status, the error, a doubling backoff capped by
// RetryMax and by what is left of the certificate's life, and
// certificate.renewal_failed.
func TestFailureBackoff(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	d, err := e.s.Add(ctx, e.pr, Peer{}, AddParams{App: "shop", Host: "new.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 16 * time.Minute, 32 * time.Minute, time.Hour, time.Hour}
	cur := d.Domain
	for i, w := range want {
		e.s.failed(ctx, cur, errors.New("acme: urn:ietf:params:acme:error:connection: refused"))
		if cur, err = e.st.Domain(ctx, d.ID); err != nil {
			t.Fatal(err)
		}
		if cur.TLSStatus != store.TLSFailed || cur.TLSFailures != i+1 || cur.TLSLastError == nil || !strings.Contains(*cur.TLSLastError, "refused") ||
			cur.TLSNextAttemptAt == nil || !cur.TLSNextAttemptAt.Equal(e.now.Add(w)) {
			t.Fatalf("failure %d: status %s failures %d next %v (want +%v) err %v", i+1, cur.TLSStatus, cur.TLSFailures, cur.TLSNextAttemptAt, w, cur.TLSLastError)
		}
	}
	if n := len(e.events(t, KindRenewalFailed)); n != len(want) {
		t.Fatalf("renewal_failed events: %d", n)
	}
	// A certificate with 20 minutes left is retried within a quarter of it.
	live := e.addCert(t, "live.example.com", e.now.Add(-2*time.Hour), e.now.Add(20*time.Minute))
	live.TLSFailures = 5
	e.s.failed(ctx, live, errors.New("boom"))
	got, _ := e.st.Domain(ctx, live.ID)
	if got.TLSNextAttemptAt == nil || got.TLSNextAttemptAt.After(e.now.Add(5*time.Minute)) || got.TLSStatus != store.TLSFailed {
		t.Fatalf("retry of an expiring certificate at %v (%s)", got.TLSNextAttemptAt, got.TLSStatus)
	}
	// Renew puts it back to now; past expiry, a failure is expired.
	e.now = e.now.Add(time.Hour)
	got.TLSFailures = 0
	e.s.failed(ctx, got, errors.New("boom"))
	if got, _ = e.st.Domain(ctx, live.ID); got.TLSStatus != store.TLSExpired {
		t.Fatalf("failure past expiry: %s", got.TLSStatus)
	}
}

// The service's rules: hosts of another app, loops, the primary, scopes.
func TestAddRules(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	reader := &auth.Principal{UserID: e.pr.UserID, Email: e.pr.Email, Role: store.RoleAdmin, Scopes: []store.Scope{store.ScopeRead}}
	if _, err := e.s.Add(ctx, reader, Peer{}, AddParams{App: "shop", Host: "x.example.com"}); !errors.Is(err, auth.ErrForbidden) {
		t.Fatalf("read scope adds: %v", err)
	}
	if _, err := e.s.Add(ctx, nil, Peer{}, AddParams{App: "shop", Host: "x.example.com"}); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("nobody adds: %v", err)
	}
	apex, err := e.s.Add(ctx, e.pr, Peer{}, AddParams{App: "shop", Host: "Example.COM.", TLS: "off"})
	if err != nil || apex.Hostname != "example.com" || !apex.IsPrimary {
		t.Fatalf("first host: %+v %v", apex, err)
	}
	www, err := e.s.Add(ctx, e.pr, Peer{}, AddParams{App: "shop", Host: "www.example.com", RedirectTo: "example.com", TLS: "off"})
	if err != nil || www.IsPrimary || www.RedirectTo == nil || *www.RedirectTo != "example.com" || www.RedirectStatus != 301 {
		t.Fatalf("www: %+v %v", www, err)
	}
	if _, err := e.s.Add(ctx, e.pr, Peer{}, AddParams{App: "shop", Host: "WWW.example.com"}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("same host again: %v", err)
	}
	// example.com -> (new) a, and a -> www -> example.com: a loop.
	if _, err := e.s.Add(ctx, e.pr, Peer{}, AddParams{App: "shop", Host: "a.example.com", RedirectTo: "https://www.example.com/", TLS: "off"}); err != nil {
		t.Fatalf("a -> www (www -> apex, apex serves): %v", err)
	}
	if _, err := e.s.Add(ctx, e.pr, Peer{}, AddParams{App: "shop", Host: "b.example.com", RedirectTo: "c.example.com", TLS: "off"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Add(ctx, e.pr, Peer{}, AddParams{App: "shop", Host: "c.example.com", RedirectTo: "b.example.com", TLS: "off"}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "loop") {
		t.Fatalf("b <-> c: %v", err)
	}
	if _, err := e.s.Add(ctx, e.pr, Peer{}, AddParams{App: "shop", Host: "p.example.com", RedirectTo: "example.com", Primary: true, TLS: "off"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a redirect as primary: %v", err)
	}
	if _, err := e.s.Add(ctx, e.pr, Peer{}, AddParams{App: "shop", Host: "*.example.com"}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "DNS-01") {
		t.Fatalf("wildcard without DNS: %v", err)
	}
	if _, err := e.s.Add(ctx, e.pr, Peer{}, AddParams{App: "shop", Host: "h.example.com", TLS: "off", HSTS: true}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("hsts without tls: %v", err)
	}
	if _, err := e.s.Add(ctx, e.pr, Peer{}, AddParams{App: "shop", Host: "h.example.com", ACMEDirectory: "http://insecure.example/dir"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("an http ACME directory: %v", err)
	}
	// A new primary takes over.
	p2, err := e.s.Add(ctx, e.pr, Peer{}, AddParams{App: "shop", Host: "shop.example.net", Primary: true, TLS: "off"})
	if err != nil || !p2.IsPrimary {
		t.Fatalf("new primary: %+v %v", p2, err)
	}
	if old, _ := e.st.Domain(ctx, apex.ID); old.IsPrimary {
		t.Fatal("two primaries")
	}
	// Every change queued one site job (built when sent, so one is enough).
	var jobs int
	if err := e.db.Pool.QueryRow(ctx, `SELECT count(*) FROM deployments WHERE kind = 'site' AND status = 'queued'`).Scan(&jobs); err != nil || jobs != 1 {
		t.Fatalf("queued site jobs: %d %v", jobs, err)
	}
	// DNS providers: admin only, known providers, write-only.
	if _, err := e.s.AddDNSProvider(ctx, reader, Peer{}, "dns", "httpreq", map[string]string{"HTTPREQ_ENDPOINT": "https://x.example"}); !errors.Is(err, auth.ErrForbidden) {
		t.Fatalf("reader adds a dns provider: %v", err)
	}
	if _, err := e.s.AddDNSProvider(ctx, e.pr, Peer{}, "dns", "route99", map[string]string{"X": "y"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown provider: %v", err)
	}
	if _, err := e.s.AddDNSProvider(ctx, e.pr, Peer{}, "dns", "exec", map[string]string{"EXEC_PATH": "/bin/true"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("exec without the controller's allowance: %v", err)
	}
	p, err := e.s.AddDNSProvider(ctx, e.pr, Peer{}, "dns", "cloudflare", map[string]string{"CF_DNS_API_TOKEN": "cf-secret-token-123"})
	if err != nil || len(p.Variables) != 1 {
		t.Fatalf("cloudflare: %+v %v", p, err)
	}
	var raw []byte
	if err := e.db.Pool.QueryRow(ctx, `SELECT credentials FROM dns_providers WHERE name = 'dns'`).Scan(&raw); err != nil || strings.Contains(string(raw), "cf-secret") {
		t.Fatalf("credentials stored in the clear: %v", err)
	}
	var acts string
	if err := e.db.Pool.QueryRow(ctx, `SELECT coalesce(string_agg(changes::text, ' '), '') FROM activity_log`).Scan(&acts); err != nil || strings.Contains(acts, "cf-secret") {
		t.Fatalf("a credential in the activity log: %v", err)
	}
	if w, err := e.s.Add(ctx, e.pr, Peer{}, AddParams{App: "shop", Host: "*.example.com", DNSProvider: "dns"}); err != nil || w.DNSProvider != "dns" {
		t.Fatalf("wildcard with dns: %+v %v", w, err)
	}
}

// The site the agent gets: HTTPS only where a certificate is in place, a
// bare-host redirect to HTTPS only when its target can answer it, the
// upstream or static root of the app.
func TestSiteSpec(t *testing.T) {
	t.Parallel()
	ptr := func(s string) *string { return &s }
	a := store.App{AppSettings: store.AppSettings{DeployPath: "/srv/shop"}, UpstreamPort: 10001}
	apex := store.Domain{Hostname: "example.com", IsPrimary: true, DomainSettings: store.DomainSettings{TLSMode: store.TLSACME, ForceHTTPS: true, HSTS: true, RedirectStatus: 301}}
	www := store.Domain{Hostname: "www.example.com", DomainSettings: store.DomainSettings{TLSMode: store.TLSACME, ForceHTTPS: true, RedirectTo: ptr("example.com"), RedirectStatus: 308}}
	custom := store.Domain{Hostname: "c.example.com", DomainSettings: store.DomainSettings{TLSMode: store.TLSCustom, TLSCertPath: ptr("/etc/c.pem"), TLSKeyPath: ptr("/etc/c.key"), RedirectStatus: 301}}
	site, ids := siteSpec(a, []store.Domain{apex, www, custom}, time.Now())
	if site.GetUpstream() != "http://127.0.0.1:10001" || site.GetStaticRoot() != "" || len(ids) != 3 {
		t.Fatalf("site: %v", site)
	}
	d := site.GetDomains()
	// No certificate yet: plain HTTP, no forced redirect, no HSTS.
	if d[0].GetTls() != "off" || d[0].GetForceHttps() || d[0].GetHsts() || d[0].GetCertName() != "" || d[0].GetRedirectStatus() != 0 {
		t.Fatalf("apex before issuance: %v", d[0])
	}
	if d[1].GetRedirectTo() != "http://example.com" || d[1].GetRedirectStatus() != 308 {
		t.Fatalf("www before the apex has a certificate: %v", d[1])
	}
	if d[2].GetTls() != "custom" || d[2].GetCertPath() != "/etc/c.pem" || d[2].GetKeyPath() != "/etc/c.key" {
		t.Fatalf("custom: %v", d[2])
	}
	apex.TLSSerial = ptr("01")
	a.StaticRoot = ptr("public")
	site, _ = siteSpec(a, []store.Domain{apex, www}, time.Now())
	d = site.GetDomains()
	if site.GetStaticRoot() != "/srv/shop/current/public" || site.GetUpstream() != "" {
		t.Fatalf("static root: %v", site)
	}
	if d[0].GetTls() != "acme" || !d[0].GetForceHttps() || !d[0].GetHsts() || d[0].GetCertName() != "example.com" {
		t.Fatalf("apex after issuance: %v", d[0])
	}
	if d[1].GetRedirectTo() != "https://example.com" {
		t.Fatalf("www after the apex has a certificate: %v", d[1])
	}
}

// lego wraps an HTTP client's Transport in place when it makes an ACME
// client: on the service's shared client that raced between attempts
// running at once (found by the race detector) and stacked one wrapper
// per client made. Each ACME client gets a copy; the shared one is left
// as it was.
func TestACMEClientLeavesSharedHTTPClientAlone(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	before := e.s.http.Transport
	for range 3 {
		_, _ = e.s.client(ctx, e.s.cfg.ACMEDirectory)
	}
	if e.s.http.Transport != before {
		t.Fatalf("the shared HTTP client's transport was replaced: %T", e.s.http.Transport)
	}
}

// attemptsDone waits until no certificate attempt or renewal-information
// poll runs: each holds a slot of the service's semaphore while it runs,
// so holding every slot means all of them ended.
func (e *env) attemptsDone() {
	for range cap(e.s.sem) {
		e.s.sem <- struct{}{}
	}
	for range cap(e.s.sem) {
		<-e.s.sem
	}
}
