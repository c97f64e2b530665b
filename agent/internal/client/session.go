package client

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthhq/berth/agent/internal/identity"
	"github.com/berthhq/berth/agent/internal/metrics"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// maxInFlight bounds unacknowledged metrics batches on one stream.
const maxInFlight = 4

type agent struct {
	cfg Config
	log *slog.Logger

	metricsEvery atomic.Int64 // nanoseconds, set by the controller
	samplesTaken atomic.Uint64
	wake         chan struct{}
	retime       chan struct{} // the metrics interval changed
	procsChanged chan struct{} // a process's state changed (cap 1)
	chOnce       sync.Once
}

// reportDebounce is how long a process state change waits for others
// before the report goes up.
const reportDebounce = time.Second

func (a *agent) init() {
	a.chOnce.Do(func() {
		a.wake = make(chan struct{}, 1)
		a.retime = make(chan struct{}, 1)
		a.procsChanged = make(chan struct{}, 1)
	})
}

// processesChanged is the process manager's OnChange: it only marks that
// a report is due, for whichever stream is up.
func (a *agent) processesChanged() {
	select {
	case a.processesChangedCh() <- struct{}{}:
	default:
	}
}

func (a *agent) processesChangedCh() chan struct{} {
	a.init()
	return a.procsChanged
}

// report is every supervised process's state now (nil without a manager).
func (a *agent) report() *agentv1.ProcessReport {
	if a.cfg.Processes == nil {
		return nil
	}
	return a.cfg.Processes.Report()
}

// sendReport sends the process report on its own (not without a manager).
func (a *agent) sendReport(send func(*agentv1.ConnectRequest) error) error {
	r := a.report()
	if r == nil {
		return nil
	}
	return send(&agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_ProcessReport{ProcessReport: r}})
}

func (a *agent) wakeCh() chan struct{} {
	a.init()
	return a.wake
}

// sampleLoop samples on its own clock, connected or not.
func (a *agent) sampleLoop(ctx context.Context) {
	a.init()
	t := time.NewTimer(0)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.retime:
			// Follow a new interval at once instead of after the old one.
			t.Reset(max(time.Until(last.Add(time.Duration(a.metricsEvery.Load()))), 0))
			continue
		case <-t.C:
		}
		last = time.Now()
		s, err := a.cfg.Sampler.Sample(ctx)
		if err != nil {
			a.log.Warn("metrics sample failed", "err", err)
		} else {
			a.cfg.Buffer.Add(s)
			a.samplesTaken.Add(1)
			select {
			case a.wakeCh() <- struct{}{}:
			default:
			}
		}
		t.Reset(time.Duration(a.metricsEvery.Load()))
	}
}

// session is one connection: it returns when the stream ends.
func (a *agent) session(ctx context.Context) error {
	id, err := identity.Load(a.cfg.DataDir)
	if errors.Is(err, identity.ErrNotEnrolled) {
		return errFatal{err}
	}
	if err != nil {
		return errFatal{fmt.Errorf("load identity: %w", err)}
	}
	conn, err := grpc.NewClient(a.cfg.Controller,
		grpc.WithTransportCredentials(credentials.NewTLS(id.ClientTLS())),
		// Must agree with the controller's enforcement policy (MinTime 10s).
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
		// A controller taking a whole fleet back at once handshakes in turn;
		// giving up on the queue after grpc's default 20 s only starts the
		// wait over, and the retried handshake costs both sides again. The
		// controller allows as long (daemon's grpc.ConnectionTimeout).
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.DefaultConfig, MinConnectTimeout: time.Minute}),
	)
	if err != nil {
		return err
	}
	defer conn.Close()

	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ac := agentv1.NewAgentServiceClient(conn)
	stream, err := ac.Connect(sctx)
	if err != nil {
		return err
	}
	if a.cfg.Jobs != nil {
		// Download jobs send objects over this connection while it is up.
		a.cfg.Jobs.objects.set(ac)
		defer a.cfg.Jobs.objects.set(nil)
	}
	hello := &agentv1.Hello{Facts: a.cfg.Facts(), MetricsDropped: a.cfg.Buffer.Dropped()}
	// Held runs go in the hello; until the welcome (or the end of this
	// attempt) the held schedules wait (package held).
	a.cfg.Jobs.heldHello(hello)
	defer a.cfg.Jobs.heldLink(false)
	if err := stream.Send(&agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_Hello{Hello: hello}}); err != nil {
		return recvErr(stream)
	}
	first, err := stream.Recv()
	if err != nil {
		return describe(err)
	}
	welcome := first.GetWelcome()
	if welcome == nil {
		return errors.New("controller did not answer hello with welcome")
	}
	hb := a.applyConfig(welcome.GetConfig())
	batchMax := int(max(welcome.GetConfig().GetMetricsBatchMax(), 1))
	// Number new batches after what the controller has; resend unacked
	// batches with their own numbers so a lost ack never doubles rows.
	a.cfg.Buffer.SetNextSeq(welcome.GetLastMetricsSeq() + 1)
	a.cfg.Buffer.Requeue()
	a.log.Info("connected to controller", "server_id", welcome.GetServerId(), "controller", a.cfg.Controller)
	a.cfg.Jobs.heldLink(true)

	var (
		sent      sentBatches // only used with OnAck
		configCh  = make(chan time.Duration, 1)
		renewedCh = make(chan *agentv1.RenewResponse, 1)
		logs      = newLogStreams(sctx, a.cfg.Processes, a.log)
	)
	// Receiver: acks, config and renewals.
	recvDone := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvDone <- describe(err)
				return
			}
			switch msg := m.Msg.(type) {
			case *agentv1.ConnectResponse_MetricsAck:
				a.cfg.Buffer.Ack(msg.MetricsAck.GetSeq())
				if a.cfg.OnAck != nil {
					a.cfg.OnAck(sent.ack(msg.MetricsAck))
				}
				select {
				case a.wakeCh() <- struct{}{}:
				default:
				}
			case *agentv1.ConnectResponse_Config:
				select {
				case configCh <- a.applyConfig(msg.Config):
				default:
				}
			case *agentv1.ConnectResponse_Renew:
				renewedCh <- msg.Renew
			case *agentv1.ConnectResponse_JobStart, *agentv1.ConnectResponse_JobCancel, *agentv1.ConnectResponse_JobAck,
				*agentv1.ConnectResponse_HeldBackupSchedules, *agentv1.ConnectResponse_HeldRunsAck:
				a.cfg.Jobs.handle(sctx, a.log, m)
			case *agentv1.ConnectResponse_LogsRequest:
				logs.start(msg.LogsRequest)
			case *agentv1.ConnectResponse_LogsCancel:
				logs.cancel(msg.LogsCancel.GetRequestId())
			}
		}
	}()

	send := func(m *agentv1.ConnectRequest) error {
		if err := stream.Send(m); err != nil {
			// gRPC reports the real reason on Recv, which the receiver
			// owns: a second, concurrent Recv could wait forever for the
			// one status the receiver already took. A failed Send means
			// the stream is over, so the receiver's Recv returns at once.
			return <-recvDone
		}
		return nil
	}
	// The controller learns every process's state as soon as it has
	// taken this agent back, then on each change (see processesChanged).
	if err := a.sendReport(send); err != nil {
		return err
	}
	var reportTimer <-chan time.Time // armed while a change waits to be sent
	heartbeat := time.NewTicker(hb)
	defer heartbeat.Stop()
	renewTimer := time.NewTimer(max(time.Until(identity.RenewAt(id.Cert)), 0))
	defer renewTimer.Stop()
	var pendingKey *ecdsa.PrivateKey
	jobsSent := map[string]uint64{} // highest job event sent on this stream

	for {
		// Send batches while the window allows.
		// The buffer's own count: one ack can release several batches, and
		// a batch dropped for room is never acked.
		for a.cfg.Buffer.InFlight() < maxInFlight {
			b, ok := a.cfg.Buffer.NextBatch(batchMax)
			if !ok {
				break
			}
			if a.cfg.OnAck != nil {
				sent.record(b.Seq, len(b.Samples), a.cfg.Now())
			}
			if err := send(&agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_Metrics{Metrics: batchToProto(b, a.cfg.Buffer.Dropped())}}); err != nil {
				return err
			}
		}
		if err := a.cfg.Jobs.flush(send, jobsSent); err != nil {
			return err
		}
		// Log chunks a few at a time, so a busy log never holds job
		// events back; what is left waits for the next turn.
		chunks, more := logs.next(maxChunksPerTurn)
		for _, c := range chunks {
			if err := send(&agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_LogsChunk{LogsChunk: c}}); err != nil {
				return err
			}
		}
		if more {
			logs.poke()
		}
		select {
		case <-ctx.Done():
			_ = stream.CloseSend()
			return ctx.Err()
		case err := <-recvDone:
			return err
		case <-a.cfg.Jobs.wakeCh():
		case <-a.wakeCh():
		case <-logs.wake:
		case <-a.processesChangedCh():
			// Changes come in bursts (a deploy moves several instances):
			// one report a moment later carries them all, and the
			// latest state wins.
			if reportTimer == nil {
				reportTimer = time.After(reportDebounce)
			}
		case <-reportTimer:
			reportTimer = nil
			if err := a.sendReport(send); err != nil {
				return err
			}
		case d := <-configCh:
			heartbeat.Reset(d)
		case <-heartbeat.C:
			if err := send(&agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_Heartbeat{Heartbeat: &agentv1.Heartbeat{SentAt: timestamppb.Now(), Processes: a.report()}}}); err != nil {
				return err
			}
		case <-renewTimer.C:
			key, err := identity.NewKey()
			if err != nil {
				return err
			}
			csr, err := identity.CSR(key, a.cfg.Facts().GetHostname())
			if err != nil {
				return err
			}
			pendingKey = key
			if err := send(&agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_Renew{Renew: &agentv1.RenewRequest{CsrDer: csr}}}); err != nil {
				return err
			}
			renewTimer.Reset(5 * time.Minute) // ask again if no answer comes
		case r := <-renewedCh:
			if pendingKey == nil {
				continue
			}
			if err := a.installRenewed(id, pendingKey, r.GetCertificateDer()); err != nil {
				a.log.Error("renewed certificate rejected", "err", err)
				continue
			}
			a.log.Info("certificate renewed; reconnecting with it")
			_ = stream.CloseSend()
			return errRedial
		}
	}
}

func (a *agent) installRenewed(id *identity.Identity, key *ecdsa.PrivateKey, der []byte) error {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return errors.New("certificate is not for the key we sent")
	}
	pool := x509.NewCertPool()
	pool.AddCert(id.CA)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return err
	}
	return identity.Save(a.cfg.DataDir, key, der, id.CA.Raw)
}

// applyConfig stores the metrics interval and returns the heartbeat interval.
func (a *agent) applyConfig(c *agentv1.Config) time.Duration {
	if d := c.GetMetricsInterval().AsDuration(); d >= time.Second && a.metricsEvery.Swap(int64(d)) != int64(d) {
		a.init()
		select {
		case a.retime <- struct{}{}:
		default:
		}
	}
	if d := c.GetHeartbeatInterval().AsDuration(); d >= time.Second {
		return d
	}
	return 10 * time.Second
}

// recvErr gets the real reason a Send failed: gRPC reports it on Recv.
// Only while no other goroutine receives on the stream.
func recvErr(stream grpc.BidiStreamingClient[agentv1.ConnectRequest, agentv1.ConnectResponse]) error {
	_, err := stream.Recv()
	if err == nil {
		err = errors.New("stream send failed")
	}
	return describe(err)
}

func describe(err error) error {
	if s, ok := status.FromError(err); ok {
		switch s.Code() {
		case codes.Unauthenticated, codes.PermissionDenied:
			return fmt.Errorf("controller refused this agent: %s", s.Message())
		}
	}
	return err
}

// batchToProto lays a batch out column by column (see MetricColumns): a
// few dozen allocations however many samples it holds.
func batchToProto(b metrics.Batch, dropped uint64) *agentv1.MetricsBatch {
	n := len(b.Samples)
	f64 := func() []float64 { return make([]float64, n) }
	u64 := func() []uint64 { return make([]uint64, n) }
	c := &agentv1.MetricColumns{
		RecordedAtUnixMicros: make([]int64, n),
		CpuPercent:           f64(), Load1: f64(), Load5: f64(), Load15: f64(),
		MemUsedBytes: u64(), MemTotalBytes: u64(), SwapUsedBytes: u64(), SwapTotalBytes: u64(),
		DiskUsedBytes: u64(), DiskTotalBytes: u64(),
		DiskAvailBytes: u64(), DiskInodesTotalCount: u64(), DiskInodesFreeCount: u64(),
		HasRates:    make([]bool, n),
		DiskReadBps: f64(), DiskWriteBps: f64(), NetRxBps: f64(), NetTxBps: f64(),
		DiskCount: make([]uint32, n),
	}
	fs := 0
	for _, s := range b.Samples {
		fs += len(s.Disks)
	}
	c.DiskMount, c.DiskUsed, c.DiskTotal = make([]uint32, 0, fs), make([]uint64, 0, fs), make([]uint64, 0, fs)
	c.DiskAvail, c.DiskInodesTotal, c.DiskInodesFree = make([]uint64, 0, fs), make([]uint64, 0, fs), make([]uint64, 0, fs)
	mounts := map[string]uint32{}
	for i, s := range b.Samples {
		c.RecordedAtUnixMicros[i] = s.RecordedAt.UnixMicro()
		c.CpuPercent[i], c.Load1[i], c.Load5[i], c.Load15[i] = s.CPUPercent, s.Load1, s.Load5, s.Load15
		c.MemUsedBytes[i], c.MemTotalBytes[i], c.SwapUsedBytes[i], c.SwapTotalBytes[i] = s.MemUsed, s.MemTotal, s.SwapUsed, s.SwapTotal
		c.DiskUsedBytes[i], c.DiskTotalBytes[i] = s.DiskUsed, s.DiskTotal
		c.DiskAvailBytes[i], c.DiskInodesTotalCount[i], c.DiskInodesFreeCount[i] = s.DiskAvail, s.InodesTotal, s.InodesFree
		c.HasRates[i] = s.HasRates
		c.DiskReadBps[i], c.DiskWriteBps[i], c.NetRxBps[i], c.NetTxBps[i] = s.DiskReadBps, s.DiskWriteBps, s.NetRxBps, s.NetTxBps
		c.DiskCount[i] = uint32(len(s.Disks))
		for _, d := range s.Disks {
			k, ok := mounts[d.Mount]
			if !ok {
				k = uint32(len(c.Mounts))
				mounts[d.Mount] = k
				c.Mounts = append(c.Mounts, d.Mount)
			}
			c.DiskMount = append(c.DiskMount, k)
			c.DiskUsed = append(c.DiskUsed, d.Used)
			c.DiskTotal = append(c.DiskTotal, d.Total)
			c.DiskAvail = append(c.DiskAvail, d.Avail)
			c.DiskInodesTotal = append(c.DiskInodesTotal, d.InodesTotal)
			c.DiskInodesFree = append(c.DiskInodesFree, d.InodesFree)
		}
	}
	return &agentv1.MetricsBatch{Seq: b.Seq, DroppedTotal: dropped, Columns: c}
}

// sentBatches remembers when each in-flight batch was sent on this
// connection, for Config.OnAck. It holds at most maxInFlight entries.
type sentBatches struct {
	mu sync.Mutex
	m  map[uint64]sentBatch
}

type sentBatch struct {
	at      time.Time
	samples int
}

func (s *sentBatches) record(seq uint64, samples int, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[uint64]sentBatch, maxInFlight)
	}
	s.m[seq] = sentBatch{at: at, samples: samples}
}

// ack forgets the acknowledged batch and every earlier one (the controller
// acks in order; an earlier batch lost its ack) and describes it.
func (s *sentBatches) ack(m *agentv1.MetricsAck) Ack {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := Ack{Seq: m.GetSeq(), Duplicate: m.GetDuplicate()}
	if b, ok := s.m[m.GetSeq()]; ok {
		out.SentAt, out.Samples = b.at, b.samples
	}
	for seq := range s.m {
		if seq <= m.GetSeq() {
			delete(s.m, seq)
		}
	}
	return out
}
