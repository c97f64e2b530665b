package client

import (
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/berthhq/berth/agent/internal/deploy"

	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// The controller's bindings reach the executor: a credential's hosts and
// pinned host keys, and the server's allowance to run an app as root.
func TestSpecOfCarriesBindings(t *testing.T) {
	s := specOf(&agentv1.JobStart{
		JobId: "01J0000000000000000000000A", AllowRoot: true,
		Credential: &agentv1.GitCredential{SshPrivateKey: "k", AllowedHosts: []string{"github.com"}, KnownHosts: "github.com ssh-ed25519 AAAA"},
	})
	if !s.AllowRoot || s.Credential == nil || !slices.Equal(s.Credential.AllowedHosts, []string{"github.com"}) ||
		s.Credential.KnownHosts != "github.com ssh-ed25519 AAAA" {
		t.Fatalf("spec: %+v, credential %+v", s, s.Credential)
	}
	if s := specOf(&agentv1.JobStart{JobId: "x"}); s.AllowRoot || s.Credential != nil {
		t.Fatalf("defaults: %+v", s)
	}
}

// Processes, their action and names, the upstream port and a schedule's
// name and command reach the executor.
func TestSpecOfCarriesProcessesAndSchedules(t *testing.T) {
	procs := []*agentv1.ProcessSpec{{Name: "web", Command: "./server", Instances: 2, Port: true, HealthPath: "/up"}}
	s := specOf(&agentv1.JobStart{
		JobId: "01J0000000000000000000000A", Kind: "process", Processes: procs, ProcessAction: "restart",
		ProcessNames: []string{"web"}, UpstreamPort: 10001, ScheduleName: "nightly", ScheduleCommand: "php artisan schedule:run",
		HealthCheckTimeout: durationpb.New(45 * time.Second),
	})
	if s.ProcessHealthTimeout != 45*time.Second {
		t.Fatalf("process health timeout: %v", s.ProcessHealthTimeout)
	}
	if s.Kind != deploy.KindProcess || len(s.Processes) != 1 || s.Processes[0] != procs[0] || s.ProcessAction != deploy.ProcessRestart ||
		!slices.Equal(s.ProcessNames, []string{"web"}) || s.UpstreamPort != 10001 || s.ScheduleName != "nightly" || s.ScheduleCommand != "php artisan schedule:run" {
		t.Fatalf("spec: %+v", s)
	}
	if s := specOf(&agentv1.JobStart{JobId: "x", Kind: "schedule"}); s.Kind != deploy.KindSchedule {
		t.Fatalf("kind %q", s.Kind)
	}
}
