package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"
)

// MaxCSRSize is the largest certificate request SignAgentCSR reads. A real
// one (an ECDSA or Ed25519 key and a short subject) is a few hundred bytes.
const MaxCSRSize = 8 << 10

// ErrBadCSR means a certificate request was refused; the wrapped message
// says why. Callers map it to InvalidArgument.
var ErrBadCSR = errors.New("ca: invalid certificate request")

var loopbackIPs = []net.IP{net.IPv4(127, 0, 0, 1).To4(), net.IPv6loopback}

// IssueServerCert issues a controller serving certificate for a fresh ECDSA
// P-256 key: ExtKeyUsage ServerAuth only, DNS names ServerName,
// Options.Hostnames and hostnames, IP addresses from those that are IPs plus
// 127.0.0.1 and ::1. ttl 0 means Options.ServerCertTTL. The chain is the leaf
// followed by the CA certificate, so a client holding only the pin can check
// the CA during enrollment.
func (c *CA) IssueServerCert(hostnames []string, ttl time.Duration) (tls.Certificate, error) {
	ttl, err := checkTTL("server certificate", ttl, c.opts.ServerCertTTL, MaxServerCertTTL)
	if err != nil {
		return tls.Certificate{}, err
	}
	names, err := normalizeHostnames(append(append([]string{ServerName}, c.opts.Hostnames...), hostnames...))
	if err != nil {
		return tls.Certificate{}, err
	}
	var dnsNames []string
	var ips []net.IP
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			ips = appendIP(ips, ip)
		} else {
			dnsNames = append(dnsNames, n)
		}
	}
	for _, ip := range loopbackIPs {
		ips = appendIP(ips, ip)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("ca: generate key: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: ServerName},
		DNSNames:    dnsNames,
		IPAddresses: ips,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leaf, err := c.sign(tmpl, key.Public(), ttl)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{
		Certificate: [][]byte{leaf.Raw, c.cert.Raw},
		PrivateKey:  key,
		Leaf:        leaf,
	}, nil
}

func appendIP(ips []net.IP, ip net.IP) []net.IP {
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	for _, have := range ips {
		if have.Equal(ip) {
			return ips
		}
	}
	return append(ips, ip)
}

// sign fills in the fields every leaf shares (serial, validity, basic
// constraints), signs tmpl for pub with the CA key and parses the result.
// NotAfter never passes the CA's own NotAfter.
func (c *CA) sign(tmpl *x509.Certificate, pub crypto.PublicKey, ttl time.Duration) (*x509.Certificate, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := c.now()
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-ClockSkew)
	tmpl.NotAfter = now.Add(ttl)
	if tmpl.NotAfter.After(c.cert.NotAfter) {
		tmpl.NotAfter = c.cert.NotAfter
	}
	if !tmpl.NotAfter.After(now) {
		return nil, fmt.Errorf("ca: the CA certificate expired at %s", c.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	tmpl.BasicConstraintsValid = true
	tmpl.IsCA = false
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
	if err != nil {
		return nil, fmt.Errorf("ca: sign certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse issued certificate: %w", err)
	}
	return cert, nil
}

// ServerCertSource hands out the controller's serving certificate and
// renews it in memory once less than a third of its lifetime is left. Use
// its GetCertificate as tls.Config.GetCertificate.
type ServerCertSource struct {
	ca        *CA
	hostnames []string
	ttl       time.Duration

	cur atomic.Pointer[tls.Certificate]
	mu  sync.Mutex // serialises renewal
}

// ServerCertificateSource issues a first serving certificate (as
// IssueServerCert(hostnames, 0)) and returns a source that renews it.
func (c *CA) ServerCertificateSource(hostnames []string) (*ServerCertSource, error) {
	s := &ServerCertSource{ca: c, hostnames: append([]string(nil), hostnames...), ttl: c.opts.ServerCertTTL}
	cert, err := c.IssueServerCert(s.hostnames, s.ttl)
	if err != nil {
		return nil, err
	}
	s.cur.Store(&cert)
	return s, nil
}

// GetCertificate returns the current serving certificate, reissuing it first
// when less than a third of its lifetime is left (or the clock moved before
// its NotBefore). If reissuing fails, the current certificate is served while
// it is still valid; an expired certificate is never served.
func (s *ServerCertSource) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	now := s.ca.now()
	if cert := s.cur.Load(); !needsRenewal(cert.Leaf, now) {
		return cert, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.cur.Load()
	if !needsRenewal(cur.Leaf, now) {
		return cur, nil // renewed by another handshake meanwhile
	}
	cert, err := s.ca.IssueServerCert(s.hostnames, s.ttl)
	if err != nil {
		if now.Before(cur.Leaf.NotAfter) && !now.Before(cur.Leaf.NotBefore) {
			return cur, nil
		}
		return nil, err
	}
	s.cur.Store(&cert)
	return &cert, nil
}

func needsRenewal(leaf *x509.Certificate, now time.Time) bool {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return now.Before(leaf.NotBefore) || leaf.NotAfter.Sub(now) < life/3
}

// Issued is an agent certificate SignAgentCSR made.
type Issued struct {
	DER       []byte
	PEM       []byte
	Serial    *big.Int
	SerialHex string // lowercase hex, the key for recording and revocation
	NotBefore time.Time
	NotAfter  time.Time
	ServerID  ulid.ULID
	// SPKISHA256 is SPKIHash of the certificate: recorded with the serial
	// so a connection presenting that serial with another key is refused.
	SPKISHA256 []byte
}

// SPKIHash is the SHA-256 of cert's SubjectPublicKeyInfo (its public key
// with algorithm), the key pin recorded for every agent certificate.
func SPKIHash(cert *x509.Certificate) []byte {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return sum[:]
}

// CheckCSR reports whether SignAgentCSR would accept csrDER's request,
// without signing anything; the error wraps ErrBadCSR.
func CheckCSR(csrDER []byte) error {
	_, err := parseCSR(csrDER)
	return err
}

// SignAgentCSR issues an agent client certificate for the key in csrDER, a
// DER-encoded PKCS#10 request of at most MaxCSRSize bytes whose signature
// verifies and whose key is ECDSA P-256 or Ed25519. Everything else the
// request asks for (subject, SANs, extensions) is ignored: the certificate
// has CommonName serverID, the single URI SAN berth://server/<serverID>,
// ExtKeyUsage ClientAuth only and KeyUsage DigitalSignature. ttl 0 means
// Options.AgentCertTTL; more than MaxAgentCertTTL is refused. Refused
// requests return an error wrapping ErrBadCSR.
func (c *CA) SignAgentCSR(csrDER []byte, serverID ulid.ULID, ttl time.Duration) (*Issued, error) {
	if serverID == (ulid.ULID{}) {
		return nil, errors.New("ca: no server id")
	}
	ttl, err := checkTTL("agent certificate", ttl, c.opts.AgentCertTTL, MaxAgentCertTTL)
	if err != nil {
		return nil, err
	}
	pub, err := parseCSR(csrDER)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: serverID.String()},
		URIs:        []*url.URL{ServerURI(serverID)},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	cert, err := c.sign(tmpl, pub, ttl)
	if err != nil {
		return nil, err
	}
	// Check what was made the way connections will check it.
	id, serialHex, err := c.VerifyAgentChain([]*x509.Certificate{cert}, c.now())
	if err != nil {
		return nil, fmt.Errorf("ca: issued agent certificate does not verify: %w", err)
	}
	if id != serverID {
		return nil, fmt.Errorf("ca: issued agent certificate names %s, want %s", id, serverID)
	}
	return &Issued{
		DER:       cert.Raw,
		PEM:       pem.EncodeToMemory(&pem.Block{Type: pemCertType, Bytes: cert.Raw}),
		Serial:    cert.SerialNumber,
		SerialHex: serialHex,
		NotBefore: cert.NotBefore,
		NotAfter:  cert.NotAfter,
		ServerID:  serverID,

		SPKISHA256: SPKIHash(cert),
	}, nil
}

// parseCSR returns the public key of a valid request, or an error wrapping
// ErrBadCSR.
func parseCSR(der []byte) (crypto.PublicKey, error) {
	switch {
	case len(der) == 0:
		return nil, fmt.Errorf("%w: empty", ErrBadCSR)
	case len(der) > MaxCSRSize:
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrBadCSR, MaxCSRSize)
	case bytes.HasPrefix(bytes.TrimSpace(der), []byte("-----BEGIN")):
		return nil, fmt.Errorf("%w: PEM given, want DER", ErrBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrBadCSR, err)
	}
	switch pub := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%w: ECDSA curve %s, want P-256", ErrBadCSR, pub.Curve.Params().Name)
		}
		return pub, nil
	case ed25519.PublicKey:
		if len(pub) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%w: bad Ed25519 key", ErrBadCSR)
		}
		return pub, nil
	default:
		return nil, fmt.Errorf("%w: %s key, want ECDSA P-256 or Ed25519", ErrBadCSR, csr.PublicKeyAlgorithm)
	}
}

// ServerURI is the URI SAN naming server id in its agent certificate:
// berth://server/<ULID>.
func ServerURI(id ulid.ULID) *url.URL {
	return &url.URL{Scheme: "berth", Host: "server", Path: "/" + id.String()}
}
