package backups

import (
	"context"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// jobsChannel carries, between controllers sharing the database:
//
//	dispatch              a backup or task may be dispatchable
//	cancel:<server>:<id>  send JobCancel to that server's agent
//	log:<id>              the job has new log or state
//	held:<server>         re-send that server's agent its held schedules
const jobsChannel = "berth_backup_jobs"

func (s *Service) notify(ctx context.Context, payload string) {
	if _, err := s.st.Pool().Exec(ctx, "SELECT pg_notify($1, $2)", jobsChannel, payload); err != nil && ctx.Err() == nil {
		s.log.Warn("notify", "payload", payload, "err", err)
	}
}

func (s *Service) notifyAll(ctx context.Context, payloads []string) {
	if len(payloads) == 0 {
		return
	}
	if _, err := s.st.Pool().Exec(ctx, "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", jobsChannel, payloads); err != nil && ctx.Err() == nil {
		s.log.Warn("notify", "payloads", payloads, "err", err)
	}
}

// listen relays notifications; after a lost connection it re-listens and
// wakes every follower and the dispatcher, since notifications sent
// meanwhile are gone.
func (s *Service) listen(ctx context.Context, pool *pgxpool.Pool) {
	for ctx.Err() == nil {
		s.listenOnce(ctx, pool)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (s *Service) listenOnce(ctx context.Context, pool *pgxpool.Pool) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return
	}
	pc := conn.Hijack()
	defer pc.Close(context.Background())
	if _, err := pc.Exec(ctx, "LISTEN "+jobsChannel); err != nil {
		return
	}
	s.poke()
	s.wakeAllFollowers()
	for {
		n, err := pc.WaitForNotification(ctx)
		if err != nil {
			return
		}
		s.relay(n.Payload)
	}
}

func (s *Service) relay(payload string) {
	k, rest, _ := strings.Cut(payload, ":")
	switch k {
	case "dispatch":
		s.poke()
	case "cancel":
		srv, job, _ := strings.Cut(rest, ":")
		sid, err1 := store.ParseID(srv)
		if _, err2 := store.ParseID(job); err1 != nil || err2 != nil {
			return
		}
		_ = s.fleet.Hub().Send(sid, &agentv1.ConnectResponse{Msg: &agentv1.ConnectResponse_JobCancel{JobCancel: &agentv1.JobCancel{JobId: job}}})
		s.cancelDownload(job)
	case "held":
		s.relayHeld(rest)
	case "log":
		if id, err := store.ParseID(rest); err == nil {
			s.wakeFollowers(id)
		}
	}
}

func (s *Service) subscribe(id store.ID) (chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	if s.followers[id] == nil {
		s.followers[id] = map[chan struct{}]struct{}{}
	}
	s.followers[id][ch] = struct{}{}
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		delete(s.followers[id], ch)
		if len(s.followers[id]) == 0 {
			delete(s.followers, id)
		}
		s.mu.Unlock()
	}
}

func (s *Service) wakeFollowers(id store.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.followers[id] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (s *Service) wakeAllFollowers() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, chs := range s.followers {
		for ch := range chs {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}
