package supervise

import (
	"log/slog"
	"time"

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
	// HealthTimeout is how long a new instance may take to pass its health
	// check (the app's health-check timeout); 0: the Manager's default.
	HealthTimeout time.Duration
}

// The Manager's methods (see manager.go, deploy.go, report.go, logs.go):
//
//	NewManager(cfg Config) (*Manager, error)
//	Deploy(ctx, app App, logf) error
//	Action(ctx, app App, action string, names []string, logf) error // apply|start|stop|restart
//	DeleteApp(ctx, appID string) error
//	Report() *agentv1.ProcessReport
//	OnChange(fn func())
//	Logs(ctx, req *agentv1.LogsRequest, send func([]*agentv1.LogLine) error) error
//	ReleasesInUse(appID string) []string
//	Close() error
