package deploys

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

func TestDeleteApp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	a := e.app(t, "shop")

	// Deploy scope; write is refused before anything is looked up.
	if _, err := e.svc.DeleteApp(ctx, e.as(store.ScopeWrite), Peer{}, "shop", false); err == nil {
		t.Fatal("write scope deleted an app")
	}
	// An unfinished deployment refuses the delete and says so.
	q, err := e.svc.Deploy(ctx, e.admin, Peer{}, DeployParams{App: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.DeleteApp(ctx, e.as(store.ScopeDeploy), Peer{}, "shop", false)
	if !errors.Is(err, store.ErrWrongState) || !strings.Contains(err.Error(), "unfinished deployment "+q.Deployment.ID.String()) {
		t.Fatalf("delete during a deployment: %v", err)
	}
	if _, err := e.svc.Cancel(ctx, e.admin, Peer{}, q.Deployment.ID.String()); err != nil {
		t.Fatal(err)
	}

	// Without --keep-files: a delete job; the app stays until it succeeds.
	res, err := e.svc.DeleteApp(ctx, e.as(store.ScopeDeploy), Peer{}, "shop", false)
	if err != nil || res.Job == nil || res.Job.Kind != store.JobDelete {
		t.Fatalf("delete: %+v %v", res, err)
	}
	if _, err := e.svc.Deploy(ctx, e.admin, Peer{}, DeployParams{App: "shop"}); err != nil {
		t.Fatal(err) // queues behind the delete job, and is refused at dispatch
	}
	claimed, err := e.st.ClaimQueuedDeployments(ctx, []store.ID{e.srv.ID}, 10)
	if err != nil || len(claimed) != 1 || claimed[0].ID != res.Job.ID {
		t.Fatalf("claim: %+v %v", claimed, err)
	}
	js, err := e.svc.jobStart(ctx, a, claimed[0])
	if err != nil || js.GetKind() != "delete" || js.GetDeployPath() != "/srv/shop" || js.GetCredential() != nil || len(js.GetEnv()) != 0 {
		t.Fatalf("delete job start: %+v %v", js, err)
	}
	if _, err := e.svc.GetApp(ctx, e.admin, "shop"); err != nil {
		t.Fatalf("app gone before its files: %v", err)
	}
	if _, err := e.svc.JobEvents(ctx, e.srv.ID, []*agentv1.ConnectRequest{{Msg: &agentv1.ConnectRequest_JobResult{JobResult: &agentv1.JobResult{
		JobId: res.Job.ID.String(), Seq: 1, Status: string(store.DeploymentSucceeded),
	}}}}); err != nil {
		t.Fatal(err)
	}
	// Deleted: not found by name or id, not listed; history kept.
	if _, err := e.svc.GetApp(ctx, e.admin, "shop"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted app found by name: %v", err)
	}
	if _, err := e.svc.GetApp(ctx, e.admin, a.ID.String()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted app found by id: %v", err)
	}
	if list, err := e.svc.ListApps(ctx, e.admin, ""); err != nil || len(list) != 0 {
		t.Fatalf("list: %+v %v", list, err)
	}
	hist, err := e.svc.ListDeployments(ctx, e.admin, a.ID.String(), nil, 100)
	if err != nil || len(hist) != 3 {
		t.Fatalf("history of the deleted app: %d %v", len(hist), err)
	}
	// The deploy queued behind the delete is refused at dispatch.
	for _, d := range hist {
		if d.Kind == store.JobDeploy && !d.Status.Finished() {
			if _, err := e.svc.jobStart(ctx, mustApp(t, e, a.ID), d); !errors.Is(err, ErrRefused) {
				t.Fatalf("deploy of a deleted app built: %v", err)
			}
		}
	}
	// The name and path are free again; --keep-files deletes at once.
	b := e.app(t, "shop")
	res, err = e.svc.DeleteApp(ctx, e.admin, Peer{}, "shop", true)
	if err != nil || res.Job != nil || res.App.DeletedAt == nil || res.App.ID != b.ID {
		t.Fatalf("keep files: %+v %v", res, err)
	}
	// A server whose apps are all deleted can be removed.
	if err := e.st.DeleteServer(ctx, e.srv.ID); err != nil {
		t.Fatalf("remove server after its apps were deleted: %v", err)
	}
}

func mustApp(t *testing.T, e *env, id store.ID) store.App {
	t.Helper()
	a, err := e.st.App(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestDeployScriptPath(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	e.app(t, "shop")
	p := "deploy/berth.sh"
	// It decides what code runs: deploy scope.
	if _, err := e.svc.UpdateApp(ctx, e.as(store.ScopeWrite), Peer{}, UpdateAppParams{App: "shop", DeployScriptPath: &p}); err == nil {
		t.Fatal("write scope set a deploy script path")
	}
	a, err := e.svc.UpdateApp(ctx, e.as(store.ScopeDeploy), Peer{}, UpdateAppParams{App: "shop", DeployScriptPath: &p})
	if err != nil || a.DeployScriptPath == nil || *a.DeployScriptPath != p {
		t.Fatalf("set path: %+v %v", a.DeployScriptPath, err)
	}
	for _, bad := range []string{"../x.sh", "/etc/passwd", "a/../../b", "."} {
		if _, err := e.svc.UpdateApp(ctx, e.admin, Peer{}, UpdateAppParams{App: "shop", DeployScriptPath: &bad}); !errors.Is(err, ErrInvalid) {
			t.Errorf("path %q: %v", bad, err)
		}
	}
	script := "echo hi\n"
	if _, err := e.svc.UpdateApp(ctx, e.admin, Peer{}, UpdateAppParams{App: "shop", DeployScript: &script, DeployScriptPath: &p}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("script and path together: %v", err)
	}
	if _, err := e.svc.CreateApp(ctx, e.admin, Peer{}, CreateAppParams{Server: "web-1", AppSettings: store.AppSettings{
		Name: "two", RepositoryURL: "https://git.example.com/x.git", DeployScript: script, DeployScriptPath: &p}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("create with both: %v", err)
	}
	// A stored script replaces the path.
	a, err = e.svc.UpdateApp(ctx, e.admin, Peer{}, UpdateAppParams{App: "shop", DeployScript: &script})
	if err != nil || a.DeployScriptPath != nil || a.DeployScript != script {
		t.Fatalf("script replaces path: %+v %v", a, err)
	}
	a, err = e.svc.UpdateApp(ctx, e.admin, Peer{}, UpdateAppParams{App: "shop", DeployScriptPath: &p})
	if err != nil || a.DeployScript != "" {
		t.Fatalf("path replaces script: %+v %v", a, err)
	}
	q, err := e.svc.Deploy(ctx, e.admin, Peer{}, DeployParams{App: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	js, err := e.svc.jobStart(ctx, a, q.Deployment)
	if err != nil || js.GetDeployScriptPath() != p || js.GetDeployScript() != "" {
		t.Fatalf("job start: %+v %v", js, err)
	}
}

// TestUpdateAppRefusesAStaleWrite: an update judged against one read of
// the app must not write its whole row back over a change made after that
// read (a write-scoped edit of releases kept would restore the branch a
// deploy-scoped caller had just changed). The other change holds the row
// lock until the update has read the app and waits for the lock.
func TestUpdateAppRefusesAStaleWrite(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	a := e.app(t, "shop")
	locked, release, txDone := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		txDone <- e.st.InTx(ctx, func(tx *store.Store) error {
			cur, err := tx.LockApp(ctx, a.ID)
			if err != nil {
				return err
			}
			s := cur.AppSettings
			s.Branch = "hotfix"
			if _, err := tx.UpdateApp(ctx, a.ID, s); err != nil {
				return err
			}
			close(locked)
			<-release
			return nil
		})
	}()
	<-locked
	keep := 3
	res := make(chan error, 1)
	go func() {
		_, err := e.svc.UpdateApp(ctx, e.as(store.ScopeWrite), Peer{}, UpdateAppParams{App: "shop", ReleasesToKeep: &keep})
		res <- err
	}()
	// The update has read the app and now waits for the row lock.
	deadline := time.Now().Add(time.Minute)
	for {
		var waiting int
		if err := e.st.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the update never waited for the row lock")
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	if err := <-txDone; err != nil {
		t.Fatal(err)
	}
	if err := <-res; !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "changed by someone else") {
		t.Fatalf("stale update: err = %v, want a refusal saying the app changed", err)
	}
	got, err := e.st.App(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Branch != "hotfix" || got.ReleasesToKeep == keep {
		t.Fatalf("after the refused update: branch %q keep %d, want hotfix and the old keep", got.Branch, got.ReleasesToKeep)
	}
	// Read again, the same update goes through and keeps the branch.
	if _, err := e.svc.UpdateApp(ctx, e.as(store.ScopeWrite), Peer{}, UpdateAppParams{App: "shop", ReleasesToKeep: &keep}); err != nil {
		t.Fatal(err)
	}
	if got, _ = e.st.App(ctx, a.ID); got.Branch != "hotfix" || got.ReleasesToKeep != keep {
		t.Fatalf("retried update: branch %q keep %d", got.Branch, got.ReleasesToKeep)
	}
}
