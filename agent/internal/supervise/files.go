package supervise

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// File names inside a unit directory (one app process instance) and an
// upstream directory.
const (
	unitFile      = "unit.json"      // unitConfig, written by the manager
	stateFile     = "state.json"     // State, written by the supervisor
	pidFile       = "supervisor.pid" // the supervisor's (or upstream's) pid
	retiredFile   = "retired"        // the manager no longer wants this unit
	logFile       = "output.log"     // the app's stdout and stderr
	superLogFile  = "supervisor.log" // the supervisor's own stderr
	lockFile      = "lock"           // flock held by the one supervisor (or upstream) of the dir
	upstreamFile  = "upstream.json"
	backendsFile  = "backends.json"
	appliedFile   = "applied"
	upstreamDir   = "upstream"
	unitsDir      = "units"
	defaultLogMax = 8 << 20
	defaultLogN   = 4
)

// unitConfig is everything a supervisor needs to run one instance. It
// holds the app's environment, so it is written 0600 in the agent's
// private state directory.
type unitConfig struct {
	App        string        `json:"app"`
	Process    string        `json:"process"`
	Index      uint32        `json:"index"`
	Release    string        `json:"release"`
	ReleaseDir string        `json:"release_dir"`
	Command    string        `json:"command"`
	UID        uint32        `json:"uid"`
	GID        uint32        `json:"gid"`
	Env        []string      `json:"env"`
	Port       uint32        `json:"port,omitempty"`
	StopSignal string        `json:"stop_signal"`
	StopGrace  time.Duration `json:"stop_grace"`
	Restart    string        `json:"restart"`
	MemoryMax  uint64        `json:"memory_max,omitempty"`
	CPUMax     uint32        `json:"cpu_max,omitempty"`
	Hash       string        `json:"hash"`
	HealthPath string        `json:"health_path,omitempty"`
	// CgroupParent is the cgroup v2 directory (under /sys/fs/cgroup) the
	// supervisor makes the instance's limit cgroup in; empty: none known.
	CgroupParent string `json:"cgroup_parent,omitempty"`
	// BackoffReset is the run after which restarts back off from 1s again
	// (0: a minute; tests shorten it).
	BackoffReset time.Duration `json:"backoff_reset,omitempty"`
	LogMaxBytes  int64         `json:"log_max_bytes"`
	LogFiles     int           `json:"log_files"`
	Created      int64         `json:"created"` // unix nanos: orders units of a process
}

// State is what a supervisor reports about its instance, written
// atomically to state.json on every change.
type State struct {
	State          string    `json:"state"` // running, starting, restarting, failed, stopped
	Pid            int       `json:"pid"`
	Port           uint32    `json:"port,omitempty"`
	Restarts       uint32    `json:"restarts"`
	StartedAt      time.Time `json:"started_at"`
	LastExitCode   int       `json:"last_exit_code"`
	LastError      string    `json:"last_error,omitempty"`
	LimitsEnforced bool      `json:"limits_enforced"`
	SupervisorPid  int       `json:"supervisor_pid"`
	// BackoffMS is the wait before the pending (or last) restart.
	BackoffMS int64 `json:"backoff_ms,omitempty"`
}

// upstreamConfig is the upstream's listen port.
type upstreamConfig struct {
	Port uint32 `json:"port"`
}

// backendSet is backends.json: the generation and the loopback addresses
// the upstream forwards to.
type backendSet struct {
	Generation uint64   `json:"generation"`
	Backends   []string `json:"backends"`
}

// writeFileAtomic replaces path with data so a reader never sees half a
// file: write a temporary sibling, sync, rename.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(b, '\n'), 0o600)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func writePid(dir string, pid int) error {
	return writeFileAtomic(filepath.Join(dir, pidFile), []byte(strconv.Itoa(pid)+"\n"), 0o600)
}

func readPid(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, pidFile))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0
	}
	return pid
}

// isOurs tells whether pid is alive and is a berth-agent `kind --dir dir`
// process, so a pid reused by something else is never signalled.
func isOurs(pid int, kind, dir string) bool {
	if pid <= 1 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	if len(args) < 4 {
		return false
	}
	if isZombie(pid) {
		return false
	}
	return args[1] == kind && args[2] == "--dir" && args[3] == dir
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z' || b[i+2] == 'X'
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && err != syscall.EPERM {
		return false
	}
	return !isZombie(pid)
}

// lockDir takes dir's lock for the life of this process, so one directory
// never has two supervisors (or upstreams), whoever started them. The
// descriptor is close-on-exec: the app does not inherit it.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if err == syscall.EWOULDBLOCK {
			return nil, fmt.Errorf("another process already runs %s", dir)
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return f, nil
}
