package main_test

import (
	"encoding/json"
	"strings"
	"testing"
)

// The account and audit commands go through the gRPC AccountService, the
// same service layer as the web UI: roles, scopes and audit apply alike.
func TestAccountsAndAuditOverTheAPI(t *testing.T) {
	f := startFleet(t)
	f.addServer(t, "web-1")

	r := run(t, f.env, "user", "invite", "dev@example.com", "--role", "viewer", "-o", "json")
	if r.code != 0 || !strings.Contains(r.stdout, `"status": "invited"`) {
		t.Fatalf("invite: %+v", r)
	}
	if r := run(t, f.env, "user", "invite", "dev@example.com", "--role", "viewer"); r.code == 0 || !strings.Contains(r.stderr, "AlreadyExists") {
		t.Fatalf("invite twice: %+v", r)
	}
	if r := run(t, f.env, "user", "invite", "not-an-email", "--role", "viewer"); r.code == 0 || !strings.Contains(r.stderr, "InvalidArgument") {
		t.Fatalf("invite garbage: %+v", r)
	}
	if r := run(t, f.env, "user", "invite", "x@example.com", "--role", "root"); r.code == 0 || !strings.Contains(r.stderr, "InvalidArgument") {
		t.Fatalf("invite with an unknown role: %+v", r)
	}
	r = run(t, f.env, "user", "list", "-o", "json")
	var users []map[string]any
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &users) != nil || len(users) != 2 {
		t.Fatalf("user list: %+v", r)
	}

	// A read-only token made through the API: it reads, it cannot change.
	r = run(t, f.env, "token", "issue", "reader", "--scope", "read", "-o", "json")
	var tok struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &tok) != nil || !strings.HasPrefix(tok.Token, "berth_") {
		t.Fatalf("token issue: %+v", r)
	}
	reader := append(f.env[:len(f.env):len(f.env)], "BERTH_TOKEN="+tok.Token)
	if r := run(t, reader, "server", "list"); r.code != 0 {
		t.Fatalf("reader lists servers: %+v", r)
	}
	if r := run(t, reader, "server", "add", "web-2"); r.code == 0 || !strings.Contains(r.stderr, "PermissionDenied") {
		t.Fatalf("reader adds a server: %+v", r)
	}
	if r := run(t, reader, "security", "events"); r.code == 0 || !strings.Contains(r.stderr, "PermissionDenied") {
		t.Fatalf("reader reads security events: %+v", r)
	}
	if r := run(t, reader, "user", "disable", "dev@example.com"); r.code == 0 || !strings.Contains(r.stderr, "PermissionDenied") {
		t.Fatalf("reader disables a user: %+v", r)
	}
	if r := run(t, f.env, "token", "list", "-o", "json"); r.code != 0 || strings.Contains(r.stdout, tok.Token) || !strings.Contains(r.stdout, "reader") {
		t.Fatalf("token list shows the value or misses the token: %+v", r)
	}
	if r := run(t, f.env, "token", "revoke", tok.ID); r.code != 0 {
		t.Fatalf("revoke: %+v", r)
	}
	if r := run(t, reader, "server", "list"); r.code == 0 || !strings.Contains(r.stderr, "Unauthenticated") {
		t.Fatalf("revoked token still works: %+v", r)
	}
	if r := run(t, f.env, "token", "revoke", "not-an-id"); r.code == 0 || !strings.Contains(r.stderr, "InvalidArgument") {
		t.Fatalf("revoke garbage: %+v", r)
	}

	// Admins cannot disable themselves.
	if r := run(t, f.env, "user", "disable", "ops@example.com"); r.code == 0 || !strings.Contains(r.stderr, "FailedPrecondition") {
		t.Fatalf("self-disable: %+v", r)
	}
	if r := run(t, f.env, "user", "disable", "dev@example.com", "-o", "json"); r.code != 0 || !strings.Contains(r.stdout, `"status": "disabled"`) {
		t.Fatalf("disable: %+v", r)
	}

	// Everything above is in the activity log and security events, with
	// no token value anywhere.
	r = run(t, f.env, "activity", "-o", "json")
	for _, a := range []string{"server.created", "user.invited", "token.created", "token.revoked", "user.disabled"} {
		if !strings.Contains(r.stdout, a) {
			t.Errorf("activity lacks %s:\n%s", a, r.stdout)
		}
	}
	if strings.Contains(r.stdout, tok.Token) {
		t.Fatal("token value in the activity log")
	}
	r = run(t, f.env, "security", "events", "-o", "json")
	if r.code != 0 || !strings.Contains(r.stdout, "token") || strings.Contains(r.stdout, tok.Token) {
		t.Fatalf("security events: %+v", r)
	}
	if r := run(t, f.env, "security", "events", "--severity", "loud"); r.code == 0 || !strings.Contains(r.stderr, "InvalidArgument") {
		t.Fatalf("bad severity: %+v", r)
	}
}
