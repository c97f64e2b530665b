package proxy

import (
	"errors"
	"fmt"
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
