package proxy

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A custom certificate inside the app's directory (what the write scope
// may name) is read through an os.Root of that directory and nginx serves
// the agent's copy: a symlink out of the directory is refused with the
// same words whether its target exists or not, and one swapped in after
// the site was applied reaches nothing (nginx keeps serving the copy, the
// next apply is refused and the live site stays).
func TestConfinedCustomCertificate(t *testing.T) {
	e := startNginx(t)
	ctx := context.Background()
	ca := newCA(t)
	app := filepath.Join(e.root, "srv", "shop")
	tlsDir := filepath.Join(app, "shared", "tls")
	if err := os.MkdirAll(tlsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := ca.customPair(t, tlsDir, []string{"shop.test"})
	// A link inside the directory to a file inside it is fine.
	link := filepath.Join(app, "current.key")
	if err := os.Symlink("shared/tls/shop.test.key", link); err != nil {
		t.Fatal(err)
	}
	be := backend(t, "shop")
	site := func(cert, key string) Site {
		return Site{App: "shop", Upstream: be.URL, Domains: []Domain{{Host: "shop.test", TLS: TLSCustom, CertPath: cert, KeyPath: key, ConfineRoot: app}}}
	}
	if err := e.m.Apply(ctx, site(certPath, link)); err != nil {
		t.Fatal(err)
	}
	if got := decodeEcho(t, fetch(t, e.tlsClient(ca.pool), "https://shop.test/")); got.Name != "shop" {
		t.Fatalf("HTTPS with the confined certificate: %+v", got)
	}
	conf, err := os.ReadFile(e.m.siteFile("shop"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(conf), app) || !strings.Contains(string(conf), e.m.customDir()) {
		t.Fatalf("nginx reads the app's files, not the agent's copies:\n%s", conf)
	}
	if info, err := ReadCertInfoIn(app, certPath); err != nil || info.DNSNames[0] != "shop.test" {
		t.Fatalf("ReadCertInfoIn: %+v %v", info, err)
	}

	// Links out of the directory: to a root-only key that exists, and to
	// a path that does not. The refusal reads the same for both.
	secretDir := filepath.Join(e.root, "private")
	if err := os.MkdirAll(secretDir, 0o700); err != nil {
		t.Fatal(err)
	}
	_, secretKey := ca.customPair(t, secretDir, []string{"secret.test"})
	msgs := map[string]string{}
	for name, target := range map[string]string{"exists": secretKey, "missing": filepath.Join(secretDir, "none.key"), "relative": "../../private/secret.test.key"} {
		l := filepath.Join(tlsDir, "out-"+name+".key")
		if err := os.Symlink(target, l); err != nil {
			t.Fatal(err)
		}
		err := e.m.Apply(ctx, site(certPath, l))
		if err == nil || !strings.Contains(err.Error(), "must stay inside it") {
			t.Fatalf("a link out of the app's directory (%s): %v", name, err)
		}
		msgs[name] = strings.ReplaceAll(err.Error(), l, "LINK")
		if _, err := ReadCertInfoIn(app, l); err == nil {
			t.Fatalf("ReadCertInfoIn followed a link out (%s)", name)
		}
	}
	if msgs["exists"] != msgs["missing"] {
		t.Fatalf("the refusal tells whether a file outside exists:\n%s\n%s", msgs["exists"], msgs["missing"])
	}
	// Swapped after the apply: nginx still serves the copy; the next apply
	// is refused and the live site stays.
	if err := os.Remove(keyPath); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secretKey, keyPath); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Reload(ctx); err != nil {
		t.Fatalf("nginx reload after the swap: %v", err)
	}
	if got := decodeEcho(t, fetch(t, e.tlsClient(ca.pool), "https://shop.test/")); got.Name != "shop" {
		t.Fatalf("HTTPS after the swap: %+v", got)
	}
	if err := e.m.Apply(ctx, site(certPath, link)); err == nil || !strings.Contains(err.Error(), "must stay inside it") {
		t.Fatalf("apply after the swap: %v", err)
	}
	// Not a regular file; outside the directory it names; the directory
	// holding the agent's own.
	fifo := filepath.Join(tlsDir, "fifo.pem")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Apply(ctx, site(fifo, link)); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("a FIFO: %v", err)
	}
	if err := e.m.Apply(ctx, site(certPath, secretKey)); err == nil || !strings.Contains(err.Error(), "inside the app's directory") {
		t.Fatalf("a key path outside confine_root: %v", err)
	}
	s := site(filepath.Join(e.cfg.StateDir, "keys", "x.pem"), filepath.Join(e.cfg.StateDir, "keys", "x.key"))
	s.Domains[0].ConfineRoot = e.cfg.StateDir
	if err := e.m.Apply(ctx, s); err == nil || !strings.Contains(err.Error(), "agent's own directory") {
		t.Fatalf("the agent's state directory as the app's: %v", err)
	}
	// Only copies an applied site names are kept.
	ents, err := os.ReadDir(e.m.customDir())
	if err != nil || len(ents) != 2 {
		t.Fatalf("copies kept: %d %v", len(ents), err)
	}
}
