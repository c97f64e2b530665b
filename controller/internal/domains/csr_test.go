package domains

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"net/url"
	"testing"
)

func csrPEM(t *testing.T, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// A server's CSR goes to the CA only when it asks for exactly the
// domain's host: lego orders every name of a CSR (its common name and IP
// addresses too), so a CSR naming another app's host in its common name
// would, with DNS-01 solved by the controller, get that host a
// certificate whose key sits on this server.
func TestCheckCSR(t *testing.T) {
	t.Parallel()
	const host = "shop.example.com"
	good := []*x509.CertificateRequest{
		{DNSNames: []string{host}},
		{DNSNames: []string{host}, Subject: pkix.Name{CommonName: host}},
		{DNSNames: []string{"*.example.com"}, Subject: pkix.Name{CommonName: "*.example.com"}},
	}
	for i, tmpl := range good {
		want := tmpl.DNSNames[0]
		if _, err := checkCSR(csrPEM(t, tmpl), want); err != nil {
			t.Errorf("good CSR %d refused: %v", i, err)
		}
	}
	u, _ := url.Parse("spiffe://example.com/x")
	bad := map[string]*x509.CertificateRequest{
		"other host in CN":  {DNSNames: []string{host}, Subject: pkix.Name{CommonName: "bank.example.com"}},
		"extra SAN":         {DNSNames: []string{host, "bank.example.com"}},
		"other SAN":         {DNSNames: []string{"bank.example.com"}},
		"no SAN":            {Subject: pkix.Name{CommonName: host}},
		"IP address":        {DNSNames: []string{host}, IPAddresses: []net.IP{net.ParseIP("192.0.2.1")}},
		"email address":     {DNSNames: []string{host}, EmailAddresses: []string{"a@example.com"}},
		"URI":               {DNSNames: []string{host}, URIs: []*url.URL{u}},
		"duplicate SAN":     {DNSNames: []string{host, host}},
		"uppercase variant": {DNSNames: []string{"SHOP.example.com"}},
		"CN is an IP":       {DNSNames: []string{host}, Subject: pkix.Name{CommonName: "192.0.2.1"}},
	}
	for name, tmpl := range bad {
		if _, err := checkCSR(csrPEM(t, tmpl), host); err == nil {
			t.Errorf("%s: CSR accepted", name)
		}
	}
	for name, raw := range map[string][]byte{
		"empty":     nil,
		"not PEM":   []byte("hello"),
		"other PEM": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}}),
		"garbage":   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1, 2, 3}}),
	} {
		if _, err := checkCSR(raw, host); err == nil {
			t.Errorf("%s: CSR accepted", name)
		}
	}
	// A valid request whose signature does not verify.
	raw := csrPEM(t, &x509.CertificateRequest{DNSNames: []string{host}})
	blk, _ := pem.Decode(raw)
	blk.Bytes[len(blk.Bytes)-1] ^= 0xff
	if _, err := checkCSR(pem.EncodeToMemory(blk), host); err == nil {
		t.Error("CSR with a broken signature accepted")
	}
}
