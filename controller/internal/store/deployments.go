package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berthhq/berth/gen/dbsqlc"
)

// DeploymentStatus is where a deployment is in its life:
// queued -> dispatched -> running -> succeeded | failed | canceled | timed_out.
type DeploymentStatus string

// The deployment states.
const (
	DeploymentQueued     DeploymentStatus = "queued"
	DeploymentDispatched DeploymentStatus = "dispatched"
	DeploymentRunning    DeploymentStatus = "running"
	DeploymentSucceeded  DeploymentStatus = "succeeded"
	DeploymentFailed     DeploymentStatus = "failed"
	DeploymentCanceled   DeploymentStatus = "canceled"
	DeploymentTimedOut   DeploymentStatus = "timed_out"
)

// Finished reports whether the status is terminal.
func (st DeploymentStatus) Finished() bool {
	switch st {
	case DeploymentSucceeded, DeploymentFailed, DeploymentCanceled, DeploymentTimedOut:
		return true
	}
	return false
}

// deploymentFinishFrom is, for each terminal status, the states a
// deployment may reach it from:
//   - succeeded only from running (the agent ran it to the end);
//   - failed from dispatched or running (a dispatch failure, a failed step,
//     an unreachable agent);
//   - canceled and timed_out from any unfinished state (a queued one is
//     canceled before dispatch, or timed out waiting in the queue).
var deploymentFinishFrom = map[DeploymentStatus][]string{
	DeploymentSucceeded: {string(DeploymentRunning)},
	DeploymentFailed:    {string(DeploymentDispatched), string(DeploymentRunning)},
	DeploymentCanceled:  {string(DeploymentQueued), string(DeploymentDispatched), string(DeploymentRunning)},
	DeploymentTimedOut:  {string(DeploymentQueued), string(DeploymentDispatched), string(DeploymentRunning)},
}

// Deployment is a deploy or rollback job.
type Deployment struct {
	ID    ID
	AppID ID
	// UserID is who asked (session or token owner); nil for webhooks,
	// schedules, and after the user was deleted.
	UserID      *ID
	TriggeredBy Trigger
	// TriggerRef: the API token's id, or the webhook delivery id.
	TriggerRef    *string
	Environment   Environment
	Branch        string
	CommitSHA     *string
	CommitMessage *string
	CommitAuthor  *string
	Status        DeploymentStatus
	FailedStep    *string
	ExitCode      *int
	FailureReason *string
	ReleasePath   *string
	// RollbackFromID: for a rollback, the deployment whose release it
	// re-activates.
	RollbackFromID    *ID
	TimeoutSeconds    int
	DeadlineAt        time.Time
	CancelRequestedAt *time.Time
	QueuedAt          time.Time
	DispatchedAt      *time.Time
	StartedAt         *time.Time
	FinishedAt        *time.Time
	LogBytes          int64
	LogTruncated      bool
	// AgentSeq is the highest event of the job the agent reported that is
	// committed (its log chunks are numbered by these events).
	AgentSeq int64
	// Kind is deploy (rollbacks too), delete, process or schedule.
	Kind JobKind
	// ProcessAction (kind process): apply, start, stop or restart;
	// ProcessNames limits it (empty: every process).
	ProcessAction *string
	ProcessNames  []string
	// Schedule runs: the schedule (nil once it was removed), its name and
	// the command as it was when the run was due.
	ScheduleID      *ID
	ScheduleName    *string
	ScheduleCommand *string
	// Skipped: a schedule run that was due while the previous run was
	// unfinished; it never ran (status canceled) and SkipReason says why.
	Skipped    bool
	SkipReason *string
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// JobKind says what a deployment row's job does.
type JobKind string

// Job kinds: a deploy or rollback, the removal of a deleted app's files, a
// change to the app's processes, or one run of a scheduled command.
const (
	JobDeploy   JobKind = "deploy"
	JobDelete   JobKind = "delete"
	JobProcess  JobKind = "process"
	JobSchedule JobKind = "schedule"
)

func deploymentFromRow(r dbsqlc.Deployment) Deployment {
	return Deployment{
		ID: fromPG(r.ID), AppID: fromPG(r.AppID), UserID: fromOptPG(r.UserID), TriggeredBy: Trigger(r.TriggeredBy),
		TriggerRef: r.TriggerRef, Environment: Environment(r.Environment), Branch: r.Branch, CommitSHA: r.CommitSha,
		CommitMessage: r.CommitMessage, CommitAuthor: r.CommitAuthor, Status: DeploymentStatus(r.Status),
		FailedStep: r.FailedStep, ExitCode: ptrInt(r.ExitCode), FailureReason: r.FailureReason, ReleasePath: r.ReleasePath,
		RollbackFromID: fromOptPG(r.RollbackFromID), TimeoutSeconds: int(r.TimeoutSeconds), DeadlineAt: r.DeadlineAt,
		CancelRequestedAt: r.CancelRequestedAt, QueuedAt: r.QueuedAt, DispatchedAt: r.DispatchedAt, StartedAt: r.StartedAt,
		FinishedAt: r.FinishedAt, LogBytes: r.LogBytes, LogTruncated: r.LogTruncated, AgentSeq: r.AgentSeq, Kind: JobKind(r.Kind), CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
		ProcessAction: r.ProcessAction, ProcessNames: r.ProcessNames, ScheduleID: fromOptPG(r.ScheduleID),
		ScheduleName: r.ScheduleName, ScheduleCommand: r.ScheduleCommand, Skipped: r.Skipped, SkipReason: r.SkipReason,
	}
}

func deploymentsFromRows(rows []dbsqlc.Deployment) []Deployment {
	out := make([]Deployment, len(rows))
	for i, r := range rows {
		out[i] = deploymentFromRow(r)
	}
	return out
}

// CreateDeploymentParams describes a deployment to enqueue.
type CreateDeploymentParams struct {
	ID          ID
	AppID       ID
	UserID      *ID
	TriggeredBy Trigger
	// TriggerRef is required for api_token (the token id) and webhook (the
	// provider's delivery id: a second delivery with the same id is
	// refused with ErrConflict).
	TriggerRef  *string
	Environment Environment // "" is production
	Branch      string      // "" is the app's branch
	// CommitSHA is the requested commit (nil: the branch head).
	CommitSHA      *string
	CommitMessage  *string
	CommitAuthor   *string
	ReleasePath    *string
	RollbackFromID *ID
	// TimeoutSeconds 0 is the app's timeout.
	TimeoutSeconds int
	// DeadlineAt bounds the wait in the queue; nil is now + the timeout.
	DeadlineAt *time.Time
	// Kind "" is a deploy.
	Kind JobKind
	// ProcessAction and ProcessNames: a process job's action and processes.
	ProcessAction *string
	ProcessNames  []string
	// ScheduleID, ScheduleName, ScheduleCommand: a schedule run's.
	ScheduleID      *ID
	ScheduleName    *string
	ScheduleCommand *string
	// Dispatch creates it dispatched rather than queued, if the app has
	// no unfinished deployment (ErrAppBusy otherwise): for a controller
	// that holds the app's agent and sends the job itself at once.
	Dispatch bool
}

// ErrAppBusy is a deployment that was not created dispatched: the app has
// an unfinished one (or, for a webhook, the delivery may be a replay).
// Created queued instead, it waits its turn (or is told a replay).
var ErrAppBusy = errors.New("the app has an unfinished deployment")

// CreateDeployment enqueues a deployment (status queued, or dispatched,
// see Dispatch). ErrConflict: the webhook delivery was already processed;
// ErrMissingParent: no such app; ErrAppBusy.
func (s *Store) CreateDeployment(ctx context.Context, p CreateDeploymentParams) (Deployment, error) {
	if p.ID == (ID{}) {
		p.ID = NewID()
	}
	if p.Environment == "" {
		p.Environment = EnvironmentProduction
	}
	if p.Kind == "" {
		p.Kind = JobDeploy
	}
	var timeout *int32
	if p.TimeoutSeconds != 0 {
		t := int32(p.TimeoutSeconds)
		timeout = &t
	}
	r, err := s.q.CreateDeployment(ctx, dbsqlc.CreateDeploymentParams{
		ID: pgID(p.ID), AppID: pgID(p.AppID), UserID: pgOptID(p.UserID), TriggeredBy: string(p.TriggeredBy),
		TriggerRef: p.TriggerRef, Environment: string(p.Environment), Branch: nullText(p.Branch),
		CommitSha: p.CommitSHA, CommitMessage: p.CommitMessage, CommitAuthor: p.CommitAuthor,
		ReleasePath: p.ReleasePath, RollbackFromID: pgOptID(p.RollbackFromID), TimeoutSeconds: timeout,
		DeadlineAt: p.DeadlineAt, Dispatch: p.Dispatch, Kind: string(p.Kind),
		ProcessAction: p.ProcessAction, ProcessNames: p.ProcessNames, ScheduleID: pgOptID(p.ScheduleID),
		ScheduleName: p.ScheduleName, ScheduleCommand: p.ScheduleCommand,
	})
	if p.Dispatch && (errors.Is(err, pgx.ErrNoRows) || isUniqueViolation(err, "deployments_one_active_per_app_key")) {
		return Deployment{}, fmt.Errorf("create deployment: %w", ErrAppBusy)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		// Nothing inserted: either the app is missing or the delivery
		// was seen before (ON CONFLICT DO NOTHING keeps a caller's
		// transaction usable, unlike a unique violation).
		exists, xerr := s.q.AppExists(ctx, pgID(p.AppID))
		if xerr != nil {
			return Deployment{}, mapErr("create deployment", xerr)
		}
		if !exists {
			return Deployment{}, fmt.Errorf("create deployment: %w (app)", ErrMissingParent)
		}
		return Deployment{}, fmt.Errorf("create deployment: %w (deployments_webhook_delivery_key)", ErrConflict)
	}
	if err != nil {
		return Deployment{}, mapErr("create deployment", err)
	}
	return deploymentFromRow(r), nil
}

// Deployment returns a deployment by id.
func (s *Store) Deployment(ctx context.Context, id ID) (Deployment, error) {
	r, err := s.q.GetDeployment(ctx, pgID(id))
	if err != nil {
		return Deployment{}, mapErr("get deployment", err)
	}
	return deploymentFromRow(r), nil
}

// DeploymentByWebhookDelivery returns the deployment a webhook delivery
// created.
func (s *Store) DeploymentByWebhookDelivery(ctx context.Context, appID ID, deliveryID string) (Deployment, error) {
	r, err := s.q.GetDeploymentByTriggerRef(ctx, dbsqlc.GetDeploymentByTriggerRefParams{AppID: pgID(appID), TriggerRef: &deliveryID})
	if err != nil {
		return Deployment{}, mapErr("get deployment by webhook delivery", err)
	}
	return deploymentFromRow(r), nil
}

// DeploymentFilter selects and pages deployments. Before is the last id of
// the previous page; Limit 0 is DefaultPageSize.
type DeploymentFilter struct {
	AppID  *ID
	Status DeploymentStatus // "" for every status
	Before *ID
	Limit  int
}

// ListDeployments lists deployments, newest first.
func (s *Store) ListDeployments(ctx context.Context, f DeploymentFilter) ([]Deployment, error) {
	rows, err := s.q.ListDeployments(ctx, dbsqlc.ListDeploymentsParams{
		AppID: pgOptID(f.AppID), Status: nullText(string(f.Status)), Before: pgOptID(f.Before), Lim: limitArg(f.Limit),
	})
	if err != nil {
		return nil, mapErr("list deployments", err)
	}
	return deploymentsFromRows(rows), nil
}

// NextQueuedDeployments returns, oldest first, up to limit deployments that
// may start now: the oldest queued one of each app with none dispatched or
// running, on one of serverIDs (nil: any server). The rows stay locked
// (FOR UPDATE SKIP LOCKED) until the transaction ends, so call it inside
// InTx and dispatch them there; other dispatchers skip them meanwhile.
func (s *Store) NextQueuedDeployments(ctx context.Context, serverIDs []ID, limit int) ([]Deployment, error) {
	rows, err := s.q.NextQueuedDeployments(ctx, dbsqlc.NextQueuedDeploymentsParams{ServerIds: pgIDsOrNull(serverIDs), Lim: limitArg(limit)})
	if err != nil {
		return nil, mapErr("next queued deployments", err)
	}
	return deploymentsFromRows(rows), nil
}

// ClaimQueuedDeployments moves the deployments NextQueuedDeployments would
// return to dispatched in one statement, and returns them oldest first.
// Their deadline becomes dispatch time + timeout.
func (s *Store) ClaimQueuedDeployments(ctx context.Context, serverIDs []ID, limit int) ([]Deployment, error) {
	rows, err := s.q.ClaimQueuedDeployments(ctx, dbsqlc.ClaimQueuedDeploymentsParams{ServerIds: pgIDsOrNull(serverIDs), Lim: limitArg(limit)})
	if err != nil {
		return nil, mapErr("claim queued deployments", err)
	}
	out := deploymentsFromRows(rows)
	slices.SortFunc(out, func(a, b Deployment) int {
		return cmp.Or(a.QueuedAt.Compare(b.QueuedAt), a.ID.Compare(b.ID))
	})
	return out, nil
}

// deploymentCAS finishes a compare-and-set: no row means the deployment is
// missing (ErrNotFound) or in another state (ErrWrongState).
func (s *Store) deploymentCAS(ctx context.Context, what string, id ID, r dbsqlc.Deployment, err error) (Deployment, error) {
	if errors.Is(err, pgx.ErrNoRows) {
		cur, gerr := s.q.GetDeployment(ctx, pgID(id))
		if gerr != nil {
			return Deployment{}, mapErr(what, gerr)
		}
		return Deployment{}, wrongState(what, cur.Status)
	}
	if err != nil {
		return Deployment{}, mapErr(what, err)
	}
	return deploymentFromRow(r), nil
}

// DispatchDeployment moves a queued deployment to dispatched; its deadline
// becomes now + timeout. ErrConflict when another deployment of the app is
// dispatched or running; ErrWrongState when it is not queued.
func (s *Store) DispatchDeployment(ctx context.Context, id ID) (Deployment, error) {
	r, err := s.q.DispatchDeployment(ctx, pgID(id))
	return s.deploymentCAS(ctx, "dispatch deployment", id, r, err)
}

// StartDeployment moves a dispatched deployment to running; at is when the
// agent started it (nil: now).
func (s *Store) StartDeployment(ctx context.Context, id ID, at *time.Time) (Deployment, error) {
	r, err := s.q.StartDeployment(ctx, dbsqlc.StartDeploymentParams{ID: pgID(id), At: at})
	return s.deploymentCAS(ctx, "start deployment", id, r, err)
}

// DeploymentResult ends a deployment.
type DeploymentResult struct {
	Status        DeploymentStatus // a terminal status
	At            *time.Time       // when it ended (nil: now)
	FailedStep    *string
	ExitCode      *int
	FailureReason *string
}

// FinishDeployment ends a deployment. Allowed: succeeded from running;
// failed from dispatched or running; canceled and timed_out from queued,
// dispatched or running. Anything else is ErrWrongState and changes nothing.
func (s *Store) FinishDeployment(ctx context.Context, id ID, res DeploymentResult) (Deployment, error) {
	from, ok := deploymentFinishFrom[res.Status]
	if !ok {
		return Deployment{}, fmt.Errorf("finish deployment: %q is not a final status: %w", res.Status, ErrInvalid)
	}
	r, err := s.q.FinishDeployment(ctx, dbsqlc.FinishDeploymentParams{
		ID: pgID(id), Status: string(res.Status), At: res.At, FailedStep: res.FailedStep,
		ExitCode: ptrInt32(res.ExitCode), FailureReason: res.FailureReason, FromStatuses: from,
	})
	return s.deploymentCAS(ctx, "finish deployment", id, r, err)
}

// RequestDeploymentCancel records a cancel request on an unfinished
// deployment (the first request's time is kept); ErrWrongState once it
// finished. A queued deployment is then canceled with FinishDeployment; a
// dispatched or running one when its agent reports it.
func (s *Store) RequestDeploymentCancel(ctx context.Context, id ID) (Deployment, error) {
	r, err := s.q.RequestDeploymentCancel(ctx, pgID(id))
	return s.deploymentCAS(ctx, "request deployment cancel", id, r, err)
}

// SetDeploymentCommit records the commit the agent resolved; nil message or
// author keeps the current one.
func (s *Store) SetDeploymentCommit(ctx context.Context, id ID, sha string, message, author *string) (Deployment, error) {
	r, err := s.q.SetDeploymentCommit(ctx, dbsqlc.SetDeploymentCommitParams{ID: pgID(id), CommitSha: &sha, CommitMessage: message, CommitAuthor: author})
	if err != nil {
		return Deployment{}, mapErr("set deployment commit", err)
	}
	return deploymentFromRow(r), nil
}

// OverdueDeployments lists unfinished (queued, dispatched, running)
// deployments whose deadline is before now, oldest deadline first: the
// reaper ends them.
func (s *Store) OverdueDeployments(ctx context.Context, now time.Time, limit int) ([]Deployment, error) {
	rows, err := s.q.ListOverdueDeployments(ctx, dbsqlc.ListOverdueDeploymentsParams{Now: now, Lim: limitArg(limit)})
	if err != nil {
		return nil, mapErr("list overdue deployments", err)
	}
	return deploymentsFromRows(rows), nil
}

// ActiveDeploymentsForServer lists the dispatched and running deployments
// of a server's apps, oldest first, to re-send when its agent reconnects.
func (s *Store) ActiveDeploymentsForServer(ctx context.Context, serverID ID) ([]Deployment, error) {
	rows, err := s.q.ListActiveDeploymentsForServer(ctx, pgID(serverID))
	if err != nil {
		return nil, mapErr("list active deployments", err)
	}
	return deploymentsFromRows(rows), nil
}

// SucceededDeployments lists an app's succeeded deployments, newest first:
// the rollback targets. Before pages as in ListDeployments.
func (s *Store) SucceededDeployments(ctx context.Context, appID ID, before *ID, limit int) ([]Deployment, error) {
	rows, err := s.q.ListSucceededDeployments(ctx, dbsqlc.ListSucceededDeploymentsParams{AppID: pgID(appID), Before: pgOptID(before), Lim: limitArg(limit)})
	if err != nil {
		return nil, mapErr("list succeeded deployments", err)
	}
	return deploymentsFromRows(rows), nil
}

// DeleteDeployment deletes a deployment; an app's current pointer and
// rollbacks' rollback_from_id that name it are cleared.
func (s *Store) DeleteDeployment(ctx context.Context, id ID) error {
	n, err := s.q.DeleteDeployment(ctx, pgID(id))
	return affected("delete deployment", n, err)
}
