package supervise

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Backoff between restarts: 1s doubling to 1m; a run of a minute resets it.
const (
	backoffMin   = time.Second
	backoffMax   = time.Minute
	backoffReset = time.Minute
)

// supervisor owns one app process instance (see the package doc).
type supervisor struct {
	dir   string
	cfg   unitConfig
	log   *rotator
	mu    sync.Mutex
	state State
	cg    *cgroup
}

// RunSupervisor is `berth-agent supervise --dir UNITDIR`: it runs the
// instance described by UNITDIR/unit.json until SIGTERM or SIGINT, then
// stops it (stop signal to its process group, grace, KILL) and returns.
func RunSupervisor(dir string) error {
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("--dir %q: must be absolute", dir)
	}
	s := &supervisor{dir: dir}
	if err := readJSON(filepath.Join(dir, unitFile), &s.cfg); err != nil {
		return fmt.Errorf("read unit: %w", err)
	}
	if _, ok := signals[s.cfg.StopSignal]; !ok {
		return fmt.Errorf("unit: stop signal %q", s.cfg.StopSignal)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer lock.Close()
	// The agent's unit runs with umask 077; the app gets the usual 022, as
	// deploy commands run as the app user do (its files stay readable to
	// the web server in front, say). Our own files have explicit modes.
	syscall.Umask(0o022)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	// The agent may have started us from a terminal or a unit it restarts:
	// a hangup is not ours to act on.
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	if s.log, err = openRotator(dir, s.cfg.LogMaxBytes, s.cfg.LogFiles); err != nil {
		return err
	}
	defer s.log.Close()
	// A supervisor started again after a reboot (or its own crash) keeps
	// the instance's restart count.
	var prev State
	if readJSON(filepath.Join(dir, stateFile), &prev) == nil {
		s.state.Restarts = prev.Restarts
	}
	s.state.Port = s.cfg.Port
	s.state.SupervisorPid = os.Getpid()
	s.state.State = "starting"
	if err := writePid(dir, os.Getpid()); err != nil {
		return err
	}
	s.setupLimits()
	if s.cg != nil {
		defer s.cg.remove()
	}
	s.save()
	s.loop(stop)
	return nil
}

func (s *supervisor) save() {
	s.mu.Lock()
	st := s.state
	s.mu.Unlock()
	if err := writeJSON(filepath.Join(s.dir, stateFile), st); err != nil {
		fmt.Fprintf(os.Stderr, "write state: %v\n", err)
	}
}

func (s *supervisor) update(f func(st *State)) {
	s.mu.Lock()
	f(&s.state)
	s.mu.Unlock()
	s.save()
}

func (s *supervisor) setupLimits() {
	if s.cfg.MemoryMax == 0 && s.cfg.CPUMax == 0 {
		s.state.LimitsEnforced = true // nothing asked, nothing missing
		return
	}
	cg, err := newCgroup(s.cfg.CgroupParent, filepath.Base(s.dir), s.cfg.MemoryMax, s.cfg.CPUMax)
	if err != nil {
		s.state.LimitsEnforced = false
		s.state.LastError = "limits not enforced: " + err.Error()
		return
	}
	s.cg = cg
	s.state.LimitsEnforced = true
}

// loop runs the child until told to stop, restarting it per policy.
func (s *supervisor) loop(stop <-chan os.Signal) {
	backoff := backoffMin
	for {
		started := time.Now()
		cmd, waitDone, err := s.start()
		if err != nil {
			s.update(func(st *State) { st.State, st.Pid, st.LastError = "restarting", 0, err.Error() })
		} else {
			s.update(func(st *State) {
				st.State, st.Pid, st.StartedAt = "running", cmd.Process.Pid, started.UTC()
			})
			select {
			case <-stop:
				s.stopChild(cmd, waitDone)
				return
			case werr := <-waitDone:
				code := exitCode(cmd, werr)
				// Whatever the child left in its group (a backgrounded
				// helper, say) must not hold the port for the next run.
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				s.update(func(st *State) {
					st.Pid, st.LastExitCode = 0, code
					st.LastError = fmt.Sprintf("exited with code %d", code)
					if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
						st.LastError = fmt.Sprintf("killed by signal %d (%s)", int(ws.Signal()), ws.Signal())
					}
				})
				if s.cfg.Restart == "never" || (s.cfg.Restart == "on-failure" && code == 0) {
					final := "stopped"
					if code != 0 {
						final = "failed"
					}
					s.update(func(st *State) { st.State = final })
					<-stop
					s.update(func(st *State) { st.State = "stopped" })
					return
				}
			}
		}
		reset := backoffReset
		if s.cfg.BackoffReset > 0 {
			reset = s.cfg.BackoffReset
		}
		if time.Since(started) >= reset {
			backoff = backoffMin
		}
		s.update(func(st *State) { st.State, st.BackoffMS = "restarting", backoff.Milliseconds() })
		t := time.NewTimer(backoff)
		select {
		case <-stop:
			t.Stop()
			s.update(func(st *State) { st.State = "stopped" })
			return
		case <-t.C:
		}
		backoff = min(backoff*2, backoffMax)
		s.update(func(st *State) { st.Restarts++; st.State = "starting" })
	}
}

func exitCode(cmd *exec.Cmd, err error) int {
	if cmd.ProcessState == nil {
		return -1
	}
	return cmd.ProcessState.ExitCode()
}

// start runs the command with bash from the release directory, as the
// app's user, in its own process group.
func (s *supervisor) start() (*exec.Cmd, <-chan error, error) {
	c := s.cfg
	cmd := exec.Command("bash", "-c", c.Command)
	cmd.Dir = c.ReleaseDir
	cmd.Env = append([]string(nil), c.Env...)
	if c.Port != 0 {
		cmd.Env = append(cmd.Env, "PORT="+strconv.Itoa(int(c.Port)))
	}
	if path := lookEnv(cmd.Env, "PATH"); path == "" {
		cmd.Env = append(cmd.Env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	attr := &syscall.SysProcAttr{Setpgid: true}
	if int(c.UID) != os.Geteuid() || int(c.GID) != os.Getegid() {
		attr.Credential = &syscall.Credential{Uid: c.UID, Gid: c.GID, Groups: []uint32{}}
	}
	if s.cg != nil {
		attr.UseCgroupFD, attr.CgroupFD = true, s.cg.fd
	}
	cmd.SysProcAttr = attr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start: %w", err)
	}
	var pumps sync.WaitGroup
	pumps.Add(2)
	go s.log.pump("stdout", stdout, func() { stdout.Close(); pumps.Done() })
	go s.log.pump("stderr", stderr, func() { stderr.Close(); pumps.Done() })
	done := make(chan error, 1)
	go func() {
		// Read the pipes to their end before Wait closes them, so the last
		// lines the process wrote reach the log. A grandchild holding the
		// pipe open must not keep us from noticing the exit, so the pumps
		// get until the group is killed (see loop) at most.
		state, err := cmd.Process.Wait()
		cmd.ProcessState = state
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		pumped := make(chan struct{})
		go func() { pumps.Wait(); close(pumped) }()
		select {
		case <-pumped:
		case <-time.After(2 * time.Second):
			// A process that left the group still holds the pipes.
			stdout.Close()
			stderr.Close()
		}
		if err == nil && !state.Success() {
			err = errors.New(state.String())
		}
		done <- err
	}()
	return cmd, done, nil
}

func lookEnv(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if len(env[i]) > len(key) && env[i][:len(key)] == key && env[i][len(key)] == '=' {
			return env[i][len(key)+1:]
		}
	}
	return ""
}

// stopChild sends the stop signal to the process group, waits the grace
// period, then kills the group.
func (s *supervisor) stopChild(cmd *exec.Cmd, waitDone <-chan error) {
	sig := signals[s.cfg.StopSignal]
	pgid := cmd.Process.Pid
	syscall.Kill(-pgid, sig)
	t := time.NewTimer(s.cfg.StopGrace)
	var code int
	select {
	case err := <-waitDone:
		t.Stop()
		code = exitCode(cmd, err)
	case <-t.C:
		syscall.Kill(-pgid, syscall.SIGKILL)
		err := <-waitDone
		code = exitCode(cmd, err)
	}
	s.update(func(st *State) { st.State, st.Pid, st.LastExitCode = "stopped", 0, code })
}
