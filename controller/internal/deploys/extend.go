package deploys

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// JobKindHandler lets another capability (domains: the 'site' and 'acme'
// kinds) run its agent work on this one job machinery: queue, dispatch,
// reconnect re-sends, deadlines and the per-app order stay here; the
// handler only fills in the job and reads its end.
type JobKindHandler interface {
	// BuildJob fills the kind's part of js (its id, app and timeout are
	// set) when the job is sent, or re-sent after a reconnect.
	BuildJob(ctx context.Context, a store.App, d store.Deployment, js *agentv1.JobStart) error
	// JobEnded runs in the transaction that records the job's end: r is
	// the agent's result, or nil when the controller ended it (timed out
	// in the queue, agent unreachable); d is the finished row.
	JobEnded(ctx context.Context, tx *store.Store, d store.Deployment, r *agentv1.JobResult) error
}

// HandleJobKind registers the handler of a job kind; call it before Run.
func (s *Service) HandleJobKind(k store.JobKind, h JobKindHandler) {
	if s.kinds == nil {
		s.kinds = map[store.JobKind]JobKindHandler{}
	}
	s.kinds[k] = h
}

// EnqueueJob queues a job of a registered kind for an app, with its input
// (JSON, no secrets) stored beside it, and wakes the dispatchers. It runs
// in the app's order like any job.
func (s *Service) EnqueueJob(ctx context.Context, appID store.ID, k store.JobKind, userID *store.ID, params []byte, timeout time.Duration) (store.Deployment, error) {
	if s.kinds[k] == nil {
		return store.Deployment{}, fmt.Errorf("%w: job kind %q has no handler", ErrInvalid, k)
	}
	cp := store.CreateDeploymentParams{AppID: appID, Kind: k, UserID: userID, TriggeredBy: store.TriggerSchedule, TimeoutSeconds: int(timeout / time.Second)}
	if userID != nil {
		cp.TriggeredBy = store.TriggerUser
	}
	var d store.Deployment
	err := s.st.InTx(ctx, func(tx *store.Store) error {
		var err error
		if d, err = tx.CreateDeployment(ctx, cp); err != nil {
			return err
		}
		if params != nil {
			return tx.SetDeploymentParams(ctx, d.ID, params)
		}
		return nil
	})
	if err != nil {
		return store.Deployment{}, err
	}
	s.poke()
	s.notify(ctx, "dispatch")
	return d, nil
}

// WaitJob waits until a job finished, or ctx ends. A notification (from
// whichever controller stored its end) wakes it; it re-reads every second
// anyway.
func (s *Service) WaitJob(ctx context.Context, id store.ID) (store.Deployment, error) {
	wake, done := s.subscribe(id)
	defer done()
	for {
		d, err := s.st.Deployment(ctx, id)
		if err != nil {
			return store.Deployment{}, err
		}
		if d.Status.Finished() {
			return d, nil
		}
		select {
		case <-ctx.Done():
			return d, ctx.Err()
		case <-wake:
		case <-time.After(time.Second):
		}
	}
}

// handledJobStart builds a registered kind's job; ok is false for the
// kinds this package builds itself.
func (s *Service) handledJobStart(ctx context.Context, a store.App, d store.Deployment) (*agentv1.JobStart, bool, error) {
	h := s.kinds[d.Kind]
	if h == nil {
		return nil, false, nil
	}
	js := &agentv1.JobStart{
		JobId: d.ID.String(), AppId: a.ID.String(), AppName: a.Name, Kind: string(d.Kind),
		Timeout: durationpb.New(time.Duration(d.TimeoutSeconds) * time.Second), AckedSeq: uint64(d.AgentSeq),
	}
	return js, true, h.BuildJob(ctx, a, d, js)
}

// handledJobEnded tells a registered kind's handler that its job ended;
// ok is false for the other kinds.
func (s *Service) handledJobEnded(ctx context.Context, tx *store.Store, d store.Deployment, r *agentv1.JobResult) (bool, error) {
	h := s.kinds[d.Kind]
	if h == nil {
		return false, nil
	}
	return true, h.JobEnded(ctx, tx, d, r)
}

// appHasSite says whether the app has domains (a site in nginx); an error
// counts as yes, so a delete still removes a site it could not check.
func (s *Service) appHasSite(ctx context.Context, appID store.ID) bool {
	ds, err := s.st.DomainsForApp(ctx, appID)
	return err != nil || len(ds) > 0
}
