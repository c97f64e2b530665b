package backup

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// dirSource is a tar of a directory. The walk goes through an os.Root, so
// nothing outside the directory is ever read: symlinks are stored as links
// and never followed, and a component swapped for a symlink while the walk
// runs cannot lead it out.
type dirSource struct {
	dir    string
	within string // Source.Within
	lg     *logger
}

// open opens the directory as a root: through within when set, so that a
// symlink among its components cannot lead outside within (os.Root
// refuses to leave it).
func (d *dirSource) open() (*os.Root, error) {
	if d.within == "" {
		root, err := os.OpenRoot(d.dir)
		if err != nil {
			return nil, fmt.Errorf("open directory %s: %w", d.dir, err)
		}
		return root, nil
	}
	outer, err := os.OpenRoot(d.within)
	if err != nil {
		return nil, fmt.Errorf("open directory %s: %w", d.within, err)
	}
	rel, err := filepath.Rel(d.within, d.dir)
	if err != nil || !filepath.IsLocal(rel) {
		outer.Close()
		return nil, fmt.Errorf("directory source: %s is not inside %s", d.dir, d.within)
	}
	if rel == "." {
		return outer, nil
	}
	defer outer.Close()
	root, err := outer.OpenRoot(rel)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("directory %s does not exist", d.dir)
	case err != nil:
		// Among others: a symlink leading out of within.
		return nil, fmt.Errorf("open directory %s inside %s: %w", d.dir, d.within, err)
	}
	return root, nil
}

func (d *dirSource) describe() string { return "the archive of directory " + d.dir }

func (d *dirSource) writeTo(ctx context.Context, w io.Writer) error {
	root, err := d.open()
	if err != nil {
		return err
	}
	defer root.Close()
	tw := tar.NewWriter(w)
	buf := make([]byte, 32<<10)
	var files, skipped int
	err = fs.WalkDir(root.FS(), ".", func(name string, de fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("read %s: %w", filepath.Join(d.dir, name), err)
		}
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		if name == "." {
			return nil
		}
		fi, err := root.Lstat(name)
		if err != nil {
			return fmt.Errorf("stat %s: %w", filepath.Join(d.dir, name), err)
		}
		var link string
		switch m := fi.Mode(); {
		case m.IsRegular(), m.IsDir():
		case m&fs.ModeSymlink != 0:
			if link, err = root.Readlink(name); err != nil {
				return fmt.Errorf("read link %s: %w", filepath.Join(d.dir, name), err)
			}
			if linkEscapes(name, link) {
				d.lg.printf("warning: symlink %s points outside the directory (%s): a restore refuses it", name, link)
			}
		default:
			// Sockets, fifos and devices are not data to back up.
			skipped++
			return nil
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		hdr.Name = name
		if fi.IsDir() {
			hdr.Name += "/"
		}
		// Numeric owners only: the names may not exist where it is restored.
		hdr.Uname, hdr.Gname = "", ""
		hdr.Format = tar.FormatPAX
		if !fi.Mode().IsRegular() {
			return tw.WriteHeader(hdr)
		}
		f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", filepath.Join(d.dir, name), err)
		}
		defer f.Close()
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		n, err := io.CopyBuffer(tw, io.LimitReader(f, hdr.Size), buf)
		if err != nil {
			return err
		}
		if n < hdr.Size {
			// It shrank while read: keep the archive well-formed and say so.
			d.lg.printf("warning: %s shrank while it was read; the rest of its %d bytes are zeros", name, hdr.Size)
			if _, err := io.CopyN(tw, zeroReader{}, hdr.Size-n); err != nil {
				return err
			}
		}
		files++
		return nil
	})
	if err != nil {
		return err
	}
	if skipped > 0 {
		d.lg.printf("skipped %d sockets, fifos or devices", skipped)
	}
	d.lg.printf("archived %d files", files)
	return tw.Close()
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// linkEscapes says whether a symlink at name (relative to the root) with
// target link points outside the root.
func linkEscapes(name, link string) bool {
	if link == "" || path.IsAbs(link) {
		return true
	}
	t := path.Join(path.Dir(name), link)
	return t == ".." || strings.HasPrefix(t, "../")
}

// tarEntryName checks a tar entry's name: relative, clean, inside.
func tarEntryName(name string) (string, error) {
	n := strings.TrimSuffix(name, "/")
	n = strings.TrimPrefix(n, "./")
	switch {
	case n == "" || n == ".":
		return ".", nil
	case strings.HasPrefix(name, "/") || filepath.IsAbs(n):
		return "", fmt.Errorf("refused: entry %q is an absolute path", name)
	case strings.ContainsRune(n, 0) || strings.Contains(n, "\\"):
		return "", fmt.Errorf("refused: entry %q has a NUL or backslash in its name", name)
	}
	for _, part := range strings.Split(n, "/") {
		if part == ".." {
			return "", fmt.Errorf("refused: entry %q climbs out with ..", name)
		}
	}
	return path.Clean(n), nil
}

// listTar reads a whole archive, checking every entry as a restore would,
// and returns the number of entries and bytes of file data.
func listTar(r io.Reader) (entries int, size int64, err error) {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return entries, size, nil
		}
		if err != nil {
			return entries, size, fmt.Errorf("tar: %w", err)
		}
		name, err := tarEntryName(hdr.Name)
		if err != nil {
			return entries, size, err
		}
		if hdr.Typeflag == tar.TypeSymlink && linkEscapes(name, hdr.Linkname) {
			return entries, size, fmt.Errorf("refused: symlink %q points outside the directory (%q)", hdr.Name, hdr.Linkname)
		}
		if hdr.Typeflag == tar.TypeLink {
			return entries, size, fmt.Errorf("refused: hard link entry %q (Berth's archives have none)", hdr.Name)
		}
		n, err := io.Copy(io.Discard, tr)
		if err != nil {
			return entries, size, fmt.Errorf("tar: %s: %w", hdr.Name, err)
		}
		entries++
		size += n
	}
}

// extractTar writes an archive into dir through an os.Root: no entry can
// write outside it, whatever its name or the symlinks before it. Entries
// named absolute or with .., symlinks pointing out and hard links are
// refused (the restore fails on the first one).
func extractTar(ctx context.Context, r io.Reader, dir string, lg *logger) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer root.Close()
	return extractTarRoot(ctx, r, root, dir, lg)
}

// extractTarRoot is extractTar into an open root (dir: its name, for the
// log).
func extractTarRoot(ctx context.Context, r io.Reader, root *os.Root, dir string, lg *logger) error {
	asRoot := os.Geteuid() == 0
	type dirTime struct {
		name string
		t    time.Time
		mode fs.FileMode
	}
	var dirs []dirTime
	tr := tar.NewReader(r)
	buf := make([]byte, 32<<10)
	files := 0
	for {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("tar: %w", err)
		}
		name, err := tarEntryName(hdr.Name)
		if err != nil {
			return err
		}
		if name == "." {
			continue
		}
		if parent := path.Dir(name); parent != "." {
			if err := root.MkdirAll(parent, 0o755); err != nil {
				return fmt.Errorf("create %s: %w", parent, err)
			}
		}
		// Permission bits and sticky (tar's 01000, not fs.ModeSticky);
		// setuid and setgid never: no archive plants a setuid program.
		mode := fs.FileMode(hdr.Mode).Perm()
		if hdr.Mode&0o1000 != 0 {
			mode |= fs.ModeSticky
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.Mkdir(name, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("create %s: %w", name, err)
			}
			if fi, err := root.Lstat(name); err != nil || !fi.IsDir() {
				return fmt.Errorf("restore %s: a non-directory is in the way", name)
			}
			dirs = append(dirs, dirTime{name, hdr.ModTime, mode})
		case tar.TypeReg:
			if err := removeExisting(root, name); err != nil {
				return err
			}
			f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
			if err != nil {
				return fmt.Errorf("create %s: %w", name, err)
			}
			_, err = io.CopyBuffer(f, tr, buf)
			if err2 := f.Close(); err == nil {
				err = err2
			}
			if err != nil {
				if isENOSPC(err) {
					return fmt.Errorf("write %s: the target's disk is full: %w", name, err)
				}
				return fmt.Errorf("write %s: %w", name, err)
			}
			if err := root.Chmod(name, mode); err != nil {
				return err
			}
			files++
		case tar.TypeSymlink:
			if linkEscapes(name, hdr.Linkname) {
				return fmt.Errorf("refused: symlink %q points outside the target directory (%q)", hdr.Name, hdr.Linkname)
			}
			if err := removeExisting(root, name); err != nil {
				return err
			}
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				return fmt.Errorf("create symlink %s: %w", name, err)
			}
		case tar.TypeLink:
			return fmt.Errorf("refused: hard link entry %q (Berth's archives have none)", hdr.Name)
		default:
			lg.printf("skipped %s: entry type %q is not restored", hdr.Name, hdr.Typeflag)
			continue
		}
		if asRoot {
			if err := root.Lchown(name, hdr.Uid, hdr.Gid); err != nil {
				return fmt.Errorf("chown %s: %w", name, err)
			}
		}
		if hdr.Typeflag == tar.TypeReg {
			if err := root.Chtimes(name, hdr.ModTime, hdr.ModTime); err != nil {
				return err
			}
		}
	}
	// Directories last: writing into them changed their times, and a
	// read-only one must still have been writable while filled.
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		if err := root.Chmod(d.name, d.mode); err != nil {
			return err
		}
		if err := root.Chtimes(d.name, d.t, d.t); err != nil {
			return err
		}
	}
	lg.printf("restored %d files into %s", files, dir)
	return nil
}

// removeExisting makes room for an entry: a file or link of that name goes
// (a link is removed itself, never followed); a directory is in the way.
func removeExisting(root *os.Root, name string) error {
	fi, err := root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("restore %s: a directory is in the way", name)
	}
	return root.Remove(name)
}
