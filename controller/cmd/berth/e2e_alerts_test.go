package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// alertReceiver is a loopback webhook receiver that verifies the Standard
// Webhooks signature with the specification's library and keeps each
// verified message's type, title and webhook-id.
type alertReceiver struct {
	*httptest.Server
	mu     sync.Mutex
	secret string
	got    []alertMsg
	bad    int
}

type alertMsg struct {
	id, typ, title string
}

func newAlertReceiver(t *testing.T) *alertReceiver {
	r := &alertReceiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
		r.mu.Lock()
		defer r.mu.Unlock()
		wh, err := standardwebhooks.NewWebhook(r.secret)
		if err != nil || wh.Verify(body, req.Header) != nil {
			r.bad++
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		var m struct {
			Type string `json:"type"`
			Data struct {
				Title string `json:"title"`
			} `json:"data"`
		}
		_ = json.Unmarshal(body, &m)
		r.got = append(r.got, alertMsg{id: req.Header.Get("webhook-id"), typ: m.Type, title: m.Data.Title})
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.Close)
	return r
}

// count is how many verified messages of typ name rule.
func (r *alertReceiver) count(typ, rule string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.got {
		if m.typ == typ && strings.HasPrefix(m.title, rule+":") || m.typ == typ && strings.HasPrefix(m.title, rule+" resolved") {
			n++
		}
	}
	return n
}

// startAgentEnv is startAgent with extra environment.
func startAgentEnv(t *testing.T, dir string, env ...string) *agentProc {
	t.Helper()
	p := &agentProc{logs: &syncBuffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command(agentBin, "run", "--data-dir", dir, "--app-dirs", os.TempDir())
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", p.logs.String())
		}
	})
	return p
}

// TestDiskAndOfflineAlertsEndToEnd: real controller and agent processes
// over mutual TLS. The agent reports a real 8 MiB tmpfs (shown to it as a
// device-backed filesystem through HOST_PROC_MOUNTINFO, since agents leave
// tmpfs out of a host's disks; the figures are statfs's on the real mount)
// that the test fills with dd. A rule "disk > 50% for 15s" on that mount:
// a spike the agent saw above 50% and then below fires nothing; a fill that
// stays fires alert.firing once after the duration (the webhook receiver
// and the inbox each see it once), and removing the file resolves it once.
// A controller restart while it fires neither fires it again nor forgets
// it. Stopping the agent fires the offline rule once, and its return
// resolves it once.
func TestDiskAndOfflineAlertsEndToEnd(t *testing.T) {
	t.Parallel()
	dataDir := shortDir(t)
	c := startController(t, dataDir, "--metrics-interval", "1s", "--heartbeat-interval", "1s", "--start-grace", "1s", "--allow-private-webhook-targets")
	f := startFleetOn(t, &fleetEnv{c: c, dataDir: dataDir})
	rcv := newAlertReceiver(t)

	var ch map[string]any
	r := run(t, f.env, "notify", "channel", "add", "hook", "--kind", "webhook", "--url", rcv.URL+"/in", "-o", "json")
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &ch) != nil {
		t.Fatalf("channel add: %+v", r)
	}
	rcv.mu.Lock()
	rcv.secret, _ = ch["webhook_secret"].(string)
	rcv.mu.Unlock()
	if r := run(t, f.env, "notify", "rule", "add", "--events", "alert.*", "--channel", "hook"); r.code != 0 {
		t.Fatalf("rule add: %+v", r)
	}

	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs on %s (the test needs root): %v: %s", mnt, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	procDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(procDir, "mountinfo"), []byte("29 1 259:77 / "+mnt+" rw - ext4 /dev/berth-e2e-tmpfs rw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	agentEnv := "HOST_PROC_MOUNTINFO=" + filepath.Join(procDir, "mountinfo")

	a := f.addServer(t, "disk-1")
	dir := filepath.Join(t.TempDir(), "disk-1")
	if r := enrollAgent(t, c.grpcAddr, a.Token, a.CAPin, dir); r.code != 0 {
		t.Fatalf("enroll: %+v", r)
	}
	ag := startAgentEnv(t, dir, agentEnv)
	waitFor(t, "online", 30*time.Second, func() bool { s := f.server(t, "disk-1"); return s != nil && s["status"] == "online" })

	var rule map[string]any
	r = run(t, f.env, "alert", "add", "tmp-full", "--metric", "disk", "--above", "50", "--for", "15s", "--mount", mnt,
		"--server", "disk-1", "--level", "critical", "-o", "json")
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &rule) != nil || rule["above"] != 50.0 || rule["resolve_below"] != 45.0 || rule["mount"] != mnt {
		t.Fatalf("alert add: %+v", r)
	}
	if r := run(t, f.env, "alert", "add", "tmp-full", "--metric", "cpu", "--above", "50"); r.code == 0 || !strings.Contains(r.stderr, "AlreadyExists") {
		t.Fatalf("duplicate alert: %+v", r)
	}

	ctx := context.Background()
	dsn := fmt.Sprintf("host=%s user=berth dbname=berth sslmode=disable", filepath.Join(dataDir, "postgres", "run"))
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { conn.Close(ctx) }()
	// latest is the newest stored sample of the tmpfs: its time and df's
	// use percent.
	latest := func() (time.Time, float64) {
		var at time.Time
		var pct float64
		err := conn.QueryRow(ctx, `SELECT m.recorded_at, 100.0 * (d->>'used')::float8 / ((d->>'used')::float8 + (d->>'avail')::float8)
			FROM server_metrics m JOIN servers s ON s.id = m.server_id, jsonb_array_elements(m.disks) d
			WHERE s.name = 'disk-1' AND d->>'mount' = $1 ORDER BY m.recorded_at DESC LIMIT 1`, mnt).Scan(&at, &pct)
		if err != nil && err != pgx.ErrNoRows {
			t.Fatal(err)
		}
		return at, pct
	}
	fill := func() {
		t.Helper()
		out, err := exec.Command("dd", "if=/dev/zero", "of="+filepath.Join(mnt, "fill"), "bs=1M", "count=6").CombinedOutput()
		if err != nil {
			t.Fatalf("dd: %v: %s", err, out)
		}
	}
	empty := func() {
		t.Helper()
		if err := os.Remove(filepath.Join(mnt, "fill")); err != nil {
			t.Fatal(err)
		}
	}
	var seenAt time.Time
	waitSample := func(what string, ok func(float64) bool) time.Time {
		t.Helper()
		after := seenAt
		waitFor(t, what, 60*time.Second, func() bool {
			at, pct := latest()
			if at.After(after) && ok(pct) {
				seenAt = at
				return true
			}
			return false
		})
		return seenAt
	}
	waitSample("a first sample of the tmpfs", func(p float64) bool { return p < 45 })

	// A spike: the agent sees it above 50%, then below 45%.
	fill()
	spikeStart := waitSample("the spike in a sample", func(p float64) bool { return p > 50 })
	empty()
	spikeEnd := waitSample("the spike's end in a sample", func(p float64) bool { return p < 45 })
	t.Logf("spike seen from %s to %s", spikeStart.Format(time.TimeOnly+".000"), spikeEnd.Format(time.TimeOnly+".000"))

	// A fill that stays fires once, after 15 s.
	fill()
	waitFor(t, "alert.firing at the webhook", 90*time.Second, func() bool { return rcv.count("alert.firing", "tmp-full") > 0 })
	r = run(t, f.env, "alert", "show", "tmp-full", "-o", "json")
	var shown struct {
		Firing []struct {
			Server       string    `json:"server"`
			Mount        string    `json:"mount"`
			PendingSince time.Time `json:"pending_since"`
			Since        time.Time `json:"since"`
			Value        float64   `json:"value"`
		} `json:"firing"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &shown) != nil || len(shown.Firing) != 1 {
		t.Fatalf("alert show: %+v", r)
	}
	fr := shown.Firing[0]
	if fr.Server != "disk-1" || fr.Mount != mnt || fr.Value <= 50 || fr.Since.Sub(fr.PendingSince) < 15*time.Second || !fr.PendingSince.After(spikeEnd) {
		t.Fatalf("firing %+v: want disk-1 %s above 50%% for 15s, pending since after the spike ended at %s", fr, mnt, spikeEnd)
	}
	if r := run(t, f.env, "alert", "list"); r.code != 0 || !strings.Contains(r.stdout, "disk-1:"+mnt+" since") {
		t.Fatalf("alert list does not show where it fires: %+v", r)
	}

	// A controller restart neither fires it again nor forgets it: samples
	// still above after the restart add nothing, and emptying the disk
	// then resolves it.
	conn.Close(ctx)
	if err := c.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("controller stop: %v", err)
	}
	c = startControllerAt(t, dataDir, c.httpAddr, c.grpcAddr, "--metrics-interval", "1s", "--heartbeat-interval", "1s", "--start-grace", "1s", "--allow-private-webhook-targets")
	if conn, err = pgx.Connect(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	waitSample("a sample above after the restart", func(p float64) bool { return p > 50 })
	waitSample("another sample above after the restart", func(p float64) bool { return p > 50 })
	if n := rcv.count("alert.firing", "tmp-full"); n != 1 {
		t.Fatalf("after the restart the webhook has %d firing messages, want 1", n)
	}
	if r := run(t, f.env, "alert", "show", "tmp-full", "-o", "json"); r.code != 0 || json.Unmarshal([]byte(r.stdout), &shown) != nil || len(shown.Firing) != 1 {
		t.Fatalf("alert show after the restart: %+v", r)
	}

	empty()
	waitFor(t, "alert.resolved at the webhook", 60*time.Second, func() bool { return rcv.count("alert.resolved", "tmp-full") > 0 })

	// Offline: the agent stops; the rule fires once; back, it resolves once.
	if r := run(t, f.env, "alert", "add", "disk-1-gone", "--metric", "offline", "--for", "2s", "--server", "disk-1"); r.code != 0 {
		t.Fatalf("offline alert add: %+v", r)
	}
	_ = ag.cmd.Process.Signal(syscall.SIGTERM)
	<-ag.done
	waitFor(t, "offline alert.firing at the webhook", 90*time.Second, func() bool { return rcv.count("alert.firing", "disk-1-gone") > 0 })
	startAgentEnv(t, dir, agentEnv)
	waitFor(t, "offline alert.resolved at the webhook", 90*time.Second, func() bool { return rcv.count("alert.resolved", "disk-1-gone") > 0 })

	// Every message once: the receiver's, the events', the inbox's.
	// Waiting for one more sample after the agent's return lets a wrong
	// second transition show up.
	waitSample("a sample after the return", func(float64) bool { return true })
	rcv.mu.Lock()
	got, bad := append([]alertMsg(nil), rcv.got...), rcv.bad
	rcv.mu.Unlock()
	ids := map[string]bool{}
	var kinds []string
	for _, m := range got {
		ids[m.id] = true
		kinds = append(kinds, m.typ+" "+strings.SplitN(m.title, ":", 2)[0])
	}
	if bad != 0 || len(got) != 4 || len(ids) != 4 || rcv.count("alert.firing", "tmp-full") != 1 || rcv.count("alert.resolved", "tmp-full") != 1 ||
		rcv.count("alert.firing", "disk-1-gone") != 1 || rcv.count("alert.resolved", "disk-1-gone") != 1 {
		t.Fatalf("webhook got %v (%d refused), want firing and resolved once for each rule", kinds, bad)
	}
	var events, inboxFiring, inboxUnreadFiring int64
	if err := conn.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM notify_events WHERE kind LIKE 'alert.%'),
		(SELECT count(*) FROM notifications WHERE kind = 'alert.firing'),
		(SELECT count(*) FROM notifications WHERE kind = 'alert.firing' AND read_at IS NULL)`).Scan(&events, &inboxFiring, &inboxUnreadFiring); err != nil {
		t.Fatal(err)
	}
	if events != 4 || inboxFiring != 2 || inboxUnreadFiring != 0 {
		t.Fatalf("events %d (want 4), inbox firing %d (want 2, one admin), unread firing %d (want 0: resolved closes them)", events, inboxFiring, inboxUnreadFiring)
	}
	r = run(t, f.env, "notifications", "-o", "json")
	if r.code != 0 || strings.Count(r.stdout, `"kind": "alert.firing"`) != 2 || strings.Count(r.stdout, `"kind": "alert.resolved"`) != 2 {
		t.Fatalf("berth notifications: %+v", r)
	}
	if r := run(t, f.env, "alert", "remove", "tmp-full"); r.code != 0 {
		t.Fatalf("alert remove: %+v", r)
	}
	if r := run(t, f.env, "alert", "show", "tmp-full"); r.code == 0 || !strings.Contains(r.stderr, "NotFound") {
		t.Fatalf("show removed: %+v", r)
	}
	r = run(t, f.env, "activity", "-o", "json")
	if strings.Count(r.stdout, "alert_rule.created") != 2 || !strings.Contains(r.stdout, "alert_rule.deleted") {
		t.Errorf("activity misses the alert rule changes: %s", r.stdout)
	}
}
