package client

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/berthhq/berth/agent/internal/supervise"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// Bounds of the app log requests one stream serves.
const (
	// maxLogRequests bounds the requests served at once; more are refused.
	maxLogRequests = 16
	// maxQueuedChunks bounds what one request may have waiting for the
	// stream: a request whose chunks the stream cannot take as fast as the
	// logs come (a controller or link too slow for a busy app) is ended
	// rather than let grow, and never holds up job events.
	maxQueuedChunks = 64
	// maxQueuedBytes bounds the same queue by size: log lines may be long
	// (16 KiB), and 16 requests must not hold much of a small server.
	maxQueuedBytes = 4 << 20
	// maxLogChunkBytes bounds one LogsChunk well under gRPC's 4 MiB
	// message limit; the manager's batches (up to 500 lines) are split.
	maxLogChunkBytes = 256 << 10
	// maxChunksPerTurn is how many log chunks the stream's sender sends
	// before it looks at job events and metrics again.
	maxChunksPerTurn = 32
	maxRequestIDLen  = 128
)

// slowGrace is how long a request whose queue is full waits for the
// stream to take some before it ends "too slow" (a var for tests).
var slowGrace = 5 * time.Second

// Reasons a log request ends early, as LogsChunk.error says them.
const (
	errTextTooSlow  = "too slow"
	errTextTooMany  = "too many log requests on this agent"
	errTextNoProcs  = "this agent does not supervise app processes"
	errTextBadInput = "malformed log request"
)

// errCanceledByController is a request the controller canceled.
var errCanceledByController = errors.New("canceled by the controller")

// errTooSlow is what a request's send returns once its queue overflowed.
var errTooSlow = errors.New(errTextTooSlow)

// logStreams serves one stream's app log requests: each runs
// Manager.Logs in its own goroutine and queues its chunks; the stream's
// single sender takes them with next, a few at a time, between job events.
type logStreams struct {
	mgr  *supervise.Manager
	log  *slog.Logger
	ctx  context.Context // the stream's: every request ends with it
	wake chan struct{}   // cap 1: chunks are waiting

	mu   sync.Mutex
	reqs map[string]*logRequest
	// order is the requests in arrival order, for round-robin sending;
	// refused requests have only their end chunk.
	order   []*logRequest
	refused []*agentv1.LogsChunk
}

type logRequest struct {
	id     string
	cancel context.CancelCauseFunc
	ctx    context.Context
	queue  []*agentv1.LogsChunk
	bytes  int           // the queue's size, by lineSize
	space  chan struct{} // cap 1: the sender took some of the queue
	ended  bool          // the end chunk is queued: nothing more is added
}

func newLogRequest(ctx context.Context, id string, cancel context.CancelCauseFunc) *logRequest {
	return &logRequest{id: id, ctx: ctx, cancel: cancel, space: make(chan struct{}, 1)}
}

// lineSize is about what a line costs on the wire.
func lineSize(l *agentv1.LogLine) int {
	return len(l.GetText()) + len(l.GetProcess()) + len(l.GetStream()) + 32
}

func chunkSize(c *agentv1.LogsChunk) int {
	n := 0
	for _, l := range c.GetLines() {
		n += lineSize(l)
	}
	return n
}

func newLogStreams(ctx context.Context, mgr *supervise.Manager, log *slog.Logger) *logStreams {
	return &logStreams{mgr: mgr, log: log, ctx: ctx, wake: make(chan struct{}, 1), reqs: map[string]*logRequest{}}
}

func (ls *logStreams) poke() {
	select {
	case ls.wake <- struct{}{}:
	default:
	}
}

// start begins serving req, or refuses it with an end chunk saying why.
func (ls *logStreams) start(req *agentv1.LogsRequest) {
	id := req.GetRequestId()
	if id == "" || len(id) > maxRequestIDLen {
		// Nothing to answer to: a chunk must name its request.
		ls.log.Warn("log request without a usable request id", "len", len(id))
		return
	}
	refuse := func(msg string) {
		ls.mu.Lock()
		ls.refused = append(ls.refused, &agentv1.LogsChunk{RequestId: id, End: true, Error: msg})
		ls.mu.Unlock()
		ls.poke()
	}
	if req.GetAppId() == "" {
		refuse(errTextBadInput + ": no app id")
		return
	}
	if ls.mgr == nil {
		refuse(errTextNoProcs)
		return
	}
	ls.mu.Lock()
	if _, dup := ls.reqs[id]; dup {
		ls.mu.Unlock()
		// Its answer would mix with the running request's.
		ls.log.Warn("log request id already in use; ignored", "request", id)
		return
	}
	if len(ls.reqs) >= maxLogRequests {
		ls.mu.Unlock()
		refuse(errTextTooMany)
		return
	}
	ctx, cancel := context.WithCancelCause(ls.ctx)
	r := newLogRequest(ctx, id, cancel)
	ls.reqs[id] = r
	ls.order = append(ls.order, r)
	ls.mu.Unlock()
	go func() {
		err := ls.mgr.Logs(ctx, req, func(lines []*agentv1.LogLine) error { return ls.push(r, lines) })
		cause := context.Cause(ctx)
		cancel(nil)
		switch {
		case errors.Is(cause, errTooSlow):
			// Ended by push already.
		case ls.ctx.Err() != nil:
			// The stream is gone: nobody to tell.
		case errors.Is(cause, errCanceledByController):
			ls.end(r, "")
		case err != nil && !errors.Is(err, context.Canceled):
			ls.end(r, err.Error())
		default:
			ls.end(r, "")
		}
	}()
}

// push queues lines for r; past the bound, r ends with "too slow" and
// its Logs call is told to stop.
func (ls *logStreams) push(r *logRequest, lines []*agentv1.LogLine) error {
	if len(lines) == 0 {
		return nil
	}
	ls.mu.Lock()
	if r.ended {
		ls.mu.Unlock()
		return errTooSlow
	}
	for len(lines) > 0 {
		// At least one line per chunk; a line is at most 16 KiB.
		n, size := 1, lineSize(lines[0])
		for n < len(lines) && size+lineSize(lines[n]) <= maxLogChunkBytes {
			size += lineSize(lines[n])
			n++
		}
		full := func() bool { return len(r.queue) >= maxQueuedChunks || r.bytes+size > maxQueuedBytes }
		if full() {
			// A burst (a long tail) gets a moment for the stream to take
			// some; only this request's goroutine waits, never the stream.
			ls.mu.Unlock()
			ls.poke()
			wait := time.NewTimer(slowGrace)
			for waited := false; !waited; {
				select {
				case <-r.space:
					ls.mu.Lock()
					if !full() {
						waited = true
						continue
					}
					ls.mu.Unlock()
				case <-wait.C:
					ls.mu.Lock()
					waited = true
				case <-r.ctx.Done():
					wait.Stop()
					return context.Cause(r.ctx)
				}
			}
			wait.Stop()
		}
		if r.ended {
			ls.mu.Unlock()
			return errTooSlow
		}
		if full() {
			// One chunk past the bound: the end, so the controller
			// learns why.
			r.queue = append(r.queue, &agentv1.LogsChunk{RequestId: r.id, End: true, Error: errTextTooSlow})
			r.ended = true
			ls.mu.Unlock()
			r.cancel(errTooSlow)
			ls.poke()
			return errTooSlow
		}
		r.queue = append(r.queue, &agentv1.LogsChunk{RequestId: r.id, Lines: lines[:n:n]})
		r.bytes += size
		lines = lines[n:]
	}
	ls.mu.Unlock()
	ls.poke()
	return nil
}

// end queues r's last chunk.
func (ls *logStreams) end(r *logRequest, errText string) {
	ls.mu.Lock()
	if !r.ended {
		r.queue = append(r.queue, &agentv1.LogsChunk{RequestId: r.id, End: true, Error: errText})
		r.ended = true
	}
	ls.mu.Unlock()
	ls.poke()
}

// cancel ends the request the controller no longer wants.
func (ls *logStreams) cancel(id string) {
	ls.mu.Lock()
	r, ok := ls.reqs[id]
	ls.mu.Unlock()
	if ok {
		r.cancel(errCanceledByController)
	}
}

// next takes up to max chunks to send, one per request in turn, and
// reports whether more are waiting. A request is forgotten (its slot
// freed) once its end chunk is taken.
func (ls *logStreams) next(max int) (out []*agentv1.LogsChunk, more bool) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	n := min(len(ls.refused), max)
	out = append(out, ls.refused[:n]...)
	ls.refused = ls.refused[n:]
	for len(out) < max {
		took := false
		for _, r := range ls.order {
			if len(out) >= max {
				break
			}
			if len(r.queue) == 0 {
				continue
			}
			c := r.queue[0]
			r.queue = r.queue[1:]
			r.bytes -= chunkSize(c)
			select {
			case r.space <- struct{}{}:
			default:
			}
			out = append(out, c)
			took = true
			if c.GetEnd() {
				delete(ls.reqs, r.id)
			}
		}
		if !took {
			break
		}
	}
	live := ls.order[:0]
	for _, r := range ls.order {
		if _, ok := ls.reqs[r.id]; ok && ls.reqs[r.id] == r {
			live = append(live, r)
		}
		more = more || len(r.queue) > 0
	}
	clear(ls.order[len(live):])
	ls.order = live
	return out, more || len(ls.refused) > 0
}

// active is how many requests hold a slot (tests).
func (ls *logStreams) active() int {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return len(ls.reqs)
}
