package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/spf13/cobra"

	"github.com/berthhq/berth/controller/internal/daemon"
	"github.com/berthhq/berth/controller/internal/secrets"
	"github.com/berthhq/berth/controller/internal/store"
)

// envEncryptionKeys reads BERTH_ENCRYPTION_KEYS and removes it from the
// environment so no child process (PostgreSQL, deploy hooks) inherits it.
func envEncryptionKeys() string {
	v := os.Getenv(secrets.EnvVar)
	os.Unsetenv(secrets.EnvVar)
	return v
}

// rotationMarker exists while a rotation is under way; it makes a rerun
// after a crash resume instead of adding yet another key.
func rotationMarker(dataDir string) string { return filepath.Join(dataDir, "encryption.rotating") }

func (a *app) keysCmd() *cobra.Command {
	var df dbFlags
	var batch int
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Manage the encryption keys for secrets at rest",
	}
	df.register(cmd.PersistentFlags())
	cmd.PersistentFlags().IntVar(&batch, "batch", 500, "rows re-encrypted per transaction")

	// withStore opens the database and the keyring: the key file in
	// --data-dir, or BERTH_ENCRYPTION_KEYS when set.
	withStore := func(ctx context.Context, fn func(*store.Store, *secrets.Source, string) error) error {
		if batch < 1 || batch > 10000 {
			return usageError{fmt.Errorf("--batch must be between 1 and 10000")}
		}
		env := envEncryptionKeys()
		keyFile := ""
		if env == "" {
			if df.dataDir == "" {
				return usageError{errors.New("pass --data-dir (where encryption.keys lives) or set " + secrets.EnvVar)}
			}
			keyFile = daemon.KeyFile(df.dataDir)
		}
		var kr *secrets.Keyring
		var err error
		if env != "" {
			kr, err = secrets.ParseKeys(env)
		} else {
			kr, err = secrets.ReadKeyFile(keyFile)
		}
		if err != nil {
			return fmt.Errorf("encryption keys: %w", err)
		}
		src := secrets.NewSource(kr, keyFile)
		return a.withDB(ctx, &df, src, func(st *store.Store) error { return fn(st, src, keyFile) })
	}

	reencryptAll := func(ctx context.Context, st *store.Store) error {
		var total int64
		for _, c := range store.EncryptedColumns {
			n, err := st.ReencryptColumn(ctx, c, batch)
			total += n
			if err != nil {
				return fmt.Errorf("re-encrypt %s.%s (re-run to resume): %w", c.Table, c.Column, err)
			}
			if n > 0 {
				fmt.Fprintf(a.stdout, "%s.%s: %d re-encrypted\n", c.Table, c.Column, n)
			}
		}
		fmt.Fprintf(a.stdout, "%d values re-encrypted under key %d\n", total, st.Keys().Keyring().PrimaryID())
		return nil
	}

	cmd.AddCommand(&cobra.Command{
		Use:   "rotate",
		Short: "Add a new primary key and re-encrypt every encrypted field under it (resumable)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withStore(cmd.Context(), func(st *store.Store, src *secrets.Source, keyFile string) error {
				if keyFile == "" {
					return fmt.Errorf("keys come from %s, which berth cannot edit: run `berth keys generate`, add its output to %s, restart the controllers, then run `berth keys reencrypt`", secrets.EnvVar, secrets.EnvVar)
				}
				marker := rotationMarker(df.dataDir)
				if _, err := os.Stat(marker); err == nil {
					fmt.Fprintf(a.stdout, "resuming the interrupted rotation to key %d\n", src.Keyring().PrimaryID())
				} else {
					// Save the new key before anything is sealed with it, so
					// a crash can never leave data under a key nobody has.
					next, err := src.Keyring().AddKey()
					if err != nil {
						return err
					}
					if err := os.WriteFile(marker, []byte(fmt.Sprintf("%d\n", next.PrimaryID())), 0o600); err != nil {
						return fmt.Errorf("write rotation marker: %w", err)
					}
					if err := secrets.SaveKeyFile(keyFile, next); err != nil {
						return fmt.Errorf("save key file: %w", err)
					}
					if _, err := src.Reload(); err != nil {
						return err
					}
					fmt.Fprintf(a.stdout, "added key %d (primary)\n", next.PrimaryID())
				}
				if err := reencryptAll(cmd.Context(), st); err != nil {
					return err
				}
				return os.Remove(marker)
			})
		},
	}, &cobra.Command{
		Use:   "reencrypt",
		Short: "Re-encrypt every field not yet under the primary key (after adding a key by hand)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withStore(cmd.Context(), func(st *store.Store, _ *secrets.Source, _ string) error {
				return reencryptAll(cmd.Context(), st)
			})
		},
	}, &cobra.Command{
		Use:   "generate",
		Short: "Print " + secrets.EnvVar + " with a new primary key added (for keys kept in the environment)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			env := envEncryptionKeys()
			var kr *secrets.Keyring
			var err error
			if env == "" {
				kr, err = secrets.Generate()
			} else if kr, err = secrets.ParseKeys(env); err == nil {
				kr, err = kr.AddKey()
			}
			if err != nil {
				return fmt.Errorf("encryption keys: %w", err)
			}
			// Secret output by request of the operator; nothing is logged.
			fmt.Fprintln(a.stdout, kr.ExportKeys())
			return nil
		},
	}, &cobra.Command{
		Use:   "status",
		Short: "Show how many encrypted values are under each key",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withStore(cmd.Context(), func(st *store.Store, src *secrets.Source, _ string) error {
				usage, err := st.EncryptionUsage(cmd.Context())
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "primary key %d; keys %v\n", src.Keyring().PrimaryID(), src.Keyring().IDs())
				for _, u := range usage {
					ids := make([]uint32, 0, len(u.ByKey))
					for id := range u.ByKey {
						ids = append(ids, id)
					}
					sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
					fmt.Fprintf(a.stdout, "%s.%s:", u.Column.Table, u.Column.Column)
					for _, id := range ids {
						fmt.Fprintf(a.stdout, " key %d: %d", id, u.ByKey[id])
					}
					if u.Unreadable > 0 {
						fmt.Fprintf(a.stdout, " unreadable: %d", u.Unreadable)
					}
					fmt.Fprintln(a.stdout)
				}
				return nil
			})
		},
	})
	return cmd
}
