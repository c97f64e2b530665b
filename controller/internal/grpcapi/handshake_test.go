package grpcapi

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"net/netip"
	"testing"
	"time"
)

func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{"admit.test"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// stuckReader is a client connection that sends but never reads: its
// handshake stops after the ClientHello.
type stuckReader struct{ net.Conn }

func (c stuckReader) Read([]byte) (int, error) {
	var b [512]byte
	for { // swallow the server's answer until the connection is closed
		if _, err := c.Conn.Read(b[:]); err != nil {
			return 0, err
		}
	}
}

// A connection that has sent nothing holds no place; one mid-handshake
// holds its place until it ends, and the next waits for it.
func TestAdmitHandshakes(t *testing.T) {
	cert, pool := selfSigned(t)
	creds := AdmitHandshakes(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}, AdmitOptions{Slots: 1})
	a := creds.(*admission)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serverDone := make(chan error, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				conn, _, err := creds.ServerHandshake(c)
				if err == nil {
					conn.Close()
				}
				serverDone <- err
			}()
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	handshake := func(c net.Conn) chan error {
		done := make(chan error, 1)
		go func() {
			done <- tls.Client(c, &tls.Config{RootCAs: pool, ServerName: "admit.test", MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}}).Handshake()
		}()
		return done
	}

	idle := dial() // connected, never says a word
	if err := <-handshake(dial()); err != nil {
		t.Fatalf("a handshake waited for an idle connection: %v", err)
	}
	if err := <-serverDone; err != nil {
		t.Fatal(err)
	}

	stuckConn := dial()
	stuck := handshake(stuckReader{stuckConn})
	for len(a.slots) == 0 {
		time.Sleep(time.Millisecond)
	}
	next := handshake(dial())
	select {
	case err := <-next:
		t.Fatalf("second handshake ran beside the first (%v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	stuckConn.Close() // the stuck handshake fails and gives up its place
	if err := <-next; err != nil {
		t.Fatalf("waiting handshake: %v", err)
	}
	if err := <-stuck; err == nil {
		t.Fatal("stuck handshake succeeded")
	}
	var failed int
	for range 2 {
		if err := <-serverDone; err != nil {
			failed++
		}
	}
	if failed != 1 || len(a.slots) != 0 {
		t.Fatalf("%d server handshakes failed (want the stuck one), %d places held", failed, len(a.slots))
	}
	idle.Close()
	if err := <-serverDone; err == nil {
		t.Fatal("idle connection's handshake succeeded")
	}
}

// TestAdmitCapsAnIPv6Slash64 checks that the per-address cap counts an IPv6
// /64 as one address: a host given a /64 cannot multiply its handshakes by
// using many addresses of it, while its neighbours outside it are not held
// back and IPv4 addresses stay separate.
func TestAdmitCapsAnIPv6Slash64(t *testing.T) {
	a := &admitState{slots: make(chan struct{}, 8), opts: AdmitOptions{PerAddress: 2}, perAddr: map[netip.Addr]int{}}
	same := []netip.Addr{netip.MustParseAddr("2001:db8:1:2::1"), netip.MustParseAddr("2001:db8:1:2:ffff::9")}
	for _, ip := range same {
		if !a.enter(ip) {
			t.Fatalf("enter %s refused below the cap", ip)
		}
	}
	if a.enter(netip.MustParseAddr("2001:db8:1:2:abcd::7")) {
		t.Fatal("a third address of the same /64 was admitted past the cap of 2")
	}
	if !a.enter(netip.MustParseAddr("2001:db8:1:3::1")) {
		t.Fatal("an address of another /64 was refused")
	}
	if !a.enter(netip.MustParseAddr("192.0.2.1")) || !a.enter(netip.MustParseAddr("192.0.2.2")) || !a.enter(netip.MustParseAddr("192.0.2.2")) {
		t.Fatal("IPv4 addresses are counted one by one")
	}
	if a.enter(netip.MustParseAddr("192.0.2.2")) {
		t.Fatal("an IPv4 address was admitted past the cap")
	}
	a.leave(same[0])
	if !a.enter(netip.MustParseAddr("2001:db8:1:2::42")) {
		t.Fatal("leave did not free the /64's slot")
	}
}
