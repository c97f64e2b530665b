// Package pgembed runs a private PostgreSQL cluster from the server binaries
// installed on the machine, for the controller's embedded default and for the
// test harness.
//
// The cluster listens only on a unix socket inside its own directory (no TCP),
// so the filesystem permissions of that directory are its access control: the
// directory is mode 0700 and owned by the OS user that runs PostgreSQL, and
// local connections use trust authentication. initdb refuses to run as root,
// so when the controller runs as root the cluster runs as the `postgres`
// system user instead.
//
// pg_ctl starts the postmaster detached from the controller. A controller
// killed with SIGKILL therefore leaves its postmaster running; Start notices
// a live postmaster in the data directory and stops it before starting a
// fresh one, so a crash never blocks the next start.
package pgembed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// maxSocketPath is the usable length of sun_path on Linux (108 bytes with a
// trailing NUL), which bounds where the socket directory can live.
const maxSocketPath = 107

// Config says where and how to run a cluster.
type Config struct {
	// Dir holds the cluster: Dir/data (PGDATA), Dir/run (socket), Dir/postgres.log.
	Dir string
	// Superuser is the database role initdb creates. Default "berth".
	Superuser string
	// Database is created on first start when missing. Default "berth".
	Database string
	// Port names the socket file (.s.PGSQL.<port>); nothing listens on TCP.
	Port int
	// Fast trades durability for speed (fsync off and friends): tests only.
	Fast bool
	// BinDir overrides the directory of initdb/pg_ctl/postgres.
	BinDir string
	// Logger receives progress messages. Default slog.Default().
	Logger *slog.Logger
	// Adopt uses a postmaster that is already running in Dir (a live `berth
	// serve`) instead of stopping it, and leaves it running on Stop. CLI
	// commands set it; the daemon, which holds the data dir lock and so knows
	// any running postmaster is a leftover, does not.
	Adopt bool
}

func (c *Config) checkAndSetDefaults() error {
	if c.Dir == "" {
		return errors.New("pgembed: Dir is required")
	}
	abs, err := filepath.Abs(c.Dir)
	if err != nil {
		return fmt.Errorf("pgembed: resolve %s: %w", c.Dir, err)
	}
	c.Dir = abs
	if c.Superuser == "" {
		c.Superuser = "berth"
	}
	if c.Database == "" {
		c.Database = "berth"
	}
	if c.Port == 0 {
		c.Port = 5432
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.BinDir == "" {
		dir, err := FindBinDir()
		if err != nil {
			return err
		}
		c.BinDir = dir
	}
	sock := filepath.Join(c.socketDir(), ".s.PGSQL."+strconv.Itoa(c.Port))
	if len(sock) > maxSocketPath {
		return fmt.Errorf("pgembed: socket path %s is %d bytes, longer than the %d a unix socket allows: use a shorter --data-dir", sock, len(sock), maxSocketPath)
	}
	return nil
}

func (c *Config) dataDir() string   { return filepath.Join(c.Dir, "data") }
func (c *Config) socketDir() string { return filepath.Join(c.Dir, "run") }
func (c *Config) logFile() string   { return filepath.Join(c.Dir, "postgres.log") }

// Cluster is a running private PostgreSQL.
type Cluster struct {
	cfg     Config
	cred    *syscall.Credential // nil when running as ourselves
	adopted bool                // someone else's postmaster: never stop it
}

// FindBinDir locates the PostgreSQL server binaries: the directory of
// `initdb` on PATH, else the newest /usr/lib/postgresql/*/bin (Debian keeps
// them off PATH).
func FindBinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if _, err := os.Stat(filepath.Join(filepath.Dir(p), "pg_ctl")); err == nil {
			return filepath.Dir(p), nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(matches, func(i, j int) bool { return pgMajor(matches[i]) > pgMajor(matches[j]) })
	if len(matches) > 0 {
		return filepath.Dir(matches[0]), nil
	}
	return "", errors.New("pgembed: PostgreSQL server binaries not found (initdb, pg_ctl): install them (Debian: apt-get install postgresql) or pass --database-url")
}

func pgMajor(initdbPath string) int {
	// /usr/lib/postgresql/<major>/bin/initdb
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdbPath))))
	return n
}

// Start initialises the cluster on first use, stops a postmaster left behind
// by a crashed controller, starts PostgreSQL and makes sure the database
// exists. The returned Cluster must be stopped with Stop.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if err := cfg.checkAndSetDefaults(); err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg}
	if os.Geteuid() == 0 {
		cred, err := postgresCredential()
		if err != nil {
			return nil, err
		}
		c.cred = cred
	}
	if err := c.prepareDirs(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(cfg.dataDir(), "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		if err := c.initdb(ctx); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("pgembed: %w", err)
	}
	if c.running(ctx) && cfg.Adopt {
		c.adopted = true
		return c, c.ensureDatabase(ctx)
	}
	if c.running(ctx) {
		// A postmaster owns this data directory but we did not start it: a
		// previous controller died without stopping it. Stop it rather than
		// adopt it, so this process starts from a known configuration.
		cfg.Logger.Warn("stopping a postmaster left over from a previous run", "dir", cfg.dataDir())
		if err := c.pgctl(ctx, "stop", "-D", cfg.dataDir(), "-m", "fast", "-w", "-t", "60"); err != nil {
			return nil, fmt.Errorf("pgembed: stop leftover postmaster: %w", err)
		}
	}
	if err := c.start(ctx); err != nil {
		return nil, err
	}
	if err := c.ensureDatabase(ctx); err != nil {
		_ = c.Stop(context.Background())
		return nil, err
	}
	return c, nil
}

func postgresCredential() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgembed: running as root needs the postgres system user (initdb refuses root): %w", err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func (c *Cluster) prepareDirs() error {
	for _, d := range []string{c.cfg.Dir, c.cfg.socketDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("pgembed: create %s: %w", d, err)
		}
		if err := os.Chmod(d, 0o700); err != nil {
			return fmt.Errorf("pgembed: chmod %s: %w", d, err)
		}
		if c.cred != nil {
			if err := os.Chown(d, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
				return fmt.Errorf("pgembed: chown %s: %w", d, err)
			}
		}
	}
	if c.cred != nil {
		// The postgres user must be able to walk down to Dir. Say so plainly
		// instead of letting initdb fail with a bare "permission denied".
		probe := exec.Command("test", "-x", c.cfg.Dir)
		probe.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
		if err := probe.Run(); err != nil {
			return fmt.Errorf("pgembed: the postgres system user cannot reach %s: make every parent directory traversable (chmod o+x) or use a data dir elsewhere", c.cfg.Dir)
		}
	}
	return nil
}

func (c *Cluster) initdb(ctx context.Context) error {
	c.cfg.Logger.Info("initialising embedded PostgreSQL", "dir", c.cfg.dataDir())
	out, err := c.run(ctx, filepath.Join(c.cfg.BinDir, "initdb"),
		"-D", c.cfg.dataDir(), "-U", c.cfg.Superuser, "-E", "UTF8", "--locale=C",
		// Trust is safe here only because the sole listener is a socket in
		// a 0700 directory: the filesystem decides who may connect.
		"--auth-local=trust", "--auth-host=reject", "--no-instructions")
	if err != nil {
		return fmt.Errorf("pgembed: initdb: %w: %s", err, lastLines(out, 5))
	}
	return nil
}

func (c *Cluster) start(ctx context.Context) error {
	opts := []string{
		"-k", c.cfg.socketDir(),
		"-p", strconv.Itoa(c.cfg.Port),
		"-c", "listen_addresses=",
		"-c", "unix_socket_permissions=0700",
	}
	if c.cfg.Fast {
		opts = append(opts, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=300")
	}
	err := c.pgctl(ctx, "start", "-D", c.cfg.dataDir(), "-l", c.cfg.logFile(), "-w", "-t", "60", "-o", strings.Join(opts, " "))
	if err != nil {
		log, _ := os.ReadFile(c.cfg.logFile())
		return fmt.Errorf("pgembed: start: %w: %s", err, lastLines(log, 5))
	}
	return nil
}

func (c *Cluster) running(ctx context.Context) bool {
	// pg_ctl status exits 0 only when a live postmaster owns the directory;
	// a stale postmaster.pid from a dead one reports "no server running".
	return c.pgctl(ctx, "status", "-D", c.cfg.dataDir()) == nil
}

func (c *Cluster) ensureDatabase(ctx context.Context) error {
	psql := filepath.Join(c.cfg.BinDir, "psql")
	if _, err := os.Stat(psql); err != nil {
		psql = "psql"
	}
	args := []string{"-h", c.cfg.socketDir(), "-p", strconv.Itoa(c.cfg.Port), "-U", c.cfg.Superuser, "-d", "postgres", "-tAq", "-v", "ON_ERROR_STOP=1"}
	out, err := c.run(ctx, psql, append(args, "-c", "SELECT 1 FROM pg_database WHERE datname = '"+c.cfg.Database+"'")...)
	if err != nil {
		return fmt.Errorf("pgembed: check database: %w: %s", err, lastLines(out, 3))
	}
	if strings.TrimSpace(string(out)) == "1" {
		return nil
	}
	out, err = c.run(ctx, psql, append(args, "-c", `CREATE DATABASE "`+c.cfg.Database+`"`)...)
	if err != nil {
		return fmt.Errorf("pgembed: create database: %w: %s", err, lastLines(out, 3))
	}
	return nil
}

// Stop shuts PostgreSQL down with a fast shutdown (active transactions roll
// back, everything committed is on disk).
func (c *Cluster) Stop(ctx context.Context) error {
	if c.adopted {
		return nil
	}
	if err := c.pgctl(ctx, "stop", "-D", c.cfg.dataDir(), "-m", "fast", "-w", "-t", "60"); err != nil {
		return fmt.Errorf("pgembed: stop: %w", err)
	}
	return nil
}

// Restart stops and starts the cluster; tests use it to check that the
// controller rides out a database restart.
func (c *Cluster) Restart(ctx context.Context) error {
	if err := c.Stop(ctx); err != nil {
		return err
	}
	return c.start(ctx)
}

// DSN is the connection string for the cluster's database.
func (c *Cluster) DSN() string { return c.DSNFor(c.cfg.Database) }

// DSNFor is the connection string for another database in the cluster.
func (c *Cluster) DSNFor(database string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", c.cfg.socketDir(), c.cfg.Port, c.cfg.Superuser, database)
}

// URL is DSN in URL form (postgres://...), for tools that want a URL.
func (c *Cluster) URL() string {
	return fmt.Sprintf("postgres://%s@/%s?host=%s&port=%d&sslmode=disable", c.cfg.Superuser, c.cfg.Database, c.cfg.socketDir(), c.cfg.Port)
}

func (c *Cluster) pgctl(ctx context.Context, args ...string) error {
	out, err := c.run(ctx, filepath.Join(c.cfg.BinDir, "pg_ctl"), args...)
	if err != nil {
		return fmt.Errorf("%w: %s", err, lastLines(out, 3))
	}
	return nil
}

func (c *Cluster) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = c.cfg.Dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "PGCONNECT_TIMEOUT=10")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	// pg_ctl's postmaster must outlive a context cancel; WaitDelay keeps a
	// wedged child from hanging us forever.
	cmd.WaitDelay = 5 * time.Second
	return cmd.CombinedOutput()
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
