package ca

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// ServerTLSConfig is the controller's listener config: TLS 1.3 only, h2, the
// serving certificate from getCert (for example a ServerCertSource's
// GetCertificate), and client certificates verified against this CA when
// given (tls.VerifyClientCertIfGiven): enrollment and the bearer-token admin
// API connect without one, and the gRPC layer requires one for agent RPCs.
//
// A presented client certificate is checked by Go (chain, validity,
// ClientAuth) and then by VerifyAgentChain in VerifyConnection, so a
// certificate without a valid server identity fails the handshake. The
// config's clock is the CA's. getCert must not be nil.
func (c *CA) ServerTLSConfig(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: getCert,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		ClientCAs:      c.pool,
		NextProtos:     []string{"h2"},
		Time:           c.opts.Now,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil
			}
			_, _, err := c.VerifyAgentChain(cs.PeerCertificates, c.now())
			return err
		},
	}
}

// ClientTLSConfig is a client config that trusts only the CA certificates
// in caPool, verifies the fixed ServerName (so only a controller serving
// certificate passes, never an agent's), speaks TLS 1.3 only and h2, and
// presents cert when not nil. For the controller's CLI and tests; the agent
// has its own copy, as it cannot import controller code.
func ClientTLSConfig(caPool *x509.CertPool, cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    caPool,
		ServerName: ServerName,
		NextProtos: []string{"h2"},
	}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

// PinnedClientTLSConfig is ClientTLSConfig for a client that knows only the
// CA's pin (the CLI's --ca-pin): the controller's chain must end with a CA
// certificate matching pin, and the leaf must verify under it for
// ServerName with ServerAuth usage. A malformed pin is refused here, before
// any connection.
func PinnedClientTLSConfig(pin string, cert *tls.Certificate) (*tls.Config, error) {
	if _, err := ParsePin(pin); err != nil {
		return nil, err
	}
	cfg := ClientTLSConfig(nil, cert)
	// Go's default verification needs the roots up front; the chain is
	// verified in VerifyConnection instead, against the pinned root.
	cfg.InsecureSkipVerify = true //nolint:gosec // verified in VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		return verifyPinnedServer(cs.PeerCertificates, pin)
	}
	return cfg, nil
}

func verifyPinnedServer(certs []*x509.Certificate, pin string) error {
	if len(certs) < 2 {
		return errors.New("ca: the controller sent no CA certificate in its chain")
	}
	root := certs[len(certs)-1]
	if err := CheckPin(root, pin); err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	if _, err := certs[0].Verify(x509.VerifyOptions{
		DNSName:   ServerName,
		Roots:     roots,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return fmt.Errorf("ca: controller certificate: %w", err)
	}
	return nil
}
