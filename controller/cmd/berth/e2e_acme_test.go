package main_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// pebbleBins builds pebble and its challenge test server once, from the
// versions tools/go.mod pins (letsencrypt/pebble/v2, a Go tool there).
var pebbleBins = sync.OnceValues(func() (string, error) {
	// Beside the berth binaries, which TestMain removes at the end.
	dir := filepath.Join(filepath.Dir(berthBin), "pebble")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	cmd := exec.Command("go", "build", "-o", dir+"/", "github.com/letsencrypt/pebble/v2/cmd/pebble", "github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv")
	cmd.Dir = filepath.Join("..", "..", "..", "tools")
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build pebble: %v\n%s", err, out)
	}
	return dir, nil
})

// acmeEnv is a real ACME CA (pebble) validating challenges against the
// test's nginx, and its DNS server (pebble-challtestsrv) answering every
// name with 127.0.0.1 and serving DNS-01 TXT records.
type acmeEnv struct {
	dir       string // directory URL
	caFile    string // trust for the directory's HTTPS
	mgmt      string // pebble management https://host:port
	dnsAddr   string // challtestsrv DNS
	challMgmt string // challtestsrv management http://host:port
	roots     *x509.CertPool
	logs      *syncBuffer
	tlsDir    string // pebble's own HTTPS certificate and key
}

// startPebble starts challtestsrv and pebble (HTTP-01 on nginx's port,
// certificates valid for validity), with PEBBLE_VA_ALWAYS_VALID unset.
func startPebble(t *testing.T, n *nginxEnv, validity time.Duration) *acmeEnv {
	t.Helper()
	return startPebbleWith(t, n, validity, nil, nil)
}

// startPebbleWith is startPebble requiring External Account Binding with
// eab's keys (kid -> base64url HMAC) when set, and sharing the DNS server
// and HTTPS certificate of other when set.
func startPebbleWith(t *testing.T, n *nginxEnv, validity time.Duration, eab map[string]string, other *acmeEnv) *acmeEnv {
	t.Helper()
	bins, err := pebbleBins()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	a := &acmeEnv{caFile: filepath.Join(dir, "ca.pem"), logs: &syncBuffer{}}
	var caPEM []byte
	if other != nil {
		a.caFile, a.dnsAddr, a.challMgmt, a.tlsDir = other.caFile, other.dnsAddr, other.challMgmt, other.tlsDir
		if caPEM, err = os.ReadFile(a.caFile); err != nil {
			t.Fatal(err)
		}
	} else {
		var certPEM, keyPEM []byte
		caPEM, certPEM, keyPEM = testTLS(t)
		a.tlsDir = dir
		for name, b := range map[string][]byte{"ca.pem": caPEM, "cert.pem": certPEM, "key.pem": keyPEM} {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		dnsPort, challMgmtPort := freePort(t), freePort(t)
		a.dnsAddr = "127.0.0.1:" + strconv.Itoa(dnsPort)
		a.challMgmt = "http://127.0.0.1:" + strconv.Itoa(challMgmtPort)
		chall := exec.Command(filepath.Join(bins, "pebble-challtestsrv"), "-http01", "", "-https01", "", "-doh", "", "-tlsalpn01", "",
			"-dnsserver", a.dnsAddr, "-management", "127.0.0.1:"+strconv.Itoa(challMgmtPort), "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "")
		startProc(t, chall, a.logs)
		waitFor(t, "challtestsrv up", 30*time.Second, func() bool {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(challMgmtPort), time.Second)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
	}
	listen, mgmt := "127.0.0.1:"+strconv.Itoa(freePort(t)), "127.0.0.1:"+strconv.Itoa(freePort(t))
	pc := map[string]any{
		"listenAddress": listen, "managementListenAddress": mgmt,
		"certificate": filepath.Join(a.tlsDir, "cert.pem"), "privateKey": filepath.Join(a.tlsDir, "key.pem"),
		"httpPort": n.httpPort, "tlsPort": n.httpsPort, "ocspResponderURL": "", "externalAccountBindingRequired": eab != nil,
		"retryAfter": map[string]int{"authz": 1, "order": 1}, "keyAlgorithm": "ecdsa",
		"profiles": map[string]any{"default": map[string]any{"description": "short", "validityPeriod": int(validity / time.Second)}},
	}
	if eab != nil {
		pc["externalAccountMACKeys"] = eab
	}
	cfg := map[string]any{"pebble": pc}
	buf, _ := json.Marshal(cfg)
	cfgPath := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(cfgPath, buf, 0o600); err != nil {
		t.Fatal(err)
	}
	p := exec.Command(filepath.Join(bins, "pebble"), "-config", cfgPath, "-dnsserver", a.dnsAddr)
	// Real validation: no PEBBLE_VA_ALWAYS_VALID; no random VA sleeps or
	// nonce rejections (they only slow the test).
	env := []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PEBBLE_") {
			env = append(env, kv)
		}
	}
	p.Env = env
	startProc(t, p, a.logs)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	a.dir, a.mgmt = "https://"+listen+"/dir", "https://"+mgmt
	waitFor(t, "pebble up", 30*time.Second, func() bool {
		resp, err := hc.Get(a.dir)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	// The roots the issued chains lead to.
	a.roots = x509.NewCertPool()
	for i := 0; ; i++ {
		resp, err := hc.Get(fmt.Sprintf("%s/roots/%d", a.mgmt, i))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			break
		}
		a.roots.AppendCertsFromPEM(b)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pebble log:\n%s", a.logs.String())
		}
	})
	return a
}

func startProc(t *testing.T, cmd *exec.Cmd, logs *syncBuffer) {
	t.Helper()
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
}

// challPost calls challtestsrv's management API.
func (a *acmeEnv) challPost(t *testing.T, path string, body any) {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(a.challMgmt+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("challtestsrv %s: %s", path, resp.Status)
	}
}

// httpreqBridge is the endpoint of lego's httpreq DNS provider: it turns
// {fqdn, value} into challtestsrv TXT records, so DNS-01 goes through a
// real lego provider to a real DNS server.
func (a *acmeEnv) httpreqBridge(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m struct {
			FQDN  string `json:"fqdn"`
			Value string `json:"value"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&m); err != nil || m.FQDN == "" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		path := "/set-txt"
		body := map[string]string{"host": m.FQDN, "value": m.Value}
		if r.URL.Path == "/cleanup" {
			path = "/clear-txt"
			delete(body, "value")
		}
		b, _ := json.Marshal(body)
		resp, err := http.Post(a.challMgmt+path, "application/json", bytes.NewReader(b))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// testTLS makes a CA and a certificate for 127.0.0.1 signed by it, for
// pebble's own HTTPS.
func testTLS(t *testing.T) (caPEM, certPEM, keyPEM []byte) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "berth test ACME CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames: []string{"localhost"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// activityCount counts activity entries of action about subject.
func (e *deployEnv) activityCount(t *testing.T, action, subject string) int {
	t.Helper()
	var list []map[string]any
	e.mustJSON(t, &list, "activity", "--action", action, "--limit", "200")
	n := 0
	for _, a := range list {
		if a["subject_name"] == subject {
			n++
		}
	}
	return n
}

// TestDomainsACME: certificates from a real ACME CA (pebble) for a
// deployed app: HTTPS through nginx, force-HTTPS with the challenge path
// still answered over HTTP, renewal of short certificates (ARI), a failing
// challenge (tls_last_error and a certificate.renewal_failed
// notification), no renewal after removal, a wildcard through DNS-01.
func TestDomainsACME(t *testing.T) {
	t.Parallel()
	n := startNginxEnv(t)
	a := startPebble(t, n, 45*time.Second)
	e := setupDeployWith(t, n.agentArgs(), "--acme-interval", "200ms", "--acme-retry", "2s", "--acme-directory", a.dir,
		"--acme-ca-file", a.caFile, "--acme-email", "ops@example.test", "--acme-dns-resolver", a.dnsAddr,
		"--acme-dns-skip-propagation-check")
	openToWorkers(t, filepath.Dir(e.base), e.base)
	url := e.repo.serveHTTP(t, gitUser, gitToken)
	if r := e.cli(t, gitToken+"\n", "git-credential", "add", "gitcred", "--https", "--username", gitUser, "--token-stdin"); r.code != 0 {
		t.Fatalf("git-credential add: %+v", r)
	}
	e.commitApp(t, "v1", map[string]string{"index.html": "shop v1\n"})
	e.createApp(t, "shop", url, "gitcred")
	if d, logs, code := e.deployFollow(t, "shop"); code != 0 || d.Status != "succeeded" {
		t.Fatalf("deploy: %d %+v\n%s", code, d, logs)
	}
	var app map[string]any
	e.mustJSON(t, &app, "app", "update", "shop", "--static-root", ".")

	// berth domain add -> a certificate from pebble -> HTTPS through nginx.
	var added domainView
	start := time.Now()
	e.mustJSON(t, &added, "domain", "add", "shop", "shop.example.test", "--hsts")
	d := e.waitDomain(t, "shop.example.test", "certificate", func(d domainView) bool { return d.TLSStatus == "active" || d.TLSStatus == "failed" })
	if d.TLSStatus != "active" || d.TLSExpiresAt == nil || d.TLSSerial == "" || !strings.Contains(d.TLSIssuer, "Pebble") || d.TLSNextAttempt == nil {
		t.Fatalf("issued: %+v", d)
	}
	waitFor(t, "HTTPS through nginx", time.Minute, func() bool {
		code, body, _ := n.do(t, "https", n.httpsPort, "shop.example.test", "/index.html", a.roots)
		return code == 200 && body == "shop v1\n"
	})
	firstHTTPS := time.Since(start)
	// tls_status turns active when the certificate is installed, before
	// the site job that serves it is queued; an HTTPS answer means that
	// job exists. Until the agent reports it applied, nginx's old workers
	// (plain HTTP, no redirect) may still answer.
	e.waitSiteApplied(t, "shop")
	benchOut(t, fmt.Sprintf(`## Domains: first HTTPS answer

From `+"`berth domain add`"+` to the first HTTPS answer through nginx with a certificate from pebble
(real HTTP-01 validation, no random VA sleeps; the loop polls every 200 ms here, 10 s by default):
CSR on the server, challenge presented and cleaned up by agent jobs, order finalised, certificate
installed, site re-applied.

| step | ms |
|---|---|
| berth domain add to the first HTTPS 200 | %d |
`, firstHTTPS.Milliseconds()))
	_, _, h := n.do(t, "https", n.httpsPort, "shop.example.test", "/index.html", a.roots)
	if !strings.Contains(h.Get("Strict-Transport-Security"), "max-age") {
		t.Fatalf("--hsts: no Strict-Transport-Security: %v", h)
	}
	// Force HTTPS: plain HTTP redirects, except the ACME challenge path.
	if code, _, h := n.get(t, "shop.example.test", "/index.html"); code != 301 || h.Get("Location") != fmt.Sprintf("https://shop.example.test:%d/index.html", n.httpsPort) {
		t.Fatalf("force https: %d %v", code, h)
	}
	if code, _, _ := n.get(t, "shop.example.test", "/.well-known/acme-challenge/not-there-0123456789"); code == 301 || code == 308 {
		t.Fatalf("the challenge path is redirected under force-https: %d", code)
	}

	// Renewal: 45-second certificates renew on their own (ARI window),
	// over HTTP-01 while force-HTTPS is on, and nginx serves the new one.
	first := d.TLSSerial
	d = e.waitDomain(t, "shop.example.test", "renewed", func(d domainView) bool { return d.TLSSerial != first && d.TLSStatus == "active" })
	waitFor(t, "nginx serving the renewed certificate", time.Minute, func() bool {
		return servedSerial(t, n, "shop.example.test", a.roots) == d.TLSSerial
	})

	// A failing challenge: pebble resolves this name to an address nginx
	// does not listen on. tls_last_error says why, and the admins' inbox
	// gets certificate.renewal_failed.
	a.challPost(t, "/add-a", map[string]any{"host": "broken.example.test", "addresses": []string{"127.0.0.2"}})
	e.mustJSON(t, &added, "domain", "add", "shop", "broken.example.test")
	bad := e.waitDomain(t, "broken.example.test", "failed", func(d domainView) bool { return d.TLSStatus == "failed" || d.TLSStatus == "active" })
	if bad.TLSStatus != "failed" || bad.TLSLastError == "" || bad.TLSNextAttempt == nil {
		t.Fatalf("failing challenge: %+v", bad)
	}
	waitFor(t, "certificate.renewal_failed in the inbox", time.Minute, func() bool {
		var inbox []map[string]any
		e.mustJSON(t, &inbox, "notifications")
		for _, m := range inbox {
			if m["kind"] == "certificate.renewal_failed" && strings.Contains(fmt.Sprint(m["title"]), "broken.example.test") {
				return true
			}
		}
		return false
	})
	// renew --follow reports the outcome and fails with it.
	if r := e.cli(t, "", "domain", "renew", "broken.example.test", "--follow"); r.code == 0 || !strings.Contains(r.stderr, "failed") {
		t.Fatalf("renew --follow of a failing domain: %+v", r)
	}
	// Removed: gone from nginx and never renewed again, while the loop
	// goes on renewing the others.
	if r := e.cli(t, "", "domain", "remove", "broken.example.test"); r.code != 0 {
		t.Fatalf("domain remove: %+v", r)
	}
	failures := e.activityCount(t, "domain.certificate_failed", "broken.example.test")
	issued := e.activityCount(t, "domain.certificate_issued", "shop.example.test")
	waitFor(t, "two more renewals of shop", 3*time.Minute, func() bool {
		return e.activityCount(t, "domain.certificate_issued", "shop.example.test") >= issued+2
	})
	if got := e.activityCount(t, "domain.certificate_failed", "broken.example.test"); got != failures {
		t.Fatalf("a removed domain was tried again: %d attempts after removal", got-failures)
	}

	// A wildcard through DNS-01: lego's httpreq provider -> challtestsrv.
	bridge := a.httpreqBridge(t)
	if r := e.cli(t, "HTTPREQ_ENDPOINT="+bridge+"\n", "domain", "dns-provider", "add", "testdns", "--provider", "httpreq"); r.code != 0 {
		t.Fatalf("dns-provider add: %+v", r)
	}
	var provs []map[string]any
	e.mustJSON(t, &provs, "domain", "dns-provider", "list")
	if len(provs) != 1 || strings.Contains(fmt.Sprint(provs), bridge) {
		t.Fatalf("dns-provider list shows a credential or is wrong: %v", provs)
	}
	e.mustJSON(t, &added, "domain", "add", "shop", "*.wild.example.test", "--dns-provider", "testdns")
	w := e.waitDomain(t, "*.wild.example.test", "certificate", func(d domainView) bool { return d.TLSStatus == "active" || d.TLSStatus == "failed" })
	if w.TLSStatus != "active" {
		t.Fatalf("wildcard: %+v", w)
	}
	waitFor(t, "HTTPS for a name under the wildcard", time.Minute, func() bool {
		code, body, _ := n.do(t, "https", n.httpsPort, "any.wild.example.test", "/index.html", a.roots)
		return code == 200 && body == "shop v1\n"
	})
}

// servedSerial is the serial (hex) of the certificate nginx serves for host.
func servedSerial(t *testing.T, n *nginxEnv, host string, roots *x509.CertPool) string {
	t.Helper()
	c, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(n.httpsPort), &tls.Config{ServerName: host, RootCAs: roots})
	if err != nil {
		return ""
	}
	defer c.Close()
	return fmt.Sprintf("%x", c.ConnectionState().PeerCertificates[0].SerialNumber.Bytes())
}

// TestDomainsACMEAccounts: the install's directory requires External
// Account Binding (as ZeroSSL does) and gets it from --acme-eab-kid and
// --acme-eab-hmac; a domain with its own --acme-directory is issued by
// that CA instead. Account keys are stored sealed, one per directory.
func TestDomainsACMEAccounts(t *testing.T) {
	t.Parallel()
	n := startNginxEnv(t)
	const kid, hmac = "kid-1", "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
	eabCA := startPebbleWith(t, n, time.Hour, map[string]string{kid: hmac}, nil)
	other := startPebbleWith(t, n, time.Hour, nil, eabCA)
	e := setupDeployWith(t, n.agentArgs(), "--acme-interval", "200ms", "--acme-retry", "2s", "--acme-directory", eabCA.dir,
		"--acme-ca-file", eabCA.caFile, "--acme-eab-kid", kid, "--acme-eab-hmac", hmac)
	openToWorkers(t, filepath.Dir(e.base), e.base)
	url := e.repo.serveHTTP(t, gitUser, gitToken)
	if r := e.cli(t, gitToken+"\n", "git-credential", "add", "gitcred", "--https", "--username", gitUser, "--token-stdin"); r.code != 0 {
		t.Fatalf("git-credential add: %+v", r)
	}
	e.commitApp(t, "v1", map[string]string{"index.html": "shop v1\n"})
	e.createApp(t, "shop", url, "gitcred")
	var app map[string]any
	e.mustJSON(t, &app, "app", "update", "shop", "--static-root", ".")
	var added domainView
	e.mustJSON(t, &added, "domain", "add", "shop", "eab.example.test")
	e.mustJSON(t, &added, "domain", "add", "shop", "other.example.test", "--acme-directory", other.dir)
	done := func(d domainView) bool { return d.TLSStatus == "active" || d.TLSStatus == "failed" }
	a := e.waitDomain(t, "eab.example.test", "certificate", done)
	b := e.waitDomain(t, "other.example.test", "certificate", done)
	if a.TLSStatus != "active" || b.TLSStatus != "active" {
		t.Fatalf("EAB directory: %+v\nper-domain directory: %+v", a, b)
	}
	// Each pebble has its own intermediate (a random name suffix).
	if a.TLSIssuer == b.TLSIssuer || !strings.Contains(a.TLSIssuer, "Pebble") || !strings.Contains(b.TLSIssuer, "Pebble") {
		t.Fatalf("issuers: %q and %q, want two different pebbles", a.TLSIssuer, b.TLSIssuer)
	}
	var shown map[string]any
	e.mustJSON(t, &shown, "domain", "show", "other.example.test")
	if shown["acme_directory"] != other.dir {
		t.Fatalf("per-domain directory: %v", shown["acme_directory"])
	}
	conn, err := pgx.Connect(context.Background(), e.dsn())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(context.Background(), `SELECT directory_url, private_key, registration_uri FROM acme_accounts ORDER BY directory_url`)
	if err != nil {
		t.Fatal(err)
	}
	accounts := 0
	for rows.Next() {
		var dir, reg string
		var key []byte
		if err := rows.Scan(&dir, &key, &reg); err != nil {
			t.Fatal(err)
		}
		accounts++
		if bytes.Contains(key, []byte("PRIVATE KEY")) || reg == "" {
			t.Errorf("account at %s: key in the clear or no registration", dir)
		}
	}
	rows.Close()
	if accounts != 2 {
		t.Fatalf("%d ACME accounts, want one per directory", accounts)
	}
	if strings.Contains(e.c.logs.String(), hmac) || strings.Contains(e.outputs.String(), hmac) {
		t.Fatal("the EAB HMAC reached a log or the CLI's output")
	}
}
