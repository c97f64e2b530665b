package deploys

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
)

var (
	// Lengths are checked apart (see validName).
	runAsRE  = regexp.MustCompile(`^[a-z_][a-z0-9_-]*$`)
	commitRE = regexp.MustCompile(`^[0-9a-f]*$`)
)

// validCommit: a hex commit id, abbreviated down to 4 digits.
func validCommit(s string) bool { return len(s) >= 4 && len(s) <= 64 && commitRE.MatchString(s) }

// Queued is a new deployment and the unfinished ones of its app ahead of it.
type Queued struct {
	Deployment store.Deployment
	Behind     []store.Deployment
}

// DeployParams asks for a deployment.
type DeployParams struct {
	App         string
	Environment store.Environment
	Commit      string
}

// Deploy enqueues a deployment of an app; the dispatcher starts it when
// its agent is connected and no other deployment of the app runs.
func (s *Service) Deploy(ctx context.Context, pr *auth.Principal, peer Peer, p DeployParams) (Queued, error) {
	if err := require(pr, store.ScopeDeploy); err != nil {
		return Queued{}, err
	}
	env, err := checkEnvironment(p.Environment)
	if err != nil {
		return Queued{}, err
	}
	p.Commit = strings.ToLower(strings.TrimSpace(p.Commit))
	if p.Commit != "" && !validCommit(p.Commit) {
		return Queued{}, fmt.Errorf("%w: --commit must be a hex SHA (4-64 characters)", ErrInvalid)
	}
	a, err := s.ResolveApp(ctx, p.App)
	if err != nil {
		return Queued{}, err
	}
	// Refused here already so the caller hears why; dispatch checks again.
	if _, _, err := s.loadRunnable(ctx, a, true); err != nil {
		return Queued{}, err
	}
	cp := store.CreateDeploymentParams{AppID: a.ID, Environment: env, UserID: &pr.UserID, TriggeredBy: store.TriggerUser}
	if pr.TokenID != nil {
		ref := pr.TokenID.String()
		cp.TriggeredBy, cp.TriggerRef = store.TriggerAPIToken, &ref
	}
	if p.Commit != "" {
		cp.CommitSHA = &p.Commit
	}
	return s.enqueue(ctx, pr, peer, a, cp, "deployment.queued")
}

func checkEnvironment(e store.Environment) (store.Environment, error) {
	switch e {
	case "":
		return store.EnvironmentProduction, nil
	case store.EnvironmentProduction, store.EnvironmentStaging:
		return e, nil
	}
	return "", fmt.Errorf("%w: --env must be production or staging", ErrInvalid)
}

func (s *Service) enqueue(ctx context.Context, pr *auth.Principal, peer Peer, a store.App, cp store.CreateDeploymentParams, action string) (Queued, error) {
	// An idle app whose agent has its stream here is created dispatched
	// and sent at once, with the app in hand: the dispatcher's claim and
	// its reload of the app are off a deploy's critical path. A busy app
	// queues as usual.
	cp.Dispatch = s.fleet.Hub().Holds(a.ServerID)
	d, err := s.st.CreateDeployment(ctx, cp)
	if errors.Is(err, store.ErrAppBusy) {
		cp.Dispatch = false
		d, err = s.st.CreateDeployment(ctx, cp)
	}
	if err != nil {
		return Queued{}, err
	}
	if cp.Dispatch {
		s.sendTo(ctx, a, d)
		s.notify(ctx, "log:"+d.ID.String())
	} else {
		// This controller's dispatcher starts at once, beside the audit
		// record; the notification below wakes the other controllers.
		s.poke()
	}
	changes := map[string]any{"environment": string(d.Environment), "branch": d.Branch}
	if d.CommitSHA != nil {
		changes["commit"] = *d.CommitSHA
	}
	if d.RollbackFromID != nil {
		changes["rollback_to"] = d.RollbackFromID.String()
	}
	if pr != nil {
		s.activity(ctx, pr, peer, action, "deployment", d.ID, a.Name, changes)
	}
	if cp.Dispatch {
		return Queued{Deployment: d}, nil // nothing ahead of it, by its creation
	}
	behind, err := s.ahead(ctx, d)
	if err != nil {
		return Queued{}, err
	}
	s.notify(ctx, "dispatch")
	return Queued{Deployment: d, Behind: behind}, nil
}

// ahead lists the app's unfinished deployments older than d.
func (s *Service) ahead(ctx context.Context, d store.Deployment) ([]store.Deployment, error) {
	list, err := s.st.ListDeployments(ctx, store.DeploymentFilter{AppID: &d.AppID, Before: &d.ID, Limit: 100})
	if err != nil {
		return nil, err
	}
	var out []store.Deployment
	for _, x := range list {
		// Schedule runs go beside the app's other jobs: none waits for
		// them, and they wait for none.
		if !x.Status.Finished() && x.Kind != store.JobSchedule && d.Kind != store.JobSchedule {
			out = append(out, x)
		}
	}
	return out, nil
}

// Rollback enqueues a switch of `current` back to a kept release: to is a
// deployment id, empty for the release before the current one. A release
// the app no longer keeps is refused with ErrPruned.
func (s *Service) Rollback(ctx context.Context, pr *auth.Principal, peer Peer, app, to string) (Queued, error) {
	if err := require(pr, store.ScopeDeploy); err != nil {
		return Queued{}, err
	}
	a, err := s.ResolveApp(ctx, app)
	if err != nil {
		return Queued{}, err
	}
	if _, _, err := s.loadRunnable(ctx, a, false); err != nil {
		return Queued{}, err
	}
	// Releases are the app's succeeded deploys (rollbacks build none),
	// newest first; the agent keeps the newest releases_to_keep of them.
	var releases []store.Deployment
	var before *store.ID
	for {
		page, err := s.st.SucceededDeployments(ctx, a.ID, before, 500)
		if err != nil {
			return Queued{}, err
		}
		for _, d := range page {
			if d.TriggeredBy != store.TriggerRollback {
				releases = append(releases, d)
			}
		}
		if len(page) < 500 {
			break
		}
		before = &page[len(page)-1].ID
	}
	var target store.Deployment
	if to == "" {
		if a.CurrentDeploymentID == nil {
			return Queued{}, fmt.Errorf("%w: app %s has no current release to roll back from", ErrInvalid, a.Name)
		}
		found := false
		for _, d := range releases {
			if d.ID.Compare(*a.CurrentDeploymentID) < 0 {
				target, found = d, true
				break
			}
		}
		if !found {
			return Queued{}, fmt.Errorf("%w: app %s has no earlier release to roll back to", ErrInvalid, a.Name)
		}
	} else {
		id, err := store.ParseID(strings.TrimSpace(to))
		if err != nil {
			return Queued{}, fmt.Errorf("%w: --to must be a deployment id", ErrInvalid)
		}
		target, err = s.st.Deployment(ctx, id)
		if err != nil || target.AppID != a.ID {
			return Queued{}, fmt.Errorf("%w: app %s has no deployment %s", store.ErrNotFound, a.Name, id)
		}
		if target.TriggeredBy == store.TriggerRollback && target.RollbackFromID != nil {
			if target, err = s.st.Deployment(ctx, *target.RollbackFromID); err != nil {
				return Queued{}, err
			}
		}
		if target.Status != store.DeploymentSucceeded {
			return Queued{}, fmt.Errorf("%w: deployment %s did not succeed (%s): it has no release to roll back to", ErrInvalid, id, target.Status)
		}
	}
	kept := false
	for i, d := range releases {
		if d.ID == target.ID && (i < a.ReleasesToKeep || (a.CurrentDeploymentID != nil && d.ID == *a.CurrentDeploymentID)) {
			kept = true
		}
	}
	if !kept {
		return Queued{}, fmt.Errorf("%w: the release of deployment %s was pruned (app %s keeps its newest %d releases); deploy commit %s again instead",
			ErrPruned, target.ID, a.Name, a.ReleasesToKeep, deref(target.CommitSHA))
	}
	tid := target.ID
	cp := store.CreateDeploymentParams{
		AppID: a.ID, Environment: target.Environment, Branch: target.Branch, UserID: &pr.UserID, TriggeredBy: store.TriggerRollback,
		CommitSHA: target.CommitSHA, CommitMessage: target.CommitMessage, ReleasePath: target.ReleasePath, RollbackFromID: &tid,
	}
	return s.enqueue(ctx, pr, peer, a, cp, "deployment.rollback_queued")
}

func deref(p *string) string {
	if p == nil {
		return "?"
	}
	return *p
}

// Cancel cancels a deployment: a queued one at once; a dispatched or
// running one when its agent has stopped it (TERM to its process group,
// then KILL), which it reports as canceled.
func (s *Service) Cancel(ctx context.Context, pr *auth.Principal, peer Peer, ref string) (store.Deployment, error) {
	if err := require(pr, store.ScopeDeploy); err != nil {
		return store.Deployment{}, err
	}
	id, err := store.ParseID(strings.TrimSpace(ref))
	if err != nil {
		return store.Deployment{}, fmt.Errorf("%w: give a deployment id", ErrInvalid)
	}
	d, err := s.st.RequestDeploymentCancel(ctx, id)
	if errors.Is(err, store.ErrWrongState) {
		cur, _ := s.st.Deployment(ctx, id)
		return store.Deployment{}, fmt.Errorf("%w: deployment %s already %s", store.ErrWrongState, id, cur.Status)
	}
	if err != nil {
		return store.Deployment{}, err
	}
	a, err := s.st.App(ctx, d.AppID)
	if err != nil {
		return store.Deployment{}, err
	}
	if d.Status == store.DeploymentQueued {
		reason := "canceled before it started"
		if fin, err := s.st.FinishDeployment(ctx, id, store.DeploymentResult{Status: store.DeploymentCanceled, FailureReason: &reason}); err == nil {
			d = fin
		} else if !errors.Is(err, store.ErrWrongState) {
			return store.Deployment{}, err
		}
	}
	if !d.Status.Finished() {
		s.notify(ctx, "cancel:"+a.ServerID.String()+":"+id.String())
	}
	s.notify(ctx, "log:"+id.String())
	s.notify(ctx, "dispatch")
	s.activity(ctx, pr, peer, "deployment.cancel_requested", "deployment", d.ID, a.Name, nil)
	return d, nil
}

// ListDeployments lists an app's deployments, newest first. A deleted
// app's history is listed by the app's id (its name is free for others).
func (s *Service) ListDeployments(ctx context.Context, pr *auth.Principal, app string, before *store.ID, limit int) ([]store.Deployment, error) {
	if err := require(pr, store.ScopeRead); err != nil {
		return nil, err
	}
	if id, err := store.ParseID(strings.TrimSpace(app)); err == nil {
		return s.st.ListDeployments(ctx, store.DeploymentFilter{AppID: &id, Before: before, Limit: limit})
	}
	a, err := s.ResolveApp(ctx, app)
	if err != nil {
		return nil, err
	}
	return s.st.ListDeployments(ctx, store.DeploymentFilter{AppID: &a.ID, Before: before, Limit: limit})
}

// GetDeployment returns a deployment.
func (s *Service) GetDeployment(ctx context.Context, pr *auth.Principal, ref string) (store.Deployment, error) {
	if err := require(pr, store.ScopeRead); err != nil {
		return store.Deployment{}, err
	}
	id, err := store.ParseID(strings.TrimSpace(ref))
	if err != nil {
		return store.Deployment{}, fmt.Errorf("%w: give a deployment id", ErrInvalid)
	}
	return s.st.Deployment(ctx, id)
}

// FollowEvent is what a follower gets: log chunks in order, and the
// deployment whenever its state changed (always with the last event).
type FollowEvent struct {
	Chunk      *store.LogChunk
	Deployment *store.Deployment
	// Waiting says why a queued job does not start ("waiting for web-1:
	// agent offline since ..."); sent when it changes, "" once it no
	// longer waits on its server.
	Waiting *string
}

// WaitingReason says why a queued deployment waits on its server, or ""
// when its server's agent is connected (it then waits only for the jobs
// of its app ahead of it, if any). A newcomer whose agent never connected
// otherwise sees a deploy that is queued forever with no hint why.
func (s *Service) WaitingReason(ctx context.Context, d store.Deployment) (string, error) {
	if d.Status != store.DeploymentQueued {
		return "", nil
	}
	a, err := s.st.App(ctx, d.AppID)
	if err != nil {
		return "", err
	}
	srv, err := s.st.Server(ctx, a.ServerID)
	if err != nil {
		return "", err
	}
	if s.fleet.Hub().Holds(srv.ID) {
		return "", nil
	}
	switch {
	case srv.Status == store.ServerDisabled:
		return fmt.Sprintf("waiting for %s: the server is disabled (berth server enable %s)", srv.Name, srv.Name), nil
	case srv.LastSeenAt == nil:
		return fmt.Sprintf("waiting for %s: its agent has not connected yet (install and enroll it: berth server show %s)", srv.Name, srv.Name), nil
	default:
		return fmt.Sprintf("waiting for %s: agent offline since %s", srv.Name, srv.LastSeenAt.UTC().Format(time.RFC3339)), nil
	}
}

// Follow sends a deployment's log from after (a chunk number) and its
// state changes until it finished and every chunk was sent, or ctx ends.
// New chunks reach it within a second: a notification (from whichever
// controller stored them) wakes it, and it re-reads every second anyway.
func (s *Service) Follow(ctx context.Context, pr *auth.Principal, ref string, after int64, send func(FollowEvent) error) error {
	d, err := s.GetDeployment(ctx, pr, ref)
	if err != nil {
		return err
	}
	wake, done := s.subscribe(d.ID)
	defer done()
	var lastStatus store.DeploymentStatus
	var lastCancel bool
	lastWaiting := ""
	for {
		cur, err := s.st.Deployment(ctx, d.ID)
		if err != nil {
			return err
		}
		if w, err := s.WaitingReason(ctx, cur); err == nil && w != lastWaiting {
			lastWaiting = w
			if err := send(FollowEvent{Waiting: &w}); err != nil {
				return err
			}
		}
		for {
			chunks, err := s.st.DeploymentLogs(ctx, d.ID, after, 500)
			if err != nil {
				return err
			}
			for i := range chunks {
				if err := send(FollowEvent{Chunk: &chunks[i]}); err != nil {
					return err
				}
				after = chunks[i].Seq
			}
			if len(chunks) < 500 {
				break
			}
		}
		// cur was read before the chunks: when it is finished, every chunk
		// (numbered before the result) was committed and is now sent.
		if cur.Status != lastStatus || (cur.CancelRequestedAt != nil) != lastCancel || cur.Status.Finished() {
			lastStatus, lastCancel = cur.Status, cur.CancelRequestedAt != nil
			if err := send(FollowEvent{Deployment: &cur}); err != nil {
				return err
			}
		}
		if cur.Status.Finished() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		case <-time.After(time.Second):
		}
	}
}
