package main_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// PostgreSQL goes away under a running backup and the backup ends while
// it is down: the agent's result cannot be stored then. Once PostgreSQL is
// back, the result arrives, once: the backup is succeeded (not stuck
// running, not failed for a lost agent), its object verifies, and its log
// ends once.
func TestBackupAcrossPostgresRestart(t *testing.T) {
	t.Parallel()
	e := setupDeploy(t)
	e.createApp(t, "shop", "https://git.example.com/shop.git", "")
	src := filepath.Join(e.base, "uploads")
	if err := os.MkdirAll(src, 0o750); err != nil {
		t.Fatal(err)
	}
	for i, data := range []string{"alpha\n", strings.Repeat("beta\n", 5000)} {
		if err := os.WriteFile(filepath.Join(src, "f"+string(rune('0'+i))), []byte(data), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	gate := newS3Gate()
	endpoint, be := fakeS3Gated(t, gate, "berth-backups")
	var dest map[string]any
	if code := e.backupJSON(t, s3Secret+"\n", &dest, "backup", "destination", "add", "s3", "--kind", "s3", "--endpoint", endpoint,
		"--bucket", "berth-backups", "--path-style", "--access-key-id", s3AccessKey, "--secret-access-key-stdin"); code != 0 {
		t.Fatalf("destination add: %d %v", code, dest)
	}
	var b backupRow
	if code := e.backupJSON(t, "", &b, "backup", "run", "shop", "--destination", "s3", "--kind", "directory", "--source", src); code != 0 {
		t.Fatalf("backup run: %d %+v", code, b)
	}
	select {
	case <-gate.entered:
	case <-time.After(2 * time.Minute):
		t.Fatal("the backup's upload never reached the S3 server")
	}
	show := func(id string) backupRow {
		var r backupRow
		if code := e.backupJSON(t, "", &r, "backup", "show", id); code != 0 {
			t.Fatalf("show %s: %d", id, code)
		}
		return r
	}
	waitFor(t, "the backup to be running", time.Minute, func() bool { return show(b.ID).Status == "running" })

	// PostgreSQL stops; the upload completes and the agent journals the
	// job's result while nothing can store it.
	pgdata := filepath.Join(e.dataDir, "postgres", "data")
	pgctl(t, pgdata, "stop", "-m", "fast")
	gate.release()
	jobDir := filepath.Join(e.agentDir, "jobs", b.ID)
	waitFor(t, "the agent to finish the backup", 2*time.Minute, func() bool {
		ev, err := os.ReadFile(filepath.Join(jobDir, "events.log"))
		return err == nil && strings.Contains(string(ev), `"type":"result"`)
	})
	if _, err := be.HeadObject("berth-backups", "shop/"+b.ID+".tar.zst.age"); err != nil {
		t.Fatalf("the object is not stored: %v", err)
	}
	// pg_ctl restart of a stopped cluster starts it with the options the
	// controller gave it (postmaster.opts); its output goes to the
	// cluster's log as the controller's start sends it (a postmaster
	// holding pg_ctl's stdout would keep the test waiting).
	pgctl(t, pgdata, "restart", "-t", "120", "-l", filepath.Join(e.dataDir, "postgres", "postgres.log"))
	// Right after the restart a request may still meet a connection of
	// the old server and be answered Unavailable (retryable): asked again.
	var got backupRow
	waitFor(t, "the backup's result to be stored", 3*time.Minute, func() bool {
		r := e.cli(t, "", "backup", "show", b.ID, "-o", "json")
		if r.code != 0 {
			if !strings.Contains(r.stderr, "Unavailable") {
				t.Fatalf("backup show after the restart: %+v", r)
			}
			return false
		}
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
			t.Fatalf("backup show: %v: %+v", err, r)
		}
		return got.Status != "running" && got.Status != "dispatched" && got.Status != "queued"
	})
	if got.Status != "succeeded" || got.SizeBytes <= 0 || got.ObjectKey == "" {
		t.Fatalf("backup across a PostgreSQL restart: %+v", got)
	}
	// The same for the next requests: the pool may hold more than one
	// connection of the old server.
	cli := func(args ...string) result {
		var r result
		waitFor(t, strings.Join(args[:2], " ")+" answered", time.Minute, func() bool {
			r = e.cli(t, "", args...)
			if r.code != 0 && strings.Contains(r.stderr, "Unavailable") {
				return false
			}
			return true
		})
		return r
	}
	var task backupTask
	r := cli("backup", "verify", b.ID, "--follow", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &task); err != nil || r.code != 0 || task.Status != "succeeded" {
		t.Fatalf("verify after a PostgreSQL restart: %v %+v %+v", err, r, task)
	}
	if logs := cli("backup", "logs", b.ID).stdout; strings.Count(logs, "==> done") != 1 {
		t.Fatalf("the log's end appears %d times:\n%s", strings.Count(logs, "==> done"), logs)
	}
}
