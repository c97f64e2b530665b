package client

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/berthhq/berth/agent/internal/identity"
	"github.com/berthhq/berth/agent/internal/metrics"
	"github.com/berthhq/berth/agent/internal/supervise"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// hangGuard only stops a broken test from hanging; no assertion depends on it.
const hangGuard = 2 * time.Minute

var (
	agentBinOnce sync.Once
	agentBinPath string
	agentBinErr  error
	agentBinDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if agentBinDir != "" {
		os.RemoveAll(agentBinDir)
	}
	os.Exit(code)
}

// agentBin builds berth-agent once: the process supervisors are its
// hidden subcommands.
func agentBin(t *testing.T) string {
	t.Helper()
	agentBinOnce.Do(func() {
		if agentBinDir, agentBinErr = os.MkdirTemp("", "berth-agent-bin-"); agentBinErr != nil {
			return
		}
		agentBinPath = filepath.Join(agentBinDir, "berth-agent")
		if out, err := exec.Command("go", "build", "-o", agentBinPath, "github.com/berthhq/berth/agent/cmd/berth-agent").CombinedOutput(); err != nil {
			agentBinErr = fmt.Errorf("go build berth-agent: %v\n%s", err, out)
		}
	})
	if agentBinErr != nil {
		t.Fatal(agentBinErr)
	}
	return agentBinPath
}

// controller is an in-process AgentService on real mTLS: it welcomes the
// agent, records what the agent sends and sends what the test queues.
type controller struct {
	agentv1.UnimplementedAgentServiceServer
	addr string
	in   chan *agentv1.ConnectRequest
	out  chan *agentv1.ConnectResponse
}

// startController serves on loopback with a CA of its own, and enrolls
// dataDir with an agent identity that CA signed.
func startController(t *testing.T, dataDir string) *controller {
	t.Helper()
	caKey, _ := identity.NewKey()
	caTpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTpl, caTpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, key *ecdsa.PrivateKey, tpl *x509.Certificate) []byte {
		tpl.SerialNumber, tpl.NotBefore, tpl.NotAfter = big.NewInt(serial), time.Now().Add(-time.Minute), time.Now().Add(time.Hour)
		der, err := x509.CreateCertificate(rand.Reader, tpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	srvKey, _ := identity.NewKey()
	srvDER := issue(2, srvKey, &x509.Certificate{DNSNames: []string{identity.ServerName}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	agentKey, _ := identity.NewKey()
	agentDER := issue(3, agentKey, &x509.Certificate{Subject: pkix.Name{CommonName: "01ARZ3NDEKTSV4RRFFQ69G5FAV"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err := identity.Save(dataDir, agentKey, agentDER, caDER); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	tlsCfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &controller{addr: l.Addr().String(), in: make(chan *agentv1.ConnectRequest, 1024), out: make(chan *agentv1.ConnectResponse, 64)}
	s := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsCfg)))
	agentv1.RegisterAgentServiceServer(s, c)
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return c
}

func (c *controller) Connect(stream grpc.BidiStreamingServer[agentv1.ConnectRequest, agentv1.ConnectResponse]) error {
	hello, err := stream.Recv()
	if err != nil {
		return err
	}
	c.in <- hello
	if err := stream.Send(&agentv1.ConnectResponse{Msg: &agentv1.ConnectResponse_Welcome{Welcome: &agentv1.Welcome{
		ServerId: "01ARZ3NDEKTSV4RRFFQ69G5FAV",
		Config:   &agentv1.Config{HeartbeatInterval: durationpb.New(time.Second), MetricsInterval: durationpb.New(time.Hour), MetricsBatchMax: 10},
	}}}); err != nil {
		return err
	}
	go func() {
		for {
			select {
			case m := <-c.out:
				if stream.Send(m) != nil {
					return
				}
			case <-stream.Context().Done():
				return
			}
		}
	}()
	for {
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		c.in <- m
	}
}

// await returns the first message from the agent that match accepts,
// skipping others.
func (c *controller) await(t *testing.T, what string, match func(*agentv1.ConnectRequest) bool) *agentv1.ConnectRequest {
	t.Helper()
	timeout := time.After(hangGuard)
	for {
		select {
		case m := <-c.in:
			if match(m) {
				return m
			}
		case <-timeout:
			t.Fatalf("the agent never sent %s", what)
			return nil
		}
	}
}

func (c *controller) send(m *agentv1.ConnectResponse) { c.out <- m }

func findApp(r *agentv1.ProcessReport, appID string) *agentv1.AppProcesses {
	for _, a := range r.GetApps() {
		if a.GetAppId() == appID {
			return a
		}
	}
	return nil
}

func workerState(r *agentv1.ProcessReport) string {
	for _, p := range findApp(r, "app1").GetProcesses() {
		if p.GetName() == "worker" {
			return p.GetState()
		}
	}
	return ""
}

func chunkFor(id string, end bool) func(*agentv1.ConnectRequest) bool {
	return func(m *agentv1.ConnectRequest) bool {
		c := m.GetLogsChunk()
		return c != nil && c.GetRequestId() == id && (!end || c.GetEnd())
	}
}

// The agent tells the controller its processes right after Hello, in every
// heartbeat and when they change; it serves log requests (tail, follow,
// cancel), refuses malformed ones and more than it may serve at once.
func TestSessionProcessesAndLogs(t *testing.T) {
	m, err := supervise.NewManager(supervise.Config{StateDir: filepath.Join(t.TempDir(), "apps"), Executable: agentBin(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := m.DeleteApp(ctx, "app1"); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		m.Close()
	})
	app := supervise.App{
		ID: "app1", ReleaseID: "01ARZ3NDEKTSV4RRFFQ69G5FAW", ReleaseDir: t.TempDir(),
		UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), Env: []string{"PATH=/usr/bin:/bin"},
		Processes: []*agentv1.ProcessSpec{{Name: "worker", Command: "echo hello-from-worker; exec sleep 100000", Instances: 1, StopGrace: durationpb.New(5 * time.Second)}},
	}
	if err := m.Deploy(t.Context(), app, t.Logf); err != nil {
		t.Fatal(err)
	}

	dataDir := t.TempDir()
	ctl := startController(t, dataDir)
	sampler, err := metrics.NewSampler(metrics.SamplerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{
			Controller: ctl.addr, DataDir: dataDir, Facts: func() *agentv1.HostFacts { return &agentv1.HostFacts{Hostname: "test"} },
			Sampler: sampler, Buffer: metrics.NewBuffer(100), Logger: slog.New(slog.DiscardHandler), Processes: m,
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	// Hello, then the report, before anything else the agent says.
	if ctl.await(t, "hello", func(m *agentv1.ConnectRequest) bool { return true }).GetHello() == nil {
		t.Fatal("first message is not hello")
	}
	first := ctl.await(t, "a message after hello", func(m *agentv1.ConnectRequest) bool { return m.GetMetrics() == nil })
	if r := first.GetProcessReport(); r == nil || workerState(r) == "" {
		t.Fatalf("first message after hello: %v", first)
	}
	hb := ctl.await(t, "a heartbeat", func(m *agentv1.ConnectRequest) bool { return m.GetHeartbeat() != nil })
	if workerState(hb.GetHeartbeat().GetProcesses()) == "" {
		t.Fatalf("heartbeat without the worker: %v", hb)
	}

	// Logs: the tail holds the worker's line; follow stays open until
	// the controller cancels it.
	ctl.send(&agentv1.ConnectResponse{Msg: &agentv1.ConnectResponse_LogsRequest{LogsRequest: &agentv1.LogsRequest{RequestId: "r1", AppId: "app1", Follow: true, Tail: 10}}})
	ctl.await(t, "the worker's line", func(m *agentv1.ConnectRequest) bool {
		c := m.GetLogsChunk()
		if c.GetRequestId() != "r1" {
			return false
		}
		if c.GetEnd() {
			t.Fatalf("follow request ended: %v", c)
		}
		for _, l := range c.GetLines() {
			if strings.Contains(l.GetText(), "hello-from-worker") && l.GetProcess() == "worker" && l.GetStream() == "stdout" {
				return true
			}
		}
		return false
	})
	ctl.send(&agentv1.ConnectResponse{Msg: &agentv1.ConnectResponse_LogsCancel{LogsCancel: &agentv1.LogsCancel{RequestId: "r1"}}})
	if c := ctl.await(t, "r1's end", chunkFor("r1", true)).GetLogsChunk(); c.GetError() != "" {
		t.Errorf("canceled request ended with error %q", c.GetError())
	}

	// Without follow: the tail, then the end.
	ctl.send(&agentv1.ConnectResponse{Msg: &agentv1.ConnectResponse_LogsRequest{LogsRequest: &agentv1.LogsRequest{RequestId: "r2", AppId: "app1"}}})
	if c := ctl.await(t, "r2's end", chunkFor("r2", true)).GetLogsChunk(); c.GetError() != "" {
		t.Errorf("r2 ended with error %q", c.GetError())
	}

	// Malformed: no app.
	ctl.send(&agentv1.ConnectResponse{Msg: &agentv1.ConnectResponse_LogsRequest{LogsRequest: &agentv1.LogsRequest{RequestId: "bad"}}})
	if c := ctl.await(t, "the malformed request's end", chunkFor("bad", true)).GetLogsChunk(); !strings.Contains(c.GetError(), "malformed") {
		t.Errorf("malformed request: %v", c)
	}

	// At most maxLogRequests at once: one more is refused.
	for i := range maxLogRequests + 1 {
		ctl.send(&agentv1.ConnectResponse{Msg: &agentv1.ConnectResponse_LogsRequest{LogsRequest: &agentv1.LogsRequest{RequestId: fmt.Sprint("f", i), AppId: "app1", Follow: true}}})
	}
	over := fmt.Sprint("f", maxLogRequests)
	if c := ctl.await(t, "the refusal", chunkFor(over, true)).GetLogsChunk(); c.GetError() != errTextTooMany {
		t.Errorf("request past the bound: %v", c)
	}
	for i := range maxLogRequests {
		ctl.send(&agentv1.ConnectResponse{Msg: &agentv1.ConnectResponse_LogsCancel{LogsCancel: &agentv1.LogsCancel{RequestId: fmt.Sprint("f", i)}}})
	}
	ended := map[string]bool{}
	ctl.await(t, "the end of every canceled request", func(m *agentv1.ConnectRequest) bool {
		if c := m.GetLogsChunk(); c.GetEnd() && strings.HasPrefix(c.GetRequestId(), "f") {
			if c.GetError() != "" {
				t.Errorf("canceled %s ended with error %q", c.GetRequestId(), c.GetError())
			}
			ended[c.GetRequestId()] = true
		}
		return len(ended) == maxLogRequests
	})

	// A change goes up on its own, without waiting for a heartbeat.
	if err := m.Action(t.Context(), app, "stop", []string{"worker"}, t.Logf); err != nil {
		t.Fatal(err)
	}
	ctl.await(t, "a report of the stopped worker", func(m *agentv1.ConnectRequest) bool {
		return m.GetProcessReport() != nil && workerState(m.GetProcessReport()) == "stopped"
	})
}
