package web_test

import (
	"context"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/notify"
	"github.com/berthhq/berth/controller/internal/store"
)

// hookReceiver is a loopback webhook receiver that verifies each request
// with the Standard Webhooks library, or answers fail while fail is set.
type hookReceiver struct {
	*httptest.Server
	mu       sync.Mutex
	secret   string
	fail     bool
	verified int
	refused  int
	types    []string
}

func newHookReceiver(t *testing.T) *hookReceiver {
	t.Helper()
	h := &hookReceiver{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.fail {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		if h.secret != "" {
			wh, err := standardwebhooks.NewWebhook(h.secret)
			if err != nil || wh.Verify(body, r.Header) != nil {
				h.refused++
				w.WriteHeader(http.StatusBadRequest)
				return
			}
		}
		h.verified++
		if m := regexp.MustCompile(`"type":"([^"]+)"`).FindSubmatch(body); m != nil {
			h.types = append(h.types, string(m[1]))
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookReceiver) counts() (verified, refused int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.verified, h.refused
}

// inputValue is the value attribute of the input with id, as a browser
// reads it (HTML-unescaped), and whether the input is there.
func inputValue(body, id string) (string, bool) {
	m := regexp.MustCompile(`<input id="` + regexp.QuoteMeta(id) + `"[^>]*?value="([^"]*)"`).FindStringSubmatch(body)
	if m == nil {
		return "", false
	}
	return html.UnescapeString(m[1]), true
}

func textareaValue(body, id string) string {
	m := regexp.MustCompile(`(?s)<textarea id="` + regexp.QuoteMeta(id) + `"[^>]*>(.*?)</textarea>`).FindStringSubmatch(body)
	if m == nil {
		return ""
	}
	return html.UnescapeString(m[1])
}

// An admin adds each kind of channel through the page's forms. The list
// shows the kind and the addresses or URL host, never a URL or secret; a
// webhook's generated secret is on the answer that created it only; the
// test button shows what the loopback receiver made of a signed message;
// a failed test and a given-up delivery show on the channel; recent
// deliveries are listed on the channel's page; removal needs the name
// typed.
func TestChannelPagesAddTestAndRemove(t *testing.T) {
	e := newEnvWith(t, false, nil, &notify.Config{AllowPrivateTargets: true, MaxAttempts: 1})
	e.user("admin@example.com", store.RoleAdmin)
	c := e.client()
	c.login("admin@example.com", adminPassword)
	ctx := context.Background()

	resp, body := c.get("/notify/channels")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `data-channel="admins-inbox"`) || !strings.Contains(body, `href="/notify/channels"`) {
		t.Fatalf("channels page: %d\n%s", resp.StatusCode, body)
	}

	hook := newHookReceiver(t)
	slack := newHookReceiver(t)
	discord := newHookReceiver(t)
	const slackToken, discordToken, hookToken = "T0SLACK/B0SLACK/slacksekrit", "1234/discordsekrit", "hooksekrit"
	slackURL := slack.URL + "/services/" + slackToken
	discordURL := discord.URL + "/api/webhooks/" + discordToken

	resp, body = c.post("/notify/channels", url.Values{"form": {"email"}, "name": {"ops-mail"}, "to": {"ops@example.com, oncall@example.com"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/notify/channels/ops-mail" {
		t.Fatalf("add email: %d %s", resp.StatusCode, body)
	}
	for kind, u := range map[string]string{"slack": slackURL, "discord": discordURL} {
		resp, body = c.post("/notify/channels", url.Values{"form": {kind}, "name": {"ops-" + kind}, "url": {u}})
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("add %s: %d %s", kind, resp.StatusCode, body)
		}
	}
	resp, body = c.post("/notify/channels", url.Values{"form": {"webhook"}, "name": {"ops-hook"}, "url": {hook.URL + "/in?token=" + hookToken}})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("add webhook: %d %s", resp.StatusCode, body)
	}
	secret, ok := inputValue(body, "secret-value")
	if !ok || !strings.HasPrefix(secret, "whsec_") || !strings.Contains(body, "this once") {
		t.Fatalf("the generated secret is not shown once: %q\n%s", secret, body)
	}
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("the secret's page may be cached: %q", resp.Header.Get("Cache-Control"))
	}
	hook.mu.Lock()
	hook.secret = secret
	hook.mu.Unlock()

	secrets := []string{slackToken, discordToken, hookToken, strings.TrimPrefix(secret, "whsec_")}
	noSecrets := func(where, body string) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(body, s) {
				t.Errorf("%s shows %q", where, s)
			}
		}
	}

	resp, body = c.get("/notify/channels")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("list: %d", resp.StatusCode)
	}
	noSecrets("the channel list", body)
	for _, want := range []string{"ops@example.com, oncall@example.com", `data-channel="ops-slack"`, `data-channel="ops-discord"`, `data-channel="ops-hook"`, "127.0.0.1"} {
		if !strings.Contains(body, want) {
			t.Errorf("channel list lacks %q", want)
		}
	}

	// The test button: a signed message the receiver verifies, the result
	// on the page, the channel's last success set.
	resp, body = c.post("/notify/channels/ops-hook/test", url.Values{})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `id="test-result" data-ok="true"`) || !strings.Contains(body, "Test message delivered to ops-hook.") {
		t.Fatalf("test hook: %d\n%s", resp.StatusCode, body)
	}
	noSecrets("the test result", body)
	if v, r := hook.counts(); v != 1 || r != 0 {
		t.Fatalf("receiver verified %d, refused %d; want 1, 0", v, r)
	}
	for _, kind := range []string{"slack", "discord"} {
		if resp, body := c.post("/notify/channels/ops-"+kind+"/test", url.Values{}); resp.StatusCode != http.StatusOK || !strings.Contains(body, "Test message delivered") {
			t.Fatalf("test %s: %d\n%s", kind, resp.StatusCode, body)
		}
	}
	if v, _ := slack.counts(); v != 1 {
		t.Errorf("slack receiver got %d", v)
	}

	// A receiver that fails: the result says so (without the URL), and
	// the channel shows failing since and the last error.
	hook.mu.Lock()
	hook.fail = true
	hook.mu.Unlock()
	resp, body = c.post("/notify/channels/ops-hook/test", url.Values{})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `data-ok="false"`) || !strings.Contains(body, "Test message to ops-hook failed: post to 127.0.0.1: HTTP 500") {
		t.Fatalf("failed test: %d\n%s", resp.StatusCode, body)
	}
	noSecrets("the failed test", body)

	// Deliveries through the outbox: one event to the hook, refused once
	// and given up (MaxAttempts 1); the channel page lists it.
	if _, err := e.notify.AddRuleAs(ctx, adminPrincipal(t, e), notify.Peer{}, notify.RuleRequest{Events: []string{"deployment.*"}, Channel: "ops-hook"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.notify.Publish(ctx, notify.Event{Kind: notify.KindDeploymentFailed, Level: notify.Critical, Title: "Deploy of shop failed"}); err != nil {
		t.Fatal(err)
	}
	if n, err := e.notify.DeliverDue(ctx, 10); err != nil || n != 1 {
		t.Fatalf("deliver: %d %v", n, err)
	}
	resp, body = c.get("/notify/channels/ops-hook")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("channel page: %d", resp.StatusCode)
	}
	noSecrets("the channel page", body)
	for _, want := range []string{`data-status="failed"`, "deployment.failed", "Deploy of shop failed", "post to 127.0.0.1: HTTP 500",
		`<dd data-field="given_up">1</dd>`, "deployment.*", `id="channel-state">failing`} {
		if !strings.Contains(body, want) {
			t.Errorf("channel page lacks %q", want)
		}
	}
	resp, body = c.get("/notify/channels")
	if !strings.Contains(body, `<td class="num" data-field="given_up">1</td>`) {
		t.Errorf("list lacks the given-up count:\n%s", body)
	}

	// Back up: the next event is delivered and listed as such.
	hook.mu.Lock()
	hook.fail = false
	hook.mu.Unlock()
	if _, err := e.notify.Publish(ctx, notify.Event{Kind: notify.KindDeploymentSucceeded, Title: "Deploy of shop succeeded"}); err != nil {
		t.Fatal(err)
	}
	if n, err := e.notify.DeliverDue(ctx, 10); err != nil || n != 1 {
		t.Fatalf("deliver: %d %v", n, err)
	}
	_, body = c.get("/notify/channels/ops-hook")
	if !strings.Contains(body, `data-status="delivered"`) || !strings.Contains(body, `id="channel-state">ok`) {
		t.Errorf("channel page after a delivery:\n%s", body)
	}

	// The delivery list across channels, filtered as the CLI's.
	resp, body = c.get("/notify/deliveries")
	if resp.StatusCode != http.StatusOK || strings.Count(body, `<tr data-delivery-id=`) != 2 {
		t.Fatalf("deliveries: %d\n%s", resp.StatusCode, body)
	}
	noSecrets("the delivery list", body)
	_, body = c.get("/notify/deliveries?status=failed")
	if strings.Count(body, `<tr data-delivery-id=`) != 1 || !strings.Contains(body, `data-status="failed" data-channel="ops-hook"`) || !strings.Contains(body, "Deploy of shop failed") {
		t.Errorf("failed deliveries:\n%s", body)
	}
	_, body = c.get("/notify/deliveries?channel=ops-slack")
	if strings.Contains(body, `<tr data-delivery-id=`) || !strings.Contains(body, "No deliveries match.") {
		t.Errorf("ops-slack deliveries:\n%s", body)
	}
	if resp, body := c.get("/notify/deliveries?status=lost"); resp.StatusCode != http.StatusBadRequest || !strings.Contains(html.UnescapeString(body), `status "lost"`) {
		t.Errorf("bad status filter: %d", resp.StatusCode)
	}
	if resp, _ := c.get("/notify/deliveries?channel=nope"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown channel filter: %d", resp.StatusCode)
	}
	if resp, _ := c.get("/notify/deliveries?channel=" + url.QueryEscape(strings.Repeat("x", 5000))); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("oversized channel filter: %d", resp.StatusCode)
	}

	// Removal needs the name typed; a wrong name keeps the channel.
	resp, body = c.post("/notify/channels/ops-hook/remove", url.Values{"confirm": {"ops-hok"}})
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "Type the channel&#39;s name to confirm") {
		t.Fatalf("remove without confirmation: %d\n%s", resp.StatusCode, body)
	}
	if _, err := e.st.NotifyChannelByName(ctx, "ops-hook"); err != nil {
		t.Fatalf("channel gone after a refused removal: %v", err)
	}
	resp, _ = c.post("/notify/channels/ops-hook/remove", url.Values{"confirm": {"ops-hook"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/notify/channels" {
		t.Fatalf("remove: %d", resp.StatusCode)
	}
	if resp, _ := c.get("/notify/channels/ops-hook"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("removed channel's page: %d", resp.StatusCode)
	}

	// Nowhere afterwards: not in the activity log either.
	for _, p := range []string{"/notify/channels", "/notify/channels/ops-slack", "/notify/channels/ops-discord", "/notify/rules", "/activity", "/notifications"} {
		resp, body := c.get(p)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %d", p, resp.StatusCode)
		}
		noSecrets(p, body)
	}
	_, body = c.get("/activity")
	for _, a := range []string{"notify_channel.created", "notify_channel.tested", "notify_channel.deleted"} {
		if !strings.Contains(body, a) {
			t.Errorf("activity lacks %s", a)
		}
	}
	noSecrets("the log", e.logs.String())
}

func adminPrincipal(t *testing.T, e *env) *auth.Principal {
	t.Helper()
	u, err := e.st.UserByEmail(context.Background(), "admin@example.com")
	if err != nil {
		t.Fatal(err)
	}
	return &auth.Principal{UserID: u.ID, Email: u.Email, Role: store.RoleAdmin, Scopes: []store.Scope{store.ScopeAdmin}}
}

// Bad input on the add forms gets a clear error and the form back with
// what was typed, except the write-only fields: a URL (Slack's and
// Discord's carry their token, a webhook's may) and a signing secret are
// never put back into the page, which says to enter them again. Refused:
// an invalid URL, a private target (this controller refuses them), an
// oversized field, a taken name, a bad secret, an unknown kind. Nothing is
// stored.
func TestChannelFormsBadInput(t *testing.T) {
	e := newEnv(t, false)
	e.user("admin@example.com", store.RoleAdmin)
	c := e.client()
	c.login("admin@example.com", adminPassword)
	long := "https://hooks.example.com/" + strings.Repeat("a", 3000)
	const again = "URLs and secrets are never sent back to the browser: enter it again."
	for _, tc := range []struct {
		name   string
		form   url.Values
		status int
		msg    string
		kept   map[string]string // input id: value kept
	}{
		{"not http", url.Values{"form": {"webhook"}, "name": {"hook-1"}, "url": {"ftp://example.com/x-sekrit-1"}}, 400, "not an http(s) URL with a host",
			map[string]string{"webhook-name": "hook-1"}},
		{"loopback", url.Values{"form": {"slack"}, "name": {"slack-1"}, "url": {"http://127.0.0.1:9/services/T/B/sekrit-2"}}, 400, "private, loopback or link-local",
			map[string]string{"slack-name": "slack-1"}},
		{"private", url.Values{"form": {"discord"}, "name": {"disc-1"}, "url": {"https://10.1.2.3/api/webhooks/1/sekrit-3"}}, 400, "--allow-private-webhook-targets",
			map[string]string{"discord-name": "disc-1"}},
		{"localhost", url.Values{"form": {"webhook"}, "name": {"hook-2"}, "url": {"http://localhost:8080/in?token=sekrit-4"}}, 400, "private, loopback or link-local",
			map[string]string{"webhook-name": "hook-2"}},
		{"URL too long", url.Values{"form": {"webhook"}, "name": {"hook-3"}, "url": {long}}, 400, "the URL must be 1 to 2048 characters",
			map[string]string{"webhook-name": "hook-3"}},
		{"field oversized", url.Values{"form": {"webhook"}, "name": {"hook-4"}, "url": {long + strings.Repeat("b", 5000)}}, 400, "URL is longer than 4096 characters.",
			map[string]string{"webhook-name": "hook-4"}},
		{"name oversized", url.Values{"form": {"email"}, "name": {strings.Repeat("n", 100)}, "to": {"a@example.com"}}, 400, "channel name must be 1-63",
			map[string]string{"email-name": strings.Repeat("n", 100)}},
		{"bad name", url.Values{"form": {"email"}, "name": {"Ops Mail"}, "to": {"a@example.com"}}, 400, "channel name must be 1-63",
			map[string]string{"email-name": "Ops Mail"}},
		{"bad address", url.Values{"form": {"email"}, "name": {"mail-1"}, "to": {"ops@example.com, not-an-address"}}, 400, "is not an email address",
			map[string]string{"email-name": "mail-1"}},
		{"no address", url.Values{"form": {"email"}, "name": {"mail-2"}, "to": {""}}, 400, "needs at least one address", nil},
		{"bad secret", url.Values{"form": {"webhook"}, "name": {"hook-5"}, "url": {"https://receiver.example.com/in?token=sekrit-5"}, "secret": {"whsec_shortsekrit6"}}, 400, "the secret must be",
			map[string]string{"webhook-name": "hook-5"}},
		{"taken with a secret", url.Values{"form": {"webhook"}, "name": {"admins-inbox"}, "url": {"https://receiver.example.com/in?token=sekrit-7"},
			"secret": {"whsec_c2Vrcml0LTg4ODg4ODg4ODg4ODg4ODg4ODg4ODg4"}}, 409, "A channel with that name exists already",
			map[string]string{"webhook-name": "admins-inbox"}},
		{"taken", url.Values{"form": {"email"}, "name": {"admins-inbox"}, "to": {"a@example.com"}}, 409, "A channel with that name exists already",
			map[string]string{"email-name": "admins-inbox"}},
		{"unknown kind", url.Values{"form": {"sms"}, "name": {"sms-1"}}, 400, `channel kind "sms"`, nil},
	} {
		resp, body := c.post("/notify/channels", tc.form)
		text := html.UnescapeString(body)
		if resp.StatusCode != tc.status || !strings.Contains(text, tc.msg) || !strings.Contains(body, `id="form-error"`) {
			t.Errorf("%s: %d, want %d with %q", tc.name, resp.StatusCode, tc.status, tc.msg)
			continue
		}
		for id, want := range tc.kept {
			if got, ok := inputValue(body, id); !ok || got != want {
				t.Errorf("%s: %s kept %.60q, want %.60q", tc.name, id, got, want)
			}
		}
		// The typed URL and secret are nowhere in the answer, not even
		// in part (the tokens are unique to each case), and the message
		// says why the fields are empty.
		typed := false
		for _, k := range []string{"url", "secret"} {
			v := tc.form.Get(k)
			if v == "" {
				continue
			}
			typed = true
			if strings.Contains(text, v) || strings.Contains(body, v) {
				t.Errorf("%s: the answer carries the typed %s", tc.name, k)
			}
			if i := strings.Index(v, "sekrit"); i >= 0 && strings.Contains(text, v[i:]) {
				t.Errorf("%s: the answer carries the token of the typed %s", tc.name, k)
			}
		}
		if typed != strings.Contains(text, again) {
			t.Errorf("%s: typed a URL or secret %v, page says to enter it again %v", tc.name, typed, strings.Contains(text, again))
		}
		if got := resp.Header.Get("Cache-Control"); got != "no-store" {
			t.Errorf("%s: Cache-Control %q", tc.name, got)
		}
		if tc.name == "bad address" {
			if got := textareaValue(body, "email-to"); got != "ops@example.com, not-an-address" {
				t.Errorf("addresses not kept: %q", got)
			}
		}
	}
	chans, err := e.st.NotifyChannels(context.Background())
	if err != nil || len(chans) != 1 {
		t.Fatalf("refused forms stored channels: %d %v", len(chans), err)
	}
	// A form over the size bound is refused as a whole.
	if resp, _ := c.post("/notify/channels", url.Values{"form": {"email"}, "name": {"x"}, "to": {strings.Repeat("a", 70<<10)}}); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized form: %d", resp.StatusCode)
	}
}

// Rules: an admin adds one with wildcards, a server filter and a minimum
// level, sees it listed with the server's name, and removes it; bad
// patterns, unknown channels and servers, and bad levels are refused with
// the form kept.
func TestRulePages(t *testing.T) {
	e := newEnv(t, false)
	e.user("admin@example.com", store.RoleAdmin)
	ctx := context.Background()
	if _, err := e.st.CreateServer(ctx, store.CreateServerParams{Name: "web-1"}); err != nil {
		t.Fatal(err)
	}
	c := e.client()
	c.login("admin@example.com", adminPassword)
	resp, body := c.get("/notify/rules")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "deployment.failed, deployment.timed_out") {
		t.Fatalf("rules page (the install's default rule): %d\n%s", resp.StatusCode, body)
	}
	for _, tc := range []struct {
		form   url.Values
		status int
		msg    string
	}{
		{url.Values{"form": {"rule"}, "events": {"Deploy!"}, "channel": {"admins-inbox"}}, 400, "event pattern"},
		{url.Values{"form": {"rule"}, "events": {""}, "channel": {"admins-inbox"}}, 400, "a rule needs 1 to 50 event patterns"},
		{url.Values{"form": {"rule"}, "events": {"server.*"}, "channel": {"nope"}}, 404, "There is no such channel."},
		{url.Values{"form": {"rule"}, "events": {"server.*"}, "channel": {"admins-inbox"}, "server": {"web-404"}}, 404, "There is no such server."},
		{url.Values{"form": {"rule"}, "events": {"server.*"}, "channel": {"admins-inbox"}, "app": {"no such app!"}}, 400, "is not an app name"},
		{url.Values{"form": {"rule"}, "events": {"server.*"}, "channel": {"admins-inbox"}, "min_level": {"loud"}}, 400, "level \"loud\""},
		{url.Values{"form": {"rule"}, "events": {strings.Repeat("x", 5000)}, "channel": {"admins-inbox"}}, 400, "Events is longer than 4096 characters."},
	} {
		resp, body := c.post("/notify/rules", tc.form)
		if resp.StatusCode != tc.status || !strings.Contains(html.UnescapeString(body), tc.msg) {
			t.Errorf("%v: %d, want %d with %q", tc.form, resp.StatusCode, tc.status, tc.msg)
			continue
		}
		if ev := tc.form.Get("events"); len(ev) < 4096 {
			if got, _ := inputValue(body, "rule-events"); got != ev {
				t.Errorf("%v: events kept %q", tc.form, got)
			}
		}
	}
	resp, body = c.post("/notify/rules", url.Values{"form": {"rule"}, "events": {"deployment.*, server.offline"}, "channel": {"admins-inbox"}, "server": {"web-1"}, "min_level": {"warning"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("add rule: %d %s", resp.StatusCode, body)
	}
	_, body = c.get("/notify/rules")
	m := regexp.MustCompile(`<tr data-rule-id="([0-9A-Z]{26})">\s*<td class="wide"><code>deployment\.\*, server\.offline</code></td>\s*<td><a href="/notify/channels/admins-inbox">admins-inbox</a></td>\s*<td>web-1</td>\s*<td>any</td>\s*<td><span class="status level-warning">warning</span>`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("the rule is not listed as added:\n%s", body)
	}
	if resp, _ := c.post("/notify/rules/not-an-id/remove", url.Values{}); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("remove a bad id: %d", resp.StatusCode)
	}
	if resp, _ := c.post("/notify/rules/"+store.NewID().String()+"/remove", url.Values{}); resp.StatusCode != http.StatusNotFound {
		t.Errorf("remove an unknown rule: %d", resp.StatusCode)
	}
	if resp, _ := c.post("/notify/rules/"+m[1]+"/remove", url.Values{}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("remove: %d", resp.StatusCode)
	}
	if _, body := c.get("/notify/rules"); strings.Contains(body, m[1]) {
		t.Fatal("removed rule still listed")
	}
}

// Operators and viewers get 403 on every channel and rule page and
// change; the nav does not offer the pages; nothing changes.
func TestNotifyPagesAdminOnly(t *testing.T) {
	e := newEnv(t, false)
	e.user("operator@example.com", store.RoleOperator)
	e.user("viewer@example.com", store.RoleViewer)
	for _, who := range []string{"operator@example.com", "viewer@example.com"} {
		c := e.client()
		c.login(who, adminPassword)
		for _, p := range []string{"/notify/channels", "/notify/channels/admins-inbox", "/notify/rules", "/notify/deliveries"} {
			if resp, body := c.get(p); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "Not allowed") {
				t.Errorf("%s GET %s: %d", who, p, resp.StatusCode)
			}
		}
		for p, f := range map[string]url.Values{
			"/notify/channels":                                    {"form": {"email"}, "name": {"sneaky"}, "to": {"me@example.com"}},
			"/notify/channels/admins-inbox/test":                  {},
			"/notify/channels/admins-inbox/remove":                {"confirm": {"admins-inbox"}},
			"/notify/channels/admins-inbox/update":                {"form": {"rate"}, "rate_limit_per_hour": {"1"}},
			"/notify/rules":                                       {"form": {"rule"}, "events": {"*"}, "channel": {"admins-inbox"}},
			"/notify/rules/" + store.NewID().String() + "/remove": {},
		} {
			if resp, _ := c.post(p, f); resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s POST %s: %d", who, p, resp.StatusCode)
			}
		}
		_, body := c.get("/servers")
		if strings.Contains(body, `href="/notify/channels"`) || strings.Contains(body, `href="/notify/rules"`) {
			t.Errorf("%s sees the admin's notify nav", who)
		}
	}
	chans, _ := e.st.NotifyChannels(context.Background())
	rules, _ := e.st.NotifyRules(context.Background())
	if len(chans) != 1 || len(rules) != 1 || chans[0].RateLimitPerHour != notify.DefaultRateLimit {
		t.Fatalf("refused callers changed something: %d channels, %d rules", len(chans), len(rules))
	}
}

// The add forms set a channel's rate limit (messages per hour): out of
// range or not a number is refused with the form kept (the URL aside), a
// set value is shown on the channel and honoured by delivery: with 1 an
// hour, the first of three events goes out and the other two are held
// back for the digest.
func TestChannelFormRateLimit(t *testing.T) {
	e := newEnvWith(t, false, nil, &notify.Config{AllowPrivateTargets: true})
	e.user("admin@example.com", store.RoleAdmin)
	c := e.client()
	c.login("admin@example.com", adminPassword)
	ctx := context.Background()
	hook := newHookReceiver(t)
	const secret = "whsec_c2Vrcml0LTg4ODg4ODg4ODg4ODg4ODg4ODg4ODg4OA=="
	hook.secret = secret

	for _, tc := range []struct {
		rate, msg string
	}{
		{"10001", "rate limit must be 1 to 10000 messages per hour"},
		{"-5", "rate limit must be 1 to 10000 messages per hour"},
		{"0", "Messages per hour must be a whole number from 1 to 10000 (empty for 20)."},
		{"ten", "Messages per hour must be a whole number from 1 to 10000 (empty for 20)."},
		{"1.5", "Messages per hour must be a whole number from 1 to 10000 (empty for 20)."},
	} {
		resp, body := c.post("/notify/channels", url.Values{"form": {"webhook"}, "name": {"limited"}, "url": {hook.URL + "/in"}, "secret": {secret},
			"rate_limit_per_hour": {tc.rate}})
		text := html.UnescapeString(body)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(text, tc.msg) {
			t.Errorf("rate %q: %d, want 400 with %q", tc.rate, resp.StatusCode, tc.msg)
			continue
		}
		if got, _ := inputValue(body, "webhook-rate"); got != tc.rate {
			t.Errorf("rate %q: kept %q", tc.rate, got)
		}
		if got, _ := inputValue(body, "webhook-name"); got != "limited" {
			t.Errorf("rate %q: name kept %q", tc.rate, got)
		}
		if strings.Contains(body, hook.URL) || strings.Contains(body, strings.TrimPrefix(secret, "whsec_")) {
			t.Errorf("rate %q: the refusal carries the URL or secret", tc.rate)
		}
	}
	if _, err := e.st.NotifyChannelByName(ctx, "limited"); err == nil {
		t.Fatal("a refused rate limit stored the channel")
	}

	resp, body := c.post("/notify/channels", url.Values{"form": {"webhook"}, "name": {"limited"}, "url": {hook.URL + "/in"}, "secret": {secret},
		"rate_limit_per_hour": {" 1 "}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("add with a rate limit: %d %s", resp.StatusCode, body)
	}
	resp, body = c.post("/notify/channels", url.Values{"form": {"email"}, "name": {"mail-default"}, "to": {"ops@example.com"}, "rate_limit_per_hour": {""}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("add with the default: %d %s", resp.StatusCode, body)
	}
	for name, want := range map[string]string{"limited": ">1 an hour", "mail-default": ">20 an hour"} {
		if _, body := c.get("/notify/channels/" + name); !strings.Contains(body, `<dd data-field="rate_limit"`+want) {
			t.Errorf("%s: the page does not show %q", name, want)
		}
	}
	// The activity log has the limit chosen.
	if _, body := c.get("/activity"); !strings.Contains(html.UnescapeString(body), "rate_limit_per_hour") {
		t.Errorf("the activity log lacks the rate limit")
	}

	if _, err := e.notify.AddRuleAs(ctx, adminPrincipal(t, e), notify.Peer{}, notify.RuleRequest{Events: []string{"backup.*"}, Channel: "limited"}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := e.notify.Publish(ctx, notify.Event{Kind: "backup.failed", Level: notify.Critical, Title: fmt.Sprintf("backup %d failed", i)}); err != nil {
			t.Fatal(err)
		}
	}
	for {
		n, err := e.notify.DeliverDue(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	if v, r := hook.counts(); v != 1 || r != 0 {
		t.Fatalf("the receiver verified %d and refused %d; want 1 within the limit of 1 an hour", v, r)
	}
	dels, err := e.notify.DeliveriesAs(ctx, adminPrincipal(t, e), notify.DeliveryFilter{Channel: "limited"})
	if err != nil {
		t.Fatal(err)
	}
	status := map[string]int{}
	for _, d := range dels {
		status[d.Status]++
	}
	if status["delivered"] != 1 || status["held"] != 2 || len(dels) != 3 {
		t.Fatalf("deliveries by status %v, want 1 delivered and 2 held", status)
	}

	// The channel page changes the limit in place (the service's
	// UpdateChannelAs): bad input is refused with what was typed kept and
	// the limit unchanged; a new limit holds from the next message on.
	for _, tc := range []struct {
		rate, msg string
	}{
		{"ten", "Messages per hour must be a whole number from 1 to 10000."},
		{"0", "rate limit must be 1 to 10000 messages per hour"},
		{"10001", "rate limit must be 1 to 10000 messages per hour"},
		{"", "nothing to change: give a rate limit"},
	} {
		resp, body := c.post("/notify/channels/limited/update", url.Values{"form": {"rate"}, "rate_limit_per_hour": {tc.rate}})
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(html.UnescapeString(body), tc.msg) || !strings.Contains(body, `id="form-error"`) {
			t.Errorf("update to %q: %d, want 400 with %q", tc.rate, resp.StatusCode, tc.msg)
			continue
		}
		if got, _ := inputValue(body, "rate-limit"); got != tc.rate {
			t.Errorf("update to %q: kept %q", tc.rate, got)
		}
		if !strings.Contains(body, `<dd data-field="rate_limit">1 an hour`) {
			t.Errorf("update to %q: the page no longer shows the unchanged limit", tc.rate)
		}
	}
	if resp, _ := c.post("/notify/channels/nope/update", url.Values{"form": {"rate"}, "rate_limit_per_hour": {"5"}}); resp.StatusCode != http.StatusNotFound {
		t.Errorf("update of an unknown channel: %d", resp.StatusCode)
	}
	if _, body := c.get("/notify/channels/limited"); !strings.Contains(body, `value="1"`) {
		t.Errorf("the rate limit form does not show the limit")
	}
	resp, _ = c.post("/notify/channels/limited/update", url.Values{"form": {"rate"}, "rate_limit_per_hour": {"10"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/notify/channels/limited" {
		t.Fatalf("update: %d", resp.StatusCode)
	}
	if _, body := c.get("/notify/channels/limited"); !strings.Contains(body, `<dd data-field="rate_limit">10 an hour`) ||
		!strings.Contains(body, "Channel limited: at most 10 messages an hour from now on.") {
		t.Errorf("the page after the update:\n%s", body)
	}
	if _, body := c.get("/activity"); !strings.Contains(body, "notify_channel.updated") {
		t.Errorf("the activity log lacks notify_channel.updated")
	}
	if _, err := e.notify.Publish(ctx, notify.Event{Kind: "backup.failed", Level: notify.Critical, Title: "backup 3 failed"}); err != nil {
		t.Fatal(err)
	}
	for {
		n, err := e.notify.DeliverDue(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	if v, r := hook.counts(); v != 2 || r != 0 {
		t.Fatalf("after raising the limit the receiver verified %d and refused %d; want 2", v, r)
	}
}
