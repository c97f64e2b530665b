package main_test

import (
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
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nginxEnv is a private nginx for one test: its own prefix, configuration,
// sites directory and loopback ports, started by the test. The agent
// manages its sites exactly as it would the server's.
type nginxEnv struct {
	root, prefix, conf, sites, state, challenges, errLog string
	httpPort, httpsPort                                  int
	cmd                                                  *exec.Cmd
}

func nginxPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"nginx", "/usr/sbin/nginx"} {
		if b, err := exec.LookPath(p); err == nil {
			return b
		}
	}
	t.Fatal("nginx not found: scripts/ensure-deps.sh installs it (Debian: apt-get install nginx)")
	return ""
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// openToWorkers makes dirs traversable by nginx's workers (www-data when
// the test runs as root), as /srv or /var/lib would be on a server.
func openToWorkers(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func startNginxEnv(t *testing.T) *nginxEnv {
	t.Helper()
	root := t.TempDir()
	openToWorkers(t, filepath.Dir(root), root)
	n := &nginxEnv{root: root, prefix: filepath.Join(root, "nginx"), sites: filepath.Join(root, "sites"), state: filepath.Join(root, "state"),
		challenges: filepath.Join(root, "challenges"), httpPort: freePort(t), httpsPort: freePort(t)}
	for _, d := range []string{n.prefix, filepath.Join(n.prefix, "tmp"), n.sites} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	n.errLog = filepath.Join(n.prefix, "error.log")
	userLine := ""
	if os.Geteuid() == 0 {
		u := "www-data"
		if _, err := user.Lookup(u); err != nil {
			u = "nobody nogroup"
		}
		userLine = "user " + u + ";"
	}
	conf := fmt.Sprintf(`%s
worker_processes 1;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log info;
events { worker_connections 256; }
http {
    access_log %[2]s/access.log;
    client_body_temp_path %[2]s/tmp/body;
    proxy_temp_path %[2]s/tmp/proxy;
    fastcgi_temp_path %[2]s/tmp/fastcgi;
    uwsgi_temp_path %[2]s/tmp/uwsgi;
    scgi_temp_path %[2]s/tmp/scgi;
    include /etc/nginx/mime.types;
    include %[3]s/*.conf;
}
`, userLine, n.prefix, n.sites)
	n.conf = filepath.Join(n.prefix, "nginx.conf")
	if err := os.WriteFile(n.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	n.cmd = exec.Command(nginxPath(t), "-p", n.prefix, "-c", n.conf, "-e", n.errLog, "-g", "daemon off;")
	n.cmd.Stdout, n.cmd.Stderr = os.Stderr, os.Stderr
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
		_ = n.cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(n.errLog)
			t.Logf("nginx error log:\n%s", b)
		}
	})
	// nginx listens on nothing of ours before the agent's first site (its
	// _berth.conf brings the status server the agent waits on); it is up
	// once the master wrote its pid file, which `nginx -s reload` needs.
	waitFor(t, "nginx up", 30*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(n.prefix, "nginx.pid"))
		return err == nil
	})
	return n
}

// agentArgs are the `berth-agent run` flags that hand this nginx to the
// agent.
func (n *nginxEnv) agentArgs() []string {
	return []string{"--nginx", "on", "--nginx-bin", nginxPathOrEmpty(), "--nginx-conf", n.conf, "--nginx-prefix", n.prefix,
		"--nginx-sites-dir", n.sites, "--proxy-state-dir", n.state, "--acme-challenge-dir", n.challenges,
		"--http-port", strconv.Itoa(n.httpPort), "--https-port", strconv.Itoa(n.httpsPort), "--proxy-listen", "127.0.0.1",
		"--nginx-error-log", n.errLog}
}

func nginxPathOrEmpty() string {
	for _, p := range []string{"nginx", "/usr/sbin/nginx"} {
		if b, err := exec.LookPath(p); err == nil {
			return b
		}
	}
	return "nginx"
}

// get asks nginx's HTTP port for host+path (whatever the name resolves
// to), without following redirects.
func (n *nginxEnv) get(t *testing.T, host, path string) (int, string, http.Header) {
	t.Helper()
	return n.do(t, "http", n.httpPort, host, path, nil)
}

func (n *nginxEnv) do(t *testing.T, scheme string, port int, host, path string, roots *x509.CertPool) (int, string, http.Header) {
	t.Helper()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		TLSClientConfig:   &tls.Config{RootCAs: roots, ServerName: host},
		DisableKeepAlives: true,
	}
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(scheme + "://" + host + path)
	if err != nil {
		return 0, err.Error(), nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), resp.Header
}

// domainJSON is `berth domain show -o json`.
type domainView struct {
	Hostname       string     `json:"hostname"`
	App            string     `json:"app"`
	Primary        bool       `json:"primary"`
	RedirectTo     string     `json:"redirect_to"`
	RedirectStatus int        `json:"redirect_status"`
	Status         string     `json:"status"`
	LastError      string     `json:"last_error"`
	TLSMode        string     `json:"tls_mode"`
	TLSStatus      string     `json:"tls_status"`
	TLSIssuer      string     `json:"tls_issuer"`
	TLSSerial      string     `json:"tls_serial"`
	TLSExpiresAt   *time.Time `json:"tls_expires_at"`
	TLSNextAttempt *time.Time `json:"tls_next_attempt_at"`
	TLSLastError   string     `json:"tls_last_error"`
}

func (e *deployEnv) domain(t *testing.T, host string) domainView {
	t.Helper()
	var d domainView
	e.mustJSON(t, &d, "domain", "show", host)
	return d
}

func (e *deployEnv) waitDomain(t *testing.T, host, what string, ok func(domainView) bool) domainView {
	t.Helper()
	var d domainView
	waitFor(t, host+" "+what, 3*time.Minute, func() bool {
		d = e.domain(t, host)
		return ok(d)
	})
	return d
}

// waitSiteApplied waits until every site job of app has ended: the agent
// reports a site applied only once nginx's old workers have stopped
// accepting connections. Before that, during a reload, one request may be
// answered by a new worker and the next by an old one, so a single answer
// from the new configuration does not mean the old one is gone. The
// caller makes sure the job it waits for is queued (a change whose RPC
// queues it, or an answer that only the new site gives).
func (e *deployEnv) waitSiteApplied(t *testing.T, app string) {
	t.Helper()
	waitFor(t, app+"'s site applied", 3*time.Minute, func() bool {
		var jobs []struct {
			Kind   string `json:"kind"`
			Status string `json:"status"`
		}
		e.mustJSON(t, &jobs, "deployments", "list", app)
		for _, j := range jobs {
			if j.Kind == "site" && (j.Status == "queued" || j.Status == "dispatched" || j.Status == "running") {
				return false
			}
		}
		return true
	})
}

// cliFails runs a command that must fail with one error line holding want.
func (e *deployEnv) cliFails(t *testing.T, want string, args ...string) {
	t.Helper()
	r := e.cli(t, "", args...)
	if r.code == 0 || !strings.Contains(r.stderr, want) {
		t.Errorf("%v: %+v, want an error with %q", args, r, want)
	}
}

// setupDomains is a controller, an agent managing a private nginx, and
// app shop deployed from git (its release is what the domains serve).
func setupDomains(t *testing.T, serveExtra ...string) (*deployEnv, *nginxEnv) {
	t.Helper()
	n := startNginxEnv(t)
	e := setupDeployWith(t, n.agentArgs(), append([]string{"--acme-interval", "200ms", "--acme-retry", "1s"}, serveExtra...)...)
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
	return e, n
}

// TestDomainsPlainHTTP: a domain on a deployed app, served by a real
// nginx the agent configures; redirects, normalisation, refusals, a broken
// custom certificate that leaves the live site alone, removal.
func TestDomainsPlainHTTP(t *testing.T) {
	t.Parallel()
	e, n := setupDomains(t)

	// The app's release is served as static files from current.
	var app map[string]any
	e.mustJSON(t, &app, "app", "update", "shop", "--static-root", ".")
	if app["static_root"] != "." {
		t.Fatalf("app update --static-root: %v", app)
	}
	// Upper case and a trailing dot are normalised.
	var added domainView
	e.mustJSON(t, &added, "domain", "add", "shop", "Shop.Example.TEST.", "--tls", "off")
	if added.Hostname != "shop.example.test" || !added.Primary || added.TLSStatus != "disabled" {
		t.Fatalf("domain add: %+v", added)
	}
	d := e.waitDomain(t, "shop.example.test", "active", func(d domainView) bool { return d.Status == "active" || d.Status == "failed" })
	if d.Status != "active" {
		t.Fatalf("routing: %+v", d)
	}
	if code, body, _ := n.get(t, "shop.example.test", "/index.html"); code != 200 || body != "shop v1\n" {
		t.Fatalf("GET shop.example.test: %d %q", code, body)
	}
	// A redirect-only host: www -> apex, path and query kept.
	e.mustJSON(t, &added, "domain", "add", "shop", "www.example.test", "--redirect-to", "shop.example.test", "--redirect-status", "308", "--tls", "off")
	e.waitDomain(t, "www.example.test", "active", func(d domainView) bool { return d.Status == "active" })
	if code, _, h := n.get(t, "www.example.test", "/a/b?c=1"); code != 308 || h.Get("Location") != "http://shop.example.test/a/b?c=1" {
		t.Fatalf("www redirect: %d %v", code, h)
	}
	// An upstream instead: the proxy headers reach it.
	up := startEcho(t)
	// The update queues the site job before it answers; once the agent
	// reported it applied, every answer comes from the new site.
	e.mustJSON(t, &app, "app", "update", "shop", "--upstream", up, "--static-root", "")
	e.waitSiteApplied(t, "shop")
	code, body, _ := n.get(t, "shop.example.test", "/hello")
	var echo map[string]string
	if err := json.Unmarshal([]byte(body), &echo); code != 200 || err != nil || echo["host"] != "shop.example.test" || echo["proto"] != "http" || echo["xff"] == "" {
		t.Fatalf("the upstream through nginx: %d %q", code, body)
	}

	// Refusals: one clear error each, nothing stored.
	e.createApp(t, "blog", e.repo.serveHTTP(t, gitUser, gitToken), "gitcred")
	e.cliFails(t, "already routed to app shop", "domain", "add", "blog", "SHOP.example.test")
	e.cliFails(t, "not a valid host name", "domain", "add", "blog", "bad_host!.example.test", "--tls", "off")
	e.cliFails(t, "IP address", "domain", "add", "blog", "127.0.0.1", "--tls", "off")
	e.cliFails(t, "fully qualified", "domain", "add", "blog", "localhost", "--tls", "off")
	e.cliFails(t, "wildcard", "domain", "add", "blog", "a.*.example.test", "--tls", "off")
	e.cliFails(t, "DNS-01", "domain", "add", "blog", "*.blog.test")
	e.cliFails(t, "redirect loop", "domain", "add", "blog", "self.example.test", "--redirect-to", "https://self.example.test/x", "--tls", "off")
	e.mustJSON(t, &added, "domain", "add", "blog", "a.example.test", "--redirect-to", "b.example.test", "--tls", "off")
	e.cliFails(t, "redirect loop", "domain", "add", "blog", "b.example.test", "--redirect-to", "a.example.test", "--tls", "off")
	e.cliFails(t, "redirect-status", "domain", "add", "blog", "c.example.test", "--redirect-to", "shop.example.test", "--redirect-status", "200", "--tls", "off")
	e.cliFails(t, "--cert-path", "domain", "add", "blog", "c.example.test", "--tls", "custom", "--cert-path", "relative.pem", "--key-path", "/k.pem")
	var list []domainView
	e.mustJSON(t, &list, "domain", "list", "--app", "blog")
	if len(list) != 1 || list[0].Hostname != "a.example.test" {
		t.Fatalf("blog's domains after the refusals: %+v", list)
	}
	// Unauthorised: a read token may look, not add.
	var tok struct {
		Token string `json:"token"`
	}
	e.mustJSON(t, &tok, "token", "issue", "reader", "--scope", "read")
	readEnv := append(append([]string{}, e.env...), "BERTH_TOKEN="+tok.Token)
	if r := runIn(t, readEnv, "", "domain add as reader", "domain", "add", "blog", "r.example.test", "--tls", "off"); r.code == 0 || !strings.Contains(r.stderr, "PermissionDenied") {
		t.Fatalf("domain add with a read token: %+v", r)
	}
	if r := runIn(t, readEnv, "", "domain list as reader", "domain", "list", "-o", "json"); r.code != 0 {
		t.Fatalf("domain list with a read token: %+v", r)
	}
	if r := runIn(t, append(append([]string{}, e.env...), "BERTH_TOKEN=berth_nope"), "", "no token", "domain", "list"); r.code == 0 || !strings.Contains(r.stderr, "Unauthenticated") {
		t.Fatalf("domain list with a bad token: %+v", r)
	}

	// A custom certificate already on the server: served, and its issuer
	// and expiry read by the agent.
	caPEM, certPath, keyPath := customPair(t, n.root, "custom.example.test")
	e.mustJSON(t, &added, "domain", "add", "shop", "custom.example.test", "--tls", "custom", "--cert-path", certPath, "--key-path", keyPath)
	cd := e.waitDomain(t, "custom.example.test", "active", func(d domainView) bool { return d.Status != "pending" && d.TLSStatus != "pending" })
	if cd.Status != "active" || cd.TLSStatus != "active" || !strings.Contains(cd.TLSIssuer, "berth test custom CA") || cd.TLSExpiresAt == nil ||
		cd.TLSExpiresAt.Before(time.Now().Add(20*time.Hour)) {
		t.Fatalf("custom certificate: %+v", cd)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	waitFor(t, "HTTPS with the custom certificate", time.Minute, func() bool {
		code, body, _ := n.do(t, "https", n.httpsPort, "custom.example.test", "/hello", roots)
		return code == 200 && strings.Contains(body, "custom.example.test") && strings.Contains(body, `"proto":"https"`)
	})

	// The write scope may name custom files inside the app's directory
	// only: outside it needs the admin scope (nginx's root master would
	// read any file). Inside, the agent reads them through the directory
	// and a link out of it is refused.
	var wtok struct {
		Token string `json:"token"`
	}
	e.mustJSON(t, &wtok, "token", "issue", "writer", "--scope", "write")
	writeEnv := append(append([]string{}, e.env...), "BERTH_TOKEN="+wtok.Token)
	_, outCert, outKey := customPair(t, n.root, "out.example.test")
	if r := runIn(t, writeEnv, "", "custom files outside as writer", "domain", "add", "shop", "out.example.test", "--tls", "custom",
		"--cert-path", outCert, "--key-path", outKey); r.code == 0 || !strings.Contains(r.stderr, "PermissionDenied") || !strings.Contains(r.stderr, "admin scope") {
		t.Fatalf("custom files outside the app's directory with a write token: %+v", r)
	}
	e.cliFails(t, "no domain", "domain", "show", "out.example.test")
	appTLS := filepath.Join(e.base, "shop", "shared", "tls")
	if err := os.MkdirAll(appTLS, 0o755); err != nil {
		t.Fatal(err)
	}
	inCA, inCert, inKey := customPair(t, appTLS, "in.example.test")
	if r := runIn(t, writeEnv, "", "custom files inside as writer", "domain", "add", "shop", "in.example.test", "--tls", "custom",
		"--cert-path", inCert, "--key-path", inKey); r.code != 0 {
		t.Fatalf("custom files inside the app's directory with a write token: %+v", r)
	}
	in := e.waitDomain(t, "in.example.test", "active", func(d domainView) bool { return d.Status != "pending" && d.TLSStatus != "pending" })
	if in.Status != "active" || in.TLSStatus != "active" {
		t.Fatalf("confined custom certificate: %+v", in)
	}
	inRoots := x509.NewCertPool()
	inRoots.AppendCertsFromPEM(inCA)
	waitFor(t, "HTTPS with the confined custom certificate", time.Minute, func() bool {
		code, body, _ := n.do(t, "https", n.httpsPort, "in.example.test", "/hello", inRoots)
		return code == 200 && strings.Contains(body, "in.example.test")
	})
	// Renewed on the server by another tool (new files, new CA, new
	// serial at the same paths): the next read sees it, and nginx serves
	// it (the agent copies the confined files again and reloads).
	newCA, _, _ := customPairSerial(t, appTLS, "in.example.test", 12)
	if r := runIn(t, writeEnv, "", "re-read the custom certificate", "domain", "renew", "in.example.test", "--follow"); r.code != 0 {
		t.Fatalf("domain renew of a custom certificate: %+v", r)
	}
	newRoots := x509.NewCertPool()
	newRoots.AppendCertsFromPEM(newCA)
	waitFor(t, "HTTPS with the renewed custom certificate", time.Minute, func() bool {
		code, body, _ := n.do(t, "https", n.httpsPort, "in.example.test", "/hello", newRoots)
		return code == 200 && strings.Contains(body, "in.example.test")
	})
	inRoots = newRoots
	evil := filepath.Join(appTLS, "evil.key")
	if err := os.Symlink(keyPath, evil); err != nil {
		t.Fatal(err)
	}
	if r := runIn(t, writeEnv, "", "a link out as writer", "domain", "add", "shop", "evil.example.test", "--tls", "custom",
		"--cert-path", inCert, "--key-path", evil); r.code != 0 {
		t.Fatalf("domain add with a link: %+v", r)
	}
	ev := e.waitDomain(t, "evil.example.test", "refused by the agent", func(d domainView) bool { return d.Status == "failed" || d.Status == "active" })
	if ev.Status != "failed" || !strings.Contains(ev.LastError, "must stay inside it") || strings.Contains(ev.LastError, keyPath) {
		t.Fatalf("a link out of the app's directory: %+v", ev)
	}
	if code, body, _ := n.do(t, "https", n.httpsPort, "in.example.test", "/hello", inRoots); code != 200 || !strings.Contains(body, "in.example.test") {
		t.Fatalf("the live site after the refused link: %d %q", code, body)
	}
	if r := runIn(t, writeEnv, "", "remove as writer", "domain", "remove", "evil.example.test"); r.code != 0 {
		t.Fatalf("domain remove: %+v", r)
	}

	// A custom certificate whose files are not there: nginx -t fails, the
	// domain says why, and the live site keeps serving.
	e.mustJSON(t, &added, "domain", "add", "shop", "secure.example.test", "--tls", "custom",
		"--cert-path", filepath.Join(n.root, "missing.pem"), "--key-path", filepath.Join(n.root, "missing.key"))
	bad := e.waitDomain(t, "secure.example.test", "failed", func(d domainView) bool { return d.Status == "failed" || d.Status == "active" })
	if bad.Status != "failed" || !strings.Contains(bad.LastError, "missing.pem") {
		t.Fatalf("broken custom certificate: %+v", bad)
	}
	if code, body, _ := n.get(t, "shop.example.test", "/hello"); code != 200 || !strings.Contains(body, "shop.example.test") {
		t.Fatalf("the live site after a failed check: %d %q", code, body)
	}
	if code, _, _ := n.get(t, "secure.example.test", "/"); code == 200 {
		t.Fatalf("the broken host is served")
	}
	var shown map[string]any
	e.mustJSON(t, &shown, "domain", "show", "secure.example.test")
	if shown["tls_status"] != "failed" || !strings.Contains(fmt.Sprint(shown["tls_last_error"]), "missing.pem") {
		t.Fatalf("custom certificate's status: %v", shown)
	}

	// Removal: the broken host goes, and the site is applied again.
	if r := e.cli(t, "", "domain", "remove", "secure.example.test"); r.code != 0 {
		t.Fatalf("domain remove: %+v", r)
	}
	e.waitDomain(t, "shop.example.test", "active again", func(d domainView) bool { return d.Status == "active" })
	if r := e.cli(t, "", "domain", "remove", "www.example.test"); r.code != 0 {
		t.Fatalf("domain remove www: %+v", r)
	}
	waitFor(t, "www to leave nginx", time.Minute, func() bool {
		code, _, _ := n.get(t, "www.example.test", "/")
		return code != 308
	})
	e.cliFails(t, "no domain", "domain", "show", "www.example.test")

	// Deleting the app removes its site from nginx.
	if r := e.cli(t, "", "app", "delete", "shop", "--keep-files"); r.code != 0 {
		t.Fatalf("app delete: %+v", r)
	}
	waitFor(t, "shop's site to leave nginx", time.Minute, func() bool {
		_, err := os.Stat(filepath.Join(n.sites, "shop.conf"))
		return os.IsNotExist(err)
	})
	// With it, the agent's copies of its confined custom files (removed
	// once nginx runs without them).
	waitFor(t, "the copies of shop's custom files to go", time.Minute, func() bool {
		ents, err := os.ReadDir(filepath.Join(n.state, "custom"))
		return err == nil && len(ents) == 0
	})
	e.cliFails(t, "no domain", "domain", "show", "shop.example.test")
}

// startEcho is an upstream that answers with what nginx forwarded.
func startEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"host": r.Host, "path": r.URL.Path, "proto": r.Header.Get("X-Forwarded-Proto"), "xff": r.Header.Get("X-Forwarded-For"),
		})
	}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// customPair writes a CA-signed certificate and key for host under dir,
// as an operator would place them on the server, and returns the CA.
func customPair(t *testing.T, dir, host string) (caPEM []byte, certPath, keyPath string) {
	t.Helper()
	return customPairSerial(t, dir, host, 11)
}

// customPairSerial is customPair with the leaf's serial number: a renewed
// certificate has a new one.
func customPairSerial(t *testing.T, dir, host string, serial int64) (caPEM []byte, certPath, keyPath string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(10), Subject: pkix.Name{CommonName: "berth test custom CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
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
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), certPath, keyPath
}
