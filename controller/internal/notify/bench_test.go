package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	bmail "github.com/berthhq/berth/controller/internal/mail"
	"github.com/berthhq/berth/controller/internal/migrate"
	"github.com/berthhq/berth/controller/internal/pgembed"
	"github.com/berthhq/berth/controller/internal/secrets"
	"github.com/berthhq/berth/controller/internal/store"
)

// benchReceiver is a loopback webhook receiver that verifies every request
// with the Standard Webhooks library, as a real one would, and stamps when
// each message (by its title, "<phase> #<n>") arrived.
type benchReceiver struct {
	*httptest.Server
	mu    sync.Mutex
	got   map[string]time.Time
	ids   map[string]int
	bad   int
	count chan struct{}
}

func newBenchReceiver(b *testing.B, secret string) *benchReceiver {
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		b.Fatal(err)
	}
	r := &benchReceiver{got: map[string]time.Time{}, ids: map[string]int{}, count: make(chan struct{}, 1<<16)}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
		now := time.Now()
		if err := wh.Verify(body, req.Header); err != nil {
			r.mu.Lock()
			r.bad++
			r.mu.Unlock()
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		var p WebhookPayload
		_ = json.Unmarshal(body, &p)
		r.mu.Lock()
		r.ids[req.Header.Get("webhook-id")]++
		first := false
		if _, ok := r.got[p.Data.Title]; !ok {
			r.got[p.Data.Title] = now
			first = true
		}
		r.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
		if first {
			r.count <- struct{}{}
		}
	}))
	b.Cleanup(r.Close)
	return r
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkOutbox measures delivery through the outbox to a loopback
// webhook receiver, against a PostgreSQL cluster with the durable settings
// the controller's embedded one has (fsync and synchronous commit on, not
// the tests' fast mode), migrated like a controller's. One Service as in
// a controller (default workers and lease, woken by LISTEN/NOTIFY); each
// event published in a transaction of its own.
//
//   - burst: BENCH_NOTIFY_BURST events (default 3000) published from 4
//     goroutines (published/s) while no delivery runs, then delivery
//     starts: throughput is deliveries/s from its start to the last
//     receipt.
//   - steady: BENCH_NOTIFY_RATE events a second (default 50) for
//     BENCH_NOTIFY_SECONDS (default 20): latency from publish to receipt
//     below saturation.
//
// Run by scripts/notify-bench.sh (make bench) with -benchtime 1x.
func BenchmarkOutbox(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "berthnb-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // the postgres user runs the cluster when we are root
		b.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cluster, err := pgembed.Start(ctx, pgembed.Config{Dir: dir + "/pg", Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cluster.Stop(context.Background()) })
	if _, err := migrate.UpDSN(ctx, cluster.DSN(), quiet); err != nil {
		b.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, cluster.DSN())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	kr, err := secrets.Generate()
	if err != nil {
		b.Fatal(err)
	}
	st := store.New(pool, secrets.NewSource(kr, ""))
	s, err := New(Config{Store: st, Mailer: bmail.Log{Logger: quiet}, Logger: quiet, AllowPrivateTargets: true, PublicURL: "https://berth.example.test", Workers: envInt("BENCH_NOTIFY_WORKERS", 0)})
	if err != nil {
		b.Fatal(err)
	}
	rcv := newBenchReceiver(b, testSecret)
	var runDone chan struct{}
	run := func() {
		runDone = make(chan struct{})
		go func() { s.Run(ctx); close(runDone) }()
	}
	defer func() { cancel(); <-runDone }()

	// The backlog is published first with no delivery running, then
	// delivery starts: the drain rate is the outbox's own throughput,
	// not the publishers'.
	b.Run("burst", func(b *testing.B) {
		n := envInt("BENCH_NOTIFY_BURST", 3000)
		phase := benchPhase(b, s, rcv, "burst")
		pubStart := time.Now()
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Go(func() {
				for i := g; i < n; i += 4 {
					phase.publish(b, i)
				}
			})
		}
		wg.Wait()
		b.ReportMetric(float64(n)/time.Since(pubStart).Seconds(), "published/s")
		start := time.Now()
		run()
		phase.wait(b, n)
		phase.report(b, start, n, false)
	})
	b.Run("steady", func(b *testing.B) {
		rate, secs := envInt("BENCH_NOTIFY_RATE", 50), envInt("BENCH_NOTIFY_SECONDS", 20)
		n := rate * secs
		phase := benchPhase(b, s, rcv, "steady")
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		start := time.Now()
		for i := range n {
			<-tick.C
			phase.publish(b, i)
		}
		// Below the target when a publish outlasts the tick (the
		// ticker drops ticks): the rate the latency was measured at.
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "published/s")
		phase.wait(b, n)
		phase.report(b, start, n, true)
	})
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	for id, c := range rcv.ids {
		if c != 1 {
			b.Fatalf("webhook-id %s received %d times", id, c)
		}
	}
	if rcv.bad != 0 {
		b.Fatalf("%d requests failed verification", rcv.bad)
	}
}

type phase struct {
	s     *Service
	rcv   *benchReceiver
	name  string
	mu    sync.Mutex
	start map[int]time.Time
}

// benchPhase adds a webhook channel and a rule for the phase's event kind.
func benchPhase(b *testing.B, s *Service, rcv *benchReceiver, name string) *phase {
	ctx := context.Background()
	if _, _, err := s.AddChannel(ctx, ChannelSpec{Name: name, Kind: KindWebhook, URL: rcv.URL, Secret: testSecret, RateLimitPerHour: 10000}); err != nil {
		b.Fatal(err)
	}
	if _, err := s.AddRule(ctx, RuleSpec{Events: []string{"bench." + name}, Channel: name}); err != nil {
		b.Fatal(err)
	}
	// Drain the receipt counter of earlier phases.
	for len(rcv.count) > 0 {
		<-rcv.count
	}
	return &phase{s: s, rcv: rcv, name: name, start: map[int]time.Time{}}
}

func (p *phase) publish(b *testing.B, i int) {
	t0 := time.Now()
	p.mu.Lock()
	p.start[i] = t0
	p.mu.Unlock()
	if _, err := p.s.Publish(context.Background(), Event{Kind: "bench." + p.name, Level: Warning, Title: fmt.Sprintf("%s #%d", p.name, i), Body: "benchmark"}); err != nil {
		b.Error(err)
	}
}

func (p *phase) wait(b *testing.B, n int) {
	timeout := time.After(5 * time.Minute)
	for range n {
		select {
		case <-p.rcv.count:
		case <-timeout:
			b.Fatalf("%s: not every message arrived", p.name)
		}
	}
}

// report: deliveries/s from start to the last receipt and, with latency,
// the percentiles from each publish to its receipt.
func (p *phase) report(b *testing.B, start time.Time, n int, latency bool) {
	p.rcv.mu.Lock()
	defer p.rcv.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	lat := make([]float64, 0, n)
	last := start
	for i := range n {
		at, ok := p.rcv.got[fmt.Sprintf("%s #%d", p.name, i)]
		if !ok {
			b.Fatalf("%s #%d never arrived", p.name, i)
		}
		lat = append(lat, float64(at.Sub(p.start[i]))/float64(time.Millisecond))
		if at.After(last) {
			last = at
		}
	}
	slices.Sort(lat)
	pct := func(q float64) float64 {
		i := int(q*float64(len(lat))+0.999999) - 1
		return lat[max(0, min(i, len(lat)-1))]
	}
	b.ReportMetric(float64(n)/last.Sub(start).Seconds(), "deliveries/s")
	b.ReportMetric(0, "ns/op")
	if !latency {
		return
	}
	b.ReportMetric(pct(0.50), "p50_ms")
	b.ReportMetric(pct(0.99), "p99_ms")
	b.ReportMetric(lat[len(lat)-1], "max_ms")
}
