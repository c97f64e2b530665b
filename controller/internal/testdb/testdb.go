// Package testdb gives each test a fresh, migrated PostgreSQL database.
//
// It uses BERTH_TEST_DATABASE_URL when set; otherwise it starts one private
// cluster per test process from the installed server binaries (fsync off,
// unix socket only) and stops it when the tests end. Migrations run once into
// a template database named after a hash of the migration files, and every
// test clones that template, which takes milliseconds instead of re-running
// the schema.
//
// A package that uses testdb needs a TestMain that calls Main:
//
//	func TestMain(m *testing.M) { testdb.Main(m) }
package testdb

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/berthhq/berth/controller/internal/migrate"
	"github.com/berthhq/berth/controller/internal/pgembed"
	"github.com/berthhq/berth/db"
)

// EnvURL names the variable that points the tests at an existing server.
const EnvURL = "BERTH_TEST_DATABASE_URL"

var (
	setupOnce sync.Once
	setupErr  error
	cluster   *pgembed.Cluster
	tmpDir    string
	adminDSN  string // connects to a maintenance database on the server
	dbDSN     func(name string) string
	tplName   string

	// createMu serialises CREATE DATABASE ... TEMPLATE in this process:
	// PostgreSQL refuses a clone while another session is connected to the
	// template, and serialising is cheaper than retrying.
	createMu sync.Mutex
)

// Main runs the package's tests and stops the private cluster afterwards.
func Main(m *testing.M) {
	code := m.Run()
	Shutdown()
	os.Exit(code)
}

// Shutdown stops the private cluster, if this process started one.
func Shutdown() {
	if cluster != nil {
		_ = cluster.Stop(context.Background())
		cluster = nil
	}
	if tmpDir != "" {
		_ = os.RemoveAll(tmpDir)
		tmpDir = ""
	}
}

// Cluster returns the private cluster, or nil when the tests use
// BERTH_TEST_DATABASE_URL. Fault tests use it to restart PostgreSQL.
func Cluster(t testing.TB) *pgembed.Cluster {
	t.Helper()
	setup(t)
	return cluster
}

func setup(t testing.TB) {
	t.Helper()
	setupOnce.Do(func() { setupErr = doSetup() })
	if setupErr != nil {
		t.Fatalf("testdb: %v", setupErr)
	}
}

func doSetup() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if url := os.Getenv(EnvURL); url != "" {
		if _, err := pgx.ParseConfig(url); err != nil {
			return fmt.Errorf("parse %s: %w", EnvURL, err)
		}
		adminDSN = url
		dbDSN = func(name string) string { return replaceDatabase(url, name) }
	} else {
		// A short path under /tmp: unix socket paths are limited to 107
		// bytes, and the postgres user must be able to reach it.
		dir, err := os.MkdirTemp("", "berthpg-")
		if err != nil {
			return err
		}
		tmpDir = dir
		if err := os.Chmod(dir, 0o755); err != nil {
			return err
		}
		c, err := pgembed.Start(ctx, pgembed.Config{Dir: dir + "/pg", Fast: true, Database: "postgres"})
		if err != nil {
			return err
		}
		cluster = c
		adminDSN = c.DSNFor("postgres")
		dbDSN = c.DSNFor
	}
	return buildTemplate(ctx)
}

// replaceDatabase swaps the database name in a URL or keyword/value DSN.
func replaceDatabase(dsn, name string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		// URL form: the path is the database.
		scheme, rest, _ := strings.Cut(dsn, "://")
		hostPart, query, hasQuery := strings.Cut(rest, "?")
		host, _, _ := strings.Cut(hostPart, "/")
		out := scheme + "://" + host + "/" + name
		if hasQuery {
			out += "?" + query
		}
		return out
	}
	return dsn + " dbname=" + name
}

// migrationsHash names the template so that changing any migration builds a
// new template instead of reusing a stale one.
func migrationsHash() (string, error) {
	h := sha256.New()
	err := fs.WalkDir(db.Migrations, db.MigrationsDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(db.Migrations, path)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", path, len(b))
		h.Write(b)
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))[:16], err
}

func buildTemplate(ctx context.Context) error {
	hash, err := migrationsHash()
	if err != nil {
		return fmt.Errorf("hash migrations: %w", err)
	}
	tplName = "berth_tpl_" + hash
	conn, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(ctx)
	// Several test processes may share BERTH_TEST_DATABASE_URL: build the
	// template under a server-wide lock.
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(7234001)"); err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	defer conn.Exec(context.Background(), "SELECT pg_advisory_unlock(7234001)") //nolint:errcheck
	var ready bool
	err = conn.QueryRow(ctx, "SELECT datistemplate FROM pg_database WHERE datname = $1", tplName).Scan(&ready)
	if err == nil && ready {
		return nil
	}
	if err == nil { // left half-built by a crashed process
		if _, err := conn.Exec(ctx, "DROP DATABASE "+pgx.Identifier{tplName}.Sanitize()+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("drop stale template: %w", err)
		}
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{tplName}.Sanitize()); err != nil {
		return fmt.Errorf("create template: %w", err)
	}
	if _, err := migrate.UpDSN(ctx, dbDSN(tplName), nil); err != nil {
		return fmt.Errorf("migrate template: %w", err)
	}
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{tplName}.Sanitize()+" WITH is_template true"); err != nil {
		return fmt.Errorf("mark template: %w", err)
	}
	return nil
}

// DB is one test's database.
type DB struct {
	Name string
	DSN  string
	Pool *pgxpool.Pool
}

// New creates a fresh migrated database for t and drops it when t ends.
func New(t testing.TB) *DB {
	t.Helper()
	d := NewEmpty(t, true)
	pool, err := pgxpool.New(context.Background(), d.DSN)
	if err != nil {
		t.Fatalf("testdb: pool: %v", err)
	}
	t.Cleanup(pool.Close)
	d.Pool = pool
	return d
}

// NewEmpty creates a database for t; migrated says whether it starts from the
// migrated template or empty (for migration tests). It has no pool.
func NewEmpty(t testing.TB, migrated bool) *DB {
	t.Helper()
	setup(t)
	ctx := context.Background()
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	name := "berth_test_" + hex.EncodeToString(rnd[:])
	src := "template0"
	if migrated {
		src = tplName
	}
	conn, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		t.Fatalf("testdb: connect: %v", err)
	}
	defer conn.Close(ctx)
	createMu.Lock()
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE "+pgx.Identifier{src}.Sanitize())
	createMu.Unlock()
	if err != nil {
		t.Fatalf("testdb: create database: %v", err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), adminDSN)
		if err != nil {
			return // the cluster is gone; nothing left to drop
		}
		defer c.Close(context.Background())
		_, _ = c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	})
	return &DB{Name: name, DSN: dbDSN(name)}
}
