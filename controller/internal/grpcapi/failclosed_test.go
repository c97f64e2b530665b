package grpcapi_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/ca"
	"github.com/berthhq/berth/controller/internal/fleet"
	"github.com/berthhq/berth/controller/internal/grpcapi"
	"github.com/berthhq/berth/controller/internal/store"
	"github.com/berthhq/berth/controller/internal/testdb"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

func TestMain(m *testing.M) { testdb.Main(m) }

type env struct {
	st    *store.Store
	ca    *ca.CA
	past  *ca.CA // the same CA with a clock two days behind
	caDir string
	fleet *fleet.Service
	addr  string
	admin *auth.Principal
}

func setup(t *testing.T, enrollBurst int) *env {
	t.Helper()
	db := testdb.New(t)
	st := store.New(db.Pool, nil)
	dir := t.TempDir()
	past, _, err := ca.LoadOrCreate(dir, ca.Options{Now: func() time.Time { return time.Now().Add(-72 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	authority, _, err := ca.LoadOrCreate(dir, ca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	certs, err := authority.ServerCertificateSource(nil)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	fl := fleet.New(st, authority, log, fleet.Config{ControllerAddr: "127.0.0.1:7443", EnrollPerMinute: 60, EnrollBurst: enrollBurst})
	deps := grpcapi.Deps{Store: st, CA: authority, Fleet: fl, Log: log}
	authn := grpcapi.NewAuthenticator(deps)
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(authority.ServerTLSConfig(certs.GetCertificate))),
		grpc.UnaryInterceptor(authn.Unary), grpc.StreamInterceptor(authn.Stream), grpc.MaxRecvMsgSize(1<<20))
	grpcapi.Register(srv, deps)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	u, err := st.CreateUser(context.Background(), store.CreateUserParams{Email: "ops@example.com", PasswordHash: "$argon2id$x", Role: store.RoleAdmin, Status: store.UserActive})
	if err != nil {
		t.Fatal(err)
	}
	return &env{st: st, ca: authority, past: past, caDir: dir, fleet: fl, addr: ln.Addr().String(),
		admin: &auth.Principal{UserID: u.ID, Email: u.Email, Scopes: []store.Scope{store.ScopeAdmin}}}
}

func newCSR(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "host"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, csr
}

// client dials with cert (nil for none), trusting the controller CA.
func (e *env) client(t *testing.T, cert *tls.Certificate) agentv1.AgentServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(ca.ClientTLSConfig(e.ca.Pool(), cert))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return agentv1.NewAgentServiceClient(conn)
}

// enroll adds a server and enrolls it, returning its client certificate.
func (e *env) enroll(t *testing.T, name string) (store.ID, tls.Certificate) {
	t.Helper()
	res, err := e.fleet.AddServer(context.Background(), e.admin, fleet.Peer{}, name, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, csr := newCSR(t)
	r, err := e.client(t, nil).Enroll(context.Background(), &agentv1.EnrollRequest{Token: res.Token, CsrDer: csr, Facts: &agentv1.HostFacts{Hostname: name}})
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	return res.Server.ID, tls.Certificate{Certificate: [][]byte{r.CertificateDer}, PrivateKey: key}
}

// connect opens a stream and says hello; it returns the first answer's error.
func connect(t *testing.T, c agentv1.AgentServiceClient, first *agentv1.ConnectRequest) (agentv1.AgentService_ConnectClient, *agentv1.ConnectResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	s, err := c.Connect(ctx)
	if err != nil {
		return nil, nil, err
	}
	if first == nil {
		first = &agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_Hello{Hello: &agentv1.Hello{Facts: &agentv1.HostFacts{Hostname: "h"}}}}
	}
	_ = s.Send(first)
	m, err := s.Recv()
	return s, m, err
}

func (e *env) refusals(t *testing.T, reason string) int {
	t.Helper()
	evs, err := e.st.SecurityEvents(context.Background(), store.SecurityEventFilter{Type: "agent.connection_refused"})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ev := range evs {
		if ev.Details["reason"] == reason && ev.IPAddress != nil && ev.IPAddress.String() == "127.0.0.1" {
			n++
		}
	}
	return n
}

func TestAgentAPIFailsClosed(t *testing.T) {
	t.Parallel()
	e := setup(t, 100)
	ctx := context.Background()

	// The happy path works, so the refusals below are meaningful.
	id, cert := e.enroll(t, "web-1")
	_, m, err := connect(t, e.client(t, &cert), nil)
	if err != nil || m.GetWelcome().GetServerId() != id.String() {
		t.Fatalf("good agent: %v %v", m, err)
	}

	t.Run("no client certificate", func(t *testing.T) {
		_, _, err := connect(t, e.client(t, nil), nil)
		if status.Code(err) != codes.Unauthenticated || e.refusals(t, "no client certificate") == 0 {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("certificate from another CA", func(t *testing.T) {
		other, _, err := ca.LoadOrCreate(t.TempDir(), ca.Options{})
		if err != nil {
			t.Fatal(err)
		}
		key, csr := newCSR(t)
		iss, err := other.SignAgentCSR(csr, id, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = connect(t, e.client(t, &tls.Certificate{Certificate: [][]byte{iss.DER}, PrivateKey: key}), nil)
		if err == nil {
			t.Fatal("foreign certificate accepted")
		}
	})
	t.Run("expired certificate", func(t *testing.T) {
		key, csr := newCSR(t)
		iss, err := e.past.SignAgentCSR(csr, id, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.st.RecordAgentCertificate(ctx, store.AgentCertificate{ServerID: id, Serial: iss.SerialHex, IssuedFor: "renew", NotBefore: iss.NotBefore, NotAfter: iss.NotAfter}); err != nil {
			t.Fatal(err)
		}
		_, _, err = connect(t, e.client(t, &tls.Certificate{Certificate: [][]byte{iss.DER}, PrivateKey: key}), nil)
		if err == nil {
			t.Fatal("expired certificate accepted")
		}
	})
	t.Run("unrecorded serial", func(t *testing.T) {
		key, csr := newCSR(t)
		iss, err := e.ca.SignAgentCSR(csr, id, time.Hour) // signed, never recorded
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = connect(t, e.client(t, &tls.Certificate{Certificate: [][]byte{iss.DER}, PrivateKey: key}), nil)
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("malformed and oversized messages", func(t *testing.T) {
		id2, cert2 := e.enroll(t, "web-malformed")
		_ = id2
		c := e.client(t, &cert2)
		_, _, err := connect(t, c, &agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_Heartbeat{Heartbeat: &agentv1.Heartbeat{}}})
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("heartbeat before hello: %v", err)
		}
		s, _, err := connect(t, c, nil)
		if err != nil {
			t.Fatal(err)
		}
		big := &agentv1.MetricsBatch{Seq: 1, Columns: oneSample(time.Now())}
		for range fleet.MaxBatchSamples {
			big.Columns.RecordedAtUnixMicros = append(big.Columns.RecordedAtUnixMicros, time.Now().UnixMicro())
		}
		_ = s.Send(&agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_Metrics{Metrics: big}})
		if _, err := s.Recv(); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("too many samples: %v", err)
		}
		s, _, err = connect(t, c, nil)
		if err != nil {
			t.Fatal(err)
		}
		huge := &agentv1.MetricsBatch{Seq: 2, Columns: oneSample(time.Now())}
		huge.Columns.Mounts = []string{strings.Repeat("x", 2<<20)}
		_ = s.Send(&agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_Metrics{Metrics: huge}})
		if _, err := s.Recv(); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("oversized message: %v", err)
		}
		s, _, err = connect(t, c, nil)
		if err != nil {
			t.Fatal(err)
		}
		ragged := &agentv1.MetricsBatch{Seq: 3, Columns: oneSample(time.Now())}
		ragged.Columns.CpuPercent = nil
		_ = s.Send(&agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_Metrics{Metrics: ragged}})
		if _, err := s.Recv(); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("columns of unequal length: %v", err)
		}
		// Nothing from the refused batches was stored.
		if n, err := e.st.CountMetrics(ctx, id2, time.Now().Add(-time.Hour), time.Now().Add(time.Hour)); err != nil || n != 0 {
			t.Fatalf("stored %d samples from refused batches (%v)", n, err)
		}
	})
	t.Run("exactly once", func(t *testing.T) {
		sid, cert3 := e.enroll(t, "web-once")
		s, _, err := connect(t, e.client(t, &cert3), nil)
		if err != nil {
			t.Fatal(err)
		}
		b := &agentv1.MetricsBatch{Seq: 1, Columns: oneSample(time.Now())}
		for i, wantDup := range []bool{false, true} {
			_ = s.Send(&agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_Metrics{Metrics: b}})
			m, err := s.Recv()
			if err != nil || m.GetMetricsAck().GetSeq() != 1 || m.GetMetricsAck().GetDuplicate() != wantDup {
				t.Fatalf("send %d: %v %v", i, m, err)
			}
		}
		if n, _ := e.st.CountMetrics(ctx, sid, time.Now().Add(-time.Hour), time.Now().Add(time.Hour)); n != 1 {
			t.Fatalf("replayed batch stored %d rows, want 1", n)
		}
	})
	t.Run("revoked, disabled and removed", func(t *testing.T) {
		for _, how := range []string{"revoked", "disabled", "removed"} {
			sid, c := e.enroll(t, "web-"+how)
			s, _, err := connect(t, e.client(t, &c), nil)
			if err != nil {
				t.Fatal(err)
			}
			cut := make(chan error, 1)
			go func() {
				for {
					if _, err := s.Recv(); err != nil {
						cut <- err
						return
					}
				}
			}()
			switch how {
			case "revoked":
				if _, err := e.st.RevokeServerCertificates(ctx, sid, "test"); err != nil {
					t.Fatal(err)
				}
			case "disabled":
				if _, err := e.fleet.Disable(ctx, e.admin, fleet.Peer{}, "web-"+how); err != nil {
					t.Fatal(err)
				}
			case "removed":
				if err := e.fleet.Remove(ctx, e.admin, fleet.Peer{}, "web-"+how); err != nil {
					t.Fatal(err)
				}
			}
			if how != "revoked" {
				// Disable and remove cut the live stream: wait for the cut
				// itself (the test's deadline bounds it). PermissionDenied is
				// the cut's own code, so the stream did not end for another
				// reason such as a heartbeat timeout.
				if err := <-cut; status.Code(err) != codes.PermissionDenied {
					t.Fatalf("%s: stream ended with %v", how, err)
				}
			}
			if _, _, err := connect(t, e.client(t, &c), nil); status.Code(err) != codes.Unauthenticated {
				t.Fatalf("%s: reconnect = %v", how, err)
			}
		}
		if e.refusals(t, "certificate revoked") < 2 || e.refusals(t, "unknown certificate or server removed") < 1 {
			t.Fatal("refusals not recorded as security events with the peer address")
		}
	})
	t.Run("enable re-enrolls", func(t *testing.T) {
		if _, err := e.fleet.Enable(ctx, e.admin, fleet.Peer{}, "web-1", time.Hour); err == nil {
			t.Fatal("enabled a server that is not disabled")
		}
		res, err := e.fleet.Enable(ctx, e.admin, fleet.Peer{}, "web-disabled", time.Hour)
		if err != nil || res.Server.Status != store.ServerPending && res.Server.Status != store.ServerOffline {
			t.Fatalf("enable: %+v %v", res.Server, err)
		}
		key, csr := newCSR(t)
		r, err := e.client(t, nil).Enroll(ctx, &agentv1.EnrollRequest{Token: res.Token, CsrDer: csr, Facts: &agentv1.HostFacts{Hostname: "again"}})
		if err != nil || r.ServerId != res.Server.ID.String() {
			t.Fatalf("re-enroll: %v %v", r, err)
		}
		fresh := tls.Certificate{Certificate: [][]byte{r.CertificateDer}, PrivateKey: key}
		if _, m, err := connect(t, e.client(t, &fresh), nil); err != nil || m.GetWelcome() == nil {
			t.Fatalf("connect after re-enroll: %v %v", m, err)
		}
	})
}

func TestEnrollRefusals(t *testing.T) {
	t.Parallel()
	e := setup(t, 5)
	ctx := context.Background()
	c := e.client(t, nil)
	_, csr := newCSR(t)

	res, err := e.fleet.AddServer(ctx, e.admin, fleet.Peer{}, "db-1", nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// A bad CSR gets the same answer as a bad token (TestEnrollBadCSRRevealsNothing).
	if _, err := c.Enroll(ctx, &agentv1.EnrollRequest{Token: res.Token, CsrDer: []byte("not a csr")}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("bad CSR: %v", err)
	}
	// A failed attempt does not burn the token.
	if _, err := c.Enroll(ctx, &agentv1.EnrollRequest{Token: res.Token, CsrDer: csr}); err != nil {
		t.Fatalf("enroll after a bad CSR: %v", err)
	}
	if _, err := c.Enroll(ctx, &agentv1.EnrollRequest{Token: res.Token, CsrDer: csr}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("reused token: %v", err)
	}
	// An expired token: issue one, then age it in the database.
	res2, err := e.fleet.AddServer(ctx, e.admin, fleet.Peer{}, "db-2", nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Pool().Exec(ctx, `UPDATE servers SET join_token_expires_at = now() - interval '1 second', created_at = now() - interval '1 hour' WHERE name = 'db-2'`); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Enroll(ctx, &agentv1.EnrollRequest{Token: res2.Token, CsrDer: csr}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("expired token: %v", err)
	}
	// A flood from one address is rate limited.
	limited := false
	for range 30 {
		_, err := c.Enroll(ctx, &agentv1.EnrollRequest{Token: "bjt_" + strings.Repeat("Z", 43), CsrDer: csr})
		if status.Code(err) == codes.ResourceExhausted {
			limited = true
			break
		}
	}
	if !limited {
		t.Fatal("30 enroll attempts from one address were never rate limited")
	}
	evs, _ := e.st.SecurityEvents(ctx, store.SecurityEventFilter{Type: "agent.enroll_refused"})
	if len(evs) < 3 || evs[0].IPAddress == nil {
		t.Fatalf("refused enrollments recorded: %d", len(evs))
	}
}

func TestRenewOverStream(t *testing.T) {
	t.Parallel()
	e := setup(t, 100)
	ctx := context.Background()
	id, cert := e.enroll(t, "renew-1")
	s, _, err := connect(t, e.client(t, &cert), nil)
	if err != nil {
		t.Fatal(err)
	}
	key, csr := newCSR(t)
	_ = s.Send(&agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_Renew{Renew: &agentv1.RenewRequest{CsrDer: csr}}})
	m, err := s.Recv()
	if err != nil || m.GetRenew() == nil {
		t.Fatalf("renew: %v %v", m, err)
	}
	leaf, err := x509.ParseCertificate(m.GetRenew().GetCertificateDer())
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Subject.CommonName != id.String() || !leaf.PublicKey.(*ecdsa.PublicKey).Equal(&key.PublicKey) {
		t.Fatalf("renewed certificate names %q", leaf.Subject.CommonName)
	}
	certs, err := e.st.AgentCertificates(ctx, id)
	if err != nil || len(certs) != 2 || certs[0].IssuedFor != "renew" {
		t.Fatalf("recorded certificates: %+v %v", certs, err)
	}
	// The renewed certificate works on a new connection.
	renewed := tls.Certificate{Certificate: [][]byte{m.GetRenew().GetCertificateDer()}, PrivateKey: key}
	if _, m, err := connect(t, e.client(t, &renewed), nil); err != nil || m.GetWelcome() == nil {
		t.Fatalf("connect with renewed certificate: %v %v", m, err)
	}
	// A garbage CSR ends the stream with InvalidArgument.
	s2, _, err := connect(t, e.client(t, &renewed), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = s2.Send(&agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_Renew{Renew: &agentv1.RenewRequest{CsrDer: []byte("junk")}}})
	if _, err := s2.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("junk CSR: %v", err)
	}
}

// oneSample is a well-formed batch of one sample at t, without rates or
// filesystems.
func oneSample(t time.Time) *agentv1.MetricColumns {
	return &agentv1.MetricColumns{
		RecordedAtUnixMicros: []int64{t.UnixMicro()}, CpuPercent: []float64{12}, Load1: []float64{0}, Load5: []float64{0}, Load15: []float64{0},
		MemUsedBytes: []uint64{1}, MemTotalBytes: []uint64{2}, SwapUsedBytes: []uint64{0}, SwapTotalBytes: []uint64{0},
		DiskUsedBytes: []uint64{3}, DiskTotalBytes: []uint64{4}, HasRates: []bool{false},
		DiskReadBps: []float64{0}, DiskWriteBps: []float64{0}, NetRxBps: []float64{0}, NetTxBps: []float64{0}, DiskCount: []uint32{0},
	}
}
