package backup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// A store is one connected destination.
type store interface {
	// put stores all of r under key, or nothing: it returns the bytes
	// stored, or an error and leaves no object under key.
	put(ctx context.Context, key string, r io.Reader) (int64, error)
	get(ctx context.Context, key string) (io.ReadCloser, error)
	// remove deletes key; a missing key is not an error.
	remove(ctx context.Context, key string) error
	// removeLeftovers deletes what an interrupted upload of key left
	// behind (a temporary file, an unfinished multipart upload) and says
	// how many it removed; none is not an error.
	removeLeftovers(ctx context.Context, key string) (int, error)
	// checkAbsent fails when key already holds an object: a backup never
	// replaces another.
	checkAbsent(ctx context.Context, key string) error
	close() error
}

// openStore connects to d and checks that it exists (the directory, the
// bucket), so a missing destination fails before any dump starts.
func openStore(ctx context.Context, d Destination) (store, error) {
	switch d.Kind {
	case "local":
		return openLocal(d)
	case "s3":
		return openS3(ctx, d)
	case "sftp":
		return openSFTP(ctx, d)
	case "":
		return nil, errors.New("destination kind is missing (local, s3 or sftp)")
	default:
		return nil, fmt.Errorf("destination kind %q is not one of local, s3, sftp", d.Kind)
	}
}

func describeDest(d Destination) string {
	switch d.Kind {
	case "local":
		return "local directory " + d.Path
	case "s3":
		return fmt.Sprintf("s3 bucket %s at %s", d.Bucket, d.Endpoint)
	case "sftp":
		return fmt.Sprintf("sftp %s@%s:%s", d.Username, hostPort(d), d.Path)
	}
	return d.Kind
}

const partialMark = ".partial-"

func tempSuffix() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return partialMark + hex.EncodeToString(b[:])
}

// isPartialOf reports whether name (a file name, no directory) is one of
// key's temporary upload names: exactly base(key) + ".partial-" + 16
// lowercase hex digits, as tempSuffix makes them. Nothing else in the
// directory is ever touched by a cleanup, whatever it is called.
func isPartialOf(name, key string) bool {
	rest, ok := strings.CutPrefix(name, path.Base(key)+partialMark)
	if !ok || len(rest) != 16 {
		return false
	}
	for _, c := range rest {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// localStore is a directory on this server, reached through an os.Root so
// that no key can leave it.
type localStore struct {
	dir  string
	root *os.Root
}

func openLocal(d Destination) (*localStore, error) {
	if !filepath.IsAbs(d.Path) {
		return nil, fmt.Errorf("local destination: %q is not an absolute path", d.Path)
	}
	fi, err := os.Stat(d.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("local destination: directory %s does not exist", d.Path)
	case err != nil:
		return nil, fmt.Errorf("local destination: %w", err)
	case !fi.IsDir():
		return nil, fmt.Errorf("local destination: %s is not a directory", d.Path)
	}
	root, err := os.OpenRoot(d.Path)
	if err != nil {
		return nil, fmt.Errorf("local destination: %w", err)
	}
	return &localStore{dir: d.Path, root: root}, nil
}

func (l *localStore) close() error { return l.root.Close() }

func (l *localStore) checkAbsent(_ context.Context, key string) error {
	if _, err := l.root.Lstat(key); err == nil {
		return fmt.Errorf("local destination: %s already exists: a backup never replaces another", filepath.Join(l.dir, key))
	}
	return nil
}

func (l *localStore) put(ctx context.Context, key string, r io.Reader) (n int64, err error) {
	if dir := path.Dir(key); dir != "." {
		if err := l.root.MkdirAll(dir, 0o700); err != nil {
			return 0, l.wrap("create "+dir, err)
		}
	}
	tmp := key + tempSuffix()
	f, err := l.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return 0, l.wrap("create "+tmp, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			_ = l.root.Remove(tmp)
		}
	}()
	n, err = io.CopyBuffer(f, r, make([]byte, 32<<10))
	if err != nil {
		return n, l.wrap("write "+key, err)
	}
	if err = f.Sync(); err != nil {
		return n, l.wrap("sync "+key, err)
	}
	if err = f.Close(); err != nil {
		return n, l.wrap("close "+key, err)
	}
	if err = ctx.Err(); err != nil {
		return n, context.Cause(ctx)
	}
	if err = l.root.Rename(tmp, key); err != nil {
		return n, l.wrap("rename into "+key, err)
	}
	// The rename is durable only once the directory is synced.
	if d, err := l.root.Open(path.Dir(key)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return n, nil
}

func (l *localStore) wrap(what string, err error) error {
	if isENOSPC(err) {
		return fmt.Errorf("local destination %s is full (no space left on device): %s: %w", l.dir, what, err)
	}
	return fmt.Errorf("local destination %s: %s: %w", l.dir, what, err)
}

func (l *localStore) get(_ context.Context, key string) (io.ReadCloser, error) {
	f, err := l.root.OpenFile(key, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("local destination %s: %s does not exist", l.dir, key)
	}
	if err != nil {
		return nil, l.wrap("open "+key, err)
	}
	return f, nil
}

func (l *localStore) remove(_ context.Context, key string) error {
	err := l.root.Remove(key)
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return l.wrap("remove "+key, err)
}

// removeLeftovers removes key's temporary files (a killed agent leaves
// them: its deferred remove never ran). Through the os.Root, so no name
// leaves the destination, and only regular files: a symlink or directory
// that happens to have such a name is left alone, never followed.
func (l *localStore) removeLeftovers(_ context.Context, key string) (int, error) {
	dir := path.Dir(key)
	d, err := l.root.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, l.wrap("open "+dir, err)
	}
	ents, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return 0, l.wrap("list "+dir, err)
	}
	n := 0
	for _, e := range ents {
		if !isPartialOf(e.Name(), key) || !e.Type().IsRegular() {
			continue
		}
		err := l.root.Remove(path.Join(dir, e.Name()))
		switch {
		case err == nil:
			n++
		case errors.Is(err, fs.ErrNotExist):
		default:
			return n, l.wrap("remove "+path.Join(dir, e.Name()), err)
		}
	}
	return n, nil
}
