// Command berth-agent runs on each managed server. It dials out to the
// controller over mutual TLS; it never listens on a port.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/berthhq/berth/agent/internal/version"
)

const usage = `usage: berth-agent <command> [flags]

commands:
  version   print the agent version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "version":
		fmt.Fprintf(stdout, "berth-agent %s %s/%s %s\n", version.Version, runtime.GOOS, runtime.GOARCH, runtime.Version())
		return 0
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "berth-agent: unknown command %q (see 'berth-agent --help')\n", args[0])
		return 2
	}
}
