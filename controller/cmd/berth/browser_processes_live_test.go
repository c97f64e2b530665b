package main_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestBrowserProcessesLive: with a real agent, a process declared on the
// app page starts with the deploy; the page shows its instances (pid,
// state, restarts, uptime) from the agent's report, the log view fills
// with what the process prints and keeps following, and restart and stop
// from the page act on the server.
func TestBrowserProcessesLive(t *testing.T) {
	t.Parallel()
	e := setupDeploy(t)
	repoURL := e.repo.serveHTTP(t, gitUser, gitToken)
	e.repo.commit(t, "main", "first", map[string]string{"version.txt": "v1\n"})
	if r := e.cli(t, gitToken+"\n", "git-credential", "add", "gitcred", "--https", "--username", gitUser, "--token-stdin"); r.code != 0 {
		t.Fatalf("git-credential add: %+v", r)
	}
	e.createApp(t, "svc", repoURL, "gitcred")

	bctx := startBrowser(t)
	tb := newTab(t, bctx, e.c, "ops")
	tb.login("ops@example.com", "correct horse battery staple")
	tb.open("/apps/svc")
	tb.do("open the process form", chromedp.Click(chromedp.CSS("#process-form-box summary")))
	tb.fill("#p-name", "worker", "#p-command", `echo "worker up $(cat version.txt)"; while true; do echo "tick $(date +%s%N)"; sleep 0.2; done`,
		"#p-instances", "2", "#p-grace", "5s")
	tb.submit(`#process-form button[type=submit]`)
	if f := tb.text("p.flash"); !strings.Contains(f, "starts with the next deploy") {
		t.Fatalf("after adding before any deploy: %q", tb.bodyText())
	}

	worker := `article.process[data-process="worker"]`
	instances := func() [][]string {
		return tabRun(tb, "instances", chromedp.Evaluate[[][]string](fmt.Sprintf(
			`[...document.querySelectorAll(%q)].map(tr => [...tr.cells].map(td => td.textContent.trim()))`, worker+" table.instances tbody tr")))
	}
	// Not running yet: unknown before the agent's first report, stopped
	// once it reported running nothing for the app.
	if st := tb.text(worker + ` [data-field=state]`); (st != "unknown" && st != "stopped") || len(instances()) != 0 {
		t.Fatalf("state before any deploy: %q, instances %q", st, instances())
	}
	// Deployed from the CLI while the page stays open: the agent's report
	// reaches the open page without a reload.
	tabRun(tb, "mark the page", chromedp.Evaluate[bool](`window.__samePage = true`))
	if d, logs, code := e.deployFollow(t, "svc"); code != 0 || d.Status != "succeeded" {
		t.Fatalf("deploy: %d %+v\n%s", code, d, logs)
	}
	tb.waitJS("the open page to show two running instances", `(() => {
		const a = document.querySelector('article.process[data-process="worker"]');
		const rows = [...a.querySelectorAll("table.instances tbody tr")];
		return a.querySelector("[data-field=state]").textContent === "running" && rows.length === 2 &&
			rows.every(r => r.cells[1].textContent.trim() === "running" && r.cells[2].textContent.trim() !== "" && r.cells[5].textContent.trim() !== "");
	})()`, 2*time.Minute)
	if !tabRun(tb, "same page", chromedp.Evaluate[bool](`window.__samePage === true`)) {
		t.Fatal("the app page was reloaded")
	}

	waitRunning := func(what string, ok func([][]string) bool) [][]string {
		t.Helper()
		var rows [][]string
		waitFor(t, what, 2*time.Minute, func() bool {
			tb.open("/apps/svc")
			rows = instances()
			if len(rows) != 2 || tb.text(worker+` [data-field=state]`) != "running" {
				return false
			}
			for _, r := range rows {
				if r[1] != "running" || r[2] == "" || r[5] == "" {
					return false
				}
			}
			return ok(rows)
		})
		return rows
	}
	before := waitRunning("worker running with two instances", func([][]string) bool { return true })
	if before[0][4] != "0" || before[0][2] == before[1][2] {
		t.Fatalf("instances: %q", before)
	}

	for _, w := range []int64{420, 1366} {
		tb.viewport(w, 900)
		tb.noSideScroll("/apps/svc")
		tb.screenshot(fmt.Sprintf("app-processes-%d.png", w))
	}
	tb.viewport(1280, 960)
	tb.open("/apps/svc")

	// The log view fills, and keeps following.
	tb.submit(`#logs-link`)
	tb.waitJS("the worker's start line", `document.getElementById("app-log").textContent.includes("worker up v1")`, time.Minute)
	n := tabRun(tb, "ticks", chromedp.Evaluate[int](`document.getElementById("app-log").textContent.split("tick ").length`))
	tb.waitJS("new lines while following", fmt.Sprintf(`document.getElementById("app-log").textContent.split("tick ").length > %d + 5`, n), time.Minute)
	if st := tb.text("#logs-state"); st != "live" {
		t.Fatalf("log view state %q", st)
	}
	// Text stays text: lines are not parsed as HTML.
	if n := tb.count("#app-log *:not(span.line)"); n != 0 {
		t.Fatalf("%d elements inside the log besides lines", n)
	}

	// Restart from the page: new pids.
	tb.open("/apps/svc")
	tb.submit(worker + ` form.control button[value=restart]`)
	if p := tb.path(); !strings.HasPrefix(p, "/deployments/") {
		t.Fatalf("restart went to %s: %s", p, tb.bodyText())
	}
	tb.waitJS("the restart job to succeed", `document.getElementById("dep-status").textContent === "succeeded"`, 3*time.Minute)
	pids := func(rows [][]string) []string {
		var out []string
		for _, r := range rows {
			out = append(out, r[2])
		}
		return out
	}
	waitRunning("the worker restarted with new pids", func(rows [][]string) bool {
		for _, p := range pids(rows) {
			if slices.Contains(pids(before), p) {
				return false
			}
		}
		return true
	})

	// Stop everything from the page.
	tb.submit(`#control-all button[value=stop]`)
	tb.waitJS("the stop job to succeed", `document.getElementById("dep-status").textContent === "succeeded"`, 3*time.Minute)
	waitFor(t, "the worker reported stopped", 2*time.Minute, func() bool {
		tb.open("/apps/svc")
		return tb.text(worker+` [data-field=state]`) == "stopped"
	})

	// A schedule runs on the server; its runs page shows the exit code
	// and the output's tail, the app page its last run.
	tb.open("/apps/svc")
	tb.do("open the schedule form", chromedp.Click(chromedp.CSS("#schedule-form-box summary")))
	tb.fill("#s-name", "stamp", "#s-cron", "@every 2s", "#s-command", `echo "stamp $(cat version.txt)"; exit 3`)
	tb.submit(`#schedule-form button[type=submit]`)
	if f := tb.text("p.flash"); !strings.Contains(f, "Schedule stamp saved") {
		t.Fatalf("after adding the schedule: %q", tb.bodyText())
	}
	waitFor(t, "a finished run of stamp", 2*time.Minute, func() bool {
		tb.open("/apps/svc/schedules/stamp/runs")
		return tb.count(`#runs tr[data-run] .status-failed`) > 0
	})
	run := tabRun(tb, "first failed run", chromedp.Evaluate[[]string](`(() => {
		const tr = [...document.querySelectorAll("#runs tr[data-run]")].find(r => r.querySelector(".status-failed"));
		const tail = tr.nextElementSibling && tr.nextElementSibling.classList.contains("tail") ? tr.nextElementSibling.textContent : "";
		return [tr.cells[2].textContent.trim(), tail];
	})()`))
	if run[0] != "3" || !strings.Contains(run[1], "stamp v1") {
		t.Fatalf("schedule run: exit %q, tail %q", run[0], run[1])
	}
	tb.open("/apps/svc")
	if last := tb.text(`#schedule-list tr[data-schedule="stamp"]`); !strings.Contains(last, "failed") || !strings.Contains(last, "exit 3") {
		t.Fatalf("schedule row: %q", last)
	}
	tabRun(tb, "accept confirms", chromedp.Evaluate[bool](`(window.confirm = () => true, true)`))
	tb.submit(`#schedule-list tr[data-schedule="stamp"] form button`)
	if tb.count(`#schedule-list tr[data-schedule="stamp"]`) != 0 {
		t.Fatalf("schedule not removed: %q", tb.bodyText())
	}
	tb.assertCleanConsole()
}
