package main_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/berthhq/berth/controller/internal/ca"
	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
)

// envValue finds KEY in an environment list.
func envValue(env []string, key string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}

// domainClient dials the DomainService as the fleet's CLI does.
func (e *deployEnv) domainClient(t *testing.T) (adminv1.DomainServiceClient, context.Context) {
	t.Helper()
	pemBytes, err := os.ReadFile(envValue(e.env, "BERTH_CA_FILE"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	conn, err := grpc.NewClient(envValue(e.env, "BERTH_ADDR"), grpc.WithTransportCredentials(credentials.NewTLS(ca.ClientTLSConfig(pool, nil))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+envValue(e.env, "BERTH_TOKEN"))
	return adminv1.NewDomainServiceClient(conn), ctx
}

// startNamedEcho is startEcho that also names itself in its answers.
func startNamedEcho(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"name": name, "host": r.Host})
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// reloads counts the reloads nginx logged (each SIGHUP it received).
func (n *nginxEnv) reloads(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(n.errLog)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "(SIGHUP) received")
}

// benchOut appends a section to BERTH_BENCH_OUT when make bench set it.
func benchOut(t *testing.T, section string) {
	t.Helper()
	p := os.Getenv("BERTH_BENCH_OUT")
	t.Log(section)
	if p == "" {
		return
	}
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	title, rest, _ := strings.Cut(section, "\n")
	stamp := fmt.Sprintf("\nMeasured %s, %d cores, %s.\n", time.Now().UTC().Format("2006-01-02T15:04Z"), runtime.NumCPU(), runtime.Version())
	if _, err := f.WriteString("\n" + title + "\n" + stamp + rest); err != nil {
		t.Fatal(err)
	}
}

// TestDomainsManyOnOneServer: 500 domains of one app on one server are
// one site; changing the app's upstream applies to all of them with one
// nginx reload, not 500. The times (and nginx's own check and reload of
// the same configuration) go to BENCHMARKS.md under make bench.
func TestDomainsManyOnOneServer(t *testing.T) {
	t.Parallel()
	const hosts = 500
	e, n := setupDomains(t)
	upA, upB := startNamedEcho(t, "A"), startNamedEcho(t, "B")
	var app map[string]any
	e.mustJSON(t, &app, "app", "update", "shop", "--upstream", upA)
	c, ctx := e.domainClient(t)
	for i := range hosts {
		if _, err := c.AddDomain(ctx, &adminv1.AddDomainRequest{App: "shop", Hostname: fmt.Sprintf("h%03d.many.test", i), Tls: "off"}); err != nil {
			t.Fatalf("add %d: %v", i, err)
		}
	}
	waitFor(t, "all domains routed and no site job left", 5*time.Minute, func() bool {
		res, err := c.ListDomains(ctx, &adminv1.ListDomainsRequest{App: "shop"})
		if err != nil || len(res.GetDomains()) != hosts {
			return false
		}
		for _, d := range res.GetDomains() {
			if d.GetStatus() != "active" {
				return false
			}
		}
		var jobs []deployment
		e.mustJSON(t, &jobs, "deployments", "list", "shop")
		for _, j := range jobs {
			if j.Status == "queued" || j.Status == "dispatched" || j.Status == "running" {
				return false
			}
		}
		return true
	})
	answers := func(host, name string) bool {
		code, body, _ := n.get(t, host, "/")
		return code == 200 && strings.Contains(body, `"name":"`+name+`"`) && strings.Contains(body, host)
	}
	for _, h := range []string{"h000.many.test", "h499.many.test"} {
		if !answers(h, "A") {
			t.Fatalf("%s does not reach upstream A", h)
		}
	}

	before := n.reloads(t)
	start := time.Now()
	e.mustJSON(t, &app, "app", "update", "shop", "--upstream", upB)
	waitFor(t, "every host on upstream B", 2*time.Minute, func() bool {
		return answers("h000.many.test", "B") && answers("h250.many.test", "B") && answers("h499.many.test", "B")
	})
	applied := time.Since(start)
	if got := n.reloads(t) - before; got != 1 {
		t.Fatalf("a change to %d domains took %d nginx reloads, want 1", hosts, got)
	}

	// nginx's own work for the same configuration: the check, then a
	// reload until its new workers have started.
	t0 := time.Now()
	if out, err := exec.Command(nginxPath(t), "-t", "-q", "-p", n.prefix, "-c", n.conf, "-e", n.errLog).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v %s", err, out)
	}
	check := time.Since(t0)
	workers := func() int {
		b, _ := os.ReadFile(n.errLog)
		return strings.Count(string(b), "start worker process")
	}
	w0 := workers()
	t1 := time.Now()
	if out, err := exec.Command(nginxPath(t), "-s", "reload", "-p", n.prefix, "-c", n.conf, "-e", n.errLog).CombinedOutput(); err != nil {
		t.Fatalf("nginx -s reload: %v %s", err, out)
	}
	waitFor(t, "nginx's new workers", time.Minute, func() bool { return workers() > w0 })
	reload := time.Since(t1)
	benchOut(t, fmt.Sprintf(`## Domains: a change to %d domains on one server

`+"`berth app update shop --upstream URL`"+` for an app with %d domains, until nginx answers every
sampled host from the new upstream: one site job, one `+"`nginx -t`"+`, one reload. Beside it, nginx's
own `+"`nginx -t`"+` and `+"`nginx -s reload`"+` (until its new workers run) of the same configuration.

| step | ms |
|---|---|
| change applied through Berth (CLI to the new upstream answering) | %d |
| nginx -t alone | %d |
| nginx -s reload alone | %d |
| nginx reloads for the change | 1 |
`, hosts, hosts, applied.Milliseconds(), check.Milliseconds(), reload.Milliseconds()))
}
