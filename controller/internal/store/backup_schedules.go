package store

import (
	"context"
	"time"

	"github.com/berthhq/berth/gen/dbsqlc"
)

// DefaultBackupTimezone is the zone a schedule's cron is read in when none
// is given.
const DefaultBackupTimezone = "UTC"

// BackupScheduleSettings is what CreateBackupSchedule takes and
// UpdateBackupSchedule replaces. Cron and Timezone are validated by the
// caller; NextRunAt must be set while Enabled.
type BackupScheduleSettings struct {
	DestinationID ID
	Kind          BackupKind
	Source        string
	Cron          string // five fields, e.g. "0 3 * * *"
	Timezone      string // IANA zone; "" is UTC
	// At least one retention rule: keep the newest RetentionCount
	// succeeded backups and/or those younger than RetentionDays.
	RetentionCount *int
	RetentionDays  *int
	Enabled        bool
	NextRunAt      *time.Time
}

// BackupSchedule is a cron schedule for an app's backups, with retention.
type BackupSchedule struct {
	ID    ID
	AppID ID
	BackupScheduleSettings
	LastRunAt *time.Time
	// ConnectionEnv: as Backup's; Verify: each new backup is verified.
	ConnectionEnv *string
	Verify        bool
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

func backupScheduleFromRow(r dbsqlc.BackupSchedule) BackupSchedule {
	return BackupSchedule{
		ID: fromPG(r.ID), AppID: fromPG(r.AppID),
		BackupScheduleSettings: BackupScheduleSettings{
			DestinationID: fromPG(r.BackupDestinationID), Kind: BackupKind(r.Kind), Source: r.Source, Cron: r.Cron,
			Timezone: r.Timezone, RetentionCount: ptrInt(r.RetentionCount), RetentionDays: ptrInt(r.RetentionDays),
			Enabled: r.Enabled, NextRunAt: r.NextRunAt,
		},
		LastRunAt: r.LastRunAt, ConnectionEnv: r.ConnectionEnv, Verify: r.Verify, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
	}
}

func backupSchedulesFromRows(rows []dbsqlc.BackupSchedule) []BackupSchedule {
	out := make([]BackupSchedule, len(rows))
	for i, r := range rows {
		out[i] = backupScheduleFromRow(r)
	}
	return out
}

// CreateBackupScheduleParams describes a new schedule.
type CreateBackupScheduleParams struct {
	ID    ID
	AppID ID
	BackupScheduleSettings
}

// CreateBackupSchedule stores a schedule. ErrInvalid without a retention
// rule, or enabled without NextRunAt.
func (s *Store) CreateBackupSchedule(ctx context.Context, p CreateBackupScheduleParams) (BackupSchedule, error) {
	if p.ID == (ID{}) {
		p.ID = NewID()
	}
	if p.Timezone == "" {
		p.Timezone = DefaultBackupTimezone
	}
	r, err := s.q.CreateBackupSchedule(ctx, dbsqlc.CreateBackupScheduleParams{
		ID: pgID(p.ID), AppID: pgID(p.AppID), BackupDestinationID: pgID(p.DestinationID), Kind: string(p.Kind),
		Source: p.Source, Cron: p.Cron, Timezone: p.Timezone, RetentionCount: ptrInt32(p.RetentionCount),
		RetentionDays: ptrInt32(p.RetentionDays), Enabled: p.Enabled, NextRunAt: p.NextRunAt,
	})
	if err != nil {
		return BackupSchedule{}, mapErr("create backup schedule", err)
	}
	return backupScheduleFromRow(r), nil
}

// BackupSchedule returns a schedule by id.
func (s *Store) BackupSchedule(ctx context.Context, id ID) (BackupSchedule, error) {
	r, err := s.q.GetBackupSchedule(ctx, pgID(id))
	if err != nil {
		return BackupSchedule{}, mapErr("get backup schedule", err)
	}
	return backupScheduleFromRow(r), nil
}

// BackupScheduleFilter selects and pages schedules. Before is the last id
// of the previous page; Limit 0 is DefaultPageSize.
type BackupScheduleFilter struct {
	AppID         *ID
	DestinationID *ID
	Enabled       *bool
	Before        *ID
	Limit         int
}

// ListBackupSchedules lists schedules, newest first.
func (s *Store) ListBackupSchedules(ctx context.Context, f BackupScheduleFilter) ([]BackupSchedule, error) {
	rows, err := s.q.ListBackupSchedules(ctx, dbsqlc.ListBackupSchedulesParams{
		AppID: pgOptID(f.AppID), BackupDestinationID: pgOptID(f.DestinationID), Enabled: f.Enabled,
		Before: pgOptID(f.Before), Lim: limitArg(f.Limit),
	})
	if err != nil {
		return nil, mapErr("list backup schedules", err)
	}
	return backupSchedulesFromRows(rows), nil
}

// DueBackupSchedules returns up to limit enabled schedules whose next run
// is at or before now, earliest first, locked FOR UPDATE SKIP LOCKED: call
// it inside InTx, enqueue each backup and move its next run there, so two
// controllers never run the same tick.
func (s *Store) DueBackupSchedules(ctx context.Context, now time.Time, limit int) ([]BackupSchedule, error) {
	rows, err := s.q.ListDueBackupSchedules(ctx, dbsqlc.ListDueBackupSchedulesParams{Now: now, Lim: limitArg(limit)})
	if err != nil {
		return nil, mapErr("list due backup schedules", err)
	}
	return backupSchedulesFromRows(rows), nil
}

// UpdateBackupSchedule replaces a schedule's settings (Timezone "" is UTC).
func (s *Store) UpdateBackupSchedule(ctx context.Context, id ID, p BackupScheduleSettings) (BackupSchedule, error) {
	if p.Timezone == "" {
		p.Timezone = DefaultBackupTimezone
	}
	r, err := s.q.UpdateBackupSchedule(ctx, dbsqlc.UpdateBackupScheduleParams{
		ID: pgID(id), BackupDestinationID: pgID(p.DestinationID), Kind: string(p.Kind), Source: p.Source, Cron: p.Cron,
		Timezone: p.Timezone, RetentionCount: ptrInt32(p.RetentionCount), RetentionDays: ptrInt32(p.RetentionDays),
		Enabled: p.Enabled, NextRunAt: p.NextRunAt,
	})
	if err != nil {
		return BackupSchedule{}, mapErr("update backup schedule", err)
	}
	return backupScheduleFromRow(r), nil
}

// SetBackupScheduleRun records a tick: when it ran and when it runs next.
func (s *Store) SetBackupScheduleRun(ctx context.Context, id ID, lastRunAt, nextRunAt time.Time) (BackupSchedule, error) {
	r, err := s.q.SetBackupScheduleRun(ctx, dbsqlc.SetBackupScheduleRunParams{ID: pgID(id), LastRunAt: &lastRunAt, NextRunAt: &nextRunAt})
	if err != nil {
		return BackupSchedule{}, mapErr("set backup schedule run", err)
	}
	return backupScheduleFromRow(r), nil
}

// SetBackupScheduleEnabled enables a schedule (nextRunAt required) or
// disables it (nextRunAt may be nil).
func (s *Store) SetBackupScheduleEnabled(ctx context.Context, id ID, enabled bool, nextRunAt *time.Time) (BackupSchedule, error) {
	r, err := s.q.SetBackupScheduleEnabled(ctx, dbsqlc.SetBackupScheduleEnabledParams{ID: pgID(id), Enabled: enabled, NextRunAt: nextRunAt})
	if err != nil {
		return BackupSchedule{}, mapErr("set backup schedule enabled", err)
	}
	return backupScheduleFromRow(r), nil
}

// DeleteBackupSchedule deletes a schedule; its backups stay (schedule
// cleared).
func (s *Store) DeleteBackupSchedule(ctx context.Context, id ID) error {
	n, err := s.q.DeleteBackupSchedule(ctx, pgID(id))
	return affected("delete backup schedule", n, err)
}
