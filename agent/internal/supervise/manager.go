package supervise

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Manager owns the supervisors and upstreams of every app on this agent.
// It keeps no state of its own: the state directory is the truth, so a new
// Manager (a restarted agent) sees exactly what the old one left.
type Manager struct {
	cfg      Config
	log      *slog.Logger
	cgParent string

	// healthTimeout bounds how long a new instance may take to answer its
	// health check; stopSlack is what a supervisor gets beyond its grace
	// period to exit before it is killed.
	healthTimeout time.Duration
	stopSlack     time.Duration
	logMax        int64
	backoffReset  time.Duration // 0: a minute (tests shorten it)
	logFiles      int

	mu       sync.Mutex
	locks    map[string]*sync.Mutex
	stopping map[string]bool // retired units an earlier agent left running, being stopped
	relaunch map[string]*relaunchBackoff
	onChange []func()
	kick     chan struct{} // a job changed something: report it now

	stop      chan struct{}
	watchDone chan struct{}
	closeOnce sync.Once
}

// unit is one instance directory as found on disk.
type unit struct {
	dir     string
	cfg     unitConfig
	state   State
	retired bool
	alive   bool // its supervisor runs
}

func (u *unit) stopped() bool { return !u.alive && u.state.State == "stopped" }

// NewManager scans StateDir and re-attaches to running supervisors.
func NewManager(cfg Config) (*Manager, error) {
	if cfg.StateDir == "" || !filepath.IsAbs(cfg.StateDir) {
		return nil, fmt.Errorf("supervise: state dir %q must be an absolute path", cfg.StateDir)
	}
	if cfg.Executable == "" || !filepath.IsAbs(cfg.Executable) {
		return nil, fmt.Errorf("supervise: executable %q must be an absolute path", cfg.Executable)
	}
	if _, err := os.Stat(cfg.Executable); err != nil {
		return nil, fmt.Errorf("supervise: executable: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("supervise: %w", err)
	}
	m := &Manager{
		cfg: cfg, log: cfg.Logger, cgParent: delegatedCgroup(),
		healthTimeout: 2 * time.Minute, stopSlack: 10 * time.Second,
		logMax: defaultLogMax, logFiles: defaultLogN,
		locks: map[string]*sync.Mutex{}, stopping: map[string]bool{}, relaunch: map[string]*relaunchBackoff{}, kick: make(chan struct{}, 1), stop: make(chan struct{}), watchDone: make(chan struct{}),
	}
	apps, _ := m.appIDs()
	for _, id := range apps {
		m.reattach(id)
	}
	go m.watch()
	return m, nil
}

func (m *Manager) appDir(id string) string   { return filepath.Join(m.cfg.StateDir, id) }
func (m *Manager) upDir(id string) string    { return filepath.Join(m.cfg.StateDir, id, upstreamDir) }
func (m *Manager) unitRoot(id string) string { return filepath.Join(m.cfg.StateDir, id, unitsDir) }

func (m *Manager) appIDs() ([]string, error) {
	ents, err := os.ReadDir(m.cfg.StateDir)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range ents {
		if e.IsDir() && idRE.MatchString(e.Name()) {
			ids = append(ids, e.Name())
		}
	}
	return ids, nil
}

func (m *Manager) lock(id string) *sync.Mutex {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.locks[id]
	if l == nil {
		l = &sync.Mutex{}
		m.locks[id] = l
	}
	return l
}

// units lists an app's instance directories, oldest first.
func (m *Manager) units(id string) []*unit {
	root := m.unitRoot(id)
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil
	}
	var out []*unit
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		u := &unit{dir: filepath.Join(root, e.Name())}
		if readJSON(filepath.Join(u.dir, unitFile), &u.cfg) != nil {
			continue // half made: the manager died between mkdir and write
		}
		readJSON(filepath.Join(u.dir, stateFile), &u.state)
		_, err := os.Stat(filepath.Join(u.dir, retiredFile))
		u.retired = err == nil
		u.alive = isOurs(readPid(u.dir), "supervise", u.dir)
		out = append(out, u)
	}
	slices.SortFunc(out, func(a, b *unit) int {
		return cmp.Or(cmp.Compare(a.cfg.Created, b.cfg.Created), cmp.Compare(a.dir, b.dir))
	})
	return out
}

// live are the units the manager still wants (not retired).
func live(us []*unit) []*unit {
	var out []*unit
	for _, u := range us {
		if !u.retired {
			out = append(out, u)
		}
	}
	return out
}

// reattach takes over what an earlier agent left: supervisors that died
// (a reboot, a kill) and were not stopped on purpose are started again,
// retired ones a stop was interrupted for are stopped.
func (m *Manager) reattach(id string) {
	for _, u := range m.units(id) {
		switch {
		case u.retired && u.alive:
			m.mu.Lock()
			busy := m.stopping[u.dir]
			m.stopping[u.dir] = true
			m.mu.Unlock()
			if !busy {
				go func() {
					m.stopUnits(context.Background(), []*unit{u}, true)
					m.mu.Lock()
					delete(m.stopping, u.dir)
					m.mu.Unlock()
				}()
			}
		case !u.retired && !u.alive && u.state.State != "stopped":
			if u.state.State == "" && time.Since(time.Unix(0, u.cfg.Created)) < 30*time.Second {
				continue // being started (by another manager, in tests)
			}
			if !m.mayRelaunch(u.dir) {
				continue
			}
			m.killLeftover(u)
			if err := m.launch("supervise", u.dir); err != nil {
				m.log.Error("restart supervisor", "dir", u.dir, "err", err)
			} else {
				m.log.Info("restarted supervisor", "app", id, "process", u.cfg.Process, "instance", u.cfg.Index)
			}
		}
	}
	var uc upstreamConfig
	dir := m.upDir(id)
	if readJSON(filepath.Join(dir, upstreamFile), &uc) == nil && !isOurs(readPid(dir), "upstream", dir) && m.mayRelaunch(dir) {
		if err := m.launchUpstream(dir); err != nil {
			m.log.Error("restart upstream", "app", id, "err", err)
		}
	}
}

// relaunchBackoff spaces out the attempts to start again a supervisor or
// upstream that keeps dying (a port taken by another program, a release
// directory gone): 1s doubling to a minute.
type relaunchBackoff struct {
	n    int
	next time.Time
}

func (m *Manager) mayRelaunch(dir string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	b := m.relaunch[dir]
	if b == nil {
		b = &relaunchBackoff{}
		m.relaunch[dir] = b
	}
	now := time.Now()
	if now.Before(b.next) {
		return false
	}
	if now.Sub(b.next) > 5*time.Minute {
		b.n = 0 // it stayed up a good while: a fresh failure
	}
	b.next = now.Add(min(time.Second<<b.n, time.Minute))
	b.n = min(b.n+1, 6)
	return true
}

// killLeftover kills the process group of an instance whose supervisor
// died without stopping it, so its port is free for the next run.
func (m *Manager) killLeftover(u *unit) {
	pid := u.state.Pid
	if pid <= 1 || !alive(pid) {
		return
	}
	if pgid, err := syscall.Getpgid(pid); err == nil && pgid == pid {
		syscall.Kill(-pid, syscall.SIGKILL)
	}
}

// launch starts `berth-agent kind --dir dir` detached: its own session,
// no terminal, stdout and stderr to dir/supervisor.log, so the agent's
// exit (or kill -9) does not reach it.
func (m *Manager) launch(kind, dir string) error {
	logPath := filepath.Join(dir, superLogFile)
	if st, err := os.Stat(logPath); err == nil && st.Size() > 1<<20 {
		os.Truncate(logPath, 0)
	}
	lf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer lf.Close()
	cmd := exec.Command(m.cfg.Executable, kind, "--dir", dir)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", kind, err)
	}
	pid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }() // reap it while we live
	// It writes its pid file once it holds the directory's lock (a second
	// one for the same directory exits instead); wait for that, so a scan
	// never takes a starting supervisor for a dead one.
	deadline := time.Now().Add(10 * time.Second)
	for readPid(dir) != pid || !isOurs(pid, kind, dir) {
		select {
		case <-exited:
			return fmt.Errorf("%s exited at once: %s", kind, tailFile(logPath, 5))
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not start", kind)
		}
	}
	return nil
}

// startUnit makes a unit directory for instance index of p and starts
// its supervisor.
func (m *Manager) startUnit(app App, p proc, index, port uint32) (*unit, error) {
	now := time.Now().UnixNano()
	dir := filepath.Join(m.unitRoot(app.ID), fmt.Sprintf("%s.%d.%d", p.Name, index, now))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	u := &unit{dir: dir, cfg: unitConfig{
		App: app.ID, Process: p.Name, Index: index, Release: app.ReleaseID, ReleaseDir: app.ReleaseDir,
		Command: p.Command, UID: app.UID, GID: app.GID, Env: app.Env, Port: port,
		StopSignal: p.StopSignal, StopGrace: p.StopGrace, Restart: p.Restart,
		MemoryMax: p.MemoryMax, CPUMax: p.CPUMax, Hash: p.hash(app), HealthPath: p.HealthPath,
		CgroupParent: m.cgParent, BackoffReset: m.backoffReset, LogMaxBytes: m.logMax, LogFiles: m.logFiles, Created: now,
	}}
	if err := writeJSON(filepath.Join(dir, unitFile), u.cfg); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := m.launch("supervise", dir); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("process %s instance %d: %w", p.Name, index, err)
	}
	u.alive = true
	return u, nil
}

// stopUnits stops supervisors (each stops its process: stop signal,
// grace, KILL) and waits for them to exit. retire marks them first as no
// longer wanted, so an interrupted stop is finished by the next agent.
func (m *Manager) stopUnits(ctx context.Context, us []*unit, retire bool) {
	var wg sync.WaitGroup
	for _, u := range us {
		if retire {
			os.WriteFile(filepath.Join(u.dir, retiredFile), nil, 0o600)
			u.retired = true
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.stopOne(ctx, u)
		}()
	}
	wg.Wait()
}

func (m *Manager) stopOne(ctx context.Context, u *unit) {
	pid := readPid(u.dir)
	if !isOurs(pid, "supervise", u.dir) {
		m.killLeftover(u)
		u.alive = false
		return
	}
	syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(u.cfg.StopGrace + m.stopSlack)
	for isOurs(pid, "supervise", u.dir) {
		if time.Now().After(deadline) || ctx.Err() != nil && time.Now().After(deadline.Add(-m.stopSlack)) {
			// The supervisor is stuck: end it and what it ran.
			var st State
			readJSON(filepath.Join(u.dir, stateFile), &st)
			syscall.Kill(pid, syscall.SIGKILL)
			if st.Pid > 1 {
				if pgid, err := syscall.Getpgid(st.Pid); err == nil && pgid == st.Pid {
					syscall.Kill(-st.Pid, syscall.SIGKILL)
				}
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	u.alive = false
}

// tailFile is the last n lines of a text file, for error messages.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(b) > 8<<10 {
		b = b[len(b)-8<<10:]
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// logTail is the last lines an instance printed, without timestamps.
func logTail(dir string, n int) string {
	lines := readTail(dir, n)
	var b strings.Builder
	for _, l := range lines {
		if b.Len() > 4<<10 {
			break
		}
		b.WriteString("  ")
		b.WriteString(l.Text)
		b.WriteByte('\n')
	}
	return strings.TrimRight(b.String(), "\n")
}

// freePort finds a loopback port nothing listens on now, avoiding the
// ports given.
func freePort(avoid map[uint32]bool) (uint32, error) {
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("find a free port: %w", err)
		}
		port := uint32(ln.Addr().(*net.TCPAddr).Port)
		ln.Close()
		if !avoid[port] {
			avoid[port] = true
			return port, nil
		}
	}
	return 0, errors.New("find a free port: none left")
}

func (m *Manager) usedPorts(id string) map[uint32]bool {
	used := map[uint32]bool{}
	for _, u := range m.units(id) {
		if u.cfg.Port != 0 && (u.alive || !u.retired) {
			used[u.cfg.Port] = true
		}
	}
	var uc upstreamConfig
	if readJSON(filepath.Join(m.upDir(id), upstreamFile), &uc) == nil {
		used[uc.Port] = true
	}
	return used
}

func portsOf(us []*unit) []uint32 {
	var out []uint32
	for _, u := range us {
		if u.cfg.Port != 0 {
			out = append(out, u.cfg.Port)
		}
	}
	return out
}

func addr(port uint32) string { return "127.0.0.1:" + strconv.Itoa(int(port)) }

// Close stops watching; never stops app processes.
func (m *Manager) Close() error {
	m.closeOnce.Do(func() {
		close(m.stop)
		<-m.watchDone
	})
	return nil
}
