package domains

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
)

// Adding a host is the write scope's; two options of it are not:
// --dns-provider spends the DNS credentials an admin stored (DNS-01 proves
// control of any name in their zones, whatever that name's DNS points at,
// so a write-scoped token could get a trusted certificate for, say,
// mail.example.com), and --acme-directory makes the controller talk to
// a server of the caller's choosing. Both need the admin scope.
func TestAddPrivilegedOptionsNeedAdmin(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	if _, err := e.s.AddDNSProvider(ctx, e.pr, Peer{}, "dns", "cloudflare", map[string]string{"CF_DNS_API_TOKEN": "t"}); err != nil {
		t.Fatal(err)
	}
	writer := &auth.Principal{UserID: e.pr.UserID, Email: e.pr.Email, Role: store.RoleAdmin, Scopes: []store.Scope{store.ScopeWrite}}
	for name, p := range map[string]AddParams{
		"dns provider":       {App: "shop", Host: "mail.example.com", DNSProvider: "dns"},
		"wildcard with dns":  {App: "shop", Host: "*.example.com", DNSProvider: "dns"},
		"own acme directory": {App: "shop", Host: "own.example.com", ACMEDirectory: "https://ca.attacker.example/dir"},
	} {
		if _, err := e.s.Add(ctx, writer, Peer{}, p); !errors.Is(err, auth.ErrForbidden) {
			t.Errorf("%s with the write scope: %v, want forbidden", name, err)
		}
	}
	if _, err := e.s.Get(ctx, e.pr, "mail.example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused domain was stored: %v", err)
	}
	// The install's own directory named explicitly is no new server.
	if _, err := e.s.Add(ctx, writer, Peer{}, AddParams{App: "shop", Host: "plain.example.com", ACMEDirectory: e.s.cfg.ACMEDirectory}); err != nil {
		t.Fatalf("write scope with the install's directory: %v", err)
	}
	for _, p := range []AddParams{
		{App: "shop", Host: "mail.example.com", DNSProvider: "dns"},
		{App: "shop", Host: "own.example.com", ACMEDirectory: "https://ca.example/dir"},
	} {
		if _, err := e.s.Add(ctx, e.pr, Peer{}, p); err != nil {
			t.Fatalf("admin %s: %v", p.Host, err)
		}
	}
}

// Custom certificate files: nginx's master (root) reads them, so a path
// anywhere would let the write scope serve any key on the server and probe
// root-only files through nginx -t's errors. The write scope may name
// files inside the app's directory only (the agent reads them through it
// and serves its copies: the site carries the directory to confine them
// to); anywhere else needs the admin scope.
func TestCustomPathsOutsideTheAppNeedAdmin(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	dir := e.app.DeployPath // /srv/berth/shop
	writer := &auth.Principal{UserID: e.pr.UserID, Email: e.pr.Email, Role: store.RoleAdmin, Scopes: []store.Scope{store.ScopeWrite}}
	for name, p := range map[string][2]string{
		"both outside":        {"/etc/ssl/private/site.pem", "/etc/ssl/private/site.key"},
		"key outside":         {dir + "/shared/tls/site.pem", "/etc/ssl/private/site.key"},
		"cert outside":        {"/etc/ssl/site.pem", dir + "/shared/tls/site.key"},
		"sibling with prefix": {dir + "x/site.pem", dir + "x/site.key"},
		"the directory":       {dir, dir + "/site.key"},
	} {
		_, err := e.s.Add(ctx, writer, Peer{}, AddParams{App: "shop", Host: "custom.example.com", TLS: "custom", CertPath: p[0], KeyPath: p[1]})
		if !errors.Is(err, auth.ErrForbidden) || !strings.Contains(err.Error(), "admin scope") || !strings.Contains(err.Error(), dir) {
			t.Errorf("%s with the write scope: %v, want forbidden naming the admin scope and %s", name, err, dir)
		}
	}
	if _, err := e.s.Get(ctx, e.pr, "custom.example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused domain was stored: %v", err)
	}
	in, err := e.s.Add(ctx, writer, Peer{}, AddParams{App: "shop", Host: "inside.example.com", TLS: "custom",
		CertPath: dir + "/shared/tls/site.pem", KeyPath: dir + "/shared/tls/site.key"})
	if err != nil {
		t.Fatalf("write scope, files inside the app's directory: %v", err)
	}
	out, err := e.s.Add(ctx, e.pr, Peer{}, AddParams{App: "shop", Host: "outside.example.com", TLS: "custom",
		CertPath: "/etc/ssl/site.pem", KeyPath: "/etc/ssl/private/site.key"})
	if err != nil {
		t.Fatalf("admin, files outside: %v", err)
	}
	site, _ := siteSpec(e.app, []store.Domain{in.Domain, out.Domain}, e.now)
	for _, d := range site.GetDomains() {
		want := ""
		if d.GetHost() == "inside.example.com" {
			want = dir
		}
		if d.GetConfineRoot() != want {
			t.Errorf("%s: confine_root %q, want %q", d.GetHost(), d.GetConfineRoot(), want)
		}
	}
}
