package store

import (
	"context"
	"errors"
	"time"

	"github.com/berthhq/berth/gen/dbsqlc"
)

// AppSchedule is a scheduled command of an app.
type AppSchedule struct {
	ID        ID
	AppID     ID
	Name      string
	Cron      string
	Command   string
	Timezone  string // IANA name; "" is UTC
	NextRunAt time.Time
	CreatedAt time.Time
	UpdatedAt time.Time
}

func appScheduleFromRow(r dbsqlc.AppSchedule) AppSchedule {
	return AppSchedule{
		ID: fromPG(r.ID), AppID: fromPG(r.AppID), Name: r.Name, Cron: r.Cron, Command: r.Command,
		Timezone: r.Timezone, NextRunAt: r.NextRunAt, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
	}
}

// PutAppSchedule declares a schedule (replace: change the existing one of
// that name, keeping its id and runs). ErrConflict: one of that name
// exists and replace is false.
func (s *Store) PutAppSchedule(ctx context.Context, p AppSchedule, replace bool) (AppSchedule, error) {
	if replace {
		r, err := s.q.ReplaceAppSchedule(ctx, dbsqlc.ReplaceAppScheduleParams{
			AppID: pgID(p.AppID), Name: p.Name, Cron: p.Cron, Command: p.Command, Timezone: p.Timezone, NextRunAt: p.NextRunAt,
		})
		if err == nil {
			return appScheduleFromRow(r), nil
		}
		if !errors.Is(mapErr("", err), ErrNotFound) {
			return AppSchedule{}, mapErr("replace app schedule", err)
		}
	}
	if p.ID == (ID{}) {
		p.ID = NewID()
	}
	r, err := s.q.CreateAppSchedule(ctx, dbsqlc.CreateAppScheduleParams{
		ID: pgID(p.ID), AppID: pgID(p.AppID), Name: p.Name, Cron: p.Cron, Command: p.Command, Timezone: p.Timezone, NextRunAt: p.NextRunAt,
	})
	if err != nil {
		return AppSchedule{}, mapErr("create app schedule", err)
	}
	return appScheduleFromRow(r), nil
}

// AppScheduleByName returns an app's schedule.
func (s *Store) AppScheduleByName(ctx context.Context, appID ID, name string) (AppSchedule, error) {
	r, err := s.q.GetAppScheduleByName(ctx, dbsqlc.GetAppScheduleByNameParams{AppID: pgID(appID), Name: name})
	if err != nil {
		return AppSchedule{}, mapErr("get app schedule", err)
	}
	return appScheduleFromRow(r), nil
}

// AppSchedules lists an app's schedules by name.
func (s *Store) AppSchedules(ctx context.Context, appID ID) ([]AppSchedule, error) {
	rows, err := s.q.ListAppSchedules(ctx, pgID(appID))
	if err != nil {
		return nil, mapErr("list app schedules", err)
	}
	return schedulesFromRows(rows), nil
}

func schedulesFromRows(rows []dbsqlc.AppSchedule) []AppSchedule {
	out := make([]AppSchedule, len(rows))
	for i, r := range rows {
		out[i] = appScheduleFromRow(r)
	}
	return out
}

// DeleteAppSchedule removes a schedule (its runs stay, without the link);
// ErrNotFound when there is none.
func (s *Store) DeleteAppSchedule(ctx context.Context, appID ID, name string) error {
	n, err := s.q.DeleteAppSchedule(ctx, dbsqlc.DeleteAppScheduleParams{AppID: pgID(appID), Name: name})
	return affected("delete app schedule", n, err)
}

// DeleteAppSchedules removes every schedule of an app.
func (s *Store) DeleteAppSchedules(ctx context.Context, appID ID) error {
	_, err := s.q.DeleteAppSchedules(ctx, pgID(appID))
	return mapErr("delete app schedules", err)
}

// ClaimDueAppSchedules returns up to limit schedules of live apps due at
// now, locked until the transaction ends (call inside InTx; other
// controllers skip them): enqueue each run and move next_run_at there.
func (s *Store) ClaimDueAppSchedules(ctx context.Context, now time.Time, limit int) ([]AppSchedule, error) {
	rows, err := s.q.ClaimDueAppSchedules(ctx, dbsqlc.ClaimDueAppSchedulesParams{Now: now, Lim: limitArg(limit)})
	if err != nil {
		return nil, mapErr("claim due app schedules", err)
	}
	return schedulesFromRows(rows), nil
}

// SetAppScheduleNextRun moves a schedule's next run.
func (s *Store) SetAppScheduleNextRun(ctx context.Context, id ID, next time.Time) error {
	return mapErr("set app schedule next run", s.q.SetAppScheduleNextRun(ctx, dbsqlc.SetAppScheduleNextRunParams{ID: pgID(id), NextRunAt: next}))
}

// UnfinishedScheduleRun returns the schedule's unfinished run
// (ErrNotFound: none).
func (s *Store) UnfinishedScheduleRun(ctx context.Context, scheduleID ID) (Deployment, error) {
	r, err := s.q.UnfinishedScheduleRun(ctx, pgID(scheduleID))
	if err != nil {
		return Deployment{}, mapErr("unfinished schedule run", err)
	}
	return deploymentFromRow(r), nil
}

// CreateSkippedScheduleRun records a run that was due while the previous
// one was unfinished: canceled at once, skipped, with the reason.
func (s *Store) CreateSkippedScheduleRun(ctx context.Context, sc AppSchedule, reason string) (Deployment, error) {
	r, err := s.q.CreateSkippedScheduleRun(ctx, dbsqlc.CreateSkippedScheduleRunParams{
		ID: pgID(NewID()), AppID: pgID(sc.AppID), ScheduleID: pgID(sc.ID), ScheduleName: sc.Name,
		ScheduleCommand: sc.Command, SkipReason: reason,
	})
	if err != nil {
		return Deployment{}, mapErr("create skipped schedule run", err)
	}
	return deploymentFromRow(r), nil
}

// ScheduleRuns lists a schedule's runs, newest first.
func (s *Store) ScheduleRuns(ctx context.Context, scheduleID ID, limit int) ([]Deployment, error) {
	rows, err := s.q.ListScheduleRuns(ctx, dbsqlc.ListScheduleRunsParams{ScheduleID: pgID(scheduleID), Lim: limitArg(limit)})
	if err != nil {
		return nil, mapErr("list schedule runs", err)
	}
	return deploymentsFromRows(rows), nil
}

// LastScheduleRuns returns the newest run of each of an app's schedules,
// by schedule id.
func (s *Store) LastScheduleRuns(ctx context.Context, appID ID) (map[ID]Deployment, error) {
	rows, err := s.q.LastScheduleRuns(ctx, pgID(appID))
	if err != nil {
		return nil, mapErr("last schedule runs", err)
	}
	out := make(map[ID]Deployment, len(rows))
	for _, r := range rows {
		d := deploymentFromRow(r)
		if d.ScheduleID != nil {
			out[*d.ScheduleID] = d
		}
	}
	return out, nil
}

// ScheduleRunsToKeep is how many runs of each schedule retention keeps.
const ScheduleRunsToKeep = 100

// PruneScheduleRuns deletes all but the newest keep finished runs of each
// schedule and returns how many it deleted.
func (s *Store) PruneScheduleRuns(ctx context.Context, keep int) (int64, error) {
	n, err := s.q.PruneScheduleRuns(ctx, int32(keep))
	return n, mapErr("prune schedule runs", err)
}
