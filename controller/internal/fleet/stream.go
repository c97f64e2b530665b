package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/notify"
	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// Stream limits: a batch holds at most this many samples, and an agent
// cannot send samples dated far from the controller's clock (they would land
// outside every partition and jam its buffer).
const (
	MaxBatchSamples = 500
	maxClockSkew    = 10 * time.Minute
	helloTimeout    = 15 * time.Second
	// Up to recvQueue job events (64 KiB of output at most each) wait for
	// the handler; up to maxJobBatch of them are stored in one transaction
	// (each batch queues about one ack per job, well within sendQueue).
	recvQueue   = 32
	maxJobBatch = 32
)

// ErrProtocol marks a misbehaving agent (wrong first message, bad batch).
var ErrProtocol = errors.New("protocol violation")

type connectStream = grpc.BidiStreamingServer[agentv1.ConnectRequest, agentv1.ConnectResponse]

// Serve runs one agent's stream until it ends or is cut.
func (s *Service) Serve(stream connectStream, ag *auth.Agent, peer Peer) error {
	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)

	first, err := recvWithin(stream, helloTimeout)
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return fmt.Errorf("%w: the first message must be hello", ErrProtocol)
	}
	var srv store.Server
	var prev store.ServerStatus
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		var err error
		if srv, prev, err = tx.ServerHello(ctx, ag.ServerID, factsOf(hello.GetFacts()), peer.IP); err != nil {
			return err
		}
		if prev == store.ServerOffline {
			// Back from offline closes server.offline; a first hello
			// after enrollment (pending) is not news.
			s.publishServer(ctx, tx, notify.KindServerOnline, srv)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if prev != store.ServerOnline {
		s.log.Info("server online", "server", srv.Name, "peer", peer.String())
	}
	if hh, ok := s.jobHandler().(HelloHandler); ok {
		if err := hh.AgentHello(ctx, ag.ServerID, hello); err != nil {
			return err
		}
	}

	c := &conn{serverID: ag.ServerID, serial: ag.Serial, out: make(chan *agentv1.ConnectResponse, sendQueue), cancel: cancel, dropped: hello.GetMetricsDropped()}
	s.hub.register(c)
	defer s.hub.unregister(c)
	defer s.endLogs(c)

	if err := s.sendWelcome(stream, ag, srv); err != nil {
		return err
	}
	// One goroutine owns Send; the handler's goroutine owns Recv. A handler
	// returning ends the stream, which unblocks both.
	sendErr := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				sendErr <- fmt.Errorf("send loop panic: %v", r)
			}
		}()
		for {
			select {
			case <-ctx.Done():
				sendErr <- nil
				return
			case m := <-c.out:
				if err := stream.Send(m); err != nil {
					sendErr <- err
					return
				}
			}
		}
	}()

	// Jobs after the welcome, with the send loop draining the queue:
	// re-send the server's unfinished ones.
	if h := s.jobHandler(); h != nil {
		go h.AgentConnected(ctx, c.serverID)
	}

	// One goroutine receives, another handles: job events that arrive
	// while earlier ones are being stored queue up here and are stored
	// together (see handleJobEvents). Anything else is handled before the
	// next receive, as if there were one goroutine: metrics batches are
	// large, and an agent whose batches wait must feel gRPC's flow
	// control, not fill the controller's memory.
	recvErr := make(chan error, 2)
	in := make(chan *agentv1.ConnectRequest, recvQueue)
	handled := make(chan struct{})
	go func() {
		defer close(in)
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case in <- m:
			case <-ctx.Done():
				return
			}
			if !isJobEvent(m) {
				select {
				case <-handled:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	go func() {
		var next *agentv1.ConnectRequest
		for {
			m := next
			next = nil
			if m == nil {
				var ok bool
				if m, ok = <-in; !ok {
					return
				}
			}
			var err error
			if isJobEvent(m) {
				batch := []*agentv1.ConnectRequest{m}
			more:
				for len(batch) < maxJobBatch {
					select {
					case n, ok := <-in:
						if !ok {
							break more
						}
						if !isJobEvent(n) {
							next = n // handled after the batch, keeping the order
							break more
						}
						batch = append(batch, n)
					default:
						break more
					}
				}
				err = s.handleJobEvents(ctx, c, batch)
			} else {
				err = s.handle(ctx, c, peer, m)
				if err == nil {
					handled <- struct{}{} // the receiver waits for this
				}
			}
			if err != nil {
				recvErr <- err
				cancel(err)
				return
			}
		}
	}()

	select {
	case err := <-recvErr:
		return err
	case err := <-sendErr:
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			return cause
		}
		return err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (s *Service) sendWelcome(stream connectStream, ag *auth.Agent, srv store.Server) error {
	return stream.Send(&agentv1.ConnectResponse{Msg: &agentv1.ConnectResponse_Welcome{Welcome: &agentv1.Welcome{
		ServerId: ag.ServerID.String(), LastMetricsSeq: uint64(srv.MetricsSeq), Config: s.agentConfig(),
	}}})
}

func (s *Service) agentConfig() *agentv1.Config {
	return &agentv1.Config{
		HeartbeatInterval: durationpb.New(s.cfg.HeartbeatInterval),
		MetricsInterval:   durationpb.New(s.cfg.MetricsInterval),
		MetricsBatchMax:   MaxBatchSamples,
	}
}

func recvWithin(stream connectStream, d time.Duration) (*agentv1.ConnectRequest, error) {
	type res struct {
		m   *agentv1.ConnectRequest
		err error
	}
	ch := make(chan res, 1)
	go func() {
		m, err := stream.Recv()
		ch <- res{m, err}
	}()
	select {
	case r := <-ch:
		return r.m, r.err
	case <-time.After(d):
		return nil, fmt.Errorf("%w: no hello within %s", ErrProtocol, d)
	}
}

// handle applies one message that is not a job event (those go to
// handleJobEvents, in runs).
func (s *Service) handle(ctx context.Context, c *conn, peer Peer, m *agentv1.ConnectRequest) error {
	switch msg := m.Msg.(type) {
	case *agentv1.ConnectRequest_Heartbeat:
		// Batched: FlushHeartbeats writes them every few seconds.
		s.seen.add(c.serverID, s.cfg.Now())
		if p := msg.Heartbeat.GetProcesses(); p != nil {
			s.processReport(ctx, c, p)
		}
	case *agentv1.ConnectRequest_ProcessReport:
		s.processReport(ctx, c, msg.ProcessReport)
	case *agentv1.ConnectRequest_LogsChunk:
		s.relayLogs(c, msg.LogsChunk)
	case *agentv1.ConnectRequest_Metrics:
		if d := msg.Metrics.GetDroppedTotal(); d > c.dropped {
			// Only the receive goroutine touches c.dropped.
			s.log.Warn("agent dropped metrics samples from a full buffer", "server_id", c.serverID.String(), "dropped_total", d, "new", d-c.dropped)
			c.dropped = d
		}
		dup, cols, err := s.ingestBatch(ctx, c.serverID, msg.Metrics)
		if err != nil {
			return err
		}
		if err := s.queue(c, &agentv1.ConnectResponse{Msg: &agentv1.ConnectResponse_MetricsAck{MetricsAck: &agentv1.MetricsAck{Seq: msg.Metrics.GetSeq(), Duplicate: dup}}}); err != nil {
			return err
		}
		// After the ack is on its way: evaluation adds nothing to the
		// agent's wait. A replay was evaluated when it was first stored.
		if o := s.metricsObserver(); o != nil && !dup {
			o.ObserveMetrics(c.serverID, cols)
		}
	case *agentv1.ConnectRequest_Renew:
		der, err := s.renew(ctx, c, msg.Renew.GetCsrDer(), peer)
		if err != nil {
			return err
		}
		return s.queue(c, &agentv1.ConnectResponse{Msg: &agentv1.ConnectResponse_Renew{Renew: &agentv1.RenewResponse{CertificateDer: der}}})
	case *agentv1.ConnectRequest_Hello:
		return fmt.Errorf("%w: hello sent twice", ErrProtocol)
	default:
		return fmt.Errorf("%w: unknown message", ErrProtocol)
	}
	return nil
}

func isJobEvent(m *agentv1.ConnectRequest) bool {
	switch m.Msg.(type) {
	case *agentv1.ConnectRequest_JobOutput, *agentv1.ConnectRequest_JobProgress, *agentv1.ConnectRequest_JobResult:
		return true
	}
	return false
}

// handleJobEvents stores a run of job events and queues their acks.
func (s *Service) handleJobEvents(ctx context.Context, c *conn, batch []*agentv1.ConnectRequest) error {
	h := s.jobHandler()
	if h == nil {
		return nil // no jobs here: the agent re-sends after a reconnect
	}
	acks, err := h.JobEvents(ctx, c.serverID, batch)
	if err != nil {
		return err
	}
	for _, a := range acks {
		if err := s.queue(c, &agentv1.ConnectResponse{Msg: &agentv1.ConnectResponse_JobAck{JobAck: a}}); err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) queue(c *conn, m *agentv1.ConnectResponse) error {
	select {
	case c.out <- m:
		return nil
	default:
		return ErrSlowAgent
	}
}

// ingestBatch stores a batch exactly once (group-committed with other
// agents' batches) and reports whether it was a replay.
func (s *Service) ingestBatch(ctx context.Context, serverID store.ID, b *agentv1.MetricsBatch) (bool, *store.MetricColumns, error) {
	if b.GetSeq() == 0 || b.GetSeq() > 1<<62 {
		return false, nil, fmt.Errorf("%w: batch sequence %d", ErrProtocol, b.GetSeq())
	}
	cols, err := columnsOf(b.GetColumns(), s.cfg.Now())
	if err != nil {
		return false, nil, err
	}
	dup, err := s.ingest.submit(ctx, store.MetricsBatch{ServerID: serverID, Seq: int64(b.GetSeq()), Columns: cols})
	return dup, cols, err
}

// maxMountBytes cuts mount points longer than this.
const maxMountBytes = 4096

// columnsOf checks a batch's columns and hands them to the store as they
// are: no sample is copied between the wire and COPY. Samples from a
// wildly wrong clock, or older than retention, have no partition: they are
// skipped rather than jam the agent's buffer forever.
func columnsOf(c *agentv1.MetricColumns, now time.Time) (*store.MetricColumns, error) {
	if n := len(c.GetRecordedAtUnixMicros()); n > MaxBatchSamples {
		return nil, fmt.Errorf("%w: %d samples in one batch (max %d)", ErrProtocol, n, MaxBatchSamples)
	}
	out := &store.MetricColumns{
		RecordedAt: c.GetRecordedAtUnixMicros(),
		CPUPercent: c.GetCpuPercent(), Load1: c.GetLoad1(), Load5: c.GetLoad5(), Load15: c.GetLoad15(),
		MemUsed: c.GetMemUsedBytes(), MemTotal: c.GetMemTotalBytes(), SwapUsed: c.GetSwapUsedBytes(),
		SwapTotal: c.GetSwapTotalBytes(), DiskUsed: c.GetDiskUsedBytes(), DiskTotal: c.GetDiskTotalBytes(),
		HasRates:    c.GetHasRates(),
		DiskReadBps: c.GetDiskReadBps(), DiskWriteBps: c.GetDiskWriteBps(), NetRxBps: c.GetNetRxBps(), NetTxBps: c.GetNetTxBps(),
		DiskCount: c.GetDiskCount(), FSMount: c.GetDiskMount(), FSUsed: c.GetDiskUsed(), FSTotal: c.GetDiskTotal(),
		DiskAvail: c.GetDiskAvailBytes(), InodesTotal: c.GetDiskInodesTotalCount(), InodesFree: c.GetDiskInodesFreeCount(),
		FSAvail: c.GetDiskAvail(), FSInodesTotal: c.GetDiskInodesTotal(), FSInodesFree: c.GetDiskInodesFree(),
		Mounts:    make([][]byte, len(c.GetMounts())),
		NotBefore: now.Add(-7*24*time.Hour + time.Hour), NotAfter: now.Add(maxClockSkew),
	}
	for i, m := range c.GetMounts() {
		out.Mounts[i], _ = json.Marshal(truncate(m, maxMountBytes))
	}
	if err := out.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	return out, nil
}
