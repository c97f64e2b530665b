package main_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/berthhq/berth/controller/internal/notify"
	"github.com/berthhq/berth/controller/internal/store"
)

// TestBrowserNotificationBell: a real controller and headless Chromium.
// Events published through notify.Service.Publish (as a capability does)
// reach the signed-in admin's inbox; the bell in the header counts them up
// without a reload; the Notifications page lists them with their level,
// body and a link to the object; marking one read and then all read brings
// the count down to nothing.
func TestBrowserNotificationBell(t *testing.T) {
	t.Parallel()
	bctx := startBrowser(t)
	dataDir := shortDir(t)
	c := startController(t, dataDir)
	e := &browserEnv{bctx: bctx, c: c, dataDir: dataDir}

	const email, pw = "grace@example.com", "grace hopper compiles cobol"
	createUser(t, dataDir, email, pw)
	tb := e.tab(t, "grace")
	tb.login(email, pw)
	tb.open("/servers/new")
	tb.fill("#name", "bell-1")
	tb.submit(`form[action="/servers"] button[type=submit]`)

	ctx := context.Background()
	dsn := fmt.Sprintf("host=%s user=berth dbname=berth sslmode=disable", filepath.Join(dataDir, "postgres", "run"))
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	st := store.New(pool, nil)
	svc, err := notify.New(notify.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := st.ServerByName(ctx, "bell-1")
	if err != nil {
		t.Fatal(err)
	}

	tb.open("/servers")
	if got := tb.text("#bell-count"); got != "0" || tb.count("#bell-count[hidden]") != 1 {
		t.Fatalf("bell before any event: %q hidden=%d", got, tb.count("#bell-count[hidden]"))
	}

	if _, err := svc.Publish(ctx, notify.Event{Kind: notify.KindServerOffline, Level: notify.Warning,
		Title: "bell-1 is offline", Body: "No heartbeat for a while.", ServerID: &srv.ID,
		Link: "/servers/bell-1", DedupeKey: "server.offline:" + srv.ID.String()}); err != nil {
		t.Fatal(err)
	}
	tb.waitJS("the bell to count 1", `(function(){var b=document.getElementById("bell-count");return b&&!b.hidden&&b.textContent==="1";})()`, 30*time.Second)
	if _, err := svc.Publish(ctx, notify.Event{Kind: notify.KindDeploymentFailed, Level: notify.Critical,
		Title: "Deploy of shop failed", Body: "deploy script exited with 1", Link: "/apps"}); err != nil {
		t.Fatal(err)
	}
	tb.waitJS("the bell to count 2", `document.getElementById("bell-count").textContent==="2"`, 30*time.Second)
	if p := tb.path(); p != "/servers" {
		t.Fatalf("the page reloaded or moved: %s", p)
	}

	tb.submit(`#bell`)
	if p := tb.path(); p != "/notifications" {
		t.Fatalf("bell leads to %s", p)
	}
	body := tb.bodyText()
	for _, want := range []string{"bell-1 is offline", "No heartbeat for a while.", "Deploy of shop failed", "deploy script exited with 1", "warning", "error"} {
		if !strings.Contains(body, want) {
			t.Fatalf("inbox lacks %q:\n%s", want, body)
		}
	}
	if n := tb.count(`#notifications tr.unread a[href="/servers/bell-1"]`); n != 1 {
		t.Fatalf("link to the server: %d", n)
	}

	// Mark the offline one read: the count goes down and it moves below.
	tb.submit(`#notifications tr.unread:has(a[href="/servers/bell-1"]) form button[type=submit]`)
	if !strings.Contains(tb.bodyText(), "Notification marked read.") {
		t.Fatalf("after mark read:\n%s", tb.bodyText())
	}
	tb.waitJS("the bell to count 1", `document.getElementById("bell-count").textContent==="1"`, 30*time.Second)
	if n := tb.count(`#notifications tr.read a[href="/servers/bell-1"]`); n != 1 {
		t.Fatalf("the read one is not marked read: %d", n)
	}

	tb.submit(`#read-all button[type=submit]`)
	if !strings.Contains(tb.bodyText(), "1 marked read.") {
		t.Fatalf("after mark all read:\n%s", tb.bodyText())
	}
	tb.waitJS("the bell to be empty", `(function(){var b=document.getElementById("bell-count");return b.hidden&&b.textContent==="0";})()`, 30*time.Second)
	if n := tb.count(`#notifications tr.unread`); n != 0 {
		t.Fatalf("%d still unread", n)
	}
	if n, err := st.UnreadNotificationCount(ctx, mustUser(t, st, email).ID); err != nil || n != 0 {
		t.Fatalf("unread in the database: %d %v", n, err)
	}
	tb.assertCleanConsole()
}

func mustUser(t *testing.T, st *store.Store, email string) store.User {
	t.Helper()
	u, err := st.UserByEmail(context.Background(), email)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
