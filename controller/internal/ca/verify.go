package ca

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
)

// ErrNoClientCert means a connection presented no client certificate.
var ErrNoClientCert = errors.New("ca: no client certificate")

// ErrNotAgentCert means a certificate is not a valid agent certificate of
// this CA; the wrapped message says why.
var ErrNotAgentCert = errors.New("ca: not a valid agent certificate")

// SerialHex is cert's serial number in lowercase hex without leading zeros,
// the key under which issued certificates are recorded and revoked.
func SerialHex(cert *x509.Certificate) string {
	if cert == nil || cert.SerialNumber == nil {
		return ""
	}
	return cert.SerialNumber.Text(16)
}

// ServerIDFromCert reads the server id from an agent certificate: it must
// have exactly one URI SAN, berth://server/<ULID> with the ULID in canonical
// form and not zero, and a CommonName equal to that ULID. It does not verify
// the certificate; see VerifyAgentChain.
func ServerIDFromCert(cert *x509.Certificate) (ulid.ULID, error) {
	if cert == nil {
		return ulid.ULID{}, errors.New("ca: no certificate")
	}
	if len(cert.URIs) != 1 {
		return ulid.ULID{}, fmt.Errorf("ca: want exactly one URI SAN, got %d", len(cert.URIs))
	}
	u := cert.URIs[0]
	if u.Scheme != "berth" || u.Host != "server" || u.User != nil || u.Opaque != "" ||
		u.RawPath != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return ulid.ULID{}, fmt.Errorf("ca: URI SAN %q is not berth://server/<ULID>", u)
	}
	s, ok := strings.CutPrefix(u.Path, "/")
	if !ok {
		return ulid.ULID{}, fmt.Errorf("ca: URI SAN %q is not berth://server/<ULID>", u)
	}
	id, err := ulid.ParseStrict(s)
	if err != nil || id.String() != s || id == (ulid.ULID{}) {
		return ulid.ULID{}, fmt.Errorf("ca: URI SAN %q does not hold a valid server id", u)
	}
	if cert.Subject.CommonName != s {
		return ulid.ULID{}, fmt.Errorf("ca: CommonName %q does not match the URI SAN's server id %s", cert.Subject.CommonName, s)
	}
	return id, nil
}

// VerifyAgentChain checks the certificates a client presented (leaf first,
// as in tls.ConnectionState.PeerCertificates) and returns the server id and
// the serial in hex. The leaf must chain directly to this CA (any other
// certificates sent are ignored: the CA issues no intermediates), be valid
// at now (the CA's clock when now is zero), have ExtKeyUsage ClientAuth and
// nothing else, no DNS, IP or email SANs, and name a server as
// ServerIDFromCert requires. Errors wrap ErrNoClientCert or ErrNotAgentCert.
//
// When a client presents a certificate, Go's TLS stack has already checked
// its chain, validity and ClientAuth usage during the handshake (tls.Config's
// ClientCAs, see ServerTLSConfig). This is the explicit second check, made
// from the gRPC interceptor on the peer's certificate, that also extracts
// the identity. It does not know about revocation or removed servers: the
// caller checks the returned server id and serial against the database.
func (c *CA) VerifyAgentChain(chain []*x509.Certificate, now time.Time) (ulid.ULID, string, error) {
	if len(chain) == 0 || chain[0] == nil {
		return ulid.ULID{}, "", ErrNoClientCert
	}
	if now.IsZero() {
		now = c.now()
	}
	leaf := chain[0]
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:       c.pool,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return ulid.ULID{}, "", fmt.Errorf("%w: %v", ErrNotAgentCert, err)
	}
	if leaf.IsCA {
		return ulid.ULID{}, "", fmt.Errorf("%w: is a CA certificate", ErrNotAgentCert)
	}
	if len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || len(leaf.UnknownExtKeyUsage) != 0 {
		return ulid.ULID{}, "", fmt.Errorf("%w: extended key usage must be ClientAuth only", ErrNotAgentCert)
	}
	if len(leaf.DNSNames) != 0 || len(leaf.IPAddresses) != 0 || len(leaf.EmailAddresses) != 0 {
		return ulid.ULID{}, "", fmt.Errorf("%w: has DNS, IP or email names", ErrNotAgentCert)
	}
	id, err := ServerIDFromCert(leaf)
	if err != nil {
		return ulid.ULID{}, "", fmt.Errorf("%w: %v", ErrNotAgentCert, err)
	}
	return id, SerialHex(leaf), nil
}
