package deploy

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
	err = j.run(ctx, cmdSpec{argv: append([]string{"git"}, args...), env: env, dir: j.tmp, stdout: &out})
	return strings.TrimSpace(out.String()), err
}

// fetch brings the app's mirror up to date (cloning it the first time)
// and resolves the commit to deploy.
func (j *job) fetch(ctx context.Context, res *Result) error {
	m := j.mirrorPath()
	fresh := true
	if _, err := os.Stat(filepath.Join(m, "HEAD")); err == nil {
		if _, err := j.gitOutput(ctx, "--git-dir", m, "rev-parse", "--git-dir"); err == nil {
			fresh = false
		} else if ctx.Err() == nil {
			j.log.printf("[berth] the cached mirror is damaged; cloning again")
		}
	}
	if fresh {
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
	} else {
		// The app's URL may have changed since the last fetch.
		if _, err := j.gitOutput(ctx, "--git-dir", m, "remote", "set-url", "origin", j.spec.RepoURL); err != nil {
			return err
		}
		if err := j.git(ctx, "--git-dir", m, "fetch", "--prune", "origin"); err != nil {
			return err
		}
	}

	rev, what := "HEAD", "the default branch"
	switch {
	case j.spec.Commit != "":
		rev, what = j.spec.Commit, "commit "+j.spec.Commit
	case j.spec.Branch != "":
		rev, what = "refs/heads/"+j.spec.Branch, "branch "+j.spec.Branch
	}
	sha, err := j.gitOutput(ctx, "--git-dir", m, "rev-parse", "--verify", "--quiet", "--end-of-options", rev+"^{commit}")
	if err != nil || sha == "" {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return fmt.Errorf("%s not found in the repository", what)
	}
	if j.spec.Commit != "" && j.spec.Branch != "" {
		// A pinned commit should belong to the app's branch; say so when
		// it does not, but deploy it: the controller asked for it.
		if _, err := j.gitOutput(ctx, "--git-dir", m, "merge-base", "--is-ancestor", sha, "refs/heads/"+j.spec.Branch); err != nil && ctx.Err() == nil {
			j.log.printf("[berth] note: commit %s is not on branch %s", sha, j.spec.Branch)
		}
	}
	msg, err := j.gitOutput(ctx, "--git-dir", m, "log", "-1", "--format=%s", sha)
	if err != nil {
		return err
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
	tar, err := j.start(ctx, cmdSpec{
		argv: []string{"tar", "-x", "--no-same-owner", "-f", "-", "-C", release},
		dir:  release, env: j.userEnv(release, sha), asUser: true, stdin: r,
	})
	if err != nil {
		r.Close()
		w.Close()
		return err
	}
	archive, err := j.start(ctx, cmdSpec{
		argv: []string{"git", "-c", "tar.umask=0022", "--git-dir", j.mirrorPath(), "archive", "--format=tar", sha},
		env:  env, dir: j.tmp, stdout: w,
		echo: "git archive " + sha + " | tar -x -C " + release,
	})
	r.Close()
	w.Close()
	if err != nil {
		tar.wait()
		return err
	}
	aerr := archive.wait()
	terr := tar.wait()
	if aerr != nil {
		return aerr
	}
	return terr
}

// shellQuote quotes s for sh (GIT_SSH_COMMAND is run by a shell).
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
