package supervise

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

func syscallKill(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }

// TestDeployZeroDowntime sends requests through the upstream in a loop
// during five deploys: not one may fail.
func TestDeployZeroDowntime(t *testing.T) {
	m := newManager(t, t.TempDir())
	app := newApp(t, true, webSpec(2), workerSpec(`while true; do echo tick; sleep 1; done`))
	cleanup(t, m, app.ID)
	deploy(t, m, app)
	if code, body, err := get(app.UpstreamPort, "/"); err != nil || code != 200 || body != "release=r1" {
		t.Fatalf("first release through the upstream: %d %q %v", code, body, err)
	}

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second}
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", app.UpstreamPort))
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode == 200 {
						ok.Add(1)
						continue
					}
					err = fmt.Errorf("status %s", resp.Status)
				}
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			}
		}()
	}
	var workerPids []int32
	for i := 2; i <= 6; i++ {
		rel := fmt.Sprintf("r%d", i)
		before := ok.Load()
		deploy(t, m, withRelease(t, app, rel))
		waitFor(t, 10*time.Second, "requests served after the deploy", func() bool { return ok.Load() > before+10 })
		if _, body, err := get(app.UpstreamPort, "/"); err != nil || body != "release="+rel {
			t.Fatalf("after deploy %s the upstream serves %q (%v)", rel, body, err)
		}
		waitFor(t, 10*time.Second, "the worker running", func() bool {
			p := pids(procReport(m, app.ID, "worker"))
			return len(p) == 1 && p[0] != 0
		})
		workerPids = append(workerPids, pids(procReport(m, app.ID, "worker"))...)
	}
	close(stop)
	wg.Wait()
	t.Logf("requests: %d ok, %d failed", ok.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed during the deploys; first: %v", failed.Load(), ok.Load()+failed.Load(), firstErr.Load())
	}
	if ok.Load() < 50 {
		t.Fatalf("only %d requests made: the loop did not run", ok.Load())
	}
	web := procReport(m, app.ID, "web")
	if web.GetState() != "running" || len(web.GetInstances()) != 2 || web.GetRelease() != "r6" {
		t.Fatalf("web after the deploys: %v", web)
	}
	seen := map[int32]bool{}
	for _, p := range workerPids {
		if seen[p] {
			t.Fatalf("worker was not restarted by a deploy: pids %v", workerPids)
		}
		seen[p] = true
	}
	// Old instances are stopped: only the new ones' processes remain.
	for _, u := range m.units(app.ID) {
		if u.retired && (u.alive || u.state.Pid != 0) {
			t.Errorf("retired instance %s still runs (pid %d)", u.dir, u.state.Pid)
		}
	}
	// Retired directories are bounded (logs of the last few kept).
	if n := len(m.units(app.ID)); n > 3+2*keepRetired {
		t.Errorf("%d unit directories kept", n)
	}
}

// TestReattach drops a Manager without stopping anything (the agent
// dies) and checks a new one reports the same processes, still serving.
func TestReattach(t *testing.T) {
	state := t.TempDir()
	m1, err := NewManager(Config{StateDir: state, Executable: agentBin})
	if err != nil {
		t.Fatal(err)
	}
	app := newApp(t, true, webSpec(1), workerSpec(`while true; do sleep 1; done`))
	deploy(t, m1, app)
	before := m1.Report()
	m1.Close()

	m2 := newManager(t, state)
	cleanup(t, m2, app.ID)
	after := m2.Report()
	if len(before.GetApps()) != 1 || len(after.GetApps()) != 1 {
		t.Fatalf("reports: before %v after %v", before, after)
	}
	for _, name := range []string{"web", "worker"} {
		b, a := pids(procReport(m1, app.ID, name)), pids(procReport(m2, app.ID, name))
		if len(a) != 1 || a[0] == 0 || fmt.Sprint(a) != fmt.Sprint(b) {
			t.Fatalf("%s pids before %v after %v", name, b, a)
		}
		if st := procReport(m2, app.ID, name).GetState(); st != "running" {
			t.Fatalf("%s state %q", name, st)
		}
	}
	if appReport(m2, app.ID).GetUpstreamPort() != app.UpstreamPort {
		t.Fatalf("upstream port not reported: %v", appReport(m2, app.ID))
	}
	if code, body, err := get(app.UpstreamPort, "/"); err != nil || code != 200 || body != "release=r1" {
		t.Fatalf("after re-attach: %d %q %v", code, body, err)
	}
	if rel := m2.ReleasesInUse(app.ID); len(rel) != 1 || rel[0] != app.ReleaseDir {
		t.Fatalf("releases in use: %v", rel)
	}
	// The new manager can deploy over what the old one started.
	deploy(t, m2, withRelease(t, app, "r2"))
	if _, body, _ := get(app.UpstreamPort, "/"); body != "release=r2" {
		t.Fatalf("deploy after re-attach serves %q", body)
	}
}

// TestSupervisorKilledIsRestarted: a supervisor killed with -9 (and so
// not stopped on purpose) is started again by the manager and the port
// freed of the orphan.
func TestSupervisorKilledIsRestarted(t *testing.T) {
	m := newManager(t, t.TempDir())
	app := newApp(t, true, webSpec(1))
	cleanup(t, m, app.ID)
	deploy(t, m, app)
	var u *unit
	for _, x := range live(m.units(app.ID)) {
		u = x
	}
	sup := readPid(u.dir)
	if err := syscallKill(sup); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "a new supervisor running the web process", func() bool {
		p := readPid(u.dir)
		var st State
		readJSON(filepath.Join(u.dir, stateFile), &st)
		return p != sup && isOurs(p, "supervise", u.dir) && st.State == "running" && st.SupervisorPid == p
	})
	waitFor(t, 20*time.Second, "the upstream serving again", func() bool {
		code, _, err := get(app.UpstreamPort, "/")
		return err == nil && code == 200
	})
}

// TestFailedHealthCheck: a release whose instance fails its health check
// (or exits) fails the deploy, leaves the old instances serving and the
// upstream unchanged, and names the process and why.
func TestFailedHealthCheck(t *testing.T) {
	m := newManager(t, t.TempDir())
	app := newApp(t, true, webSpec(1))
	cleanup(t, m, app.ID)
	deploy(t, m, app)
	oldPids := pids(procReport(m, app.ID, "web"))
	backends, _ := os.ReadFile(filepath.Join(m.upDir(app.ID), backendsFile))

	// The app's own health timeout bounds the wait, not the Manager's
	// default (kept long here so only App.HealthTimeout can end it soon).
	m.healthTimeout = time.Hour
	ctx := context.Background()
	bad := withRelease(t, app, "bad", "FAIL_HEALTH=1")
	bad.HealthTimeout = 2 * time.Second
	err := m.Deploy(ctx, bad, logT(t))
	if err == nil || !strings.Contains(err.Error(), "process web instance 0") || !strings.Contains(err.Error(), "500") || !strings.Contains(err.Error(), "not healthy after 2s") {
		t.Fatalf("deploy of an unhealthy release: %v", err)
	}
	if !strings.Contains(err.Error(), "listening on") {
		t.Fatalf("error lacks the log tail: %v", err)
	}
	crash := withRelease(t, app, "crash")
	crash.Processes = []*agentv1.ProcessSpec{webSpec(1)}
	crash.Processes[0].Command = `echo "cannot open database" >&2; exit 4`
	err = m.Deploy(ctx, crash, logT(t))
	if err == nil || !strings.Contains(err.Error(), "cannot open database") || !strings.Contains(err.Error(), "code 4") {
		t.Fatalf("deploy of a crashing release: %v", err)
	}

	if p := pids(procReport(m, app.ID, "web")); fmt.Sprint(p) != fmt.Sprint(oldPids) {
		t.Fatalf("old instances replaced: %v -> %v", oldPids, p)
	}
	if b, _ := os.ReadFile(filepath.Join(m.upDir(app.ID), backendsFile)); string(b) != string(backends) {
		t.Fatalf("backends changed:\n%s\n->\n%s", backends, b)
	}
	if code, body, err := get(app.UpstreamPort, "/"); err != nil || code != 200 || body != "release=r1" {
		t.Fatalf("old release no longer serving: %d %q %v", code, body, err)
	}
	for _, u := range m.units(app.ID) {
		if u.cfg.Release != "r1" {
			t.Errorf("new instance %s left behind", u.dir)
		}
	}
}

// TestAgentKilled runs the manager in another process, kills it with -9
// (the agent dies mid-life), and checks the app keeps serving and a new
// manager reports the same processes.
func TestAgentKilled(t *testing.T) {
	state := t.TempDir()
	app := newApp(t, true, webSpec(2), workerSpec(`while true; do sleep 1; done`))
	spec, err := json.Marshal(app)
	if err != nil {
		t.Fatal(err)
	}
	agent := exec.Command(os.Args[0], "-test.run=^$")
	agent.Env = append(os.Environ(), "SUPERVISE_TEST_AGENT="+state, "SUPERVISE_TEST_EXE="+agentBin, "SUPERVISE_TEST_APP="+string(spec))
	agent.Stderr = os.Stderr
	out, err := agent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "deployed\n" {
		agent.Process.Kill()
		agent.Wait()
		t.Fatalf("fake agent: %q %v", line, err)
	}
	m := newManager(t, state)
	cleanup(t, m, app.ID)
	before := map[string][]int32{"web": pids(procReport(m, app.ID, "web")), "worker": pids(procReport(m, app.ID, "worker"))}
	if err := agent.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	agent.Wait()

	if code, body, err := get(app.UpstreamPort, "/"); err != nil || code != 200 || body != "release=r1" {
		t.Fatalf("after kill -9 of the agent: %d %q %v", code, body, err)
	}
	m2 := newManager(t, state)
	for name, want := range before {
		p := procReport(m2, app.ID, name)
		if got := pids(p); fmt.Sprint(got) != fmt.Sprint(want) || slices.Contains(got, 0) || p.GetState() != "running" {
			t.Fatalf("%s after the agent's death: %v, before %v", name, p, want)
		}
		for _, pid := range want {
			if procGone(int(pid)) {
				t.Fatalf("%s pid %d gone", name, pid)
			}
		}
	}
}

// TestPortTakenRetried: an instance that finds its port taken (another
// program got it first) is started again on another port.
func TestPortTakenRetried(t *testing.T) {
	m := newManager(t, t.TempDir())
	web := webSpec(1)
	mark := filepath.Join(t.TempDir(), "mark")
	web.Command = `if [ ! -e "$MARK" ]; then touch "$MARK"; echo "listen tcp: address already in use" >&2; exit 1; fi; exec "$WEBAPP"`
	app := newApp(t, true, web)
	app.Env = append(app.Env, "MARK="+mark)
	cleanup(t, m, app.ID)
	deploy(t, m, app)
	if code, body, err := get(app.UpstreamPort, "/"); err != nil || code != 200 || body != "release=r1" {
		t.Fatalf("%d %q %v", code, body, err)
	}
	if n := len(m.units(app.ID)); n != 1 {
		t.Fatalf("%d unit dirs: the failed attempt was not cleaned up", n)
	}
}

// TestInFlightFinishes: a request an old instance is serving when the
// deploy switches the upstream completes there, and the deploy waits for
// it before the old instance is gone.
func TestInFlightFinishes(t *testing.T) {
	m := newManager(t, t.TempDir())
	app := newApp(t, true, webSpec(1))
	cleanup(t, m, app.ID)
	deploy(t, m, app)
	file := filepath.Join(t.TempDir(), "go")
	type result struct {
		code int
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		code, body, err := get(app.UpstreamPort, "/wait?file="+file)
		res <- result{code, body, err}
	}()
	old := live(m.units(app.ID))[0]
	waitFor(t, 10*time.Second, "the request at the old instance", func() bool {
		l := readTail(old.dir, 1)
		return len(l) == 1 && l[0].Text == "waiting for "+file
	})
	deployed := make(chan error, 1)
	go func() { deployed <- m.Deploy(context.Background(), withRelease(t, app, "r2"), logT(t)) }()
	waitFor(t, 20*time.Second, "the upstream on r2", func() bool {
		_, body, err := get(app.UpstreamPort, "/")
		return err == nil && body == "release=r2"
	})
	select {
	case err := <-deployed:
		t.Fatalf("deploy finished (%v) while the old instance still served a request", err)
	default:
	}
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err != nil || r.code != 200 || r.body != "release=r1" {
		t.Fatalf("in-flight request: %d %q %v", r.code, r.body, r.err)
	}
	if err := <-deployed; err != nil {
		t.Fatal(err)
	}
	if !procGone(old.state.Pid) {
		t.Fatal("old instance still running")
	}
}

// TestStreamingThroughUpstream: a response is passed on as it is written,
// not when it ends.
func TestStreamingThroughUpstream(t *testing.T) {
	m := newManager(t, t.TempDir())
	app := newApp(t, true, webSpec(1))
	cleanup(t, m, app.ID)
	deploy(t, m, app)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://127.0.0.1:%d/stream", app.UpstreamPort), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("first chunk: %q %v", line, err)
	}
}

// TestRebootRestartsProcesses: after every supervisor, app process and
// the upstream died at once (the host rebooted), a new manager starts
// them again; an instance stopped on purpose stays stopped.
func TestRebootRestartsProcesses(t *testing.T) {
	state := t.TempDir()
	m1, err := NewManager(Config{StateDir: state, Executable: agentBin})
	if err != nil {
		t.Fatal(err)
	}
	idle := workerSpec(`while true; do sleep 1; done`)
	idle.Name = "idle"
	app := newApp(t, true, webSpec(1), workerSpec(`while true; do sleep 1; done`), idle)
	deploy(t, m1, app)
	if err := m1.Action(context.Background(), app, "stop", []string{"idle"}, logT(t)); err != nil {
		t.Fatal(err)
	}
	m1.Close()
	var dead []int
	for _, u := range live(m1.units(app.ID)) {
		for _, pid := range []int{readPid(u.dir), u.state.Pid} {
			if pid > 1 && !procGone(pid) {
				syscall.Kill(pid, syscall.SIGKILL)
				dead = append(dead, pid)
			}
		}
	}
	up := readPid(m1.upDir(app.ID))
	syscall.Kill(up, syscall.SIGKILL)
	dead = append(dead, up)
	for _, pid := range dead {
		waitFor(t, 5*time.Second, "the kill", func() bool { return procGone(pid) })
	}
	if _, _, err := get(app.UpstreamPort, "/"); err == nil {
		t.Fatal("upstream still answering after the kill")
	}

	m2 := newManager(t, state)
	cleanup(t, m2, app.ID)
	for _, name := range []string{"web", "worker"} {
		waitFor(t, 10*time.Second, name+" running again", func() bool {
			p := procReport(m2, app.ID, name)
			return p.GetState() == "running" && len(p.GetInstances()) == 1 && p.GetInstances()[0].GetPid() != 0
		})
	}
	if st := procReport(m2, app.ID, "idle").GetState(); st != "stopped" {
		t.Fatalf("the process stopped on purpose is %s", st)
	}
	waitFor(t, 10*time.Second, "the upstream serving", func() bool {
		code, body, err := get(app.UpstreamPort, "/")
		return err == nil && code == 200 && body == "release=r1"
	})
}

// TestOneSupervisorPerUnit: a second supervisor (or upstream) for a
// directory that has one refuses to run.
func TestOneSupervisorPerUnit(t *testing.T) {
	m := newManager(t, t.TempDir())
	app := newApp(t, true, webSpec(1))
	cleanup(t, m, app.ID)
	deploy(t, m, app)
	u := live(m.units(app.ID))[0]
	for _, c := range [][2]string{{"supervise", u.dir}, {"upstream", m.upDir(app.ID)}} {
		pid := readPid(c[1])
		out, err := exec.Command(agentBin, c[0], "--dir", c[1]).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "another process already runs") {
			t.Fatalf("second %s: %v %s", c[0], err, out)
		}
		if readPid(c[1]) != pid || !isOurs(pid, c[0], c[1]) {
			t.Fatalf("%s: the first one's pid file changed or it died", c[0])
		}
	}
	if code, _, err := get(app.UpstreamPort, "/"); err != nil || code != 200 {
		t.Fatalf("%d %v", code, err)
	}
}
