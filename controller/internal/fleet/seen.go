package fleet

import (
	"context"
	"sync"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
)

// seenBatch gathers heartbeats in memory between flushes.
type seenBatch struct {
	mu   sync.Mutex
	seen map[store.ID]time.Time
}

func (b *seenBatch) add(id store.ID, at time.Time) {
	b.mu.Lock()
	if b.seen == nil {
		b.seen = make(map[store.ID]time.Time)
	}
	b.seen[id] = at
	b.mu.Unlock()
}

// merge puts back a batch that failed to write; a newer heartbeat wins.
func (b *seenBatch) merge(m map[store.ID]time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.seen == nil {
		b.seen = make(map[store.ID]time.Time, len(m))
	}
	for id, at := range m {
		if cur, ok := b.seen[id]; !ok || cur.Before(at) {
			b.seen[id] = at
		}
	}
}

func (b *seenBatch) take() map[store.ID]time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.seen
	b.seen = nil
	return out
}

// FlushHeartbeats writes gathered heartbeats every half interval (at least
// once a second), well inside the offline TTL of three intervals.
func (s *Service) FlushHeartbeats(ctx context.Context) {
	every := max(s.cfg.HeartbeatInterval/2, time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		batch := s.seen.take()
		if _, err := s.st.MarkServersSeen(ctx, batch); err != nil && ctx.Err() == nil {
			s.log.Error("record heartbeats", "servers", len(batch), "err", err)
			s.seen.merge(batch)
		}
	}
}
