package grpcapi_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
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
	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// transportEnv is the agent port as the daemon builds it: handshake
// admission with its per-address cap and deadlines, refused handshakes and
// calls recorded within the refusal budget, and a budget clock the test
// holds still (so no refill happens while a test floods).
type transportEnv struct {
	*env
	now      atomic.Pointer[time.Time]
	refusals chan string // every handshake refusal's reason, after it was recorded
}

func setupTransport(t *testing.T, opts grpcapi.AdmitOptions) *transportEnv {
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
	te := &transportEnv{refusals: make(chan string, 4096)}
	start := time.Now()
	te.now.Store(&start)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	fl := fleet.New(st, authority, log, fleet.Config{ControllerAddr: "127.0.0.1:7443", EnrollPerMinute: 600, EnrollBurst: 100})
	deps := grpcapi.Deps{Store: st, CA: authority, Fleet: fl, Log: log, Now: func() time.Time { return *te.now.Load() }}
	authn := grpcapi.NewAuthenticator(deps)
	opts.Refused = func(addr netip.Addr, reason string, details map[string]any) {
		authn.HandshakeRefused(addr, reason, details)
		te.refusals <- reason
	}
	srv := grpc.NewServer(grpc.Creds(grpcapi.AdmitHandshakes(authority.ServerTLSConfig(certs.GetCertificate), opts)),
		grpc.ConnectionTimeout(time.Minute),
		grpc.UnaryInterceptor(authn.Unary), grpc.StreamInterceptor(authn.Stream))
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
	te.env = &env{st: st, ca: authority, past: past, caDir: dir, fleet: fl, addr: ln.Addr().String(),
		admin: &auth.Principal{UserID: u.ID, Email: u.Email, Scopes: []store.Scope{store.ScopeAdmin}}}
	return te
}

// dialerFrom dials from a loopback source address of its own, so a test
// has "another address" (127.0.0.2, ...) on one machine.
func dialerFrom(src string) func(context.Context, string) (net.Conn, error) {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	return func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
}

// clientFrom is env.client dialing from src.
func (e *env) clientFrom(t *testing.T, src string, cert *tls.Certificate) agentv1.AgentServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(e.addr, grpc.WithContextDialer(dialerFrom(src)),
		grpc.WithTransportCredentials(credentials.NewTLS(ca.ClientTLSConfig(e.ca.Pool(), cert))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return agentv1.NewAgentServiceClient(conn)
}

// eventsFrom lists the security events of a type from one address.
func (e *env) eventsFrom(t *testing.T, typ, ip string) []store.SecurityEvent {
	t.Helper()
	evs, err := e.st.SecurityEvents(context.Background(), store.SecurityEventFilter{Type: typ})
	if err != nil {
		t.Fatal(err)
	}
	var out []store.SecurityEvent
	for _, ev := range evs {
		if ev.IPAddress != nil && ev.IPAddress.String() == ip {
			out = append(out, ev)
		}
	}
	return out
}

// Refused agent calls from one address write at most the budget plus one
// summary; the next event recorded after a refill carries the count of
// those suppressed, and another address has a budget of its own.
func TestRefusalBudget(t *testing.T) {
	t.Parallel()
	e := setupTransport(t, grpcapi.AdmitOptions{})
	const n = 60
	c := e.clientFrom(t, "127.0.0.1", nil) // one HTTP/2 connection for all calls
	for range n {
		if _, _, err := connect(t, c, nil); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("call without a certificate: %v", err)
		}
	}
	refused := e.eventsFrom(t, "agent.connection_refused", "127.0.0.1")
	summaries := e.eventsFrom(t, "agent.events_suppressed", "127.0.0.1")
	if len(refused) > grpcapi.RefusalBurst || len(summaries) != 1 {
		t.Fatalf("%d refused calls wrote %d refusals and %d summaries, want at most %d and 1", n, len(refused), len(summaries), grpcapi.RefusalBurst)
	}
	// Another address is not silenced by the first one's flood.
	if _, _, err := connect(t, e.clientFrom(t, "127.0.0.2", nil), nil); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("call from 127.0.0.2: %v", err)
	}
	if len(e.eventsFrom(t, "agent.connection_refused", "127.0.0.2")) != 1 {
		t.Fatal("the refusal from another address was not recorded")
	}
	// A minute later the budget has refilled: the next refusal is recorded
	// with the count of those suppressed.
	later := e.now.Load().Add(time.Minute)
	e.now.Store(&later)
	if _, _, err := connect(t, c, nil); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("call after the refill: %v", err)
	}
	refused = e.eventsFrom(t, "agent.connection_refused", "127.0.0.1")
	if got := refused[0].Details["suppressed"]; got != float64(n-grpcapi.RefusalBurst) {
		t.Fatalf("suppressed count carried: %v, want %d", got, n-grpcapi.RefusalBurst)
	}
}

// Client certificates refused in the TLS handshake (another CA, expired)
// leave a security event each; a flood of them leaves at most the budget
// plus one summary.
func TestHandshakeRefusalsRecorded(t *testing.T) {
	t.Parallel()
	e := setupTransport(t, grpcapi.AdmitOptions{})
	id, _ := e.enroll(t, "web-1")
	other, _, err := ca.LoadOrCreate(t.TempDir(), ca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	key, csr := newCSR(t)
	foreign, err := other.SignAgentCSR(csr, id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	expired, err := e.past.SignAgentCSR(csr, id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// One raw TLS connection each (a gRPC client would re-dial on its
	// own): in TLS 1.3 the server checks the client's certificate after
	// the client's handshake returns, so the refusal shows on the read.
	handshake := func(src string, der []byte) string {
		t.Helper()
		raw, err := dialerFrom(src)(context.Background(), e.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
		c := tls.Client(raw, ca.ClientTLSConfig(e.ca.Pool(), &cert))
		if err := c.Handshake(); err == nil {
			if _, err := c.Read(make([]byte, 1)); err == nil {
				t.Fatal("a refused certificate got an answer")
			}
		}
		return <-e.refusals // recorded by now
	}
	if r := handshake("127.0.0.2", foreign.DER); r != "unknown_ca" {
		t.Fatalf("certificate of another CA refused as %q", r)
	}
	if r := handshake("127.0.0.3", expired.DER); r != "expired" {
		t.Fatalf("expired certificate refused as %q", r)
	}
	for ip, reason := range map[string]string{"127.0.0.2": "unknown_ca", "127.0.0.3": "expired"} {
		evs := e.eventsFrom(t, "agent.tls_handshake_refused", ip)
		if len(evs) == 0 || evs[0].Details["reason"] != reason || evs[0].Details["serial"] == nil {
			t.Fatalf("%s: events %+v", ip, evs)
		}
	}

	// A flood of foreign certificates from one address, each on its own
	// connection.
	const n = 40
	for range n {
		_ = handshake("127.0.0.4", foreign.DER)
	}
	refused := e.eventsFrom(t, "agent.tls_handshake_refused", "127.0.0.4")
	summaries := e.eventsFrom(t, "agent.events_suppressed", "127.0.0.4")
	if len(refused) > grpcapi.RefusalBurst || len(summaries) != 1 {
		t.Fatalf("%d refused handshakes wrote %d events and %d summaries", n, len(refused), len(summaries))
	}
}

// stalled is a client connection whose reads block until it is closed: a
// TLS client on it sends its ClientHello and then waits forever.
type stalled struct{ net.Conn }

func (c stalled) Read([]byte) (int, error) {
	var b [512]byte
	for {
		if _, err := c.Conn.Read(b[:]); err != nil {
			return 0, err
		}
	}
}

// 600 stalled connections from one address (sending nothing, a partial
// ClientHello, or a whole ClientHello and then nothing) do not keep a real
// agent at another address from connecting and calling. With the daemon's
// 512 slots and no per-address cap, the 520 whole-ClientHello stalls took
// every slot and the agent waited out its connect timeout.
func TestHandshakeSlowloris(t *testing.T) {
	t.Parallel()
	e := setupTransport(t, grpcapi.AdmitOptions{Slots: 512})
	id, cert := e.enroll(t, "web-1")
	const whole, partial, silent = 520, 40, 40
	var conns []net.Conn
	var wg sync.WaitGroup
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	})
	dial := func() net.Conn {
		c, err := dialerFrom("127.0.0.1")(context.Background(), e.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		return c
	}
	for range whole {
		c := dial()
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = tls.Client(stalled{c}, &tls.Config{ServerName: ca.ServerName, RootCAs: e.ca.Pool(), MinVersion: tls.VersionTLS13}).Handshake()
		}()
	}
	for range partial {
		// A handshake record header announcing 512 bytes, and 3 of them.
		if _, err := dial().Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01}); err != nil {
			t.Fatal(err)
		}
	}
	for range silent {
		dial()
	}
	// Wait until every one of them reached the server: all but the
	// per-address cap's 32 are refused at once.
	for got := 0; got < whole+partial+silent-32; {
		if r := <-e.refusals; r == "too_many_handshakes" {
			got++
		}
	}
	// The real agent, from another address, connects and calls while the
	// stalled connections are still open.
	_, m, err := connect(t, e.clientFrom(t, "127.0.0.2", &cert), nil)
	if err != nil || m.GetWelcome().GetServerId() != id.String() {
		t.Fatalf("agent behind a slowloris: %v %v", m, err)
	}
}

// An enrollment with a malformed CSR gets the same answer as one with a
// bad token, whichever is wrong and in whatever order the two are tried,
// and the token is checked even when the CSR is bad: the security event
// names both reasons. A valid token survives a bad CSR.
func TestEnrollBadCSRRevealsNothing(t *testing.T) {
	t.Parallel()
	e := setup(t, 100)
	ctx := context.Background()
	c := e.client(t, nil)
	_, csr := newCSR(t)
	res, err := e.fleet.AddServer(ctx, e.admin, fleet.Peer{}, "db-1", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	unknown := "bjt_" + strings.Repeat("Z", 43)
	bad := []byte("not a csr")
	var answers []string
	for _, tc := range []struct {
		name  string
		token string
		csr   []byte
	}{
		{"good token, bad CSR", res.Token, bad},
		{"bad token, good CSR", unknown, csr},
		{"bad token, bad CSR", unknown, bad},
		{"good token, bad CSR again", res.Token, bad},
		{"malformed token, bad CSR", "nope", bad},
	} {
		_, err := c.Enroll(ctx, &agentv1.EnrollRequest{Token: tc.token, CsrDer: tc.csr})
		answers = append(answers, status.Code(err).String()+": "+status.Convert(err).Message())
		if status.Code(err) != codes.PermissionDenied || answers[len(answers)-1] != answers[0] {
			t.Fatalf("%s: %q, want %q", tc.name, answers[len(answers)-1], answers[0])
		}
	}
	evs, err := e.st.SecurityEvents(ctx, store.SecurityEventFilter{Type: "agent.enroll_refused"})
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for i := len(evs) - 1; i >= 0; i-- {
		reasons = append(reasons, evs[i].Details["reason"].(string))
	}
	want := []string{"bad_csr", "invalid_token", "bad_csr,invalid_token", "bad_csr", "bad_csr,malformed_token"}
	if strings.Join(reasons, " ") != strings.Join(want, " ") {
		t.Fatalf("recorded reasons %q, want %q", reasons, want)
	}
	if _, err := c.Enroll(ctx, &agentv1.EnrollRequest{Token: res.Token, CsrDer: csr}); err != nil {
		t.Fatalf("the token did not survive bad CSRs: %v", err)
	}
}

// caKey reads the CA's private key from its directory, as an attacker who
// stole it would.
func (e *env) caKey(t *testing.T) any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.caDir, ca.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	key, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// A certificate forged with the CA's key, for a real serial and server but
// another key, is refused with a critical security event.
func TestForgedCertificateRefused(t *testing.T) {
	t.Parallel()
	e := setup(t, 100)
	id, real := e.enroll(t, "web-1")
	leaf, err := x509.ParseCertificate(real.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := *leaf
	tmpl.PublicKey, tmpl.Raw, tmpl.RawTBSCertificate, tmpl.RawSubjectPublicKeyInfo, tmpl.Signature = nil, nil, nil, nil, nil
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, e.ca.Cert(), &key.PublicKey, e.caKey(t))
	if err != nil {
		t.Fatal(err)
	}
	forged := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	_, _, err = connect(t, e.client(t, &forged), nil)
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("forged certificate with a real serial: %v", err)
	}
	evs, _ := e.st.SecurityEvents(context.Background(), store.SecurityEventFilter{Type: "agent.connection_refused"})
	if len(evs) == 0 || evs[0].Severity != store.SeverityCritical || evs[0].ServerID == nil || *evs[0].ServerID != id ||
		!strings.Contains(evs[0].Details["reason"].(string), "key does not match") {
		t.Fatalf("refusal recorded: %+v", evs)
	}
	// The real certificate still works.
	if _, m, err := connect(t, e.client(t, &real), nil); err != nil || m.GetWelcome() == nil {
		t.Fatalf("real certificate: %v %v", m, err)
	}
}

// renewOn asks for a renewal over a live stream and returns the new
// certificate with its key.
func renewOn(t *testing.T, s agentv1.AgentService_ConnectClient) (tls.Certificate, error) {
	t.Helper()
	key, csr := newCSR(t)
	if err := s.Send(&agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_Renew{Renew: &agentv1.RenewRequest{CsrDer: csr}}}); err != nil {
		return tls.Certificate{}, err
	}
	for {
		m, err := s.Recv()
		if err != nil {
			return tls.Certificate{}, err
		}
		if r := m.GetRenew(); r != nil {
			return tls.Certificate{Certificate: [][]byte{r.GetCertificateDer()}, PrivateKey: key}, nil
		}
	}
}

// waitEnd reads a stream until it ends and returns why.
func waitEnd(s agentv1.AgentService_ConnectClient) error {
	for {
		if _, err := s.Recv(); err != nil {
			return err
		}
	}
}

func serialOf(t *testing.T, c tls.Certificate) string {
	t.Helper()
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return ca.SerialHex(leaf)
}

// A renewal leaves the old certificate valid until the new one is used;
// the first connection with the new one revokes the old one and cuts the
// stream still using it.
func TestRenewalRevokesOldOnceInUse(t *testing.T) {
	t.Parallel()
	e := setup(t, 100)
	ctx := context.Background()
	id, old := e.enroll(t, "web-1")
	s, _, err := connect(t, e.client(t, &old), nil)
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := renewOn(t, s)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := e.st.CheckAgentCertificate(ctx, id, serialOf(t, old)); err != nil || st.Revoked {
		t.Fatalf("old certificate before the renewal is used: %+v %v", st, err)
	}
	if _, m, err := connect(t, e.client(t, &renewed), nil); err != nil || m.GetWelcome() == nil {
		t.Fatalf("renewed certificate: %v %v", m, err)
	}
	if err := waitEnd(s); status.Code(err) != codes.PermissionDenied && status.Code(err) != codes.Aborted {
		t.Fatalf("old stream ended with %v", err)
	}
	if st, err := e.st.CheckAgentCertificate(ctx, id, serialOf(t, old)); err != nil || !st.Revoked {
		t.Fatalf("old certificate after the renewal is used: %+v %v", st, err)
	}
	if _, _, err := connect(t, e.client(t, &old), nil); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("old certificate after renewal: %v", err)
	}
}

// Renewals are limited per server: with week-long certificates, the
// seventh within an hour is refused with ResourceExhausted.
func TestRenewalRateLimited(t *testing.T) {
	t.Parallel()
	e := setup(t, 100)
	_, cert := e.enroll(t, "web-1")
	s, _, err := connect(t, e.client(t, &cert), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		if _, err := renewOn(t, s); err != nil {
			t.Fatalf("renewal %d: %v", i+1, err)
		}
	}
	if _, err := renewOn(t, s); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("seventh renewal in an hour: %v", err)
	}
	evs, _ := e.st.SecurityEvents(context.Background(), store.SecurityEventFilter{Type: "certificate.renewal_refused"})
	if len(evs) != 1 || evs[0].Details["reason"] != "rate_limited" {
		t.Fatalf("refusal recorded: %+v", evs)
	}
}

// A renewal that arrives while a disable holds the server cannot leave an
// unrevoked certificate behind: it waits for the disable's transaction and
// is then refused.
func TestRenewalCannotRaceDisable(t *testing.T) {
	t.Parallel()
	e := setup(t, 100)
	ctx := context.Background()
	id, cert := e.enroll(t, "web-1")
	s, _, err := connect(t, e.client(t, &cert), nil)
	if err != nil {
		t.Fatal(err)
	}
	renewed := make(chan error, 1)
	err = e.st.InTx(ctx, func(tx *store.Store) error {
		// Disable's steps, held open in the middle.
		if err := tx.LockServer(ctx, id); err != nil {
			return err
		}
		if _, err := tx.RevokeServerCertificates(ctx, id, "server disabled"); err != nil {
			return err
		}
		go func() { _, err := renewOn(t, s); renewed <- err }()
		// Wait for the renewal to wait on the server's lock, or to
		// answer without waiting (the race this test is about).
		for {
			select {
			case err := <-renewed:
				return errors.Join(errors.New("the renewal did not wait for the disable"), err)
			default:
			}
			var waiting int
			if err := e.st.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`).Scan(&waiting); err != nil {
				return err
			}
			if waiting > 0 {
				break
			}
			time.Sleep(5 * time.Millisecond) // polling the condition, not timing it
		}
		_, err := tx.DisableServer(ctx, id)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-renewed; err == nil {
		t.Fatal("renewal issued a certificate for a server being disabled")
	}
	certs, err := e.st.AgentCertificates(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range certs {
		if c.RevokedAt == nil {
			t.Fatalf("certificate %s of a disabled server is not revoked", c.Serial)
		}
	}
}

// berth server revoke-cert's RPC: admin only, audited, lists in GetServer,
// and cuts the live stream using the serial, on every controller (here
// through LISTEN/NOTIFY: the revoking service is not the one holding the
// stream).
func TestRevokeCertificateCutsLiveStream(t *testing.T) {
	t.Parallel()
	e := setup(t, 100)
	ctx, cancel := context.WithCancel(context.Background())
	listening := make(chan struct{})
	go func() { defer close(listening); e.fleet.ListenRevocations(ctx, e.st.Pool()) }()
	t.Cleanup(func() { cancel(); <-listening })
	id, cert := e.enroll(t, "web-1")
	s, _, err := connect(t, e.client(t, &cert), nil)
	if err != nil {
		t.Fatal(err)
	}
	serial := serialOf(t, cert)

	read, rctx := e.adminClient(t, e.token(t, e.admin.UserID, store.ScopeRead))
	if _, err := read.RevokeCertificate(rctx, &adminv1.RevokeCertificateRequest{Serial: serial}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("read token revokes: %v", err)
	}
	got, err := read.GetServer(rctx, &adminv1.GetServerRequest{Server: "web-1"})
	if err != nil || len(got.GetCertificates()) != 1 || got.GetCertificates()[0].GetSerial() != serial || got.GetCertificates()[0].GetRevoked() {
		t.Fatalf("certificates listed: %v %v", got.GetCertificates(), err)
	}

	// Another controller's service, sharing the database.
	other := fleet.New(e.st, e.ca, slog.New(slog.NewTextHandler(io.Discard, nil)), fleet.Config{})
	if _, err := other.RevokeCertificate(ctx, e.admin, fleet.Peer{}, "not hex"); !errors.Is(err, fleet.ErrInvalid) {
		t.Fatalf("malformed serial: %v", err)
	}
	if _, err := other.RevokeCertificate(ctx, e.admin, fleet.Peer{}, "abc"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown serial: %v", err)
	}
	sid, err := other.RevokeCertificate(ctx, e.admin, fleet.Peer{}, serial)
	if err != nil || sid != id {
		t.Fatalf("revoke: %v %v", sid, err)
	}
	if err := waitEnd(s); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("stream after revoke-cert: %v", err)
	}
	if _, _, err := connect(t, e.client(t, &cert), nil); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("revoked certificate connects: %v", err)
	}
	evs, _ := e.st.SecurityEvents(ctx, store.SecurityEventFilter{Type: "certificate.revoked"})
	if len(evs) != 1 || evs[0].Details["serial"] != serial || evs[0].Actor != e.admin.Email {
		t.Fatalf("revocation recorded: %+v", evs)
	}

	// Through the admin API as well.
	_, cert2 := e.enroll(t, "web-2")
	admin, actx := e.adminClient(t, e.token(t, e.admin.UserID, store.ScopeAdmin))
	if _, err := admin.RevokeCertificate(actx, &adminv1.RevokeCertificateRequest{Serial: serialOf(t, cert2)}); err != nil {
		t.Fatalf("admin revoke: %v", err)
	}
	if _, err := admin.RevokeCertificate(actx, &adminv1.RevokeCertificateRequest{Serial: serialOf(t, cert2)}); status.Code(err) != codes.NotFound {
		t.Fatalf("revoking twice: %v", err)
	}
}

// A certificate recorded before keys were (migration 000024) is pinned to
// the key of its first connection; a forgery of it after that is refused.
func TestLegacyCertificateKeyPinnedOnFirstUse(t *testing.T) {
	t.Parallel()
	e := setup(t, 100)
	ctx := context.Background()
	id, _ := e.enroll(t, "web-1")
	key, csr := newCSR(t)
	iss, err := e.ca.SignAgentCSR(csr, id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// Recorded the way rows from before the migration are: no key.
	if _, err := e.st.RecordAgentCertificate(ctx, store.AgentCertificate{ServerID: id, Serial: iss.SerialHex, IssuedFor: "renew", NotBefore: iss.NotBefore, NotAfter: iss.NotAfter}); err != nil {
		t.Fatal(err)
	}
	legacy := tls.Certificate{Certificate: [][]byte{iss.DER}, PrivateKey: key}
	if _, m, err := connect(t, e.client(t, &legacy), nil); err != nil || m.GetWelcome() == nil {
		t.Fatalf("legacy certificate: %v %v", m, err)
	}
	st, err := e.st.CheckAgentCertificate(ctx, id, iss.SerialHex)
	if err != nil || len(st.SPKISHA256) != 32 {
		t.Fatalf("key not pinned on first use: %+v %v", st, err)
	}
	leaf, _ := x509.ParseCertificate(iss.DER)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := *leaf
	tmpl.PublicKey, tmpl.Raw, tmpl.RawTBSCertificate, tmpl.RawSubjectPublicKeyInfo, tmpl.Signature = nil, nil, nil, nil, nil
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, e.ca.Cert(), &other.PublicKey, e.caKey(t))
	if err != nil {
		t.Fatal(err)
	}
	forged := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: other}
	if _, _, err := connect(t, e.client(t, &forged), nil); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("forgery of a pinned legacy certificate: %v", err)
	}
}

// A revocation takes the server's lock as a renewal does, so a renewal
// presenting the certificate being revoked cannot read "not revoked" and
// issue a successor after the revocation: here the renewal's first step
// holds the lock, and the revocation must wait for it.
func TestRevokeCertificateWaitsForRenewal(t *testing.T) {
	t.Parallel()
	e := setup(t, 100)
	ctx := context.Background()
	id, cert := e.enroll(t, "web-1")
	serial := serialOf(t, cert)
	revoked := make(chan error, 1)
	err := e.st.InTx(ctx, func(tx *store.Store) error {
		if _, err := tx.LockServerForRenewal(ctx, id, serial); err != nil {
			return err
		}
		go func() { _, err := e.fleet.RevokeCertificate(ctx, e.admin, fleet.Peer{}, serial); revoked <- err }()
		for {
			select {
			case err := <-revoked:
				return errors.Join(errors.New("the revocation did not wait for the renewal holding the server"), err)
			default:
			}
			var waiting int
			if err := e.st.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`).Scan(&waiting); err != nil {
				return err
			}
			if waiting > 0 {
				// Whatever it waits on, it must not have revoked yet: a
				// renewal still holding the server could issue a successor.
				if st, err := e.st.CheckAgentCertificate(ctx, id, serial); err != nil || st.Revoked {
					return fmt.Errorf("the certificate was revoked while a renewal held its server (%v)", err)
				}
				return nil
			}
			time.Sleep(5 * time.Millisecond) // polling the condition, not timing it
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-revoked; err != nil {
		t.Fatalf("revoke after the renewal's transaction: %v", err)
	}
	if st, err := e.st.CheckAgentCertificate(ctx, id, serial); err != nil || !st.Revoked {
		t.Fatalf("certificate after revoke: %+v %v", st, err)
	}
}
