package store_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
)

func sum32(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

// backupTo brings a new backup to status st (queued, dispatched, running
// or succeeded).
func (e appsEnv) backupTo(t *testing.T, p store.CreateBackupParams, st store.BackupStatus) store.Backup {
	t.Helper()
	ctx := context.Background()
	b, err := e.st.CreateBackup(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		at store.BackupStatus
		fn func() (store.Backup, error)
	}{
		{store.BackupQueued, func() (store.Backup, error) { return e.st.DispatchBackup(ctx, b.ID) }},
		{store.BackupDispatched, func() (store.Backup, error) { return e.st.StartBackup(ctx, b.ID, nil) }},
		{store.BackupRunning, func() (store.Backup, error) {
			return e.st.SucceedBackup(ctx, b.ID, store.BackupObject{ObjectKey: "shop/" + b.ID.String() + ".zst", SizeBytes: 1234, ChecksumSHA256: sum32(7), EncryptionKeyID: "1"})
		}},
	}
	for _, s := range steps {
		if b.Status == st {
			return b
		}
		if s.at != b.Status {
			t.Fatalf("backupTo: at %s", b.Status)
		}
		if b, err = s.fn(); err != nil {
			t.Fatal(err)
		}
	}
	if b.Status != st {
		t.Fatalf("backupTo %s: at %s", st, b.Status)
	}
	return b
}

func TestBackupLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newAppsEnv(t)
	st := e.st
	srv := rawServer(t, e.db, "web-1")
	app := e.mkApp(t, srv, "shop")
	dest := e.mkDestination(t, "local")
	manual := store.CreateBackupParams{AppID: &app.ID, DestinationID: dest.ID, TriggeredBy: store.TriggerUser, Kind: store.BackupPostgres, Source: "shop_db", TimeoutSeconds: 3600}

	b, err := st.CreateBackup(ctx, manual)
	if err != nil {
		t.Fatal(err)
	}
	if b.Status != store.BackupQueued || b.AppName != "shop" || b.ServerID == nil || *b.ServerID != srv || b.Compression != store.CompressionZstd ||
		b.ScheduleID != nil || !b.DeadlineAt.Equal(b.QueuedAt.Add(time.Hour)) || b.ObjectKey != nil {
		t.Fatalf("created = %+v", b)
	}
	if got, err := st.Backup(ctx, b.ID); err != nil || got.Source != "shop_db" || got.Kind != store.BackupPostgres {
		t.Fatalf("get = %+v, %v", got, err)
	}
	_, err = st.Backup(ctx, store.NewID())
	wantErr(t, "unknown backup", err, store.ErrNotFound)

	// Constraints.
	bad := manual
	bad.TimeoutSeconds = 0
	_, err = st.CreateBackup(ctx, bad)
	wantErr(t, "no timeout", err, store.ErrInvalid)
	bad = manual
	bad.DestinationID = store.NewID()
	_, err = st.CreateBackup(ctx, bad)
	wantErr(t, "unknown destination", err, store.ErrMissingParent)
	bad = manual
	bad.AppID = nil
	_, err = st.CreateBackup(ctx, bad)
	wantErr(t, "no app and no name", err, store.ErrInvalid)
	bad = manual
	bad.AppID = ptrTo(store.NewID())
	_, err = st.CreateBackup(ctx, bad)
	wantErr(t, "unknown app, no name", err, store.ErrInvalid)
	bad.AppName = "gone"
	_, err = st.CreateBackup(ctx, bad)
	wantErr(t, "unknown app with a name", err, store.ErrMissingParent)
	bad = manual
	bad.Kind = "redis"
	_, err = st.CreateBackup(ctx, bad)
	wantErr(t, "bad kind", err, store.ErrInvalid)
	bad = manual
	bad.TriggeredBy = store.TriggerWebhook
	_, err = st.CreateBackup(ctx, bad)
	wantErr(t, "bad trigger", err, store.ErrInvalid)

	// Forbidden from queued; then the happy path.
	_, err = st.StartBackup(ctx, b.ID, nil)
	wantErr(t, "start queued", err, store.ErrWrongState)
	_, err = st.SucceedBackup(ctx, b.ID, store.BackupObject{ObjectKey: "k", SizeBytes: 1, ChecksumSHA256: sum32(1), EncryptionKeyID: "1"})
	wantErr(t, "succeed queued", err, store.ErrWrongState)
	_, err = st.FinishBackup(ctx, b.ID, store.BackupResult{Status: store.BackupFailed})
	wantErr(t, "fail queued", err, store.ErrWrongState)
	if cur, _ := st.Backup(ctx, b.ID); cur.Status != store.BackupQueued || cur.ObjectKey != nil {
		t.Fatalf("refused transitions changed the row: %+v", cur)
	}
	b, err = st.DispatchBackup(ctx, b.ID)
	if err != nil || b.Status != store.BackupDispatched || !b.DeadlineAt.Equal(b.DispatchedAt.Add(time.Hour)) {
		t.Fatalf("dispatch = %+v, %v", b, err)
	}
	_, err = st.DispatchBackup(ctx, b.ID)
	wantErr(t, "dispatch twice", err, store.ErrWrongState)
	if b, err = st.StartBackup(ctx, b.ID, nil); err != nil || b.Status != store.BackupRunning || b.StartedAt == nil {
		t.Fatalf("start = %+v, %v", b, err)
	}
	// Never green without the whole object.
	_, err = st.SucceedBackup(ctx, b.ID, store.BackupObject{ObjectKey: "k", SizeBytes: 1, ChecksumSHA256: sum32(1)[:31], EncryptionKeyID: "1"})
	wantErr(t, "short checksum", err, store.ErrInvalid)
	_, err = st.SucceedBackup(ctx, b.ID, store.BackupObject{SizeBytes: 1, ChecksumSHA256: sum32(1), EncryptionKeyID: "1"})
	wantErr(t, "no object key", err, store.ErrInvalid)
	if cur, _ := st.Backup(ctx, b.ID); cur.Status != store.BackupRunning {
		t.Fatalf("refused success changed the status: %s", cur.Status)
	}
	b, err = st.SucceedBackup(ctx, b.ID, store.BackupObject{ObjectKey: "shop/1.sql.zst", SizeBytes: 4096, ChecksumSHA256: sum32(9), EncryptionKeyID: "2"})
	if err != nil || b.Status != store.BackupSucceeded || *b.ObjectKey != "shop/1.sql.zst" || *b.SizeBytes != 4096 || !bytes.Equal(b.ChecksumSHA256, sum32(9)) || *b.EncryptionKeyID != "2" || b.FinishedAt == nil {
		t.Fatalf("succeed = %+v, %v", b, err)
	}
	_, err = st.FinishBackup(ctx, b.ID, store.BackupResult{Status: store.BackupFailed, FailureReason: ptrTo("late")})
	wantErr(t, "fail a succeeded backup", err, store.ErrWrongState)
	_, err = st.FinishBackup(ctx, b.ID, store.BackupResult{Status: store.BackupSucceeded})
	wantErr(t, "finish as succeeded", err, store.ErrInvalid)
	_, err = st.RequestBackupCancel(ctx, b.ID)
	wantErr(t, "cancel a finished backup", err, store.ErrWrongState)

	// Verification.
	v, err := st.RecordBackupVerification(ctx, b.ID, nil, nil)
	if err != nil || v.VerifiedAt == nil || v.VerificationError != nil {
		t.Fatalf("verified = %+v, %v", v, err)
	}
	v2, err := st.RecordBackupVerification(ctx, b.ID, nil, ptrTo("checksum mismatch"))
	if err != nil || !v2.VerifiedAt.Equal(*v.VerifiedAt) || *v2.VerificationError != "checksum mismatch" {
		t.Fatalf("failed verification = %+v, %v", v2, err)
	}

	// Every failure transition.
	cases := []struct {
		from store.BackupStatus
		to   store.BackupStatus
		ok   bool
	}{
		{store.BackupQueued, store.BackupCanceled, true},
		{store.BackupQueued, store.BackupTimedOut, true},
		{store.BackupQueued, store.BackupFailed, false},
		{store.BackupDispatched, store.BackupFailed, true},
		{store.BackupDispatched, store.BackupCanceled, true},
		{store.BackupDispatched, store.BackupTimedOut, true},
		{store.BackupRunning, store.BackupFailed, true},
		{store.BackupRunning, store.BackupCanceled, true},
		{store.BackupRunning, store.BackupTimedOut, true},
		{store.BackupSucceeded, store.BackupTimedOut, false},
	}
	for _, c := range cases {
		b := e.backupTo(t, manual, c.from)
		got, err := st.FinishBackup(ctx, b.ID, store.BackupResult{Status: c.to, FailureReason: ptrTo("upload failed")})
		if !c.ok {
			wantErr(t, fmt.Sprintf("%s -> %s", c.from, c.to), err, store.ErrWrongState)
			if cur, _ := st.Backup(ctx, b.ID); cur.Status != c.from || cur.FailureReason != nil {
				t.Fatalf("%s -> %s refused but changed the row: %+v", c.from, c.to, cur)
			}
			continue
		}
		if err != nil || got.Status != c.to || got.FinishedAt == nil || *got.FailureReason != "upload failed" {
			t.Fatalf("%s -> %s = %+v, %v", c.from, c.to, got, err)
		}
	}
	q := e.backupTo(t, manual, store.BackupQueued)
	_, err = st.RecordBackupVerification(ctx, q.ID, nil, nil)
	wantErr(t, "verify an unfinished backup", err, store.ErrWrongState)
	c1, err := st.RequestBackupCancel(ctx, q.ID)
	if err != nil || c1.CancelRequestedAt == nil {
		t.Fatalf("cancel request = %+v, %v", c1, err)
	}
	_, err = st.DispatchBackup(ctx, store.NewID())
	wantErr(t, "dispatch unknown", err, store.ErrNotFound)

	// The app goes; its backups stay, with its name.
	if err := st.DeleteApp(ctx, app.ID); err != nil {
		t.Fatal(err)
	}
	kept, err := st.Backup(ctx, b.ID)
	if err != nil || kept.AppID != nil || kept.AppName != "shop" || *kept.ServerID != srv {
		t.Fatalf("backup after its app was deleted = %+v, %v", kept, err)
	}
	if err := st.DeleteBackup(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "delete twice", st.DeleteBackup(ctx, b.ID), store.ErrNotFound)
}

func TestBackupQueriesAndReaper(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newAppsEnv(t)
	st := e.st
	s1, s2 := rawServer(t, e.db, "web-1"), rawServer(t, e.db, "web-2")
	shop, blog := e.mkApp(t, s1, "shop"), e.mkApp(t, s2, "blog")
	d1, d2 := e.mkDestination(t, "local"), e.mkDestination(t, "other")
	p := func(app store.App, dest store.ID, kind store.BackupKind) store.CreateBackupParams {
		return store.CreateBackupParams{AppID: &app.ID, DestinationID: dest, TriggeredBy: store.TriggerUser, Kind: kind, Source: "/srv/data", TimeoutSeconds: 600}
	}

	var all, shopIDs, onD2, succeeded []store.ID
	for i := range 8 {
		app, dest, kind := shop, d1.ID, store.BackupDirectory
		if i%2 == 1 {
			app = blog
		}
		if i%4 == 3 {
			dest, kind = d2.ID, store.BackupMySQL
		}
		want := store.BackupSucceeded
		if i >= 6 {
			want = store.BackupQueued
		}
		b := e.backupTo(t, p(app, dest, kind), want)
		all = append(all, b.ID)
		if app.ID == shop.ID {
			shopIDs = append(shopIDs, b.ID)
		}
		if dest == d2.ID {
			onD2 = append(onD2, b.ID)
		}
		if want == store.BackupSucceeded && app.ID == shop.ID {
			succeeded = append(succeeded, b.ID)
		}
	}
	list := func(f store.BackupFilter) func(*store.ID, int) ([]store.ID, error) {
		return func(before *store.ID, limit int) ([]store.ID, error) {
			f.Before, f.Limit = before, limit
			l, err := st.ListBackups(ctx, f)
			out := make([]store.ID, len(l))
			for i, b := range l {
				out[i] = b.ID
			}
			return out, err
		}
	}
	checkNewestFirst(t, "all backups", pageAll(t, 3, list(store.BackupFilter{})), all)
	checkNewestFirst(t, "shop backups", pageAll(t, 2, list(store.BackupFilter{AppID: &shop.ID})), shopIDs)
	checkNewestFirst(t, "backups on d2", pageAll(t, 2, list(store.BackupFilter{DestinationID: &d2.ID})), onD2)
	checkNewestFirst(t, "mysql backups", pageAll(t, 2, list(store.BackupFilter{Kind: store.BackupMySQL})), onD2)
	checkNewestFirst(t, "shop succeeded", pageAll(t, 2, list(store.BackupFilter{AppID: &shop.ID, Status: store.BackupSucceeded})), succeeded)
	checkNewestFirst(t, "made on web-2", pageAll(t, 2, list(store.BackupFilter{ServerID: &s2})), []store.ID{all[1], all[3], all[5], all[7]})
	if latest, err := st.LatestSucceededBackupForApp(ctx, shop.ID); err != nil || latest.ID != succeeded[len(succeeded)-1] {
		t.Fatalf("latest for shop = %v, %v", latest.ID, err)
	}
	_, err := st.LatestSucceededBackupForApp(ctx, store.NewID())
	wantErr(t, "latest of unknown app", err, store.ErrNotFound)

	// Claim: the queued ones (all[6] on web-1, all[7] on web-2), by server.
	ids := func(bs []store.Backup) []store.ID {
		out := make([]store.ID, len(bs))
		for i, b := range bs {
			out[i] = b.ID
		}
		return out
	}
	if got, err := st.ClaimQueuedBackups(ctx, []store.ID{s2}, 10); err != nil || !slices.Equal(ids(got), []store.ID{all[7]}) {
		t.Fatalf("claim web-2 = %v, %v", ids(got), err)
	}
	past := time.Now().Add(-time.Second)
	late, err := st.CreateBackup(ctx, store.CreateBackupParams{AppID: &shop.ID, DestinationID: d1.ID, TriggeredBy: store.TriggerAPIToken, Kind: store.BackupPostgres, Source: "shop", TimeoutSeconds: 60, DeadlineAt: &past})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := st.ClaimQueuedBackups(ctx, nil, 1); err != nil || !slices.Equal(ids(got), []store.ID{all[6]}) {
		t.Fatalf("claim one = %v, %v", ids(got), err)
	}
	if act, err := st.ActiveBackupsForServer(ctx, s1); err != nil || !slices.Equal(ids(act), []store.ID{all[6]}) {
		t.Fatalf("active on web-1 = %v, %v", ids(act), err)
	}
	if act, err := st.ActiveBackupsForServer(ctx, s2); err != nil || !slices.Equal(ids(act), []store.ID{all[7]}) {
		t.Fatalf("active on web-2 = %v, %v", ids(act), err)
	}
	now := time.Now()
	if od, err := st.OverdueBackups(ctx, now, 10); err != nil || !slices.Equal(ids(od), []store.ID{late.ID}) {
		t.Fatalf("overdue now = %v, %v", ids(od), err)
	}
	od, err := st.OverdueBackups(ctx, now.Add(time.Hour), 10)
	if err != nil || len(od) != 3 || od[0].ID != late.ID || !slices.Contains(ids(od), all[6]) || !slices.Contains(ids(od), all[7]) {
		t.Fatalf("overdue in an hour = %v, %v", ids(od), err)
	}
}

func TestBackupSchedules(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newAppsEnv(t)
	st := e.st
	srv := rawServer(t, e.db, "web-1")
	app := e.mkApp(t, srv, "shop")
	dest, dest2 := e.mkDestination(t, "local"), e.mkDestination(t, "other")
	now := time.Now().UTC().Truncate(time.Microsecond)

	mk := func(settings store.BackupScheduleSettings) (store.BackupSchedule, error) {
		return st.CreateBackupSchedule(ctx, store.CreateBackupScheduleParams{AppID: app.ID, BackupScheduleSettings: settings})
	}
	base := store.BackupScheduleSettings{DestinationID: dest.ID, Kind: store.BackupPostgres, Source: "shop", Cron: "0 3 * * *", RetentionCount: ptrTo(2), Enabled: true, NextRunAt: ptrTo(now.Add(-time.Minute))}
	due1, err := mk(base)
	if err != nil || due1.Timezone != "UTC" || *due1.RetentionCount != 2 || due1.RetentionDays != nil || !due1.NextRunAt.Equal(now.Add(-time.Minute)) || due1.AppID != app.ID {
		t.Fatalf("create = %+v, %v", due1, err)
	}
	s := base
	s.NextRunAt, s.Timezone, s.Kind, s.Source = ptrTo(now.Add(-time.Hour)), "Europe/Berlin", store.BackupDirectory, "/srv/uploads"
	due2, err := mk(s)
	if err != nil {
		t.Fatal(err)
	}
	s = base
	s.NextRunAt = ptrTo(now.Add(time.Hour))
	future, err := mk(s)
	if err != nil {
		t.Fatal(err)
	}
	s = base
	s.Enabled, s.NextRunAt, s.DestinationID = false, nil, dest2.ID
	disabled, err := mk(s)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := st.BackupSchedule(ctx, due2.ID); err != nil || got.Timezone != "Europe/Berlin" || got.Source != "/srv/uploads" {
		t.Fatalf("get = %+v, %v", got, err)
	}
	_, err = st.BackupSchedule(ctx, store.NewID())
	wantErr(t, "unknown schedule", err, store.ErrNotFound)

	// Constraints.
	s = base
	s.RetentionCount = nil
	_, err = mk(s)
	wantErr(t, "no retention rule", err, store.ErrInvalid)
	s = base
	s.NextRunAt = nil
	_, err = mk(s)
	wantErr(t, "enabled without next run", err, store.ErrInvalid)
	s = base
	s.RetentionDays = ptrTo(0)
	_, err = mk(s)
	wantErr(t, "zero days", err, store.ErrInvalid)
	_, err = st.CreateBackupSchedule(ctx, store.CreateBackupScheduleParams{AppID: store.NewID(), BackupScheduleSettings: base})
	wantErr(t, "unknown app", err, store.ErrMissingParent)

	// Lists.
	list := func(f store.BackupScheduleFilter) func(*store.ID, int) ([]store.ID, error) {
		return func(before *store.ID, limit int) ([]store.ID, error) {
			f.Before, f.Limit = before, limit
			l, err := st.ListBackupSchedules(ctx, f)
			out := make([]store.ID, len(l))
			for i, s := range l {
				out[i] = s.ID
			}
			return out, err
		}
	}
	checkNewestFirst(t, "schedules", pageAll(t, 3, list(store.BackupScheduleFilter{AppID: &app.ID})), []store.ID{due1.ID, due2.ID, future.ID, disabled.ID})
	checkNewestFirst(t, "enabled", pageAll(t, 2, list(store.BackupScheduleFilter{Enabled: ptrTo(true)})), []store.ID{due1.ID, due2.ID, future.ID})
	checkNewestFirst(t, "on dest2", pageAll(t, 2, list(store.BackupScheduleFilter{DestinationID: &dest2.ID})), []store.ID{disabled.ID})

	// Due schedules are locked for the ticking transaction: another leader
	// candidate sees none of them meanwhile.
	err = st.InTx(ctx, func(tx *store.Store) error {
		due, err := tx.DueBackupSchedules(ctx, time.Now(), 10)
		if err != nil {
			return err
		}
		if len(due) != 2 || due[0].ID != due2.ID || due[1].ID != due1.ID {
			return fmt.Errorf("due = %d schedules, want due2 then due1", len(due))
		}
		other, err := st.DueBackupSchedules(ctx, time.Now(), 10)
		if err != nil {
			return err
		}
		if len(other) != 0 {
			return fmt.Errorf("a second ticker got %d locked schedules", len(other))
		}
		for _, sc := range due {
			if _, err := tx.CreateBackup(ctx, store.CreateBackupParams{AppID: &sc.AppID, DestinationID: sc.DestinationID, ScheduleID: &sc.ID,
				TriggeredBy: store.TriggerSchedule, Kind: sc.Kind, Source: sc.Source, TimeoutSeconds: 600}); err != nil {
				return err
			}
			if _, err := tx.SetBackupScheduleRun(ctx, sc.ID, time.Now(), time.Now().Add(24*time.Hour)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if due, err := st.DueBackupSchedules(ctx, time.Now(), 10); err != nil || len(due) != 0 {
		t.Fatalf("due after the tick = %d, %v", len(due), err)
	}
	if got, _ := st.BackupSchedule(ctx, due1.ID); got.LastRunAt == nil || !got.NextRunAt.After(now.Add(23*time.Hour)) {
		t.Fatalf("run not recorded: %+v", got)
	}

	// A schedule never overlaps itself: the next tick is refused while the
	// previous backup is unfinished, without breaking the transaction.
	tick := store.CreateBackupParams{AppID: &app.ID, DestinationID: dest.ID, ScheduleID: &due1.ID, TriggeredBy: store.TriggerSchedule, Kind: store.BackupPostgres, Source: "shop", TimeoutSeconds: 600}
	err = st.InTx(ctx, func(tx *store.Store) error {
		_, err := tx.CreateBackup(ctx, tick)
		wantErr(t, "overlapping tick", err, store.ErrConflict)
		_, err = tx.SetBackupScheduleRun(ctx, due1.ID, time.Now(), time.Now().Add(time.Hour))
		return err
	})
	if err != nil {
		t.Fatalf("tx after a skipped tick: %v", err)
	}
	running, err := st.ListBackups(ctx, store.BackupFilter{ScheduleID: &due1.ID})
	if err != nil || len(running) != 1 {
		t.Fatalf("backups of due1 = %d, %v", len(running), err)
	}
	if _, err := st.FinishBackup(ctx, running[0].ID, store.BackupResult{Status: store.BackupCanceled}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateBackup(ctx, tick); err != nil {
		t.Fatalf("tick after the previous run finished: %v", err)
	}

	// Enable, disable, update.
	if _, err := st.SetBackupScheduleEnabled(ctx, disabled.ID, true, nil); err == nil {
		t.Fatal("enabled without a next run")
	}
	en, err := st.SetBackupScheduleEnabled(ctx, disabled.ID, true, ptrTo(now.Add(-time.Second)))
	if err != nil || !en.Enabled {
		t.Fatalf("enable = %+v, %v", en, err)
	}
	dis, err := st.SetBackupScheduleEnabled(ctx, future.ID, false, nil)
	if err != nil || dis.Enabled || dis.NextRunAt != nil {
		t.Fatalf("disable = %+v, %v", dis, err)
	}
	if due, err := st.DueBackupSchedules(ctx, time.Now(), 10); err != nil || len(due) != 1 || due[0].ID != disabled.ID {
		t.Fatalf("due after enabling = %v, %v", due, err)
	}
	u := en.BackupScheduleSettings
	u.Cron, u.RetentionCount, u.RetentionDays, u.Timezone = "30 1 * * 0", nil, ptrTo(30), ""
	upd, err := st.UpdateBackupSchedule(ctx, disabled.ID, u)
	if err != nil || upd.Cron != "30 1 * * 0" || upd.RetentionCount != nil || *upd.RetentionDays != 30 || upd.Timezone != "UTC" {
		t.Fatalf("update = %+v, %v", upd, err)
	}
	u.RetentionDays = nil
	_, err = st.UpdateBackupSchedule(ctx, disabled.ID, u)
	wantErr(t, "update without retention", err, store.ErrInvalid)
	_, err = st.UpdateBackupSchedule(ctx, store.NewID(), base)
	wantErr(t, "update unknown", err, store.ErrNotFound)
	_, err = st.SetBackupScheduleRun(ctx, store.NewID(), now, now)
	wantErr(t, "run of unknown", err, store.ErrNotFound)

	// Deleting a schedule keeps its backups; deleting the app deletes the
	// schedules.
	if err := st.DeleteBackupSchedule(ctx, due2.ID); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "delete twice", st.DeleteBackupSchedule(ctx, due2.ID), store.ErrNotFound)
	if l, _ := st.ListBackups(ctx, store.BackupFilter{AppID: &app.ID, Kind: store.BackupDirectory}); len(l) != 1 || l[0].ScheduleID != nil {
		t.Fatalf("backup of the deleted schedule = %+v", l)
	}
	if err := st.DeleteApp(ctx, app.ID); err != nil {
		t.Fatal(err)
	}
	if l, _ := st.ListBackupSchedules(ctx, store.BackupScheduleFilter{}); len(l) != 0 {
		t.Fatalf("%d schedules left after the app went", len(l))
	}
}

func TestBackupRetention(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newAppsEnv(t)
	st := e.st
	srv := rawServer(t, e.db, "web-1")
	app := e.mkApp(t, srv, "shop")
	dest := e.mkDestination(t, "local")
	now := time.Now()

	schedule := func(count, days *int) store.BackupSchedule {
		t.Helper()
		sc, err := st.CreateBackupSchedule(ctx, store.CreateBackupScheduleParams{AppID: app.ID, BackupScheduleSettings: store.BackupScheduleSettings{
			DestinationID: dest.ID, Kind: store.BackupPostgres, Source: "shop", Cron: "@daily", RetentionCount: count, RetentionDays: days,
		}})
		if err != nil {
			t.Fatal(err)
		}
		return sc
	}
	// run makes a backup of sc that ends in st, created ageDays ago.
	run := func(sc store.BackupSchedule, status store.BackupStatus, ageDays int) store.ID {
		t.Helper()
		p := store.CreateBackupParams{AppID: &app.ID, DestinationID: dest.ID, ScheduleID: &sc.ID, TriggeredBy: store.TriggerSchedule, Kind: store.BackupPostgres, Source: "shop", TimeoutSeconds: 60}
		var b store.Backup
		if status == store.BackupSucceeded {
			b = e.backupTo(t, p, store.BackupSucceeded)
		} else {
			b = e.backupTo(t, p, store.BackupRunning)
			if _, err := st.FinishBackup(ctx, b.ID, store.BackupResult{Status: status}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := e.db.Pool.Exec(ctx, `UPDATE backups SET created_at = $1 WHERE id = $2`, now.AddDate(0, 0, -ageDays), pgu(b.ID)); err != nil {
			t.Fatal(err)
		}
		return b.ID
	}
	candidates := func(sc store.BackupSchedule) []store.ID {
		t.Helper()
		l, err := st.BackupRetentionCandidates(ctx, sc.ID, now)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]store.ID, len(l))
		for i, b := range l {
			if b.Status != store.BackupSucceeded {
				t.Fatalf("candidate %s is %s", b.ID, b.Status)
			}
			out[i] = b.ID
		}
		return out
	}

	// Count only: keep the newest 2 succeeded; failed runs do not count.
	byCount := schedule(ptrTo(2), nil)
	c1, c2, c3 := run(byCount, store.BackupSucceeded, 0), run(byCount, store.BackupSucceeded, 0), run(byCount, store.BackupSucceeded, 0)
	run(byCount, store.BackupFailed, 0)
	c4 := run(byCount, store.BackupSucceeded, 0)
	run(byCount, store.BackupFailed, 0)
	_ = c4
	if got := candidates(byCount); !slices.Equal(got, []store.ID{c1, c2}) {
		t.Fatalf("by count = %v, want c1 c2 (c3 and c4 kept)", got)
	}
	_ = c3

	// Days only: older than 7 days goes, except the newest backup, which
	// always stays (a schedule that stopped must not lose its last copy).
	byDays := schedule(nil, ptrTo(7))
	d1, d2, d3 := run(byDays, store.BackupSucceeded, 30), run(byDays, store.BackupSucceeded, 10), run(byDays, store.BackupSucceeded, 2)
	_ = d3
	if got := candidates(byDays); !slices.Equal(got, []store.ID{d1, d2}) {
		t.Fatalf("by days = %v, want d1 d2", got)
	}
	stale := schedule(nil, ptrTo(7))
	o1, o2 := run(stale, store.BackupSucceeded, 40), run(stale, store.BackupSucceeded, 20)
	_ = o2
	if got := candidates(stale); !slices.Equal(got, []store.ID{o1}) {
		t.Fatalf("all old = %v, want only o1 (the newest stays)", got)
	}

	// Both: a backup goes only when neither rule keeps it.
	both := schedule(ptrTo(1), ptrTo(7))
	b1, b2 := run(both, store.BackupSucceeded, 20), run(both, store.BackupSucceeded, 10)
	run(both, store.BackupSucceeded, 3)
	run(both, store.BackupSucceeded, 1)
	if got := candidates(both); !slices.Equal(got, []store.ID{b1, b2}) {
		t.Fatalf("both rules = %v, want b1 b2", got)
	}
	if l, err := st.BackupRetentionCandidates(ctx, store.NewID(), now); err != nil || len(l) != 0 {
		t.Fatalf("unknown schedule = %v, %v", l, err)
	}
	if latest, err := st.LatestSucceededBackupForSchedule(ctx, byCount.ID); err != nil || latest.ID != c4 {
		t.Fatalf("latest of byCount = %v, %v", latest.ID, err)
	}
	_, err := st.LatestSucceededBackupForSchedule(ctx, store.NewID())
	wantErr(t, "latest of unknown schedule", err, store.ErrNotFound)
}
