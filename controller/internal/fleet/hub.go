package fleet

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// sendQueue bounds what waits for one agent. A slow agent fills its own
// queue and is disconnected; it never blocks the controller or other agents.
const sendQueue = 64

// ErrSlowAgent is returned by Send when an agent's queue is full.
var ErrSlowAgent = errors.New("agent send queue full")

// ErrNotConnected is returned by Send for an agent with no live stream here.
var ErrNotConnected = errors.New("agent not connected to this controller")

// Errors a stream ends with, as context causes.
var (
	ErrReplaced = errors.New("replaced by a newer connection from the same server")
	ErrRevoked  = errors.New("server removed, disabled or certificate revoked")
)

// conn is one agent's live stream.
type conn struct {
	serverID store.ID
	serial   string
	out      chan *agentv1.ConnectResponse
	cancel   context.CancelCauseFunc
	dropped  uint64 // samples the agent reported dropped from a full buffer
	reports  reportState
}

// Hub tracks the agents connected to this controller, at most one stream per
// server: a reconnect replaces the older stream (as Nomad keeps the newest
// connection per node), and unregistering removes only that exact stream.
type Hub struct {
	mu    sync.Mutex
	conns map[store.ID]*conn
	jobs  JobHandler
	// observer: see SetMetricsObserver.
	observer atomic.Pointer[MetricsObserver]
}

// NewHub returns an empty hub.
func NewHub() *Hub { return &Hub{conns: make(map[store.ID]*conn)} }

func (h *Hub) register(c *conn) {
	h.mu.Lock()
	old := h.conns[c.serverID]
	h.conns[c.serverID] = c
	h.mu.Unlock()
	if old != nil {
		old.cancel(ErrReplaced)
	}
}

func (h *Hub) unregister(c *conn) {
	h.mu.Lock()
	if h.conns[c.serverID] == c {
		delete(h.conns, c.serverID)
	}
	h.mu.Unlock()
}

// Send queues msg for a server's agent without blocking.
func (h *Hub) Send(serverID store.ID, msg *agentv1.ConnectResponse) error {
	h.mu.Lock()
	c := h.conns[serverID]
	h.mu.Unlock()
	if c == nil {
		return ErrNotConnected
	}
	select {
	case c.out <- msg:
		return nil
	default:
		c.cancel(ErrSlowAgent)
		return ErrSlowAgent
	}
}

// Cut ends a server's stream at once (removed, disabled, revoked).
func (h *Hub) Cut(serverID store.ID, cause error) bool {
	h.mu.Lock()
	c := h.conns[serverID]
	h.mu.Unlock()
	if c == nil {
		return false
	}
	c.cancel(cause)
	return true
}

// CutSerial ends a server's stream if it uses the certificate serial.
func (h *Hub) CutSerial(serverID store.ID, serial string, cause error) bool {
	h.mu.Lock()
	c := h.conns[serverID]
	h.mu.Unlock()
	if c == nil || c.serial != serial {
		return false
	}
	c.cancel(cause)
	return true
}

// Holds says whether the server's agent has its live stream here.
func (h *Hub) Holds(serverID store.ID) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.conns[serverID] != nil
}

// Connected lists the servers with a live stream here.
func (h *Hub) Connected() []store.ID {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]store.ID, 0, len(h.conns))
	for id := range h.conns {
		out = append(out, id)
	}
	return out
}

// Serial returns the certificate serial of a server's live stream.
func (h *Hub) Serial(serverID store.ID) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.conns[serverID]
	if c == nil {
		return "", false
	}
	return c.serial, true
}

// Count is how many agents are connected here.
func (h *Hub) Count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns)
}

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }

// JobHandler is the deploys service as the agent streams see it: job events
// go to it, and it re-sends unfinished jobs when an agent connects.
type JobHandler interface {
	// AgentConnected runs once per stream, after the welcome.
	AgentConnected(ctx context.Context, serverID store.ID)
	// JobEvents stores a run of numbered job events, in order, and
	// returns the acks to send. An error ends the stream.
	JobEvents(ctx context.Context, serverID store.ID, msgs []*agentv1.ConnectRequest) ([]*agentv1.JobAck, error)
}

// HelloHandler is a JobHandler that also reads each stream's hello before
// the stream counts as connected (the backups service stores the runs an
// agent made from its held schedules there, so no controller runs those
// ticks again). An error refuses the stream.
type HelloHandler interface {
	AgentHello(ctx context.Context, serverID store.ID, hello *agentv1.Hello) error
}

// SetJobHandler routes job messages (set once, before serving).
func (s *Service) SetJobHandler(h JobHandler) {
	s.hub.mu.Lock()
	s.hub.jobs = h
	s.hub.mu.Unlock()
}

func (s *Service) jobHandler() JobHandler {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return s.hub.jobs
}

// MetricsObserver sees every metrics batch once it is stored (threshold
// alerts evaluate it). It is called on the agent's stream after the ack is
// queued and must not block on the database.
type MetricsObserver interface {
	ObserveMetrics(serverID store.ID, cols *store.MetricColumns)
}

// SetMetricsObserver installs the observer (the daemon wires the alert
// engine).
func (s *Service) SetMetricsObserver(o MetricsObserver) {
	s.hub.observer.Store(&o)
}

// metricsObserver is read on every batch: an atomic load, not the hub's
// lock.
func (s *Service) metricsObserver() MetricsObserver {
	if o := s.hub.observer.Load(); o != nil {
		return *o
	}
	return nil
}
