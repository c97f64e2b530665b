package store

import (
	"bytes"
	"context"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/berthhq/berth/gen/dbsqlc"
)

// seenChunk bounds how many rows one heartbeat flush transaction locks, so
// metrics ingest never waits long behind it.
const seenChunk = 500

// MarkServersSeen records heartbeats of many servers at once (each online
// as of its time) and reports how many rows it updated. Rows are locked in
// id order, in chunks, each its own short transaction: metrics group
// commit locks servers in the same order, so neither deadlocks the other.
func (s *Store) MarkServersSeen(ctx context.Context, seen map[ID]time.Time) (int64, error) {
	if len(seen) == 0 {
		return 0, nil
	}
	ids := make([]ID, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b ID) int { return bytes.Compare(a[:], b[:]) })
	var total int64
	for chunk := range slices.Chunk(ids, seenChunk) {
		p := dbsqlc.MarkServersSeenParams{Ids: make([]pgtype.UUID, len(chunk)), SeenAt: make([]time.Time, len(chunk))}
		for i, id := range chunk {
			p.Ids[i], p.SeenAt[i] = pgID(id), seen[id]
		}
		err := s.InTx(ctx, func(tx *Store) error {
			if err := tx.q.LockServersForSeen(ctx, p.Ids); err != nil {
				return err
			}
			n, err := tx.q.MarkServersSeen(ctx, p)
			total += n
			return err
		})
		if err != nil {
			return total, mapErr("mark servers seen", err)
		}
	}
	return total, nil
}
