package main_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Plain HTTP only on loopback: anywhere else the controller wants a
// certificate, and refuses to start without one.
func TestWebUIRefusesPlainHTTPOffLoopback(t *testing.T) {
	_, port, _ := net.SplitHostPort(freeAddr(t))
	r := run(t, nil, "serve", "--data-dir", shortDir(t), "--http-addr", "0.0.0.0:"+port, "--grpc-addr", freeAddr(t))
	if r.code == 0 || !strings.Contains(r.stderr, "not a loopback address") || !strings.Contains(r.stderr, "--tls-cert") {
		t.Fatalf("plain HTTP on 0.0.0.0: %+v", r)
	}
	r = run(t, nil, "serve", "--data-dir", shortDir(t), "--tls-cert", "/nonexistent.pem", "--http-addr", freeAddr(t), "--grpc-addr", freeAddr(t))
	if r.code == 0 || !strings.Contains(r.stderr, "--tls-key") {
		t.Fatalf("cert without key: %+v", r)
	}
}

// Over TLS the UI sends HSTS and Secure, __Host- cookies.
func TestWebUIOverHTTPS(t *testing.T) {
	dir := shortDir(t)
	certFile, keyFile, pool := selfSigned(t, filepath.Join(dir, "tls"))
	httpAddr := freeAddr(t)
	cmd := exec.Command(berthBin, "serve", "--data-dir", dir, "--http-addr", httpAddr, "--grpc-addr", freeAddr(t),
		"--tls-cert", certFile, "--tls-key", keyFile)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("controller log:\n%s", logs.String())
		}
	})
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	base := "https://" + httpAddr
	waitFor(t, "controller over HTTPS", 90*time.Second, func() bool {
		resp, err := hc.Get(base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	if r := runIn(t, nil, "correct horse battery staple\n", "admin create", "admin", "create", "--email", "ops@example.com", "--password-stdin", "--data-dir", dir); r.code != 0 {
		t.Fatalf("admin create: %+v", r)
	}
	resp, err := hc.Get(base + "/login")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !strings.HasPrefix(resp.Header.Get("Strict-Transport-Security"), "max-age=") {
		t.Fatalf("no HSTS over TLS: %v", resp.Header)
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/login", strings.NewReader(url.Values{"email": {"ops@example.com"}, "password": {"correct horse battery staple"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var sess *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "__Host-berth_session" {
			sess = c
		}
	}
	if resp.StatusCode != http.StatusSeeOther || sess == nil || !sess.Secure || !sess.HttpOnly || sess.SameSite != http.SameSiteLaxMode {
		t.Fatalf("login over TLS: %d %v", resp.StatusCode, resp.Cookies())
	}
	// Plain HTTP to the TLS port gets nothing useful.
	if code, _ := get("http://" + httpAddr + "/login"); code == 200 {
		t.Fatal("plain HTTP answered on the TLS port")
	}
}

func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "berth test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(c)
	return certFile, keyFile, pool
}
