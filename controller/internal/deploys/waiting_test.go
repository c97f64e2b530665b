package deploys

import (
	"context"
	"strings"
	"testing"

	"github.com/berthhq/berth/controller/internal/store"
)

// A queued deployment whose server's agent is not connected says why it
// waits: never connected, or offline since its last contact. Once it is
// dispatched it no longer waits on its server.
func TestWaitingReason(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	e.app(t, "shop")
	q, err := e.svc.Deploy(ctx, e.admin, Peer{}, DeployParams{App: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	w, err := e.svc.WaitingReason(ctx, q.Deployment)
	if err != nil || !strings.Contains(w, "waiting for web-1: its agent has not connected yet") {
		t.Fatalf("never connected: %q %v", w, err)
	}
	if _, _, err := e.st.MarkServerSeen(ctx, e.srv.ID, nil); err != nil {
		t.Fatal(err)
	}
	w, err = e.svc.WaitingReason(ctx, q.Deployment)
	if err != nil || !strings.Contains(w, "waiting for web-1: agent offline since ") {
		t.Fatalf("seen before, not connected here: %q %v", w, err)
	}
	var got []string
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		defer cancel() // a Follow that ends early ends the wait too
		_ = e.svc.Follow(fctx, e.admin, q.Deployment.ID.String(), 0, func(ev FollowEvent) error {
			if ev.Waiting != nil {
				got = append(got, *ev.Waiting)
				cancel()
			}
			return nil
		})
	}()
	<-fctx.Done()
	if len(got) != 1 || !strings.HasPrefix(got[0], "waiting for web-1: agent offline since ") {
		t.Fatalf("follow's waiting events: %q", got)
	}
	claimed, err := e.st.ClaimQueuedDeployments(ctx, []store.ID{e.srv.ID}, 10)
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	if w, err := e.svc.WaitingReason(ctx, claimed[0]); err != nil || w != "" {
		t.Fatalf("dispatched: %q %v", w, err)
	}
}
