package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
)

// fakeClock is an injectable clock tests can move.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

// newClock starts at the current time, truncated to whole seconds (the
// precision of certificate times), so exact comparisons work.
func newClock() *fakeClock {
	return &fakeClock{t: time.Now().UTC().Truncate(time.Second)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newTestCA(t testing.TB, opts Options) *CA {
	t.Helper()
	c, created, err := LoadOrCreate(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if !created {
		t.Fatal("created = false for a new directory")
	}
	return c
}

func newID() ulid.ULID { return ulid.Make() }

func mustECKey(t testing.TB, curve elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustEdKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var rsaKey = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) })

func mustRSAKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, err := rsaKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func makeCSR(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{Subject: pkix.Name{CommonName: "agent-host"}}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// agentTLSCert issues an agent certificate for a new ECDSA key and returns
// it ready for tls.Config.Certificates.
func agentTLSCert(t testing.TB, c *CA, id ulid.ULID) (tls.Certificate, *Issued) {
	t.Helper()
	key := mustECKey(t, elliptic.P256())
	iss, err := c.SignAgentCSR(makeCSR(t, key, nil), id, 0)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{iss.DER}, PrivateKey: key}, iss
}

// handshakeResult is both sides' view of one TLS connection.
type handshakeResult struct {
	server    tls.ConnectionState
	serverErr error
	clientErr error
}

// handshake runs a real TLS handshake over net.Pipe. After a successful
// handshake the server writes "ok" and the client reads it, so a client
// certificate the server refuses (which TLS 1.3 reports only after the
// client's side of the handshake is done) shows up as a client error too.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) handshakeResult {
	t.Helper()
	cConn, sConn := net.Pipe()
	deadline := time.Now().Add(20 * time.Second)
	_ = cConn.SetDeadline(deadline)
	_ = sConn.SetDeadline(deadline)
	srv := tls.Server(sConn, serverCfg)
	cli := tls.Client(cConn, clientCfg)

	done := make(chan handshakeResult, 1)
	go func() {
		// Close the raw pipe: a TLS close_notify from both ends at once
		// would block on the unbuffered pipe.
		defer sConn.Close()
		err := srv.Handshake()
		if err == nil {
			_, err = srv.Write([]byte("ok"))
		}
		done <- handshakeResult{server: srv.ConnectionState(), serverErr: err}
	}()
	cerr := cli.Handshake()
	if cerr == nil {
		buf := make([]byte, 2)
		if _, cerr = io.ReadFull(cli, buf); cerr == nil && string(buf) != "ok" {
			t.Fatalf("client read %q", buf)
		}
	}
	cConn.Close()
	r := <-done
	r.clientErr = cerr
	return r
}

// staticCert is a GetCertificate that always returns cert.
func staticCert(cert tls.Certificate) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil }
}
