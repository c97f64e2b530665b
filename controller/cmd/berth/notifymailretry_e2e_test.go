package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/berthhq/berth/controller/internal/mail/mailtest"
	"github.com/berthhq/berth/controller/internal/notify"
	"github.com/berthhq/berth/controller/internal/store"
)

// TestNotifyMailRetryOnlyToMissingRecipients: a real controller mails an
// event to three addresses through a real SMTP server that accepts one,
// refuses one once with 450 and one for good with 550. The accepted
// address gets it once, the 450 address gets it on the retry (and nobody a
// second copy), the 550 address is tried once and given up with the
// server's reply; `berth notify delivery list` (JSON and table) and
// `berth notify channel list` show it.
func TestNotifyMailRetryOnlyToMissingRecipients(t *testing.T) {
	t.Parallel()
	smtp := mailtest.Start(t)
	const ok, busy, gone = "ok@example.test", "busy@example.test", "gone@example.test"
	smtp.Refuse(busy, 450, "mailbox busy, try again later", 1)
	smtp.Refuse(gone, 550, "no such user here", 0)
	dataDir := shortDir(t)
	c := startController(t, dataDir, "--smtp-host", smtp.Host, "--smtp-port", strconv.Itoa(smtp.Port), "--smtp-tls", "none", "--smtp-from", mailtest.From)
	f := startFleetOn(t, &fleetEnv{c: c, dataDir: dataDir})
	if r := run(t, f.env, "notify", "channel", "add", "mail", "--kind", "email", "--to", ok+","+busy+","+gone); r.code != 0 {
		t.Fatalf("channel add: %+v", r)
	}
	if r := run(t, f.env, "notify", "rule", "add", "--events", "deployment.*", "--channel", "mail"); r.code != 0 {
		t.Fatalf("rule add: %+v", r)
	}

	// An event as a capability publishes it, in the controller's database.
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, fmt.Sprintf("host=%s user=berth dbname=berth sslmode=disable", filepath.Join(dataDir, "postgres", "run")))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := notify.Publish(ctx, store.New(pool, nil), notify.Event{Kind: notify.KindDeploymentFailed, Level: notify.Critical, Title: "Deploy of shop failed"}); err != nil {
		t.Fatal(err)
	}

	type delivery struct {
		Channel     string            `json:"channel"`
		Status      string            `json:"status"`
		Attempts    int               `json:"attempts"`
		LastError   string            `json:"last_error"`
		DeliveredAt *string           `json:"delivered_at"`
		DeliveredTo []string          `json:"delivered_to"`
		RefusedTo   map[string]string `json:"refused_to"`
	}
	list := func() []delivery {
		t.Helper()
		r := run(t, f.env, "notify", "delivery", "list", "--channel", "mail", "-o", "json")
		var ds []delivery
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &ds) != nil {
			t.Fatalf("delivery list: %+v", r)
		}
		return ds
	}
	// The first attempt: ok@ has it, busy@ waits, gone@ is refused.
	var ds []delivery
	waitFor(t, "the first attempt recorded", 60*time.Second, func() bool {
		ds = list()
		return len(ds) == 1 && ds[0].Attempts >= 1 && ds[0].LastError != ""
	})
	if d := ds[0]; d.Status == "pending" {
		if len(d.DeliveredTo) != 1 || d.DeliveredTo[0] != ok || !strings.HasPrefix(d.RefusedTo[gone], "550 ") || !strings.Contains(d.LastError, "450") {
			t.Fatalf("after the first attempt: %+v", d)
		}
	}
	// The retry (after the backoff): busy@ gets it; the message ends
	// failed for gone@ with the server's reply.
	waitFor(t, "the message ended", 120*time.Second, func() bool {
		ds = list()
		return len(ds) == 1 && ds[0].Status != "pending"
	})
	d := ds[0]
	want := "refused by the mail server: " + gone + ": " + d.RefusedTo[gone] + " (delivered to 2 of 3)"
	if d.Status != "failed" || d.Attempts != 2 || d.DeliveredAt == nil || strings.Join(d.DeliveredTo, ",") != busy+","+ok ||
		len(d.RefusedTo) != 1 || d.RefusedTo[gone] != "550 5.1.1 no such user here" || d.LastError != want {
		t.Fatalf("ended: %+v, want last error %q", d, want)
	}
	for addr, n := range map[string]int{ok: 1, busy: 1, gone: 0} {
		if got := len(smtp.MessagesTo(addr)); got != n {
			t.Errorf("%s got %d mails, want %d", addr, got, n)
		}
	}
	for addr, n := range map[string]int{ok: 1, busy: 2, gone: 1} {
		if got := smtp.RcptCount(addr); got != n {
			t.Errorf("%s tried %d times, want %d", addr, got, n)
		}
	}
	if r := run(t, f.env, "notify", "delivery", "list", "--status", "failed"); r.code != 0 || !strings.Contains(r.stdout, "refused by the mail server: "+gone+": 550") {
		t.Errorf("table: %+v", r)
	}
	var chans []struct {
		Name      string `json:"name"`
		LastError string `json:"last_error"`
		GivenUp   int    `json:"given_up"`
	}
	r := run(t, f.env, "notify", "channel", "list", "-o", "json")
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &chans) != nil {
		t.Fatalf("channel list: %+v", r)
	}
	found := false
	for _, ch := range chans {
		if ch.Name == "mail" {
			found = true
			if ch.GivenUp != 1 || ch.LastError != "gave up: "+want {
				t.Errorf("channel mail: %+v, want one given up and last error %q", ch, "gave up: "+want)
			}
		}
	}
	if !found {
		t.Errorf("channel mail not listed: %s", r.stdout)
	}
}
