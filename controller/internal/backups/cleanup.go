package backups

// Cleanup (issue 18 §2: an interrupted upload leaves no object that any
// row calls good, and no debris at all).
//
// The agent removes its temporary file or aborts its multipart upload when
// a backup fails in front of it. It cannot when it is killed (kill -9, a
// crash, the machine's power) or when the destination went away in the
// middle: then KEY.partial-<hex> stays in a local or SFTP directory, or an
// unfinished multipart upload of KEY keeps its parts (and its bill) on S3.
// And a backup the controller gave up on (its deadline, a cancel, a lost
// agent) may still complete on the agent into an object no row calls good.
//
// So every backup that ends failed, canceled or timed out after it was
// sent to an agent gets a cleanup task on its server, queued in the
// transaction that records the end, whichever path ended it (the agent's
// result, the sweep of an overdue or lost job, an unbuildable re-send).
// The agent runs it as a delete of the backup's key: the object, if any,
// and the key's leftovers, nothing else (keys are unique per backup). It
// waits for a backup of the same key still running there (the agent's busy
// key), so it never races that upload. A backup never dispatched wrote
// nothing and gets none; a succeeded backup is never touched (a CHECK in
// 000034 says so too).
//
// The backup row shows where it stands (cleanup_status pending, done or
// failed with cleanup_error). A failed cleanup is queued again once
// Config.DeleteRetryAfter has passed and its server is connected, as a
// failed delete is, until it succeeds. Cleanups are the system's work:
// triggered_by 'system', audited with the system as actor.

import (
	"context"
	"errors"
	"time"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
)

const cleanupBatch = 50

// needsCleanup: b ended without succeeding after an agent got it (or ran
// it from its held schedule).
func needsCleanup(b store.Backup) bool {
	switch b.Status {
	case store.BackupFailed, store.BackupCanceled, store.BackupTimedOut:
		return b.DispatchedAt != nil || b.StartedAt != nil || b.Held
	}
	return false
}

// queueCleanup queues b's cleanup task in tx (b's end, a retry, or a
// delete of the row). A backup whose server was removed cannot be reached:
// its cleanup is recorded failed with that reason. pr is nil for the
// system.
func (s *Service) queueCleanup(ctx context.Context, tx *store.Store, b store.Backup, pr *auth.Principal, peer Peer, retry bool) (*store.BackupTask, error) {
	if _, err := tx.MarkBackupCleanupPending(ctx, b.ID); err != nil {
		if errors.Is(err, store.ErrWrongState) {
			return nil, nil // pending or done already
		}
		return nil, err
	}
	if b.ServerID == nil {
		_, err := tx.RecordBackupCleanup(ctx, b.ID, optText("the server that made this backup was removed; what it left at the destination cannot be reached"))
		return nil, err
	}
	trig := store.TriggerSystem
	if pr != nil {
		trig = trigger(pr)
	}
	t, err := tx.CreateBackupTask(ctx, store.CreateBackupTaskParams{
		Kind: store.TaskCleanup, BackupID: &b.ID, DestinationID: b.DestinationID, ServerID: *b.ServerID,
		TriggeredBy: trig, TimeoutSeconds: int(s.cfg.Timeout / time.Second),
	})
	if err != nil {
		return nil, err
	}
	changes := map[string]any{"task": t.ID.String(), "object_key": objectKey(b), "retry": retry}
	if retry && b.CleanupError != nil {
		changes["previous_error"] = *b.CleanupError
	}
	if pr != nil {
		s.activity(ctx, tx, pr, peer, kind.BackupCleanupQueued, "backup", b.ID, b.AppName, changes)
	} else {
		s.systemActivity(ctx, tx, store.ActorSystem, "system", kind.BackupCleanupQueued, "backup", b.ID, b.AppName, changes)
	}
	s.poke()
	return &t, nil
}

// cleanupEnded records a cleanup task's end on its backup; a backup whose
// delete waited for the cleanup goes now, or keeps the reason it did not.
func (s *Service) cleanupEnded(ctx context.Context, tx *store.Store, t, done store.BackupTask, actorType store.ActorType, actor string) error {
	if t.BackupID == nil {
		return nil
	}
	var cerr *string
	if done.Status != store.BackupSucceeded {
		cerr = optText(truncate("cleanup "+string(done.Status)+": "+deref(done.FailureReason), 2000))
	}
	b, err := tx.RecordBackupCleanup(ctx, *t.BackupID, cerr)
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrWrongState) {
		return nil
	}
	if err != nil {
		return err
	}
	if b.DeleteRequestedAt == nil {
		return nil
	}
	if cerr != nil {
		return tx.RecordBackupDeleteError(ctx, b.ID, "delete waits for the cleanup, which "+*cerr)
	}
	if err := tx.DeleteBackup(ctx, b.ID); err != nil {
		return err
	}
	s.systemActivity(ctx, tx, actorType, actor, kind.BackupDeleted, "backup", b.ID, b.AppName,
		map[string]any{"status": string(b.Status), "cleanup": string(store.CleanupDone)})
	return nil
}

// retryCleanups queues again the failed cleanups of the servers' backups
// whose last attempt is older than DeleteRetryAfter; it returns how many.
func (s *Service) retryCleanups(ctx context.Context, servers []store.ID) int {
	if len(servers) == 0 {
		return 0
	}
	cutoff := s.cfg.Now().Add(-s.cfg.DeleteRetryAfter)
	n := 0
	err := s.st.InTx(ctx, func(tx *store.Store) error {
		n = 0
		bs, err := tx.ClaimBackupCleanupRetries(ctx, servers, cutoff, cleanupBatch)
		if err != nil {
			return err
		}
		for _, b := range bs {
			t, err := s.queueCleanup(ctx, tx, b, nil, Peer{}, true)
			if err != nil {
				return err
			}
			if t != nil {
				n++
			}
		}
		return nil
	})
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("retry backup cleanups", "err", err)
		}
		return 0
	}
	return n
}
