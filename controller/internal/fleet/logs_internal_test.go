package fleet

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// A stream registered in the hub as Serve registers one; what the
// controller sends to the agent lands in c.out.
func relayEnv(t *testing.T) (*Service, *conn, store.ID) {
	t.Helper()
	s := New(nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), Config{})
	_, cancel := context.WithCancelCause(context.Background())
	id := store.NewID()
	c := &conn{serverID: id, out: make(chan *agentv1.ConnectResponse, sendQueue), cancel: cancel}
	s.hub.register(c)
	return s, c, id
}

func chunk(id string, text string) *agentv1.LogsChunk {
	return &agentv1.LogsChunk{RequestId: id, Lines: []*agentv1.LogLine{{Process: "web", Text: text}}}
}

// A reader that does not keep up loses its request (bounded buffering),
// and the agent is told to stop.
func TestLogsRelayBounded(t *testing.T) {
	s, c, id := relayEnv(t)
	block := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- s.StreamLogs(context.Background(), id, &agentv1.LogsRequest{Follow: true}, func(*agentv1.LogsChunk) error {
			<-block
			return nil
		})
	}()
	req := (<-c.out).GetLogsRequest()
	if req == nil || req.GetRequestId() == "" {
		t.Fatal("no logs request sent")
	}
	// One chunk is taken by the blocked reader; logsBuffer wait; one more
	// overflows.
	for i := 0; i < logsBuffer+2; i++ {
		s.relayLogs(c, chunk(req.GetRequestId(), "x"))
	}
	close(block)
	if err := <-errc; !errors.Is(err, ErrLogsTooSlow) {
		t.Fatalf("slow reader: %v", err)
	}
	if m := <-c.out; m.GetLogsCancel().GetRequestId() != req.GetRequestId() {
		t.Fatalf("agent not told to stop: %v", m)
	}
	s.logs.mu.Lock()
	left := len(s.logs.subs)
	s.logs.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d requests left registered", left)
	}
}

// Chunks of another agent's stream or of unknown requests are dropped;
// texts are bounded; a stream that ends ends its requests.
func TestLogsRelayOwnStreamOnly(t *testing.T) {
	s, c, id := relayEnv(t)
	got := make(chan string, 10)
	errc := make(chan error, 1)
	go func() {
		errc <- s.StreamLogs(context.Background(), id, &agentv1.LogsRequest{Follow: true}, func(ch *agentv1.LogsChunk) error {
			got <- ch.GetLines()[0].GetText()
			return nil
		})
	}()
	req := (<-c.out).GetLogsRequest()
	other := &conn{serverID: store.NewID(), out: make(chan *agentv1.ConnectResponse, 1)}
	s.relayLogs(other, chunk(req.GetRequestId(), "forged"))
	s.relayLogs(c, chunk("unknown", "stray"))
	s.relayLogs(c, chunk(req.GetRequestId(), strings.Repeat("y", maxLogText+10)))
	if text := <-got; len(text) != maxLogText || text[0] != 'y' {
		t.Fatalf("first line relayed: %d bytes %q...", len(text), text[:min(len(text), 10)])
	}
	s.endLogs(c)
	if err := <-errc; !errors.Is(err, ErrNotConnected) {
		t.Fatalf("stream ended: %v", err)
	}
	if err := s.StreamLogs(context.Background(), store.NewID(), &agentv1.LogsRequest{}, nil); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("unconnected server: %v", err)
	}
}

// A report is bounded before it is stored: processes, instances, texts.
func TestBoundReport(t *testing.T) {
	ap := &agentv1.AppProcesses{AppId: "x"}
	for range 100 {
		p := &agentv1.ProcessState{Name: strings.Repeat("n", 100), State: strings.Repeat("s", 100)}
		for range 100 {
			p.Instances = append(p.Instances, &agentv1.InstanceState{LastError: strings.Repeat("e", 5000)})
		}
		ap.Processes = append(ap.Processes, p)
	}
	b := boundReport(ap)
	if len(b.Processes) != maxReportProcesses || len(b.Processes[0].Instances) != maxReportInstances ||
		len(b.Processes[0].Name) != 64 || len(b.Processes[0].State) != 32 || len(b.Processes[0].Instances[0].LastError) != 500 {
		t.Fatalf("bounded to %d processes, %d instances", len(b.Processes), len(b.Processes[0].Instances))
	}
	if len(ap.Processes) != 100 {
		t.Fatal("the agent's message was changed in place")
	}
}

// A request that does not follow ends when the agent falls silent; each
// chunk restarts the wait.
func TestLogsRelaySilentAgent(t *testing.T) {
	s, c, id := relayEnv(t)
	logsIdle = 200 * time.Millisecond // package variable: this test is not parallel
	defer func() { logsIdle = 30 * time.Second }()
	errc := make(chan error, 1)
	go func() {
		errc <- s.StreamLogs(context.Background(), id, &agentv1.LogsRequest{}, func(*agentv1.LogsChunk) error { return nil })
	}()
	req := (<-c.out).GetLogsRequest()
	s.relayLogs(c, chunk(req.GetRequestId(), "one"))
	if err := <-errc; !errors.Is(err, ErrLogsSilent) {
		t.Fatalf("silent agent: %v", err)
	}
	if m := <-c.out; m.GetLogsCancel().GetRequestId() != req.GetRequestId() {
		t.Fatalf("agent not told to stop: %v", m)
	}
}
