package ca

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"
)

// CA is a loaded certificate authority. It is safe for concurrent use.
type CA struct {
	opts    Options
	key     *ecdsa.PrivateKey
	cert    *x509.Certificate
	certPEM []byte
	pool    *x509.CertPool
	pin     string
}

func newCA(key *ecdsa.PrivateKey, cert *x509.Certificate, opts Options) *CA {
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{
		opts:    opts,
		key:     key,
		cert:    cert,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: pemCertType, Bytes: cert.Raw}),
		pool:    pool,
		pin:     PinOf(cert),
	}
}

// Pin is the CA's pin: "sha256:" and the lowercase hex SHA-256 of the CA
// certificate's SubjectPublicKeyInfo.
func (c *CA) Pin() string { return c.pin }

// Cert is the CA certificate. Callers must not modify it.
func (c *CA) Cert() *x509.Certificate { return c.cert }

// CertPEM is the CA certificate in PEM form (what ca.crt holds).
func (c *CA) CertPEM() []byte { return append([]byte(nil), c.certPEM...) }

// Pool is a new certificate pool holding only the CA certificate.
func (c *CA) Pool() *x509.CertPool { return c.pool.Clone() }

// Options are the options the CA was loaded with, defaults filled in.
func (c *CA) Options() Options {
	o := c.opts
	o.Hostnames = append([]string(nil), o.Hostnames...)
	return o
}

func (c *CA) now() time.Time { return c.opts.Now() }

// serialTop is 2^127: the bit set in every serial.
var serialTop = new(big.Int).Lsh(big.NewInt(1), 127)

// newSerial is a 128-bit serial from crypto/rand with the top bit set, so
// every serial is positive, has the same length (16 bytes, 32 hex digits)
// and carries 127 random bits.
func newSerial() (*big.Int, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("ca: serial: %w", err)
	}
	s := new(big.Int).SetBytes(b[:])
	return s.Or(s, serialTop), nil
}
