package backups

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// cleanups returns backup id's cleanup tasks, oldest first.
func (e *env) cleanups(t *testing.T, id store.ID) []store.BackupTask {
	t.Helper()
	ts, err := e.st.BackupTasks(context.Background(), id, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []store.BackupTask
	for i := len(ts) - 1; i >= 0; i-- {
		if ts[i].Kind == store.TaskCleanup {
			out = append(out, ts[i])
		}
	}
	return out
}

func (e *env) backup(t *testing.T, id store.ID) store.Backup {
	t.Helper()
	b, err := e.st.Backup(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// oneCleanup checks that b ended with status and has exactly one cleanup
// task, queued by the system for its key on its server, and returns it.
func (e *env) oneCleanup(t *testing.T, b store.Backup, status store.BackupStatus) store.BackupTask {
	t.Helper()
	got := e.backup(t, b.ID)
	if got.Status != status || got.CleanupStatus != store.CleanupPending {
		t.Fatalf("backup %s: %s, cleanup %q; want %s, pending", b.ID, got.Status, got.CleanupStatus, status)
	}
	cs := e.cleanups(t, b.ID)
	if len(cs) != 1 {
		t.Fatalf("backup %s has %d cleanup tasks, want 1", b.ID, len(cs))
	}
	c := cs[0]
	if c.TriggeredBy != store.TriggerSystem || c.ServerID == nil || *c.ServerID != e.srv.ID || c.DestinationID != b.DestinationID || c.Status != store.BackupQueued {
		t.Fatalf("cleanup task %+v", c)
	}
	return c
}

// Every way a dispatched backup ends without succeeding queues exactly one
// cleanup of its key, audited as the system: the agent's failure, its
// timeout and its cancel, the sweep of a lost agent, an unbuildable
// re-send. A replayed result queues no second one. A backup never sent to
// an agent, and a succeeded one, get none.
func TestCleanupQueuedOnUnsucceededEnd(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	e.localDest(t, "vault")
	now := time.Now()
	e.svc.cfg.Now = func() time.Time { return now }
	e.svc.started = now.Add(-time.Hour)

	// The agent reports failure (twice: a replay after a reconnect).
	failed := e.dispatched(t, "vault")
	for range 2 {
		if _, err := e.svc.JobEvents(ctx, e.srv.ID, []*agentv1.ConnectRequest{output(failed.ID.String(), 1, "dumping\n"), result(failed.ID.String(), 2, "failed", nil)}); err != nil {
			t.Fatal(err)
		}
	}
	c := e.oneCleanup(t, failed, store.BackupFailed)
	// The job the agent gets: a delete of the backup's key, no secrets
	// beyond the destination's.
	js, err := e.svc.taskStart(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if js.GetKind() != KindDelete || js.GetBackup().GetObject().GetKey() != objectKey(failed) || js.GetBackup().GetIdentity() != "" || js.GetAppName() != "shop" {
		t.Fatalf("cleanup job: kind %s key %q (want %q)", js.GetKind(), js.GetBackup().GetObject().GetKey(), objectKey(failed))
	}
	if n := e.count(t, `SELECT count(*) FROM activity_log WHERE action = 'backup.cleanup_queued' AND actor_type = 'system' AND subject_id = $1 AND changes->>'object_key' = $2`, failed.ID, objectKey(failed)); n != 1 {
		t.Fatalf("cleanup_queued audited %d times as the system, want 1", n)
	}
	// A second active cleanup of one backup is refused by the schema.
	if _, err := e.st.CreateBackupTask(ctx, store.CreateBackupTaskParams{Kind: store.TaskCleanup, BackupID: &failed.ID, DestinationID: failed.DestinationID,
		ServerID: e.srv.ID, TriggeredBy: store.TriggerSystem, TimeoutSeconds: 60}); err == nil {
		t.Fatal("a second active cleanup task was accepted")
	}

	// The agent's own deadline: timed_out.
	timedOut := e.dispatched(t, "vault")
	if _, err := e.svc.JobEvents(ctx, e.srv.ID, []*agentv1.ConnectRequest{result(timedOut.ID.String(), 1, "timed_out", nil)}); err != nil {
		t.Fatal(err)
	}
	e.oneCleanup(t, timedOut, store.BackupTimedOut)

	// Canceled after dispatch: the agent stops it and reports canceled.
	canceled := e.dispatched(t, "vault")
	if _, err := e.svc.Cancel(ctx, e.admin, Peer{}, canceled.ID.String()); err != nil {
		t.Fatal(err)
	}
	if n := len(e.cleanups(t, canceled.ID)); n != 0 {
		t.Fatalf("a cleanup was queued before the agent stopped the backup: %d", n)
	}
	if _, err := e.svc.JobEvents(ctx, e.srv.ID, []*agentv1.ConnectRequest{result(canceled.ID.String(), 1, "canceled", nil)}); err != nil {
		t.Fatal(err)
	}
	e.oneCleanup(t, canceled, store.BackupCanceled)

	// Never dispatched: canceled in the queue, or timed out there.
	queuedCanceled, err := e.svc.RunBackup(ctx, e.admin, Peer{}, RunRequest{App: "shop", Destination: "vault", Kind: "postgres", Source: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Cancel(ctx, e.admin, Peer{}, queuedCanceled.ID.String()); err != nil {
		t.Fatal(err)
	}
	queuedLate, err := e.svc.RunBackup(ctx, e.admin, Peer{}, RunRequest{App: "shop", Destination: "vault", Kind: "postgres", Source: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	// A lost agent: dispatched, never reports.
	lost := e.dispatched(t, "vault") // claims queuedLate too: un-claim it
	if _, err := e.st.Pool().Exec(ctx, `UPDATE backups SET status = 'queued', dispatched_at = NULL WHERE id = $1`, queuedLate.ID); err != nil {
		t.Fatal(err)
	}
	now = now.Add(7 * time.Hour)
	e.svc.sweep(ctx)
	if got := e.backup(t, lost.ID); got.Status != store.BackupFailed || deref(got.FailureReason) != "agent unreachable" {
		t.Fatalf("lost agent's backup: %s %v", got.Status, deref(got.FailureReason))
	}
	e.oneCleanup(t, lost, store.BackupFailed)
	for _, b := range []store.Backup{queuedCanceled, queuedLate} {
		got := e.backup(t, b.ID)
		if !got.Status.Finished() || got.Status == store.BackupSucceeded || got.CleanupStatus != "" || len(e.cleanups(t, b.ID)) != 0 {
			t.Errorf("never dispatched backup %s: %s, cleanup %q, %d tasks", b.ID, got.Status, got.CleanupStatus, len(e.cleanups(t, b.ID)))
		}
	}
	now = time.Now()

	// Unbuildable: a fresh claim never reached the agent (no cleanup);
	// a re-send after a reconnect may be running there (cleanup).
	runMissingEnv := func() store.Backup {
		if _, err := e.svc.RunBackup(ctx, e.admin, Peer{}, RunRequest{App: "shop", Destination: "vault", Kind: "postgres", Source: "shop", ConnectionEnv: "NO_SUCH_URL"}); err != nil {
			t.Fatal(err)
		}
		bs, err := e.st.ClaimQueuedBackups(ctx, []store.ID{e.srv.ID}, 10)
		if err != nil || len(bs) != 1 {
			t.Fatalf("claim: %v %v", bs, err)
		}
		return bs[0]
	}
	fresh := runMissingEnv()
	e.svc.sendBackup(ctx, fresh, false)
	if got := e.backup(t, fresh.ID); got.Status != store.BackupFailed || got.CleanupStatus != "" || len(e.cleanups(t, fresh.ID)) != 0 {
		t.Fatalf("unbuildable fresh claim: %s, cleanup %q", got.Status, got.CleanupStatus)
	}
	resent := runMissingEnv()
	e.svc.sendBackup(ctx, resent, true)
	e.oneCleanup(t, resent, store.BackupFailed)

	// Succeeded: never touched, and the schema refuses to.
	ok := e.succeed(t, e.runQueued(t))
	if got := e.backup(t, ok.ID); got.CleanupStatus != "" || len(e.cleanups(t, ok.ID)) != 0 {
		t.Fatalf("succeeded backup got a cleanup: %q", got.CleanupStatus)
	}
	if _, err := e.st.MarkBackupCleanupPending(ctx, ok.ID); !errors.Is(err, store.ErrWrongState) {
		t.Fatalf("cleanup of a succeeded backup: %v, want wrong state", err)
	}
	if _, err := e.st.Pool().Exec(ctx, `UPDATE backups SET cleanup_status = 'pending' WHERE id = $1`, ok.ID); err == nil || !strings.Contains(err.Error(), "backups_cleanup_unsucceeded_check") {
		t.Fatalf("the schema let a succeeded backup be cleaned up: %v", err)
	}
}

func (e *env) runQueued(t *testing.T) store.Backup {
	t.Helper()
	b, err := e.svc.RunBackup(context.Background(), e.admin, Peer{}, RunRequest{App: "shop", Destination: "vault", Kind: "postgres", Source: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A failed cleanup is visible on the backup and queued again once the
// retry interval passed (not at once), until it succeeds; then it is done
// and never queued again.
func TestCleanupRetriedUntilDone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e, c := setupClock(t, time.Now())
	e.localDest(t, "vault")
	servers := []store.ID{e.srv.ID}
	b := e.dispatched(t, "vault")
	if _, err := e.svc.JobEvents(ctx, e.srv.ID, []*agentv1.ConnectRequest{result(b.ID.String(), 1, "failed", nil)}); err != nil {
		t.Fatal(err)
	}
	first := e.oneCleanup(t, b, store.BackupFailed)
	e.finishTask(t, first.ID, "failed") // the agent's error: "pg_dump exited 1"
	got := e.backup(t, b.ID)
	if got.CleanupStatus != store.CleanupFailed || got.CleanupError == nil || !strings.Contains(*got.CleanupError, "pg_dump exited 1") {
		t.Fatalf("failed cleanup not visible: %q %v", got.CleanupStatus, got.CleanupError)
	}
	if n := e.svc.retryCleanups(ctx, servers); n != 0 {
		t.Fatalf("failed cleanup retried at once: %d", n)
	}
	// Not for a server that is not connected here.
	c.set(time.Now().Add(time.Hour))
	if n := e.svc.retryCleanups(ctx, []store.ID{store.NewID()}); n != 0 {
		t.Fatalf("cleanup retried for another server: %d", n)
	}
	if n := e.svc.retryCleanups(ctx, servers); n != 1 {
		t.Fatalf("cleanup retried %d times, want 1", n)
	}
	if n := e.svc.retryCleanups(ctx, servers); n != 0 {
		t.Fatalf("cleanup retried again while its retry is pending: %d", n)
	}
	cs := e.cleanups(t, b.ID)
	if len(cs) != 2 || cs[1].Status != store.BackupQueued || cs[1].TriggeredBy != store.TriggerSystem {
		t.Fatalf("cleanup tasks after the retry: %+v", cs)
	}
	if got := e.backup(t, b.ID); got.CleanupStatus != store.CleanupPending {
		t.Fatalf("retry queued but cleanup %q", got.CleanupStatus)
	}
	if n := e.count(t, `SELECT count(*) FROM activity_log WHERE action = 'backup.cleanup_queued' AND actor_type = 'system' AND (changes->>'retry')::boolean AND changes->>'previous_error' LIKE '%pg_dump exited 1%'`); n != 1 {
		t.Fatalf("retry audited %d times, want 1", n)
	}
	e.finishTask(t, cs[1].ID, "succeeded")
	if got := e.backup(t, b.ID); got.CleanupStatus != store.CleanupDone || got.CleanupError != nil {
		t.Fatalf("after the retry succeeded: %q %v", got.CleanupStatus, got.CleanupError)
	}
	c.set(time.Now().Add(48 * time.Hour))
	if n := e.svc.retryCleanups(ctx, servers); n != 0 {
		t.Fatalf("a done cleanup was queued again: %d", n)
	}
	// A late or replayed result of the first task changes nothing.
	if _, err := e.svc.JobEvents(ctx, e.srv.ID, []*agentv1.ConnectRequest{result(first.ID.String(), 1, "failed", nil)}); err != nil {
		t.Fatal(err)
	}
	if got := e.backup(t, b.ID); got.CleanupStatus != store.CleanupDone {
		t.Fatalf("a replayed failure changed a done cleanup: %q", got.CleanupStatus)
	}
}

// Deleting an unsucceeded backup whose cleanup is not done waits for the
// cleanup (the pending one, or a new one after a failure), then the row
// goes; a never-dispatched one goes at once; one whose server was removed
// records why it cannot be cleaned up and can be deleted.
func TestDeleteWaitsForCleanup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	e.localDest(t, "vault")

	b := e.dispatched(t, "vault")
	if _, err := e.svc.JobEvents(ctx, e.srv.ID, []*agentv1.ConnectRequest{result(b.ID.String(), 1, "failed", nil)}); err != nil {
		t.Fatal(err)
	}
	pending := e.oneCleanup(t, b, store.BackupFailed)
	task, err := e.svc.Delete(ctx, e.admin, Peer{}, b.ID.String())
	if err != nil || task == nil || task.ID != pending.ID {
		t.Fatalf("delete during the cleanup: %+v %v (want the pending cleanup %s)", task, err, pending.ID)
	}
	if got := e.backup(t, b.ID); got.DeleteRequestedAt == nil {
		t.Fatal("delete not recorded")
	}
	e.finishTask(t, pending.ID, "succeeded")
	if _, err := e.st.Backup(ctx, b.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("row after its cleanup: %v", err)
	}

	// After a failed cleanup, the delete queues a new one (as the user).
	b2 := e.dispatched(t, "vault")
	if _, err := e.svc.JobEvents(ctx, e.srv.ID, []*agentv1.ConnectRequest{result(b2.ID.String(), 1, "failed", nil)}); err != nil {
		t.Fatal(err)
	}
	e.finishTask(t, e.oneCleanup(t, b2, store.BackupFailed).ID, "failed")
	task, err = e.svc.Delete(ctx, e.admin, Peer{}, b2.ID.String())
	if err != nil || task == nil || task.Kind != store.TaskCleanup || task.TriggeredBy != store.TriggerUser {
		t.Fatalf("delete after a failed cleanup: %+v %v", task, err)
	}
	e.finishTask(t, task.ID, "failed")
	got := e.backup(t, b2.ID)
	if got.DeleteError == nil || !strings.Contains(*got.DeleteError, "cleanup") || got.CleanupStatus != store.CleanupFailed {
		t.Fatalf("failed cleanup under a delete: %+v", got)
	}

	// Never dispatched: at once.
	q := e.runQueued(t)
	if _, err := e.svc.Cancel(ctx, e.admin, Peer{}, q.ID.String()); err != nil {
		t.Fatal(err)
	}
	if task, err := e.svc.Delete(ctx, e.admin, Peer{}, q.ID.String()); err != nil || task != nil {
		t.Fatalf("delete of a never-dispatched backup: %+v %v", task, err)
	}
	if _, err := e.st.Backup(ctx, q.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("never-dispatched row: %v", err)
	}

	// The server was removed while the backup ran: nothing can reach the
	// destination through it; the cleanup says so, the row can go.
	other, err := e.st.CreateServer(ctx, store.CreateServerParams{Name: "web-2"})
	if err != nil {
		t.Fatal(err)
	}
	o := e.dispatched(t, "vault")
	if _, err := e.st.Pool().Exec(ctx, `UPDATE backups SET server_id = $2 WHERE id = $1`, o.ID, other.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.st.DeleteServer(ctx, other.ID); err != nil {
		t.Fatal(err)
	}
	e.svc.sendBackup(ctx, e.backup(t, o.ID), true)
	got = e.backup(t, o.ID)
	if got.Status != store.BackupFailed || got.CleanupStatus != store.CleanupFailed || !strings.Contains(deref(got.CleanupError), "server") || len(e.cleanups(t, o.ID)) != 0 {
		t.Fatalf("backup of a removed server: %s cleanup %q %q", got.Status, got.CleanupStatus, deref(got.CleanupError))
	}
	if task, err := e.svc.Delete(ctx, e.admin, Peer{}, o.ID.String()); err != nil || task != nil {
		t.Fatalf("delete of a removed server's backup: %+v %v", task, err)
	}
}
