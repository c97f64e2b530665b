package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"github.com/berthhq/berth/controller/internal/pgembed"
)

// Database is where the controller's PostgreSQL lives: an external server
// given by URL, or the embedded cluster in the data dir.
type Database struct {
	DSN     string
	cluster *pgembed.Cluster
}

// Close stops the embedded cluster when this process started it.
func (d *Database) Close(ctx context.Context) error {
	if d.cluster == nil {
		return nil
	}
	return d.cluster.Stop(ctx)
}

// Cluster returns the embedded cluster, nil for an external database.
func (d *Database) Cluster() *pgembed.Cluster { return d.cluster }

// OpenDatabase resolves the database for a command. With url set it is used
// as is. Otherwise the embedded cluster in dataDir/postgres is started; adopt
// says a live postmaster there belongs to a running `berth serve` and must be
// used and left alone (CLI commands), rather than treated as a leftover.
func OpenDatabase(ctx context.Context, dataDir, url string, adopt bool, log *slog.Logger) (*Database, error) {
	if url != "" {
		return &Database{DSN: url}, nil
	}
	if dataDir == "" {
		return nil, errors.New("no database: pass --database-url or --data-dir")
	}
	if os.Geteuid() == 0 {
		// PostgreSQL runs as the postgres user, who must pass through the
		// data dir to reach its own 0700 cluster directory. Traverse only:
		// nothing in the data dir can be listed, and every secret file in it
		// is 0600.
		if err := os.Chmod(dataDir, 0o711); err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
	}
	c, err := pgembed.Start(ctx, pgembed.Config{Dir: filepath.Join(dataDir, "postgres"), Adopt: adopt, Logger: log})
	if err != nil {
		return nil, err
	}
	return &Database{DSN: c.DSN(), cluster: c}, nil
}

// EnsureDataDir creates the data dir with owner-only permissions; it holds
// the CA key, the encryption keys and the embedded database.
func EnsureDataDir(dir string) error {
	if dir == "" {
		return errors.New("--data-dir is required")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	return nil
}

// lockDataDir makes sure one `berth serve` owns a data dir at a time. The
// kernel drops a flock when its process dies, so a crash never leaves it held.
func lockDataDir(dir string) (release func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, "berth.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("data dir %s is in use by another berth serve", dir)
	}
	return func() { f.Close() }, nil
}
