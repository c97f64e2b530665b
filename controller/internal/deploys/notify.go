package deploys

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/berthhq/berth/controller/internal/store"
)

// jobsChannel is the deployments' jobrelay channel (dispatch, cancel and
// log messages between controllers).
const jobsChannel = "berth_jobs"

func (s *Service) notify(ctx context.Context, payload string) { s.relay.Notify(ctx, payload) }

// notifyAll sends several notifications with one statement.
func (s *Service) notifyAll(ctx context.Context, payloads []string) { s.relay.NotifyAll(ctx, payloads) }

// listen relays notifications until ctx ends.
func (s *Service) listen(ctx context.Context, pool *pgxpool.Pool) { s.relay.Listen(ctx, pool) }

// subscribe returns a channel poked when the deployment changes.
func (s *Service) subscribe(id store.ID) (chan struct{}, func()) { return s.relay.Subscribe(id) }
