package cli

import (
	"os"

	"github.com/spf13/cobra"
)

// envEncryptionKeys reads BERTH_ENCRYPTION_KEYS and removes it from the
// environment so no child process (PostgreSQL, deploy hooks) inherits it.
func envEncryptionKeys() string {
	v := os.Getenv("BERTH_ENCRYPTION_KEYS")
	os.Unsetenv("BERTH_ENCRYPTION_KEYS")
	return v
}

func (a *app) keysCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Manage the encryption keys for secrets at rest",
	}
	return cmd
}
