package domains

import (
	"context"
	"errors"
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
