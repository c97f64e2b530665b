package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
)

func sampleApp() *adminv1.App {
	started := timestamppb.New(time.Now().Add(-90 * time.Second))
	return &adminv1.App{
		Id: "app1", Name: "shop", Server: "web-1", UpstreamPort: 41000, CreatedAt: timestamppb.Now(),
		Processes: []*adminv1.AppProcess{{
			Name: "web", Command: "./server", DesiredInstances: 2, Port: true, HealthPath: "/up", StopSignal: "TERM", StopGraceSeconds: 30,
			Restart: "always", MemoryMaxBytes: 512 << 20, CpuMaxPercent: 150, State: "running", Release: "dep1",
			Instances: []*adminv1.ProcessInstance{
				{Index: 0, Pid: 4242, Port: 41001, State: "running", Restarts: 3, StartedAt: started},
				{Index: 1, Pid: 4243, Port: 41002, State: "running", StartedAt: started},
			},
		}, {Name: "worker", Command: "./worker", DesiredInstances: 1, Restart: "on-failure", StopSignal: "INT", StopGraceSeconds: 5, State: "restarting",
			Instances: []*adminv1.ProcessInstance{{Index: 0, State: "restarting", Restarts: 7, LastExitCode: 2}}}},
		Schedules: []*adminv1.AppSchedule{{Name: "nightly", Cron: "0 3 * * *", Command: "./cleanup", Timezone: "Europe/Paris",
			NextRunAt: timestamppb.New(time.Date(2030, 1, 2, 2, 0, 0, 0, time.UTC)),
			LastRun:   &adminv1.Deployment{Id: "run1", Status: "failed", HasExitCode: true, ExitCode: 1, FinishedAt: timestamppb.Now()}}},
	}
}

func TestAppJSONListsProcessesInstancesAndSchedules(t *testing.T) {
	b, err := json.Marshal(appJSON(sampleApp()))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		UpstreamPort int `json:"upstream_port"`
		Processes    []struct {
			Name             string `json:"name"`
			State            string `json:"state"`
			DesiredInstances int    `json:"desired_instances"`
			MemoryMaxBytes   uint64 `json:"memory_max_bytes"`
			Instances        []struct {
				Pid      int  `json:"pid"`
				Port     int  `json:"port"`
				Restarts int  `json:"restarts"`
				Uptime   *int `json:"uptime_seconds"`
			} `json:"instances"`
		} `json:"processes"`
		Schedules []struct {
			Name    string `json:"name"`
			Cron    string `json:"cron"`
			LastRun struct {
				Status   string `json:"status"`
				ExitCode int    `json:"exit_code"`
			} `json:"last_run"`
		} `json:"schedules"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.UpstreamPort != 41000 || len(got.Processes) != 2 || len(got.Schedules) != 1 {
		t.Fatalf("app JSON: %s", b)
	}
	web := got.Processes[0]
	if web.Name != "web" || web.State != "running" || web.DesiredInstances != 2 || web.MemoryMaxBytes != 512<<20 || len(web.Instances) != 2 ||
		web.Instances[0].Pid != 4242 || web.Instances[0].Port != 41001 || web.Instances[0].Restarts != 3 || web.Instances[0].Uptime == nil || *web.Instances[0].Uptime < 90 {
		t.Fatalf("web process JSON: %s", b)
	}
	if w := got.Processes[1]; w.Instances[0].Pid != 0 || w.Instances[0].Uptime != nil || w.Instances[0].Restarts != 7 {
		t.Fatalf("worker JSON: %s", b)
	}
	if s := got.Schedules[0]; s.Name != "nightly" || s.Cron != "0 3 * * *" || s.LastRun.Status != "failed" || s.LastRun.ExitCode != 1 {
		t.Fatalf("schedule JSON: %s", b)
	}
	// An app without processes still lists them (empty), for scripts.
	b, _ = json.Marshal(appJSON(&adminv1.App{Name: "bare"}))
	if !strings.Contains(string(b), `"processes":[]`) || !strings.Contains(string(b), `"schedules":[]`) || !strings.Contains(string(b), `"upstream_port":0`) {
		t.Fatalf("bare app JSON: %s", b)
	}
}

func TestAppShowTextHasProcessesSchedulesAndUpstream(t *testing.T) {
	var out bytes.Buffer
	printApp(&out, sampleApp())
	s := out.String()
	for _, want := range []string{
		"upstream:", "127.0.0.1:41000", "processes:", "web", "running", "2/2", "yes (health /up)", "always, TERM 30s", "memory 512.0 MiB, cpu 150%",
		"web.0", "pid 4242", "port 41001", "restarts 3", "up 1m3", "worker.0", "restarting", "restarts 7", "last exit 2",
		"schedules:", "nightly", "0 3 * * *", "Europe/Paris", "failed (exit 1)",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("app show lacks %q:\n%s", want, s)
		}
	}
	out.Reset()
	printApp(&out, &adminv1.App{Name: "bare"})
	if s := out.String(); !strings.Contains(s, "processes: (none)") || !strings.Contains(s, "schedules: (none)") || !strings.Contains(s, "no process has --port") {
		t.Fatalf("bare app show:\n%s", s)
	}
}

func TestFormatLogLine(t *testing.T) {
	l := &adminv1.AppLogLine{Time: timestamppb.New(time.Date(2026, 12, 6, 20, 1, 2, 345e6, time.UTC)), Process: "worker", Instance: 1, Stream: "stdout", Text: "tick 7\n"}
	if got := formatLogLine(l, time.UTC); got != "2026-12-06T20:01:02.345Z worker.1 tick 7\n" {
		t.Fatalf("formatLogLine = %q", got)
	}
	b, _ := json.Marshal(logLineJSON(l))
	if string(b) != `{"instance":1,"process":"worker","stream":"stdout","text":"tick 7\n","time":"2026-12-06T20:01:02.345Z"}` {
		t.Fatalf("logLineJSON = %s", b)
	}
}
