package main_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// testAppSource is the app the process tests deploy: `app web` serves the
// release's version.txt on $PORT (and /up, which fails while the release
// has a web-unhealthy file) and stops gracefully on TERM; `app worker`
// prints a numbered line with its own clock every 200 ms.
const testAppSource = `package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	b, _ := os.ReadFile("version.txt")
	version := strings.TrimSpace(string(b))
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	switch os.Args[1] {
	case "web":
		mux := http.NewServeMux()
		mux.HandleFunc("/up", func(w http.ResponseWriter, r *http.Request) {
			if _, err := os.Stat("web-unhealthy"); err == nil {
				http.Error(w, "unhealthy on purpose", http.StatusInternalServerError)
				return
			}
			fmt.Fprintln(w, "ok")
		})
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(2 * time.Millisecond) // some work, so requests are in flight during a switch
			fmt.Fprint(w, version)
		})
		srv := &http.Server{Addr: ":" + os.Getenv("PORT"), Handler: mux}
		go func() {
			if err := srv.ListenAndServe(); err != http.ErrServerClosed {
				fmt.Println("web failed:", err)
				os.Exit(1)
			}
		}()
		fmt.Printf("web %s listening on %s\n", version, os.Getenv("PORT"))
		<-stop
		fmt.Printf("web %s stopping\n", version)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	case "worker":
		tick := time.NewTicker(200 * time.Millisecond)
		for n := 1; ; n++ {
			select {
			case <-stop:
				fmt.Printf("worker %s stopping\n", version)
				return
			case <-tick.C:
				fmt.Printf("tick %d %s t=%d\n", n, version, time.Now().UnixNano())
			}
		}
	}
}
`

var (
	testAppOnce sync.Once
	testAppBin  []byte
	testAppErr  error
)

// testAppBinary builds the test app once (a static binary, so deploys
// need no Go on the server).
func testAppBinary(t *testing.T) []byte {
	t.Helper()
	testAppOnce.Do(func() {
		dir, err := os.MkdirTemp("", "berth-testapp-")
		if err != nil {
			testAppErr = err
			return
		}
		defer os.RemoveAll(dir)
		if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(testAppSource), 0o644); err != nil {
			testAppErr = err
			return
		}
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module testapp\n\ngo 1.22\n"), 0o644); err != nil {
			testAppErr = err
			return
		}
		cmd := exec.Command("go", "build", "-o", "app", ".")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=-mod=mod")
		if out, err := cmd.CombinedOutput(); err != nil {
			testAppErr = fmt.Errorf("build the test app: %v\n%s", err, out)
			return
		}
		testAppBin, testAppErr = os.ReadFile(filepath.Join(dir, "app"))
	})
	if testAppErr != nil {
		t.Fatal(testAppErr)
	}
	return testAppBin
}

// installTestApp puts the test app's binary on the "server" and names it
// in the app's environment: its processes run "$TESTAPP_BIN web" from the
// release, which holds version.txt and the markers. (Committed into the
// repository, its 7 MB archive made the agent's checkout end on git's
// SIGPIPE now and then, a race of its own, reported apart.)
func (e *deployEnv) installTestApp(t *testing.T, app string) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "testapp")
	if err := os.WriteFile(bin, testAppBinary(t), 0o755); err != nil {
		t.Fatal(err)
	}
	if r := e.cli(t, "", "app", "env", "set", app, "TESTAPP_BIN="+bin); r.code != 0 {
		t.Fatalf("env set TESTAPP_BIN: %+v", r)
	}
}

// commitApp commits a release of the test app: its version and markers.
func (e *deployEnv) commitApp(t *testing.T, version string, extra map[string]string) string {
	t.Helper()
	files := map[string]string{"version.txt": version + "\n"}
	for k, v := range extra {
		files[k] = v
	}
	return e.repo.commit(t, "main", version, files)
}

// procInstance and appProcess are `berth app show -o json`'s processes.
type procInstance struct {
	Index    int    `json:"index"`
	PID      int    `json:"pid"`
	Port     int    `json:"port"`
	State    string `json:"state"`
	Restarts int    `json:"restarts"`
}

type appProcess struct {
	Name             string         `json:"name"`
	State            string         `json:"state"`
	DesiredInstances int            `json:"desired_instances"`
	Release          string         `json:"release"`
	ReportedAt       *time.Time     `json:"reported_at"`
	Instances        []procInstance `json:"instances"`
}

type appShow struct {
	ID           string       `json:"id"`
	UpstreamPort int          `json:"upstream_port"`
	Processes    []appProcess `json:"processes"`
	Schedules    []struct {
		Name      string      `json:"name"`
		Cron      string      `json:"cron"`
		NextRunAt *time.Time  `json:"next_run_at"`
		LastRun   *deployment `json:"last_run"`
	} `json:"schedules"`
}

func (e *deployEnv) appShow(t *testing.T, app string) appShow {
	t.Helper()
	var s appShow
	e.mustJSON(t, &s, "app", "show", app)
	return s
}

func (s appShow) process(name string) *appProcess {
	for i := range s.Processes {
		if s.Processes[i].Name == name {
			return &s.Processes[i]
		}
	}
	return nil
}

// running reports whether the process runs all its instances with pids,
// from release (any release if empty).
func (p *appProcess) running(release string) bool {
	if p == nil || p.State != "running" || len(p.Instances) != p.DesiredInstances || (release != "" && p.Release != release) {
		return false
	}
	for _, in := range p.Instances {
		if in.State != "running" || in.PID <= 0 {
			return false
		}
	}
	return true
}

func (e *deployEnv) waitRunning(t *testing.T, app, release string, names ...string) appShow {
	t.Helper()
	var s appShow
	waitFor(t, strings.Join(names, ", ")+" of "+app+" running release "+release, 2*time.Minute, func() bool {
		s = e.appShow(t, app)
		for _, n := range names {
			if !s.process(n).running(release) {
				return false
			}
		}
		return true
	})
	return s
}

// loadLoop sends requests through an upstream until stopped and counts
// how each ended. New connections every time (no keep-alive), so a moment
// with nothing listening shows as a refused connection.
type loadLoop struct {
	ok, refused, fivexx, otherErr atomic.Int64
	mu                            sync.Mutex
	firstErrs                     []string
	versions                      map[string]int
	stop                          chan struct{}
	wg                            sync.WaitGroup
}

func startLoad(t *testing.T, url string, workers int) *loadLoop {
	t.Helper()
	l := &loadLoop{stop: make(chan struct{}), versions: map[string]int{}}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := 0; i < workers; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				resp, err := client.Get(url)
				if err != nil {
					if errors.Is(err, syscall.ECONNREFUSED) {
						l.refused.Add(1)
					} else {
						l.otherErr.Add(1)
					}
					l.note(err.Error())
				} else {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					switch {
					case resp.StatusCode >= 500:
						l.fivexx.Add(1)
						l.note(fmt.Sprintf("%d %s", resp.StatusCode, b))
					case resp.StatusCode == 200:
						l.ok.Add(1)
						l.mu.Lock()
						l.versions[string(b)]++
						l.mu.Unlock()
					default:
						l.otherErr.Add(1)
						l.note(fmt.Sprintf("%d %s", resp.StatusCode, b))
					}
				}
				// Pacing, so the loop leaves the shared CPUs to the deploys.
				time.Sleep(3 * time.Millisecond)
			}
		}()
	}
	t.Cleanup(l.halt)
	return l
}

func (l *loadLoop) note(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.firstErrs) < 10 {
		l.firstErrs = append(l.firstErrs, time.Now().Format("15:04:05.000")+" "+s)
	}
}

func (l *loadLoop) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// check stops the loop and asserts no request failed and some succeeded.
func (l *loadLoop) check(t *testing.T, what string) {
	t.Helper()
	l.halt()
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("%s: %d requests served, %d refused, %d 5xx, %d other errors; versions served %v", what, l.ok.Load(), l.refused.Load(), l.fivexx.Load(), l.otherErr.Load(), l.versions)
	if l.refused.Load() != 0 || l.fivexx.Load() != 0 || l.otherErr.Load() != 0 {
		t.Errorf("%s: %d refused connections, %d 5xx, %d other errors; first: %s", what, l.refused.Load(), l.fivexx.Load(), l.otherErr.Load(), strings.Join(l.firstErrs, "; "))
	}
	if l.ok.Load() == 0 {
		t.Errorf("%s: no request was served", what)
	}
}

func httpGet(url string) (int, string, error) {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// mustServe asserts the upstream serves version now.
func mustServe(t *testing.T, url, version, when string) {
	t.Helper()
	code, body, err := httpGet(url)
	if err != nil || code != 200 || body != version {
		t.Fatalf("%s: GET %s = %d %q %v, want 200 %q", when, url, code, body, err, version)
	}
}

// appProcs finds the processes on this host that belong to an app: any
// whose working directory or executable is under its deploy path, or whose
// command line or environment names the app's id, its deploy path or the
// agent's data dir (its supervisors), except those excluded (the agent).
func appProcs(appDir, appID, agentDir string, exclude ...int) map[int]string {
	out := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		skip := false
		for _, x := range exclude {
			skip = skip || x == pid
		}
		if skip {
			continue
		}
		dir := filepath.Join("/proc", ent.Name())
		cwd, _ := os.Readlink(filepath.Join(dir, "cwd"))
		exe, _ := os.Readlink(filepath.Join(dir, "exe"))
		cmdline, _ := os.ReadFile(filepath.Join(dir, "cmdline"))
		environ, _ := os.ReadFile(filepath.Join(dir, "environ"))
		under := func(p string) bool { return p == appDir || strings.HasPrefix(p, appDir+"/") }
		if under(cwd) || under(exe) || strings.Contains(string(cmdline), appDir) || strings.Contains(string(cmdline), appID) ||
			strings.Contains(string(environ), appDir) || strings.Contains(string(environ), appID) ||
			strings.Contains(string(cmdline), agentDir) || strings.Contains(string(environ), agentDir) {
			out[pid] = strings.ReplaceAll(string(cmdline), "\x00", " ") + " (exe " + exe + ", cwd " + cwd + ")"
		}
	}
	return out
}

// killAppProcs is the cleanup of a failed test: nothing it started may
// outlive it on this shared machine.
func killAppProcs(appDir, appID, agentDir string, exclude ...int) {
	for pid := range appProcs(appDir, appID, agentDir, exclude...) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

func pidAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie is dead, only not yet reaped.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// TestAppProcessesStayUp is issue 16 §4 with the real binaries: an app with
// a web process (two instances behind the app's upstream) and a worker.
// Requests sent in a loop through the upstream during ten redeploys, a
// rollback, a restart and a deploy whose web fails its health check get
// no refused connection and no 5xx; a killed worker is restarted and its
// restarts counted; `app logs --follow` shows the worker's new line; kill
// -9 of the agent leaves the app serving and the restarted agent reports
// the same pids; `app delete` leaves no process, supervisor or upstream.
func TestAppProcessesStayUp(t *testing.T) {
	t.Parallel()
	e := setupDeploy(t)
	url := e.repo.serveHTTP(t, gitUser, gitToken)
	if r := e.cli(t, gitToken+"\n", "git-credential", "add", "gitcred", "--https", "--username", gitUser, "--token-stdin"); r.code != 0 {
		t.Fatalf("git-credential add: %+v", r)
	}
	e.commitApp(t, "v1", nil)
	e.createApp(t, "shop", url, "gitcred")
	e.installTestApp(t, "shop")
	appDir := filepath.Join(e.base, "shop")
	show := e.appShow(t, "shop")
	appID := show.ID
	t.Cleanup(func() { killAppProcs(appDir, appID, e.agentDir, e.agent.cmd.Process.Pid) })
	if show.UpstreamPort != 0 || len(show.Processes) != 0 {
		t.Fatalf("a new app has processes or an upstream: %+v", show)
	}

	// Declared before the first deploy: nothing runs yet, no job.
	var added struct {
		Process map[string]any `json:"process"`
		Job     *deployment    `json:"job"`
	}
	e.mustJSON(t, &added, "app", "process", "add", "shop", "web", "--command", "exec \"$TESTAPP_BIN\" web", "--port", "--health-path", "/up",
		"--instances", "2", "--stop-grace", "10s", "--memory-max", "256M", "--cpu-max", "100%")
	if added.Job != nil || added.Process["name"] != "web" || added.Process["desired_instances"] != float64(2) || added.Process["port"] != true ||
		added.Process["memory_max_bytes"] != float64(256<<20) || added.Process["cpu_max_percent"] != float64(100) || added.Process["stop_grace_seconds"] != float64(10) {
		t.Fatalf("process add before a deploy: %+v", added)
	}
	if r := e.cli(t, "", "app", "process", "add", "shop", "worker", "--command", "exec \"$TESTAPP_BIN\" worker", "--stop-signal", "TERM", "--stop-grace", "5s"); r.code != 0 ||
		!strings.Contains(r.stdout, "next deploy starts it") {
		t.Fatalf("process add worker: %+v", r)
	}
	// The server refuses what the CLI cannot check: a second web without
	// --replace, a bad name, an unknown app.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"app", "process", "add", "shop", "web", "--command", "true"}, "exist"},
		{[]string{"app", "process", "add", "shop", "Bad Name!", "--command", "x"}, "name"},
		{[]string{"app", "process", "add", "nope", "web", "--command", "x"}, "no app named"},
		{[]string{"app", "process", "remove", "shop", "ghost"}, "ghost"},
		{[]string{"app", "process", "restart", "shop", "ghost"}, "ghost"},
	} {
		if r := e.cli(t, "", tc.args...); r.code == 0 || !strings.Contains(r.stderr, tc.want) || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%v: %+v, want one error line with %q", tc.args, r, tc.want)
		}
	}
	var listed struct {
		Processes    []appProcess `json:"processes"`
		UpstreamPort int          `json:"upstream_port"`
	}
	e.mustJSON(t, &listed, "app", "process", "list", "shop")
	if len(listed.Processes) != 2 || listed.Processes[0].State == "running" {
		t.Fatalf("process list before a deploy: %+v", listed)
	}

	d1, logs, code := e.deployFollow(t, "shop")
	if code != 0 || d1.Status != "succeeded" {
		t.Fatalf("first deploy: %d %+v\n%s", code, d1, logs)
	}
	show = e.waitRunning(t, "shop", d1.ID, "web", "worker")
	if show.UpstreamPort <= 0 {
		t.Fatalf("no upstream port after the deploy: %+v", show)
	}
	web := show.process("web")
	if web.Instances[0].Port <= 0 || web.Instances[1].Port <= 0 || web.Instances[0].Port == web.Instances[1].Port || web.Instances[0].Port == show.UpstreamPort {
		t.Fatalf("web instances' ports: %+v (upstream %d)", web.Instances, show.UpstreamPort)
	}
	upstream := fmt.Sprintf("http://127.0.0.1:%d/", show.UpstreamPort)
	mustServe(t, upstream, "v1", "after the first deploy")
	if r := e.cli(t, "", "app", "show", "shop"); r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("127.0.0.1:%d", show.UpstreamPort)) ||
		!strings.Contains(r.stdout, "web.0") || !strings.Contains(r.stdout, fmt.Sprintf("pid %d", web.Instances[0].PID)) {
		t.Fatalf("app show (text): %+v", r)
	}

	// Ten redeploys, a rollback, a restart and a failed deploy under load.
	load := startLoad(t, upstream, 2)
	var prev []int
	for _, in := range web.Instances {
		prev = append(prev, in.PID)
	}
	var ids []string
	for i := 2; i <= 11; i++ {
		v := fmt.Sprintf("v%d", i)
		e.commitApp(t, v, nil)
		d, logs, code := e.deployFollow(t, "shop")
		if code != 0 || d.Status != "succeeded" {
			t.Fatalf("redeploy %s: %d %+v\n%s", v, code, d, logs)
		}
		// The upstream points at the new instances when the deploy ends.
		mustServe(t, upstream, v, "after the deploy of "+v)
		ids = append(ids, d.ID)
	}
	show = e.waitRunning(t, "shop", ids[len(ids)-1], "web", "worker")
	for _, in := range show.process("web").Instances {
		for _, old := range prev {
			if in.PID == old {
				t.Fatalf("web instance pid %d survived ten redeploys", old)
			}
		}
	}
	r := e.cli(t, "", "rollback", "shop", "--follow", "-o", "json")
	var rb deployment
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &rb) != nil || rb.Status != "succeeded" || rb.RollbackFromID != ids[len(ids)-2] {
		t.Fatalf("rollback: %+v", r)
	}
	mustServe(t, upstream, "v10", "after the rollback")
	show = e.waitRunning(t, "shop", "", "web", "worker")
	before := show.process("web").Instances[0].PID
	if r := e.cli(t, "", "app", "process", "restart", "shop", "web", "--follow"); r.code != 0 {
		t.Fatalf("process restart web --follow: %+v", r)
	}
	mustServe(t, upstream, "v10", "after the restart")
	// The job ended after the old instance stopped; the report follows.
	if pidAlive(before) {
		t.Fatalf("process restart: the old web instance (pid %d) still runs", before)
	}
	waitFor(t, "the restarted web reported with new pids", time.Minute, func() bool {
		p := e.appShow(t, "shop").process("web")
		return p.running("") && p.Instances[0].PID != before
	})
	cur := e.current(t, "shop")
	e.commitApp(t, "v12", map[string]string{"web-unhealthy": "x\n"})
	// Not --follow: the agent gives a new instance minutes to turn healthy,
	// longer than the test's bound on one CLI call.
	var bad deployment
	e.mustJSON(t, &bad, "deploy", "shop")
	bad = e.waitStatus(t, "shop", bad.ID, "succeeded", "failed", "canceled", "timed_out")
	if logs := e.cli(t, "", "deployments", "logs", bad.ID).stdout; bad.Status != "failed" || bad.FailedStep != "processes" || !strings.Contains(logs, "not healthy") {
		t.Fatalf("deploy whose web fails its health check: %+v\n%s", bad, logs)
	}
	mustServe(t, upstream, "v10", "after the failed deploy")
	if e.current(t, "shop") != cur {
		t.Fatalf("the failed deploy moved current to %s", e.current(t, "shop"))
	}
	load.check(t, "ten redeploys, a rollback, a restart and a failed deploy")

	// A process that exits is restarted, and its restarts counted.
	show = e.waitRunning(t, "shop", "", "web", "worker")
	w := show.process("worker").Instances[0]
	if err := syscall.Kill(w.PID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the worker: %v", err)
	}
	waitFor(t, "the killed worker to be restarted", time.Minute, func() bool {
		s := e.appShow(t, "shop")
		p := s.process("worker")
		return p.running("") && p.Instances[0].PID != w.PID && p.Instances[0].Restarts > w.Restarts
	})

	// Logs: what the processes printed, and a new worker line while
	// following.
	r = e.cli(t, "", "app", "logs", "shop", "--process", "web", "--tail", "50")
	if r.code != 0 || !strings.Contains(r.stdout, " web.0 web v") || !strings.Contains(r.stdout, "listening on") || strings.Contains(r.stdout, "tick ") {
		t.Fatalf("app logs --process web: %+v", r)
	}
	r = e.cli(t, "", "app", "logs", "shop", "--since", "10m", "-o", "json")
	var procsSeen = map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var l struct {
			Time    time.Time `json:"time"`
			Process string    `json:"process"`
			Text    string    `json:"text"`
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil || l.Time.IsZero() {
			t.Fatalf("app logs -o json line %q: %v", line, err)
		}
		procsSeen[l.Process] = true
	}
	if r.code != 0 || !procsSeen["web"] || !procsSeen["worker"] {
		t.Fatalf("app logs --since 10m -o json: %+v", r)
	}
	followLogs(t, e)
	followAcrossControllerRestart(t, e)

	// stop, start: the worker stays stopped until started; the web serves on.
	show = e.waitRunning(t, "shop", "", "web", "worker")
	stoppedPID := show.process("worker").Instances[0].PID
	if r := e.cli(t, "", "app", "process", "stop", "shop", "worker", "--follow"); r.code != 0 {
		t.Fatalf("process stop worker: %+v", r)
	}
	waitFor(t, "the worker reported stopped", time.Minute, func() bool {
		p := e.appShow(t, "shop").process("worker")
		return p != nil && p.State == "stopped"
	})
	if pidAlive(stoppedPID) {
		t.Fatalf("the stopped worker's pid %d still runs", stoppedPID)
	}
	mustServe(t, upstream, "v10", "with the worker stopped")
	var started struct {
		Job deployment `json:"job"`
	}
	e.mustJSON(t, &started, "app", "process", "start", "shop", "--follow")
	if started.Job.Status != "succeeded" {
		t.Fatalf("process start --follow -o json: %+v", started)
	}
	e.waitRunning(t, "shop", "", "web", "worker")

	// kill -9 of the agent: the app keeps serving through its upstream,
	// and the restarted agent reports the same processes.
	show = e.waitRunning(t, "shop", "", "web", "worker")
	pids := map[string][]int{}
	for _, p := range show.Processes {
		for _, in := range p.Instances {
			pids[p.Name] = append(pids[p.Name], in.PID)
		}
	}
	load = startLoad(t, upstream, 2)
	_ = e.agent.cmd.Process.Kill()
	<-e.agent.done
	killedAt := time.Now()
	okAtKill := load.ok.Load()
	waitFor(t, "requests served while the agent is down", time.Minute, func() bool { return load.ok.Load() > okAtKill+50 })
	for name, ps := range pids {
		for _, pid := range ps {
			if !pidAlive(pid) {
				t.Fatalf("%s pid %d died with the agent", name, pid)
			}
		}
	}
	// Logs come from the agent: without it they fail at once with one line,
	// --follow too (it does not wait for an agent that may never return).
	for _, args := range [][]string{{"app", "logs", "shop", "--tail", "5"}, {"app", "logs", "shop", "--follow"}} {
		if r := e.cli(t, "", args...); r.code != 1 || !strings.Contains(r.stderr, "Unavailable") || strings.Count(r.stderr, "\n") != 1 {
			t.Fatalf("%v with the agent down: %+v", args, r)
		}
	}
	e.agent = e.startAgent(t)
	waitFor(t, "the restarted agent to report the same processes", time.Minute, func() bool {
		s := e.appShow(t, "shop")
		for name, ps := range pids {
			p := s.process(name)
			if !p.running("") || p.ReportedAt == nil || p.ReportedAt.Before(killedAt) {
				return false
			}
			for i, in := range p.Instances {
				if i >= len(ps) || in.PID != ps[i] {
					return false
				}
			}
		}
		return true
	})
	load.check(t, "kill -9 of the agent")

	// remove: the worker stops and is forgotten.
	workerPID := e.appShow(t, "shop").process("worker").Instances[0].PID
	if r := e.cli(t, "", "app", "process", "remove", "shop", "worker", "--follow"); r.code != 0 {
		t.Fatalf("process remove worker: %+v", r)
	}
	if e.appShow(t, "shop").process("worker") != nil {
		t.Fatal("app show lists the removed worker")
	}
	waitFor(t, "the removed worker's process to end", 30*time.Second, func() bool { return !pidAlive(workerPID) })

	// Delete: no process, supervisor or upstream is left.
	left := appProcs(appDir, appID, e.agentDir, e.agent.cmd.Process.Pid)
	supervisors := 0
	for pid := range left {
		if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); exe == agentBin {
			supervisors++
		}
	}
	t.Logf("before the delete, the app's processes on this host: %v", left)
	if len(left)-supervisors < 2 || supervisors == 0 {
		t.Fatalf("before the delete, %d processes of the app found on this host (%d supervisors): %v", len(left), supervisors, left)
	}
	var del struct {
		Deleted bool       `json:"deleted"`
		Job     deployment `json:"job"`
	}
	e.mustJSON(t, &del, "app", "delete", "shop")
	e.waitStatus(t, appID, del.Job.ID, "succeeded")
	waitFor(t, "every process of the deleted app to be gone", 30*time.Second, func() bool {
		return len(appProcs(appDir, appID, e.agentDir, e.agent.cmd.Process.Pid)) == 0
	})
	if left := appProcs(appDir, appID, e.agentDir, e.agent.cmd.Process.Pid); len(left) != 0 {
		t.Fatalf("left after app delete: %v", left)
	}
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", show.UpstreamPort), 5*time.Second); err == nil {
		c.Close()
		t.Fatalf("the deleted app's upstream 127.0.0.1:%d still accepts connections", show.UpstreamPort)
	}
	for _, in := range show.process("web").Instances {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", in.Port), 5*time.Second); err == nil {
			c.Close()
			t.Fatalf("the deleted app's web instance port %d still accepts connections", in.Port)
		}
	}
	e.noSecrets(t, gitToken, envSecret)
}

// followLogs runs `berth app logs --follow -o json` and waits for a worker
// line printed after it started; the latency from the worker's print to
// the CLI's output is reported (a figure, not a threshold).
func followLogs(t *testing.T, e *deployEnv) {
	t.Helper()
	cmd := exec.Command(berthBin, "app", "logs", "shop", "--process", "worker", "--follow", "-o", "json", "--tail", "1")
	cmd.Env = append(os.Environ(), e.env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	started := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		_ = cmd.Wait()
	}()
	type seen struct {
		latency time.Duration
		text    string
	}
	got := make(chan seen, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			now := time.Now()
			var l struct {
				Process string `json:"process"`
				Text    string `json:"text"`
			}
			if json.Unmarshal(sc.Bytes(), &l) != nil || l.Process != "worker" {
				continue
			}
			// "tick N VERSION t=UNIXNANO"
			i := strings.LastIndex(l.Text, " t=")
			if i < 0 {
				continue
			}
			ns, err := strconv.ParseInt(strings.TrimSpace(l.Text[i+3:]), 10, 64)
			if err != nil || time.Unix(0, ns).Before(started) {
				continue // the tail, printed before we asked
			}
			got <- seen{now.Sub(time.Unix(0, ns)), l.Text}
			return
		}
	}()
	select {
	case s := <-got:
		t.Logf("app logs --follow: the worker's line %q reached the CLI %v after it was printed", s.text, s.latency)
	case <-time.After(time.Minute):
		t.Fatalf("app logs --follow showed no new worker line in a minute; stderr: %s", stderr.String())
	}
}

// followAcrossControllerRestart: `app logs --follow` started before the
// controller is killed goes on after it is back, and the worker's lines
// (numbered) come out once each, none lost across the outage.
func followAcrossControllerRestart(t *testing.T, e *deployEnv) {
	t.Helper()
	cmd := exec.Command(berthBin, "app", "logs", "shop", "--process", "worker", "--follow", "--tail", "1")
	cmd.Env = append(os.Environ(), e.env...)
	var out, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		<-done
	}()
	ticks := func() []int {
		var ns []int
		for _, line := range strings.Split(out.String(), "\n") {
			// TIME worker.0 tick N VERSION t=...
			f := strings.Fields(line)
			if len(f) >= 4 && f[1] == "worker.0" && f[2] == "tick" {
				if n, err := strconv.Atoi(f[3]); err == nil {
					ns = append(ns, n)
				}
			}
		}
		return ns
	}
	waitFor(t, "the follower to print worker lines", time.Minute, func() bool { return len(ticks()) >= 3 })
	_ = e.c.stop(t, syscall.SIGKILL)
	before := len(ticks())
	e.c = startControllerAt(t, e.dataDir, e.c.httpAddr, e.c.grpcAddr, "--metrics-interval", "1s", "--heartbeat-interval", "1s")
	waitFor(t, "the follower to go on after the controller restart", 2*time.Minute, func() bool { return len(ticks()) >= before+20 })
	select {
	case err := <-done:
		t.Fatalf("the follower ended: %v\n%s", err, stderr.String())
	default:
	}
	ns := ticks()
	for i := 1; i < len(ns); i++ {
		if ns[i] != ns[i-1]+1 {
			t.Fatalf("worker lines across the controller restart: %d after %d (lost or doubled); stderr %s\n%s", ns[i], ns[i-1], stderr.String(), out.String())
		}
	}
	t.Logf("app logs --follow across a controller kill: %d worker lines, %d after the restart; stderr: %s", len(ns), len(ns)-before, strings.TrimSpace(stderr.String()))
}
