package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berthhq/berth/gen/dbsqlc"
)

// CleanupStatus is where the cleanup of an unsucceeded backup stands
// (000034).
type CleanupStatus string

// The cleanup states; "" is none needed.
const (
	CleanupPending CleanupStatus = "pending"
	CleanupDone    CleanupStatus = "done"
	CleanupFailed  CleanupStatus = "failed"
)

func cleanupStatusOf(p *string) CleanupStatus {
	if p == nil {
		return ""
	}
	return CleanupStatus(*p)
}

// MarkBackupCleanupPending records that a cleanup task is being queued for
// an unsucceeded backup whose cleanup is not pending or done yet;
// ErrWrongState otherwise (a succeeded backup is never cleaned up).
func (s *Store) MarkBackupCleanupPending(ctx context.Context, id ID) (Backup, error) {
	r, err := s.q.MarkBackupCleanupPending(ctx, pgID(id))
	return s.backupCAS(ctx, "mark backup cleanup pending", id, r, err)
}

// RecordBackupCleanup records the end of a backup's pending cleanup: done
// when cleanupErr is nil, else failed with it. ErrWrongState when no
// cleanup was pending; ErrNotFound when the row is gone.
func (s *Store) RecordBackupCleanup(ctx context.Context, id ID, cleanupErr *string) (Backup, error) {
	r, err := s.q.RecordBackupCleanup(ctx, dbsqlc.RecordBackupCleanupParams{ID: pgID(id), CleanupError: cleanupErr})
	return s.backupCAS(ctx, "record backup cleanup", id, r, err)
}

// ClaimBackupCleanupRetries returns the failed cleanups of the servers'
// backups whose last attempt ended before cutoff, locked (skipping rows
// another transaction holds) for the caller's transaction to queue again.
func (s *Store) ClaimBackupCleanupRetries(ctx context.Context, serverIDs []ID, cutoff time.Time, limit int) ([]Backup, error) {
	rows, err := s.q.ClaimBackupCleanupRetries(ctx, dbsqlc.ClaimBackupCleanupRetriesParams{Cutoff: cutoff, ServerIds: pgIDs(serverIDs), Lim: limitArg(limit)})
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, mapErr("claim backup cleanup retries", err)
	}
	return backupsFromRows(rows), nil
}
