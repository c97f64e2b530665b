package metrics

import (
	"sync"
	"time"
)

// Defaults for the buffer's size: 24 hours of samples at the default
// interval.
const (
	DefaultRetention = 24 * time.Hour
	DefaultInterval  = 10 * time.Second
)

// CapacityFor is the number of samples that covers retention at one sample
// per interval, rounded up (24h at 10s is 8640). A non-positive retention
// or interval means the default; the result is at least 1.
func CapacityFor(retention, interval time.Duration) int {
	if retention <= 0 {
		retention = DefaultRetention
	}
	if interval <= 0 {
		interval = DefaultInterval
	}
	n := retention / interval
	if retention%interval != 0 {
		n++
	}
	return int(max(n, 1))
}

// Batch is a run of consecutive samples under a sequence number. The same
// Seq always carries the same samples, so the controller can store a batch
// re-sent after a lost ack exactly once by remembering the numbers it has
// committed.
type Batch struct {
	Seq     uint64
	Samples []Sample // read-only: the buffer hands out the same slice on resend
}

// Buffer is a bounded FIFO of samples awaiting the controller's
// acknowledgement. It is safe for concurrent use.
//
// Samples enter with Add. NextBatch cuts the oldest samples not yet in a
// batch into a new batch with the next sequence number; the batch is then
// in flight and stays in the buffer, counted against its capacity, until
// Ack removes it (and every batch before it). After a reconnect, Requeue
// makes NextBatch hand out the unacknowledged batches again, in order, with
// their numbers and samples unchanged, before cutting new ones.
//
// When the buffer is full, Add drops the oldest sample to make room. If
// that sample is part of a batch — batches always hold the oldest samples —
// the whole batch is dropped: a batch is never shrunk, so a number is never
// re-sent with different samples, and the number of a dropped batch is
// never used again (an Ack for it later is harmless). Dropped counts every
// sample removed without an ack, including those of a dropped batch that
// the controller may in fact have stored before its ack was lost.
//
// Sequence numbers grow by one per new batch over the buffer's life and
// never go back; 0 is never used. They start at 1, or where SetNextSeq puts
// them: the agent learns the controller's last committed number at hello
// (or persists NextSeq) so that numbers keep growing across agent restarts.
type Buffer struct {
	mu       sync.Mutex
	capacity int

	// batches are the cut, unacknowledged batches, oldest first, by
	// strictly increasing Seq. batches[:sent] have been handed out since
	// the last Requeue; batches[sent:] are waiting to be sent again.
	batches []Batch
	sent    int
	// inBatches is the number of samples held in batches.
	inBatches int

	// ring holds the samples not yet in a batch, oldest at ring[head]. It
	// grows on demand up to capacity, so an idle agent with a connected
	// controller keeps only a few slots.
	ring []Sample
	head int
	n    int

	nextSeq uint64
	dropped uint64
}

// NewBuffer returns a buffer of at most capacity samples (at least 1).
// Its first batch is numbered 1 unless SetNextSeq says otherwise, which the
// caller does before cutting batches: with the number it persisted, or with
// the controller's last committed number plus one, learnt at hello.
func NewBuffer(capacity int) *Buffer {
	return &Buffer{capacity: max(capacity, 1), nextSeq: 1}
}

// Add appends s, dropping the oldest sample, or the oldest batch, when the
// buffer is full.
func (b *Buffer) Add(s Sample) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.inBatches+b.n >= b.capacity {
		b.dropOldest()
	}
	if b.n == len(b.ring) {
		b.grow()
	}
	b.ring[(b.head+b.n)%len(b.ring)] = s
	b.n++
}

// dropOldest removes the oldest batch if there is one, else the oldest
// sample not yet in a batch.
func (b *Buffer) dropOldest() {
	if len(b.batches) > 0 {
		n := len(b.batches[0].Samples)
		b.removeBatches(1)
		b.dropped += uint64(n)
		return
	}
	b.ring[b.head] = Sample{} // let go of its Disks
	b.head = (b.head + 1) % len(b.ring)
	b.n--
	b.dropped++
}

// grow doubles the ring, up to the capacity.
func (b *Buffer) grow() {
	size := min(max(2*len(b.ring), 16), b.capacity)
	ring := make([]Sample, size)
	for i := range b.n {
		ring[i] = b.ring[(b.head+i)%len(b.ring)]
	}
	b.ring, b.head = ring, 0
}

// removeBatches forgets the k oldest batches.
func (b *Buffer) removeBatches(k int) {
	for i := range k {
		b.inBatches -= len(b.batches[i].Samples)
	}
	// Clear the vacated tail so the backing array lets go of the samples.
	rest := copy(b.batches, b.batches[k:])
	clear(b.batches[rest:])
	b.batches = b.batches[:rest]
	b.sent = max(b.sent-k, 0)
}

// NextBatch returns the next batch to send and marks it in flight: first
// any batch waiting to be re-sent after Requeue (with its original number
// and samples, whatever limit is now), else a new batch of up to limit of the
// oldest samples not yet in a batch (limit below 1 counts as 1), numbered
// with the next sequence number. ok is false when there is nothing to send.
func (b *Buffer) NextBatch(limit int) (batch Batch, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sent < len(b.batches) {
		b.sent++
		return b.batches[b.sent-1], true
	}
	if b.n == 0 {
		return Batch{}, false
	}
	k := min(b.n, max(limit, 1))
	samples := make([]Sample, k)
	for i := range k {
		j := (b.head + i) % len(b.ring)
		samples[i] = b.ring[j]
		b.ring[j] = Sample{}
	}
	b.head = (b.head + k) % len(b.ring)
	b.n -= k
	if b.n == 0 {
		b.head = 0
		if len(b.ring) > 256 {
			b.ring = nil // a backlog was sent: give its memory back
		}
	}
	batch = Batch{Seq: b.nextSeq, Samples: samples}
	b.nextSeq++
	b.batches = append(b.batches, batch)
	b.inBatches += k
	b.sent++
	return batch, true
}

// Ack records that the controller committed batch seq: that batch and
// every earlier one leave the buffer, and Ack reports true. A number that
// is not an unacknowledged batch — never handed out, already acknowledged,
// or dropped for room — changes nothing and reports false. (A sender that
// bounds its window should count with InFlight rather than with Ack's
// answers: one Ack can release several batches, and a batch dropped for
// room is never acknowledged.)
func (b *Buffer) Ack(seq uint64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range b.batches {
		if b.batches[i].Seq == seq {
			b.removeBatches(i + 1)
			return true
		}
	}
	return false
}

// Requeue marks every unacknowledged batch for sending again, after a
// reconnect: NextBatch returns them in order with the same numbers and the
// same samples before any new batch.
func (b *Buffer) Requeue() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sent = 0
}

// SetNextSeq makes sure the next new batch is numbered at least n, e.g.
// the controller's last committed number plus one as learnt at hello. It
// never lowers the number, and never renumbers batches already cut: a batch
// keeps its number for life, which is what makes a resend exactly-once.
func (b *Buffer) SetNextSeq(n uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.nextSeq = max(b.nextSeq, n)
}

// NextSeq is the number the next new batch will get: what the agent
// persists so numbers keep growing across restarts.
func (b *Buffer) NextSeq() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.nextSeq
}

// Dropped is the number of samples dropped for lack of room since the
// buffer was made.
func (b *Buffer) Dropped() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dropped
}

// Len is the number of samples held: in unacknowledged batches and not yet
// in a batch.
func (b *Buffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.inBatches + b.n
}

// InFlight is the number of batches handed out by NextBatch and not yet
// acknowledged (nor waiting to be re-sent after Requeue): a sender can cap
// its window with it.
func (b *Buffer) InFlight() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sent
}
