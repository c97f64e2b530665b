package main_test

// Helpers for the browser tests: one headless Chromium per test run, one
// isolated browser context (its own cookies) per simulated person, and
// small actions that fail the test with the page's state when they fail.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/pquerna/otp/totp"
)

// Generous bounds: the machine may be slow and busy with other e2e tests.
const (
	browserStartTimeout = 90 * time.Second
	tabTimeout          = 6 * time.Minute
	stepTimeout         = 90 * time.Second
)

// chromiumPath finds a Chromium or Chrome binary.
func chromiumPath() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// startBrowser starts one headless Chromium for the calling test and its
// subtests; it is closed when the test ends.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	path := chromiumPath()
	if path == "" {
		t.Fatal("no Chromium found for the browser tests: run `make deps-test` (Debian: apt-get install chromium)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox, // tests run as root here; Chromium refuses its sandbox then
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("lang", "en-US"),
		chromedp.WindowSize(1280, 960),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
	})
	// The first run starts the browser and binds it to bctx, which has no
	// deadline; a hung start fails the test instead.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(bctx) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("start Chromium (%s): %v", path, err)
		}
	case <-time.After(browserStartTimeout):
		t.Fatalf("Chromium (%s) did not start within %v", path, browserStartTimeout)
	}
	return bctx
}

var artifactsOnce sync.Once

// artifactDir is where screenshots go: $BERTH_TEST_ARTIFACTS, or a
// directory under the system's temporary directory. Never the repository.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("BERTH_TEST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "berth-test-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artifact dir: %v", err)
	}
	artifactsOnce.Do(func() { t.Logf("browser test artifacts (screenshots) in %s", dir) })
	return dir
}

func saveArtifact(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(artifactDir(t), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatalf("save %s: %v", name, err)
	}
	t.Logf("saved %s", p)
	return p
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// tab is one person's browser: a tab in its own browser context, so it
// shares no cookies with other tabs.
type tab struct {
	t    *testing.T
	ctx  context.Context
	c    *controller
	name string

	mu      sync.Mutex
	console []chromedp.ConsoleMessage
}

func newTab(t *testing.T, bctx context.Context, c *controller, name string) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(bctx, chromedp.WithNewBrowserContext())
	ctx, cancelTimeout := context.WithTimeout(ctx, tabTimeout)
	tb := &tab{t: t, ctx: ctx, c: c, name: name}
	if err := chromedp.Do(ctx); err != nil {
		cancelTimeout()
		cancel()
		t.Fatalf("open tab %s: %v", name, err)
	}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			tb.mu.Lock()
			tb.console = append(tb.console, m)
			tb.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		if t.Failed() {
			tb.dumpState()
		}
		cancelTimeout()
		cancel()
	})
	return tb
}

// dumpState saves a screenshot and logs where the tab is, for a failed test.
func (tb *tab) dumpState() {
	ctx, cancel := context.WithTimeout(tb.ctx, 20*time.Second)
	defer cancel()
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	tb.t.Logf("tab %s at %s:\n%s", tb.name, loc, text)
	if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
		name := unsafeName.ReplaceAllString(tb.t.Name()+"-"+tb.name, "_") + "-failed.png"
		_ = os.WriteFile(filepath.Join(artifactDir(tb.t), name), png, 0o644)
		tb.t.Logf("screenshot of tab %s: %s", tb.name, filepath.Join(artifactDir(tb.t), name))
	}
	for _, m := range tb.consoleMessages() {
		tb.t.Logf("console %s: %s (%s:%d)", m.Type, m.Text, m.URL, m.Line+1)
	}
}

func (tb *tab) consoleMessages() []chromedp.ConsoleMessage {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return append([]chromedp.ConsoleMessage(nil), tb.console...)
}

// assertCleanConsole fails on uncaught exceptions and on anything the
// Content-Security-Policy blocked: the UI must work with its strict CSP.
func (tb *tab) assertCleanConsole() {
	tb.t.Helper()
	for _, m := range tb.consoleMessages() {
		if m.IsException() || strings.Contains(m.Text, "Content Security Policy") {
			tb.t.Errorf("tab %s: console %s: %s (%s:%d)", tb.name, m.Type, m.Text, m.URL, m.Line+1)
		}
	}
}

func (tb *tab) stepCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(tb.ctx, stepTimeout)
}

// do runs actions that return nothing, failing the test on error.
func (tb *tab) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := tb.stepCtx()
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		tb.t.Fatalf("tab %s: %s: %v", tb.name, what, err)
	}
}

func tabRun[T any](tb *tab, what string, a chromedp.Action[T]) T {
	tb.t.Helper()
	ctx, cancel := tb.stepCtx()
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		tb.t.Fatalf("tab %s: %s: %v", tb.name, what, err)
	}
	return v
}

// open loads a controller page and returns the HTTP status of the
// document (after redirects).
func (tb *tab) open(path string) int {
	tb.t.Helper()
	resp := tabRun(tb, "open "+path, chromedp.NavigateResponse(tb.c.url(path)))
	return int(resp.Status)
}

// fill sets form fields: selector, value, selector, value...
func (tb *tab) fill(pairs ...string) {
	tb.t.Helper()
	for i := 0; i+1 < len(pairs); i += 2 {
		tb.do("fill "+pairs[i], chromedp.SetValue(chromedp.CSS(pairs[i]), pairs[i+1], chromedp.NodeVisible))
	}
}

// submit clicks a button that submits a form, waits for the next page and
// returns its response (after redirects).
func (tb *tab) submit(button string) *network.Response {
	tb.t.Helper()
	ctx, cancel := tb.stepCtx()
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(button)))
	if err != nil {
		tb.t.Fatalf("tab %s: submit with %s: %v", tb.name, button, err)
	}
	return resp
}

func (tb *tab) waitVisible(sel string) {
	tb.t.Helper()
	tb.do("wait for "+sel, chromedp.WaitVisible(chromedp.CSS(sel)))
}

// waitJS waits until a JavaScript expression is truthy.
func (tb *tab) waitJS(what, expr string, timeout time.Duration) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, timeout+10*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(200*time.Millisecond)))
	if err != nil {
		tb.t.Fatalf("tab %s: waiting for %s: %v", tb.name, what, err)
	}
}

func (tb *tab) text(sel string) string {
	tb.t.Helper()
	return strings.TrimSpace(tabRun(tb, "text of "+sel, chromedp.TextContent(chromedp.CSS(sel))))
}

func (tb *tab) count(sel string) int {
	tb.t.Helper()
	return tabRun(tb, "count "+sel, chromedp.Evaluate[int](fmt.Sprintf("document.querySelectorAll(%q).length", sel)))
}

func (tb *tab) bodyText() string {
	tb.t.Helper()
	return tabRun(tb, "page text", chromedp.Evaluate[string](`document.body.innerText`))
}

// path is the current page's path and query.
func (tb *tab) path() string {
	tb.t.Helper()
	return tabRun(tb, "location", chromedp.Evaluate[string](`location.pathname + location.search`))
}

func (tb *tab) cookies() []*network.Cookie {
	tb.t.Helper()
	ctx, cancel := tb.stepCtx()
	defer cancel()
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{tb.c.url("/")}})
	if err != nil {
		tb.t.Fatalf("tab %s: get cookies: %v", tb.name, err)
	}
	return res.Cookies
}

func (tb *tab) cookie(name string) *network.Cookie {
	tb.t.Helper()
	for _, c := range tb.cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func (tb *tab) screenshot(name string) {
	tb.t.Helper()
	saveArtifact(tb.t, name, tabRun(tb, "screenshot", chromedp.FullScreenshot(100)))
}

// login signs in with a password from the login page and returns the
// response of the page it ends on.
func (tb *tab) login(email, password string) *network.Response {
	tb.t.Helper()
	if st := tb.open("/login"); st != 200 {
		tb.t.Fatalf("GET /login = %d", st)
	}
	tb.fill("#email", email, "#password", password)
	return tb.submit("#login-form button[type=submit]")
}

// logout uses the sign-out button in the header.
func (tb *tab) logout() {
	tb.t.Helper()
	tb.submit("header form.logout button")
	if p := tb.path(); p != "/login" {
		tb.t.Fatalf("after sign out at %s, want /login", p)
	}
	if f := tb.text("p.flash"); !strings.Contains(f, "signed out") {
		tb.t.Fatalf("sign-out flash = %q", f)
	}
}

// createUser makes an administrator with the CLI while the controller runs.
func createUser(t *testing.T, dataDir, email, password string) {
	t.Helper()
	r := runIn(t, nil, password+"\n", "admin create", "admin", "create", "--email", email, "--password-stdin", "--data-dir", dataDir)
	if r.code != 0 {
		t.Fatalf("admin create %s: %+v", email, r)
	}
}

// totpClock hands out codes for a TOTP secret the way an authenticator app
// would, but never the same 30 s step twice (the controller accepts each
// step once per user, and one step of skew either way), waiting for the
// next step only when it has to.
type totpClock struct {
	secret string
	last   int64
}

func (c *totpClock) next(t *testing.T) string {
	t.Helper()
	for {
		cur := time.Now().Unix() / 30
		step := max(c.last+1, cur)
		if step <= cur+1 {
			c.last = step
			code, err := totp.GenerateCode(c.secret, time.Unix(step*30, 0))
			if err != nil {
				t.Fatalf("totp: %v", err)
			}
			return code
		}
		time.Sleep(time.Until(time.Unix((step-1)*30, 0)) + 200*time.Millisecond)
	}
}
