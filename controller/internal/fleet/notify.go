package fleet

import (
	"context"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/berthhq/berth/controller/internal/store"
)

// revokedChannel carries the ids of servers removed, disabled or revoked, so
// every controller sharing the database cuts that agent's stream, not only
// the one that served the request. A payload "<id>:<serial>" names one
// revoked certificate: only a stream using that serial is cut.
const revokedChannel = "berth_server_revoked"

func (s *Service) announceRevoked(ctx context.Context, id store.ID) {
	s.announce(ctx, id.String())
}

func (s *Service) announce(ctx context.Context, payload string) {
	if _, err := s.st.Pool().Exec(ctx, "SELECT pg_notify($1, $2)", revokedChannel, payload); err != nil {
		s.log.Error("announce revocation", "payload", payload, "err", err)
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
		ref, serial, bySerial := strings.Cut(n.Payload, ":")
		id, err := store.ParseID(ref)
		switch {
		case err != nil:
		case bySerial:
			s.hub.CutSerial(id, serial, ErrRevoked)
		default:
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
