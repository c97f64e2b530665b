package identity

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// selfSigned makes a CA and a client certificate for key, signed by it.
func selfSigned(t *testing.T, key *ecdsa.PrivateKey) (caDER, certDER []byte, ca *x509.Certificate) {
	t.Helper()
	caKey, _ := NewKey()
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Berth CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ = x509.ParseCertificate(caDER)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "01ARZ3NDEKTSV4RRFFQ69G5FAV"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(89 * time.Minute), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	certDER, err = x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return caDER, certDER, ca
}

func TestSaveLoad(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "agent")
	if _, err := Load(dir); err != ErrNotEnrolled {
		t.Fatalf("empty dir: %v", err)
	}
	key, _ := NewKey()
	caDER, certDER, _ := selfSigned(t, key)
	if err := Save(dir, key, certDER, caDER); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(dir, KeyFile)); st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", st.Mode().Perm())
	}
	id, err := Load(dir)
	if err != nil || id.ServerID != "01ARZ3NDEKTSV4RRFFQ69G5FAV" || !id.Key.Equal(key) {
		t.Fatalf("load: %+v %v", id, err)
	}
	cfg := id.ClientTLS()
	if cfg.ServerName != ServerName || cfg.MinVersion != 0x0304 || len(cfg.Certificates) != 1 {
		t.Fatalf("client TLS: %+v", cfg)
	}
	// Renew with a third of the lifetime left: 90 min lifetime -> 30 min before expiry.
	if got := id.Cert.NotAfter.Sub(RenewAt(id.Cert)); got != 30*time.Minute {
		t.Fatalf("renew %s before expiry, want 30m", got)
	}

	// A crash between Save's renames (new key in place, new cert pending)
	// is finished by Load.
	key2, _ := NewKey()
	_, cert2, _ := selfSigned(t, key2)
	if err := Save(dir, key2, cert2, caDER); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, CertFile), filepath.Join(dir, CertFile+".new")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, CertFile), []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}
	if id, err := Load(dir); err != nil || !id.Key.Equal(key2) {
		t.Fatalf("load after an interrupted save: %v", err)
	}

	// A key that does not match the certificate is refused.
	other, _ := NewKey()
	_, cert3, _ := selfSigned(t, other)
	if err := Save(dir, key2, cert3, caDER); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("mismatched key: %v", err)
	}
	// A key readable by others is refused.
	if err := Save(dir, key2, cert2, caDER); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, KeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("readable key: %v", err)
	}
}

func TestCheckPin(t *testing.T) {
	t.Parallel()
	key, _ := NewKey()
	_, _, ca := selfSigned(t, key)
	pin := Pin(ca)
	if err := CheckPin(ca, pin); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "sha256:", "sha1:" + pin[7:], "sha256:zz" + pin[9:], pin[:len(pin)-2], "sha256:" + strings.Repeat("0", 64)} {
		if err := CheckPin(ca, bad); err == nil {
			t.Fatalf("pin %q accepted", bad)
		}
	}
}
