package supervise

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// watchEvery is how often the manager looks at the state files; it is
// also the debounce of OnChange.
const watchEvery = 500 * time.Millisecond

// Report is every app's processes now: the instances the manager wants
// (stopped ones included), read from their supervisors' state files.
func (m *Manager) Report() *agentv1.ProcessReport {
	rep := &agentv1.ProcessReport{}
	ids, _ := m.appIDs()
	for _, id := range ids {
		ap := &agentv1.AppProcesses{AppId: id}
		dir := m.upDir(id)
		var uc upstreamConfig
		if readJSON(filepath.Join(dir, upstreamFile), &uc) == nil && isOurs(readPid(dir), "upstream", dir) {
			ap.UpstreamPort = uc.Port
		}
		byName := map[string]*agentv1.ProcessState{}
		for _, u := range live(m.units(id)) {
			ps := byName[u.cfg.Process]
			if ps == nil {
				ps = &agentv1.ProcessState{Name: u.cfg.Process}
				byName[u.cfg.Process] = ps
				ap.Processes = append(ap.Processes, ps)
			}
			ps.Release = u.cfg.Release // units are oldest first: the newest wins
			ps.Instances = append(ps.Instances, instanceState(u))
		}
		if len(ap.Processes) == 0 && ap.UpstreamPort == 0 {
			continue
		}
		slices.SortFunc(ap.Processes, func(a, b *agentv1.ProcessState) int { return strings.Compare(a.Name, b.Name) })
		for _, ps := range ap.Processes {
			ps.State = aggregate(ps.Instances)
		}
		rep.Apps = append(rep.Apps, ap)
	}
	return rep
}

func instanceState(u *unit) *agentv1.InstanceState {
	st := u.state
	is := &agentv1.InstanceState{
		Index: u.cfg.Index, Pid: int32(st.Pid), Port: u.cfg.Port, State: st.State,
		Restarts: st.Restarts, LastExitCode: int32(st.LastExitCode), LastError: st.LastError,
		LimitsEnforced: st.LimitsEnforced,
	}
	if is.State == "" {
		is.State = "starting"
	}
	if !st.StartedAt.IsZero() {
		is.StartedAt = timestamppb.New(st.StartedAt)
	}
	if !u.alive && st.State != "stopped" {
		// Its supervisor is gone (killed, or the host rebooted and the
		// agent has not started it again yet).
		is.State, is.Pid = "failed", 0
		is.LastError = strings.TrimSpace("supervisor not running; " + st.LastError)
	}
	return is
}

// aggregate is a process's state from its instances' (see ProcessState).
func aggregate(is []*agentv1.InstanceState) string {
	count := map[string]int{}
	for _, i := range is {
		count[i.State]++
	}
	switch {
	case count["running"] == len(is):
		return "running"
	case count["failed"] > 0:
		return "failed"
	case count["restarting"] > 0:
		return "restarting"
	case count["starting"] > 0:
		return "starting"
	case count["running"] > 0:
		return "running"
	}
	return "stopped"
}

// ReleasesInUse are the release dirs of the instances the manager wants
// (running or stopped to be started again): prune must keep them.
func (m *Manager) ReleasesInUse(appID string) []string {
	if !idRE.MatchString(appID) {
		return nil
	}
	var out []string
	for _, u := range m.units(appID) {
		if (!u.retired || u.alive) && !slices.Contains(out, u.cfg.ReleaseDir) {
			out = append(out, u.cfg.ReleaseDir)
		}
	}
	return out
}

// OnChange registers fn, called (debounced) when any state changes.
func (m *Manager) OnChange(fn func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.onChange = append(m.onChange, fn)
}

// changed asks the watcher to call the OnChange functions: they run on
// its goroutine, never under an app's lock, and a burst of changes is
// reported once.
func (m *Manager) changed() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

func (m *Manager) notify() {
	m.mu.Lock()
	fns := slices.Clone(m.onChange)
	m.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

// watch polls the state files: a change is reported through OnChange, and
// a supervisor that died without being stopped (killed, out of memory) is
// started again.
func (m *Manager) watch() {
	defer close(m.watchDone)
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	last := m.fingerprint()
	for {
		kicked := false
		select {
		case <-m.stop:
			return
		case <-t.C:
		case <-m.kick:
			kicked = true
		}
		ids, _ := m.appIDs()
		for _, id := range ids {
			l := m.lock(id)
			if l.TryLock() { // a job on the app owns its units meanwhile
				m.reattach(id)
				l.Unlock()
			}
		}
		if fp := m.fingerprint(); fp != last || kicked {
			last = fp
			m.notify()
		}
	}
}

// fingerprint changes whenever a state file, a unit or a supervisor's
// life does.
func (m *Manager) fingerprint() string {
	var b strings.Builder
	ids, _ := m.appIDs()
	for _, id := range ids {
		dir := m.upDir(id)
		fmt.Fprintf(&b, "%s %v\n", id, isOurs(readPid(dir), "upstream", dir))
		for _, u := range m.units(id) {
			var mod int64
			if st, err := os.Stat(filepath.Join(u.dir, stateFile)); err == nil {
				mod = st.ModTime().UnixNano()
			}
			fmt.Fprintf(&b, "%s %v %v %d\n", u.dir, u.retired, u.alive, mod)
		}
	}
	return b.String()
}
