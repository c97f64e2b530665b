package proxy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Custom certificate and key paths are read by nginx's master, which runs
// as root, and by the agent (root too). A person with the write scope
// chooses them, so they must not reach the agent's own keys (another
// site's ACME key, the agent's identity) nor a FIFO or device that would
// hang or flood the root reader.
func TestCustomFilesRefused(t *testing.T) {
	e := newEnv(t)
	ca := newCA(t)
	certPath, keyPath := ca.customPair(t, e.root, []string{"own.test"})
	// Another app's ACME key made by this agent, and a symlink to it from
	// an innocent-looking place.
	mustCSR(t, e.m, "other.test", []string{"other.test"})
	stateKey := e.m.keyPath("other.test")
	link := filepath.Join(e.root, "innocent.key")
	if err := os.Symlink(stateKey, link); err != nil {
		t.Fatal(err)
	}
	protected := filepath.Join(e.root, "agent-data")
	os.MkdirAll(protected, 0o700)
	identity := filepath.Join(protected, "agent.key")
	os.WriteFile(identity, []byte("x"), 0o600)
	e.m.cfg.ProtectedDirs = []string{protected}
	fifo := filepath.Join(e.root, "fifo.pem")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	site := func(cert, key string) Site {
		return Site{App: "app", Upstream: "http://127.0.0.1:3000", Domains: []Domain{{Host: "own.test", TLS: TLSCustom, CertPath: cert, KeyPath: key}}}
	}
	for name, s := range map[string]Site{
		"key in the state dir":         site(certPath, stateKey),
		"certificate in the state dir": site(e.m.keyPath("other.test"), keyPath),
		"symlink into the state dir":   site(certPath, link),
		"key in a protected dir":       site(certPath, identity),
		"key is a FIFO":                site(certPath, fifo),
		"certificate is a device":      site("/dev/zero", keyPath),
		"certificate is a directory":   site(e.root, keyPath),
	} {
		// The deadline only keeps a regression (nginx -t blocked on the
		// FIFO) from hanging the test; the check must refuse before it.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := e.m.Apply(ctx, s)
		cancel()
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Apply = %v, want ErrInvalid", name, err)
		}
	}
	if _, err := os.Stat(e.m.siteFile("app")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused site was written: %v", err)
	}
}

func TestReadCertInfoRefusesSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.pem")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{fifo, "/dev/zero", dir} {
		if _, err := ReadCertInfo(p); !errors.Is(err, ErrInvalid) {
			t.Errorf("ReadCertInfo(%s) = %v, want ErrInvalid", p, err)
		}
	}
}
