package grpcapi

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/berthhq/berth/controller/internal/ca"
)

// AdmitOptions bound the TLS handshakes of the agent port.
type AdmitOptions struct {
	// Slots is how many handshakes run at once (after their ClientHello).
	Slots int
	// PerAddress is how many connections from one address may be in their
	// handshake at once, counted from accept; more are closed at once
	// (default 32).
	PerAddress int
	// HelloTimeout is how long a new connection has to send its whole
	// ClientHello (default 10s).
	HelloTimeout time.Duration
	// QueueTimeout is how long a connection whose ClientHello arrived may
	// wait for a slot, counted from accept (default 1m): the agents of a
	// fleet reconnecting at once queue here.
	QueueTimeout time.Duration
	// HandshakeTimeout is how long the rest of the handshake (and the
	// HTTP/2 preface after it) may take once admitted (default 10s).
	HandshakeTimeout time.Duration
	// Refused, when set, is told of every handshake refused for a reason
	// worth an audit record: a client certificate that does not verify, a
	// stall past a deadline, too many handshakes from one address. It is
	// called on the handshake's goroutine after its slot is released.
	Refused func(addr netip.Addr, reason string, details map[string]any)
}

func (o *AdmitOptions) checkAndSetDefaults() {
	if o.Slots <= 0 {
		o.Slots = 512
	}
	if o.PerAddress <= 0 {
		o.PerAddress = 32
	}
	if o.HelloTimeout <= 0 {
		o.HelloTimeout = 10 * time.Second
	}
	if o.QueueTimeout <= 0 {
		o.QueueTimeout = time.Minute
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 10 * time.Second
	}
}

// AdmitHandshakes returns server credentials for cfg that run at most
// o.Slots TLS handshakes at a time; the rest wait their turn in arrival
// order.
//
// A fleet reconnecting at once (after a controller restart, or a network
// cut healing) starts thousands of handshakes together. Run all at once,
// they share the CPU evenly and every one of them finishes late, past the
// agents' dial deadline, so the work is thrown away and retried with
// backoff: 10,000 simulated agents lost a third of their first attempts
// this way (scripts/fleet-bench.sh). Admitted a few at a time, each is
// over in milliseconds and the queue drains at the machine's full rate.
//
// The port is public (enrollment needs no certificate), so the slots must
// not be a target: a connection takes its place only once its whole
// ClientHello has arrived, which must happen within HelloTimeout; once
// admitted, the rest of the handshake has HandshakeTimeout. Only the wait
// for a place may last QueueTimeout (the minute agents wait for their
// handshake), and one address holds at most PerAddress connections in
// their handshake, so a single host stalling connections cannot fill the
// slots for everyone else.
func AdmitHandshakes(cfg *tls.Config, o AdmitOptions) credentials.TransportCredentials {
	o.checkAndSetDefaults()
	a := &admission{admitState: &admitState{slots: make(chan struct{}, o.Slots), opts: o, perAddr: map[netip.Addr]int{}}}
	cfg = cfg.Clone()
	inner := cfg.GetConfigForClient
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if c, ok := hello.Conn.(*admittedConn); ok && !c.admitted {
			wait := time.NewTimer(time.Until(c.start.Add(o.QueueTimeout)))
			defer wait.Stop()
			select {
			case a.slots <- struct{}{}:
			case <-wait.C:
				c.queueTimedOut = true
				return nil, errQueueTimeout
			}
			c.admitted = true
			_ = c.Conn.SetDeadline(time.Now().Add(o.HandshakeTimeout))
		}
		if inner != nil {
			return inner(hello)
		}
		return nil, nil
	}
	a.TransportCredentials = credentials.NewTLS(cfg)
	return a
}

var (
	errQueueTimeout = errors.New("grpcapi: waited too long for a handshake slot")
	errTooMany      = errors.New("grpcapi: too many handshakes from this address")
)

type admission struct {
	credentials.TransportCredentials
	*admitState // shared by clones
}

type admitState struct {
	slots chan struct{}
	opts  AdmitOptions

	mu      sync.Mutex
	perAddr map[netip.Addr]int // connections in their handshake, by admitKey
}

// admittedConn marks a connection in its handshake; its fields are set and
// read on the handshake's goroutine only.
type admittedConn struct {
	net.Conn
	start         time.Time
	admitted      bool
	queueTimedOut bool
}

func remoteAddr(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// admitKey is what the per-address cap counts: an IPv4 address, or the
// /64 an IPv6 address lies in. One IPv6 host is normally given a whole /64,
// so counting single addresses would let it open PerAddress handshakes from
// each of 2^64 addresses.
func admitKey(ip netip.Addr) netip.Addr {
	if ip.Is6() && !ip.Is4In6() {
		if p, err := ip.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return ip
}

func (a *admitState) enter(ip netip.Addr) bool {
	k := admitKey(ip)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.perAddr[k] >= a.opts.PerAddress {
		return false
	}
	a.perAddr[k]++
	return true
}

func (a *admitState) leave(ip netip.Addr) {
	k := admitKey(ip)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.perAddr[k]--; a.perAddr[k] <= 0 {
		delete(a.perAddr, k)
	}
}

func (a *admission) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	ip := remoteAddr(raw)
	if !a.enter(ip) {
		raw.Close()
		a.refused(ip, errTooMany)
		return nil, nil, errTooMany
	}
	c := &admittedConn{Conn: raw, start: time.Now()}
	// Overrides grpc's ConnectionTimeout for the ClientHello; see above.
	_ = raw.SetDeadline(c.start.Add(a.opts.HelloTimeout))
	conn, info, err := a.TransportCredentials.ServerHandshake(c)
	if c.admitted {
		<-a.slots
	}
	a.leave(ip)
	if err != nil {
		a.refused(ip, err)
	}
	return conn, info, err
}

// refused reports a failed handshake worth recording. Connections closed
// before their ClientHello (port scans, load balancer health checks) are
// not: they asked for nothing.
func (a *admitState) refused(ip netip.Addr, err error) {
	if a.opts.Refused == nil {
		return
	}
	if reason, details := handshakeRefusal(err); reason != "" {
		a.opts.Refused(ip, reason, details)
	}
}

// handshakeRefusal names why a handshake failed, or "" when it is not
// worth a record.
func handshakeRefusal(err error) (string, map[string]any) {
	var cve *tls.CertificateVerificationError
	if errors.As(err, &cve) {
		d := map[string]any{}
		if len(cve.UnverifiedCertificates) > 0 {
			leaf := cve.UnverifiedCertificates[0]
			d["serial"] = ca.SerialHex(leaf)
			d["subject"] = leaf.Subject.CommonName
			d["not_after"] = leaf.NotAfter.UTC().Format(time.RFC3339)
		}
		var unknown x509.UnknownAuthorityError
		var invalid x509.CertificateInvalidError
		switch {
		case errors.As(cve.Err, &unknown):
			return "unknown_ca", d
		case errors.As(cve.Err, &invalid) && invalid.Reason == x509.Expired:
			return "expired", d
		case errors.As(cve.Err, &invalid) && invalid.Reason == x509.IncompatibleUsage:
			return "wrong_usage", d
		}
		d["error"] = cve.Err.Error()
		return "certificate_invalid", d
	}
	switch {
	case errors.Is(err, ca.ErrNotAgentCert):
		return "not_agent_certificate", map[string]any{"error": err.Error()}
	case errors.Is(err, errTooMany):
		return "too_many_handshakes", nil
	case errors.Is(err, errQueueTimeout):
		return "queue_timeout", nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "handshake_timeout", nil
	}
	return "", nil
}

func (a *admission) Clone() credentials.TransportCredentials {
	return &admission{TransportCredentials: a.TransportCredentials.Clone(), admitState: a.admitState}
}
