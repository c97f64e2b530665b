package store_test

import (
	"bytes"
	"context"
	"errors"
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

	commit := func(seq int64, data string) (int64, bool, error) {
		return e.st.CommitJobEvent(ctx, store.JobEvent{DeploymentID: d.ID, Seq: seq, Step: "build", Data: []byte(data)}, 10)
	}
	if n, dup, err := commit(1, "hello"); err != nil || dup || n != 1 {
		t.Fatalf("first: %d %v %v", n, dup, err)
	}
	// A replay stores nothing.
	if n, dup, err := commit(1, "hello"); err != nil || !dup || n != 1 {
		t.Fatalf("replay: %d %v %v", n, dup, err)
	}
	// A gap is refused and changes nothing.
	if _, _, err := commit(3, "x"); !errors.Is(err, store.ErrSeqGap) {
		t.Fatalf("gap: %v", err)
	}
	// Past the cap (10 bytes): cut, marker, then nothing more stored.
	if _, _, err := commit(2, "world!!"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := commit(3, "more"); err != nil {
		t.Fatal(err)
	}
	applied := false
	if _, _, err := e.st.CommitJobEvent(ctx, store.JobEvent{DeploymentID: d.ID, Seq: 4, Apply: func(tx *store.Store, cur store.Deployment) error {
		applied = cur.ID == d.ID
		return nil
	}}, 10); err != nil || !applied {
		t.Fatalf("apply: %v %v", applied, err)
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
