package maintenance_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/berthhq/berth/controller/internal/maintenance"
	"github.com/berthhq/berth/controller/internal/store"
	"github.com/berthhq/berth/controller/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func count(t *testing.T, pool *pgxpool.Pool, q string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func exec(t *testing.T, pool *pgxpool.Pool, q string, args ...any) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func TestRetentionJobs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t).Pool
	st := store.New(pool, nil)
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

	user := store.NewID()
	exec(t, pool, `INSERT INTO users (id, email, password_hash) VALUES ($1, 'a@example.com', 'x')`, pgtype.UUID{Bytes: user, Valid: true})
	// For each table: one row just past its retention, one just inside it.
	type tc struct {
		table  string
		keep   time.Duration
		insert string
	}
	cases := []tc{
		{"login_attempts", maintenance.LoginAttemptsRetention, `INSERT INTO login_attempts (id, email, result, reason, created_at) VALUES ($1, 'a@example.com', 'failed', 'bad_password', $2)`},
		{"security_events", maintenance.SecurityEventsRetention, `INSERT INTO security_events (id, type, created_at) VALUES ($1, 'login.failed', $2)`},
		{"notifications", maintenance.NotificationsRetention, `INSERT INTO notifications (id, user_id, kind, title, created_at) VALUES ($1, (SELECT id FROM users LIMIT 1), 'deploy.failed', 't', $2)`},
		{"activity_log", maintenance.ActivityLogRetention, `INSERT INTO activity_log (id, actor_type, actor, action, created_at) VALUES ($1, 'system', 'system', 'server.created', $2)`},
	}
	for _, c := range cases {
		for _, age := range []time.Duration{c.keep + time.Hour, c.keep - time.Hour} {
			exec(t, pool, c.insert, pgtype.UUID{Bytes: store.NewID(), Valid: true}, now.Add(-age))
		}
	}

	// Old metrics partitions (10 and 8 days ago) and one inside the window.
	if _, err := st.EnsureMetricsPartitions(ctx, now.AddDate(0, 0, -10), 12); err != nil {
		t.Fatal(err)
	}
	before, err := st.MetricsPartitions(ctx)
	if err != nil {
		t.Fatal(err)
	}

	r := maintenance.New(st, quiet).WithClock(func() time.Time { return now })
	r.RunDue(ctx)

	for _, c := range cases {
		if n := count(t, pool, "SELECT count(*) FROM "+c.table); n != 1 {
			t.Errorf("%s: %d rows left, want 1 (the one inside retention)", c.table, n)
		}
	}
	parts, err := st.MetricsPartitions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	oldest := "server_metrics_p" + now.AddDate(0, 0, -7).Format("20060102")
	if len(parts) == 0 || parts[0] != oldest {
		t.Fatalf("oldest partition = %v, want %s (before: %v)", parts, oldest, before)
	}
	ahead := "server_metrics_p" + now.AddDate(0, 0, maintenance.PartitionsAhead).Format("20060102")
	if parts[len(parts)-1] < ahead {
		t.Fatalf("partitions end at %s, want at least %s", parts[len(parts)-1], ahead)
	}

	// A weekly job does not run again the next day, and runs after a week.
	exec(t, pool, cases[0].insert, pgtype.UUID{Bytes: store.NewID(), Valid: true}, now.Add(-365*24*time.Hour))
	now = now.Add(24 * time.Hour)
	r.RunDue(ctx)
	if n := count(t, pool, "SELECT count(*) FROM login_attempts"); n != 2 {
		t.Fatalf("weekly job ran again after a day: %d rows", n)
	}
	now = now.Add(6 * 24 * time.Hour)
	r.RunDue(ctx)
	if n := count(t, pool, "SELECT count(*) FROM login_attempts"); n != 0 {
		t.Fatalf("weekly job did not run after a week: %d rows", n)
	}
	last, err := st.LastMaintenanceRun(ctx, "login_attempts_retention")
	if err != nil || !last.Equal(now) {
		t.Fatalf("last run = %v, %v; want %v", last, err, now)
	}
}

func TestOneLeader(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t).Pool
	// Two controllers on one database: separate pools, like separate processes.
	pool2, err := pgxpool.New(ctx, pool.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer pool2.Close()
	a := maintenance.New(store.New(pool, nil), quiet)
	b := maintenance.New(store.New(pool2, nil), quiet)

	la := a.Lead(ctx, nil)
	if la == nil {
		t.Fatal("first controller did not become leader")
	}
	if lb := b.Lead(ctx, nil); lb != nil {
		t.Fatal("second controller became leader while the first leads")
	}
	// The leader keeps its lock across checks.
	if again := a.Lead(ctx, la); again != la {
		t.Fatal("leader lost its lock without reason")
	}
	// The leader's session dies (PostgreSQL restart, cut link): the other
	// controller takes over.
	_ = la.Hijack().Close(ctx)
	// PostgreSQL drops the lock when it notices the closed connection,
	// which is asynchronous: keep asking, as the runner does every tick.
	var lb *pgxpool.Conn
	for deadline := time.Now().Add(30 * time.Second); lb == nil && time.Now().Before(deadline); {
		if lb = b.Lead(ctx, nil); lb == nil {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if lb == nil {
		t.Fatal("second controller did not take over after the leader's session ended")
	}
	lb.Release()
}

func TestScheduleRunsRetention(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t).Pool
	st := store.New(pool, nil)
	srv, err := st.CreateServer(ctx, store.CreateServerParams{Name: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	a, err := st.CreateApp(ctx, store.CreateAppParams{AppSettings: store.AppSettings{ServerID: srv.ID, Name: "shop", RepositoryURL: "https://git.example.com/shop.git"}})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := st.PutAppSchedule(ctx, store.AppSchedule{AppID: a.ID, Name: "tick", Cron: "* * * * *", Command: "true", NextRunAt: time.Now()}, false)
	if err != nil {
		t.Fatal(err)
	}
	for range store.ScheduleRunsToKeep + 5 {
		if _, err := st.CreateSkippedScheduleRun(ctx, sc, "busy"); err != nil {
			t.Fatal(err)
		}
	}
	maintenance.New(st, quiet).WithJobs().RunDue(ctx)
	if n := count(t, pool, "SELECT count(*) FROM deployments WHERE schedule_id IS NOT NULL"); n != store.ScheduleRunsToKeep {
		t.Fatalf("%d runs kept, want %d", n, store.ScheduleRunsToKeep)
	}
}
