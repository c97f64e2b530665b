package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLoadOrCreateThenReload(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	clk := newClock()
	c1, created, err := LoadOrCreate(dir, Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if !created {
		t.Fatal("first LoadOrCreate: created = false")
	}
	c2, created, err := LoadOrCreate(dir, Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if created {
		t.Fatal("second LoadOrCreate: created = true")
	}
	if c1.Pin() != c2.Pin() || !bytes.Equal(c1.CertPEM(), c2.CertPEM()) || !c1.key.Equal(c2.key) {
		t.Fatal("reload gave a different CA")
	}

	for name, want := range map[string]os.FileMode{KeyFile: 0o600, CertFile: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode = %04o, want %04o", name, got, want)
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode = %v (err %v), want 0700", fi.Mode().Perm(), err)
	}

	// ca.crt is the public part only, and is what CertPEM returns.
	crt, err := os.ReadFile(filepath.Join(dir, CertFile))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(crt, []byte("PRIVATE")) || !bytes.Equal(crt, c1.CertPEM()) {
		t.Fatalf("ca.crt:\n%s", crt)
	}
	// ca.key is PKCS#8 PEM.
	keyPEM, err := os.ReadFile(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil || block.Type != "PRIVATE KEY" {
		t.Fatalf("ca.key is not a PKCS#8 PEM block")
	}
	if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		t.Fatal(err)
	}
	// No temporary files left behind.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("dir holds %d entries, want ca.key and ca.crt", len(entries))
	}

	cert := c1.Cert()
	now := clk.Now()
	switch {
	case cert.Subject.CommonName != "Berth CA":
		t.Errorf("CN = %q", cert.Subject.CommonName)
	case !cert.IsCA || !cert.BasicConstraintsValid:
		t.Error("not a CA")
	case cert.MaxPathLen != 0 || !cert.MaxPathLenZero:
		t.Errorf("MaxPathLen = %d, zero = %v", cert.MaxPathLen, cert.MaxPathLenZero)
	case cert.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign:
		t.Errorf("KeyUsage = %v", cert.KeyUsage)
	case !cert.NotBefore.Equal(now.Add(-time.Minute)) || !cert.NotAfter.Equal(now.Add(CALifetime)):
		t.Errorf("validity %s .. %s, now %s", cert.NotBefore, cert.NotAfter, now)
	case cert.SerialNumber.BitLen() != 128:
		t.Errorf("serial has %d bits", cert.SerialNumber.BitLen())
	case len(cert.SubjectKeyId) == 0:
		t.Error("no SubjectKeyId")
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("CA key is %T, want ECDSA P-256", cert.PublicKey)
	}
	if !c1.Pool().Equal(c2.Pool()) {
		t.Error("pools differ")
	}
}

func TestLoadOrCreateRefusesLooseKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	newTestCAIn(t, dir)
	keyPath := filepath.Join(dir, KeyFile)
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660, 0o602} {
		if err := os.Chmod(keyPath, mode); err != nil {
			t.Fatal(err)
		}
		_, _, err := LoadOrCreate(dir, Options{})
		if !errors.Is(err, ErrKeyPermissions) || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %04o: err = %v, want ErrKeyPermissions naming chmod 600", mode, err)
		}
	}
	if err := os.Chmod(keyPath, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreate(dir, Options{}); err != nil {
		t.Errorf("mode 0400: %v", err)
	}
}

func newTestCAIn(t *testing.T, dir string) *CA {
	t.Helper()
	c, _, err := LoadOrCreate(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLoadOrCreateConcurrent(t *testing.T) {
	t.Parallel()
	for round := range 5 {
		dir := filepath.Join(t.TempDir(), "not", "yet", "there")
		const n = 8
		var (
			wg      sync.WaitGroup
			cas     [n]*CA
			created [n]bool
			errs    [n]error
			start   = make(chan struct{})
		)
		for i := range n {
			wg.Go(func() {
				<-start
				cas[i], created[i], errs[i] = LoadOrCreate(dir, Options{})
			})
		}
		close(start)
		wg.Wait()
		nCreated := 0
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("round %d goroutine %d: %v", round, i, errs[i])
			}
			if created[i] {
				nCreated++
			}
			if cas[i].Pin() != cas[0].Pin() || !bytes.Equal(cas[i].CertPEM(), cas[0].CertPEM()) || !cas[i].key.Equal(cas[0].key) {
				t.Fatalf("round %d: goroutine %d has another CA", round, i)
			}
		}
		if nCreated != 1 {
			t.Fatalf("round %d: %d callers report created, want 1", round, nCreated)
		}
		disk, _, err := LoadOrCreate(dir, Options{})
		if err != nil || disk.Pin() != cas[0].Pin() || !bytes.Equal(disk.CertPEM(), cas[0].CertPEM()) {
			t.Fatalf("round %d: on disk: %v", round, err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 2 {
			t.Errorf("round %d: dir holds %d entries, want 2", round, len(entries))
		}
	}
}

func TestLoadOrCreateRecreatesMissingCert(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c1 := newTestCAIn(t, dir)
	if err := os.Remove(filepath.Join(dir, CertFile)); err != nil {
		t.Fatal(err)
	}
	c2, created, err := LoadOrCreate(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if created || c2.Pin() != c1.Pin() {
		t.Fatalf("created = %v, pin %s -> %s", created, c1.Pin(), c2.Pin())
	}
	// A certificate issued under the old root verifies under the new one:
	// same key, same subject.
	_, iss := agentTLSCert(t, c1, newID())
	leaf, _ := x509.ParseCertificate(iss.DER)
	if _, _, err := c2.VerifyAgentChain([]*x509.Certificate{leaf}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, CertFile)); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("recreated ca.crt: %v %v", fi, err)
	}
}

func TestLoadOrCreateRefusesCertWithoutKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	newTestCAIn(t, dir)
	if err := os.Remove(filepath.Join(dir, KeyFile)); err != nil {
		t.Fatal(err)
	}
	_, _, err := LoadOrCreate(dir, Options{})
	if err == nil || !strings.Contains(err.Error(), "private key is missing") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, KeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a new ca.key was made next to the old ca.crt")
	}
}

func TestLoadOrCreateRefusesMismatchedCert(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	newTestCAIn(t, dir)
	other := newTestCA(t, Options{})
	if err := os.WriteFile(filepath.Join(dir, CertFile), other.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreate(dir, Options{}); err == nil || !strings.Contains(err.Error(), "does not belong") {
		t.Fatalf("err = %v", err)
	}
}

func TestLoadOrCreateRefusesExpiredCA(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	newTestCAIn(t, dir)
	later := time.Now().Add(CALifetime + time.Hour)
	if _, _, err := LoadOrCreate(dir, Options{Now: func() time.Time { return later }}); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("err = %v", err)
	}
}

func TestLoadOrCreateRefusesBadFiles(t *testing.T) {
	t.Parallel()
	ecKey := mustECKey(t, elliptic.P384())
	p384, _ := x509.MarshalPKCS8PrivateKey(ecKey)
	sec1, _ := x509.MarshalECPrivateKey(mustECKey(t, elliptic.P256()))
	cases := map[string][]byte{
		"garbage":   []byte("not a key"),
		"empty":     nil,
		"P-384":     pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p384}),
		"SEC1":      pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}),
		"truncated": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p384[:20]}),
		"too big":   bytes.Repeat([]byte("A"), maxFileSize+1),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, KeyFile), data, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, _, err := LoadOrCreate(dir, Options{}); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	t.Run("cert garbage", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		newTestCAIn(t, dir)
		if err := os.WriteFile(filepath.Join(dir, CertFile), []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, _, err := LoadOrCreate(dir, Options{}); err == nil {
			t.Fatal("accepted")
		}
	})
}

func TestOptionsCheckAndSetDefaults(t *testing.T) {
	t.Parallel()
	var o Options
	if err := o.CheckAndSetDefaults(); err != nil {
		t.Fatal(err)
	}
	if o.Now == nil || o.AgentCertTTL != 7*24*time.Hour || o.ServerCertTTL != 90*24*time.Hour || o.Hostnames != nil {
		t.Fatalf("defaults: %+v", o)
	}

	o = Options{Hostnames: []string{"Ctl.Example.COM.", "10.0.0.1", "ctl.example.com", "::1", "localhost"}}
	if err := o.CheckAndSetDefaults(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(o.Hostnames, ","); got != "ctl.example.com,10.0.0.1,::1,localhost" {
		t.Fatalf("hostnames = %s", got)
	}

	bad := []Options{
		{AgentCertTTL: 7},
		{AgentCertTTL: -time.Hour},
		{AgentCertTTL: 91 * 24 * time.Hour},
		{ServerCertTTL: time.Second},
		{ServerCertTTL: 400 * 24 * time.Hour},
		{Hostnames: []string{""}},
		{Hostnames: []string{"ctl.example.com:443"}},
		{Hostnames: []string{"*.example.com"}},
		{Hostnames: []string{"-bad.example.com"}},
		{Hostnames: []string{"a..b"}},
		{Hostnames: []string{"white space"}},
		{Hostnames: []string{"fe80::1%eth0"}},
		{Hostnames: []string{strings.Repeat("a", 64) + ".com"}},
	}
	for _, o := range bad {
		if err := o.CheckAndSetDefaults(); err == nil {
			t.Errorf("accepted %+v", o)
		}
		if _, _, err := LoadOrCreate(t.TempDir(), o); err == nil {
			t.Errorf("LoadOrCreate accepted %+v", o)
		}
	}
}
