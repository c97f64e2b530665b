package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
)

func TestIssueServerCert(t *testing.T) {
	t.Parallel()
	clk := newClock()
	c := newTestCA(t, Options{Now: clk.Now, Hostnames: []string{"ctl.example.com"}})
	cert, err := c.IssueServerCert([]string{"Berth.Example.NET", "192.0.2.7", "2001:db8::1", ServerName}, 0)
	if err != nil {
		t.Fatal(err)
	}
	leaf := cert.Leaf
	if len(cert.Certificate) != 2 || !bytes.Equal(cert.Certificate[0], leaf.Raw) || !bytes.Equal(cert.Certificate[1], c.Cert().Raw) {
		t.Fatal("chain is not [leaf, CA]")
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) || len(leaf.UnknownExtKeyUsage) != 0 {
		t.Errorf("ExtKeyUsage = %v, want ServerAuth only", leaf.ExtKeyUsage)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature || leaf.IsCA || !leaf.BasicConstraintsValid {
		t.Errorf("KeyUsage = %v, IsCA = %v", leaf.KeyUsage, leaf.IsCA)
	}
	if want := []string{ServerName, "ctl.example.com", "berth.example.net"}; !slices.Equal(leaf.DNSNames, want) {
		t.Errorf("DNSNames = %v, want %v", leaf.DNSNames, want)
	}
	var ips []string
	for _, ip := range leaf.IPAddresses {
		ips = append(ips, ip.String())
	}
	if want := []string{"192.0.2.7", "2001:db8::1", "127.0.0.1", "::1"}; !slices.Equal(ips, want) {
		t.Errorf("IPAddresses = %v, want %v", ips, want)
	}
	if len(leaf.URIs) != 0 || leaf.Subject.CommonName != ServerName {
		t.Errorf("URIs %v, CN %q", leaf.URIs, leaf.Subject.CommonName)
	}
	now := clk.Now()
	if !leaf.NotBefore.Equal(now.Add(-time.Minute)) || !leaf.NotAfter.Equal(now.Add(90*24*time.Hour)) {
		t.Errorf("validity %s .. %s, now %s", leaf.NotBefore, leaf.NotAfter, now)
	}
	if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() || !pub.Equal(cert.PrivateKey.(*ecdsa.PrivateKey).Public()) {
		t.Error("leaf key is not the returned ECDSA P-256 key")
	}
	for _, name := range []string{ServerName, "ctl.example.com", "berth.example.net", "127.0.0.1", "::1", "192.0.2.7"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: c.Pool(), CurrentTime: now}); err != nil {
			t.Errorf("verify as %s: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: c.Pool(), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("serving certificate verifies for ClientAuth")
	}

	// Two certificates get different keys and serials.
	cert2, err := c.IssueServerCert(nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if cert2.Leaf.SerialNumber.Cmp(leaf.SerialNumber) == 0 || cert2.Leaf.PublicKey.(*ecdsa.PublicKey).Equal(leaf.PublicKey) {
		t.Error("second certificate reuses serial or key")
	}
	if !cert2.Leaf.NotAfter.Equal(now.Add(time.Hour)) {
		t.Errorf("ttl 1h: NotAfter %s", cert2.Leaf.NotAfter)
	}
	for _, bad := range [][]string{{"bad host"}, {"x:1"}, {""}} {
		if _, err := c.IssueServerCert(bad, 0); err == nil {
			t.Errorf("accepted hostnames %q", bad)
		}
	}
	if _, err := c.IssueServerCert(nil, 1000*24*time.Hour); err == nil {
		t.Error("accepted a 1000-day lifetime")
	}
}

func TestServerCertSourceRenews(t *testing.T) {
	t.Parallel()
	clk := newClock()
	c := newTestCA(t, Options{Now: clk.Now, ServerCertTTL: 90 * 24 * time.Hour})
	src, err := c.ServerCertificateSource([]string{"ctl.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := src.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(first.Leaf.DNSNames, "ctl.example.com") {
		t.Fatalf("DNSNames = %v", first.Leaf.DNSNames)
	}
	// Lifetime is 90d + 1m; renewal happens with less than a third left.
	clk.Advance(59 * 24 * time.Hour)
	if again, _ := src.GetCertificate(nil); again != first {
		t.Fatal("renewed with more than a third of the lifetime left")
	}
	clk.Advance(2 * 24 * time.Hour)
	renewed, err := src.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if renewed == first || renewed.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
		t.Fatal("not renewed with less than a third of the lifetime left")
	}
	if !renewed.Leaf.NotBefore.Equal(clk.Now().Add(-time.Minute)) || !slices.Contains(renewed.Leaf.DNSNames, "ctl.example.com") {
		t.Fatalf("renewed certificate: %s %v", renewed.Leaf.NotBefore, renewed.Leaf.DNSNames)
	}
	if again, _ := src.GetCertificate(nil); again != renewed {
		t.Fatal("renewed twice")
	}
	// A clock set back before NotBefore also gets a fresh certificate.
	clk.Advance(-30 * 24 * time.Hour)
	if back, _ := src.GetCertificate(nil); back == renewed || back.Leaf.NotBefore.After(clk.Now()) {
		t.Fatal("served a certificate that is not valid yet")
	}
}

func TestSignAgentCSR(t *testing.T) {
	t.Parallel()
	clk := newClock()
	c := newTestCA(t, Options{Now: clk.Now})
	id := newID()
	key := mustECKey(t, elliptic.P256())

	// The CSR asks for everything an attacker would want; all of it is ignored.
	evilURI, _ := url.Parse("berth://server/" + newID().String())
	eku, _ := asn1.Marshal([]asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 1}}) // ServerAuth
	bc, _ := asn1.Marshal(struct{ IsCA bool }{true})                             // CA:TRUE
	custom := asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}                  // private
	csr := makeCSR(t, key, &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: "evil", Organization: []string{"Evil"}},
		DNSNames:       []string{ServerName, "evil.example.com"},
		IPAddresses:    []net.IP{net.IPv4(10, 0, 0, 1)},
		EmailAddresses: []string{"root@example.com"},
		URIs:           []*url.URL{evilURI},
		ExtraExtensions: []pkix.Extension{
			{Id: asn1.ObjectIdentifier{2, 5, 29, 37}, Value: eku},
			{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: bc},
			{Id: custom, Value: []byte{5, 0}},
		},
	})
	iss, err := c.SignAgentCSR(csr, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(iss.DER)
	if err != nil {
		t.Fatal(err)
	}
	if block, _ := pem.Decode(iss.PEM); block == nil || block.Type != "CERTIFICATE" || !bytes.Equal(block.Bytes, iss.DER) {
		t.Error("PEM does not hold DER")
	}
	now := clk.Now()
	switch {
	case cert.Subject.String() != "CN="+id.String():
		t.Errorf("subject = %s", cert.Subject)
	case len(cert.URIs) != 1 || cert.URIs[0].String() != "berth://server/"+id.String():
		t.Errorf("URIs = %v", cert.URIs)
	case len(cert.DNSNames)+len(cert.IPAddresses)+len(cert.EmailAddresses) != 0:
		t.Errorf("SANs from the CSR: %v %v %v", cert.DNSNames, cert.IPAddresses, cert.EmailAddresses)
	case !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || len(cert.UnknownExtKeyUsage) != 0:
		t.Errorf("ExtKeyUsage = %v %v", cert.ExtKeyUsage, cert.UnknownExtKeyUsage)
	case cert.KeyUsage != x509.KeyUsageDigitalSignature:
		t.Errorf("KeyUsage = %v", cert.KeyUsage)
	case cert.IsCA || !cert.BasicConstraintsValid:
		t.Error("IsCA")
	case !cert.NotBefore.Equal(now.Add(-time.Minute)) || !iss.NotBefore.Equal(cert.NotBefore):
		t.Errorf("NotBefore = %s, now %s", cert.NotBefore, now)
	case !cert.NotAfter.Equal(now.Add(7*24*time.Hour)) || !iss.NotAfter.Equal(cert.NotAfter):
		t.Errorf("NotAfter = %s, now %s", cert.NotAfter, now)
	case iss.ServerID != id:
		t.Errorf("ServerID = %s", iss.ServerID)
	case iss.Serial.Cmp(cert.SerialNumber) != 0 || iss.SerialHex != SerialHex(cert) || len(iss.SerialHex) != 32 || strings.ToLower(iss.SerialHex) != iss.SerialHex:
		t.Errorf("serial %v / %q", iss.Serial, iss.SerialHex)
	case cert.SerialNumber.Sign() <= 0 || cert.SerialNumber.BitLen() != 128:
		t.Errorf("serial %v has %d bits", cert.SerialNumber, cert.SerialNumber.BitLen())
	case !cert.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()):
		t.Error("certificate is not for the CSR's key")
	case !bytes.Equal(cert.AuthorityKeyId, c.Cert().SubjectKeyId):
		t.Error("AuthorityKeyId")
	}
	for _, ext := range cert.Extensions {
		if ext.Id.Equal(custom) {
			t.Error("custom extension copied from the CSR")
		}
	}
	if got, err := ServerIDFromCert(cert); err != nil || got != id {
		t.Errorf("ServerIDFromCert = %s, %v", got, err)
	}
	if got, serial, err := c.VerifyAgentChain([]*x509.Certificate{cert}, time.Time{}); err != nil || got != id || serial != iss.SerialHex {
		t.Errorf("VerifyAgentChain = %s %s %v", got, serial, err)
	}

	// Serials are distinct.
	seen := map[string]bool{iss.SerialHex: true}
	for range 50 {
		again, err := c.SignAgentCSR(csr, id, 0)
		if err != nil {
			t.Fatal(err)
		}
		if seen[again.SerialHex] {
			t.Fatalf("serial %s issued twice", again.SerialHex)
		}
		seen[again.SerialHex] = true
	}

	// Ed25519 keys and explicit lifetimes.
	ed := mustEdKey(t)
	iss, err = c.SignAgentCSR(makeCSR(t, ed, nil), id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ = x509.ParseCertificate(iss.DER)
	if !cert.PublicKey.(ed25519.PublicKey).Equal(ed.Public()) || !cert.NotAfter.Equal(now.Add(time.Hour)) {
		t.Error("Ed25519 certificate")
	}
	if _, err := c.SignAgentCSR(csr, id, MaxAgentCertTTL); err != nil {
		t.Errorf("max lifetime: %v", err)
	}
	for _, ttl := range []time.Duration{MaxAgentCertTTL + time.Second, 30 * time.Second, -time.Hour} {
		if _, err := c.SignAgentCSR(csr, id, ttl); err == nil {
			t.Errorf("accepted lifetime %s", ttl)
		}
	}
	if _, err := c.SignAgentCSR(csr, ulid.ULID{}, 0); err == nil {
		t.Error("accepted a zero server id")
	}
}

func TestSignAgentCSRUsesConfiguredTTL(t *testing.T) {
	t.Parallel()
	clk := newClock()
	c := newTestCA(t, Options{Now: clk.Now, AgentCertTTL: 48 * time.Hour})
	iss, err := c.SignAgentCSR(makeCSR(t, mustECKey(t, elliptic.P256()), nil), newID(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if !iss.NotAfter.Equal(clk.Now().Add(48 * time.Hour)) {
		t.Fatalf("NotAfter = %s", iss.NotAfter)
	}
}

func TestSignAgentCSRRejects(t *testing.T) {
	t.Parallel()
	c := newTestCA(t, Options{})
	key := mustECKey(t, elliptic.P256())
	good := makeCSR(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "aaaaaaaaaaaaaaaa"}})

	badSig := bytes.Replace(good, []byte("aaaaaaaaaaaaaaaa"), []byte("bbbbbbbbbbbbbbbb"), 1)
	if bytes.Equal(badSig, good) {
		t.Fatal("test setup: subject not found in CSR")
	}
	var names []string
	for i := range 200 {
		names = append(names, strings.Repeat("x", 50)+string(rune('a'+i%26))+".example.com")
	}
	oversized := makeCSR(t, key, &x509.CertificateRequest{DNSNames: names})
	if len(oversized) <= MaxCSRSize {
		t.Fatalf("test setup: oversized CSR is %d bytes", len(oversized))
	}

	cases := map[string][]byte{
		"nil":           nil,
		"garbage":       []byte("this is not a certificate request"),
		"zeros":         make([]byte, 512),
		"truncated":     good[:len(good)/2],
		"trailing data": append(append([]byte(nil), good...), 0),
		"bad signature": badSig,
		"oversized":     oversized,
		"RSA 2048":      makeCSR(t, mustRSAKey(t), nil),
		"ECDSA P-384":   makeCSR(t, mustECKey(t, elliptic.P384()), nil),
		"ECDSA P-521":   makeCSR(t, mustECKey(t, elliptic.P521()), nil),
		"PEM":           pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: good}),
		"certificate":   c.Cert().Raw,
	}
	for name, der := range cases {
		iss, err := c.SignAgentCSR(der, newID(), 0)
		if !errors.Is(err, ErrBadCSR) || iss != nil {
			t.Errorf("%s: err = %v, issued = %v; want ErrBadCSR", name, err, iss != nil)
		}
	}
	if _, err := c.SignAgentCSR(good, newID(), 0); err != nil {
		t.Fatalf("the good CSR: %v", err)
	}
}

func TestServerIDFromCert(t *testing.T) {
	t.Parallel()
	id := newID()
	s := id.String()
	mk := func(cn string, uris ...string) *x509.Certificate {
		cert := &x509.Certificate{Subject: pkix.Name{CommonName: cn}}
		for _, u := range uris {
			p, err := url.Parse(u)
			if err != nil {
				t.Fatal(err)
			}
			cert.URIs = append(cert.URIs, p)
		}
		return cert
	}
	if got, err := ServerIDFromCert(mk(s, "berth://server/"+s)); err != nil || got != id {
		t.Fatalf("good: %s %v", got, err)
	}
	if ServerURI(id).String() != "berth://server/"+s {
		t.Fatalf("ServerURI = %s", ServerURI(id))
	}
	zero := ulid.ULID{}.String()
	bad := map[string]*x509.Certificate{
		"nil":            nil,
		"no URI":         mk(s),
		"two URIs":       mk(s, "berth://server/"+s, "berth://server/"+s),
		"scheme":         mk(s, "https://server/"+s),
		"host":           mk(s, "berth://agent/"+s),
		"port":           mk(s, "berth://server:1/"+s),
		"user":           mk(s, "berth://u@server/"+s),
		"query":          mk(s, "berth://server/"+s+"?x=1"),
		"fragment":       mk(s, "berth://server/"+s+"#x"),
		"extra segment":  mk(s, "berth://server/"+s+"/x"),
		"no slash":       mk(s, "berth://server"+s),
		"lowercase ulid": mk(strings.ToLower(s), "berth://server/"+strings.ToLower(s)),
		"not a ulid":     mk("x", "berth://server/x"),
		"zero ulid":      mk(zero, "berth://server/"+zero),
		"CN mismatch":    mk(newID().String(), "berth://server/"+s),
		"CN empty":       mk("", "berth://server/"+s),
	}
	for name, cert := range bad {
		if got, err := ServerIDFromCert(cert); err == nil {
			t.Errorf("%s: accepted as %s", name, got)
		}
	}
}

func TestSerialHex(t *testing.T) {
	t.Parallel()
	c := newTestCA(t, Options{})
	if got, want := SerialHex(c.Cert()), c.Cert().SerialNumber.Text(16); got != want || len(got) != 32 {
		t.Fatalf("SerialHex = %q, want %q", got, want)
	}
	if SerialHex(nil) != "" || SerialHex(&x509.Certificate{}) != "" {
		t.Fatal("SerialHex of nothing")
	}
}
