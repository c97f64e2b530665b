package fleet

import (
	"context"
	"fmt"
	"time"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
)

// Sparklines returns a coarse series per server for dashboards: one query
// for the whole page, downsampled in SQL, so a page of servers costs the
// same as one.
func (s *Service) Sparklines(ctx context.Context, pr *auth.Principal, ids []store.ID, since, step time.Duration) (map[store.ID][]store.MetricPoint, error) {
	if err := require(pr, store.ScopeRead); err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return map[store.ID][]store.MetricPoint{}, nil
	}
	if len(ids) > 500 || since <= 0 || step <= 0 || since/step > 500 {
		return nil, fmt.Errorf("%w: sparklines for at most 500 servers and 500 points", ErrInvalid)
	}
	now := s.cfg.Now()
	return s.st.MetricsSeriesForServers(ctx, ids, now.Add(-since), now, step)
}

// ChartRanges are the ranges the web UI offers, with the step that keeps
// each chart to a few hundred points.
var ChartRanges = map[string]struct{ Since, Step time.Duration }{
	"1h":  {time.Hour, 15 * time.Second},
	"24h": {24 * time.Hour, 5 * time.Minute},
	"7d":  {7 * 24 * time.Hour, 30 * time.Minute},
}
