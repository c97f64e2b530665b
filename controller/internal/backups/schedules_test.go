package backups

import (
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// clock is the service's "now", moved by the test: the loop's time is
// driven explicitly, never waited for.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func setupClock(t *testing.T, at time.Time) (*env, *clock) {
	t.Helper()
	e := setup(t)
	c := &clock{t: at}
	e.svc.cfg.Now = c.now
	return e, c
}

func (e *env) schedule(t *testing.T, r ScheduleRequest) ScheduleView {
	t.Helper()
	v, err := e.svc.AddSchedule(context.Background(), e.admin, Peer{}, r)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// succeed dispatches the queued backup b and reports it stored.
func (e *env) succeed(t *testing.T, b store.Backup) store.Backup {
	t.Helper()
	ctx := context.Background()
	if _, err := e.st.ClaimQueuedBackups(ctx, []store.ID{e.srv.ID}, 100); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(b.ID.String()))
	obj := &agentv1.BackupObject{Key: objectKey(b), Size: 100, Sha256: sum[:]}
	if _, err := e.svc.JobEvents(ctx, e.srv.ID, []*agentv1.ConnectRequest{result(b.ID.String(), 1, "succeeded", obj)}); err != nil {
		t.Fatal(err)
	}
	got, err := e.st.Backup(ctx, b.ID)
	if err != nil || got.Status != store.BackupSucceeded {
		t.Fatalf("backup %s: %+v %v", b.ID, got, err)
	}
	return got
}

func (e *env) scheduleBackups(t *testing.T, id store.ID) []store.Backup {
	t.Helper()
	bs, err := e.st.ListBackups(context.Background(), store.BackupFilter{ScheduleID: &id, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return bs
}

func (e *env) count(t *testing.T, q string, args ...any) int {
	t.Helper()
	var n int
	if err := e.st.Pool().QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestScheduleValidation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	e.localDest(t, "vault")
	ok := ScheduleRequest{App: "shop", Destination: "vault", Kind: "postgres", Source: "shop", Cron: "0 3 * * *", Keep: 7}
	cases := []struct {
		name string
		mod  func(*ScheduleRequest)
		want error
		says string
	}{
		{"bad cron", func(r *ScheduleRequest) { r.Cron = "61 * * * *" }, store.ErrInvalid, "--cron"},
		{"six fields", func(r *ScheduleRequest) { r.Cron = "0 0 3 * * *" }, store.ErrInvalid, "--cron"},
		{"empty cron", func(r *ScheduleRequest) { r.Cron = "" }, store.ErrInvalid, "--cron"},
		{"never fires", func(r *ScheduleRequest) { r.Cron = "0 3 31 2 *" }, store.ErrInvalid, "never runs"},
		{"oversized cron", func(r *ScheduleRequest) { r.Cron = strings.Repeat("1,", 200) + "1 * * * *" }, store.ErrInvalid, "--cron"},
		{"unknown zone", func(r *ScheduleRequest) { r.Timezone = "Mars/Olympus" }, store.ErrInvalid, "--timezone"},
		{"Local zone", func(r *ScheduleRequest) { r.Timezone = "Local" }, store.ErrInvalid, "--timezone"},
		{"keep 0 and no days", func(r *ScheduleRequest) { r.Keep = 0 }, store.ErrInvalid, "--keep"},
		{"negative keep", func(r *ScheduleRequest) { r.Keep = -1 }, store.ErrInvalid, "--keep"},
		{"negative keep-days", func(r *ScheduleRequest) { r.KeepDays = -3 }, store.ErrInvalid, "--keep-days"},
		{"huge keep", func(r *ScheduleRequest) { r.Keep = 1 << 30 }, store.ErrInvalid, "--keep"},
		{"unknown destination", func(r *ScheduleRequest) { r.Destination = "nowhere" }, store.ErrNotFound, "nowhere"},
		{"unknown app", func(r *ScheduleRequest) { r.App = "nope" }, store.ErrNotFound, "nope"},
		{"bad kind", func(r *ScheduleRequest) { r.Kind = "oracle" }, store.ErrInvalid, "--kind"},
		{"relative directory", func(r *ScheduleRequest) { r.Kind, r.Source = "directory", "srv/x" }, store.ErrInvalid, "--source"},
	}
	for _, c := range cases {
		r := ok
		c.mod(&r)
		_, err := e.svc.AddSchedule(ctx, e.admin, Peer{}, r)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: %v (want %v saying %q)", c.name, err, c.want, c.says)
		}
	}
	if n := e.count(t, `SELECT count(*) FROM backup_schedules`); n != 0 {
		t.Fatalf("%d schedules stored from bad input", n)
	}

	// Unauthorised: changing schedules is admin; reading them is read.
	for _, sc := range []store.Scope{store.ScopeRead, store.ScopeWrite, store.ScopeDeploy} {
		if _, err := e.svc.AddSchedule(ctx, e.as(sc), Peer{}, ok); !errors.Is(err, auth.ErrForbidden) {
			t.Errorf("%s adds a schedule: %v", sc, err)
		}
	}
	v := e.schedule(t, ok)
	for _, sc := range []store.Scope{store.ScopeRead, store.ScopeWrite} {
		if _, err := e.svc.SetScheduleEnabled(ctx, e.as(sc), Peer{}, v.ID.String(), false); !errors.Is(err, auth.ErrForbidden) {
			t.Errorf("%s disables a schedule: %v", sc, err)
		}
		if err := e.svc.RemoveSchedule(ctx, e.as(sc), Peer{}, v.ID.String()); !errors.Is(err, auth.ErrForbidden) {
			t.Errorf("%s removes a schedule: %v", sc, err)
		}
	}
	if list, err := e.svc.Schedules(ctx, e.as(store.ScopeRead), "shop"); err != nil || len(list) != 1 || list[0].DestinationName != "vault" || list[0].AppName != "shop" {
		t.Fatalf("read lists schedules: %+v %v", list, err)
	}
	if _, err := e.svc.Schedule(ctx, e.admin, "not-an-id"); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("malformed id: %v", err)
	}
	if _, err := e.svc.Schedule(ctx, e.admin, store.NewID().String()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown id: %v", err)
	}
	// A destination a schedule uses is not removed, and says so.
	if err := e.svc.RemoveDestination(ctx, e.admin, Peer{}, "vault"); !errors.Is(err, store.ErrReferenced) || !strings.Contains(err.Error(), "schedules "+v.ID.String()+" (shop)") {
		t.Errorf("remove a destination a schedule uses: %v", err)
	}
	if n := e.count(t, `SELECT count(*) FROM activity_log WHERE action = 'backup_schedule.added'`); n != 1 {
		t.Errorf("backup_schedule.added recorded %d times", n)
	}
}

// A due tick runs once under its run key; a tick due while the previous
// run is unfinished is skipped and says why; after an outage of many ticks
// the schedule runs once and its next run counts from now; two controllers
// firing at once run a tick once.
func TestScheduleFiring(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 2, 58, 0, 0, time.UTC)
	e, c := setupClock(t, t0)
	e.localDest(t, "vault")
	v := e.schedule(t, ScheduleRequest{App: "shop", Destination: "vault", Kind: "postgres", Source: "shop",
		Cron: "*/5 * * * *", Timezone: "Europe/Berlin", Keep: 3})
	tick := time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)
	if !v.NextRunAt.Equal(tick) {
		t.Fatalf("next run %v, want %v", v.NextRunAt, tick)
	}
	servers := []store.ID{e.srv.ID}
	if n := e.svc.fireFor(ctx, servers); n != 0 {
		t.Fatalf("fired %d before its time", n)
	}
	c.set(tick.Add(time.Second))
	if n := e.svc.fireFor(ctx, []store.ID{store.NewID()}); n != 0 {
		t.Fatalf("fired %d for a schedule whose agent is not connected here", n)
	}
	if n := e.svc.fireFor(ctx, servers); n != 1 {
		t.Fatalf("fired %d at its tick", n)
	}
	if n := e.svc.fireFor(ctx, servers); n != 0 {
		t.Fatalf("fired the same tick again: %d", n)
	}
	runs := e.scheduleBackups(t, v.ID)
	if len(runs) != 1 || runs[0].ScheduledFor == nil || !runs[0].ScheduledFor.Equal(tick) || runs[0].TriggeredBy != store.TriggerSchedule ||
		runs[0].Status != store.BackupQueued || runs[0].EncryptionKeyID == nil || runs[0].Held {
		t.Fatalf("runs %+v", runs)
	}
	first := runs[0]

	// The next tick while the first run is unfinished: skipped, never a
	// second concurrent run.
	c.set(tick.Add(5*time.Minute + time.Second))
	if n := e.svc.fireFor(ctx, servers); n != 0 {
		t.Fatalf("overlapping run fired: %d", n)
	}
	if n := e.count(t, `SELECT count(*) FROM activity_log WHERE action = 'backup_schedule.run_skipped' AND changes->>'previous' = $1`, first.ID.String()); n != 1 {
		t.Fatalf("skip recorded %d times", n)
	}
	e.succeed(t, first)

	// Every controller down for three hours (36 ticks): one run, not 36.
	back := tick.Add(3*time.Hour + 2*time.Minute)
	c.set(back)
	if n := e.svc.fireFor(ctx, servers); n != 1 {
		t.Fatalf("after downtime fired %d, want 1", n)
	}
	if n := e.svc.fireFor(ctx, servers); n != 0 {
		t.Fatalf("after downtime fired again: %d", n)
	}
	sc, err := e.svc.Schedule(ctx, e.admin, v.ID.String())
	if err != nil || !sc.NextRunAt.Equal(tick.Add(3*time.Hour+5*time.Minute)) || sc.LastRunAt == nil || !sc.LastRunAt.Equal(back) {
		t.Fatalf("after downtime: %+v %v", sc, err)
	}
	if len(e.scheduleBackups(t, v.ID)) != 2 {
		t.Fatal("want two runs in all")
	}
	e.succeed(t, *sc.LastBackup)

	// Two controllers at the same due tick: one run.
	c.set(tick.Add(3*time.Hour + 5*time.Minute + time.Second))
	var wg sync.WaitGroup
	got := make([]int, 4)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = e.svc.fireFor(ctx, servers)
		}()
	}
	wg.Wait()
	if got[0]+got[1]+got[2]+got[3] != 1 {
		t.Fatalf("concurrent firing queued %v", got)
	}

	// Disabled: no run; enabled again: the next tick after now, no
	// catch-up.
	if _, err := e.svc.SetScheduleEnabled(ctx, e.admin, Peer{}, v.ID.String(), false); err != nil {
		t.Fatal(err)
	}
	c.set(tick.Add(5 * time.Hour))
	if n := e.svc.fireFor(ctx, servers); n != 0 {
		t.Fatalf("disabled schedule fired %d", n)
	}
	en, err := e.svc.SetScheduleEnabled(ctx, e.admin, Peer{}, v.ID.String(), true)
	if err != nil || !en.NextRunAt.Equal(tick.Add(5*time.Hour+5*time.Minute)) {
		t.Fatalf("enabled: %+v %v", en, err)
	}
	if err := e.svc.RemoveSchedule(ctx, e.admin, Peer{}, v.ID.String()); err != nil {
		t.Fatal(err)
	}
	if n := e.count(t, `SELECT count(*) FROM backups WHERE backup_schedule_id IS NULL AND triggered_by = 'schedule'`); n != 3 {
		t.Fatalf("a removed schedule's backups: %d kept, want 3", n)
	}
}

// finishTask dispatches a queued task and reports its end.
func (e *env) finishTask(t *testing.T, id store.ID, status string) {
	t.Helper()
	ctx := context.Background()
	if _, err := e.st.ClaimQueuedBackupTasks(ctx, []store.ID{e.srv.ID}, 100); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.JobEvents(ctx, e.srv.ID, []*agentv1.ConnectRequest{result(id.String(), 1, status, nil)}); err != nil {
		t.Fatal(err)
	}
}

func (e *env) tasks(t *testing.T, kind store.BackupTaskKind, status store.BackupStatus) []store.BackupTask {
	t.Helper()
	rows, err := e.st.Pool().Query(context.Background(), `SELECT id FROM backup_tasks WHERE kind = $1 AND status = $2 ORDER BY id`, string(kind), string(status))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []store.BackupTask
	for rows.Next() {
		var raw [16]byte
		if err := rows.Scan(&raw); err != nil {
			t.Fatal(err)
		}
		tk, err := e.st.BackupTask(context.Background(), store.ID(raw))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, tk)
	}
	return out
}

// Retention keeps the newest N and the newest verified backup, deletes the
// object first (a delete job) and the row only when that succeeded; a
// failed delete stays visible on the row and is queued again later. A
// schedule with verify gets a verify job for each new backup.
func TestScheduleRetention(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 0, 30, 0, 0, time.UTC)
	e, c := setupClock(t, t0)
	e.localDest(t, "vault")
	v := e.schedule(t, ScheduleRequest{App: "shop", Destination: "vault", Kind: "directory", Source: "/srv/shop/shared",
		Cron: "0 * * * *", Keep: 2, Verify: true})
	servers := []store.ID{e.srv.ID}
	var made []store.Backup
	for i := 1; i <= 5; i++ {
		c.set(time.Date(2026, 3, 1, i, 0, 1, 0, time.UTC))
		if n := e.svc.fireFor(ctx, servers); n != 1 {
			t.Fatalf("hour %d fired %d", i, n)
		}
		bs := e.scheduleBackups(t, v.ID)
		made = append(made, e.succeed(t, bs[0]))
	}
	// verify: one verify job per new backup, queued by the scheduler.
	verifies := e.tasks(t, store.TaskVerify, store.BackupQueued)
	if len(verifies) != 5 || verifies[0].TriggeredBy != store.TriggerSchedule {
		t.Fatalf("verify jobs: %+v", verifies)
	}
	// The oldest verifies, the others' verification is still running.
	for _, tk := range verifies {
		if *tk.BackupID == made[0].ID {
			e.finishTask(t, tk.ID, "succeeded")
		}
	}
	if b, _ := e.st.Backup(ctx, made[0].ID); b.VerifiedAt == nil {
		t.Fatal("oldest not verified")
	}

	// keep 2: the newest two stay, and the oldest as the newest verified;
	// the second and third get delete jobs.
	if n := e.svc.pruneFor(ctx, servers); n != 2 {
		t.Fatalf("retention queued %d deletes, want 2", n)
	}
	if n := e.svc.pruneFor(ctx, servers); n != 0 {
		t.Fatalf("retention queued %d more while the deletes run", n)
	}
	dels := e.tasks(t, store.TaskDelete, store.BackupQueued)
	if len(dels) != 2 || *dels[0].BackupID != made[1].ID || *dels[1].BackupID != made[2].ID || dels[0].TriggeredBy != store.TriggerSchedule {
		t.Fatalf("delete jobs %+v", dels)
	}
	// The row stays until its object is deleted.
	if b, err := e.st.Backup(ctx, made[1].ID); err != nil || b.DeleteRequestedAt == nil {
		t.Fatalf("row before its object is deleted: %+v %v", b, err)
	}
	if _, err := e.st.ClaimQueuedBackupTasks(ctx, servers, 100); err != nil {
		t.Fatal(err)
	}
	// A job's end is stamped with the agent's time: from here the
	// service's clock reads the wall clock too.
	c.set(time.Now())
	if _, err := e.svc.JobEvents(ctx, e.srv.ID, []*agentv1.ConnectRequest{
		result(dels[0].ID.String(), 1, "succeeded", nil), result(dels[1].ID.String(), 1, "failed", nil)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Backup(ctx, made[1].ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted object's row: %v", err)
	}
	failed, err := e.st.Backup(ctx, made[2].ID)
	if err != nil || failed.DeleteError == nil || !strings.Contains(*failed.DeleteError, "pg_dump exited 1") {
		t.Fatalf("failed delete not visible: %+v %v", failed, err)
	}
	// Not retried at once (the failing destination would be hammered)...
	if n := e.svc.pruneFor(ctx, servers); n != 0 {
		t.Fatalf("failed delete retried at once: %d", n)
	}
	// ...but once the retry time passed.
	c.set(c.now().Add(time.Hour))
	if n := e.svc.pruneFor(ctx, servers); n != 1 {
		t.Fatalf("failed delete retried %d times, want 1", n)
	}
	retry := e.tasks(t, store.TaskDelete, store.BackupQueued)
	if len(retry) != 1 || *retry[0].BackupID != made[2].ID {
		t.Fatalf("retry %+v", retry)
	}
	if n := e.count(t, `SELECT count(*) FROM activity_log WHERE action = 'backup.retention_delete_queued' AND (changes->>'retry')::boolean`); n != 1 {
		t.Fatalf("retry in the activity log %d times", n)
	}
	e.finishTask(t, retry[0].ID, "succeeded")
	left := e.scheduleBackups(t, v.ID)
	if len(left) != 3 || left[0].ID != made[4].ID || left[1].ID != made[3].ID || left[2].ID != made[0].ID {
		t.Fatalf("kept %v", left)
	}

	// keep-days alone: nothing younger than D days goes; the newest
	// always stays even when old.
	v2 := e.schedule(t, ScheduleRequest{App: "shop", Destination: "vault", Kind: "postgres", Source: "shop", Cron: "0 12 * * *", KeepDays: 2})
	var made2 []store.Backup
	for d := 0; d < 3; d++ {
		c.set(v2.NextRunAt.Add(time.Duration(d)*24*time.Hour + time.Second))
		if n := e.svc.fireFor(ctx, servers); n < 1 {
			t.Fatalf("day %d fired %d", d, n)
		}
		made2 = append(made2, e.succeed(t, e.scheduleBackups(t, v2.ID)[0]))
	}
	_ = made2
	// Row ages are set by PostgreSQL's clock: move them into the past.
	if _, err := e.st.Pool().Exec(ctx, `UPDATE backups SET created_at = now() - interval '10 days' WHERE backup_schedule_id = $1`, v2.ID); err != nil {
		t.Fatal(err)
	}
	c.set(c.now().Add(time.Hour))
	e.svc.pruneFor(ctx, servers)
	if n := e.count(t, `SELECT count(*) FROM backup_tasks t JOIN backups b ON b.id = t.backup_id WHERE t.kind = 'delete' AND t.status = 'queued' AND b.backup_schedule_id = $1`, v2.ID); n != 2 {
		t.Fatalf("keep-days queued %d deletes, want 2 (the newest stays)", n)
	}
}
