package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// The one numbering of agent job events, shared by every kind of job
// (deployments, backups, backup tasks): a job row holds the highest event
// number committed and its log's size; events are stored once each, in
// order, and the log is capped. Each kind of job says how its row and log
// are reached (jobTable); the rules live here once.

// jobCounters is what a job row holds for its numbered events.
type jobCounters struct {
	Seq       int64 // highest event number committed
	LogBytes  int64 // bytes of output received (stored or not)
	Truncated bool  // the log reached its cap
}

// jobTable reaches one kind of job's row (locked for the transaction) and
// log.
type jobTable[T any] struct {
	lock      func(ctx context.Context, tx *Store, id ID) (T, jobCounters, error)
	get       func(ctx context.Context, tx *Store, id ID) (T, error)
	insertLog func(ctx context.Context, tx *Store, id ID, seq int64, step string, data []byte) error
	advance   func(ctx context.Context, tx *Store, id ID, c jobCounters) error
}

// numberedEvent is one agent event for a job of row type T.
type numberedEvent[T any] struct {
	JobID ID
	Seq   int64
	Step  string
	Data  []byte
	Apply func(tx *Store, row T) error
	Fresh bool
}

// commitNumbered stores a run of events, for one job or several, in one
// transaction, in the order given, each exactly once: under the job's row
// lock an event numbered at or below the committed number is a duplicate
// (nothing changes), the next number is stored and becomes the committed
// number, and a later one is a gap (nothing stored). logCap 0 is
// DefaultLogCap. An agent streams its events one by one, and one
// transaction (one wait for the disk) per event would make the database
// the slowest part of a job; events that queued up while the previous ones
// were stored commit together. Any error rolls back the whole run.
func commitNumbered[T any](ctx context.Context, s *Store, evs []numberedEvent[T], logCap int64, t jobTable[T]) ([]JobEventOutcome, error) {
	for _, ev := range evs {
		if ev.Seq <= 0 {
			return nil, fmt.Errorf("commit job event: seq %d: %w", ev.Seq, ErrInvalid)
		}
	}
	if logCap <= 0 {
		logCap = DefaultLogCap
	}
	type locked struct {
		id       ID
		row      T
		c        jobCounters
		stale    bool // an Apply may have changed the row since it was read
		advanced bool
	}
	out := make([]JobEventOutcome, len(evs))
	err := s.InTx(ctx, func(tx *Store) error {
		rows := map[ID]*locked{}
		var order []*locked
		for i, ev := range evs {
			l := rows[ev.JobID]
			if l == nil {
				row, c, err := t.lock(ctx, tx, ev.JobID)
				if err != nil {
					return err
				}
				l = &locked{id: ev.JobID, row: row, c: c}
				rows[ev.JobID] = l
				order = append(order, l)
			}
			out[i].Committed = l.c.Seq
			if ev.Seq <= l.c.Seq {
				out[i].Dup = true
				continue
			}
			if ev.Seq != l.c.Seq+1 {
				out[i].Gap = true
				continue
			}
			if len(ev.Data) > 0 {
				if !l.c.Truncated {
					data := ev.Data
					room := logCap - l.c.LogBytes
					if int64(len(data)) > room {
						data = append(append([]byte{}, data[:max(room, 0)]...), TruncationMarker...)
						l.c.Truncated = true
					}
					if len(data) > MaxLogChunk {
						data = append(data[:MaxLogChunk-len(TruncationMarker)], TruncationMarker...)
						l.c.Truncated = true
					}
					if err := t.insertLog(ctx, tx, ev.JobID, ev.Seq, ev.Step, data); err != nil {
						return err
					}
				}
				l.c.LogBytes += int64(len(ev.Data))
			}
			if ev.Apply != nil {
				if ev.Fresh && l.stale {
					row, err := t.get(ctx, tx, ev.JobID)
					if err != nil {
						return err
					}
					l.row = row
				}
				if err := ev.Apply(tx, l.row); err != nil {
					return err
				}
				l.stale = true
			}
			l.c.Seq, l.advanced = ev.Seq, true
			out[i].Committed = ev.Seq
		}
		for _, l := range order {
			if !l.advanced {
				continue
			}
			if err := t.advance(ctx, tx, l.id, l.c); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("commit job event: %w", ErrNotFound)
	}
	if err != nil {
		return nil, mapErr("commit job event", err)
	}
	return out, nil
}
