package main_test

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// browserProcessesAndLogs: the app page's Processes and Schedules cards
// and the live log view, for an app whose server has no agent yet: a
// malformed process form says what is wrong and keeps what was typed, the
// saved process shows its settings and that no report came yet, a
// schedule is added (its runs page reachable) and removed, the log view
// says the agent is not connected, and the process is removed.
func browserProcessesAndLogs(t *testing.T, e *browserEnv) {
	const email, pw = "barbara@example.com", "barbara liskov substitution principle"
	createUser(t, e.dataDir, email, pw)
	tb := e.tab(t, "barbara")
	tb.login(email, pw)

	tb.open("/servers/new")
	tb.fill("#name", "proc-1")
	tb.submit(`form[action="/servers"] button[type=submit]`)
	tb.open("/apps/new")
	tb.fill("#name", "api", "#repo", "https://git.example.com/api.git", "#path", "/srv/api")
	tb.do("server", chromedp.SetValue(chromedp.CSS("#server"), "proc-1"))
	tb.submit(`#app-form button[type=submit]`)
	if p := tb.path(); p != "/apps/api" {
		t.Fatalf("after create: %s\n%s", p, tb.bodyText())
	}
	if !strings.Contains(tb.text("#processes"), "No processes") {
		t.Fatalf("processes card of a new app:\n%s", tb.text("#processes"))
	}

	// A mistake: the form comes back open, with the error and the input.
	tb.do("open the process form", chromedp.Click(chromedp.CSS("#process-form-box summary")))
	tb.fill("#p-name", "web", "#p-command", `bin/server --port "$PORT" <b>`, "#p-instances", "lots", "#p-mem", "512M", "#p-grace", "20s")
	tb.do("port", chromedp.Click(chromedp.CSS(`#process-form input[name=port]`)))
	if resp := tb.submit(`#process-form button[type=submit]`); resp.Status != 400 || !strings.Contains(tb.text("#form-error"), "Instances is a whole number from 1 to 32") {
		t.Fatalf("malformed instances: %d %q", resp.Status, tb.bodyText())
	}
	kept := tabRun(tb, "kept values", chromedp.Evaluate[[]string](`["#p-name", "#p-command", "#p-instances", "#p-mem", "#p-grace"].map(s => document.querySelector(s).value)
		.concat([String(document.querySelector("#process-form input[name=port]").checked), String(document.getElementById("process-form-box").open)])`))
	if want := []string{"web", `bin/server --port "$PORT" <b>`, "lots", "512M", "20s", "true", "true"}; strings.Join(kept, "|") != strings.Join(want, "|") {
		t.Fatalf("form after the error: %q, want %q", kept, want)
	}
	// The service's own rules come back the same way.
	tb.fill("#p-instances", "2", "#p-signal", "BOGUS")
	if resp := tb.submit(`#process-form button[type=submit]`); resp.Status != 400 || !strings.Contains(tb.text("#form-error"), "stop-signal") {
		t.Fatalf("bad signal: %d %q", resp.Status, tb.bodyText())
	}
	if v := tabRun(tb, "command kept", chromedp.Value(chromedp.CSS("#p-command"))); v != `bin/server --port "$PORT" <b>` {
		t.Fatalf("command after the service's refusal: %q", v)
	}
	tb.fill("#p-signal", "TERM")
	tb.submit(`#process-form button[type=submit]`)
	if p := tb.path(); p != "/apps/api" || !strings.Contains(tb.text("p.flash"), "Process web added") {
		t.Fatalf("after adding: %s %q", p, tb.bodyText())
	}
	card := tb.text(`article.process[data-process="web"]`)
	for _, want := range []string{`bin/server --port "$PORT" <b>`, "Instances2", "SIGTERM, then KILL after 20s", "memory 512.0 MiB", "not yet"} {
		if !strings.Contains(strings.Join(strings.Fields(card), ""), strings.Join(strings.Fields(want), "")) {
			t.Fatalf("process card lacks %q:\n%s", want, card)
		}
	}
	if n := tb.count(`article.process[data-process="web"] form.control button`); n != 3 {
		t.Fatalf("%d control buttons on the process", n)
	}
	if n := tb.count(`#control-all button`); n != 3 {
		t.Fatalf("%d control buttons for all processes", n)
	}
	// Never deployed: a restart is refused with the reason.
	tb.submit(`article.process[data-process="web"] form.control button[value=restart]`)
	if !strings.Contains(tb.text("#form-error"), "no current release") {
		t.Fatalf("restart before any deploy: %q", tb.bodyText())
	}

	// Schedules.
	tb.open("/apps/api")
	tb.do("open the schedule form", chromedp.Click(chromedp.CSS("#schedule-form-box summary")))
	tb.fill("#s-name", "report", "#s-cron", "every tuesday", "#s-command", "bin/report", "#s-tz", "Europe/Berlin")
	if resp := tb.submit(`#schedule-form button[type=submit]`); resp.Status != 400 || !strings.Contains(tb.text("#form-error"), "cron") {
		t.Fatalf("bad cron: %d %q", resp.Status, tb.bodyText())
	}
	if v := tabRun(tb, "schedule kept", chromedp.Value(chromedp.CSS("#s-command"))); v != "bin/report" {
		t.Fatalf("schedule command after the error: %q", v)
	}
	tb.fill("#s-cron", "*/5 * * * *")
	tb.submit(`#schedule-form button[type=submit]`)
	if !strings.Contains(tb.text("p.flash"), "Schedule report saved") {
		t.Fatalf("after adding a schedule: %q", tb.bodyText())
	}
	row := tb.text(`#schedule-list tr[data-schedule="report"]`)
	if !strings.Contains(row, "*/5 * * * *") || !strings.Contains(row, "Europe/Berlin") || !strings.Contains(row, "never") || !strings.Contains(row, "UTC") {
		t.Fatalf("schedule row: %q", row)
	}
	tb.submit(`#schedule-list tr[data-schedule="report"] a[href="/apps/api/schedules/report/runs"]`)
	if body := tb.bodyText(); !strings.Contains(body, "runs of report") || !strings.Contains(body, "No runs yet") {
		t.Fatalf("runs page:\n%s", body)
	}
	tb.open("/apps/api")
	tabRun(tb, "accept confirms", chromedp.Evaluate[bool](`(window.confirm = () => true, true)`))
	tb.submit(`#schedule-list tr[data-schedule="report"] form button`)
	if tb.count(`#schedule-list tr[data-schedule="report"]`) != 0 || !strings.Contains(tb.text("p.flash"), "Schedule report removed") {
		t.Fatalf("after removing the schedule: %q", tb.bodyText())
	}

	// The log view: no agent, so it says so and ends.
	tb.submit(`#logs-link`)
	if p := tb.path(); p != "/apps/api/logs" {
		t.Fatalf("logs link went to %s", p)
	}
	tb.waitJS("the log view to say the agent is not connected",
		`!document.getElementById("logs-failure").hidden && document.getElementById("logs-failure").textContent.includes("agent for proc-1 is not connected")`, stepTimeout)
	tb.waitJS("the log stream to end", `document.getElementById("logs-state").textContent === "ended"`, stepTimeout)
	if n := tb.count(`#process option[value="web"]`); n != 1 {
		t.Fatal("the process filter does not offer web")
	}
	tb.fill("#since", "forever")
	if resp := tb.submit(`#logs-form button[type=submit]`); resp.Status != 400 || !strings.Contains(tb.text("#form-error"), "Since is a duration") {
		t.Fatalf("bad since: %d %q", resp.Status, tb.bodyText())
	}

	for _, w := range []int64{420, 1366} {
		tb.viewport(w, 900)
		tb.noSideScroll("/apps/api")
		tb.noSideScroll("/apps/api/logs")
	}
	tb.viewport(1280, 960)

	tb.open("/apps/api")
	tabRun(tb, "accept confirms", chromedp.Evaluate[bool](`(window.confirm = () => true, true)`))
	tb.submit(`article.process[data-process="web"] form.remove button`)
	if tb.count(`article.process`) != 0 || !strings.Contains(tb.text("p.flash"), "Process web removed") {
		t.Fatalf("after removing the process: %q", tb.bodyText())
	}
	tb.assertCleanConsole()
}
