package proxy

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// CertInfo is what Berth reports about a certificate.
type CertInfo struct {
	Issuer    string
	Subject   string
	DNSNames  []string
	NotBefore time.Time
	NotAfter  time.Time
	SerialHex string
}

// maxChain bounds a certificate chain read or installed: real chains are a
// few kilobytes.
const maxChain = 1 << 20

// maxCSRNames is the most names one certificate may carry (Let's Encrypt's
// limit).
const maxCSRNames = 100

func (m *Manager) keyPath(name string) string { return filepath.Join(m.keysDir(), name+".key") }
func (m *Manager) nextKeyPath(name string) string {
	return filepath.Join(m.keysDir(), name+".next.key")
}
func (m *Manager) certPath(name string) string { return filepath.Join(m.certsDir(), name+".pem") }

// CSROptions changes how CSRWith makes a request.
type CSROptions struct {
	// Rotate makes a new key for this request. The key of the live
	// certificate stays in use until a certificate for the new key is
	// installed.
	Rotate bool
	// App is the app whose job asks: it owns the key, and its delete
	// removes it.
	App string
}

// CSR returns a PEM certificate request for hosts, signed by the key of
// certificate name: an ECDSA P-256 key made once, kept 0600 under
// StateDir/keys and reused for renewals.
func (m *Manager) CSR(name string, hosts []string) ([]byte, error) {
	return m.CSRWith(name, hosts, CSROptions{})
}

// CSRWith is CSR with options (key rotation).
func (m *Manager) CSRWith(name string, hosts []string, opt CSROptions) ([]byte, error) {
	if !validCertName(name) {
		return nil, invalid("certificate name %q", name)
	}
	if len(hosts) == 0 || len(hosts) > maxCSRNames {
		return nil, invalid("a certificate needs 1 to %d host names, got %d", maxCSRNames, len(hosts))
	}
	seen := make(map[string]bool, len(hosts))
	for _, h := range hosts {
		if !validHost(h) {
			return nil, invalid("host %q: want a lowercase DNS name (punycode for IDN, optional leading *., no trailing dot)", h)
		}
		if seen[h] {
			return nil, invalid("host %s listed twice", h)
		}
		seen[h] = true
	}
	m.mu.Lock()
	defer m.mu.Unlock()

	var key crypto.Signer
	var err error
	switch {
	case opt.Rotate:
		key, err = newKey(m.nextKeyPath(name))
	case fileExists(m.nextKeyPath(name)):
		// A rotation is under way: renewals keep asking for the new key
		// until its certificate arrives.
		key, err = readKey(m.nextKeyPath(name))
	case fileExists(m.keyPath(name)):
		key, err = readKey(m.keyPath(name))
	default:
		key, err = newKey(m.keyPath(name))
	}
	if err != nil {
		return nil, err
	}
	if err := m.own(ownCerts, name, opt.App); err != nil {
		return nil, err
	}
	tmpl := &x509.CertificateRequest{DNSNames: hosts}
	// The common name is optional for ACME and limited to 64 bytes.
	if len(hosts[0]) <= 64 {
		tmpl.Subject = pkix.Name{CommonName: hosts[0]}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("proxy: create CSR: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

func newKey(path string) (crypto.Signer, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("proxy: generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	if err := writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	return k, nil
}

func readKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("proxy: %s holds no PKCS#8 private key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("proxy: %s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("proxy: %s: not a signing key", path)
	}
	return s, nil
}

// InstallCertificate checks chainPEM (leaf first, each certificate signed
// by the next, the leaf for the key of name and not expired), writes it
// atomically as StateDir/certs/NAME.pem and re-applies the sites whose
// domains use it. A certificate for a rotated key promotes that key.
func (m *Manager) InstallCertificate(name string, chainPEM []byte) (CertInfo, error) {
	return m.InstallCertificateContext(context.Background(), name, chainPEM)
}

// InstallCertificateContext is InstallCertificate with a context for the
// nginx check and reload.
func (m *Manager) InstallCertificateContext(ctx context.Context, name string, chainPEM []byte) (CertInfo, error) {
	if !validCertName(name) {
		return CertInfo{}, invalid("certificate name %q", name)
	}
	chain, err := parseChain(chainPEM)
	if err != nil {
		return CertInfo{}, err
	}
	leaf := chain[0]
	if time.Now().After(leaf.NotAfter) {
		return CertInfo{}, invalid("certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	m.mu.Lock()
	defer m.mu.Unlock()

	// Which of the name's keys does the certificate belong to?
	keyFile := ""
	for _, p := range []string{m.nextKeyPath(name), m.keyPath(name)} {
		if !fileExists(p) {
			continue
		}
		k, err := readKey(p)
		if err != nil {
			return CertInfo{}, err
		}
		if samePublicKey(k.Public(), leaf.PublicKey) {
			keyFile = p
			break
		}
	}
	if keyFile == "" {
		return CertInfo{}, invalid("certificate for %s does not match its private key (its key was not made by this server)", name)
	}
	var out bytes.Buffer
	for _, c := range chain {
		pem.Encode(&out, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	// The new key first, then its certificate: between the two renames
	// nginx must not load them, which holds since reloads go through m.mu
	// (an outside reload then would fail and leave nginx as it was).
	tmp, err := writeTemp(m.certPath(name), out.Bytes(), 0o600)
	if err != nil {
		return CertInfo{}, err
	}
	if keyFile == m.nextKeyPath(name) {
		if err := os.Rename(keyFile, m.keyPath(name)); err != nil {
			os.Remove(tmp)
			return CertInfo{}, fmt.Errorf("proxy: %w", err)
		}
		if err := syncDir(m.keysDir()); err != nil {
			os.Remove(tmp)
			return CertInfo{}, fmt.Errorf("proxy: %w", err)
		}
	}
	if err := os.Rename(tmp, m.certPath(name)); err != nil {
		os.Remove(tmp)
		return CertInfo{}, fmt.Errorf("proxy: %w", err)
	}
	if err := syncDir(m.certsDir()); err != nil {
		return CertInfo{}, fmt.Errorf("proxy: %w", err)
	}
	info := certInfo(leaf)

	using, err := m.sitesUsing(name)
	if err != nil {
		return info, err
	}
	if len(using) == 0 {
		return info, nil
	}
	if err := m.applyLocked(ctx, using, nil, true); err != nil {
		return info, fmt.Errorf("proxy: certificate %s installed, but re-applying its sites failed: %w", name, err)
	}
	return info, nil
}

// sitesUsing returns the applied sites with a domain on certificate name.
func (m *Manager) sitesUsing(name string) ([]Site, error) {
	sites, err := m.specs()
	if err != nil {
		return nil, err
	}
	var using []Site
	for _, s := range sites {
		for _, d := range s.Domains {
			if d.TLS == TLSACME && d.CertName == name {
				using = append(using, s)
				break
			}
		}
	}
	return using, nil
}

// ErrInUse: DeleteCertificate was asked to remove a certificate that an
// applied site still names.
var ErrInUse = errors.New("in use")

// DeleteCertificate removes a certificate and its keys. A certificate
// that an applied site still names is refused (ErrInUse): nginx's
// configuration points at its files, and without them every later
// nginx -t would fail. Apply the sites without it first.
func (m *Manager) DeleteCertificate(name string) error {
	if !validCertName(name) {
		return invalid("certificate name %q", name)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	using, err := m.sitesUsing(name)
	if err != nil {
		return err
	}
	if len(using) > 0 {
		return fmt.Errorf("proxy: certificate %s: %w by app %s", name, ErrInUse, using[0].App)
	}
	for _, p := range []string{m.certPath(name), m.keyPath(name), m.nextKeyPath(name)} {
		if err := removeIfExists(p); err != nil {
			return fmt.Errorf("proxy: %w", err)
		}
	}
	return m.disown(ownCerts, name)
}

func samePublicKey(a, b crypto.PublicKey) bool {
	type eq interface{ Equal(crypto.PublicKey) bool }
	ea, ok := a.(eq)
	return ok && ea.Equal(b)
}

// parseChain reads PEM certificates, leaf first, each signed by the next.
func parseChain(b []byte) ([]*x509.Certificate, error) {
	if len(b) > maxChain {
		return nil, invalid("certificate chain of %d bytes, at most %d", len(b), maxChain)
	}
	var chain []*x509.Certificate
	rest := b
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, invalid("certificate chain holds a %q block", blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, invalid("certificate %d of the chain: %v", len(chain)+1, err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, invalid("no PEM certificate found")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, invalid("trailing data after the certificates")
	}
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			return nil, invalid("certificate %d is not signed by certificate %d (the chain must go leaf first): %v", i+1, i+2, err)
		}
	}
	return chain, nil
}

func certInfo(c *x509.Certificate) CertInfo {
	return CertInfo{
		Issuer:    c.Issuer.String(),
		Subject:   c.Subject.String(),
		DNSNames:  append([]string(nil), c.DNSNames...),
		NotBefore: c.NotBefore,
		NotAfter:  c.NotAfter,
		SerialHex: hex.EncodeToString(c.SerialNumber.Bytes()),
	}
}

// ReadCertInfo reads the first certificate of a PEM file (a custom
// certificate already on the server).
func ReadCertInfo(path string) (CertInfo, error) {
	f, err := openRegular(path)
	if err != nil {
		return CertInfo{}, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxChain+1))
	if err != nil {
		return CertInfo{}, fmt.Errorf("proxy: read %s: %w", path, err)
	}
	if len(b) > maxChain {
		return CertInfo{}, invalid("%s is larger than %d bytes", path, maxChain)
	}
	return firstCert(path, b)
}

// firstCert reads the first certificate of PEM data read from path.
func firstCert(path string, b []byte) (CertInfo, error) {
	rest := b
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return CertInfo{}, invalid("%s holds no PEM certificate", path)
		}
		if blk.Type != "CERTIFICATE" {
			continue // a key or parameters in the same file
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return CertInfo{}, invalid("%s: %v", path, err)
		}
		return certInfo(c), nil
	}
}
