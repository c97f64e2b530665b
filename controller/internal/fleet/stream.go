package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/berthhq/berth/controller/internal/auth"
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
	srv, err := s.st.UpdateServerFacts(ctx, ag.ServerID, factsOf(hello.GetFacts()))
	if err != nil {
		return err
	}
	srv, prev, err := s.st.MarkServerSeen(ctx, ag.ServerID, peer.IP)
	if err != nil {
		return err
	}
	if prev != store.ServerOnline {
		s.log.Info("server online", "server", srv.Name, "peer", peer.String())
	}

	c := &conn{serverID: ag.ServerID, serial: ag.Serial, out: make(chan *agentv1.ConnectResponse, sendQueue), cancel: cancel, dropped: hello.GetMetricsDropped()}
	s.hub.register(c)
	defer s.hub.unregister(c)

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

	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			if err := s.handle(ctx, c, peer, m); err != nil {
				recvErr <- err
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

func (s *Service) handle(ctx context.Context, c *conn, peer Peer, m *agentv1.ConnectRequest) error {
	switch msg := m.Msg.(type) {
	case *agentv1.ConnectRequest_Heartbeat:
		// Batched: FlushHeartbeats writes them every few seconds.
		s.seen.add(c.serverID, s.cfg.Now())
	case *agentv1.ConnectRequest_Metrics:
		if d := msg.Metrics.GetDroppedTotal(); d > c.dropped {
			// Only the receive goroutine touches c.dropped.
			s.log.Warn("agent dropped metrics samples from a full buffer", "server_id", c.serverID.String(), "dropped_total", d, "new", d-c.dropped)
			c.dropped = d
		}
		dup, err := s.ingestBatch(ctx, c.serverID, msg.Metrics)
		if err != nil {
			return err
		}
		return s.queue(c, &agentv1.ConnectResponse{Msg: &agentv1.ConnectResponse_MetricsAck{MetricsAck: &agentv1.MetricsAck{Seq: msg.Metrics.GetSeq(), Duplicate: dup}}})
	case *agentv1.ConnectRequest_Renew:
		issued, err := s.ca.SignAgentCSR(msg.Renew.GetCsrDer(), c.serverID, s.cfg.AgentCertTTL)
		if err != nil {
			return fmt.Errorf("%w: renew: %v", ErrProtocol, err)
		}
		if _, err := s.st.RecordAgentCertificate(ctx, store.AgentCertificate{ServerID: c.serverID, Serial: issued.SerialHex, IssuedFor: "renew", NotBefore: issued.NotBefore, NotAfter: issued.NotAfter}); err != nil {
			return err
		}
		s.security(ctx, "certificate.issued", store.SeverityInfo, &c.serverID, nil, peer, map[string]any{"serial": issued.SerialHex, "reason": "renew"})
		return s.queue(c, &agentv1.ConnectResponse{Msg: &agentv1.ConnectResponse_Renew{Renew: &agentv1.RenewResponse{CertificateDer: issued.DER}}})
	case *agentv1.ConnectRequest_JobOutput, *agentv1.ConnectRequest_JobProgress, *agentv1.ConnectRequest_JobResult:
		h := s.jobHandler()
		if h == nil {
			return nil // no jobs here: the agent re-sends after a reconnect
		}
		ack, err := h.JobEvent(ctx, c.serverID, m)
		if err != nil || ack == nil {
			return err
		}
		return s.queue(c, &agentv1.ConnectResponse{Msg: &agentv1.ConnectResponse_JobAck{JobAck: ack}})
	case *agentv1.ConnectRequest_Hello:
		return fmt.Errorf("%w: hello sent twice", ErrProtocol)
	default:
		return fmt.Errorf("%w: unknown message", ErrProtocol)
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
func (s *Service) ingestBatch(ctx context.Context, serverID store.ID, b *agentv1.MetricsBatch) (bool, error) {
	if b.GetSeq() == 0 || b.GetSeq() > 1<<62 {
		return false, fmt.Errorf("%w: batch sequence %d", ErrProtocol, b.GetSeq())
	}
	if len(b.GetSamples()) > MaxBatchSamples {
		return false, fmt.Errorf("%w: %d samples in one batch (max %d)", ErrProtocol, len(b.GetSamples()), MaxBatchSamples)
	}
	now := s.cfg.Now()
	samples := make([]store.MetricSample, 0, len(b.GetSamples()))
	for _, p := range b.GetSamples() {
		t := p.GetRecordedAt().AsTime()
		// Samples from a wildly wrong clock, or older than retention, have no
		// partition: drop them rather than jam the agent's buffer forever.
		if p.GetRecordedAt() == nil || t.After(now.Add(maxClockSkew)) || t.Before(now.Add(-7*24*time.Hour+time.Hour)) {
			continue
		}
		samples = append(samples, sampleOf(serverID, p))
	}
	return s.ingest.submit(ctx, store.MetricsBatch{ServerID: serverID, Seq: int64(b.GetSeq()), Samples: samples})
}

func sampleOf(serverID store.ID, p *agentv1.MetricSample) store.MetricSample {
	// One allocation holds every value the sample points at: a backfill
	// converts millions of samples, and ten small allocations each showed.
	v := &struct {
		f [4]float64
		i [6]int64
	}{
		f: [4]float64{p.GetCpuPercent(), p.GetLoad1(), p.GetLoad5(), p.GetLoad15()},
		i: [6]int64{clampI64(p.GetMemUsedBytes()), clampI64(p.GetMemTotalBytes()), clampI64(p.GetSwapUsedBytes()),
			clampI64(p.GetSwapTotalBytes()), clampI64(p.GetDiskUsedBytes()), clampI64(p.GetDiskTotalBytes())},
	}
	m := store.MetricSample{
		ServerID: serverID, RecordedAt: p.GetRecordedAt().AsTime(),
		CPUPercent: &v.f[0], Load1: &v.f[1], Load5: &v.f[2], Load15: &v.f[3],
		MemUsed: &v.i[0], MemTotal: &v.i[1], SwapUsed: &v.i[2], SwapTotal: &v.i[3], DiskUsed: &v.i[4], DiskTotal: &v.i[5],
		DiskReadBps: p.DiskReadBps, DiskWriteBps: p.DiskWriteBps, NetRxBps: p.NetRxBps, NetTxBps: p.NetTxBps,
	}
	if len(p.GetDisks()) > 0 {
		// Hand-encoded: encoding/json's reflection cost per sample showed
		// in backfills too. Mounts are quoted as JSON strings.
		b := make([]byte, 0, 64*min(len(p.GetDisks()), 64))
		b = append(b, '[')
		for i, d := range p.GetDisks() {
			if i == 64 {
				break
			}
			if i > 0 {
				b = append(b, ',')
			}
			mount, _ := json.Marshal(truncate(d.GetMount(), 4096))
			b = append(b, `{"mount":`...)
			b = append(b, mount...)
			b = append(b, `,"used":`...)
			b = strconv.AppendUint(b, d.GetUsedBytes(), 10)
			b = append(b, `,"total":`...)
			b = strconv.AppendUint(b, d.GetTotalBytes(), 10)
			b = append(b, '}')
		}
		m.Disks = append(b, ']')
	}
	return m
}

func clampI64(v uint64) int64 { return int64(min(v, 1<<62)) }
