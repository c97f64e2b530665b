package main_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/berthhq/berth/controller/internal/password"
	"github.com/berthhq/berth/controller/internal/store"
)

// TestBrowserDomains: headless Chromium against a real controller, a real
// agent managing a private nginx, and app shop deployed from git. Through
// the app's Domains tab: a domain is added (normalised) and its status
// turns active on the page while nginx serves it; bad input (an invalid
// host, a host of another app, a redirect loop) is refused with a clear
// message and nothing typed is lost; a custom certificate whose files are
// missing shows failed with nginx's reason, and is removed after the
// confirmation (dismissing it removes nothing); custom certificates the
// agent read show their issuer and days left, and the all-domains page
// lists them soonest expiry first; renew now; a viewer may look and is
// refused a change.
func TestBrowserDomains(t *testing.T) {
	t.Parallel()
	e, n := setupDomains(t)
	var app map[string]any
	e.mustJSON(t, &app, "app", "update", "shop", "--static-root", ".")
	e.createApp(t, "blog", e.repo.serveHTTP(t, gitUser, gitToken), "gitcred")

	bctx := startBrowser(t)
	tb := newTab(t, bctx, e.c, "ops")
	tb.login("ops@example.com", "correct horse battery staple")
	tb.open("/apps/shop")
	tb.submit("#domains-tab")
	if p := tb.path(); p != "/apps/shop/domains" || !strings.Contains(tb.text("main .empty"), "No domains yet.") {
		t.Fatalf("Domains tab: at %s", p)
	}
	row := func(host string) string { return `tr[data-domain="` + host + `"]` }
	field := func(host, f string) string { return row(host) + ` [data-field="` + f + `"]` }
	waitRow := func(what, host, f string, ok func(string) bool) string {
		t.Helper()
		var got string
		waitFor(t, host+" "+what+" on the page", 3*time.Minute, func() bool {
			tb.open("/apps/shop/domains")
			if tb.count(field(host, f)) == 0 {
				return false
			}
			got = tb.text(field(host, f))
			return ok(got)
		})
		return got
	}

	// Add: upper case and a trailing dot are normalised; it is the primary
	// and becomes active once the agent applied the site.
	tb.fill("#d-host", "Shop.Example.TEST.", "#d-tls", "off")
	tb.submit("#domain-form button[type=submit]")
	if f := tb.text("p.flash"); !strings.Contains(f, "Domain shop.example.test added.") {
		t.Fatalf("add flash: %q", f)
	}
	if tb.count(field("shop.example.test", "primary")) != 1 {
		t.Fatal("the first host is not shown as primary")
	}
	// The status turns active in place (domains.js), without a reload:
	// what is being typed in the form meanwhile stays.
	first := tb.text(field("shop.example.test", "status"))
	t.Logf("shop.example.test at load: %s", first)
	tb.fill("#d-host", "typing.example.test")
	tb.waitJS("shop.example.test active in place", `document.querySelector('tr[data-domain="shop.example.test"] [data-field=status]').textContent !== "pending"`, 3*time.Minute)
	if st := tb.text(field("shop.example.test", "status")); st != "active" {
		t.Fatalf("status %s: %s", st, tb.text(row("shop.example.test")))
	}
	if first == "pending" && tb.count("#domains[data-updated]") != 1 {
		t.Fatal("the status changed without the page's poll")
	}
	if v := tb.value("#d-host"); v != "typing.example.test" {
		t.Fatalf("the form lost what was typed while the status updated: %q", v)
	}
	if code, body, _ := n.get(t, "shop.example.test", "/index.html"); code != 200 || body != "shop v1\n" {
		t.Fatalf("nginx for shop.example.test: %d %q", code, body)
	}
	if st := tb.text(field("shop.example.test", "tls-status")); st != "disabled" {
		t.Fatalf("TLS status %q", st)
	}

	// Bad input: the message says what is wrong, the form keeps it all.
	type refusal struct {
		app, want string
		fields    []string // selector, value, ...
	}
	check := func(r refusal) {
		t.Helper()
		tb.open("/apps/" + r.app + "/domains")
		before := tb.count("#domains tbody tr")
		tb.fill(r.fields...)
		tb.submit("#domain-form button[type=submit]")
		if got := tb.text("#form-error"); !strings.Contains(got, r.want) {
			t.Fatalf("%s %v: error %q, want %q", r.app, r.fields, got, r.want)
		}
		for i := 0; i+1 < len(r.fields); i += 2 {
			if got := tb.value(r.fields[i]); got != r.fields[i+1] {
				t.Fatalf("%s: %s is %q after the refusal, typed %q", r.want, r.fields[i], got, r.fields[i+1])
			}
		}
		if got := tb.count("#domains tbody tr"); got != before {
			t.Fatalf("%s: %d rows, before %d", r.want, got, before)
		}
	}
	check(refusal{"shop", "is not a valid host name", []string{"#d-host", "bad_host!.example.test", "#d-redirect", "https://shop.example.test/x", "#d-redirect-status", "308", "#d-tls", "off"}})
	check(refusal{"blog", "shop.example.test is already routed to app shop", []string{"#d-host", "SHOP.example.test", "#d-tls", "custom",
		"#d-cert", "/etc/ssl/shop.pem", "#d-key", "/etc/ssl/shop.key"}})
	tb.open("/apps/blog/domains")
	tb.fill("#d-host", "a.example.test", "#d-redirect", "b.example.test", "#d-tls", "off")
	tb.submit("#domain-form button[type=submit]")
	if tb.count(row("a.example.test")) != 1 || !strings.Contains(tb.text(field("a.example.test", "redirect")), "b.example.test") {
		t.Fatalf("a -> b not listed:\n%s", tb.bodyText())
	}
	check(refusal{"blog", "redirecting b.example.test to a.example.test makes a redirect loop", []string{"#d-host", "b.example.test", "#d-redirect", "a.example.test", "#d-redirect-status", "302", "#d-tls", "off"}})

	// A custom certificate whose files are not on the server: nginx -t
	// fails, the page says why, and the live site keeps serving.
	tb.open("/apps/shop/domains")
	tb.fill("#d-host", "secure.example.test", "#d-tls", "custom", "#d-cert", filepath.Join(n.root, "missing.pem"), "#d-key", filepath.Join(n.root, "missing.key"))
	tb.submit("#domain-form button[type=submit]")
	if st := waitRow("checked", "secure.example.test", "status", func(s string) bool { return s != "pending" }); st != "failed" {
		t.Fatalf("broken certificate's status %q", st)
	}
	if reason := tb.text(field("secure.example.test", "last-error")); !strings.Contains(reason, "missing.pem") {
		t.Fatalf("failure reason %q", reason)
	}
	if code, body, _ := n.get(t, "shop.example.test", "/index.html"); code != 200 || body != "shop v1\n" {
		t.Fatalf("the live site after the failed check: %d %q", code, body)
	}
	tb.screenshot("domains-tab-failed.png")

	// Remove, after the confirmation: dismissed, nothing happens.
	tabRun(tb, "dismiss confirmations", chromedp.Evaluate[bool](`window.confirm = function (m) { window.asked = m; return false; }; true`))
	tb.do("click remove", chromedp.Click(chromedp.CSS(row("secure.example.test")+" form.remove button")))
	tb.waitJS("the confirmation", `typeof window.asked === "string"`, stepTimeout)
	if asked := tabRun(tb, "confirm text", chromedp.Evaluate[string](`window.asked`)); !strings.Contains(asked, "Remove secure.example.test?") {
		t.Fatalf("confirmation %q", asked)
	}
	if tb.count(row("secure.example.test")) != 1 {
		t.Fatal("dismissed removal: row gone")
	}
	e.domain(t, "secure.example.test")
	tabRun(tb, "accept confirmations", chromedp.Evaluate[bool](`window.confirm = function () { return true; }; true`))
	tb.submit(row("secure.example.test") + " form.remove button")
	if f := tb.text("p.flash"); !strings.Contains(f, "Domain secure.example.test removed") || tb.count(row("secure.example.test")) != 0 {
		t.Fatalf("after removal: %q", f)
	}
	e.cliFails(t, "no domain", "domain", "show", "secure.example.test")
	waitRow("active again", "shop.example.test", "status", func(s string) bool { return s == "active" })

	// Custom certificates the agent reads: issuer, expiry, days left.
	for _, c := range []struct {
		host string
		life time.Duration
	}{{"late.example.test", 40*24*time.Hour + 12*time.Hour}, {"soon.example.test", 5*24*time.Hour + 12*time.Hour}} {
		cert, key := certPairUntil(t, n.root, c.host, time.Now().Add(c.life))
		tb.open("/apps/shop/domains")
		tb.fill("#d-host", c.host, "#d-tls", "custom", "#d-cert", cert, "#d-key", key)
		tb.submit("#domain-form button[type=submit]")
		if st := waitRow("certificate read", c.host, "tls-status", func(s string) bool { return s == "active" || s == "failed" }); st != "active" {
			t.Fatalf("%s TLS %s: %s", c.host, st, tb.text(row(c.host)))
		}
	}
	if got := tb.text(field("late.example.test", "expiry")); got != "40 days left" {
		t.Fatalf("late expiry %q", got)
	}
	if got := tb.text(field("soon.example.test", "expiry")); got != "5 days left" || tb.count(field("soon.example.test", "expiry")+".expiry-soon") != 1 {
		t.Fatalf("soon expiry %q (marked soon: %d)", got, tb.count(field("soon.example.test", "expiry")+".expiry-soon"))
	}
	if got := tb.text(field("late.example.test", "issuer")); !strings.Contains(got, "berth browser test CA") {
		t.Fatalf("issuer %q", got)
	}

	// The all-domains page, from the navigation: soonest expiry first,
	// hosts without a certificate last.
	tb.submit(`header nav a[href="/domains"]`)
	order := tabRun(tb, "domain order", chromedp.Evaluate[[]string](
		`Array.from(document.querySelectorAll("#all-domains tbody tr")).map(function (r) { return r.dataset.domain; })`))
	want := []string{"soon.example.test", "late.example.test", "a.example.test", "shop.example.test"}
	if strings.Join(order, " ") != strings.Join(want, " ") {
		t.Fatalf("all-domains order %v, want %v", order, want)
	}
	if tb.text(`header nav a[aria-current="page"]`) != "Domains" {
		t.Fatal("the Domains nav entry is not current")
	}
	tb.screenshot("domains-all.png")

	// Renew now from there: the custom certificate is read again.
	tb.submit(row("late.example.test") + " form.renew button")
	if p, f := tb.path(), tb.text("p.flash"); p != "/domains" || !strings.Contains(f, "The certificate of late.example.test is read again from the server.") {
		t.Fatalf("renew: at %s, flash %q", p, f)
	}
	// Long hosts, errors and paths wrap or scroll inside their table: the
	// pages never scroll sideways on a phone or a laptop.
	for _, w := range []int64{420, 1366} {
		tb.viewport(w, 900)
		tb.noSideScroll("/apps/shop/domains")
		tb.noSideScroll("/domains")
	}
	tb.assertCleanConsole()

	// A viewer sees the domains, no form and no buttons, and a change
	// posted anyway (a form made in the page) is refused.
	pool, err := pgxpool.New(context.Background(), fmt.Sprintf("host=%s user=berth dbname=berth sslmode=disable", filepath.Join(e.dataDir, "postgres", "run")))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	const viewerEmail, viewerPW = "vera@example.com", "vera looks but never touches"
	h, err := password.Hash(viewerPW)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.New(pool, nil).CreateUser(context.Background(), store.CreateUserParams{Email: viewerEmail, PasswordHash: h, Role: store.RoleViewer}); err != nil {
		t.Fatal(err)
	}
	vt := newTab(t, bctx, e.c, "vera")
	vt.login(viewerEmail, viewerPW)
	if st := vt.open("/apps/shop/domains"); st != http.StatusOK || vt.count(row("late.example.test")) != 1 || vt.count("#domain-form") != 0 || vt.count("form.renew, form.remove") != 0 {
		t.Fatalf("viewer's tab: %d", st)
	}
	tabRun(vt, "make a form in the page", chromedp.Evaluate[bool](`(function () {
		var f = document.createElement("form");
		f.method = "post"; f.action = "/apps/shop/domains";
		[["form", "domain"], ["host", "vera.example.test"], ["tls", "off"]].forEach(function (kv) {
			var i = document.createElement("input"); i.type = "hidden"; i.name = kv[0]; i.value = kv[1]; f.appendChild(i);
		});
		var b = document.createElement("button"); b.type = "submit"; b.id = "vera-post"; b.textContent = "Add anyway"; f.appendChild(b);
		document.querySelector("main").appendChild(f); return true;
	})()`))
	if resp := vt.submit("#vera-post"); resp.Status != http.StatusForbidden || vt.text("main h1") != "Not allowed" {
		t.Fatalf("viewer's post: %d %q", resp.Status, vt.text("main h1"))
	}
	if body := vt.bodyText(); !strings.Contains(body, "needs the write scope") {
		t.Fatalf("viewer's refusal does not name the scope:\n%s", body)
	}
	e.cliFails(t, "no domain", "domain", "show", "vera.example.test")
	vt.assertCleanConsole()
}

// certPairUntil writes a certificate for host valid until notAfter, signed
// by a throwaway CA, and its key under dir, as an operator would place
// them on the server.
func certPairUntil(t *testing.T, dir, host string, notAfter time.Time) (certPath, keyPath string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(20), Subject: pkix.Name{CommonName: "berth browser test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(21), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	certPath, keyPath = filepath.Join(dir, host+".pem"), filepath.Join(dir, host+".key")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}
