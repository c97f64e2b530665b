// Command berth-fleetsim runs a fleet of simulated agents against one
// controller, for `make bench` (scripts/fleet-bench.sh). It is not shipped.
//
// Every simulated agent is the real agent code: client.Enroll with its own
// key and join token, then client.Run with its own certificate and its own
// gRPC connection (mutual TLS, nothing shared between agents). Only the
// host is fake: a synthetic sampler and synthetic facts instead of gopsutil.
//
// Phases:
//
//  1. enroll: add -agents servers through the admin API (one operator token)
//     and enroll an agent for each, -enroll-concurrency at a time. Identities
//     already in -dir are reused.
//  2. fleet: start the agents spread over -ramp (so their 10 s sampling
//     clocks are spread like a real fleet's), wait -warmup, then measure for
//     -window: agents committing (acked in the last two intervals), committed
//     samples/s, send-to-ack latency of every batch, and the CPU and memory of
//     the controller (-controller-pid) and of its PostgreSQL (-pg-pid and its
//     children) over the window.
//  3. backfill (unless -backfill 0): stop every agent, then start
//     -backfill-agents of them at once, each with -backfill samples already
//     in its buffer (an hour at 10 s by default, dated over the past hour),
//     as after an outage; measure committed rows/s until every one has
//     replayed its buffer.
//
// Results go to stdout as key=value lines; progress and agent warnings go to
// stderr.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/berthhq/berth/agent/internal/client"
	"github.com/berthhq/berth/agent/internal/identity"
	"github.com/berthhq/berth/agent/internal/metrics"
	"github.com/berthhq/berth/agent/internal/version"
	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

type options struct {
	controller, caFile, token, dir, prefix string
	agents, enrollConc                     int
	ramp, warmup, window, interval         time.Duration
	backfill, backfillAgents               int
	backfillTimeout                        time.Duration
	controllerPID, pgPID                   int
}

func main() {
	// One process stands in for thousands of machines and holds all their
	// buffers (an hour of samples each in the backfill): with Go's default
	// pacing its collector rescans that heap again and again, and the CPU
	// it burns is taken from the controller under test on the same cores.
	// A real agent's heap is a few MB. BERTH_FLEETSIM_GOGC overrides.
	gogc := 400
	if v, err := strconv.Atoi(os.Getenv("BERTH_FLEETSIM_GOGC")); err == nil {
		gogc = v
	}
	debug.SetGCPercent(gogc)

	var o options
	fs := flag.NewFlagSet("berth-fleetsim", flag.ExitOnError)
	fs.StringVar(&o.controller, "controller", "127.0.0.1:7443", "controller gRPC address")
	fs.StringVar(&o.caFile, "ca-file", os.Getenv("BERTH_CA_FILE"), "controller CA certificate (DATA_DIR/ca.crt), for the admin API")
	fs.StringVar(&o.token, "token", os.Getenv("BERTH_TOKEN"), "admin API token with write scope, to add the servers")
	fs.StringVar(&o.dir, "dir", "", "where the agents' data dirs go, one per agent (default: a new dir in /dev/shm)")
	fs.StringVar(&o.prefix, "prefix", "sim", "server name prefix")
	fs.IntVar(&o.agents, "agents", 1000, "simulated agents")
	fs.IntVar(&o.enrollConc, "enroll-concurrency", 32, "enrollments in flight at once")
	fs.DurationVar(&o.ramp, "ramp", 30*time.Second, "spread the agents' starts over this long")
	fs.DurationVar(&o.warmup, "warmup", 15*time.Second, "wait this long after the last start before measuring")
	fs.DurationVar(&o.window, "window", 60*time.Second, "measure for this long")
	fs.DurationVar(&o.interval, "interval", 10*time.Second, "the controller's --metrics-interval (for the liveness count)")
	fs.IntVar(&o.backfill, "backfill", 360, "samples each agent replays in the backfill phase (0: no backfill phase)")
	fs.IntVar(&o.backfillAgents, "backfill-agents", 0, "agents in the backfill phase (default: all)")
	fs.DurationVar(&o.backfillTimeout, "backfill-timeout", 10*time.Minute, "give up the backfill after this long")
	fs.IntVar(&o.controllerPID, "controller-pid", 0, "controller process to measure (0: none)")
	fs.IntVar(&o.pgPID, "pg-pid", 0, "PostgreSQL postmaster to measure with its children (0: none)")
	_ = fs.Parse(os.Args[1:])
	if o.backfillAgents <= 0 || o.backfillAgents > o.agents {
		o.backfillAgents = o.agents
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintf(os.Stderr, "berth-fleetsim: %s\n", err)
		os.Exit(1)
	}
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s fleetsim: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func result(key string, v any) { fmt.Printf("%s=%v\n", key, v) }

func run(ctx context.Context, o options) error {
	if o.dir == "" {
		d, err := os.MkdirTemp("/dev/shm", "berth-fleetsim.")
		if err != nil {
			return err
		}
		o.dir = d
		defer os.RemoveAll(d)
	}
	t0 := time.Now()
	if err := enrollAll(ctx, o); err != nil {
		return err
	}
	result("enroll_seconds", fmt.Sprintf("%.1f", time.Since(t0).Seconds()))
	if ctx.Err() != nil {
		return ctx.Err()
	}

	logs := &countingHandler{counts: map[string]int{}}
	log := slog.New(logs)
	f := newFleet(o, log)
	if err := f.live(ctx); err != nil {
		return err
	}
	if o.backfill > 0 && ctx.Err() == nil {
		if err := f.backfill(ctx); err != nil {
			return err
		}
	}
	for msg, n := range logs.snapshot() {
		result("agent_log."+strings.ReplaceAll(msg, " ", "_"), n)
	}
	return ctx.Err()
}

// enrollAll adds a server for every agent without an identity in o.dir
// and enrolls it, as `berth server add` and `berth-agent enroll` would.
func enrollAll(ctx context.Context, o options) error {
	var todo []int
	for i := range o.agents {
		if _, err := identity.Load(agentDir(o, i)); err != nil {
			todo = append(todo, i)
		}
	}
	if len(todo) == 0 {
		progress("%d agents already enrolled in %s", o.agents, o.dir)
		return nil
	}
	if o.token == "" || o.caFile == "" {
		return errors.New("-token and -ca-file are required to enroll")
	}
	pemBytes, err := os.ReadFile(o.caFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return fmt.Errorf("%s holds no certificate", o.caFile)
	}
	conn, err := grpc.NewClient(o.controller,
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: identity.ServerName})),
		grpc.WithPerRPCCredentials(bearer(o.token)))
	if err != nil {
		return err
	}
	defer conn.Close()
	admin := adminv1.NewAdminServiceClient(conn)

	progress("enrolling %d agents, %d at a time", len(todo), o.enrollConc)
	var (
		next, done atomic.Int64
		firstErr   error
		errOnce    sync.Once
		wg         sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range o.enrollConc {
		wg.Go(func() {
			for ctx.Err() == nil {
				k := int(next.Add(1)) - 1
				if k >= len(todo) {
					return
				}
				if err := enrollOne(ctx, o, admin, todo[k]); err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				if n := done.Add(1); n%1000 == 0 {
					progress("enrolled %d", n)
				}
			}
		})
	}
	wg.Wait()
	return firstErr
}

func enrollOne(ctx context.Context, o options, admin adminv1.AdminServiceClient, i int) error {
	name := fmt.Sprintf("%s-%05d", o.prefix, i)
	res, err := admin.AddServer(ctx, &adminv1.AddServerRequest{Name: name})
	if err != nil {
		return fmt.Errorf("add server %s: %w", name, err)
	}
	_, err = client.Enroll(ctx, client.EnrollParams{
		Controller: o.controller, Token: res.GetToken(), CAPin: res.GetCaPin(), DataDir: agentDir(o, i), Facts: facts(name),
	})
	if err != nil {
		return fmt.Errorf("enroll %s: %w", name, err)
	}
	return nil
}

func agentDir(o options, i int) string { return filepath.Join(o.dir, strconv.Itoa(i)) }

type bearer string

func (t bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}
func (bearer) RequireTransportSecurity() bool { return true }

func facts(name string) *agentv1.HostFacts {
	return &agentv1.HostFacts{
		Hostname: name, Os: "linux", Platform: "fleetsim", PlatformVersion: "1", Kernel: "6.1.0",
		Arch: "amd64", Cpus: 2, MemoryBytes: 4 << 30, AgentVersion: version.Version,
	}
}

// fakeSampler stands in for gopsutil: a plausible small host, cheaply.
type fakeSampler struct{}

func (fakeSampler) Sample(context.Context) (metrics.Sample, error) {
	return fakeSample(time.Now()), nil
}

func fakeSample(t time.Time) metrics.Sample {
	r := rand.Float64()
	return metrics.Sample{
		RecordedAt: t,
		CPUPercent: 100 * r, Load1: 2 * r, Load5: 1.5 * r, Load15: r,
		MemUsed: 1<<30 + uint64(r*(1<<30)), MemTotal: 4 << 30, SwapUsed: 0, SwapTotal: 1 << 30,
		DiskUsed: 10<<30 + uint64(r*(1<<30)), DiskTotal: 40 << 30, DiskAvail: 28<<30 - uint64(r*(1<<30)),
		InodesTotal: 2621440, InodesFree: 2500000 - uint64(r*1000),
		DiskReadBps: 1e4 * r, DiskWriteBps: 5e4 * r, NetRxBps: 1e5 * r, NetTxBps: 2e4 * r, HasRates: true,
		Disks: []metrics.Disk{{Mount: "/", Used: 10<<30 + uint64(r*(1<<30)), Total: 40 << 30, Avail: 28<<30 - uint64(r*(1<<30)),
			InodesTotal: 2621440, InodesFree: 2500000 - uint64(r*1000)}},
	}
}

// fleet is the running simulated agents and what they observed.
type fleet struct {
	o   options
	log *slog.Logger

	lastAck []atomic.Int64 // unix nanos of each agent's latest ack

	mu        sync.Mutex
	measuring bool
	latencies []time.Duration // send-to-ack of batches acked while measuring
	committed int64           // samples newly stored, acked while measuring
	acks      int64
	dups      int64
}

func newFleet(o options, log *slog.Logger) *fleet {
	return &fleet{o: o, log: log, lastAck: make([]atomic.Int64, o.agents)}
}

func (f *fleet) onAck(i int, a client.Ack) {
	now := time.Now()
	f.lastAck[i].Store(now.UnixNano())
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.measuring {
		return
	}
	f.acks++
	if a.Duplicate {
		f.dups++
	} else {
		f.committed += int64(a.Samples)
	}
	if !a.SentAt.IsZero() {
		f.latencies = append(f.latencies, now.Sub(a.SentAt))
	}
}

// alive counts agents acked within the last two sampling intervals: connected
// and getting their samples committed.
func (f *fleet) alive() int {
	cut := time.Now().Add(-2 * f.o.interval).UnixNano()
	n := 0
	for i := range f.lastAck {
		if f.lastAck[i].Load() > cut {
			n++
		}
	}
	return n
}

func (f *fleet) startMeasuring() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.measuring, f.latencies, f.committed, f.acks, f.dups = true, nil, 0, 0, 0
}

func (f *fleet) stopMeasuring() (lat []time.Duration, committed, acks, dups int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.measuring = false
	return f.latencies, f.committed, f.acks, f.dups
}

// startAgent runs agent i with buf until ctx ends.
func (f *fleet) startAgent(ctx context.Context, wg *sync.WaitGroup, i int, buf *metrics.Buffer, onAck func(client.Ack)) {
	name := fmt.Sprintf("%s-%05d", f.o.prefix, i)
	wg.Go(func() {
		err := client.Run(ctx, client.Config{
			Controller: f.o.controller,
			DataDir:    agentDir(f.o, i),
			Facts:      func() *agentv1.HostFacts { return facts(name) },
			Sampler:    fakeSampler{},
			Buffer:     buf,
			Logger:     f.log,
			OnAck:      onAck,
		})
		if err != nil {
			f.log.Error("agent stopped", "err", err)
		}
	})
}

func (f *fleet) live(ctx context.Context) error {
	o := f.o
	actx, stopAgents := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopAgents(); wg.Wait() }()

	progress("starting %d agents over %s", o.agents, o.ramp)
	start := time.Now()
	for i := range o.agents {
		if d := time.Until(start.Add(o.ramp * time.Duration(i) / time.Duration(o.agents))); d > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(d):
			}
		}
		buf := metrics.NewBuffer(metrics.CapacityFor(metrics.DefaultRetention, metrics.DefaultInterval))
		f.startAgent(actx, &wg, i, buf, func(a client.Ack) { f.onAck(i, a) })
	}
	progress("all started; warming up %s", o.warmup)
	if !sleep(ctx, o.warmup) {
		return ctx.Err()
	}

	cpu0, pg0 := ticks(o.controllerPID), treeTicks(o.pgPID)
	self0 := ticks(os.Getpid())
	f.startMeasuring()
	t0 := time.Now()
	peak, minAlive := 0, o.agents
	for time.Since(t0) < o.window {
		if !sleep(ctx, min(5*time.Second, o.window-time.Since(t0))) {
			return ctx.Err()
		}
		n := f.alive()
		peak, minAlive = max(peak, n), min(minAlive, n)
		progress("measuring: %d agents committing, %.0fs left", n, (o.window - time.Since(t0)).Seconds())
	}
	lat, committed, acks, dups := f.stopMeasuring()
	secs := time.Since(t0).Seconds()
	cpu1, pg1 := ticks(o.controllerPID), treeTicks(o.pgPID)
	self1 := ticks(os.Getpid())

	result("fleet_agents", o.agents)
	result("fleet_window_seconds", fmt.Sprintf("%.0f", secs))
	result("fleet_committing_end", f.alive())
	result("fleet_committing_peak", peak)
	result("fleet_committing_min", minAlive)
	result("fleet_samples_per_second", fmt.Sprintf("%.0f", float64(committed)/secs))
	result("fleet_expected_samples_per_second", fmt.Sprintf("%.0f", float64(o.agents)/o.interval.Seconds()))
	result("fleet_acks", acks)
	result("fleet_duplicate_acks", dups)
	result("fleet_ack_p50_ms", fmt.Sprintf("%.1f", pct(lat, 50)))
	result("fleet_ack_p99_ms", fmt.Sprintf("%.1f", pct(lat, 99)))
	result("fleet_ack_max_ms", fmt.Sprintf("%.1f", pct(lat, 100)))
	if o.controllerPID > 0 {
		result("controller_cpu_percent", fmt.Sprintf("%.1f", 100*float64(cpu1-cpu0)/clkTck/secs))
		rss, hwm := memKB(o.controllerPID)
		result("controller_rss_mb", fmt.Sprintf("%.0f", float64(rss)/1024))
		result("controller_peak_rss_mb", fmt.Sprintf("%.0f", float64(hwm)/1024))
	}
	if o.pgPID > 0 {
		result("postgres_cpu_percent", fmt.Sprintf("%.1f", 100*float64(pg1-pg0)/clkTck/secs))
	}
	result("simulator_cpu_percent", fmt.Sprintf("%.1f", 100*float64(self1-self0)/clkTck/secs))
	rss, _ := memKB(os.Getpid())
	result("simulator_rss_mb", fmt.Sprintf("%.0f", float64(rss)/1024))
	return nil
}

// backfill restarts agents with an hour of samples each in their buffers,
// all at once, and times until every one has had it committed.
func (f *fleet) backfill(ctx context.Context) error {
	o := f.o
	n := o.backfillAgents
	bufs := make([]*metrics.Buffer, n)
	now := time.Now()
	for i := range bufs {
		b := metrics.NewBuffer(metrics.CapacityFor(metrics.DefaultRetention, metrics.DefaultInterval))
		for k := range o.backfill {
			b.Add(fakeSample(now.Add(-time.Duration(o.backfill-k) * metrics.DefaultInterval)))
		}
		bufs[i] = b
	}
	var (
		replayed  = make([]atomic.Int64, n) // samples acked per agent
		remaining atomic.Int64
		committed atomic.Int64
		allDone   = make(chan struct{})
		lastDone  atomic.Int64
		mu        sync.Mutex
		lat       []time.Duration
	)
	remaining.Store(int64(n))
	actx, stopAgents := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopAgents(); wg.Wait() }()

	progress("backfill: %d agents replay %d samples each, all at once", n, o.backfill)
	cpu0, pg0, self0 := ticks(o.controllerPID), treeTicks(o.pgPID), ticks(os.Getpid())
	t0 := time.Now()
	for i := range n {
		f.startAgent(actx, &wg, i, bufs[i], func(a client.Ack) {
			if !a.Duplicate {
				committed.Add(int64(a.Samples))
			}
			if !a.SentAt.IsZero() {
				mu.Lock()
				lat = append(lat, time.Since(a.SentAt))
				mu.Unlock()
			}
			if before := replayed[i].Add(int64(a.Samples)) - int64(a.Samples); before < int64(o.backfill) && before+int64(a.Samples) >= int64(o.backfill) {
				lastDone.Store(time.Now().UnixNano())
				if remaining.Add(-1) == 0 {
					close(allDone)
				}
			}
		})
	}
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	timeout := time.After(o.backfillTimeout)
wait:
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-allDone:
			break wait
		case <-timeout:
			progress("backfill: timed out with %d agents not done", remaining.Load())
			break wait
		case <-tick.C:
			progress("backfill: %d rows committed, %d agents not done", committed.Load(), remaining.Load())
		}
	}
	end := time.Unix(0, lastDone.Load())
	secs := end.Sub(t0).Seconds()
	cpu1, pg1, self1 := ticks(o.controllerPID), treeTicks(o.pgPID), ticks(os.Getpid())
	// Where the machine's CPU went: the three processes share its cores.
	for _, c := range []struct {
		name   string
		t0, t1 int64
		pid    int
	}{{"controller", cpu0, cpu1, o.controllerPID}, {"postgres", pg0, pg1, o.pgPID}, {"simulator", self0, self1, os.Getpid()}} {
		if c.pid > 0 {
			result("backfill_"+c.name+"_cpu_seconds", fmt.Sprintf("%.1f", float64(c.t1-c.t0)/clkTck))
		}
	}
	rows := committed.Load()
	mu.Lock()
	l := lat
	mu.Unlock()
	result("backfill_agents", n)
	result("backfill_agents_done", int64(n)-remaining.Load())
	result("backfill_rows", rows)
	result("backfill_seconds", fmt.Sprintf("%.1f", secs))
	result("backfill_rows_per_second", fmt.Sprintf("%.0f", float64(rows)/secs))
	result("backfill_ack_p50_ms", fmt.Sprintf("%.1f", pct(l, 50)))
	result("backfill_ack_p99_ms", fmt.Sprintf("%.1f", pct(l, 99)))
	return nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// pct is the p-th percentile in milliseconds (nearest rank).
func pct(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	k := int(p/100*float64(len(d))+0.5) - 1
	k = min(max(k, 0), len(d)-1)
	return float64(d[k]) / float64(time.Millisecond)
}

// clkTck is USER_HZ, 100 on every Linux architecture Berth runs on.
const clkTck = 100

// ticks is a process's utime+stime in clock ticks (0 when pid is 0 or gone).
func ticks(pid int) int64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := statFields(b)
	if len(f) < 15 {
		return 0
	}
	u, _ := strconv.ParseInt(f[13], 10, 64)
	s, _ := strconv.ParseInt(f[14], 10, 64)
	return u + s
}

// statFields splits /proc/PID/stat, whose second field (comm) may hold spaces.
func statFields(b []byte) []string {
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return append([]string{"pid", "comm"}, strings.Fields(s[i+1:])...)
}

// treeTicks is ticks of pid and its direct children (a postmaster and its
// backends).
func treeTicks(pid int) int64 {
	if pid <= 0 {
		return 0
	}
	total := ticks(pid)
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if f := statFields(b); len(f) > 3 && f[3] == strconv.Itoa(pid) {
			total += ticks(c)
		}
	}
	return total
}

// memKB is VmRSS and VmHWM of a process.
func memKB(pid int) (rss, hwm int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = n
		case "VmHWM":
			hwm = n
		}
	}
	return rss, hwm
}

// countingHandler counts the agents' log records by message and prints the
// first few warnings, so 10,000 agents cannot flood stderr.
type countingHandler struct {
	mu     sync.Mutex
	counts map[string]int
	shown  int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *countingHandler) WithGroup(string) slog.Handler            { return h }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.counts[r.Message]++
	if r.Level >= slog.LevelWarn && h.shown < 20 {
		h.shown++
		var sb strings.Builder
		r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&sb, " %s=%v", a.Key, a.Value); return true })
		progress("agent %s: %s%s", r.Level, r.Message, sb.String())
	}
	return nil
}

func (h *countingHandler) snapshot() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.counts)
}
