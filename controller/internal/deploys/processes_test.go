package deploys

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// succeed runs a queued job to success as its agent would report it.
func (e *env) succeed(t *testing.T, id store.ID) store.Deployment {
	t.Helper()
	ctx := context.Background()
	claimed, err := e.st.ClaimQueuedDeployments(ctx, []store.ID{e.srv.ID}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(claimed, func(d store.Deployment) bool { return d.ID == id }) {
		t.Fatalf("job %s not claimable (claimed %d)", id, len(claimed))
	}
	if _, err := e.svc.JobEvents(ctx, e.srv.ID, []*agentv1.ConnectRequest{{Msg: &agentv1.ConnectRequest_JobResult{JobResult: &agentv1.JobResult{
		JobId: id.String(), Seq: 1, Status: string(store.DeploymentSucceeded),
	}}}}); err != nil {
		t.Fatal(err)
	}
	d, err := e.st.Deployment(ctx, id)
	if err != nil || d.Status != store.DeploymentSucceeded {
		t.Fatalf("job %s: %s %v", id, d.Status, err)
	}
	return d
}

func TestProcessesScopesAndValidation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	e.app(t, "shop")
	w := e.as(store.ScopeWrite)
	r := e.as(store.ScopeRead)
	web := ProcessParams{App: "shop", Name: "web", Command: "./server"}
	refused := map[string]error{
		"write adds a process": func() error { _, _, err := e.svc.AddProcess(ctx, w, Peer{}, web); return err }(),
		"write removes one":    func() error { _, err := e.svc.RemoveProcess(ctx, w, Peer{}, "shop", "web"); return err }(),
		"write restarts":       func() error { _, err := e.svc.ControlProcesses(ctx, w, Peer{}, "shop", "restart", nil); return err }(),
		"write adds a schedule": func() error {
			_, err := e.svc.AddSchedule(ctx, w, Peer{}, ScheduleParams{App: "shop", Name: "x", Cron: "@hourly", Command: "true"})
			return err
		}(),
		"write removes a schedule": e.svc.RemoveSchedule(ctx, w, Peer{}, "shop", "x"),
		"nobody lists":             func() error { _, _, err := e.svc.ListProcesses(ctx, nil, "shop"); return err }(),
		"nobody reads logs":        e.svc.StreamLogs(ctx, nil, LogsParams{App: "shop"}, nil),
	}
	for what, err := range refused {
		if err == nil || !strings.Contains(err.Error(), "scope") && !strings.Contains(err.Error(), "authenticat") {
			t.Errorf("%s: %v", what, err)
		}
	}
	if _, err := e.svc.ListSchedules(ctx, r, "shop"); err != nil {
		t.Fatalf("read lists schedules: %v", err)
	}
	if _, _, err := e.svc.ListProcesses(ctx, r, "shop"); err != nil {
		t.Fatalf("read lists processes: %v", err)
	}

	bad := []ProcessParams{
		{App: "shop", Name: "Web", Command: "x"},
		{App: "shop", Name: "1web", Command: "x"},
		{App: "shop", Name: strings.Repeat("a", 33), Command: "x"},
		{App: "shop", Name: "web", Command: "  "},
		{App: "shop", Name: "web", Command: strings.Repeat("x", 5000)},
		{App: "shop", Name: "web", Command: "a\x00b"},
		{App: "shop", Name: "web", Command: "x", Instances: 33},
		{App: "shop", Name: "web", Command: "x", HealthPath: "/up"}, // without --port
		{App: "shop", Name: "web", Command: "x", Port: true, HealthPath: "up"},
		{App: "shop", Name: "web", Command: "x", StopSignal: "STOP"},
		{App: "shop", Name: "web", Command: "x", StopGrace: 2 * time.Hour},
		{App: "shop", Name: "web", Command: "x", StopGrace: -time.Second},
		{App: "shop", Name: "web", Command: "x", Restart: "sometimes"},
		{App: "shop", Name: "web", Command: "x", CPUMaxPercent: 200000},
		{App: "shop", Name: "web", Command: "x", MemoryMax: 1000},
	}
	for _, p := range bad {
		if _, _, err := e.svc.AddProcess(ctx, e.admin, Peer{}, p); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v", p, err)
		}
	}
	badSched := []ScheduleParams{
		{App: "shop", Name: "r", Cron: "", Command: "x"},
		{App: "shop", Name: "r", Cron: "* * *", Command: "x"},
		{App: "shop", Name: "r", Cron: "61 * * * *", Command: "x"},
		{App: "shop", Name: "r", Cron: "0 0 30 2 *", Command: "x"}, // never
		{App: "shop", Name: "r", Cron: "CRON_TZ=UTC * * * * *", Command: "x"},
		{App: "shop", Name: "r", Cron: "@hourly", Command: "x", Timezone: "Mars/Olympus"},
		{App: "shop", Name: "r", Cron: "@hourly", Command: "x", Timezone: "Local"},
		{App: "shop", Name: "R!", Cron: "@hourly", Command: "x"},
		{App: "shop", Name: "r", Cron: "@hourly", Command: ""},
		{App: "shop", Name: "r", Cron: strings.Repeat("1 ", 200), Command: "x"},
	}
	for _, p := range badSched {
		if _, err := e.svc.AddSchedule(ctx, e.admin, Peer{}, p); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v", p, err)
		}
	}
	for _, l := range []LogsParams{{App: "shop", Tail: 10001}, {App: "shop", Since: -time.Second}, {App: "shop", Processes: []string{"NO"}}} {
		if err := e.svc.StreamLogs(ctx, r, l, nil); !errors.Is(err, ErrInvalid) {
			t.Errorf("logs %+v: %v", l, err)
		}
	}
	// The agent is not connected: Unavailable, naming the server.
	if err := e.svc.StreamLogs(ctx, r, LogsParams{App: "shop"}, nil); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "agent for web-1 is not connected") {
		t.Errorf("logs without an agent: %v", err)
	}
	// Online, but its stream is held by another controller.
	if _, err := e.st.Pool().Exec(ctx, `UPDATE servers SET status = 'online' WHERE name = 'web-1'`); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.StreamLogs(ctx, r, LogsParams{App: "shop"}, nil); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "another controller") {
		t.Errorf("logs from the wrong controller: %v", err)
	}
	if _, err := e.svc.ControlProcesses(ctx, e.admin, Peer{}, "shop", "reload", nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("action reload: %v", err)
	}
}

func TestProcessesLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	a := e.app(t, "shop")
	dep := e.as(store.ScopeDeploy)

	// No current release: declared, no job; the first port process gets
	// the app an upstream port.
	v, job, err := e.svc.AddProcess(ctx, dep, Peer{}, ProcessParams{App: "shop", Name: "web", Command: "./server", Instances: 2, Port: true, HealthPath: "/up", StopSignal: "sigint"})
	if err != nil || job != nil {
		t.Fatalf("add: %+v %v %v", v, job, err)
	}
	if v.State != StateUnknown || v.DesiredInstances != 2 || v.StopSignal != "INT" || v.StopGrace != 30*time.Second || v.Restart != "always" {
		t.Fatalf("view %+v", v)
	}
	_, _, err = e.svc.AddProcess(ctx, dep, Peer{}, ProcessParams{App: "shop", Name: "web", Command: "./other"})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("add twice: %v", err)
	}
	if _, err := e.svc.ControlProcesses(ctx, dep, Peer{}, "shop", "restart", nil); !errors.Is(err, store.ErrWrongState) {
		t.Fatalf("control without a release: %v", err)
	}
	list, port, err := e.svc.ListProcesses(ctx, e.as(store.ScopeRead), "shop")
	if err != nil || len(list) != 1 || port != 10000 {
		t.Fatalf("list %+v %d %v", list, port, err)
	}

	// A deploy carries the processes and the upstream port.
	q, err := e.svc.Deploy(ctx, e.admin, Peer{}, DeployParams{App: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	js, err := e.svc.jobStart(ctx, mustApp(t, e, a.ID), q.Deployment)
	if err != nil || js.GetKind() != "deploy" || len(js.GetProcesses()) != 1 || js.GetUpstreamPort() != 10000 {
		t.Fatalf("deploy job: %v %v", js, err)
	}
	ps := js.GetProcesses()[0]
	if ps.GetName() != "web" || ps.GetInstances() != 2 || !ps.GetPort() || ps.GetHealthPath() != "/up" || ps.GetStopGrace().AsDuration() != 30*time.Second {
		t.Fatalf("spec %v", ps)
	}
	e.succeed(t, q.Deployment.ID)

	// With a current release, a change is a process job.
	_, job, err = e.svc.AddProcess(ctx, dep, Peer{}, ProcessParams{App: "shop", Name: "worker", Command: "./work", Restart: "on-failure"})
	if err != nil || job == nil || job.Kind != store.JobProcess || *job.ProcessAction != ProcessApply || !slices.Equal(job.ProcessNames, []string{"worker"}) {
		t.Fatalf("add with a release: %+v %v", job, err)
	}
	// One job per app: a second change waits behind it.
	_, job2, err := e.svc.AddProcess(ctx, dep, Peer{}, ProcessParams{App: "shop", Name: "worker", Command: "./work2", Replace: true})
	if err != nil || job2 == nil {
		t.Fatalf("replace: %v %v", job2, err)
	}
	claimed, err := e.st.ClaimQueuedDeployments(ctx, []store.ID{e.srv.ID}, 10)
	if err != nil || len(claimed) != 1 || claimed[0].ID != job.ID {
		t.Fatalf("claimed %+v %v", claimed, err)
	}
	js, err = e.svc.jobStart(ctx, mustApp(t, e, a.ID), claimed[0])
	if err != nil || js.GetKind() != "process" || js.GetProcessAction() != "apply" || !slices.Equal(js.GetProcessNames(), []string{"worker"}) ||
		len(js.GetProcesses()) != 2 || js.GetCredential() != nil || js.GetRepositoryUrl() != "" || js.GetDeployPath() != "/srv/shop" {
		t.Fatalf("process job start: %v %v", js, err)
	}
	if _, err := e.svc.JobEvents(ctx, e.srv.ID, []*agentv1.ConnectRequest{{Msg: &agentv1.ConnectRequest_JobResult{JobResult: &agentv1.JobResult{
		JobId: job.ID.String(), Seq: 1, Status: string(store.DeploymentSucceeded)}}}}); err != nil {
		t.Fatal(err)
	}
	// A process job changes no release.
	if cur := mustApp(t, e, a.ID).CurrentDeploymentID; cur == nil || *cur != q.Deployment.ID {
		t.Fatalf("current moved to %v", cur)
	}
	e.succeed(t, job2.ID)

	// Control: unknown names are refused; duplicates collapse.
	if _, err := e.svc.ControlProcesses(ctx, dep, Peer{}, "shop", "stop", []string{"nope"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("stop unknown: %v", err)
	}
	cj, err := e.svc.ControlProcesses(ctx, dep, Peer{}, "shop", "stop", []string{"worker", "worker"})
	if err != nil || *cj.ProcessAction != "stop" || !slices.Equal(cj.ProcessNames, []string{"worker"}) {
		t.Fatalf("stop: %+v %v", cj, err)
	}
	e.succeed(t, cj.ID)

	// Reported state shows in the list and the app view.
	rep := &agentv1.AppProcesses{AppId: a.ID.String(), UpstreamPort: 10000, Processes: []*agentv1.ProcessState{{
		Name: "web", State: "running", Release: q.Deployment.ID.String(),
		Instances: []*agentv1.InstanceState{{Index: 0, Pid: 4242, Port: 20001, State: "running", Restarts: 3, StartedAt: timestamppb.Now()}},
	}}}
	raw, _ := protojson.Marshal(rep)
	if ok, err := e.st.SetProcessStatus(ctx, e.srv.ID, store.ProcessStatus{AppID: a.ID, Report: raw, ReportedAt: time.Now()}); err != nil || !ok {
		t.Fatal(ok, err)
	}
	av, err := e.svc.GetApp(ctx, e.as(store.ScopeRead), "shop")
	if err != nil || av.UpstreamPort != 10000 || len(av.Processes) != 2 {
		t.Fatalf("app view: %+v %v", av, err)
	}
	w := av.Processes[0]
	if w.Name != "web" || w.State != "running" || len(w.Instances) != 1 || w.Instances[0].PID != 4242 || w.Instances[0].Restarts != 3 || w.Release != q.Deployment.ID.String() || w.ReportedAt == nil {
		t.Fatalf("web view %+v", w)
	}
	if av.Processes[1].Name != "worker" || av.Processes[1].State != "stopped" {
		t.Fatalf("worker view %+v", av.Processes[1])
	}

	// Remove: a job stops it; removing again is not found.
	rj, err := e.svc.RemoveProcess(ctx, dep, Peer{}, "shop", "worker")
	if err != nil || rj == nil || *rj.ProcessAction != ProcessApply {
		t.Fatalf("remove: %+v %v", rj, err)
	}
	if _, err := e.svc.RemoveProcess(ctx, dep, Peer{}, "shop", "worker"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("remove twice: %v", err)
	}
	// Without a port process the jobs name no upstream (the app keeps its port).
	e.succeed(t, rj.ID)
	wj, err := e.svc.RemoveProcess(ctx, dep, Peer{}, "shop", "web")
	if err != nil {
		t.Fatal(err)
	}
	claimed, err = e.st.ClaimQueuedDeployments(ctx, []store.ID{e.srv.ID}, 10)
	if err != nil || len(claimed) != 1 || claimed[0].ID != wj.ID {
		t.Fatalf("claim %v %v", claimed, err)
	}
	if js, err := e.svc.jobStart(ctx, mustApp(t, e, a.ID), claimed[0]); err != nil || js.GetUpstreamPort() != 0 || len(js.GetProcesses()) != 0 {
		t.Fatalf("job without processes: %v %v", js, err)
	}
	if _, port, _ := e.svc.ListProcesses(ctx, dep, "shop"); port != 10000 {
		t.Fatalf("port after removing web: %d", port)
	}
	var n int
	if err := e.st.Pool().QueryRow(ctx, `SELECT count(*) FROM activity_log WHERE action IN ('app.process_added','app.process_replaced','app.process_removed','app.processes_controlled')`).Scan(&n); err != nil || n != 6 {
		t.Fatalf("audit records %d %v", n, err)
	}
}

func TestSchedules(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	a := e.app(t, "shop")
	e.now = time.Date(2026, 3, 1, 10, 0, 30, 0, time.UTC)
	sv, err := e.svc.AddSchedule(ctx, e.admin, Peer{}, ScheduleParams{App: "shop", Name: "report", Cron: "*/5 * * * *", Command: "bin/report", Timezone: "Europe/Berlin"})
	if err != nil || !sv.NextRunAt.Equal(time.Date(2026, 3, 1, 10, 5, 0, 0, time.UTC)) || sv.LastRun != nil {
		t.Fatalf("add: %+v %v", sv, err)
	}
	if _, err := e.svc.AddSchedule(ctx, e.admin, Peer{}, ScheduleParams{App: "shop", Name: "report", Cron: "@hourly", Command: "x"}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("add twice: %v", err)
	}
	// Nothing is due yet.
	e.svc.fireSchedules(ctx)
	if runs, _ := e.svc.ScheduleRuns(ctx, e.admin, "shop", "report", 0); len(runs) != 0 {
		t.Fatalf("ran early: %d", len(runs))
	}
	// Due before the app was ever deployed: skipped, saying why.
	e.now = e.now.Add(5 * time.Minute)
	e.svc.fireSchedules(ctx)
	runs, err := e.svc.ScheduleRuns(ctx, e.admin, "shop", "report", 0)
	if err != nil || len(runs) != 1 || !runs[0].Skipped || !strings.Contains(*runs[0].Job.SkipReason, "no current release") {
		t.Fatalf("run without a release: %+v %v", runs, err)
	}
	q0, err := e.svc.Deploy(ctx, e.admin, Peer{}, DeployParams{App: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	e.succeed(t, q0.Deployment.ID)
	// After three hours of downtime: one run, next from now.
	e.now = e.now.Add(3 * time.Hour)
	e.svc.fireSchedules(ctx)
	e.svc.fireSchedules(ctx)
	runs, err = e.svc.ScheduleRuns(ctx, e.admin, "shop", "report", 0)
	if err != nil || len(runs) != 2 || runs[0].Skipped || runs[0].Job.Kind != store.JobSchedule || runs[0].Job.TriggeredBy != store.TriggerSchedule {
		t.Fatalf("runs after downtime: %+v %v", runs, err)
	}
	list, _ := e.svc.ListSchedules(ctx, e.admin, "shop")
	if len(list) != 1 || !list[0].NextRunAt.Equal(time.Date(2026, 3, 1, 13, 10, 0, 0, time.UTC)) || list[0].LastRun == nil || list[0].LastRun.ID != runs[0].Job.ID {
		t.Fatalf("after the run: %+v", list)
	}
	run := runs[0].Job
	js, err := e.svc.jobStart(ctx, mustApp(t, e, a.ID), run)
	if err != nil || js.GetKind() != "schedule" || js.GetScheduleName() != "report" || js.GetScheduleCommand() != "bin/report" || js.GetCredential() != nil {
		t.Fatalf("schedule job: %v %v", js, err)
	}
	// A schedule run runs beside a deploy of the app.
	q, err := e.svc.Deploy(ctx, e.admin, Peer{}, DeployParams{App: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	claimed, err := e.st.ClaimQueuedDeployments(ctx, []store.ID{e.srv.ID}, 10)
	if err != nil || len(claimed) != 2 {
		t.Fatalf("claimed %d %v", len(claimed), err)
	}
	_ = q
	// Due again while the run is unfinished: skipped, recorded.
	e.now = e.now.Add(5 * time.Minute)
	e.svc.fireSchedules(ctx)
	runs, _ = e.svc.ScheduleRuns(ctx, e.admin, "shop", "report", 0)
	if len(runs) != 3 || !runs[0].Skipped || runs[0].Job.Status != store.DeploymentCanceled || !strings.Contains(*runs[0].Job.SkipReason, run.ID.String()) {
		t.Fatalf("overlap: %+v", runs)
	}
	// The run's output tail and exit code are kept.
	if _, err := e.svc.JobEvents(ctx, e.srv.ID, []*agentv1.ConnectRequest{
		output(run.ID, 1, "report done\n"),
		{Msg: &agentv1.ConnectRequest_JobResult{JobResult: &agentv1.JobResult{JobId: run.ID.String(), Seq: 2, Status: "failed", ExitCode: 3}}},
	}); err != nil {
		t.Fatal(err)
	}
	runs, _ = e.svc.ScheduleRuns(ctx, e.admin, "shop", "report", 0)
	if runs[1].OutputTail != "report done\n" || runs[1].Job.ExitCode == nil || *runs[1].Job.ExitCode != 3 {
		t.Fatalf("finished run: %+v", runs[1])
	}
	// The activity log has the skipped runs and the failed one, not every run.
	for action, want := range map[string]int{"deployment.schedule_skipped": 2, "deployment.failed": 1} {
		var n int
		if err := e.st.Pool().QueryRow(ctx, `SELECT count(*) FROM activity_log WHERE action = $1`, action).Scan(&n); err != nil || n != want {
			t.Errorf("%s recorded %d times (%v), want %d", action, n, err, want)
		}
	}
	if _, err := e.svc.ScheduleRuns(ctx, e.admin, "shop", "report", 101); !errors.Is(err, ErrInvalid) {
		t.Fatalf("limit 101: %v", err)
	}
	if _, err := e.svc.ScheduleRuns(ctx, e.admin, "shop", "nope", 0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown schedule: %v", err)
	}
	// Replace keeps the runs; remove stops the runs.
	if _, err := e.svc.AddSchedule(ctx, e.admin, Peer{}, ScheduleParams{App: "shop", Name: "report", Cron: "@daily", Command: "bin/r2", Replace: true}); err != nil {
		t.Fatal(err)
	}
	if runs, _ := e.svc.ScheduleRuns(ctx, e.admin, "shop", "report", 0); len(runs) != 3 {
		t.Fatalf("runs after replace: %d", len(runs))
	}
	if err := e.svc.RemoveSchedule(ctx, e.admin, Peer{}, "shop", "report"); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.RemoveSchedule(ctx, e.admin, Peer{}, "shop", "report"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("remove twice: %v", err)
	}

	// Deleting the app removes its schedules: nothing runs any more.
	if _, err := e.svc.AddSchedule(ctx, e.admin, Peer{}, ScheduleParams{App: "shop", Name: "tick", Cron: "* * * * *", Command: "true"}); err != nil {
		t.Fatal(err)
	}
	b := e.app(t, "blog")
	if _, err := e.svc.AddSchedule(ctx, e.admin, Peer{}, ScheduleParams{App: "blog", Name: "tick", Cron: "* * * * *", Command: "true"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.svc.AddProcess(ctx, e.admin, Peer{}, ProcessParams{App: "blog", Name: "web", Command: "./s"}); err != nil {
		t.Fatal(err)
	}
	bq, err := e.svc.Deploy(ctx, e.admin, Peer{}, DeployParams{App: "blog"})
	if err != nil {
		t.Fatal(err)
	}
	e.succeed(t, bq.Deployment.ID)
	del, err := e.svc.DeleteApp(ctx, e.admin, Peer{}, "blog", true)
	if err != nil || del.Job == nil {
		t.Fatalf("delete --keep-files of an app with processes: %+v %v", del, err)
	}
	// The agent is told to delete the app without a deploy path: stop its
	// processes and upstream, forget them, keep the files.
	js, err = e.svc.jobStart(ctx, mustApp(t, e, b.ID), *del.Job)
	if err != nil || js.GetKind() != "delete" || js.GetDeployPath() != "" || js.GetAppId() != b.ID.String() {
		t.Fatalf("keep-files stop job: %v %v", js, err)
	}
	if left, _ := e.st.AppSchedules(ctx, b.ID); len(left) != 0 {
		t.Fatalf("deleted app keeps %d schedules", len(left))
	}
}

// delete --keep-files of an app running processes: the app is deleted at
// once and a delete job without a deploy path stops its processes (the
// agent keeps every file); it is recorded deleted once.
func TestDeleteKeepFilesStopsProcesses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	a := e.app(t, "shop")
	if _, _, err := e.svc.AddProcess(ctx, e.admin, Peer{}, ProcessParams{App: "shop", Name: "web", Command: "./s", Port: true}); err != nil {
		t.Fatal(err)
	}
	q, err := e.svc.Deploy(ctx, e.admin, Peer{}, DeployParams{App: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	e.succeed(t, q.Deployment.ID)
	res, err := e.svc.DeleteApp(ctx, e.admin, Peer{}, "shop", true)
	if err != nil || res.App.DeletedAt == nil || res.Job == nil || res.Job.Kind != store.JobDelete {
		t.Fatalf("delete --keep-files: %+v %v", res, err)
	}
	claimed, err := e.st.ClaimQueuedDeployments(ctx, []store.ID{e.srv.ID}, 10)
	if err != nil || len(claimed) != 1 || claimed[0].ID != res.Job.ID {
		t.Fatalf("claim %+v %v", claimed, err)
	}
	js, err := e.svc.jobStart(ctx, mustApp(t, e, a.ID), claimed[0])
	if err != nil || js.GetKind() != "delete" || js.GetDeployPath() != "" {
		t.Fatalf("keep-files delete job: %v %v", js, err)
	}
	if _, err := e.svc.JobEvents(ctx, e.srv.ID, []*agentv1.ConnectRequest{{Msg: &agentv1.ConnectRequest_JobResult{JobResult: &agentv1.JobResult{
		JobId: res.Job.ID.String(), Seq: 1, Status: string(store.DeploymentSucceeded)}}}}); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := e.st.Pool().QueryRow(ctx, `SELECT count(*) FROM activity_log WHERE action = 'app.deleted'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("app.deleted recorded %d times (%v)", n, err)
	}
	if got := mustApp(t, e, a.ID); got.DeletedAt == nil {
		t.Fatal("app undeleted")
	}
}

// Apps of one server adding port processes at once get distinct upstream
// ports (a lost race on the unique index is retried).
func TestUpstreamPortsConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	const n = 8
	names := make([]string, n)
	for i := range names {
		names[i] = "app" + string(rune('a'+i))
		e.app(t, names[i])
	}
	errc := make(chan error, n)
	for _, name := range names {
		go func() {
			_, _, err := e.svc.AddProcess(ctx, e.admin, Peer{}, ProcessParams{App: name, Name: "web", Command: "./s", Port: true})
			errc <- err
		}()
	}
	for range n {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	seen := map[uint32]bool{}
	for _, name := range names {
		_, port, err := e.svc.ListProcesses(ctx, e.admin, name)
		if err != nil || port < 10000 || port > 19999 || seen[port] {
			t.Fatalf("%s: port %d %v (seen %v)", name, port, err, seen)
		}
		seen[port] = true
	}
}
