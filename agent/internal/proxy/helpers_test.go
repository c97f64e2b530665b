package proxy

import (
	"bufio"
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
	"net/http/httptest"
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

// env is a real nginx from the system's package, started by the test with
// its own prefix, configuration and loopback ports, and a Manager for it.
type env struct {
	t         testing.TB
	root      string
	cfg       Config
	m         *Manager
	httpPort  int
	httpsPort int
	errLog    string
}

func nginxBin(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"nginx", "/usr/sbin/nginx"} {
		if b, err := exec.LookPath(p); err == nil {
			return b
		}
	}
	t.Fatal("nginx not found: scripts/ensure-deps.sh installs it (Debian: apt-get install nginx)")
	return ""
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// newEnv makes the directories and the Manager, without starting nginx.
func newEnv(t testing.TB) *env {
	t.Helper()
	root := t.TempDir()
	// nginx's workers run as www-data when the test is root, as in
	// production: they must reach the challenge directory and static
	// roots, so the test's temporary directories are opened to them the
	// way /var/lib or /srv would be.
	for _, d := range []string{filepath.Dir(root), root} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e := &env{t: t, root: root, httpPort: freePort(t), httpsPort: freePort(t)}
	prefix := filepath.Join(root, "nginx")
	for _, d := range []string{prefix, filepath.Join(prefix, "tmp"), filepath.Join(root, "sites")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.errLog = filepath.Join(prefix, "error.log")
	userLine := ""
	if os.Geteuid() == 0 {
		u := "www-data"
		if _, err := user.Lookup(u); err != nil {
			u = "nobody nogroup"
		}
		userLine = "user " + u + ";"
	}
	conf := fmt.Sprintf(`%s
worker_processes 2;
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
`, userLine, prefix, filepath.Join(root, "sites"))
	confPath := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	e.cfg = Config{
		NginxBin:    nginxBin(t),
		NginxConf:   confPath,
		NginxPrefix: prefix,
		SitesDir:    filepath.Join(root, "sites"),
		StateDir:    filepath.Join(root, "state"),
		HTTPPort:    e.httpPort,
		HTTPSPort:   e.httpsPort,
		ListenAddr:  "127.0.0.1",
		ErrorLog:    e.errLog,
	}
	m, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.m = m
	return e
}

// startNginx is newEnv plus a running nginx, answering the Manager's
// status server.
func startNginx(t testing.TB) *env {
	t.Helper()
	e := newEnv(t)
	e.start()
	return e
}

func (e *env) start() {
	t := e.t
	t.Helper()
	cmd := exec.Command(e.cfg.NginxBin, "-p", e.cfg.NginxPrefix, "-c", e.cfg.NginxConf, "-e", e.errLog, "-g", "daemon off;")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM) // fast shutdown, workers too
		cmd.Wait()
	})
	// Wait until nginx answers the status server with the generation on
	// disk (polling a condition, bounded so a broken nginx fails the test).
	want := strconv.FormatUint(e.m.Generation(), 10)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		got, err := e.m.statusGeneration(ctx)
		if err == nil && got == want {
			return
		}
		if ctx.Err() != nil {
			log, _ := os.ReadFile(e.errLog)
			t.Fatalf("nginx did not start: %v %q\n%s", err, got, log)
		}
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// client sends requests to nginx's HTTP port whatever the URL's host, as
// a resolver pointing every name at this server would; redirects are
// returned, not followed.
func (e *env) client() *http.Client {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(e.httpPort))
	return &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", addr)
			},
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// tlsClient is client for the HTTPS port, trusting roots, HTTP/2 allowed.
func (e *env) tlsClient(roots *x509.CertPool) *http.Client {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(e.httpsPort))
	return &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", addr)
			},
			TLSClientConfig:   &tls.Config{RootCAs: roots},
			ForceAttemptHTTP2: true,
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

type answer struct {
	status int
	header http.Header
	body   string
	proto  string
}

func fetch(t testing.TB, c *http.Client, url string) answer {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, string(b), resp.Proto}
}

// echoed is what the backend saw.
type echoed struct {
	Name    string            `json:"name"`
	Host    string            `json:"host"`
	Path    string            `json:"path"`
	Headers map[string]string `json:"headers"`
}

// backend is a loopback HTTP app that reports the request it got and
// echoes WebSocket frames (bytes, after the 101) back.
func backend(t testing.TB, name string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(echoHandler(name))
	t.Cleanup(srv.Close)
	return srv
}

func echoHandler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			hj, ok := w.(http.Hijacker)
			if !ok {
				http.Error(w, "no hijack", 500)
				return
			}
			conn, rw, err := hj.Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Backend: %s\r\n\r\n", name)
			rw.Flush()
			buf := make([]byte, 1024)
			for {
				n, err := rw.Read(buf)
				if n > 0 {
					conn.Write(buf[:n])
				}
				if err != nil {
					return
				}
			}
		}
		h := map[string]string{}
		for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Real-Ip", "Connection", "Upgrade"} {
			h[k] = r.Header.Get(k)
		}
		json.NewEncoder(w).Encode(echoed{Name: name, Host: r.Host, Path: r.URL.RequestURI(), Headers: h})
	})
}

func decodeEcho(t testing.TB, a answer) echoed {
	t.Helper()
	if a.status != 200 {
		t.Fatalf("status %d, body %q", a.status, a.body)
	}
	var e echoed
	if err := json.Unmarshal([]byte(a.body), &e); err != nil {
		t.Fatalf("not the backend's answer: %q", a.body)
	}
	return e
}

func (e *env) apply(s Site) {
	e.t.Helper()
	if err := e.m.Apply(context.Background(), s); err != nil {
		e.t.Fatalf("Apply %s: %v", s.App, err)
	}
}

// testCA is a certificate authority made by the test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	pem  []byte
}

func newCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Berth Test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return &testCA{cert: c, key: key, pool: pool, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

var serial int64 = 100

// issue signs a leaf for pub naming hosts, valid until notAfter, and
// returns the chain PEM (leaf, then the CA).
func (ca *testCA) issue(t testing.TB, pub any, hosts []string, notAfter time.Time) []byte {
	t.Helper()
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: hosts[0]},
		DNSNames:     hosts,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), ca.pem...)
}

// signCSR issues a certificate for a CSR the Manager made, as an ACME CA
// would after validation.
func (ca *testCA) signCSR(t testing.TB, csrPEM []byte) []byte {
	t.Helper()
	blk, _ := pem.Decode(csrPEM)
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		t.Fatalf("not a PEM CSR: %q", csrPEM)
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatal(err)
	}
	return ca.issue(t, csr.PublicKey, csr.DNSNames, time.Now().Add(12*time.Hour))
}

// customPair writes a key and certificate for hosts to dir, as an admin
// would put a bought certificate on the server.
func (ca *testCA) customPair(t testing.TB, dir string, hosts []string) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	certPath, keyPath = filepath.Join(dir, hosts[0]+".crt"), filepath.Join(dir, hosts[0]+".key")
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certPath, ca.issue(t, key.Public(), hosts, time.Now().Add(12*time.Hour)), 0o644); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

// rawUpgrade sends a WebSocket upgrade to nginx on a raw connection and
// returns the status line and the connection, positioned after the
// response headers.
func (e *env) rawUpgrade(host string) (string, net.Conn, *bufio.Reader) {
	e.t.Helper()
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(e.httpPort)))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET /socket HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", host)
	br := bufio.NewReader(c)
	status, err := br.ReadString('\n')
	if err != nil {
		e.t.Fatal(err)
	}
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			e.t.Fatal(err)
		}
		if l == "\r\n" {
			break
		}
	}
	return strings.TrimSpace(status), c, br
}
