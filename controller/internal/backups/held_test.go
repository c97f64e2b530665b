package backups

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"filippo.io/age"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// openSealed opens a held schedule's job as the agent does.
func openSealed(t *testing.T, sealed []byte, id *age.X25519Identity) *agentv1.BackupJob {
	t.Helper()
	r, err := age.Decrypt(bytes.NewReader(sealed), id)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	job := &agentv1.BackupJob{}
	if err := proto.Unmarshal(plain, job); err != nil {
		t.Fatal(err)
	}
	return job
}

// The held schedules are sealed to the agent's recipient: only its
// identity opens them, and they carry what a run needs (the destination's
// credentials, the recipient backups are encrypted to).
func TestHeldSchedulesSealed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	if _, err := e.svc.AddDestination(ctx, e.admin, Peer{}, DestinationSpec{Name: "bucket", Kind: "s3", Endpoint: "https://s3.example.com",
		Bucket: "bkt", AccessKeyID: "AKID", SecretAccessKey: s3SecretKey}); err != nil {
		t.Fatal(err)
	}
	v := e.schedule(t, ScheduleRequest{App: "shop", Destination: "bucket", Kind: "postgres", Source: "shop", Cron: "@daily", Keep: 3})
	agentID, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	msg, err := e.svc.heldSchedules(ctx, e.srv.ID, agentID.Recipient().String())
	if err != nil || len(msg.GetSchedules()) != 1 {
		t.Fatalf("held schedules %v %v", msg, err)
	}
	h := msg.GetSchedules()[0]
	if h.GetScheduleId() != v.ID.String() || h.GetAppName() != "shop" || h.GetCron() != "@daily" || h.GetObjectSuffix() != ".pgdump.zst.age" ||
		!h.GetNextRunAt().AsTime().Equal(*v.NextRunAt) || h.GetEncryptionKeyId() == "" {
		t.Fatalf("held schedule %v", h)
	}
	wire, _ := proto.Marshal(msg)
	if bytes.Contains(wire, []byte(s3SecretKey)) {
		t.Fatal("the secret access key travels in the clear")
	}
	job := openSealed(t, h.GetSealed(), agentID)
	if job.GetDestination().GetSecretAccessKey() != s3SecretKey || job.GetRecipient() == "" || job.GetSource().GetName() != "shop" || job.GetScheduleId() != v.ID.String() {
		t.Fatalf("sealed job %v", job)
	}
	other, _ := age.GenerateX25519Identity()
	if _, err := age.Decrypt(bytes.NewReader(h.GetSealed()), other); err == nil {
		t.Fatal("another identity opened the sealed job")
	}
	// After a key rotation the held job encrypts to the new key.
	k2, err := e.svc.RotateKey(ctx, e.admin, Peer{})
	if err != nil {
		t.Fatal(err)
	}
	// It is this server's key derived from the new keyring key, never the
	// keyring key itself (that would open every server's backups).
	want, err := e.svc.serverRecipient(ctx, k2.ID, e.srv.ID)
	if err != nil || want == k2.Recipient {
		t.Fatalf("server recipient %q %v", want, err)
	}
	msg2, err := e.svc.heldSchedules(ctx, e.srv.ID, agentID.Recipient().String())
	if err != nil || msg2.GetSchedules()[0].GetEncryptionKeyId() != k2.ID.String() ||
		openSealed(t, msg2.GetSchedules()[0].GetSealed(), agentID).GetRecipient() != want {
		t.Fatalf("held schedule after rotation: %v %v", msg2, err)
	}
	// Another server's agent holds none of them.
	srv2, err := e.st.CreateServer(ctx, store.CreateServerParams{Name: "web-2"})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := e.svc.heldSchedules(ctx, srv2.ID, agentID.Recipient().String()); err != nil || len(m.GetSchedules()) != 0 {
		t.Fatalf("web-2 holds %v %v", m, err)
	}
}

func heldRun(job, sched store.ID, tick, started time.Time, key string) *agentv1.HeldBackupRun {
	return &agentv1.HeldBackupRun{JobId: job.String(), ScheduleId: sched.String(), ScheduledFor: timestamppb.New(tick),
		StartedAt: timestamppb.New(started), EncryptionKeyId: key}
}

// A run the agent made while no controller was reachable is stored once
// under its run key from the hello, and the controller does not run that
// tick again; its events then finish it as any backup. A controller run
// of the tick that the agent never started gives way. Bad reports refuse
// the stream.
func TestHeldRunsAdopted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 2, 30, 0, 0, time.UTC)
	e, c := setupClock(t, t0)
	e.localDest(t, "vault")
	v := e.schedule(t, ScheduleRequest{App: "shop", Destination: "vault", Kind: "postgres", Source: "shop", Cron: "0 3 * * *", Keep: 3})
	key, err := e.svc.currentKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tick := time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)
	agentID, _ := age.GenerateX25519Identity()
	job := store.NewID()
	c.set(tick.Add(2 * time.Hour)) // the controller comes back two hours later
	hello := &agentv1.Hello{HeldRecipient: agentID.Recipient().String(), HeldRuns: []*agentv1.HeldBackupRun{heldRun(job, v.ID, tick, tick.Add(time.Second), key.ID.String())}}
	for range 2 { // the second hello: the ack was lost
		if err := e.svc.AgentHello(ctx, e.srv.ID, hello); err != nil {
			t.Fatal(err)
		}
	}
	b, err := e.st.Backup(ctx, job)
	if err != nil || !b.Held || b.Status != store.BackupRunning || b.ScheduledFor == nil || !b.ScheduledFor.Equal(tick) ||
		b.StartedAt == nil || !b.StartedAt.Equal(tick.Add(time.Second)) || b.TriggeredBy != store.TriggerSchedule {
		t.Fatalf("held run %+v %v", b, err)
	}
	if n := e.count(t, `SELECT count(*) FROM backups`); n != 1 {
		t.Fatalf("%d backups after two hellos", n)
	}
	if acks := e.svc.heldAcks[e.srv.ID]; len(acks) != 1 || acks[0] != job.String() {
		t.Fatalf("acks %v", acks)
	}
	// The due tick (next_run_at 03:00 before the report) is not run again.
	if n := e.svc.fireFor(ctx, []store.ID{e.srv.ID}); n != 0 {
		t.Fatalf("the controller ran the held tick again: %d", n)
	}
	sc, _ := e.svc.Schedule(ctx, e.admin, v.ID.String())
	if !sc.NextRunAt.Equal(time.Date(2026, 3, 2, 3, 0, 0, 0, time.UTC)) {
		t.Fatalf("next run %v", sc.NextRunAt)
	}
	// Its events finish it, once.
	e.svc.AgentConnected(ctx, e.srv.ID)
	e.succeed(t, b)
	if n := e.count(t, `SELECT count(*) FROM activity_log WHERE action = 'backup.held_run_reported'`); n != 1 {
		t.Fatalf("held run reported %d times", n)
	}

	// The controller queued the next tick but the agent, cut off before it
	// got it, ran that tick itself: the controller's run gives way.
	tick2 := time.Date(2026, 3, 2, 3, 0, 0, 0, time.UTC)
	c.set(tick2.Add(time.Second))
	if n := e.svc.fireFor(ctx, []store.ID{e.srv.ID}); n != 1 {
		t.Fatalf("fired %d", n)
	}
	queued := e.scheduleBackups(t, v.ID)[0]
	job2 := store.NewID()
	if err := e.svc.AgentHello(ctx, e.srv.ID, &agentv1.Hello{HeldRuns: []*agentv1.HeldBackupRun{heldRun(job2, v.ID, tick2, tick2.Add(time.Second), key.ID.String())}}); err != nil {
		t.Fatal(err)
	}
	q, _ := e.st.Backup(ctx, queued.ID)
	h2, err := e.st.Backup(ctx, job2)
	if q.Status != store.BackupCanceled || q.ScheduledFor != nil || err != nil || !h2.Held || !h2.ScheduledFor.Equal(tick2) {
		t.Fatalf("controller run %+v, held run %+v %v", q, h2, err)
	}

	// Bad reports: the stream is refused.
	srv2, _ := e.st.CreateServer(ctx, store.CreateServerParams{Name: "web-2"})
	for name, h := range map[string]*agentv1.Hello{
		"bad recipient":    {HeldRecipient: "age1notarecipient"},
		"bad job id":       {HeldRuns: []*agentv1.HeldBackupRun{{JobId: "x", ScheduleId: v.ID.String(), ScheduledFor: timestamppb.Now(), StartedAt: timestamppb.Now()}}},
		"no times":         {HeldRuns: []*agentv1.HeldBackupRun{{JobId: store.NewID().String(), ScheduleId: v.ID.String()}}},
		"another's job":    {HeldRuns: []*agentv1.HeldBackupRun{heldRun(job, v.ID, tick, tick, key.ID.String())}},
		"another's sched.": {HeldRuns: []*agentv1.HeldBackupRun{heldRun(store.NewID(), v.ID, tick, tick, key.ID.String())}},
		"too many":         {HeldRuns: make([]*agentv1.HeldBackupRun, maxHeldRuns+1)},
	} {
		if err := e.svc.AgentHello(ctx, srv2.ID, h); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// Runs the agent made one after the other during one outage come in one
// hello, each still running until its events arrive: all are stored, and
// the controller starts no run of its own beside them.
func TestHeldRunsTogether(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 2, 30, 0, 0, time.UTC)
	e, c := setupClock(t, t0)
	e.localDest(t, "vault")
	v := e.schedule(t, ScheduleRequest{App: "shop", Destination: "vault", Kind: "postgres", Source: "shop", Cron: "0 * * * *", Keep: 50})
	key, err := e.svc.currentKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var runs []*agentv1.HeldBackupRun
	var ids []store.ID
	for i := 0; i < 3; i++ {
		tick := time.Date(2026, 3, 1, 3+i, 0, 0, 0, time.UTC)
		id := store.NewID()
		ids = append(ids, id)
		runs = append(runs, heldRun(id, v.ID, tick, tick.Add(time.Second), key.ID.String()))
	}
	c.set(time.Date(2026, 3, 1, 6, 0, 5, 0, time.UTC)) // back after the third
	if err := e.svc.AgentHello(ctx, e.srv.ID, &agentv1.Hello{HeldRuns: runs}); err != nil {
		t.Fatal(err)
	}
	if acks := e.svc.heldAcks[e.srv.ID]; len(acks) != 3 {
		t.Fatalf("acked %v", acks)
	}
	for _, id := range ids {
		if b, err := e.st.Backup(ctx, id); err != nil || !b.Held || b.Status != store.BackupRunning {
			t.Fatalf("held run %s: %+v %v", id, b, err)
		}
	}
	// The 07:00 tick while held runs are unfinished: skipped.
	c.set(time.Date(2026, 3, 1, 7, 0, 1, 0, time.UTC))
	if n := e.svc.fireFor(ctx, []store.ID{e.srv.ID}); n != 0 {
		t.Fatalf("the controller ran beside the held runs: %d", n)
	}
	for _, id := range ids {
		b, _ := e.st.Backup(ctx, id)
		e.succeed(t, b)
	}
	c.set(time.Date(2026, 3, 1, 8, 0, 1, 0, time.UTC))
	if n := e.svc.fireFor(ctx, []store.ID{e.srv.ID}); n != 1 {
		t.Fatalf("after the held runs finished fired %d", n)
	}
}
