package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Ownership records: which app's job made a certificate key (by
// certificate name) or wrote a challenge answer (by token). A file per
// name under StateDir/owners/{certs,challenges} holding the app's name,
// the last writer's. An app's delete removes what its records name, and
// only that: keys and answers of other apps stay.
const (
	ownCerts      = "certs"
	ownChallenges = "challenges"
)

func (m *Manager) ownersDir(kind string) string { return filepath.Join(m.cfg.StateDir, "owners", kind) }

// own records app as the owner of name ("" records nothing: a caller
// that does not say which app it works for).
func (m *Manager) own(kind, name, app string) error {
	if app == "" {
		return nil
	}
	if !validAppName(app) {
		return invalid("app name %q", app)
	}
	if err := writeFileAtomic(filepath.Join(m.ownersDir(kind), name), []byte(app), 0o600); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	return nil
}

func (m *Manager) disown(kind, name string) error {
	if err := removeIfExists(filepath.Join(m.ownersDir(kind), name)); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	return nil
}

// owned lists the names of kind whose record names app. Records are read
// through an os.Root of their directory and only when regular files: a
// link planted there names nothing.
func (m *Manager) owned(kind, app string) ([]string, error) {
	root, err := os.OpenRoot(m.ownersDir(kind))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	defer root.Close()
	ents, err := os.ReadDir(m.ownersDir(kind))
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	var out []string
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		f, err := root.OpenFile(e.Name(), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		if err != nil {
			continue // gone meanwhile, or swapped for a link
		}
		b, err := io.ReadAll(io.LimitReader(f, 64))
		f.Close()
		if err == nil && string(b) == app {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// removeIn removes name from dir through an os.Root of dir: a name that is
// a symlink is removed itself, never what it points to, and nothing
// outside dir is reached. Missing is not an error.
func removeIn(dir string, names ...string) error {
	root, err := os.OpenRoot(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer root.Close()
	for _, n := range names {
		if err := root.Remove(n); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// AppCleanup is what RemoveApp removed besides the site.
type AppCleanup struct {
	Certificates []string // certificate names: key(s) and chain
	Challenges   int      // challenge answers
}

// RemoveApp is an app's delete on this server: its site leaves nginx,
// then the certificate keys (0600, made for its CSRs) and chains, and the
// ACME challenge answers that its jobs made are removed. Only that app's:
// a certificate another app's applied site uses stays, and so does what
// another app's jobs made last. Files are removed through an os.Root of
// their directory, so a symlink is removed itself and never followed.
// When the site cannot be removed, its certificates stay too (nginx's live
// configuration still names them).
func (m *Manager) RemoveApp(ctx context.Context, app string) (AppCleanup, error) {
	var out AppCleanup
	if !validAppName(app) {
		return out, invalid("app name %q", app)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// The app's applied site names its issued certificates, including
	// ones made before ownership was recorded.
	names := map[string]bool{}
	if sites, err := m.specs(); err == nil {
		for _, s := range sites {
			if s.App != app {
				continue
			}
			for _, d := range s.Domains {
				if d.TLS == TLSACME && d.CertName != "" {
					names[d.CertName] = true
				}
			}
		}
	}
	// The challenge answers go whatever happens to the site: nginx never
	// names them.
	tokens, err := m.owned(ownChallenges, app)
	if err != nil {
		return out, err
	}
	for _, tok := range tokens {
		if !validToken(tok) {
			continue
		}
		if err := removeIn(m.cfg.ChallengeDir, tok); err != nil {
			return out, fmt.Errorf("proxy: %w", err)
		}
		if err := removeIn(m.ownersDir(ownChallenges), tok); err != nil {
			return out, fmt.Errorf("proxy: %w", err)
		}
		out.Challenges++
	}
	if err := m.removeLocked(ctx, app); err != nil {
		return out, err
	}
	owned, err := m.owned(ownCerts, app)
	if err != nil {
		return out, err
	}
	for _, n := range owned {
		names[n] = true
	}
	for n := range names {
		if !validCertName(n) {
			continue
		}
		// Made for this app and recorded for another since (the host
		// moved): the other app's now.
		if owner := m.ownerOf(ownCerts, n); owner != "" && owner != app {
			continue
		}
		if using, err := m.sitesUsing(n); err != nil {
			return out, err
		} else if len(using) > 0 {
			continue
		}
		if err := removeIn(m.keysDir(), n+".key", n+".next.key"); err != nil {
			return out, fmt.Errorf("proxy: %w", err)
		}
		if err := removeIn(m.certsDir(), n+".pem"); err != nil {
			return out, fmt.Errorf("proxy: %w", err)
		}
		if err := removeIn(m.ownersDir(ownCerts), n); err != nil {
			return out, fmt.Errorf("proxy: %w", err)
		}
		out.Certificates = append(out.Certificates, n)
	}
	return out, nil
}

// ownerOf reads name's owner record ("" when there is none).
func (m *Manager) ownerOf(kind, name string) string {
	root, err := os.OpenRoot(m.ownersDir(kind))
	if err != nil {
		return ""
	}
	defer root.Close()
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, 64))
	return string(b)
}
