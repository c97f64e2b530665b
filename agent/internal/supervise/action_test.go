package supervise

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestValidation(t *testing.T) {
	ok := func() *agentv1.ProcessSpec { return &agentv1.ProcessSpec{Name: "web", Command: "true", Instances: 1} }
	cases := []struct {
		name string
		edit func(p *agentv1.ProcessSpec)
		want string
	}{
		{"empty name", func(p *agentv1.ProcessSpec) { p.Name = "" }, "process name"},
		{"upper case", func(p *agentv1.ProcessSpec) { p.Name = "Web" }, "process name"},
		{"leading digit", func(p *agentv1.ProcessSpec) { p.Name = "1web" }, "process name"},
		{"path", func(p *agentv1.ProcessSpec) { p.Name = "../x" }, "process name"},
		{"long name", func(p *agentv1.ProcessSpec) { p.Name = strings.Repeat("a", 33) }, "process name"},
		{"empty command", func(p *agentv1.ProcessSpec) { p.Command = "" }, "command is empty"},
		{"huge command", func(p *agentv1.ProcessSpec) { p.Command = strings.Repeat("x", 64<<10+1) }, "more than"},
		{"nul command", func(p *agentv1.ProcessSpec) { p.Command = "a\x00b" }, "NUL"},
		{"no instances", func(p *agentv1.ProcessSpec) { p.Instances = 0 }, "instances 0"},
		{"many instances", func(p *agentv1.ProcessSpec) { p.Instances = 33 }, "instances 33"},
		{"signal", func(p *agentv1.ProcessSpec) { p.StopSignal = "SIGTERM" }, "stop_signal"},
		{"restart", func(p *agentv1.ProcessSpec) { p.Restart = "sometimes" }, "restart"},
		{"grace", func(p *agentv1.ProcessSpec) { p.StopGrace = durationpb.New(2 * time.Hour) }, "stop_grace"},
		{"negative grace", func(p *agentv1.ProcessSpec) { p.StopGrace = durationpb.New(-time.Second) }, "stop_grace"},
		{"health without port", func(p *agentv1.ProcessSpec) { p.HealthPath = "/up" }, "needs port"},
		{"health path", func(p *agentv1.ProcessSpec) { p.Port, p.HealthPath = true, "up" }, "must start with /"},
		{"health space", func(p *agentv1.ProcessSpec) { p.Port, p.HealthPath = true, "/a b" }, "space"},
	}
	for _, c := range cases {
		p := ok()
		c.edit(p)
		err := ValidateProcesses([]*agentv1.ProcessSpec{p})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	if err := ValidateProcesses([]*agentv1.ProcessSpec{ok(), ok()}); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("duplicate: %v", err)
	}
	if err := ValidateProcesses([]*agentv1.ProcessSpec{ok(), nil}); err == nil {
		t.Error("nil spec accepted")
	}
	good := ok()
	good.StopSignal, good.Restart, good.StopGrace = "KILL", "never", durationpb.New(time.Hour)
	if err := ValidateProcesses([]*agentv1.ProcessSpec{good}); err != nil {
		t.Errorf("valid spec: %v", err)
	}

	m := newManager(t, t.TempDir())
	ctx := context.Background()
	app := newApp(t, false, ok())
	bad := app
	bad.ID = "../etc"
	if err := m.Deploy(ctx, bad, nil); err == nil || !strings.Contains(err.Error(), "app id") {
		t.Errorf("bad app id: %v", err)
	}
	bad = app
	bad.ReleaseDir = "relative"
	if err := m.Deploy(ctx, bad, nil); err == nil || !strings.Contains(err.Error(), "absolute") {
		t.Errorf("relative release: %v", err)
	}
	bad = app
	bad.Env = []string{"A=\x00"}
	if err := m.Deploy(ctx, bad, nil); err == nil || !strings.Contains(err.Error(), "NUL") {
		t.Errorf("NUL env: %v", err)
	}
	if err := m.Action(ctx, app, "reload", nil, nil); err == nil || !strings.Contains(err.Error(), "must be apply") {
		t.Errorf("bad action: %v", err)
	}
	if err := m.Action(ctx, app, "stop", []string{"nope"}, nil); err == nil || !strings.Contains(err.Error(), "not declared") {
		t.Errorf("unknown process: %v", err)
	}
	if err := m.DeleteApp(ctx, "a/b"); err == nil {
		t.Error("DeleteApp accepted a path")
	}
	for _, req := range []*agentv1.LogsRequest{
		{AppId: ""}, {AppId: "../x"}, {AppId: "a", Tail: 10001}, {AppId: "a", Processes: []string{"../x"}},
	} {
		if err := m.Logs(ctx, req, func([]*agentv1.LogLine) error { return nil }); err == nil {
			t.Errorf("logs request %v accepted", req)
		}
	}
	if _, err := NewManager(Config{StateDir: "rel", Executable: agentBin}); err == nil {
		t.Error("relative state dir accepted")
	}
	if _, err := NewManager(Config{StateDir: t.TempDir(), Executable: "/nonexistent/berth-agent"}); err == nil {
		t.Error("missing executable accepted")
	}
	if len(m.Report().GetApps()) != 0 {
		t.Errorf("rejected requests left something: %v", m.Report())
	}
}

// TestActions: apply touches only what changed, stops what is no longer
// declared; restart replaces; OnChange fires.
func TestActions(t *testing.T) {
	m := newManager(t, t.TempDir())
	var changes atomic.Int32
	m.OnChange(func() { changes.Add(1) })
	a := workerSpec(`while true; do sleep 1; done`)
	b := workerSpec(`while true; do sleep 1; done`)
	b.Name = "other"
	app := newApp(t, true, webSpec(1), a, b)
	cleanup(t, m, app.ID)
	ctx := context.Background()
	if err := m.Action(ctx, app, "apply", nil, logT(t)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "OnChange after apply", func() bool { return changes.Load() > 0 })
	web0, w0, o0 := pids(procReport(m, app.ID, "web")), pids(procReport(m, app.ID, "worker")), pids(procReport(m, app.ID, "other"))

	// Change only the worker's command: apply replaces the worker alone.
	a.Command = `while true; do sleep 2; done`
	if err := m.Action(ctx, app, "apply", nil, logT(t)); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(pids(procReport(m, app.ID, "web"))) != fmt.Sprint(web0) || fmt.Sprint(pids(procReport(m, app.ID, "other"))) != fmt.Sprint(o0) {
		t.Fatal("apply replaced unchanged processes")
	}
	if fmt.Sprint(pids(procReport(m, app.ID, "worker"))) == fmt.Sprint(w0) {
		t.Fatal("apply kept the changed worker")
	}
	// restart web: new pid, on a new port, still serving.
	if err := m.Action(ctx, app, "restart", []string{"web"}, logT(t)); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(pids(procReport(m, app.ID, "web"))) == fmt.Sprint(web0) {
		t.Fatal("restart kept the web pid")
	}
	if code, _, err := get(app.UpstreamPort, "/"); err != nil || code != 200 {
		t.Fatalf("after restart: %d %v", code, err)
	}
	// start of a running process does nothing.
	w1 := pids(procReport(m, app.ID, "worker"))
	if err := m.Action(ctx, app, "start", nil, logT(t)); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(pids(procReport(m, app.ID, "worker"))) != fmt.Sprint(w1) {
		t.Fatal("start restarted a running process")
	}
	// stop web: the upstream has no backend and says so (503).
	if err := m.Action(ctx, app, "stop", []string{"web"}, logT(t)); err != nil {
		t.Fatal(err)
	}
	if code, _, err := get(app.UpstreamPort, "/"); err != nil || code != 503 {
		t.Fatalf("upstream without backends: %d %v", code, err)
	}
	// Drop "other" from the declaration: apply stops it and it leaves the report.
	app.Processes = []*agentv1.ProcessSpec{webSpec(1), a}
	if err := m.Action(ctx, app, "restart", []string{"other"}, logT(t)); err == nil || !strings.Contains(err.Error(), "not declared") {
		t.Fatalf("restart of an undeclared process: %v", err)
	}
	otherPid := int(o0[0])
	if err := m.Action(ctx, app, "apply", nil, logT(t)); err != nil {
		t.Fatal(err)
	}
	if procReport(m, app.ID, "other") != nil || !procGone(otherPid) {
		t.Fatal("undeclared process still there")
	}
	if procReport(m, app.ID, "web").GetState() != "running" {
		t.Fatal("apply did not start the stopped web")
	}
	// A deploy on another upstream port moves the upstream.
	moved := app
	moved.UpstreamPort, _ = freePort(map[uint32]bool{app.UpstreamPort: true})
	deploy(t, m, withRelease(t, moved, "r2"))
	if _, body, err := get(moved.UpstreamPort, "/"); err != nil || body != "release=r2" {
		t.Fatalf("moved upstream: %q %v", body, err)
	}
	if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", app.UpstreamPort)); err == nil {
		c.Close()
		t.Fatal("old upstream port still listening")
	}
	// A deploy with nothing declared and no upstream stops everything.
	none := withRelease(t, moved, "r3")
	none.Processes, none.UpstreamPort = nil, 0
	deploy(t, m, none)
	if r := appReport(m, app.ID); r != nil {
		t.Fatalf("after an empty deploy: %v", r)
	}
	if len(m.ReleasesInUse(app.ID)) != 0 {
		t.Fatalf("releases in use: %v", m.ReleasesInUse(app.ID))
	}
}

// TestPortDropped: a process that loses its port leaves the upstream.
func TestPortDropped(t *testing.T) {
	m := newManager(t, t.TempDir())
	app := newApp(t, true, webSpec(1))
	cleanup(t, m, app.ID)
	deploy(t, m, app)
	noPort := webSpec(1)
	noPort.Port, noPort.HealthPath, noPort.Command = false, "", `while true; do sleep 1; done`
	app.Processes = []*agentv1.ProcessSpec{noPort}
	deploy(t, m, withRelease(t, app, "r2"))
	var set backendSet
	if err := readJSON(m.upDir(app.ID)+"/"+backendsFile, &set); err != nil || len(set.Backends) != 0 {
		t.Fatalf("backends: %v %v", set, err)
	}
	if code, _, err := get(app.UpstreamPort, "/"); err != nil || code != 503 {
		t.Fatalf("upstream: %d %v", code, err)
	}
}

// TestTCPHealth: without a health path a new instance is healthy once it
// accepts a connection; one that never listens fails the deploy.
func TestTCPHealth(t *testing.T) {
	m := newManager(t, t.TempDir())
	web := webSpec(1)
	web.HealthPath = ""
	app := newApp(t, true, web)
	cleanup(t, m, app.ID)
	deploy(t, m, app)
	if code, body, err := get(app.UpstreamPort, "/"); err != nil || code != 200 || body != "release=r1" {
		t.Fatalf("%d %q %v", code, body, err)
	}
	m.healthTimeout = time.Second
	deaf := withRelease(t, app, "deaf")
	deaf.Processes = []*agentv1.ProcessSpec{webSpec(1)}
	deaf.Processes[0].HealthPath = ""
	deaf.Processes[0].Command = `echo "not listening"; while true; do sleep 1; done`
	err := m.Deploy(context.Background(), deaf, logT(t))
	if err == nil || !strings.Contains(err.Error(), "no TCP connection") || !strings.Contains(err.Error(), "not listening") {
		t.Fatalf("deploy of a process that never listens: %v", err)
	}
	if _, body, _ := get(app.UpstreamPort, "/"); body != "release=r1" {
		t.Fatalf("old release not serving: %q", body)
	}
}
