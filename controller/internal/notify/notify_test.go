package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/berthhq/berth/controller/internal/mail/mailtest"
	"github.com/berthhq/berth/controller/internal/secrets"
	"github.com/berthhq/berth/controller/internal/store"
	"github.com/berthhq/berth/controller/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// clock is an injectable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type env struct {
	st    *store.Store
	admin store.ID
	mail  *mailtest.Server
	clk   *clock
	logs  *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func newEnv(t *testing.T) *env {
	t.Helper()
	kr, err := secrets.Generate()
	if err != nil {
		t.Fatal(err)
	}
	db := testdb.New(t)
	st := store.New(db.Pool, secrets.NewSource(kr, ""))
	u, err := st.CreateUser(context.Background(), store.CreateUserParams{Email: "admin@example.test", Name: "Admin", PasswordHash: "$argon2id$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA", Role: store.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	return &env{st: st, admin: u.ID, mail: mailtest.Start(t), clk: &clock{t: time.Now().UTC().Truncate(time.Second)}, logs: &syncBuffer{}}
}

func (e *env) service(t *testing.T, allowPrivate bool) *Service {
	t.Helper()
	s, err := New(Config{
		Store: e.st, Mailer: e.mail.Mailer(), Logger: slog.New(slog.NewTextHandler(e.logs, nil)),
		AllowPrivateTargets: allowPrivate, PublicURL: "https://berth.example.test", Now: e.clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// receiver is a loopback webhook receiver. It checks every request's
// Standard Webhooks signature with verify (written from the specification,
// independent of the code under test) and counts successful receipts per
// webhook-id.
type receiver struct {
	*httptest.Server
	secret string
	now    func() time.Time

	mu       sync.Mutex
	fail     int // answer 503 to this many requests first
	requests int
	ids      map[string]int // accepted (2xx) per webhook-id
	seen     map[string]int // every request per webhook-id
	bodies   [][]byte
	badSig   int
}

func newReceiver(t *testing.T, secret string) *receiver {
	r := &receiver{secret: secret, now: time.Now, ids: map[string]int{}, seen: map[string]int{}}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		r.requests++
		id := req.Header.Get("webhook-id")
		r.seen[id]++
		if r.secret != "" {
			if err := verify(r.secret, req.Header, body, r.now()); err != nil {
				r.badSig++
				w.WriteHeader(http.StatusBadRequest)
				return
			}
		}
		if r.fail > 0 {
			r.fail--
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		r.ids[id]++
		r.bodies = append(r.bodies, body)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) snapshot() (requests int, ids, seen map[string]int, bodies [][]byte, badSig int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids, seen = map[string]int{}, map[string]int{}
	for k, v := range r.ids {
		ids[k] = v
	}
	for k, v := range r.seen {
		seen[k] = v
	}
	return r.requests, ids, seen, append([][]byte(nil), r.bodies...), r.badSig
}

// verify checks a Standard Webhooks signature with the specification's
// published Go library (not our code). The library checks the timestamp
// against the real clock; tests that move the injected clock hours ahead
// check the signature with it and the timestamp against the injected now,
// with the specification's five-minute tolerance.
func verify(secret string, h http.Header, body []byte, now time.Time) error {
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		return err
	}
	if d := time.Since(now); d < time.Minute && d > -time.Minute {
		return wh.Verify(body, h) // real time: the library's replay check too
	}
	if err := wh.VerifyIgnoringTimestamp(body, h); err != nil {
		return err
	}
	sec, err := strconv.ParseInt(h.Get("webhook-timestamp"), 10, 64)
	if err != nil {
		return err
	}
	if d := now.Sub(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return errors.New("timestamp out of tolerance")
	}
	return nil
}

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// drain runs delivery passes until nothing is due.
func drain(t *testing.T, s *Service) {
	t.Helper()
	for i := 0; i < 100; i++ {
		n, err := s.DeliverDue(context.Background(), 10)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
	}
	t.Fatal("outbox never drained")
}

func failedDeploy(serverID store.ID, at time.Time) Event {
	dep := store.NewID()
	return Event{
		Kind: KindDeploymentFailed, Level: Critical, Title: "Deploy of shop failed", Body: "step build: exit 2",
		ServerID: &serverID, DeploymentID: &dep, Link: "/deployments/" + dep.String(), At: at,
	}
}

func TestFailedDeployReachesInboxMailAndWebhookOnce(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	s := e.service(t, true)
	rcv := newReceiver(t, testSecret)
	rcv.now = e.clk.Now
	if _, _, err := s.AddChannel(ctx, ChannelSpec{Name: "ops-mail", Kind: KindEmail, To: []string{"ops@example.test"}}); err != nil {
		t.Fatal(err)
	}
	if _, gen, err := s.AddChannel(ctx, ChannelSpec{Name: "hook", Kind: KindWebhook, URL: rcv.URL + "/in", Secret: testSecret}); err != nil || gen != "" {
		t.Fatalf("add webhook: %v (generated %q)", err, gen)
	}
	for _, ch := range []string{"ops-mail", "hook"} {
		if _, err := s.AddRule(ctx, RuleSpec{Events: []string{"deployment.*"}, Channel: ch, MinLevel: Warning}); err != nil {
			t.Fatal(err)
		}
	}

	// A rolled-back change notifies no one.
	srv := store.NewID()
	rollback := errors.New("rolled back")
	if err := e.st.InTx(ctx, func(tx *store.Store) error {
		if _, err := Publish(ctx, tx, failedDeploy(srv, e.clk.Now())); err != nil {
			return err
		}
		return rollback
	}); !errors.Is(err, rollback) {
		t.Fatal(err)
	}
	// An info event is below the rules' minimum level, and only the
	// default inbox rule (deployment.failed) ignores deployment.succeeded.
	if _, err := s.Publish(ctx, Event{Kind: KindDeploymentSucceeded, Title: "ok", ServerID: &srv}); err != nil {
		t.Fatal(err)
	}
	var evID store.ID
	if err := e.st.InTx(ctx, func(tx *store.Store) error {
		var err error
		evID, err = Publish(ctx, tx, failedDeploy(srv, e.clk.Now()))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	drain(t, s)
	drain(t, s) // a second pass sends nothing more

	inbox, err := e.st.Notifications(ctx, e.admin, store.NotificationFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(inbox) != 1 || inbox[0].Kind != KindDeploymentFailed || inbox[0].Level != store.NotifyError || !strings.HasPrefix(inbox[0].Link, "/deployments/") {
		t.Fatalf("inbox = %+v, want one deployment.failed", inbox)
	}
	msgs := e.mail.MessagesTo("ops@example.test")
	if len(msgs) != 1 || msgs[0].Subject != "[Berth] Deploy of shop failed" || !strings.Contains(msgs[0].Text, "https://berth.example.test/deployments/") {
		t.Fatalf("mail = %+v, want one", msgs)
	}
	reqs, ids, _, bodies, bad := rcv.snapshot()
	if reqs != 1 || len(ids) != 1 || bad != 0 {
		t.Fatalf("webhook: %d requests, ids %v, %d bad signatures; want 1", reqs, ids, bad)
	}
	var p WebhookPayload
	if err := json.Unmarshal(bodies[0], &p); err != nil {
		t.Fatal(err)
	}
	if p.Type != KindDeploymentFailed || p.Data.EventID != evID.String() || p.Data.Level != "critical" || p.Data.ServerID != srv.String() || p.Data.Title != "Deploy of shop failed" {
		t.Fatalf("payload = %+v", p)
	}
	rows, err := e.st.NotifyOutboxForEvent(ctx, evID)
	if err != nil || len(rows) != 2 {
		t.Fatalf("outbox rows %v %v", rows, err)
	}
	for _, r := range rows {
		if r.Status != "delivered" {
			t.Errorf("row %s status %s", r.ID, r.Status)
		}
		if _, ok := ids[r.ID.String()]; !ok && r.ChannelID != rows[0].ChannelID && r.ChannelID != rows[1].ChannelID {
			t.Errorf("webhook-id is not the outbox id")
		}
	}
	c, _ := s.Channel(ctx, "hook")
	if c.LastDeliveredAt == nil || c.LastError != "" || c.Host != "127.0.0.1" {
		t.Fatalf("channel = %+v", c)
	}
}

func TestReceiverDownThenBackGetsEachOnce(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	s := e.service(t, true)
	rcv := newReceiver(t, testSecret)
	rcv.now = e.clk.Now
	rcv.fail = 7
	if _, _, err := s.AddChannel(ctx, ChannelSpec{Name: "hook", Kind: KindWebhook, URL: rcv.URL, Secret: testSecret}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddRule(ctx, RuleSpec{Events: []string{"*"}, Channel: "hook"}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := s.Publish(ctx, Event{Kind: "backup.failed", Title: "backup " + strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	drain(t, s)
	c, _ := s.Channel(ctx, "hook")
	if c.LastError == "" || c.FailingSince == nil {
		t.Fatalf("a failing channel shows it: %+v", c)
	}
	// Each pass moves the clock past the longest backoff, until the
	// receiver is back and everything is delivered.
	for i := 0; i < 6; i++ {
		e.clk.Add(time.Hour + time.Minute)
		drain(t, s)
	}
	_, ids, _, _, bad := rcv.snapshot()
	if len(ids) != 3 || bad != 0 {
		t.Fatalf("ids %v bad %d, want 3 distinct", ids, bad)
	}
	for id, n := range ids {
		if n != 1 {
			t.Errorf("%s accepted %d times", id, n)
		}
	}
	c, _ = s.Channel(ctx, "hook")
	if c.LastError != "" || c.FailingSince != nil || c.LastDeliveredAt == nil {
		t.Fatalf("a recovered channel clears its failure: %+v", c)
	}
}

func TestGivesUpAfterBound(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	s := e.service(t, true)
	rcv := newReceiver(t, testSecret)
	rcv.now = e.clk.Now
	rcv.fail = 1000
	if _, _, err := s.AddChannel(ctx, ChannelSpec{Name: "hook", Kind: KindWebhook, URL: rcv.URL, Secret: testSecret}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddRule(ctx, RuleSpec{Events: []string{"*"}, Channel: "hook"}); err != nil {
		t.Fatal(err)
	}
	id, err := s.Publish(ctx, Event{Kind: "backup.failed", Title: "b"})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		drain(t, s)
		e.clk.Add(time.Hour + time.Minute)
	}
	rows, _ := e.st.NotifyOutboxForEvent(ctx, id)
	if len(rows) != 1 || rows[0].Status != "failed" || rows[0].Attempts != 10 || !strings.Contains(rows[0].LastError, "HTTP 503") {
		t.Fatalf("rows = %+v", rows)
	}
	if reqs, _, _, _, _ := rcv.snapshot(); reqs != 10 {
		t.Fatalf("%d attempts, want 10", reqs)
	}
}

func TestTwoServicesNeverDoubleDeliver(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := newEnv(t)
	a, b := e.service(t, true), e.service(t, true)
	e.clk = &clock{t: time.Now()} // both run on real time here
	rcv := newReceiver(t, testSecret)
	rcv.now = e.clk.Now
	if _, _, err := a.AddChannel(ctx, ChannelSpec{Name: "hook", Kind: KindWebhook, URL: rcv.URL, Secret: testSecret, RateLimitPerHour: 1000}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.AddRule(ctx, RuleSpec{Events: []string{"*"}, Channel: "hook"}); err != nil {
		t.Fatal(err)
	}
	a.cfg.Poll, b.cfg.Poll = 50*time.Millisecond, 50*time.Millisecond
	a.cfg.Workers, b.cfg.Workers = 3, 3
	go a.Run(ctx)
	go b.Run(ctx)
	const n = 60
	for i := 0; i < n; i++ {
		if _, err := a.Publish(ctx, Event{Kind: "backup.failed", Title: "b" + strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, ids, _, _, _ := rcv.snapshot()
		if len(ids) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d delivered", len(ids), n)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, not synchronising
	}
	cancel()
	reqs, ids, _, _, bad := rcv.snapshot()
	if reqs != n || bad != 0 {
		t.Fatalf("%d requests for %d messages (%d bad)", reqs, n, bad)
	}
	for id, c := range ids {
		if c != 1 {
			t.Errorf("%s delivered %d times", id, c)
		}
	}
}

func TestLostCommitResendsSameWebhookID(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	a := e.service(t, true)
	rcv := newReceiver(t, testSecret)
	rcv.now = e.clk.Now
	if _, _, err := a.AddChannel(ctx, ChannelSpec{Name: "hook", Kind: KindWebhook, URL: rcv.URL, Secret: testSecret}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.AddRule(ctx, RuleSpec{Events: []string{"*"}, Channel: "hook"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Publish(ctx, Event{Kind: "server.offline", Title: "down"}); err != nil {
		t.Fatal(err)
	}
	// Controller a claims and sends, then dies before recording it.
	now := e.clk.Now()
	rows, err := e.st.ClaimNotifyOutbox(ctx, now, now.Add(a.cfg.Lease), 10)
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
	// Controller b: nothing to take while the lease holds ...
	b := e.service(t, true)
	e.clk.Add(a.cfg.Lease - time.Second)
	if n, err := b.DeliverDue(ctx, 10); err != nil || n != 0 {
		t.Fatalf("claimed %d during the lease (%v)", n, err)
	}
	// ... and after it, the same message again with the same webhook-id.
	e.clk.Add(2 * time.Second)
	if n, err := b.DeliverDue(ctx, 10); err != nil || n != 1 {
		t.Fatalf("claimed %d after the lease (%v)", n, err)
	}
	_, ids, _, _, bad := rcv.snapshot()
	if len(ids) != 1 || ids[rows[0].ID.String()] != 2 || bad != 0 {
		t.Fatalf("ids = %v, want %s twice", ids, rows[0].ID)
	}
	r, _ := e.st.NotifyOutboxByID(ctx, rows[0].ID)
	if r.Status != "delivered" {
		t.Fatalf("status %s", r.Status)
	}
}

func TestPrivateTargetsRefusedUnlessAllowed(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	strict := e.service(t, false)
	for _, u := range []string{"http://127.0.0.1:9/x", "http://[::1]/x", "http://10.1.2.3/x", "http://169.254.169.254/latest", "http://0.0.0.0/", "http://localhost:8080/", "http://100.64.0.1/", "http://[::ffff:127.0.0.1]/", "http://[fe80::1]/", "http://192.168.1.1/", "http://172.16.0.1/", "http://[fd00::1]/", "http://api.localhost/"} {
		if _, _, err := strict.AddChannel(ctx, ChannelSpec{Name: "p", Kind: KindSlack, URL: u}); !errors.Is(err, ErrPrivateTarget) {
			t.Errorf("%s: err %v, want private target refused", u, err)
		}
	}
	// Public addresses and names pass (names are checked again at dial time).
	for _, u := range []string{"https://93.184.216.34/x", "https://hooks.slack.com/services/T/B/X", "https://[2606:4700::1111]/"} {
		if _, err := checkURL(u, false); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	// A name is checked where it is dialled: a channel stored while
	// allowed (or a name that now resolves to loopback) is refused at
	// delivery by a controller that does not allow private targets.
	rcv := newReceiver(t, "")
	lax := e.service(t, true)
	if _, _, err := lax.AddChannel(ctx, ChannelSpec{Name: "chat", Kind: KindSlack, URL: strings.Replace(rcv.URL, "127.0.0.1", "localhost", 1) + "/T000/B000/XXXX"}); err != nil {
		t.Fatal(err)
	}
	if _, err := lax.AddRule(ctx, RuleSpec{Events: []string{"*"}, Channel: "chat"}); err != nil {
		t.Fatal(err)
	}
	if _, err := lax.Publish(ctx, Event{Kind: "backup.failed", Title: "b"}); err != nil {
		t.Fatal(err)
	}
	drain(t, strict)
	if reqs, _, _, _, _ := rcv.snapshot(); reqs != 0 {
		t.Fatalf("a private target got %d requests", reqs)
	}
	c, _ := strict.Channel(ctx, "chat")
	if !strings.Contains(c.LastError, ErrPrivateTarget.Error()) {
		t.Fatalf("last error %q", c.LastError)
	}
	e.clk.Add(2 * time.Hour)
	drain(t, lax)
	_, ids, _, bodies, _ := rcv.snapshot()
	if len(ids) != 1 {
		t.Fatalf("allowed: %v", ids)
	}
	var slack map[string]any
	if err := json.Unmarshal(bodies[0], &slack); err != nil || slack["text"] != "*b*" || len(slack) != 1 {
		t.Fatalf("slack payload %s", bodies[0])
	}
}

func TestDiscordPayload(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	s := e.service(t, true)
	rcv := newReceiver(t, "")
	if _, _, err := s.AddChannel(ctx, ChannelSpec{Name: "dc", Kind: KindDiscord, URL: rcv.URL + "/api/webhooks/1/tok"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddRule(ctx, RuleSpec{Events: []string{"server.*"}, Channel: "dc"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Publish(ctx, Event{Kind: KindServerOffline, Level: Critical, Title: "web-1 is offline", Body: "@everyone " + strings.Repeat("x", 3000), Link: "/servers/x"}); err != nil {
		t.Fatal(err)
	}
	drain(t, s)
	_, _, _, bodies, _ := rcv.snapshot()
	if len(bodies) != 1 {
		t.Fatalf("%d bodies", len(bodies))
	}
	var p struct {
		Content         string              `json:"content"`
		AllowedMentions map[string][]string `json:"allowed_mentions"`
	}
	if err := json.Unmarshal(bodies[0], &p); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(p.Content, "**web-1 is offline**\n@everyone") || len(p.Content) != 2000 || p.AllowedMentions["parse"] == nil || len(p.AllowedMentions["parse"]) != 0 {
		t.Fatalf("discord payload %s", bodies[0][:200])
	}
}

func TestBadInputRefused(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	s := e.service(t, true)
	long := "https://hooks.example.test/" + strings.Repeat("a", 3000)
	bad := []ChannelSpec{
		{Name: "x", Kind: KindWebhook, URL: "ftp://example.test/"},
		{Name: "x", Kind: KindWebhook, URL: "https://"},
		{Name: "x", Kind: KindWebhook, URL: "not a url"},
		{Name: "x", Kind: KindWebhook, URL: "https://user:pw@example.test/"},
		{Name: "x", Kind: KindWebhook, URL: long},
		{Name: "x", Kind: KindWebhook, URL: "https://example.test/", Secret: "nope"},
		{Name: "x", Kind: KindWebhook, URL: "https://example.test/", Secret: "whsec_c2hvcnQ="},
		{Name: "x", Kind: KindWebhook, URL: "https://example.test/", Secret: "whsec_" + strings.Repeat("QUFB", 40)},
		{Name: "x", Kind: KindWebhook, URL: "https://example.test/", Secret: "whsec_not base64!!"},
		{Name: "x", Kind: KindSlack, URL: "https://example.test/", Secret: testSecret},
		{Name: "x", Kind: KindEmail, To: []string{"not-an-address"}},
		{Name: "x", Kind: KindEmail, To: []string{"A <a@example.test>"}},
		{Name: "x", Kind: KindEmail},
		{Name: "x", Kind: KindEmail, To: make([]string, 21)},
		{Name: "x", Kind: KindInbox},
		{Name: "x", Kind: "sms"},
		{Name: "Bad Name", Kind: KindInbox, ToAdmins: true},
		{Name: strings.Repeat("a", 64), Kind: KindInbox, ToAdmins: true},
		{Name: "x", Kind: KindEmail, To: []string{"a@example.test"}, RateLimitPerHour: 100000},
	}
	for i, spec := range bad {
		if _, _, err := s.AddChannel(ctx, spec); !errors.Is(err, ErrInvalid) {
			t.Errorf("%d (%s %s): err %v, want invalid", i, spec.Kind, cut(spec.URL, 40), err)
		}
	}
	if _, _, err := s.AddChannel(ctx, ChannelSpec{Name: "admins-inbox", Kind: KindInbox, ToAdmins: true}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("duplicate name: %v", err)
	}
	for _, r := range []RuleSpec{
		{Events: nil, Channel: "admins-inbox"},
		{Events: []string{"Deployment.Failed"}, Channel: "admins-inbox"},
		{Events: []string{"deployment.*.x"}, Channel: "admins-inbox"},
		{Events: []string{"*.failed"}, Channel: "admins-inbox"},
		{Events: []string{"deployment.failed"}, Channel: "admins-inbox", MinLevel: "loud"},
		{Events: make([]string, 51), Channel: "admins-inbox"},
	} {
		if _, err := s.AddRule(ctx, r); !errors.Is(err, ErrInvalid) {
			t.Errorf("rule %v: err %v, want invalid", r.Events, err)
		}
	}
	if _, err := s.AddRule(ctx, RuleSpec{Events: []string{"*"}, Channel: "nope"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown channel: %v", err)
	}
	for _, ev := range []Event{{Kind: "Bad Kind", Title: "t"}, {Kind: "a.b", Level: "loud"}, {Kind: "a.b", Resolves: true}, {Kind: "a.b", DedupeKey: strings.Repeat("k", 301)}} {
		if _, err := s.Publish(ctx, ev); !errors.Is(err, ErrInvalid) {
			t.Errorf("event %+v: err %v", ev.Kind, err)
		}
	}
	// Oversized text is cut, not refused: the event reports a fact.
	id, err := s.Publish(ctx, Event{Kind: "deployment.failed", Title: strings.Repeat("é", 400), Body: strings.Repeat("b", 20000)})
	if err != nil {
		t.Fatal(err)
	}
	ev, _ := e.st.NotifyEventByID(ctx, id)
	if len(ev.Title) > maxTitle || len(ev.Body) != maxBody {
		t.Fatalf("title %d body %d", len(ev.Title), len(ev.Body))
	}
}

func TestSecretsNeverInErrorsLogsOrListings(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	s := e.service(t, true)
	const token = "SECRETTOKEN123"
	rcv := newReceiver(t, "")
	rcv.fail = 1000
	_, gen, err := s.AddChannel(ctx, ChannelSpec{Name: "hook", Kind: KindWebhook, URL: rcv.URL + "/hooks/" + token})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(gen, "whsec_") {
		t.Fatalf("generated secret %q", gen)
	}
	// A second channel whose host does not answer.
	if _, _, err := s.AddChannel(ctx, ChannelSpec{Name: "gone", Kind: KindSlack, URL: "http://127.0.0.1:1/services/" + token}); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []string{"hook", "gone"} {
		if _, err := s.AddRule(ctx, RuleSpec{Events: []string{"*"}, Channel: ch}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Publish(ctx, Event{Kind: "backup.failed", Title: "b"}); err != nil {
		t.Fatal(err)
	}
	drain(t, s)
	testErr := s.TestChannel(ctx, "gone")
	if testErr == nil {
		t.Fatal("test of a dead channel succeeded")
	}
	chans, _ := s.Channels(ctx)
	dump, _ := json.Marshal(chans)
	dels, _ := s.Deliveries(ctx, DeliveryFilter{Channel: "hook", Limit: 10})
	dump2, _ := json.Marshal(dels)
	for what, text := range map[string]string{"logs": e.logs.String(), "channels": string(dump), "deliveries": string(dump2), "test error": testErr.Error()} {
		if strings.Contains(text, token) || strings.Contains(text, strings.TrimPrefix(gen, "whsec_")) {
			t.Errorf("%s leak a secret: %s", what, text)
		}
	}
	if !strings.Contains(string(dump), "HTTP 503") || !strings.Contains(e.logs.String(), "notification delivery failed") {
		t.Fatalf("the failure is not visible: %s", dump)
	}
	// The sealed configuration in the database is not plaintext.
	var raw []byte
	if err := e.st.Pool().QueryRow(ctx, "SELECT config FROM notify_channels WHERE name = 'hook'").Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(token)) {
		t.Fatal("channel config stored in plaintext")
	}
}

func TestDedupeAndResolve(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	s := e.service(t, true)
	rcv := newReceiver(t, testSecret)
	rcv.now = e.clk.Now
	if _, _, err := s.AddChannel(ctx, ChannelSpec{Name: "hook", Kind: KindWebhook, URL: rcv.URL, Secret: testSecret}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddRule(ctx, RuleSpec{Events: []string{"server.*"}, Channel: "hook"}); err != nil {
		t.Fatal(err)
	}
	srv := store.NewID()
	key := "server.offline:" + srv.String()
	off := Event{Kind: KindServerOffline, Level: Critical, Title: "web-1 offline", ServerID: &srv, DedupeKey: key}
	on := Event{Kind: KindServerOnline, Title: "web-1 online", ServerID: &srv, DedupeKey: key, Resolves: true}

	// Offline twice before delivery: one message, one unread.
	for i := 0; i < 2; i++ {
		if _, err := s.Publish(ctx, off); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := e.st.UnreadNotificationCount(ctx, e.admin); n != 1 {
		t.Fatalf("unread %d, want 1", n)
	}
	drain(t, s)
	if _, ids, _, _, _ := rcv.snapshot(); len(ids) != 1 {
		t.Fatalf("ids %v, want one offline", ids)
	}
	// Again within the window: merged.
	e.clk.Add(10 * time.Minute)
	if _, err := s.Publish(ctx, off); err != nil {
		t.Fatal(err)
	}
	drain(t, s)
	if _, ids, _, _, _ := rcv.snapshot(); len(ids) != 1 {
		t.Fatalf("ids %v, want the repeat merged", ids)
	}
	// Online resolves: sent (the offline was), and the inbox's offline is
	// closed.
	if _, err := s.Publish(ctx, on); err != nil {
		t.Fatal(err)
	}
	drain(t, s)
	_, ids, _, bodies, _ := rcv.snapshot()
	if len(ids) != 2 || !strings.Contains(string(bodies[1]), `"resolved":true`) {
		t.Fatalf("ids %v", ids)
	}
	unread, _ := e.st.Notifications(ctx, e.admin, store.NotificationFilter{UnreadOnly: true})
	if len(unread) != 1 || unread[0].Kind != KindServerOnline || unread[0].Level != store.NotifySuccess {
		t.Fatalf("unread %+v, want only the online one", unread)
	}
	// Offline then online before any delivery: neither is sent.
	e.clk.Add(2 * time.Hour)
	if _, err := s.Publish(ctx, off); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Publish(ctx, on); err != nil {
		t.Fatal(err)
	}
	drain(t, s)
	if _, ids, _, _, _ := rcv.snapshot(); len(ids) != 2 {
		t.Fatalf("ids %v, want the flap merged", ids)
	}
	// A resolve the channel never heard the start of is not sent.
	other := store.NewID()
	if _, err := s.Publish(ctx, Event{Kind: KindServerOnline, Title: "x", DedupeKey: "server.offline:" + other.String(), Resolves: true}); err != nil {
		t.Fatal(err)
	}
	drain(t, s)
	if _, ids, _, _, _ := rcv.snapshot(); len(ids) != 2 {
		t.Fatalf("ids %v", ids)
	}
}

func TestRateLimitHoldsAndDigests(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	s := e.service(t, true)
	rcv := newReceiver(t, testSecret)
	rcv.now = e.clk.Now
	if _, _, err := s.AddChannel(ctx, ChannelSpec{Name: "hook", Kind: KindWebhook, URL: rcv.URL, Secret: testSecret, RateLimitPerHour: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddRule(ctx, RuleSpec{Events: []string{"*"}, Channel: "hook"}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := s.Publish(ctx, Event{Kind: "backup.failed", Title: "backup " + strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	drain(t, s)
	if n, err := s.SendDigests(ctx); err != nil || n != 0 {
		t.Fatalf("digest within the full hour: %d %v", n, err)
	}
	if _, ids, _, _, _ := rcv.snapshot(); len(ids) != 2 {
		t.Fatalf("ids %v, want 2 within the limit", ids)
	}
	e.clk.Add(time.Hour + time.Second)
	if n, err := s.SendDigests(ctx); err != nil || n != 1 {
		t.Fatalf("digests %d %v", n, err)
	}
	if n, err := s.SendDigests(ctx); err != nil || n != 0 {
		t.Fatalf("second digest pass %d %v", n, err)
	}
	drain(t, s)
	_, ids, _, bodies, _ := rcv.snapshot()
	if len(ids) != 3 {
		t.Fatalf("ids %v", ids)
	}
	var p WebhookPayload
	_ = json.Unmarshal(bodies[2], &p)
	if p.Type != "notify.digest" || !strings.HasPrefix(p.Data.Title, "3 notifications held back") ||
		!strings.Contains(p.Data.Body, "backup 2") || !strings.Contains(p.Data.Body, "backup 4") {
		t.Fatalf("digest %+v", p)
	}
}

func TestEnsureDefaultsAndRetention(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	s := e.service(t, true)
	if err := s.EnsureDefaults(ctx, false); err != nil {
		t.Fatal(err)
	}
	if n, _ := e.st.CountNotifyChannelsOfKind(ctx, KindEmail); n != 0 {
		t.Fatal("email channel without SMTP")
	}
	for i := 0; i < 2; i++ {
		if err := s.EnsureDefaults(ctx, true); err != nil {
			t.Fatal(err)
		}
	}
	chans, _ := s.Channels(ctx)
	if len(chans) != 2 || chans[0].Name != "admins-email" || !chans[0].ToAdmins || chans[1].Name != "admins-inbox" {
		t.Fatalf("channels %+v", chans)
	}
	if _, err := s.Publish(ctx, Event{Kind: "certificate.expiring", Level: Warning, Title: "cert"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Publish(ctx, Event{Kind: KindDeploymentSucceeded, Title: "ok"}); err != nil {
		t.Fatal(err)
	}
	drain(t, s)
	if m := e.mail.MessagesTo("admin@example.test"); len(m) != 1 || m[0].Subject != "[Berth] cert" {
		t.Fatalf("admin mail %+v", m)
	}
	if n, _ := e.st.UnreadNotificationCount(ctx, e.admin); n != 1 {
		t.Fatalf("unread %d", n)
	}
	job := RetentionJob()
	if n, err := job.Run(ctx, e.st, e.clk.Now().Add(Retention-time.Hour)); err != nil || n != 0 {
		t.Fatalf("retention too early: %d %v", n, err)
	}
	if n, err := job.Run(ctx, e.st, e.clk.Now().Add(Retention+time.Hour)); err != nil || n != 3 {
		t.Fatalf("retention: %d %v, want 1 outbox row and 2 events", n, err)
	}
}

func TestTestChannel(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	s := e.service(t, true)
	rcv := newReceiver(t, testSecret)
	rcv.now = e.clk.Now
	if _, _, err := s.AddChannel(ctx, ChannelSpec{Name: "hook", Kind: KindWebhook, URL: rcv.URL, Secret: testSecret}); err != nil {
		t.Fatal(err)
	}
	if err := s.TestChannel(ctx, "hook"); err != nil {
		t.Fatal(err)
	}
	if err := s.TestChannel(ctx, "admins-inbox"); err != nil {
		t.Fatal(err)
	}
	if err := s.TestChannel(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown channel: %v", err)
	}
	_, ids, _, bodies, bad := rcv.snapshot()
	if len(ids) != 1 || bad != 0 || !strings.Contains(string(bodies[0]), `"type":"notify.test"`) {
		t.Fatalf("webhook test: %v %d", ids, bad)
	}
	inbox, _ := e.st.Notifications(ctx, e.admin, store.NotificationFilter{})
	if len(inbox) != 1 || inbox[0].Kind != "notify.test" {
		t.Fatalf("inbox %+v", inbox)
	}
	if c, _ := s.Channel(ctx, "hook"); c.LastDeliveredAt == nil {
		t.Fatal("test delivery not recorded")
	}
	// Signed with another secret: the receiver's library rejects it.
	if _, _, err := s.AddChannel(ctx, ChannelSpec{Name: "other", Kind: KindWebhook, URL: rcv.URL}); err != nil {
		t.Fatal(err)
	}
	if err := s.TestChannel(ctx, "other"); err == nil || !strings.Contains(err.Error(), "HTTP 400") {
		t.Fatalf("wrong secret: %v", err)
	}
	if _, _, _, _, bad := rcv.snapshot(); bad != 1 {
		t.Fatalf("bad signatures %d, want 1", bad)
	}
}
