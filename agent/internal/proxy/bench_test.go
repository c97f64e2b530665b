package proxy

import (
	"context"
	"strconv"
	"testing"
	"time"
)

// The issue's §5 figure: a change to 500 domains on one server is one
// nginx -t and one reload, compared with nginx's own check and reload of
// the same configuration in the same run. Every domain has TLS with a
// certificate installed, so nginx loads 500 TLS server blocks.
//
//	go test ./agent/internal/proxy -run '^$' -bench . -benchtime 5x

const benchDomains = 500

func benchEnv(b *testing.B) (*env, []Site) {
	e := startNginx(b)
	ca := newCA(b)
	hosts := make([]string, 0, benchDomains)
	for i := 0; i < benchDomains; i++ {
		hosts = append(hosts, "d"+strconv.Itoa(i)+".bench.test")
	}
	// One certificate per 100 names (a CA's limit), as the controller
	// would order them.
	var sites []Site
	for i := 0; i < benchDomains; i += 100 {
		name := "bench" + strconv.Itoa(i/100)
		csr, err := e.m.CSR(name, hosts[i:i+100])
		if err != nil {
			b.Fatal(err)
		}
		if _, err := e.m.InstallCertificate(name, ca.signCSR(b, csr)); err != nil {
			b.Fatal(err)
		}
		for _, h := range hosts[i : i+100] {
			sites = append(sites, Site{App: "app-" + h[:len(h)-len(".bench.test")], Upstream: "http://127.0.0.1:9", Domains: []Domain{
				{Host: h, TLS: TLSACME, CertName: name, ForceHTTPS: true},
			}})
		}
	}
	return e, sites
}

// BenchmarkApply500Sites: 500 apps of one domain each changed at once
// (ApplyAll: render, write, nginx -t, reload, wait for the old workers).
func BenchmarkApply500Sites(b *testing.B) {
	e, sites := benchEnv(b)
	ctx := context.Background()
	if err := e.m.ApplyAll(ctx, sites); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range sites {
			sites[j].Domains[0].HSTS = i%2 == 0 // a real change every round
		}
		if err := e.m.ApplyAll(ctx, sites); err != nil {
			b.Fatal(err)
		}
	}
	reportPerOp(b)
}

// BenchmarkApplyOneSite500Domains: one app with 500 domains, one Apply.
func BenchmarkApplyOneSite500Domains(b *testing.B) {
	e, sites := benchEnv(b)
	one := Site{App: "big", Upstream: "http://127.0.0.1:9"}
	for _, s := range sites {
		one.Domains = append(one.Domains, s.Domains[0])
	}
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		one.Domains[0].HSTS = i%2 == 0
		if err := e.m.Apply(ctx, one); err != nil {
			b.Fatal(err)
		}
	}
	reportPerOp(b)
}

// BenchmarkNginxReload500: nginx's own nginx -t and reload of the same 500
// TLS domains, with the same wait for the new configuration, nothing
// rendered or written.
func BenchmarkNginxReload500(b *testing.B) {
	e, sites := benchEnv(b)
	ctx := context.Background()
	if err := e.m.ApplyAll(ctx, sites); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := e.m.Reload(ctx); err != nil {
			b.Fatal(err)
		}
	}
	reportPerOp(b)
}

func reportPerOp(b *testing.B) {
	b.ReportMetric(float64(b.Elapsed())/float64(b.N)/float64(time.Millisecond), "ms/op")
}
