package supervise

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestCrashRestartBackoff: a process that exits is restarted with a
// growing delay, and its restarts are counted.
func TestCrashRestartBackoff(t *testing.T) {
	m := newManager(t, t.TempDir())
	app := newApp(t, false, workerSpec(`echo "start $(date +%s.%N)"; exit 3`))
	cleanup(t, m, app.ID)
	deploy(t, m, app)
	// The watcher reports restarts no job caused.
	var changes atomic.Int32
	m.OnChange(func() { changes.Add(1) })
	waitFor(t, 30*time.Second, "OnChange for a restart", func() bool { return changes.Load() > 0 })
	waitFor(t, 30*time.Second, "three restarts", func() bool {
		p := procReport(m, app.ID, "worker")
		u := live(m.units(app.ID))
		return len(p.GetInstances()) == 1 && p.GetInstances()[0].GetRestarts() >= 3 && len(readTail(u[0].dir, 10)) >= 4
	})
	in := procReport(m, app.ID, "worker").GetInstances()[0]
	if in.GetLastExitCode() != 3 || !strings.Contains(in.GetLastError(), "code 3") {
		t.Fatalf("instance: %v", in)
	}
	// A process killed from outside (the OOM killer, say) says by what.
	killed := workerSpec(`kill -9 $$`)
	killed.Name, killed.Restart = "killed", "never"
	app.Processes = append(app.Processes, killed)
	if err := m.Action(context.Background(), app, "apply", []string{"killed"}, logT(t)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the killed process failed", func() bool {
		return procReport(m, app.ID, "killed").GetState() == "failed"
	})
	if k := procReport(m, app.ID, "killed").GetInstances()[0]; k.GetLastError() != "killed by signal 9 (killed)" || k.GetLastExitCode() != -1 {
		t.Fatalf("killed: %v", k)
	}
	var u *unit
	for _, x := range live(m.units(app.ID)) {
		if x.cfg.Process == "worker" {
			u = x
		}
	}
	lines := readTail(u.dir, 100)
	if len(lines) < 4 {
		t.Fatalf("%d start lines", len(lines))
	}
	// Backoff doubles from 1s: the runs are at least 1s, then 2s, then 4s
	// apart (lower bounds the design guarantees, whatever the load).
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		if gap := lines[i+1].Time.Sub(lines[i].Time); gap < want {
			t.Fatalf("restart %d came %s after the run before, want at least %s", i+1, gap, want)
		}
	}
}

// TestBackoffResets: a process that ran longer than the reset period
// restarts after the shortest backoff again, one that crashes at once
// waits longer each time.
func TestBackoffResets(t *testing.T) {
	m := newManager(t, t.TempDir())
	m.backoffReset = time.Second
	long := workerSpec(`echo start; sleep 1.5; exit 1`)
	quick := workerSpec(`exit 1`)
	quick.Name = "quick"
	app := newApp(t, false, long, quick)
	cleanup(t, m, app.ID)
	deploy(t, m, app)
	state := func(name string) State {
		for _, u := range live(m.units(app.ID)) {
			if u.cfg.Process == name {
				return u.state
			}
		}
		return State{}
	}
	waitFor(t, 30*time.Second, "the quick one's third restart pending", func() bool {
		st := state("quick")
		return st.Restarts == 2 && st.State == "restarting"
	})
	if b := state("quick").BackoffMS; b != 4000 {
		t.Fatalf("quick: backoff %dms before its third restart, want 4000", b)
	}
	waitFor(t, 30*time.Second, "two restarts of the long one", func() bool { return state("worker").Restarts >= 2 })
	waitFor(t, 30*time.Second, "the long one exiting again", func() bool { return state("worker").State == "restarting" })
	if b := state("worker").BackoffMS; b != 1000 {
		t.Fatalf("long: backoff %dms after a run past the reset, want 1000", b)
	}
}

// TestRestartPolicies: never and on-failure leave a process that exited
// failed or stopped, without restarting it.
func TestRestartPolicies(t *testing.T) {
	m := newManager(t, t.TempDir())
	never := workerSpec(`exit 2`)
	never.Restart = "never"
	onFail := workerSpec(`exit 0`)
	onFail.Name, onFail.Restart = "once", "on-failure"
	app := newApp(t, false, never, onFail)
	cleanup(t, m, app.ID)
	deploy(t, m, app)
	waitFor(t, 10*time.Second, "never: failed; on-failure after exit 0: stopped", func() bool {
		return procReport(m, app.ID, "worker").GetState() == "failed" && procReport(m, app.ID, "once").GetState() == "stopped"
	})
	w := procReport(m, app.ID, "worker").GetInstances()[0]
	if w.GetRestarts() != 0 || w.GetLastExitCode() != 2 || w.GetPid() != 0 {
		t.Fatalf("never: %v", w)
	}
	// start brings a failed process back.
	if err := m.Action(context.Background(), app, "start", []string{"worker"}, logT(t)); err != nil {
		t.Fatal(err)
	}
	if units := live(m.units(app.ID)); len(units) != 2 {
		t.Fatalf("%d live units after start", len(units))
	}
}

// TestStopGraceThenKill: a process that ignores its stop signal is killed
// after the grace period; one that honours it exits cleanly.
func TestStopGraceThenKill(t *testing.T) {
	m := newManager(t, t.TempDir())
	stubborn := workerSpec(`trap '' TERM; echo ready; while true; do sleep 1; done`)
	stubborn.StopGrace = durationpb.New(time.Second)
	polite := webSpec(1)
	polite.StopGrace = durationpb.New(20 * time.Second)
	app := newApp(t, false, stubborn, polite)
	cleanup(t, m, app.ID)
	deploy(t, m, app)
	wpid := int(pids(procReport(m, app.ID, "worker"))[0])
	webPid := int(pids(procReport(m, app.ID, "web"))[0])
	// Its trap is set once it printed ready.
	waitFor(t, 10*time.Second, "the worker ready", func() bool {
		for _, u := range live(m.units(app.ID)) {
			if l := readTail(u.dir, 1); u.cfg.Process == "worker" && len(l) == 1 && l[0].Text == "ready" {
				return true
			}
		}
		return false
	})

	begin := time.Now()
	if err := m.Action(context.Background(), app, "stop", nil, logT(t)); err != nil {
		t.Fatal(err)
	}
	took := time.Since(begin)
	if took < time.Second {
		t.Fatalf("the stubborn process was stopped after %s, before its 1s grace", took)
	}
	if !procGone(wpid) || !procGone(webPid) {
		t.Fatalf("processes still alive: worker %v web %v", !procGone(wpid), !procGone(webPid))
	}
	w := procReport(m, app.ID, "worker")
	web := procReport(m, app.ID, "web")
	if w.GetState() != "stopped" || web.GetState() != "stopped" {
		t.Fatalf("states: worker %v web %v", w, web)
	}
	if c := w.GetInstances()[0].GetLastExitCode(); c != -1 {
		t.Fatalf("worker exit code %d, want -1 (killed)", c)
	}
	if c := web.GetInstances()[0].GetLastExitCode(); c != 0 {
		t.Fatalf("web exit code %d, want 0 (graceful)", c)
	}
	// Stopped on purpose: nothing starts them again, not even a new agent.
	m.Close()
	m2 := newManager(t, m.cfg.StateDir)
	if st := procReport(m2, app.ID, "worker").GetState(); st != "stopped" {
		t.Fatalf("after a new manager: %s", st)
	}
	if err := m2.Action(context.Background(), app, "apply", nil, logT(t)); err != nil {
		t.Fatal(err)
	}
	if st := procReport(m2, app.ID, "web").GetState(); st != "running" {
		t.Fatalf("apply did not start the stopped web: %s", st)
	}
}

// TestLogsTailAndFollow: the last lines come first, then a line the app
// prints appears in the follow.
func TestLogsTailAndFollow(t *testing.T) {
	m := newManager(t, t.TempDir())
	app := newApp(t, true, webSpec(1), workerSpec(`for i in 1 2 3 4 5; do echo "line $i"; done; echo "oops" >&2; while true; do sleep 1; done`))
	cleanup(t, m, app.ID)
	deploy(t, m, app)
	waitFor(t, 10*time.Second, "the worker's lines", func() bool {
		return len(readTail(live(m.units(app.ID))[1].dir, 10)) == 6
	})
	logs := func(req *agentv1.LogsRequest) []*agentv1.LogLine {
		t.Helper()
		var got []*agentv1.LogLine
		if err := m.Logs(context.Background(), req, func(l []*agentv1.LogLine) error { got = append(got, l...); return nil }); err != nil {
			t.Fatal(err)
		}
		return got
	}
	all := logs(&agentv1.LogsRequest{AppId: app.ID, Processes: []string{"worker"}, Tail: 6})
	var stdout []string
	for _, l := range all {
		if l.GetProcess() != "worker" || l.GetInstance() != 0 {
			t.Fatalf("line of another process: %v", l)
		}
		switch l.GetStream() {
		case "stdout":
			stdout = append(stdout, l.GetText())
		case "stderr":
			if l.GetText() != "oops" {
				t.Fatalf("stderr line %v", l)
			}
		default:
			t.Fatalf("stream %q", l.GetStream())
		}
	}
	// stdout and stderr are two pipes: their lines interleave by the time
	// the supervisor read them; within a stream the order holds.
	if strings.Join(stdout, ",") != "line 1,line 2,line 3,line 4,line 5" || len(all) != 6 {
		t.Fatalf("tail 6: %v", all)
	}
	if last := logs(&agentv1.LogsRequest{AppId: app.ID, Processes: []string{"worker"}, Tail: 2}); len(last) != 2 ||
		last[0].GetText() != all[4].GetText() || last[1].GetText() != all[5].GetText() {
		t.Fatalf("tail 2: %v (all %v)", last, all)
	}
	if web := logs(&agentv1.LogsRequest{AppId: app.ID, Processes: []string{"web"}}); len(web) != 2 {
		t.Fatalf("web lines: %v", web)
	}
	var got []*agentv1.LogLine
	var err error
	// since: nothing is newer than now.
	got = nil
	err = m.Logs(context.Background(), &agentv1.LogsRequest{AppId: app.ID, Since: timestamppb.New(time.Now().Add(time.Hour))},
		func(l []*agentv1.LogLine) error { got = append(got, l...); return nil })
	if err != nil || len(got) != 0 {
		t.Fatalf("since the future: %v %v", got, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var followed []*agentv1.LogLine
	done := make(chan error, 1)
	go func() {
		done <- m.Logs(ctx, &agentv1.LogsRequest{AppId: app.ID, Processes: []string{"web"}, Follow: true, Tail: 1},
			func(l []*agentv1.LogLine) error {
				mu.Lock()
				followed = append(followed, l...)
				mu.Unlock()
				return nil
			})
	}()
	msg := fmt.Sprintf("hello-%d", time.Now().UnixNano())
	if code, _, err := get(app.UpstreamPort, "/print?msg="+msg); err != nil || code != 200 {
		t.Fatalf("print: %d %v", code, err)
	}
	waitFor(t, 10*time.Second, "the printed line in the follow", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, l := range followed {
			if l.GetText() == msg && l.GetProcess() == "web" && l.GetStream() == "stdout" {
				return true
			}
		}
		return false
	})
	// A deploy starts a new instance: the follow picks it up.
	deploy(t, m, withRelease(t, app, "r2"))
	waitFor(t, 10*time.Second, "the new instance's first line", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, l := range followed {
			if strings.Contains(l.GetText(), "release r2") {
				return true
			}
		}
		return false
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("follow ended with %v", err)
	}
}

// TestLogRotationBounded: an app that prints a lot fills at most
// logFiles files of logMax bytes, and the newest lines are kept.
func TestLogRotationBounded(t *testing.T) {
	m := newManager(t, t.TempDir())
	m.logMax, m.logFiles = 4096, 3
	app := newApp(t, false, workerSpec(`for i in $(seq 1 3000); do echo "line $i padding padding padding"; done; echo done; while true; do sleep 1; done`))
	cleanup(t, m, app.ID)
	deploy(t, m, app)
	u := live(m.units(app.ID))[0]
	waitFor(t, 20*time.Second, "the last line", func() bool {
		l := readTail(u.dir, 1)
		return len(l) == 1 && l[0].Text == "done"
	})
	var total int64
	ents, _ := os.ReadDir(u.dir)
	var logs []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), logFile) {
			info, _ := e.Info()
			logs = append(logs, e.Name())
			total += info.Size()
			if info.Size() > 4096 {
				t.Errorf("%s is %d bytes", e.Name(), info.Size())
			}
		}
	}
	if len(logs) != 3 || total > 3*4096 {
		t.Fatalf("log files %v, %d bytes in all", logs, total)
	}
	lines := readTail(u.dir, 1000)
	if len(lines) < 50 || lines[len(lines)-2].Text != "line 3000 padding padding padding" {
		t.Fatalf("kept %d lines, ending %v", len(lines), lines[len(lines)-2:])
	}
}

// TestDeleteApp leaves no process and no directory behind.
func TestDeleteApp(t *testing.T) {
	m := newManager(t, t.TempDir())
	app := newApp(t, true, webSpec(2), workerSpec(`while true; do sleep 1; done`))
	deploy(t, m, app)
	var all []int
	for _, u := range m.units(app.ID) {
		all = append(all, readPid(u.dir), u.state.Pid)
	}
	all = append(all, readPid(m.upDir(app.ID)))
	for _, p := range all {
		if p <= 1 || procGone(p) {
			t.Fatalf("pid %d of %v not running before delete", p, all)
		}
	}
	if err := m.DeleteApp(context.Background(), app.ID); err != nil {
		t.Fatal(err)
	}
	for _, p := range all {
		waitFor(t, 5*time.Second, fmt.Sprintf("pid %d gone", p), func() bool { return procGone(p) })
	}
	if _, err := os.Stat(m.appDir(app.ID)); !os.IsNotExist(err) {
		t.Fatalf("app dir: %v", err)
	}
	if appReport(m, app.ID) != nil {
		t.Fatal("deleted app still reported")
	}
	if _, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", app.UpstreamPort)); err == nil {
		t.Fatal("upstream still listening")
	}
}

// TestWebSocketThroughUpstream: an upgrade passes the upstream.
func TestWebSocketThroughUpstream(t *testing.T) {
	m := newManager(t, t.TempDir())
	app := newApp(t, true, webSpec(1))
	cleanup(t, m, app.ID)
	deploy(t, m, app)
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", app.UpstreamPort))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	br := bufio.NewReader(c)
	status, _ := br.ReadString('\n')
	if !strings.Contains(status, "101") {
		t.Fatalf("status %q", status)
	}
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if l == "\r\n" {
			break
		}
	}
	fmt.Fprintf(c, "ping\n")
	echo, err := br.ReadString('\n')
	if err != nil || echo != "r1:ping\n" {
		t.Fatalf("echo %q %v", echo, err)
	}

	// What nginx in front says about the client passes through.
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/headers", app.UpstreamPort), nil)
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("X-Forwarded-Host", "app.example.com")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := strings.TrimSpace(string(b)); got != "xff=203.0.113.7, 127.0.0.1 host=app.example.com proto=https" {
		t.Fatalf("headers: %q", got)
	}
}

// TestLimits: limits are applied through cgroup v2 when the host allows;
// otherwise the process runs anyway and says why they are not enforced.
func TestLimits(t *testing.T) {
	m := newManager(t, t.TempDir())
	w := workerSpec(`while true; do sleep 1; done`)
	w.MemoryMaxBytes, w.CpuMaxPercent = 256<<20, 50
	plain := workerSpec(`while true; do sleep 1; done`)
	plain.Name = "plain"
	app := newApp(t, false, w, plain)
	cleanup(t, m, app.ID)
	deploy(t, m, app)
	in := procReport(m, app.ID, "worker").GetInstances()[0]
	if in.GetState() != "running" || in.GetPid() == 0 {
		t.Fatalf("limited process not running: %v", in)
	}
	if in.GetLimitsEnforced() {
		cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", in.GetPid()))
		if err != nil {
			t.Fatal(err)
		}
		path := strings.TrimSpace(strings.TrimPrefix(string(cg), "0::"))
		mem, _ := os.ReadFile(filepath.Join(cgroupRoot, path, "memory.max"))
		if strings.TrimSpace(string(mem)) != fmt.Sprint(256<<20) {
			t.Fatalf("limits enforced but memory.max of %s is %q", path, mem)
		}
	} else if !strings.Contains(in.GetLastError(), "limits not enforced") {
		t.Fatalf("limits not enforced and no reason given: %v", in)
	}
	if p := procReport(m, app.ID, "plain").GetInstances()[0]; !p.GetLimitsEnforced() || p.GetLastError() != "" {
		t.Fatalf("process without limits: %v", p)
	}
}

// TestRunsAsAppUser: the process runs with the app's uid and gid.
func TestRunsAsAppUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test runs as root (the agent's usual user) to switch to the app's user")
	}
	m := newManager(t, t.TempDir())
	app := newApp(t, false, workerSpec(`id -u; id -g; umask; pwd; while true; do sleep 1; done`))
	app.UID, app.GID = 65534, 65534
	rel, err := os.MkdirTemp("", "release")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(rel) })
	os.Chmod(rel, 0o755)
	app.ReleaseDir = rel
	cleanup(t, m, app.ID)
	deploy(t, m, app)
	u := live(m.units(app.ID))[0]
	waitFor(t, 10*time.Second, "id output", func() bool { return len(readTail(u.dir, 5)) == 4 })
	l := readTail(u.dir, 5)
	if l[0].Text != "65534" || l[1].Text != "65534" || l[2].Text != "0022" || l[3].Text != rel {
		t.Fatalf("ran as %v", l)
	}
}

// TestFollowAcrossRotation: a follow sees every line while the log
// rotates under it, several times between two polls too.
func TestFollowAcrossRotation(t *testing.T) {
	m := newManager(t, t.TempDir())
	m.logMax, m.logFiles = 2048, 4
	app := newApp(t, true, webSpec(1))
	cleanup(t, m, app.ID)
	deploy(t, m, app)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var got []string
	started := false
	done := make(chan error, 1)
	go func() {
		done <- m.Logs(ctx, &agentv1.LogsRequest{AppId: app.ID, Follow: true, Tail: 1}, func(l []*agentv1.LogLine) error {
			mu.Lock()
			defer mu.Unlock()
			for _, x := range l {
				if strings.HasPrefix(x.GetText(), "msg-") {
					started = true
					if x.GetText() != "msg-start" {
						got = append(got, x.GetText())
					}
				}
			}
			return nil
		})
	}()
	// The follow has noted where the file ends once a marker line printed
	// after it started arrives.
	waitFor(t, 10*time.Second, "the follow running", func() bool {
		get(app.UpstreamPort, "/print?msg=msg-start")
		mu.Lock()
		defer mu.Unlock()
		return started
	})
	const n = 150 // about 5 files of 2 KiB: rotations while following
	for i := range n {
		if code, _, err := get(app.UpstreamPort, fmt.Sprintf("/print?msg=msg-%03d", i)); err != nil || code != 200 {
			t.Fatalf("print %d: %d %v", i, code, err)
		}
	}
	waitFor(t, 10*time.Second, "every line", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= n
	})
	mu.Lock()
	defer mu.Unlock()
	for i := range n {
		if got[i] != fmt.Sprintf("msg-%03d", i) {
			t.Fatalf("line %d is %q", i, got[i])
		}
	}
	if len(got) != n {
		t.Fatalf("%d lines, want %d", len(got), n)
	}
}
