package deploy

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

const minimalPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func (j *job) mirrorPath() string { return filepath.Join(j.e.mirrorsDir, j.spec.AppID+".git") }

// gitEnv is git's whole environment: nothing inherited from the agent, no
// prompts, HOME in the job's private tmp dir (no user config, nowhere for
// a credential helper to store anything). It carries no credential: only
// the fetch gets one (fetchEnv), so the git processes that may still run
// beside the deploy script (git archive, describe, housekeeping) have
// nothing in their environment a root script could read.
func (j *job) gitEnv() []string {
	env := []string{
		"PATH=" + minimalPath,
		"HOME=" + j.tmp,
		"LC_ALL=C",
		"GIT_TERMINAL_PROMPT=0",
	}
	// ssh never learns a host key: without a credential's pinned keys an
	// ssh remote is refused rather than trusted on first use.
	return append(env, "GIT_SSH_COMMAND=ssh -F /dev/null -o BatchMode=yes"+strictHostKeys("/dev/null"))
}

func strictHostKeys(knownHosts string) string {
	return " -o StrictHostKeyChecking=yes -o UpdateHostKeys=no -o GlobalKnownHostsFile=/dev/null" +
		" -o UserKnownHostsFile=" + shellQuote(knownHosts)
}

// sshDir holds the SSH key and pinned host keys while the fetch runs: in
// the job's tmp dir under the agent's data dir (0700, the agent's user
// only), removed by dropCredential before the deploy script is handed over.
func (j *job) sshDir() string { return filepath.Join(j.tmp, "ssh") }

// fetchEnv is gitEnv plus the credential, for the git processes that talk
// to the remote (clone and fetch). The credential travels in the
// environment only, never in argv (ps) or a config file.
func (j *job) fetchEnv() ([]string, error) {
	env := j.gitEnv()
	c := j.spec.Credential
	if c == nil {
		return env, nil
	}
	j.credMu.Lock()
	defer j.credMu.Unlock()
	if j.credDropped {
		// A bug, not a user error: nothing may talk to the remote once
		// the script can run.
		return nil, errors.New("the git credential was already removed for this job")
	}
	switch c.kind() {
	case "https":
		env = append(env,
			"GIT_CONFIG_COUNT=2",
			"GIT_CONFIG_KEY_0=http.extraHeader",
			"GIT_CONFIG_VALUE_0=Authorization: "+c.basicAuth(),
			// No credential helper may hand over (or store) anything else.
			"GIT_CONFIG_KEY_1=credential.helper",
			"GIT_CONFIG_VALUE_1=",
		)
	case "ssh":
		dir := j.sshDir()
		key, known := filepath.Join(dir, "id_key"), filepath.Join(dir, "known_hosts")
		if _, err := os.Stat(key); err != nil {
			if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return nil, err
			}
			// Exactly the pinned keys: nothing learned, nothing inherited.
			if err := os.WriteFile(known, []byte(strings.TrimSpace(c.KnownHosts)+"\n"), 0o600); err != nil {
				return nil, err
			}
			pem := strings.TrimSpace(c.SSHPrivateKey) + "\n" // ssh insists on the final newline
			if err := os.WriteFile(key, []byte(pem), 0o600); err != nil {
				return nil, err
			}
		}
		env[len(env)-1] = "GIT_SSH_COMMAND=ssh -F /dev/null -i " + shellQuote(key) +
			" -o IdentitiesOnly=yes -o BatchMode=yes" + strictHostKeys(known)
	}
	return env, nil
}

// dropCredential removes the SSH key and host keys from disk and makes
// any later fetchEnv fail. The deploy calls it once the fetch step is
// over, before the script (which may run as root) can read anything.
func (j *job) dropCredential() error {
	j.credMu.Lock()
	defer j.credMu.Unlock()
	j.credDropped = true
	if err := os.RemoveAll(j.sshDir()); err != nil {
		return fmt.Errorf("remove the fetch's SSH key: %w", err)
	}
	return nil
}

// basicAuth is the Authorization header value of an https credential.
func (c *Credential) basicAuth() string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(c.Username+":"+c.Token))
}

// git runs git as the agent's user, output into the log, without the
// credential.
func (j *job) git(ctx context.Context, args ...string) error {
	return j.runGit(ctx, j.gitEnv(), args...)
}

// gitRemote runs a git that talks to the remote, with the credential.
func (j *job) gitRemote(ctx context.Context, args ...string) error {
	env, err := j.fetchEnv()
	if err != nil {
		return err
	}
	return j.runGit(ctx, env, args...)
}

func (j *job) runGit(ctx context.Context, env []string, args ...string) error {
	return j.run(ctx, cmdSpec{
		argv: append([]string{"git"}, args...), env: env, dir: j.tmp,
		echo: j.redact.string("git " + strings.Join(args, " ")),
	})
}

// gitRead runs a read-only git query shaped by c (its stderr goes to the
// log unless c says otherwise) and returns its stdout.
func (j *job) gitRead(ctx context.Context, c cmdSpec, args ...string) (string, error) {
	env := j.gitEnv()
	var out bytes.Buffer
	c.argv, c.env, c.dir, c.stdout, c.untracked = append([]string{"git"}, args...), env, j.tmp, &out, true
	err := j.run(ctx, c)
	return strings.TrimSpace(out.String()), err
}

// fetch brings the app's mirror up to date (cloning it the first time),
// names the commit to deploy and leaves it unpacking into release; the
// checkout step waits for that. Every process costs time on the deploy's
// critical path (milliseconds each, on a small VM), so a deploy spawns as
// few as it can before the script starts: a pinned commit already in the
// mirror needs no fetch at all (a commit names its content); a fetch names
// the URL and refspecs itself instead of rewriting the mirror's remote
// first; and git archive alone both resolves the revision (its header names
// the commit) and produces the release. What only the UI needs (the
// commit's subject, whether a pinned commit is on the branch) is asked of
// git once the deploy script runs (see describe).
func (j *job) fetch(ctx context.Context, release string, res *Result) (*unpack, error) {
	m := j.mirrorPath()
	rev, what := "HEAD", "the default branch"
	switch {
	case j.spec.Commit != "":
		rev, what = j.spec.Commit, "commit "+j.spec.Commit
	case j.spec.Branch != "":
		rev, what = "refs/heads/"+j.spec.Branch, "branch "+j.spec.Branch
	}
	_, err := os.Stat(filepath.Join(m, "HEAD"))
	have := err == nil
	if have && j.spec.Commit != "" {
		// Not in the mirror (most likely), the fetch below brings it.
		if u, sha, err := j.unpackIfPresent(ctx, rev, release, ""); u != nil || err != nil {
			if u != nil {
				j.log.printf("commit %s is in the cached mirror; no fetch needed", sha)
				err = j.resolved(sha, res)
			}
			return u, err
		}
	}
	// The branch head as the mirror has it is, most of the time, what the
	// fetch will find (a redeploy, one for changed settings or variables):
	// it unpacks beside the fetch, on the guess, and is kept if the fetch
	// leaves the branch where it was. A wrong guess is thrown away, after
	// at most speculativeBytes of files.
	var guess *unpack
	guessed, name := "", ""
	if have && j.spec.Commit == "" {
		if name, guessed = resolveRef(m, rev); guessed != "" {
			// A repository on this machine tells where its branch is
			// without a fetch: reading its refs is what git's local
			// transport does too, minus four processes. The mirror
			// holds that commit already if its ref says the same.
			if dir := localGitDir(j.spec.RepoURL); dir != "" && readRef(dir, name) == guessed {
				if u, _, err := j.unpackIfPresent(ctx, guessed, release, guessed); u != nil || err != nil {
					if u != nil {
						j.log.printf("%s of %s is where the cached mirror has it; no fetch needed", what, j.spec.RepoURL)
						err = j.resolved(guessed, res)
					}
					return u, err
				}
			}
			guess = j.startUnpack(ctx, guessed, release, true)
		}
	}
	dropGuess := func() error {
		if guess == nil {
			return nil
		}
		g := guess
		guess = nil
		return g.abort()
	}
	// confirmGuess lets a confirmed guess unpack to the end, if it names
	// the commit it was started on.
	confirmGuess := func() bool {
		close(guess.held)
		sha, err := guess.commitID()
		return err == nil && sha == guessed
	}
	if have {
		var err error
		if guess != nil && (strings.HasPrefix(j.spec.RepoURL, "https://") || strings.HasPrefix(j.spec.RepoURL, "http://")) {
			var confirmed bool
			if confirmed, err = j.fetchOrConfirm(ctx, m, name, guessed); confirmed {
				if confirmGuess() {
					j.log.printf("%s has not moved on the remote (asked it directly); the fetch was stopped", what)
					return guess, j.resolved(guessed, res)
				}
				// The mirror could not unpack it after all: fetch as usual.
				if err := dropGuess(); err != nil {
					return nil, err
				}
				err = j.fetchMirror(ctx, m)
			}
		} else {
			err = j.fetchMirror(ctx, m)
		}
		if err != nil {
			if aerr := dropGuess(); aerr != nil {
				return nil, aerr
			}
			if ctx.Err() != nil {
				return nil, err
			}
			// Only a mirror git no longer recognises is cloned again; a
			// remote that refuses or cannot be reached is the error.
			if _, derr := j.gitRead(ctx, cmdSpec{}, "--git-dir", m, "rev-parse", "--git-dir"); derr == nil || ctx.Err() != nil {
				return nil, err
			}
			j.log.printf("[berth] the cached mirror is damaged; cloning again")
			have = false
		}
	}
	if guess != nil {
		if readRef(m, rev) == guessed && confirmGuess() {
			j.log.printf("%s is where it was; unpacked beside the fetch", what)
			return guess, j.resolved(guessed, res)
		}
		if err := dropGuess(); err != nil {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
	}
	if !have {
		// Clone beside it and rename, so a failed first clone leaves no
		// half-mirror to trip over next time.
		tmp := m + ".tmp-" + j.id
		os.RemoveAll(tmp)
		os.RemoveAll(m)
		if err := j.gitRemote(ctx, "clone", "--mirror", "--", j.spec.RepoURL, tmp); err != nil {
			os.RemoveAll(tmp)
			return nil, err
		}
		if err := os.Rename(tmp, m); err != nil {
			return nil, err
		}
	}
	u := j.startUnpack(ctx, rev, release, false)
	sha, err := u.commitID()
	if err != nil {
		if aerr := u.abort(); aerr != nil {
			return nil, aerr
		}
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		// Only a revision git cannot name is "not found"; anything else
		// (a full disk, a broken mirror) is git's own error.
		if _, rerr := j.gitRead(ctx, cmdSpec{stderr: io.Discard}, "--git-dir", m, "rev-parse", "--verify", "--quiet", "--end-of-options", rev+"^{commit}"); rerr == nil {
			u.logStderr()
			return nil, err
		}
		return nil, fmt.Errorf("%s not found in the repository", what)
	}
	return u, j.resolved(sha, res)
}

// unpackIfPresent unpacks rev from the mirror if it names a commit there
// (the commit want, when set). If not, what it began is removed and it
// returns no unpack and no error (git's complaint is dropped), unless the
// job is stopping.
func (j *job) unpackIfPresent(ctx context.Context, rev, release, want string) (*unpack, string, error) {
	u := j.startUnpack(ctx, rev, release, false)
	if sha, err := u.commitID(); err == nil && (want == "" || sha == want) {
		return u, sha, nil
	}
	if err := u.abort(); err != nil {
		return nil, "", err
	}
	if ctx.Err() != nil {
		return nil, "", context.Cause(ctx)
	}
	return nil, "", nil
}

// fetchMirror brings every branch and tag of the remote into the mirror.
func (j *job) fetchMirror(ctx context.Context, mirror string) error {
	return j.gitRemote(ctx, "--git-dir", mirror, "fetch", "--prune", "--no-auto-maintenance", "--no-write-fetch-head",
		"--", j.spec.RepoURL, "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
}

// resolved records the commit about to be deployed.
func (j *job) resolved(sha string, res *Result) error {
	res.Commit = sha
	// Not worth a wait for the disk: a crash report without the commit
	// loses nothing the controller needs, and a power cut ends the job.
	if err := j.writeState(func(s *jobState) { s.Commit = sha }, false); err != nil {
		return err
	}
	j.log.printf("commit %s", sha)
	j.emit(Event{Type: EventProgress, Step: StepFetch, Commit: sha})
	return nil
}

// description is what the UI shows of the deployed commit beyond its id.
type description struct {
	done     chan struct{}
	cancel   context.CancelFunc
	msg      string
	onBranch bool
}

// describeWait bounds how long a finished deploy waits for its
// description: at the lowest priority on a saturated server the queries
// may crawl, and the result goes out without the subject rather than late.
const describeWait = 2 * time.Second

// wait returns once the description is done or, after describeWait,
// stopped unfinished.
func (d *description) wait() {
	select {
	case <-d.done:
	case <-time.After(describeWait):
		d.cancel()
		<-d.done
	}
}

// describe asks git for the commit's subject and, for a pinned commit,
// whether it is on the app's branch: two read-only queries the deploy
// script does not need, run side by side in the background at the lowest
// CPU priority and bounded by a minute of their own (a finished deploy
// waits for them at most describeWait). When they are done the subject
// goes to the controller, and a commit off the branch is noted in the log.
func (j *job) describe(ctx context.Context, sha string) *description {
	d := &description{done: make(chan struct{}), onBranch: true}
	ctx, d.cancel = context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	go func() {
		defer close(d.done)
		defer d.cancel()
		m := j.mirrorPath()
		bg := cmdSpec{stderr: io.Discard, background: true}
		branch := make(chan bool, 1)
		if j.spec.Commit != "" && j.spec.Branch != "" {
			go func() {
				_, err := j.gitRead(ctx, bg, "--git-dir", m, "merge-base", "--is-ancestor", "--end-of-options", sha, "refs/heads/"+j.spec.Branch)
				var ee *exitError
				branch <- !errors.As(err, &ee) || ee.code != 1 // 1 is "no"; other failures say nothing
			}()
		} else {
			branch <- true
		}
		msg, err := j.gitRead(ctx, bg, "--git-dir", m, "log", "-1", "--format=%s", "--end-of-options", sha, "--")
		d.onBranch = <-branch
		if !d.onBranch {
			// A pinned commit should belong to the app's branch; say so,
			// but deploy it: the controller asked for it.
			j.log.printf("[berth] note: commit %s is not on branch %s", sha, j.spec.Branch)
		}
		if err != nil || msg == "" || ctx.Err() != nil {
			return
		}
		d.msg = msg
		if err := j.writeState(func(s *jobState) { s.CommitMessage = msg }, false); err != nil {
			j.e.log.Error("journal state", "job", j.id, "err", err)
		}
		j.emit(Event{Type: EventProgress, Step: StepFetch, Commit: sha, CommitMessage: msg})
	}()
	return d
}

// unpack is `git archive | unpack` of one revision into a new release
// directory, in the background: the release gets plain files, no .git,
// nothing that points back at the mirror or any credential. The archive's
// first entry names the commit, which is how the fetch step resolves the
// revision without a git process of its own.
type unpack struct {
	j       *job
	rev     string
	release string
	cancel  context.CancelFunc
	named   chan struct{} // closed once commit is set or the unpack ended
	done    chan struct{}
	stderr  bytes.Buffer // git archive's complaints, logged only if they matter
	commit  string
	err     error
	// held, when set, pauses a speculative unpack after speculativeBytes
	// until it is closed (the unpack is wanted) or the unpack is stopped.
	held chan struct{}
}

// speculativeBytes bounds what an unpack started on a guess writes before
// the guess is confirmed: a guess proved wrong costs at most this much.
const speculativeBytes = 64 << 20

// startUnpack creates release and unpacks rev into it. The release
// directory is named by the job, so Recover finds it after a crash
// without a journal entry (see settleInterrupted).
// A speculative unpack pauses after speculativeBytes until its held
// channel is closed.
func (j *job) startUnpack(ctx context.Context, rev, release string, speculative bool) *unpack {
	uctx, cancel := context.WithCancel(ctx)
	u := &unpack{j: j, rev: rev, release: release, cancel: cancel, named: make(chan struct{}), done: make(chan struct{})}
	if speculative {
		u.held = make(chan struct{})
	}
	go func() {
		defer close(u.done)
		var once sync.Once
		name := func(c string) { once.Do(func() { u.commit = c; close(u.named) }) }
		u.err = u.run(uctx, name)
		name("")
	}()
	return u
}

func (u *unpack) run(ctx context.Context, name func(string)) error {
	j := u.j
	env := j.gitEnv()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	// Started first: git spends its start-up while the directory is made.
	archive, err := j.start(ctx, cmdSpec{
		argv: []string{"git", "-c", "tar.umask=0022", "--git-dir", j.mirrorPath(), "archive", "--format=tar", "--end-of-options", u.rev},
		env:  env, dir: j.tmp, stdout: w, stderr: &u.stderr, untracked: true,
	})
	w.Close()
	if err != nil {
		r.Close()
		return err
	}
	xerr := u.prepare()
	if xerr == nil {
		// Unpacked here rather than by tar as the app user: one process
		// less on every deploy, and os.Root keeps every entry inside the
		// release whatever names or symlinks the repository holds.
		var src io.Reader = r
		if u.held != nil {
			src = &heldReader{r: r, held: u.held, ctx: ctx, left: speculativeBytes}
		}
		xerr = j.extractRelease(src, name)
		if xerr == nil {
			// git archive pads its tar to a whole record (10 KiB) after
			// the end-of-archive blocks the tar reader stops at; with a
			// full pipe that rest is still unwritten, and closing now
			// would kill git with SIGPIPE and fail a good unpack. Read it
			// (bounded: anything past a record is not a git archive).
			_, _ = io.CopyN(io.Discard, r, 1<<20)
		}
	}
	r.Close() // an early stop (a failed unpack) makes git archive end on a broken pipe
	if xerr != nil {
		u.cancel()
	}
	aerr := archive.wait()
	if xerr != nil {
		return fmt.Errorf("unpack the release: %w", xerr)
	}
	return aerr
}

// prepare makes the empty release directory, owned by the app user.
func (u *unpack) prepare() error {
	j, release := u.j, u.release
	if err := j.durable(); err != nil {
		return err
	}
	if err := j.topDir("releases"); err != nil {
		return err
	}
	if err := j.tree.root.Mkdir(releaseRel(j.id), 0o755); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("release directory %s already exists", release)
		}
		return err
	}
	if err := j.writeState(func(s *jobState) { s.Release = release }, false); err != nil {
		return err
	}
	if err := j.tree.root.Chmod(releaseRel(j.id), 0o755); err != nil {
		return err
	}
	return j.lchown(releaseRel(j.id))
}

// extractRelease unpacks the archive into the job's release, opened
// beneath the app tree (the app user owns releases/ and could have put a
// link where the release was just made).
func (j *job) extractRelease(r io.Reader, named func(string)) error {
	root, err := j.tree.root.OpenRoot(releaseRel(j.id))
	if err != nil {
		return err
	}
	defer root.Close()
	return extractTar(r, root, j.user, named)
}

// commitID waits for the archive to name its commit.
func (u *unpack) commitID() (string, error) {
	<-u.named
	if u.commit != "" {
		return u.commit, nil
	}
	<-u.done
	if u.err != nil {
		return "", u.err
	}
	return "", fmt.Errorf("%s is not a commit", u.rev)
}

// wait is the checkout step: the rest of the tree lands in the release.
func (u *unpack) wait() error {
	<-u.done
	u.cancel()
	u.j.log.printf("$ git archive %s | unpack into %s", u.commit, u.release)
	if u.err != nil {
		u.logStderr()
	}
	return u.err
}

func (u *unpack) logStderr() {
	u.j.log.pump(bytes.NewReader(u.stderr.Bytes()))
}

// stop ends the unpack, if it still runs, and waits for it.
func (u *unpack) stop() {
	u.cancel()
	<-u.done
}

// abort stops an unpack that is not going to be used and removes what it
// unpacked.
func (u *unpack) abort() error {
	u.stop()
	if u.j.getState().Release != u.release {
		return nil // it never made the directory (which may be someone else's)
	}
	if err := u.j.tree.root.RemoveAll(releaseRel(u.j.id)); err != nil {
		return fmt.Errorf("remove an unused release: %w", err)
	}
	return u.j.writeState(func(s *jobState) { s.Release = "" }, false)
}

// extractTar unpacks a tar stream made by git archive into root: its
// directories, regular files and symlinks, with their modes and times,
// owned by the app user. Entries cannot leave root: os.Root resolves every
// name beneath it, symlinks included. named gets the commit id of the
// archive's global header, which comes first.
func extractTar(r io.Reader, root *os.Root, u *runAs, named func(commit string)) error {
	tr := tar.NewReader(r)
	type dirTime struct {
		name string
		t    time.Time
	}
	var dirs []dirTime // their times are set last: their entries change them
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			for i := len(dirs) - 1; i >= 0; i-- {
				if err := root.Chtimes(dirs[i].name, dirs[i].t, dirs[i].t); err != nil {
					return err
				}
			}
			return nil
		}
		if err != nil {
			return err
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			// git archive names the commit it read here.
			if c := h.PAXRecords["comment"]; c != "" && named != nil {
				named(c)
			}
			continue
		}
		name := path.Clean(h.Name)
		if name == "." {
			continue
		}
		if !filepath.IsLocal(name) {
			return fmt.Errorf("archive entry %q is outside the release", h.Name)
		}
		perm := fs.FileMode(h.Mode).Perm()
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.Mkdir(name, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
			// The agent's umask is 077: set the mode it asked for.
			if err := root.Chmod(name, perm); err != nil {
				return err
			}
			dirs = append(dirs, dirTime{name, h.ModTime})
		case tar.TypeReg:
			f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if err == nil {
				err = f.Chmod(perm)
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err == nil {
				err = root.Chtimes(name, h.ModTime, h.ModTime) // chown keeps it
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := root.Symlink(h.Linkname, name); err != nil {
				return err
			}
		default:
			return fmt.Errorf("archive entry %q has unexpected type %q", h.Name, h.Typeflag)
		}
		if u.cred != nil {
			if err := root.Lchown(name, u.uid, u.gid); err != nil {
				return err
			}
		}
	}
}

// shellQuote quotes s for sh (GIT_SSH_COMMAND is run by a shell).
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// heldReader passes a speculative unpack's archive through until left
// bytes are used, then waits for held to close (or ctx to end).
type heldReader struct {
	r    io.Reader
	held chan struct{}
	ctx  context.Context
	left int64
}

func (h *heldReader) Read(p []byte) (int, error) {
	if h.left <= 0 && h.held != nil {
		select {
		case <-h.held:
			h.held = nil
		case <-h.ctx.Done():
			return 0, context.Cause(h.ctx)
		}
	}
	if h.held != nil && int64(len(p)) > h.left {
		p = p[:h.left]
	}
	n, err := h.r.Read(p)
	h.left -= int64(n)
	return n, err
}

// readRef is the object id ref ("HEAD" or "refs/...") names in the
// repository gitDir, read from git's files (a loose ref, else
// packed-refs) without a git process; "" when it cannot tell, which only
// costs a deploy its head start.
func readRef(gitDir, ref string) string {
	_, id := resolveRef(gitDir, ref)
	return id
}

// resolveRef is readRef that also says which ref a symbolic one (HEAD)
// ended at.
func resolveRef(gitDir, ref string) (name, id string) {
	for range 5 { // symbolic refs, followed a few levels
		if !plainRefName(ref) {
			return "", ""
		}
		b, err := os.ReadFile(filepath.Join(gitDir, filepath.FromSlash(ref)))
		if errors.Is(err, fs.ErrNotExist) {
			return ref, packedRef(gitDir, ref)
		}
		if err != nil {
			return "", ""
		}
		v := strings.TrimSpace(string(b))
		if target, ok := strings.CutPrefix(v, "ref: "); ok {
			ref = target
			continue
		}
		if !isObjectID(v) {
			return "", ""
		}
		return ref, v
	}
	return "", ""
}

// localGitDir is the git directory of a repository URL that is a path on
// this machine (or a file:// URL): its .git, or itself when bare. ""
// for any other URL or layout (a .git file, say): the fetch decides.
func localGitDir(repoURL string) string {
	p := repoURL
	if rest, ok := strings.CutPrefix(repoURL, "file://"); ok {
		p = rest
	}
	if !filepath.IsAbs(p) {
		return ""
	}
	if fi, err := os.Stat(filepath.Join(p, ".git")); err == nil && fi.IsDir() {
		return filepath.Join(p, ".git")
	}
	if _, err := os.Stat(filepath.Join(p, "objects")); err == nil {
		if _, err := os.Stat(filepath.Join(p, "HEAD")); err == nil {
			return p
		}
	}
	return ""
}

func packedRef(gitDir, ref string) string {
	b, err := os.ReadFile(filepath.Join(gitDir, "packed-refs"))
	if err != nil {
		return ""
	}
	for line := range strings.Lines(string(b)) {
		id, name, ok := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
		if ok && name == ref && isObjectID(id) {
			return id
		}
	}
	return ""
}

// plainRefName admits the ref names readRef follows: HEAD and refs/...
// with nothing that could step outside the repository or that git would
// refuse anyway.
func plainRefName(ref string) bool {
	if ref == "HEAD" {
		return true
	}
	if !strings.HasPrefix(ref, "refs/") || strings.HasSuffix(ref, "/") || strings.HasSuffix(ref, ".lock") ||
		strings.Contains(ref, "..") || strings.Contains(ref, "//") || strings.Contains(ref, "/.") {
		return false
	}
	for _, c := range ref {
		if c <= ' ' || c == 0x7f || strings.ContainsRune("\\~^:?*[", c) {
			return false
		}
	}
	return true
}

// isObjectID says whether s is a full SHA-1 or SHA-256 object id.
func isObjectID(s string) bool {
	return (len(s) == 40 || len(s) == 64) && shaRE.MatchString(s)
}
