// Package agent_test guards what the agent binary may link: it runs on every
// managed server, so it must stay small and never pull in the controller's
// database driver or web code.
package agent_test

import (
	"os/exec"
	"strings"
	"testing"
)

// forbidden are import path prefixes the agent must never depend on.
var forbidden = []string{
	"github.com/jackc/",                   // PostgreSQL driver: the controller's alone
	"github.com/golang-migrate/",          // schema migrations
	"github.com/berthhq/berth/controller", // controller internals
	"github.com/berthhq/berth/gen/dbsqlc", // generated queries
	// html/template cannot be listed: grpc links it through
	// golang.org/x/net/trace. The web UI lives in the controller, covered above.
	"github.com/spf13/cobra", // the agent's CLI is the standard flag package
}

func TestAgentDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "./cmd/berth-agent").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list returned too few packages to be real: %v", deps)
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if strings.HasPrefix(d, f) {
				t.Errorf("berth-agent depends on %s (forbidden prefix %s)", d, f)
			}
		}
	}
}

func TestAgentBuildsStatic(t *testing.T) {
	cmd := exec.Command("go", "build", "-o", t.TempDir()+"/berth-agent", "./cmd/berth-agent")
	cmd.Env = append(cmd.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 build: %v\n%s", err, out)
	}
}
