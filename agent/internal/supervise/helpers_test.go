package supervise

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// agentBin is the real berth-agent (the supervisors and upstreams run
// it); webBin is the test app (testdata/webapp).
var agentBin, webBin string

func TestMain(m *testing.M) {
	if os.Getenv("SUPERVISE_TEST_AGENT") != "" {
		os.Exit(fakeAgent())
	}
	dir, err := os.MkdirTemp("", "supervise-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	agentBin = filepath.Join(dir, "berth-agent")
	webBin = filepath.Join(dir, "webapp")
	for _, b := range [][2]string{{agentBin, "../../cmd/berth-agent"}, {webBin, "./testdata/webapp"}} {
		out, err := exec.Command("go", "build", "-o", b[0], b[1]).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", b[1], err, out)
			os.Exit(1)
		}
	}
	// Readable by an unprivileged app user too.
	os.Chmod(dir, 0o755)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// fakeAgent is the test binary standing in for the agent process (so the
// test can kill it with -9): it deploys the app given in the environment,
// says so, and waits to be killed.
func fakeAgent() int {
	var app App
	if err := json.Unmarshal([]byte(os.Getenv("SUPERVISE_TEST_APP")), &app); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	m, err := NewManager(Config{StateDir: os.Getenv("SUPERVISE_TEST_AGENT"), Executable: os.Getenv("SUPERVISE_TEST_EXE")})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := m.Deploy(context.Background(), app, func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("deployed")
	select {}
}

var appSeq atomic.Int32

func newManager(t *testing.T, stateDir string) *Manager {
	t.Helper()
	m, err := NewManager(Config{StateDir: stateDir, Executable: agentBin})
	if err != nil {
		t.Fatal(err)
	}
	m.healthTimeout = 20 * time.Second
	t.Cleanup(func() { m.Close() })
	return m
}

// newApp is an app whose processes run webBin; each call with another
// release makes another release directory.
func newApp(t *testing.T, upstream bool, procs ...*agentv1.ProcessSpec) App {
	t.Helper()
	app := App{
		ID:        fmt.Sprintf("app%d%d", os.Getpid(), appSeq.Add(1)),
		UID:       uint32(os.Geteuid()),
		GID:       uint32(os.Getegid()),
		Processes: procs,
	}
	if upstream {
		p, err := freePort(map[uint32]bool{})
		if err != nil {
			t.Fatal(err)
		}
		app.UpstreamPort = p
	}
	return withRelease(t, app, "r1")
}

func withRelease(t *testing.T, app App, release string, env ...string) App {
	t.Helper()
	dir := filepath.Join(t.TempDir(), release)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	app.ReleaseID, app.ReleaseDir = release, dir
	app.Env = append([]string{"RELEASE=" + release, "WEBAPP=" + webBin}, env...)
	return app
}

func webSpec(instances uint32) *agentv1.ProcessSpec {
	return &agentv1.ProcessSpec{
		Name: "web", Command: `exec "$WEBAPP"`, Instances: instances, Port: true,
		HealthPath: "/health", StopGrace: durationpb.New(10 * time.Second),
	}
}

func workerSpec(cmd string) *agentv1.ProcessSpec {
	return &agentv1.ProcessSpec{Name: "worker", Command: cmd, Instances: 1, StopGrace: durationpb.New(5 * time.Second)}
}

func logT(t *testing.T) func(string, ...any) {
	return func(f string, a ...any) { t.Logf("deploy: "+f, a...) }
}

func deploy(t *testing.T, m *Manager, app App) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.Deploy(ctx, app, logT(t)); err != nil {
		t.Fatalf("deploy %s: %v", app.ReleaseID, err)
	}
}

// cleanup deletes the app at the end of the test, whatever happened.
func cleanup(t *testing.T, m *Manager, id string) {
	t.Cleanup(func() {
		if err := m.DeleteApp(context.Background(), id); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func appReport(m *Manager, id string) *agentv1.AppProcesses {
	for _, a := range m.Report().GetApps() {
		if a.GetAppId() == id {
			return a
		}
	}
	return nil
}

func procReport(m *Manager, id, name string) *agentv1.ProcessState {
	for _, p := range appReport(m, id).GetProcesses() {
		if p.GetName() == name {
			return p
		}
	}
	return nil
}

func pids(p *agentv1.ProcessState) []int32 {
	var out []int32
	for _, i := range p.GetInstances() {
		out = append(out, i.GetPid())
	}
	return out
}

func get(port uint32, path string) (int, string, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}

func procGone(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return os.IsNotExist(err) || isZombie(pid)
}
