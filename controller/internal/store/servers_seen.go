package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/berthhq/berth/gen/dbsqlc"
)

// MarkServersSeen records heartbeats of many servers at once (each online
// as of its time) and reports how many rows it updated.
func (s *Store) MarkServersSeen(ctx context.Context, seen map[ID]time.Time) (int64, error) {
	if len(seen) == 0 {
		return 0, nil
	}
	p := dbsqlc.MarkServersSeenParams{Ids: make([]pgtype.UUID, 0, len(seen)), SeenAt: make([]time.Time, 0, len(seen))}
	for id, at := range seen {
		p.Ids = append(p.Ids, pgID(id))
		p.SeenAt = append(p.SeenAt, at)
	}
	n, err := s.q.MarkServersSeen(ctx, p)
	return n, mapErr("mark servers seen", err)
}
