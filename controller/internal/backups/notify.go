package backups

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/berthhq/berth/controller/internal/store"
)

// jobsChannel is the backups' jobrelay channel (dispatch, cancel and log
// messages between controllers).
const jobsChannel = "berth_backup_jobs"

func (s *Service) notify(ctx context.Context, payload string) { s.relay.Notify(ctx, payload) }

func (s *Service) notifyAll(ctx context.Context, payloads []string) { s.relay.NotifyAll(ctx, payloads) }

func (s *Service) listen(ctx context.Context, pool *pgxpool.Pool) { s.relay.Listen(ctx, pool) }

// subscribe returns a channel poked when the backup or task changes.
func (s *Service) subscribe(id store.ID) (chan struct{}, func()) { return s.relay.Subscribe(id) }
