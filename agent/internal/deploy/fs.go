package deploy

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
)

func releasePath(deployPath, id string) string {
	return filepath.Join(deployPath, "releases", id)
}

// releaseRel is a release's name inside the app tree.
func releaseRel(id string) string { return path.Join("releases", id) }

// appTree is the app's deploy path opened as an os.Root. Everything below
// it belongs to the app user, who can plant a symlink anywhere in it
// (releases, shared, a shared path's parents) while the agent, as root,
// creates, renames, chowns and removes things there. So every such
// operation names its file relative to the root and os.Root resolves it
// beneath the deploy path, refusing any link that leads out; a symlink
// the app user planted can at worst redirect the agent within the app's
// own tree.
type appTree struct {
	path string // the deploy path, for messages and symlink targets
	root *os.Root
}

func (t *appTree) close() {
	if t != nil {
		t.root.Close()
	}
}

// openTree opens the deploy path, checking first that nobody but root (or
// the agent's own user) can change any directory above it: an app user
// who could would swap the deploy path for a link to anywhere. With
// create, a missing deploy path is made, owned by the app user, below
// parents made for root; it is never given a parent the app user owns.
func (j *job) openTree(create bool) (*appTree, error) {
	p := j.spec.DeployPath
	real, err := j.resolveDeployPath(p)
	if err != nil {
		return nil, err
	}
	if _, err := os.Lstat(real); errors.Is(err, fs.ErrNotExist) {
		if !create {
			return nil, fmt.Errorf("the deploy path %s does not exist on this server", p)
		}
		if err := j.makeDeployPath(real); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("deploy path: %w", err)
	}
	if err := safeAncestors(real); err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(real)
	if err != nil {
		return nil, fmt.Errorf("deploy path: %w", err)
	}
	return &appTree{path: p, root: root}, nil
}

// resolveDeployPath is where p really is: its deepest existing ancestor
// with links followed (an admin's symlink at or above the deploy path is
// honoured: what must be safe is where it leads), plus the missing rest.
// That must lie below one of the agent's app directories.
func (j *job) resolveDeployPath(p string) (string, error) {
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return "", fmt.Errorf("the deploy path %q must be a clean absolute path", p)
	}
	existing, rest := p, ""
	for {
		if _, err := os.Lstat(existing); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("deploy path: %w", err)
		}
		rest = filepath.Join(filepath.Base(existing), rest)
		existing = filepath.Dir(existing)
	}
	realExisting, err := filepath.EvalSymlinks(existing)
	if err != nil {
		return "", fmt.Errorf("deploy path: %w", err)
	}
	real := filepath.Join(realExisting, rest)
	for _, base := range j.e.cfg.AppDirs {
		rb, err := filepath.EvalSymlinks(base)
		if err != nil {
			continue
		}
		if strings.HasPrefix(real, strings.TrimSuffix(rb, "/")+"/") {
			return real, nil
		}
	}
	return "", fmt.Errorf("the deploy path %s (%s) is not below one of this agent's app directories (%s): choose a path there, or start the agent with --app-dirs",
		p, real, strings.Join(j.e.cfg.AppDirs, ", "))
}

// makeDeployPath creates real (a resolved path, see resolveDeployPath):
// its missing parents 0755 for root, real itself 0755 for the app user.
// The parents' ancestors are checked first, and each directory made is
// checked to be the one made (a link planted meanwhile in a sticky
// directory such as /tmp is refused, never followed).
func (j *job) makeDeployPath(real string) error {
	var missing []string
	for d := real; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			if err := safeAncestors(filepath.Join(d, "_")); err != nil {
				return err
			}
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		missing = append(missing, d)
	}
	me := uint32(os.Geteuid())
	for i := len(missing) - 1; i >= 0; i-- {
		d := missing[i]
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		fi, err := os.Lstat(d)
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); !ok || !fi.IsDir() || st.Uid != me {
			return fmt.Errorf("deploy path: %s appeared as something other than the directory the agent made", d)
		}
		if err := os.Chmod(d, 0o755); err != nil { // the agent's umask is 077
			return err
		}
	}
	return j.user.chown(real)
}

// safeAncestors refuses a deploy path below a directory that anyone but
// root or the agent's user owns, or that group or others may write
// (unless sticky, like /tmp, where only an entry's owner can move it).
func safeAncestors(real string) error {
	me := uint32(os.Geteuid())
	for d := filepath.Dir(real); ; d = filepath.Dir(d) {
		fi, err := os.Lstat(d)
		if err != nil {
			return fmt.Errorf("deploy path: %w", err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("deploy path: cannot tell who owns %s", d)
		}
		if st.Uid != 0 && st.Uid != me {
			return fmt.Errorf("the deploy path's parent %s is owned by uid %d: whoever owns it could swap the deploy path for a link (chown root %s)", d, st.Uid, d)
		}
		if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0 {
			return fmt.Errorf("the deploy path's parent %s is writable by group or others: they could swap the deploy path for a link (chmod go-w %s)", d, d)
		}
		if d == "/" {
			return nil
		}
	}
}

// readCurrent returns where current points ("" when absent).
func (t *appTree) readCurrent() (string, error) {
	target, err := t.root.Readlink("current")
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	return target, err
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

// switchCurrent points current at target atomically: a new symlink under
// a temporary name renamed over the old one, so there is no moment
// without a `current`.
func (t *appTree) switchCurrent(target string, owner *runAs) error {
	tmp := ".current.tmp-" + randHex()
	if err := t.root.Symlink(target, tmp); err != nil {
		return err
	}
	if owner != nil && owner.cred != nil {
		if err := t.root.Lchown(tmp, owner.uid, owner.gid); err != nil {
			t.root.Remove(tmp)
			return err
		}
	}
	if err := t.root.Rename(tmp, "current"); err != nil {
		t.root.Remove(tmp)
		if fi, serr := t.root.Lstat("current"); serr == nil && fi.IsDir() {
			return fmt.Errorf("%s/current is a directory, not a symlink: move it away once", t.path)
		}
		return err
	}
	return t.sync(".")
}

// restoreCurrent puts `current` back to target, or removes it when there
// was none.
func (t *appTree) restoreCurrent(target string) error {
	if target == "" {
		err := t.root.Remove("current")
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	return t.switchCurrent(target, nil)
}

func (t *appTree) sync(dir string) error {
	d, err := t.root.Open(dir)
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

// topDir makes sure the tree's top-level directory name (releases,
// shared) is a real directory, creating it for the app user. A symlink
// there is refused with a clear error rather than followed, even within
// the tree.
func (j *job) topDir(name string) error {
	fi, err := j.tree.root.Lstat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return j.mkdirOwned(name)
	case err != nil:
		return err
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%s/%s is a symlink: the agent does not follow links in the app's directory; make it a directory", j.tree.path, name)
	case !fi.IsDir():
		return fmt.Errorf("%s/%s is not a directory", j.tree.path, name)
	}
	return nil
}

// mkdirOwned makes name in the tree, 0755, owned by the app user.
func (j *job) mkdirOwned(name string) error {
	if err := j.tree.root.Mkdir(name, 0o755); err != nil {
		return err
	}
	if err := j.tree.root.Chmod(name, 0o755); err != nil { // the agent's umask is 077
		return err
	}
	return j.lchown(name)
}

// lchown gives a name in the tree to the app user (a no-op when that is
// the agent's user).
func (j *job) lchown(name string) error {
	if j.user.cred == nil {
		return nil
	}
	return j.tree.root.Lchown(name, j.user.uid, j.user.gid)
}

// realDirs makes sure every directory of rel below base (a directory of
// the tree) is a real directory, creating missing ones. A repository may
// contain a symlink where a shared path's parent should be; os.Root keeps
// it inside the tree, and refusing it keeps the layout what it says.
func (j *job) realDirs(base, rel string) error {
	p := base
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		if part == "." || part == "" {
			continue
		}
		p = path.Join(p, part)
		fi, err := j.tree.root.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := j.mkdirOwned(p); err != nil {
				return err
			}
		case err != nil:
			return err
		case !fi.IsDir():
			return fmt.Errorf("%s/%s is not a directory (a symlink or file in the repository?)", j.tree.path, p)
		}
	}
	return nil
}

// linkShared links DeployPath/shared/<rel> into the release. The first
// time, the shared copy is seeded from the release's own (e.g. the
// repository's storage/ skeleton), or made empty: a directory, unless the
// name looks like a file (has a dot, like ".env" or "app.db").
func (j *job) linkShared(p string) error {
	rel, err := cleanRel(p)
	if err != nil {
		return err
	}
	if err := j.topDir("shared"); err != nil {
		return err
	}
	release := releaseRel(j.id)
	if err := j.realDirs("shared", filepath.Dir(rel)); err != nil {
		return err
	}
	if err := j.realDirs(release, filepath.Dir(rel)); err != nil {
		return err
	}
	root := j.tree.root
	src, dst := path.Join("shared", filepath.ToSlash(rel)), path.Join(release, filepath.ToSlash(rel))
	if _, err := root.Lstat(src); errors.Is(err, fs.ErrNotExist) {
		if fi, err := root.Lstat(dst); err == nil && fi.Mode()&fs.ModeSymlink == 0 {
			j.log.printf("seeding shared/%s from this release", rel)
			if err := root.Rename(dst, src); err != nil {
				return err
			}
		} else if strings.HasSuffix(p, "/") || !strings.Contains(filepath.Base(rel), ".") {
			j.log.printf("creating shared directory shared/%s", rel)
			if err := j.mkdirOwned(src); err != nil {
				return err
			}
		} else {
			j.log.printf("creating shared file shared/%s", rel)
			mode := os.FileMode(0o644)
			if strings.HasPrefix(filepath.Base(rel), ".env") {
				mode = 0o600
			}
			f, err := root.OpenFile(src, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
			if err != nil {
				return err
			}
			f.Chmod(mode)
			f.Close()
			if err := j.lchown(src); err != nil {
				return err
			}
		}
	} else if err != nil {
		return err
	}
	if err := root.RemoveAll(dst); err != nil {
		return err
	}
	// The link's target is the absolute path, as before: the app reads
	// it, the agent never follows it.
	target := filepath.Join(j.tree.path, "shared", rel)
	if err := root.Symlink(target, dst); err != nil {
		return err
	}
	j.log.printf("%s -> %s", rel, target)
	return j.lchown(dst)
}

// writeEnv writes Env as a dotenv file, mode 0600, owned by the app user.
// A shared .env is written in shared/ (the release links to it); otherwise
// the file replaces whatever the repository had at .env with a rename, so
// a symlink committed there is never followed.
func (j *job) writeEnv() error {
	dir := releaseRel(j.id)
	if slices.ContainsFunc(j.spec.SharedPaths, func(p string) bool { return filepath.Clean(p) == ".env" }) {
		if err := j.topDir("shared"); err != nil {
			return err
		}
		dir = "shared"
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
	tmp := path.Join(dir, ".env.tmp-"+randHex())
	f, err := j.tree.root.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
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
		err = j.tree.root.Rename(tmp, path.Join(dir, ".env"))
	}
	if err != nil {
		j.tree.root.Remove(tmp)
		return err
	}
	j.log.printf("wrote %s/.env (%d variables, mode 0600)", filepath.Join(j.tree.path, dir), len(keys))
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

// prune removes the oldest releases beyond keep, never current, never
// previous (the one current replaced: the first rollback target) and never
// one the app's processes or a running scheduled command still use.
func (j *job) prune(current, previous string) error {
	inUse := j.e.releasesInUse(j.spec.AppID)
	scheduled := j.e.releasesOfSchedules(j.spec.AppID)
	if err := j.topDir("releases"); err != nil {
		return err
	}
	d, err := j.tree.root.Open("releases")
	if err != nil {
		return err
	}
	ents, err := d.ReadDir(-1)
	d.Close()
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
		if slices.Contains(inUse, id) {
			j.log.printf("kept release %s: the app's processes run it", id)
			continue
		}
		if slices.Contains(scheduled, id) {
			j.log.printf("kept release %s: a scheduled command runs in it", id)
			continue
		}
		if err := j.tree.root.RemoveAll(releaseRel(id)); err != nil {
			errs = append(errs, err)
			continue
		}
		j.log.printf("removed release %s", id)
		removed++
	}
	j.log.printf("keeping %d release(s)", len(ids)-removed)
	return errors.Join(errs...)
}
