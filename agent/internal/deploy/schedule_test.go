package deploy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// scheduleSpec is one run of a schedule of the harness's app.
func (h *harness) scheduleSpec(name, command string) Spec {
	return Spec{
		DeploymentID: newID(), AppID: "app1", AppName: "shop", Kind: KindSchedule,
		DeployPath: h.deploy, RunAsUser: "root", AllowRoot: true,
		ScheduleName: name, ScheduleCommand: command,
	}
}

// A schedule run executes its command with bash in the release current
// points at, as the app's user, with the app's environment; its output is
// the job's log and its exit code the result's.
func TestScheduleRunsInCurrent(t *testing.T) {
	needRoot(t)
	appUser := testUser(t)
	repo := newRepo(t)
	repo.commit("first", map[string]string{"build.sh": "true\n", "index.html": "v1\n"})
	h := newHarness(t, Config{})
	reachable(t, h.deploy)
	d := h.spec(repo)
	d.RunAsUser, d.AllowRoot = appUser, false
	mustSucceed(t, h, d.DeploymentID, h.run(d))
	release := filepath.Join(h.deploy, "releases", d.DeploymentID)

	s := h.scheduleSpec("report", `echo "in $(pwd) as $(id -un) greeting=$GREETING schedule=$BERTH_SCHEDULE_NAME"; cat index.html; echo oops >&2; exit 3`)
	s.RunAsUser, s.AllowRoot = appUser, false
	s.Env = map[string]string{"GREETING": "hello"}
	res := h.run(s)
	log := h.log(s.DeploymentID)
	if res.Status != StatusFailed || res.FailedStep != StepSchedule || res.ExitCode != 3 || res.ReleasePath != release {
		t.Fatalf("result %+v\nlog:\n%s", res, log)
	}
	for _, want := range []string{
		"==> schedule", "in " + release + " as " + appUser + " greeting=hello schedule=report", "v1", "oops",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}

	ok := h.scheduleSpec("report", "echo fine")
	ok.RunAsUser, ok.AllowRoot = appUser, false
	res = h.run(ok)
	mustSucceed(t, h, ok.DeploymentID, res)
	if res.ExitCode != 0 || !strings.Contains(h.log(ok.DeploymentID), "fine") {
		t.Errorf("result %+v, log %q", res, h.log(ok.DeploymentID))
	}
}

// A schedule of an app that has no current release fails and says why.
func TestScheduleWithoutCurrent(t *testing.T) {
	h := newHarness(t, Config{})
	if err := os.MkdirAll(h.deploy, 0o755); err != nil {
		t.Fatal(err)
	}
	s := h.scheduleSpec("report", "echo never")
	res := h.run(s)
	if res.Status != StatusFailed || res.FailedStep != StepSchedule || !strings.Contains(res.Error, "no current release") {
		t.Fatalf("result %+v\nlog:\n%s", res, h.log(s.DeploymentID))
	}
	if strings.Contains(h.log(s.DeploymentID), "never\n") {
		t.Error("the command ran without a release")
	}
	// And a process job (this executor supervises nothing): a clear no.
	p := Spec{DeploymentID: newID(), AppID: "app1", Kind: KindProcess, DeployPath: h.deploy, RunAsUser: "root", AllowRoot: true, ProcessAction: ProcessRestart}
	res = h.run(p)
	if res.Status != StatusFailed || res.FailedStep != StepProcesses || !strings.Contains(res.Error, "does not supervise app processes") {
		t.Fatalf("process job: %+v", res)
	}
}

// Two runs of one schedule never overlap, while another schedule and a
// deploy of the same app run beside it.
func TestScheduleNeverOverlaps(t *testing.T) {
	repo := newRepo(t)
	repo.commit("first", map[string]string{"build.sh": "true\n", "index.html": "v1\n"})
	h := newHarness(t, Config{})
	first := h.spec(repo)
	mustSucceed(t, h, first.DeploymentID, h.run(first))

	dir := t.TempDir()
	fifo, started := filepath.Join(dir, "go"), filepath.Join(dir, "started")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// The run holds until the test writes to the fifo.
	long := h.scheduleSpec("nightly", "echo yes > "+started+"; read -r line < "+fifo+"; echo got $line")
	h.start(long)
	waitFile(t, started)

	again := h.scheduleSpec("nightly", "echo second")
	if err := h.ex.Start(t.Context(), again); !errors.Is(err, ErrAppBusy) || !strings.Contains(err.Error(), "schedule nightly") {
		t.Fatalf("second run of a running schedule: %v", err)
	}
	other := h.scheduleSpec("hourly", "echo other")
	mustSucceed(t, h, other.DeploymentID, h.run(other))
	dep := h.spec(repo)
	mustSucceed(t, h, dep.DeploymentID, h.run(dep))
	if h.current() != dep.DeploymentID {
		t.Fatalf("current = %s, want the deploy that ran beside the schedule", h.current())
	}
	if got := h.ex.Running(); len(got) != 1 || got[0] != long.DeploymentID {
		t.Fatalf("running = %v, want only the held schedule run", got)
	}

	if err := os.WriteFile(fifo, []byte("go\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustSucceed(t, h, long.DeploymentID, h.wait(long.DeploymentID))
	if !strings.Contains(h.log(long.DeploymentID), "got go") {
		t.Errorf("log: %q", h.log(long.DeploymentID))
	}
	// Now the schedule is free again.
	mustSucceed(t, h, again.DeploymentID, h.run(again))
}

// Cancel ends a schedule run's whole process group (TERM, then KILL) and
// the run ends canceled; so does its deadline, timed out.
func TestScheduleCancelAndDeadline(t *testing.T) {
	repo := newRepo(t)
	repo.commit("first", map[string]string{"build.sh": "true\n"})
	h := newHarness(t, Config{})
	first := h.spec(repo)
	mustSucceed(t, h, first.DeploymentID, h.run(first))

	pidFile := filepath.Join(t.TempDir(), "pid")
	s := h.scheduleSpec("forever", "sleep 1000 & echo $! > "+pidFile+"; wait")
	h.start(s)
	pid := waitFile(t, pidFile)
	if err := h.ex.Cancel(s.DeploymentID); err != nil {
		t.Fatal(err)
	}
	res := h.wait(s.DeploymentID)
	if res.Status != StatusCanceled || res.FailedStep != StepSchedule {
		t.Fatalf("canceled run: %+v", res)
	}
	waitGone(t, pid)

	d := h.scheduleSpec("forever", "sleep 1000")
	d.Timeout = 200 * time.Millisecond // the deadline is the subject, not a timing assertion
	res = h.run(d)
	if res.Status != StatusTimedOut || res.FailedStep != StepSchedule {
		t.Fatalf("run past its deadline: %+v", res)
	}
}

// Process and schedule jobs refuse malformed input before anything runs.
func TestProcessAndScheduleSpecValidation(t *testing.T) {
	base := func(k Kind) Spec {
		return Spec{DeploymentID: newID(), AppID: "app1", Kind: k, DeployPath: "/srv/app", ProcessAction: ProcessStart, ScheduleName: "nightly", ScheduleCommand: "true"}
	}
	cases := []struct {
		name   string
		change func(*Spec)
		want   string
	}{
		{"unknown action", func(s *Spec) { s.Kind = KindProcess; s.ProcessAction = "explode" }, "not apply, start, stop or restart"},
		{"empty action", func(s *Spec) { s.Kind = KindProcess; s.ProcessAction = "" }, "not apply, start, stop or restart"},
		{"bad process name", func(s *Spec) { s.Kind = KindProcess; s.ProcessNames = []string{"../web"} }, "lowercase slug"},
		{"long process name", func(s *Spec) { s.Kind = KindProcess; s.ProcessNames = []string{strings.Repeat("a", 33)} }, "lowercase slug"},
		{"too many names", func(s *Spec) { s.Kind = KindProcess; s.ProcessNames = make([]string, maxProcesses+1) }, "at most"},
		{"nil process", func(s *Spec) { s.Kind = KindProcess; s.Processes = append(s.Processes, nil) }, "empty"},
		{"bad schedule name", func(s *Spec) { s.Kind = KindSchedule; s.ScheduleName = "Nightly Job" }, "schedule name"},
		{"no schedule name", func(s *Spec) { s.Kind = KindSchedule; s.ScheduleName = "" }, "schedule name"},
		{"empty command", func(s *Spec) { s.Kind = KindSchedule; s.ScheduleCommand = "  \n" }, "command is empty"},
		{"huge command", func(s *Spec) { s.Kind = KindSchedule; s.ScheduleCommand = strings.Repeat("x", maxScheduleCommand+1) }, "at most 64 KiB"},
		{"NUL in command", func(s *Spec) { s.Kind = KindSchedule; s.ScheduleCommand = "echo \x00" }, "NUL"},
		{"upstream port", func(s *Spec) { s.Kind = KindProcess; s.UpstreamPort = 70000 }, "not a TCP port"},
	}
	for _, c := range cases {
		s := base(KindProcess)
		c.change(&s)
		if err := s.normalize(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.want)
		}
	}
	for _, k := range []Kind{KindProcess, KindSchedule} {
		s := base(k)
		if err := s.normalize(); err != nil {
			t.Errorf("valid %s job refused: %v", k, err)
		}
	}
	// Only a delete may come without a deploy path (it keeps the files).
	for _, k := range []Kind{KindDelete, KindProcess, KindSchedule, KindRollback} {
		s := base(k)
		s.DeployPath, s.RollbackTo = "", newID()
		if err := s.normalize(); (err == nil) != (k == KindDelete) {
			t.Errorf("%s job without a deploy path: %v", k, err)
		}
	}
}

// A deploy beside a running scheduled command does not prune the release
// the command runs in, however many deploys pass.
func TestPruneKeepsReleaseOfRunningSchedule(t *testing.T) {
	repo := newRepo(t)
	repo.commit("first", map[string]string{"build.sh": "true\n"})
	h := newHarness(t, Config{})
	first := h.spec(repo)
	mustSucceed(t, h, first.DeploymentID, h.run(first))

	dir := t.TempDir()
	fifo, started := filepath.Join(dir, "go"), filepath.Join(dir, "started")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	long := h.scheduleSpec("nightly", "echo yes > "+started+"; read -r line < "+fifo)
	h.start(long)
	waitFile(t, started)
	var last string
	for range 3 {
		d := h.spec(repo)
		d.KeepReleases = 1
		mustSucceed(t, h, d.DeploymentID, h.run(d))
		last = d.DeploymentID
	}
	if !strings.Contains(h.log(last), "kept release "+first.DeploymentID+": a scheduled command runs in it") {
		t.Errorf("log:\n%s", h.log(last))
	}
	if _, err := os.Stat(filepath.Join(h.deploy, "releases", first.DeploymentID)); err != nil {
		t.Fatalf("the schedule's release was pruned: %v", err)
	}
	if err := os.WriteFile(fifo, []byte("go\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustSucceed(t, h, long.DeploymentID, h.wait(long.DeploymentID))
	// Free now: the next deploy prunes it.
	d := h.spec(repo)
	d.KeepReleases = 1
	mustSucceed(t, h, d.DeploymentID, h.run(d))
	if _, err := os.Stat(filepath.Join(h.deploy, "releases", first.DeploymentID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the release outlived its schedule run: %v", err)
	}
}
