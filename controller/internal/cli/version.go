package cli

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/berthhq/berth/controller/internal/buildinfo"
)

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintf(a.stdout, "berth %s %s %s\n", buildinfo.Version, buildinfo.Commit(), runtime.Version())
			return nil
		},
	}
}
