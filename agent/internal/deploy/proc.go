package deploy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// runAs is the user a job's own commands (script, health check, reload,
// unpacking the release) run as.
type runAs struct {
	name     string
	uid, gid int
	home     string
	cred     *syscall.Credential // nil: the agent's own user
}

// appUser decides who the job's own commands run as, and says so in the
// deploy log. An agent that is not root can run them only as itself. A
// root agent runs them as the spec's user, or Config.AppUser when it names
// none, creating that user as a system account when it is missing; a user
// with uid 0 (root or any alias) is refused unless the server allows it.
func (j *job) appUser(ctx context.Context) (*runAs, error) {
	cur, err := user.Current()
	if err != nil {
		return nil, fmt.Errorf("look up the agent's user: %w", err)
	}
	name := j.spec.RunAsUser
	if os.Geteuid() != 0 {
		if name != "" && name != cur.Username {
			u, err := user.Lookup(name)
			if err != nil || u.Uid != cur.Uid {
				return nil, fmt.Errorf("the agent runs as %s, not root, and cannot run commands as %s", cur.Username, name)
			}
		}
		j.log.printf("the agent runs as %s, not root: the app runs as %s too (it can run nothing as anyone else)", cur.Username, cur.Username)
		return runAsOf(cur, cur)
	}
	if name == "" {
		name = j.e.cfg.AppUser
		j.log.printf("no app user configured: the app runs as %s", name)
	}
	u, err := user.Lookup(name)
	var unknown user.UnknownUserError
	if errors.As(err, &unknown) {
		if u, err = j.e.createUser(ctx, name, j.spec.DeployPath); err == nil {
			j.log.printf("created system user %s (home %s, login shell nologin)", name, j.spec.DeployPath)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("look up user %q: %w", name, err)
	}
	if !j.spec.AllowRoot {
		if u.Uid == "0" {
			return nil, fmt.Errorf("user %s has uid 0 (root): running an app as root needs the server's allow-root setting, which only an admin can grant", name)
		}
		if g, ok := privilegedGroup(u); ok {
			return nil, fmt.Errorf("user %s is in group %s, which can become root (sudo, docker, disk access and the like): running an app as such a user needs the server's allow-root setting, which only an admin can grant", name, g)
		}
	}
	return runAsOf(u, cur)
}

func runAsOf(u, cur *user.User) (*runAs, error) {
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, fmt.Errorf("user %s: uid %q", u.Username, u.Uid)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("user %s: gid %q", u.Username, u.Gid)
	}
	r := &runAs{name: u.Username, uid: uid, gid: gid, home: u.HomeDir}
	if u.Uid == cur.Uid {
		return r, nil
	}
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	if gids, err := u.GroupIds(); err == nil {
		for _, g := range gids {
			if n, err := strconv.Atoi(g); err == nil {
				cred.Groups = append(cred.Groups, uint32(n))
			}
		}
	}
	r.cred = cred
	return r, nil
}

// createUser makes name a system user with its own group, its home the
// deploy path (not created: the deploy makes it) and no login shell: the
// deploy runs its commands with bash explicitly. Two jobs may want the same
// missing user at once; the second finds it made.
func (e *Executor) createUser(ctx context.Context, name, home string) (*user.User, error) {
	e.userMu.Lock()
	defer e.userMu.Unlock()
	if u, err := user.Lookup(name); err == nil {
		return u, nil
	}
	shell := "/usr/sbin/nologin"
	if _, err := os.Stat(shell); err != nil {
		shell = "/sbin/nologin"
	}
	cmd := exec.CommandContext(ctx, "useradd", "--system", "--user-group", "--home-dir", home, "--no-create-home", "--shell", shell, "--", name)
	cmd.Env = []string{"PATH=" + minimalPath, "LC_ALL=C"}
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("create system user %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return user.Lookup(name)
}

// chown gives path to the app user (a no-op when that is the agent's user).
func (r *runAs) chown(path string) error {
	if r.cred == nil {
		return nil
	}
	return os.Lchown(path, r.uid, r.gid)
}

// cmdSpec is one process a job runs.
type cmdSpec struct {
	argv   []string
	dir    string
	env    []string
	asUser bool      // run as the app user, with umask 022
	stdin  *os.File  // nil: /dev/null
	stdout io.Writer // nil: into the log
	stderr io.Writer // nil: into the log
	extra  []*os.File
	echo   string // the line logged before the command starts ("" for none)
	// untracked: not journaled as the job's process group, for short
	// read-only git queries that may run beside another process.
	untracked bool
	// background: nothing waits for it, so it runs at the lowest CPU
	// priority and never slows the step that is running.
	background bool
}

// exitError is a process that ran and failed.
type exitError struct {
	name string
	code int
}

func (e *exitError) Error() string {
	if e.code > 128 {
		return fmt.Sprintf("%s was killed by signal %d", e.name, e.code-128)
	}
	return fmt.Sprintf("%s exited with status %d", e.name, e.code)
}

// proc is a started process in its own process group.
type proc struct {
	j         *job
	cmd       *exec.Cmd
	name      string
	exited    chan struct{}
	untracked bool
	readers   sync.WaitGroup
	rfiles    []*os.File
}

// markSpawned records that the job's first process has started.
func (j *job) markSpawned() { j.spawnedOnce.Do(func() { close(j.spawned) }) }

// run starts c and waits for it.
func (j *job) run(ctx context.Context, c cmdSpec) error {
	p, err := j.start(ctx, c)
	if err != nil {
		return err
	}
	return p.wait()
}

// start runs c in a new process group, so that cancel, timeout and the
// end of the command reach everything it spawned, not just its first
// process. Output goes to the log through pipes the job reads itself
// (not exec's copying), so a background child that keeps a pipe open
// cannot make the job hang.
func (j *job) start(ctx context.Context, c cmdSpec) (*proc, error) {
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	argv := c.argv
	if c.asUser {
		// The agent runs with umask 077 (systemd unit); releases must be
		// readable by the web server like any deploy's. A bash -c command
		// sets it itself; anything else goes through sh, a process more.
		if len(argv) >= 3 && argv[0] == "bash" && argv[1] == "-c" {
			argv = append([]string{"bash", "-c", "umask 022\n" + argv[2]}, argv[3:]...)
		} else {
			argv = append([]string{"/bin/sh", "-c", `umask 022 && exec "$@"`, "sh"}, argv...)
		}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Env = c.dir, c.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if c.asUser && j.user.cred != nil {
		cmd.SysProcAttr.Credential = j.user.cred
	}
	if c.stdin != nil {
		cmd.Stdin = c.stdin
	}
	cmd.ExtraFiles = c.extra
	p := &proc{j: j, cmd: cmd, name: filepath.Base(c.argv[0]), exited: make(chan struct{})}
	var wfiles []*os.File
	pipe := func() (*os.File, error) {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		p.rfiles = append(p.rfiles, r)
		wfiles = append(wfiles, w)
		return w, nil
	}
	closeAll := func() {
		for _, f := range append(p.rfiles, wfiles...) {
			f.Close()
		}
	}
	var err error
	if c.stdout != nil {
		cmd.Stdout = c.stdout
	} else if cmd.Stdout, err = pipe(); err != nil {
		return nil, err
	}
	if cmd.Stderr, err = pipe(); err != nil {
		closeAll()
		return nil, err
	}
	sinks := make([]func(io.Reader), len(p.rfiles))
	for i := range sinks {
		sinks[i] = j.log.pump
	}
	if c.stderr != nil {
		sinks[len(sinks)-1] = func(r io.Reader) { io.Copy(c.stderr, r) }
	}
	if c.echo != "" {
		j.log.printf("$ %s", c.echo)
	}
	err = cmd.Start()
	j.markSpawned()
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("start %s: %w", p.name, err)
	}
	for _, w := range wfiles {
		w.Close()
	}
	pgid := cmd.Process.Pid
	p.untracked = true
	if c.background {
		// Best effort: at worst it competes like any other process.
		syscall.Setpriority(syscall.PRIO_PROCESS, pgid, 19)
	}
	if !c.untracked {
		p.track()
	}
	for i, r := range p.rfiles {
		p.readers.Add(1)
		go func() {
			defer p.readers.Done()
			sinks[i](r)
		}()
	}
	grace := j.e.cfg.KillGrace
	go func() {
		select {
		case <-p.exited:
			return
		case <-ctx.Done():
		}
		syscall.Kill(-pgid, syscall.SIGTERM)
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-p.exited:
		case <-t.C:
			syscall.Kill(-pgid, syscall.SIGKILL)
		}
	}()
	return p, nil
}

// track journals p's process group as the job's, for Recover to end if the
// agent dies; wait forgets it.
func (p *proc) track() {
	// Not worth a wait for the disk: the group matters to Recover after
	// the agent alone died, when the page cache still holds the file; a
	// power cut ends the processes too.
	pgid := p.cmd.Process.Pid
	start, _ := procStartTime(pgid)
	if err := p.j.writeState(func(s *jobState) { s.PGID, s.PGIDStart, s.BootID = pgid, start, bootID() }, false); err != nil {
		p.j.e.log.Error("journal state", "job", p.j.id, "err", err)
	}
	p.untracked = false
}

// wait waits for the process, then ends what it left running in its group
// (a job's processes end with their step), then drains its output.
func (p *proc) wait() error {
	err := p.cmd.Wait()
	close(p.exited)
	pgid := p.cmd.Process.Pid
	terminateGroup(pgid, p.j.e.cfg.KillGrace)
	done := make(chan struct{})
	go func() { p.readers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		// Something left the group (setsid) and kept the pipe: stop
		// reading rather than hang the job.
		for _, r := range p.rfiles {
			r.Close()
		}
		<-done
	}
	for _, r := range p.rfiles {
		r.Close()
	}
	if !p.untracked {
		if serr := p.j.writeState(func(s *jobState) { s.PGID, s.PGIDStart = 0, 0 }, false); serr != nil {
			p.j.e.log.Error("journal state", "job", p.j.id, "err", serr)
		}
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		ws, _ := ee.Sys().(syscall.WaitStatus)
		code := ws.ExitStatus()
		if ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		return &exitError{name: p.name, code: code}
	}
	if err != nil {
		return fmt.Errorf("%s: %w", p.name, err)
	}
	return nil
}

// terminateGroup sends SIGTERM to a process group that still has live
// members, then SIGKILL to what is left after grace.
func terminateGroup(pgid int, grace time.Duration) {
	if !groupAlive(pgid) {
		return
	}
	syscall.Kill(-pgid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for groupAlive(pgid) {
		if time.Now().After(deadline) {
			syscall.Kill(-pgid, syscall.SIGKILL)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// killOrphanGroup ends a process group a dead agent left behind, if it is
// still the same group: same boot, and either its leader has the recorded
// start time or the leader is gone while the group lives on (a pgid is not
// reused while its group exists).
func killOrphanGroup(pgid int, start uint64, boot string, grace time.Duration) {
	if boot == "" || boot != bootID() {
		return
	}
	if st, err := procStartTime(pgid); err == nil && st != start {
		return // the pid now belongs to someone else
	}
	terminateGroup(pgid, grace)
}

// groupAlive reports whether any process that is not a zombie has process
// group pgid. Zombies count as gone: they are dead, only not yet reaped
// (and kill(-pgid, 0) would still succeed on them).
func groupAlive(pgid int) bool {
	// Fast path: no process at all in the group (the usual case once a
	// step's command exited). Scanning /proc costs milliseconds per call,
	// and a deploy runs a dozen commands.
	if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	// Something is there: a live member, or only zombies (which signals
	// cannot end and which do not count).
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return syscall.Kill(-pgid, 0) == nil
	}
	for _, de := range ents {
		pid, err := strconv.Atoi(de.Name())
		if err != nil {
			continue
		}
		state, pg, _, err := procStat(pid)
		if err == nil && pg == pgid && state != "Z" && state != "X" {
			return true
		}
	}
	return false
}

// procStat reads state, process group and start time from /proc/pid/stat.
func procStat(pid int) (state string, pgrp int, start uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", 0, 0, err
	}
	// The command name may contain anything, so fields count from its ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", 0, 0, errors.New("malformed stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return "", 0, 0, errors.New("malformed stat")
	}
	pgrp, _ = strconv.Atoi(f[2])
	start, _ = strconv.ParseUint(f[19], 10, 64)
	return f[0], pgrp, start, nil
}

func procStartTime(pid int) (uint64, error) {
	_, _, start, err := procStat(pid)
	return start, err
}

func bootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
}

// rootEquivalentGroups are groups whose members can become root or read
// and write what only root may (sudo rules, the docker or lxd socket,
// raw disks, the shadow file, logs with secrets). A user in one of them
// is root by another road, so it needs the allow-root setting too.
var rootEquivalentGroups = []string{"root", "sudo", "wheel", "admin", "docker", "lxd", "incus-admin", "disk", "shadow", "adm", "kvm"}

// privilegedGroup names a root-equivalent group of u (primary gid 0
// included), if it has one.
func privilegedGroup(u *user.User) (string, bool) {
	gids, err := u.GroupIds()
	if err != nil {
		return "(unknown: its groups cannot be read)", true
	}
	for _, gid := range append([]string{u.Gid}, gids...) {
		if gid == "0" {
			return "root (gid 0)", true
		}
		g, err := user.LookupGroupId(gid)
		if err != nil {
			continue
		}
		if slices.Contains(rootEquivalentGroups, g.Name) {
			return g.Name, true
		}
	}
	return "", false
}
