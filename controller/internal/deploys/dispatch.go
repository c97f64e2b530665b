package deploys

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/jobs"
	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// Job kinds as the agent knows them.
const (
	kindDeploy   = "deploy"
	kindRollback = "rollback"
	kindDelete   = "delete"
	kindProcess  = "process"
	kindSchedule = "schedule"
)

// dispatch moves the queued deployments of the agents connected here to
// dispatched (one per app, oldest first) and sends them.
func (s *Service) dispatch(ctx context.Context) {
	servers := s.fleet.Hub().Connected()
	if len(servers) == 0 {
		return
	}
	claimed, err := s.st.ClaimQueuedDeployments(ctx, servers, 100)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("claim queued deployments", "err", err)
		}
		return
	}
	for _, d := range claimed {
		s.send(ctx, d)
		s.notify(ctx, "log:"+d.ID.String())
	}
}

// send builds a deployment's JobStart and queues it for its agent. A job
// that cannot be built (its credential or environment cannot be opened)
// fails at the dispatch step; an agent that is gone gets it again when it
// reconnects.
func (s *Service) send(ctx context.Context, d store.Deployment) {
	a, err := s.st.App(ctx, d.AppID)
	if err != nil {
		s.log.Error("dispatch: load app", "deployment", d.ID.String(), "err", err)
		return
	}
	s.sendTo(ctx, a, d)
}

// sendTo is send with the deployment's app at hand.
func (s *Service) sendTo(ctx context.Context, a store.App, d store.Deployment) {
	start, err := s.jobStart(ctx, a, d)
	if err != nil {
		s.log.Error("dispatch: build job", "deployment", d.ID.String(), "err", err)
		step, reason := "dispatch", "could not prepare the job: "+safeReason(err)
		ferr := s.st.InTx(ctx, func(tx *store.Store) error {
			done, err := tx.FinishDeployment(ctx, d.ID, store.DeploymentResult{Status: store.DeploymentFailed, FailedStep: &step, FailureReason: &reason})
			if err != nil {
				return err
			}
			if ok, err := s.handledJobEnded(ctx, tx, done, nil); ok {
				return err
			}
			s.publishEnd(ctx, tx, done)
			return nil
		})
		if ferr == nil {
			s.notify(ctx, "log:"+d.ID.String())
			s.notify(ctx, "dispatch")
		}
		return
	}
	jobs.Send(s.fleet.Hub(), s.log, a.ServerID, start, d.CancelRequestedAt != nil, "deployment")
}

// safeReason keeps a store error's kind but never its details.
func safeReason(err error) string {
	switch {
	case errors.Is(err, ErrRefused):
		return err.Error() // a policy's refusal names no secret and says what would allow it
	case errors.Is(err, store.ErrNotFound):
		return "a referenced record is missing"
	default:
		return "secrets could not be opened (check the encryption keys)"
	}
}

func (s *Service) jobStart(ctx context.Context, a store.App, d store.Deployment) (*agentv1.JobStart, error) {
	// A deleted app's only job is its delete job of --keep-files (queued
	// just before the app was marked deleted).
	if a.DeletedAt != nil && d.Kind != store.JobDelete {
		return nil, fmt.Errorf("%w: app %s was deleted", ErrRefused, a.Name)
	}
	if js, ok, err := s.handledJobStart(ctx, a, d); ok {
		return js, err
	}
	if a.DeletedAt != nil {
		// The agent's delete without a deploy path: it stops the app's
		// processes and its upstream, forgets their state and keeps the
		// app's files. A plain stop would leave the upstream listening
		// and the supervisors' state behind for an app that is gone.
		return &agentv1.JobStart{
			JobId: d.ID.String(), AppId: a.ID.String(), AppName: a.Name, Kind: kindDelete,
			RunAsUser: a.RunAsUser, Timeout: durationpb.New(time.Duration(d.TimeoutSeconds) * time.Second), AckedSeq: uint64(d.AgentSeq),
		}, nil
	}
	if d.Kind == store.JobDelete {
		// Removes files only: no credential, environment or script. A
		// delete job of an app already marked deleted is one of
		// --keep-files (a plain delete marks the app once its job
		// succeeded; the keep-files one is committed with the mark):
		// the agent's delete without a deploy path stops the app's
		// processes and its upstream, forgets their state and keeps the
		// app's files. A plain stop would leave the upstream listening
		// and the supervisors' state behind for an app that is gone.
		path := a.DeployPath
		if a.DeletedAt != nil {
			path = ""
		}
		return &agentv1.JobStart{
			JobId: d.ID.String(), AppId: a.ID.String(), AppName: a.Name, Kind: kindDelete, DeployPath: path,
			RunAsUser: a.RunAsUser, Timeout: durationpb.New(time.Duration(d.TimeoutSeconds) * time.Second), AckedSeq: uint64(d.AgentSeq),
		}, nil
	}
	env, err := s.st.MergedAppEnv(ctx, a.ID, d.Environment)
	if err != nil {
		return nil, err
	}
	js := &agentv1.JobStart{
		JobId: d.ID.String(), AppId: a.ID.String(), AppName: a.Name, Kind: kindDeploy,
		RepositoryUrl: a.RepositoryURL, Branch: d.Branch, DeployPath: a.DeployPath, RunAsUser: a.RunAsUser,
		DeployScript: a.DeployScript, DeployScriptPath: deref0(a.DeployScriptPath), Env: env, HealthCheckTimeout: durationpb.New(time.Duration(a.HealthCheckTimeoutSeconds) * time.Second),
		KeepReleases: uint32(a.ReleasesToKeep), SharedPaths: a.SharedPaths,
		Timeout: durationpb.New(time.Duration(d.TimeoutSeconds) * time.Second), AckedSeq: uint64(d.AgentSeq),
	}
	// Every job but a delete carries the app's whole declared process set
	// and its upstream: a deploy or rollback moves the processes to the
	// new release, a process job applies its action to them.
	procs, err := s.st.AppProcesses(ctx, a.ID)
	if err != nil {
		return nil, err
	}
	js.Processes = processSpecs(procs)
	// The upstream exists while a process has a port: the app keeps its
	// allocated port, but with no backend there is nothing to forward to.
	for _, p := range procs {
		if p.Port {
			js.UpstreamPort = uint32(a.UpstreamPort)
		}
	}
	if d.CommitSHA != nil {
		js.Commit = *d.CommitSHA
	}
	if a.HealthCheckCommand != nil {
		js.HealthCheckCommand = *a.HealthCheckCommand
	}
	if a.HealthCheckURL != nil {
		js.HealthCheckUrl = *a.HealthCheckURL
	}
	if a.ReloadCommand != nil {
		js.ReloadCommand = *a.ReloadCommand
	}
	// Checked at every dispatch, not only when the app was saved: an admin
	// may have withdrawn the root allowance or a credential's binding since.
	fetch := d.TriggeredBy != store.TriggerRollback && d.Kind == store.JobDeploy
	srv, cred, err := s.loadRunnable(ctx, a, fetch)
	if err != nil {
		return nil, err
	}
	js.AllowRoot = srv.AllowRoot
	switch d.Kind {
	case store.JobProcess:
		// Runs what the current release has: no fetch, no credential.
		js.Kind, js.ProcessAction, js.ProcessNames = kindProcess, deref0(d.ProcessAction), d.ProcessNames
		js.RepositoryUrl, js.DeployScript, js.DeployScriptPath = "", "", ""
		return js, nil
	case store.JobSchedule:
		js.Kind, js.ScheduleName, js.ScheduleCommand = kindSchedule, deref0(d.ScheduleName), deref0(d.ScheduleCommand)
		js.RepositoryUrl, js.DeployScript, js.DeployScriptPath = "", "", ""
		return js, nil
	}
	if d.TriggeredBy == store.TriggerRollback {
		if d.RollbackFromID == nil {
			return nil, fmt.Errorf("rollback without a target: %w", store.ErrNotFound)
		}
		js.Kind, js.RollbackTo = kindRollback, d.RollbackFromID.String()
		return js, nil
	}
	if cred != nil {
		sec, err := s.st.GitCredentialSecret(ctx, cred.ID)
		if err != nil {
			return nil, err
		}
		js.Credential = &agentv1.GitCredential{
			SshPrivateKey: sec.PrivateKey, Username: sec.Username, Token: sec.Token,
			AllowedHosts: cred.AllowedHosts, KnownHosts: cred.KnownHosts,
		}
		_ = s.st.TouchGitCredential(ctx, *a.GitCredentialID)
	}
	return js, nil
}

// AgentConnected re-sends the server's unfinished jobs (the agent runs a
// job id once and re-sends its unacknowledged events itself), with their
// cancel requests, then dispatches what waits for it.
func (s *Service) AgentConnected(ctx context.Context, serverID store.ID) {
	active, err := s.st.ActiveDeploymentsForServer(ctx, serverID)
	if err != nil {
		s.log.Error("list active deployments", "server_id", serverID.String(), "err", err)
	}
	for _, d := range active {
		s.send(ctx, d)
	}
	s.poke()
}

// JobEvents stores a run of job events from serverID's agent, in one
// transaction, and returns one ack per job: the highest number committed.
// A job whose events skip a number gets no ack for the skipped ones (the
// agent re-sends them), and a job deleted meanwhile is acknowledged so the
// agent forgets it. A malformed event or one for another server's job is
// ErrInvalid, which ends the stream.
func (s *Service) JobEvents(ctx context.Context, serverID store.ID, msgs []*agentv1.ConnectRequest) ([]*agentv1.JobAck, error) {
	var (
		evs     []store.JobEvent
		decoded []jobs.Event // evs[i] as the agent wrote it
		acks    []*agentv1.JobAck
		owner   = map[store.ID]bool{} // checked deployments: still there?
		result  = map[store.ID]bool{}
	)
	for _, m := range msgs {
		e, ok, err := jobs.Decode(m)
		if err != nil {
			return nil, fmt.Errorf("%w: %s", ErrInvalid, err)
		}
		if !ok {
			continue
		}
		jobID, at := e.JobID, e.At
		ev := store.JobEvent{Seq: e.Seq, Step: e.Step, Data: e.Data}
		switch {
		case e.Progress != nil:
			p := e.Progress
			ev.Apply = func(tx *store.Store, d store.Deployment) error {
				if err := startIfDispatched(ctx, tx, d, at); err != nil {
					return err
				}
				if isSHA(p.GetCommit()) {
					_, err := tx.SetDeploymentCommit(ctx, d.ID, p.GetCommit(), optText(truncate(p.GetCommitMessage(), 1000)), nil)
					return err
				}
				return nil
			}
		case e.Result != nil:
			r := e.Result
			ev.Apply = func(tx *store.Store, d store.Deployment) error { return s.finish(ctx, tx, d, r) }
			ev.Fresh = true // finish reads the status and commit the events before it set
		default:
			ev.Apply = func(tx *store.Store, d store.Deployment) error {
				return startIfDispatched(ctx, tx, d, at)
			}
		}
		id, err := store.ParseID(jobID)
		if err != nil || ev.Seq <= 0 {
			return nil, fmt.Errorf("%w: job event for %q seq %d", ErrInvalid, truncate(jobID, 40), ev.Seq)
		}
		ev.DeploymentID = id
		there, checked := owner[id]
		if !checked {
			sid, err := s.st.DeploymentServer(ctx, id)
			switch {
			case errors.Is(err, store.ErrNotFound):
				there = false
			case err != nil:
				return nil, err
			case sid != serverID:
				return nil, fmt.Errorf("%w: job %s is not this server's", ErrInvalid, jobID)
			default:
				there = true
			}
			owner[id] = there
		}
		if !there {
			// Deleted meanwhile: acknowledge so the agent forgets it.
			acks = append(acks, &agentv1.JobAck{JobId: jobID, Seq: uint64(ev.Seq)})
			continue
		}
		if e.Result != nil {
			result[id] = true
		}
		evs = append(evs, ev)
		decoded = append(decoded, e)
	}
	if len(evs) == 0 {
		return acks, nil
	}
	out, err := s.st.CommitJobEvents(ctx, evs, s.cfg.LogCap)
	if err != nil {
		return nil, err
	}
	// One ack per job, with its highest committed number; one
	// notification per job that changed.
	keys := make([]store.ID, len(evs))
	for i, ev := range evs {
		keys[i] = ev.DeploymentID
	}
	var notes []string
	dispatch := false
	for _, c := range jobs.Acks(s.log, "job", "deployment", keys, decoded, out) {
		acks = append(acks, c.AckOf())
		if c.Changed {
			notes = append(notes, "log:"+c.JobID)
			dispatch = dispatch || result[c.ID]
		}
	}
	if dispatch {
		notes = append(notes, "dispatch")
	}
	s.notifyAll(ctx, notes)
	return acks, nil
}

func startIfDispatched(ctx context.Context, tx *store.Store, d store.Deployment, at time.Time) error {
	if d.Status != store.DeploymentDispatched {
		return nil
	}
	_, err := tx.StartDeployment(ctx, d.ID, jobs.StartedAt(at))
	return jobs.IgnoreWrongState(err)
}

// finish applies a job's result. A deployment already ended by the
// controller (agent unreachable, timed out in the queue) keeps its status.
func (s *Service) finish(ctx context.Context, tx *store.Store, d store.Deployment, r *agentv1.JobResult) error {
	if d.Status.Finished() {
		s.log.Info("result for a deployment already ended", "deployment", d.ID.String(), "status", d.Status, "agent_status", r.GetStatus())
		return nil
	}
	st := store.DeploymentStatus(r.GetStatus())
	if !st.Finished() {
		return fmt.Errorf("%w: job result status %q", ErrInvalid, truncate(r.GetStatus(), 20))
	}
	if st == store.DeploymentSucceeded || d.Status == store.DeploymentDispatched {
		if err := startIfDispatched(ctx, tx, d, r.GetStartedAt().AsTime()); err != nil {
			return err
		}
	}
	if isSHA(r.GetCommit()) && (d.CommitSHA == nil || *d.CommitSHA != r.GetCommit()) {
		if _, err := tx.SetDeploymentCommit(ctx, d.ID, r.GetCommit(), optText(truncate(r.GetCommitMessage(), 1000)), nil); err != nil {
			return err
		}
	}
	if p := r.GetReleasePath(); p != "" {
		if err := tx.SetDeploymentReleasePath(ctx, d.ID, truncate(p, 4096)); err != nil {
			return err
		}
	}
	res := store.DeploymentResult{Status: st, FailedStep: optText(truncate(r.GetFailedStep(), 64)), FailureReason: optText(truncate(r.GetError(), 2000))}
	if st != store.DeploymentSucceeded || r.GetExitCode() != 0 {
		ec := int(r.GetExitCode())
		res.ExitCode = &ec
	} else {
		zero := 0
		res.ExitCode = &zero
	}
	if ft := r.GetFinishedAt(); ft != nil && ft.AsTime().Unix() > 0 {
		t := ft.AsTime()
		res.At = &t
	}
	done, err := tx.FinishDeployment(ctx, d.ID, res)
	if errors.Is(err, store.ErrWrongState) {
		return nil
	}
	if err != nil {
		return err
	}
	if ok, err := s.handledJobEnded(ctx, tx, done, r); ok {
		return err
	}
	s.publishEnd(ctx, tx, done)
	if st == store.DeploymentSucceeded && d.Kind == store.JobDelete {
		// The files are gone: the app is deleted now, in the transaction
		// that records the job's end.
		before, err := tx.App(ctx, d.AppID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if err := tx.SoftDeleteApp(ctx, d.AppID); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		// Recorded once: a --keep-files delete recorded it already.
		if a, err := tx.App(ctx, d.AppID); err == nil && before.DeletedAt == nil {
			s.systemActivity(ctx, store.ActorAgent, "agent:"+a.ServerID.String(), kind.AppDeleted, done, a.Name, map[string]any{"deploy_path": a.DeployPath})
			s.appChange(ctx, tx, a)
		}
	} else if st == store.DeploymentSucceeded && d.Kind == store.JobDeploy {
		// Only a deploy or rollback moves current; a process job or a
		// schedule run changes no release.
		cur := d.ID
		if d.TriggeredBy == store.TriggerRollback && d.RollbackFromID != nil {
			cur = *d.RollbackFromID
		}
		if _, err := tx.SetAppCurrentDeployment(ctx, d.AppID, &cur); err != nil {
			return err
		}
	}
	if d.Kind == store.JobSchedule && st == store.DeploymentSucceeded {
		return nil // a run that went well is recorded by its row alone (see fireSchedules)
	}
	changes := map[string]any{"status": string(st)}
	if res.FailedStep != nil {
		changes["failed_step"] = *res.FailedStep
	}
	if a, err := tx.App(ctx, d.AppID); err == nil {
		srvID := a.ServerID
		s.systemActivity(ctx, store.ActorAgent, "agent:"+srvID.String(), "deployment."+string(st), done, a.Name, changes)
	}
	return nil
}

// sweep ends overdue deployments: queued ones time out; dispatched or
// running ones whose agent never reported are failed "agent unreachable"
// once past the deadline plus the grace (the agent times its own jobs out
// and reports timed_out before that), but not in the first StartGrace after
// this controller started, while agents reconnect and deliver. Compare-and-set: safe on every
// controller at once.
func (s *Service) sweep(ctx context.Context) {
	now := s.cfg.Now()
	overdue, err := s.st.OverdueDeployments(ctx, now, 100)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("list overdue deployments", "err", err)
		}
		return
	}
	g := jobs.Grace{Unreachable: s.cfg.UnreachableGrace, Start: s.cfg.StartGrace, Started: s.started}
	for _, d := range overdue {
		st, reason, ok := jobs.Overdue[store.DeploymentStatus](g, now, d.Status == store.DeploymentQueued, d.CancelRequestedAt != nil, d.DeadlineAt)
		if !ok {
			continue
		}
		res := store.DeploymentResult{Status: st, FailureReason: optText(reason)}
		var done store.Deployment
		err := s.st.InTx(ctx, func(tx *store.Store) error {
			var err error
			if done, err = tx.FinishDeployment(ctx, d.ID, res); err != nil {
				return err
			}
			if ok, err := s.handledJobEnded(ctx, tx, done, nil); ok {
				return err
			}
			s.publishEnd(ctx, tx, done)
			return nil
		})
		if err != nil {
			continue // another controller or the agent got there first
		}
		name := ""
		if a, err := s.st.App(ctx, d.AppID); err == nil {
			name = a.Name
		}
		s.log.Warn("deployment ended by the controller", "deployment", d.ID.String(), "status", res.Status, "reason", *res.FailureReason)
		s.systemActivity(ctx, store.ActorSystem, "system", "deployment."+string(res.Status), done, name, map[string]any{"status": string(res.Status), "reason": *res.FailureReason})
		s.notify(ctx, "log:"+d.ID.String())
		s.notify(ctx, "dispatch")
	}
}

func deref0(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func optText(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func truncate(s string, n int) string { return jobs.Truncate(s, n) }

func isSHA(s string) bool {
	if len(s) < 4 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
