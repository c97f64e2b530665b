package main_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serverCerts is server show's certificate list.
func (f *fleetEnv) serverCerts(t *testing.T, name string) []map[string]any {
	t.Helper()
	r := run(t, f.env, "server", "show", name, "-o", "json")
	var m struct {
		Certificates []map[string]any `json:"certificates"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &m) != nil {
		t.Fatalf("server show: %+v", r)
	}
	return m.Certificates
}

// TestRevokeCertCutsLiveAgent: berth server revoke-cert SERIAL, with the
// real binaries, cuts the agent's live stream at once and the agent is
// refused from then on; server show lists the certificate as revoked.
func TestRevokeCertCutsLiveAgent(t *testing.T) {
	t.Parallel()
	f := startFleet(t)
	a := f.addServer(t, "cert-1")
	dir := filepath.Join(t.TempDir(), "agent")
	if r := enrollAgent(t, f.c.grpcAddr, a.Token, a.CAPin, dir); r.code != 0 {
		t.Fatalf("enroll: %+v", r)
	}
	ag := startAgent(t, dir)
	waitFor(t, "cert-1 online", 30*time.Second, func() bool { s := f.server(t, "cert-1"); return s != nil && s["status"] == "online" })
	certs := f.serverCerts(t, "cert-1")
	if len(certs) != 1 || certs[0]["revoked"] != false || certs[0]["issued_for"] != "enroll" {
		t.Fatalf("certificates: %v", certs)
	}
	serial := certs[0]["serial"].(string)

	if r := run(t, f.env, "server", "revoke-cert", "not-hex"); r.code == 0 || !strings.Contains(oneLine(t, r), "InvalidArgument") {
		t.Fatalf("malformed serial: %+v", r)
	}
	if r := run(t, f.env, "server", "revoke-cert", serial); r.code != 0 || !strings.Contains(r.stdout, serial) {
		t.Fatalf("revoke-cert: %+v", r)
	}
	waitFor(t, "the agent to be refused", 30*time.Second, func() bool {
		return strings.Contains(ag.logs.String(), "controller refused this agent")
	})
	if certs := f.serverCerts(t, "cert-1"); len(certs) != 1 || certs[0]["revoked"] != true {
		t.Fatalf("certificates after revoke-cert: %v", certs)
	}
	if r := run(t, f.env, "server", "revoke-cert", serial); r.code == 0 || !strings.Contains(oneLine(t, r), "NotFound") {
		t.Fatalf("revoking twice: %+v", r)
	}
}
