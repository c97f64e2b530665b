package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthhq/berth/agent/internal/deploy"
	"github.com/berthhq/berth/agent/internal/held"
	"github.com/berthhq/berth/agent/internal/proxy"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// Jobs connects the deploy executor to the controller stream: JobStart,
// JobCancel and JobAck from the controller drive the executor, and its
// journaled events go up as JobOutput, JobProgress and JobResult. Events are
// pulled from the executor (Pending) rather than pushed, so an event
// produced while the link is down, or dropped on a full stream, is simply
// sent later: each stream sends every pending event it has not sent yet,
// and the controller stores each number once.
type Jobs struct {
	// Exec runs the jobs; set it before Run.
	Exec *deploy.Executor
	// Proxy runs the site and acme jobs of domains (nil: they fail and
	// say why). A delete job also removes the app's site.
	Proxy *proxy.Manager
	wake  chan struct{}

	mu    sync.Mutex
	extra []*agentv1.ConnectRequest // results for jobs the executor refused, and of domain jobs
	// domain: results of domain jobs until acknowledged (nil: running).
	domain map[string]*agentv1.ConnectRequest

	objects objectClient // for download jobs (SendObject)
	held    *held.Holder // the held backup schedules (OpenHeld)
}

// NewJobs returns the link; pass its Sink to deploy.Config.
func NewJobs() *Jobs { return &Jobs{wake: make(chan struct{}, 1)} }

// Sink is deploy.Config.Sink: it only wakes the stream.
func (j *Jobs) Sink(deploy.Event) { j.poke() }

func (j *Jobs) poke() {
	select {
	case j.wake <- struct{}{}:
	default:
	}
}

func (j *Jobs) wakeCh() <-chan struct{} {
	if j == nil || j.Exec == nil {
		return nil
	}
	return j.wake
}

// handle applies one job message from the controller. It never blocks
// the receive loop for long.
func (j *Jobs) handle(ctx context.Context, log *slog.Logger, m *agentv1.ConnectResponse) {
	if j == nil || j.Exec == nil {
		return
	}
	switch msg := m.Msg.(type) {
	case *agentv1.ConnectResponse_JobStart:
		switch msg.JobStart.GetKind() {
		case kindSite, kindACME:
			j.domainJob(ctx, log, msg.JobStart)
			return
		case string(deploy.KindDelete):
			// A deleted app's site goes with it (its domains are gone),
			// and so do its certificate keys and challenge answers.
			if j.Proxy != nil {
				if c, err := j.Proxy.RemoveApp(ctx, msg.JobStart.GetAppName()); err != nil {
					log.Warn("remove the site, keys and challenge answers of a deleted app", "app", msg.JobStart.GetAppName(), "err", err)
				} else if len(c.Certificates) > 0 || c.Challenges > 0 {
					log.Info("removed a deleted app's certificates and challenge answers", "app", msg.JobStart.GetAppName(),
						"certificates", len(c.Certificates), "challenges", c.Challenges)
				}
			}
		}
		j.start(ctx, log, msg.JobStart)
	case *agentv1.ConnectResponse_JobCancel:
		if err := j.Exec.Cancel(msg.JobCancel.GetJobId()); err != nil && !errors.Is(err, deploy.ErrNotRunning) {
			log.Warn("cancel job", "job", msg.JobCancel.GetJobId(), "err", err)
		}
	case *agentv1.ConnectResponse_JobAck:
		j.ackDomain(msg.JobAck.GetJobId(), msg.JobAck.GetSeq())
		j.Exec.Ack(msg.JobAck.GetJobId(), msg.JobAck.GetSeq())
		j.poke()
	case *agentv1.ConnectResponse_HeldBackupSchedules, *agentv1.ConnectResponse_HeldRunsAck:
		if err := j.handleHeld(m); err != nil {
			log.Error("held backup schedules", "err", err)
		}
	}
}

func (j *Jobs) start(ctx context.Context, log *slog.Logger, js *agentv1.JobStart) {
	// A tick this agent ran from its held schedule as another job is
	// refused; the held job itself, re-sent once the controller stored
	// it, is a re-send like any other.
	if ran := j.heldDispatched(js); ran != "" && ran != js.GetJobId() {
		j.refuse(log, js, fmt.Errorf("this tick of the schedule already ran here as backup %s, from the held schedule while no controller was reachable", ran))
		return
	}
	spec := specOf(js)
	err := j.Exec.Start(ctx, spec)
	switch {
	case err == nil:
		log.Info("job started", "job", js.GetJobId(), "app", js.GetAppName(), "kind", js.GetKind())
	case errors.Is(err, deploy.ErrJobExists):
		// A re-send after a reconnect: the job runs (or ran) here already.
		j.Exec.Ack(js.GetJobId(), js.GetAckedSeq())
	case errors.Is(err, deploy.ErrAppBusy):
		// The app's previous job is still ending here (the controller gave
		// up on it): start this one as soon as it has.
		go func() {
			for {
				select {
				case <-ctx.Done():
					return // the next stream gets the job again
				case <-time.After(time.Second):
				}
				err := j.Exec.Start(ctx, spec)
				if !errors.Is(err, deploy.ErrAppBusy) {
					if err != nil && !errors.Is(err, deploy.ErrJobExists) {
						j.refuse(log, js, err)
					}
					return
				}
			}
		}()
	default:
		j.refuse(log, js, err)
	}
}

// refuse reports a job the executor would not start as failed, as the
// event after the last one the controller holds. For a job that ran here
// and finished, that number is its own result's or lower (the controller
// re-sent the job before that result reached it), and the controller
// ignores it; for one whose journal was lost it is the job's end.
func (j *Jobs) refuse(log *slog.Logger, js *agentv1.JobStart, err error) {
	log.Error("job refused", "job", js.GetJobId(), "err", err)
	now := timestamppb.Now()
	j.mu.Lock()
	j.extra = append(j.extra, &agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_JobResult{JobResult: &agentv1.JobResult{
		JobId: js.GetJobId(), Seq: js.GetAckedSeq() + 1, Status: string(deploy.StatusFailed), FailedStep: "start", ExitCode: -1,
		Error: "the agent refused the job: " + err.Error(), StartedAt: now, FinishedAt: now,
	}}})
	j.mu.Unlock()
	j.poke()
}

// flush sends every pending event this stream has not sent yet; sent is
// the stream's own record (highest seq sent per job).
func (j *Jobs) flush(send func(*agentv1.ConnectRequest) error, sent map[string]uint64) error {
	if j == nil || j.Exec == nil {
		return nil
	}
	j.mu.Lock()
	extra := j.extra
	j.extra = nil
	j.mu.Unlock()
	for _, m := range extra {
		if err := send(m); err != nil {
			return err
		}
	}
	for _, ev := range j.Exec.Pending() {
		if ev.Seq <= sent[ev.JobID] || j.heldWaits(ev.JobID) {
			continue
		}
		if err := send(eventToProto(ev)); err != nil {
			return err
		}
		sent[ev.JobID] = ev.Seq
	}
	return nil
}

func specOf(js *agentv1.JobStart) deploy.Spec {
	s := deploy.Spec{
		DeploymentID: js.GetJobId(), AppID: js.GetAppId(), AppName: js.GetAppName(), Kind: deploy.Kind(js.GetKind()),
		RepoURL: js.GetRepositoryUrl(), Branch: js.GetBranch(), Commit: js.GetCommit(), DeployPath: js.GetDeployPath(),
		RunAsUser: js.GetRunAsUser(), DeployScript: js.GetDeployScript(), DeployScriptPath: js.GetDeployScriptPath(), Env: js.GetEnv(), KeepReleases: int(js.GetKeepReleases()),
		SharedPaths: js.GetSharedPaths(), Timeout: js.GetTimeout().AsDuration(), RollbackTo: js.GetRollbackTo(),
		ReloadCommand: js.GetReloadCommand(), ControllerSeq: js.GetAckedSeq(), AllowRoot: js.GetAllowRoot(),
		Processes: js.GetProcesses(), ProcessAction: js.GetProcessAction(), ProcessNames: js.GetProcessNames(),
		UpstreamPort: js.GetUpstreamPort(), ScheduleName: js.GetScheduleName(), ScheduleCommand: js.GetScheduleCommand(),
		ProcessHealthTimeout: js.GetHealthCheckTimeout().AsDuration(),
	}
	if c := js.GetCredential(); c != nil && (c.GetSshPrivateKey() != "" || c.GetToken() != "") {
		s.Credential = &deploy.Credential{
			SSHPrivateKey: c.GetSshPrivateKey(), Username: c.GetUsername(), Token: c.GetToken(),
			AllowedHosts: c.GetAllowedHosts(), KnownHosts: c.GetKnownHosts(),
		}
	}
	if b := js.GetBackup(); b != nil {
		s.Backup = backupJobOf(b)
	}
	if js.GetHealthCheckCommand() != "" || js.GetHealthCheckUrl() != "" {
		s.HealthCheck = &deploy.HealthCheck{Command: js.GetHealthCheckCommand(), URL: js.GetHealthCheckUrl(), Timeout: js.GetHealthCheckTimeout().AsDuration()}
	}
	return s
}

func tsOf(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func eventToProto(ev deploy.Event) *agentv1.ConnectRequest {
	switch ev.Type {
	case deploy.EventLog:
		return &agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_JobOutput{JobOutput: &agentv1.JobOutput{
			JobId: ev.JobID, Seq: ev.Seq, Step: ev.Step, Data: ev.Data, Time: tsOf(ev.Time),
		}}}
	case deploy.EventResult:
		r := ev.Result
		if r == nil {
			r = &deploy.Result{Status: deploy.StatusFailed, ExitCode: -1, Error: "result missing"}
		}
		return &agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_JobResult{JobResult: &agentv1.JobResult{
			JobId: ev.JobID, Seq: ev.Seq, Status: string(r.Status), FailedStep: r.FailedStep, ExitCode: int32(r.ExitCode),
			Error: r.Error, Commit: r.Commit, CommitMessage: r.CommitMessage, ReleasePath: r.ReleasePath,
			PreviousRelease: r.PreviousRelease, StartedAt: tsOf(r.StartedAt), FinishedAt: tsOf(r.FinishedAt), LogDroppedBytes: r.LogDroppedBytes,
			BackupObject: backupObjectPB(r.BackupObject),
		}}}
	default: // progress, and anything newer: a progress event keeps the numbering whole
		return &agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_JobProgress{JobProgress: &agentv1.JobProgress{
			JobId: ev.JobID, Seq: ev.Seq, Step: ev.Step, Commit: ev.Commit, CommitMessage: ev.CommitMessage, Time: tsOf(ev.Time),
		}}}
	}
}
