package deploy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/berthhq/berth/agent/internal/supervise"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// webHelper is the app's web process in these tests (the test binary run
// with BERTH_DEPLOY_WEB_HELPER=1): it serves its release's VERSION file
// on PORT and answers /up; in a release with an UNHEALTHY file it never
// gets healthy: it exits at once, saying why. (The manager's own tests
// cover an instance that runs and answers 500; it waits two minutes for
// that one to recover.)
func webHelper() {
	version, _ := os.ReadFile("VERSION")
	if _, err := os.Stat("UNHEALTHY"); err == nil {
		fmt.Fprintln(os.Stderr, "web: this release is unhealthy, not starting")
		os.Exit(1)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/up", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s pid=%d greeting=%s", strings.TrimSpace(string(version)), os.Getpid(), os.Getenv("GREETING"))
	})
	fmt.Println("web listening on", os.Getenv("PORT"))
	if err := http.ListenAndServe("127.0.0.1:"+os.Getenv("PORT"), mux); err != nil {
		fmt.Fprintln(os.Stderr, "web:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

var (
	agentBinOnce sync.Once
	agentBinPath string
	agentBinErr  error
	agentBinDir  string // removed by TestMain
)

// agentBin builds berth-agent once per test run: the process supervisors
// and upstreams are its hidden subcommands.
func agentBin(t *testing.T) string {
	t.Helper()
	agentBinOnce.Do(func() {
		agentBinDir, agentBinErr = os.MkdirTemp("", "berth-agent-bin-")
		if agentBinErr != nil {
			return
		}
		agentBinPath = filepath.Join(agentBinDir, "berth-agent")
		out, err := exec.Command("go", "build", "-o", agentBinPath, "github.com/berthhq/berth/agent/cmd/berth-agent").CombinedOutput()
		if err != nil {
			agentBinErr = fmt.Errorf("go build berth-agent: %v\n%s", err, out)
		}
	})
	if agentBinErr != nil {
		t.Fatal(agentBinErr)
	}
	return agentBinPath
}

// newManager is a real process manager on a state dir of the test's; the
// app's processes are stopped and forgotten when the test ends.
func newManager(t *testing.T) *supervise.Manager {
	t.Helper()
	return newManagerAt(t, filepath.Join(t.TempDir(), "apps"))
}

// newManagerAt is a manager on stateDir, which another may have used.
func newManagerAt(t *testing.T, stateDir string) *supervise.Manager {
	t.Helper()
	m, err := supervise.NewManager(supervise.Config{StateDir: stateDir, Executable: agentBin(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := m.DeleteApp(ctx, "app1"); err != nil {
			t.Errorf("cleanup: delete app1's processes: %v", err)
		}
		m.Close()
	})
	return m
}

// freePort is a loopback port nothing listens on now.
func freePort(t *testing.T) uint32 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint32(l.Addr().(*net.TCPAddr).Port)
}

// webProcesses are the test app's processes: web (the test binary's web
// helper, with a port and a health path) and a worker.
func webProcesses() []*agentv1.ProcessSpec {
	return []*agentv1.ProcessSpec{
		{Name: "web", Command: "BERTH_DEPLOY_WEB_HELPER=1 exec " + shellQuote(os.Args[0]), Instances: 1, Port: true, HealthPath: "/up", StopGrace: durationpb.New(5 * time.Second)},
		{Name: "worker", Command: "echo worker up; exec sleep 100000", Instances: 1, StopGrace: durationpb.New(5 * time.Second)},
	}
}

// get fetches the upstream's / and returns the body ("" and the error
// when nothing answered 200).
func get(port uint32) (string, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://127.0.0.1:" + strconv.Itoa(int(port)) + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s: %s", resp.Status, b)
	}
	return string(b), nil
}

// mustServe asserts the upstream serves the release with VERSION want.
func mustServe(t *testing.T, port uint32, want string) string {
	t.Helper()
	body, err := get(port)
	if err != nil || !strings.HasPrefix(body, want+" ") {
		t.Fatalf("upstream 127.0.0.1:%d: %q, %v; want version %s", port, body, err, want)
	}
	return body
}

// appState is the manager's report for app1's process name.
func appState(m *supervise.Manager, name string) *agentv1.ProcessState {
	for _, a := range m.Report().GetApps() {
		if a.GetAppId() != "app1" {
			continue
		}
		for _, p := range a.GetProcesses() {
			if p.GetName() == name {
				return p
			}
		}
	}
	return nil
}

func pidOf(t *testing.T, m *supervise.Manager, name string) int32 {
	t.Helper()
	p := appState(m, name)
	if p == nil || len(p.GetInstances()) == 0 || p.GetInstances()[0].GetPid() == 0 {
		t.Fatalf("%s has no running instance: %v", name, p)
	}
	return p.GetInstances()[0].GetPid()
}

// stepOrder fails unless the log shows the steps in this order.
func stepOrder(t *testing.T, log string, steps ...string) {
	t.Helper()
	at := -1
	for _, s := range steps {
		i := strings.Index(log, "==> "+s+"\n")
		if i < 0 || i < at {
			t.Fatalf("steps not in order %v:\n%s", steps, log)
		}
		at = i
	}
}

// A deploy moves the app's processes to the new release after the switch
// and before the health check; a redeploy moves them again; a release
// whose web fails its health check fails at step processes and leaves the
// old release current and serving; a rollback moves them to the kept
// release; process jobs stop, start and restart them; a delete stops all.
func TestProcessesFollowDeploys(t *testing.T) {
	repo := newRepo(t)
	repo.commit("v1", map[string]string{"build.sh": "true\n", "VERSION": "v1\n"})
	m := newManager(t)
	h := newHarness(t, Config{Processes: m})
	port := freePort(t)
	deploy := func() Spec {
		s := h.spec(repo)
		s.Processes, s.UpstreamPort = webProcesses(), port
		s.Env = map[string]string{"GREETING": "hi"}
		s.HealthCheck = &HealthCheck{URL: fmt.Sprintf("http://127.0.0.1:%d/up", port)}
		return s
	}

	// First deploy: nothing served before, the health check asks the
	// upstream the processes now serve.
	s1 := deploy()
	mustSucceed(t, h, s1.DeploymentID, h.run(s1))
	log := h.log(s1.DeploymentID)
	stepOrder(t, log, StepBuild, StepActivate, StepProcesses, StepReload, StepHealthCheck, StepPrune)
	if body := mustServe(t, port, "v1"); !strings.Contains(body, "greeting=hi") {
		t.Errorf("web does not have the app's environment: %q", body)
	}
	rel1 := filepath.Join(h.deploy, "releases", s1.DeploymentID)
	if got := m.ReleasesInUse("app1"); !slices.Contains(got, rel1) {
		t.Errorf("releases in use = %v, want %s among them", got, rel1)
	}
	if p := appState(m, "worker"); p == nil || p.GetRelease() != s1.DeploymentID {
		t.Errorf("worker: %v", p)
	}

	// Redeploy: the new release serves.
	repo.commit("v2", map[string]string{"VERSION": "v2\n"})
	s2 := deploy()
	mustSucceed(t, h, s2.DeploymentID, h.run(s2))
	mustServe(t, port, "v2")
	if p := appState(m, "web"); p == nil || p.GetRelease() != s2.DeploymentID {
		t.Errorf("web after redeploy: %v", p)
	}
	if p := appState(m, "worker"); p == nil || p.GetRelease() != s2.DeploymentID {
		t.Errorf("worker after redeploy: %v", p)
	}
	webPid := pidOf(t, m, "web")

	// A release whose web never gets healthy: failed at processes,
	// current back at v2, which still serves, and the failed release gone.
	repo.commit("v3 sick", map[string]string{"VERSION": "v3\n", "UNHEALTHY": "yes\n"})
	s3 := deploy()
	res := h.run(s3)
	if res.Status != StatusFailed || res.FailedStep != StepProcesses || !strings.Contains(res.Error, "web") || !strings.Contains(res.Error, "unhealthy, not starting") {
		t.Fatalf("sick release: %+v\nlog:\n%s", res, h.log(s3.DeploymentID))
	}
	if h.current() != s2.DeploymentID {
		t.Fatalf("current = %s after the failed deploy, want %s", h.current(), s2.DeploymentID)
	}
	mustServe(t, port, "v2")
	if got := pidOf(t, m, "web"); got != webPid {
		t.Errorf("the old web instance was replaced (pid %d, was %d)", got, webPid)
	}
	if _, err := os.Stat(filepath.Join(h.deploy, "releases", s3.DeploymentID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed release kept: %v", err)
	}

	// Rollback to the first release: processes move there too.
	rb := Spec{DeploymentID: newID(), AppID: "app1", AppName: "shop", Kind: KindRollback, DeployPath: h.deploy,
		RunAsUser: "root", AllowRoot: true, RollbackTo: s1.DeploymentID, Processes: webProcesses(), UpstreamPort: port}
	mustSucceed(t, h, rb.DeploymentID, h.run(rb))
	stepOrder(t, h.log(rb.DeploymentID), StepActivate, StepProcesses, StepReload, StepHealthCheck)
	mustServe(t, port, "v1")
	if p := appState(m, "web"); p == nil || p.GetRelease() != s1.DeploymentID {
		t.Errorf("web after rollback: %v", p)
	}

	// Process jobs act in the release current points at.
	process := func(action string, names ...string) {
		t.Helper()
		p := Spec{DeploymentID: newID(), AppID: "app1", AppName: "shop", Kind: KindProcess, DeployPath: h.deploy,
			RunAsUser: "root", AllowRoot: true, Processes: webProcesses(), UpstreamPort: port, ProcessAction: action, ProcessNames: names}
		res := h.run(p)
		mustSucceed(t, h, p.DeploymentID, res)
		if res.ReleasePath != filepath.Join(h.deploy, "releases", s1.DeploymentID) {
			t.Errorf("%s: release path %s", action, res.ReleasePath)
		}
	}
	process(ProcessStop, "web")
	if p := appState(m, "web"); p == nil || p.GetState() != "stopped" {
		t.Fatalf("web after stop: %v", p)
	}
	if _, err := get(port); err == nil {
		t.Error("the upstream still serves with web stopped")
	}
	if p := appState(m, "worker"); p == nil || p.GetState() != "running" {
		t.Errorf("worker after stopping web: %v", p)
	}
	process(ProcessStart, "web")
	mustServe(t, port, "v1")
	before := pidOf(t, m, "web")
	process(ProcessRestart)
	if after := pidOf(t, m, "web"); after == before {
		t.Errorf("restart kept web's pid %d", after)
	}
	mustServe(t, port, "v1")

	// Delete: every process and the upstream stop, then the files go.
	pids := []int32{pidOf(t, m, "web"), pidOf(t, m, "worker")}
	del := Spec{DeploymentID: newID(), AppID: "app1", AppName: "shop", Kind: KindDelete, DeployPath: h.deploy}
	mustSucceed(t, h, del.DeploymentID, h.run(del))
	stepOrder(t, h.log(del.DeploymentID), StepProcesses, StepRemove)
	for _, pid := range pids {
		waitGone(t, strconv.Itoa(int(pid)))
	}
	if appState(m, "web") != nil || len(m.ReleasesInUse("app1")) != 0 {
		t.Errorf("the manager still has the app: %v", m.Report())
	}
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second); err == nil {
		c.Close()
		t.Error("the upstream still listens after delete")
	}
	if _, err := os.Lstat(filepath.Join(h.deploy, "releases")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("releases kept: %v", err)
	}
}

// A process job of an app that has no current release fails and says so.
func TestProcessJobWithoutCurrent(t *testing.T) {
	m := newManager(t)
	h := newHarness(t, Config{Processes: m})
	if err := os.MkdirAll(h.deploy, 0o755); err != nil {
		t.Fatal(err)
	}
	p := Spec{DeploymentID: newID(), AppID: "app1", Kind: KindProcess, DeployPath: h.deploy, RunAsUser: "root", AllowRoot: true,
		Processes: webProcesses(), ProcessAction: ProcessStart}
	res := h.run(p)
	if res.Status != StatusFailed || res.FailedStep != StepProcesses || !strings.Contains(res.Error, "no current release") {
		t.Fatalf("%+v\nlog:\n%s", res, h.log(p.DeploymentID))
	}
	if appState(m, "web") != nil {
		t.Error("a process started without a release")
	}
}

// Pruning keeps a release the app's processes still run, even when it is
// neither current nor the previous one (here: processes the manager runs
// from an old release, as an interrupted deploy could leave them).
func TestPruneKeepsReleasesInUse(t *testing.T) {
	repo := newRepo(t)
	repo.commit("v1", map[string]string{"build.sh": "true\n", "VERSION": "v1\n"})
	m := newManager(t)
	h := newHarness(t, Config{Processes: m})
	var ids []string
	for range 3 {
		s := h.spec(repo)
		s.KeepReleases = 10
		mustSucceed(t, h, s.DeploymentID, h.run(s))
		ids = append(ids, s.DeploymentID)
	}
	oldest := filepath.Join(h.deploy, "releases", ids[0])
	err := m.Deploy(t.Context(), supervise.App{ID: "app1", ReleaseID: ids[0], ReleaseDir: oldest, Env: []string{"PATH=" + minimalPath},
		Processes: []*agentv1.ProcessSpec{{Name: "worker", Command: "exec sleep 100000", Instances: 1}}}, t.Logf)
	if err != nil {
		t.Fatal(err)
	}

	// The prune of a deploy keeping one release, run on its own so that
	// the deploy's own process move does not change what is in use.
	s := h.spec(repo)
	s.KeepReleases = 1
	if err := s.normalize(); err != nil {
		t.Fatal(err)
	}
	j := newJob(h.ex, s)
	if err := j.create(); err != nil {
		t.Fatal(err)
	}
	if j.tree, err = j.openTree(false); err != nil {
		t.Fatal(err)
	}
	defer j.tree.close()
	if err := j.prune(ids[2], ids[1]); err != nil {
		t.Fatal(err)
	}
	j.log.flush()
	if got := h.releases(); !slices.Equal(got, ids) {
		t.Fatalf("releases after prune = %v, want all of %v (current, previous and the one in use)\nlog:\n%s", got, ids, h.log(s.DeploymentID))
	}
	if !strings.Contains(h.log(s.DeploymentID), "kept release "+ids[0]+": the app's processes run it") {
		t.Errorf("log: %s", h.log(s.DeploymentID))
	}

	// Once nothing runs it, the same prune removes it.
	if err := m.DeleteApp(t.Context(), "app1"); err != nil {
		t.Fatal(err)
	}
	if err := j.prune(ids[2], ids[1]); err != nil {
		t.Fatal(err)
	}
	if got := h.releases(); !slices.Equal(got, ids[1:]) {
		t.Fatalf("releases after the second prune = %v, want %v", got, ids[1:])
	}
	j.e.mu.Lock()
	j.file.Close()
	j.e.mu.Unlock()
}

// A delete without a deploy path (app delete --keep-files) stops the app's
// processes and its upstream and leaves every file.
func TestDeleteKeepFilesStopsProcesses(t *testing.T) {
	repo := newRepo(t)
	repo.commit("v1", map[string]string{"build.sh": "true\n", "VERSION": "v1\n"})
	m := newManager(t)
	h := newHarness(t, Config{Processes: m})
	port := freePort(t)
	s := h.spec(repo)
	s.Processes, s.UpstreamPort = webProcesses(), port
	mustSucceed(t, h, s.DeploymentID, h.run(s))
	mustServe(t, port, "v1")
	pids := []int32{pidOf(t, m, "web"), pidOf(t, m, "worker")}

	del := Spec{DeploymentID: newID(), AppID: "app1", AppName: "shop", Kind: KindDelete}
	mustSucceed(t, h, del.DeploymentID, h.run(del))
	for _, pid := range pids {
		waitGone(t, strconv.Itoa(int(pid)))
	}
	if appState(m, "web") != nil {
		t.Errorf("the manager still has the app: %v", m.Report())
	}
	if _, err := get(port); err == nil {
		t.Error("the upstream still serves")
	}
	if h.current() != s.DeploymentID {
		t.Errorf("current = %q: the files were touched", h.current())
	}
	if _, err := os.Stat(filepath.Join(h.deploy, "current", "VERSION")); err != nil {
		t.Errorf("release files: %v", err)
	}
}

// When the app's own health check fails after its processes moved, current
// and the processes go back to the previous release (on a first deploy the
// processes stop); a deploy that declares no processes stops those left.
func TestProcessesBackAfterFailedHealthCheck(t *testing.T) {
	repo := newRepo(t)
	repo.commit("v0 sick", map[string]string{"build.sh": "true\n", "VERSION": "v0\n", "SICK": "yes\n"})
	m := newManager(t)
	h := newHarness(t, Config{Processes: m})
	port := freePort(t)
	deploy := func() Spec {
		s := h.spec(repo)
		s.Processes, s.UpstreamPort = webProcesses(), port
		s.HealthCheck = &HealthCheck{Command: "test ! -f SICK"}
		return s
	}

	// A first deploy whose check fails: nothing keeps running.
	s0 := deploy()
	res := h.run(s0)
	if res.Status != StatusFailed || res.FailedStep != StepHealthCheck {
		t.Fatalf("first deploy: %+v\nlog:\n%s", res, h.log(s0.DeploymentID))
	}
	if h.current() != "" || appState(m, "web") != nil || len(m.ReleasesInUse("app1")) != 0 {
		t.Fatalf("after a failed first deploy: current %q, report %v", h.current(), m.Report())
	}
	if _, err := get(port); err == nil {
		t.Error("the upstream serves after a failed first deploy")
	}

	gitT(t, repo.work, "rm", "-q", "SICK")
	repo.commit("v1", map[string]string{"VERSION": "v1\n"})
	s1 := deploy()
	mustSucceed(t, h, s1.DeploymentID, h.run(s1))
	mustServe(t, port, "v1")

	repo.commit("v2 sick", map[string]string{"VERSION": "v2\n", "SICK": "yes\n"})
	s2 := deploy()
	res = h.run(s2)
	log := h.log(s2.DeploymentID)
	if res.Status != StatusFailed || res.FailedStep != StepHealthCheck {
		t.Fatalf("sick deploy: %+v\nlog:\n%s", res, log)
	}
	if !strings.Contains(log, "moving the processes back to release "+s1.DeploymentID) {
		t.Errorf("log:\n%s", log)
	}
	if h.current() != s1.DeploymentID {
		t.Fatalf("current = %s, want %s", h.current(), s1.DeploymentID)
	}
	mustServe(t, port, "v1")
	if p := appState(m, "worker"); p == nil || p.GetRelease() != s1.DeploymentID {
		t.Errorf("worker: %v", p)
	}
	if _, err := os.Stat(filepath.Join(h.deploy, "releases", s2.DeploymentID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the failed release is kept: %v", err)
	}

	// No processes declared any more: those left stop.
	gitT(t, repo.work, "rm", "-q", "SICK")
	repo.commit("v3", map[string]string{"VERSION": "v3\n"})
	pid := pidOf(t, m, "web")
	s3 := h.spec(repo)
	s3.UpstreamPort = port
	mustSucceed(t, h, s3.DeploymentID, h.run(s3))
	if !strings.Contains(h.log(s3.DeploymentID), "declares no processes: stopping those it still has") {
		t.Errorf("log:\n%s", h.log(s3.DeploymentID))
	}
	waitGone(t, strconv.Itoa(int(pid)))
	if len(m.ReleasesInUse("app1")) != 0 {
		t.Errorf("releases still in use: %v", m.ReleasesInUse("app1"))
	}
}

// procCrashHelper is the agent the process crash test kills: it starts a
// deploy whose new web instance waits on a fifo, so the deploy stays in
// its processes step until the test kills it.
func procCrashHelper() {
	m, err := supervise.NewManager(supervise.Config{StateDir: os.Getenv("STATE"), Executable: os.Getenv("AGENT_BIN")})
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash helper:", err)
		os.Exit(2)
	}
	ex, err := New(Config{DataDir: os.Getenv("DATA"), AppDirs: []string{os.TempDir()}, Processes: m})
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash helper:", err)
		os.Exit(2)
	}
	port, _ := strconv.Atoi(os.Getenv("PORT"))
	spec := Spec{
		DeploymentID: os.Getenv("ID"), AppID: "app1", AppName: "shop", Kind: Kind(os.Getenv("KIND")),
		RepoURL: os.Getenv("REPO"), Branch: "main", DeployPath: os.Getenv("DEPLOY"), RunAsUser: "root", AllowRoot: true,
		Processes: []*agentv1.ProcessSpec{webProcesses()[0]}, UpstreamPort: uint32(port), RollbackTo: os.Getenv("ROLLBACK_TO"),
	}
	hold := "read -r _ < " + shellQuote(os.Getenv("FIFO"))
	if os.Getenv("HOLD") == "reload" {
		// The processes moved; the reload step holds.
		spec.ReloadCommand = "echo reload holding; " + hold
	} else {
		// The new web instance holds before it listens.
		web := spec.Processes[0]
		web.Command = hold + "; " + web.Command
	}
	err = ex.Start(context.Background(), spec)
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash helper:", err)
		os.Exit(2)
	}
	select {}
}

// An agent killed while it moves the processes: the next one reports the
// deploy failed at step processes, with current back at the release the
// old instances still serve; the release a new instance runs stays, and
// the next deploy retires that instance.
func TestAgentCrashDuringProcessMove(t *testing.T) {
	repo := newRepo(t)
	repo.commit("v1", map[string]string{"build.sh": "true\n", "VERSION": "v1\n"})
	state := filepath.Join(t.TempDir(), "apps")
	m1 := newManagerAt(t, state)
	h := newHarness(t, Config{Processes: m1})
	port := freePort(t)
	s1 := h.spec(repo)
	s1.Processes, s1.UpstreamPort = webProcesses(), port
	mustSucceed(t, h, s1.DeploymentID, h.run(s1))
	mustServe(t, port, "v1")
	h.ex.Close()
	m1.Close()

	repo.commit("v2", map[string]string{"VERSION": "v2\n"})
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	id := newID()
	killHelperAt(t, fifo, "waiting for their health checks", "KIND=deploy", "HOLD=web", "STATE="+state, "DATA="+h.data, "ID="+id,
		"REPO="+repo.url(), "DEPLOY="+h.deploy, "PORT="+strconv.Itoa(int(port)))

	m2 := newManagerAt(t, state)
	h.open(Config{Processes: m2})
	res := h.wait(id)
	if res.Status != StatusFailed || res.FailedStep != StepProcesses || res.Error != "agent restarted during step processes" {
		t.Fatalf("result = %+v", res)
	}
	if h.current() != s1.DeploymentID {
		t.Fatalf("current = %s, want %s", h.current(), s1.DeploymentID)
	}
	mustServe(t, port, "v1")
	if _, err := os.Stat(filepath.Join(h.deploy, "releases", id)); err != nil {
		t.Errorf("the release a new instance runs was removed: %v", err)
	}

	s3 := h.spec(repo)
	s3.Processes, s3.UpstreamPort = webProcesses(), port
	mustSucceed(t, h, s3.DeploymentID, h.run(s3))
	mustServe(t, port, "v2")
	if got, want := m2.ReleasesInUse("app1"), []string{filepath.Join(h.deploy, "releases", s3.DeploymentID)}; !slices.Equal(got, want) {
		t.Errorf("releases in use after the next deploy = %v, want %v", got, want)
	}
}

// killHelperAt runs procCrashHelper with env and kills it (-9) once its
// job's journal holds mark.
func killHelperAt(t *testing.T, fifo, mark string, env ...string) {
	t.Helper()
	var id, data string
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "ID="); ok {
			id = v
		}
		if v, ok := strings.CutPrefix(kv, "DATA="); ok {
			data = v
		}
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(append(os.Environ(), "BERTH_DEPLOY_PROC_CRASH_HELPER=1", "AGENT_BIN="+agentBin(t), "FIFO="+fifo), env...)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	deadline := time.Now().Add(hangGuard)
	for !journalHas(filepath.Join(data, "jobs", id, eventsFile), mark) {
		if time.Now().After(deadline) {
			t.Fatalf("the job never logged %q; helper said:\n%s", mark, out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
}

// An agent killed after the processes moved (in the reload step): the next
// one keeps current with them and fails the job saying so, for a deploy
// and for a rollback alike; nothing is removed from under them.
func TestAgentCrashAfterProcessMove(t *testing.T) {
	repo := newRepo(t)
	repo.commit("v1", map[string]string{"build.sh": "true\n", "VERSION": "v1\n"})
	state := filepath.Join(t.TempDir(), "apps")
	m1 := newManagerAt(t, state)
	h := newHarness(t, Config{Processes: m1})
	port := freePort(t)
	s1 := h.spec(repo)
	s1.Processes, s1.UpstreamPort = webProcesses(), port
	mustSucceed(t, h, s1.DeploymentID, h.run(s1))
	h.ex.Close()
	m1.Close()

	repo.commit("v2", map[string]string{"VERSION": "v2\n"})
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	common := []string{"HOLD=reload", "STATE=" + state, "DATA=" + h.data, "REPO=" + repo.url(), "DEPLOY=" + h.deploy, "PORT=" + strconv.Itoa(int(port))}

	id := newID()
	killHelperAt(t, fifo, "reload holding", append(common, "KIND=deploy", "ID="+id)...)
	m2 := newManagerAt(t, state)
	h.open(Config{Processes: m2})
	res := h.wait(id)
	if res.Status != StatusFailed || res.FailedStep != StepReload || !strings.Contains(res.Error, "the release is current and the app's processes run it") {
		t.Fatalf("deploy: %+v", res)
	}
	if h.current() != id {
		t.Fatalf("current = %s, want %s (the processes run it)", h.current(), id)
	}
	mustServe(t, port, "v2")
	h.ex.Close()
	m2.Close()

	rb := newID()
	killHelperAt(t, fifo, "reload holding", append(common, "KIND=rollback", "ID="+rb, "ROLLBACK_TO="+s1.DeploymentID)...)
	m3 := newManagerAt(t, state)
	h.open(Config{Processes: m3})
	res = h.wait(rb)
	if res.Status != StatusFailed || res.FailedStep != StepReload || !strings.Contains(res.Error, "the kept release is current and the app's processes run it") {
		t.Fatalf("rollback: %+v", res)
	}
	if h.current() != s1.DeploymentID {
		t.Fatalf("current = %s, want %s", h.current(), s1.DeploymentID)
	}
	mustServe(t, port, "v1")
	if _, err := os.Stat(filepath.Join(h.deploy, "releases", id)); err != nil {
		t.Errorf("release %s: %v", id, err)
	}
}
