package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/berthhq/berth/controller/internal/notify"
	"github.com/berthhq/berth/controller/internal/store"
)

// TestNotifyDeliveryListCLI: berth notify delivery list against a real
// controller whose outbox workers deliver an event to two loopback
// webhooks, one answering and one down: the list shows the delivered
// message and the pending one with its attempts, last error and next
// attempt, filters by channel and status, prints a table or JSON; bad
// filters and a read token are refused with the gRPC code.
func TestNotifyDeliveryListCLI(t *testing.T) {
	t.Parallel()
	dataDir := shortDir(t)
	c := startController(t, dataDir, "--allow-private-webhook-targets")
	f := startFleetOn(t, &fleetEnv{c: c, dataDir: dataDir})

	var upHits atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upHits.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(up.Close)
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(down.Close)
	for name, u := range map[string]string{"up": up.URL + "/in", "down": down.URL + "/in"} {
		if r := run(t, f.env, "notify", "channel", "add", name, "--kind", "webhook", "--url", u); r.code != 0 {
			t.Fatalf("channel add %s: %+v", name, r)
		}
		if r := run(t, f.env, "notify", "rule", "add", "--events", "deployment.*", "--channel", name); r.code != 0 {
			t.Fatalf("rule add %s: %+v", name, r)
		}
	}

	// An event as a capability publishes it, in the controller's database.
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, fmt.Sprintf("host=%s user=berth dbname=berth sslmode=disable", filepath.Join(dataDir, "postgres", "run")))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := notify.Publish(ctx, store.New(pool, nil), notify.Event{Kind: notify.KindDeploymentFailed, Level: notify.Critical, Title: "Deploy of shop failed"}); err != nil {
		t.Fatal(err)
	}

	type delivery struct {
		ID            string  `json:"id"`
		Channel       string  `json:"channel"`
		EventKind     string  `json:"event_kind"`
		Title         string  `json:"title"`
		Status        string  `json:"status"`
		Attempts      int     `json:"attempts"`
		LastError     string  `json:"last_error"`
		NextAttemptAt *string `json:"next_attempt_at"`
		DeliveredAt   *string `json:"delivered_at"`
	}
	list := func(args ...string) []delivery {
		t.Helper()
		r := run(t, f.env, append([]string{"notify", "delivery", "list", "-o", "json"}, args...)...)
		var ds []delivery
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &ds) != nil {
			t.Fatalf("delivery list %v: %+v", args, r)
		}
		return ds
	}
	var got []delivery
	waitFor(t, "one delivery and one failed attempt", 60*time.Second, func() bool {
		got = list()
		n := 0
		for _, d := range got {
			if (d.Channel == "up" && d.Status == "delivered") || (d.Channel == "down" && d.Attempts >= 1 && d.LastError != "") {
				n++
			}
		}
		return n == 2
	})
	if len(got) != 2 || upHits.Load() != 1 {
		t.Fatalf("deliveries %+v, up receiver hit %d times", got, upHits.Load())
	}
	for _, d := range got {
		if d.EventKind != "deployment.failed" || d.Title != "Deploy of shop failed" {
			t.Errorf("delivery %+v", d)
		}
		switch d.Channel {
		case "up":
			if d.DeliveredAt == nil || d.NextAttemptAt != nil || d.LastError != "" {
				t.Errorf("delivered: %+v", d)
			}
		case "down":
			if d.Status != "pending" || d.NextAttemptAt == nil || d.DeliveredAt != nil || !strings.Contains(d.LastError, "HTTP 503") {
				t.Errorf("pending: %+v", d)
			}
		}
	}
	if ds := list("--channel", "down"); len(ds) != 1 || ds[0].Channel != "down" {
		t.Errorf("--channel down: %+v", ds)
	}
	if ds := list("--status", "delivered"); len(ds) != 1 || ds[0].Channel != "up" {
		t.Errorf("--status delivered: %+v", ds)
	}
	if ds := list("--status", "failed"); len(ds) != 0 {
		t.Errorf("--status failed: %+v", ds)
	}
	if ds := list("--channel", "up", "--status", "pending"); len(ds) != 0 {
		t.Errorf("up pending: %+v", ds)
	}
	r := run(t, f.env, "notify", "delivery", "list")
	if r.code != 0 || !strings.Contains(r.stdout, "ID  ") || !strings.Contains(r.stdout, "NEXT ATTEMPT") || !strings.Contains(r.stdout, "HTTP 503") ||
		strings.Count(strings.TrimSpace(r.stdout), "\n") != 2 {
		t.Errorf("table: %+v", r)
	}
	if strings.Contains(r.stdout, "/in") {
		t.Errorf("the table shows a channel URL: %s", r.stdout)
	}
	r = run(t, f.env, "notify", "channel", "list", "-o", "json")
	if r.code != 0 || !strings.Contains(r.stdout, `"given_up": 0`) {
		t.Errorf("channel list: %+v", r)
	}

	// Bad filters: refused before dialing, or by the service.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--status", "lost"}, "--status \"lost\""},
		{[]string{"--limit", "0"}, "--limit must be 1 to 200"},
		{[]string{"--channel", "nope"}, "NotFound"},
		{[]string{"--channel", "Not A Name!"}, "InvalidArgument"},
		{[]string{"--channel", strings.Repeat("c", 5000)}, "InvalidArgument"},
	} {
		r := run(t, f.env, append([]string{"notify", "delivery", "list"}, tc.args...)...)
		if r.code == 0 || !strings.Contains(r.stderr, tc.want) || r.stdout != "" {
			t.Errorf("%v: %+v, want %q", tc.args[:1], r, tc.want)
		}
	}
	// A read token may not see the outbox.
	r = run(t, f.env, "token", "issue", "reader", "--scope", "read", "-o", "json")
	var tok struct {
		Token string `json:"token"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &tok) != nil || tok.Token == "" {
		t.Fatalf("token issue: %+v", r)
	}
	readEnv := append(append([]string(nil), f.env...), "BERTH_TOKEN="+tok.Token)
	if r := run(t, readEnv, "notify", "delivery", "list"); r.code == 0 || !strings.Contains(r.stderr, "PermissionDenied") {
		t.Errorf("read token: %+v", r)
	}
	noTok := append(append([]string(nil), f.env...), "BERTH_TOKEN=berth_not-a-real-token")
	if r := run(t, noTok, "notify", "delivery", "list"); r.code == 0 || !strings.Contains(r.stderr, "Unauthenticated") {
		t.Errorf("bad token: %+v", r)
	}
}
