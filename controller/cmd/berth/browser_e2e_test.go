package main_test

// Browser tests of the web UI: a real headless Chromium, driven with
// chromedp, against the real controller binary (embedded PostgreSQL), a
// real agent and a real SMTP server. One Chromium and one controller serve
// every subtest; each subtest signs in as its own user in its own browser
// context, so cookies, throttling and TOTP steps do not interfere.

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/berthhq/berth/controller/internal/mail/mailtest"
)

type browserEnv struct {
	bctx    context.Context
	c       *controller
	dataDir string
	mail    *mailtest.Server
}

// user creates an administrator and returns a tab for a person who uses it.
func (e *browserEnv) tab(t *testing.T, name string) *tab {
	t.Helper()
	return newTab(t, e.bctx, e.c, name)
}

func TestBrowser(t *testing.T) {
	t.Parallel()
	bctx := startBrowser(t)
	smtp := mailtest.Start(t)
	dataDir := shortDir(t)
	httpAddr := freeAddr(t)
	c := startControllerAt(t, dataDir, httpAddr, freeAddr(t),
		"--metrics-interval", "1s", "--heartbeat-interval", "1s",
		"--smtp-host", smtp.Host, "--smtp-port", strconv.Itoa(smtp.Port), "--smtp-tls", "none", "--smtp-from", mailtest.From,
		"--public-url", "http://"+httpAddr)
	e := &browserEnv{bctx: bctx, c: c, dataDir: dataDir, mail: smtp}

	t.Run("LoginCookiesAndPages", func(t *testing.T) { browserLogin(t, e) })
	t.Run("TwoFactorEnrolLoginAndRecoveryCode", func(t *testing.T) { browserTwoFactor(t, e) })
	t.Run("PasswordResetByMail", func(t *testing.T) { browserPasswordReset(t, e) })
	t.Run("CrossOriginPostRefused", func(t *testing.T) { browserCrossOrigin(t, e) })
	t.Run("RevokeSessionFromAnotherBrowser", func(t *testing.T) { browserRevokeSession(t, e) })
	t.Run("ServerListLiveStatusAndCharts", func(t *testing.T) { browserServers(t, e) })
	t.Run("AppEditAndTypedDelete", func(t *testing.T) { browserAppEditDelete(t, e) })
	t.Run("AppProcessesSchedulesAndLogs", func(t *testing.T) { browserProcessesAndLogs(t, e) })
	// Last: its failed attempts count towards the per-IP threshold too.
	t.Run("LoginThrottled", func(t *testing.T) { browserThrottle(t, e) })
}

// browserLogin: signing in sends people back where they were going, with
// a session cookie scripts cannot read; every page of the UI renders with
// the strict CSP and no script errors.
func browserLogin(t *testing.T, e *browserEnv) {
	const email, pw = "ada@example.com", "ada lovelace analytical engine"
	createUser(t, e.dataDir, email, pw)
	tb := e.tab(t, "ada")

	tb.open("/settings")
	if p := tb.path(); p != "/login?next=%2Fsettings" {
		t.Fatalf("signed out /settings went to %s", p)
	}
	tb.fill("#email", email, "#password", pw)
	if resp := tb.submit("#login-form button[type=submit]"); resp.Status != 200 {
		t.Fatalf("login landed with %d", resp.Status)
	}
	if p := tb.path(); p != "/settings" {
		t.Fatalf("after login at %s, want /settings (the next parameter)", p)
	}
	if who := tb.text("header .who"); who != email {
		t.Fatalf("header shows %q", who)
	}

	ck := tb.cookie("berth_session")
	if ck == nil || ck.Value == "" {
		t.Fatalf("no session cookie after login: %v", tb.cookies())
	}
	if !ck.HTTPOnly || ck.SameSite != network.CookieSameSiteLax || ck.Path != "/" || !ck.Session {
		t.Fatalf("session cookie HttpOnly=%v SameSite=%q Path=%q Session=%v; want HttpOnly, Lax, /, a session cookie",
			ck.HTTPOnly, ck.SameSite, ck.Path, ck.Session)
	}
	if jsCookies := tabRun(tb, "document.cookie", chromedp.Evaluate[string](`document.cookie`)); strings.Contains(jsCookies, "berth_session") {
		t.Fatalf("script can read the session cookie: %q", jsCookies)
	}

	// The home page is the server list.
	for p, want := range map[string]string{"/": "/servers", "/servers": "", "/servers/new": "", "/settings": "",
		"/tokens": "", "/users": "", "/security": "", "/activity": ""} {
		if want == "" {
			want = p
		}
		if st := tb.open(p); st != 200 {
			t.Errorf("GET %s = %d", p, st)
		}
		if got := tb.path(); got != want {
			t.Errorf("GET %s ended at %s, want %s", p, got, want)
		}
		if n := tb.count("header form.logout"); n != 1 {
			t.Errorf("%s: no sign-out form in the header", p)
		}
	}
	tb.assertCleanConsole()
	tb.logout()
	tb.open("/servers")
	if p := tb.path(); !strings.HasPrefix(p, "/login") {
		t.Fatalf("after sign out /servers is at %s", p)
	}
}

// browserTwoFactor: enrol with a code the test computes from the shown
// secret, sign out and in with a TOTP code, then with a recovery code,
// which works only once.
func browserTwoFactor(t *testing.T, e *browserEnv) {
	const email, pw = "grace@example.com", "grace hopper compiler bug"
	createUser(t, e.dataDir, email, pw)
	tb := e.tab(t, "grace")
	tb.login(email, pw)
	if p := tb.path(); p != "/servers" {
		t.Fatalf("after login at %s, want the home page /servers", p)
	}

	tb.open("/settings")
	tb.submit("#begin-2fa-form button")
	tb.waitVisible("#totp-secret")
	tb.waitJS("the QR code image", `(() => { const i = document.querySelector("img.qr"); return i && i.complete && i.naturalWidth > 0; })()`, 30*time.Second)
	clock := &totpClock{secret: tb.text("#totp-secret")}
	if len(clock.secret) < 16 {
		t.Fatalf("TOTP secret %q", clock.secret)
	}
	tb.fill("#totp-confirm #code", clock.next(t))
	tb.submit("#totp-confirm button")
	tb.waitVisible("#recovery-codes")
	codes := tabRun(tb, "recovery codes", chromedp.Evaluate[[]string](
		`[...document.querySelectorAll("#recovery-codes ul.codes li")].map(li => li.textContent.trim())`))
	if len(codes) < 5 || codes[0] == "" {
		t.Fatalf("recovery codes: %q", codes)
	}
	if body := tb.bodyText(); !strings.Contains(body, "Two-factor authentication is on") {
		t.Fatalf("settings after enrolment:\n%s", body)
	}
	tb.assertCleanConsole()
	tb.logout()

	// Password, then the code from the authenticator; back to where we were.
	tb.open("/settings")
	tb.fill("#email", email, "#password", pw)
	tb.submit("#login-form button[type=submit]")
	if p := tb.path(); !strings.HasPrefix(p, "/login/2fa") {
		t.Fatalf("after the password at %s, want /login/2fa", p)
	}
	if tb.cookie("berth_session") != nil {
		t.Fatal("a session cookie before the second factor")
	}
	if pc := tb.cookie("berth_2fa"); pc == nil || !pc.HTTPOnly || pc.SameSite != network.CookieSameSiteLax {
		t.Fatalf("pending 2FA cookie: %+v", pc)
	}
	tb.fill("#totp-form #code", clock.next(t))
	tb.submit("#totp-form button")
	if p := tb.path(); p != "/settings" {
		t.Fatalf("after the TOTP code at %s, want /settings", p)
	}
	if tb.cookie("berth_2fa") != nil || tb.cookie("berth_session") == nil {
		t.Fatalf("cookies after 2FA: %v", tb.cookies())
	}
	tb.logout()

	// A recovery code, from the form folded away in <details>.
	useRecovery := func(code string) *network.Response {
		tb.login(email, pw)
		if p := tb.path(); !strings.HasPrefix(p, "/login/2fa") {
			t.Fatalf("after the password at %s, want /login/2fa", p)
		}
		tb.do("open the recovery form", chromedp.Click(chromedp.CSS("details summary")))
		tb.waitVisible("#recovery_code")
		tb.fill("#recovery_code", code)
		return tb.submit("#recovery-form button")
	}
	useRecovery(codes[0])
	if p := tb.path(); p != "/servers" || tb.count("header form.logout") != 1 {
		t.Fatalf("after a recovery code at %s", p)
	}
	tb.logout()
	resp := useRecovery(codes[0])
	if resp.Status != http.StatusUnauthorized || !strings.Contains(tb.text("#form-error"), "not valid") {
		t.Fatalf("reused recovery code: %d %q", resp.Status, tb.bodyText())
	}
	if tb.cookie("berth_session") != nil {
		t.Fatal("a reused recovery code gave a session")
	}
}

var resetLink = regexp.MustCompile(`https?://\S+/reset/\S+`)

// browserPasswordReset: forgot password, link by mail through a real SMTP
// server, a new password; the link works once and the old password no
// longer does.
func browserPasswordReset(t *testing.T, e *browserEnv) {
	const email, oldPW, newPW = "hedy@example.com", "hedy lamarr frequency hopping", "spread spectrum torpedo guidance"
	createUser(t, e.dataDir, email, oldPW)
	tb := e.tab(t, "hedy")

	tb.open("/login")
	tb.submit(`a[href="/forgot"]`)
	tb.fill("#email", email)
	tb.submit(`form[action="/forgot"] button`)
	tb.waitVisible("#reset-sent")

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	msg, err := e.mail.WaitFor(ctx, email)
	if err != nil {
		t.Fatal(err)
	}
	link := resetLink.FindString(msg.Text)
	if !strings.HasPrefix(link, e.c.url("/reset/")) {
		t.Fatalf("no reset link for this controller in the mail %q:\n%s", msg.Subject, msg.Text)
	}
	u, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	setPassword := func() *network.Response {
		if st := tb.open(u.Path); st != 200 {
			t.Fatalf("GET reset link = %d", st)
		}
		tb.fill("#reset-form #password", newPW, "#reset-form #password_confirm", newPW)
		return tb.submit("#reset-form button[type=submit]")
	}
	setPassword()
	if p := tb.path(); p != "/login" || !strings.Contains(tb.text("p.flash"), "password was changed") {
		t.Fatalf("after the reset at %s: %q", p, tb.bodyText())
	}
	// The link is used up.
	if resp := setPassword(); resp.Status < 400 || tb.count("#form-error") != 1 {
		t.Fatalf("reused reset link: %d %q", resp.Status, tb.bodyText())
	}

	if resp := tb.login(email, oldPW); resp.Status != http.StatusUnauthorized || !strings.Contains(tb.text("#form-error"), "Invalid email or password") {
		t.Fatalf("old password after reset: %d %q", resp.Status, tb.bodyText())
	}
	tb.login(email, newPW)
	if p := tb.path(); p != "/servers" || tb.count("header form.logout") != 1 {
		t.Fatalf("new password: at %s", p)
	}
	tb.assertCleanConsole()
}

// browserThrottle: five wrong passwords for one account, then the login
// page answers 429 with the wait.
func browserThrottle(t *testing.T, e *browserEnv) {
	const email, pw = "ida@example.com", "ida rhodes cactus language"
	createUser(t, e.dataDir, email, pw)
	tb := e.tab(t, "ida")

	tb.open("/login")
	failures := 0
	var throttled *network.Response
	// Once the fifth failure is in, the next attempt within a second is
	// refused, and each further failure doubles the wait: a slow machine
	// gets there a failure or two later.
	for i := 0; i < 10 && throttled == nil; i++ {
		tb.fill("#email", email, "#password", fmt.Sprintf("not the password %d", i))
		resp := tb.submit("#login-form button[type=submit]")
		msg := tb.text("#form-error")
		switch {
		case strings.Contains(msg, "Too many attempts"):
			throttled = resp
			if resp.Status != http.StatusTooManyRequests {
				t.Fatalf("throttled login answered %d", resp.Status)
			}
			m := regexp.MustCompile(`^Too many attempts\. Try again in (\d+) seconds\.$`).FindStringSubmatch(msg)
			if m == nil {
				t.Fatalf("throttle message %q", msg)
			}
			if ra := header(resp, "Retry-After"); ra != m[1] {
				t.Fatalf("Retry-After %q, page says %s seconds", ra, m[1])
			}
		case msg == "Invalid email or password." && resp.Status == http.StatusUnauthorized:
			failures++
		default:
			t.Fatalf("attempt %d: %d %q", i+1, resp.Status, msg)
		}
	}
	if throttled == nil {
		t.Fatalf("not throttled after %d failed attempts", failures)
	}
	if failures < 5 {
		t.Fatalf("throttled after only %d failures", failures)
	}
	if tb.cookie("berth_session") != nil {
		t.Fatal("a session cookie after failed logins")
	}
	tb.assertCleanConsole()

	// An administrator sees it among the security events.
	const admin, adminPW = "joan@example.com", "joan clarke enigma hut eight"
	createUser(t, e.dataDir, admin, adminPW)
	sec := e.tab(t, "joan")
	sec.login(admin, adminPW)
	sec.open("/security?type=login.throttled")
	sec.waitVisible("#security-events")
	if rows := sec.text("#security-events tbody"); !strings.Contains(rows, "login.throttled") || !strings.Contains(rows, email) {
		t.Fatalf("security events:\n%s", rows)
	}
}

func header(resp *network.Response, name string) string {
	for k, v := range resp.Headers {
		if strings.EqualFold(k, name) {
			return fmt.Sprint(v)
		}
	}
	return ""
}

// browserCrossOrigin: a page on another origin makes the signed-in browser
// POST forms to the controller; the controller refuses with 403 and
// nothing changes. Once from the same site (another port of 127.0.0.1: the
// SameSite=Lax cookie goes along), once from another site (localhost).
func browserCrossOrigin(t *testing.T, e *browserEnv) {
	const email, pw = "kat@example.com", "katherine johnson orbital mechanics"
	createUser(t, e.dataDir, email, pw)
	tb := e.tab(t, "kat")
	tb.login(email, pw)

	evil := http.NewServeMux()
	form := func(action string, fields map[string]string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			var b strings.Builder
			fmt.Fprintf(&b, `<!doctype html><title>Win a prize</title><form id="f" method="post" action="%s">`, e.c.url(action))
			for k, v := range fields {
				fmt.Fprintf(&b, `<input type="hidden" name="%s" value="%s">`, k, v)
			}
			b.WriteString(`</form><script src="/submit.js"></script>`)
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = w.Write([]byte(b.String()))
		}
	}
	evil.HandleFunc("GET /server.html", form("/servers", map[string]string{"name": "evil-1", "token_ttl": "1h"}))
	evil.HandleFunc("GET /password.html", form("/settings/password", map[string]string{
		"current_password": pw, "new_password": "taken over by another site", "new_password_confirm": "taken over by another site"}))
	evil.HandleFunc("GET /submit.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		_, _ = w.Write([]byte(`document.getElementById("f").submit();`))
	})
	srv := httptest.NewServer(evil)
	defer srv.Close()
	_, port, _ := strings.Cut(strings.TrimPrefix(srv.URL, "http://"), ":")

	for _, tc := range []struct{ name, page string }{
		{"same site, other origin", srv.URL + "/server.html"},
		{"other site", "http://localhost:" + port + "/password.html"},
	} {
		status := tb.autoSubmitted(tc.page)
		if status != http.StatusForbidden {
			t.Fatalf("%s: cross-origin POST answered %d, want 403", tc.name, status)
		}
		if h := tb.text("main h1"); h != "Cross-origin request refused" {
			t.Fatalf("%s: refusal page says %q", tc.name, h)
		}
	}

	// Nothing changed: no server, the password still works, the session
	// still holds.
	if st := tb.open("/servers/evil-1"); st != http.StatusNotFound {
		t.Fatalf("GET /servers/evil-1 after the refused POST = %d, want 404", st)
	}
	if st := tb.open("/settings"); st != 200 || tb.path() != "/settings" {
		t.Fatalf("session after the refused POSTs: %d at %s", st, tb.path())
	}
	other := e.tab(t, "kat-again")
	other.login(email, pw)
	if p := other.path(); p != "/servers" {
		t.Fatalf("the old password no longer works after the refused change: at %s", p)
	}
	if n := strings.Count(e.c.logs.String(), "cross-origin request refused"); n < 2 {
		t.Fatalf("controller logged %d cross-origin refusals, want 2", n)
	}
}

// autoSubmitted loads a page that submits a form on load, and returns the
// HTTP status of the document that submission brings.
func (tb *tab) autoSubmitted(page string) int {
	tb.t.Helper()
	ctx, cancel := tb.stepCtx()
	defer cancel()
	responses := chromedp.Events(ctx, network.ResponseReceived)
	if err := chromedp.Do(ctx, chromedp.Navigate(page)); err != nil {
		tb.t.Fatalf("open %s: %v", page, err)
	}
	for ev, err := range responses {
		if err != nil {
			tb.t.Fatalf("no response from the controller after %s: %v", page, err)
		}
		if ev.Type == network.ResourceTypeDocument && strings.HasPrefix(ev.Response.URL, tb.c.url("/")) {
			tb.waitJS("the controller's page", fmt.Sprintf(`location.href.startsWith(%q) && document.readyState === "complete"`, tb.c.url("/")), stepTimeout)
			return int(ev.Response.Status)
		}
	}
	return 0
}

// browserRevokeSession: one person signed in from two browsers; from the
// first they revoke the second, whose next page is the login.
func browserRevokeSession(t *testing.T, e *browserEnv) {
	const email, pw = "lin@example.com", "lin lanying fibre optic pioneer"
	createUser(t, e.dataDir, email, pw)
	a, b := e.tab(t, "lin-laptop"), e.tab(t, "lin-phone")
	a.login(email, pw)
	b.login(email, pw)

	currentSession := func(tb *tab) string {
		tb.open("/settings")
		return tabRun(tb, "current session id", chromedp.Evaluate[string](
			`[...document.querySelectorAll("#sessions tr[data-session-id]")].find(tr => tr.textContent.includes("this session")).dataset.sessionId`))
	}
	bID := currentSession(b)
	aID := currentSession(a)
	if aID == "" || bID == "" || aID == bID {
		t.Fatalf("session ids %q and %q", aID, bID)
	}
	if n := a.count("#sessions tr[data-session-id]"); n != 2 {
		t.Fatalf("%d sessions listed, want 2", n)
	}
	a.submit(fmt.Sprintf(`#sessions tr[data-session-id="%s"] form button`, bID))
	if f := a.text("p.flash"); f != "Session revoked." {
		t.Fatalf("after revoking: flash %q", f)
	}
	if n := a.count("#sessions tr[data-session-id]"); n != 1 {
		t.Fatalf("%d sessions listed after revoking one, want 1", n)
	}

	b.open("/settings")
	if p := b.path(); p != "/login?next=%2Fsettings" {
		t.Fatalf("revoked browser at %s, want the login page", p)
	}
	if ck := b.cookie("berth_session"); ck != nil {
		t.Fatalf("revoked browser kept its session cookie: %+v", ck)
	}
	a.open("/servers")
	if p := a.path(); p != "/servers" {
		t.Fatalf("revoking the other session signed this one out: at %s", p)
	}
	a.assertCleanConsole()
	b.assertCleanConsole()
}

var enrollPin = regexp.MustCompile(`--ca-pin (\S+)`)

// browserServers: add a server in the UI, enroll a real agent with the
// shown command, watch its status turn online live (server-sent events),
// then see sparklines in the list and uPlot charts on its page.
func browserServers(t *testing.T, e *browserEnv) {
	const email, pw = "margaret@example.com", "margaret hamilton apollo guidance"
	createUser(t, e.dataDir, email, pw)
	tb := e.tab(t, "margaret")
	tb.login(email, pw)

	tb.open("/servers")
	tb.submit(`main a.button[href="/servers/new"]`)
	tb.fill("#name", "web-1", "#labels", "env=test")
	tb.submit(`form[action="/servers"] button[type=submit]`)
	tb.waitVisible("#install")
	install := tabRun(tb, "install command", chromedp.Value(chromedp.CSS("#install")))
	enroll := tb.text("details textarea")
	if !strings.Contains(install, "install.sh") || !strings.Contains(install, "--sha256-"+runtime.GOARCH+" ") || !strings.HasPrefix(enroll, "berth-agent enroll ") {
		t.Fatalf("install %q, enroll %q", install, enroll)
	}
	// The join token is shown beside the commands, never in them.
	token := []string{"", tabRun(tb, "join token", chromedp.Value(chromedp.CSS("#join-token")))}
	pin := enrollPin.FindStringSubmatch(enroll)
	if !strings.HasPrefix(token[1], "bjt_") || strings.Contains(install+enroll, token[1]) || pin == nil {
		t.Fatalf("token %q, enroll command %q", token[1], enroll)
	}

	tb.open("/servers")
	statusSel := `#servers tr[data-server-id] [data-field=status]`
	if st := tb.text(statusSel); st != "pending" {
		t.Fatalf("new server status %q, want pending", st)
	}
	agentDir := filepath.Join(t.TempDir(), "agent")
	if r := enrollAgent(t, e.c.grpcAddr, token[1], pin[1], agentDir); r.code != 0 {
		t.Fatalf("enroll: %+v", r)
	}
	startAgent(t, agentDir)
	// No reload: the status changes through the live feed.
	tb.waitJS("web-1 online on the open list", fmt.Sprintf(`document.querySelector(%q).textContent === "online"`, statusSel), 2*time.Minute)

	// Sparklines once metrics are stored (rendered on the server: reload).
	deadline := time.Now().Add(2 * time.Minute)
	for tb.open("/servers"); tb.count("#servers svg.spark polyline") == 0; tb.open("/servers") {
		if time.Now().After(deadline) {
			t.Fatal("no sparklines on the server list")
		}
		time.Sleep(time.Second)
	}
	tb.screenshot("servers.png")

	tb.submit(`#servers a[href="/servers/web-1"]`)
	if p := tb.path(); p != "/servers/web-1" {
		t.Fatalf("server link went to %s", p)
	}
	tb.waitVisible("#charts figure.chart canvas")
	if n := tb.count("#charts figure.chart"); n != 6 {
		t.Fatalf("%d charts, want 6", n)
	}
	// Something is drawn on the CPU chart's canvas.
	painted := tabRun(tb, "painted pixels", chromedp.Evaluate[int](`(() => {
		const c = document.querySelector("#charts figure.chart canvas");
		const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
		let n = 0;
		for (let i = 3; i < d.length; i += 4) if (d[i] !== 0) n++;
		return n;
	})()`))
	if painted == 0 {
		t.Fatal("the chart canvas is blank")
	}
	browserChartSizeAndLegend(t, tb)
	if st := tb.text(`[data-live-server][data-field=status]`); st != "online" {
		t.Fatalf("server page status %q", st)
	}
	tb.screenshot("server-web-1.png")
	saveArtifact(t, "charts.png", tabRun(tb, "charts screenshot", chromedp.Screenshot(chromedp.CSS("#charts"), chromedp.NodeVisible)))
	tb.assertCleanConsole()
}
