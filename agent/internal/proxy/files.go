package proxy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// checkCustomFiles checks the certificate and key files of a site's
// custom-TLS domains before nginx's master (root) reads them. Their paths
// come from a person with the write scope, so a path into the agent's own
// directories is refused: it would put a key this agent made for another
// app's host, or the agent's identity key, behind a name of the person's
// choosing. So is anything but a regular file: a FIFO hangs the reader
// (and with it nginx -t), a device such as /dev/zero never ends. A file
// that is not there is left to nginx -t, whose message names it.
func (m *Manager) checkCustomFiles(s Site) error {
	for _, d := range s.Domains {
		if d.TLS != TLSCustom {
			continue
		}
		if d.ConfineRoot != "" {
			// Read through the app's directory when copied: only the
			// directory itself must not hold the agent's own.
			if err := m.checkConfineRoot(d.Host, d.ConfineRoot); err != nil {
				return err
			}
			continue
		}
		for _, p := range []string{d.CertPath, d.KeyPath} {
			if err := m.checkCustomFile(d.Host, p); err != nil {
				return err
			}
		}
	}
	return nil
}

func (m *Manager) checkCustomFile(host, p string) error {
	real, err := filepath.EvalSymlinks(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("proxy: host %s: %w", host, err)
	}
	for _, dir := range append([]string{m.cfg.StateDir}, m.cfg.ProtectedDirs...) {
		if dir == "" {
			continue
		}
		if rd, err := filepath.EvalSymlinks(dir); err == nil {
			dir = rd
		}
		if within(real, filepath.Clean(dir)) {
			return invalid("host %s: %s is inside the agent's own directory %s; a custom certificate or key must be a file of its own", host, p, dir)
		}
	}
	fi, err := os.Stat(real)
	if err != nil {
		return fmt.Errorf("proxy: host %s: %w", host, err)
	}
	if !fi.Mode().IsRegular() {
		return invalid("host %s: %s is not a regular file", host, p)
	}
	return nil
}

func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// openRegular opens a file for reading only when it is a regular file:
// O_NONBLOCK keeps the open of a FIFO from waiting for a writer, and the
// check on the open file (not the path) leaves no window to swap it.
func openRegular(p string) (*os.File, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("proxy: %w", err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, invalid("%s is not a regular file", p)
	}
	return f, nil
}

// checkConfineRoot refuses an app directory that holds the agent's own
// directories, or is inside one: a custom file "inside the app's
// directory" would be the agent's keys then.
func (m *Manager) checkConfineRoot(host, root string) error {
	real, err := filepath.EvalSymlinks(root)
	if err != nil {
		return invalid("host %s: the app's directory %s: %v", host, root, errors.Unwrap(err))
	}
	for _, dir := range append([]string{m.cfg.StateDir}, m.cfg.ProtectedDirs...) {
		if dir == "" {
			continue
		}
		if rd, err := filepath.EvalSymlinks(dir); err == nil {
			dir = rd
		}
		dir = filepath.Clean(dir)
		if within(real, dir) || within(dir, real) {
			return invalid("host %s: the app's directory %s holds or is inside the agent's own directory %s", host, root, dir)
		}
	}
	return nil
}

func (m *Manager) customDir() string { return filepath.Join(m.cfg.StateDir, "custom") }

// readConfined reads p (inside root) through an os.Root of root: a
// symlink may lead anywhere inside root but never out of it, and only a
// regular file of at most maxChain bytes is read.
func readConfined(root, p string) ([]byte, error) {
	rel, ok := strings.CutPrefix(p, strings.TrimSuffix(root, "/")+"/")
	if !ok || rel == "" {
		return nil, invalid("%s is not inside %s", p, root)
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	defer r.Close()
	f, err := r.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, invalid("%s: %v (a file in the app's directory %s, links included, must stay inside it)", p, err, root)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, invalid("%s is not a regular file", p)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxChain+1))
	if err != nil {
		return nil, fmt.Errorf("proxy: read %s: %w", p, err)
	}
	if len(b) > maxChain {
		return nil, invalid("%s is larger than %d bytes", p, maxChain)
	}
	return b, nil
}

// copyConfined reads the confined custom certificates and keys of sites
// and writes them as the agent's copies (named by their content's hash,
// 0600), which the rendered sites name. m.mu is held.
func (m *Manager) copyConfined(sites []Site) error {
	for i := range sites {
		for j := range sites[i].Domains {
			d := &sites[i].Domains[j]
			if d.TLS != TLSCustom || d.ConfineRoot == "" {
				continue
			}
			for _, f := range []struct {
				src, ext string
				dst      *string
			}{{d.CertPath, ".pem", &d.CertCopy}, {d.KeyPath, ".key", &d.KeyCopy}} {
				b, err := readConfined(d.ConfineRoot, f.src)
				if err != nil {
					return fmt.Errorf("host %s: %w", d.Host, err)
				}
				sum := sha256.Sum256(b)
				dst := filepath.Join(m.customDir(), hex.EncodeToString(sum[:])+f.ext)
				if !fileExists(dst) {
					if err := writeFileAtomic(dst, b, 0o600); err != nil {
						return fmt.Errorf("proxy: %w", err)
					}
				}
				*f.dst = dst
			}
		}
	}
	return nil
}

// gcCopies removes the copies no applied site names any more. m.mu is
// held; best effort (a leftover is removed next time).
func (m *Manager) gcCopies() {
	sites, err := m.specs()
	if err != nil {
		return
	}
	used := map[string]bool{}
	for _, s := range sites {
		for _, d := range s.Domains {
			used[d.CertCopy], used[d.KeyCopy] = true, true
		}
	}
	ents, err := os.ReadDir(m.customDir())
	if err != nil {
		return
	}
	for _, e := range ents {
		if p := filepath.Join(m.customDir(), e.Name()); !used[p] {
			_ = removeIn(m.customDir(), e.Name())
		}
	}
}

// ReadCertInfoIn is ReadCertInfo for a file inside an app's directory,
// read through it (see readConfined).
func ReadCertInfoIn(root, path string) (CertInfo, error) {
	b, err := readConfined(root, path)
	if err != nil {
		return CertInfo{}, err
	}
	return firstCert(path, b)
}
