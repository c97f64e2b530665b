package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
)

func TestAppProcessesStore(t *testing.T) {
	ctx := context.Background()
	e := newAppsEnv(t)
	srv := rawServer(t, e.db, "web-1")
	other := rawServer(t, e.db, "web-2")
	a := e.mkApp(t, srv, "shop")
	b := e.mkApp(t, srv, "blog")
	c := e.mkApp(t, other, "wiki")

	web := store.AppProcess{AppID: a.ID, Name: "web", Command: "./server", Instances: 2, Port: true, HealthPath: "/up",
		StopSignal: "TERM", StopGraceSeconds: 30, Restart: "always"}
	p, err := e.st.PutAppProcess(ctx, web, false)
	if err != nil {
		t.Fatal(err)
	}
	if p.Instances != 2 || !p.Port || p.HealthPath != "/up" {
		t.Fatalf("stored %+v", p)
	}
	_, err = e.st.PutAppProcess(ctx, web, false)
	wantErr(t, "add twice", err, store.ErrConflict)
	web.Instances = 3
	p2, err := e.st.PutAppProcess(ctx, web, true)
	if err != nil || p2.ID != p.ID || p2.Instances != 3 {
		t.Fatalf("replace: %+v %v", p2, err)
	}
	bad := web
	bad.Name, bad.Instances = "Bad_Name", 1
	_, err = e.st.PutAppProcess(ctx, bad, false)
	wantErr(t, "bad name", err, store.ErrInvalid)
	bad.Name, bad.Instances = "worker", 33
	_, err = e.st.PutAppProcess(ctx, bad, false)
	wantErr(t, "33 instances", err, store.ErrInvalid)
	bad.Instances, bad.Restart = 1, "sometimes"
	_, err = e.st.PutAppProcess(ctx, bad, false)
	wantErr(t, "bad restart", err, store.ErrInvalid)

	// Upstream ports: lowest free per server among live apps, stable.
	pa, err := e.st.AllocateUpstreamPort(ctx, a.ID)
	if err != nil || pa != 10000 {
		t.Fatalf("first port %d %v", pa, err)
	}
	if again, err := e.st.AllocateUpstreamPort(ctx, a.ID); err != nil || again != pa {
		t.Fatalf("port moved: %d %v", again, err)
	}
	if pb, err := e.st.AllocateUpstreamPort(ctx, b.ID); err != nil || pb != 10001 {
		t.Fatalf("second app's port %d %v", pb, err)
	}
	if pc, err := e.st.AllocateUpstreamPort(ctx, c.ID); err != nil || pc != 10000 {
		t.Fatalf("other server's port %d %v", pc, err)
	}
	if got, _ := e.st.App(ctx, a.ID); got.UpstreamPort != 10000 {
		t.Fatalf("app's upstream port %d", got.UpstreamPort)
	}

	// Status: only for an app of the reporting server; newest wins.
	now := time.Now().UTC().Truncate(time.Microsecond)
	ok, err := e.st.SetProcessStatus(ctx, srv, store.ProcessStatus{AppID: a.ID, Report: []byte(`{"appId":"x"}`), ReportedAt: now})
	if err != nil || !ok {
		t.Fatalf("set status: %v %v", ok, err)
	}
	if ok, err := e.st.SetProcessStatus(ctx, other, store.ProcessStatus{AppID: a.ID, Report: []byte(`{"bad":1}`), ReportedAt: now.Add(time.Second)}); err != nil || ok {
		t.Fatalf("another server's report stored: %v %v", ok, err)
	}
	if ok, _ := e.st.SetProcessStatus(ctx, srv, store.ProcessStatus{AppID: a.ID, Report: []byte(`{"old":1}`), ReportedAt: now.Add(-time.Second)}); ok {
		t.Fatal("an older report replaced a newer one")
	}
	big := make([]byte, store.MaxProcessReport+1)
	_, err = e.st.SetProcessStatus(ctx, srv, store.ProcessStatus{AppID: a.ID, Report: big, ReportedAt: now})
	wantErr(t, "oversized report", err, store.ErrInvalid)
	st, err := e.st.ProcessStatus(ctx, a.ID)
	if err != nil || string(st.Report) != `{"appId": "x"}` || !st.ReportedAt.Equal(now) {
		t.Fatalf("status %s %v %v", st.Report, st.ReportedAt, err)
	}
	if err := e.st.ClearProcessStatus(ctx, srv, nil, now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if st, err := e.st.ProcessStatus(ctx, a.ID); err != nil || string(st.Report) != "{}" || !st.ReportedAt.Equal(now.Add(time.Second)) {
		t.Fatalf("cleared status %s %v %v", st.Report, st.ReportedAt, err)
	}
	if _, err := e.st.ProcessStatus(ctx, c.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("another server's app got a status: %v", err)
	}

	if err := e.st.DeleteAppProcess(ctx, a.ID, "web"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "delete twice", e.st.DeleteAppProcess(ctx, a.ID, "web"), store.ErrNotFound)
}

func TestAppSchedulesStore(t *testing.T) {
	ctx := context.Background()
	e := newAppsEnv(t)
	srv := rawServer(t, e.db, "web-1")
	a := e.mkApp(t, srv, "shop")
	past := time.Now().Add(-time.Minute)
	sc, err := e.st.PutAppSchedule(ctx, store.AppSchedule{AppID: a.ID, Name: "report", Cron: "* * * * *", Command: "echo hi", NextRunAt: past}, false)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.st.PutAppSchedule(ctx, store.AppSchedule{AppID: a.ID, Name: "report", Cron: "* * * * *", Command: "x", NextRunAt: past}, false)
	wantErr(t, "add twice", err, store.ErrConflict)

	// Claiming locks: a second claimer in another transaction skips it.
	err = e.st.InTx(ctx, func(tx *store.Store) error {
		due, err := tx.ClaimDueAppSchedules(ctx, time.Now(), 10)
		if err != nil || len(due) != 1 || due[0].ID != sc.ID {
			t.Fatalf("due %v %v", due, err)
		}
		other, err := e.st.ClaimDueAppSchedules(ctx, time.Now(), 10)
		if err != nil || len(other) != 0 {
			t.Fatalf("second claimer got %v %v", other, err)
		}
		return tx.SetAppScheduleNextRun(ctx, sc.ID, time.Now().Add(time.Hour))
	})
	if err != nil {
		t.Fatal(err)
	}
	if due, _ := e.st.ClaimDueAppSchedules(ctx, time.Now(), 10); len(due) != 0 {
		t.Fatalf("still due after moving next_run_at: %v", due)
	}

	// One unfinished run per schedule; schedule runs do not hold the app's queue.
	cmd, name := sc.Command, sc.Name
	run, err := e.st.CreateDeployment(ctx, store.CreateDeploymentParams{AppID: a.ID, TriggeredBy: store.TriggerSchedule,
		Kind: store.JobSchedule, ScheduleID: &sc.ID, ScheduleName: &name, ScheduleCommand: &cmd})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.st.CreateDeployment(ctx, store.CreateDeploymentParams{AppID: a.ID, TriggeredBy: store.TriggerSchedule,
		Kind: store.JobSchedule, ScheduleID: &sc.ID, ScheduleName: &name, ScheduleCommand: &cmd})
	wantErr(t, "overlapping run", err, store.ErrConflict)
	if u, err := e.st.UnfinishedScheduleRun(ctx, sc.ID); err != nil || u.ID != run.ID {
		t.Fatalf("unfinished %v %v", u.ID, err)
	}
	dep, err := e.st.CreateDeployment(ctx, store.CreateDeploymentParams{AppID: a.ID, TriggeredBy: store.TriggerUser})
	if err != nil {
		t.Fatal(err)
	}
	claimed, err := e.st.ClaimQueuedDeployments(ctx, []store.ID{srv}, 10)
	if err != nil || len(claimed) != 2 {
		t.Fatalf("claimed %d (want the run and the deploy side by side): %v", len(claimed), err)
	}
	_ = dep
	skip, err := e.st.CreateSkippedScheduleRun(ctx, sc, "the previous run is unfinished")
	if err != nil || !skip.Skipped || skip.Status != store.DeploymentCanceled || skip.FinishedAt == nil {
		t.Fatalf("skipped run %+v %v", skip, err)
	}
	runs, err := e.st.ScheduleRuns(ctx, sc.ID, 10)
	if err != nil || len(runs) != 2 || runs[0].ID != skip.ID {
		t.Fatalf("runs %v %v", runs, err)
	}
	last, err := e.st.LastScheduleRuns(ctx, a.ID)
	if err != nil || last[sc.ID].ID != skip.ID {
		t.Fatalf("last runs %v %v", last, err)
	}

	// Retention keeps the newest finished runs; unfinished ones stay.
	for range 3 {
		if _, err := e.st.CreateSkippedScheduleRun(ctx, sc, "busy"); err != nil {
			t.Fatal(err)
		}
	}
	n, err := e.st.PruneScheduleRuns(ctx, 2)
	if err != nil || n != 2 {
		t.Fatalf("pruned %d %v", n, err)
	}
	runs, _ = e.st.ScheduleRuns(ctx, sc.ID, 10)
	if len(runs) != 3 { // 2 kept + the unfinished one (the 3rd newest)
		t.Fatalf("after pruning %d runs", len(runs))
	}

	if err := e.st.DeleteAppSchedule(ctx, a.ID, "report"); err != nil {
		t.Fatal(err)
	}
	if d, err := e.st.Deployment(ctx, run.ID); err != nil || d.ScheduleID != nil || d.ScheduleName == nil {
		t.Fatalf("run after removal %+v %v", d, err)
	}
}
