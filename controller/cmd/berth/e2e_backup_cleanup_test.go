package main_test

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// backupShow is `berth backup show -o json` with the cleanup fields and
// the backup's tasks.
type backupShow struct {
	backupRow
	CleanupStatus string       `json:"cleanup_status"`
	CleanupError  string       `json:"cleanup_error"`
	Tasks         []backupTask `json:"tasks"`
}

// kill -9 of the agent in the middle of a backup's upload to a local
// directory leaves the upload's temporary file there (the agent never ran
// its cleanup). After the agent's restart the backup ends failed, the
// controller's cleanup task runs on the agent and the directory ends with
// no temporary file and no object of that backup, while another backup's
// object stays.
func TestBackupCleanupAfterKilledAgent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setupDeploy(t)
	run := filepath.Join(e.dataDir, "postgres", "run")
	e.sqlExec(t, "berth", "CREATE DATABASE shopdata")
	e.sqlExec(t, "shopdata",
		"CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, payload bytea NOT NULL)",
		"INSERT INTO items (name, payload) SELECT 'n-' || g, sha256(g::text::bytea) FROM generate_series(1, 2000) g")
	e.createApp(t, "shop", "https://git.example.com/shop.git", "")
	url := fmt.Sprintf("postgres://berth:%s@/shopdata?host=%s", backupDBPassword, run)
	if r := e.cli(t, "", "app", "env", "set", "shop", "DATABASE_URL="+url); r.code != 0 {
		t.Fatalf("env set: %+v", r)
	}
	vault := filepath.Join(e.base, "vault")
	if err := os.MkdirAll(vault, 0o700); err != nil {
		t.Fatal(err)
	}
	var dest map[string]any
	if code := e.backupJSON(t, "", &dest, "backup", "destination", "add", "vault", "--kind", "local", "--path", vault); code != 0 {
		t.Fatalf("destination add: %d %v", code, dest)
	}
	runArgs := []string{"backup", "run", "shop", "--destination", "vault", "--kind", "postgres", "--source", "shopdata", "--connection-env", "DATABASE_URL"}
	show := func(id string) backupShow {
		t.Helper()
		var b backupShow
		if code := e.backupJSON(t, "", &b, "backup", "show", id); code != 0 {
			t.Fatalf("show %s: %d", id, code)
		}
		return b
	}
	// files lists the destination's files (relative paths).
	files := func() []string {
		var out []string
		_ = filepath.WalkDir(vault, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				rel, _ := filepath.Rel(vault, p)
				out = append(out, rel)
			}
			return nil
		})
		return out
	}
	partials := func() []string {
		var out []string
		for _, f := range files() {
			if strings.Contains(f, ".partial-") {
				out = append(out, f)
			}
		}
		return out
	}

	// The neighbour: a stored backup whose object must survive.
	var kept backupRow
	if code := e.backupJSON(t, "", &kept, append(runArgs, "--follow")...); code != 0 || kept.Status != "succeeded" {
		t.Fatalf("first backup: %d %+v", code, kept)
	}
	if b := show(kept.ID); b.CleanupStatus != "" {
		t.Fatalf("a succeeded backup has cleanup %q", b.CleanupStatus)
	}

	// Hold the next dump: a session holds a lock pg_dump waits for, so
	// the upload's temporary file is open when the agent dies.
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s user=berth dbname=shopdata sslmode=disable", run))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE items IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	var b backupRow
	if code := e.backupJSON(t, "", &b, runArgs...); code != 0 {
		t.Fatalf("backup run: %d %+v", code, b)
	}
	waitFor(t, "the upload's temporary file", time.Minute, func() bool { return len(partials()) == 1 })
	waitFor(t, "the backup to be running", time.Minute, func() bool { return show(b.ID).Status == "running" })
	left := partials()[0]
	if !strings.HasPrefix(left, filepath.Join("shop", b.ID)) {
		t.Fatalf("temporary file %s is not the backup's (%s)", left, b.ID)
	}

	_ = e.agent.cmd.Process.Kill()
	<-e.agent.done
	// pg_dump, in a process group of its own, outlives the agent: let it
	// run into its closed pipe.
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if got := partials(); len(got) != 1 || got[0] != left {
		t.Fatalf("after the kill the destination holds %v, want the dead upload's %s", got, left)
	}

	e.agent = e.startAgent(t)
	var got backupShow
	waitFor(t, "the interrupted backup to end", 2*time.Minute, func() bool {
		got = show(b.ID)
		return got.Status != "running" && got.Status != "dispatched" && got.Status != "queued"
	})
	if got.Status != "failed" || got.ObjectKey != "" {
		t.Fatalf("backup across an agent kill: %+v", got)
	}
	var cleanup *backupTask
	for i := range got.Tasks {
		if got.Tasks[i].Kind == "cleanup" {
			if cleanup != nil {
				t.Fatalf("two cleanup tasks: %+v", got.Tasks)
			}
			cleanup = &got.Tasks[i]
		}
	}
	if cleanup == nil || got.CleanupStatus == "" {
		t.Fatalf("no cleanup queued for the failed backup: %+v", got)
	}
	// The cleanup task's end, followed as its events arrive: exit 0 is
	// success.
	if r := e.cli(t, "", "backup", "logs", cleanup.ID, "--follow"); r.code != 0 {
		t.Fatalf("cleanup task: %+v", r)
	}
	got = show(b.ID)
	if got.CleanupStatus != "done" || got.CleanupError != "" {
		t.Fatalf("cleanup after its task succeeded: %q %q", got.CleanupStatus, got.CleanupError)
	}
	if p := partials(); len(p) != 0 {
		t.Fatalf("temporary files left after the cleanup: %v", p)
	}
	if fs := files(); len(fs) != 1 || fs[0] != kept.ObjectKey {
		t.Fatalf("the destination holds %v, want only the stored backup's %s", fs, kept.ObjectKey)
	}
	logs := e.cli(t, "", "backup", "logs", cleanup.ID).stdout
	if !strings.Contains(logs, "removed 1 leftover") {
		t.Fatalf("the cleanup's log does not say what it removed:\n%s", logs)
	}
	if r := e.cli(t, "", "backup", "show", b.ID); r.code != 0 || !strings.Contains(r.stdout, "cleanup") || !strings.Contains(r.stdout, "done") {
		t.Fatalf("backup show does not show the cleanup: %+v", r)
	}
}
