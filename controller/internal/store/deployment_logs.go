package store

import (
	"context"
	"errors"
	"fmt"
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
}

// ErrSeqGap: an event arrived before the ones numbered below it; nothing
// was stored and the agent re-sends from the last acknowledged number.
var ErrSeqGap = errors.New("job event out of order")

// CommitJobEvent stores an event exactly once: under the deployment's row
// lock, an event numbered at or below the committed number is a duplicate
// (dup true, nothing changes); the next number is stored and becomes the
// committed number; a later one is ErrSeqGap. logCap 0 is DefaultLogCap.
// It returns the committed number after the call.
func (s *Store) CommitJobEvent(ctx context.Context, ev JobEvent, logCap int64) (committed int64, dup bool, err error) {
	if ev.Seq <= 0 {
		return 0, false, fmt.Errorf("commit job event: seq %d: %w", ev.Seq, ErrInvalid)
	}
	if logCap <= 0 {
		logCap = DefaultLogCap
	}
	err = s.InTx(ctx, func(tx *Store) error {
		row, err := tx.q.LockDeploymentSeq(ctx, pgID(ev.DeploymentID))
		if err != nil {
			return err
		}
		committed = row.AgentSeq
		if ev.Seq <= row.AgentSeq {
			dup = true
			return nil
		}
		if ev.Seq != row.AgentSeq+1 {
			return fmt.Errorf("%w: got %d after %d", ErrSeqGap, ev.Seq, row.AgentSeq)
		}
		logBytes, truncated := row.LogBytes, row.LogTruncated
		if len(ev.Data) > 0 {
			data := ev.Data
			if !truncated {
				room := logCap - logBytes
				if int64(len(data)) > room {
					data = append(append([]byte{}, data[:max(room, 0)]...), TruncationMarker...)
					truncated = true
				}
				if len(data) > MaxLogChunk {
					data = append(data[:MaxLogChunk-len(TruncationMarker)], TruncationMarker...)
					truncated = true
				}
				if err := tx.q.InsertDeploymentLog(ctx, dbsqlc.InsertDeploymentLogParams{
					DeploymentID: pgID(ev.DeploymentID), Seq: ev.Seq, Step: ev.Step, Data: data,
				}); err != nil {
					return err
				}
			}
			logBytes += int64(len(ev.Data))
		}
		if ev.Apply != nil {
			d, err := tx.q.GetDeployment(ctx, pgID(ev.DeploymentID))
			if err != nil {
				return err
			}
			if err := ev.Apply(tx, deploymentFromRow(d)); err != nil {
				return err
			}
		}
		committed = ev.Seq
		return tx.q.AdvanceDeploymentSeq(ctx, dbsqlc.AdvanceDeploymentSeqParams{
			ID: pgID(ev.DeploymentID), AgentSeq: ev.Seq, LogBytes: logBytes, LogTruncated: truncated,
		})
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, fmt.Errorf("commit job event: %w", ErrNotFound)
	}
	if err != nil && !errors.Is(err, ErrSeqGap) {
		return 0, false, mapErr("commit job event", err)
	}
	return committed, dup, err
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
	id = NewID()
	_, err = s.q.InsertWebhookDelivery(ctx, dbsqlc.InsertWebhookDeliveryParams{
		ID: pgID(id), AppID: pgID(appID), Provider: provider, DeliveryID: deliveryID, Ref: ref, Result: string(res),
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
