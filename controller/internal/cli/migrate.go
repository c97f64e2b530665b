package cli

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/berthhq/berth/controller/internal/daemon"
	"github.com/berthhq/berth/controller/internal/migrate"
	"github.com/berthhq/berth/controller/internal/secrets"
	"github.com/berthhq/berth/controller/internal/store"
)

// dbFlags are the flags of every command that talks to the database
// directly on the controller host.
type dbFlags struct {
	dataDir     string
	databaseURL string
}

func (d *dbFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&d.dataDir, "data-dir", "", "controller data dir (uses its embedded PostgreSQL)")
	fs.StringVar(&d.databaseURL, "database-url", "", "PostgreSQL URL")
}

// open starts (or joins, when `berth serve` is running) the database.
func (d *dbFlags) open(ctx context.Context, a *app) (*daemon.Database, error) {
	if d.databaseURL == "" && d.dataDir == "" {
		return nil, usageError{fmt.Errorf("pass --database-url or --data-dir")}
	}
	if d.databaseURL == "" {
		if _, err := os.Stat(d.dataDir); err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
	}
	return daemon.OpenDatabase(ctx, d.dataDir, d.databaseURL, true, a.log)
}

// withDB opens the database for a command that runs on the controller host
// and hands it a store; keys may be nil for commands that never touch
// encrypted columns.
func (a *app) withDB(ctx context.Context, df *dbFlags, keys *secrets.Source, fn func(*store.Store) error) error {
	database, err := df.open(ctx, a)
	if err != nil {
		return err
	}
	defer database.Close(context.Background())
	pool, err := pgxpool.New(ctx, database.DSN)
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	defer pool.Close()
	if err := pool.Ping(ctx); err != nil {
		return fmt.Errorf("connect to database: %w", err)
	}
	return fn(store.New(pool, keys))
}

func (a *app) migrateCmd() *cobra.Command {
	var df dbFlags
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply, revert or inspect database migrations",
	}
	df.register(cmd.PersistentFlags())

	withMigrator := func(cmd *cobra.Command, fn func(*migrate.Migrator) error) error {
		database, err := df.open(cmd.Context(), a)
		if err != nil {
			return err
		}
		defer database.Close(context.Background())
		mg, err := migrate.Open(cmd.Context(), database.DSN, a.log)
		if err != nil {
			return err
		}
		defer mg.Close()
		return fn(mg)
	}
	printStatus := func(mg *migrate.Migrator) error {
		st, err := mg.Status()
		if err != nil {
			return err
		}
		state := "clean"
		if st.Dirty {
			state = "dirty"
		}
		fmt.Fprintf(a.stdout, "version %d (%s), latest %d\n", st.Version, state, st.Latest)
		return nil
	}

	cmd.AddCommand(&cobra.Command{
		Use:   "up",
		Short: "Apply every pending migration",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withMigrator(cmd, func(mg *migrate.Migrator) error {
				if err := mg.Up(); err != nil {
					return err
				}
				return printStatus(mg)
			})
		},
	}, &cobra.Command{
		Use:   "down [N]",
		Short: "Revert the last N migrations (all of them without N)",
		Args:  rangeArgs(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n := 0
			if len(args) == 1 {
				v, err := strconv.Atoi(args[0])
				if err != nil || v < 1 {
					return usageError{fmt.Errorf("N must be a positive number, got %q", args[0])}
				}
				n = v
			}
			return withMigrator(cmd, func(mg *migrate.Migrator) error {
				if err := mg.Down(n); err != nil {
					return err
				}
				return printStatus(mg)
			})
		},
	}, &cobra.Command{
		Use:   "status",
		Short: "Show the applied and the latest migration",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withMigrator(cmd, printStatus)
		},
	}, &cobra.Command{
		Use:   "force V",
		Short: "Mark version V as applied and clean (after repairing a failed migration by hand)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := strconv.Atoi(args[0])
			if err != nil || v < 0 {
				return usageError{fmt.Errorf("V must be a migration version >= 0, got %q", args[0])}
			}
			latest, err := migrate.LatestVersion()
			if err != nil {
				return err
			}
			if uint(v) > latest {
				return usageError{fmt.Errorf("version %d does not exist (latest is %d)", v, latest)}
			}
			return withMigrator(cmd, func(mg *migrate.Migrator) error {
				if v == 0 {
					v = -1 // golang-migrate's "nothing applied"
				}
				if err := mg.Force(v); err != nil {
					return err
				}
				return printStatus(mg)
			})
		},
	})
	return cmd
}
