package main_test

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestBrowserAlertsPage: a real controller and agent, and headless
// Chromium. The Alerts page lists the install's default rules; an admin
// adds a rule with the form (bad input is refused with a clear message),
// the real agent's samples make it fire, the page shows where and since
// when, the server's page shows its firing alert, its edit page changes it
// (refusing bad input with the form kept; a change resolves what fired,
// and the new definition fires on its own terms), and removing the rule
// with its button (after the confirmation) takes it away and resolves it.
func TestBrowserAlertsPage(t *testing.T) {
	t.Parallel()
	bctx := startBrowser(t)
	dataDir := shortDir(t)
	c := startController(t, dataDir, "--metrics-interval", "1s", "--heartbeat-interval", "1s")
	f := startFleetOn(t, &fleetEnv{c: c, dataDir: dataDir})
	a := f.addServer(t, "web-a")
	dir := filepath.Join(t.TempDir(), "web-a")
	if r := enrollAgent(t, c.grpcAddr, a.Token, a.CAPin, dir); r.code != 0 {
		t.Fatalf("enroll: %+v", r)
	}
	startAgent(t, dir)
	waitFor(t, "online", 30*time.Second, func() bool { s := f.server(t, "web-a"); return s != nil && s["status"] == "online" })

	tb := newTab(t, bctx, c, "ops")
	tb.login("ops@example.com", "correct horse battery staple")
	if st := tb.open("/alerts"); st != http.StatusOK {
		t.Fatalf("/alerts: %d", st)
	}
	body := tb.bodyText()
	for _, want := range []string{"disk-above-90", "disk > 90.0% for 5m0s (resolves below 85.0%)", "memory-above-95", "server-offline", "offline for 2m0s", "Nothing fires now."} {
		if !strings.Contains(body, want) {
			t.Fatalf("alerts page lacks %q:\n%s", want, body)
		}
	}

	// Bad input: a threshold that is not a number, a percentage over 100,
	// a taken name.
	tb.fill("#alert-form #name", "bad-one", "#alert-form #metric", "cpu", "#alert-form #above", "lots")
	tb.submit(`#alert-form button[type=submit]`)
	if !strings.Contains(tb.bodyText(), "Above must be a number.") {
		t.Fatalf("non-numeric threshold:\n%s", tb.bodyText())
	}
	tb.fill("#alert-form #name", "bad-one", "#alert-form #metric", "cpu", "#alert-form #above", "120")
	tb.submit(`#alert-form button[type=submit]`)
	if !strings.Contains(tb.bodyText(), "0 to 100") {
		t.Fatalf("threshold over 100%%:\n%s", tb.bodyText())
	}
	tb.fill("#alert-form #name", "disk-above-90", "#alert-form #metric", "cpu", "#alert-form #above", "50")
	tb.submit(`#alert-form button[type=submit]`)
	if !strings.Contains(tb.bodyText(), "alert disk-above-90: already exists") {
		t.Fatalf("taken name:\n%s", tb.bodyText())
	}

	// Memory above 1% for 0s on web-a: the agent's first sample fires it.
	tb.fill("#alert-form #name", "mem-any", "#alert-form #metric", "memory", "#alert-form #above", "1", "#alert-form #for", "0s",
		"#alert-form #scope", "server", "#alert-form #server", "web-a", "#alert-form #level", "critical")
	tb.submit(`#alert-form button[type=submit]`)
	if p, body := tb.path(), tb.bodyText(); p != "/alerts" || !strings.Contains(body, "Alert mem-any added.") || !strings.Contains(body, "server web-a") {
		t.Fatalf("after adding (%s):\n%s", p, body)
	}
	firing := `tr[data-alert="mem-any"] li[data-firing-server="web-a"]`
	waitFor(t, "mem-any firing on the page", 60*time.Second, func() bool {
		tb.open("/alerts")
		return tb.count(firing) == 1
	})
	if !strings.Contains(tb.text(`tr[data-alert="mem-any"]`), "since") || !strings.Contains(tb.text("#firing-count"), "1 firing now.") {
		t.Fatalf("firing row: %q / %q", tb.text(`tr[data-alert="mem-any"]`), tb.text("#firing-count"))
	}
	tb.submit(firing + " a")
	if p := tb.path(); p != "/servers/web-a" {
		t.Fatalf("the firing server links to %s", p)
	}
	if n := tb.count(`#server-alerts li[data-firing-rule="mem-any"]`); n != 1 || !strings.Contains(tb.text("#server-alerts"), "memory at") {
		t.Fatalf("server page alerts: %d %q", n, tb.text("#server-alerts"))
	}

	// Edit it on its page (what `berth alert add NAME --replace` does):
	// the form shows the rule; bad input is refused with what was typed
	// kept; a threshold memory never passes resolves what fired, at once;
	// back to 1% the real agent's samples fire it again.
	tb.open("/alerts")
	tb.submit(`tr[data-alert="mem-any"] a.edit`)
	if p := tb.path(); p != "/alerts/mem-any/edit" {
		t.Fatalf("the edit link goes to %s", p)
	}
	if tb.value("#metric") != "memory" || tb.value("#above") != "1" || tb.value("#for") != "0s" || tb.value("#scope") != "server" ||
		tb.value("#server") != "web-a" || tb.value("#level") != "critical" {
		t.Fatalf("the edit form does not show the rule: %q %q %q %q %q %q", tb.value("#metric"), tb.value("#above"), tb.value("#for"),
			tb.value("#scope"), tb.value("#server"), tb.value("#level"))
	}
	if got := tb.text("#alert-now"); !strings.Contains(got, "memory > 1.0% for 0s") || !strings.Contains(got, "It fires on 1 server or mount") {
		t.Fatalf("the edit page's summary: %q", got)
	}
	tb.setValue("#above", "150")
	tb.setValue("#resolve_below", "")
	tb.submit(`#alert-edit-form button[type=submit]`)
	if got := tb.text("#form-error"); !strings.Contains(got, "0 to 100") || tb.value("#above") != "150" || tb.value("#server") != "web-a" ||
		tb.value("#scope") != "server" || tb.value("#level") != "critical" {
		t.Fatalf("bad threshold on the edit form: %q (above %q, server %q)", got, tb.value("#above"), tb.value("#server"))
	}
	tb.setValue("#above", "100")
	tb.setValue("#level", "warning")
	tb.submit(`#alert-edit-form button[type=submit]`)
	if p, body := tb.path(), tb.bodyText(); p != "/alerts" || !strings.Contains(body, "Alert mem-any changed.") || !strings.Contains(body, "memory > 100.0% for 0s") {
		t.Fatalf("after saving (%s):\n%s", p, body)
	}
	if n := tb.count(firing); n != 0 || tb.text(`tr[data-alert="mem-any"] .status`) != "warning" {
		t.Fatalf("after the edit the rule fires on %d / level %q", n, tb.text(`tr[data-alert="mem-any"] .status`))
	}
	tb.open("/alerts/mem-any/edit")
	tb.setValue("#above", "1")
	tb.setValue("#resolve_below", "")
	tb.submit(`#alert-edit-form button[type=submit]`)
	waitFor(t, "mem-any firing again after the edit", 60*time.Second, func() bool {
		tb.open("/alerts")
		return tb.count(firing) == 1
	})

	// Remove it, accepting the confirmation.
	tb.open("/alerts")
	tabRun(tb, "accept confirmations", chromedp.Evaluate[bool](`window.confirm = function () { return true; }; true`))
	tb.submit(`tr[data-alert="mem-any"] form button[type=submit]`)
	if body := tb.bodyText(); !strings.Contains(body, "Alert mem-any removed.") || tb.count(`tr[data-alert="mem-any"]`) != 0 {
		t.Fatalf("after removing:\n%s", body)
	}
	tb.open("/servers/web-a")
	if !strings.Contains(tb.text("#server-alerts"), "No alert fires on this server.") {
		t.Fatalf("server page after removal: %q", tb.text("#server-alerts"))
	}
	// The inbox got the firing alert and its resolution.
	tb.open("/notifications")
	// (The removal's resolution is merged into the edit's, still unread:
	// one unread notification per alert.)
	if body := tb.bodyText(); !strings.Contains(body, "mem-any: memory") || !strings.Contains(body, "mem-any resolved on web-a") ||
		!strings.Contains(body, "The alert rule mem-any was changed.") {
		t.Fatalf("inbox:\n%s", body)
	}
	tb.assertCleanConsole()
}
