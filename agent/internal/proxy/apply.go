package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Apply renders the site, puts it in place, checks the whole configuration
// with nginx -t and reloads nginx, waiting until the new configuration
// answers. On a failed check the previous file stays live and the error
// carries nginx's message. When the check passes but the reload fails
// (nginx not running, or refusing the reload) the checked file stays in
// place for nginx's next start or reload, and the error says why.
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
		if err := m.checkCustomFiles(sites[i]); err != nil {
			return err
		}
		if seen[sites[i].App] {
			return invalid("app %s listed twice", sites[i].App)
		}
		seen[sites[i].App] = true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applyLocked(ctx, sites, nil, false)
}

// Sync makes the sites exactly these: it applies them and removes every
// other app's site, with one check and one reload, so an agent that missed
// a removal while it was disconnected drops the site (and the controller
// stops renewing its certificate on its side).
func (m *Manager) Sync(ctx context.Context, sites []Site) error {
	seen := make(map[string]bool, len(sites))
	for i := range sites {
		if err := sites[i].validate(); err != nil {
			return err
		}
		if err := m.checkCustomFiles(sites[i]); err != nil {
			return err
		}
		if seen[sites[i].App] {
			return invalid("app %s listed twice", sites[i].App)
		}
		seen[sites[i].App] = true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	apps, err := m.Sites()
	if err != nil {
		return err
	}
	var remove []string
	for _, app := range apps {
		if !seen[app] {
			remove = append(remove, app)
		}
	}
	specs, err := os.ReadDir(m.sitesStateDir())
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	for _, e := range specs {
		if app, ok := strings.CutSuffix(e.Name(), ".json"); ok && !seen[app] && !fileExists(m.siteFile(app)) {
			os.Remove(filepath.Join(m.sitesStateDir(), e.Name()))
		}
	}
	return m.applyLocked(ctx, sites, remove, false)
}

// Remove takes the app's site out of nginx. Removing an app that has no
// site is not an error.
func (m *Manager) Remove(ctx context.Context, app string) error {
	if !validAppName(app) {
		return invalid("app name %q", app)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.removeLocked(ctx, app)
}

func (m *Manager) removeLocked(ctx context.Context, app string) error {
	if !m.ours(app) {
		// Nothing of ours live; a stale spec must not bring it back on the
		// next certificate.
		if err := removeIfExists(m.siteSpec(app)); err != nil {
			return fmt.Errorf("proxy: %w", err)
		}
		return nil
	}
	return m.applyLocked(ctx, nil, []string{app}, false)
}

// Sites lists the apps that have a site file written by the agent (files
// someone else put in SitesDir are not the agent's to list or remove).
func (m *Manager) Sites() ([]string, error) {
	ents, err := os.ReadDir(m.cfg.SitesDir)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	var apps []string
	for _, e := range ents {
		if app, ok := strings.CutSuffix(e.Name(), ".conf"); ok && validAppName(app) && m.ours(app) {
			apps = append(apps, app)
		}
	}
	sort.Strings(apps)
	return apps, nil
}

// ours tells whether the app's site file starts with the agent's header.
func (m *Manager) ours(app string) bool {
	f, err := os.Open(m.siteFile(app))
	if err != nil {
		return false
	}
	defer f.Close()
	want := siteHeader(app)
	buf := make([]byte, len(want))
	_, err = io.ReadFull(f, buf)
	return err == nil && string(buf) == want
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
//
// With reload set, nginx reloads even when no file changed: a renewed
// certificate has the same paths, so the sites render the same, but nginx
// reads certificates only when it loads its configuration.
func (m *Manager) applyLocked(ctx context.Context, sites []Site, remove []string, reload bool) (err error) {
	for _, s := range sites {
		if fileExists(m.siteFile(s.App)) && !m.ours(s.App) {
			return fmt.Errorf("proxy: %s was not written by berth-agent; not replacing it", m.siteFile(s.App))
		}
	}
	if !reload && len(remove) == 0 && m.unchanged(ctx, sites) {
		return nil
	}
	if err := m.copyConfined(sites); err != nil {
		return err
	}
	var done []staged
	defer func() {
		if err != nil {
			m.rollback(done)
		}
	}()
	// The new files are written and synced side by side first (in
	// parallel: each fsync waits for a journal commit, and concurrent ones
	// share it), then renamed into place one by one, then the directory is
	// synced once.
	paths := make([]string, len(sites))
	data := make([][]byte, len(sites))
	for i, s := range sites {
		paths[i], data[i] = m.siteFile(s.App), []byte(m.render(s))
	}
	tmps, err := writeTemps(paths, data, 0o644)
	if err != nil {
		return err
	}
	for i, s := range sites {
		st, err := m.stage(s.App, tmps[i])
		if err != nil {
			for _, t := range tmps[i:] {
				os.Remove(t)
			}
			return err
		}
		done = append(done, st)
	}
	for _, app := range remove {
		st, err := m.stage(app, "")
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
	hosts := map[string]bool{}
	for _, s := range sites {
		for _, d := range s.Domains {
			hosts[d.Host] = true
		}
	}
	if err := m.test(ctx, hosts); err != nil {
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
	if err := m.saveSpecs(sites); err != nil {
		return m.reloadAfter(ctx, err)
	}
	for _, app := range remove {
		if err := removeIfExists(m.siteSpec(app)); err != nil {
			return m.reloadAfter(ctx, fmt.Errorf("proxy: %w", err))
		}
	}
	done = nil
	err = m.reload(ctx)
	m.gcCopies()
	return err
}

// unchanged tells whether applying sites would change nothing: every
// rendered file is already the live one, and nginx answers the generation
// written last (so it runs those files). A retried job then costs no
// nginx -t and no reload.
func (m *Manager) unchanged(ctx context.Context, sites []Site) bool {
	for _, s := range sites {
		for _, d := range s.Domains {
			// A custom certificate replaced at the same path is read by
			// nginx only on a reload; applying such a site again is how
			// it gets picked up.
			if d.TLS == TLSCustom {
				return false
			}
		}
		live, err := os.ReadFile(m.siteFile(s.App))
		if err != nil || string(live) != m.render(s) {
			return false
		}
		spec, err := os.ReadFile(m.siteSpec(s.App))
		if err != nil {
			return false
		}
		want, err := json.Marshal(s)
		if err != nil || string(spec) != string(want) {
			return false
		}
	}
	gen, _, err := m.status(ctx)
	return err == nil && gen == strconv.FormatUint(m.gen, 10)
}

// reloadAfter still reloads (the files on disk passed nginx -t) and
// returns err.
func (m *Manager) reloadAfter(ctx context.Context, err error) error {
	if rerr := m.reload(ctx); rerr != nil {
		return errors.Join(err, rerr)
	}
	return err
}

// stage renames tmp into place as the app's live file ("" removes it),
// keeping what undoes the change. The live name is never missing while a
// previous file existed: the previous file is hard-linked aside first and
// the new one renamed over it. The caller syncs the directory.
func (m *Manager) stage(app, tmp string) (staged, error) {
	st := staged{app: app, live: m.siteFile(app), removed: tmp == ""}
	hidden := filepath.Join(m.cfg.SitesDir, "."+app+".conf")
	if fileExists(st.live) {
		st.prev = hidden + ".prev"
		os.Remove(st.prev)
		if err := os.Link(st.live, st.prev); err != nil {
			return staged{}, fmt.Errorf("proxy: keep previous site: %w", err)
		}
	} else {
		if tmp == "" {
			return st, nil
		}
		st.absent = hidden + ".absent"
		if err := os.WriteFile(st.absent, nil, 0o600); err != nil {
			return staged{}, fmt.Errorf("proxy: %w", err)
		}
	}
	if tmp == "" {
		if err := os.Remove(st.live); err != nil {
			return st, fmt.Errorf("proxy: %w", err)
		}
		return st, nil
	}
	if err := os.Rename(tmp, st.live); err != nil {
		os.Remove(tmp)
		return st, fmt.Errorf("proxy: %w", err)
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

func (m *Manager) saveSpecs(sites []Site) error {
	paths := make([]string, len(sites))
	data := make([][]byte, len(sites))
	for i, s := range sites {
		b, err := json.Marshal(s)
		if err != nil {
			return fmt.Errorf("proxy: %w", err)
		}
		paths[i], data[i] = m.siteSpec(s.App), b
	}
	tmps, err := writeTemps(paths, data, 0o600)
	if err != nil {
		return err
	}
	for i, t := range tmps {
		if err := os.Rename(t, paths[i]); err != nil {
			for _, t := range tmps[i:] {
				os.Remove(t)
			}
			return fmt.Errorf("proxy: %w", err)
		}
	}
	if err := syncDir(m.sitesStateDir()); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	return nil
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
	tmp, err := writeTemp(path, data, mode)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("proxy: write %s: %w", path, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	return nil
}

// writeTemp writes data, synced, to a new temporary file beside path and
// returns its name. Temporary names start with '.', so nginx's *.conf
// include never reads them.
func writeTemp(path string, data []byte, mode os.FileMode) (string, error) {
	var rnd [6]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-"+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return "", fmt.Errorf("proxy: %w", err)
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
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("proxy: write %s: %w", path, err)
	}
	return tmp, nil
}

// writeTemps is writeTemp for many files, eight at a time. On an error no
// temporary file is left.
func writeTemps(paths []string, data [][]byte, mode os.FileMode) ([]string, error) {
	tmps := make([]string, len(paths))
	errs := make([]error, len(paths))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range paths {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			tmps[i], errs[i] = writeTemp(paths[i], data[i], mode)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, t := range tmps {
			if t != "" {
				os.Remove(t)
			}
		}
		return nil, err
	}
	return tmps, nil
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
