// Package migrate applies Berth's embedded schema migrations with
// golang-migrate (iofs source, pgx/v5 driver), used as a library.
//
// golang-migrate takes a PostgreSQL advisory lock around every run, so
// several controllers starting at once on one database apply each migration
// exactly once.
package migrate

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/golang-migrate/migrate/v4"
	pgxmigrate "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver

	"github.com/berthhq/berth/db"
)

// ErrDirty means a previous migration failed part-way. golang-migrate will not
// guess how far it got; a person must look and then force a version.
var ErrDirty = errors.New("database schema is dirty")

// Status is the schema's migration state.
type Status struct {
	Version uint // 0 when nothing is applied
	Dirty   bool
	Latest  uint // newest migration shipped in this binary
}

// Migrator runs migrations against one database.
type Migrator struct {
	db *sql.DB
	m  *migrate.Migrate
}

// Open connects to dsn (a pgx connection string or URL) for migrating.
func Open(ctx context.Context, dsn string, log *slog.Logger) (*Migrator, error) {
	sqlDB, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	if err := sqlDB.PingContext(ctx); err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	src, err := iofs.New(db.Migrations, db.MigrationsDir)
	if err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("load embedded migrations: %w", err)
	}
	drv, err := pgxmigrate.WithInstance(sqlDB, &pgxmigrate.Config{})
	if err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("migration driver: %w", err)
	}
	m, err := migrate.NewWithInstance("iofs", src, "pgx5", drv)
	if err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("migrator: %w", err)
	}
	if log != nil {
		m.Log = logger{log}
	}
	return &Migrator{db: sqlDB, m: m}, nil
}

// Close releases the connection.
func (mg *Migrator) Close() error {
	srcErr, dbErr := mg.m.Close()
	return errors.Join(srcErr, dbErr)
}

// Status reports the applied version and the newest shipped one.
func (mg *Migrator) Status() (Status, error) {
	latest, err := LatestVersion()
	if err != nil {
		return Status{}, err
	}
	v, dirty, err := mg.m.Version()
	if errors.Is(err, migrate.ErrNilVersion) {
		return Status{Latest: latest}, nil
	}
	if err != nil {
		return Status{}, fmt.Errorf("read schema version: %w", err)
	}
	return Status{Version: v, Dirty: dirty, Latest: latest}, nil
}

func (mg *Migrator) checkClean() error {
	st, err := mg.Status()
	if err != nil {
		return err
	}
	if st.Dirty {
		return DirtyError(st.Version)
	}
	return nil
}

// DirtyError explains a dirty schema and names the fix.
func DirtyError(version uint) error {
	return fmt.Errorf("%w: migration %d failed part-way; inspect the database, repair or undo that migration's changes by hand, then run `berth migrate force %d` (if it fully applied) or `berth migrate force %d` (if it did not) and start again",
		ErrDirty, version, version, version-1)
}

// Up applies every pending migration.
func (mg *Migrator) Up() error {
	if err := mg.checkClean(); err != nil {
		return err
	}
	if err := mg.m.Up(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return fmt.Errorf("migrate up: %w", err)
	}
	return nil
}

// Down reverts n migrations; n <= 0 reverts all of them.
func (mg *Migrator) Down(n int) error {
	if err := mg.checkClean(); err != nil {
		return err
	}
	var err error
	if n <= 0 {
		err = mg.m.Down()
	} else {
		err = mg.m.Steps(-n)
	}
	if err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return fmt.Errorf("migrate down: %w", err)
	}
	return nil
}

// Force records version as applied and clean without running anything; the
// way out of a dirty state once a person has repaired the schema.
func (mg *Migrator) Force(version int) error {
	if version < -1 {
		return fmt.Errorf("force: version must be >= 0 (or -1 for none), got %d", version)
	}
	if err := mg.m.Force(version); err != nil {
		return fmt.Errorf("migrate force %d: %w", version, err)
	}
	return nil
}

// LatestVersion is the newest migration embedded in this binary.
func LatestVersion() (uint, error) {
	src, err := iofs.New(db.Migrations, db.MigrationsDir)
	if err != nil {
		return 0, fmt.Errorf("load embedded migrations: %w", err)
	}
	defer src.Close()
	v, err := src.First()
	if err != nil {
		return 0, fmt.Errorf("first migration: %w", err)
	}
	for {
		next, err := src.Next(v)
		if errors.Is(err, fs.ErrNotExist) {
			return v, nil
		}
		if err != nil {
			return 0, fmt.Errorf("next migration after %d: %w", v, err)
		}
		v = next
	}
}

// UpDSN is the one-call form the controller uses on start.
func UpDSN(ctx context.Context, dsn string, log *slog.Logger) (Status, error) {
	mg, err := Open(ctx, dsn, log)
	if err != nil {
		return Status{}, err
	}
	defer mg.Close()
	if err := mg.Up(); err != nil {
		return Status{}, err
	}
	return mg.Status()
}

type logger struct{ l *slog.Logger }

func (l logger) Printf(format string, v ...any) {
	l.l.Info(fmt.Sprintf(format, v...), "component", "migrate")
}
func (l logger) Verbose() bool { return false }
