// Command berth-agent runs on each managed server. It dials out to the
// controller over mutual TLS; it never listens on a port.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/berthhq/berth/agent/internal/client"
	"github.com/berthhq/berth/agent/internal/deploy"
	"github.com/berthhq/berth/agent/internal/facts"
	"github.com/berthhq/berth/agent/internal/held"
	"github.com/berthhq/berth/agent/internal/metrics"
	"github.com/berthhq/berth/agent/internal/supervise"
	"github.com/berthhq/berth/agent/internal/version"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

const usage = `usage: berth-agent <command> [flags]

commands:
  enroll    join this server to a controller with a one-time token
  run       stay connected to the controller (the systemd service)
  version   print the agent version

Run 'berth-agent <command> -h' for a command's flags.
`

const defaultDataDir = "/var/lib/berth-agent"

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "version":
		fmt.Fprintf(stdout, "berth-agent %s %s/%s %s\n", version.Version, runtime.GOOS, runtime.GOARCH, runtime.Version())
		return 0
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "enroll":
		err = enroll(ctx, args[1:], stdin, stdout, stderr)
	case "run":
		err = runAgent(ctx, args[1:], stderr)
	case "supervise": // hidden: started by the agent, see package supervise
		err = superviseCmd(args[1:], stderr)
	case "upstream": // hidden: started by the agent, see package supervise
		err = upstreamCmd(args[1:], stderr)
	default:
		fmt.Fprintf(stderr, "berth-agent: unknown command %q (see 'berth-agent --help')\n", args[0])
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "berth-agent: %s\n", err)
		return 1
	}
	return 0
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("berth-agent "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// envDefault lets BERTH_AGENT_* variables stand in for flags (the systemd
// unit's EnvironmentFile).
func envDefault(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func enroll(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("enroll", stderr)
	controller := fs.String("controller", envDefault("BERTH_AGENT_CONTROLLER", ""), "controller gRPC address HOST:PORT")
	// --token stays defined only to refuse it with a clear message: a token
	// in argv is visible in ps and lands in shell history.
	argToken := fs.String("token", "", "refused: use --token-file or --token-stdin")
	tokenFile := fs.String("token-file", "", "read the one-time join token from this file (owned by you, mode 0600 or stricter)")
	tokenStdin := fs.Bool("token-stdin", false, "read the one-time join token from standard input")
	pin := fs.String("ca-pin", "", "controller CA pin (sha256:HEX) from 'berth server add'")
	dataDir := fs.String("data-dir", envDefault("BERTH_AGENT_DATA_DIR", defaultDataDir), "where the agent keeps its key and certificate")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *argToken != "" {
		return errors.New("--token is not accepted: a token on the command line shows in ps and shell history; use --token-file F or --token-stdin")
	}
	token, err := readToken(*tokenFile, *tokenStdin, stdin)
	if err != nil {
		return err
	}
	id, err := client.Enroll(ctx, client.EnrollParams{
		Controller: *controller, Token: token, CAPin: *pin, DataDir: *dataDir, Facts: facts.Collect(ctx),
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "enrolled as server %s; credentials in %s\n", id, *dataDir)
	return nil
}

// maxTokenBytes bounds what is read as a join token (they are short).
const maxTokenBytes = 4096

// readToken reads the join token from exactly one of a file or stdin. The
// file must be the caller's own and closed to group and others: the token
// enrolls a server, so a file others can read or replace is refused.
func readToken(file string, fromStdin bool, stdin io.Reader) (string, error) {
	var r io.Reader
	switch {
	case file != "" && fromStdin:
		return "", errors.New("give --token-file or --token-stdin, not both")
	case file != "":
		f, err := os.Open(file)
		if err != nil {
			return "", fmt.Errorf("token file: %w", err)
		}
		defer f.Close()
		// Checked on the open file, so what is read is what was checked.
		fi, err := f.Stat()
		if err != nil {
			return "", fmt.Errorf("token file: %w", err)
		}
		if !fi.Mode().IsRegular() {
			return "", fmt.Errorf("token file %s is not a regular file", file)
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			return "", fmt.Errorf("token file %s has mode %04o: it must not be readable or writable by group or others (chmod 600 %s)", file, perm, file)
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
			return "", fmt.Errorf("token file %s is owned by uid %d, not by the user running berth-agent (uid %d)", file, st.Uid, os.Getuid())
		}
		r = f
	case fromStdin:
		r = stdin
	default:
		return "", errors.New("the join token is required: --token-file F or --token-stdin")
	}
	b, err := io.ReadAll(io.LimitReader(r, maxTokenBytes+1))
	if err != nil {
		return "", fmt.Errorf("read the join token: %w", err)
	}
	if len(b) > maxTokenBytes {
		return "", errors.New("the join token is too long: is that the right file?")
	}
	token := strings.TrimSpace(string(b))
	if token == "" || strings.ContainsAny(token, " \t\r\n") {
		return "", errors.New("the join token is empty or not one line")
	}
	return token, nil
}

func runAgent(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlags("run", stderr)
	controller := fs.String("controller", envDefault("BERTH_AGENT_CONTROLLER", ""), "controller gRPC address HOST:PORT")
	dataDir := fs.String("data-dir", envDefault("BERTH_AGENT_DATA_DIR", defaultDataDir), "where the agent keeps its key and certificate")
	bufferFor := fs.Duration("buffer", 24*time.Hour, "how much metrics history to keep while the controller is unreachable")
	killGrace := fs.Duration("kill-grace", deploy.DefaultKillGrace, "how long a canceled or timed-out deploy's processes get between TERM and KILL")
	appDirs := fs.String("app-dirs", envDefault("BERTH_AGENT_APP_DIRS", strings.Join(deploy.DefaultAppDirs, ",")), "comma-separated directories that apps' deploy paths must lie below")
	nginx := proxyFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	addr := *controller
	if addr == "" {
		// enroll remembers the controller it joined.
		a, err := client.SavedController(*dataDir)
		if err != nil {
			return errors.New("--controller is required (or enroll first)")
		}
		addr = a
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	sampler, err := metrics.NewSampler(metrics.SamplerOptions{})
	if err != nil {
		return err
	}
	// App processes: their supervisors outlive this process (and are found
	// again by the next one), so closing the manager never stops them.
	// Without it the agent still deploys and reports; jobs that need
	// processes fail and say why.
	procs, err := newProcessManager(*dataDir, log)
	if err != nil {
		log.Error("app processes are not supervised on this server", "err", err)
	} else {
		defer procs.Close()
	}
	// Deploy jobs: journaled under the data dir; jobs an earlier process
	// left running are reported failed before anything new starts.
	jobs := client.NewJobs()
	exec, err := deploy.New(deploy.Config{DataDir: *dataDir, Logger: log, Sink: jobs.Sink, KillGrace: *killGrace, AppDirs: splitDirs(*appDirs), Processes: procs, SendObject: jobs.SendObject})
	if err != nil {
		return err
	}
	defer exec.Close()
	if err := exec.Recover(); err != nil {
		log.Error("recover deploy jobs", "err", err)
	}
	jobs.Exec = exec
	// Backup schedules this agent runs itself while no controller is
	// reachable (sealed to its own key; see package held).
	if h, err := jobs.OpenHeld(*dataDir, held.Config{Log: log}); err != nil {
		log.Error("held backup schedules unavailable: schedules run only while a controller is reachable", "err", err)
	} else {
		go h.Run(ctx)
	}
	jobs.Proxy = nginx.manager(*dataDir, log)
	return client.Run(ctx, client.Config{
		Controller: addr,
		DataDir:    *dataDir,
		Facts:      func() *agentv1.HostFacts { return facts.Collect(ctx) },
		Sampler:    sampler,
		Buffer:     metrics.NewBuffer(metrics.CapacityFor(*bufferFor, 10*time.Second)),
		Logger:     log,
		Jobs:       jobs,
		Processes:  procs,
	})
}

// newProcessManager opens the supervisor of the apps' processes, with its
// state under <data-dir>/apps and this binary as the supervisors' own.
func newProcessManager(dataDir string, log *slog.Logger) (*supervise.Manager, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the agent's own binary for the process supervisors: %w", err)
	}
	m, err := supervise.NewManager(supervise.Config{StateDir: filepath.Join(dataDir, "apps"), Executable: self, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("app processes: %w", err)
	}
	return m, nil
}

// splitDirs reads --app-dirs: absolute directories, comma-separated.
func splitDirs(v string) []string {
	var out []string
	for _, d := range strings.Split(v, ",") {
		if d = strings.TrimSpace(d); d != "" {
			out = append(out, d)
		}
	}
	return out
}
