package deploys

import (
	"context"
	"errors"
	"time"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// errNotYet marks the API whose bodies land in the next commits.
var errNotYet = errors.New("app processes and schedules: not implemented yet")

// ProcessParams declares (or with Replace changes) a process. Zero values
// get the defaults: 1 instance, TERM, 30s grace, restart always, no limits.
type ProcessParams struct {
	App, Name, Command string
	Instances          uint32
	Port               bool
	HealthPath         string
	StopSignal         string
	StopGrace          time.Duration
	Restart            string
	MemoryMax          uint64
	CPUMaxPercent      uint32
	Replace            bool
}

// InstanceView is one running copy of a process as the agent last
// reported it.
type InstanceView struct {
	Index          uint32
	PID            int32
	Port           uint32
	State          string
	Restarts       uint32
	StartedAt      *time.Time
	LastExitCode   int32
	LastError      string
	LimitsEnforced bool
}

// ProcessView is a declared process and its last reported state.
type ProcessView struct {
	Name             string
	Command          string
	DesiredInstances uint32
	Port             bool
	HealthPath       string
	StopSignal       string
	StopGrace        time.Duration
	Restart          string
	MemoryMax        uint64
	CPUMaxPercent    uint32
	CreatedAt        time.Time
	UpdatedAt        time.Time
	// State: running, starting, restarting, failed, stopped; "unknown"
	// before the agent reported the process.
	State     string
	Instances []InstanceView
	// Release is the deployment id whose release the instances run.
	Release    string
	ReportedAt *time.Time
}

// AddProcess declares a process of an app (Replace: change an existing
// one). With a current release a process job applies it on the server;
// without one the job is nil and the next deploy starts it.
func (s *Service) AddProcess(ctx context.Context, pr *auth.Principal, peer Peer, p ProcessParams) (ProcessView, *store.Deployment, error) {
	return ProcessView{}, nil, errNotYet
}

// ListProcesses lists an app's processes and its upstream port (0: none).
func (s *Service) ListProcesses(ctx context.Context, pr *auth.Principal, app string) ([]ProcessView, uint32, error) {
	return nil, 0, errNotYet
}

// RemoveProcess forgets a process; with a current release a process job
// stops it on the server.
func (s *Service) RemoveProcess(ctx context.Context, pr *auth.Principal, peer Peer, app, name string) (*store.Deployment, error) {
	return nil, errNotYet
}

// ControlProcesses starts, stops or restarts an app's processes (names:
// these only; empty: all) with a process job.
func (s *Service) ControlProcesses(ctx context.Context, pr *auth.Principal, peer Peer, app, action string, names []string) (store.Deployment, error) {
	return store.Deployment{}, errNotYet
}

// LogsParams asks for an app's process logs.
type LogsParams struct {
	App       string
	Processes []string
	Since     time.Duration
	Follow    bool
	Tail      uint32
}

// StreamLogs streams an app's process logs from its server's agent.
func (s *Service) StreamLogs(ctx context.Context, pr *auth.Principal, p LogsParams, send func([]*agentv1.LogLine) error) error {
	return errNotYet
}

// ScheduleParams declares (or with Replace changes) a scheduled command.
type ScheduleParams struct {
	App, Name, Cron, Command, Timezone string
	Replace                            bool
}

// ScheduleView is a scheduled command and its last run.
type ScheduleView struct {
	ID        store.ID
	Name      string
	Cron      string
	Command   string
	Timezone  string
	NextRunAt time.Time
	LastRun   *store.Deployment
	CreatedAt time.Time
	UpdatedAt time.Time
}

// AddSchedule declares a scheduled command.
func (s *Service) AddSchedule(ctx context.Context, pr *auth.Principal, peer Peer, p ScheduleParams) (ScheduleView, error) {
	return ScheduleView{}, errNotYet
}

// ListSchedules lists an app's scheduled commands.
func (s *Service) ListSchedules(ctx context.Context, pr *auth.Principal, app string) ([]ScheduleView, error) {
	return nil, errNotYet
}

// RemoveSchedule removes a scheduled command (its past runs stay).
func (s *Service) RemoveSchedule(ctx context.Context, pr *auth.Principal, peer Peer, app, name string) error {
	return errNotYet
}

// ScheduleRun is one run of a schedule: its job, whether it was skipped
// (due while the previous run was unfinished) and its output's tail.
type ScheduleRun struct {
	Job        store.Deployment
	Skipped    bool
	OutputTail string
}

// ScheduleRuns lists a schedule's runs, newest first.
func (s *Service) ScheduleRuns(ctx context.Context, pr *auth.Principal, app, name string, limit int) ([]ScheduleRun, error) {
	return nil, errNotYet
}
