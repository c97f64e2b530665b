// Package maintenance runs the controller's scheduled housekeeping: creating
// server_metrics partitions ahead of time and the seed's retention jobs.
//
// Only one controller runs them when several share a database: the runner
// holds a session-level advisory lock on a dedicated connection while it is
// leader, and loses leadership with that connection (a PostgreSQL restart, a
// cut link). Every job is idempotent, so a job interrupted by a crash simply
// runs again; maintenance_runs records when each last finished so a weekly job
// stays weekly across restarts.
package maintenance

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/berthhq/berth/controller/internal/store"
)

// leaderLockKey is the advisory lock that elects the maintenance leader.
const leaderLockKey = 0x6265727468_01 // "berth" + 1

const (
	day  = 24 * time.Hour
	week = 7 * day
)

// Job is one scheduled, idempotent task.
type Job struct {
	Name  string
	Every time.Duration
	// Run does the work as of now and reports how many rows or partitions it
	// touched.
	Run func(ctx context.Context, st *store.Store, now time.Time) (int64, error)
}

// Retention periods from the seed's cleanup table.
const (
	MetricsRetention        = 7 * day
	LoginAttemptsRetention  = 30 * day
	SecurityEventsRetention = 90 * day
	NotificationsRetention  = 30 * day
	ActivityLogRetention    = 90 * day
	// PartitionsAhead is how many future days of metrics partitions exist.
	PartitionsAhead = 7
)

// Jobs is the controller's schedule.
func Jobs() []Job {
	return []Job{
		{Name: "metrics_partitions_create", Every: time.Hour, Run: EnsureMetricsPartitions},
		{Name: "metrics_retention", Every: day, Run: DropOldMetrics},
		{Name: "login_attempts_retention", Every: week, Run: deleteOlderThan(store.RetainLoginAttempts, LoginAttemptsRetention)},
		{Name: "security_events_retention", Every: week, Run: deleteOlderThan(store.RetainSecurityEvents, SecurityEventsRetention)},
		{Name: "notifications_retention", Every: week, Run: deleteOlderThan(store.RetainNotifications, NotificationsRetention)},
		{Name: "activity_log_retention", Every: week, Run: deleteOlderThan(store.RetainActivityLog, ActivityLogRetention)},
		{Name: "schedule_runs_retention", Every: time.Hour, Run: PruneScheduleRuns},
	}
}

// PruneScheduleRuns keeps the last store.ScheduleRunsToKeep runs of each
// scheduled command (a schedule every minute makes 1440 runs a day).
func PruneScheduleRuns(ctx context.Context, st *store.Store, _ time.Time) (int64, error) {
	return st.PruneScheduleRuns(ctx, store.ScheduleRunsToKeep)
}

// utcDay truncates t to midnight UTC: partitions are whole UTC days.
func utcDay(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// EnsureMetricsPartitions creates the daily partitions from yesterday to
// PartitionsAhead days ahead; existing ones are left alone.
func EnsureMetricsPartitions(ctx context.Context, st *store.Store, now time.Time) (int64, error) {
	n, err := st.EnsureMetricsPartitions(ctx, utcDay(now).Add(-day), PartitionsAhead+2)
	return int64(n), err
}

// DropOldMetrics drops whole daily partitions older than MetricsRetention:
// a partition drop frees the space at once, where DELETE would leave dead
// rows for vacuum.
func DropOldMetrics(ctx context.Context, st *store.Store, now time.Time) (int64, error) {
	n, err := st.DropMetricsPartitionsBefore(ctx, utcDay(now).Add(-MetricsRetention))
	return int64(n), err
}

// deleteBatch bounds how many rows one DELETE touches, so retention never
// holds long locks or bloats one transaction.
const deleteBatch = 5000

func deleteOlderThan(t store.RetentionTable, age time.Duration) func(context.Context, *store.Store, time.Time) (int64, error) {
	return func(ctx context.Context, st *store.Store, now time.Time) (int64, error) {
		cutoff := now.Add(-age)
		var total int64
		for {
			n, err := st.DeleteOlderThan(ctx, t, cutoff, deleteBatch)
			total += n
			if err != nil || n < deleteBatch {
				return total, err
			}
		}
	}
}

// Runner schedules Jobs on the elected leader.
type Runner struct {
	st   *store.Store
	log  *slog.Logger
	jobs []Job
	now  func() time.Time
	tick time.Duration
}

// New returns a runner for the standard schedule.
func New(st *store.Store, log *slog.Logger) *Runner {
	return &Runner{st: st, log: log.With("component", "maintenance"), jobs: Jobs(), now: time.Now, tick: time.Minute}
}

// WithJobs adds jobs owned by other services (session sweeps, say) to the
// schedule; they run on the leader like the rest.
func (r *Runner) WithJobs(jobs ...Job) *Runner {
	r.jobs = append(r.jobs, jobs...)
	return r
}

// WithClock makes the runner read time from now (tests).
func (r *Runner) WithClock(now func() time.Time) *Runner {
	r.now = now
	return r
}

// Run loops until ctx ends. Every controller creates the partitions it needs
// right away (idempotent) so ingest never waits for an election.
func (r *Runner) Run(ctx context.Context) {
	if _, err := EnsureMetricsPartitions(ctx, r.st, r.now()); err != nil && ctx.Err() == nil {
		r.log.Error("initial partition check failed", "err", err)
	}
	var leader *pgxpool.Conn
	defer func() {
		if leader != nil {
			leader.Release()
		}
	}()
	t := time.NewTicker(r.tick)
	defer t.Stop()
	for {
		leader = r.lead(ctx, leader)
		if leader != nil {
			r.RunDue(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// lead keeps or tries to take leadership and returns the lock's connection,
// or nil when another controller leads.
// Lead keeps or takes leadership (see lead); exported for tests that
// check only one of several controllers leads.
func (r *Runner) Lead(ctx context.Context, conn *pgxpool.Conn) *pgxpool.Conn {
	return r.lead(ctx, conn)
}

func (r *Runner) lead(ctx context.Context, conn *pgxpool.Conn) *pgxpool.Conn {
	if conn != nil {
		if err := conn.Ping(ctx); err == nil {
			return conn
		}
		// The session, and with it the lock, is gone. Do not return the
		// connection to the pool.
		_ = conn.Hijack().Close(context.Background())
		r.log.Warn("lost maintenance leadership")
	}
	c, err := r.st.Pool().Acquire(ctx)
	if err != nil {
		return nil
	}
	var got bool
	if err := c.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", int64(leaderLockKey)).Scan(&got); err != nil || !got {
		c.Release()
		return nil
	}
	r.log.Info("maintenance leader elected")
	return c
}

// RunDue runs every job whose interval has passed since it last finished.
func (r *Runner) RunDue(ctx context.Context) {
	for _, j := range r.jobs {
		if ctx.Err() != nil {
			return
		}
		now := r.now()
		last, err := r.st.LastMaintenanceRun(ctx, j.Name)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			r.log.Error("read maintenance schedule", "job", j.Name, "err", err)
			continue
		}
		if err == nil && now.Sub(last) < j.Every {
			continue
		}
		n, err := j.Run(ctx, r.st, now)
		if err != nil {
			r.log.Error("maintenance job failed", "job", j.Name, "err", err)
			continue
		}
		if err := r.st.RecordMaintenanceRun(ctx, j.Name, now, n); err != nil {
			r.log.Error("record maintenance run", "job", j.Name, "err", err)
			continue
		}
		r.log.Info("maintenance job done", "job", j.Name, "affected", n)
	}
}
