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
	"time"
)

const minimalPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func (j *job) mirrorPath() string { return filepath.Join(j.e.mirrorsDir, j.spec.AppID+".git") }

// gitEnv is git's whole environment: nothing inherited from the agent, no
// prompts, HOME in the job's private tmp dir (no user config, nowhere for
// a credential helper to store anything). The credential travels in the
// environment only, never in argv (ps) or a config file.
func (j *job) gitEnv() ([]string, error) {
	env := []string{
		"PATH=" + minimalPath,
		"HOME=" + j.tmp,
		"LC_ALL=C",
		"GIT_TERMINAL_PROMPT=0",
	}
	c := j.spec.Credential
	switch c.kind() {
	case "https":
		basic := base64.StdEncoding.EncodeToString([]byte(c.Username + ":" + c.Token))
		env = append(env,
			"GIT_CONFIG_COUNT=2",
			"GIT_CONFIG_KEY_0=http.extraHeader",
			"GIT_CONFIG_VALUE_0=Authorization: Basic "+basic,
			// No credential helper may hand over (or store) anything else.
			"GIT_CONFIG_KEY_1=credential.helper",
			"GIT_CONFIG_VALUE_1=",
		)
	case "ssh":
		key := filepath.Join(j.tmp, "id_key")
		if _, err := os.Stat(key); err != nil {
			pem := strings.TrimSpace(c.SSHPrivateKey) + "\n" // ssh insists on the final newline
			if err := os.WriteFile(key, []byte(pem), 0o600); err != nil {
				return nil, err
			}
		}
		// Host keys are kept per app: accepted on first use, then pinned.
		known := filepath.Join(j.e.mirrorsDir, j.spec.AppID+".known_hosts")
		env = append(env, "GIT_SSH_COMMAND=ssh -F /dev/null -i "+shellQuote(key)+
			" -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=accept-new"+
			" -o UserKnownHostsFile="+shellQuote(known))
	}
	return env, nil
}

// git runs git as the agent's user, output into the log.
func (j *job) git(ctx context.Context, args ...string) error {
	env, err := j.gitEnv()
	if err != nil {
		return err
	}
	return j.run(ctx, cmdSpec{
		argv: append([]string{"git"}, args...), env: env, dir: j.tmp,
		echo: j.redact.string("git " + strings.Join(args, " ")),
	})
}

// gitOutput runs git and returns its stdout; stderr goes to the log.
func (j *job) gitOutput(ctx context.Context, args ...string) (string, error) {
	env, err := j.gitEnv()
	if err != nil {
		return "", err
	}
	var out bytes.Buffer
	err = j.run(ctx, cmdSpec{argv: append([]string{"git"}, args...), env: env, dir: j.tmp, stdout: &out, untracked: true})
	return strings.TrimSpace(out.String()), err
}

// fetch brings the app's mirror up to date (cloning it the first time)
// and resolves the commit to deploy. Every git process costs time on the
// deploy's critical path, so the common cases spawn as few as possible:
// a pinned commit already in the mirror needs no fetch at all (a commit
// names its content), and a fetch names the URL and refspecs itself
// instead of rewriting the mirror's remote first.
func (j *job) fetch(ctx context.Context, res *Result) error {
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
		if sha, msg, onBranch, err := j.resolve(ctx, m, rev); err == nil {
			j.log.printf("commit %s is in the cached mirror; no fetch needed", sha)
			return j.resolved(sha, msg, onBranch, res)
		}
	}
	if have {
		err := j.git(ctx, "--git-dir", m, "fetch", "--prune", "--no-auto-maintenance", "--no-write-fetch-head",
			"--", j.spec.RepoURL, "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			// Only a mirror git no longer recognises is cloned again; a
			// remote that refuses or cannot be reached is the error.
			if _, derr := j.gitOutput(ctx, "--git-dir", m, "rev-parse", "--git-dir"); derr == nil || ctx.Err() != nil {
				return err
			}
			j.log.printf("[berth] the cached mirror is damaged; cloning again")
			have = false
		}
	}
	if !have {
		// Clone beside it and rename, so a failed first clone leaves no
		// half-mirror to trip over next time.
		tmp := m + ".tmp-" + j.id
		os.RemoveAll(tmp)
		os.RemoveAll(m)
		if err := j.git(ctx, "clone", "--mirror", "--", j.spec.RepoURL, tmp); err != nil {
			os.RemoveAll(tmp)
			return err
		}
		if err := os.Rename(tmp, m); err != nil {
			return err
		}
	}
	sha, msg, onBranch, err := j.resolve(ctx, m, rev)
	if err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return fmt.Errorf("%s not found in the repository", what)
	}
	return j.resolved(sha, msg, onBranch, res)
}

// resolve names rev's commit and its subject with one git process. For a
// pinned commit it also says whether the commit is on the app's branch,
// asked by a second git process running beside the first.
func (j *job) resolve(ctx context.Context, mirror, rev string) (sha, msg string, onBranch bool, err error) {
	branchCheck := make(chan bool, 1)
	if j.spec.Commit != "" && j.spec.Branch != "" {
		go func() {
			_, err := j.gitOutput(ctx, "--git-dir", mirror, "merge-base", "--is-ancestor", "--end-of-options", j.spec.Commit, "refs/heads/"+j.spec.Branch)
			branchCheck <- err == nil || ctx.Err() != nil
		}()
	} else {
		branchCheck <- true
	}
	out, err := j.gitOutput(ctx, "--git-dir", mirror, "log", "-1", "--format=%H%x00%s", "--end-of-options", rev+"^{commit}", "--")
	onBranch = <-branchCheck
	if err != nil {
		return "", "", false, err
	}
	sha, msg, ok := strings.Cut(out, "\x00")
	if !ok || len(sha) < 40 {
		return "", "", false, fmt.Errorf("git log printed no commit for %s", rev)
	}
	return sha, msg, onBranch, nil
}

// resolved records the commit about to be deployed.
func (j *job) resolved(sha, msg string, onBranch bool, res *Result) error {
	if !onBranch {
		// A pinned commit should belong to the app's branch; say so, but
		// deploy it: the controller asked for it.
		j.log.printf("[berth] note: commit %s is not on branch %s", sha, j.spec.Branch)
	}
	res.Commit, res.CommitMessage = sha, msg
	if err := j.saveState(func(s *jobState) { s.Commit, s.CommitMessage = sha, msg }); err != nil {
		return err
	}
	j.log.printf("commit %s: %s", sha, msg)
	j.emit(Event{Type: EventProgress, Step: StepFetch, Commit: sha, CommitMessage: msg})
	return nil
}

// checkout unpacks the commit's tree into a new release directory with
// `git archive | tar`: the release gets plain files, no .git, nothing that
// points back at the mirror or any credential.
func (j *job) checkout(ctx context.Context, sha, release string) error {
	releases := filepath.Dir(release)
	if err := j.mkdirOwned(releases); err != nil {
		return err
	}
	if err := os.Mkdir(release, 0o755); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("release directory %s already exists", release)
		}
		return err
	}
	if err := j.saveState(func(s *jobState) { s.Release = release }); err != nil {
		os.Remove(release)
		return err
	}
	if err := os.Chmod(release, 0o755); err != nil {
		return err
	}
	if err := j.user.chown(release); err != nil {
		return err
	}
	env, err := j.gitEnv()
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	archive, err := j.start(ctx, cmdSpec{
		argv: []string{"git", "-c", "tar.umask=0022", "--git-dir", j.mirrorPath(), "archive", "--format=tar", sha},
		env:  env, dir: j.tmp, stdout: w,
		echo: "git archive " + sha + " into " + release,
	})
	w.Close()
	if err != nil {
		r.Close()
		return err
	}
	// Unpacked here rather than by tar as the app user: one process less
	// on every deploy, and os.Root keeps every entry inside the release
	// whatever names or symlinks the repository holds.
	xerr := extractTar(r, release, j.user)
	r.Close() // an early stop makes git archive end on a broken pipe
	aerr := archive.wait()
	if aerr != nil {
		return aerr
	}
	if xerr != nil {
		return fmt.Errorf("unpack the release: %w", xerr)
	}
	return nil
}

// extractTar unpacks a tar stream made by git archive into dir: its
// directories, regular files and symlinks, with their modes and times,
// owned by the app user. Entries cannot leave dir: os.Root resolves every
// name beneath it, symlinks included.
func extractTar(r io.Reader, dir string, u *runAs) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
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
			continue // git archive's commit id
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
