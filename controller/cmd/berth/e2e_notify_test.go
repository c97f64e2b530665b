package main_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/berthhq/berth/controller/internal/mail/mailtest"
)

// hookReceiver is a webhook receiver on loopback as a careful integrator
// writes one: it verifies each request with the Standard Webhooks
// specification's Go library (signature and timestamp; not our code),
// processes each webhook-id once and answers a repeat with 2xx without
// processing it again. It can hold requests after processing them (the
// answer is lost when the sender dies) and be stopped and started on the
// same address.
type hookReceiver struct {
	t    *testing.T
	addr string

	mu        sync.Mutex
	secret    string
	hold      bool
	srv       *http.Server
	seen      map[string]int              // verified requests per webhook-id
	processed map[string]map[string]any   // the payload each id was processed with
	copies    map[string][]map[string]any // every verified payload per id
	order     []string                    // ids in the order processed
	inflight  map[string]int              // held requests now
	cut       map[string]int              // held requests the sender went away from
	bad       int
}

func newHookReceiver(t *testing.T) *hookReceiver {
	r := &hookReceiver{t: t, addr: "127.0.0.1:0", seen: map[string]int{}, processed: map[string]map[string]any{},
		copies: map[string][]map[string]any{}, inflight: map[string]int{}, cut: map[string]int{}}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *hookReceiver) url() string { return "http://" + r.addr + "/incoming-7f3a9c" }

// start listens on the receiver's address (the same one after a stop).
func (r *hookReceiver) start() {
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		r.t.Fatalf("receiver listen: %v", err)
	}
	r.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(r.serve), ReadHeaderTimeout: 10 * time.Second}
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

// stop closes the listener and every connection: the receiver is down.
func (r *hookReceiver) stop() {
	r.mu.Lock()
	srv := r.srv
	r.srv = nil
	r.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

func (r *hookReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	wh, err := standardwebhooks.NewWebhook(r.secret)
	if err == nil {
		err = wh.Verify(body, req.Header)
	}
	if err != nil {
		r.bad++
		r.mu.Unlock()
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	var p map[string]any
	if err := json.Unmarshal(body, &p); err != nil {
		r.bad++
		r.mu.Unlock()
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	id := req.Header.Get("webhook-id")
	r.seen[id]++
	r.copies[id] = append(r.copies[id], p)
	if _, dup := r.processed[id]; !dup {
		r.processed[id] = p // the receiver's side effect, once per id
		r.order = append(r.order, id)
	}
	hold := r.hold
	if hold {
		r.inflight[id]++
	}
	r.mu.Unlock()
	if hold {
		<-req.Context().Done() // processed, but the answer never goes out
		r.mu.Lock()
		r.inflight[id]--
		r.cut[id]++
		r.mu.Unlock()
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (r *hookReceiver) set(f func(*hookReceiver)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(r)
}

func (r *hookReceiver) get(f func(*hookReceiver) bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return f(r)
}

// outboxRow is one notify_outbox row as the test reads it.
type outboxRow struct {
	id, status, kind, lastError string
	attempts                    int
	leased                      bool
}

func channelRows(t *testing.T, dsn, channel string) map[string]outboxRow {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT o.id::text, o.status, coalesce(e.kind, 'notify.digest'), coalesce(o.last_error, ''), o.attempts,
			coalesce(o.locked_until > now(), false)
		FROM notify_outbox o JOIN notify_channels c ON c.id = o.channel_id LEFT JOIN notify_events e ON e.id = o.event_id
		WHERE c.name = $1`, channel)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]outboxRow{}
	for rows.Next() {
		var r outboxRow
		if err := rows.Scan(&r.id, &r.status, &r.kind, &r.lastError, &r.attempts, &r.leased); err != nil {
			t.Fatal(err)
		}
		out[r.id] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestNotifyDeliveryAcrossControllerKill: real berth and berth-agent
// processes, a webhook channel to a loopback receiver that verifies with
// the Standard Webhooks library, and the in-process SMTP server for the
// admins' default email channel.
//
//  1. A failed deploy and four more events at once reach the receiver,
//     which processes each and holds every answer; with all five sent and
//     none recorded (rows pending, leased), the controller is killed -9.
//     After the restart every message comes again with the same
//     webhook-id (the receiver drops the repeats), none is lost and none
//     gets a new id; the failed-deploy mail arrived once.
//  2. The receiver goes down; a second failed deploy and three more events
//     fail on the channel (last error, failing since); the receiver comes
//     back on the same address and gets each message once, and the
//     channel's failure clears.
func TestNotifyDeliveryAcrossControllerKill(t *testing.T) {
	t.Parallel()
	smtp := mailtest.Start(t)
	// The lease bounds how long a send may take (so the five must all be
	// held within it, with CLI calls between them on a loaded machine) and
	// how soon after the kill the restarted controller sends again.
	flags := []string{"--allow-private-webhook-targets", "--notify-lease", "60s",
		"--smtp-host", smtp.Host, "--smtp-port", strconv.Itoa(smtp.Port), "--smtp-tls", "none", "--smtp-from", mailtest.From}
	e := setupDeploy(t, flags...)
	rcv := newHookReceiver(t)

	var ch map[string]any
	e.mustJSON(t, &ch, "notify", "channel", "add", "hook", "--kind", "webhook", "--url", rcv.url())
	secret, _ := ch["webhook_secret"].(string)
	rcv.set(func(r *hookReceiver) { r.secret = secret })
	var rule map[string]any
	e.mustJSON(t, &rule, "notify", "rule", "add", "--events", "deployment.failed,security.*", "--channel", "hook")

	gitURL := e.repo.serveHTTP(t, gitUser, gitToken)
	e.repo.commit(t, "main", "broken", map[string]string{"version.txt": "v1\n", "fail": "x\n"})
	if r := e.cli(t, gitToken+"\n", "git-credential", "add", "gitcred", "--https", "--username", gitUser, "--token-stdin"); r.code != 0 {
		t.Fatalf("git-credential add: %+v", r)
	}
	e.createApp(t, "shop", gitURL, "gitcred")
	mailsBefore := len(smtp.Messages())

	// 1. Kill -9 between send and commit.
	rcv.set(func(r *hookReceiver) { r.hold = true })
	if d, logs, code := e.deployFollow(t, "shop"); code == 0 || d.Status != "failed" {
		t.Fatalf("deploy: code %d %+v\n%s", code, d, logs)
	}
	for i := range 4 {
		if r := e.cli(t, "", "token", "issue", "t"+strconv.Itoa(i), "--scope", "read", "-o", "json"); r.code != 0 {
			t.Fatalf("token issue: %+v", r)
		}
	}
	waitFor(t, "five messages held at the receiver", 2*time.Minute, func() bool {
		return rcv.get(func(r *hookReceiver) bool {
			n := 0
			for _, k := range r.inflight {
				n += k
			}
			return n == 5 && len(r.processed) == 5
		})
	})
	// The mails of these events are sent and recorded before the kill, so
	// the kill interrupts the webhook only.
	waitFor(t, "the admins' mails recorded as delivered", time.Minute, func() bool {
		rows := channelRows(t, e.dsn(), "admins-email")
		n := 0
		for _, r := range rows {
			if r.status != "delivered" {
				return false
			}
			if r.kind == "deployment.failed" || r.kind == "security.token_created" {
				n++
			}
		}
		return n >= 5
	})
	killed := e.c
	_ = e.c.stop(t, syscall.SIGKILL)
	rcv.set(func(r *hookReceiver) { r.hold = false })

	// The dead controller sent all five and recorded none: the rows are
	// pending and leased (the embedded PostgreSQL outlives its controller).
	before := channelRows(t, e.dsn(), "hook")
	var firstIDs []string
	rcv.get(func(r *hookReceiver) bool { firstIDs = slices.Clone(r.order); return true })
	if len(before) != 5 {
		t.Fatalf("hook outbox rows %v, want 5", before)
	}
	for _, id := range firstIDs {
		r, ok := before[uuidOf(t, id)]
		if !ok || r.status != "pending" || !r.leased || r.attempts != 1 {
			t.Fatalf("row of %s at the kill: %+v (found %v), want pending and leased after one attempt", id, r, ok)
		}
	}

	e.c = startControllerAt(t, e.dataDir, e.c.httpAddr, e.c.grpcAddr, append([]string{"--metrics-interval", "1s", "--heartbeat-interval", "1s"}, flags...)...)
	waitFor(t, "every message again after the restart", 3*time.Minute, func() bool {
		return rcv.get(func(r *hookReceiver) bool {
			for _, id := range firstIDs {
				if r.seen[id] < 2 {
					return false
				}
			}
			return true
		})
	})
	waitFor(t, "the redeliveries recorded", time.Minute, func() bool {
		for _, r := range channelRows(t, e.dsn(), "hook") {
			if r.status != "delivered" {
				return false
			}
		}
		return true
	})
	rcv.get(func(r *hookReceiver) bool {
		kinds := map[any]int{}
		for _, id := range r.order {
			kinds[r.processed[id]["type"]]++
		}
		if len(r.order) != 5 || kinds["deployment.failed"] != 1 || kinds["security.token_created"] != 4 || r.bad != 0 {
			t.Fatalf("processed %d messages %v (%d refused); want the failed deploy and four token events, once each", len(r.order), kinds, r.bad)
		}
		for _, id := range firstIDs {
			c := r.copies[id]
			if r.seen[id] != 2 || r.cut[id] != 1 || len(c) != 2 {
				t.Fatalf("%s: %d requests (%d cut by the kill), want the first and one redelivery", id, r.seen[id], r.cut[id])
			}
			d0, _ := c[0]["data"].(map[string]any)
			d1, _ := c[1]["data"].(map[string]any)
			if d0["event_id"] == nil || d0["event_id"] != d1["event_id"] || c[0]["type"] != c[1]["type"] {
				t.Fatalf("%s: the redelivery is another message: %v vs %v", id, c[0], c[1])
			}
		}
		return true
	})
	for id, row := range channelRows(t, e.dsn(), "hook") {
		if row.attempts != 2 {
			t.Fatalf("row %s: %d attempts, want 2 (the killed one and the redelivery)", id, row.attempts)
		}
	}
	checkMailsOnce(t, smtp, mailsBefore, 1)
	// The mail's Message-ID is derived from its delivery (the admins-email
	// outbox row), so a resend would carry the same one.
	mailRows := channelRows(t, e.dsn(), "admins-email")
	for _, m := range smtp.Messages()[mailsBefore:] {
		if m.Subject != "[Berth] Deploy of shop failed" {
			continue
		}
		mid := strings.Trim(m.Header.Get("Message-Id"), "<>")
		ulidPart, _, _ := strings.Cut(mid, ".")
		if r, ok := mailRows[uuidOf(t, ulidPart)]; !ok || r.kind != "deployment.failed" {
			t.Fatalf("Message-ID %q is not derived from the mail's delivery", mid)
		}
	}

	// 2. The receiver is down for a while, then back.
	rcv.stop()
	e.repo.commit(t, "main", "broken again", map[string]string{"version.txt": "v2\n"})
	if d, logs, code := e.deployFollow(t, "shop"); code == 0 || d.Status != "failed" {
		t.Fatalf("second deploy: code %d %+v\n%s", code, d, logs)
	}
	for i := range 3 {
		if r := e.cli(t, "", "token", "issue", "u"+strconv.Itoa(i), "--scope", "read", "-o", "json"); r.code != 0 {
			t.Fatalf("token issue: %+v", r)
		}
	}
	waitFor(t, "the four new messages failing on the channel", 2*time.Minute, func() bool {
		failing := 0
		for _, r := range channelRows(t, e.dsn(), "hook") {
			if r.status == "pending" && r.attempts >= 1 && r.lastError != "" {
				failing++
			}
		}
		return failing == 4
	})
	var chans []map[string]any
	e.mustJSON(t, &chans, "notify", "channel", "list")
	for _, c := range chans {
		if c["name"] == "hook" && (c["last_error"] == "" || c["failing_since"] == nil) {
			t.Fatalf("a channel whose receiver is down shows it: %v", c)
		}
	}
	rcv.start()
	waitFor(t, "the four messages after the receiver is back", 3*time.Minute, func() bool {
		return rcv.get(func(r *hookReceiver) bool { return len(r.order) == 9 })
	})
	waitFor(t, "the channel to recover", time.Minute, func() bool {
		e.mustJSON(t, &chans, "notify", "channel", "list")
		for _, c := range chans {
			if c["name"] == "hook" {
				return c["last_error"] == "" && c["failing_since"] == nil
			}
		}
		return false
	})
	rcv.get(func(r *hookReceiver) bool {
		kinds := map[any]int{}
		for _, id := range r.order[5:] {
			kinds[r.processed[id]["type"]]++
			if r.seen[id] != 1 {
				t.Fatalf("%s: %d requests after the receiver came back, want 1", id, r.seen[id])
			}
		}
		if kinds["deployment.failed"] != 1 || kinds["security.token_created"] != 3 || r.bad != 0 {
			t.Fatalf("after the outage: %v (%d refused)", kinds, r.bad)
		}
		return true
	})
	for _, r := range channelRows(t, e.dsn(), "hook") {
		if r.status != "delivered" {
			t.Fatalf("row %+v not delivered", r)
		}
	}
	checkMailsOnce(t, smtp, mailsBefore, 2)
	for _, c := range []*controller{killed, e.c} {
		if strings.Contains(c.logs.String(), secret) || strings.Contains(c.logs.String(), "incoming-7f3a9c") {
			t.Fatal("the webhook's secret or URL path is in a controller's log")
		}
	}
}

// checkMailsOnce: the failed-deploy mail reached the admin wantDeploys times
// since the first `before` messages, and no mail arrived twice (each
// Message-ID once: nothing was resent).
func checkMailsOnce(t *testing.T, smtp *mailtest.Server, before, wantDeploys int) {
	t.Helper()
	msgs := smtp.Messages()[before:]
	ids := map[string]int{}
	deploys := 0
	for _, m := range msgs {
		ids[m.Header.Get("Message-Id")]++
		if m.Subject == "[Berth] Deploy of shop failed" && slices.Contains(m.To, "ops@example.com") {
			deploys++
		}
	}
	if deploys != wantDeploys {
		t.Fatalf("the failed-deploy mail arrived %d times, want %d", deploys, wantDeploys)
	}
	for id, n := range ids {
		if n != 1 || id == "" {
			t.Fatalf("Message-ID %q arrived %d times", id, n)
		}
	}
	if len(msgs) == 0 {
		t.Fatal("no mail")
	}
}
