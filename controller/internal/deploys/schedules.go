package deploys

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
)

const (
	maxScheduleName = 63
	maxCron         = 256
	maxTimezone     = 64
	maxRunsListed   = store.ScheduleRunsToKeep
	outputTailBytes = 4 << 10
)

// ScheduleParams declares (or with Replace changes) a scheduled command.
type ScheduleParams struct {
	App, Name, Cron, Command, Timezone string
	Replace                            bool
}

// ScheduleView is a scheduled command and its last run.
type ScheduleView struct {
	ID        store.ID
	Name      string
	Cron      string
	Command   string
	Timezone  string
	NextRunAt time.Time
	LastRun   *store.Deployment
	CreatedAt time.Time
	UpdatedAt time.Time
}

// ScheduleRun is one run of a schedule: its job, whether it was skipped
// (due while the previous run was unfinished) and its output's tail.
type ScheduleRun struct {
	Job        store.Deployment
	Skipped    bool
	OutputTail string
}

// cronParser reads five fields (minute hour day-of-month month
// day-of-week) or a descriptor (@hourly, @daily, @every 10m, ...).
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// parseSchedule validates a cron expression and time zone.
func parseSchedule(expr, tz string) (cron.Schedule, *time.Location, error) {
	expr = strings.TrimSpace(expr)
	if expr == "" || len(expr) > maxCron {
		return nil, nil, fmt.Errorf("%w: --cron is required (five fields or a descriptor such as @hourly, at most %d characters)", ErrInvalid, maxCron)
	}
	if strings.Contains(expr, "TZ=") {
		return nil, nil, fmt.Errorf("%w: give the time zone with --timezone, not in --cron", ErrInvalid)
	}
	sched, err := cronParser.Parse(expr)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: --cron %q: %v (five fields: minute hour day-of-month month day-of-week, or @hourly, @daily, @every 10m ...)",
			ErrInvalid, truncate(expr, 60), err)
	}
	if len(tz) > maxTimezone || tz == "Local" {
		return nil, nil, fmt.Errorf("%w: --timezone is an IANA zone name such as Europe/Berlin", ErrInvalid)
	}
	loc := time.UTC
	if tz != "" {
		if loc, err = time.LoadLocation(tz); err != nil {
			return nil, nil, fmt.Errorf("%w: --timezone %q is not an IANA zone name (such as Europe/Berlin)", ErrInvalid, truncate(tz, 64))
		}
	}
	// A schedule that never fires (such as 30 2 31 2 *) is refused.
	if sched.Next(time.Now().In(loc)).IsZero() {
		return nil, nil, fmt.Errorf("%w: --cron %q never runs", ErrInvalid, truncate(expr, 60))
	}
	return sched, loc, nil
}

// nextRun is the first time after now the schedule fires.
func nextRun(sched cron.Schedule, loc *time.Location, now time.Time) time.Time {
	return sched.Next(now.In(loc)).UTC()
}

// AddSchedule declares a scheduled command (Replace: change the existing
// one; its runs stay).
func (s *Service) AddSchedule(ctx context.Context, pr *auth.Principal, peer Peer, p ScheduleParams) (ScheduleView, error) {
	if err := requireDeploy(pr, "scheduled commands"); err != nil {
		return ScheduleView{}, err
	}
	p.Name, p.Timezone = strings.TrimSpace(p.Name), strings.TrimSpace(p.Timezone)
	if len(p.Name) > maxScheduleName || !processNameRE.MatchString(p.Name) {
		return ScheduleView{}, fmt.Errorf("%w: a schedule name is a lowercase slug (a-z, 0-9, -; starts with a letter; at most %d characters)", ErrInvalid, maxScheduleName)
	}
	if err := checkCommand(p.Command); err != nil {
		return ScheduleView{}, err
	}
	sched, loc, err := parseSchedule(p.Cron, p.Timezone)
	if err != nil {
		return ScheduleView{}, err
	}
	a, err := s.ResolveApp(ctx, p.App)
	if err != nil {
		return ScheduleView{}, err
	}
	_, gerr := s.st.AppScheduleByName(ctx, a.ID, p.Name)
	existed := gerr == nil
	if gerr != nil && !errors.Is(gerr, store.ErrNotFound) {
		return ScheduleView{}, gerr
	}
	if existed && !p.Replace {
		return ScheduleView{}, fmt.Errorf("%w: app %s already has a schedule %s (give replace / --replace to change it)", store.ErrConflict, a.Name, p.Name)
	}
	sc, err := s.st.PutAppSchedule(ctx, store.AppSchedule{
		AppID: a.ID, Name: p.Name, Cron: strings.TrimSpace(p.Cron), Command: p.Command, Timezone: p.Timezone,
		NextRunAt: nextRun(sched, loc, s.cfg.Now()),
	}, p.Replace)
	if errors.Is(err, store.ErrConflict) {
		return ScheduleView{}, fmt.Errorf("%w: app %s already has a schedule %s (give replace / --replace to change it)", store.ErrConflict, a.Name, p.Name)
	}
	if err != nil {
		return ScheduleView{}, err
	}
	action := kind.AppScheduleAdded
	if existed {
		action = kind.AppScheduleReplaced
	}
	s.activity(ctx, pr, peer, action, "app", a.ID, a.Name, map[string]any{"schedule": map[string]any{
		"name": sc.Name, "cron": sc.Cron, "command": sc.Command, "timezone": sc.Timezone}})
	v := scheduleView(sc)
	if last, err := s.st.LastScheduleRuns(ctx, a.ID); err == nil {
		if d, ok := last[sc.ID]; ok {
			v.LastRun = &d
		}
	}
	return v, nil
}

func scheduleView(sc store.AppSchedule) ScheduleView {
	return ScheduleView{ID: sc.ID, Name: sc.Name, Cron: sc.Cron, Command: sc.Command, Timezone: sc.Timezone,
		NextRunAt: sc.NextRunAt, CreatedAt: sc.CreatedAt, UpdatedAt: sc.UpdatedAt}
}

// ListSchedules lists an app's scheduled commands.
func (s *Service) ListSchedules(ctx context.Context, pr *auth.Principal, app string) ([]ScheduleView, error) {
	if err := require(pr, store.ScopeRead); err != nil {
		return nil, err
	}
	a, err := s.ResolveApp(ctx, app)
	if err != nil {
		return nil, err
	}
	return s.scheduleViews(ctx, a)
}

func (s *Service) scheduleViews(ctx context.Context, a store.App) ([]ScheduleView, error) {
	list, err := s.st.AppSchedules(ctx, a.ID)
	if err != nil {
		return nil, err
	}
	last, err := s.st.LastScheduleRuns(ctx, a.ID)
	if err != nil {
		return nil, err
	}
	out := make([]ScheduleView, len(list))
	for i, sc := range list {
		out[i] = scheduleView(sc)
		if d, ok := last[sc.ID]; ok {
			out[i].LastRun = &d
		}
	}
	return out, nil
}

// RemoveSchedule removes a scheduled command: no more runs (an unfinished
// one ends on its own); its past runs stay as history.
func (s *Service) RemoveSchedule(ctx context.Context, pr *auth.Principal, peer Peer, app, name string) error {
	if err := requireDeploy(pr, "scheduled commands"); err != nil {
		return err
	}
	if len(name) > maxScheduleName || !processNameRE.MatchString(name) {
		return fmt.Errorf("%w: a schedule name is a lowercase slug", ErrInvalid)
	}
	a, err := s.ResolveApp(ctx, app)
	if err != nil {
		return err
	}
	if err := s.st.DeleteAppSchedule(ctx, a.ID, name); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("app %s has no schedule %s: %w", a.Name, name, store.ErrNotFound)
		}
		return err
	}
	s.activity(ctx, pr, peer, kind.AppScheduleRemoved, "app", a.ID, a.Name, map[string]any{"schedule": name})
	return nil
}

// ScheduleRuns lists a schedule's runs, newest first (limit 0: 20; the
// last 100 are kept).
func (s *Service) ScheduleRuns(ctx context.Context, pr *auth.Principal, app, name string, limit int) ([]ScheduleRun, error) {
	if err := require(pr, store.ScopeRead); err != nil {
		return nil, err
	}
	if limit < 0 || limit > maxRunsListed {
		return nil, fmt.Errorf("%w: limit is 1-%d", ErrInvalid, maxRunsListed)
	}
	if limit == 0 {
		limit = 20
	}
	a, err := s.ResolveApp(ctx, app)
	if err != nil {
		return nil, err
	}
	sc, err := s.st.AppScheduleByName(ctx, a.ID, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("app %s has no schedule %s: %w", a.Name, truncate(name, 63), store.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	runs, err := s.st.ScheduleRuns(ctx, sc.ID, limit)
	if err != nil {
		return nil, err
	}
	out := make([]ScheduleRun, len(runs))
	for i, d := range runs {
		out[i] = ScheduleRun{Job: d, Skipped: d.Skipped}
		if d.LogBytes > 0 {
			tail, err := s.st.DeploymentLogTail(ctx, d.ID, outputTailBytes)
			if err != nil {
				return nil, err
			}
			out[i].OutputTail = string(tail)
		}
	}
	return out, nil
}

// fireSchedules enqueues the runs that are due. Any controller may do it:
// due schedules are claimed with FOR UPDATE SKIP LOCKED and their next run
// moved in the same transaction. After downtime a schedule runs once, and
// its next run counts from now: never a burst of catch-up runs. A run due
// while the schedule's previous one is unfinished is recorded as skipped.
func (s *Service) fireSchedules(ctx context.Context) {
	now := s.cfg.Now()
	type fired struct {
		d       store.Deployment
		appName string
		skipped bool
	}
	var done []fired
	err := s.st.InTx(ctx, func(tx *store.Store) error {
		done = done[:0]
		due, err := tx.ClaimDueAppSchedules(ctx, now, 50)
		if err != nil {
			return err
		}
		for _, sc := range due {
			next := now.Add(time.Hour) // a schedule that no longer parses is retried hourly
			sched, loc, perr := parseSchedule(sc.Cron, sc.Timezone)
			if perr == nil {
				next = nextRun(sched, loc, now)
			}
			if err := tx.SetAppScheduleNextRun(ctx, sc.ID, next); err != nil {
				return err
			}
			if perr != nil {
				s.log.Error("schedule no longer parses; skipped", "schedule_id", sc.ID.String(), "err", perr)
				continue
			}
			a, err := tx.App(ctx, sc.AppID)
			if err != nil {
				return err
			}
			if prev, err := tx.UnfinishedScheduleRun(ctx, sc.ID); err == nil {
				d, err := tx.CreateSkippedScheduleRun(ctx, sc, fmt.Sprintf("the previous run %s was still %s", prev.ID, prev.Status))
				if err != nil {
					return err
				}
				done = append(done, fired{d, a.Name, true})
				continue
			} else if !errors.Is(err, store.ErrNotFound) {
				return err
			}
			if a.CurrentDeploymentID == nil {
				// Nothing deployed: the command has no release to run in.
				d, err := tx.CreateSkippedScheduleRun(ctx, sc, "the app has no current release yet (deploy it first)")
				if err != nil {
					return err
				}
				done = append(done, fired{d, a.Name, true})
				continue
			}
			env := store.EnvironmentProduction
			if cur, err := tx.Deployment(ctx, *a.CurrentDeploymentID); err == nil {
				env = cur.Environment
			}
			name, cmd, id := sc.Name, sc.Command, sc.ID
			d, err := tx.CreateDeployment(ctx, store.CreateDeploymentParams{
				AppID: a.ID, TriggeredBy: store.TriggerSchedule, Kind: store.JobSchedule, Environment: env,
				ScheduleID: &id, ScheduleName: &name, ScheduleCommand: &cmd,
			})
			if err != nil {
				return err
			}
			done = append(done, fired{d, a.Name, false})
		}
		return nil
	})
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("fire schedules", "err", err)
		}
		return
	}
	// A run is not a change: its row is its record. The activity log gets
	// the skipped ones (and, from finish, the runs that did not succeed),
	// so a schedule every minute does not bury the changes.
	for _, f := range done {
		if f.skipped {
			s.systemActivity(ctx, store.ActorSystem, "scheduler", kind.ScheduleRunSkipped, f.d, f.appName,
				map[string]any{"schedule": deref0(f.d.ScheduleName), "reason": deref0(f.d.SkipReason)})
		}
	}
	if len(done) > 0 {
		s.poke()
		s.notify(ctx, "dispatch")
	}
}
