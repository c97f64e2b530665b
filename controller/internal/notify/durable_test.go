package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
)

// realService is a Service on the real clock, for tests of Run.
func (e *env) realService(t *testing.T, set func(*Config)) *Service {
	t.Helper()
	cfg := Config{
		Store: e.st, Mailer: e.mail.Mailer(), Logger: slog.New(slog.NewTextHandler(e.logs, nil)),
		AllowPrivateTargets: true, PublicURL: "https://berth.example.test", Poll: 50 * time.Millisecond,
	}
	if set != nil {
		set(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// waitUntil polls a condition (not a sleep used as synchronisation).
func waitUntil(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func hookTo(t *testing.T, s *Service, name, url string) {
	t.Helper()
	ctx := context.Background()
	if _, _, err := s.AddChannel(ctx, ChannelSpec{Name: name, Kind: KindWebhook, URL: url, Secret: testSecret, RateLimitPerHour: 1000}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddRule(ctx, RuleSpec{Events: []string{"*"}, Channel: name}); err != nil {
		t.Fatal(err)
	}
}

// A row whose lease ran out before the worker holding it got to send it
// (a long batch, a stalled process) is not sent by that worker: the
// worker that took it over sends it, once.
func TestExpiredLeaseIsNotSentByOldHolder(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	a, b := e.service(t, true), e.service(t, true)
	rcv := newReceiver(t, testSecret)
	rcv.now = e.clk.Now
	hookTo(t, a, "hook", rcv.URL)
	if _, err := a.Publish(ctx, Event{Kind: "backup.failed", Title: "b"}); err != nil {
		t.Fatal(err)
	}
	rows, err := a.claim(ctx, 10)
	if err != nil || len(rows) != 1 {
		t.Fatalf("claim: %v %v", rows, err)
	}
	e.clk.Add(a.cfg.Lease + time.Second)
	if n, err := b.DeliverDue(ctx, 10); err != nil || n != 1 {
		t.Fatalf("takeover claimed %d (%v)", n, err)
	}
	a.deliver(ctx, rows[0]) // its turn comes too late
	reqs, ids, _, _, _ := rcv.snapshot()
	if reqs != 1 || ids[rows[0].ID.String()] != 1 {
		t.Fatalf("%d requests, ids %v; want the message once", reqs, ids)
	}
}

// locked_until is a fencing token: a worker whose lease ran out cannot
// record a failure over the lease of the worker that took the row over
// (which would free the row for a third worker while the second sends).
func TestStaleHolderCannotClearNewLease(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	s := e.service(t, true)
	hookTo(t, s, "hook", "http://127.0.0.1:9/")
	if _, err := s.Publish(ctx, Event{Kind: "backup.failed", Title: "b"}); err != nil {
		t.Fatal(err)
	}
	old, err := s.claim(ctx, 10)
	if err != nil || len(old) != 1 {
		t.Fatalf("claim: %v %v", old, err)
	}
	e.clk.Add(s.cfg.Lease + time.Second)
	cur, err := s.claim(ctx, 10)
	if err != nil || len(cur) != 1 {
		t.Fatalf("takeover: %v %v", cur, err)
	}
	id := old[0].ID
	if ok, err := e.st.RetryNotifyOutbox(ctx, id, *old[0].LockedUntil, e.clk.Now(), "stale"); err != nil || ok {
		t.Fatalf("stale retry recorded: %v %v", ok, err)
	}
	if ok, err := e.st.FailNotifyOutbox(ctx, id, *old[0].LockedUntil, "stale"); err != nil || ok {
		t.Fatalf("stale give-up recorded: %v %v", ok, err)
	}
	r, _ := e.st.NotifyOutboxByID(ctx, id)
	if r.Status != "pending" || r.LockedUntil == nil || !r.LockedUntil.Equal(*cur[0].LockedUntil) || r.LastError != "" {
		t.Fatalf("row after stale writes: %+v", r)
	}
	if n, err := s.DeliverDue(ctx, 10); err != nil || n != 0 {
		t.Fatalf("a third claim took a held row: %d %v", n, err)
	}
	if ok, err := e.st.RetryNotifyOutbox(ctx, id, *cur[0].LockedUntil, e.clk.Now(), "refused"); err != nil || !ok {
		t.Fatalf("holder's retry: %v %v", ok, err)
	}
}

// A receiver that never answers: the send ends before the lease does, so
// no other worker takes the message over while it is still being sent,
// and the failure is recorded on the channel.
func TestSendEndsBeforeLease(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	e := newEnv(t)
	s := e.realService(t, func(c *Config) { c.Lease = 2 * time.Second; c.Workers = 4 })
	var mu sync.Mutex
	inflight, most, total := map[string]int{}, 0, 0
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		id := r.Header.Get("webhook-id")
		mu.Lock()
		inflight[id]++
		total++
		most = max(most, inflight[id])
		mu.Unlock()
		<-r.Context().Done() // answers only when the sender gives up
		mu.Lock()
		inflight[id]--
		mu.Unlock()
	}))
	t.Cleanup(rcv.Close)
	hookTo(t, s, "hook", rcv.URL)
	if _, err := s.Publish(ctx, Event{Kind: "backup.failed", Title: "b"}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	waitUntil(t, "the failure on the channel", 30*time.Second, func() bool {
		c, err := s.Channel(ctx, "hook")
		return err == nil && c.LastError != ""
	})
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if most != 1 || total != 1 {
		t.Fatalf("%d requests, at most %d at once for one webhook-id; want one", total, most)
	}
	c, _ := s.Channel(context.Background(), "hook")
	if !strings.Contains(c.LastError, "deadline exceeded") || c.FailingSince == nil {
		t.Fatalf("channel %+v", c)
	}
}

// A receiver that holds its request does not hold up another channel's
// message: each message is sent on its own.
func TestSlowReceiverDoesNotBlockOthers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	e := newEnv(t)
	s := e.realService(t, func(c *Config) { c.Workers = 2 })
	release := make(chan struct{})
	var mu sync.Mutex
	slowDone, fastBeforeSlowDone := false, false
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done(): // the sender gave up
		}
		mu.Lock()
		slowDone = true
		mu.Unlock()
	}))
	fastGot := make(chan struct{}, 10)
	fast := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		fastBeforeSlowDone = !slowDone
		mu.Unlock()
		fastGot <- struct{}{}
	}))
	t.Cleanup(fast.Close)
	t.Cleanup(slow.Close)
	// "a-slow" sorts first: its row is claimed first.
	hookTo(t, s, "a-slow", slow.URL)
	hookTo(t, s, "b-fast", fast.URL)
	if _, err := s.Publish(ctx, Event{Kind: "backup.failed", Title: "b"}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	select {
	case <-fastGot:
	case <-time.After(60 * time.Second):
		t.Fatal("the fast receiver got nothing")
	}
	close(release)
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if !fastBeforeSlowDone {
		t.Fatal("the fast channel's message waited for the slow receiver")
	}
}

// An email resent after a crash between send and commit carries the
// Message-ID of the first: one per (delivery, recipient), derived from the
// delivery id, so mail systems recognise the copy.
func TestMailMessageIDStableAcrossResend(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	a := e.service(t, true)
	if _, _, err := a.AddChannel(ctx, ChannelSpec{Name: "ops", Kind: KindEmail, To: []string{"ops@example.test", "Dev@example.test"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.AddRule(ctx, RuleSpec{Events: []string{"deployment.*"}, Channel: "ops"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Publish(ctx, failedDeploy(store.NewID(), e.clk.Now())); err != nil {
		t.Fatal(err)
	}
	// Controller a sends and dies before recording it; b takes over after
	// the lease.
	rows, err := a.claim(ctx, 10)
	if err != nil || len(rows) != 1 {
		t.Fatalf("claim: %v %v", rows, err)
	}
	c, _ := e.st.NotifyChannelByID(ctx, rows[0].ChannelID)
	m, err := a.messageOf(ctx, rows[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := a.send(ctx, c, m); err != nil {
		t.Fatal(err)
	}
	b := e.service(t, true)
	e.clk.Add(a.cfg.Lease + time.Second)
	drain(t, b)
	seen := map[string]bool{}
	for _, to := range []string{"ops@example.test", "dev@example.test"} {
		msgs := e.mail.MessagesTo(to)
		if len(msgs) != 2 {
			t.Fatalf("%s got %d mails, want the first and the resend", to, len(msgs))
		}
		id0, id1 := msgs[0].Header.Get("Message-Id"), msgs[1].Header.Get("Message-Id")
		if id0 != id1 || !strings.HasPrefix(id0, "<"+rows[0].ID.String()+".") || !strings.HasSuffix(id0, "@berth.example.test>") {
			t.Fatalf("%s: Message-IDs %q and %q, want one stable id from delivery %s", to, id0, id1, rows[0].ID)
		}
		if local, _, _ := strings.Cut(to, "@"); strings.Contains(strings.ToLower(id0), local+"@") {
			t.Fatalf("the address shows in the Message-ID %q", id0)
		}
		seen[id0] = true
	}
	if len(seen) != 2 {
		t.Fatal("two recipients share a Message-ID")
	}
}

// A message given up on says so on its channel, for either bound (attempts
// or age): the channel shows that something was lost, not only that a
// send failed.
func TestGiveUpShowsOnChannel(t *testing.T) {
	ctx := context.Background()
	for _, bound := range []string{"attempts", "age"} {
		t.Run(bound, func(t *testing.T) {
			e := newEnv(t)
			s := e.service(t, true)
			if bound == "age" {
				s.cfg.MaxAttempts, s.cfg.MaxAge = 1000, 3*time.Hour
			}
			rcv := newReceiver(t, testSecret)
			rcv.now = e.clk.Now
			rcv.fail = 1000
			hookTo(t, s, "hook", rcv.URL)
			id, err := s.Publish(ctx, Event{Kind: "backup.failed", Title: "b"})
			if err != nil {
				t.Fatal(err)
			}
			drain(t, s)
			c, _ := s.Channel(ctx, "hook")
			if c.LastError != "post to 127.0.0.1: HTTP 503" || c.FailingSince == nil {
				t.Fatalf("after one failure: %+v", c)
			}
			since := *c.FailingSince
			for range 20 {
				e.clk.Add(time.Hour + time.Minute)
				drain(t, s)
			}
			rows, _ := e.st.NotifyOutboxForEvent(ctx, id)
			if len(rows) != 1 || rows[0].Status != "failed" {
				t.Fatalf("rows %+v", rows)
			}
			c, _ = s.Channel(ctx, "hook")
			want := fmt.Sprintf("gave up after %d attempts: post to 127.0.0.1: HTTP 503", rows[0].Attempts)
			if c.LastError != want || c.FailingSince == nil || !c.FailingSince.Equal(since) {
				t.Fatalf("channel %+v, want last error %q and failing since %v", c, want, since)
			}
		})
	}
}

// A "resolved" message never overtakes the message that opened its
// condition: when the opener failed and waits for its retry, the resolve
// waits for it.
func TestResolveWaitsForItsOpener(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	s := e.service(t, true)
	rcv := newReceiver(t, testSecret)
	rcv.now = e.clk.Now
	rcv.fail = 1
	hookTo(t, s, "hook", rcv.URL)
	srv := store.NewID()
	key := "server.offline:" + srv.String()
	if _, err := s.Publish(ctx, Event{Kind: KindServerOffline, Level: Critical, Title: "down", ServerID: &srv, DedupeKey: key}); err != nil {
		t.Fatal(err)
	}
	drain(t, s) // the receiver refuses the opener once: retried in 15 to 30 s
	e.clk.Add(time.Second)
	if _, err := s.Publish(ctx, Event{Kind: KindServerOnline, Title: "up", ServerID: &srv, DedupeKey: key, Resolves: true}); err != nil {
		t.Fatal(err)
	}
	drain(t, s)
	if _, ids, _, _, _ := rcv.snapshot(); len(ids) != 0 {
		t.Fatalf("delivered %v while the opener waits for its retry", ids)
	}
	e.clk.Add(time.Hour)
	drain(t, s)
	_, ids, _, bodies, _ := rcv.snapshot()
	if len(ids) != 2 || len(bodies) != 2 {
		t.Fatalf("ids %v", ids)
	}
	var first, second WebhookPayload
	_ = json.Unmarshal(bodies[0], &first)
	_ = json.Unmarshal(bodies[1], &second)
	if first.Type != KindServerOffline || second.Type != KindServerOnline || !second.Data.Resolved {
		t.Fatalf("order %s then %s, want offline then online", first.Type, second.Type)
	}
}

// A receiver that refuses with 429 and Retry-After (Slack and Discord
// rate limits) is not asked again before the time it named, in seconds or
// as an HTTP date; other failures keep the backoff.
func TestRetryAfterIsHonoured(t *testing.T) {
	ctx := context.Background()
	for name, header := range map[string]func(time.Time) string{
		"seconds": func(time.Time) string { return "1800" },
		"date":    func(now time.Time) string { return time.Now().Add(30 * time.Minute).UTC().Format(http.TimeFormat) },
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			s := e.service(t, true)
			var mu sync.Mutex
			calls := 0
			rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				defer mu.Unlock()
				calls++
				if calls == 1 {
					w.Header().Set("Retry-After", header(time.Now()))
					w.WriteHeader(http.StatusTooManyRequests)
				}
			}))
			t.Cleanup(rcv.Close)
			hookTo(t, s, "hook", rcv.URL)
			id, err := s.Publish(ctx, Event{Kind: "backup.failed", Title: "b"})
			if err != nil {
				t.Fatal(err)
			}
			at := e.clk.Now()
			drain(t, s)
			rows, _ := e.st.NotifyOutboxForEvent(ctx, id)
			if len(rows) != 1 || rows[0].Status != "pending" || rows[0].NextAttemptAt.Before(at.Add(29*time.Minute)) || !strings.Contains(rows[0].LastError, "HTTP 429") {
				t.Fatalf("row after a 429 with Retry-After: %+v", rows)
			}
			e.clk.Add(20 * time.Minute)
			drain(t, s)
			e.clk.Add(11 * time.Minute)
			drain(t, s)
			mu.Lock()
			n := calls
			mu.Unlock()
			rows, _ = e.st.NotifyOutboxForEvent(ctx, id)
			if n != 2 || rows[0].Status != "delivered" {
				t.Fatalf("%d calls, status %s; want the retry after the named time only", n, rows[0].Status)
			}
		})
	}
	// Unparsable or absurd values are ignored (the backoff applies).
	for _, v := range []string{"soon", "-5", "99999999999", ""} {
		resp := &http.Response{Header: http.Header{"Retry-After": []string{v}}}
		if d, ok := retryAfter(resp, time.Now()); ok {
			t.Errorf("Retry-After %q read as %v", v, d)
		}
	}
}

// A clean shutdown (SIGTERM) in the middle of a send releases the row:
// the next controller sends it at once, with the same webhook-id, instead
// of after the lease; the cut attempt does not count.
func TestShutdownReleasesInterruptedSend(t *testing.T) {
	e := newEnv(t)
	arrived := make(chan string, 10)
	var mu sync.Mutex
	hold := true
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read to the end: only then does the server notice the client
		// going away (and end r.Context()).
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		h := hold
		mu.Unlock()
		arrived <- r.Header.Get("webhook-id")
		if h {
			<-r.Context().Done()
		}
	}))
	t.Cleanup(rcv.Close)
	a := e.realService(t, nil)
	hookTo(t, a, "hook", rcv.URL)
	id, err := a.Publish(context.Background(), Event{Kind: "backup.failed", Title: "b"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	var first string
	select {
	case first = <-arrived:
	case <-time.After(60 * time.Second):
		t.Fatal("nothing sent")
	}
	cancel()
	<-done
	rows, _ := e.st.NotifyOutboxForEvent(context.Background(), id)
	if len(rows) != 1 || rows[0].Status != "pending" || rows[0].LockedUntil != nil || rows[0].Attempts != 0 {
		t.Fatalf("row after the shutdown: %+v, want pending, released, no attempt counted", rows)
	}
	mu.Lock()
	hold = false
	mu.Unlock()
	// The next controller (default 2-minute lease) sends it at once.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	b := e.realService(t, nil)
	go b.Run(ctx2)
	select {
	case again := <-arrived:
		if again != first {
			t.Fatalf("resent as %s, want the same webhook-id %s", again, first)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the released message was not sent again")
	}
	waitUntil(t, "the resend recorded", 30*time.Second, func() bool {
		rows, _ := e.st.NotifyOutboxForEvent(context.Background(), id)
		return len(rows) == 1 && rows[0].Status == "delivered" && rows[0].Attempts == 1
	})
}
