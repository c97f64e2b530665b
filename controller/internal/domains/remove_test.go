package domains

import (
	"context"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// Removing an ACME domain queues, after its site job, the deletion of its
// certificate and key on the server: a key left there would be reused by
// the host's next owner (another app on that server) for its CSR.
func TestRemoveDeletesTheServersKey(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	now := e.now
	e.addCert(t, "gone.example.com", now.AddDate(0, 0, -10), now.AddDate(0, 0, 80))
	if _, err := e.s.Add(ctx, e.pr, Peer{}, AddParams{App: "shop", Host: "plain.example.com", TLS: "off"}); err != nil {
		t.Fatal(err)
	}
	if err := e.s.Remove(ctx, e.pr, Peer{}, "gone.example.com"); err != nil {
		t.Fatal(err)
	}
	if err := e.s.Remove(ctx, e.pr, Peer{}, "plain.example.com"); err != nil {
		t.Fatal(err)
	}
	jobs, err := e.st.ListDeployments(ctx, store.DeploymentFilter{AppID: &e.app.ID, Status: store.DeploymentQueued, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var deletes []*agentv1.AcmeStep
	siteBefore := false
	for i := len(jobs) - 1; i >= 0; i-- { // oldest first
		j := jobs[i]
		switch j.Kind {
		case JobSite:
			siteBefore = true
		case JobACME:
			params, _, err := e.st.DeploymentData(ctx, j.ID)
			if err != nil {
				t.Fatal(err)
			}
			step := &agentv1.AcmeStep{}
			if err := protojson.Unmarshal(params, step); err != nil {
				t.Fatal(err)
			}
			if step.GetOp() == "delete" {
				if !siteBefore {
					t.Fatal("the key's deletion is queued before the site job that stops using it")
				}
				deletes = append(deletes, step)
			}
		}
	}
	if len(deletes) != 1 || deletes[0].GetCertName() != "gone.example.com" {
		t.Fatalf("delete steps after removal: %v (one for the ACME domain, none for TLS off)", deletes)
	}
}
