package fleet

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/berthhq/berth/controller/internal/store"
)

// revokedChannel carries the ids of servers removed, disabled or revoked, so
// every controller sharing the database cuts that agent's stream, not only
// the one that served the request.
const revokedChannel = "berth_server_revoked"

func (s *Service) announceRevoked(ctx context.Context, id store.ID) {
	if _, err := s.st.Pool().Exec(ctx, "SELECT pg_notify($1, $2)", revokedChannel, id.String()); err != nil {
		s.log.Error("announce revoked server", "server_id", id.String(), "err", err)
	}
}

// ListenRevocations cuts local streams of servers revoked anywhere. It
// re-listens after a lost connection (PostgreSQL restart) and, on each
// (re)connect, re-checks every local stream, since notifications sent while
// it was down are gone.
func (s *Service) ListenRevocations(ctx context.Context, pool *pgxpool.Pool) {
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
	// A LISTENing session must not go back to the pool.
	pc := conn.Hijack()
	defer pc.Close(context.Background())
	if _, err := pc.Exec(ctx, "LISTEN "+revokedChannel); err != nil {
		return
	}
	s.recheckConnected(ctx)
	for {
		n, err := pc.WaitForNotification(ctx)
		if err != nil {
			return
		}
		if id, err := store.ParseID(n.Payload); err == nil {
			s.hub.Cut(id, ErrRevoked)
		}
	}
}

// recheckConnected cuts every local stream whose certificate or server is no
// longer good.
func (s *Service) recheckConnected(ctx context.Context) {
	for _, id := range s.hub.Connected() {
		serial, ok := s.hub.Serial(id)
		if !ok {
			continue
		}
		st, err := s.st.CheckAgentCertificate(ctx, id, serial)
		if err != nil && ctx.Err() == nil && !isNotFound(err) {
			continue // database trouble: keep the stream, check again later
		}
		if err != nil || st.Revoked || st.ServerStatus == string(store.ServerDisabled) {
			s.hub.Cut(id, ErrRevoked)
		}
	}
}
