package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5/pgxpool"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/berthhq/berth/controller/internal/mail/mailtest"
	"github.com/berthhq/berth/controller/internal/password"
	"github.com/berthhq/berth/controller/internal/store"
)

// chatReceiver stands in for Slack, Discord or a webhook receiver on
// loopback: it records each body; with a secret it verifies the Standard
// Webhooks signature with that specification's library first.
type chatReceiver struct {
	*httptest.Server
	mu      sync.Mutex
	secret  string
	bodies  []map[string]any
	refused int
}

func newChatReceiver(t *testing.T) *chatReceiver {
	t.Helper()
	c := &chatReceiver{}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.secret != "" {
			wh, err := standardwebhooks.NewWebhook(c.secret)
			if err != nil || wh.Verify(body, r.Header) != nil {
				c.refused++
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
		}
		var m map[string]any
		if json.Unmarshal(body, &m) != nil {
			c.refused++
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		c.bodies = append(c.bodies, m)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(c.Close)
	return c
}

func (c *chatReceiver) got() ([]map[string]any, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]map[string]any(nil), c.bodies...), c.refused
}

// value is a form field's current value in the page.
func (tb *tab) value(sel string) string {
	tb.t.Helper()
	return tabRun(tb, "value of "+sel, chromedp.Evaluate[string](fmt.Sprintf(`document.querySelector(%q).value`, sel)))
}

// html is the whole document as the browser has it.
func (tb *tab) html() string {
	tb.t.Helper()
	return tabRun(tb, "page HTML", chromedp.Evaluate[string](`document.documentElement.outerHTML`))
}

// setValue sets a field without the visibility wait fill does (a select,
// or a value longer than the field's maxlength, as a script could send).
func (tb *tab) setValue(sel, v string) {
	tb.t.Helper()
	b, _ := json.Marshal(v)
	tabRun(tb, "set "+sel, chromedp.Evaluate[bool](fmt.Sprintf(`(document.querySelector(%q).value = %s, true)`, sel, b)))
}

// TestBrowserNotifyChannels: headless Chromium against a real controller
// (loopback targets allowed, a test SMTP server). An admin adds an email,
// a Slack, a Discord and a webhook channel through the forms; the
// webhook's generated secret is shown once; each channel's test button
// reaches its loopback receiver (the webhook's message verified with the
// Standard Webhooks library) and the page shows the result; a receiver
// that fails shows as failing with its error. Rules are added and removed
// through their form. No page ever holds a URL token or the secret after
// the answer that created it. Bad input keeps everything typed; a
// cross-origin post is refused; an operator gets 403.
func TestBrowserNotifyChannels(t *testing.T) {
	t.Parallel()
	bctx := startBrowser(t)
	smtp := mailtest.Start(t)
	dataDir := shortDir(t)
	c := startController(t, dataDir, "--allow-private-webhook-targets",
		"--smtp-host", smtp.Host, "--smtp-port", strconv.Itoa(smtp.Port), "--smtp-tls", "none", "--smtp-from", mailtest.From)
	e := &browserEnv{bctx: bctx, c: c, dataDir: dataDir, mail: smtp}

	const email, pw = "ada@example.com", "ada lovelace analytical engine"
	createUser(t, dataDir, email, pw)
	tb := e.tab(t, "ada")
	tb.login(email, pw)
	if n := tb.count(`nav a[href="/notify/channels"]`) + tb.count(`nav a[href="/notify/rules"]`); n != 2 {
		t.Fatalf("admin nav has %d notify entries, want 2", n)
	}
	tb.submit(`nav a[href="/notify/channels"]`)
	if p := tb.path(); p != "/notify/channels" {
		t.Fatalf("Channels nav leads to %s", p)
	}

	slack, discord, hook := newChatReceiver(t), newChatReceiver(t), newChatReceiver(t)
	const slackToken, discordToken, hookToken = "T0AB12/B0CD34/slackSekritToken", "987654/discordSekritToken", "hookSekritToken"
	secrets := []string{slackToken, discordToken, hookToken}
	var pages []string // every page's HTML, scanned for secrets at the end
	snap := func() { pages = append(pages, tb.html()) }

	// Email, at most 5 messages an hour: a test message reaches the SMTP
	// server.
	tb.fill("#email-name", "ops-mail", "#email-to", "ops@example.com, oncall@example.com", "#email-rate", "5")
	tb.submit("#add-email button[type=submit]")
	if p := tb.path(); p != "/notify/channels/ops-mail" || !strings.Contains(tb.text("p.flash"), "Channel ops-mail added.") {
		t.Fatalf("after adding email at %s: %s", tb.path(), tb.bodyText())
	}
	if got := tb.text(`[data-field="rate_limit"]`); !strings.HasPrefix(got, "5 an hour") || tb.value("#rate-limit") != "5" {
		t.Fatalf("rate limit shown as %q, form %q", got, tb.value("#rate-limit"))
	}
	// The channel page's form changes it; out of range is refused with
	// what was typed kept.
	tb.setValue("#rate-limit", "10001")
	tb.submit("#rate-limit-form button[type=submit]")
	if got := tb.text("#form-error"); !strings.Contains(got, "rate limit must be 1 to 10000 messages per hour") || tb.value("#rate-limit") != "10001" ||
		!strings.HasPrefix(tb.text(`[data-field="rate_limit"]`), "5 an hour") {
		t.Fatalf("rate limit 10001: %q", got)
	}
	tb.setValue("#rate-limit", "12")
	tb.submit("#rate-limit-form button[type=submit]")
	if got := tb.text(`[data-field="rate_limit"]`); !strings.HasPrefix(got, "12 an hour") || !strings.Contains(tb.text("p.flash"), "at most 12 messages an hour") {
		t.Fatalf("after changing the rate limit: %q / %q", got, tb.text("p.flash"))
	}
	snap()
	tb.submit("#test-channel button")
	if got := tb.text("#test-result"); got != "Test message delivered to ops-mail." {
		t.Fatalf("email test: %q", got)
	}
	mctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	m, err := smtp.WaitFor(mctx, "oncall@example.com")
	cancel()
	if err != nil || m.Subject != "[Berth] Test notification from Berth" {
		t.Fatalf("test mail: %+v %v", m, err)
	}

	// Slack and Discord: the URL carries the token and is never shown.
	for _, ch := range []struct {
		kind, url string
		rcv       *chatReceiver
		field     string
	}{
		{"slack", slack.URL + "/services/" + slackToken, slack, "text"},
		{"discord", discord.URL + "/api/webhooks/" + discordToken, discord, "content"},
	} {
		tb.open("/notify/channels")
		tb.fill("#"+ch.kind+"-name", "ops-"+ch.kind, "#"+ch.kind+"-url", ch.url)
		tb.submit("#add-" + ch.kind + " button[type=submit]")
		if p := tb.path(); p != "/notify/channels/ops-"+ch.kind {
			t.Fatalf("after adding %s at %s: %s", ch.kind, p, tb.bodyText())
		}
		if got := tb.text(`[data-field="target"]`); !strings.HasPrefix(got, "127.0.0.1") {
			t.Fatalf("%s target shown as %q", ch.kind, got)
		}
		snap()
		tb.submit("#test-channel button")
		if got := tb.text("#test-result"); got != "Test message delivered to ops-"+ch.kind+"." {
			t.Fatalf("%s test: %q", ch.kind, got)
		}
		snap()
		bodies, refused := ch.rcv.got()
		if len(bodies) != 1 || refused != 0 || !strings.Contains(fmt.Sprint(bodies[0][ch.field]), "Test notification from Berth") {
			t.Fatalf("%s receiver got %v (%d refused)", ch.kind, bodies, refused)
		}
	}

	// Webhook: the generated secret is shown once; the receiver verifies
	// the test message with it.
	tb.open("/notify/channels")
	tb.fill("#webhook-name", "ops-hook", "#webhook-url", hook.URL+"/in?token="+hookToken)
	tb.submit("#add-webhook button[type=submit]")
	tb.waitVisible("#new-secret")
	secret := tb.value("#secret-value")
	if !strings.HasPrefix(secret, "whsec_") || !strings.Contains(tb.text("#new-secret"), "this once") {
		t.Fatalf("generated secret %q: %s", secret, tb.text("#new-secret"))
	}
	secrets = append(secrets, strings.TrimPrefix(secret, "whsec_"))
	hook.mu.Lock()
	hook.secret = secret
	hook.mu.Unlock()
	tb.open("/notify/channels/ops-hook")
	if tb.count("#new-secret") != 0 || strings.Contains(tb.html(), strings.TrimPrefix(secret, "whsec_")) {
		t.Fatal("the secret is shown again on the channel's page")
	}
	tb.submit("#test-channel button")
	if got := tb.text("#test-result"); got != "Test message delivered to ops-hook." {
		t.Fatalf("webhook test: %q", got)
	}
	snap()
	if bodies, refused := hook.got(); len(bodies) != 1 || refused != 0 || bodies[0]["type"] != "notify.test" {
		t.Fatalf("webhook receiver: %v (%d refused)", bodies, refused)
	}
	if got := tb.text("#channel-state"); got != "ok" {
		t.Fatalf("channel state after a delivery: %q", got)
	}

	// A receiver that is down: the result and the channel say so.
	slack.Close()
	tb.open("/notify/channels/ops-slack")
	tb.submit("#test-channel button")
	if got := tb.text("#test-result"); !strings.HasPrefix(got, "Test message to ops-slack failed: post to 127.0.0.1:") {
		t.Fatalf("failed test: %q", got)
	}
	if tb.text("#channel-state") != "failing" || tb.text(`[data-field="failing_since"]`) == "—" || !strings.Contains(tb.text(`[data-field="last_error"]`), "post to 127.0.0.1") {
		t.Fatalf("failing channel: %s", tb.text("#channel-facts"))
	}
	snap()
	tb.open("/notify/channels")
	if got := tb.text(`tr[data-channel="ops-slack"] [data-field="state"]`); got != "failing" {
		t.Fatalf("list shows ops-slack as %q", got)
	}
	if got := tb.text(`tr[data-channel="ops-hook"] [data-field="target"]`); got != "127.0.0.1" {
		t.Fatalf("list shows the hook's target as %q", got)
	}
	snap()

	// Bad input: the error says what is wrong; what was typed stays,
	// except the URL and the secret, which never come back to the browser
	// (the page says to enter them again).
	const again = "URLs and secrets are never sent back to the browser: enter it again."
	badURL := "ftp://files.example.com/in"
	tb.fill("#webhook-name", "bad-hook", "#webhook-url", badURL, "#webhook-secret", "whsec_short")
	tb.submit("#add-webhook button[type=submit]")
	if got := tb.text("#form-error"); !strings.Contains(got, "not an http(s) URL with a host") || !strings.Contains(got, again) {
		t.Fatalf("bad URL error: %q", got)
	}
	if tb.value("#webhook-name") != "bad-hook" || tb.value("#webhook-url") != "" || tb.value("#webhook-secret") != "" {
		t.Fatalf("after a refusal: name %q, URL %q, secret %q", tb.value("#webhook-name"), tb.value("#webhook-url"), tb.value("#webhook-secret"))
	}
	tb.setValue("#webhook-url", "https://receiver.example.com/in")
	tb.setValue("#webhook-secret", "whsec_short")
	tb.submit("#add-webhook button[type=submit]")
	if got := tb.text("#form-error"); !strings.Contains(got, "the secret must be") || tb.value("#webhook-name") != "bad-hook" || tb.value("#webhook-secret") != "" {
		t.Fatalf("bad secret: %q", got)
	}
	longName := strings.Repeat("n", 100)
	longURL := "https://hooks.example.com/" + strings.Repeat("u", 3000)
	tb.setValue("#slack-name", longName)
	tb.setValue("#slack-url", longURL)
	tb.submit("#add-slack button[type=submit]")
	if got := tb.text("#form-error"); !strings.Contains(got, "channel name must be 1-63") || tb.value("#slack-name") != longName || tb.value("#slack-url") != "" {
		t.Fatalf("oversized name: %q (kept %d/%d chars)", got, len(tb.value("#slack-name")), len(tb.value("#slack-url")))
	}
	tb.setValue("#slack-name", "long-url")
	tb.setValue("#slack-url", longURL)
	tb.submit("#add-slack button[type=submit]")
	if got := tb.text("#form-error"); !strings.Contains(got, "the URL must be 1 to 2048 characters") || tb.value("#slack-url") != "" {
		t.Fatalf("oversized URL: %q", got)
	}
	tb.setValue("#slack-url", longURL+strings.Repeat("v", 2000))
	tb.submit("#add-slack button[type=submit]")
	if got := tb.text("#form-error"); got != "URL is longer than 4096 characters. "+again || tb.value("#slack-name") != "long-url" {
		t.Fatalf("oversized field: %q", got)
	}
	tb.fill("#email-name", "ops-mail", "#email-to", "dup@example.com")
	tb.submit("#add-email button[type=submit]")
	if got := tb.text("#form-error"); !strings.Contains(got, "exists already") || tb.value("#email-to") != "dup@example.com" {
		t.Fatalf("taken name: %q", got)
	}
	snap()

	// Rules: add one with wildcards for the hook, see it on the channel's
	// page, remove it (confirming the dialog).
	tb.open("/notify/rules")
	tb.fill("#rule-events", "Deploy!")
	tb.setValue("#rule-channel", "ops-hook")
	tb.submit("#add-rule button[type=submit]")
	if got := tb.text("#form-error"); !strings.Contains(got, `event pattern "Deploy!"`) || tb.value("#rule-events") != "Deploy!" || tb.value("#rule-channel") != "ops-hook" {
		t.Fatalf("bad pattern: %q", got)
	}
	tb.setValue("#rule-events", "deployment.*, server.offline")
	tb.setValue("#rule-level", "warning")
	tb.submit("#add-rule button[type=submit]")
	if !strings.Contains(tb.text("p.flash"), "Rule added: deployment.*, server.offline to ops-hook.") {
		t.Fatalf("add rule: %s", tb.bodyText())
	}
	row := `#rules tr:has(a[href="/notify/channels/ops-hook"])`
	if got := tb.text(row + " td.wide"); got != "deployment.*, server.offline" || tb.text(row+" .level-warning") != "warning" {
		t.Fatalf("rule row: %q", got)
	}
	snap()
	tb.open("/notify/channels/ops-hook")
	if got := tb.text("#channel-rules"); !strings.Contains(got, "deployment.*, server.offline, warning and above") {
		t.Fatalf("channel rules: %q", got)
	}
	tb.open("/notify/rules")
	tabRun(tb, "accept confirms", chromedp.Evaluate[bool](`(window.confirm = () => true, true)`))
	tb.submit(row + " form button")
	if !strings.Contains(tb.text("p.flash"), "Rule removed.") || tb.count(row) != 0 {
		t.Fatalf("remove rule: %s", tb.bodyText())
	}

	// A cross-origin form post (CSRF) adding a channel is refused.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/submit.js" {
			w.Header().Set("Content-Type", "text/javascript")
			_, _ = io.WriteString(w, `document.getElementById("f").submit();`)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><form id="f" method="post" action="%s"><input type="hidden" name="form" value="webhook">`+
			`<input type="hidden" name="name" value="evil-hook"><input type="hidden" name="url" value="https://evil.example/in"></form>`+
			`<script src="/submit.js"></script>`, c.url("/notify/channels"))
	}))
	defer evil.Close()
	if st := tb.autoSubmitted(evil.URL + "/"); st != http.StatusForbidden || tb.text("main h1") != "Cross-origin request refused" {
		t.Fatalf("cross-origin add: %d %q", st, tb.text("main h1"))
	}
	if st := tb.open("/notify/channels/evil-hook"); st != http.StatusNotFound {
		t.Fatalf("the refused post made a channel: %d", st)
	}

	// Removal needs the name typed.
	tb.open("/notify/channels/ops-discord")
	tb.fill("#confirm", "ops-discor")
	tb.submit("#remove-channel button")
	if got := tb.text("#form-error"); !strings.Contains(got, "Type the channel's name") {
		t.Fatalf("remove without confirmation: %q", got)
	}
	tb.fill("#confirm", "ops-discord")
	tb.submit("#remove-channel button")
	if p := tb.path(); p != "/notify/channels" || tb.count(`tr[data-channel="ops-discord"]`) != 0 {
		t.Fatalf("after removal at %s: %s", p, tb.bodyText())
	}

	// Every page seen, and the ones that remain, holds no URL token and
	// no secret.
	for _, p := range []string{"/notify/channels", "/notify/channels/ops-slack", "/notify/channels/ops-hook", "/notify/channels/ops-mail", "/notify/rules", "/notify/deliveries", "/activity", "/notifications"} {
		if st := tb.open(p); st != http.StatusOK {
			t.Fatalf("GET %s = %d", p, st)
		}
		snap()
	}
	for i, h := range pages {
		for _, s := range secrets {
			if strings.Contains(h, s) {
				t.Errorf("page %d holds %q", i, s)
			}
		}
	}
	tb.assertCleanConsole()

	// An operator: no nav entries, 403 on the pages.
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, fmt.Sprintf("host=%s user=berth dbname=berth sslmode=disable", filepath.Join(dataDir, "postgres", "run")))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	const opEmail, opPW = "grace@example.com", "grace hopper nanosecond wire"
	h, err := password.Hash(opPW)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.New(pool, nil).CreateUser(ctx, store.CreateUserParams{Email: opEmail, PasswordHash: h, Role: store.RoleOperator}); err != nil {
		t.Fatal(err)
	}
	op := e.tab(t, "grace")
	op.login(opEmail, opPW)
	if n := op.count(`nav a[href^="/notify/"]`); n != 0 {
		t.Fatalf("operator sees %d notify nav entries", n)
	}
	for _, p := range []string{"/notify/channels", "/notify/channels/ops-hook", "/notify/rules"} {
		if st := op.open(p); st != http.StatusForbidden || op.text("main h1") != "Not allowed" {
			t.Fatalf("operator GET %s = %d %q", p, st, op.text("main h1"))
		}
	}

	// A controller that does not allow private targets refuses a
	// loopback or private URL; the form keeps the name, not the URL.
	t.Run("PrivateTargetRefused", func(t *testing.T) {
		dir := shortDir(t)
		strict := startController(t, dir)
		createUser(t, dir, email, pw)
		st := newTab(t, bctx, strict, "ada-strict")
		st.login(email, pw)
		for _, tc := range []struct{ kind, url string }{
			{"webhook", hook.URL + "/in"},
			{"slack", "https://10.0.0.7/services/T/B/" + slackToken},
			{"discord", "http://localhost:9/api/webhooks/1/" + discordToken},
		} {
			st.open("/notify/channels")
			st.fill("#"+tc.kind+"-name", "private-"+tc.kind, "#"+tc.kind+"-url", tc.url)
			st.submit("#add-" + tc.kind + " button[type=submit]")
			if got := st.text("#form-error"); !strings.Contains(got, "private, loopback or link-local address") || !strings.Contains(got, "--allow-private-webhook-targets") {
				t.Fatalf("%s to %s: %q", tc.kind, tc.url, got)
			}
			if st.value("#"+tc.kind+"-name") != "private-"+tc.kind || st.value("#"+tc.kind+"-url") != "" {
				t.Fatalf("%s: name %q kept, URL %q back", tc.kind, st.value("#"+tc.kind+"-name"), st.value("#"+tc.kind+"-url"))
			}
			if st.count(`tr[data-channel="private-`+tc.kind+`"]`) != 0 {
				t.Fatalf("%s: the refused channel is listed", tc.kind)
			}
		}
		st.assertCleanConsole()
	})
}
