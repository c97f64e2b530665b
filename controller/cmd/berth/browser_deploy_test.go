package main_test

// Browser tests of the apps, deployment and live-log pages, and of the
// layout fixes of issue 16 §3, against a real controller, a real agent and
// a real private Git repository.

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// viewport resizes the tab's window (CSS pixels).
func (tb *tab) viewport(w, h int64) {
	tb.t.Helper()
	tb.do(fmt.Sprintf("viewport %dx%d", w, h), chromedp.EmulateViewport(w, h))
}

// noSideScroll opens path and fails when the page is wider than the
// window (a horizontal scroll bar for the whole page).
func (tb *tab) noSideScroll(path string) {
	tb.t.Helper()
	if st := tb.open(path); st != 200 {
		tb.t.Fatalf("GET %s = %d", path, st)
	}
	tb.waitJS("layout of "+path, `document.readyState === "complete"`, stepTimeout)
	sizes := tabRun(tb, "page widths", chromedp.Evaluate[[]int](
		`[document.documentElement.scrollWidth, document.documentElement.clientWidth, window.innerWidth]`))
	if sizes[0] > sizes[1] {
		name := unsafeName.ReplaceAllString(fmt.Sprintf("%s-%dpx", path, sizes[2]), "_") + ".png"
		tb.screenshot(name)
		tb.t.Errorf("%s at %d px: the page is %d px wide, the window %d px (scrolls sideways)", path, sizes[2], sizes[0], sizes[1])
	}
}

// gatedScript prints a few lines, then waits until the test opens the gate
// (a file), so the page is seen mid-deploy without relying on timing.
func gatedScript(gate string) string {
	return `set -e
echo "building $(cat version.txt)"
for i in 1 2 3; do echo "line $i"; done
while [ ! -f ` + gate + ` ]; do sleep 0.1; done
echo "gate open"
cp version.txt built.txt
`
}

// TestBrowserDeploy: create a credential and an app in the UI, deploy and
// watch the live log fill and Commit, Finished and Result appear without a
// reload, deploy again, roll back from the list (which preselects the
// release before the current one and names releases by commit), then see
// the agent's activity under its server's name, and check that no page
// scrolls sideways at 420 px and 1366 px.
func TestBrowserDeploy(t *testing.T) {
	t.Parallel()
	e := setupDeploy(t)
	repoURL := e.repo.serveHTTP(t, gitUser, gitToken)
	c1 := e.repo.commit(t, "main", "First release of the shop", map[string]string{"version.txt": "v1\n"})
	gate := filepath.Join(t.TempDir(), "gate")
	// A long deploy path: one long word in the activity's changes, which
	// must wrap rather than widen the page.
	appDir := filepath.Join(e.base, "shop-"+strings.Repeat("release", 25))

	bctx := startBrowser(t)
	tb := newTab(t, bctx, e.c, "ops")
	tb.login("ops@example.com", "correct horse battery staple")

	// Nav: API tokens and Users are in the main navigation.
	tb.open("/servers")
	tb.submit(`header nav a[href="/tokens"]`)
	if p := tb.path(); p != "/tokens" || tb.text(`header nav a[aria-current="page"]`) != "API tokens" {
		t.Fatalf("API tokens nav link: at %s", p)
	}
	tb.submit(`header nav a[href="/users"]`)
	if p := tb.path(); p != "/users" || tb.text(`header nav a[aria-current="page"]`) != "Users" {
		t.Fatalf("Users nav link: at %s", p)
	}

	tb.open("/git-credentials")
	tb.do("kind https", chromedp.SetValue(chromedp.CSS("#kind"), "https"))
	tb.fill("#credential-form #name", "shop-git", "#username", gitUser, "#token", gitToken)
	if resp := tb.submit(`#credential-form button[type=submit]`); resp.Status != 201 {
		t.Fatalf("add credential: %d\n%s", resp.Status, tb.bodyText())
	}

	tb.open("/apps/new")
	tb.fill("#name", "shop", "#repo", repoURL, "#path", appDir, "#user", "root",
		"#deploy_script", gatedScript(gate), "#health_cmd", "test -f built.txt", "#keep", "5")
	tb.do("server", chromedp.SetValue(chromedp.CSS("#server"), "web-1"))
	tb.do("credential", chromedp.SetValue(chromedp.CSS("#credential"), "shop-git"))
	tb.submit(`#app-form button[type=submit]`)
	if p := tb.path(); p != "/apps/shop" {
		t.Fatalf("after create at %s\n%s", p, tb.bodyText())
	}
	tb.open("/apps")
	if n := tb.count(`#apps a[href="/apps/shop"]`); n == 0 {
		t.Fatalf("apps list lacks shop:\n%s", tb.bodyText())
	}

	// Deploy and watch.
	tb.open("/apps/shop")
	tb.submit(`#deploy-form button[type=submit]`)
	if p := tb.path(); !strings.HasPrefix(p, "/deployments/") {
		t.Fatalf("deploy went to %s\n%s", p, tb.bodyText())
	}
	first := strings.TrimPrefix(tb.path(), "/deployments/")
	tabRun(tb, "mark the page", chromedp.Evaluate[bool](`window.__samePage = true`))
	tb.waitJS("the live log to show the build's lines", `document.getElementById("log").textContent.includes("line 3")`, 3*time.Minute)
	// The script is held at the gate: the deployment cannot have finished.
	if st, fin := tb.text("#dep-status"), tb.text("#dep-finished"); st != "running" || fin != "—" {
		t.Fatalf("mid-deploy: status %q, finished %q", st, fin)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tb.waitJS("the deployment to succeed on the open page", `document.getElementById("dep-status").textContent === "succeeded"`, 3*time.Minute)
	tb.waitJS("Commit, Finished and Result filled live",
		fmt.Sprintf(`document.getElementById("dep-commit").textContent.startsWith(%q) && document.getElementById("dep-finished").textContent !== "—" && document.getElementById("dep-result").textContent === "succeeded"`, c1),
		time.Minute)
	if !tabRun(tb, "same page", chromedp.Evaluate[bool](`window.__samePage === true`)) {
		t.Fatal("the deployment page was reloaded")
	}
	if log := tb.text("#log"); !strings.Contains(log, "building v1") || !strings.Contains(log, "gate open") {
		t.Fatalf("live log:\n%s", log)
	}
	if c := tb.text("#dep-commit"); !strings.Contains(c, "First release of the shop") {
		t.Fatalf("commit shows %q", c)
	}

	// A second release, then the rollback list.
	c2 := e.repo.commit(t, "main", "Second release", map[string]string{"version.txt": "v2\n"})
	tb.open("/apps/shop")
	tb.submit(`#deploy-form button[type=submit]`)
	second := strings.TrimPrefix(tb.path(), "/deployments/")
	tb.waitJS("the second deployment to succeed", `document.getElementById("dep-status").textContent === "succeeded"`, 3*time.Minute)

	tb.open("/apps/shop")
	type option struct {
		Value    string `json:"value"`
		Text     string `json:"text"`
		Selected bool   `json:"selected"`
		Disabled bool   `json:"disabled"`
	}
	opts := tabRun(tb, "rollback options", chromedp.Evaluate[[]option](
		`[...document.querySelectorAll("#rollback-form select#to option")].map(o => ({value: o.value, text: o.textContent, selected: o.selected, disabled: o.disabled}))`))
	if len(opts) != 2 {
		t.Fatalf("rollback options: %+v", opts)
	}
	cur, prev := opts[0], opts[1]
	day := time.Now().UTC().Format("2006-01-02")
	if cur.Value != second || !cur.Disabled || cur.Selected || !strings.Contains(cur.Text, "Second release · "+c2[:7]+" · "+day) || !strings.Contains(cur.Text, "(current)") {
		t.Fatalf("current release option: %+v", cur)
	}
	if prev.Value != first || !prev.Selected || prev.Disabled || !strings.HasPrefix(prev.Text, "First release of the shop · "+c1[:7]+" · "+day) {
		t.Fatalf("previous release option: %+v", prev)
	}
	tb.submit(`#rollback-form button[type=submit]`)
	if p := tb.path(); !strings.HasPrefix(p, "/deployments/") || strings.HasSuffix(p, second) {
		t.Fatalf("rollback went to %s\n%s", p, tb.bodyText())
	}
	tb.waitJS("the rollback to succeed", `document.getElementById("dep-status").textContent === "succeeded"`, 3*time.Minute)
	if target, err := os.Readlink(filepath.Join(appDir, "current")); err != nil || !strings.Contains(target, "releases") {
		t.Fatalf("current after the rollback: %q %v", target, err)
	}
	tb.open("/apps/shop")
	opts = tabRun(tb, "rollback options after the rollback", chromedp.Evaluate[[]option](
		`[...document.querySelectorAll("#rollback-form select#to option")].map(o => ({value: o.value, text: o.textContent, selected: o.selected, disabled: o.disabled}))`))
	if len(opts) != 2 || opts[1].Value != first || !opts[1].Disabled || opts[0].Value != second || !opts[0].Selected {
		t.Fatalf("after rolling back to the first release: %+v", opts)
	}

	// The agent's entries name its server.
	tb.open("/activity")
	agentLink := `#activity a[data-actor^="agent:"]`
	if n := tb.count(agentLink); n == 0 {
		t.Fatalf("no agent entry linked to its server:\n%s", tb.text("#activity"))
	}
	link := tabRun(tb, "agent link", chromedp.Evaluate[[]string](fmt.Sprintf(
		`(() => { const a = document.querySelector(%q); return [a.textContent, a.getAttribute("href"), a.title]; })()`, agentLink)))
	if link[0] != "web-1" || link[1] != "/servers/web-1" || !strings.HasPrefix(link[2], "agent:") || len(link[2]) != len("agent:")+26 {
		t.Fatalf("agent entry: %q", link)
	}
	if strings.Contains(tb.text("#activity tbody"), "agent:") {
		t.Fatal("the activity shows an agent:<id> as text")
	}

	for _, w := range []int64{1366, 420} {
		tb.viewport(w, 900)
		for _, p := range []string{"/activity", "/apps", "/apps/shop", "/deployments", "/deployments/" + first, "/servers", "/servers/web-1", "/settings", "/tokens", "/users"} {
			tb.noSideScroll(p)
		}
	}
	tb.screenshot("app-shop-420.png")
	tb.viewport(1280, 960)
	tb.assertCleanConsole()
	e.noSecrets(t, gitToken)
}

// chartWidths: each chart's canvas width against its card's inner width.
func chartWidths(tb *tab) [][2]float64 {
	tb.t.Helper()
	return tabRun(tb, "chart widths", chromedp.Evaluate[[][2]float64](`[...document.querySelectorAll("#charts figure.chart")].map(f => {
		const cs = getComputedStyle(f);
		const inner = f.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
		return [f.querySelector("canvas").getBoundingClientRect().width, inner];
	})`))
}

// browserChartSizeAndLegend: the server page's charts fill their cards at
// 1280 px and at 420 px, and the legends show the latest time and values,
// the hovered ones while the pointer is over a chart, and the latest again
// when it leaves.
func browserChartSizeAndLegend(t *testing.T, tb *tab) {
	check := func(when string) {
		for i, w := range chartWidths(tb) {
			if w[1] <= 150 || w[0] < w[1]-2 || w[0] > w[1]+1 {
				t.Errorf("%s: chart %d canvas is %.0f px wide in a card of %.0f px", when, i, w[0], w[1])
			}
		}
	}
	check("1280 px")
	legend := func() []string {
		return tabRun(tb, "CPU legend", chromedp.Evaluate[[]string](
			`[...document.querySelectorAll('#charts figure[data-chart="CPU"] .u-legend .u-series')].map(r => r.textContent.trim())`))
	}
	l := legend()
	if len(l) != 2 || !strings.HasPrefix(l[0], "Time") || strings.Contains(strings.Join(l, " "), "--") ||
		!regexp.MustCompile(`\d`).MatchString(l[0]) || !regexp.MustCompile(`CPU %\s*[\d.]+%`).MatchString(l[1]) {
		t.Fatalf("CPU legend at rest: %q", l)
	}
	latest := l[0]
	// The Disk chart plots df's use % (and inode use) of the real agent's
	// disk, not bytes used against size.
	disk := tabRun(tb, "Disk legend", chromedp.Evaluate[[]string](
		`[...document.querySelectorAll('#charts figure[data-chart="Disk"] .u-legend .u-series')].map(r => r.textContent.trim())`))
	if len(disk) != 3 || !regexp.MustCompile(`used %\s*[\d.]+%`).MatchString(disk[1]) || !regexp.MustCompile(`inodes %\s*[\d.]+%`).MatchString(disk[2]) {
		t.Errorf("Disk legend at rest: %q", disk)
	}
	// Hover the left quarter of the chart: an older point's time shows.
	tabRun(tb, "hover", chromedp.Evaluate[bool](`(() => {
		const o = document.querySelector('#charts figure[data-chart="CPU"] .u-over');
		const r = o.getBoundingClientRect();
		o.dispatchEvent(new MouseEvent("mouseenter", {clientX: r.left + r.width * 0.25, clientY: r.top + r.height / 2, bubbles: true}));
		o.dispatchEvent(new MouseEvent("mousemove", {clientX: r.left + r.width * 0.25, clientY: r.top + r.height / 2, bubbles: true}));
		return true;
	})()`))
	hovered := legend()
	if len(hovered) != 2 || strings.Contains(hovered[0], "--") {
		t.Fatalf("CPU legend while hovering: %q", hovered)
	}
	tabRun(tb, "leave", chromedp.Evaluate[bool](`(() => {
		const o = document.querySelector('#charts figure[data-chart="CPU"] .u-over');
		o.dispatchEvent(new MouseEvent("mouseleave", {bubbles: false}));
		return true;
	})()`))
	tb.waitJS("the legend back on the latest point", fmt.Sprintf(
		`document.querySelector('#charts figure[data-chart="CPU"] .u-legend .u-series').textContent.trim() === %q`, latest), 30*time.Second)

	tb.viewport(420, 900)
	tb.waitJS("charts resized to the narrow window", `[...document.querySelectorAll("#charts figure.chart canvas")].every(c => c.getBoundingClientRect().width <= 420)`, 30*time.Second)
	// The layout may settle in more than one step (a scroll bar that
	// comes or goes changes the cards' width once more): wait until the
	// canvases fit their cards, then check them.
	tb.waitJS("charts fitted to their narrow cards", `[...document.querySelectorAll("#charts figure.chart")].every(f => {
		const cs = getComputedStyle(f);
		const inner = f.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
		const w = f.querySelector("canvas").getBoundingClientRect().width;
		return w >= inner - 2 && w <= inner + 1;
	})`, 30*time.Second)
	check("420 px")
	sizes := tabRun(tb, "page widths", chromedp.Evaluate[[]int](`[document.documentElement.scrollWidth, document.documentElement.clientWidth]`))
	if sizes[0] > sizes[1] {
		t.Errorf("server page at 420 px is %d px wide (window %d)", sizes[0], sizes[1])
	}
	tb.viewport(1280, 960)
}
