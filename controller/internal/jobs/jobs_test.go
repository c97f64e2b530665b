package jobs

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// The verdict is spelled in each kind's own status type: the statuses it
// returns must be the constants both kinds define.
func TestOverdueStatusesOfEveryKind(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	g := Grace{Unreachable: time.Minute, Start: 2 * time.Minute, Started: t0}
	deadline := t0.Add(time.Hour)
	cases := []struct {
		name           string
		now            time.Time
		queued, cancel bool
		dep            store.DeploymentStatus
		bak            store.BackupStatus
		reason         string
		ok             bool
	}{
		{"queued", deadline, true, false, store.DeploymentTimedOut, store.BackupTimedOut, "waited in the queue past its deadline", true},
		{"queued and canceled", deadline, true, true, store.DeploymentCanceled, store.BackupCanceled, "waited in the queue past its deadline", true},
		{"running past the grace", deadline.Add(time.Minute + time.Second), false, false, store.DeploymentFailed, store.BackupFailed, "agent unreachable", true},
		{"running within the grace", deadline.Add(time.Minute), false, false, "", "", "", false},
		{"controller just started", t0.Add(time.Minute), false, false, "", "", "", false},
	}
	for _, c := range cases {
		dl := deadline
		if c.name == "controller just started" {
			dl = t0.Add(-time.Hour) // long overdue, but agents may still be reconnecting
		}
		d, r1, ok1 := Overdue[store.DeploymentStatus](g, c.now, c.queued, c.cancel, dl)
		b, r2, ok2 := Overdue[store.BackupStatus](g, c.now, c.queued, c.cancel, dl)
		if d != c.dep || b != c.bak || r1 != c.reason || r2 != c.reason || ok1 != c.ok || ok2 != c.ok {
			t.Errorf("%s: got %q/%q %q/%q %v/%v", c.name, d, b, r1, r2, ok1, ok2)
		}
	}
}

func TestDecode(t *testing.T) {
	big := &agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_JobOutput{JobOutput: &agentv1.JobOutput{JobId: "j", Seq: 1, Data: make([]byte, store.MaxLogChunk+1)}}}
	if _, ok, err := Decode(big); !ok || err == nil || !strings.Contains(err.Error(), "output chunk of") {
		t.Fatalf("oversized chunk: ok %v err %v", ok, err)
	}
	out := &agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_JobOutput{JobOutput: &agentv1.JobOutput{JobId: "j", Seq: 3, Step: strings.Repeat("s", 100), Data: []byte("x")}}}
	ev, ok, err := Decode(out)
	if err != nil || !ok || ev.JobID != "j" || ev.Seq != 3 || len(ev.Step) != 64 || string(ev.Data) != "x" || ev.Result != nil || ev.Progress != nil {
		t.Fatalf("output: %+v %v %v", ev, ok, err)
	}
	res := &agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_JobResult{JobResult: &agentv1.JobResult{JobId: "k", Seq: 9, Status: "succeeded"}}}
	if ev, ok, err := Decode(res); err != nil || !ok || ev.Result == nil || ev.Seq != 9 || ev.JobID != "k" {
		t.Fatalf("result: %+v %v %v", ev, ok, err)
	}
	if _, ok, err := Decode(&agentv1.ConnectRequest{}); ok || err != nil {
		t.Fatalf("not a job event: ok %v err %v", ok, err)
	}
}

// Acks: one entry per job in first-seen order with its highest committed
// number; a job with only gaps gets none (and the gap is logged); a run
// of duplicates is acknowledged but not changed.
func TestAcks(t *testing.T) {
	a, b, c := store.NewID(), store.NewID(), store.NewID()
	keys := []store.ID{a, b, a, c, c}
	evs := []Event{{JobID: "a", Seq: 1}, {JobID: "b", Seq: 5}, {JobID: "a", Seq: 2}, {JobID: "c", Seq: 1}, {JobID: "c", Seq: 2}}
	out := []store.JobEventOutcome{{Committed: 1}, {Committed: 3, Gap: true}, {Committed: 2}, {Committed: 2, Dup: true}, {Committed: 2, Dup: true}}
	var buf bytes.Buffer
	got := Acks(slog.New(slog.NewTextHandler(&buf, nil)), "backup job", "job", keys, evs, out)
	want := []Committed{{ID: a, JobID: "a", Seq: 2, Changed: true}, {ID: c, JobID: "c", Seq: 2}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if !strings.Contains(buf.String(), "backup job event out of order") || !strings.Contains(buf.String(), "job=b") {
		t.Fatalf("gap not logged: %s", buf.String())
	}
	if ack := got[0].AckOf(); ack.JobId != "a" || ack.Seq != 2 {
		t.Fatalf("ack %+v", ack)
	}
}
