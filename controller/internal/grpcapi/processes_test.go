package grpcapi_test

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthhq/berth/controller/internal/store"
	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// recvUntil reads the agent's stream until want picks a message.
func recvUntil(t *testing.T, s agentv1.AgentService_ConnectClient, want func(*agentv1.ConnectResponse) bool) *agentv1.ConnectResponse {
	t.Helper()
	for {
		m, err := s.Recv()
		if err != nil {
			t.Fatalf("agent stream: %v", err)
		}
		if want(m) {
			return m
		}
	}
}

// TestProcessRPCs: scopes, malformed, oversized and replayed input, and
// processes, reports and logs over a real agent stream.
func TestProcessRPCs(t *testing.T) {
	t.Parallel()
	e := setupDeploys(t)
	_, cert := e.enroll(t, "web-1")
	admin, actx := e.adminClient(t, e.token(t, e.admin.UserID, store.ScopeAdmin))
	deploy, dctx := e.adminClient(t, e.token(t, e.admin.UserID, store.ScopeDeploy))
	write, wctx := e.adminClient(t, e.token(t, e.admin.UserID, store.ScopeWrite))
	read, rctx := e.adminClient(t, e.token(t, e.admin.UserID, store.ScopeRead))
	anon, _ := e.adminClient(t, "")
	ca, err := admin.CreateApp(actx, &adminv1.CreateAppRequest{Name: "shop", Server: "web-1", RepositoryUrl: "https://git.example.com/shop.git", DeployPath: "/srv/shop", RunAsUser: "app"})
	if err != nil {
		t.Fatal(err)
	}
	appID := ca.GetApp().GetId()

	web := &adminv1.AddAppProcessRequest{App: "shop", Name: "web", Command: "./server", Instances: 2, Port: true, HealthPath: "/up"}
	if _, err := anon.AddAppProcess(context.Background(), web); code(err) != codes.Unauthenticated {
		t.Fatalf("anonymous: %v", err)
	}
	if _, err := write.AddAppProcess(wctx, web); code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "decide what code runs") {
		t.Fatalf("write adds a process: %v", err)
	}
	if _, err := write.AddAppSchedule(wctx, &adminv1.AddAppScheduleRequest{App: "shop", Name: "r", Cron: "@daily", Command: "x"}); code(err) != codes.PermissionDenied {
		t.Fatalf("write adds a schedule: %v", err)
	}
	if _, err := read.ControlAppProcesses(rctx, &adminv1.ControlAppProcessesRequest{App: "shop", Action: "stop"}); code(err) != codes.PermissionDenied {
		t.Fatalf("read stops processes: %v", err)
	}
	bad := map[string]error{}
	_, bad["name"] = deploy.AddAppProcess(dctx, &adminv1.AddAppProcessRequest{App: "shop", Name: "Web;rm", Command: "x"})
	_, bad["instances"] = deploy.AddAppProcess(dctx, &adminv1.AddAppProcessRequest{App: "shop", Name: "web", Command: "x", Instances: 1000})
	_, bad["command size"] = deploy.AddAppProcess(dctx, &adminv1.AddAppProcessRequest{App: "shop", Name: "web", Command: strings.Repeat("x", 1<<20)})
	_, bad["signal"] = deploy.AddAppProcess(dctx, &adminv1.AddAppProcessRequest{App: "shop", Name: "web", Command: "x", StopSignal: "SEGV"})
	_, bad["action"] = deploy.ControlAppProcesses(dctx, &adminv1.ControlAppProcessesRequest{App: "shop", Action: "explode"})
	_, bad["cron"] = deploy.AddAppSchedule(dctx, &adminv1.AddAppScheduleRequest{App: "shop", Name: "r", Cron: "every day", Command: "x"})
	_, bad["timezone"] = deploy.AddAppSchedule(dctx, &adminv1.AddAppScheduleRequest{App: "shop", Name: "r", Cron: "@daily", Command: "x", Timezone: "../../etc/passwd"})
	_, bad["runs limit"] = read.ListScheduleRuns(rctx, &adminv1.ListScheduleRunsRequest{App: "shop", Name: "r", Limit: 1 << 31})
	for what, err := range bad {
		if code(err) != codes.InvalidArgument {
			t.Errorf("bad %s: %v", what, err)
		}
	}
	if _, err := deploy.AddAppProcess(dctx, &adminv1.AddAppProcessRequest{App: "shop", Name: "web", Command: strings.Repeat("x", 5<<20)}); code(err) != codes.ResourceExhausted {
		t.Errorf("5 MiB request: %v", err)
	}
	if _, err := read.ListAppProcesses(rctx, &adminv1.ListAppProcessesRequest{App: "nope"}); code(err) != codes.NotFound {
		t.Errorf("unknown app: %v", err)
	}

	// No release yet: declared, no job. Twice is AlreadyExists unless replace.
	ar, err := deploy.AddAppProcess(dctx, web)
	if err != nil || ar.GetJob() != nil || ar.GetProcess().GetState() != "unknown" || ar.GetProcess().GetDesiredInstances() != 2 {
		t.Fatalf("add: %v %v", ar, err)
	}
	if _, err := deploy.AddAppProcess(dctx, web); code(err) != codes.AlreadyExists {
		t.Fatalf("add twice: %v", err)
	}
	web.Replace, web.Instances = true, 3
	if ar, err = deploy.AddAppProcess(dctx, web); err != nil || ar.GetProcess().GetDesiredInstances() != 3 {
		t.Fatalf("replace: %v %v", ar, err)
	}
	sched := &adminv1.AddAppScheduleRequest{App: "shop", Name: "nightly", Cron: "0 3 * * *", Command: "bin/cleanup", Timezone: "Europe/Berlin"}
	if sr, err := deploy.AddAppSchedule(dctx, sched); err != nil || sr.GetSchedule().GetNextRunAt() == nil || sr.GetSchedule().GetTimezone() != "Europe/Berlin" {
		t.Fatalf("add schedule: %v %v", sr, err)
	}
	if _, err := deploy.AddAppSchedule(dctx, sched); code(err) != codes.AlreadyExists {
		t.Fatalf("add schedule twice: %v", err)
	}
	if runs, err := read.ListScheduleRuns(rctx, &adminv1.ListScheduleRunsRequest{App: "shop", Name: "nightly"}); err != nil || len(runs.GetRuns()) != 0 {
		t.Fatalf("runs: %v %v", runs, err)
	}
	if _, err := read.ListScheduleRuns(rctx, &adminv1.ListScheduleRunsRequest{App: "shop", Name: "nope"}); code(err) != codes.NotFound {
		t.Fatalf("runs of an unknown schedule: %v", err)
	}
	ga, err := read.GetApp(rctx, &adminv1.GetAppRequest{App: "shop"})
	if err != nil || ga.GetApp().GetUpstreamPort() != 10000 || len(ga.GetApp().GetProcesses()) != 1 || len(ga.GetApp().GetSchedules()) != 1 {
		t.Fatalf("get app: %v %v", ga, err)
	}

	if la, err := read.ListApps(rctx, &adminv1.ListAppsRequest{}); err != nil || len(la.GetApps()) != 1 || len(la.GetApps()[0].GetProcesses()) != 0 || la.GetApps()[0].GetUpstreamPort() != 10000 {
		t.Fatalf("list apps (processes left out, port shown): %v %v", la, err)
	}

	// Logs need the agent.
	ls, err := read.StreamAppLogs(rctx, &adminv1.StreamAppLogsRequest{App: "shop"})
	if err == nil {
		_, err = ls.Recv()
	}
	if code(err) != codes.Unavailable || !strings.Contains(err.Error(), "agent for web-1 is not connected") {
		t.Fatalf("logs without the agent: %v", err)
	}

	// The agent connects: a deploy carries the processes and the port.
	s, _, err := connect(t, e.client(t, &cert), nil)
	if err != nil {
		t.Fatal(err)
	}
	dr, err := deploy.Deploy(dctx, &adminv1.DeployRequest{App: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	js := recvUntil(t, s, func(m *agentv1.ConnectResponse) bool { return m.GetJobStart() != nil }).GetJobStart()
	if js.GetJobId() != dr.GetDeployment().GetId() || len(js.GetProcesses()) != 1 || js.GetProcesses()[0].GetInstances() != 3 || js.GetUpstreamPort() != 10000 {
		t.Fatalf("deploy job: %v", js)
	}
	if err := s.Send(&agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_JobResult{JobResult: &agentv1.JobResult{JobId: js.GetJobId(), Seq: 1, Status: "succeeded"}}}); err != nil {
		t.Fatal(err)
	}
	recvUntil(t, s, func(m *agentv1.ConnectResponse) bool { return m.GetJobAck() != nil })

	// With a current release a change is a process job down the stream.
	cr, err := deploy.ControlAppProcesses(dctx, &adminv1.ControlAppProcessesRequest{App: "shop", Action: "restart", Names: []string{"web"}})
	if err != nil || cr.GetJob().GetKind() != "process" {
		t.Fatalf("restart: %v %v", cr, err)
	}
	js = recvUntil(t, s, func(m *agentv1.ConnectResponse) bool { return m.GetJobStart() != nil }).GetJobStart()
	if js.GetKind() != "process" || js.GetProcessAction() != "restart" || js.GetProcessNames()[0] != "web" || js.GetJobId() != cr.GetJob().GetId() {
		t.Fatalf("process job: %v", js)
	}

	// The agent reports its processes: stored for its own app only.
	report := &agentv1.ProcessReport{Apps: []*agentv1.AppProcesses{
		{AppId: appID, UpstreamPort: 10000, Processes: []*agentv1.ProcessState{{Name: "web", State: "running", Release: js.GetJobId(),
			Instances: []*agentv1.InstanceState{{Index: 0, Pid: 321, Port: 20000, State: "running", Restarts: 1, StartedAt: timestamppb.Now()}}}}},
		{AppId: store.NewID().String(), Processes: []*agentv1.ProcessState{{Name: "x", State: "running"}}},
		{AppId: "not-an-id"},
	}}
	if err := s.Send(&agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_Heartbeat{Heartbeat: &agentv1.Heartbeat{Processes: report}}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		lp, err := read.ListAppProcesses(rctx, &adminv1.ListAppProcessesRequest{App: "shop"})
		if err != nil {
			t.Fatal(err)
		}
		p := lp.GetProcesses()[0]
		if p.GetState() == "running" {
			if lp.GetUpstreamPort() != 10000 || len(p.GetInstances()) != 1 || p.GetInstances()[0].GetPid() != 321 || p.GetInstances()[0].GetRestarts() != 1 {
				t.Fatalf("reported: %v", lp)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("report never shown: %v", lp)
		}
		time.Sleep(20 * time.Millisecond) // polling the condition, not timing it
	}

	// Logs, finite: the agent's chunks reach the caller, then the end.
	done := make(chan []string, 1)
	errc := make(chan error, 1)
	go func() {
		st, err := read.StreamAppLogs(rctx, &adminv1.StreamAppLogsRequest{App: "shop", Processes: []string{"web"}, Since: durationpb.New(10 * time.Minute)})
		if err != nil {
			errc <- err
			return
		}
		var got []string
		for {
			m, err := st.Recv()
			if err == io.EOF {
				done <- got
				return
			}
			if err != nil {
				errc <- err
				return
			}
			for _, l := range m.GetLines() {
				got = append(got, l.GetProcess()+":"+l.GetText())
			}
		}
	}()
	lr := recvUntil(t, s, func(m *agentv1.ConnectResponse) bool { return m.GetLogsRequest() != nil }).GetLogsRequest()
	if lr.GetAppId() != appID || lr.GetFollow() || lr.GetTail() != 200 || lr.GetProcesses()[0] != "web" || lr.GetSince() == nil {
		t.Fatalf("logs request: %v", lr)
	}
	line := func(text string) *agentv1.LogLine {
		return &agentv1.LogLine{Time: timestamppb.Now(), Process: "web", Stream: "stdout", Text: text}
	}
	for _, c := range []*agentv1.LogsChunk{
		{RequestId: "someone-else", Lines: []*agentv1.LogLine{line("not yours")}},
		{RequestId: lr.GetRequestId(), Lines: []*agentv1.LogLine{line("one"), line("two")}},
		{RequestId: lr.GetRequestId(), Lines: []*agentv1.LogLine{line("three")}, End: true},
	} {
		if err := s.Send(&agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_LogsChunk{LogsChunk: c}}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case got := <-done:
		if strings.Join(got, ",") != "web:one,web:two,web:three" {
			t.Fatalf("lines %v", got)
		}
	case err := <-errc:
		t.Fatal(err)
	}

	// Following: the caller going away cancels the request on the agent.
	fctx, fcancel := context.WithCancel(rctx)
	fs, err := read.StreamAppLogs(fctx, &adminv1.StreamAppLogsRequest{App: "shop", Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	lr = recvUntil(t, s, func(m *agentv1.ConnectResponse) bool { return m.GetLogsRequest() != nil }).GetLogsRequest()
	if !lr.GetFollow() {
		t.Fatalf("follow request: %v", lr)
	}
	if err := s.Send(&agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_LogsChunk{LogsChunk: &agentv1.LogsChunk{RequestId: lr.GetRequestId(), Lines: []*agentv1.LogLine{line("live")}}}}); err != nil {
		t.Fatal(err)
	}
	if m, err := fs.Recv(); err != nil || m.GetLines()[0].GetText() != "live" {
		t.Fatalf("followed line: %v %v", m, err)
	}
	fcancel()
	lc := recvUntil(t, s, func(m *agentv1.ConnectResponse) bool { return m.GetLogsCancel() != nil }).GetLogsCancel()
	if lc.GetRequestId() != lr.GetRequestId() {
		t.Fatalf("cancel %v, want %s", lc, lr.GetRequestId())
	}

	// Remove: a job stops it; again is NotFound. Schedules likewise.
	rr, err := deploy.RemoveAppProcess(dctx, &adminv1.RemoveAppProcessRequest{App: "shop", Name: "web"})
	if err != nil || rr.GetJob().GetKind() != "process" {
		t.Fatalf("remove: %v %v", rr, err)
	}
	if _, err := deploy.RemoveAppProcess(dctx, &adminv1.RemoveAppProcessRequest{App: "shop", Name: "web"}); code(err) != codes.NotFound {
		t.Fatalf("remove twice: %v", err)
	}
	if _, err := deploy.RemoveAppSchedule(dctx, &adminv1.RemoveAppScheduleRequest{App: "shop", Name: "nightly"}); err != nil {
		t.Fatal(err)
	}
	if _, err := deploy.RemoveAppSchedule(dctx, &adminv1.RemoveAppScheduleRequest{App: "shop", Name: "nightly"}); code(err) != codes.NotFound {
		t.Fatalf("remove schedule twice: %v", err)
	}
}
