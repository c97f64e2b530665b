package backups

import (
	"context"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// Task finds a task only under its own backup (the web UI's task page):
// another backup's id, a probe (no backup), an unknown id and a caller
// without the read scope are refused.
func TestTaskUnderItsBackup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	d := e.localDest(t, "vault")
	stored := func() store.Backup {
		b := e.dispatched(t, "vault")
		sum := sha256.Sum256([]byte(b.ID.String()))
		obj := &agentv1.BackupObject{Key: objectKey(b), Size: 10, Sha256: sum[:]}
		if _, err := e.svc.JobEvents(ctx, e.srv.ID, []*agentv1.ConnectRequest{result(b.ID.String(), 1, "succeeded", obj)}); err != nil {
			t.Fatal(err)
		}
		return b
	}
	b1, b2 := stored(), stored()
	task, err := e.svc.Verify(ctx, e.admin, Peer{}, b1.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.svc.Task(ctx, e.as(store.ScopeRead), b1.ID.String(), task.ID.String())
	if err != nil || got.ID != task.ID || got.Kind != store.TaskVerify {
		t.Fatalf("its own backup's task: %+v %v", got, err)
	}
	if _, err := e.svc.Task(ctx, e.admin, b2.ID.String(), task.ID.String()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("under another backup: %v", err)
	}
	probe, err := e.st.CreateBackupTask(ctx, store.CreateBackupTaskParams{Kind: store.TaskProbe, DestinationID: d.ID, ServerID: e.srv.ID,
		TriggeredBy: store.TriggerUser, TimeoutSeconds: 60})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Task(ctx, e.admin, b1.ID.String(), probe.ID.String()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a probe under a backup: %v", err)
	}
	if _, err := e.svc.Task(ctx, e.admin, b1.ID.String(), store.NewID().String()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("an unknown task: %v", err)
	}
	if _, err := e.svc.Task(ctx, e.admin, "not-an-id", task.ID.String()); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("a malformed backup id: %v", err)
	}
	if _, err := e.svc.Task(ctx, e.as(""), b1.ID.String(), task.ID.String()); !errors.Is(err, auth.ErrForbidden) {
		t.Fatalf("without the read scope: %v", err)
	}
}
