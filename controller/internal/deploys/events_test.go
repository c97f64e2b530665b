package deploys

import (
	"context"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/notify"
	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// A job's end publishes its event in the transaction that records the end:
// the admin's inbox (the default rule) gets deployment.failed and
// deployment.timed_out, and a success publishes deployment.succeeded
// (which the default rule does not send to the inbox).
func TestJobEndPublishesNotifications(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	e.app(t, "shop")
	kinds := func() map[string]int {
		t.Helper()
		rows, err := e.st.Pool().Query(ctx, "SELECT kind FROM notify_events")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[string]int{}
		for rows.Next() {
			var k string
			if err := rows.Scan(&k); err != nil {
				t.Fatal(err)
			}
			out[k]++
		}
		return out
	}
	result := func(status, errText string) store.ID {
		t.Helper()
		q, err := e.svc.Deploy(ctx, e.admin, Peer{}, DeployParams{App: "shop"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.st.ClaimQueuedDeployments(ctx, []store.ID{e.srv.ID}, 10); err != nil {
			t.Fatal(err)
		}
		id := q.Deployment.ID
		if _, err := e.svc.JobEvents(ctx, e.srv.ID, []*agentv1.ConnectRequest{{Msg: &agentv1.ConnectRequest_JobResult{JobResult: &agentv1.JobResult{
			JobId: id.String(), Seq: 1, Status: status, FailedStep: "build", Error: errText, ExitCode: 2}}}}); err != nil {
			t.Fatal(err)
		}
		return id
	}
	failed := result("failed", "npm ci: exit 2")
	// The same result again (a re-sent batch) publishes nothing more.
	if _, err := e.svc.JobEvents(ctx, e.srv.ID, []*agentv1.ConnectRequest{{Msg: &agentv1.ConnectRequest_JobResult{JobResult: &agentv1.JobResult{
		JobId: failed.String(), Seq: 1, Status: "failed"}}}}); err != nil {
		t.Fatal(err)
	}
	result("succeeded", "")
	q, _ := e.svc.Deploy(ctx, e.admin, Peer{}, DeployParams{App: "shop"})
	e.now = q.Deployment.DeadlineAt.Add(time.Second)
	e.svc.sweep(ctx)

	if k := kinds(); k[notify.KindDeploymentFailed] != 1 || k[notify.KindDeploymentSucceeded] != 1 || k[notify.KindDeploymentTimedOut] != 1 || len(k) != 3 {
		t.Fatalf("events %v", k)
	}
	inbox, err := e.st.Notifications(ctx, e.admin.UserID, store.NotificationFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(inbox) != 2 || inbox[0].Kind != notify.KindDeploymentTimedOut || inbox[1].Kind != notify.KindDeploymentFailed ||
		inbox[1].Title != "Deploy of shop failed" || inbox[1].Body != "Step: build\nnpm ci: exit 2" || inbox[1].Link != "/deployments/"+failed.String() {
		t.Fatalf("inbox %+v", inbox)
	}
}
