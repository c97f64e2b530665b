package store_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
)

// deployTo brings a new deployment of a new app on srv to status st.
func (e appsEnv) deployTo(t *testing.T, srv store.ID, name string, st store.DeploymentStatus) store.Deployment {
	t.Helper()
	ctx := context.Background()
	a := e.mkApp(t, srv, name)
	d, err := e.st.CreateDeployment(ctx, store.CreateDeploymentParams{AppID: a.ID, TriggeredBy: store.TriggerUser})
	if err != nil {
		t.Fatal(err)
	}
	if st == store.DeploymentQueued {
		return d
	}
	if d, err = e.st.DispatchDeployment(ctx, d.ID); err != nil {
		t.Fatal(err)
	}
	if st == store.DeploymentDispatched {
		return d
	}
	if d, err = e.st.StartDeployment(ctx, d.ID, nil); err != nil {
		t.Fatal(err)
	}
	if st != store.DeploymentRunning {
		t.Fatalf("deployTo %s", st)
	}
	return d
}

func TestDeploymentLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newAppsEnv(t)
	st := e.st
	srv := rawServer(t, e.db, "web-1")
	user := rawUser(t, e.db, "ops@example.com")
	app := e.mkApp(t, srv, "shop")

	d, err := st.CreateDeployment(ctx, store.CreateDeploymentParams{
		AppID: app.ID, UserID: &user, TriggeredBy: store.TriggerUser, CommitSHA: ptrTo("abc1234"),
		ReleasePath: ptrTo("/srv/berth/shop/releases/x"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != store.DeploymentQueued || d.AppID != app.ID || *d.UserID != user || d.Environment != store.EnvironmentProduction ||
		d.Branch != "main" || d.TimeoutSeconds != 1800 || !d.DeadlineAt.Equal(d.QueuedAt.Add(1800*time.Second)) ||
		*d.CommitSHA != "abc1234" || d.DispatchedAt != nil || d.FinishedAt != nil || d.LogBytes != 0 {
		t.Fatalf("created = %+v", d)
	}
	if got, err := st.Deployment(ctx, d.ID); err != nil || got.ID != d.ID || *got.ReleasePath != "/srv/berth/shop/releases/x" {
		t.Fatalf("get = %+v, %v", got, err)
	}
	_, err = st.Deployment(ctx, store.NewID())
	wantErr(t, "unknown deployment", err, store.ErrNotFound)

	// Forbidden from queued: start, succeed, fail. Nothing changes.
	_, err = st.StartDeployment(ctx, d.ID, nil)
	wantErr(t, "start queued", err, store.ErrWrongState)
	wantErr(t, "start queued (conflict)", err, store.ErrConflict)
	_, err = st.FinishDeployment(ctx, d.ID, store.DeploymentResult{Status: store.DeploymentSucceeded})
	wantErr(t, "succeed queued", err, store.ErrWrongState)
	_, err = st.FinishDeployment(ctx, d.ID, store.DeploymentResult{Status: store.DeploymentFailed, FailureReason: ptrTo("x")})
	wantErr(t, "fail queued", err, store.ErrWrongState)
	if got, _ := st.Deployment(ctx, d.ID); got.Status != store.DeploymentQueued || got.FailureReason != nil || got.StartedAt != nil || !got.UpdatedAt.Equal(d.UpdatedAt) {
		t.Fatalf("a refused transition changed the row: %+v", got)
	}

	// queued -> dispatched -> running -> succeeded.
	d, err = st.DispatchDeployment(ctx, d.ID)
	if err != nil || d.Status != store.DeploymentDispatched || d.DispatchedAt == nil || !d.DeadlineAt.Equal(d.DispatchedAt.Add(1800*time.Second)) {
		t.Fatalf("dispatch = %+v, %v", d, err)
	}
	_, err = st.DispatchDeployment(ctx, d.ID)
	wantErr(t, "dispatch twice", err, store.ErrWrongState)
	_, err = st.FinishDeployment(ctx, d.ID, store.DeploymentResult{Status: store.DeploymentSucceeded})
	wantErr(t, "succeed dispatched", err, store.ErrWrongState)
	startedAt := time.Now().Add(-time.Second).UTC().Truncate(time.Microsecond)
	d, err = st.StartDeployment(ctx, d.ID, &startedAt)
	if err != nil || d.Status != store.DeploymentRunning || !d.StartedAt.Equal(startedAt) {
		t.Fatalf("start = %+v, %v", d, err)
	}
	_, err = st.StartDeployment(ctx, d.ID, nil)
	wantErr(t, "start twice", err, store.ErrWrongState)
	d, err = st.SetDeploymentCommit(ctx, d.ID, "abc1234def5678abc1234def5678abc1234def56", ptrTo("Fix checkout"), ptrTo("Ada"))
	if err != nil || *d.CommitSHA != "abc1234def5678abc1234def5678abc1234def56" || *d.CommitMessage != "Fix checkout" || *d.CommitAuthor != "Ada" {
		t.Fatalf("set commit = %+v, %v", d, err)
	}
	d, err = st.SetDeploymentCommit(ctx, d.ID, "abc1234def5678abc1234def5678abc1234def57", nil, nil)
	if err != nil || *d.CommitMessage != "Fix checkout" {
		t.Fatalf("set commit keeps message: %+v, %v", d, err)
	}
	_, err = st.SetDeploymentCommit(ctx, d.ID, "NOT-A-SHA", nil, nil)
	wantErr(t, "bad sha", err, store.ErrInvalid)
	d, err = st.FinishDeployment(ctx, d.ID, store.DeploymentResult{Status: store.DeploymentSucceeded, ExitCode: ptrTo(0)})
	if err != nil || d.Status != store.DeploymentSucceeded || d.FinishedAt == nil || *d.ExitCode != 0 || d.FailedStep != nil {
		t.Fatalf("succeed = %+v, %v", d, err)
	}
	for _, to := range []store.DeploymentStatus{store.DeploymentSucceeded, store.DeploymentFailed, store.DeploymentCanceled, store.DeploymentTimedOut} {
		_, err = st.FinishDeployment(ctx, d.ID, store.DeploymentResult{Status: to, FailureReason: ptrTo("late")})
		wantErr(t, "finish a finished deployment as "+string(to), err, store.ErrWrongState)
	}
	_, err = st.RequestDeploymentCancel(ctx, d.ID)
	wantErr(t, "cancel a finished deployment", err, store.ErrWrongState)
	if got, _ := st.Deployment(ctx, d.ID); got.Status != store.DeploymentSucceeded || got.FailureReason != nil || !got.FinishedAt.Equal(*d.FinishedAt) {
		t.Fatalf("a refused finish changed the row: %+v", got)
	}
	_, err = st.FinishDeployment(ctx, d.ID, store.DeploymentResult{Status: store.DeploymentRunning})
	wantErr(t, "finish with a non-final status", err, store.ErrInvalid)
	_, err = st.DispatchDeployment(ctx, store.NewID())
	wantErr(t, "dispatch unknown", err, store.ErrNotFound)
	_, err = st.FinishDeployment(ctx, store.NewID(), store.DeploymentResult{Status: store.DeploymentFailed})
	wantErr(t, "finish unknown", err, store.ErrNotFound)

	// Every other terminal transition, allowed or not, from each state.
	type tc struct {
		from store.DeploymentStatus
		to   store.DeploymentStatus
		ok   bool
	}
	cases := []tc{
		{store.DeploymentQueued, store.DeploymentCanceled, true},
		{store.DeploymentQueued, store.DeploymentTimedOut, true},
		{store.DeploymentQueued, store.DeploymentFailed, false},
		{store.DeploymentQueued, store.DeploymentSucceeded, false},
		{store.DeploymentDispatched, store.DeploymentFailed, true},
		{store.DeploymentDispatched, store.DeploymentCanceled, true},
		{store.DeploymentDispatched, store.DeploymentTimedOut, true},
		{store.DeploymentDispatched, store.DeploymentSucceeded, false},
		{store.DeploymentRunning, store.DeploymentFailed, true},
		{store.DeploymentRunning, store.DeploymentCanceled, true},
		{store.DeploymentRunning, store.DeploymentTimedOut, true},
	}
	for i, c := range cases {
		d := e.deployTo(t, srv, fmt.Sprintf("app-%d", i), c.from)
		res := store.DeploymentResult{Status: c.to, FailedStep: ptrTo("health_check"), ExitCode: ptrTo(3), FailureReason: ptrTo("health check failed")}
		got, err := st.FinishDeployment(ctx, d.ID, res)
		if !c.ok {
			wantErr(t, fmt.Sprintf("%s -> %s", c.from, c.to), err, store.ErrWrongState)
			if cur, _ := st.Deployment(ctx, d.ID); cur.Status != c.from || cur.FinishedAt != nil || cur.FailedStep != nil {
				t.Fatalf("%s -> %s refused but changed the row: %+v", c.from, c.to, cur)
			}
			continue
		}
		if err != nil || got.Status != c.to || got.FinishedAt == nil || *got.FailedStep != "health_check" || *got.ExitCode != 3 || *got.FailureReason != "health check failed" {
			t.Fatalf("%s -> %s = %+v, %v", c.from, c.to, got, err)
		}
	}

	// Cancel requests: recorded once, on an unfinished deployment.
	q := e.deployTo(t, srv, "cancel-me", store.DeploymentRunning)
	c1, err := st.RequestDeploymentCancel(ctx, q.ID)
	if err != nil || c1.CancelRequestedAt == nil || c1.Status != store.DeploymentRunning {
		t.Fatalf("request cancel = %+v, %v", c1, err)
	}
	c2, err := st.RequestDeploymentCancel(ctx, q.ID)
	if err != nil || !c2.CancelRequestedAt.Equal(*c1.CancelRequestedAt) {
		t.Fatalf("second request moved the time: %v vs %v, %v", c2.CancelRequestedAt, c1.CancelRequestedAt, err)
	}
	_, err = st.RequestDeploymentCancel(ctx, store.NewID())
	wantErr(t, "cancel unknown", err, store.ErrNotFound)
}

func TestDeploymentQueueOnePerApp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newAppsEnv(t)
	st := e.st
	s1, s2 := rawServer(t, e.db, "web-1"), rawServer(t, e.db, "web-2")
	appA, appB, appC := e.mkApp(t, s1, "a"), e.mkApp(t, s1, "b"), e.mkApp(t, s2, "c")
	enqueue := func(app store.ID) store.Deployment {
		t.Helper()
		d, err := st.CreateDeployment(ctx, store.CreateDeploymentParams{AppID: app, TriggeredBy: store.TriggerUser})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	ids := func(ds []store.Deployment) []store.ID {
		out := make([]store.ID, len(ds))
		for i, d := range ds {
			out[i] = d.ID
		}
		return out
	}
	a1, a2, b1, c1 := enqueue(appA.ID), enqueue(appA.ID), enqueue(appB.ID), enqueue(appC.ID)

	got, err := st.ClaimQueuedDeployments(ctx, nil, 10)
	if err != nil || !slices.Equal(ids(got), []store.ID{a1.ID, b1.ID, c1.ID}) {
		t.Fatalf("first claim = %v, %v; want a1 b1 c1", ids(got), err)
	}
	for _, d := range got {
		if d.Status != store.DeploymentDispatched || d.DispatchedAt == nil {
			t.Fatalf("claimed row not dispatched: %+v", d)
		}
	}
	if got, err := st.ClaimQueuedDeployments(ctx, nil, 10); err != nil || len(got) != 0 {
		t.Fatalf("second claim while a1 is dispatched = %v, %v", ids(got), err)
	}
	if _, err := st.StartDeployment(ctx, a1.ID, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := st.ClaimQueuedDeployments(ctx, nil, 10); err != nil || len(got) != 0 {
		t.Fatalf("claim while a1 is running = %v, %v", ids(got), err)
	}
	if got, err := st.NextQueuedDeployments(ctx, nil, 10); err != nil || len(got) != 0 {
		t.Fatalf("next while a1 is running = %v, %v", ids(got), err)
	}
	// The unique index refuses a direct dispatch beside a running one.
	_, err = st.DispatchDeployment(ctx, a2.ID)
	wantErr(t, "dispatch beside a running deployment", err, store.ErrConflict)
	if cur, _ := st.Deployment(ctx, a2.ID); cur.Status != store.DeploymentQueued {
		t.Fatalf("a2 = %s after a refused dispatch", cur.Status)
	}

	if _, err := st.FinishDeployment(ctx, a1.ID, store.DeploymentResult{Status: store.DeploymentSucceeded}); err != nil {
		t.Fatal(err)
	}
	if got, err := st.ClaimQueuedDeployments(ctx, []store.ID{s2}, 10); err != nil || len(got) != 0 {
		t.Fatalf("claim for web-2 = %v, %v", ids(got), err)
	}
	if got, err := st.ClaimQueuedDeployments(ctx, []store.ID{}, 10); err != nil || len(got) != 0 {
		t.Fatalf("claim for no server = %v, %v", ids(got), err)
	}
	if got, err := st.ClaimQueuedDeployments(ctx, []store.ID{s1}, 10); err != nil || !slices.Equal(ids(got), []store.ID{a2.ID}) {
		t.Fatalf("claim for web-1 after a1 finished = %v, %v; want a2", ids(got), err)
	}

	// NextQueuedDeployments holds its rows: a second dispatcher skips the
	// app entirely (neither its oldest nor its second queued row).
	appD := e.mkApp(t, s2, "d")
	d1, d2 := enqueue(appD.ID), enqueue(appD.ID)
	err = st.InTx(ctx, func(tx *store.Store) error {
		mine, err := tx.NextQueuedDeployments(ctx, []store.ID{s2}, 10)
		if err != nil {
			return err
		}
		if !slices.Equal(ids(mine), []store.ID{d1.ID}) {
			return fmt.Errorf("next in tx = %v, want d1", ids(mine))
		}
		other, err := st.NextQueuedDeployments(ctx, nil, 10)
		if err != nil {
			return err
		}
		if len(other) != 0 {
			return fmt.Errorf("second dispatcher got %v while d1 is locked", ids(other))
		}
		claimed, err := st.ClaimQueuedDeployments(ctx, nil, 10)
		if err != nil {
			return err
		}
		if len(claimed) != 0 {
			return fmt.Errorf("second dispatcher claimed %v while d1 is locked", ids(claimed))
		}
		_, err = tx.DispatchDeployment(ctx, d1.ID)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if cur, _ := st.Deployment(ctx, d1.ID); cur.Status != store.DeploymentDispatched {
		t.Fatalf("d1 = %s after the tx", cur.Status)
	}
	if got, err := st.ClaimQueuedDeployments(ctx, nil, 10); err != nil || len(got) != 0 {
		t.Fatalf("claim after d1 dispatched = %v, %v (d2 must wait)", ids(got), err)
	}
	// A canceled queued deployment does not block the queue.
	if _, err := st.FinishDeployment(ctx, d1.ID, store.DeploymentResult{Status: store.DeploymentCanceled}); err != nil {
		t.Fatal(err)
	}
	if got, err := st.ClaimQueuedDeployments(ctx, nil, 1); err != nil || !slices.Equal(ids(got), []store.ID{d2.ID}) {
		t.Fatalf("claim after d1 canceled = %v, %v; want d2", ids(got), err)
	}
}

func TestDeploymentCreateRules(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newAppsEnv(t)
	st := e.st
	srv := rawServer(t, e.db, "web-1")
	app, other := e.mkApp(t, srv, "shop"), e.mkApp(t, srv, "blog")

	hook := store.CreateDeploymentParams{AppID: app.ID, TriggeredBy: store.TriggerWebhook, TriggerRef: ptrTo("delivery-1"), Branch: "main"}
	first, err := st.CreateDeployment(ctx, hook)
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.CreateDeployment(ctx, hook)
	wantErr(t, "replayed webhook delivery", err, store.ErrConflict)
	// Inside a transaction the replay leaves the transaction usable.
	err = st.InTx(ctx, func(tx *store.Store) error {
		if _, err := tx.CreateDeployment(ctx, hook); err == nil {
			return fmt.Errorf("replay in tx succeeded")
		}
		_, err := tx.Deployment(ctx, first.ID)
		return err
	})
	if err != nil {
		t.Fatalf("tx after a replay: %v", err)
	}
	var n int
	if err := e.db.Pool.QueryRow(ctx, `SELECT count(*) FROM deployments WHERE app_id = $1`, pgu(app.ID)).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d deployments after replays, %v", n, err)
	}
	if got, err := st.DeploymentByWebhookDelivery(ctx, app.ID, "delivery-1"); err != nil || got.ID != first.ID {
		t.Fatalf("by delivery = %+v, %v", got, err)
	}
	_, err = st.DeploymentByWebhookDelivery(ctx, other.ID, "delivery-1")
	wantErr(t, "delivery of another app", err, store.ErrNotFound)
	// The same delivery id for another app, and one API token's repeated
	// deploys, are fine.
	hook.AppID = other.ID
	if _, err := st.CreateDeployment(ctx, hook); err != nil {
		t.Fatalf("same delivery for another app: %v", err)
	}
	tok := store.CreateDeploymentParams{AppID: app.ID, TriggeredBy: store.TriggerAPIToken, TriggerRef: ptrTo(store.NewID().String())}
	for range 2 {
		if _, err := st.CreateDeployment(ctx, tok); err != nil {
			t.Fatalf("api token deploy: %v", err)
		}
	}

	_, err = st.CreateDeployment(ctx, store.CreateDeploymentParams{AppID: store.NewID(), TriggeredBy: store.TriggerUser})
	wantErr(t, "unknown app", err, store.ErrMissingParent)
	_, err = st.CreateDeployment(ctx, store.CreateDeploymentParams{AppID: app.ID, TriggeredBy: store.TriggerUser, UserID: ptrTo(store.NewID())})
	wantErr(t, "unknown user", err, store.ErrMissingParent)
	_, err = st.CreateDeployment(ctx, store.CreateDeploymentParams{AppID: app.ID, TriggeredBy: store.TriggerWebhook})
	wantErr(t, "webhook without delivery id", err, store.ErrInvalid)
	_, err = st.CreateDeployment(ctx, store.CreateDeploymentParams{AppID: app.ID, TriggeredBy: "cron"})
	wantErr(t, "unknown trigger", err, store.ErrInvalid)
	_, err = st.CreateDeployment(ctx, store.CreateDeploymentParams{AppID: app.ID, TriggeredBy: store.TriggerUser, Environment: "qa"})
	wantErr(t, "unknown environment", err, store.ErrInvalid)
	_, err = st.CreateDeployment(ctx, store.CreateDeploymentParams{AppID: app.ID, TriggeredBy: store.TriggerUser, CommitSHA: ptrTo("HEAD")})
	wantErr(t, "bad commit", err, store.ErrInvalid)

	// Explicit branch, environment, timeout and deadline.
	deadline := time.Now().Add(5 * time.Minute).UTC().Truncate(time.Microsecond)
	d, err := st.CreateDeployment(ctx, store.CreateDeploymentParams{
		AppID: app.ID, TriggeredBy: store.TriggerUser, Environment: store.EnvironmentStaging, Branch: "develop",
		TimeoutSeconds: 60, DeadlineAt: &deadline,
	})
	if err != nil || d.Branch != "develop" || d.Environment != store.EnvironmentStaging || d.TimeoutSeconds != 60 || !d.DeadlineAt.Equal(deadline) {
		t.Fatalf("explicit = %+v, %v", d, err)
	}

	// Rollbacks point at a deployment of the same app only.
	rb, err := st.CreateDeployment(ctx, store.CreateDeploymentParams{AppID: app.ID, TriggeredBy: store.TriggerRollback, RollbackFromID: &first.ID})
	if err != nil || *rb.RollbackFromID != first.ID || rb.TriggeredBy != store.TriggerRollback {
		t.Fatalf("rollback = %+v, %v", rb, err)
	}
	_, err = st.CreateDeployment(ctx, store.CreateDeploymentParams{AppID: other.ID, TriggeredBy: store.TriggerRollback, RollbackFromID: &first.ID})
	wantErr(t, "rollback to another app's deployment", err, store.ErrMissingParent)
	_, err = st.CreateDeployment(ctx, store.CreateDeploymentParams{AppID: app.ID, TriggeredBy: store.TriggerUser, RollbackFromID: &first.ID})
	wantErr(t, "rollback pointer on a normal deploy", err, store.ErrInvalid)
}

func TestDeploymentListsAndReaper(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newAppsEnv(t)
	st := e.st
	s1, s2 := rawServer(t, e.db, "web-1"), rawServer(t, e.db, "web-2")
	user := rawUser(t, e.db, "ops@example.com")
	appA, appB := e.mkApp(t, s1, "a"), e.mkApp(t, s2, "b")

	var onA, all []store.ID
	var succeeded []store.ID
	for i := range 10 {
		app := appA
		if i%3 == 2 {
			app = appB
		}
		d, err := st.CreateDeployment(ctx, store.CreateDeploymentParams{AppID: app.ID, TriggeredBy: store.TriggerUser, UserID: &user})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, d.ID)
		if app.ID == appA.ID {
			onA = append(onA, d.ID)
			if i < 6 { // run the first ones on A to success
				for _, step := range []func() error{
					func() error { _, err := st.DispatchDeployment(ctx, d.ID); return err },
					func() error { _, err := st.StartDeployment(ctx, d.ID, nil); return err },
					func() error {
						_, err := st.FinishDeployment(ctx, d.ID, store.DeploymentResult{Status: store.DeploymentSucceeded})
						return err
					},
				} {
					if err := step(); err != nil {
						t.Fatal(err)
					}
				}
				succeeded = append(succeeded, d.ID)
			}
		}
	}
	list := func(f store.DeploymentFilter) func(*store.ID, int) ([]store.ID, error) {
		return func(before *store.ID, limit int) ([]store.ID, error) {
			f.Before, f.Limit = before, limit
			l, err := st.ListDeployments(ctx, f)
			out := make([]store.ID, len(l))
			for i, d := range l {
				out[i] = d.ID
			}
			return out, err
		}
	}
	checkNewestFirst(t, "all deployments", pageAll(t, 3, list(store.DeploymentFilter{})), all)
	checkNewestFirst(t, "app a", pageAll(t, 2, list(store.DeploymentFilter{AppID: &appA.ID})), onA)
	checkNewestFirst(t, "succeeded on a", pageAll(t, 2, list(store.DeploymentFilter{AppID: &appA.ID, Status: store.DeploymentSucceeded})), succeeded)
	checkNewestFirst(t, "rollback targets", pageAll(t, 2, func(before *store.ID, limit int) ([]store.ID, error) {
		l, err := st.SucceededDeployments(ctx, appA.ID, before, limit)
		out := make([]store.ID, len(l))
		for i, d := range l {
			out[i] = d.ID
		}
		return out, err
	}), succeeded)

	// Reaper and re-dispatch views. Claim one per app: A's next and B's first.
	claimed, err := st.ClaimQueuedDeployments(ctx, nil, 10)
	if err != nil || len(claimed) != 2 {
		t.Fatalf("claim = %d, %v", len(claimed), err)
	}
	if _, err := st.StartDeployment(ctx, claimed[1].ID, nil); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Minute)
	late, err := st.CreateDeployment(ctx, store.CreateDeploymentParams{AppID: appB.ID, TriggeredBy: store.TriggerUser, DeadlineAt: &past})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if od, err := st.OverdueDeployments(ctx, now, 10); err != nil || len(od) != 1 || od[0].ID != late.ID {
		t.Fatalf("overdue now = %v, %v", od, err)
	}
	// An hour from now the two active ones (deadline dispatch + 30 min) and
	// every still-queued one are overdue too; finished ones never.
	od, err := st.OverdueDeployments(ctx, now.Add(time.Hour), 100)
	if err != nil {
		t.Fatal(err)
	}
	var unfinished int
	if err := e.db.Pool.QueryRow(ctx, `SELECT count(*) FROM deployments WHERE status IN ('queued','dispatched','running')`).Scan(&unfinished); err != nil {
		t.Fatal(err)
	}
	if len(od) != unfinished || od[0].ID != late.ID {
		t.Fatalf("overdue in an hour = %d rows (first %s), want %d starting with %s", len(od), od[0].ID, unfinished, late.ID)
	}
	for i := 1; i < len(od); i++ {
		if od[i].DeadlineAt.Before(od[i-1].DeadlineAt) || od[i].Status.Finished() {
			t.Fatalf("overdue not by deadline or includes finished: %+v", od[i])
		}
	}
	for _, srv := range []store.ID{s1, s2} {
		act, err := st.ActiveDeploymentsForServer(ctx, srv)
		if err != nil || len(act) != 1 {
			t.Fatalf("active on %s = %v, %v", srv, act, err)
		}
		want := appA.ID
		if srv == s2 {
			want = appB.ID
		}
		if act[0].AppID != want || (act[0].Status != store.DeploymentDispatched && act[0].Status != store.DeploymentRunning) {
			t.Fatalf("active on %s = %+v", srv, act[0])
		}
	}

	// current_deployment_id: same app only; cleared when that deployment goes.
	cur := succeeded[len(succeeded)-1]
	a, err := st.SetAppCurrentDeployment(ctx, appA.ID, &cur)
	if err != nil || *a.CurrentDeploymentID != cur {
		t.Fatalf("set current = %+v, %v", a, err)
	}
	_, err = st.SetAppCurrentDeployment(ctx, appB.ID, &cur)
	wantErr(t, "current from another app", err, store.ErrMissingParent)
	rb, err := st.CreateDeployment(ctx, store.CreateDeploymentParams{AppID: appA.ID, TriggeredBy: store.TriggerRollback, RollbackFromID: &cur})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteDeployment(ctx, cur); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "delete twice", st.DeleteDeployment(ctx, cur), store.ErrNotFound)
	if a, _ := st.App(ctx, appA.ID); a.CurrentDeploymentID != nil {
		t.Fatalf("current not cleared: %v", a.CurrentDeploymentID)
	}
	if got, _ := st.Deployment(ctx, rb.ID); got.RollbackFromID != nil || got.AppID != appA.ID {
		t.Fatalf("rollback pointer not cleared: %+v", got)
	}
	// A deleted user leaves history; a deleted app takes its deployments.
	if _, err := e.db.Pool.Exec(ctx, `DELETE FROM users WHERE id = $1`, pgu(user)); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.Deployment(ctx, onA[0]); got.UserID != nil {
		t.Fatalf("user not cleared: %v", got.UserID)
	}
	// An app whose current pointer is set can be deleted with its
	// deployments (the cascade and the pointer's SET NULL meet on one row).
	bDone, err := st.ListDeployments(ctx, store.DeploymentFilter{AppID: &appB.ID})
	if err != nil || len(bDone) == 0 {
		t.Fatalf("deployments of b = %d, %v", len(bDone), err)
	}
	if _, err := st.SetAppCurrentDeployment(ctx, appB.ID, &bDone[0].ID); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteApp(ctx, appB.ID); err != nil {
		t.Fatal(err)
	}
	if l, _ := st.ListDeployments(ctx, store.DeploymentFilter{AppID: &appB.ID}); len(l) != 0 {
		t.Fatalf("%d deployments left of a deleted app", len(l))
	}
}

// A deployment created with Dispatch starts dispatched when its app is
// idle, and is refused with ErrAppBusy when the app has an unfinished one
// (queued, dispatched or running), including one dispatched by a
// transaction that commits while the create waits on the one-per-app
// index.
func TestDeploymentCreateDispatched(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newAppsEnv(t)
	srv := rawServer(t, e.db, "web-1")
	create := func(app store.ID, dispatch bool) (store.Deployment, error) {
		return e.st.CreateDeployment(ctx, store.CreateDeploymentParams{AppID: app, TriggeredBy: store.TriggerUser, TimeoutSeconds: 600, Dispatch: dispatch})
	}

	a := e.mkApp(t, srv, "idle")
	before := time.Now()
	d, err := create(a.ID, true)
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != store.DeploymentDispatched || d.DispatchedAt == nil ||
		d.DeadlineAt.Before(before.Add(590*time.Second)) || d.DeadlineAt.After(time.Now().Add(610*time.Second)) {
		t.Fatalf("created dispatched: %+v", d)
	}
	_, err = create(a.ID, true)
	wantErr(t, "dispatch beside a dispatched deployment", err, store.ErrAppBusy)
	// Queued instead, it waits its turn.
	q, err := create(a.ID, false)
	if err != nil || q.Status != store.DeploymentQueued {
		t.Fatalf("queued behind: %+v, %v", q, err)
	}
	if _, err := e.st.StartDeployment(ctx, d.ID, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.FinishDeployment(ctx, d.ID, store.DeploymentResult{Status: store.DeploymentSucceeded}); err != nil {
		t.Fatal(err)
	}
	_, err = create(a.ID, true)
	wantErr(t, "dispatch beside a queued deployment", err, store.ErrAppBusy)

	for _, st := range []store.DeploymentStatus{store.DeploymentRunning, store.DeploymentQueued} {
		busy := e.deployTo(t, srv, "busy-"+string(st), st)
		_, err := create(busy.AppID, true)
		wantErr(t, "dispatch beside a "+string(st)+" deployment", err, store.ErrAppBusy)
	}
	_, err = create(store.NewID(), true)
	if err == nil {
		t.Fatal("a deployment of a missing app was created")
	}

	// Two at once: the second waits on the index, then is refused.
	race := e.mkApp(t, srv, "race")
	done := make(chan error, 1)
	err = e.st.InTx(ctx, func(tx *store.Store) error {
		if _, err := tx.CreateDeployment(ctx, store.CreateDeploymentParams{AppID: race.ID, TriggeredBy: store.TriggerUser, Dispatch: true}); err != nil {
			return err
		}
		go func() { _, err := create(race.ID, true); done <- err }()
		// Commit only once the second INSERT waits on the unique index
		// behind this transaction, so the contended path is the one tested
		// (not a second insert that sees the first already committed).
		waitFor(t, "the second insert to wait on a lock", func() bool {
			var n int
			err := e.db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
				WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO deployments%'`).Scan(&n)
			return err == nil && n > 0
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, "dispatch racing a committed one", <-done, store.ErrAppBusy)
	list, err := e.st.ListDeployments(ctx, store.DeploymentFilter{AppID: &race.ID, Limit: 10})
	if err != nil || len(list) != 1 || list[0].Status != store.DeploymentDispatched {
		t.Fatalf("race left %+v, %v", list, err)
	}
}

// waitFor polls cond until it holds; the test's deadline bounds the wait.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-t.Context().Done():
			t.Fatalf("gave up waiting for %s", what)
		case <-tick.C:
		}
	}
}
