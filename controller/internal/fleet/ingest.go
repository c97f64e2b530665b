package fleet

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
)

// Group commit of metrics batches. Every agent sends a batch every
// interval; committing each in its own transaction costs a WAL flush per
// agent (10,000 agents at 10 s are 1,000 flushes a second). The ingester
// instead commits whatever batches are waiting, from every agent, in one
// transaction: at low load a group is one batch and nothing waits, under
// load the groups grow and the flushes stay few. There is no linger timer,
// so grouping never adds latency of its own.
const (
	ingestWorkers     = 4     // groups committing at once
	maxGroupBatches   = 2000  // batches in one transaction
	maxGroupSamples   = 60000 // samples in one COPY
	ingestQueueLength = 20000
)

type ingestReq struct {
	batch store.MetricsBatch
	done  chan ingestRes
}

type ingestRes struct {
	dup bool
	err error
}

type ingester struct {
	st    *store.Store
	log   *slog.Logger
	in    chan *ingestReq
	start sync.Once
}

func newIngester(st *store.Store, log *slog.Logger) *ingester {
	return &ingester{st: st, log: log, in: make(chan *ingestReq, ingestQueueLength)}
}

// submit queues a batch and waits for its commit. The workers start on
// first use and live as long as the process: they only wait on the queue.
func (g *ingester) submit(ctx context.Context, b store.MetricsBatch) (dup bool, err error) {
	g.start.Do(func() {
		for range ingestWorkers {
			go g.work()
		}
	})
	req := &ingestReq{batch: b, done: make(chan ingestRes, 1)}
	select {
	case g.in <- req:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	select {
	case r := <-req.done:
		return r.dup, r.err
	case <-ctx.Done():
		// The batch may still commit; the agent re-sends it after its
		// reconnect and gets a duplicate ack.
		return false, ctx.Err()
	}
}

func (g *ingester) work() {
	var next *ingestReq // a batch held back from the last group
	for {
		first := next
		next = nil
		if first == nil {
			first = <-g.in
		}
		group := []*ingestReq{first}
		servers := map[store.ID]bool{first.batch.ServerID: true}
		samples := first.batch.Len()
	fill:
		for len(group) < maxGroupBatches && samples < maxGroupSamples {
			select {
			case r := <-g.in:
				if servers[r.batch.ServerID] {
					// One batch per server per group (sequence order).
					next = r
					break fill
				}
				servers[r.batch.ServerID] = true
				group = append(group, r)
				samples += r.batch.Len()
			default:
				break fill
			}
		}
		g.commit(group)
	}
}

func (g *ingester) commit(group []*ingestReq) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	batches := make([]store.MetricsBatch, len(group))
	for i, r := range group {
		batches[i] = r.batch
	}
	res, err := g.st.IngestMetricsBatches(ctx, batches)
	if err != nil && len(group) > 1 {
		g.log.Warn("group commit of metrics failed; committing its batches one by one", "batches", len(group), "err", err)
		// One by one, so a bad batch fails alone and the others land.
		for _, r := range group {
			res, err := g.st.IngestMetricsBatches(ctx, []store.MetricsBatch{r.batch})
			r.answer(res, err)
		}
		return
	}
	for _, r := range group {
		r.answer(res, err)
	}
}

// answer tells the batch's sender what became of it.
func (r *ingestReq) answer(res map[store.ID]store.IngestOutcome, err error) {
	switch {
	case err != nil:
		r.done <- ingestRes{err: err}
	case res[r.batch.ServerID] == store.IngestStored:
		r.done <- ingestRes{}
	case res[r.batch.ServerID] == store.IngestDuplicate:
		r.done <- ingestRes{dup: true}
	default: // the server is gone
		r.done <- ingestRes{err: store.ErrNotFound}
	}
}
