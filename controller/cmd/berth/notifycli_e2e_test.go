package main_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// TestNotifyCLIAgainstController: the notify and notifications commands
// against a real controller (serve --allow-private-webhook-targets): a
// webhook channel to a loopback receiver, a deployment.* rule, a test
// message the receiver verifies with the Standard Webhooks library, and
// the caller's inbox through berth notifications.
func TestNotifyCLIAgainstController(t *testing.T) {
	t.Parallel()
	dataDir := shortDir(t)
	c := startController(t, dataDir, "--metrics-interval", "1s", "--heartbeat-interval", "1s", "--allow-private-webhook-targets")
	f := startFleetOn(t, &fleetEnv{c: c, dataDir: dataDir})

	var mu sync.Mutex
	var secret string
	var got []map[string]any
	bad := 0
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		mu.Lock()
		defer mu.Unlock()
		wh, err := standardwebhooks.NewWebhook(secret)
		if err != nil || wh.Verify(body, r.Header) != nil {
			bad++
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		var m map[string]any
		_ = json.Unmarshal(body, &m)
		got = append(got, m)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rcv.Close)

	r := run(t, f.env, "notify", "channel", "add", "hook", "--kind", "webhook", "--url", rcv.URL+"/in", "--rate-limit", "7", "-o", "json")
	var ch map[string]any
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &ch) != nil || ch["url_host"] != "127.0.0.1" || ch["rate_limit_per_hour"] != float64(7) {
		t.Fatalf("channel add: %+v", r)
	}
	s, _ := ch["webhook_secret"].(string)
	if !strings.HasPrefix(s, "whsec_") {
		t.Fatalf("no generated secret: %+v", r)
	}
	mu.Lock()
	secret = s
	mu.Unlock()
	if r := run(t, f.env, "notify", "channel", "add", "hook", "--kind", "webhook", "--url", rcv.URL); r.code == 0 || !strings.Contains(r.stderr, "AlreadyExists") {
		t.Fatalf("add twice: %+v", r)
	}
	if r := run(t, f.env, "notify", "channel", "add", "bad", "--kind", "webhook", "--url", "ftp://example.com/"); r.code == 0 || !strings.Contains(r.stderr, "InvalidArgument") {
		t.Fatalf("bad url: %+v", r)
	}
	// The install's inbox channel's limit, changed in place.
	r = run(t, f.env, "notify", "channel", "update", "admins-inbox", "--rate-limit", "40", "-o", "json")
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &ch) != nil || ch["name"] != "admins-inbox" || ch["rate_limit_per_hour"] != float64(40) {
		t.Fatalf("channel update: %+v", r)
	}
	if r := run(t, f.env, "notify", "channel", "update", "nope", "--rate-limit", "5"); r.code == 0 || !strings.Contains(r.stderr, "NotFound") {
		t.Fatalf("update unknown: %+v", r)
	}

	r = run(t, f.env, "notify", "rule", "add", "--events", "deployment.*", "--channel", "hook", "--min-level", "warning", "-o", "json")
	var rule map[string]any
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &rule) != nil || rule["channel"] != "hook" || rule["min_level"] != "warning" {
		t.Fatalf("rule add: %+v", r)
	}
	if r := run(t, f.env, "notify", "rule", "list"); r.code != 0 || !strings.Contains(r.stdout, "deployment.*") || !strings.Contains(r.stdout, rule["id"].(string)) {
		t.Fatalf("rule list: %+v", r)
	}

	if r := run(t, f.env, "notify", "channel", "test", "hook"); r.code != 0 || !strings.Contains(r.stdout, "delivered") {
		t.Fatalf("channel test: %+v", r)
	}
	mu.Lock()
	n, b := len(got), bad
	var kind any
	if n > 0 {
		kind = got[0]["type"]
	}
	mu.Unlock()
	if n != 1 || b != 0 || kind != "notify.test" {
		t.Fatalf("receiver got %d verified messages (%d refused), type %v; want one notify.test", n, b, kind)
	}
	r = run(t, f.env, "notify", "channel", "list", "-o", "json")
	var chans []map[string]any
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &chans) != nil {
		t.Fatalf("channel list: %+v", r)
	}
	found := false
	for _, c := range chans {
		if c["name"] == "hook" {
			found = c["last_delivered_at"] != nil && c["last_error"] == ""
		}
	}
	if !found || strings.Contains(r.stdout, secret) || strings.Contains(r.stdout, "/in") {
		t.Fatalf("channel list: hook not delivered, or a secret or URL shown: %s", r.stdout)
	}

	// The install's inbox channel: a test puts a notification in every
	// admin's inbox, which berth notifications shows and marks read.
	if r := run(t, f.env, "notify", "channel", "test", "admins-inbox"); r.code != 0 {
		t.Fatalf("inbox test: %+v", r)
	}
	r = run(t, f.env, "notifications", "--unread", "-o", "json")
	var inbox []map[string]any
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &inbox) != nil || len(inbox) != 1 || inbox[0]["kind"] != "notify.test" {
		t.Fatalf("notifications: %+v", r)
	}
	if r := run(t, f.env, "notifications", "--mark-read", inbox[0]["id"].(string)); r.code != 0 || !strings.Contains(r.stdout, "marked 1 read") {
		t.Fatalf("mark read: %+v", r)
	}
	if r := run(t, f.env, "notifications", "--unread", "-o", "json"); r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("unread after marking: %+v", r)
	}
	if r := run(t, f.env, "notifications", "--mark-read", "all", "-o", "json"); r.code != 0 || !strings.Contains(r.stdout, `"marked": 0`) {
		t.Fatalf("mark all: %+v", r)
	}
	if r := run(t, f.env, "notifications", "--mark-read", "bogus"); r.code == 0 || !strings.Contains(r.stderr, "InvalidArgument") {
		t.Fatalf("mark bogus: %+v", r)
	}

	if r := run(t, f.env, "notify", "rule", "remove", rule["id"].(string)); r.code != 0 {
		t.Fatalf("rule remove: %+v", r)
	}
	if r := run(t, f.env, "notify", "channel", "remove", "hook"); r.code != 0 {
		t.Fatalf("channel remove: %+v", r)
	}
	if r := run(t, f.env, "notify", "channel", "test", "hook"); r.code == 0 || !strings.Contains(r.stderr, "NotFound") {
		t.Fatalf("test removed channel: %+v", r)
	}
	// Every change above is in the activity log, without the secret.
	r = run(t, f.env, "activity", "-o", "json")
	for _, a := range []string{"notify_channel.created", "notify_channel.tested", "notify_rule.created", "notify_rule.deleted", "notify_channel.deleted"} {
		if !strings.Contains(r.stdout, a) {
			t.Errorf("activity misses %s", a)
		}
	}
	if strings.Contains(r.stdout, secret) {
		t.Errorf("the activity log shows the secret")
	}
}

// TestFailedDeployReachesRuleChannel: a deploy that fails on a real agent
// publishes deployment.failed, which the deployment.* rule added with the
// CLI delivers through the outbox to the loopback webhook, signed, once;
// the admin's inbox shows it through berth notifications.
func TestFailedDeployReachesRuleChannel(t *testing.T) {
	t.Parallel()
	e := setupDeploy(t, "--allow-private-webhook-targets")
	var mu sync.Mutex
	var secret string
	ids := map[string]int{}
	var types []any
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		mu.Lock()
		defer mu.Unlock()
		wh, err := standardwebhooks.NewWebhook(secret)
		if err != nil || wh.Verify(body, r.Header) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		var m map[string]any
		_ = json.Unmarshal(body, &m)
		ids[r.Header.Get("webhook-id")]++
		types = append(types, m["type"])
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rcv.Close)
	var ch map[string]any
	e.mustJSON(t, &ch, "notify", "channel", "add", "hook", "--kind", "webhook", "--url", rcv.URL+"/in")
	mu.Lock()
	secret, _ = ch["webhook_secret"].(string)
	mu.Unlock()
	var rule map[string]any
	e.mustJSON(t, &rule, "notify", "rule", "add", "--events", "deployment.*", "--channel", "hook", "--server", "web-1", "--min-level", "warning")

	url := e.repo.serveHTTP(t, gitUser, gitToken)
	e.repo.commit(t, "main", "broken", map[string]string{"version.txt": "v1\n", "fail": "x\n"})
	if r := e.cli(t, gitToken+"\n", "git-credential", "add", "gitcred", "--https", "--username", gitUser, "--token-stdin"); r.code != 0 {
		t.Fatalf("git-credential add: %+v", r)
	}
	e.createApp(t, "shop", url, "gitcred")
	d, logs, code := e.deployFollow(t, "shop")
	if code == 0 || d.Status != "failed" {
		t.Fatalf("deploy: code %d %+v\n%s", code, d, logs)
	}
	waitFor(t, "deployment.failed at the webhook", 60*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(types) > 0
	})
	mu.Lock()
	if len(types) != 1 || types[0] != "deployment.failed" || len(ids) != 1 {
		t.Errorf("webhook got %v (ids %v), want deployment.failed once", types, ids)
	}
	mu.Unlock()
	var inbox []map[string]any
	e.mustJSON(t, &inbox, "notifications", "--unread")
	found := false
	for _, n := range inbox {
		found = found || n["kind"] == "deployment.failed"
	}
	if !found {
		t.Fatalf("inbox: %v", inbox)
	}
	var chans []map[string]any
	e.mustJSON(t, &chans, "notify", "channel", "list")
	for _, c := range chans {
		if c["name"] == "hook" && (c["last_delivered_at"] == nil || c["last_error"] != "") {
			t.Errorf("hook after delivery: %v", c)
		}
	}
}
