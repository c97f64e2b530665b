package proxy

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An app's delete removes its site from nginx and then the certificate
// keys its CSRs made, their chains and the challenge answers its jobs
// wrote: only that app's (another app's key, answer and site stay), and
// a symlink planted among them is removed itself, never followed.
func TestRemoveAppRemovesItsKeysAndChallenges(t *testing.T) {
	e := startNginx(t)
	ctx := context.Background()
	ca := newCA(t)
	shopBE, blogBE := backend(t, "shop"), backend(t, "blog")
	tok := func(c byte) string { return strings.Repeat(string(c), 43) }
	keyAuth := func(tk string) string { return tk + "." + strings.Repeat("T", 43) }

	// shop: an issued certificate its site serves, a key still waiting
	// for its first certificate, and a challenge answer.
	csr, err := e.m.CSRWith("shop.test", []string{"shop.test"}, CSROptions{App: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.InstallCertificate("shop.test", ca.signCSR(t, csr)); err != nil {
		t.Fatal(err)
	}
	e.apply(Site{App: "shop", Upstream: shopBE.URL, Domains: []Domain{{Host: "shop.test", Primary: true, TLS: TLSACME, CertName: "shop.test"}}})
	if _, err := e.m.CSRWith("pending.shop.test", []string{"pending.shop.test"}, CSROptions{App: "shop"}); err != nil {
		t.Fatal(err)
	}
	if err := e.m.PutChallengeFor("shop", tok('a'), keyAuth(tok('a'))); err != nil {
		t.Fatal(err)
	}
	// blog: the same on another app.
	csr, err = e.m.CSRWith("blog.test", []string{"blog.test"}, CSROptions{App: "blog"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.InstallCertificate("blog.test", ca.signCSR(t, csr)); err != nil {
		t.Fatal(err)
	}
	e.apply(Site{App: "blog", Upstream: blogBE.URL, Domains: []Domain{{Host: "blog.test", Primary: true, TLS: TLSACME, CertName: "blog.test"}}})
	if err := e.m.PutChallengeFor("blog", tok('b'), keyAuth(tok('b'))); err != nil {
		t.Fatal(err)
	}
	// A key name that moved from shop to blog (the host changed apps) is
	// blog's now.
	if _, err := e.m.CSRWith("moved.test", []string{"moved.test"}, CSROptions{App: "shop"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.CSRWith("moved.test", []string{"moved.test"}, CSROptions{App: "blog"}); err != nil {
		t.Fatal(err)
	}
	// Planted: records saying shop owns names that are symlinks to files
	// outside (a key of the server's, a file in the challenge directory).
	outside := filepath.Join(t.TempDir(), "precious.key")
	if err := os.WriteFile(outside, []byte("not the agent's"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(e.m.keysDir(), "evil.test.key")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.m.ownersDir(ownCerts), "evil.test"), []byte("shop"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(e.cfg.StateDir, "challenges", tok('e'))); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.m.ownersDir(ownChallenges), tok('e')), []byte("shop"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A record that is a link names nothing.
	if err := os.Symlink(filepath.Join(e.m.ownersDir(ownCerts), "shop.test"), filepath.Join(e.m.ownersDir(ownCerts), "blog-link.test")); err != nil {
		t.Fatal(err)
	}
	if a := fetch(t, e.client(), "http://shop.test/.well-known/acme-challenge/"+tok('a')); a.status != 200 {
		t.Fatalf("shop's challenge answer not served before the delete: %d", a.status)
	}

	c, err := e.m.RemoveApp(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	exists := func(p string) bool { _, err := os.Lstat(p); return err == nil }
	chal := func(tk string) string { return filepath.Join(e.cfg.StateDir, "challenges", tk) }
	for _, p := range []string{
		e.m.keyPath("shop.test"), e.m.certPath("shop.test"), e.m.keyPath("pending.shop.test"), chal(tok('a')),
		e.m.keyPath("evil.test"), chal(tok('e')), e.m.siteFile("shop"), e.m.siteSpec("shop"),
		filepath.Join(e.m.ownersDir(ownCerts), "shop.test"), filepath.Join(e.m.ownersDir(ownChallenges), tok('a')),
	} {
		if exists(p) {
			t.Errorf("%s is still there after shop's delete", p)
		}
	}
	for _, p := range []string{e.m.keyPath("blog.test"), e.m.certPath("blog.test"), e.m.keyPath("moved.test"), chal(tok('b')), e.m.siteFile("blog")} {
		if !exists(p) {
			t.Errorf("%s (blog's) was removed by shop's delete", p)
		}
	}
	if b, err := os.ReadFile(outside); err != nil || string(b) != "not the agent's" {
		t.Fatalf("a symlink was followed: %q %v", b, err)
	}
	if c.Challenges != 2 || len(c.Certificates) != 3 {
		t.Fatalf("cleanup: %+v", c)
	}
	// nginx no longer routes shop; blog still answers over HTTPS.
	if a := fetch(t, e.client(), "http://shop.test/"); a.status != 404 {
		t.Fatalf("shop.test after its delete: %d", a.status)
	}
	if got := decodeEcho(t, fetch(t, e.tlsClient(ca.pool), "https://blog.test/")); got.Name != "blog" {
		t.Fatalf("blog after shop's delete: %+v", got)
	}
	// Again (a re-sent delete job): nothing left, no error.
	if c, err := e.m.RemoveApp(ctx, "shop"); err != nil || c.Challenges != 0 || len(c.Certificates) != 0 {
		t.Fatalf("second delete: %+v %v", c, err)
	}
	if _, err := e.m.RemoveApp(ctx, "../etc"); err == nil {
		t.Fatal("an invalid app name was accepted")
	}
}
