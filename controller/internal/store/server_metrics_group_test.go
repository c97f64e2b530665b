package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
)

// Group commit keeps exactly-once per batch: new batches are stored,
// re-sent ones acknowledged as duplicates, a removed server's dropped, and
// overlapping groups from two controllers neither deadlock nor store a
// batch twice.
func TestIngestMetricsBatchesGroupCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, st := keyedStore(t)
	base := metricsWindow(t, st)
	var srvs []store.Server
	for i := range 6 {
		srvs = append(srvs, mkServer(t, st, fmt.Sprintf("g%d", i)))
	}
	count := func(id store.ID) int64 {
		t.Helper()
		n, err := st.CountMetrics(ctx, id, base.Add(-time.Hour), base.Add(3*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	group := func(seq int64, ids ...store.ID) []store.MetricsBatch {
		var out []store.MetricsBatch
		for _, id := range ids {
			out = append(out, store.MetricsBatch{ServerID: id, Seq: seq, Samples: samples(base.Add(time.Duration(seq)*time.Minute), 3)})
		}
		return out
	}

	res, err := st.IngestMetricsBatches(ctx, group(1, srvs[0].ID, srvs[1].ID, srvs[2].ID))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range srvs[:3] {
		if res[s.ID] != store.IngestStored || count(s.ID) != 3 {
			t.Fatalf("%s: %v, %d rows", s.Name, res[s.ID], count(s.ID))
		}
	}
	// Replays of seq 1 mixed with new seq 1 batches of other servers.
	res, err = st.IngestMetricsBatches(ctx, append(group(1, srvs[0].ID, srvs[1].ID), group(1, srvs[3].ID)...))
	if err != nil {
		t.Fatal(err)
	}
	if res[srvs[0].ID] != store.IngestDuplicate || res[srvs[1].ID] != store.IngestDuplicate || res[srvs[3].ID] != store.IngestStored {
		t.Fatalf("mixed group: %v", res)
	}
	if count(srvs[0].ID) != 3 || count(srvs[3].ID) != 3 {
		t.Fatal("a replayed batch was stored again")
	}
	// A removed server's batch is dropped; the rest of the group lands.
	if err := st.DeleteServer(ctx, srvs[2].ID); err != nil {
		t.Fatal(err)
	}
	res, err = st.IngestMetricsBatches(ctx, group(2, srvs[2].ID, srvs[4].ID))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := res[srvs[2].ID]; ok || res[srvs[4].ID] != store.IngestStored {
		t.Fatalf("group with a removed server: %v", res)
	}
	// The same server twice in one group, or a bad sequence, is refused.
	if _, err := st.IngestMetricsBatches(ctx, append(group(5, srvs[5].ID), group(6, srvs[5].ID)...)); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("server twice: %v", err)
	}
	if _, err := st.IngestMetricsBatches(ctx, group(0, srvs[5].ID)); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("sequence 0: %v", err)
	}
	// Two controllers committing the same batches in groups of opposite
	// order at once: no deadlock, every batch stored exactly once.
	for round := int64(10); round < 20; round++ {
		var wg sync.WaitGroup
		for _, order := range [][]store.ID{{srvs[0].ID, srvs[1].ID, srvs[3].ID}, {srvs[3].ID, srvs[1].ID, srvs[0].ID}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := st.IngestMetricsBatches(ctx, group(round, order...)); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
	}
	if n := count(srvs[1].ID); n != 3+10*3 {
		t.Fatalf("overlapping groups: %d rows, want %d", n, 3+10*3)
	}
}
