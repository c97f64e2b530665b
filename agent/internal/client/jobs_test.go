package client

import (
	"slices"
	"testing"

	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// The controller's bindings reach the executor: a credential's hosts and
// pinned host keys, and the server's allowance to run an app as root.
func TestSpecOfCarriesBindings(t *testing.T) {
	s := specOf(&agentv1.JobStart{
		JobId: "01J0000000000000000000000A", AllowRoot: true,
		Credential: &agentv1.GitCredential{SshPrivateKey: "k", AllowedHosts: []string{"github.com"}, KnownHosts: "github.com ssh-ed25519 AAAA"},
	})
	if !s.AllowRoot || s.Credential == nil || !slices.Equal(s.Credential.AllowedHosts, []string{"github.com"}) ||
		s.Credential.KnownHosts != "github.com ssh-ed25519 AAAA" {
		t.Fatalf("spec: %+v, credential %+v", s, s.Credential)
	}
	if s := specOf(&agentv1.JobStart{JobId: "x"}); s.AllowRoot || s.Credential != nil {
		t.Fatalf("defaults: %+v", s)
	}
}
