package proxy

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestProxyRoutesByHostWithForwardedHeaders(t *testing.T) {
	e := startNginx(t)
	one, two := backend(t, "one"), backend(t, "two")
	e.apply(Site{App: "one", Upstream: one.URL, Domains: []Domain{{Host: "one.test", Primary: true, TLS: TLSACME, ForceHTTPS: true}}})
	e.apply(Site{App: "two", Upstream: two.URL, Domains: []Domain{{Host: "two.test", Primary: true}, {Host: "*.two.test"}}})

	c := e.client()
	got := decodeEcho(t, fetch(t, c, "http://one.test/path?q=1"))
	if got.Name != "one" || got.Host != "one.test" || got.Path != "/path?q=1" {
		t.Fatalf("one.test reached %+v", got)
	}
	if got.Headers["X-Forwarded-For"] != "127.0.0.1" || got.Headers["X-Real-Ip"] != "127.0.0.1" ||
		got.Headers["X-Forwarded-Proto"] != "http" || got.Headers["X-Forwarded-Host"] != "one.test" {
		t.Fatalf("forwarded headers: %+v", got.Headers)
	}
	// Without a WebSocket upgrade the upstream connection is not upgraded.
	if got.Headers["Upgrade"] != "" || got.Headers["Connection"] != "close" {
		t.Fatalf("upgrade headers on a plain request: %+v", got.Headers)
	}
	if got := decodeEcho(t, fetch(t, c, "http://two.test/")); got.Name != "two" {
		t.Fatalf("two.test reached %s", got.Name)
	}
	// The wildcard host routes any name under it to its app.
	if got := decodeEcho(t, fetch(t, c, "http://shop.two.test/x")); got.Name != "two" || got.Host != "shop.two.test" {
		t.Fatalf("shop.two.test reached %+v", got)
	}
	// A host no site names reaches no app.
	if a := fetch(t, c, "http://three.test/"); a.status != 404 {
		t.Fatalf("unknown host: %d %q", a.status, a.body)
	}
	// An X-Forwarded-For from the client is kept and the client's address
	// appended, as apps behind one proxy expect.
	req, _ := http.NewRequest("GET", "http://one.test/", nil)
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := decodeEcho(t, answer{status: resp.StatusCode, body: string(b)}); got.Headers["X-Forwarded-For"] != "203.0.113.9, 127.0.0.1" {
		t.Fatalf("X-Forwarded-For %q", got.Headers["X-Forwarded-For"])
	}
	apps, err := e.m.Sites()
	if err != nil || strings.Join(apps, ",") != "one,two" {
		t.Fatalf("Sites() = %v, %v", apps, err)
	}
	// The same site again (a retried job) changes nothing and reloads
	// nothing; a real change reloads.
	gen := e.m.Generation()
	e.apply(Site{App: "one", Upstream: one.URL, Domains: []Domain{{Host: "one.test", Primary: true, TLS: TLSACME, ForceHTTPS: true}}})
	if e.m.Generation() != gen {
		t.Fatal("an unchanged site was reloaded")
	}
	e.apply(Site{App: "one", Upstream: one.URL, Domains: []Domain{{Host: "one.test", Primary: true, TLS: TLSACME, ForceHTTPS: true}, {Host: "uno.test"}}})
	if e.m.Generation() != gen+1 {
		t.Fatal("a changed site was not reloaded")
	}
	if got := decodeEcho(t, fetch(t, c, "http://uno.test/")); got.Name != "one" {
		t.Fatal(got)
	}
}

func TestWebSocketUpgradePasses(t *testing.T) {
	e := startNginx(t)
	be := backend(t, "ws")
	e.apply(Site{App: "ws", Upstream: be.URL, Domains: []Domain{{Host: "ws.test"}}})

	status, c, br := e.rawUpgrade("ws.test")
	if !strings.HasPrefix(status, "HTTP/1.1 101") {
		t.Fatalf("upgrade answered %q", status)
	}
	for _, msg := range []string{"ping\n", "second frame\n"} {
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		got, err := br.ReadString('\n')
		if err != nil || got != msg {
			t.Fatalf("echo through nginx: %q, %v", got, err)
		}
	}
}

func TestUnixSocketUpstreamAndStaticRoot(t *testing.T) {
	e := startNginx(t)
	sockDir := filepath.Join(e.root, "run")
	if err := os.MkdirAll(sockDir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(sockDir, "app.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(sock, 0o666) // nginx's workers connect as www-data
	srv := &http.Server{Handler: echoHandler("unix")}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	static := filepath.Join(e.root, "www", "current", "public")
	if err := os.MkdirAll(static, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(static, "index.html"), []byte("<h1>static</h1>\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.apply(Site{App: "sock", Upstream: "unix:" + sock, Domains: []Domain{{Host: "sock.test"}}})
	e.apply(Site{App: "docs", StaticRoot: static, Domains: []Domain{{Host: "docs.test"}}})
	e.apply(Site{App: "empty", Domains: []Domain{{Host: "empty.test"}}})

	c := e.client()
	if got := decodeEcho(t, fetch(t, c, "http://sock.test/a")); got.Name != "unix" || got.Headers["X-Forwarded-Proto"] != "http" {
		t.Fatalf("unix socket upstream: %+v", got)
	}
	if a := fetch(t, c, "http://docs.test/"); a.status != 200 || a.body != "<h1>static</h1>\n" || !strings.HasPrefix(a.header.Get("Content-Type"), "text/html") {
		t.Fatalf("static root: %d %q %v", a.status, a.body, a.header)
	}
	if a := fetch(t, c, "http://docs.test/missing.css"); a.status != 404 {
		t.Fatalf("static missing file: %d", a.status)
	}
	// Domains before the app has an upstream or a root: 503, no app.
	if a := fetch(t, c, "http://empty.test/"); a.status != 503 {
		t.Fatalf("site without upstream: %d", a.status)
	}
}

func TestRedirectOnlyHosts(t *testing.T) {
	e := startNginx(t)
	be := backend(t, "apex")
	e.apply(Site{App: "shop", Upstream: be.URL, Domains: []Domain{
		{Host: "shop.test", Primary: true},
		{Host: "www.shop.test", RedirectTo: "https://shop.test", RedirectStatus: 308},
		{Host: "old.shop.test", RedirectTo: "http://shop.test/archive/", RedirectStatus: 302},
		{Host: "legacy.shop.test", RedirectTo: "https://shop.test"},
	}})
	c := e.client()
	for _, tc := range []struct {
		url, location string
		status        int
	}{
		{"http://www.shop.test/a/b?c=d&e=f", "https://shop.test/a/b?c=d&e=f", 308},
		{"http://www.shop.test/", "https://shop.test/", 308},
		{"http://old.shop.test/x?y", "http://shop.test/archive/x?y", 302},
		{"http://legacy.shop.test/p", "https://shop.test/p", 301},
	} {
		a := fetch(t, c, tc.url)
		if a.status != tc.status || a.header.Get("Location") != tc.location {
			t.Errorf("%s: %d %q, want %d %q", tc.url, a.status, a.header.Get("Location"), tc.status, tc.location)
		}
	}
	// The challenge is answered on a redirect-only host too: www needs its
	// own certificate for https://www to redirect.
	token, keyAuth := "tok_redirect-0123456789", "tok_redirect-0123456789.thumbprint_abcdefgh"
	if err := e.m.PutChallenge(token, keyAuth); err != nil {
		t.Fatal(err)
	}
	if a := fetch(t, c, "http://www.shop.test/.well-known/acme-challenge/"+token); a.status != 200 || a.body != keyAuth {
		t.Fatalf("challenge on a redirect host: %d %q", a.status, a.body)
	}
	if err := e.m.VerifyChallenge(context.Background(), "www.shop.test", token); err != nil {
		t.Fatal(err)
	}
	if got := decodeEcho(t, fetch(t, c, "http://shop.test/")); got.Name != "apex" {
		t.Fatalf("apex: %+v", got)
	}
}

// TestACMEFlow is the agent's half of an issuance: plain HTTP before the
// certificate (so the first challenge can be answered), the challenge
// served and self-checked, a CSR signed by a CA, the certificate
// installed, and then force-HTTPS redirecting everything but the
// challenge while HTTPS serves the app over HTTP/2.
func TestACMEFlow(t *testing.T) {
	e := startNginx(t)
	be := backend(t, "app")
	ca := newCA(t)
	site := Site{App: "app", Upstream: be.URL, Domains: []Domain{
		{Host: "app.test", Primary: true, TLS: TLSACME, ForceHTTPS: true, CertName: "app.test"},
		{Host: "www.app.test", RedirectTo: "https://app.test", RedirectStatus: 301, TLS: TLSACME, ForceHTTPS: true, CertName: "app.test"},
	}}
	e.apply(site)
	c := e.client()

	// No certificate yet: force HTTPS must not redirect, or the first
	// issuance could never happen.
	if got := decodeEcho(t, fetch(t, c, "http://app.test/before")); got.Name != "app" {
		t.Fatalf("before the certificate: %+v", got)
	}
	token := "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
	keyAuth := token + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
	if err := e.m.PutChallenge(token, keyAuth); err != nil {
		t.Fatal(err)
	}
	if err := e.m.VerifyChallenge(context.Background(), "app.test", token); err != nil {
		t.Fatal(err)
	}
	csr, err := e.m.CSR("app.test", []string{"app.test", "www.app.test"})
	if err != nil {
		t.Fatal(err)
	}
	info, err := e.m.InstallCertificate("app.test", ca.signCSR(t, csr))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(info.DNSNames, ",") != "app.test,www.app.test" || !strings.Contains(info.Issuer, "Berth Test CA") || info.SerialHex == "" {
		t.Fatalf("CertInfo %+v", info)
	}

	// The certificate is there: HTTP redirects to HTTPS, path and query
	// kept; the challenge still answers over plain HTTP.
	httpsBase := "https://app.test:" + strconv.Itoa(e.httpsPort)
	a := fetch(t, c, "http://app.test/after?x=1")
	if a.status != 301 || a.header.Get("Location") != httpsBase+"/after?x=1" {
		t.Fatalf("force HTTPS: %d %q", a.status, a.header.Get("Location"))
	}
	if a := fetch(t, c, "http://app.test/.well-known/acme-challenge/"+token); a.status != 200 || a.body != keyAuth {
		t.Fatalf("challenge with force HTTPS on: %d %q", a.status, a.body)
	}
	if err := e.m.VerifyChallenge(context.Background(), "app.test", token); err != nil {
		t.Fatalf("self-check with force HTTPS on: %v", err)
	}
	tc := e.tlsClient(ca.pool)
	a = fetch(t, tc, "https://app.test/secure")
	got := decodeEcho(t, a)
	if got.Name != "app" || got.Headers["X-Forwarded-Proto"] != "https" || a.proto != "HTTP/2.0" {
		t.Fatalf("HTTPS: %s %+v", a.proto, got)
	}
	if a.header.Get("Strict-Transport-Security") != "" {
		t.Fatal("HSTS sent without being asked for")
	}
	// A renewal (same key, new certificate, same file names) is served
	// as soon as InstallCertificate returns.
	csr2, err := e.m.CSR("app.test", []string{"app.test", "www.app.test"})
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := e.m.InstallCertificate("app.test", ca.signCSR(t, csr2))
	if err != nil {
		t.Fatal(err)
	}
	if renewed.SerialHex == info.SerialHex {
		t.Fatal("the test CA reused a serial")
	}
	conn, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(e.httpsPort)), &tls.Config{RootCAs: ca.pool, ServerName: "app.test"})
	if err != nil {
		t.Fatal(err)
	}
	served := hex.EncodeToString(conn.ConnectionState().PeerCertificates[0].SerialNumber.Bytes())
	conn.Close()
	if served != renewed.SerialHex {
		t.Fatalf("nginx serves serial %s after the renewal to %s", served, renewed.SerialHex)
	}
	// The redirect-only host serves its redirect over HTTPS with the same
	// certificate.
	if a := fetch(t, tc, "https://www.app.test/p?q"); a.status != 301 || a.header.Get("Location") != "https://app.test/p?q" {
		t.Fatalf("www over HTTPS: %d %q", a.status, a.header.Get("Location"))
	}

	if err := e.m.DeleteChallenge(token); err != nil {
		t.Fatal(err)
	}
	if a := fetch(t, c, "http://app.test/.well-known/acme-challenge/"+token); a.status != 404 {
		t.Fatalf("deleted challenge: %d", a.status)
	}
	if err := e.m.VerifyChallenge(context.Background(), "app.test", token); !errors.Is(err, ErrNoChallenge) {
		t.Fatalf("VerifyChallenge after delete: %v", err)
	}

	// The certificate cannot go while the site names it (nginx's
	// configuration points at its files); once the domains are gone it can.
	if err := e.m.DeleteCertificate("app.test"); !errors.Is(err, ErrInUse) {
		t.Fatalf("DeleteCertificate of a certificate in use: %v", err)
	}
	e.apply(Site{App: "app", Upstream: be.URL, Domains: []Domain{{Host: "other.test"}}})
	if err := e.m.DeleteCertificate("app.test"); err != nil {
		t.Fatal(err)
	}
	e.apply(Site{App: "app", Upstream: be.URL, Domains: []Domain{{Host: "other.test"}, {Host: "app.test"}}})
}

// TestVerifyChallengeFailsWhenNotServed: a host whose site does not serve
// the challenge directory (here: no site at all for it) fails the
// self-check with nginx's answer, before the CA would.
func TestVerifyChallengeFailsWhenNotServed(t *testing.T) {
	e := startNginx(t)
	token := "abcdefghijklmnopqrstuvwxyz012345"
	if err := e.m.PutChallenge(token, token+".thumbprint_abcdefgh"); err != nil {
		t.Fatal(err)
	}
	err := e.m.VerifyChallenge(context.Background(), "nosite.test", token)
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("self-check for a host nginx does not serve: %v", err)
	}
}

func TestCustomCertificateTLSPolicy(t *testing.T) {
	e := startNginx(t)
	be := backend(t, "custom")
	ca := newCA(t)
	dir := filepath.Join(e.root, "custom-certs")
	os.MkdirAll(dir, 0o700)
	certPath, keyPath := ca.customPair(t, dir, []string{"secure.test"})
	e.apply(Site{App: "secure", Upstream: be.URL, Domains: []Domain{
		{Host: "secure.test", TLS: TLSCustom, CertPath: certPath, KeyPath: keyPath, ForceHTTPS: true, HSTS: true},
	}})

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(e.httpsPort))
	dial := func(cfg *tls.Config) (tls.ConnectionState, error) {
		cfg.RootCAs, cfg.ServerName = ca.pool, "secure.test"
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			return tls.ConnectionState{}, err
		}
		defer c.Close()
		return c.ConnectionState(), nil
	}
	st, err := dial(&tls.Config{NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if st.NegotiatedProtocol != "h2" || st.Version != tls.VersionTLS13 {
		t.Fatalf("negotiated %q, TLS %x", st.NegotiatedProtocol, st.Version)
	}
	// TLS 1.2 with an intermediate-profile cipher works.
	st, err = dial(&tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}})
	if err != nil || st.Version != tls.VersionTLS12 {
		t.Fatalf("TLS 1.2: %v %x", err, st.Version)
	}
	// TLS 1.1 and below are refused, and so is a CBC cipher that the
	// intermediate profile leaves out.
	if _, err := dial(&tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}); err == nil {
		t.Fatal("TLS 1.1 handshake succeeded")
	}
	if _, err := dial(&tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}}); err == nil {
		t.Fatal("a CBC cipher outside the intermediate profile was accepted")
	}

	a := fetch(t, e.tlsClient(ca.pool), "https://secure.test/")
	if got := decodeEcho(t, a); got.Name != "custom" || a.proto != "HTTP/2.0" {
		t.Fatalf("HTTPS: %s %+v", a.proto, got)
	}
	if a.header.Get("Strict-Transport-Security") != hstsValue {
		t.Fatalf("HSTS %q", a.header.Get("Strict-Transport-Security"))
	}
	// Plain HTTP redirects (a custom certificate is present by definition).
	if a := fetch(t, e.client(), "http://secure.test/z"); a.status != 301 || a.header.Get("Location") != "https://secure.test:"+strconv.Itoa(e.httpsPort)+"/z" {
		t.Fatalf("force HTTPS with a custom certificate: %d %q", a.status, a.header.Get("Location"))
	}
	info, err := ReadCertInfo(certPath)
	if err != nil || info.Subject != "CN=secure.test" || info.DNSNames[0] != "secure.test" || !info.NotAfter.After(info.NotBefore) {
		t.Fatalf("ReadCertInfo: %+v %v", info, err)
	}
	// The admin replaces the certificate at the same paths; applying the
	// site again makes nginx serve it.
	newCert, newKey := ca.customPair(t, dir, []string{"secure.test"}) // same file names, new key and serial
	if newCert != certPath || newKey != keyPath {
		t.Fatal("customPair changed its file names")
	}
	replaced, err := ReadCertInfo(certPath)
	if err != nil || replaced.SerialHex == info.SerialHex {
		t.Fatalf("replaced certificate: %+v %v", replaced, err)
	}
	e.apply(Site{App: "secure", Upstream: be.URL, Domains: []Domain{
		{Host: "secure.test", TLS: TLSCustom, CertPath: certPath, KeyPath: keyPath, ForceHTTPS: true, HSTS: true},
	}})
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.pool, ServerName: "secure.test"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got := hex.EncodeToString(conn.ConnectionState().PeerCertificates[0].SerialNumber.Bytes()); got != replaced.SerialHex {
		t.Fatalf("nginx serves %s, the replaced certificate is %s", got, replaced.SerialHex)
	}
}

// TestBrokenCustomCertKeepsOldConfig: a change that fails nginx -t returns
// nginx's message, puts the previous file back and leaves traffic flowing.
func TestBrokenCustomCertKeepsOldConfig(t *testing.T) {
	e := startNginx(t)
	be := backend(t, "live")
	good := Site{App: "live", Upstream: be.URL, Domains: []Domain{{Host: "live.test"}}}
	e.apply(good)
	before, err := os.ReadFile(e.m.siteFile("live"))
	if err != nil {
		t.Fatal(err)
	}
	gen := e.m.Generation()

	missing := filepath.Join(e.root, "nope", "live.crt")
	broken := good
	broken.Domains = []Domain{{Host: "live.test", TLS: TLSCustom, CertPath: missing, KeyPath: filepath.Join(e.root, "nope", "live.key")}}
	err = e.m.Apply(context.Background(), broken)
	if err == nil || !strings.Contains(err.Error(), "nginx -t") || !strings.Contains(err.Error(), "cannot load certificate") || !strings.Contains(err.Error(), missing) {
		t.Fatalf("broken certificate path: %v", err)
	}
	after, err := os.ReadFile(e.m.siteFile("live"))
	if err != nil || string(after) != string(before) {
		t.Fatalf("the previous site file was not kept:\n%s", after)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(e.cfg.SitesDir, ".*")); len(leftovers) != 0 {
		t.Fatalf("left behind: %v", leftovers)
	}
	// nginx still runs the old configuration and serves the app.
	if got := decodeEcho(t, fetch(t, e.client(), "http://live.test/")); got.Name != "live" {
		t.Fatalf("after a failed apply: %+v", got)
	}
	if g, err := e.m.statusGeneration(context.Background()); err != nil || g != strconv.FormatUint(gen, 10) {
		t.Fatalf("nginx generation %q, %v; want the last good one %d", g, err, gen)
	}
	// A new site that fails leaves no file at all.
	err = e.m.Apply(context.Background(), Site{App: "newbroken", Domains: []Domain{{Host: "nb.test", TLS: TLSCustom, CertPath: missing, KeyPath: missing}}})
	if err == nil || !strings.Contains(err.Error(), "cannot load certificate") {
		t.Fatalf("new broken site: %v", err)
	}
	if _, err := os.Stat(e.m.siteFile("newbroken")); !os.IsNotExist(err) {
		t.Fatalf("a failed new site left its file: %v", err)
	}
	// And the next good change goes through.
	good.Domains = append(good.Domains, Domain{Host: "live2.test"})
	e.apply(good)
	if got := decodeEcho(t, fetch(t, e.client(), "http://live2.test/")); got.Name != "live" {
		t.Fatalf("after recovery: %+v", got)
	}
}

// TestHostOfAnotherAppRefused: nginx only warns about a host served twice and
// ignores one; the manager refuses it.
func TestHostOfAnotherAppRefused(t *testing.T) {
	e := startNginx(t)
	be := backend(t, "first")
	e.apply(Site{App: "first", Upstream: be.URL, Domains: []Domain{{Host: "taken.test"}}})
	err := e.m.Apply(context.Background(), Site{App: "second", Upstream: be.URL, Domains: []Domain{{Host: "taken.test"}}})
	if err == nil || !strings.Contains(err.Error(), "conflicting server name") {
		t.Fatalf("a host of another app: %v", err)
	}
	if _, err := os.Stat(e.m.siteFile("second")); !os.IsNotExist(err) {
		t.Fatal("the conflicting site stayed")
	}
	// A conflict between server blocks the agent does not own is their
	// owner's business and does not stop the agent's sites.
	admin := "server {\n    listen 127.0.0.1:" + strconv.Itoa(e.httpPort) + ";\n    server_name admin.test;\n    return 204;\n}\n"
	if err := os.WriteFile(filepath.Join(e.cfg.SitesDir, "zz-admin.conf"), []byte(admin+admin), 0o644); err != nil {
		t.Fatal(err)
	}
	e.apply(Site{App: "third", Upstream: be.URL, Domains: []Domain{{Host: "third.test"}}})
	if got := decodeEcho(t, fetch(t, e.client(), "http://third.test/")); got.Name != "first" {
		t.Fatal(got)
	}
	if apps, _ := e.m.Sites(); strings.Join(apps, ",") != "first,third" {
		t.Fatalf("Sites() lists a file the agent did not write: %v", apps)
	}
	if err := e.m.Sync(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(e.cfg.SitesDir, "zz-admin.conf")); err != nil {
		t.Fatalf("Sync removed a file the agent did not write: %v", err)
	}
	if a := fetch(t, e.client(), "http://admin.test/"); a.status != 204 {
		t.Fatalf("admin's own site: %d", a.status)
	}
	if err := e.m.Remove(context.Background(), "zz-admin"); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Apply(context.Background(), Site{App: "zz-admin", Domains: []Domain{{Host: "zz.test"}}}); err == nil || !strings.Contains(err.Error(), "not written by berth-agent") {
		t.Fatalf("Apply over a file the agent did not write: %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.cfg.SitesDir, "zz-admin.conf")); err != nil {
		t.Fatalf("Remove took a file the agent did not write: %v", err)
	}
}

// TestSync: the sites become exactly the ones given, in one reload.
func TestSync(t *testing.T) {
	e := startNginx(t)
	be := backend(t, "sync")
	for _, app := range []string{"keep", "drop1", "drop2"} {
		e.apply(Site{App: app, Upstream: be.URL, Domains: []Domain{{Host: app + ".test"}}})
	}
	gen := e.m.Generation()
	err := e.m.Sync(context.Background(), []Site{
		{App: "keep", Upstream: be.URL, Domains: []Domain{{Host: "keep.test"}, {Host: "keep2.test"}}},
		{App: "new", Upstream: be.URL, Domains: []Domain{{Host: "new.test"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if e.m.Generation() != gen+1 {
		t.Fatal("Sync reloaded more than once")
	}
	if apps, _ := e.m.Sites(); strings.Join(apps, ",") != "keep,new" {
		t.Fatalf("after Sync: %v", apps)
	}
	c := e.client()
	for host, want := range map[string]int{"keep.test": 200, "keep2.test": 200, "new.test": 200, "drop1.test": 404, "drop2.test": 404} {
		if a := fetch(t, c, "http://"+host+"/"); a.status != want {
			t.Errorf("%s: %d, want %d", host, a.status, want)
		}
	}
	for _, app := range []string{"drop1", "drop2"} {
		if _, err := os.Stat(e.m.siteSpec(app)); !os.IsNotExist(err) {
			t.Errorf("spec of %s kept", app)
		}
	}
}

func TestRemoveSite(t *testing.T) {
	e := startNginx(t)
	be := backend(t, "gone")
	e.apply(Site{App: "gone", Upstream: be.URL, Domains: []Domain{{Host: "gone.test"}}})
	if got := decodeEcho(t, fetch(t, e.client(), "http://gone.test/")); got.Name != "gone" {
		t.Fatal(got)
	}
	if err := e.m.Remove(context.Background(), "gone"); err != nil {
		t.Fatal(err)
	}
	if a := fetch(t, e.client(), "http://gone.test/"); a.status != 404 {
		t.Fatalf("removed site still answers: %d %q", a.status, a.body)
	}
	if _, err := os.Stat(e.m.siteFile("gone")); !os.IsNotExist(err) {
		t.Fatal("site file still there")
	}
	if _, err := os.Stat(e.m.siteSpec("gone")); !os.IsNotExist(err) {
		t.Fatal("site spec still there: a new certificate would bring it back")
	}
	// Removing again, or an app that never had a site, is fine.
	if err := e.m.Remove(context.Background(), "gone"); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Remove(context.Background(), "../etc"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Remove(../etc): %v", err)
	}
}

// TestApplyAll: many sites, one check, one reload; a bad one
// refuses all of them.
func TestApplyAll(t *testing.T) {
	e := startNginx(t)
	be := backend(t, "many")
	var sites []Site
	for i := 0; i < 20; i++ {
		n := "app" + strconv.Itoa(i)
		sites = append(sites, Site{App: n, Upstream: be.URL, Domains: []Domain{{Host: n + ".test"}, {Host: "www." + n + ".test", RedirectTo: "https://" + n + ".test"}}})
	}
	bad := append(append([]Site(nil), sites...), Site{App: "bad", Domains: []Domain{{Host: "Bad.test"}}})
	if err := e.m.ApplyAll(context.Background(), bad); !errors.Is(err, ErrInvalid) {
		t.Fatalf("ApplyAll with a bad site: %v", err)
	}
	if apps, _ := e.m.Sites(); len(apps) != 0 {
		t.Fatalf("a refused ApplyAll wrote %v", apps)
	}
	gen := e.m.Generation()
	if err := e.m.ApplyAll(context.Background(), sites); err != nil {
		t.Fatal(err)
	}
	if e.m.Generation() != gen+1 {
		t.Fatalf("generation %d -> %d: more than one reload", gen, e.m.Generation())
	}
	for _, h := range []string{"app0.test", "app19.test"} {
		if got := decodeEcho(t, fetch(t, e.client(), "http://"+h+"/")); got.Host != h {
			t.Fatal(got)
		}
	}
}

// TestRefusedReloadExplained: nginx -t does not bind ports, so a port
// taken by another process passes the check; the reload is refused by
// nginx's master, the old configuration keeps serving, and the error says
// why.
func TestRefusedReloadExplained(t *testing.T) {
	e := startNginx(t)
	be := backend(t, "port")
	e.apply(Site{App: "port", Upstream: be.URL, Domains: []Domain{{Host: "port.test"}}})
	ca := newCA(t)
	certPath, keyPath := ca.customPair(t, e.root, []string{"port.test"})
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(e.httpsPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	err = e.m.Apply(context.Background(), Site{App: "port", Upstream: be.URL, Domains: []Domain{{Host: "port.test", TLS: TLSCustom, CertPath: certPath, KeyPath: keyPath}}})
	if err == nil || !strings.Contains(err.Error(), "refused the reload") || !strings.Contains(err.Error(), "Address already in use") {
		t.Fatalf("reload with the HTTPS port taken: %v", err)
	}
	if got := decodeEcho(t, fetch(t, e.client(), "http://port.test/")); got.Name != "port" {
		t.Fatal(got)
	}
	// Once the port is free, a reload takes the checked files.
	l.Close()
	if err := e.m.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a := fetch(t, e.tlsClient(ca.pool), "https://port.test/"); a.status != 200 {
		t.Fatalf("after the port was freed: %d", a.status)
	}
}

// TestRecoverHalfApplied: an agent killed between putting a new file in
// place and nginx -t leaves the previous file aside; New puts it back.
func TestRecoverHalfApplied(t *testing.T) {
	e := newEnv(t)
	sites := e.cfg.SitesDir
	os.WriteFile(filepath.Join(sites, "kept.conf"), []byte("# untested new\n"), 0o644)
	os.WriteFile(filepath.Join(sites, ".kept.conf.prev"), []byte("# previous\n"), 0o644)
	os.WriteFile(filepath.Join(sites, "fresh.conf"), []byte("# untested, no previous\n"), 0o644)
	os.WriteFile(filepath.Join(sites, ".fresh.conf.absent"), nil, 0o600)
	os.WriteFile(filepath.Join(sites, ".x.conf.tmp-abcdef"), []byte("partial"), 0o644)
	keyTmp := filepath.Join(e.m.keysDir(), ".a.key.tmp-abcdef")
	os.WriteFile(keyTmp, []byte("partial"), 0o600)
	if _, err := New(e.cfg); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(sites, "kept.conf")); string(b) != "# previous\n" {
		t.Fatalf("kept.conf = %q", b)
	}
	ents, _ := os.ReadDir(sites)
	var names []string
	for _, en := range ents {
		names = append(names, en.Name())
	}
	if strings.Join(names, ",") != "_berth.conf,kept.conf" {
		t.Fatalf("after recovery: %v", names)
	}
	if _, err := os.Stat(keyTmp); !os.IsNotExist(err) {
		t.Fatal("a partial key file was left")
	}
}

// TestHostsSharingACertificate: hosts handled alike share one server block
// (one TLS context in nginx), and each is still redirected to itself.
func TestHostsSharingACertificate(t *testing.T) {
	e := startNginx(t)
	be := backend(t, "multi")
	ca := newCA(t)
	hosts := []string{"a.multi.test", "b.multi.test", "c.multi.test"}
	csr, err := e.m.CSR("multi", hosts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.InstallCertificate("multi", ca.signCSR(t, csr)); err != nil {
		t.Fatal(err)
	}
	site := Site{App: "multi", Upstream: be.URL}
	for _, h := range hosts {
		site.Domains = append(site.Domains, Domain{Host: h, TLS: TLSACME, CertName: "multi", ForceHTTPS: true, HSTS: true})
	}
	site.Domains = append(site.Domains, Domain{Host: "plain.multi.test"})
	e.apply(site)
	conf, _ := os.ReadFile(e.m.siteFile("multi"))
	if n := strings.Count(string(conf), "ssl_certificate "); n != 1 {
		t.Fatalf("%d TLS server blocks for three hosts on one certificate:\n%s", n, conf)
	}
	tc := e.tlsClient(ca.pool)
	for _, h := range hosts {
		a := fetch(t, e.client(), "http://"+h+"/p?q=1")
		if want := "https://" + h + ":" + strconv.Itoa(e.httpsPort) + "/p?q=1"; a.status != 301 || a.header.Get("Location") != want {
			t.Errorf("%s: %d %q, want %q", h, a.status, a.header.Get("Location"), want)
		}
		a = fetch(t, tc, "https://"+h+"/")
		if got := decodeEcho(t, a); got.Host != h || a.header.Get("Strict-Transport-Security") == "" {
			t.Errorf("%s over HTTPS: %+v %v", h, got, a.header)
		}
	}
	// The host without TLS is in its own block, on plain HTTP, no redirect.
	if got := decodeEcho(t, fetch(t, e.client(), "http://plain.multi.test/")); got.Host != "plain.multi.test" {
		t.Fatal(got)
	}
}
