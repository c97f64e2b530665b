package backups

import (
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// A cleanup canceled while still queued (write scope may cancel tasks)
// is a failed cleanup: visible, retried like any other, and it never
// leaves the backup "pending" with no task behind it, which would keep
// its debris forever and refuse every delete of the row. A delete that
// waited for it records why and goes once the retry succeeds.
func TestCanceledQueuedCleanupIsRetried(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e, c := setupClock(t, time.Now())
	e.localDest(t, "vault")
	servers := []store.ID{e.srv.ID}
	failed := func() (store.Backup, store.BackupTask) {
		b := e.dispatched(t, "vault")
		if _, err := e.svc.JobEvents(ctx, e.srv.ID, []*agentv1.ConnectRequest{result(b.ID.String(), 1, "failed", nil)}); err != nil {
			t.Fatal(err)
		}
		return b, e.oneCleanup(t, b, store.BackupFailed)
	}

	// Canceled alone: failed, with the reason, and queued again.
	b, task := failed()
	if _, err := e.svc.Cancel(ctx, e.as(store.ScopeWrite), Peer{}, task.ID.String()); err != nil {
		t.Fatal(err)
	}
	got := e.backup(t, b.ID)
	if got.CleanupStatus != store.CleanupFailed || !strings.Contains(deref(got.CleanupError), "canceled") {
		t.Fatalf("after its queued cleanup was canceled: cleanup %q %q; want failed, canceled", got.CleanupStatus, deref(got.CleanupError))
	}
	c.set(time.Now().Add(time.Hour))
	if n := e.svc.retryCleanups(ctx, servers); n != 1 {
		t.Fatalf("canceled cleanup retried %d times, want 1", n)
	}
	cs := e.cleanups(t, b.ID)
	e.finishTask(t, cs[len(cs)-1].ID, "succeeded")
	if got := e.backup(t, b.ID); got.CleanupStatus != store.CleanupDone {
		t.Fatalf("after the retry: cleanup %q", got.CleanupStatus)
	}

	// Canceled under a delete that waits for it: the delete says why,
	// the retry runs, and the row goes.
	c.set(time.Now())
	b2, task2 := failed()
	if _, err := e.svc.Delete(ctx, e.admin, Peer{}, b2.ID.String()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Cancel(ctx, e.as(store.ScopeWrite), Peer{}, task2.ID.String()); err != nil {
		t.Fatal(err)
	}
	got = e.backup(t, b2.ID)
	if got.CleanupStatus != store.CleanupFailed || got.DeleteError == nil || !strings.Contains(*got.DeleteError, "cleanup") {
		t.Fatalf("delete under a canceled cleanup: cleanup %q, delete error %v", got.CleanupStatus, got.DeleteError)
	}
	// The retry queues it again, and the row goes once it is done.
	c.set(time.Now().Add(time.Hour))
	if n := e.svc.retryCleanups(ctx, servers); n != 1 {
		t.Fatalf("canceled cleanup under a delete retried %d times, want 1", n)
	}
	cs = e.cleanups(t, b2.ID)
	e.finishTask(t, cs[len(cs)-1].ID, "succeeded")
	if _, err := e.st.Backup(ctx, b2.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("row after its cleanup: %v", err)
	}
}

// A directory restore into the app's path is sent with within set, as
// the backup was: the agent, root, then writes through the app's path and
// never follows a symlink the app's user put there out of it. A target
// outside the app (an admin's --to) goes without.
func TestDirectoryRestoreWithin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	e.localDest(t, "vault")
	b, err := e.svc.RunBackup(ctx, e.admin, Peer{}, RunRequest{App: "shop", Destination: "vault", Kind: "directory", Source: "/srv/shop/current/storage"})
	if err != nil {
		t.Fatal(err)
	}
	b = e.succeed(t, b)
	for to, want := range map[string]string{"": "/srv/shop", "/srv/shop/shared/storage": "/srv/shop", "/srv/restored": "", "/srv/shopping": ""} {
		task, err := e.svc.Restore(ctx, e.admin, Peer{}, RestoreRequest{ID: b.ID.String(), To: to, Force: true})
		if err != nil {
			t.Fatal(err)
		}
		js, err := e.svc.taskStart(ctx, task)
		if err != nil {
			t.Fatal(err)
		}
		src := js.GetBackup().GetSource()
		if wantName := map[bool]string{true: b.Source, false: to}[to == ""]; src.GetName() != wantName || src.GetWithin() != want {
			t.Errorf("restore --to %q: source %q within %q; want %q within %q", to, src.GetName(), src.GetWithin(), wantName, want)
		}
		if _, err := e.svc.Cancel(ctx, e.admin, Peer{}, task.ID.String()); err != nil {
			t.Fatal(err)
		}
	}
}

// A delete that read the backup while its cleanup was pending, and whose
// transaction finds the cleanup done meanwhile (the agent's result came
// in between), deletes the row as a delete after a done cleanup does,
// instead of refusing with "its cleanup is done but has no running task".
func TestDeleteRacingCleanupEnd(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	e.localDest(t, "vault")
	b := e.dispatched(t, "vault")
	if _, err := e.svc.JobEvents(ctx, e.srv.ID, []*agentv1.ConnectRequest{result(b.ID.String(), 1, "failed", nil)}); err != nil {
		t.Fatal(err)
	}
	task := e.oneCleanup(t, b, store.BackupFailed)
	stale := e.backup(t, b.ID) // Delete's read: cleanup pending
	e.finishTask(t, task.ID, "succeeded")
	got, err := e.svc.deleteAfterCleanup(ctx, e.admin, Peer{}, stale)
	if err != nil || got != nil {
		t.Fatalf("delete after the cleanup ended meanwhile: %+v %v", got, err)
	}
	if _, err := e.st.Backup(ctx, b.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("row: %v", err)
	}
}

// A held run reported long after it started (the agent was cut off for
// longer than the backup timeout) is alive: its agent just said hello and
// sends the run's events next. The sweep between the hello and those
// events must not end it "agent unreachable", which would queue its
// cleanup and delete the object the agent stored while no controller was
// reachable, the very backup held schedules exist for.
func TestLateHeldRunNotSwept(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	e.localDest(t, "vault")
	e.svc.started = time.Now().Add(-time.Hour) // past the start grace
	v := e.schedule(t, ScheduleRequest{App: "shop", Destination: "vault", Kind: "postgres", Source: "shop", Cron: "0 3 * * *", Keep: 3})
	key, err := e.svc.currentKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	y := time.Now().UTC().Add(-48 * time.Hour)
	tick := time.Date(y.Year(), y.Month(), y.Day(), 3, 0, 0, 0, time.UTC)
	job := store.NewID()
	if err := e.svc.AgentHello(ctx, e.srv.ID, &agentv1.Hello{HeldRuns: []*agentv1.HeldBackupRun{heldRun(job, v.ID, tick, tick.Add(time.Second), key.ID.String())}}); err != nil {
		t.Fatal(err)
	}
	e.svc.sweep(ctx) // a tick of the service loop, before the events
	b := e.backup(t, job)
	if b.Status != store.BackupRunning || b.CleanupStatus != "" {
		t.Fatalf("the reported held run was swept: %s (%s), cleanup %q", b.Status, deref(b.FailureReason), b.CleanupStatus)
	}
	sum := sha256.Sum256([]byte("held"))
	obj := &agentv1.BackupObject{Key: objectKey(b), Size: 100, Sha256: sum[:]}
	if _, err := e.svc.JobEvents(ctx, e.srv.ID, []*agentv1.ConnectRequest{result(job.String(), 1, "succeeded", obj)}); err != nil {
		t.Fatal(err)
	}
	if b := e.backup(t, job); b.Status != store.BackupSucceeded || len(e.cleanups(t, job)) != 0 {
		t.Fatalf("held run after its events: %s, %d cleanups", b.Status, len(e.cleanups(t, job)))
	}
}

// A backup that failed because its destination is unreachable for good
// (wrong credentials, a removed bucket, a decommissioned SFTP host: the
// destination cannot be changed, only removed) has a cleanup that fails
// on every attempt. A delete waits for one attempt and says why it
// failed; the admin's delete after that removes the row, with the key
// that may hold leftovers and the reason in the activity log, instead of
// queueing cleanups forever and keeping the row, and with it the
// destination, for good.
func TestDeleteAfterFailedCleanupUnderDelete(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	e.localDest(t, "vault")
	b := e.dispatched(t, "vault")
	if _, err := e.svc.JobEvents(ctx, e.srv.ID, []*agentv1.ConnectRequest{result(b.ID.String(), 1, "failed", nil)}); err != nil {
		t.Fatal(err)
	}
	first := e.oneCleanup(t, b, store.BackupFailed)
	if task, err := e.svc.Delete(ctx, e.admin, Peer{}, b.ID.String()); err != nil || task == nil || task.ID != first.ID {
		t.Fatalf("first delete: %+v %v", task, err)
	}
	e.finishTask(t, first.ID, "failed")
	if got := e.backup(t, b.ID); got.DeleteError == nil {
		t.Fatal("the failed cleanup under the delete is not visible")
	}
	task, err := e.svc.Delete(ctx, e.admin, Peer{}, b.ID.String())
	if err != nil || task != nil {
		t.Fatalf("delete after the cleanup under a delete failed: %+v %v; want the row gone", task, err)
	}
	if _, err := e.st.Backup(ctx, b.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("row: %v", err)
	}
	if n := e.count(t, `SELECT count(*) FROM activity_log WHERE action = 'backup.deleted' AND subject_id = $1
		AND changes->>'object_key' = $2 AND changes->>'cleanup_error' LIKE '%pg_dump exited 1%'`, b.ID, objectKey(b)); n != 1 {
		t.Fatalf("the given-up cleanup is audited %d times", n)
	}
	if err := e.svc.RemoveDestination(ctx, e.admin, Peer{}, "vault"); err != nil {
		t.Fatalf("the destination stays in use: %v", err)
	}
}
