package alert

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
	"github.com/berthhq/berth/controller/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type env struct {
	db    *testdb.DB
	st    *store.Store
	clk   *clock
	admin *auth.Principal
	srv   store.Server
}

func newEnv(t *testing.T) *env {
	t.Helper()
	db := testdb.New(t)
	st := store.New(db.Pool, nil)
	ctx := context.Background()
	u, err := st.CreateUser(ctx, store.CreateUserParams{Email: "admin@example.test", Name: "Admin", PasswordHash: "$argon2id$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA", Role: store.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := st.CreateServer(ctx, store.CreateServerParams{Name: "web-1", Labels: map[string]string{"env": "prod"}})
	if err != nil {
		t.Fatal(err)
	}
	return &env{
		db: db, st: st, clk: &clock{t: time.Now().UTC().Truncate(time.Second)}, srv: srv,
		admin: &auth.Principal{UserID: u.ID, Email: u.Email, Role: store.RoleAdmin, Scopes: []store.Scope{store.ScopeAdmin}},
	}
}

func (e *env) engine(t *testing.T) *Engine {
	t.Helper()
	eng, err := NewEngine(Config{Store: e.st, Logger: slog.New(slog.DiscardHandler), Now: e.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	return eng
}

// drain writes the transitions evaluation queued, as Run's worker does.
func drain(eng *Engine) {
	for {
		select {
		case t := <-eng.work:
			eng.write(context.Background(), t)
		default:
			return
		}
	}
}

// sample is one sample's columns with one filesystem at mount, used% of
// (used+avail) as given.
func sample(at time.Time, cpu, diskPct float64, mount string) *store.MetricColumns {
	used := uint64(diskPct * 1000)
	avail := uint64((100 - diskPct) * 1000)
	m, _ := json.Marshal(mount)
	return &store.MetricColumns{
		RecordedAt: []int64{at.UnixMicro()}, CPUPercent: []float64{cpu}, Load1: []float64{0.5}, Load5: []float64{0}, Load15: []float64{0},
		MemUsed: []uint64{1}, MemTotal: []uint64{100}, SwapUsed: []uint64{0}, SwapTotal: []uint64{0},
		DiskUsed: []uint64{used}, DiskTotal: []uint64{used + avail}, HasRates: []bool{true},
		DiskReadBps: []float64{0}, DiskWriteBps: []float64{0}, NetRxBps: []float64{10}, NetTxBps: []float64{10},
		DiskCount: []uint32{1}, FSMount: []uint32{0}, FSUsed: []uint64{used}, FSTotal: []uint64{used + avail},
		FSAvail: []uint64{avail}, Mounts: [][]byte{m},
	}
}

type eventRow struct {
	kind, key, title string
	resolves         bool
}

func (e *env) alertEvents(t *testing.T) []eventRow {
	t.Helper()
	rows, err := e.db.Pool.Query(context.Background(), `SELECT kind, coalesce(dedupe_key, ''), title, resolves FROM notify_events WHERE kind LIKE 'alert.%' ORDER BY created_at, id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []eventRow
	for rows.Next() {
		var r eventRow
		if err := rows.Scan(&r.kind, &r.key, &r.title, &r.resolves); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func f(v float64) *float64             { return &v }
func d(v time.Duration) *time.Duration { return &v }

func TestSpecRefusesBadInput(t *testing.T) {
	ok := Spec{Name: "disk-hot", Metric: "disk", Above: f(80)}
	if _, err := ok.check(); err != nil {
		t.Fatalf("valid spec refused: %v", err)
	}
	for name, tc := range map[string]struct {
		s    Spec
		want string
	}{
		"unknown metric":    {Spec{Name: "a", Metric: "temperature", Above: f(1)}, "unknown metric"},
		"no threshold":      {Spec{Name: "a", Metric: "cpu"}, "--above is required"},
		"negative":          {Spec{Name: "a", Metric: "cpu", Above: f(-1)}, "at least 0"},
		"NaN":               {Spec{Name: "a", Metric: "cpu", Above: f(math.NaN())}, "at least 0"},
		"infinite":          {Spec{Name: "a", Metric: "net_rx", Above: f(math.Inf(1))}, "at least 0"},
		"percent over 100":  {Spec{Name: "a", Metric: "memory", Above: f(101)}, "0 to 100"},
		"resolve above":     {Spec{Name: "a", Metric: "cpu", Above: f(50), ResolveBelow: f(60)}, "must not be above"},
		"resolve NaN":       {Spec{Name: "a", Metric: "cpu", Above: f(50), ResolveBelow: f(math.NaN())}, "at least 0"},
		"server and label":  {Spec{Name: "a", Metric: "cpu", Above: f(50), Server: "web-1", Label: "env=prod"}, "not both"},
		"mount on cpu":      {Spec{Name: "a", Metric: "cpu", Above: f(50), Mount: "/"}, "disk and inodes only"},
		"relative mount":    {Spec{Name: "a", Metric: "disk", Above: f(50), Mount: "var"}, "absolute path"},
		"negative for":      {Spec{Name: "a", Metric: "cpu", Above: f(50), For: d(-time.Second)}, "--for"},
		"for over a day":    {Spec{Name: "a", Metric: "cpu", Above: f(50), For: d(25 * time.Hour)}, "--for"},
		"fractional for":    {Spec{Name: "a", Metric: "cpu", Above: f(50), For: d(1500 * time.Millisecond)}, "--for"},
		"offline threshold": {Spec{Name: "a", Metric: "offline", Above: f(1)}, "no threshold"},
		"bad level":         {Spec{Name: "a", Metric: "cpu", Above: f(50), Level: "info"}, "warning or critical"},
		"bad name":          {Spec{Name: "Disk Hot", Metric: "cpu", Above: f(50)}, "alert name"},
		"long name":         {Spec{Name: strings.Repeat("a", 64), Metric: "cpu", Above: f(50)}, "alert name"},
		"bad label":         {Spec{Name: "a", Metric: "cpu", Above: f(50), Label: "env"}, "KEY=VALUE"},
		"huge load":         {Spec{Name: "a", Metric: "load", Above: f(1e6)}, "at most"},
	} {
		if _, err := tc.s.check(); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrInvalid with %q", name, err, tc.want)
		}
	}
	r, _ := Spec{Name: "a", Metric: "disk", Above: f(90)}.check()
	if *r.ResolveBelow != 85 || r.For != DefaultFor || r.Level != LevelWarning {
		t.Errorf("defaults: %+v", r)
	}
	r, _ = Spec{Name: "a", Metric: "net_rx", Above: f(1000)}.check()
	if *r.ResolveBelow != 900 {
		t.Errorf("relative margin: %v", *r.ResolveBelow)
	}
	r, _ = Spec{Name: "a", Metric: "offline"}.check()
	if r.For != DefaultOffline || r.Above != nil {
		t.Errorf("offline defaults: %+v", r)
	}
}

func TestDefaultsAreSeeded(t *testing.T) {
	e := newEnv(t)
	rules, err := e.st.AlertRules(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range rules {
		above := "-"
		if r.Above != nil {
			above = FormatValue(r.Metric, *r.Above)
		}
		got[r.Name] = r.Metric + " " + above + " " + r.For.String()
	}
	want := map[string]string{"disk-above-90": "disk 90.0% 5m0s", "memory-above-95": "memory 95.0% 10m0s", "server-offline": "offline - 2m0s"}
	if len(got) != len(want) {
		t.Fatalf("seeded rules: %v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q", k, got[k], v)
		}
	}
}

func TestServiceAuthorisesValidatesAndAudits(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	eng := e.engine(t)
	svc := NewService(e.st, eng, slog.New(slog.DiscardHandler))
	viewer := &auth.Principal{UserID: e.admin.UserID, Scopes: []store.Scope{store.ScopeRead}}
	spec := Spec{Name: "tmp-full", Metric: "disk", Above: f(50), For: d(10 * time.Second), Mount: "/mnt/t", Server: "web-1", Level: "critical"}

	if _, err := svc.AddAs(ctx, nil, Peer{}, spec); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("no principal: %v", err)
	}
	if _, err := svc.AddAs(ctx, viewer, Peer{}, spec); !errors.Is(err, auth.ErrForbidden) {
		t.Fatalf("read scope adding: %v", err)
	}
	if err := svc.RemoveAs(ctx, viewer, Peer{}, "disk-above-90"); !errors.Is(err, auth.ErrForbidden) {
		t.Fatalf("read scope removing: %v", err)
	}
	if _, err := svc.ListAs(ctx, nil); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("list without principal: %v", err)
	}
	r, err := svc.AddAs(ctx, e.admin, Peer{}, spec)
	if err != nil {
		t.Fatal(err)
	}
	if r.ServerName != "web-1" || r.ServerID == nil || *r.ServerID != e.srv.ID || r.Mount != "/mnt/t" || r.Level != "critical" {
		t.Fatalf("added: %+v", r)
	}
	if _, err := svc.AddAs(ctx, e.admin, Peer{}, spec); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate name: %v", err)
	}
	bad := spec
	bad.Name, bad.Server = "other", "no-such-server"
	if _, err := svc.AddAs(ctx, e.admin, Peer{}, bad); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown server: %v", err)
	}
	bad.Server = "NOT A NAME"
	if _, err := svc.AddAs(ctx, e.admin, Peer{}, bad); !errors.Is(err, ErrInvalid) {
		t.Fatalf("malformed server: %v", err)
	}
	lbl := Spec{Name: "prod-cpu", Metric: "cpu", Above: f(90), Label: "env=prod"}
	if _, err := svc.AddAs(ctx, e.admin, Peer{}, lbl); err != nil {
		t.Fatal(err)
	}

	list, err := svc.ListAs(ctx, viewer)
	if err != nil || len(list) != 5 {
		t.Fatalf("list: %d %v", len(list), err)
	}
	got, err := svc.GetAs(ctx, viewer, "prod-cpu")
	if err != nil || got.LabelKey != "env" || got.LabelValue != "prod" {
		t.Fatalf("get: %+v %v", got, err)
	}
	if _, err := svc.GetAs(ctx, viewer, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get unknown: %v", err)
	}
	if _, err := svc.GetAs(ctx, viewer, "../x"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("get malformed: %v", err)
	}
	if err := svc.RemoveAs(ctx, e.admin, Peer{}, "prod-cpu"); err != nil {
		t.Fatal(err)
	}
	if err := svc.RemoveAs(ctx, e.admin, Peer{}, "prod-cpu"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("remove twice: %v", err)
	}
	acts, err := e.st.ActivityLog(ctx, store.ActivityFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, a := range acts {
		if strings.HasPrefix(a.Action, "alert_rule.") {
			seen = append(seen, a.Action+" "+a.SubjectName)
		}
	}
	if strings.Join(seen, ",") != "alert_rule.deleted prod-cpu,alert_rule.created prod-cpu,alert_rule.created tmp-full" {
		t.Errorf("activity: %v", seen)
	}
}

// A disk rule fires once after its duration, not for a shorter spike, and
// resolves once below the lower mark; a second controller evaluating the
// same samples fires and resolves nothing more; a restarted one neither
// fires again nor forgets.
func TestDiskRuleFiresOnceAfterDurationAndResolvesOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a, b := e.engine(t), e.engine(t)
	svc := NewService(e.st, a, slog.New(slog.DiscardHandler))
	if _, err := svc.AddAs(ctx, e.admin, Peer{}, Spec{Name: "tmp-full", Metric: "disk", Above: f(50), For: d(10 * time.Second), Mount: "/mnt/t"}); err != nil {
		t.Fatal(err)
	}
	if err := b.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	t0 := e.clk.Now()
	feed := func(at time.Time, pct float64, mount string) {
		for _, eng := range []*Engine{a, b} {
			eng.ObserveMetrics(e.srv.ID, sample(at, 1, pct, mount))
			drain(eng)
		}
	}
	// A spike of 8 s (shorter than 10 s) fires nothing.
	feed(t0, 80, "/mnt/t")
	feed(t0.Add(4*time.Second), 80, "/mnt/t")
	feed(t0.Add(8*time.Second), 80, "/mnt/t")
	feed(t0.Add(12*time.Second), 10, "/mnt/t")
	// Another mount, and the seeded 90% rule on every mount, stay quiet.
	feed(t0.Add(13*time.Second), 70, "/other")
	if ev := e.alertEvents(t); len(ev) != 0 {
		t.Fatalf("a spike shorter than the duration fired: %+v", ev)
	}
	// Above for 10 s: fires once, on both controllers' evaluation.
	for i := range 5 {
		feed(t0.Add(time.Duration(20+4*i)*time.Second), 75, "/mnt/t")
	}
	ev := e.alertEvents(t)
	if len(ev) != 1 || ev[0].kind != KindFiring || !strings.Contains(ev[0].title, "/mnt/t") {
		t.Fatalf("after the duration: %+v", ev)
	}
	rule, _ := e.st.AlertRuleByName(ctx, "tmp-full")
	if ev[0].key != DedupeKey(rule.ID, e.srv.ID, "/mnt/t") {
		t.Errorf("dedupe key %q", ev[0].key)
	}
	shown, err := svc.GetAs(ctx, e.admin, "tmp-full")
	if err != nil || len(shown.Firing) != 1 || shown.Firing[0].ServerName != "web-1" || shown.Firing[0].Mount != "/mnt/t" ||
		!shown.Firing[0].PendingSince.Equal(t0.Add(20*time.Second)) || !shown.Firing[0].Since.Equal(t0.Add(32*time.Second)) {
		t.Fatalf("firing state: %+v %v", shown.Firing, err)
	}
	onServer, err := svc.FiringOnServerAs(ctx, e.admin, e.srv.ID)
	if err != nil || len(onServer) != 1 || onServer[0].RuleName != "tmp-full" {
		t.Fatalf("server's firing alerts: %+v %v", onServer, err)
	}

	// A restarted controller loads the firing state: more samples above
	// fire nothing new.
	c := e.engine(t)
	c.ObserveMetrics(e.srv.ID, sample(t0.Add(40*time.Second), 1, 80, "/mnt/t"))
	drain(c)
	// Between the marks (50 > 47 > 45): still firing (hysteresis).
	for _, eng := range []*Engine{a, b, c} {
		eng.ObserveMetrics(e.srv.ID, sample(t0.Add(44*time.Second), 1, 47, "/mnt/t"))
		drain(eng)
	}
	if ev := e.alertEvents(t); len(ev) != 1 {
		t.Fatalf("restart or hysteresis band changed something: %+v", ev)
	}
	// Below the lower mark: resolved once, whoever sees it.
	for _, eng := range []*Engine{c, a, b} {
		eng.ObserveMetrics(e.srv.ID, sample(t0.Add(48*time.Second), 1, 20, "/mnt/t"))
		drain(eng)
	}
	ev = e.alertEvents(t)
	if len(ev) != 2 || ev[1].kind != KindResolved || !ev[1].resolves || ev[1].key != ev[0].key {
		t.Fatalf("after resolving: %+v", ev)
	}
	if shown, _ := svc.GetAs(ctx, e.admin, "tmp-full"); len(shown.Firing) != 0 {
		t.Errorf("still firing: %+v", shown.Firing)
	}
	// The admin's inbox got the firing one and then the resolved one
	// (the migration's default rule routes alert.* there).
	ns, err := e.st.Notifications(ctx, e.admin.UserID, store.NotificationFilter{Limit: 10})
	if err != nil || len(ns) != 2 || ns[0].Kind != KindResolved || ns[1].Kind != KindFiring || ns[1].ReadAt == nil {
		t.Fatalf("inbox: %+v %v", ns, err)
	}
}

// Two controllers firing the same condition at the same moment publish one
// event: the state change is conditional.
func TestConcurrentFiresPublishOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	rule, err := e.st.CreateAlertRule(ctx, store.AlertRule{Name: "cpu-hot", Metric: "cpu", Above: f(50), ResolveBelow: f(40), Level: "warning"})
	if err != nil {
		t.Fatal(err)
	}
	tr := transition{fire: true, rule: rule, server: e.srv.ID, name: "web-1", since: e.clk.Now(), at: e.clk.Now(), value: 99}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- e.st.InTx(ctx, func(tx *store.Store) error { return writeTransition(ctx, tx, tr) })
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if ev := e.alertEvents(t); len(ev) != 1 {
		t.Fatalf("events: %+v", ev)
	}
}

// offline fires once after its duration without heartbeats and resolves
// once the server is back.
func TestOfflineRuleFiresOnceAndResolvesOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	eng := e.engine(t)
	svc := NewService(e.st, eng, slog.New(slog.DiscardHandler))
	if err := svc.RemoveAs(ctx, e.admin, Peer{}, "server-offline"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.AddAs(ctx, e.admin, Peer{}, Spec{Name: "gone", Metric: "offline", For: d(30 * time.Second), Server: "web-1"}); err != nil {
		t.Fatal(err)
	}
	seen := e.clk.Now()
	if _, err := e.st.MarkServersSeen(ctx, map[store.ID]time.Time{e.srv.ID: seen}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.MarkStaleServersOffline(ctx, seen.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	check := func() {
		t.Helper()
		if err := eng.CheckOffline(ctx); err != nil {
			t.Fatal(err)
		}
		drain(eng)
	}
	e.clk.Add(20 * time.Second)
	check()
	if ev := e.alertEvents(t); len(ev) != 0 {
		t.Fatalf("fired before the duration: %+v", ev)
	}
	e.clk.Add(15 * time.Second)
	check()
	check()
	ev := e.alertEvents(t)
	if len(ev) != 1 || ev[0].kind != KindFiring || !strings.Contains(ev[0].title, "offline") {
		t.Fatalf("offline: %+v", ev)
	}
	// A restarted controller does not fire it again.
	eng2 := e.engine(t)
	if err := eng2.CheckOffline(ctx); err != nil {
		t.Fatal(err)
	}
	drain(eng2)
	if _, _, err := e.st.ServerHello(ctx, e.srv.ID, store.ServerFacts{Facts: []byte(`{}`)}, nil); err != nil {
		t.Fatal(err)
	}
	check()
	if err := eng2.CheckOffline(ctx); err != nil {
		t.Fatal(err)
	}
	drain(eng2)
	ev = e.alertEvents(t)
	if len(ev) != 2 || ev[1].kind != KindResolved || ev[1].key != ev[0].key {
		t.Fatalf("back: %+v", ev)
	}
}

// Removing a rule that fires resolves what it had open, in the same
// transaction.
func TestRemovingAFiringRuleResolvesIt(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	eng := e.engine(t)
	svc := NewService(e.st, eng, slog.New(slog.DiscardHandler))
	if _, err := svc.AddAs(ctx, e.admin, Peer{}, Spec{Name: "cpu-hot", Metric: "cpu", Above: f(50), For: d(0)}); err != nil {
		t.Fatal(err)
	}
	eng.ObserveMetrics(e.srv.ID, sample(e.clk.Now(), 99, 1, "/"))
	drain(eng)
	if err := svc.RemoveAs(ctx, e.admin, Peer{}, "cpu-hot"); err != nil {
		t.Fatal(err)
	}
	ev := e.alertEvents(t)
	if len(ev) != 2 || ev[0].kind != KindFiring || ev[1].kind != KindResolved || !strings.Contains(ev[1].title, "cpu-hot") {
		t.Fatalf("events: %+v", ev)
	}
	// Further samples of the removed rule do nothing.
	eng.ObserveMetrics(e.srv.ID, sample(e.clk.Now().Add(time.Second), 99, 1, "/"))
	drain(eng)
	if ev := e.alertEvents(t); len(ev) != 2 {
		t.Fatalf("after removal: %+v", ev)
	}
}

// A removed server is forgotten at the next reload, without asking for
// another; a server the engine has not loaded yet asks for one reload,
// not one per batch.
func TestRemovedAndNewServers(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	eng := e.engine(t)
	if _, err := e.st.CreateAlertRule(ctx, store.AlertRule{Name: "cpu-hot", Metric: "cpu", Above: f(50), ResolveBelow: f(40), For: time.Minute, Level: "warning"}); err != nil {
		t.Fatal(err)
	}
	if err := eng.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	eng.ObserveMetrics(e.srv.ID, sample(e.clk.Now(), 99, 1, "/"))
	if err := e.st.DeleteServer(ctx, e.srv.ID); err != nil {
		t.Fatal(err)
	}
	if err := eng.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	eng.mu.RLock()
	_, kept := eng.servers[e.srv.ID]
	eng.mu.RUnlock()
	if kept || len(eng.wantRef) != 0 {
		t.Fatalf("removed server kept %v, reload asked for %d", kept, len(eng.wantRef))
	}
	newcomer, err := e.st.CreateServer(ctx, store.CreateServerParams{Name: "web-2"})
	if err != nil {
		t.Fatal(err)
	}
	e.clk.Add(refreshGap)
	for i := range 3 {
		eng.ObserveMetrics(newcomer.ID, sample(e.clk.Now().Add(time.Duration(i)*time.Second), 99, 1, "/"))
	}
	if len(eng.wantRef) != 1 {
		t.Fatalf("reloads asked for a new server: %d", len(eng.wantRef))
	}
	<-eng.wantRef
	eng.ObserveMetrics(newcomer.ID, sample(e.clk.Now().Add(5*time.Second), 99, 1, "/"))
	if len(eng.wantRef) != 0 {
		t.Fatal("a second reload asked for within the gap")
	}
}

// A full transition queue never blocks the caller: the transition is
// undone and the next sample makes it again.
func TestFullQueueUndoesAndRetries(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	eng := e.engine(t)
	if _, err := e.st.CreateAlertRule(ctx, store.AlertRule{Name: "cpu-hot", Metric: "cpu", Above: f(50), ResolveBelow: f(40), Level: "warning"}); err != nil {
		t.Fatal(err)
	}
	if err := eng.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	for len(eng.work) < cap(eng.work) {
		eng.work <- transition{rule: store.AlertRule{ID: store.NewID()}, server: store.NewID()}
	}
	eng.ObserveMetrics(e.srv.ID, sample(e.clk.Now(), 99, 1, "/")) // returns: the queue is full
	for len(eng.work) > 0 {
		<-eng.work
	}
	eng.ObserveMetrics(e.srv.ID, sample(e.clk.Now().Add(time.Second), 99, 1, "/"))
	drain(eng)
	if ev := e.alertEvents(t); len(ev) != 1 || ev[0].kind != KindFiring {
		t.Fatalf("events: %+v", ev)
	}
}

// Replacing a rule changes its definition in place (same id), resolves
// what the old definition had firing, and evaluation follows the new
// thresholds at once; without replace the name is refused, and replace
// of a name not taken adds it.
func TestReplaceRule(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	eng := e.engine(t)
	svc := NewService(e.st, eng, slog.New(slog.DiscardHandler))
	first, err := svc.AddAs(ctx, e.admin, Peer{}, Spec{Name: "cpu-hot", Metric: "cpu", Above: f(50), For: d(0)})
	if err != nil {
		t.Fatal(err)
	}
	eng.ObserveMetrics(e.srv.ID, sample(e.clk.Now(), 70, 1, "/"))
	drain(eng)
	if _, err := svc.AddAs(ctx, e.admin, Peer{}, Spec{Name: "cpu-hot", Metric: "cpu", Above: f(80)}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("taken name without replace: %v", err)
	}
	second, err := svc.AddAs(ctx, e.admin, Peer{}, Spec{Name: "cpu-hot", Metric: "cpu", Above: f(80), For: d(0), Level: "critical", Replace: true})
	if err != nil {
		t.Fatal(err)
	}
	if second.ID != first.ID || *second.Above != 80 || second.Level != "critical" {
		t.Fatalf("replaced: %+v", second.AlertRule)
	}
	ev := e.alertEvents(t)
	if len(ev) != 2 || ev[0].kind != KindFiring || ev[1].kind != KindResolved || !strings.Contains(ev[1].title, "cpu-hot resolved") {
		t.Fatalf("events after replace: %+v", ev)
	}
	// 70% is below the new threshold: nothing; 90% fires the new one.
	eng.ObserveMetrics(e.srv.ID, sample(e.clk.Now().Add(time.Second), 70, 1, "/"))
	drain(eng)
	if ev := e.alertEvents(t); len(ev) != 2 {
		t.Fatalf("fired below the new threshold: %+v", ev)
	}
	eng.ObserveMetrics(e.srv.ID, sample(e.clk.Now().Add(2*time.Second), 90, 1, "/"))
	drain(eng)
	if ev := e.alertEvents(t); len(ev) != 3 || ev[2].kind != KindFiring {
		t.Fatalf("after crossing the new threshold: %+v", ev)
	}
	if _, err := svc.AddAs(ctx, e.admin, Peer{}, Spec{Name: "fresh", Metric: "swap", Above: f(50), Replace: true}); err != nil {
		t.Fatalf("replace of a new name: %v", err)
	}
	acts, err := e.st.ActivityLog(ctx, store.ActivityFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, a := range acts {
		if strings.HasPrefix(a.Action, "alert_rule.") {
			seen = append(seen, a.Action+" "+a.SubjectName)
		}
	}
	if strings.Join(seen, ",") != "alert_rule.created fresh,alert_rule.replaced cpu-hot,alert_rule.created cpu-hot" {
		t.Errorf("activity: %v", seen)
	}
}

// Streams evaluate at once while rules reload and offline checks run (the
// race detector watches): one condition crossed by all of them fires once.
func TestConcurrentEvaluation(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	eng := e.engine(t)
	if _, err := e.st.CreateAlertRule(ctx, store.AlertRule{Name: "cpu-hot", Metric: "cpu", Above: f(50), ResolveBelow: f(40), For: 2 * time.Second, Level: "warning"}); err != nil {
		t.Fatal(err)
	}
	if err := eng.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	t0 := e.clk.Now()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				eng.ObserveMetrics(e.srv.ID, sample(t0.Add(time.Duration(i*8+g)*100*time.Millisecond), 90, 1, "/"))
			}
		}()
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		for range 5 {
			if err := eng.Refresh(ctx); err != nil {
				t.Error(err)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for range 5 {
			if err := eng.CheckOffline(ctx); err != nil {
				t.Error(err)
			}
			drain(eng)
		}
	}()
	wg.Wait()
	drain(eng)
	if ev := e.alertEvents(t); len(ev) != 1 || ev[0].kind != KindFiring {
		t.Fatalf("events: %+v", ev)
	}
}
