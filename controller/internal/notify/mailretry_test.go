package notify

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
)

// An email message to several addresses whose mail server accepts one,
// refuses one for now (450) and one for good (550): the first attempt
// delivers to the accepted address only, the retry sends to the 450
// address only (nobody gets a second copy), the 550 address is never tried
// again and is recorded failed with the server's reply, and the message
// ends failed (a give-up for that address) with the others delivered:
// visible in the delivery list and on the channel.
func TestMailRetrySendsOnlyToRecipientsWithoutIt(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	s := e.service(t, true)
	const ok, busy, gone = "ok@example.test", "Busy@example.test", "gone@example.test"
	if _, _, err := s.AddChannel(ctx, ChannelSpec{Name: "ops", Kind: KindEmail, To: []string{ok, busy, gone}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddRule(ctx, RuleSpec{Events: []string{"deployment.*"}, Channel: "ops"}); err != nil {
		t.Fatal(err)
	}
	e.mail.Refuse(busy, 450, "mailbox busy, try again later", 1)
	e.mail.Refuse(gone, 550, "no such user here", 0)
	id, err := s.Publish(ctx, failedDeploy(store.NewID(), e.clk.Now()))
	if err != nil {
		t.Fatal(err)
	}
	count := func(want map[string]int) {
		t.Helper()
		for addr, n := range want {
			if got := len(e.mail.MessagesTo(addr)); got != n {
				t.Fatalf("%s got %d mails, want %d", addr, got, n)
			}
		}
	}
	row := func() store.NotifyOutbox {
		t.Helper()
		rows, err := e.st.NotifyOutboxForEvent(ctx, id)
		if err != nil || len(rows) != 1 {
			t.Fatalf("outbox rows %+v, %v", rows, err)
		}
		return rows[0]
	}

	// First attempt: ok@ has it, busy@ waits for a retry, gone@ is
	// refused for good.
	if n, err := s.DeliverDue(ctx, 10); err != nil || n != 1 {
		t.Fatalf("first pass: %d, %v", n, err)
	}
	count(map[string]int{ok: 1, busy: 0, gone: 0})
	r := row()
	if r.Status != "pending" || r.Attempts != 1 || len(r.DeliveredTo) != 1 || r.DeliveredTo[0] != ok {
		t.Fatalf("after the first attempt: status %s, attempts %d, delivered to %q", r.Status, r.Attempts, r.DeliveredTo)
	}
	if reply := r.RefusedTo[gone]; len(r.RefusedTo) != 1 || !strings.HasPrefix(reply, "550 ") || !strings.Contains(reply, "no such user here") {
		t.Fatalf("refused %q, want %s with the server's 550 reply", r.RefusedTo, gone)
	}
	if !strings.Contains(r.LastError, "mail to 1 of 3 recipients failed") || !strings.Contains(r.LastError, "450") || !strings.Contains(r.LastError, gone+": 550") {
		t.Fatalf("last error %q", r.LastError)
	}
	if !r.NextAttemptAt.After(e.clk.Now()) {
		t.Fatalf("retry due at %v, not after now %v (no backoff)", r.NextAttemptAt, e.clk.Now())
	}
	// Not due yet: nothing is sent before the backoff has passed.
	if n, err := s.DeliverDue(ctx, 10); err != nil || n != 0 {
		t.Fatalf("pass before the backoff: %d, %v", n, err)
	}

	// The retry: only busy@ is tried, and gets it.
	e.clk.Add(time.Hour + time.Minute)
	if n, err := s.DeliverDue(ctx, 10); err != nil || n != 1 {
		t.Fatalf("retry pass: %d, %v", n, err)
	}
	count(map[string]int{ok: 1, busy: 1, gone: 0})
	if n := e.mail.RcptCount(ok); n != 1 {
		t.Fatalf("ok@ was tried %d times, want once", n)
	}
	if n := e.mail.RcptCount(busy); n != 2 {
		t.Fatalf("busy@ was tried %d times, want twice (450, then accepted)", n)
	}
	if n := e.mail.RcptCount(gone); n != 1 {
		t.Fatalf("gone@ was tried %d times, want once (550 is final)", n)
	}
	got := e.mail.MessagesTo(busy)[0]
	if want := "<" + s.messageID(r.ID, busy) + ">"; got.Header.Get("Message-Id") != want {
		t.Fatalf("retry's Message-ID %q, want %q", got.Header.Get("Message-Id"), want)
	}
	r = row()
	if r.Status != "failed" || r.Attempts != 2 || r.DeliveredAt == nil || !slices.Equal(r.DeliveredTo, []string{busy, ok}) /* kept sorted */ {
		t.Fatalf("after the retry: status %s, attempts %d, delivered at %v to %q", r.Status, r.Attempts, r.DeliveredAt, r.DeliveredTo)
	}
	wantErr := "refused by the mail server: " + gone + ": " + r.RefusedTo[gone] + " (delivered to 2 of 3)"
	if r.LastError != wantErr {
		t.Fatalf("last error %q, want %q", r.LastError, wantErr)
	}

	// Ended: later passes send nothing to anyone.
	for range 3 {
		e.clk.Add(2 * time.Hour)
		drain(t, s)
	}
	count(map[string]int{ok: 1, busy: 1, gone: 0})
	if n := e.mail.RcptCount(gone); n != 1 {
		t.Fatalf("gone@ was tried %d times after the message ended", n)
	}

	// The delivery list and the channel show the give-up and the reply.
	ds, err := s.Deliveries(ctx, DeliveryFilter{Channel: "ops", Status: "failed"})
	if err != nil || len(ds) != 1 {
		t.Fatalf("failed deliveries %+v, %v", ds, err)
	}
	d := ds[0]
	if d.ID != r.ID || d.LastError != wantErr || d.DeliveredAt == nil || len(d.DeliveredTo) != 2 || d.RefusedTo[gone] != r.RefusedTo[gone] {
		t.Fatalf("delivery %+v", d)
	}
	c, err := s.Channel(ctx, "ops")
	if err != nil {
		t.Fatal(err)
	}
	if c.LastError != "gave up: "+wantErr || c.FailingSince == nil || c.GivenUp != 1 {
		t.Fatalf("channel: last error %q, failing since %v, given up %d", c.LastError, c.FailingSince, c.GivenUp)
	}
}

// A message whose only addresses are all refused for good ends failed at
// once, with no delivery time, and is not retried; one where every
// address has it is delivered. An address listed twice (in two
// spellings) gets one mail.
func TestMailAllRefusedEndsAtOnce(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	s := e.service(t, true)
	if _, _, err := s.AddChannel(ctx, ChannelSpec{Name: "dead", Kind: KindEmail, To: []string{"nobody@example.test"}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.AddChannel(ctx, ChannelSpec{Name: "twice", Kind: KindEmail, To: []string{"ada@example.test", "ADA@example.test"}}); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []string{"dead", "twice"} {
		if _, err := s.AddRule(ctx, RuleSpec{Events: []string{"deployment.*"}, Channel: ch}); err != nil {
			t.Fatal(err)
		}
	}
	e.mail.Refuse("nobody@example.test", 550, "mailbox disabled", 0)
	id, err := s.Publish(ctx, failedDeploy(store.NewID(), e.clk.Now()))
	if err != nil {
		t.Fatal(err)
	}
	drain(t, s)
	for range 3 {
		e.clk.Add(2 * time.Hour)
		drain(t, s)
	}
	if n := e.mail.RcptCount("nobody@example.test"); n != 1 {
		t.Fatalf("refused address tried %d times, want once", n)
	}
	if n := len(e.mail.MessagesTo("ada@example.test")); n != 1 {
		t.Fatalf("ada@ got %d mails, want 1", n)
	}
	rows, err := e.st.NotifyOutboxForEvent(ctx, id)
	if err != nil || len(rows) != 2 {
		t.Fatalf("rows %+v, %v", rows, err)
	}
	for _, r := range rows {
		c, _ := e.st.NotifyChannelByID(ctx, r.ChannelID)
		switch c.Name {
		case "dead":
			if r.Status != "failed" || r.Attempts != 1 || r.DeliveredAt != nil || len(r.DeliveredTo) != 0 ||
				!strings.Contains(r.LastError, "nobody@example.test: 550") || !strings.HasSuffix(r.LastError, "(delivered to 0 of 1)") {
				t.Fatalf("dead: %+v", r)
			}
		case "twice":
			if r.Status != "delivered" || r.Attempts != 1 || len(r.DeliveredTo) != 1 || len(r.RefusedTo) != 0 {
				t.Fatalf("twice: %+v", r)
			}
		}
	}
}
