package pgembed

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func tempDir(t *testing.T) string {
	t.Helper()
	// Short and reachable by the postgres user (unix socket path limit).
	dir, err := os.MkdirTemp("", "pgembed-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func query(t *testing.T, dsn, q string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	var s string
	if err := conn.QueryRow(ctx, q).Scan(&s); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return s
}

func TestStartStopRestartAndLeftover(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(tempDir(t), "pg")
	c, err := Start(ctx, Config{Dir: dir, Fast: true})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { _ = c.Stop(context.Background()) })

	if got := query(t, c.DSN(), "SELECT current_database()"); got != "berth" {
		t.Fatalf("database = %q, want berth", got)
	}
	// Only a unix socket: nothing listens on TCP.
	if got := query(t, c.DSN(), "SHOW listen_addresses"); got != "" {
		t.Fatalf("listen_addresses = %q, want empty", got)
	}
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("cluster dir mode = %v, %v; want 0700", st.Mode().Perm(), err)
	}
	execSQL(t, c.DSN(), "CREATE TABLE kept (v text)", "INSERT INTO kept VALUES ('x')")

	// A CLI command adopts the live postmaster and leaves it running.
	cli, err := Start(ctx, Config{Dir: dir, Adopt: true})
	if err != nil {
		t.Fatalf("adopt: %v", err)
	}
	if err := cli.Stop(ctx); err != nil {
		t.Fatalf("stop adopted: %v", err)
	}
	if got := query(t, c.DSN(), "SELECT v FROM kept"); got != "x" {
		t.Fatalf("after adopted stop: %q", got)
	}

	// A second daemon start finds the postmaster a crashed controller left
	// behind, stops it and starts afresh; data survives.
	pidBefore := postmasterPID(t, dir)
	c2, err := Start(ctx, Config{Dir: dir, Fast: true})
	if err != nil {
		t.Fatalf("start over leftover: %v", err)
	}
	if pidAfter := postmasterPID(t, dir); pidAfter == pidBefore {
		t.Fatalf("leftover postmaster %s was not replaced", pidBefore)
	}
	if got := query(t, c2.DSN(), "SELECT v FROM kept"); got != "x" {
		t.Fatalf("data lost across restart: %q", got)
	}
	if err := c2.Restart(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if got := query(t, c2.DSN(), "SELECT v FROM kept"); got != "x" {
		t.Fatalf("data lost across Restart: %q", got)
	}
	if err := c2.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "postmaster.pid")); !os.IsNotExist(err) {
		t.Fatalf("postmaster.pid still present after Stop: %v", err)
	}
}

func execSQL(t *testing.T, dsn string, stmts ...string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

func postmasterPID(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid"))
	if err != nil {
		t.Fatalf("read postmaster.pid: %v", err)
	}
	return strings.SplitN(string(b), "\n", 2)[0]
}

func TestConfigErrors(t *testing.T) {
	if _, err := Start(context.Background(), Config{}); err == nil || !strings.Contains(err.Error(), "Dir is required") {
		t.Fatalf("empty dir: %v", err)
	}
	long := "/tmp/" + strings.Repeat("d", 120)
	_, err := Start(context.Background(), Config{Dir: long})
	if err == nil || !strings.Contains(err.Error(), "shorter --data-dir") {
		t.Fatalf("long dir: %v", err)
	}
	_, err = Start(context.Background(), Config{Dir: tempDir(t) + "/pg", BinDir: "/nonexistent"})
	if err == nil {
		t.Fatal("bad bin dir: want error")
	}
}
