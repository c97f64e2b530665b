// Package cli is the `berth` command line: the daemon (`berth serve`) and the
// commands an operator runs on the controller host or against its API.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/berthhq/berth/controller/internal/logging"
)

// envPrefix turns a flag name into its environment variable: --data-dir is
// BERTH_DATA_DIR.
const envPrefix = "BERTH_"

type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	log            *slog.Logger
}

// Main runs the CLI and returns the process exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, log: logging.New(stderr, slog.LevelInfo)}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd, err := root.ExecuteContextC(ctx)
	if err != nil {
		// One line, no usage dump: scripts and people both read the last line.
		msg := err.Error()
		if isUsageError(err) {
			msg += fmt.Sprintf(" (see '%s --help')", cmd.CommandPath())
		}
		fmt.Fprintf(stderr, "berth: %s\n", strings.ReplaceAll(msg, "\n", " "))
		var ec exitCoder
		if errors.As(err, &ec) {
			return ec.ExitCode()
		}
		return 1
	}
	return 0
}

type exitCoder interface{ ExitCode() int }

type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

func isUsageError(err error) bool {
	var u usageError
	return errors.As(err, &u)
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "berth",
		Short:         "Berth controller and CLI: servers, apps, their processes and schedules, deployments, domains",
		SilenceUsage:  true,
		SilenceErrors: true,
		// Flags may also come from BERTH_* variables; an explicit flag wins.
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return bindEnv(cmd.Flags())
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(a.serveCmd(), a.migrateCmd(), a.keysCmd(), a.versionCmd(), a.adminCmd(), a.tokenCmd(), a.serverCmd(), a.metricsCmd(),
		a.gitCredentialCmd(), a.appCmd(), a.deployCmd(), a.rollbackCmd(), a.deploymentsCmd(),
		a.userCmd(), a.activityCmd(), a.securityCmd(), a.notifyCmd(), a.notificationsCmd(), a.alertCmd(), a.backupCmd(), a.domainCmd())
	return root
}

// bindEnv fills every flag not given on the command line from its BERTH_*
// environment variable.
func bindEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || err != nil || f.Name == "help" {
			return
		}
		name := envPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok && v != "" {
			if e := fs.Set(f.Name, v); e != nil {
				err = usageError{fmt.Errorf("invalid %s: %w", name, e)}
			}
		}
	})
	return err
}

// exactArgs is cobra.ExactArgs with a usage error, so the message gets the
// --help hint.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

func rangeArgs(lo, hi int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.RangeArgs(lo, hi)(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}
