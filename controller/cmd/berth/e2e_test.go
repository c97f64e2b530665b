package main_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/berthhq/berth/controller/internal/ca"
	"github.com/berthhq/berth/controller/internal/migrate"
	"github.com/berthhq/berth/controller/internal/testdb"
	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
)

var berthBin, agentBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "berthbin-")
	if err != nil {
		panic(err)
	}
	berthBin = filepath.Join(dir, "berth")
	out, err := exec.Command("go", "build", "-o", berthBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build berth: %v\n%s", err, out)
		os.Exit(1)
	}
	agentBin = filepath.Join(dir, "berth-agent")
	out, err = exec.Command("go", "build", "-o", agentBin, "github.com/berthhq/berth/agent/cmd/berth-agent").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build berth-agent: %v\n%s", err, out)
		os.Exit(1)
	}
	// The controller serves agent packages from agent-dist beside its binary.
	dist := filepath.Join(dir, "agent-dist")
	if err := os.MkdirAll(dist, 0o755); err != nil {
		panic(err)
	}
	for src, dst := range map[string]string{
		agentBin:                              "berth-agent-linux-" + runtime.GOARCH,
		"../../../agent/packaging/install.sh": "install.sh",
		"../../../agent/packaging/berth-agent.service": "berth-agent.service",
	} {
		b, err := os.ReadFile(src)
		if err != nil {
			panic(err)
		}
		if err := os.WriteFile(filepath.Join(dist, dst), b, 0o755); err != nil {
			panic(err)
		}
	}
	code := m.Run()
	testdb.Shutdown()
	os.RemoveAll(dir)
	os.Exit(code)
}

// shortDir is a data dir with a path short enough for a unix socket and
// reachable by the postgres user.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bd-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Make sure no postmaster outlives a failed test.
		pgctl(t, filepath.Join(dir, "data", "postgres", "data"), "stop", "-m", "immediate")
		os.RemoveAll(dir)
	})
	return filepath.Join(dir, "data")
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, env []string, args ...string) result {
	t.Helper()
	return runIn(t, env, "", strings.Join(args, " "), args...)
}

// syncBuffer is a bytes.Buffer safe to read while a process writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) Bytes() []byte { return []byte(s.String()) }

type controller struct {
	cmd      *exec.Cmd
	httpAddr string
	grpcAddr string
	logs     *syncBuffer
	done     chan error
}

// upstreamRange picks 20 ports, below the ephemeral range, whose first
// one is free now; each controller of a test run gets its own.
func upstreamRange(t *testing.T) string {
	t.Helper()
	for range 100 {
		low := 20000 + 20*mrand.IntN(600)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", low))
		if err != nil {
			continue
		}
		l.Close()
		return fmt.Sprintf("%d-%d", low, low+19)
	}
	t.Fatal("no free port range for upstreams")
	return ""
}

func startController(t *testing.T, dataDir string, extra ...string) *controller {
	t.Helper()
	return startControllerAt(t, dataDir, freeAddr(t), freeAddr(t), extra...)
}

// startControllerAt starts a controller on given addresses (a restart keeps
// them, so agents find it again).
func startControllerAt(t *testing.T, dataDir, httpAddr, grpcAddr string, extra ...string) *controller {
	t.Helper()
	c := &controller{httpAddr: httpAddr, grpcAddr: grpcAddr, logs: &syncBuffer{}, done: make(chan error, 1)}
	// Apps' upstreams get ports of a range of this controller's own: tests
	// running side by side each have a controller whose first app would
	// otherwise get 10000, on the same host.
	args := append([]string{"serve", "--data-dir", dataDir, "--grpc-addr", c.grpcAddr, "--upstream-ports", upstreamRange(t)}, extra...)
	c.cmd = exec.Command(berthBin, args...)
	// The HTTP address comes from the environment to prove BERTH_* works.
	c.cmd.Env = append(os.Environ(), "BERTH_HTTP_ADDR="+c.httpAddr)
	c.cmd.Stdout = c.logs
	c.cmd.Stderr = c.logs
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.done <- c.cmd.Wait() }()
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			_ = c.cmd.Process.Kill()
			<-c.done
		}
		if t.Failed() {
			t.Logf("controller log:\n%s", c.logs.String())
		}
	})
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-c.done:
			t.Fatalf("controller exited early: %v\n%s", err, c.logs.String())
		default:
		}
		if code, _ := get(c.url("/healthz")); code == 200 {
			return c
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("controller not healthy in time\n%s", c.logs.String())
	return nil
}

func (c *controller) url(p string) string { return "http://" + c.httpAddr + p }

func (c *controller) stop(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	_ = c.cmd.Process.Signal(sig)
	select {
	case err := <-c.done:
		return err
	case <-time.After(60 * time.Second):
		t.Fatalf("controller did not exit after %v", sig)
		return nil
	}
}

func get(url string) (int, string) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// pgctl runs pg_ctl on the embedded cluster as the user that owns it.
func pgctl(t *testing.T, pgdata string, args ...string) string {
	t.Helper()
	if _, err := os.Stat(pgdata); err != nil {
		return ""
	}
	bin, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	pgCtl := "pg_ctl"
	if len(bin) > 0 {
		pgCtl = bin[len(bin)-1]
	}
	full := append([]string{"-D", pgdata, "-w"}, args...)
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		cmd = exec.Command("su", "postgres", "-s", "/bin/sh", "-c", pgCtl+" "+strings.Join(full, " "))
	} else {
		cmd = exec.Command(pgCtl, full...)
	}
	out, _ := cmd.CombinedOutput()
	return string(out)
}

func TestServeHealthVersionAndCleanShutdown(t *testing.T) {
	t.Parallel()
	dataDir := shortDir(t)
	c := startController(t, dataDir)

	code, body := get(c.url("/healthz"))
	if code != 200 || body != "ok\n" {
		t.Fatalf("healthz = %d %q", code, body)
	}
	code, body = get(c.url("/version"))
	var v struct {
		Version       string `json:"version"`
		SchemaVersion uint   `json:"schema_version"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &v) != nil || v.Version == "" {
		t.Fatalf("version = %d %q", code, body)
	}
	latest, err := migrate.LatestVersion()
	if err != nil || v.SchemaVersion != latest {
		t.Fatalf("schema_version = %d, want %d (%v)", v.SchemaVersion, latest, err)
	}

	// The admin API answers health without credentials, over TLS with the
	// controller CA, and refuses anything else without a token.
	caPEM, err := os.ReadFile(filepath.Join(dataDir, "ca.crt"))
	if err != nil {
		t.Fatalf("serve wrote no ca.crt: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.crt holds no certificate")
	}
	conn, err := grpc.NewClient(c.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(ca.ClientTLSConfig(pool, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := adminv1.NewAdminServiceClient(conn).GetHealth(ctx, &adminv1.GetHealthRequest{})
	if err != nil || !h.DatabaseOk {
		t.Fatalf("GetHealth = %v, %v", h, err)
	}
	if _, err := adminv1.NewAdminServiceClient(conn).ListServers(ctx, &adminv1.ListServersRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("ListServers without a token = %v, want Unauthenticated", err)
	}

	// Data dir and key file are private: nobody else may read or write them
	// (as root the data dir is traversable so the postgres user reaches its
	// cluster).
	for path, want := range map[string]os.FileMode{dataDir: 0o700, filepath.Join(dataDir, "encryption.keys"): 0o600, filepath.Join(dataDir, "postgres"): 0o700} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got&0o066 != 0 || got&0o700 != want&0o700 {
			t.Fatalf("%s: mode %v, want %v (at most traversable by others)", path, got, want)
		}
	}

	// A second controller on the same data dir is refused, not corrupting.
	r := run(t, nil, "serve", "--data-dir", dataDir, "--http-addr", freeAddr(t), "--grpc-addr", freeAddr(t))
	if r.code == 0 || !strings.Contains(r.stderr, "in use by another berth serve") {
		t.Fatalf("second serve: %+v", r)
	}

	// PostgreSQL down: healthz says so.
	pgdata := filepath.Join(dataDir, "postgres", "data")
	pgctl(t, pgdata, "stop", "-m", "fast")
	code, body = get(c.url("/healthz"))
	if code != 503 || strings.Contains(body, "postgres") {
		t.Fatalf("healthz with database down = %d %q", code, body)
	}

	// SIGTERM: clean exit, embedded PostgreSQL stopped.
	if err := c.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, c.logs.String())
	}
	if _, err := os.Stat(filepath.Join(pgdata, "postmaster.pid")); !os.IsNotExist(err) {
		t.Fatalf("postmaster still running after shutdown")
	}

	// Start again (PostgreSQL comes back with it), then SIGTERM stops both.
	c = startController(t, dataDir)
	if err := c.stop(t, syscall.SIGINT); err != nil {
		t.Fatalf("exit after SIGINT: %v", err)
	}
	if _, err := os.Stat(filepath.Join(pgdata, "postmaster.pid")); !os.IsNotExist(err) {
		t.Fatalf("postmaster still running after SIGINT shutdown")
	}

	// migrate status with --data-dir starts and stops the embedded cluster.
	r = run(t, nil, "migrate", "status", "--data-dir", dataDir)
	if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("version %d (clean)", latest)) {
		t.Fatalf("migrate status: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(pgdata, "postmaster.pid")); !os.IsNotExist(err) {
		t.Fatalf("migrate left the postmaster running")
	}
}

func TestKilledControllerRestarts(t *testing.T) {
	t.Parallel()
	dataDir := shortDir(t)
	c := startController(t, dataDir)
	_ = c.stop(t, syscall.SIGKILL)
	// The postmaster survived its controller; the next start handles it.
	pgdata := filepath.Join(dataDir, "postgres", "data")
	if out := pgctl(t, pgdata, "status"); !strings.Contains(out, "server is running") {
		t.Fatalf("expected the leftover postmaster to run: %s", out)
	}
	c = startController(t, dataDir)
	if code, _ := get(c.url("/healthz")); code != 200 {
		t.Fatal("not healthy after restart over a leftover postmaster")
	}
	if err := c.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit: %v", err)
	}
	if !strings.Contains(c.logs.String(), "left over") {
		t.Fatalf("no log line about the leftover postmaster:\n%s", c.logs.String())
	}
}

func oneLine(t *testing.T, r result) string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if len(lines) != 1 {
		t.Fatalf("want one line on stderr, got %d:\n%s", len(lines), r.stderr)
	}
	return lines[0]
}

func TestBadInputGivesOneClearLine(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"serve", "--bogus"}, "unknown flag: --bogus"},
		{"unknown command", []string{"frobnicate"}, "unknown command"},
		{"negative unreachable grace", []string{"serve", "--unreachable-grace", "-5s"}, "--unreachable-grace must not be negative"},
		{"short notify lease", []string{"serve", "--notify-lease", "10ms"}, "--notify-lease must be at least 1s"},
		{"bad upstream ports", []string{"serve", "--upstream-ports", "9000-80"}, "--upstream-ports: invalid argument: port range \"9000-80\""},
		{"migrate without database", []string{"migrate", "up"}, "pass --database-url or --data-dir"},
		{"migrate down bad N", []string{"migrate", "down", "zero", "--database-url", "postgres://x@127.0.0.1:1/x"}, "N must be a positive number"},
		{"migrate force beyond latest", []string{"migrate", "force", "9999", "--database-url", "postgres://x@127.0.0.1:1/x"}, "does not exist"},
		{"migrate force negative", []string{"migrate", "force", "--", "-3"}, "V must be a migration version"},
		{"missing data dir", []string{"migrate", "status", "--data-dir", "/nonexistent/berth"}, "data dir"},
		{"unreachable database", []string{"serve", "--data-dir", "", "--database-url", "postgres://berth:s3cret-pw@127.0.0.1:1/berth?connect_timeout=5"}, "connect to database"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.name == "unreachable database" {
				args[2] = shortDir(t)
				args = append(args, "--http-addr", freeAddr(t), "--grpc-addr", freeAddr(t))
			}
			r := run(t, nil, args...)
			if r.code == 0 {
				t.Fatalf("exit 0 for %v", args)
			}
			line := oneLine(t, r)
			if !strings.HasPrefix(line, "berth: ") || !strings.Contains(line, tc.want) {
				t.Fatalf("stderr %q does not contain %q", line, tc.want)
			}
			if strings.Contains(line, "s3cret-pw") {
				t.Fatalf("password leaked in error: %q", line)
			}
		})
	}
}

func tables(t *testing.T, dsn string) map[string]bool {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'public' AND c.relkind IN ('r','p') AND NOT c.relispartition`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, n := range names {
		out[n] = true
	}
	return out
}

func fkCount(t *testing.T, dsn string) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	// Count foreign keys on parent tables only (partitions clone them).
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
		WHERE con.contype = 'f' AND NOT c.relispartition AND con.conparentid = 0`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

var seedTables = []string{"users", "sessions", "password_reset_tokens", "login_attempts", "servers", "server_metrics",
	"git_credentials", "apps", "deployments", "domains", "backup_destinations", "backups", "backup_schedules",
	"security_events", "notifications", "activity_log"}

func TestMigrateUpDownUpAndDirty(t *testing.T) {
	t.Parallel()
	d := testdb.NewEmpty(t, false)
	latest, _ := migrate.LatestVersion()

	r := run(t, nil, "migrate", "up", "--database-url", d.DSN)
	if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("version %d (clean)", latest)) {
		t.Fatalf("up: %+v", r)
	}
	got := tables(t, d.DSN)
	for _, name := range seedTables {
		if !got[name] {
			t.Fatalf("table %s missing after up", name)
		}
	}
	fks := fkCount(t, d.DSN)
	if fks < 20 {
		t.Fatalf("only %d foreign keys after up", fks)
	}

	r = run(t, nil, "migrate", "down", "2", "--database-url", d.DSN)
	if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("version %d (clean)", versionBack(t, 2))) {
		t.Fatalf("down 2: %+v", r)
	}
	r = run(t, nil, "migrate", "down", "--database-url", d.DSN)
	if r.code != 0 || !strings.Contains(r.stdout, "version 0 (clean)") {
		t.Fatalf("down: %+v", r)
	}
	got = tables(t, d.DSN)
	delete(got, "schema_migrations")
	if len(got) != 0 {
		t.Fatalf("tables left after down to zero: %v", got)
	}

	// Through the environment variable this time.
	r = run(t, []string{"BERTH_DATABASE_URL=" + d.DSN}, "migrate", "up")
	if r.code != 0 {
		t.Fatalf("up again: %+v", r)
	}
	if n := fkCount(t, d.DSN); n != fks {
		t.Fatalf("foreign keys after up again = %d, want %d", n, fks)
	}

	// A dirty schema stops migrate and serve with a message naming the fix.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, d.DSN)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "UPDATE schema_migrations SET dirty = true"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	r = run(t, nil, "migrate", "up", "--database-url", d.DSN)
	if r.code == 0 || !strings.Contains(oneLine(t, r), "berth migrate force") {
		t.Fatalf("up on dirty: %+v", r)
	}
	r = run(t, nil, "serve", "--data-dir", shortDir(t), "--database-url", d.DSN, "--http-addr", freeAddr(t), "--grpc-addr", freeAddr(t))
	if r.code == 0 || !strings.Contains(r.stderr, "berth migrate force") {
		t.Fatalf("serve on dirty: %+v", r)
	}
	r = run(t, nil, "migrate", "force", fmt.Sprint(latest), "--database-url", d.DSN)
	if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("version %d (clean)", latest)) {
		t.Fatalf("force: %+v", r)
	}
}

// logLines reads JSON log lines (stdout is not a terminal in tests).
func TestServeLogsAreJSON(t *testing.T) {
	t.Parallel()
	c := startController(t, shortDir(t))
	if err := c.stop(t, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(c.logs.Bytes()))
	n := 0
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", sc.Text())
		}
		if m["msg"] == "berth controller listening" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("want one 'listening' line, got %d:\n%s", n, c.logs.String())
	}
}
