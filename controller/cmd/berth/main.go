// Command berth is the Berth controller daemon (`berth serve`) and its CLI.
package main

import (
	"os"

	"github.com/berthhq/berth/controller/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
