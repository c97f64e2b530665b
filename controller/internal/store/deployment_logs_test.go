package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/berthhq/berth/controller/internal/store"
)

func TestCommitJobEventExactlyOnceAndCapped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newAppsEnv(t)
	srv := rawServer(t, e.db, "web-1")
	d := e.deployTo(t, srv, "shop", store.DeploymentRunning)

	commitOne := func(ev store.JobEvent) (store.JobEventOutcome, error) {
		ev.DeploymentID = d.ID
		out, err := e.st.CommitJobEvents(ctx, []store.JobEvent{ev}, 10)
		if err != nil {
			return store.JobEventOutcome{}, err
		}
		return out[0], nil
	}
	commit := func(seq int64, data string) (store.JobEventOutcome, error) {
		return commitOne(store.JobEvent{Seq: seq, Step: "build", Data: []byte(data)})
	}
	if o, err := commit(1, "hello"); err != nil || o != (store.JobEventOutcome{Committed: 1}) {
		t.Fatalf("first: %+v %v", o, err)
	}
	// A replay stores nothing.
	if o, err := commit(1, "hello"); err != nil || o != (store.JobEventOutcome{Committed: 1, Dup: true}) {
		t.Fatalf("replay: %+v %v", o, err)
	}
	// A gap is refused and changes nothing.
	if o, err := commit(3, "x"); err != nil || o != (store.JobEventOutcome{Committed: 1, Gap: true}) {
		t.Fatalf("gap: %+v %v", o, err)
	}
	// Past the cap (10 bytes): cut, marker, then nothing more stored.
	if o, err := commit(2, "world!!"); err != nil || o.Committed != 2 {
		t.Fatal(o, err)
	}
	if o, err := commit(3, "more"); err != nil || o.Committed != 3 {
		t.Fatal(o, err)
	}
	applied := false
	if o, err := commitOne(store.JobEvent{Seq: 4, Apply: func(tx *store.Store, cur store.Deployment) error {
		applied = cur.ID == d.ID
		return nil
	}}); err != nil || !applied || o.Committed != 4 {
		t.Fatalf("apply: %v %+v %v", applied, o, err)
	}
	chunks, err := e.st.DeploymentLogs(ctx, d.ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var all bytes.Buffer
	for _, c := range chunks {
		all.Write(c.Data)
	}
	if len(chunks) != 2 || !strings.HasPrefix(all.String(), "helloworld") || !strings.Contains(all.String(), "log truncated") {
		t.Fatalf("chunks = %d %q", len(chunks), all.String())
	}
	got, _ := e.st.Deployment(ctx, d.ID)
	if !got.LogTruncated || got.LogBytes != 16 {
		t.Fatalf("bookkeeping = %v %d", got.LogTruncated, got.LogBytes)
	}
	if after, _ := e.st.DeploymentLogs(ctx, d.ID, 1, 0); len(after) != 1 || after[0].Seq != 2 {
		t.Fatalf("after 1 = %+v", after)
	}
}

func TestWebhookDeliveryOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newAppsEnv(t)
	srv := rawServer(t, e.db, "web-1")
	a := e.mkApp(t, srv, "shop")
	_, first, err := e.st.RecordWebhookDelivery(ctx, a.ID, "github", "d-1", "main", store.WebhookIgnoredBranch)
	if err != nil || !first {
		t.Fatalf("first: %v %v", first, err)
	}
	if _, first, err = e.st.RecordWebhookDelivery(ctx, a.ID, "github", "d-1", "main", store.WebhookDeployed); err != nil || first {
		t.Fatalf("replay: %v %v", first, err)
	}
	if _, first, err = e.st.RecordWebhookDelivery(ctx, a.ID, "gitlab", "d-1", "main", store.WebhookDeployed); err != nil || !first {
		t.Fatalf("other provider: %v %v", first, err)
	}
}

// A run of events commits in one transaction, each event exactly once, in
// order, across deployments; a Fresh Apply sees what the events before it
// changed, and a failing Apply rolls the whole run back.
func TestCommitJobEventsBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newAppsEnv(t)
	srv := rawServer(t, e.db, "web-1")
	d1 := e.deployTo(t, srv, "shop", store.DeploymentDispatched)
	d2 := e.deployTo(t, srv, "blog", store.DeploymentRunning)
	if _, err := e.st.CommitJobEvents(ctx, []store.JobEvent{{DeploymentID: d2.ID, Seq: 1, Data: []byte("a")}}, 0); err != nil {
		t.Fatal(err)
	}
	sha := strings.Repeat("cd", 20)
	var sawStatus store.DeploymentStatus
	var sawCommit string
	out, err := e.st.CommitJobEvents(ctx, []store.JobEvent{
		{DeploymentID: d1.ID, Seq: 1, Step: "fetch", Data: []byte("one\n"), Apply: func(tx *store.Store, d store.Deployment) error {
			_, err := tx.StartDeployment(ctx, d.ID, nil)
			return err
		}},
		{DeploymentID: d2.ID, Seq: 1, Data: []byte("a")}, // replayed
		{DeploymentID: d1.ID, Seq: 2, Apply: func(tx *store.Store, d store.Deployment) error {
			_, err := tx.SetDeploymentCommit(ctx, d.ID, sha, nil, nil)
			return err
		}},
		{DeploymentID: d2.ID, Seq: 3, Data: []byte("c")}, // skips 2
		{DeploymentID: d1.ID, Seq: 3, Step: "build", Data: []byte("two\n"), Fresh: true, Apply: func(tx *store.Store, d store.Deployment) error {
			sawStatus = d.Status
			if d.CommitSHA != nil {
				sawCommit = *d.CommitSHA
			}
			return nil
		}},
		{DeploymentID: d2.ID, Seq: 2, Data: []byte("b")},
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.JobEventOutcome{{Committed: 1}, {Committed: 1, Dup: true}, {Committed: 2}, {Committed: 1, Gap: true}, {Committed: 3}, {Committed: 2}}
	if fmt.Sprint(out) != fmt.Sprint(want) {
		t.Fatalf("outcomes = %v, want %v", out, want)
	}
	if sawStatus != store.DeploymentRunning || sawCommit != sha {
		t.Errorf("fresh apply saw %s %q", sawStatus, sawCommit)
	}
	for _, c := range []struct {
		id   store.ID
		seq  int64
		logs string
	}{{d1.ID, 3, "one\ntwo\n"}, {d2.ID, 2, "ab"}} {
		got, _ := e.st.Deployment(ctx, c.id)
		chunks, _ := e.st.DeploymentLogs(ctx, c.id, 0, 0)
		var all strings.Builder
		for _, ch := range chunks {
			all.Write(ch.Data)
		}
		if got.AgentSeq != c.seq || all.String() != c.logs || got.LogBytes != int64(len(c.logs)) {
			t.Errorf("%s: seq %d bytes %d log %q", got.ID, got.AgentSeq, got.LogBytes, all.String())
		}
	}

	// All or nothing: an Apply that fails keeps the events before it too.
	boom := errors.New("boom")
	if _, err := e.st.CommitJobEvents(ctx, []store.JobEvent{
		{DeploymentID: d2.ID, Seq: 3, Data: []byte("c")},
		{DeploymentID: d1.ID, Seq: 4, Apply: func(*store.Store, store.Deployment) error { return boom }},
	}, 0); !errors.Is(err, boom) {
		t.Fatalf("failing apply: %v", err)
	}
	if got, _ := e.st.Deployment(ctx, d2.ID); got.AgentSeq != 2 {
		t.Errorf("rolled-back run left seq %d", got.AgentSeq)
	}
	// A deployment that is gone fails the run as not found.
	if _, err := e.st.CommitJobEvents(ctx, []store.JobEvent{{DeploymentID: store.NewID(), Seq: 1}}, 0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown deployment: %v", err)
	}
	if sid, err := e.st.DeploymentServer(ctx, d1.ID); err != nil || sid != srv {
		t.Errorf("deployment server = %v %v", sid, err)
	}
}
