package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berthhq/berth/gen/dbsqlc"
)

// DefaultLogCap bounds the stored log of one deployment; past it one chunk
// carries TruncationMarker and later output is counted, not stored.
const DefaultLogCap = 4 << 20

// TruncationMarker is the visible line that ends a capped log.
const TruncationMarker = "\n[berth: log truncated: the output exceeded the size limit; later output was not stored]\n"

// MaxLogChunk is the largest chunk a deployment_logs row holds.
const MaxLogChunk = 1 << 20

// LogChunk is a piece of a deployment's output.
type LogChunk struct {
	DeploymentID ID
	Seq          int64
	Step         string
	Data         []byte
	CreatedAt    time.Time
}

// JobEvent is one numbered event an agent reports for a deployment. Data
// (output) is appended to the log under the cap; Apply, when set, runs in
// the same transaction (state changes for progress and result events).
type JobEvent struct {
	DeploymentID ID
	Seq          int64
	Step         string
	Data         []byte
	Apply        func(tx *Store, d Deployment) error
	// Fresh: Apply needs the row as the events before it in the same
	// batch left it. Without it Apply may see the row as the batch found
	// it, which suits changes that check their own preconditions.
	Fresh bool
}

// JobEventOutcome is what became of one event of a batch.
type JobEventOutcome struct {
	// Committed is the deployment's committed event number after the
	// event: the number to acknowledge.
	Committed int64
	// Dup: numbered at or below the committed number; nothing changed.
	Dup bool
	// Gap: numbered past the next one; nothing stored, and the agent
	// re-sends from the last acknowledged number.
	Gap bool
}

// CommitJobEvents stores a run of events, for one deployment or several,
// in one transaction, in the order given, each exactly once: under the
// deployment's row lock an event numbered at or below the committed
// number is a duplicate (nothing changes), the next number is stored and
// becomes the committed number, and a later one is a gap (nothing stored).
// logCap 0 is DefaultLogCap. An agent streams its events one by one, and one
// transaction (one wait for the disk) per event would make the database
// the slowest part of a deploy; events that queued up while the previous
// ones were stored commit together. Any error rolls back the whole run.
func (s *Store) CommitJobEvents(ctx context.Context, evs []JobEvent, logCap int64) ([]JobEventOutcome, error) {
	nevs := make([]numberedEvent[Deployment], len(evs))
	for i, ev := range evs {
		nevs[i] = numberedEvent[Deployment]{JobID: ev.DeploymentID, Seq: ev.Seq, Step: ev.Step, Data: ev.Data, Apply: ev.Apply, Fresh: ev.Fresh}
	}
	return commitNumbered(ctx, s, nevs, logCap, deploymentJobs)
}

// deploymentJobs is how commitNumbered reaches deployments and their log.
var deploymentJobs = jobTable[Deployment]{
	lock: func(ctx context.Context, tx *Store, id ID) (Deployment, jobCounters, error) {
		row, err := tx.q.LockDeploymentSeq(ctx, pgID(id))
		if err != nil {
			return Deployment{}, jobCounters{}, err
		}
		d := deploymentFromRow(row)
		return d, jobCounters{Seq: d.AgentSeq, LogBytes: d.LogBytes, Truncated: d.LogTruncated}, nil
	},
	get: func(ctx context.Context, tx *Store, id ID) (Deployment, error) {
		row, err := tx.q.GetDeployment(ctx, pgID(id))
		return deploymentFromRow(row), err
	},
	insertLog: func(ctx context.Context, tx *Store, id ID, seq int64, step string, data []byte) error {
		return tx.q.InsertDeploymentLog(ctx, dbsqlc.InsertDeploymentLogParams{DeploymentID: pgID(id), Seq: seq, Step: step, Data: data})
	},
	advance: func(ctx context.Context, tx *Store, id ID, c jobCounters) error {
		return tx.q.AdvanceDeploymentSeq(ctx, dbsqlc.AdvanceDeploymentSeqParams{
			ID: pgID(id), AgentSeq: c.Seq, LogBytes: c.LogBytes, LogTruncated: c.Truncated,
		})
	},
}

// DeploymentLogs returns up to limit chunks numbered after after, in order.
func (s *Store) DeploymentLogs(ctx context.Context, id ID, after int64, limit int) ([]LogChunk, error) {
	if limit <= 0 {
		limit = 500
	}
	rows, err := s.q.ListDeploymentLogs(ctx, dbsqlc.ListDeploymentLogsParams{DeploymentID: pgID(id), After: after, Lim: int32(limit)})
	if err != nil {
		return nil, mapErr("list deployment logs", err)
	}
	out := make([]LogChunk, len(rows))
	for i, r := range rows {
		out[i] = LogChunk{DeploymentID: fromPG(r.DeploymentID), Seq: r.Seq, Step: r.Step, Data: r.Data, CreatedAt: r.CreatedAt}
	}
	return out, nil
}

// DeploymentLogTail returns the last max bytes of a deployment's log (at
// most the last 64 chunks).
func (s *Store) DeploymentLogTail(ctx context.Context, id ID, max int) ([]byte, error) {
	rows, err := s.q.ListDeploymentLogTail(ctx, dbsqlc.ListDeploymentLogTailParams{DeploymentID: pgID(id), Lim: 64})
	if err != nil {
		return nil, mapErr("deployment log tail", err)
	}
	var out []byte
	for _, r := range rows { // newest first
		out = append(append([]byte(nil), r.Data...), out...)
		if len(out) >= max {
			break
		}
	}
	if len(out) > max {
		out = out[len(out)-max:]
	}
	return out, nil
}

// SetDeploymentReleasePath records the release a deployment built or
// rolled back to.
func (s *Store) SetDeploymentReleasePath(ctx context.Context, id ID, path string) error {
	return mapErr("set deployment release path", s.q.SetDeploymentReleasePath(ctx, dbsqlc.SetDeploymentReleasePathParams{ID: pgID(id), ReleasePath: &path}))
}

// WebhookDeliveryResult says what a webhook delivery did.
type WebhookDeliveryResult string

// The delivery results.
const (
	WebhookDeployed      WebhookDeliveryResult = "deployed"
	WebhookIgnoredBranch WebhookDeliveryResult = "ignored_branch"
	WebhookIgnoredEvent  WebhookDeliveryResult = "ignored_event"
)

// RecordWebhookDelivery records a verified delivery once. first is false
// for a replay (nothing is recorded). Call it in the transaction that acts
// on the delivery, so a failure forgets both.
func (s *Store) RecordWebhookDelivery(ctx context.Context, appID ID, provider, deliveryID, ref string, res WebhookDeliveryResult) (id ID, first bool, err error) {
	return s.RecordWebhookDeliveryBody(ctx, WebhookDelivery{AppID: appID, Provider: provider, DeliveryID: deliveryID, Ref: ref, Result: res})
}

// WebhookDelivery is a verified delivery to record.
type WebhookDelivery struct {
	AppID                     ID
	Provider, DeliveryID, Ref string
	Result                    WebhookDeliveryResult
	// BodyDigest is the SHA-256 of the verified body; nil: not deduped by body.
	BodyDigest []byte
	// Since: a delivery of the same body to the same app and provider
	// recorded at or after it is a replay (the dedupe window's start); the
	// zero time: any earlier delivery of the body is.
	Since time.Time
}

// RecordWebhookDeliveryBody records a verified delivery once: first is
// false for a replay of its delivery id, or of its body since d.Since
// (a signed body sent again under a new delivery id). Call it in the
// transaction that acts on the delivery: the body's lock is held until it ends.
func (s *Store) RecordWebhookDeliveryBody(ctx context.Context, d WebhookDelivery) (id ID, first bool, err error) {
	if d.BodyDigest != nil {
		if err := s.q.LockWebhookBody(ctx, dbsqlc.LockWebhookBodyParams{AppID: pgID(d.AppID), BodyDigest: d.BodyDigest}); err != nil {
			return ID{}, false, mapErr("lock webhook body", err)
		}
		seen, err := s.q.WebhookBodySeen(ctx, dbsqlc.WebhookBodySeenParams{AppID: pgID(d.AppID), Provider: d.Provider, BodyDigest: d.BodyDigest, Since: d.Since})
		if err != nil {
			return ID{}, false, mapErr("webhook body seen", err)
		}
		if seen {
			return ID{}, false, nil
		}
	}
	id = NewID()
	_, err = s.q.InsertWebhookDelivery(ctx, dbsqlc.InsertWebhookDeliveryParams{
		ID: pgID(id), AppID: pgID(d.AppID), Provider: d.Provider, DeliveryID: d.DeliveryID, Ref: d.Ref, Result: string(d.Result), BodyDigest: d.BodyDigest,
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return ID{}, false, nil
	}
	if err != nil {
		return ID{}, false, mapErr("record webhook delivery", err)
	}
	return id, true, nil
}

// SetWebhookDeliveryDeployment links a delivery to the deployment it made.
func (s *Store) SetWebhookDeliveryDeployment(ctx context.Context, id, deploymentID ID) error {
	return mapErr("set webhook delivery deployment", s.q.SetWebhookDeliveryDeployment(ctx, dbsqlc.SetWebhookDeliveryDeploymentParams{ID: pgID(id), DeploymentID: pgID(deploymentID)}))
}

// DeploymentServer returns the server whose agent runs deployment id:
// its app's server.
func (s *Store) DeploymentServer(ctx context.Context, id ID) (ID, error) {
	sid, err := s.q.GetDeploymentServer(ctx, pgID(id))
	if err != nil {
		return ID{}, mapErr("get deployment server", err)
	}
	return fromPG(sid), nil
}
