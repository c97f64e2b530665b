package main_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

type scheduleRow struct {
	ID        string `json:"id"`
	App       string `json:"app"`
	Cron      string `json:"cron"`
	Timezone  string `json:"timezone"`
	Keep      int    `json:"keep"`
	Verify    bool   `json:"verify"`
	Enabled   bool   `json:"enabled"`
	NextRunAt any    `json:"next_run_at"`
}

type scheduledBackup struct {
	backupRow
	ScheduleID   string `json:"schedule_id"`
	ScheduledFor string `json:"scheduled_for"`
	Held         bool   `json:"held"`
	TriggeredBy  string `json:"triggered_by"`
	DeleteError  string `json:"delete_error"`
}

func (e *deployEnv) scheduleBackups(t *testing.T, scheduleID string) []scheduledBackup {
	t.Helper()
	var all []scheduledBackup
	if code := e.backupJSON(t, "", &all, "backup", "list", "--app", "shop", "--limit", "1000"); code != 0 {
		t.Fatalf("backup list: %d", code)
	}
	var out []scheduledBackup
	for _, b := range all {
		if b.ScheduleID == scheduleID {
			out = append(out, b)
		}
	}
	return out
}

// Backup schedules through the real binaries: bad input refused; a
// schedule runs on the controller and verifies each backup; retention
// deletes the objects, then the rows, and keeps the newest verified;
// with the controller killed the agent runs the due ticks itself from the
// schedule it holds and, once the controller is back, each of those runs
// is stored once and no tick runs a second time.
//
// The schedules use cron's "@every 2s" descriptor (the one parser of
// every Berth schedule reads it): real ticks in seconds, awaited by
// polling the outcome, never by sleeping.
func TestBackupSchedules(t *testing.T) {
	t.Parallel()
	e := setupDeploy(t)
	e.createApp(t, "shop", "https://git.example.com/shop.git", "")
	src := filepath.Join(e.base, "shared")
	for name, data := range map[string]string{"a.txt": "alpha\n", "sub/b.txt": strings.Repeat("beta\n", 1000)} {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	vault := filepath.Join(e.base, "vault")
	if err := os.MkdirAll(vault, 0o700); err != nil {
		t.Fatal(err)
	}
	if r := e.cli(t, "", "backup", "destination", "add", "vault", "--kind", "local", "--path", vault); r.code != 0 {
		t.Fatalf("destination add: %+v", r)
	}

	// Bad input: a clear error each, nothing stored.
	base := []string{"backup", "schedule", "add", "shop", "--destination", "vault", "--kind", "directory", "--source", src}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--cron", "0 25 * * *", "--keep", "3"}, "--cron"},
		{[]string{"--cron", "0 3 * * *", "--timezone", "Mars/Olympus", "--keep", "3"}, "--timezone"},
		{[]string{"--cron", "0 3 * * *", "--keep", "0"}, "--keep"},
		{[]string{"--cron", "0 3 * * *", "--keep", "-2"}, "--keep"},
	} {
		if r := e.cli(t, "", append(append([]string{}, base...), c.args...)...); r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%v: %+v", c.args, r)
		}
	}
	if r := e.cli(t, "", "backup", "schedule", "add", "shop", "--destination", "nowhere", "--kind", "directory", "--source", src,
		"--cron", "0 3 * * *", "--keep", "3"); r.code == 0 || !strings.Contains(r.stderr, "nowhere") {
		t.Errorf("unknown destination: %+v", r)
	}
	var list []scheduleRow
	if code := e.backupJSON(t, "", &list, "backup", "schedule", "list"); code != 0 || len(list) != 0 {
		t.Fatalf("schedules after bad input: %v", list)
	}
	// Unauthorised: a write token cannot add a schedule (its retention
	// deletes backups); a read token lists them.
	for _, scope := range []string{"write", "read"} {
		r := e.cli(t, "", "token", "issue", "sched-"+scope, "--scope", scope, "-o", "json")
		var tok struct {
			Token string `json:"token"`
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &tok) != nil {
			t.Fatalf("token issue: %+v", r)
		}
		env := append(e.env[:len(e.env):len(e.env)], "BERTH_TOKEN="+tok.Token)
		if r := run(t, env, append(append([]string{}, base...), "--cron", "0 3 * * *", "--keep", "3")...); r.code == 0 || !strings.Contains(r.stderr, "PermissionDenied") {
			t.Fatalf("%s token adds a schedule: %+v", scope, r)
		}
		if r := run(t, env, "backup", "schedule", "list", "-o", "json"); r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
			t.Fatalf("%s token lists schedules: %+v", scope, r)
		}
	}

	// A schedule on the controller: each backup verified; keep 2.
	var sc scheduleRow
	if code := e.backupJSON(t, "", &sc, append(append([]string{}, base...), "--cron", "@every 2s", "--keep", "2", "--verify")...); code != 0 ||
		sc.ID == "" || !sc.Verify || !sc.Enabled || sc.Keep != 2 || sc.Timezone != "UTC" {
		t.Fatalf("schedule add: %d %+v", code, sc)
	}
	// Retention prunes while it runs (keep 2), so count every verified
	// backup ever seen.
	verified := map[string]bool{}
	waitFor(t, "four verified scheduled backups", 3*time.Minute, func() bool {
		for _, b := range e.scheduleBackups(t, sc.ID) {
			if b.Status == "succeeded" && b.VerifiedAt != nil {
				verified[b.ID] = true
			}
		}
		return len(verified) >= 4
	})
	var off scheduleRow
	if code := e.backupJSON(t, "", &off, "backup", "schedule", "disable", sc.ID); code != 0 || off.Enabled {
		t.Fatalf("disable: %d %+v", code, off)
	}
	// Retention: the newest two succeeded stay (and the newest verified,
	// one of them); the others' objects go, then their rows.
	var kept []scheduledBackup
	waitFor(t, "retention to prune to two", 3*time.Minute, func() bool {
		kept = nil
		for _, b := range e.scheduleBackups(t, sc.ID) {
			if b.Status == "succeeded" {
				kept = append(kept, b)
			} else if b.Status == "queued" || b.Status == "dispatched" || b.Status == "running" {
				return false
			}
		}
		return len(kept) == 2
	})
	seenTick := map[string]bool{}
	for _, b := range kept {
		if b.Held || b.TriggeredBy != "schedule" || b.ScheduledFor == "" || seenTick[b.ScheduledFor] {
			t.Fatalf("scheduled backup %+v", b)
		}
		seenTick[b.ScheduledFor] = true
	}
	objects := func() []string {
		var out []string
		_ = filepath.Walk(vault, func(p string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() {
				rel, _ := filepath.Rel(vault, p)
				out = append(out, rel)
			}
			return nil
		})
		return out
	}
	waitFor(t, "the pruned objects to be deleted", time.Minute, func() bool { return len(objects()) == 2 })
	for _, b := range kept {
		if _, err := os.Stat(filepath.Join(vault, b.ObjectKey)); err != nil {
			t.Fatalf("kept backup's object: %v", err)
		}
	}
	if r := e.cli(t, "", "backup", "schedule", "remove", sc.ID); r.code != 0 {
		t.Fatalf("remove: %+v", r)
	}

	// The controller dies; the agent runs the due ticks itself.
	var held scheduleRow
	if code := e.backupJSON(t, "", &held, append(append([]string{}, base...), "--cron", "@every 2s", "--keep", "1000")...); code != 0 {
		t.Fatalf("schedule add: %d", code)
	}
	// The agent holds it once the controller sent it (after the add).
	waitFor(t, "the agent to hold the schedule", time.Minute, func() bool {
		b, err := os.ReadFile(filepath.Join(e.agentDir, "held-backups.json"))
		return err == nil && strings.Contains(string(b), held.ID)
	})
	_ = e.c.stop(t, syscall.SIGKILL)
	started := regexp.MustCompile(`"held backup run started while no controller is reachable","job":"([0-9A-Z]{26})"`)
	heldJobs := func() []string {
		var ids []string
		for _, m := range started.FindAllStringSubmatch(e.agent.logs.String(), -1) {
			ids = append(ids, m[1])
		}
		return ids
	}
	waitFor(t, "the agent to run two held ticks", 2*time.Minute, func() bool { return len(heldJobs()) >= 2 })
	e.c = startControllerAt(t, e.dataDir, e.c.httpAddr, e.c.grpcAddr, "--metrics-interval", "1s", "--heartbeat-interval", "1s")
	waitFor(t, "web-1 back online", time.Minute, func() bool {
		s := e.server(t, "web-1")
		return s != nil && s["status"] == "online"
	})
	if code := e.backupJSON(t, "", &off, "backup", "schedule", "disable", held.ID); code != 0 {
		t.Fatalf("disable: %d", code)
	}
	ran := heldJobs() // every held run the agent made, all reported by now or in flight
	var rows []scheduledBackup
	waitFor(t, "every held run stored and finished", 3*time.Minute, func() bool {
		rows = e.scheduleBackups(t, held.ID)
		byID := map[string]scheduledBackup{}
		for _, b := range rows {
			byID[b.ID] = b
		}
		for _, id := range ran {
			if b, ok := byID[id]; !ok || b.Status != "succeeded" {
				return false
			}
		}
		for _, b := range rows {
			if b.Status == "queued" || b.Status == "dispatched" || b.Status == "running" {
				return false
			}
		}
		return true
	})
	ticks := map[string]string{}
	heldN := 0
	for _, b := range rows {
		if prev, dup := ticks[b.ScheduledFor]; dup && b.Status != "canceled" {
			t.Fatalf("tick %s ran twice: %s and %s", b.ScheduledFor, prev, b.ID)
		}
		if b.Status != "canceled" {
			ticks[b.ScheduledFor] = b.ID
		}
		if b.Held {
			heldN++
			if _, err := os.Stat(filepath.Join(vault, b.ObjectKey)); err != nil {
				t.Fatalf("held run %s: object %v", b.ID, err)
			}
		}
	}
	if heldN < len(ran) {
		t.Fatalf("%d held rows for %d held runs: %+v", heldN, len(ran), rows)
	}
	// Reported once each: one activity entry and one stored result per run.
	for _, id := range ran {
		logs := e.cli(t, "", "backup", "logs", id).stdout
		if n := strings.Count(logs, "==> done"); n != 1 {
			t.Fatalf("held run %s: its log's end appears %d times:\n%s", id, n, logs)
		}
	}
	var acts []map[string]any
	if code := e.backupJSON(t, "", &acts, "activity", "--action", "backup.held_run_reported", "--limit", "200"); code != 0 {
		t.Fatalf("activity: %d", code)
	}
	reported := map[string]int{}
	for _, a := range acts {
		if a["action"] == "backup.held_run_reported" {
			reported[a["subject_id"].(string)]++
		}
	}
	for _, id := range ran {
		if reported[id] != 1 {
			t.Fatalf("held run %s reported %d times (%v)", id, reported[id], reported)
		}
	}
	// The agent's files never hold a destination secret in the clear.
	b, _ := os.ReadFile(filepath.Join(e.agentDir, "held-backups.json"))
	if strings.Contains(string(b), vault) {
		t.Fatal("held-backups.json holds the destination's settings in the clear")
	}
}
