package metrics

import (
	"runtime"
	"sync"
	"testing"
	"time"
)

// mk makes a sample identified by id (its Load1), for checking order.
func mk(id int) Sample {
	return Sample{RecordedAt: time.Unix(int64(id), 0), Load1: float64(id)}
}

func ids(samples []Sample) []int {
	out := make([]int, len(samples))
	for i, s := range samples {
		out[i] = int(s.Load1)
	}
	return out
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// next calls NextBatch and checks the batch's samples.
func next(t *testing.T, b *Buffer, limit int, want ...int) Batch {
	t.Helper()
	batch, ok := b.NextBatch(limit)
	if !ok {
		t.Fatalf("NextBatch(%d): nothing, want %v", limit, want)
	}
	if got := ids(batch.Samples); !equalInts(got, want) {
		t.Fatalf("NextBatch(%d) seq %d = %v, want %v", limit, batch.Seq, got, want)
	}
	return batch
}

func none(t *testing.T, b *Buffer) {
	t.Helper()
	if batch, ok := b.NextBatch(100); ok {
		t.Fatalf("NextBatch: got seq %d %v, want nothing", batch.Seq, ids(batch.Samples))
	}
}

// newBuf is NewBuffer then SetNextSeq(next).
func newBuf(capacity int, next uint64) *Buffer {
	b := NewBuffer(capacity)
	b.SetNextSeq(next)
	return b
}

func TestCapacityFor(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		retention, interval time.Duration
		want                int
	}{
		{24 * time.Hour, 10 * time.Second, 8640},
		{24 * time.Hour, time.Second, 86400},
		{time.Minute, 7 * time.Second, 9}, // rounded up
		{0, 0, 8640},                      // defaults
		{time.Second, time.Hour, 1},
	} {
		if got := CapacityFor(c.retention, c.interval); got != c.want {
			t.Errorf("CapacityFor(%v, %v) = %d, want %d", c.retention, c.interval, got, c.want)
		}
	}
}

func TestBufferFIFO(t *testing.T) {
	t.Parallel()
	b := newBuf(100, 1)
	none(t, b)
	for i := 1; i <= 10; i++ {
		b.Add(mk(i))
	}
	if b.Len() != 10 {
		t.Fatalf("Len = %d, want 10", b.Len())
	}
	b1 := next(t, b, 4, 1, 2, 3, 4)
	b2 := next(t, b, 4, 5, 6, 7, 8)
	b3 := next(t, b, 4, 9, 10)
	none(t, b)
	if b1.Seq != 1 || b2.Seq != 2 || b3.Seq != 3 {
		t.Errorf("seqs = %d %d %d, want 1 2 3", b1.Seq, b2.Seq, b3.Seq)
	}
	if b.Len() != 10 || b.InFlight() != 3 {
		t.Errorf("in flight: Len = %d, InFlight = %d; want 10, 3", b.Len(), b.InFlight())
	}
	for seq := uint64(1); seq <= 3; seq++ {
		if !b.Ack(seq) {
			t.Errorf("Ack(%d) = false", seq)
		}
	}
	if b.Len() != 0 || b.InFlight() != 0 || b.Dropped() != 0 {
		t.Errorf("after acks: Len %d InFlight %d Dropped %d", b.Len(), b.InFlight(), b.Dropped())
	}
	if b.NextSeq() != 4 {
		t.Errorf("NextSeq = %d, want 4", b.NextSeq())
	}
	// The ring wraps around and grows while keeping order.
	for i := 11; i <= 60; i++ {
		b.Add(mk(i))
	}
	want := make([]int, 0, 50)
	for i := 11; i <= 60; i++ {
		want = append(want, i)
	}
	next(t, b, 0, 11) // a limit below 1 counts as 1
	next(t, b, 1000, want[1:]...)
}

func TestBufferDropOldest(t *testing.T) {
	t.Parallel()
	b := newBuf(3, 1)
	for i := 1; i <= 5; i++ {
		b.Add(mk(i))
	}
	if b.Dropped() != 2 || b.Len() != 3 {
		t.Fatalf("Dropped %d Len %d, want 2 3", b.Dropped(), b.Len())
	}
	next(t, b, 10, 3, 4, 5)

	if NewBuffer(0).capacity != 1 || NewBuffer(-5).NextSeq() != 1 {
		t.Error("NewBuffer: capacity not raised to 1 or numbering not starting at 1")
	}
}

func TestBufferRequeueResendsSameBatches(t *testing.T) {
	t.Parallel()
	b := newBuf(100, 41)
	for i := 1; i <= 7; i++ {
		b.Add(mk(i))
	}
	first := next(t, b, 3, 1, 2, 3)
	second := next(t, b, 3, 4, 5, 6)
	if first.Seq != 41 || second.Seq != 42 {
		t.Fatalf("seqs %d %d, want 41 42", first.Seq, second.Seq)
	}
	// The connection drops with both unacknowledged, samples keep coming.
	b.Add(mk(8))
	b.Requeue()
	if b.InFlight() != 0 {
		t.Errorf("InFlight after Requeue = %d", b.InFlight())
	}
	// Same numbers, same samples, whatever the limit now; then new ones.
	again := next(t, b, 1, 1, 2, 3)
	if again.Seq != first.Seq {
		t.Errorf("resent seq %d, want %d", again.Seq, first.Seq)
	}
	again2 := next(t, b, 100, 4, 5, 6)
	if again2.Seq != second.Seq {
		t.Errorf("resent seq %d, want %d", again2.Seq, second.Seq)
	}
	third := next(t, b, 100, 7, 8)
	if third.Seq != 43 {
		t.Errorf("new batch seq %d, want 43", third.Seq)
	}
	none(t, b)

	// Requeue twice in a row is the same as once.
	b.Requeue()
	b.Requeue()
	if got := next(t, b, 100, 1, 2, 3); got.Seq != 41 {
		t.Errorf("seq %d, want 41", got.Seq)
	}

	// Acking a later batch acks the earlier ones too.
	if !b.Ack(42) {
		t.Error("Ack(42) = false")
	}
	if b.Len() != 2 {
		t.Errorf("Len after Ack(42) = %d, want 2", b.Len())
	}
	b.Requeue()
	if got := next(t, b, 100, 7, 8); got.Seq != 43 {
		t.Errorf("seq %d, want 43", got.Seq)
	}
	none(t, b)
}

func TestBufferAckUnknownIsHarmless(t *testing.T) {
	t.Parallel()
	b := newBuf(100, 10)
	for i := 1; i <= 6; i++ {
		b.Add(mk(i))
	}
	next(t, b, 2, 1, 2) // 10
	next(t, b, 2, 3, 4) // 11
	if !b.Ack(10) {
		t.Error("Ack(10) = false")
	}
	for _, seq := range []uint64{0, 3, 9, 10, 12, 13, 1 << 60} {
		// Never handed out, already acked, or in the future.
		if b.Ack(seq) {
			t.Errorf("Ack(%d) = true", seq)
		}
	}
	if b.Len() != 4 || b.InFlight() != 1 {
		t.Fatalf("Len %d InFlight %d, want 4 1", b.Len(), b.InFlight())
	}
	b.Requeue()
	if got := next(t, b, 100, 3, 4); got.Seq != 11 {
		t.Errorf("seq %d, want 11", got.Seq)
	}
	if got := next(t, b, 100, 5, 6); got.Seq != 12 {
		t.Errorf("seq %d, want 12", got.Seq)
	}
}

// TestBufferDropWhileInFlight: dropping the oldest sample of a full buffer
// drops its whole batch; a resend never carries a number with other
// samples, and the dropped number is never used again.
func TestBufferDropWhileInFlight(t *testing.T) {
	t.Parallel()
	b := newBuf(4, 1)
	for i := 1; i <= 4; i++ {
		b.Add(mk(i))
	}
	one := next(t, b, 2, 1, 2)
	two := next(t, b, 2, 3, 4)
	b.Add(mk(5)) // full: batch one goes, both its samples counted
	if b.Dropped() != 2 || b.Len() != 3 || b.InFlight() != 1 {
		t.Fatalf("Dropped %d Len %d InFlight %d, want 2 3 1", b.Dropped(), b.Len(), b.InFlight())
	}
	if b.Ack(one.Seq) { // late ack of the dropped batch: harmless
		t.Error("Ack of a dropped batch = true")
	}
	if b.Len() != 3 {
		t.Fatalf("Len after acking a dropped batch = %d, want 3", b.Len())
	}
	b.Requeue()
	if got := next(t, b, 10, 3, 4); got.Seq != two.Seq {
		t.Errorf("resent seq %d, want %d", got.Seq, two.Seq)
	}
	three := next(t, b, 10, 5)
	if three.Seq != 3 {
		t.Errorf("new batch seq %d, want 3", three.Seq)
	}

	// A batch waiting for resend (after Requeue) can be dropped too.
	b.Requeue()
	b.Add(mk(6))
	b.Add(mk(7)) // full (3, 4, 5, 6): batch two goes
	if b.Dropped() != 4 {
		t.Errorf("Dropped = %d, want 4", b.Dropped())
	}
	if got := next(t, b, 10, 5); got.Seq != 3 {
		t.Errorf("seq %d, want 3", got.Seq)
	}
	if got := next(t, b, 10, 6, 7); got.Seq != 4 {
		t.Errorf("seq %d, want 4", got.Seq)
	}

	// One batch larger than the buffer's room: it goes as a whole.
	c := newBuf(3, 1)
	for i := 1; i <= 3; i++ {
		c.Add(mk(i))
	}
	next(t, c, 10, 1, 2, 3)
	c.Add(mk(4))
	if c.Dropped() != 3 || c.Len() != 1 {
		t.Errorf("Dropped %d Len %d, want 3 1", c.Dropped(), c.Len())
	}
	if got := next(t, c, 10, 4); got.Seq != 2 {
		t.Errorf("seq %d, want 2", got.Seq)
	}
}

func TestBufferSeqStrictlyIncreasing(t *testing.T) {
	t.Parallel()
	b := NewBuffer(50) // numbering starts at 1
	var last uint64
	id := 0
	for round := range 2000 {
		for range round%7 + 1 {
			id++
			b.Add(mk(id))
		}
		batch, ok := b.NextBatch(round%5 + 1)
		if !ok {
			t.Fatalf("round %d: nothing to send", round)
		}
		if batch.Seq <= last {
			t.Fatalf("round %d: seq %d after %d", round, batch.Seq, last)
		}
		last = batch.Seq
		switch round % 4 {
		case 0:
			b.Ack(batch.Seq)
		case 1: // leave in flight; some will be dropped for room
		case 2:
			b.Requeue()
			// Resends keep their numbers; drain them without checking.
			for {
				again, ok := b.NextBatch(1)
				if !ok || again.Seq > last {
					if ok {
						last = again.Seq
					}
					break
				}
			}
		}
	}
	if last < 2000 {
		t.Errorf("last seq %d, want at least 2000", last)
	}
}

func TestBufferSetNextSeq(t *testing.T) {
	t.Parallel()
	b := newBuf(100, 5)
	b.Add(mk(1))
	b.Add(mk(2))
	pending := next(t, b, 1, 1) // seq 5
	if pending.Seq != 5 {
		t.Fatalf("seq %d, want 5", pending.Seq)
	}
	// The controller says it committed up to 99.
	b.SetNextSeq(100)
	if got := next(t, b, 1, 2); got.Seq != 100 {
		t.Errorf("seq after SetNextSeq(100) = %d, want 100", got.Seq)
	}
	// Never lowered.
	b.SetNextSeq(3)
	if b.NextSeq() != 101 {
		t.Errorf("NextSeq = %d, want 101", b.NextSeq())
	}
	// Batches already cut keep their number.
	b.Requeue()
	if got := next(t, b, 1, 1); got.Seq != 5 {
		t.Errorf("resent seq %d, want 5", got.Seq)
	}
}

// TestBufferConcurrent: a producer, a sender, an acker and reconnects
// (Requeue) at once; run with -race. A number always carries the same
// samples, samples are acknowledged in order and at most once, and every
// sample is either acknowledged or counted as dropped.
func TestBufferConcurrent(t *testing.T) {
	t.Parallel()
	const total = 20000
	b := newBuf(300, 1)
	batches := make(chan Batch, 16)
	produced := make(chan struct{})
	var wg sync.WaitGroup

	wg.Add(3)
	go func() { // producer
		defer wg.Done()
		defer close(produced)
		for i := 1; i <= total; i++ {
			b.Add(mk(i))
			if i%1000 == 0 {
				runtime.Gosched()
			}
		}
	}()
	go func() { // reconnects
		defer wg.Done()
		for {
			select {
			case <-produced:
				return
			default:
				b.Requeue()
				runtime.Gosched()
			}
		}
	}()
	go func() { // sender
		defer wg.Done()
		defer close(batches)
		for {
			if batch, ok := b.NextBatch(16); ok {
				batches <- batch
				continue
			}
			select {
			case <-produced:
				if b.Len() == 0 {
					return
				}
				b.Requeue() // in flight but never acked: send again
			default:
			}
			runtime.Gosched()
		}
	}()

	seen := make(map[uint64][]int)
	var lastSeq uint64
	lastID, delivered := 0, 0
	for batch := range batches {
		got := ids(batch.Samples)
		if first, ok := seen[batch.Seq]; ok {
			if !equalInts(first, got) {
				t.Fatalf("seq %d resent as %v, first sent as %v", batch.Seq, got, first)
			}
		} else {
			if batch.Seq <= lastSeq {
				t.Fatalf("new seq %d after %d", batch.Seq, lastSeq)
			}
			lastSeq = batch.Seq
			seen[batch.Seq] = got
			for _, id := range got {
				if id <= lastID {
					t.Fatalf("sample %d after %d", id, lastID)
				}
				lastID = id
			}
			delivered += len(got)
		}
		b.Ack(batch.Seq)
		_ = b.Dropped()
	}
	wg.Wait()
	if b.Len() != 0 || b.InFlight() != 0 {
		t.Errorf("left: Len %d InFlight %d", b.Len(), b.InFlight())
	}
	// A batch dropped while in flight may have been delivered too, so the
	// two can overlap, but nothing is unaccounted for.
	if delivered > total || uint64(delivered)+b.Dropped() < total {
		t.Errorf("delivered %d, dropped %d, of %d", delivered, b.Dropped(), total)
	}
	t.Logf("delivered %d, dropped %d, %d batches", delivered, b.Dropped(), len(seen))
}
