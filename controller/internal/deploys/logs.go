package deploys

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/fleet"
	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// ErrUnavailable: what was asked needs something that is not there now
// (the app's agent is not connected); asking again later may work.
var ErrUnavailable = errors.New("unavailable")

const (
	defaultLogTail = 200
	maxLogTail     = 10000
	maxLogSince    = 31 * 24 * time.Hour
)

// LogsParams asks for an app's process logs: lines of the last Since (0:
// the last Tail lines) of some processes (empty: all), then with Follow
// every new line until ctx ends.
type LogsParams struct {
	App       string
	Processes []string
	Since     time.Duration
	Follow    bool
	Tail      uint32
}

// StreamLogs streams an app's process logs from its server's agent (they
// are kept there, never in PostgreSQL), relayed by the controller that
// holds the agent's stream.
func (s *Service) StreamLogs(ctx context.Context, pr *auth.Principal, p LogsParams, send func([]*agentv1.LogLine) error) error {
	if err := require(pr, store.ScopeRead); err != nil {
		return err
	}
	if p.Since < 0 || p.Since > maxLogSince {
		return fmt.Errorf("%w: --since is between 0 and 31 days", ErrInvalid)
	}
	if p.Tail > maxLogTail {
		return fmt.Errorf("%w: --tail is at most %d lines", ErrInvalid, maxLogTail)
	}
	if p.Tail == 0 {
		p.Tail = defaultLogTail
	}
	if len(p.Processes) > maxProcessesByApp {
		return fmt.Errorf("%w: at most %d processes", ErrInvalid, maxProcessesByApp)
	}
	for _, n := range p.Processes {
		if err := checkProcessName(n); err != nil {
			return err
		}
	}
	a, err := s.ResolveApp(ctx, p.App)
	if err != nil {
		return err
	}
	req := &agentv1.LogsRequest{AppId: a.ID.String(), Processes: p.Processes, Follow: p.Follow, Tail: p.Tail}
	if p.Since > 0 {
		req.Since = timestamppb.New(s.cfg.Now().Add(-p.Since))
	}
	err = s.fleet.StreamLogs(ctx, a.ServerID, req, func(c *agentv1.LogsChunk) error { return send(c.GetLines()) })
	if errors.Is(err, fleet.ErrNotConnected) {
		name, where := a.ServerID.String(), ""
		if srv, serr := s.st.Server(ctx, a.ServerID); serr == nil {
			name = srv.Name
			if srv.Status == store.ServerOnline {
				// Logs are relayed only by the controller holding the
				// agent's stream (see fleet.StreamLogs).
				where = " to this controller (it is connected to another controller of this cluster: ask that one)"
			}
		}
		return fmt.Errorf("%w: agent for %s is not connected%s", ErrUnavailable, name, where)
	}
	if errors.Is(err, fleet.ErrSlowAgent) || errors.Is(err, fleet.ErrLogsTooSlow) || errors.Is(err, fleet.ErrLogsSilent) {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return err
}

func durationpbSeconds(sec int) *durationpb.Duration {
	return durationpb.New(time.Duration(sec) * time.Second)
}
