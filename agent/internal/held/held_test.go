package held

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

const secret = "held-secret-s3-key-0123456789"

type starts struct {
	mu      sync.Mutex
	jobs    []*agentv1.BackupJob
	ids     []string
	running map[string]bool
	n       int
}

func (s *starts) start(_ context.Context, id string, _ Schedule, job *agentv1.BackupJob) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jobs, s.ids = append(s.jobs, job), append(s.ids, id)
	s.running[id] = true
	return nil
}

func (s *starts) isRunning(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running[id]
}

func open(t *testing.T, dir string, st *starts) *Holder {
	t.Helper()
	h, err := Open(Config{DataDir: dir, Start: st.start, Running: st.isRunning,
		NewID: func(time.Time) string { st.n++; return fmt.Sprintf("01JOB%021d", st.n) }})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func seal(t *testing.T, recipient string, job *agentv1.BackupJob) []byte {
	t.Helper()
	r, err := age.ParseX25519Recipient(recipient)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := proto.Marshal(job)
	var buf bytes.Buffer
	w, _ := age.Encrypt(&buf, r)
	_, _ = w.Write(plain)
	_ = w.Close()
	return buf.Bytes()
}

// The held schedule waits while a stream is being opened, leaves ticks to
// the controller while connected, runs them itself without a stream, once
// per tick and never beside its previous run; runs are journaled before
// they start, survive a restart, are reported until acknowledged, and a
// dispatched tick it ran is recognised. Nothing secret is on disk in the
// clear.
func TestHeldTicks(t *testing.T) {
	dir := t.TempDir()
	st := &starts{running: map[string]bool{}}
	h := open(t, dir, st)
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)
	job := &agentv1.BackupJob{Source: &agentv1.BackupSource{Kind: "postgres", Name: "shop"},
		Destination: &agentv1.BackupDestination{Kind: "s3", SecretAccessKey: secret}, Recipient: "age1x", ScheduleId: "S1"}
	if err := h.Replace(&agentv1.HeldBackupSchedules{Schedules: []*agentv1.HeldBackupSchedule{{
		ScheduleId: "S1", AppId: "A1", AppName: "shop", Cron: "0 * * * *", Timezone: "Europe/Berlin", NextRunAt: timestamppb.New(t0),
		Timeout: durationpb.New(time.Hour), EncryptionKeyId: "K1", ObjectSuffix: ".pgdump.zst.age", Sealed: seal(t, h.Recipient(), job),
	}}}); err != nil {
		t.Fatal(err)
	}
	// Connecting (the first attempt has not ended): wait.
	if got := h.Step(ctx, t0.Add(time.Second)); len(got) != 0 {
		t.Fatalf("ran while connecting: %v", got)
	}
	// Connected: the controller's tick.
	h.Up()
	if got := h.Step(ctx, t0.Add(2*time.Second)); len(got) != 0 {
		t.Fatalf("ran while connected: %v", got)
	}
	// No stream: the next tick runs here, once.
	h.Down()
	t1 := t0.Add(time.Hour)
	if got := h.Step(ctx, t1.Add(-time.Second)); len(got) != 0 {
		t.Fatalf("ran early: %v", got)
	}
	got := h.Step(ctx, t1.Add(time.Second))
	if len(got) != 1 || h.Step(ctx, t1.Add(2*time.Second)) != nil {
		t.Fatalf("started %v", got)
	}
	j := st.jobs[0]
	if j.GetDestination().GetSecretAccessKey() != secret || j.GetObject().GetKey() != "shop/"+got[0]+".pgdump.zst.age" || !j.GetScheduledFor().AsTime().Equal(t1) {
		t.Fatalf("job %v", j)
	}
	runs := h.Hello()
	if len(runs) != 1 || runs[0].GetJobId() != got[0] || !runs[0].GetScheduledFor().AsTime().Equal(t1) || runs[0].GetEncryptionKeyId() != "K1" {
		t.Fatalf("hello runs %v", runs)
	}
	h.Down() // that connection attempt failed

	// The next tick while the first run still runs: skipped.
	t2 := t1.Add(time.Hour)
	if got := h.Step(ctx, t2.Add(time.Second)); len(got) != 0 {
		t.Fatalf("overlapping run: %v", got)
	}
	// A restart: the journaled run is still reported; the tick it ran is
	// not run again.
	h2 := open(t, dir, st)
	h2.Down()
	if r := h2.Hello(); len(r) != 1 || r[0].GetJobId() != got[0] {
		t.Fatalf("after restart: %v", r)
	}
	h2.Down()
	// The controller dispatched the tick it ran: recognised.
	if ran, err := h2.Dispatched("S1", t1, "01DISPATCHED00000000000001"); err != nil || ran != got[0] {
		t.Fatalf("dispatched ran as %q %v", ran, err)
	}
	if ran, _ := h2.Dispatched("S1", t2.Add(time.Hour), "01DISPATCHED00000000000002"); ran != "" {
		t.Fatalf("a tick it did not run: %q", ran)
	}
	// That dispatched tick (t2+1h) is taken: not run from the held copy.
	st.mu.Lock()
	st.running[got[0]] = false
	st.mu.Unlock()
	if got := h2.Step(ctx, t2.Add(time.Hour+time.Second)); len(got) != 0 {
		t.Fatalf("ran a dispatched tick: %v", got)
	}
	if got := h2.Step(ctx, t2.Add(2*time.Hour+time.Second)); len(got) != 1 {
		t.Fatalf("next tick: %v", got)
	}
	if err := h2.Acked([]string{got[0]}); err != nil {
		t.Fatal(err)
	}
	if r := h2.Hello(); len(r) != 1 || r[0].GetJobId() == got[0] {
		t.Fatalf("after ack: %v", r)
	}
	// On disk: 0600, and the secret only sealed.
	for _, f := range []string{KeyFile, StateFile} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, fi, err)
		}
		b, _ := os.ReadFile(filepath.Join(dir, f))
		if bytes.Contains(b, []byte(secret)) {
			t.Fatalf("%s holds the secret in the clear", f)
		}
	}
	// Removed from the controller's set: no more runs.
	if err := h2.Replace(&agentv1.HeldBackupSchedules{}); err != nil {
		t.Fatal(err)
	}
	if got := h2.Step(ctx, t2.Add(10*time.Hour)); len(got) != 0 {
		t.Fatalf("ran a removed schedule: %v", got)
	}
}

// A damaged key or state file is an error, not a silent reset; a sealed
// job for another key is not run.
func TestHeldBadInput(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, KeyFile), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Config{DataDir: dir, Start: (&starts{}).start, NewID: func(time.Time) string { return "x" }}); err == nil {
		t.Fatal("damaged key accepted")
	}
	dir = t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, StateFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Config{DataDir: dir, Start: (&starts{}).start, NewID: func(time.Time) string { return "x" }}); err == nil {
		t.Fatal("damaged state accepted")
	}
	st := &starts{running: map[string]bool{}}
	h := open(t, t.TempDir(), st)
	other, _ := age.GenerateX25519Identity()
	t0 := time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)
	if err := h.Replace(&agentv1.HeldBackupSchedules{Schedules: []*agentv1.HeldBackupSchedule{
		{ScheduleId: "S1", AppName: "a", Cron: "0 * * * *", NextRunAt: timestamppb.New(t0), Sealed: seal(t, other.Recipient().String(), &agentv1.BackupJob{})},
		{ScheduleId: "S2", AppName: "a", Cron: "61 * * * *", NextRunAt: timestamppb.New(t0)},
	}}); err != nil {
		t.Fatal(err)
	}
	h.Down()
	if got := h.Step(context.Background(), t0.Add(time.Second)); len(got) != 0 || len(h.Runs()) != 0 {
		t.Fatalf("ran %v", got)
	}
}
