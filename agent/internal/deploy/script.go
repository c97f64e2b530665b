package deploy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

// shell is the deploy script's bash, started at the beginning of a deploy
// and waiting, before it runs anything, for the commit on fd 4 and the
// script on fd 3. Starting a process is the costliest thing a deploy does
// before its script (milliseconds on a small VM), so bash does its
// start-up while the release is fetched and unpacked.
//
// The script reaches bash through a pipe on fd 3, not argv (ps would show
// it) and not a file (the app user could not read the agent's private
// dir). bash enters the release only once it is complete, and if the
// deploy fails before its build step the pipes close unwritten and bash
// exits without running anything.
type shell struct {
	j       *job
	ctx     context.Context
	release string
	ready   chan struct{} // closed once p (or err) is set
	p       *proc
	err     error
	commit  *os.File // write ends: fd 4 and fd 3 of bash
	script  *os.File
	used    bool
}

// startShell starts bash in the background; a deploy without a script
// gets none.
func (j *job) startShell(ctx context.Context, release string) *shell {
	sh := &shell{j: j, ctx: ctx, release: release, ready: make(chan struct{})}
	if strings.TrimSpace(j.spec.DeployScript) == "" && j.spec.DeployScriptPath == "" {
		close(sh.ready)
		return sh
	}
	go func() {
		defer close(sh.ready)
		// Process starts are serialised (fork holds a lock), and the
		// fetch step's git, whose output everything after waits for,
		// goes first; bash still has that git's whole run to start.
		select {
		case <-j.spawned:
		case <-ctx.Done():
			sh.err = context.Cause(ctx)
			return
		}
		sh.p, sh.err = sh.start()
	}()
	return sh
}

func (sh *shell) start() (*proc, error) {
	j := sh.j
	scriptR, scriptW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	commitR, commitW, err := os.Pipe()
	if err != nil {
		scriptR.Close()
		scriptW.Close()
		return nil, err
	}
	closeAll := func() {
		for _, f := range []*os.File{scriptR, scriptW, commitR, commitW} {
			f.Close()
		}
	}
	if j.user.cred != nil {
		// bash opens /dev/fd/3 afresh, which checks the pipe's owner.
		if err := scriptR.Chown(j.user.uid, j.user.gid); err != nil {
			closeAll()
			return nil, err
		}
	}
	// The release is quoted here, not taken from the environment, which
	// the app's own variables may override. OLDPWD would name where
	// bash waited.
	wrapper := "IFS= read -r BERTH_COMMIT <&4 || exit 1\n" +
		"exec 4<&-\n" +
		"export BERTH_COMMIT\n" +
		"cd -- " + shellQuote(sh.release) + " || exit 1\n" +
		"unset OLDPWD\n" +
		". /dev/fd/3"
	p, err := j.start(sh.ctx, cmdSpec{
		// bash -c: the umask is set without another process (see start).
		argv: []string{"bash", "-c", wrapper, "deploy-script"}, dir: "/",
		env: j.userEnv(sh.release, ""), asUser: true, extra: []*os.File{scriptR, commitR},
		untracked: true, // journaled when the script is handed over
	})
	scriptR.Close()
	commitR.Close()
	if err != nil {
		scriptW.Close()
		commitW.Close()
		return nil, err
	}
	sh.script, sh.commit = scriptW, commitW
	return p, nil
}

// run is the build step: it hands bash the commit and the script and waits
// for the script. started is called once the script runs (or there is
// none).
func (sh *shell) run(commit string, started func()) error {
	j := sh.j
	<-sh.ready
	if sh.p == nil && sh.err == nil {
		started()
		j.log.printf("no deploy script configured")
		return nil
	}
	if sh.err != nil {
		started()
		return sh.err
	}
	script := j.spec.DeployScript
	if j.spec.DeployScriptPath != "" {
		var err error
		if script, err = j.releaseScript(); err != nil {
			started()
			return err
		}
		j.log.printf("deploy script: %s of the release", j.spec.DeployScriptPath)
	}
	sh.used = true
	sh.p.track()
	_, err := fmt.Fprintf(sh.commit, "%s\n", commit)
	sh.commit.Close()
	if err != nil {
		sh.script.Close()
		sh.p.wait()
		return fmt.Errorf("start the deploy script: %w", err)
	}
	go func() {
		// bash reads the script as it runs; an early exit just ends this.
		sh.script.WriteString(script)
		sh.script.Close()
	}()
	started()
	return sh.p.wait()
}

// discard ends a shell the deploy did not get to use: its pipes close
// unwritten and bash exits without running anything.
func (sh *shell) discard() {
	<-sh.ready
	if sh.used || sh.p == nil {
		return
	}
	sh.commit.Close()
	sh.script.Close()
	sh.p.wait()
}

// releaseScript reads the deploy script from the release being deployed,
// through an os.Root opened on the release: a symlink committed to the
// repository may point within the release, never out of it.
func (j *job) releaseScript() (string, error) {
	rr, err := j.tree.root.OpenRoot(releaseRel(j.id))
	if err != nil {
		return "", err
	}
	defer rr.Close()
	f, err := rr.Open(j.spec.DeployScriptPath)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("the deploy script %s is not in the release (deploy script path of the app)", j.spec.DeployScriptPath)
	}
	if err != nil {
		return "", fmt.Errorf("deploy script %s: %w", j.spec.DeployScriptPath, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("the deploy script %s in the release is not a regular file", j.spec.DeployScriptPath)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxDeployScript+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxDeployScript {
		return "", fmt.Errorf("the deploy script %s is larger than 256 KiB", j.spec.DeployScriptPath)
	}
	return string(b), nil
}
