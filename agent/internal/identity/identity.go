// Package identity is the agent's credentials on disk: its private key (made
// here, never sent anywhere), its client certificate and the controller CA it
// trusts, in the agent's data dir.
//
// Trust starts with the pin printed by `berth server add`: the SHA-256 of the
// controller CA's public key. Enrollment fetches the CA over a TLS connection
// that trusts nothing yet, refuses it unless its key matches the pin, and only
// then re-dials trusting that CA alone and sends the join token. So a
// man-in-the-middle never sees the token, and after enrollment the agent
// trusts exactly one CA.
package identity

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ServerName is the fixed DNS name in every controller serving certificate.
// The agent verifies it, so an agent's client certificate (which names a
// server ULID and has ClientAuth usage only) can never pose as a controller.
const ServerName = "controller.berth.internal"

// Files in the data dir.
const (
	KeyFile  = "agent.key"
	CertFile = "agent.crt"
	CAFile   = "ca.crt"
)

// NewKey makes a fresh ECDSA P-256 key.
func NewKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// CSR makes a certificate request for key. The controller ignores whatever
// the request asks for and names the server itself; the CSR only proves
// possession of the key.
func CSR(key crypto.Signer, hostname string) ([]byte, error) {
	return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: hostname},
	}, key)
}

// Pin is "sha256:" and the hex SHA-256 of a certificate's public key.
func Pin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// CheckPin compares cert's key with pin in constant time.
func CheckPin(cert *x509.Certificate, pin string) error {
	hexPart, ok := strings.CutPrefix(pin, "sha256:")
	want, err := hex.DecodeString(hexPart)
	if !ok || err != nil || len(want) != sha256.Size {
		return errors.New("malformed --ca-pin: want sha256: followed by 64 hex digits")
	}
	got := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	if subtle.ConstantTimeCompare(got[:], want) != 1 {
		return errors.New("the controller's CA does not match --ca-pin: refusing to send the join token")
	}
	return nil
}

// Identity is a loaded set of credentials.
type Identity struct {
	Key      *ecdsa.PrivateKey
	Cert     *x509.Certificate
	CertDER  []byte
	CA       *x509.Certificate
	ServerID string
}

// TLSCertificate is the client certificate for tls.Config.
func (id *Identity) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{id.CertDER}, PrivateKey: id.Key, Leaf: id.Cert}
}

// ClientTLS is the agent's TLS configuration: TLS 1.3, the pinned CA as the
// only root, the fixed controller name, and this identity as client cert.
func (id *Identity) ClientTLS() *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(id.CA)
	cert := id.TLSCertificate()
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		RootCAs:      pool,
		ServerName:   ServerName,
		Certificates: []tls.Certificate{cert},
	}
}

// RenewAt is when a certificate should be renewed: with a third of its
// lifetime left.
func RenewAt(cert *x509.Certificate) time.Time {
	life := cert.NotAfter.Sub(cert.NotBefore)
	return cert.NotAfter.Add(-life / 3)
}

// Save writes key, certificate and CA into dir. Each file is replaced
// atomically, the certificate last: a crash leaves either the old identity
// or the new one loadable, because Load checks that key and certificate
// belong together.
func Save(dir string, key *ecdsa.PrivateKey, certDER, caDER []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode key: %w", err)
	}
	files := []struct {
		name  string
		block *pem.Block
		mode  os.FileMode
	}{
		{KeyFile + ".new", &pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}, 0o600},
		{CAFile, &pem.Block{Type: "CERTIFICATE", Bytes: caDER}, 0o644},
		{CertFile + ".new", &pem.Block{Type: "CERTIFICATE", Bytes: certDER}, 0o644},
	}
	for _, f := range files {
		if err := writeAtomic(filepath.Join(dir, f.name), pem.EncodeToMemory(f.block), f.mode); err != nil {
			return err
		}
	}
	// Key and certificate switch together as a pair of renames; Load
	// prefers a complete .new pair, so a crash between them is harmless.
	if err := os.Rename(filepath.Join(dir, KeyFile+".new"), filepath.Join(dir, KeyFile)); err != nil {
		return fmt.Errorf("install key: %w", err)
	}
	if err := os.Rename(filepath.Join(dir, CertFile+".new"), filepath.Join(dir, CertFile)); err != nil {
		return fmt.Errorf("install certificate: %w", err)
	}
	return syncDir(dir)
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ErrNotEnrolled means the data dir holds no identity yet.
var ErrNotEnrolled = errors.New("not enrolled: run berth-agent enroll first")

// Load reads the identity from dir.
func Load(dir string) (*Identity, error) {
	keyPath, certPath := filepath.Join(dir, KeyFile), filepath.Join(dir, CertFile)
	// A crash between the two renames of Save leaves key.new+cert.new or
	// key+cert.new; finish the switch if the pending pair is complete.
	if _, err := os.Stat(certPath + ".new"); err == nil {
		if _, err := os.Stat(keyPath + ".new"); err == nil {
			_ = os.Rename(keyPath+".new", keyPath)
		}
		_ = os.Rename(certPath+".new", certPath)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotEnrolled
	}
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	if st, err := os.Stat(keyPath); err == nil && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s is readable by others: chmod 600 %s", keyPath, keyPath)
	}
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	kb, _ := pem.Decode(keyPEM)
	cb, _ := pem.Decode(certPEM)
	ab, _ := pem.Decode(caPEM)
	if kb == nil || cb == nil || ab == nil {
		return nil, errors.New("identity files are not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse key: %w", err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("agent key is not ECDSA")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(ab.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse CA: %w", err)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return nil, errors.New("agent certificate does not match its key")
	}
	return &Identity{Key: key, Cert: cert, CertDER: cb.Bytes, CA: ca, ServerID: cert.Subject.CommonName}, nil
}

// FetchCA connects without trusting anyone, takes the root of the chain the
// controller presents, and returns it only if it matches pin. Nothing is
// sent on this connection but the TLS handshake.
func FetchCA(addr, pin string, timeout time.Duration) (*x509.Certificate, error) {
	var ca *x509.Certificate
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		// The chain is checked by hand below, against the pin.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyPeerCertificate
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) < 2 {
				return errors.New("controller sent no CA certificate in its chain")
			}
			root, err := x509.ParseCertificate(raw[len(raw)-1])
			if err != nil {
				return fmt.Errorf("parse controller CA: %w", err)
			}
			if err := CheckPin(root, pin); err != nil {
				return err
			}
			leaf, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			pool := x509.NewCertPool()
			pool.AddCert(root)
			if _, err := leaf.Verify(x509.VerifyOptions{DNSName: ServerName, Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return fmt.Errorf("controller certificate: %w", err)
			}
			ca = root
			return nil
		},
	}
	d := &tls.Dialer{Config: cfg, NetDialer: &net.Dialer{Timeout: timeout}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	conn.Close()
	if ca == nil {
		return nil, errors.New("controller presented no certificate")
	}
	return ca, nil
}

// Equal reports whether two certificates are byte-identical.
func Equal(a, b *x509.Certificate) bool { return bytes.Equal(a.Raw, b.Raw) }
