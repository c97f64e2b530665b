package backups

// Schedules (issue 18 §3).
//
// A schedule is a cron expression in a time zone (read by the same parser
// as scheduled commands, deploys.ParseCron), a backup to make, and its
// retention. Every tick has a run key: the schedule and the tick's time
// (backups.scheduled_for, unique). Whoever runs a tick stores its backup
// under that key, so a tick runs once:
//
//   - The controller that holds the stream of the schedule's agent fires
//     the due tick (any controller, FOR UPDATE SKIP LOCKED on the schedule
//     row, next run moved in the same transaction). A schedule whose agent
//     is connected nowhere is not fired: its agent either runs the tick
//     itself from the schedule it holds (see held.go) or is down, and then
//     nothing could run the backup anyway. When the agent is back the
//     schedule is due and fires once, its next run counted from now:
//     missed ticks never turn into a burst of runs.
//   - A tick due while the schedule's previous run is unfinished is skipped
//     (backups_one_active_per_schedule_key) and the skip is in the
//     activity log.
//
// Retention: after a scheduled backup succeeded, and every RetentionEvery,
// the succeeded backups a schedule's rules no longer keep get a delete job
// on the server that made them (object first; the row goes when the agent
// reports the object deleted). The newest succeeded and the newest verified
// backup of the schedule are always kept. A failed delete stays on the row
// (delete_error) and is queued again once DeleteRetryAfter has passed.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/deploys"
	"github.com/berthhq/berth/controller/internal/store"
)

const (
	maxCronLen     = 256
	maxKeep        = 10000
	maxKeepDays    = 36500
	retentionBatch = 20
)

// ScheduleRequest declares a backup schedule.
type ScheduleRequest struct {
	App, Destination, Kind, Source, ConnectionEnv string
	Cron, Timezone                                string
	// Keep: the newest N succeeded backups; KeepDays: those younger than D
	// days. At least one; 0 is unset.
	Keep, KeepDays int
	// Verify: each new backup of the schedule is verified automatically.
	Verify bool
}

// ScheduleView is a schedule as callers show it.
type ScheduleView struct {
	store.BackupSchedule
	AppName         string
	DestinationName string
	// LastBackup: the schedule's newest backup, if any.
	LastBackup *store.Backup
}

// requireSchedules: changing a schedule needs admin. Its retention deletes
// backups (deleting one is admin), and disabling or removing it stops the
// backups someone counts on.
func requireSchedules(pr *auth.Principal) error {
	return require(pr, store.ScopeAdmin)
}

func checkRetention(keep, days int) error {
	if keep < 0 || keep > maxKeep {
		return fmt.Errorf("%w: --keep is 1-%d", ErrInvalid, maxKeep)
	}
	if days < 0 || days > maxKeepDays {
		return fmt.Errorf("%w: --keep-days is 1-%d", ErrInvalid, maxKeepDays)
	}
	if keep == 0 && days == 0 {
		return fmt.Errorf("%w: give --keep N and/or --keep-days D (a schedule that never prunes fills its destination)", ErrInvalid)
	}
	return nil
}

// parseCron wraps deploys' parser's error as this package's ErrInvalid.
func parseCron(expr, tz string) (func(time.Time) time.Time, error) {
	if len(expr) > maxCronLen {
		return nil, fmt.Errorf("%w: --cron is at most %d characters", ErrInvalid, maxCronLen)
	}
	sched, loc, err := deploys.ParseCron(expr, tz)
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), deploys.ErrInvalid.Error()+": ")
		return nil, fmt.Errorf("%w: %s", ErrInvalid, msg)
	}
	return func(now time.Time) time.Time { return deploys.NextCronRun(sched, loc, now) }, nil
}

func intPtr(n int) *int {
	if n == 0 {
		return nil
	}
	return &n
}

// AddSchedule declares a backup schedule (admin). Its first run is the
// first tick after now.
func (s *Service) AddSchedule(ctx context.Context, pr *auth.Principal, peer Peer, r ScheduleRequest) (ScheduleView, error) {
	if err := requireSchedules(pr); err != nil {
		return ScheduleView{}, err
	}
	k := store.BackupKind(r.Kind)
	if err := checkSource(k, r.Source); err != nil {
		return ScheduleView{}, err
	}
	if err := checkConnectionEnv(k, r.ConnectionEnv); err != nil {
		return ScheduleView{}, err
	}
	if err := checkRetention(r.Keep, r.KeepDays); err != nil {
		return ScheduleView{}, err
	}
	r.Cron, r.Timezone = strings.TrimSpace(r.Cron), strings.TrimSpace(r.Timezone)
	next, err := parseCron(r.Cron, r.Timezone)
	if err != nil {
		return ScheduleView{}, err
	}
	a, err := s.resolveApp(ctx, r.App)
	if err != nil {
		return ScheduleView{}, err
	}
	d, err := s.resolveDestination(ctx, r.Destination)
	if err != nil {
		return ScheduleView{}, err
	}
	at := next(s.cfg.Now())
	var sc store.BackupSchedule
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		var err error
		sc, err = tx.InsertBackupSchedule(ctx, store.NewBackupSchedule{AppID: a.ID, BackupScheduleSettings: store.BackupScheduleSettings{
			DestinationID: d.ID, Kind: k, Source: r.Source, Cron: r.Cron, Timezone: r.Timezone,
			RetentionCount: intPtr(r.Keep), RetentionDays: intPtr(r.KeepDays), Enabled: true, NextRunAt: &at,
		}, ConnectionEnv: r.ConnectionEnv, Verify: r.Verify})
		if err != nil {
			return err
		}
		s.activity(ctx, tx, pr, peer, kind.BackupScheduleAdded, "backup_schedule", sc.ID, a.Name, map[string]any{
			"destination": d.Name, "kind": r.Kind, "source": r.Source, "connection_env": r.ConnectionEnv,
			"cron": sc.Cron, "timezone": sc.Timezone, "keep": r.Keep, "keep_days": r.KeepDays, "verify": r.Verify,
		})
		return nil
	})
	if err != nil {
		return ScheduleView{}, err
	}
	s.heldChanged(ctx, a.ServerID)
	return ScheduleView{BackupSchedule: sc, AppName: a.Name, DestinationName: d.Name}, nil
}

func (s *Service) scheduleView(ctx context.Context, sc store.BackupSchedule) (ScheduleView, error) {
	v := ScheduleView{BackupSchedule: sc, DestinationName: s.DestinationName(ctx, sc.DestinationID)}
	a, err := s.st.App(ctx, sc.AppID)
	if err != nil {
		return ScheduleView{}, err
	}
	v.AppName = a.Name
	id := sc.ID
	last, err := s.st.ListBackups(ctx, store.BackupFilter{ScheduleID: &id, Limit: 1})
	if err != nil {
		return ScheduleView{}, err
	}
	if len(last) == 1 {
		v.LastBackup = &last[0]
	}
	return v, nil
}

// Schedules lists backup schedules, of one app or all (read).
func (s *Service) Schedules(ctx context.Context, pr *auth.Principal, app string) ([]ScheduleView, error) {
	if err := require(pr, store.ScopeRead); err != nil {
		return nil, err
	}
	f := store.BackupScheduleFilter{Limit: 1000}
	if app != "" {
		a, err := s.resolveApp(ctx, app)
		if err != nil {
			return nil, err
		}
		f.AppID = &a.ID
	}
	list, err := s.st.ListBackupSchedules(ctx, f)
	if err != nil {
		return nil, err
	}
	out := make([]ScheduleView, 0, len(list))
	for _, sc := range list {
		v, err := s.scheduleView(ctx, sc)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func (s *Service) loadSchedule(ctx context.Context, ref string) (store.BackupSchedule, error) {
	id, err := store.ParseID(strings.TrimSpace(ref))
	if err != nil {
		return store.BackupSchedule{}, fmt.Errorf("%w: %q is not a schedule id (a 26-character ULID)", ErrInvalid, truncate(ref, 40))
	}
	sc, err := s.st.BackupSchedule(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.BackupSchedule{}, fmt.Errorf("%w: no backup schedule %s", store.ErrNotFound, id)
	}
	return sc, err
}

// Schedule shows one schedule (read).
func (s *Service) Schedule(ctx context.Context, pr *auth.Principal, ref string) (ScheduleView, error) {
	if err := require(pr, store.ScopeRead); err != nil {
		return ScheduleView{}, err
	}
	sc, err := s.loadSchedule(ctx, ref)
	if err != nil {
		return ScheduleView{}, err
	}
	return s.scheduleView(ctx, sc)
}

// SetScheduleEnabled disables a schedule (no more ticks; an unfinished run
// ends on its own) or enables it again (its next run: the first tick after
// now, never a catch-up of the ticks it missed) (admin).
func (s *Service) SetScheduleEnabled(ctx context.Context, pr *auth.Principal, peer Peer, ref string, enabled bool) (ScheduleView, error) {
	if err := requireSchedules(pr); err != nil {
		return ScheduleView{}, err
	}
	sc, err := s.loadSchedule(ctx, ref)
	if err != nil {
		return ScheduleView{}, err
	}
	var nextAt *time.Time
	if enabled {
		next, err := parseCron(sc.Cron, sc.Timezone)
		if err != nil {
			return ScheduleView{}, err
		}
		at := next(s.cfg.Now())
		nextAt = &at
	}
	action := kind.BackupScheduleDisabled
	if enabled {
		action = kind.BackupScheduleEnabled
	}
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		var err error
		if sc, err = tx.SetBackupScheduleEnabled(ctx, sc.ID, enabled, nextAt); err != nil {
			return err
		}
		s.activity(ctx, tx, pr, peer, action, "backup_schedule", sc.ID, sc.Source, nil)
		return nil
	})
	if err != nil {
		return ScheduleView{}, err
	}
	if a, err := s.st.App(ctx, sc.AppID); err == nil {
		s.heldChanged(ctx, a.ServerID)
	}
	return s.scheduleView(ctx, sc)
}

// RemoveSchedule deletes a schedule (admin). Its backups stay (their
// schedule cleared), so nothing prunes them any more.
func (s *Service) RemoveSchedule(ctx context.Context, pr *auth.Principal, peer Peer, ref string) error {
	if err := requireSchedules(pr); err != nil {
		return err
	}
	sc, err := s.loadSchedule(ctx, ref)
	if err != nil {
		return err
	}
	a, aerr := s.st.App(ctx, sc.AppID)
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		if err := tx.DeleteBackupSchedule(ctx, sc.ID); err != nil {
			return err
		}
		s.activity(ctx, tx, pr, peer, kind.BackupScheduleRemoved, "backup_schedule", sc.ID, a.Name, map[string]any{
			"cron": sc.Cron, "kind": string(sc.Kind), "source": sc.Source})
		return nil
	})
	if err == nil && aerr == nil {
		s.heldChanged(ctx, a.ServerID)
	}
	return err
}

// fireSchedules enqueues the due ticks of the schedules whose agents are
// connected here (see the file comment).
func (s *Service) fireSchedules(ctx context.Context) {
	s.fireFor(ctx, s.fleet.Hub().Connected())
}

// fireFor enqueues the due ticks of the schedules of apps on servers and
// returns how many backups it queued.
func (s *Service) fireFor(ctx context.Context, servers []store.ID) int {
	if len(servers) == 0 {
		return 0
	}
	now := s.cfg.Now()
	type skip struct {
		sc     store.BackupSchedule
		prev   store.Backup
		app    string
		reason string
	}
	var (
		queued  int
		skipped []skip
	)
	err := s.st.InTx(ctx, func(tx *store.Store) error {
		queued, skipped = 0, skipped[:0]
		due, err := tx.ClaimDueBackupSchedules(ctx, now, servers, 50)
		if err != nil {
			return err
		}
		for _, sc := range due {
			tick := *sc.NextRunAt
			nextAt := now.Add(time.Hour) // a schedule that no longer parses is retried hourly
			next, perr := parseCron(sc.Cron, sc.Timezone)
			if perr == nil {
				nextAt = next(now)
			}
			if _, err := tx.SetBackupScheduleRun(ctx, sc.ID, now, nextAt); err != nil {
				return err
			}
			if perr != nil {
				s.log.Error("backup schedule no longer parses; skipped", "schedule_id", sc.ID.String(), "err", perr)
				continue
			}
			a, err := tx.App(ctx, sc.AppID)
			if err != nil {
				return err
			}
			key, err := tx.NewestBackupEncryptionKey(ctx)
			if errors.Is(err, store.ErrNotFound) {
				// The first backup ever: make the keyring's first key
				// (its own transaction, serialised by its lock).
				key, err = s.currentKey(ctx)
			}
			if err != nil {
				return err
			}
			b, err := tx.InsertScheduledBackup(ctx, store.ScheduledBackup{
				Schedule: sc, AppName: a.Name, ServerID: a.ServerID, ScheduledFor: tick,
				EncryptionKey: key.ID.String(), Timeout: s.cfg.Timeout,
			})
			switch {
			case err == nil:
				queued++
			case errors.Is(err, store.ErrRunActive):
				skipped = append(skipped, skip{sc, b, a.Name, fmt.Sprintf("the previous run %s was still %s", b.ID, b.Status)})
			case errors.Is(err, store.ErrRunExists):
				// The agent ran this tick already (its report came first).
			default:
				return err
			}
		}
		return nil
	})
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("fire backup schedules", "err", err)
		}
		return 0
	}
	for _, sk := range skipped {
		s.systemActivity(ctx, s.st, store.ActorSystem, "scheduler", kind.BackupScheduleRunSkipped, "backup_schedule", sk.sc.ID, sk.app,
			map[string]any{"reason": sk.reason, "previous": sk.prev.ID.String()})
	}
	if queued > 0 {
		s.notify(ctx, "dispatch")
	}
	return queued
}

// afterScheduledRun runs in the transaction that stored a backup's end: a
// succeeded backup of a schedule with verify gets its verify job, and
// retention gets a look soon.
func (s *Service) afterScheduledRun(ctx context.Context, tx *store.Store, b store.Backup) error {
	if b.ScheduleID == nil || b.Status != store.BackupSucceeded {
		return nil
	}
	s.retentionSoon()
	sc, err := tx.BackupSchedule(ctx, *b.ScheduleID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !sc.Verify) {
		return nil
	}
	if err != nil {
		return err
	}
	if b.ServerID == nil {
		return nil
	}
	t, err := tx.CreateBackupTask(ctx, store.CreateBackupTaskParams{
		Kind: store.TaskVerify, BackupID: &b.ID, DestinationID: b.DestinationID, ServerID: *b.ServerID,
		TriggeredBy: store.TriggerSchedule, TimeoutSeconds: int(s.cfg.Timeout / time.Second),
	})
	if err != nil {
		return err
	}
	s.systemActivity(ctx, tx, store.ActorSystem, "scheduler", kind.BackupVerifyQueued, "backup", b.ID, b.AppName,
		map[string]any{"task": t.ID.String(), "schedule": sc.ID.String()})
	return nil
}

func (s *Service) retentionSoon() {
	s.mu.Lock()
	s.pruneNow = true
	s.mu.Unlock()
	s.poke()
}

// pruneDue says whether retention should run now.
func (s *Service) pruneDue(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pruneNow || now.Sub(s.prunedAt) >= s.cfg.RetentionEvery {
		s.pruneNow, s.prunedAt = false, now
		return true
	}
	return false
}

// prune queues the delete jobs retention asks for, for the schedules of
// agents connected here.
func (s *Service) prune(ctx context.Context) {
	s.pruneFor(ctx, s.fleet.Hub().Connected())
}

// pruneFor applies the retention of the schedules of apps on servers and
// returns how many deletes it queued.
func (s *Service) pruneFor(ctx context.Context, servers []store.ID) int {
	if len(servers) == 0 {
		return 0
	}
	now := s.cfg.Now()
	scheds, err := s.st.RetentionSchedules(ctx, servers)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("list retention schedules", "err", err)
		}
		return 0
	}
	total := 0
	for _, sc := range scheds {
		n := 0
		err := s.st.InTx(ctx, func(tx *store.Store) error {
			n = 0
			bs, err := tx.ClaimRetentionDeletes(ctx, sc.ID, now, now.Add(-s.cfg.DeleteRetryAfter), retentionBatch)
			if err != nil {
				return err
			}
			for _, b := range bs {
				if b.ServerID == nil {
					if err := tx.RecordBackupDeleteError(ctx, b.ID, "retention: the server that made this backup was removed; its object cannot be reached to delete it"); err != nil {
						return err
					}
					continue
				}
				if _, err := tx.RequestBackupDelete(ctx, b.ID); err != nil {
					return err
				}
				t, err := tx.CreateBackupTask(ctx, store.CreateBackupTaskParams{
					Kind: store.TaskDelete, BackupID: &b.ID, DestinationID: b.DestinationID, ServerID: *b.ServerID,
					TriggeredBy: store.TriggerSchedule, TimeoutSeconds: int(s.cfg.Timeout / time.Second),
				})
				if err != nil {
					return err
				}
				s.systemActivity(ctx, tx, store.ActorSystem, "scheduler", kind.BackupRetentionDelete, "backup", b.ID, b.AppName, map[string]any{
					"task": t.ID.String(), "schedule": sc.ID.String(), "keep": deref0(sc.RetentionCount), "keep_days": deref0(sc.RetentionDays),
					"retry": b.DeleteError != nil,
				})
				n++
			}
			return nil
		})
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("retention", "schedule_id", sc.ID.String(), "err", err)
			}
			continue
		}
		total += n
	}
	if total > 0 {
		s.notify(ctx, "dispatch")
	}
	return total
}

func deref0(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}
