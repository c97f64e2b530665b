package grpcapi

import (
	"crypto/tls"
	"net"

	"google.golang.org/grpc/credentials"
)

// AdmitHandshakes returns server credentials for cfg that run at most n
// TLS handshakes at a time; the rest wait their turn in arrival order.
//
// A fleet reconnecting at once (after a controller restart, or a network
// cut healing) starts thousands of handshakes together. Run all at once,
// they share the CPU evenly and every one of them finishes late, past the
// agents' dial deadline, so the work is thrown away and retried with
// backoff: 10,000 simulated agents lost a third of their first attempts
// this way (scripts/fleet-bench.sh). Admitted a few at a time, each is
// over in milliseconds and the queue drains at the machine's full rate.
//
// A connection takes its place only once its ClientHello has arrived, so
// connections that send nothing hold no place; grpc's connection timeout
// bounds one that stalls later.
func AdmitHandshakes(cfg *tls.Config, n int) credentials.TransportCredentials {
	a := &admission{slots: make(chan struct{}, n)}
	cfg = cfg.Clone()
	inner := cfg.GetConfigForClient
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if c, ok := hello.Conn.(*admittedConn); ok && !c.admitted {
			a.slots <- struct{}{}
			c.admitted = true
		}
		if inner != nil {
			return inner(hello)
		}
		return nil, nil
	}
	a.TransportCredentials = credentials.NewTLS(cfg)
	return a
}

type admission struct {
	credentials.TransportCredentials
	slots chan struct{}
}

// admittedConn marks a connection in its handshake; admitted is set and
// read on the handshake's goroutine only.
type admittedConn struct {
	net.Conn
	admitted bool
}

func (a *admission) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	c := &admittedConn{Conn: raw}
	conn, info, err := a.TransportCredentials.ServerHandshake(c)
	if c.admitted {
		<-a.slots
	}
	return conn, info, err
}

func (a *admission) Clone() credentials.TransportCredentials {
	return &admission{TransportCredentials: a.TransportCredentials.Clone(), slots: a.slots}
}
