package deploy

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

func releasePath(deployPath, id string) string {
	return filepath.Join(deployPath, "releases", id)
}

// readCurrent returns where DeployPath/current points ("" when absent).
func readCurrent(deployPath string) (string, error) {
	t, err := os.Readlink(filepath.Join(deployPath, "current"))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	return t, err
}

// releaseIDOf returns the release id a `current` target names, or "" when
// it is not a release of deployPath.
func releaseIDOf(deployPath, target string) string {
	if target == "" {
		return ""
	}
	if !filepath.IsAbs(target) {
		target = filepath.Join(deployPath, target)
	}
	target = filepath.Clean(target)
	if filepath.Dir(target) != filepath.Join(deployPath, "releases") || !IsReleaseID(filepath.Base(target)) {
		return ""
	}
	return filepath.Base(target)
}

// switchCurrent points DeployPath/current at target atomically: a new
// symlink under a temporary name renamed over the old one, so there is no
// moment without a `current`.
func switchCurrent(deployPath, target string, owner *runAs) error {
	tmp := filepath.Join(deployPath, ".current.tmp-"+randHex())
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	if owner != nil {
		if err := owner.chown(tmp); err != nil {
			os.Remove(tmp)
			return err
		}
	}
	if err := os.Rename(tmp, filepath.Join(deployPath, "current")); err != nil {
		os.Remove(tmp)
		if fi, serr := os.Lstat(filepath.Join(deployPath, "current")); serr == nil && fi.IsDir() {
			return fmt.Errorf("%s/current is a directory, not a symlink: move it away once", deployPath)
		}
		return err
	}
	return syncDir(deployPath)
}

// restoreCurrent puts `current` back to target, or removes it when there
// was none.
func restoreCurrent(deployPath, target string) error {
	if target == "" {
		err := os.Remove(filepath.Join(deployPath, "current"))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	return switchCurrent(deployPath, target, nil)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func randHex() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// mkdirOwned makes dir and any missing parents, giving the ones it makes
// to the app user.
func (j *job) mkdirOwned(dir string) error {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		return nil
	}
	if err := j.mkdirOwned(filepath.Dir(dir)); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if err := os.Chmod(dir, 0o755); err != nil { // the agent's umask is 077
		return err
	}
	return j.user.chown(dir)
}

// realDirs makes sure every directory of rel below root is a real
// directory, creating missing ones. A repository may contain a symlink
// where a shared path's parent should be; following it as root could
// write anywhere on the server.
func (j *job) realDirs(root, rel string) error {
	p := root
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		if part == "." || part == "" {
			continue
		}
		p = filepath.Join(p, part)
		fi, err := os.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := os.Mkdir(p, 0o755); err != nil {
				return err
			}
			if err := os.Chmod(p, 0o755); err != nil {
				return err
			}
			if err := j.user.chown(p); err != nil {
				return err
			}
		case err != nil:
			return err
		case !fi.IsDir():
			return fmt.Errorf("%s is not a directory (a symlink or file in the repository?)", p)
		}
	}
	return nil
}

// linkShared links DeployPath/shared/<rel> into the release. The first
// time, the shared copy is seeded from the release's own (e.g. the
// repository's storage/ skeleton), or made empty: a directory, unless the
// name looks like a file (has a dot, like ".env" or "app.db").
func (j *job) linkShared(release, p string) error {
	rel, err := cleanRel(p)
	if err != nil {
		return err
	}
	sharedRoot := filepath.Join(j.spec.DeployPath, "shared")
	if err := j.mkdirOwned(sharedRoot); err != nil {
		return err
	}
	if err := j.realDirs(sharedRoot, filepath.Dir(rel)); err != nil {
		return err
	}
	if err := j.realDirs(release, filepath.Dir(rel)); err != nil {
		return err
	}
	src, dst := filepath.Join(sharedRoot, rel), filepath.Join(release, rel)
	if _, err := os.Lstat(src); errors.Is(err, fs.ErrNotExist) {
		if fi, err := os.Lstat(dst); err == nil && fi.Mode()&fs.ModeSymlink == 0 {
			j.log.printf("seeding shared/%s from this release", rel)
			if err := os.Rename(dst, src); err != nil {
				return err
			}
		} else if strings.HasSuffix(p, "/") || !strings.Contains(filepath.Base(rel), ".") {
			j.log.printf("creating shared directory shared/%s", rel)
			if err := os.Mkdir(src, 0o755); err != nil {
				return err
			}
			if err := os.Chmod(src, 0o755); err != nil {
				return err
			}
			if err := j.user.chown(src); err != nil {
				return err
			}
		} else {
			j.log.printf("creating shared file shared/%s", rel)
			mode := os.FileMode(0o644)
			if strings.HasPrefix(filepath.Base(rel), ".env") {
				mode = 0o600
			}
			f, err := os.OpenFile(src, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
			if err != nil {
				return err
			}
			f.Chmod(mode)
			f.Close()
			if err := j.user.chown(src); err != nil {
				return err
			}
		}
	} else if err != nil {
		return err
	}
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	if err := os.Symlink(src, dst); err != nil {
		return err
	}
	j.log.printf("%s -> %s", rel, src)
	return j.user.chown(dst)
}

// writeEnv writes Env as a dotenv file, mode 0600, owned by the app user.
// A shared .env is written in shared/ (the release links to it); otherwise
// the file replaces whatever the repository had at .env with a rename, so
// a symlink committed there is never followed.
func (j *job) writeEnv(release string) error {
	dir := release
	if slices.ContainsFunc(j.spec.SharedPaths, func(p string) bool { return filepath.Clean(p) == ".env" }) {
		dir = filepath.Join(j.spec.DeployPath, "shared")
	}
	keys := make([]string, 0, len(j.spec.Env))
	for k := range j.spec.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k + "=" + dotenvQuote(j.spec.Env[k]) + "\n")
	}
	f, err := os.CreateTemp(dir, ".env.tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.WriteString(b.String())
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil && j.user.cred != nil {
		err = f.Chown(j.user.uid, j.user.gid)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, ".env"))
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	j.log.printf("wrote %s/.env (%d variables, mode 0600)", dir, len(keys))
	return nil
}

// dotenvQuote writes a value the way the common dotenv parsers (PHP, Node,
// Python, Ruby) read it back unchanged: bare when plain, single-quoted
// (literal) when possible, else double-quoted with escapes.
func dotenvQuote(v string) string {
	plain := v != ""
	for _, r := range v {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_-.,:/@+%", r)) {
			plain = false
			break
		}
	}
	switch {
	case plain:
		return v
	case !strings.ContainsAny(v, "'\n\r"):
		return "'" + v + "'"
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "$", `\$`)
	return `"` + r.Replace(v) + `"`
}

// prune removes the oldest releases beyond keep, never current and never
// previous (the one current replaced: the first rollback target).
func (j *job) prune(current, previous string) error {
	dir := filepath.Join(j.spec.DeployPath, "releases")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var ids []string
	for _, de := range ents {
		if de.IsDir() && IsReleaseID(de.Name()) {
			ids = append(ids, de.Name())
		}
	}
	sort.Strings(ids) // ULIDs sort by time
	excess := len(ids) - j.spec.KeepReleases
	var errs []error
	removed := 0
	for _, id := range ids {
		if removed >= excess {
			break
		}
		if id == current || id == previous {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, id)); err != nil {
			errs = append(errs, err)
			continue
		}
		j.log.printf("removed release %s", id)
		removed++
	}
	j.log.printf("keeping %d release(s)", len(ids)-removed)
	return errors.Join(errs...)
}
