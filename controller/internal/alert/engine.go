package alert

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/berthhq/berth/controller/internal/notify"
	"github.com/berthhq/berth/controller/internal/store"
)

// rulesChannel is NOTIFYed by a trigger on alert_rules (migration 000030).
const rulesChannel = "berth_alert_rules"

// Config configures an Engine.
type Config struct {
	Store  *store.Store
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// RefreshEvery reloads rules, servers and firing states even without a
	// NOTIFY (labels changed, another controller's transitions); default
	// 30 s.
	RefreshEvery time.Duration
	// OfflineEvery is how often offline rules are checked; default 5 s.
	OfflineEvery time.Duration
	// StaleAfter: samples recorded longer ago than this are not evaluated
	// (an agent replaying a day of buffered samples after an outage must
	// not page about yesterday); default 10 minutes.
	StaleAfter time.Duration
}

// Engine evaluates the rules. Safe for concurrent use: ObserveMetrics is
// called by every agent's stream at once.
type Engine struct {
	cfg Config
	st  *store.Store
	log *slog.Logger

	snap    atomic.Pointer[snapshot]
	version atomic.Uint64
	// refreshMu serialises reloads.
	refreshMu sync.Mutex

	mu      sync.RWMutex
	servers map[store.ID]*serverState

	work        chan transition
	wantRef     chan struct{}
	lastRefresh atomic.Int64 // unix nanos of the last reload
	// written counts committed transitions, for tests that wait on them.
	written atomic.Int64
}

// snapshot is one load of the rules and the fleet.
type snapshot struct {
	version     uint64
	rules       map[store.ID]*store.AlertRule
	ordered     []*store.AlertRule
	metricRules int // rules other than offline
	targets     map[store.ID]*store.AlertTarget
}

// serverState is one server's evaluation: the rules that apply to it and
// its open conditions.
type serverState struct {
	mu      sync.Mutex
	id      store.ID
	version uint64
	name    string
	cpus    int
	rules   []*store.AlertRule // metric rules that apply
	conds   map[condKey]*cond
	lastAt  int64 // the newest sample evaluated (unix µs)
}

type condKey struct {
	rule  store.ID
	mount string
}

// cond is one (rule, server, mount): pending (since set) or firing. A
// cond that is neither is deleted, so healthy servers cost no memory.
type cond struct {
	since  time.Time
	firing bool
	// busy: a transition is being written; evaluation leaves the cond
	// alone until it is.
	busy bool
}

type transition struct {
	fire   bool
	rule   store.AlertRule
	server store.ID
	name   string
	mount  string
	since  time.Time
	at     time.Time
	value  float64
	reason string
}

// NewEngine returns an engine; call Load before use and Run in the
// background.
func NewEngine(cfg Config) (*Engine, error) {
	if cfg.Store == nil {
		return nil, errors.New("alert: a store is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RefreshEvery <= 0 {
		cfg.RefreshEvery = 30 * time.Second
	}
	if cfg.OfflineEvery <= 0 {
		cfg.OfflineEvery = 5 * time.Second
	}
	if cfg.StaleAfter <= 0 {
		cfg.StaleAfter = 10 * time.Minute
	}
	return &Engine{
		cfg: cfg, st: cfg.Store, log: cfg.Logger.With("component", "alert"),
		servers: map[store.ID]*serverState{}, work: make(chan transition, 4096), wantRef: make(chan struct{}, 1),
	}, nil
}

// Load reads the rules, the fleet and the firing states.
func (e *Engine) Load(ctx context.Context) error { return e.Refresh(ctx) }

// Refresh reloads the rules and the fleet, and takes the firing states
// from PostgreSQL (another controller may have fired or resolved).
func (e *Engine) Refresh(ctx context.Context) error {
	e.refreshMu.Lock()
	defer e.refreshMu.Unlock()
	rules, err := e.st.AlertRules(ctx)
	if err != nil {
		return err
	}
	targets, err := e.st.AlertTargets(ctx)
	if err != nil {
		return err
	}
	firing, err := e.st.FiringAlerts(ctx)
	if err != nil {
		return err
	}
	snap := &snapshot{version: e.version.Add(1), rules: map[store.ID]*store.AlertRule{}, targets: map[store.ID]*store.AlertTarget{}}
	for i := range rules {
		r := &rules[i]
		snap.rules[r.ID] = r
		snap.ordered = append(snap.ordered, r)
		if r.Metric != MetricOffline {
			snap.metricRules++
		}
	}
	for i := range targets {
		snap.targets[targets[i].ID] = &targets[i]
	}
	e.snap.Store(snap)
	e.lastRefresh.Store(e.cfg.Now().UnixNano())

	inDB := make(map[store.ID]map[condKey]store.AlertState)
	for _, f := range firing {
		if inDB[f.ServerID] == nil {
			inDB[f.ServerID] = map[condKey]store.AlertState{}
		}
		inDB[f.ServerID][condKey{f.RuleID, f.Mount}] = f
		e.state(f.ServerID) // so the merge below sees it
	}
	e.mu.RLock()
	states := make([]*serverState, 0, len(e.servers))
	for _, ss := range e.servers {
		states = append(states, ss)
	}
	e.mu.RUnlock()
	for _, ss := range states {
		ss.mu.Lock()
		if !e.rebind(ss, snap) {
			// The server was removed (its states with it).
			ss.mu.Unlock()
			e.mu.Lock()
			delete(e.servers, ss.id)
			e.mu.Unlock()
			continue
		}
		db := inDB[ss.id]
		for k, f := range db {
			c := ss.conds[k]
			if c == nil {
				c = &cond{}
				ss.conds[k] = c
			}
			if !c.busy && !c.firing {
				c.firing, c.since = true, f.PendingSince
			}
		}
		for k, c := range ss.conds {
			if _, ok := db[k]; !ok && c.firing && !c.busy {
				// Resolved elsewhere: start over.
				delete(ss.conds, k)
			}
		}
		ss.mu.Unlock()
	}
	return nil
}

// state returns the server's evaluation state, made on first use.
func (e *Engine) state(id store.ID) *serverState {
	e.mu.RLock()
	ss := e.servers[id]
	e.mu.RUnlock()
	if ss != nil {
		return ss
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if ss = e.servers[id]; ss == nil {
		ss = &serverState{id: id, conds: map[condKey]*cond{}}
		e.servers[id] = ss
	}
	return ss
}

// rebind recomputes which rules apply to ss after a reload, and drops the
// conditions of removed rules. It reports whether the snapshot knows the
// server. ss.mu is held.
func (e *Engine) rebind(ss *serverState, snap *snapshot) (known bool) {
	t := snap.targets[ss.id]
	if ss.version == snap.version {
		return t != nil
	}
	ss.version = snap.version
	known = t != nil
	if t == nil {
		// A server added since the last reload: no labels known yet.
		t = &store.AlertTarget{ID: ss.id, Name: ss.id.String()}
	}
	ss.name, ss.cpus = t.Name, t.CPUs
	ss.rules = ss.rules[:0]
	for _, r := range snap.ordered {
		if r.Metric != MetricOffline && matches(r, t) {
			ss.rules = append(ss.rules, r)
		}
	}
	for k, c := range ss.conds {
		if r, ok := snap.rules[k.rule]; (!ok || !matches(r, t)) && !c.busy && !c.firing {
			delete(ss.conds, k)
		} else if !ok && !c.busy {
			delete(ss.conds, k) // the rule is gone, and its states with it
		}
	}
	return known
}

// requestRefresh asks Run for a reload, at most one every refreshGap for
// servers the snapshot does not know (a new server's first batches; a
// removed server's last ones must not make every batch a reload).
func (e *Engine) requestRefreshForUnknown() {
	now := e.cfg.Now().UnixNano()
	if last := e.lastRefresh.Load(); now-last < int64(refreshGap) {
		return
	}
	e.requestRefresh()
}

// refreshGap spaces reloads asked for by unknown servers.
const refreshGap = 5 * time.Second

func (e *Engine) requestRefresh() {
	select {
	case e.wantRef <- struct{}{}:
	default:
	}
}

// ObserveMetrics evaluates a stored batch of one server's samples. It
// touches memory only; transitions are written by the worker that Run
// starts.
func (e *Engine) ObserveMetrics(serverID store.ID, c *store.MetricColumns) {
	snap := e.snap.Load()
	if snap == nil || snap.metricRules == 0 || c == nil {
		return
	}
	ss := e.state(serverID)
	var out []transition
	ss.mu.Lock()
	if ss.version != snap.version && !e.rebind(ss, snap) {
		e.requestRefreshForUnknown()
	}
	if len(ss.rules) > 0 {
		out = e.evaluate(ss, c)
	}
	ss.mu.Unlock()
	e.enqueue(out)
}

// enqueue hands transitions to the writer without ever blocking the
// caller (an agent's stream): when the queue is full, the transition is
// undone and the next sample makes it again. Called without ss.mu (the
// writer takes it to finish a transition).
func (e *Engine) enqueue(out []transition) {
	for _, t := range out {
		select {
		case e.work <- t:
		default:
			e.undo(t)
		}
	}
}

func (e *Engine) undo(t transition) {
	ss := e.state(t.server)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if c := ss.conds[condKey{t.rule.ID, t.mount}]; c != nil {
		c.busy, c.firing = false, !t.fire
	}
}

// evaluate runs the samples of c through ss's rules, oldest first. ss.mu
// is held.
func (e *Engine) evaluate(ss *serverState, c *store.MetricColumns) []transition {
	var out []transition
	var mounts []string // decoded on first use
	minAt := e.cfg.Now().Add(-e.cfg.StaleAfter).UnixMicro()
	fs := 0
	for i, at := range c.RecordedAt {
		first, n := fs, int(c.DiskCount[i])
		fs += n
		if at <= ss.lastAt || at < minAt {
			continue // a replay, or out of order
		}
		ss.lastAt = at
		t := time.UnixMicro(at)
		for _, r := range ss.rules {
			switch r.Metric {
			case MetricCPU:
				out = e.step(ss, r, "", t, c.CPUPercent[i], true, out)
			case MetricMemory:
				v, ok := ratio(c.MemUsed[i], c.MemTotal[i])
				out = e.step(ss, r, "", t, v, ok, out)
			case MetricSwap:
				v, ok := ratio(c.SwapUsed[i], c.SwapTotal[i])
				out = e.step(ss, r, "", t, v, ok, out)
			case MetricLoad:
				out = e.step(ss, r, "", t, c.Load1[i]/float64(max(ss.cpus, 1)), true, out)
			case MetricNetRx:
				out = e.step(ss, r, "", t, c.NetRxBps[i], c.HasRates[i], out)
			case MetricNetTx:
				out = e.step(ss, r, "", t, c.NetTxBps[i], c.HasRates[i], out)
			case MetricDisk, MetricInodes:
				if n == 0 {
					// An agent that sends only the root filesystem's figures.
					if r.Mount == "" || r.Mount == "/" {
						var v float64
						var ok bool
						if r.Metric == MetricDisk {
							v, ok = c.DiskPercent(i)
						} else {
							v, ok = c.InodesPercent(i)
						}
						out = e.step(ss, r, "/", t, v, ok, out)
					}
					continue
				}
				if mounts == nil {
					mounts = decodeMounts(c.Mounts)
				}
				for j := first; j < first+n; j++ {
					m := mounts[c.FSMount[j]]
					if r.Mount != "" && m != r.Mount {
						continue
					}
					var v float64
					var ok bool
					if r.Metric == MetricDisk {
						v, ok = c.FSPercent(j)
					} else {
						v, ok = c.FSInodesPercent(j)
					}
					out = e.step(ss, r, m, t, v, ok, out)
				}
			}
		}
	}
	return out
}

func ratio(used, total uint64) (float64, bool) {
	if total == 0 {
		return 0, false
	}
	return float64(used) * 100 / float64(total), true
}

func decodeMounts(raw [][]byte) []string {
	out := make([]string, len(raw))
	for i, b := range raw {
		_ = json.Unmarshal(b, &out[i]) // the stream marshalled them
	}
	return out
}

// step applies one value to one condition. ss.mu is held.
func (e *Engine) step(ss *serverState, r *store.AlertRule, mount string, t time.Time, v float64, ok bool, out []transition) []transition {
	if !ok || math.IsNaN(v) {
		return out
	}
	k := condKey{r.ID, mount}
	c := ss.conds[k]
	if c == nil {
		if !fires(r, v) {
			return out // the common case: healthy, nothing kept
		}
		c = &cond{}
		ss.conds[k] = c
	}
	if c.busy {
		return out
	}
	if c.firing {
		if resolves(r, v) {
			c.firing, c.busy = false, true
			out = append(out, transition{rule: *r, server: ss.id, name: ss.name, mount: mount, since: c.since, at: t, value: v})
		}
		return out
	}
	if !fires(r, v) {
		delete(ss.conds, k) // the spike ended before it fired
		return out
	}
	if c.since.IsZero() {
		c.since = t
	}
	if t.Sub(c.since) >= r.For {
		c.firing, c.busy = true, true
		out = append(out, transition{fire: true, rule: *r, server: ss.id, name: ss.name, mount: mount, since: c.since, at: t, value: v})
	}
	return out
}

// Run writes transitions, reloads on NOTIFY and every RefreshEvery, and
// checks offline rules, until ctx ends.
func (e *Engine) Run(ctx context.Context, pool *pgxpool.Pool) {
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); e.writeLoop(ctx) }()
	go func() { defer wg.Done(); e.listen(ctx, pool) }()
	go func() { defer wg.Done(); e.offlineLoop(ctx) }()
	t := time.NewTicker(e.cfg.RefreshEvery)
	defer t.Stop()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-e.wantRef:
		}
		if ctx.Err() != nil {
			break
		}
		if err := e.Refresh(ctx); err != nil && ctx.Err() == nil {
			e.log.Error("reload alert rules", "err", err)
		}
	}
	wg.Wait()
}

// listen asks for a reload whenever alert_rules changes, on any
// controller, and once on every (re)connect (changes made while the
// listening connection was down send nothing).
func (e *Engine) listen(ctx context.Context, pool *pgxpool.Pool) {
	for ctx.Err() == nil {
		func() {
			conn, err := pool.Acquire(ctx)
			if err != nil {
				return
			}
			pc := conn.Hijack() // a LISTENing session must not go back to the pool
			defer pc.Close(context.Background())
			if _, err := pc.Exec(ctx, "LISTEN "+rulesChannel); err != nil {
				return
			}
			e.requestRefresh()
			for {
				if _, err := pc.WaitForNotification(ctx); err != nil {
					return
				}
				e.requestRefresh()
			}
		}()
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// writeLoop writes transitions one at a time, in the order evaluation made
// them (a resolve never overtakes its fire).
func (e *Engine) writeLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case t := <-e.work:
			e.write(ctx, t)
		}
	}
}

func (e *Engine) write(ctx context.Context, t transition) {
	var err error
	for attempt := 0; ; attempt++ {
		err = e.st.InTx(ctx, func(tx *store.Store) error { return writeTransition(ctx, tx, t) })
		if err == nil || errors.Is(err, store.ErrMissingParent) || ctx.Err() != nil || attempt == 2 {
			break
		}
		select { // a short backoff against a database blip
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
		}
	}
	ss := e.state(t.server)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	k := condKey{t.rule.ID, t.mount}
	c := ss.conds[k]
	if c == nil {
		return
	}
	c.busy = false
	switch {
	case errors.Is(err, store.ErrMissingParent):
		delete(ss.conds, k) // the rule or server was removed meanwhile
	case err != nil:
		// Undo, so the next sample tries again.
		e.log.Error("write alert transition", "rule", t.rule.Name, "server", t.name, "mount", t.mount, "fire", t.fire, "err", err)
		c.firing = !t.fire
	default:
		e.written.Add(1)
		if !t.fire {
			delete(ss.conds, k)
		}
	}
}

// writeTransition makes one transition in tx: the conditional state
// change, and the event only if this call made it.
func writeTransition(ctx context.Context, tx *store.Store, t transition) error {
	if t.fire {
		ok, err := tx.FireAlert(ctx, store.AlertState{RuleID: t.rule.ID, ServerID: t.server, Mount: t.mount, PendingSince: t.since, FiringSince: t.at, Value: t.value})
		if err != nil || !ok {
			return err
		}
	} else {
		ok, err := tx.ResolveAlert(ctx, t.rule.ID, t.server, t.mount, t.at, t.value)
		if err != nil || !ok {
			return err
		}
	}
	_, err := notify.Publish(ctx, tx, event(t))
	return err
}

// DedupeKey names the condition of one (rule, server, mount), so the
// resolved event closes the firing one.
func DedupeKey(rule, server store.ID, mount string) string {
	return "alert:" + rule.String() + ":" + server.String() + ":" + mount
}

// The event kinds.
const (
	KindFiring   = "alert.firing"
	KindResolved = "alert.resolved"
)

func event(t transition) notify.Event {
	srv := t.server
	where := t.name
	if t.mount != "" {
		where += " " + t.mount
	}
	ev := notify.Event{ServerID: &srv, Link: "/servers/" + srv.String(), DedupeKey: DedupeKey(t.rule.ID, t.server, t.mount), At: t.at}
	r := t.rule
	if t.fire {
		ev.Kind, ev.Level = KindFiring, notify.Level(r.Level)
		if r.Metric == MetricOffline {
			ev.Title = fmt.Sprintf("%s: %s offline for %s", r.Name, t.name, r.For)
			ev.Body = fmt.Sprintf("No heartbeat from %s since %s.", t.name, t.since.UTC().Format(time.RFC3339))
		} else {
			ev.Title = fmt.Sprintf("%s: %s %s on %s", r.Name, r.Metric, FormatValue(r.Metric, t.value), where)
			ev.Body = fmt.Sprintf("%s on %s has been above %s since %s (%s now). It resolves below %s.",
				r.Metric, where, FormatValue(r.Metric, *r.Above), t.since.UTC().Format(time.RFC3339),
				FormatValue(r.Metric, t.value), FormatValue(r.Metric, *r.ResolveBelow))
		}
		return ev
	}
	ev.Kind, ev.Level, ev.Resolves = KindResolved, notify.Info, true
	switch {
	case t.reason != "":
		ev.Title = fmt.Sprintf("%s resolved on %s", r.Name, where)
		ev.Body = t.reason
	case r.Metric == MetricOffline:
		ev.Title = fmt.Sprintf("%s resolved: %s is back", r.Name, t.name)
	default:
		ev.Title = fmt.Sprintf("%s resolved: %s %s on %s", r.Name, r.Metric, FormatValue(r.Metric, t.value), where)
	}
	return ev
}

// FormatValue writes a metric's value with its unit.
func FormatValue(metric string, v float64) string {
	switch u := unit(metric); u {
	case "%":
		return fmt.Sprintf("%.1f%%", v)
	case " B/s":
		return fmt.Sprintf("%.0f B/s", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// offlineLoop fires offline rules for servers offline for their duration
// and resolves them once the server is back.
func (e *Engine) offlineLoop(ctx context.Context) {
	t := time.NewTicker(e.cfg.OfflineEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := e.CheckOffline(ctx); err != nil && ctx.Err() == nil {
			e.log.Error("check offline alerts", "err", err)
		}
	}
}

// CheckOffline evaluates the offline rules once.
func (e *Engine) CheckOffline(ctx context.Context) error {
	snap := e.snap.Load()
	if snap == nil {
		return nil
	}
	var rules []*store.AlertRule
	for _, r := range snap.ordered {
		if r.Metric == MetricOffline {
			rules = append(rules, r)
		}
	}
	if len(rules) == 0 {
		return nil
	}
	offline, err := e.st.OfflineAlertTargets(ctx)
	if err != nil {
		return err
	}
	now := e.cfg.Now()
	down := make(map[store.ID]bool, len(offline))
	var out []transition
	for i := range offline {
		srv := &offline[i]
		down[srv.ID] = true
		if srv.LastSeenAt == nil {
			continue
		}
		ss := e.state(srv.ID)
		ss.mu.Lock()
		ss.name = srv.Name
		for _, r := range rules {
			if !matches(r, srv) {
				continue
			}
			k := condKey{r.ID, ""}
			c := ss.conds[k]
			if c == nil {
				c = &cond{since: *srv.LastSeenAt}
				ss.conds[k] = c
			}
			if c.firing || c.busy || now.Sub(*srv.LastSeenAt) < r.For {
				continue
			}
			c.firing, c.busy = true, true
			out = append(out, transition{fire: true, rule: *r, server: srv.ID, name: srv.Name, mount: "", since: *srv.LastSeenAt, at: now})
		}
		ss.mu.Unlock()
	}
	// Back (or pending again, or disabled): resolve what fired, forget
	// what was pending.
	e.mu.RLock()
	states := make([]*serverState, 0, len(e.servers))
	for id, ss := range e.servers {
		if !down[id] {
			states = append(states, ss)
		}
	}
	e.mu.RUnlock()
	for _, ss := range states {
		ss.mu.Lock()
		for _, r := range rules {
			k := condKey{r.ID, ""}
			c := ss.conds[k]
			switch {
			case c == nil || c.busy:
			case c.firing:
				c.firing, c.busy = false, true
				out = append(out, transition{rule: *r, server: ss.id, name: ss.name, since: c.since, at: now})
			default:
				delete(ss.conds, k)
			}
		}
		ss.mu.Unlock()
	}
	e.enqueue(out)
	return nil
}

// Written is how many transitions this engine has committed (for tests
// and the benchmark).
func (e *Engine) Written() int64 { return e.written.Load() }

// Target is a server as the engine last loaded it (nil if unknown).
func (e *Engine) Target(id store.ID) *store.AlertTarget {
	if s := e.snap.Load(); s != nil {
		return s.targets[id]
	}
	return nil
}
