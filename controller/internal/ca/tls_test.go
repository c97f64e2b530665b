package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/url"
	"testing"
	"time"
)

func TestServerHandshake(t *testing.T) {
	t.Parallel()
	c := newTestCA(t, Options{Hostnames: []string{"ctl.example.com"}})
	src, err := c.ServerCertificateSource(nil)
	if err != nil {
		t.Fatal(err)
	}
	serverCfg := c.ServerTLSConfig(src.GetCertificate)

	t.Run("ClientTLSConfig", func(t *testing.T) {
		t.Parallel()
		r := handshake(t, serverCfg, ClientTLSConfig(c.Pool(), nil))
		if r.serverErr != nil || r.clientErr != nil {
			t.Fatalf("server %v, client %v", r.serverErr, r.clientErr)
		}
		if r.server.Version != tls.VersionTLS13 || r.server.NegotiatedProtocol != "h2" {
			t.Fatalf("version %x, ALPN %q", r.server.Version, r.server.NegotiatedProtocol)
		}
		if len(r.server.PeerCertificates) != 0 {
			t.Fatal("client certificate appeared from nowhere")
		}
	})
	t.Run("configured hostname", func(t *testing.T) {
		t.Parallel()
		cfg := ClientTLSConfig(c.Pool(), nil)
		cfg.ServerName = "ctl.example.com"
		if r := handshake(t, serverCfg, cfg); r.clientErr != nil {
			t.Fatal(r.clientErr)
		}
	})
	t.Run("other server name", func(t *testing.T) {
		t.Parallel()
		cfg := ClientTLSConfig(c.Pool(), nil)
		cfg.ServerName = "other.berth.internal"
		r := handshake(t, serverCfg, cfg)
		var hostErr x509.HostnameError
		if !errors.As(r.clientErr, &hostErr) {
			t.Fatalf("client err = %v, want a HostnameError", r.clientErr)
		}
	})
	t.Run("TLS 1.2 client", func(t *testing.T) {
		t.Parallel()
		cfg := ClientTLSConfig(c.Pool(), nil)
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		r := handshake(t, serverCfg, cfg)
		if r.serverErr == nil || r.clientErr == nil {
			t.Fatalf("TLS 1.2 accepted: server %v, client %v", r.serverErr, r.clientErr)
		}
	})
	t.Run("another CA's client", func(t *testing.T) {
		t.Parallel()
		other := newTestCA(t, Options{})
		r := handshake(t, serverCfg, ClientTLSConfig(other.Pool(), nil))
		var unknown x509.UnknownAuthorityError
		if !errors.As(r.clientErr, &unknown) {
			t.Fatalf("client err = %v, want UnknownAuthorityError", r.clientErr)
		}
	})
}

func TestMutualTLS(t *testing.T) {
	t.Parallel()
	clk := newClock()
	c := newTestCA(t, Options{Now: clk.Now})
	serverCert, err := c.IssueServerCert(nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	serverCfg := c.ServerTLSConfig(staticCert(serverCert))

	t.Run("agent certificate accepted", func(t *testing.T) {
		t.Parallel()
		id := newID()
		agent, iss := agentTLSCert(t, c, id)
		r := handshake(t, serverCfg, ClientTLSConfig(c.Pool(), &agent))
		if r.serverErr != nil || r.clientErr != nil {
			t.Fatalf("server %v, client %v", r.serverErr, r.clientErr)
		}
		got, serial, err := c.VerifyAgentChain(r.server.PeerCertificates, time.Time{})
		if err != nil || got != id || serial != iss.SerialHex {
			t.Fatalf("VerifyAgentChain = %s %s %v", got, serial, err)
		}
	})
	t.Run("Ed25519 agent accepted", func(t *testing.T) {
		t.Parallel()
		key := mustEdKey(t)
		iss, err := c.SignAgentCSR(makeCSR(t, key, nil), newID(), 0)
		if err != nil {
			t.Fatal(err)
		}
		agent := tls.Certificate{Certificate: [][]byte{iss.DER}, PrivateKey: key}
		if r := handshake(t, serverCfg, ClientTLSConfig(c.Pool(), &agent)); r.serverErr != nil || r.clientErr != nil {
			t.Fatalf("server %v, client %v", r.serverErr, r.clientErr)
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		t.Parallel()
		r := handshake(t, serverCfg, ClientTLSConfig(c.Pool(), nil))
		if r.serverErr != nil || r.clientErr != nil {
			t.Fatalf("server %v, client %v", r.serverErr, r.clientErr)
		}
		if _, _, err := c.VerifyAgentChain(r.server.PeerCertificates, time.Time{}); !errors.Is(err, ErrNoClientCert) {
			t.Fatalf("VerifyAgentChain = %v, want ErrNoClientCert", err)
		}
	})
	t.Run("another CA's agent rejected", func(t *testing.T) {
		t.Parallel()
		other := newTestCA(t, Options{})
		agent, _ := agentTLSCert(t, other, newID())
		r := handshake(t, serverCfg, ClientTLSConfig(c.Pool(), &agent))
		var unknown x509.UnknownAuthorityError
		if !errors.As(r.serverErr, &unknown) || r.clientErr == nil {
			t.Fatalf("server %v, client %v", r.serverErr, r.clientErr)
		}
		leaf, _ := x509.ParseCertificate(agent.Certificate[0])
		if _, _, err := c.VerifyAgentChain([]*x509.Certificate{leaf}, time.Time{}); !errors.Is(err, ErrNotAgentCert) {
			t.Fatalf("VerifyAgentChain = %v", err)
		}
	})
	t.Run("expired agent rejected", func(t *testing.T) {
		t.Parallel()
		// Its own CA and clock, so moving the clock affects no other subtest.
		clk := newClock()
		c := newTestCA(t, Options{Now: clk.Now})
		serverCert, err := c.IssueServerCert(nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		serverCfg := c.ServerTLSConfig(staticCert(serverCert))
		agent, iss := agentTLSCert(t, c, newID())
		if r := handshake(t, serverCfg, ClientTLSConfig(c.Pool(), &agent)); r.serverErr != nil {
			t.Fatalf("fresh certificate: %v", r.serverErr)
		}
		clk.Advance(7*24*time.Hour + time.Second)
		r := handshake(t, serverCfg, ClientTLSConfig(c.Pool(), &agent))
		var invalid x509.CertificateInvalidError
		if !errors.As(r.serverErr, &invalid) || invalid.Reason != x509.Expired || r.clientErr == nil {
			t.Fatalf("server %v, client %v", r.serverErr, r.clientErr)
		}
		leaf, _ := x509.ParseCertificate(iss.DER)
		if _, _, err := c.VerifyAgentChain([]*x509.Certificate{leaf}, time.Time{}); !errors.Is(err, ErrNotAgentCert) {
			t.Fatalf("VerifyAgentChain = %v", err)
		}
	})
	t.Run("agent certificate as server rejected", func(t *testing.T) {
		t.Parallel()
		agent, _ := agentTLSCert(t, c, newID())
		r := handshake(t, c.ServerTLSConfig(staticCert(agent)), ClientTLSConfig(c.Pool(), nil))
		if r.clientErr == nil {
			t.Fatal("client accepted an agent certificate as the controller")
		}
		// Even with the fixed name, ClientAuth usage alone is refused.
		key := mustECKey(t, elliptic.P256())
		leaf, err := c.sign(&x509.Certificate{
			Subject:     pkix.Name{CommonName: ServerName},
			DNSNames:    []string{ServerName},
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}, key.Public(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		fake := tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key}
		r = handshake(t, c.ServerTLSConfig(staticCert(fake)), ClientTLSConfig(c.Pool(), nil))
		var invalid x509.CertificateInvalidError
		if !errors.As(r.clientErr, &invalid) || invalid.Reason != x509.IncompatibleUsage {
			t.Fatalf("client err = %v, want IncompatibleUsage", r.clientErr)
		}
	})
	t.Run("server certificate as client rejected", func(t *testing.T) {
		t.Parallel()
		if _, _, err := c.VerifyAgentChain([]*x509.Certificate{serverCert.Leaf}, time.Time{}); !errors.Is(err, ErrNotAgentCert) {
			t.Fatalf("VerifyAgentChain = %v, want ErrNotAgentCert", err)
		}
		r := handshake(t, serverCfg, ClientTLSConfig(c.Pool(), &serverCert))
		if r.serverErr == nil || r.clientErr == nil {
			t.Fatalf("server %v, client %v", r.serverErr, r.clientErr)
		}
	})
	t.Run("identity checked at handshake", func(t *testing.T) {
		t.Parallel()
		// Chains to the CA with ClientAuth, but has no server identity, or
		// carries ServerAuth too: Go's checks pass, VerifyConnection refuses.
		id := newID()
		for name, tmpl := range map[string]*x509.Certificate{
			"no URI": {
				Subject:     pkix.Name{CommonName: id.String()},
				ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			},
			"ServerAuth too": {
				Subject:     pkix.Name{CommonName: id.String()},
				URIs:        []*url.URL{ServerURI(id)},
				ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
			},
			"DNS name": {
				Subject:     pkix.Name{CommonName: id.String()},
				URIs:        []*url.URL{ServerURI(id)},
				DNSNames:    []string{"agent.example.com"},
				ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			},
		} {
			key := mustECKey(t, elliptic.P256())
			leaf, err := c.sign(tmpl, key.Public(), time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := c.VerifyAgentChain([]*x509.Certificate{leaf}, time.Time{}); !errors.Is(err, ErrNotAgentCert) {
				t.Errorf("%s: VerifyAgentChain = %v", name, err)
			}
			agent := tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key}
			if r := handshake(t, serverCfg, ClientTLSConfig(c.Pool(), &agent)); !errors.Is(r.serverErr, ErrNotAgentCert) {
				t.Errorf("%s: server err = %v, want ErrNotAgentCert", name, r.serverErr)
			}
		}
	})
}

func TestVerifyAgentChainIgnoresSuppliedIntermediates(t *testing.T) {
	t.Parallel()
	c := newTestCA(t, Options{})
	other := newTestCA(t, Options{})
	_, iss := agentTLSCert(t, other, newID())
	leaf, _ := x509.ParseCertificate(iss.DER)
	// Sending the other CA along does not make its agents ours.
	if _, _, err := c.VerifyAgentChain([]*x509.Certificate{leaf, other.Cert()}, time.Time{}); !errors.Is(err, ErrNotAgentCert) {
		t.Fatalf("err = %v", err)
	}
	if _, _, err := c.VerifyAgentChain([]*x509.Certificate{nil}, time.Time{}); !errors.Is(err, ErrNoClientCert) {
		t.Fatalf("nil leaf: %v", err)
	}
}

func TestPinnedClientTLSConfig(t *testing.T) {
	t.Parallel()
	c := newTestCA(t, Options{})
	other := newTestCA(t, Options{})
	serverCert, err := c.IssueServerCert(nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	serverCfg := c.ServerTLSConfig(staticCert(serverCert))

	cfg, err := PinnedClientTLSConfig(c.Pin(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := handshake(t, serverCfg, cfg); r.clientErr != nil || r.serverErr != nil {
		t.Fatalf("right pin: server %v, client %v", r.serverErr, r.clientErr)
	}

	cfg, _ = PinnedClientTLSConfig(other.Pin(), nil)
	if r := handshake(t, serverCfg, cfg); !errors.Is(r.clientErr, ErrPinMismatch) {
		t.Fatalf("wrong pin: client %v", r.clientErr)
	}

	// A chain without the CA cannot be pinned.
	leafOnly := serverCert
	leafOnly.Certificate = leafOnly.Certificate[:1]
	cfg, _ = PinnedClientTLSConfig(c.Pin(), nil)
	if r := handshake(t, c.ServerTLSConfig(staticCert(leafOnly)), cfg); r.clientErr == nil {
		t.Fatal("accepted a chain without the CA")
	}

	// The pinned CA's agent certificate cannot pose as the controller,
	// even when the CA is appended to its chain.
	agent, _ := agentTLSCert(t, c, newID())
	agent.Certificate = append(agent.Certificate, c.Cert().Raw)
	cfg, _ = PinnedClientTLSConfig(c.Pin(), nil)
	if r := handshake(t, c.ServerTLSConfig(staticCert(agent)), cfg); r.clientErr == nil {
		t.Fatal("accepted an agent certificate as the controller")
	}

	// A self-made chain ending in a certificate with the pinned key is
	// impossible without the key; one ending in another CA fails the pin.
	fake, err := other.IssueServerCert(nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ = PinnedClientTLSConfig(c.Pin(), nil)
	if r := handshake(t, other.ServerTLSConfig(staticCert(fake)), cfg); !errors.Is(r.clientErr, ErrPinMismatch) {
		t.Fatalf("other CA's controller: client %v", r.clientErr)
	}

	if _, err := PinnedClientTLSConfig("sha256:abc", nil); !errors.Is(err, ErrMalformedPin) {
		t.Fatalf("malformed pin: %v", err)
	}
}

func TestServerTLSConfigFields(t *testing.T) {
	t.Parallel()
	c := newTestCA(t, Options{})
	cfg := c.ServerTLSConfig(nil)
	if cfg.MinVersion != tls.VersionTLS13 || cfg.ClientAuth != tls.VerifyClientCertIfGiven || cfg.ClientCAs == nil ||
		len(cfg.NextProtos) != 1 || cfg.NextProtos[0] != "h2" || cfg.InsecureSkipVerify {
		t.Fatalf("%+v", cfg)
	}
	agent, _ := agentTLSCert(t, c, newID())
	cl := ClientTLSConfig(c.Pool(), &agent)
	if cl.MinVersion != tls.VersionTLS13 || cl.ServerName != ServerName || cl.RootCAs == nil || len(cl.Certificates) != 1 || cl.InsecureSkipVerify {
		t.Fatalf("%+v", cl)
	}
	if _, ok := agent.PrivateKey.(*ecdsa.PrivateKey); !ok {
		t.Fatal("agent key")
	}
}
