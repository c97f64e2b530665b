package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/berthhq/berth/controller/internal/alert"
	"github.com/berthhq/berth/controller/internal/fleet"
	"github.com/berthhq/berth/controller/internal/store"
)

// newAlerts loads the threshold alert engine (rules and firing states from
// PostgreSQL, so a restart neither fires again nor forgets) and hooks it to
// the fleet's metrics ingest. The caller runs the engine.
func newAlerts(ctx context.Context, cfg Config, db *store.Store, fl *fleet.Service, log *slog.Logger) (*alert.Engine, *alert.Service, error) {
	hb := cfg.HeartbeatInterval
	if hb <= 0 {
		hb = 10 * time.Second
	}
	eng, err := alert.NewEngine(alert.Config{Store: db, Logger: log, OfflineEvery: max(hb/2, time.Second)})
	if err != nil {
		return nil, nil, err
	}
	if err := eng.Load(ctx); err != nil {
		return nil, nil, fmt.Errorf("alert rules: %w", err)
	}
	fl.SetMetricsObserver(eng)
	return eng, alert.NewService(db, eng, log), nil
}
