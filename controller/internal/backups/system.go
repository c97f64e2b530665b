package backups

import (
	"context"
	"fmt"
	"time"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/store"
)

// Entry points for the controller's own callers (the leader's backup
// schedules and their retention), which act as the system, not as a
// principal: the schedule's creator was authorised when it was made.

// EnqueueScheduled queues a schedule's backup in tx with the newest
// keyring key, as RunBackup does for a person. It returns store's
// ErrConflict when the schedule's previous run is unfinished (the tick is
// skipped; tx stays usable). The caller commits tx and then calls Poke.
func (s *Service) EnqueueScheduled(ctx context.Context, tx *store.Store, p store.CreateBackupParams) (store.Backup, error) {
	if p.ScheduleID == nil {
		return store.Backup{}, fmt.Errorf("%w: a scheduled backup names its schedule", ErrInvalid)
	}
	if err := checkSource(p.Kind, p.Source); err != nil {
		return store.Backup{}, err
	}
	if err := checkConnectionEnv(p.Kind, p.ConnectionEnv); err != nil {
		return store.Backup{}, err
	}
	key, err := s.currentKey(ctx)
	if err != nil {
		return store.Backup{}, err
	}
	p.TriggeredBy = store.TriggerSchedule
	if p.TimeoutSeconds <= 0 {
		p.TimeoutSeconds = int(s.cfg.Timeout / time.Second)
	}
	b, err := tx.CreateBackup(ctx, p)
	if err != nil {
		return store.Backup{}, err
	}
	if b, err = tx.SetBackupEncryptionKey(ctx, b.ID, key.ID.String()); err != nil {
		return store.Backup{}, err
	}
	s.systemActivity(ctx, tx, store.ActorSystem, "system", kind.BackupQueued, "backup", b.ID, b.AppName, map[string]any{
		"kind": string(b.Kind), "source": b.Source, "schedule_id": p.ScheduleID.String(),
	})
	return b, nil
}

// QueueSystemTask queues a verify or delete of a stored backup on its
// server, as the system (a schedule's automatic verification, retention).
// A delete marks the backup (delete_requested_at) and removes the row once
// the object is gone; a failed delete keeps the row with delete_error.
func (s *Service) QueueSystemTask(ctx context.Context, backupID store.ID, k store.BackupTaskKind) (store.BackupTask, error) {
	if k != store.TaskVerify && k != store.TaskDelete {
		return store.BackupTask{}, fmt.Errorf("%w: system tasks are verify and delete", ErrInvalid)
	}
	b, err := s.st.Backup(ctx, backupID)
	if err != nil {
		return store.BackupTask{}, err
	}
	if b.Status != store.BackupSucceeded || b.ServerID == nil {
		return store.BackupTask{}, fmt.Errorf("%w: backup %s is %s or its server was removed", ErrRefused, b.ID, b.Status)
	}
	var t store.BackupTask
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		if k == store.TaskDelete {
			if _, err := tx.RequestBackupDelete(ctx, b.ID); err != nil {
				return err
			}
		}
		var err error
		t, err = tx.CreateBackupTask(ctx, store.CreateBackupTaskParams{
			Kind: k, BackupID: &b.ID, DestinationID: b.DestinationID, ServerID: *b.ServerID, TriggeredBy: store.TriggerSchedule,
			TimeoutSeconds: int(s.cfg.Timeout / time.Second),
		})
		if err != nil {
			return err
		}
		action := kind.BackupVerifyQueued
		if k == store.TaskDelete {
			action = kind.BackupDeleteRequested
		}
		s.systemActivity(ctx, tx, store.ActorSystem, "system", action, "backup", b.ID, b.AppName, map[string]any{"task": t.ID.String()})
		return nil
	})
	if err != nil {
		return store.BackupTask{}, err
	}
	s.Poke(ctx)
	return t, nil
}

// Poke tells every controller that a backup or task may be dispatchable.
func (s *Service) Poke(ctx context.Context) { s.notify(ctx, "dispatch") }
