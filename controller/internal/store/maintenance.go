package store

import (
	"context"
	"fmt"
	"time"

	"github.com/berthhq/berth/gen/dbsqlc"
)

// EnsureMetricsPartitions creates the missing daily server_metrics partitions
// for days starting at fromDay (UTC) and reports how many it created.
func (s *Store) EnsureMetricsPartitions(ctx context.Context, fromDay time.Time, days int) (int, error) {
	n, err := s.q.EnsureMetricsPartitions(ctx, dbsqlc.EnsureMetricsPartitionsParams{FromDay: pgDate(fromDay), Days: int32(days)})
	return int(n), mapErr("ensure metrics partitions", err)
}

// DropMetricsPartitionsBefore drops the daily partitions that end at or
// before cutoff (UTC midnight) and reports how many it dropped.
//
// A partition drop takes an ACCESS EXCLUSIVE lock on server_metrics for a
// moment. The lock timeout keeps it from queueing behind a long chart query
// and stalling ingest behind itself; a timed-out drop simply runs next time.
func (s *Store) DropMetricsPartitionsBefore(ctx context.Context, cutoff time.Time) (int, error) {
	var n int32
	err := s.InTx(ctx, func(tx *Store) error {
		if _, err := tx.db.Exec(ctx, "SET LOCAL lock_timeout = '5s'"); err != nil {
			return err
		}
		var err error
		n, err = tx.q.DropMetricsPartitionsBefore(ctx, pgDate(cutoff))
		return err
	})
	return int(n), mapErr("drop metrics partitions", err)
}

// MetricsPartitions lists the partition names, oldest first.
func (s *Store) MetricsPartitions(ctx context.Context) ([]string, error) {
	names, err := s.q.ListMetricsPartitions(ctx)
	return names, mapErr("list metrics partitions", err)
}

// LastMaintenanceRun is when job last finished; ErrNotFound when never.
func (s *Store) LastMaintenanceRun(ctx context.Context, job string) (time.Time, error) {
	r, err := s.q.GetMaintenanceRun(ctx, job)
	if err != nil {
		return time.Time{}, mapErr("get maintenance run", err)
	}
	return r.LastRunAt, nil
}

// RecordMaintenanceRun notes that job finished at at, touching affected rows.
func (s *Store) RecordMaintenanceRun(ctx context.Context, job string, at time.Time, affected int64) error {
	return mapErr("record maintenance run", s.q.RecordMaintenanceRun(ctx, dbsqlc.RecordMaintenanceRunParams{Job: job, LastRunAt: at, LastAffected: affected}))
}

// RetentionTable names a table with a created_at retention job.
type RetentionTable string

// The tables the seed's cleanup jobs prune by age.
const (
	RetainLoginAttempts  RetentionTable = "login_attempts"
	RetainSecurityEvents RetentionTable = "security_events"
	RetainNotifications  RetentionTable = "notifications"
	RetainActivityLog    RetentionTable = "activity_log"
)

// DeleteOlderThan deletes up to batch rows of t created before cutoff and
// reports how many; callers loop until it returns fewer than batch, so no
// single statement holds locks for long.
func (s *Store) DeleteOlderThan(ctx context.Context, t RetentionTable, cutoff time.Time, batch int) (int64, error) {
	var fn func(context.Context, time.Time, int32) (int64, error)
	switch t {
	case RetainLoginAttempts:
		fn = func(ctx context.Context, c time.Time, b int32) (int64, error) {
			return s.q.DeleteLoginAttemptsBefore(ctx, dbsqlc.DeleteLoginAttemptsBeforeParams{Cutoff: c, Batch: b})
		}
	case RetainSecurityEvents:
		fn = func(ctx context.Context, c time.Time, b int32) (int64, error) {
			return s.q.DeleteSecurityEventsBefore(ctx, dbsqlc.DeleteSecurityEventsBeforeParams{Cutoff: c, Batch: b})
		}
	case RetainNotifications:
		fn = func(ctx context.Context, c time.Time, b int32) (int64, error) {
			return s.q.DeleteNotificationsBefore(ctx, dbsqlc.DeleteNotificationsBeforeParams{Cutoff: c, Batch: b})
		}
	case RetainActivityLog:
		fn = func(ctx context.Context, c time.Time, b int32) (int64, error) {
			return s.q.DeleteActivityLogBefore(ctx, dbsqlc.DeleteActivityLogBeforeParams{Cutoff: c, Batch: b})
		}
	default:
		return 0, fmt.Errorf("delete older than: unknown table %q: %w", t, ErrInvalid)
	}
	n, err := fn(ctx, cutoff, int32(batch))
	return n, mapErr("delete old "+string(t), err)
}
