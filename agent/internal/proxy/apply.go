package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Apply renders the site, puts it in place, checks the whole configuration
// with nginx -t and reloads nginx, waiting until the new configuration
// answers. On a failed check the previous file stays live and the error
// carries nginx's message.
func (m *Manager) Apply(ctx context.Context, s Site) error {
	return m.ApplyAll(ctx, []Site{s})
}

// ApplyAll applies several sites with one nginx -t and one reload: all of
// them, or (on a failed check) none.
func (m *Manager) ApplyAll(ctx context.Context, sites []Site) error {
	seen := make(map[string]bool, len(sites))
	for i := range sites {
		if err := sites[i].validate(); err != nil {
			return err
		}
		if seen[sites[i].App] {
			return invalid("app %s listed twice", sites[i].App)
		}
		seen[sites[i].App] = true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applyLocked(ctx, sites, nil)
}

// Remove takes the app's site out of nginx. Removing an app that has no
// site is not an error.
func (m *Manager) Remove(ctx context.Context, app string) error {
	if !validAppName(app) {
		return invalid("app name %q", app)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !fileExists(m.siteFile(app)) {
		// Nothing live; a stale spec must not bring it back on the
		// next certificate.
		if err := removeIfExists(m.siteSpec(app)); err != nil {
			return fmt.Errorf("proxy: %w", err)
		}
		return nil
	}
	return m.applyLocked(ctx, nil, []string{app})
}

// Sites lists the apps that have a site file.
func (m *Manager) Sites() ([]string, error) {
	ents, err := os.ReadDir(m.cfg.SitesDir)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	var apps []string
	for _, e := range ents {
		if app, ok := strings.CutSuffix(e.Name(), ".conf"); ok && validAppName(app) {
			apps = append(apps, app)
		}
	}
	sort.Strings(apps)
	return apps, nil
}

func (m *Manager) siteFile(app string) string { return filepath.Join(m.cfg.SitesDir, app+".conf") }
func (m *Manager) siteSpec(app string) string { return filepath.Join(m.sitesStateDir(), app+".json") }

// staged is one site file changed by an apply, with what undoes it.
type staged struct {
	app     string
	live    string
	prev    string // hard link to the previous live file, "" if none
	absent  string // marker: there was no previous file
	removed bool
}

// applyLocked swaps in the rendered sites and removes the named ones,
// tests, and either rolls back or reloads. m.mu is held.
func (m *Manager) applyLocked(ctx context.Context, sites []Site, remove []string) (err error) {
	var done []staged
	defer func() {
		if err != nil {
			m.rollback(done)
		}
	}()
	for _, s := range sites {
		st, err := m.stage(s.App, []byte(m.render(s)))
		if err != nil {
			return err
		}
		done = append(done, st)
	}
	for _, app := range remove {
		st, err := m.stage(app, nil)
		if err != nil {
			return err
		}
		done = append(done, st)
	}
	if err := syncDir(m.cfg.SitesDir); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	m.gen++
	if err := m.writeBase(); err != nil {
		return err
	}
	if err := m.test(ctx); err != nil {
		return err
	}
	// The check passed: the new files are the live ones now, whatever the
	// reload says (a later reload, ours or nginx's own, picks them up).
	for _, st := range done {
		if st.prev != "" {
			os.Remove(st.prev)
		}
		if st.absent != "" {
			os.Remove(st.absent)
		}
	}
	syncDir(m.cfg.SitesDir)
	for _, s := range sites {
		if err := m.saveSpec(s); err != nil {
			return m.reloadAfter(ctx, err)
		}
	}
	for _, app := range remove {
		if err := removeIfExists(m.siteSpec(app)); err != nil {
			return m.reloadAfter(ctx, fmt.Errorf("proxy: %w", err))
		}
	}
	done = nil
	return m.reload(ctx)
}

// reloadAfter still reloads (the files on disk passed nginx -t) and
// returns err.
func (m *Manager) reloadAfter(ctx context.Context, err error) error {
	if rerr := m.reload(ctx); rerr != nil {
		return errors.Join(err, rerr)
	}
	return err
}

// stage puts data in place as the app's live file (nil: removes it),
// keeping what undoes the change. The live name is never missing while a
// previous file existed: the previous file is hard-linked aside first and
// the new one renamed over it.
func (m *Manager) stage(app string, data []byte) (staged, error) {
	st := staged{app: app, live: m.siteFile(app), removed: data == nil}
	hidden := filepath.Join(m.cfg.SitesDir, "."+app+".conf")
	if fileExists(st.live) {
		st.prev = hidden + ".prev"
		os.Remove(st.prev)
		if err := os.Link(st.live, st.prev); err != nil {
			return staged{}, fmt.Errorf("proxy: keep previous site: %w", err)
		}
	} else {
		if data == nil {
			return st, nil
		}
		st.absent = hidden + ".absent"
		if err := writeFileAtomic(st.absent, nil, 0o600); err != nil {
			return staged{}, err
		}
	}
	if data == nil {
		if err := os.Remove(st.live); err != nil {
			return st, fmt.Errorf("proxy: %w", err)
		}
		return st, nil
	}
	if err := writeFileAtomic(st.live, data, 0o644); err != nil {
		return st, err
	}
	return st, nil
}

// rollback puts every staged site back as it was.
func (m *Manager) rollback(done []staged) {
	for i := len(done) - 1; i >= 0; i-- {
		st := done[i]
		switch {
		case st.prev != "":
			os.Rename(st.prev, st.live)
		case st.absent != "":
			os.Remove(st.live)
			os.Remove(st.absent)
		}
	}
	syncDir(m.cfg.SitesDir)
}

func (m *Manager) saveSpec(s Site) error {
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	return writeFileAtomic(m.siteSpec(s.App), b, 0o600)
}

// specs reads the sites last applied.
func (m *Manager) specs() ([]Site, error) {
	ents, err := os.ReadDir(m.sitesStateDir())
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	var out []Site
	for _, e := range ents {
		app, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !validAppName(app) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(m.sitesStateDir(), e.Name()))
		if err != nil {
			return nil, fmt.Errorf("proxy: %w", err)
		}
		var s Site
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, fmt.Errorf("proxy: site spec %s: %w", e.Name(), err)
		}
		if s.App != app || s.validate() != nil {
			return nil, fmt.Errorf("proxy: site spec %s is not a valid site", e.Name())
		}
		out = append(out, s)
	}
	return out, nil
}

// writeFileAtomic writes data to a temporary file beside path, syncs it,
// and renames it over path, then syncs the directory.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	var rnd [6]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(dir, "."+filepath.Base(path)+".tmp-"+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode) // the umask may have narrowed it
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("proxy: write %s: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func removeIfExists(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
