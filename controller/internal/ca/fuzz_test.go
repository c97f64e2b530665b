package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"slices"
	"testing"
	"time"
)

// FuzzSignAgentCSR feeds arbitrary bytes as a CSR. SignAgentCSR must never
// panic, must refuse anything that is not a correctly signed request for an
// ECDSA P-256 or Ed25519 key with ErrBadCSR, and whatever it issues must be
// a proper agent certificate for the request's key.
func FuzzSignAgentCSR(f *testing.F) {
	c, _, err := LoadOrCreate(f.TempDir(), Options{})
	if err != nil {
		f.Fatal(err)
	}
	ec := mustECKey(f, elliptic.P256())
	good := makeCSR(f, ec, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "host"}, DNSNames: []string{ServerName}})
	f.Add(good)
	f.Add(makeCSR(f, mustEdKey(f), nil))
	f.Add(makeCSR(f, mustECKey(f, elliptic.P384()), nil))
	f.Add(makeCSR(f, mustRSAKey(f), nil))
	f.Add(bytes.Replace(good, []byte("host"), []byte("hosT"), 1))
	f.Add(good[:len(good)-1])
	f.Add([]byte{})
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----"))
	f.Add(c.Cert().Raw)
	f.Add([]byte{0x30, 0x82, 0xff, 0xff})

	id := newID()
	f.Fuzz(func(t *testing.T, data []byte) {
		iss, err := c.SignAgentCSR(data, id, 0)
		if err != nil {
			if iss != nil {
				t.Fatal("issued and failed")
			}
			if !errors.Is(err, ErrBadCSR) {
				t.Fatalf("error does not wrap ErrBadCSR: %v", err)
			}
			return
		}
		// It issued: the input must be a valid request for an allowed key.
		if len(data) > MaxCSRSize {
			t.Fatalf("issued for %d bytes", len(data))
		}
		csr, err := x509.ParseCertificateRequest(data)
		if err != nil {
			t.Fatalf("issued for an unparsable CSR: %v", err)
		}
		if err := csr.CheckSignature(); err != nil {
			t.Fatalf("issued for a bad signature: %v", err)
		}
		cert, err := x509.ParseCertificate(iss.DER)
		if err != nil {
			t.Fatal(err)
		}
		switch pub := csr.PublicKey.(type) {
		case *ecdsa.PublicKey:
			if pub.Curve != elliptic.P256() || !pub.Equal(cert.PublicKey) {
				t.Fatal("ECDSA key mismatch or curve")
			}
		case ed25519.PublicKey:
			if !pub.Equal(cert.PublicKey) {
				t.Fatal("Ed25519 key mismatch")
			}
		default:
			t.Fatalf("issued for a %T key", pub)
		}
		got, serial, err := c.VerifyAgentChain([]*x509.Certificate{cert}, time.Time{})
		if err != nil || got != id || serial != iss.SerialHex {
			t.Fatalf("issued certificate: %s %s %v", got, serial, err)
		}
		if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || cert.IsCA || len(cert.DNSNames) != 0 {
			t.Fatal("issued certificate carries what the CSR asked for")
		}
	})
}
