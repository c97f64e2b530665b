package web_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
	"github.com/berthhq/berth/controller/internal/web"
)

func (e *env) notification(u store.User, title string, level store.NotificationLevel, link string) store.Notification {
	e.t.Helper()
	n, ok, err := e.st.CreateNotification(context.Background(), store.CreateNotificationParams{
		UserID: u.ID, Kind: "deployment.failed", Level: level, Title: title, Body: "the body of " + title, Link: link,
	})
	if err != nil || !ok {
		e.t.Fatalf("create notification: %v %v", ok, err)
	}
	return n
}

// The inbox lists the signed-in person's own notifications, unread first,
// with level, body and a link to the object; the bell shows the unread
// count; marking one and then all read brings it down; bad and other
// people's ids are refused clearly and change nothing.
func TestInboxPageMarkReadAndBell(t *testing.T) {
	e := newEnv(t, false)
	admin := e.user("admin@example.com", store.RoleAdmin)
	other := e.user("other@example.com", store.RoleViewer)
	first := e.notification(admin, "Deploy of shop failed", store.NotifyError, "/deployments/01ARZ3NDEKTSV4RRFFQ69G5FAV")
	second := e.notification(admin, "web-1 is offline", store.NotifyWarning, "/servers/web-1")
	theirs := e.notification(other, "Their own secret title", store.NotifyInfo, "")

	c := e.client()
	c.login("admin@example.com", adminPassword)
	resp, body := c.get("/notifications")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("inbox: %d %s", resp.StatusCode, body)
	}
	for _, want := range []string{"Deploy of shop failed", "the body of web-1 is offline", `href="/servers/web-1"`,
		`href="/deployments/01ARZ3NDEKTSV4RRFFQ69G5FAV"`, "level-error", "level-warning", `id="bell-count" data-count="2"`} {
		if !strings.Contains(body, want) {
			t.Errorf("inbox lacks %q", want)
		}
	}
	if strings.Contains(body, "Their own secret title") || strings.Contains(body, "not available in this version") {
		t.Errorf("inbox shows another person's notification or the placeholder:\n%s", body)
	}

	// Someone else's id is not found, and stays unread.
	resp, body = c.post("/notifications/"+theirs.ID.String()+"/read", url.Values{})
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "No such notification in your inbox.") {
		t.Fatalf("other's id: %d %s", resp.StatusCode, body)
	}
	if n, _ := e.st.UnreadNotificationCount(context.Background(), other.ID); n != 1 {
		t.Fatalf("other's unread = %d, want 1", n)
	}
	resp, body = c.post("/notifications/not-an-id/read", url.Values{})
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "not a notification id") {
		t.Fatalf("bad id: %d %s", resp.StatusCode, body)
	}
	resp, body = c.post("/notifications/"+store.NewID().String()+"/read", url.Values{})
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "No such notification in your inbox.") {
		t.Fatalf("unknown id: %d %s", resp.StatusCode, body)
	}

	// Mark one read: it moves below the unread one and the bell says 1.
	resp, body = c.post("/notifications/"+first.ID.String()+"/read", url.Values{})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/notifications" {
		t.Fatalf("mark read: %d %s", resp.StatusCode, body)
	}
	_, body = c.get("/notifications")
	if !strings.Contains(body, `data-count="1"`) {
		t.Errorf("bell after one read: %s", body)
	}
	if i, j := strings.Index(body, second.Title), strings.Index(body, first.Title); i < 0 || j < 0 || i > j {
		t.Errorf("unread not first: unread at %d, read at %d", i, j)
	}
	_, body = c.get("/notifications?unread=1")
	if strings.Contains(body, first.Title) || !strings.Contains(body, second.Title) {
		t.Errorf("unread filter wrong:\n%s", body)
	}

	// Mark all read.
	resp, body = c.post("/notifications/read-all", url.Values{})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("read all: %d %s", resp.StatusCode, body)
	}
	if n, _ := e.st.UnreadNotificationCount(context.Background(), admin.ID); n != 0 {
		t.Fatalf("unread after read all = %d", n)
	}
	if n, _ := e.st.UnreadNotificationCount(context.Background(), other.ID); n != 1 {
		t.Fatalf("read all touched another person's inbox: %d", n)
	}
	_, body = c.get("/servers")
	if !strings.Contains(body, `data-count="0" hidden`) {
		t.Errorf("bell after read all not hidden")
	}
}

// The bell's stream sends the unread count at once and again whenever it
// changes, without a reload.
func TestBellStreamFollowsUnreadCount(t *testing.T) {
	e := newEnv(t, false)
	admin := e.user("admin@example.com", store.RoleAdmin)
	c := e.client()
	c.login("admin@example.com", adminPassword)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/notifications/stream", nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	lines := bufio.NewScanner(resp.Body)
	next := func(want string) {
		t.Helper()
		for lines.Scan() {
			if strings.HasPrefix(lines.Text(), "data: ") {
				if lines.Text() == "data: "+want {
					return
				}
				if !strings.Contains(lines.Text(), `"unread":`) {
					t.Fatalf("unexpected event %q", lines.Text())
				}
			}
		}
		t.Fatalf("stream ended before %s: %v", want, lines.Err())
	}
	next(`{"unread":0}`)
	n := e.notification(admin, "Deploy failed", store.NotifyError, "")
	next(`{"unread":1}`)
	e.notification(admin, "Another", store.NotifyInfo, "")
	next(`{"unread":2}`)
	if _, err := e.st.MarkNotificationRead(context.Background(), admin.ID, n.ID); err != nil {
		t.Fatal(err)
	}
	next(`{"unread":1}`)
}

// Signed out, the stream is refused like every page.
func TestBellStreamNeedsSession(t *testing.T) {
	e := newEnv(t, false)
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/notifications/stream", nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := e.client().hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Fatalf("signed-out stream: %d", resp.StatusCode)
	}
}

// The open bell streams are bounded: one over the bound is refused with
// 503 and Retry-After, and a slot frees when a stream closes.
func TestBellStreamsBounded(t *testing.T) {
	e := newEnv(t, false)
	e.user("admin@example.com", store.RoleAdmin)
	c := e.client()
	c.login("admin@example.com", adminPassword)

	// A second UI on the same database, allowing one stream; the session
	// cookie (host-scoped, not port-scoped) works on both.
	ui, err := web.New(web.Deps{Log: slog.New(slog.NewTextHandler(e.logs, nil)), Store: e.st, Accounts: e.acc, Deploys: e.dep},
		web.Config{EventsPoll: 100 * time.Millisecond, BellStreams: 1})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	ui.Register(mux)
	srv := httptest.NewServer(ui.Wrap(mux))
	defer srv.Close()

	open := func(ctx context.Context) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/notifications/stream", nil)
		req.Header.Set("Accept", "text/event-stream")
		resp, err := c.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	ctx1, cancel1 := context.WithCancel(context.Background())
	first := open(ctx1)
	if first.StatusCode != http.StatusOK {
		t.Fatalf("first stream: %d", first.StatusCode)
	}
	// Read its first event so the handler surely holds its slot.
	if line, err := bufio.NewReader(first.Body).ReadString('}'); err != nil || !strings.Contains(line, `"unread":0`) {
		t.Fatalf("first stream's first event: %q %v", line, err)
	}
	second := open(context.Background())
	b, _ := io.ReadAll(second.Body)
	second.Body.Close()
	if second.StatusCode != http.StatusServiceUnavailable || second.Header.Get("Retry-After") == "" || !strings.Contains(string(b), "Too many live notification streams") {
		t.Fatalf("second stream: %d %q %s", second.StatusCode, second.Header.Get("Retry-After"), b)
	}
	cancel1()
	first.Body.Close()
	// The closed stream's slot comes back once its handler has returned.
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp := open(context.Background())
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot never freed: %d", resp.StatusCode)
		}
	}
}
