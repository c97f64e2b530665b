package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// App processes on the agent stream: process reports are stored (the last
// one per app, in app_process_status), and app logs are relayed on demand.

// Bounds on what an agent reports.
const (
	maxReportApps      = 1000
	maxReportProcesses = 64
	maxReportInstances = 64
	// reportRefresh: an unchanged report is written again after this long,
	// so reported_at says the agent still stands by it.
	reportRefresh = 30 * time.Second
	// logsBuffer is how many chunks of one log request wait for a slow
	// caller; past it the request is ended (the agent is told to stop)
	// rather than buffering without bound.
	logsBuffer = 64
	// maxLogLinesChunk and maxLogText bound one chunk relayed to a caller.
	maxLogLinesChunk = 2000
	maxLogText       = 16 << 10
)

// ErrLogsTooSlow ends a log stream whose caller does not keep up.
var ErrLogsTooSlow = errors.New("log stream ended: the reader did not keep up")

// ErrLogsSilent ends a request that does not follow when the agent sends
// nothing for logsIdle.
var ErrLogsSilent = errors.New("log stream ended")

// logsIdle bounds the silence of an agent serving a request that does not
// follow (a variable for tests).
var logsIdle = 30 * time.Second

// reportState is what a conn last stored per app (only the stream's
// handler goroutine touches it).
type reportState struct {
	last map[string]*agentv1.AppProcesses
	at   map[string]time.Time
}

// processReport stores a report; a failure is logged, not fatal to the
// stream: the agent reports again with its next heartbeat.
func (s *Service) processReport(ctx context.Context, c *conn, rep *agentv1.ProcessReport) {
	if err := s.storeProcessReport(ctx, c, rep); err != nil && ctx.Err() == nil {
		s.log.Error("store process report", "server_id", c.serverID.String(), "err", err)
	}
}

// storeProcessReport stores a full report of the agent's processes: every
// app of this server it names (unknown ids and other servers' apps are
// ignored by the store), and forgets the apps of this server it leaves out.
func (s *Service) storeProcessReport(ctx context.Context, c *conn, rep *agentv1.ProcessReport) error {
	if rep == nil {
		return nil
	}
	now := s.cfg.Now()
	if c.reports.last == nil {
		c.reports = reportState{last: map[string]*agentv1.AppProcesses{}, at: map[string]time.Time{}}
	}
	apps := rep.GetApps()
	if len(apps) > maxReportApps {
		s.log.Warn("process report too large; kept the first apps", "server_id", c.serverID.String(), "apps", len(apps))
		apps = apps[:maxReportApps]
	}
	keep := make([]store.ID, 0, len(apps))
	seen := map[string]bool{}
	for _, ap := range apps {
		id, err := store.ParseID(ap.GetAppId())
		if err != nil || seen[ap.GetAppId()] {
			continue // not an app id, or twice
		}
		seen[ap.GetAppId()] = true
		keep = append(keep, id)
		ap = boundReport(ap)
		if prev, ok := c.reports.last[ap.GetAppId()]; ok && proto.Equal(prev, ap) && now.Sub(c.reports.at[ap.GetAppId()]) < reportRefresh {
			continue
		}
		js, err := protojson.Marshal(ap)
		if err != nil {
			return fmt.Errorf("encode process report: %w", err)
		}
		stored, err := s.st.SetProcessStatus(ctx, c.serverID, store.ProcessStatus{AppID: id, Report: js, ReportedAt: now})
		if errors.Is(err, store.ErrInvalid) {
			s.log.Warn("process report of an app refused", "server_id", c.serverID.String(), "app_id", id.String(), "err", err)
			continue
		}
		if err != nil {
			return err
		}
		if stored {
			c.reports.last[ap.GetAppId()], c.reports.at[ap.GetAppId()] = ap, now
		}
	}
	for k := range c.reports.last {
		if !seen[k] {
			delete(c.reports.last, k)
			delete(c.reports.at, k)
		}
	}
	return s.st.ClearProcessStatus(ctx, c.serverID, keep, now)
}

// boundReport caps the processes, instances and texts of one app's report.
func boundReport(ap *agentv1.AppProcesses) *agentv1.AppProcesses {
	ap = proto.Clone(ap).(*agentv1.AppProcesses)
	if len(ap.Processes) > maxReportProcesses {
		ap.Processes = ap.Processes[:maxReportProcesses]
	}
	for _, p := range ap.Processes {
		p.Name, p.State, p.Release = truncate(p.Name, 64), truncate(p.State, 32), truncate(p.Release, 64)
		if len(p.Instances) > maxReportInstances {
			p.Instances = p.Instances[:maxReportInstances]
		}
		for _, in := range p.Instances {
			in.State, in.LastError = truncate(in.State, 32), truncate(in.LastError, 500)
		}
	}
	return ap
}

// logsSub is one relayed log request, waiting for its chunks.
type logsSub struct {
	c  *conn
	ch chan *agentv1.LogsChunk
	// over is closed when the request ends without a final chunk: the
	// agent's stream ended, or the buffer overflowed (err says which).
	over chan struct{}
	once sync.Once
	err  error
}

func (l *logsSub) end(err error) {
	l.once.Do(func() {
		l.err = err
		close(l.over)
	})
}

type logsRelay struct {
	mu   sync.Mutex
	subs map[string]*logsSub
}

// StreamLogs asks the server's agent for app logs and hands each chunk's
// lines to send until the request ends, ctx ends (the agent is then told
// to stop), or send fails. Only the controller holding the agent's stream
// relays: a caller served by another controller of a cluster gets
// ErrNotConnected, as for an offline agent (logs are a live view, not
// stored, so nothing is lost by asking again). req.RequestId is set here.
func (s *Service) StreamLogs(ctx context.Context, serverID store.ID, req *agentv1.LogsRequest, send func(*agentv1.LogsChunk) error) error {
	var b [16]byte
	_, _ = rand.Read(b[:])
	req.RequestId = hex.EncodeToString(b[:])
	sub := &logsSub{ch: make(chan *agentv1.LogsChunk, logsBuffer), over: make(chan struct{})}
	s.hub.mu.Lock()
	sub.c = s.hub.conns[serverID]
	s.hub.mu.Unlock()
	if sub.c == nil {
		return ErrNotConnected
	}
	s.logs.mu.Lock()
	if s.logs.subs == nil {
		s.logs.subs = map[string]*logsSub{}
	}
	s.logs.subs[req.RequestId] = sub
	s.logs.mu.Unlock()
	defer func() {
		s.logs.mu.Lock()
		delete(s.logs.subs, req.RequestId)
		s.logs.mu.Unlock()
	}()
	if err := s.queue(sub.c, &agentv1.ConnectResponse{Msg: &agentv1.ConnectResponse_LogsRequest{LogsRequest: req}}); err != nil {
		return err
	}
	cancel := func() {
		// Best effort: a gone stream has nothing to stop.
		_ = s.queue(sub.c, &agentv1.ConnectResponse{Msg: &agentv1.ConnectResponse_LogsCancel{LogsCancel: &agentv1.LogsCancel{RequestId: req.RequestId}}})
	}
	// A request that does not follow ends when the agent says so; an agent
	// that falls silent meanwhile (wedged, or too old to serve logs) must
	// not hold the caller forever.
	var idle <-chan time.Time
	var timer *time.Timer
	if !req.GetFollow() {
		timer = time.NewTimer(logsIdle)
		defer timer.Stop()
		idle = timer.C
	}
	for {
		select {
		case <-idle:
			cancel()
			return fmt.Errorf("%w: the agent sent no logs for %s", ErrLogsSilent, logsIdle)
		case <-ctx.Done():
			cancel()
			return ctx.Err()
		case <-sub.over:
			if errors.Is(sub.err, ErrLogsTooSlow) {
				cancel()
			}
			return sub.err
		case ch := <-sub.ch:
			if timer != nil {
				timer.Reset(logsIdle)
			}
			if len(ch.GetLines()) > 0 {
				if err := send(ch); err != nil {
					cancel()
					return err
				}
			}
			if ch.GetEnd() {
				if e := ch.GetError(); e != "" {
					return fmt.Errorf("%w: the agent could not read the logs: %s", ErrInvalid, truncate(e, 500))
				}
				return nil
			}
		}
	}
}

// relayLogs hands a chunk from the agent to its request's reader, never
// blocking the agent's stream: a reader that falls logsBuffer chunks
// behind loses its request.
func (s *Service) relayLogs(c *conn, ch *agentv1.LogsChunk) {
	s.logs.mu.Lock()
	sub := s.logs.subs[ch.GetRequestId()]
	s.logs.mu.Unlock()
	if sub == nil || sub.c != c {
		return // ended meanwhile, or not this agent's request
	}
	if len(ch.Lines) > maxLogLinesChunk {
		ch.Lines = ch.Lines[:maxLogLinesChunk]
	}
	for _, l := range ch.Lines {
		l.Text = truncate(l.Text, maxLogText)
	}
	select {
	case sub.ch <- ch:
	default:
		sub.end(ErrLogsTooSlow)
	}
}

// endLogs ends the log requests relayed over a stream that ended.
func (s *Service) endLogs(c *conn) {
	s.logs.mu.Lock()
	defer s.logs.mu.Unlock()
	for _, sub := range s.logs.subs {
		if sub.c == c {
			sub.end(fmt.Errorf("%w: the agent's stream ended", ErrNotConnected))
		}
	}
}
