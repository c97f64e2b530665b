package proxy

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReloadWaitsForOldWorkers checks the mechanism the reload's wait
// rests on: the old workers are found, and when Apply returns none of
// them can accept a connection any more.
func TestReloadWaitsForOldWorkers(t *testing.T) {
	e := startNginx(t)
	_, pid, err := e.m.status(context.Background())
	if err != nil || pid <= 0 {
		t.Fatalf("status: pid %d, %v", pid, err)
	}
	old := snapshotWorkers(pid)
	if len(old.procs) != 2 { // worker_processes 2
		t.Fatalf("old workers: %+v", old)
	}
	listening := listeningInodes()
	held := 0
	for _, p := range old.procs {
		if holdsAny(p.pid, listening) {
			held++
		}
	}
	if held != 2 {
		t.Fatalf("%d of 2 running workers seen holding the listening socket", held)
	}
	be := backend(t, "w")
	e.apply(Site{App: "w", Upstream: be.URL, Domains: []Domain{{Host: "w.test"}}})
	listening = listeningInodes()
	for _, p := range old.procs {
		if pp, start, ok := procStat(p.pid); ok && pp == old.master && start == p.start && holdsAny(p.pid, listening) {
			t.Fatalf("old worker %d still holds a listening socket after Apply returned", p.pid)
		}
	}
}

// TestReloadFindsWorkersWithoutStatusServer: nginx runs a configuration
// without the agent's status server (the first change after the agent was
// installed, a distribution's default site on the port): the old workers
// are found through their listening sockets, and Apply returns only once
// none of them can accept a connection.
func TestReloadFindsWorkersWithoutStatusServer(t *testing.T) {
	e := newEnv(t)
	// What the server ran before the agent: a default site answering 200
	// for every host on the agent's port, and no status server.
	if err := os.Remove(filepath.Join(e.cfg.SitesDir, baseFile)); err != nil {
		t.Fatal(err)
	}
	def := fmt.Sprintf("server {\n    listen 127.0.0.1:%d default_server;\n    return 200 \"welcome\\n\";\n}\n", e.httpPort)
	if err := os.WriteFile(filepath.Join(e.cfg.SitesDir, "default.conf"), []byte(def), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(e.cfg.NginxBin, "-p", e.cfg.NginxPrefix, "-c", e.cfg.NginxConf, "-e", e.errLog, "-g", "daemon off;")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		// Polled until nginx listens (refused before).
		if resp, err := e.client().Get("http://any.test/"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if ctx.Err() != nil {
			log, _ := os.ReadFile(e.errLog)
			t.Fatalf("the default site never answered:\n%s", log)
		}
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
	if _, pid, err := e.m.status(ctx); err == nil && pid > 0 {
		t.Fatalf("the default site answered as the status server (pid %d)", pid)
	}
	old := e.m.oldWorkers(ctx)
	if old.master != cmd.Process.Pid || len(old.procs) != 2 { // worker_processes 2
		t.Fatalf("old workers: %+v, want the 2 children of master %d", old, cmd.Process.Pid)
	}
	be := backend(t, "w")
	e.apply(Site{App: "w", Upstream: be.URL, Domains: []Domain{{Host: "w.test"}}})
	listening := listeningInodes()
	for _, p := range old.procs {
		if pp, start, ok := procStat(p.pid); ok && pp == old.master && start == p.start && holdsAny(p.pid, listening) {
			t.Fatalf("old worker %d still holds a listening socket after Apply returned", p.pid)
		}
	}
}

// TestInjectionRefused: nothing a controller (or an attacker who got
// between it and the agent) sends can put a directive into nginx.
func TestInjectionRefused(t *testing.T) {
	e := newEnv(t)
	ok := Site{App: "app", Upstream: "http://127.0.0.1:3000", Domains: []Domain{{Host: "app.test"}}}
	mod := func(f func(*Site)) Site {
		s := ok
		s.Domains = append([]Domain(nil), ok.Domains...)
		f(&s)
		return s
	}
	dom := func(f func(*Domain)) Site {
		return mod(func(s *Site) { f(&s.Domains[0]) })
	}
	cases := map[string]Site{
		"host with directive":     dom(func(d *Domain) { d.Host = "app.test; return 200 pwned" }),
		"host with newline":       dom(func(d *Domain) { d.Host = "app.test\n}\nserver {" }),
		"host with brace":         dom(func(d *Domain) { d.Host = "app.test{" }),
		"host with variable":      dom(func(d *Domain) { d.Host = "$host" }),
		"host with quote":         dom(func(d *Domain) { d.Host = `app"test` }),
		"host uppercase":          dom(func(d *Domain) { d.Host = "App.test" }),
		"host trailing dot":       dom(func(d *Domain) { d.Host = "app.test." }),
		"host regex":              dom(func(d *Domain) { d.Host = "~^(.*)$" }),
		"host wildcard inside":    dom(func(d *Domain) { d.Host = "a.*.test" }),
		"host empty label":        dom(func(d *Domain) { d.Host = "a..test" }),
		"host too long label":     dom(func(d *Domain) { d.Host = strings.Repeat("a", 64) + ".test" }),
		"host unicode":            dom(func(d *Domain) { d.Host = "bücher.test" }),
		"host twice":              mod(func(s *Site) { s.Domains = append(s.Domains, s.Domains[0]) }),
		"no domains":              mod(func(s *Site) { s.Domains = nil }),
		"app path":                mod(func(s *Site) { s.App = "../etc/nginx/nginx" }),
		"app hidden":              mod(func(s *Site) { s.App = ".app" }),
		"app upper":               mod(func(s *Site) { s.App = "App" }),
		"upstream directive":      mod(func(s *Site) { s.Upstream = "http://127.0.0.1:3000; include /etc/passwd" }),
		"upstream path":           mod(func(s *Site) { s.Upstream = "http://127.0.0.1:3000/x;y" }),
		"upstream variable":       mod(func(s *Site) { s.Upstream = "http://$host:3000" }),
		"upstream no port":        mod(func(s *Site) { s.Upstream = "http://127.0.0.1" }),
		"upstream credentials":    mod(func(s *Site) { s.Upstream = "http://u:p@127.0.0.1:3000" }),
		"upstream scheme":         mod(func(s *Site) { s.Upstream = "ftp://127.0.0.1:21" }),
		"upstream unix relative":  mod(func(s *Site) { s.Upstream = "unix:run/app.sock" }),
		"upstream unix semicolon": mod(func(s *Site) { s.Upstream = "unix:/run/app.sock;" }),
		"upstream and root":       mod(func(s *Site) { s.StaticRoot = "/srv/www" }),
		"root dotdot":             mod(func(s *Site) { s.Upstream = ""; s.StaticRoot = "/srv/www/../../etc" }),
		"root quote":              mod(func(s *Site) { s.Upstream = ""; s.StaticRoot = `/srv/"www` }),
		"root variable":           mod(func(s *Site) { s.Upstream = ""; s.StaticRoot = "/srv/$host" }),
		"root space":              mod(func(s *Site) { s.Upstream = ""; s.StaticRoot = "/srv/my site" }),
		"root relative":           mod(func(s *Site) { s.Upstream = ""; s.StaticRoot = "srv/www" }),
		"redirect variable":       dom(func(d *Domain) { d.RedirectTo = "https://a.test$request_uri" }),
		"redirect query":          dom(func(d *Domain) { d.RedirectTo = "https://a.test/?x=1" }),
		"redirect directive":      dom(func(d *Domain) { d.RedirectTo = "https://a.test/;return" }),
		"redirect javascript":     dom(func(d *Domain) { d.RedirectTo = "javascript:alert(1)" }),
		"redirect relative":       dom(func(d *Domain) { d.RedirectTo = "/elsewhere" }),
		"redirect status":         dom(func(d *Domain) { d.RedirectTo = "https://a.test"; d.RedirectStatus = 200 }),
		"status without target":   dom(func(d *Domain) { d.RedirectStatus = 301 }),
		"redirect to itself": mod(func(s *Site) {
			s.Domains = []Domain{{Host: "a.test"}, {Host: "www.a.test", RedirectTo: "https://www.a.test"}}
		}),
		"redirect loop": mod(func(s *Site) {
			s.Domains = []Domain{{Host: "a.test", RedirectTo: "https://b.test"}, {Host: "b.test", RedirectTo: "https://a.test"}}
		}),
		"tls mode": dom(func(d *Domain) { d.TLS = "letsencrypt" }),
		"custom path quote": dom(func(d *Domain) {
			d.TLS = TLSCustom
			d.CertPath = `/etc/x.crt"; ssl_certificate_key "/etc/shadow`
			d.KeyPath = "/etc/x.key"
		}),
		"custom path relative": dom(func(d *Domain) { d.TLS = TLSCustom; d.CertPath = "x.crt"; d.KeyPath = "/etc/x.key" }),
		"custom key missing":   dom(func(d *Domain) { d.TLS = TLSCustom; d.CertPath = "/etc/x.crt" }),
		"cert name path":       dom(func(d *Domain) { d.TLS = TLSACME; d.CertName = "../../etc/ssl/private/x" }),
		"cert name next":       dom(func(d *Domain) { d.TLS = TLSACME; d.CertName = "app.next" }),
	}
	for name, s := range cases {
		t.Run(name, func(t *testing.T) {
			err := e.m.Apply(context.Background(), s)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Apply(%+v) = %v, want ErrInvalid", s, err)
			}
		})
	}
	ents, _ := os.ReadDir(e.cfg.SitesDir)
	if len(ents) != 1 || ents[0].Name() != baseFile {
		t.Fatalf("refused sites wrote files: %v", ents)
	}
	// The valid variants of the same shapes render; the rendered file
	// has each value exactly where it belongs.
	good := mod(func(s *Site) {
		s.Domains = []Domain{
			{Host: "xn--bcher-kva.test", Primary: true},
			{Host: "*.wild.test"},
			{Host: "www.xn--bcher-kva.test", RedirectTo: "https://xn--bcher-kva.test/shop/", RedirectStatus: 308},
		}
	})
	if err := good.validate(); err != nil {
		t.Fatal(err)
	}
	// A quote or brace in a redirect path is sent percent-encoded, never raw.
	if r, err := redirectTarget(`https://a.test/"{x}`); err != nil || r != "https://a.test/%22%7Bx%7D" {
		t.Fatalf("redirect path encoding: %q, %v", r, err)
	}
	out := e.m.render(good)
	for _, want := range []string{"server_name xn--bcher-kva.test *.wild.test;", "server_name www.xn--bcher-kva.test;", "return 308 https://xn--bcher-kva.test/shop$request_uri;", "proxy_pass http://127.0.0.1:3000;"} {
		if !strings.Contains(out, want) {
			t.Fatalf("rendered site lacks %q:\n%s", want, out)
		}
	}
}

// FuzzValidated: whatever passes validation holds no character that could
// end a directive, open a block, quote, escape or expand a variable.
func FuzzValidated(f *testing.F) {
	for _, s := range []string{"app.test", "*.a.test", "a.test;x", "http://127.0.0.1:80", "unix:/run/a.sock", "/srv/www", "https://a.test/x", "a\nb", "$x", "http://[::1]:80"} {
		f.Add(s)
	}
	const bad = " \t\r\n;{}\"'$#\\`"
	f.Fuzz(func(t *testing.T, s string) {
		check := func(kind, v string) {
			if strings.ContainsAny(v, bad) {
				t.Fatalf("%s %q passed validation", kind, v)
			}
		}
		if validHost(s) {
			check("host", s)
		}
		if safePath(s) {
			check("path", s)
		}
		if validAppName(s) {
			check("app", s)
			if strings.Contains(s, "/") || s == "." || s == ".." {
				t.Fatalf("app name %q is a path", s)
			}
		}
		if validCertName(s) {
			check("cert name", s)
		}
		if u, err := parseUpstream(s); err == nil {
			check("upstream", u.pass)
		}
		if r, err := redirectTarget(s); err == nil {
			check("redirect", r)
		}
		if validToken(s) {
			check("token", s)
		}
	})
}

func TestCSRKeyIsPrivateAndReused(t *testing.T) {
	e := newEnv(t)
	hosts := []string{"app.test", "www.app.test"}
	csr1, err := e.m.CSR("app.test", hosts)
	if err != nil {
		t.Fatal(err)
	}
	csr2, err := e.m.CSR("app.test", hosts)
	if err != nil {
		t.Fatal(err)
	}
	r1, r2 := parseCSR(t, csr1), parseCSR(t, csr2)
	if strings.Join(r1.DNSNames, ",") != "app.test,www.app.test" || r1.Subject.CommonName != "app.test" {
		t.Fatalf("CSR names %v %q", r1.DNSNames, r1.Subject.CommonName)
	}
	k1, ok := r1.PublicKey.(*ecdsa.PublicKey)
	if !ok || k1.Curve != elliptic.P256() {
		t.Fatalf("CSR key %T, want ECDSA P-256", r1.PublicKey)
	}
	if !k1.Equal(r2.PublicKey) {
		t.Fatal("the second CSR has a new key: renewals must reuse it")
	}
	st, err := os.Stat(e.m.keyPath("app.test"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v", st.Mode(), err)
	}
	if st, err := os.Stat(e.m.keysDir()); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("keys dir mode %v, %v", st.Mode(), err)
	}
	if bytes.Contains(csr1, []byte("PRIVATE")) {
		t.Fatal("the CSR carries private key material")
	}

	// A rotation makes a new key, used by the CSRs that follow, while the
	// live key stays until the new certificate arrives.
	csr3, err := e.m.CSRWith("app.test", hosts, CSROptions{Rotate: true})
	if err != nil {
		t.Fatal(err)
	}
	r3 := parseCSR(t, csr3)
	if k1.Equal(r3.PublicKey) {
		t.Fatal("rotation kept the key")
	}
	if r4 := parseCSR(t, mustCSR(t, e.m, "app.test", hosts)); !r4.PublicKey.(*ecdsa.PublicKey).Equal(r3.PublicKey) {
		t.Fatal("a CSR after a rotation does not use the rotated key")
	}
	live, _ := readKey(e.m.keyPath("app.test"))
	if !k1.Equal(live.Public()) {
		t.Fatal("rotation replaced the live key before its certificate")
	}
	if st, err := os.Stat(e.m.nextKeyPath("app.test")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("rotated key mode %v, %v", st, err)
	}
	// Installing the certificate for the rotated key promotes it.
	ca := newCA(t)
	if _, err := e.m.InstallCertificate("app.test", ca.signCSR(t, csr3)); err != nil {
		t.Fatal(err)
	}
	live, _ = readKey(e.m.keyPath("app.test"))
	if !live.Public().(*ecdsa.PublicKey).Equal(r3.PublicKey) {
		t.Fatal("the rotated key was not promoted")
	}
	if _, err := os.Stat(e.m.nextKeyPath("app.test")); !os.IsNotExist(err) {
		t.Fatal("the rotated key file stayed beside the live one")
	}

	for name, h := range map[string][]string{
		"no hosts":  nil,
		"bad host":  {"App.test"},
		"injection": {"a.test\nb"},
		"duplicate": {"a.test", "a.test"},
		"too many":  make([]string, 101),
	} {
		if _, err := e.m.CSR("x.test", h); !errors.Is(err, ErrInvalid) {
			t.Errorf("CSR %s: %v", name, err)
		}
	}
	if _, err := e.m.CSR("../keys/x", hosts); !errors.Is(err, ErrInvalid) {
		t.Errorf("CSR with a path as name: %v", err)
	}
	// A wildcard is a valid CSR name (DNS-01 on the controller).
	if r := parseCSR(t, mustCSR(t, e.m, "_.wild.test", []string{"*.wild.test", "wild.test"})); r.DNSNames[0] != "*.wild.test" {
		t.Fatal(r.DNSNames)
	}
}

func mustCSR(t *testing.T, m *Manager, name string, hosts []string) []byte {
	t.Helper()
	b, err := m.CSR(name, hosts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func parseCSR(t *testing.T, b []byte) *x509.CertificateRequest {
	t.Helper()
	blk, rest := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("not one PEM CSR: %q", b)
	}
	r, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.CheckSignature(); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestInstallCertificateRejects(t *testing.T) {
	e := newEnv(t)
	ca := newCA(t)
	csr := mustCSR(t, e.m, "app.test", []string{"app.test"})
	pub := parseCSR(t, csr).PublicKey

	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherCA := newCA(t)
	leafOnly := func(chain []byte) []byte { b, _ := pem.Decode(chain); return pem.EncodeToMemory(b) }
	good := ca.issue(t, pub, []string{"app.test"}, time.Now().Add(time.Hour))
	var reversed []byte
	{
		rest := good
		var blocks [][]byte
		for {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			blocks = append(blocks, pem.EncodeToMemory(b))
		}
		reversed = append(blocks[1], blocks[0]...)
	}
	wrongIssuer := append(leafOnly(good), otherCA.pem...)
	keyPEM, _ := os.ReadFile(e.m.keyPath("app.test"))

	cases := map[string]struct {
		name  string
		chain []byte
		want  string
	}{
		"another key":      {"app.test", ca.issue(t, other.Public(), []string{"app.test"}, time.Now().Add(time.Hour)), "does not match its private key"},
		"no key made":      {"never.test", good, "does not match"},
		"expired":          {"app.test", ca.issue(t, pub, []string{"app.test"}, time.Now().Add(-time.Minute)), "expired"},
		"reversed chain":   {"app.test", reversed, "not signed by"},
		"wrong issuer":     {"app.test", wrongIssuer, "not signed by"},
		"garbage":          {"app.test", []byte("not a certificate"), "no PEM certificate"},
		"empty":            {"app.test", nil, "no PEM certificate"},
		"private key":      {"app.test", keyPEM, "PRIVATE KEY"},
		"trailing garbage": {"app.test", append(append([]byte(nil), good...), "junk"...), "trailing data"},
		"bad DER":          {"app.test", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}}), "certificate 1"},
		"oversized":        {"app.test", bytes.Repeat([]byte("A"), maxChain+1), "at most"},
		"bad name":         {"../app", good, "certificate name"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := e.m.InstallCertificate(tc.name, tc.chain)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrInvalid with %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "BEGIN") {
				t.Fatal("the error echoes PEM")
			}
		})
	}
	if _, err := os.Stat(e.m.certPath("app.test")); !os.IsNotExist(err) {
		t.Fatal("a refused certificate was written")
	}
	info, err := e.m.InstallCertificate("app.test", good)
	if err != nil {
		t.Fatal(err)
	}
	if info.Subject != "CN=app.test" || info.NotAfter.Before(time.Now()) {
		t.Fatalf("%+v", info)
	}
	if st, err := os.Stat(e.m.certPath("app.test")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("certificate file: %v %v", st, err)
	}
	if err := e.m.DeleteCertificate("app.test"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{e.m.certPath("app.test"), e.m.keyPath("app.test")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s left after DeleteCertificate", p)
		}
	}
}

func TestChallengeInputRefused(t *testing.T) {
	e := newEnv(t)
	tok := "abcdefghijklmnop_-0123"
	for name, tc := range map[string][2]string{
		"path in token":      {"../../etc/passwd-xxxxxxxx", "x"},
		"slash in token":     {"abcdefghijklmnop/q", "abcdefghijklmnop/q.thumbprint_abcdefgh"},
		"short token":        {"abc", "abc.thumbprint_abcdefgh"},
		"padding in token":   {tok + "==", tok + "==.thumbprint_abcdefgh"},
		"keyauth of another": {tok, "zzzzzzzzzzzzzzzzzzzz.thumbprint_abcdefgh"},
		"keyauth newline":    {tok, tok + ".thumbprint_abcdefgh\n<script>"},
		"keyauth no thumb":   {tok, tok + "."},
		"keyauth huge":       {tok, tok + "." + strings.Repeat("a", 1000)},
	} {
		if err := e.m.PutChallenge(tc[0], tc[1]); !errors.Is(err, ErrInvalid) {
			t.Errorf("PutChallenge %s: %v", name, err)
		}
	}
	if err := e.m.DeleteChallenge("../../state/keys/x"); !errors.Is(err, ErrInvalid) {
		t.Errorf("DeleteChallenge with a path: %v", err)
	}
	if err := e.m.VerifyChallenge(context.Background(), "*.wild.test", tok); !errors.Is(err, ErrInvalid) {
		t.Errorf("VerifyChallenge for a wildcard: %v", err)
	}
	ents, _ := os.ReadDir(e.m.cfg.ChallengeDir)
	if len(ents) != 0 {
		t.Fatalf("refused challenges wrote %v", ents)
	}
	if err := e.m.PutChallenge(tok, tok+".thumbprint_abcdefgh"); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(e.m.cfg.ChallengeDir, tok)); err != nil || st.Mode().Perm() != 0o644 {
		t.Fatalf("challenge file %v %v", st, err)
	}
	if st, err := os.Stat(e.cfg.StateDir); err != nil || st.Mode().Perm() != 0o711 {
		t.Fatalf("state dir %v %v", st, err)
	}
	if err := e.m.DeleteChallenge(tok); err != nil {
		t.Fatal(err)
	}
	if err := e.m.DeleteChallenge(tok); err != nil {
		t.Fatalf("deleting twice: %v", err)
	}
}

func TestReadCertInfoErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadCertInfo(filepath.Join(dir, "missing.pem")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	p := filepath.Join(dir, "junk.pem")
	os.WriteFile(p, []byte("junk"), 0o600)
	if _, err := ReadCertInfo(p); !errors.Is(err, ErrInvalid) {
		t.Fatalf("junk: %v", err)
	}
	big := filepath.Join(dir, "big.pem")
	os.WriteFile(big, bytes.Repeat([]byte("x"), maxChain+10), 0o600)
	if _, err := ReadCertInfo(big); !errors.Is(err, ErrInvalid) {
		t.Fatalf("oversized: %v", err)
	}
	// A key before the certificate in one file (a common bundle) is skipped.
	ca := newCA(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	bundle := append(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), ca.issue(t, key.Public(), []string{"b.test"}, time.Now().Add(time.Hour))...)
	os.WriteFile(p, bundle, 0o600)
	info, err := ReadCertInfo(p)
	if err != nil || info.DNSNames[0] != "b.test" || !strings.Contains(info.Issuer, "Berth Test CA") {
		t.Fatalf("bundle: %+v %v", info, err)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	base := Config{NginxBin: nginxBin(t), NginxConf: filepath.Join(dir, "nginx.conf"), SitesDir: filepath.Join(dir, "sites"), StateDir: filepath.Join(dir, "state")}
	for name, f := range map[string]func(*Config){
		"relative conf":    func(c *Config) { c.NginxConf = "nginx.conf" },
		"relative sites":   func(c *Config) { c.SitesDir = "sites" },
		"quote in state":   func(c *Config) { c.StateDir = dir + `/st"ate` },
		"same ports":       func(c *Config) { c.HTTPPort, c.HTTPSPort = 8080, 8080 },
		"bad port":         func(c *Config) { c.HTTPPort = 70000 },
		"listen not an IP": func(c *Config) { c.ListenAddr = "localhost" },
		"no nginx":         func(c *Config) { c.NginxBin = filepath.Join(dir, "no-nginx") },
	} {
		c := base
		f(&c)
		if _, err := New(c); err == nil {
			t.Errorf("New with %s succeeded", name)
		}
	}
	for _, tc := range []struct {
		out     string
		style   http2Style
		wantErr bool
	}{
		{"nginx version: nginx/1.22.1\n", http2Listen, false},
		{"nginx version: nginx/1.25.1\n", http2Directive, false},
		{"nginx version: nginx/1.26.3 (Debian)\n", http2Directive, false},
		{"nginx version: nginx/1.25.0\n", http2Listen, false},
		{"nginx version: openresty/1.21.4.1\n", 0, true},
	} {
		maj, min, patch, ok := parseNginxVersion(tc.out)
		if ok == tc.wantErr {
			t.Errorf("%q: ok=%v", tc.out, ok)
			continue
		}
		if ok {
			if got := http2StyleFor(maj, min, patch); got != tc.style {
				t.Errorf("%q: style %v", tc.out, got)
			}
		}
	}
}

func TestChallengeDirReachable(t *testing.T) {
	root := t.TempDir()
	os.Chmod(root, 0o755)
	os.Chmod(filepath.Dir(root), 0o755)
	open := filepath.Join(root, "open", "challenges")
	closed := filepath.Join(root, "closed", "challenges")
	os.MkdirAll(open, 0o755)
	os.MkdirAll(closed, 0o755)
	os.Chmod(filepath.Join(root, "closed"), 0o700) // like /var/lib/berth-agent under systemd
	if err := reachableByOthers(open); err != nil {
		t.Fatal(err)
	}
	err := reachableByOthers(closed)
	if err == nil || !strings.Contains(err.Error(), "closed is mode 0700") {
		t.Fatalf("a challenge dir inside a 0700 directory: %v", err)
	}
	os.Chmod(open, 0o700)
	if err := reachableByOthers(open); err == nil {
		t.Fatal("an unreadable challenge dir passed")
	}
	if os.Geteuid() == 0 {
		// New refuses it when its workers would be another user.
		e := newEnv(t)
		cfg := e.cfg
		cfg.ChallengeDir = closed
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "ChallengeDir") {
			t.Fatalf("New with an unreachable challenge dir: %v", err)
		}
	}
}

// FuzzParseChain: whatever the bytes, parsing a chain neither panics nor
// accepts anything but certificates each signed by the next.
func FuzzParseChain(f *testing.F) {
	ca := newCA(f)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.Add(ca.issue(f, key.Public(), []string{"a.test"}, time.Now().Add(time.Hour)))
	f.Add(ca.pem)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		chain, err := parseChain(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not ErrInvalid: %v", err)
			}
			return
		}
		for i := 0; i+1 < len(chain); i++ {
			if chain[i].CheckSignatureFrom(chain[i+1]) != nil {
				t.Fatal("accepted a chain out of order")
			}
		}
	})
}

// TestRenderVariants: listen lines for every bind setting, checked by the
// real nginx -t (nothing is started, so no port is bound), and the HTTP/2
// directive newer nginx wants instead of the listen parameter.
func TestRenderVariants(t *testing.T) {
	ca := newCA(t)
	for _, tc := range []struct {
		name   string
		listen string
		ipv6   bool
		want   []string
	}{
		{"all addresses", "", false, []string{"listen %h;", "listen %s ssl http2;"}},
		{"all addresses and IPv6", "", true, []string{"listen %h;", "listen [::]:%h;", "listen %s ssl http2;", "listen [::]:%s ssl http2;"}},
		{"IPv6 loopback", "::1", false, []string{"listen [::1]:%h;", "listen [::1]:%s ssl http2;"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			cfg := e.cfg
			cfg.ListenAddr = tc.listen
			m, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			m.ipv6 = tc.ipv6
			certPath, keyPath := ca.customPair(t, e.root, []string{"v.test"})
			s := Site{App: "v", Upstream: "http://127.0.0.1:9", Domains: []Domain{{Host: "v.test", TLS: TLSCustom, CertPath: certPath, KeyPath: keyPath}}}
			out := m.render(s)
			for _, w := range tc.want {
				w = strings.ReplaceAll(strings.ReplaceAll(w, "%h", strconv.Itoa(e.httpPort)), "%s", strconv.Itoa(e.httpsPort))
				if !strings.Contains(out, w) {
					t.Fatalf("no %q in:\n%s", w, out)
				}
			}
			if err := os.WriteFile(m.siteFile("v"), []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := m.test(context.Background(), nil); err != nil {
				t.Fatal(err)
			}
		})
	}
	e := newEnv(t)
	e.m.http2 = http2Directive
	certPath, keyPath := ca.customPair(t, e.root, []string{"h.test"})
	out := e.m.render(Site{App: "h", Upstream: "http://127.0.0.1:9", Domains: []Domain{{Host: "h.test", TLS: TLSCustom, CertPath: certPath, KeyPath: keyPath}}})
	if !strings.Contains(out, "    http2 on;\n") || strings.Contains(out, "ssl http2") {
		t.Fatalf("nginx 1.25.1+ rendering:\n%s", out)
	}
}
