package supervise

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"syscall"
	"time"

	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

const (
	maxCommand   = 64 << 10
	maxInstances = 32
	maxGrace     = time.Hour
	defaultGrace = 30 * time.Second
)

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)

// signals are the stop signals a process may ask for, by the names the
// proto uses.
var signals = map[string]syscall.Signal{
	"TERM": syscall.SIGTERM, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT,
	"HUP": syscall.SIGHUP, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2,
	"KILL": syscall.SIGKILL,
}

// proc is a validated ProcessSpec with its defaults filled in.
type proc struct {
	Name       string
	Command    string
	Instances  uint32
	Port       bool
	HealthPath string
	StopSignal string
	StopGrace  time.Duration
	Restart    string
	MemoryMax  uint64
	CPUMax     uint32
}

// ValidateProcesses checks a declared process set and returns the first
// problem found, naming the process.
func ValidateProcesses(specs []*agentv1.ProcessSpec) error {
	_, err := validate(specs)
	return err
}

func validate(specs []*agentv1.ProcessSpec) ([]proc, error) {
	seen := map[string]bool{}
	out := make([]proc, 0, len(specs))
	for i, s := range specs {
		if s == nil {
			return nil, fmt.Errorf("process %d: empty", i)
		}
		p, err := validateOne(s)
		if err != nil {
			return nil, err
		}
		if seen[p.Name] {
			return nil, fmt.Errorf("process %s: declared twice", p.Name)
		}
		seen[p.Name] = true
		out = append(out, p)
	}
	return out, nil
}

func validateOne(s *agentv1.ProcessSpec) (proc, error) {
	p := proc{
		Name: s.GetName(), Command: s.GetCommand(), Instances: s.GetInstances(), Port: s.GetPort(),
		HealthPath: s.GetHealthPath(), StopSignal: s.GetStopSignal(), Restart: s.GetRestart(),
		MemoryMax: s.GetMemoryMaxBytes(), CPUMax: s.GetCpuMaxPercent(),
	}
	if len(p.Name) > 32 || !nameRE.MatchString(p.Name) {
		return p, fmt.Errorf("process name %.40q: must be 1 to 32 lowercase letters, digits or dashes, starting with a letter", p.Name)
	}
	fail := func(format string, args ...any) (proc, error) {
		return p, fmt.Errorf("process %s: %s", p.Name, fmt.Sprintf(format, args...))
	}
	switch {
	case p.Command == "":
		return fail("command is empty")
	case len(p.Command) > maxCommand:
		return fail("command is %d bytes, more than %d", len(p.Command), maxCommand)
	case p.Instances < 1 || p.Instances > maxInstances:
		return fail("instances %d: must be 1 to %d", p.Instances, maxInstances)
	}
	for _, c := range p.Command {
		if c == 0 {
			return fail("command contains a NUL byte")
		}
	}
	if p.HealthPath != "" {
		if !p.Port {
			return fail("health_path needs port")
		}
		if p.HealthPath[0] != '/' || len(p.HealthPath) > 1024 {
			return fail("health_path %.40q: must start with / (at most 1024 bytes)", p.HealthPath)
		}
		for _, c := range p.HealthPath {
			if c <= ' ' || c == 0x7f {
				return fail("health_path contains a space or control character")
			}
		}
	}
	if p.StopSignal == "" {
		p.StopSignal = "TERM"
	}
	if _, ok := signals[p.StopSignal]; !ok {
		return fail("stop_signal %.20q: must be TERM, INT, QUIT, HUP, USR1, USR2 or KILL", p.StopSignal)
	}
	p.StopGrace = defaultGrace
	if g := s.GetStopGrace(); g != nil {
		if err := g.CheckValid(); err != nil {
			return fail("stop_grace: %v", err)
		}
		p.StopGrace = g.AsDuration()
		if p.StopGrace < 0 || p.StopGrace > maxGrace {
			return fail("stop_grace %s: must be 0 to 1h", p.StopGrace)
		}
	}
	if p.Restart == "" {
		p.Restart = "always"
	}
	switch p.Restart {
	case "always", "on-failure", "never":
	default:
		return fail("restart %.20q: must be always, on-failure or never", p.Restart)
	}
	if p.CPUMax > 100*1024 {
		return fail("cpu_max_percent %d: too large", p.CPUMax)
	}
	return p, nil
}

// hash identifies what a running instance was started from, so apply can
// tell a changed process from an unchanged one.
func (p proc) hash(app App) string {
	h := sha256.New()
	fmt.Fprintf(h, "%q %q %d %v %q %q %d %q %d %d %q %d %d\n", p.Name, p.Command, p.Instances, p.Port,
		p.HealthPath, p.StopSignal, p.StopGrace, p.Restart, p.MemoryMax, p.CPUMax, app.ReleaseDir, app.UID, app.GID)
	for _, e := range app.Env {
		fmt.Fprintf(h, "%q\n", e)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

var errNoApp = errors.New("app id is empty")

// checkApp validates what a job says about the app before anything runs.
func checkApp(app App) ([]proc, error) {
	if app.ID == "" {
		return nil, errNoApp
	}
	if !idRE.MatchString(app.ID) {
		return nil, fmt.Errorf("app id %.40q: not a valid id", app.ID)
	}
	procs, err := validate(app.Processes)
	if err != nil {
		return nil, err
	}
	if len(procs) > 0 {
		if app.ReleaseDir == "" || app.ReleaseDir[0] != '/' {
			return nil, fmt.Errorf("release dir %q: must be an absolute path", app.ReleaseDir)
		}
	}
	if app.UpstreamPort > 65535 {
		return nil, fmt.Errorf("upstream port %d: out of range", app.UpstreamPort)
	}
	for _, e := range app.Env {
		for i := 0; i < len(e); i++ {
			if e[i] == 0 {
				return nil, errors.New("environment contains a NUL byte")
			}
		}
	}
	return procs, nil
}

// idRE keeps app ids safe as directory names.
var idRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
