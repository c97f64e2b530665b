package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// logger writes progress lines to a job's log; safe for concurrent use and
// for a nil writer.
type logger struct {
	mu sync.Mutex
	w  io.Writer
}

func newLogger(w io.Writer) *logger { return &logger{w: w} }

func (l *logger) printf(format string, args ...any) {
	if l == nil || l.w == nil {
		return
	}
	line := fmt.Sprintf(format, args...)
	l.mu.Lock()
	defer l.mu.Unlock()
	io.WriteString(l.w, strings.TrimRight(line, "\n")+"\n")
}

// killGrace is how long a canceled command gets between TERM and KILL.
const killGrace = 5 * time.Second

// command is one external program a backup, verify or restore runs.
type command struct {
	name    string // for messages: "pg_dump"
	argv    []string
	env     []string            // added to a minimal environment
	cred    *syscall.Credential // nil: the agent's own user
	secrets []string            // masked in anything the command prints
	stdin   io.Reader
	stdout  io.Writer
	// feed, when set, writes the command's stdin. If it fails (the stream
	// being restored turned out bad), the process group is killed before
	// its stdin closes, so the program never takes a cut stream for a
	// complete one.
	feed func(w io.Writer) error
}

// run starts c in its own process group and waits for it. Its stderr goes
// to the log line by line (masked) and its tail into the error when it
// fails. Canceling ctx sends TERM to the whole group, then KILL.
func (c *command) run(ctx context.Context, lg *logger) error {
	cmd := exec.Command(c.argv[0], c.argv[1:]...)
	cmd.Env = append(baseEnv(), c.env...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: c.cred}
	cmd.Stdin = c.stdin
	cmd.Stdout = c.stdout
	tail := &stderrTail{name: c.name, lg: lg, secrets: c.secrets}
	cmd.Stderr = tail
	// exec's copying goroutines must not wait forever for a grandchild
	// that kept a pipe open.
	cmd.WaitDelay = killGrace
	var stdin io.WriteCloser
	if c.feed != nil {
		var err error
		if stdin, err = cmd.StdinPipe(); err != nil {
			return fmt.Errorf("start %s: %w", c.name, err)
		}
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", c.name, err)
	}
	pgid := cmd.Process.Pid
	fed := make(chan error, 1)
	if c.feed != nil {
		go func() {
			err := c.feed(stdin)
			if err != nil && !isClosedPipe(err) {
				_ = syscall.Kill(-pgid, syscall.SIGKILL)
			}
			stdin.Close()
			fed <- err
		}()
	}
	exited := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(killGrace):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
	})
	err := cmd.Wait()
	close(exited)
	if c.feed != nil {
		if ferr := <-fed; ferr != nil && !isClosedPipe(ferr) {
			stop()
			return ferr
		}
	}
	if !stop() {
		// Canceled: whatever is left of the group goes now.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		if err != nil {
			return fmt.Errorf("%s stopped: %w", c.name, context.Cause(ctx))
		}
	}
	tail.flush()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			msg := ee.ProcessState.String()
			if t := tail.tail(); t != "" {
				return fmt.Errorf("%s failed (%s): %s", c.name, msg, t)
			}
			return fmt.Errorf("%s failed (%s)", c.name, msg)
		}
		return fmt.Errorf("%s: %w", c.name, err)
	}
	return nil
}

// output runs c and returns its stdout (small outputs only: queries).
func (c *command) output(ctx context.Context, lg *logger) (string, error) {
	var b bytes.Buffer
	c.stdout = &limitedBuffer{b: &b, max: 1 << 20}
	err := c.run(ctx, lg)
	return strings.TrimSpace(b.String()), err
}

type limitedBuffer struct {
	b   *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func baseEnv() []string {
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "LANG=C"}
	// Where the local database sockets are, when the agent's environment
	// says (a non-default PostgreSQL port, a MariaDB socket elsewhere).
	for _, k := range []string{"PGHOST", "PGPORT", "MYSQL_UNIX_PORT"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// stderrTail logs a command's stderr lines and keeps the last few for the
// error message, with secrets masked.
type stderrTail struct {
	name    string
	lg      *logger
	secrets []string
	mu      sync.Mutex
	partial []byte
	lines   []string
}

const tailLines = 8

func (s *stderrTail) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.partial = append(s.partial, p...)
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			break
		}
		s.line(string(s.partial[:i]))
		s.partial = s.partial[i+1:]
	}
	if len(s.partial) > 4096 { // a line without end: take it as it is
		s.line(string(s.partial))
		s.partial = nil
	}
	return len(p), nil
}

func (s *stderrTail) line(l string) {
	l = strings.TrimSpace(mask(l, s.secrets))
	if l == "" {
		return
	}
	if len(l) > 500 {
		l = l[:500] + "..."
	}
	s.lg.printf("%s: %s", s.name, l)
	s.lines = append(s.lines, l)
	if len(s.lines) > tailLines {
		s.lines = s.lines[len(s.lines)-tailLines:]
	}
}

func (s *stderrTail) flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.partial) > 0 {
		s.line(string(s.partial))
		s.partial = nil
	}
}

func (s *stderrTail) tail() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.lines, " | ")
}

func mask(s string, secrets []string) string {
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, "***")
		}
	}
	return s
}

// findTool looks a client program up: for PostgreSQL the newest Debian
// versioned directory first (a newer pg_dump dumps older servers, never the
// other way round), then PATH.
func findTool(names ...string) (string, error) {
	for _, name := range names {
		if strings.HasPrefix(name, "pg_") || name == "psql" || name == "createdb" {
			matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
			sort.Slice(matches, func(i, j int) bool { return pgMajor(matches[i]) > pgMajor(matches[j]) })
			if len(matches) > 0 {
				return matches[0], nil
			}
		}
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is not installed on this server", strings.Join(names, " or "))
}

func pgMajor(p string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(p))))
	return n
}

// systemUser is the credential to run a command as name, or nil when the
// agent is not root (it then runs everything as itself) or is name.
func systemUser(name string) (*syscall.Credential, string, error) {
	u, err := user.Lookup(name)
	if err != nil {
		if os.Geteuid() != 0 {
			return nil, "", nil
		}
		return nil, "", fmt.Errorf("the %s system user does not exist on this server: %w", name, err)
	}
	if os.Geteuid() != 0 || strconv.Itoa(os.Geteuid()) == u.Uid {
		return nil, u.HomeDir, nil
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, u.HomeDir, nil
}

// localCommand runs a tool as the agent's user, connecting to nothing.
func localCommand(tool string, args ...string) (*command, error) {
	bin, err := findTool(tool)
	if err != nil {
		return nil, err
	}
	return &command{name: tool, argv: append([]string{bin}, args...), env: []string{"HOME=/nonexistent"}}, nil
}

// isClosedPipe is a write to a program that stopped reading.
func isClosedPipe(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, os.ErrClosed) || errors.Is(err, io.ErrClosedPipe)
}
