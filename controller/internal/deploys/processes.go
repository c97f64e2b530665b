package deploys

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// Processes and schedules decide what code runs on the server (issue 15's
// rule), so changing or controlling them needs the deploy scope; listing
// them needs read.

var processNameRE = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)

// Bounds of a process declaration (the migration's checks say the same).
const (
	maxProcessName    = 32
	maxCommand        = 4096
	maxInstances      = 32
	maxStopGrace      = time.Hour
	defaultStopGrace  = 30 * time.Second
	maxCPUPercent     = 100000
	maxProcessesByApp = 64
)

var stopSignals = []string{"TERM", "INT", "QUIT", "HUP", "USR1", "USR2", "KILL"}

// Process actions a process job carries.
const (
	ProcessApply   = "apply"
	ProcessStart   = "start"
	ProcessStop    = "stop"
	ProcessRestart = "restart"
)

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

// StateUnknown is a process's state before its agent reported it.
const StateUnknown = "unknown"

// requireDeploy is require(deploy) with the reason a write-scoped caller
// is refused.
func requireDeploy(pr *auth.Principal, what string) error {
	if err := require(pr, store.ScopeDeploy); err != nil {
		if pr != nil && pr.Allows(store.ScopeWrite) {
			return fmt.Errorf("%w (%s decide what code runs on the server)", err, what)
		}
		return err
	}
	return nil
}

func checkCommand(c string) error {
	if strings.TrimSpace(c) == "" {
		return fmt.Errorf("%w: --command is required", ErrInvalid)
	}
	if len(c) > maxCommand || strings.ContainsRune(c, 0) {
		return fmt.Errorf("%w: --command has at most %d bytes and no NUL byte", ErrInvalid, maxCommand)
	}
	return nil
}

func checkProcessName(n string) error {
	if len(n) > maxProcessName || !processNameRE.MatchString(n) {
		return fmt.Errorf("%w: a process name is a lowercase slug (a-z, 0-9, -; starts with a letter; at most %d characters), not %q",
			ErrInvalid, maxProcessName, truncate(n, 40))
	}
	return nil
}

// checkProcess validates p and fills the defaults.
func checkProcess(p *ProcessParams) error {
	p.Name = strings.TrimSpace(p.Name)
	if err := checkProcessName(p.Name); err != nil {
		return err
	}
	if err := checkCommand(p.Command); err != nil {
		return err
	}
	if p.Instances == 0 {
		p.Instances = 1
	}
	if p.Instances > maxInstances {
		return fmt.Errorf("%w: --instances is 1-%d", ErrInvalid, maxInstances)
	}
	if p.HealthPath != "" {
		if !p.Port {
			return fmt.Errorf("%w: --health-path needs --port (the check asks the instance's port)", ErrInvalid)
		}
		if !strings.HasPrefix(p.HealthPath, "/") || len(p.HealthPath) > 1024 || strings.ContainsFunc(p.HealthPath, func(r rune) bool {
			return unicode.IsSpace(r) || unicode.IsControl(r)
		}) {
			return fmt.Errorf("%w: --health-path is a URL path such as /up (at most 1024 characters, no spaces)", ErrInvalid)
		}
	}
	sig := strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(p.StopSignal)), "SIG")
	if sig == "" {
		sig = "TERM"
	}
	ok := false
	for _, s := range stopSignals {
		ok = ok || s == sig
	}
	if !ok {
		return fmt.Errorf("%w: --stop-signal is one of %s", ErrInvalid, strings.Join(stopSignals, ", "))
	}
	p.StopSignal = sig
	if p.StopGrace < 0 || p.StopGrace > maxStopGrace {
		return fmt.Errorf("%w: --stop-grace is between 1s and 1h", ErrInvalid)
	}
	if p.StopGrace == 0 {
		p.StopGrace = defaultStopGrace
	}
	p.StopGrace = p.StopGrace.Round(time.Second)
	if p.StopGrace == 0 {
		p.StopGrace = time.Second
	}
	switch p.Restart {
	case "":
		p.Restart = "always"
	case "always", "on-failure", "never":
	default:
		return fmt.Errorf("%w: --restart is always, on-failure or never", ErrInvalid)
	}
	if p.MemoryMax > 1<<50 {
		return fmt.Errorf("%w: --memory-max is too large", ErrInvalid)
	}
	if p.MemoryMax != 0 && p.MemoryMax < 1<<20 {
		return fmt.Errorf("%w: --memory-max is at least 1M", ErrInvalid)
	}
	if p.CPUMaxPercent > maxCPUPercent {
		return fmt.Errorf("%w: --cpu-max is at most %d%%", ErrInvalid, maxCPUPercent)
	}
	return nil
}

// AddProcess declares a process of an app (Replace: change an existing
// one). With a current release a process job applies it on the server;
// without one the job is nil and the next deploy starts it.
func (s *Service) AddProcess(ctx context.Context, pr *auth.Principal, peer Peer, p ProcessParams) (ProcessView, *store.Deployment, error) {
	if err := requireDeploy(pr, "processes"); err != nil {
		return ProcessView{}, nil, err
	}
	if err := checkProcess(&p); err != nil {
		return ProcessView{}, nil, err
	}
	a, err := s.ResolveApp(ctx, p.App)
	if err != nil {
		return ProcessView{}, nil, err
	}
	var saved store.AppProcess
	existed := false
	// Two apps of a server allocating a port at once: the loser's
	// transaction fails on the unique index and is tried again.
	for attempt := 0; ; attempt++ {
		err = s.st.InTx(ctx, func(tx *store.Store) error {
			// LockApp (store/apps.go) serialises the app's process and
			// port changes too.
			if _, err := tx.LockApp(ctx, a.ID); err != nil {
				return err
			}
			list, err := tx.AppProcesses(ctx, a.ID)
			if err != nil {
				return err
			}
			existed = false
			for _, x := range list {
				existed = existed || x.Name == p.Name
			}
			if existed && !p.Replace {
				return fmt.Errorf("%w: app %s already has a process %s (give replace / --replace to change it)", store.ErrConflict, a.Name, p.Name)
			}
			if !existed && len(list) >= maxProcessesByApp {
				return fmt.Errorf("%w: an app has at most %d processes", ErrInvalid, maxProcessesByApp)
			}
			saved, err = tx.PutAppProcess(ctx, store.AppProcess{
				AppID: a.ID, Name: p.Name, Command: p.Command, Instances: int(p.Instances), Port: p.Port,
				HealthPath: p.HealthPath, StopSignal: p.StopSignal, StopGraceSeconds: int(p.StopGrace / time.Second),
				Restart: p.Restart, MemoryMaxBytes: int64(p.MemoryMax), CPUMaxPercent: int(p.CPUMaxPercent),
			}, existed)
			if err != nil {
				return err
			}
			if p.Port {
				_, err = tx.AllocateUpstreamPort(ctx, a.ID)
			}
			return err
		})
		if err == nil || attempt >= 20 || !errors.Is(err, store.ErrConflict) || !strings.Contains(err.Error(), "upstream_port") {
			break
		}
	}
	if err != nil {
		return ProcessView{}, nil, err
	}
	action := kind.AppProcessAdded
	if existed {
		action = kind.AppProcessReplaced
	}
	s.activity(ctx, pr, peer, action, "app", a.ID, a.Name, map[string]any{"process": processAudit(saved)})
	a, err = s.st.App(ctx, a.ID)
	if err != nil {
		return ProcessView{}, nil, err
	}
	job, err := s.processJob(ctx, pr, peer, a, ProcessApply, []string{p.Name})
	if err != nil {
		return ProcessView{}, nil, err
	}
	views, err := s.processViews(ctx, a, []store.AppProcess{saved})
	if err != nil {
		return ProcessView{}, nil, err
	}
	return views[0], job, nil
}

// processAudit is what the audit trail keeps of a process: its settings
// (a command is code, not a secret; secrets live in the environment).
func processAudit(p store.AppProcess) map[string]any {
	return map[string]any{
		"name": p.Name, "command": p.Command, "instances": p.Instances, "port": p.Port, "health_path": p.HealthPath,
		"stop_signal": p.StopSignal, "stop_grace_seconds": p.StopGraceSeconds, "restart": p.Restart,
		"memory_max_bytes": p.MemoryMaxBytes, "cpu_max_percent": p.CPUMaxPercent,
	}
}

// processJob enqueues a process job through the one job machinery, when
// the app has a current release; without one nothing runs yet and the next
// deploy starts the declared processes (nil job).
func (s *Service) processJob(ctx context.Context, pr *auth.Principal, peer Peer, a store.App, action string, names []string) (*store.Deployment, error) {
	if a.CurrentDeploymentID == nil {
		return nil, nil
	}
	cur, err := s.st.Deployment(ctx, *a.CurrentDeploymentID)
	if err != nil {
		return nil, err
	}
	cp := store.CreateDeploymentParams{
		AppID: a.ID, UserID: &pr.UserID, TriggeredBy: store.TriggerUser, Kind: store.JobProcess,
		Environment: cur.Environment, ProcessAction: &action, ProcessNames: names,
	}
	if pr.TokenID != nil {
		ref := pr.TokenID.String()
		cp.TriggeredBy, cp.TriggerRef = store.TriggerAPIToken, &ref
	}
	q, err := s.enqueue(ctx, pr, peer, a, cp, kind.ProcessJobQueued)
	if err != nil {
		return nil, err
	}
	return &q.Deployment, nil
}

// processViews joins declared processes with the app's last report.
func (s *Service) processViews(ctx context.Context, a store.App, list []store.AppProcess) ([]ProcessView, error) {
	var rep agentv1.AppProcesses
	var reportedAt *time.Time
	st, err := s.st.ProcessStatus(ctx, a.ID)
	switch {
	case err == nil:
		if uerr := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(st.Report, &rep); uerr != nil {
			s.log.Warn("stored process report unreadable", "app", a.Name, "err", uerr)
		} else {
			t := st.ReportedAt
			reportedAt = &t
		}
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	byName := map[string]*agentv1.ProcessState{}
	for _, ps := range rep.GetProcesses() {
		byName[ps.GetName()] = ps
	}
	out := make([]ProcessView, 0, len(list))
	for _, p := range list {
		v := ProcessView{
			Name: p.Name, Command: p.Command, DesiredInstances: uint32(p.Instances), Port: p.Port, HealthPath: p.HealthPath,
			StopSignal: p.StopSignal, StopGrace: time.Duration(p.StopGraceSeconds) * time.Second, Restart: p.Restart,
			MemoryMax: uint64(p.MemoryMaxBytes), CPUMaxPercent: uint32(p.CPUMaxPercent), CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt,
			State: StateUnknown, Instances: []InstanceView{},
		}
		if ps, ok := byName[p.Name]; ok {
			v.State, v.Release, v.ReportedAt = ps.GetState(), ps.GetRelease(), reportedAt
			for _, in := range ps.GetInstances() {
				iv := InstanceView{
					Index: in.GetIndex(), PID: in.GetPid(), Port: in.GetPort(), State: in.GetState(), Restarts: in.GetRestarts(),
					LastExitCode: in.GetLastExitCode(), LastError: in.GetLastError(), LimitsEnforced: in.GetLimitsEnforced(),
				}
				if in.GetStartedAt() != nil && in.GetStartedAt().AsTime().Unix() > 0 {
					t := in.GetStartedAt().AsTime()
					iv.StartedAt = &t
				}
				v.Instances = append(v.Instances, iv)
			}
		} else if reportedAt != nil {
			// The agent reported the app and this process is not running.
			v.State, v.ReportedAt = "stopped", reportedAt
		}
		out = append(out, v)
	}
	return out, nil
}

// ListProcesses lists an app's processes and its upstream port (0: none).
func (s *Service) ListProcesses(ctx context.Context, pr *auth.Principal, app string) ([]ProcessView, uint32, error) {
	if err := require(pr, store.ScopeRead); err != nil {
		return nil, 0, err
	}
	a, err := s.ResolveApp(ctx, app)
	if err != nil {
		return nil, 0, err
	}
	list, err := s.st.AppProcesses(ctx, a.ID)
	if err != nil {
		return nil, 0, err
	}
	views, err := s.processViews(ctx, a, list)
	return views, uint32(a.UpstreamPort), err
}

// RemoveProcess forgets a process; with a current release a process job
// stops it on the server.
func (s *Service) RemoveProcess(ctx context.Context, pr *auth.Principal, peer Peer, app, name string) (*store.Deployment, error) {
	if err := requireDeploy(pr, "processes"); err != nil {
		return nil, err
	}
	if err := checkProcessName(name); err != nil {
		return nil, err
	}
	a, err := s.ResolveApp(ctx, app)
	if err != nil {
		return nil, err
	}
	if err := s.st.DeleteAppProcess(ctx, a.ID, name); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("app %s has no process %s: %w", a.Name, name, store.ErrNotFound)
		}
		return nil, err
	}
	s.activity(ctx, pr, peer, kind.AppProcessRemoved, "app", a.ID, a.Name, map[string]any{"process": name})
	// apply with the name: it is no longer declared, so the agent stops it.
	return s.processJob(ctx, pr, peer, a, ProcessApply, []string{name})
}

// ControlProcesses starts, stops or restarts an app's processes (names:
// these only; empty: all) with a process job. Without a current release
// nothing runs to control: refused.
func (s *Service) ControlProcesses(ctx context.Context, pr *auth.Principal, peer Peer, app, action string, names []string) (store.Deployment, error) {
	if err := requireDeploy(pr, "processes"); err != nil {
		return store.Deployment{}, err
	}
	switch action {
	case ProcessStart, ProcessStop, ProcessRestart:
	default:
		return store.Deployment{}, fmt.Errorf("%w: action is start, stop or restart", ErrInvalid)
	}
	if len(names) > maxProcessesByApp {
		return store.Deployment{}, fmt.Errorf("%w: at most %d process names", ErrInvalid, maxProcessesByApp)
	}
	a, err := s.ResolveApp(ctx, app)
	if err != nil {
		return store.Deployment{}, err
	}
	list, err := s.st.AppProcesses(ctx, a.ID)
	if err != nil {
		return store.Deployment{}, err
	}
	if len(list) == 0 {
		return store.Deployment{}, fmt.Errorf("%w: app %s declares no process (berth app process add)", store.ErrWrongState, a.Name)
	}
	declared := map[string]bool{}
	for _, p := range list {
		declared[p.Name] = true
	}
	seen := map[string]bool{}
	var uniq []string
	for _, n := range names {
		if err := checkProcessName(n); err != nil {
			return store.Deployment{}, err
		}
		if !declared[n] {
			return store.Deployment{}, fmt.Errorf("app %s has no process %s: %w", a.Name, n, store.ErrNotFound)
		}
		if !seen[n] {
			seen[n] = true
			uniq = append(uniq, n)
		}
	}
	if a.CurrentDeploymentID == nil {
		return store.Deployment{}, fmt.Errorf("%w: app %s has no current release yet: deploy it first (the deploy starts its processes)", store.ErrWrongState, a.Name)
	}
	s.activity(ctx, pr, peer, kind.AppProcessesControl, "app", a.ID, a.Name, map[string]any{"action": action, "processes": uniq})
	job, err := s.processJob(ctx, pr, peer, a, action, uniq)
	if err != nil {
		return store.Deployment{}, err
	}
	return *job, nil
}

// processSpecs is the app's declared process set as the agent reads it.
func processSpecs(list []store.AppProcess) []*agentv1.ProcessSpec {
	out := make([]*agentv1.ProcessSpec, len(list))
	for i, p := range list {
		out[i] = &agentv1.ProcessSpec{
			Name: p.Name, Command: p.Command, Instances: uint32(p.Instances), Port: p.Port, HealthPath: p.HealthPath,
			StopSignal: p.StopSignal, StopGrace: durationpbSeconds(p.StopGraceSeconds), Restart: p.Restart,
			MemoryMaxBytes: uint64(p.MemoryMaxBytes), CpuMaxPercent: uint32(p.CPUMaxPercent),
		}
	}
	return out
}
