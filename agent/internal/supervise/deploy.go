package supervise

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Deploy moves the app's declared processes to app.ReleaseDir without
// refusing a request: instances of processes with a port start on fresh
// ports and must pass their health check before the upstream switches to
// them; the old ones are then stopped gracefully. Workers restart after
// the switch; processes no longer declared stop. A failed health check
// stops the new instances and leaves the old ones serving.
func (m *Manager) Deploy(ctx context.Context, app App, logf func(format string, args ...any)) error {
	procs, err := checkApp(app)
	if err != nil {
		return err
	}
	logf = orDiscard(logf)
	l := m.lock(app.ID)
	l.Lock()
	defer l.Unlock()
	defer m.changed()
	if err := m.ensureUpstream(ctx, app, logf); err != nil {
		return err
	}
	if err := m.replace(ctx, app, procs, logf); err != nil {
		return err
	}
	if err := m.stopUndeclared(ctx, app, procs, nil, logf); err != nil {
		return err
	}
	m.gc(app.ID)
	return nil
}

// Action applies apply|start|stop|restart to the named processes (all
// when names is empty).
func (m *Manager) Action(ctx context.Context, app App, action string, names []string, logf func(format string, args ...any)) error {
	procs, err := checkApp(app)
	if err != nil {
		return err
	}
	switch action {
	case "apply", "start", "stop", "restart":
	default:
		return fmt.Errorf("process action %.20q: must be apply, start, stop or restart", action)
	}
	logf = orDiscard(logf)
	l := m.lock(app.ID)
	l.Lock()
	defer l.Unlock()
	defer m.changed()
	declared := map[string]proc{}
	for _, p := range procs {
		declared[p.Name] = p
	}
	running := map[string][]*unit{}
	for _, u := range live(m.units(app.ID)) {
		running[u.cfg.Process] = append(running[u.cfg.Process], u)
	}
	for _, n := range names {
		_, ok := declared[n]
		// stop and apply may name a process no longer declared that still
		// runs (to stop it); start and restart need its declaration.
		if !ok && (running[n] == nil || action == "start" || action == "restart") {
			return fmt.Errorf("process %.40q: not declared for this app", n)
		}
	}
	want := func(name string) bool { return len(names) == 0 || slices.Contains(names, name) }

	if action == "stop" {
		var us []*unit
		for name, list := range running {
			if want(name) {
				for _, u := range list {
					if !u.stopped() {
						us = append(us, u)
					}
				}
			}
		}
		if len(us) == 0 {
			logf("nothing to stop")
			return nil
		}
		if err := m.dropBackends(ctx, app.ID, us); err != nil {
			return err
		}
		m.stopUnits(ctx, us, false)
		for _, u := range us {
			logf("stopped %s instance %d", u.cfg.Process, u.cfg.Index)
		}
		return nil
	}
	if err := m.ensureUpstream(ctx, app, logf); err != nil {
		return err
	}
	var todo []proc
	for _, p := range procs {
		if !want(p.Name) {
			continue
		}
		up := 0
		same := true
		for _, u := range running[p.Name] {
			if u.alive && (u.state.State == "running" || u.state.State == "starting" || u.state.State == "restarting") {
				up++
			}
			if u.cfg.Hash != p.hash(app) {
				same = false
			}
		}
		full := up == int(p.Instances) && len(running[p.Name]) == int(p.Instances)
		switch action {
		case "restart":
			todo = append(todo, p)
		case "start":
			if !full {
				todo = append(todo, p)
			}
		case "apply":
			if !full || !same {
				todo = append(todo, p)
			}
		}
	}
	if len(todo) == 0 {
		logf("every process asked for is running as declared")
	}
	if err := m.replace(ctx, app, todo, logf); err != nil {
		return err
	}
	if action == "apply" {
		if err := m.stopUndeclared(ctx, app, procs, names, logf); err != nil {
			return err
		}
	}
	m.gc(app.ID)
	return nil
}

// orDiscard makes logf safe to call from the health-check goroutines.
func orDiscard(logf func(string, ...any)) func(string, ...any) {
	if logf == nil {
		return func(string, ...any) {}
	}
	var mu sync.Mutex
	return func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		logf(format, args...)
	}
}

// replace starts new instances of procs and retires the ones they
// replace (see Deploy).
func (m *Manager) replace(ctx context.Context, app App, procs []proc, logf func(string, ...any)) error {
	if len(procs) == 0 {
		return nil
	}
	old := map[string][]*unit{}
	for _, u := range live(m.units(app.ID)) {
		old[u.cfg.Process] = append(old[u.cfg.Process], u)
	}
	avoid := m.usedPorts(app.ID)
	var started, oldWeb []*unit
	abort := func(err error) error {
		m.stopUnits(context.WithoutCancel(ctx), started, true)
		for _, u := range started {
			os.RemoveAll(u.dir)
		}
		return err
	}
	for _, p := range procs {
		if !p.Port {
			continue
		}
		oldWeb = append(oldWeb, old[p.Name]...)
		for i := range p.Instances {
			port, err := freePort(avoid)
			if err != nil {
				return abort(err)
			}
			u, err := m.startUnit(app, p, i, port)
			if err != nil {
				return abort(err)
			}
			started = append(started, u)
		}
	}
	if len(started) > 0 {
		logf("started %d new instance(s) on %s; waiting for their health checks", len(started), portList(portsOf(started)))
		errs := make(chan error, len(started))
		for i, u := range started {
			go func() {
				err := m.waitHealthy(ctx, u, app.HealthTimeout)
				// The free port found was taken before the instance bound
				// it (another program on this host): try fresh ones.
				for try := 0; err != nil && try < 3 && strings.Contains(err.Error(), "address already in use"); try++ {
					m.stopUnits(context.WithoutCancel(ctx), []*unit{u}, true)
					os.RemoveAll(u.dir)
					port, perr := freePort(m.usedPorts(app.ID))
					if perr != nil {
						break
					}
					p := procs[slices.IndexFunc(procs, func(p proc) bool { return p.Name == u.cfg.Process })]
					if u, err = m.startUnit(app, p, u.cfg.Index, port); err != nil {
						break
					}
					started[i] = u
					logf("%s instance %d: its port was taken, started again on port %d", p.Name, u.cfg.Index, port)
					err = m.waitHealthy(ctx, u, app.HealthTimeout)
				}
				errs <- err
			}()
		}
		var first error
		for range started {
			if err := <-errs; err != nil && first == nil {
				first = err
			}
		}
		if first != nil {
			logf("a new instance failed: stopping the new instances, the running ones keep serving")
			return abort(first)
		}
		logf("new instances healthy")
		if err := m.switchBackends(ctx, app.ID, portsOf(oldWeb), portsOf(started), logf); err != nil {
			return abort(err)
		}
		if len(oldWeb) > 0 {
			logf("stopping %d old instance(s) gracefully", len(oldWeb))
			m.stopUnits(context.WithoutCancel(ctx), oldWeb, true)
		}
	}
	for _, p := range procs {
		if p.Port {
			continue
		}
		if o := old[p.Name]; len(o) > 0 {
			// It may have had a port until now: take those instances out
			// of the upstream first.
			if err := m.dropBackends(ctx, app.ID, o); err != nil {
				return err
			}
			m.stopUnits(context.WithoutCancel(ctx), o, true)
		}
		var us []*unit
		for i := range p.Instances {
			u, err := m.startUnit(app, p, i, 0)
			if err != nil {
				return err
			}
			us = append(us, u)
		}
		// A worker has no health check; wait only until it runs, so the
		// report sent after the job shows its pid.
		for _, u := range us {
			m.waitStarted(ctx, u)
		}
		logf("%s: %d instance(s) started", p.Name, p.Instances)
	}
	return nil
}

func portList(ports []uint32) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(int(p))
	}
	return "port(s) " + strings.Join(s, ", ")
}

// stopUndeclared retires running processes that are no longer declared
// (limited to names when given).
func (m *Manager) stopUndeclared(ctx context.Context, app App, procs []proc, names []string, logf func(string, ...any)) error {
	var us []*unit
	for _, u := range live(m.units(app.ID)) {
		if slices.ContainsFunc(procs, func(p proc) bool { return p.Name == u.cfg.Process }) {
			continue
		}
		if len(names) > 0 && !slices.Contains(names, u.cfg.Process) {
			continue
		}
		us = append(us, u)
	}
	if len(us) == 0 {
		return nil
	}
	if err := m.dropBackends(ctx, app.ID, us); err != nil {
		return err
	}
	m.stopUnits(context.WithoutCancel(ctx), us, true)
	for _, u := range us {
		logf("stopped %s instance %d: no longer declared", u.cfg.Process, u.cfg.Index)
	}
	return nil
}

// waitHealthy waits until the instance answers its health check (or, with
// no health path, accepts a TCP connection) within timeout (0: the
// Manager's default), failing early when it exits.
func (m *Manager) waitHealthy(ctx context.Context, u *unit, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = m.healthTimeout
	}
	name := fmt.Sprintf("process %s instance %d (port %d)", u.cfg.Process, u.cfg.Index, u.cfg.Port)
	fail := func(reason string) error {
		tail := logTail(u.dir, 10)
		if tail != "" {
			return fmt.Errorf("%s: %s; its last output:\n%s", name, reason, tail)
		}
		return fmt.Errorf("%s: %s (it printed nothing)", name, reason)
	}
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: 2 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	var last string
	for {
		var st State
		readJSON(filepath.Join(u.dir, stateFile), &st)
		if st.Restarts > 0 || st.State == "failed" || st.State == "stopped" || (st.State == "restarting" && st.LastError != "") {
			return fail(cmpStr(st.LastError, "it exited"))
		}
		if !isOurs(readPid(u.dir), "supervise", u.dir) {
			return fail("its supervisor exited: " + tailFile(filepath.Join(u.dir, superLogFile), 3))
		}
		if st.State == "running" {
			if u.cfg.HealthPath != "" {
				resp, err := client.Get("http://" + addr(u.cfg.Port) + u.cfg.HealthPath)
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode/100 == 2 {
						return nil
					}
					last = fmt.Sprintf("GET %s answered %s", u.cfg.HealthPath, resp.Status)
				} else {
					last = fmt.Sprintf("GET %s: %v", u.cfg.HealthPath, errors.Unwrap(err))
				}
			} else {
				c, err := net.DialTimeout("tcp", addr(u.cfg.Port), time.Second)
				if err == nil {
					c.Close()
					return nil
				}
				last = "no TCP connection: " + err.Error()
			}
		}
		if time.Now().After(deadline) {
			return fail(fmt.Sprintf("not healthy after %s (%s)", timeout, cmpStr(last, "never started")))
		}
		select {
		case <-ctx.Done():
			return fail("deploy cancelled: " + ctx.Err().Error())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func cmpStr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// ensureUpstream starts, moves or stops the app's upstream to match
// app.UpstreamPort.
func (m *Manager) ensureUpstream(ctx context.Context, app App, logf func(string, ...any)) error {
	dir := m.upDir(app.ID)
	var cur upstreamConfig
	haveCfg := readJSON(filepath.Join(dir, upstreamFile), &cur) == nil
	running := isOurs(readPid(dir), "upstream", dir)
	if app.UpstreamPort == 0 {
		if running {
			m.stopUpstream(dir)
			logf("upstream stopped: the app has no upstream port")
		}
		if haveCfg {
			os.Remove(filepath.Join(dir, upstreamFile))
		}
		return nil
	}
	if running && cur.Port == app.UpstreamPort {
		return nil
	}
	if running {
		m.stopUpstream(dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(dir, upstreamFile), upstreamConfig{Port: app.UpstreamPort}); err != nil {
		return err
	}
	if err := m.launchUpstream(dir); err != nil {
		return fmt.Errorf("upstream on 127.0.0.1:%d: %w", app.UpstreamPort, err)
	}
	logf("upstream listening on 127.0.0.1:%d", app.UpstreamPort)
	return nil
}

// launchUpstream starts the upstream and waits until it listens (it writes
// applied once it does).
func (m *Manager) launchUpstream(dir string) error {
	os.Remove(filepath.Join(dir, appliedFile))
	if err := m.launch("upstream", dir); err != nil {
		return err
	}
	pid := readPid(dir)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, appliedFile)); err == nil {
			return nil
		}
		if !isOurs(pid, "upstream", dir) {
			return fmt.Errorf("upstream exited: %s", tailFile(filepath.Join(dir, superLogFile), 3))
		}
		if time.Now().After(deadline) {
			return errors.New("upstream did not start listening")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (m *Manager) stopUpstream(dir string) {
	pid := readPid(dir)
	if !isOurs(pid, "upstream", dir) {
		return
	}
	syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(30*time.Second + m.stopSlack)
	for isOurs(pid, "upstream", dir) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// switchBackends replaces the ports remove with add in backends.json and,
// when the upstream runs, waits until it applied the new set.
func (m *Manager) switchBackends(ctx context.Context, id string, remove, add []uint32, logf func(string, ...any)) error {
	dir := m.upDir(id)
	if !isOurs(readPid(dir), "upstream", dir) {
		return nil
	}
	var set backendSet
	if err := readJSON(filepath.Join(dir, backendsFile), &set); err != nil && !os.IsNotExist(err) {
		return err
	}
	next := backendSet{Generation: set.Generation + 1}
	for _, b := range set.Backends {
		if !slices.ContainsFunc(remove, func(p uint32) bool { return addr(p) == b }) {
			next.Backends = append(next.Backends, b)
		}
	}
	for _, p := range add {
		next.Backends = append(next.Backends, addr(p))
	}
	if err := writeJSON(filepath.Join(dir, backendsFile), next); err != nil {
		return err
	}
	pid := readPid(dir)
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return fmt.Errorf("signal upstream: %w", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join(dir, appliedFile))
		if g, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && g >= next.Generation {
			break
		}
		if time.Now().After(deadline) || !isOurs(pid, "upstream", dir) {
			// Put the old set back on disk so the next reload does not
			// pick up a half-done switch.
			set.Generation = next.Generation + 1
			writeJSON(filepath.Join(dir, backendsFile), set)
			syscall.Kill(pid, syscall.SIGHUP)
			return errors.New("the upstream did not apply the new backends: " + tailFile(filepath.Join(dir, superLogFile), 3))
		}
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
	if len(next.Backends) > 0 {
		logf("upstream switched to %s", strings.Join(next.Backends, ", "))
	} else {
		logf("upstream has no backends")
	}
	return nil
}

func (m *Manager) dropBackends(ctx context.Context, id string, us []*unit) error {
	if ports := portsOf(us); len(ports) > 0 {
		return m.switchBackends(ctx, id, ports, nil, func(string, ...any) {})
	}
	return nil
}

// keepRetired is how many stopped instances of a process keep their
// directory (and so their logs) after being replaced.
const keepRetired = 4

// gc removes the directories of retired instances beyond keepRetired per
// process.
func (m *Manager) gc(id string) {
	byProc := map[string][]*unit{}
	for _, u := range m.units(id) {
		if u.retired && !u.alive {
			byProc[u.cfg.Process] = append(byProc[u.cfg.Process], u)
		}
	}
	for _, us := range byProc {
		for len(us) > keepRetired {
			os.RemoveAll(us[0].dir)
			us = us[1:]
		}
	}
}

// DeleteApp stops everything of the app, its upstream included, and
// removes its state directory.
func (m *Manager) DeleteApp(ctx context.Context, appID string) error {
	if !idRE.MatchString(appID) {
		return fmt.Errorf("app id %.40q: not a valid id", appID)
	}
	l := m.lock(appID)
	l.Lock()
	defer l.Unlock()
	defer m.changed()
	m.stopUpstream(m.upDir(appID))
	m.stopUnits(ctx, m.units(appID), true)
	for _, u := range m.units(appID) {
		if u.alive {
			return fmt.Errorf("process %s instance %d did not stop", u.cfg.Process, u.cfg.Index)
		}
	}
	if err := os.RemoveAll(m.appDir(appID)); err != nil {
		return fmt.Errorf("remove app state: %w", err)
	}
	return nil
}

// waitStarted waits (briefly) until the supervisor has run the process
// once.
func (m *Manager) waitStarted(ctx context.Context, u *unit) {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var st State
		if readJSON(filepath.Join(u.dir, stateFile), &st) == nil && (st.Pid != 0 || st.LastExitCode != 0 || st.State != "starting") {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
