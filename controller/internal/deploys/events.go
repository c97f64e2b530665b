package deploys

import (
	"context"
	"fmt"

	"github.com/berthhq/berth/controller/internal/notify"
	"github.com/berthhq/berth/controller/internal/store"
)

// publishEnd publishes deployment.failed, deployment.timed_out or
// deployment.succeeded for a job that just ended, in tx (the transaction
// that recorded the end) so the event exists exactly when the end
// committed. Process jobs and schedule runs report failures only; a
// canceled job reports nothing. A failure to publish is logged and does not
// undo the end (Publish runs in a savepoint).
func (s *Service) publishEnd(ctx context.Context, tx *store.Store, d store.Deployment) {
	var ev notify.Event
	switch d.Status {
	case store.DeploymentFailed:
		ev = notify.Event{Kind: notify.KindDeploymentFailed, Level: notify.Critical}
	case store.DeploymentTimedOut:
		ev = notify.Event{Kind: notify.KindDeploymentTimedOut, Level: notify.Critical}
	case store.DeploymentSucceeded:
		if d.Kind != store.JobDeploy && d.Kind != "" {
			return
		}
		ev = notify.Event{Kind: notify.KindDeploymentSucceeded, Level: notify.Info}
	default:
		return
	}
	name := d.AppID.String()
	var srv *store.ID
	if a, err := tx.App(ctx, d.AppID); err == nil {
		name, srv = a.Name, &a.ServerID
	}
	what := "Deploy"
	switch d.Kind {
	case store.JobDelete:
		what = "Delete"
	case store.JobProcess:
		what = "Process job"
	case store.JobSchedule:
		what = "Scheduled run"
	}
	ev.Title = fmt.Sprintf("%s of %s %s", what, name, map[string]string{
		notify.KindDeploymentFailed: "failed", notify.KindDeploymentTimedOut: "timed out", notify.KindDeploymentSucceeded: "succeeded",
	}[ev.Kind])
	if d.FailedStep != nil {
		ev.Body = "Step: " + *d.FailedStep + "\n"
	}
	if d.FailureReason != nil {
		ev.Body += *d.FailureReason
	}
	id := d.ID
	ev.AppID, ev.ServerID, ev.DeploymentID = &d.AppID, srv, &id
	ev.Link = "/deployments/" + d.ID.String()
	// No dedupe key: every deployment is its own event, and two failed
	// deploys of one app are two things to know.
	if _, err := notify.Publish(ctx, tx, ev); err != nil {
		s.log.Error("publish deployment notification", "deployment", d.ID.String(), "err", err)
	}
}
