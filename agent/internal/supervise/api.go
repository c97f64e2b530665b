package supervise

import (
	"context"
	"errors"
	"log/slog"

	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// Config: StateDir is the agent's state directory for apps (e.g.
// <data-dir>/apps); Executable is the berth-agent binary path the
// supervisors are started from (os.Executable()).
type Config struct {
	StateDir   string
	Executable string
	Logger     *slog.Logger
}

// App is what a job tells the manager about the app.
type App struct {
	ID           string   // app ULID
	ReleaseID    string   // deployment ULID of the release
	ReleaseDir   string   // absolute path of that release (not the current symlink)
	UID, GID     uint32   // app user; the agent's own when it does not run as root
	Env          []string // merged environment KEY=VALUE (PORT is added per instance)
	Processes    []*agentv1.ProcessSpec
	UpstreamPort uint32 // 0: no upstream
}

var errNotImplemented = errors.New("supervise: not implemented")

// Manager owns the supervisors and upstreams of every app on this agent.
type Manager struct {
	cfg Config
}

// NewManager scans StateDir and re-attaches to running supervisors.
func NewManager(cfg Config) (*Manager, error) { return nil, errNotImplemented }

// Deploy moves the app's processes to app.ReleaseDir without downtime.
func (m *Manager) Deploy(ctx context.Context, app App, logf func(format string, args ...any)) error {
	return errNotImplemented
}

// Action applies apply|start|stop|restart to the named (or all) processes.
func (m *Manager) Action(ctx context.Context, app App, action string, names []string, logf func(format string, args ...any)) error {
	return errNotImplemented
}

// DeleteApp stops everything of the app incl. upstream, removes its state dir.
func (m *Manager) DeleteApp(ctx context.Context, appID string) error { return errNotImplemented }

// Report is every app's processes now.
func (m *Manager) Report() *agentv1.ProcessReport { return &agentv1.ProcessReport{} }

// OnChange registers fn, called (debounced) when any state changes.
func (m *Manager) OnChange(fn func()) {}

// Logs sends the tail then follows until ctx ends.
func (m *Manager) Logs(ctx context.Context, req *agentv1.LogsRequest, send func(lines []*agentv1.LogLine) error) error {
	return errNotImplemented
}

// ReleasesInUse are the release dirs running instances use (prune must keep them).
func (m *Manager) ReleasesInUse(appID string) []string { return nil }

// Close stops watching; never stops app processes.
func (m *Manager) Close() error { return nil }
