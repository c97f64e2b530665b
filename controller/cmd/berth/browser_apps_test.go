package main_test

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// browserAppEditDelete: an app's settings change through its edit form,
// and it is deleted only once its name is typed.
func browserAppEditDelete(t *testing.T, e *browserEnv) {
	const email, pw = "radia@example.com", "radia perlman spanning tree"
	createUser(t, e.dataDir, email, pw)
	tb := e.tab(t, "radia")
	tb.login(email, pw)

	tb.open("/servers/new")
	tb.fill("#name", "apps-1")
	tb.submit(`form[action="/servers"] button[type=submit]`)
	tb.open("/apps/new")
	tb.fill("#name", "blog", "#server", "apps-1", "#repo", "https://git.example.com/blog.git", "#path", "/srv/blog")
	tb.submit(`#app-form button[type=submit]`)
	if p := tb.path(); p != "/apps/blog" {
		t.Fatalf("after create: %s\n%s", p, tb.bodyText())
	}

	tb.submit(`#edit-app`)
	tb.fill("#keep", "8", "#deploy_script_path", "deploy/berth.sh")
	tb.submit(`#app-edit-form button[type=submit]`)
	if body := tb.bodyText(); tb.path() != "/apps/blog" || !strings.Contains(body, "deploy/berth.sh") {
		t.Fatalf("after edit: %s\n%s", tb.path(), body)
	}

	tb.fill("#confirm", "blgo")
	if resp := tb.submit(`#delete-form button[type=submit]`); resp.Status != 400 || !strings.Contains(tb.bodyText(), "Type the app's name") {
		t.Fatalf("delete with a mistyped name: %d\n%s", resp.Status, tb.bodyText())
	}
	tb.fill("#confirm", "blog")
	tb.do("keep files", chromedp.Click(chromedp.CSS(`#delete-form input[name=keep_files]`)))
	tb.submit(`#delete-form button[type=submit]`)
	if body := tb.bodyText(); tb.path() != "/apps" || !strings.Contains(body, "App blog deleted") {
		t.Fatalf("after delete: %s\n%s", tb.path(), body)
	}
	tb.assertCleanConsole()
}
