package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berthhq/berth/gen/dbsqlc"
)

// NewBackupSchedule is a schedule to store, enabled, with its first run.
type NewBackupSchedule struct {
	AppID ID
	BackupScheduleSettings
	ConnectionEnv string
	Verify        bool
}

// InsertBackupSchedule stores an enabled schedule with every setting.
func (s *Store) InsertBackupSchedule(ctx context.Context, p NewBackupSchedule) (BackupSchedule, error) {
	if p.Timezone == "" {
		p.Timezone = DefaultBackupTimezone
	}
	if p.NextRunAt == nil {
		return BackupSchedule{}, fmt.Errorf("insert backup schedule: %w: no next run", ErrInvalid)
	}
	r, err := s.q.InsertBackupSchedule(ctx, dbsqlc.InsertBackupScheduleParams{
		ID: pgID(NewID()), AppID: pgID(p.AppID), BackupDestinationID: pgID(p.DestinationID), Kind: string(p.Kind),
		Source: p.Source, Cron: p.Cron, Timezone: p.Timezone, RetentionCount: ptrInt32(p.RetentionCount),
		RetentionDays: ptrInt32(p.RetentionDays), NextRunAt: p.NextRunAt, ConnectionEnv: nullText(p.ConnectionEnv),
		Verify: p.Verify,
	})
	if err != nil {
		return BackupSchedule{}, mapErr("insert backup schedule", err)
	}
	return backupScheduleFromRow(r), nil
}

// ClaimDueBackupSchedules returns up to limit enabled schedules due at now
// of apps on serverIDs, locked FOR UPDATE SKIP LOCKED: call it inside InTx
// and move each one's next run there, so no two controllers fire a tick.
func (s *Store) ClaimDueBackupSchedules(ctx context.Context, now time.Time, serverIDs []ID, limit int) ([]BackupSchedule, error) {
	rows, err := s.q.ClaimDueBackupSchedulesForServers(ctx, dbsqlc.ClaimDueBackupSchedulesForServersParams{
		Now: now, ServerIds: pgIDs(serverIDs), Lim: limitArg(limit)})
	if err != nil {
		return nil, mapErr("claim due backup schedules", err)
	}
	return backupSchedulesFromRows(rows), nil
}

// HeldBackupSchedules lists the enabled schedules of a server's apps.
func (s *Store) HeldBackupSchedules(ctx context.Context, serverID ID) ([]BackupSchedule, error) {
	rows, err := s.q.ListHeldBackupSchedulesForServer(ctx, pgID(serverID))
	if err != nil {
		return nil, mapErr("list held backup schedules", err)
	}
	return backupSchedulesFromRows(rows), nil
}

// ScheduledBackup is one run of a schedule's tick.
type ScheduledBackup struct {
	ID            ID // zero: a new one
	Schedule      BackupSchedule
	AppName       string
	ServerID      ID
	ScheduledFor  time.Time
	EncryptionKey string
	Timeout       time.Duration
	// Held: the agent's report of a run it already started at StartedAt.
	Held      bool
	StartedAt *time.Time
}

// Errors of InsertScheduledBackup.
var (
	// ErrRunExists: the tick already has its run.
	ErrRunExists = fmt.Errorf("%w: the tick already has a run", ErrConflict)
	// ErrRunActive: the schedule's previous run is unfinished.
	ErrRunActive = fmt.Errorf("%w: the schedule's previous run is unfinished", ErrConflict)
)

// InsertScheduledBackup stores the run of a tick under its run key
// (schedule, scheduled time). When nothing was inserted it returns the row
// in the way: ErrRunExists with the tick's run, or ErrRunActive with the
// schedule's unfinished run. The caller's transaction stays usable.
func (s *Store) InsertScheduledBackup(ctx context.Context, p ScheduledBackup) (Backup, error) {
	if p.ID == (ID{}) {
		p.ID = NewID()
	}
	at := p.ScheduledFor.UTC()
	if !p.Held {
		// Never beside an unfinished run, held ones included (they are
		// outside the one-active index).
		if b, err := s.q.GetActiveBackupForSchedule(ctx, pgID(p.Schedule.ID)); err == nil {
			return backupFromRow(b), ErrRunActive
		} else if !errors.Is(err, pgx.ErrNoRows) {
			return Backup{}, mapErr("get active scheduled backup", err)
		}
	}
	r, err := s.q.InsertScheduledBackup(ctx, dbsqlc.InsertScheduledBackupParams{
		ID: pgID(p.ID), AppID: pgID(p.Schedule.AppID), AppName: p.AppName, ServerID: pgID(p.ServerID),
		BackupDestinationID: pgID(p.Schedule.DestinationID), BackupScheduleID: pgID(p.Schedule.ID),
		ScheduledFor: &at, Held: p.Held, Kind: string(p.Schedule.Kind), Source: p.Schedule.Source,
		EncryptionKeyID: nullText(p.EncryptionKey), TimeoutSeconds: int32(p.Timeout / time.Second),
		StartedAt: p.StartedAt, ConnectionEnv: p.Schedule.ConnectionEnv,
	})
	if err == nil {
		return backupFromRow(r), nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return Backup{}, mapErr("insert scheduled backup", err)
	}
	if b, err := s.q.GetBackupByRunKey(ctx, dbsqlc.GetBackupByRunKeyParams{BackupScheduleID: pgID(p.Schedule.ID), ScheduledFor: &at}); err == nil {
		return backupFromRow(b), ErrRunExists
	} else if !errors.Is(err, pgx.ErrNoRows) {
		return Backup{}, mapErr("get backup by run key", err)
	}
	if b, err := s.q.GetActiveBackupForSchedule(ctx, pgID(p.Schedule.ID)); err == nil {
		return backupFromRow(b), ErrRunActive
	} else if !errors.Is(err, pgx.ErrNoRows) {
		return Backup{}, mapErr("get active scheduled backup", err)
	}
	// Another conflict: the id itself (a report seen before).
	if b, err := s.q.GetBackup(ctx, pgID(p.ID)); err == nil {
		return backupFromRow(b), ErrRunExists
	}
	return Backup{}, fmt.Errorf("insert scheduled backup: %w", ErrConflict)
}

// SupersedeScheduledBackup cancels a queued or dispatched run (its agent
// never started it) and frees its run key: ErrWrongState otherwise.
func (s *Store) SupersedeScheduledBackup(ctx context.Context, id ID, reason string) (Backup, error) {
	r, err := s.q.SupersedeScheduledBackup(ctx, dbsqlc.SupersedeScheduledBackupParams{ID: pgID(id), FailureReason: &reason})
	if errors.Is(err, pgx.ErrNoRows) {
		return Backup{}, fmt.Errorf("supersede scheduled backup: %w", ErrWrongState)
	}
	if err != nil {
		return Backup{}, mapErr("supersede scheduled backup", err)
	}
	return backupFromRow(r), nil
}

// SetBackupScheduleVerify turns automatic verification on or off.
func (s *Store) SetBackupScheduleVerify(ctx context.Context, id ID, verify bool) (BackupSchedule, error) {
	r, err := s.q.SetBackupScheduleVerify(ctx, dbsqlc.SetBackupScheduleVerifyParams{ID: pgID(id), Verify: verify})
	if err != nil {
		return BackupSchedule{}, mapErr("set backup schedule verify", err)
	}
	return backupScheduleFromRow(r), nil
}

// ClaimRetentionDeletes returns, locked for the caller's transaction, the
// schedule's succeeded backups its retention prunes at now: never the
// newest succeeded nor the newest verified one, nor one whose delete runs
// or ended after retryAfter.
func (s *Store) ClaimRetentionDeletes(ctx context.Context, scheduleID ID, now, retryAfter time.Time, limit int) ([]Backup, error) {
	rows, err := s.q.ClaimRetentionDeletes(ctx, dbsqlc.ClaimRetentionDeletesParams{
		BackupScheduleID: pgID(scheduleID), Now: now, RetryAfter: retryAfter, Lim: limitArg(limit)})
	if err != nil {
		return nil, mapErr("claim retention deletes", err)
	}
	return backupsFromRows(rows), nil
}

// RetentionSchedules lists the schedules of apps on serverIDs that have
// more than one succeeded backup.
func (s *Store) RetentionSchedules(ctx context.Context, serverIDs []ID) ([]BackupSchedule, error) {
	rows, err := s.q.ListRetentionSchedules(ctx, pgIDs(serverIDs))
	if err != nil {
		return nil, mapErr("list retention schedules", err)
	}
	return backupSchedulesFromRows(rows), nil
}
