package main_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestDomainsACMERenewalWindowMoved: the CA (pebble) moves a certificate's
// ARI window earlier after issuance, through its management API (what a
// mass revocation does at a real CA). The controller asks for the window
// again on the CA's schedule (pebble's Retry-After of 6 hours, bounded here
// to 2 seconds by --acme-ari-poll-max), stores the new window and renews
// inside it, long before the 30-day certificate's own renewal time; nginx
// serves the new certificate.
func TestDomainsACMERenewalWindowMoved(t *testing.T) {
	t.Parallel()
	n := startNginxEnv(t)
	a := startPebble(t, n, 30*24*time.Hour)
	e := setupDeployWith(t, n.agentArgs(), "--acme-interval", "200ms", "--acme-retry", "2s", "--acme-directory", a.dir,
		"--acme-ca-file", a.caFile, "--acme-email", "ops@example.test", "--acme-ari-poll-min", "500ms", "--acme-ari-poll-max", "2s")
	openToWorkers(t, filepath.Dir(e.base), e.base)
	url := e.repo.serveHTTP(t, gitUser, gitToken)
	if r := e.cli(t, gitToken+"\n", "git-credential", "add", "gitcred", "--https", "--username", gitUser, "--token-stdin"); r.code != 0 {
		t.Fatalf("git-credential add: %+v", r)
	}
	e.commitApp(t, "v1", map[string]string{"index.html": "shop v1\n"})
	e.createApp(t, "shop", url, "gitcred")
	var app map[string]any
	e.mustJSON(t, &app, "app", "update", "shop", "--static-root", ".")
	const host = "ari.example.test"
	var added domainView
	e.mustJSON(t, &added, "domain", "add", "shop", host)
	d := e.waitDomain(t, host, "certificate", func(d domainView) bool { return d.TLSStatus == "active" || d.TLSStatus == "failed" })
	if d.TLSStatus != "active" || d.TLSNextAttempt == nil {
		t.Fatalf("issued: %+v", d)
	}
	// pebble's window for a 30-day certificate is two days around day 20.
	if d.TLSNextAttempt.Before(time.Now().Add(15 * 24 * time.Hour)) {
		t.Fatalf("first renewal at %s: want about 20 days out", d.TLSNextAttempt)
	}
	first := d.TLSSerial
	waitFor(t, "nginx serving the certificate", time.Minute, func() bool { return servedSerial(t, n, host, a.roots) == first })

	conn, err := pgx.Connect(context.Background(), e.dsn())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	window := func() (start, end, poll *time.Time, serial string) {
		if err := conn.QueryRow(context.Background(), `SELECT tls_ari_window_start, tls_ari_window_end, tls_ari_next_poll_at, coalesce(tls_serial, '')
			FROM domains WHERE hostname = $1`, host).Scan(&start, &end, &poll, &serial); err != nil {
			t.Fatal(err)
		}
		return
	}
	if s, _, p, _ := window(); s == nil || p == nil {
		t.Fatalf("ARI window or next poll not stored after issuance: %v %v", s, p)
	}

	// The CA moves the window: it opens in 30 seconds for a second.
	leaf := servedLeaf(t, n, host, a.roots)
	ws := time.Now().Add(30 * time.Second).UTC().Truncate(time.Second)
	we := ws.Add(time.Second)
	ari, _ := json.Marshal(map[string]any{"suggestedWindow": map[string]string{"start": ws.Format(time.RFC3339), "end": we.Format(time.RFC3339)}})
	body, _ := json.Marshal(map[string]string{"Certificate": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw})), "ARIResponse": string(ari)})
	pool := x509.NewCertPool()
	if ca, err := os.ReadFile(a.caFile); err != nil || !pool.AppendCertsFromPEM(ca) {
		t.Fatalf("pebble's CA: %v", err)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Post(a.mgmt+"/set-renewal-info/", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("pebble set-renewal-info: %s %s", resp.Status, msg)
	}
	// The next poll stores the moved window, for the same certificate.
	waitFor(t, "the moved window stored", time.Minute, func() bool {
		ws2, we2, _, serial := window()
		return serial == first && ws2 != nil && we2 != nil && ws2.Equal(ws) && we2.Equal(we)
	})
	// The renewal follows it, and nginx serves the new certificate.
	d = e.waitDomain(t, host, "renewed in the moved window", func(d domainView) bool { return d.TLSSerial != first && d.TLSStatus == "active" })
	if d.TLSExpiresAt == nil || d.TLSExpiresAt.Before(time.Now().Add(29*24*time.Hour)) {
		t.Fatalf("renewed: %+v", d)
	}
	waitFor(t, "nginx serving the renewed certificate", time.Minute, func() bool { return servedSerial(t, n, host, a.roots) == d.TLSSerial })
	// The new certificate has pebble's normal window and is polled again.
	s, _, p, _ := window()
	if s == nil || s.Before(time.Now().Add(15*24*time.Hour)) || p == nil {
		t.Fatalf("the new certificate's window %v and poll %v", s, p)
	}
	if n := e.activityCount(t, "domain.certificate_issued", host); n != 2 {
		t.Fatalf("certificates issued for %s: %d, want 2", host, n)
	}

	// Deleting the app removes its certificate's key (0600, made by the
	// agent for its CSRs), the chain and the ownership records with its
	// site; no challenge answer is left either.
	key := filepath.Join(n.state, "keys", host+".key")
	if _, err := os.Stat(key); err != nil {
		t.Fatalf("the key before the delete: %v", err)
	}
	if r := e.cli(t, "", "app", "delete", "shop", "--keep-files"); r.code != 0 {
		t.Fatalf("app delete: %+v", r)
	}
	waitFor(t, "the deleted app's key and chain to go", time.Minute, func() bool {
		_, kerr := os.Stat(key)
		_, cerr := os.Stat(filepath.Join(n.state, "certs", host+".pem"))
		owners, oerr := os.ReadDir(filepath.Join(n.state, "owners", "certs"))
		return os.IsNotExist(kerr) && os.IsNotExist(cerr) && oerr == nil && len(owners) == 0
	})
	for _, dir := range []string{n.challenges, filepath.Join(n.state, "owners", "challenges")} {
		if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
			t.Fatalf("%s after the app's delete: %v %v", dir, ents, err)
		}
	}
}

// servedLeaf is the leaf certificate nginx serves for host.
func servedLeaf(t *testing.T, n *nginxEnv, host string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	c, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(n.httpsPort), &tls.Config{ServerName: host, RootCAs: roots})
	if err != nil {
		t.Fatal(fmt.Errorf("TLS to nginx for %s: %w", host, err))
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}
