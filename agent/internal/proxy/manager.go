package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config says where nginx and the manager's files are.
type Config struct {
	NginxBin    string // default "nginx"
	NginxConf   string // main config passed to nginx -t -c / -s reload; it must include SitesDir/*.conf inside http {}
	NginxPrefix string // -p, optional
	SitesDir    string // where the agent's site files live (included by NginxConf), one file per app
	StateDir    string // a directory of its own (made 0711): keys/, certs/, challenges/, sites/
	HTTPPort    int    // default 80
	HTTPSPort   int    // default 443
	ListenAddr  string // optional bind address, "" = all (IPv4, and IPv6 when the host has it)

	// ChallengeDir is where HTTP-01 answers are written; default
	// StateDir/challenges. nginx's worker user must be able to reach it,
	// which it cannot inside a 0700 directory such as the agent's
	// /var/lib/berth-agent.
	ChallengeDir string
	// ErrorLog is passed to nginx as -e (nginx 1.19.5+), so that
	// `nginx -t` and `nginx -s reload` do not open the compiled-in
	// default log; optional. A reload that nginx refuses is explained
	// from this file's last lines when it is set.
	ErrorLog string
	// ReloadTimeout bounds the wait for a reload to take effect; default
	// 30s. It only ends a wait for a reload nginx refused.
	ReloadTimeout time.Duration
	// ProtectedDirs hold files a custom certificate or key may never
	// name (the agent's data directory with its identity key); StateDir
	// is always one of them.
	ProtectedDirs []string
}

// Manager renders, validates and reloads the sites, and keeps the keys,
// certificates and challenge answers. It is safe for concurrent use;
// changes are serialised.
type Manager struct {
	cfg   Config
	http2 http2Style
	ipv6  bool

	mu  sync.Mutex
	gen uint64 // generation written with the last change
}

// http2Style is how this nginx turns HTTP/2 on: the listen parameter
// (before 1.25.1) or the http2 directive (1.25.1+, where the listen
// parameter is deprecated and warns on every -t).
type http2Style int

const (
	http2Listen http2Style = iota
	http2Directive
)

// File names in SitesDir and StateDir.
const (
	baseFile   = "_berth.conf"
	statusHost = "status.berth-agent.invalid" // .invalid: never a real host (RFC 2606)
	statusPath = "/berth-generation"
)

// New checks the configuration, makes the state directories, puts back a
// site left half-applied by a crash, and writes SitesDir/_berth.conf. It
// does not reload nginx: the next change (or Reload) does.
func New(cfg Config) (*Manager, error) {
	if cfg.NginxBin == "" {
		cfg.NginxBin = "nginx"
	}
	if cfg.HTTPPort == 0 {
		cfg.HTTPPort = 80
	}
	if cfg.HTTPSPort == 0 {
		cfg.HTTPSPort = 443
	}
	if cfg.ReloadTimeout <= 0 {
		cfg.ReloadTimeout = 30 * time.Second
	}
	if cfg.NginxConf == "" || !filepath.IsAbs(cfg.NginxConf) {
		return nil, fmt.Errorf("proxy: NginxConf must be an absolute path, got %q", cfg.NginxConf)
	}
	for name, p := range map[string]*string{"SitesDir": &cfg.SitesDir, "StateDir": &cfg.StateDir} {
		if *p == "" || !filepath.IsAbs(*p) || !safePath(*p) {
			return nil, fmt.Errorf("proxy: %s must be an absolute path of letters, digits and ._-/@+, got %q", name, *p)
		}
		*p = filepath.Clean(*p)
	}
	if cfg.ChallengeDir == "" {
		cfg.ChallengeDir = filepath.Join(cfg.StateDir, "challenges")
	}
	if !filepath.IsAbs(cfg.ChallengeDir) || !safePath(cfg.ChallengeDir) {
		return nil, fmt.Errorf("proxy: ChallengeDir must be an absolute path of letters, digits and ._-/@+, got %q", cfg.ChallengeDir)
	}
	cfg.ChallengeDir = filepath.Clean(cfg.ChallengeDir)
	if !validPort(cfg.HTTPPort) || !validPort(cfg.HTTPSPort) || cfg.HTTPPort == cfg.HTTPSPort {
		return nil, fmt.Errorf("proxy: invalid ports %d/%d", cfg.HTTPPort, cfg.HTTPSPort)
	}
	if cfg.ListenAddr != "" && net.ParseIP(cfg.ListenAddr) == nil {
		return nil, fmt.Errorf("proxy: ListenAddr %q is not an IP address", cfg.ListenAddr)
	}
	if cfg.ErrorLog != "" && (!filepath.IsAbs(cfg.ErrorLog) || !safePath(cfg.ErrorLog)) {
		return nil, fmt.Errorf("proxy: ErrorLog must be an absolute path, got %q", cfg.ErrorLog)
	}

	m := &Manager{cfg: cfg, gen: uint64(time.Now().UnixNano())}
	if err := m.makeDirs(); err != nil {
		return nil, err
	}
	// As root, nginx's workers run as another user (www-data): a challenge
	// directory they cannot reach would only show at the first issuance,
	// as a 403 to the CA. Say it now.
	if os.Geteuid() == 0 {
		if err := reachableByOthers(cfg.ChallengeDir); err != nil {
			return nil, fmt.Errorf("proxy: ChallengeDir %s is not readable by nginx's worker user (%v); set Config.ChallengeDir outside any 0700 directory", cfg.ChallengeDir, err)
		}
	}
	style, err := detectHTTP2(cfg.NginxBin)
	if err != nil {
		return nil, err
	}
	m.http2 = style
	if cfg.ListenAddr == "" {
		m.ipv6 = haveIPv6()
	}
	if err := m.recover(); err != nil {
		return nil, err
	}
	if err := m.writeBase(); err != nil {
		return nil, err
	}
	return m, nil
}

// reachableByOthers checks that every directory from / to dir can be
// passed through by any user, and dir itself read.
func reachableByOthers(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if st.Mode().Perm()&0o005 != 0o005 {
		return fmt.Errorf("%s is mode %#o", dir, st.Mode().Perm())
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s is mode %#o", p, st.Mode().Perm())
		}
		if p == "/" {
			return nil
		}
	}
}

func validPort(p int) bool { return p > 0 && p < 65536 }

func (m *Manager) makeDirs() error {
	dirs := []struct {
		path string
		mode os.FileMode
	}{
		// 0711: the workers pass through to the default challenge
		// directory; nothing here can be listed by them.
		{m.cfg.StateDir, 0o711},
		{m.keysDir(), 0o700},
		{m.certsDir(), 0o700},
		{m.sitesStateDir(), 0o700},
		{filepath.Join(m.cfg.StateDir, "owners"), 0o700},
		{m.ownersDir(ownCerts), 0o700},
		{m.ownersDir(ownChallenges), 0o700},
		{m.customDir(), 0o700},
		{m.cfg.ChallengeDir, 0o755},
		{m.cfg.SitesDir, 0o755},
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return fmt.Errorf("proxy: %w", err)
		}
		// MkdirAll leaves an existing directory's mode alone and the
		// umask (077 under systemd) narrows a new one: set it.
		if err := os.Chmod(d.path, d.mode); err != nil {
			return fmt.Errorf("proxy: %w", err)
		}
	}
	return nil
}

func (m *Manager) keysDir() string       { return filepath.Join(m.cfg.StateDir, "keys") }
func (m *Manager) certsDir() string      { return filepath.Join(m.cfg.StateDir, "certs") }
func (m *Manager) sitesStateDir() string { return filepath.Join(m.cfg.StateDir, "sites") }

// detectHTTP2 asks nginx for its version.
func detectHTTP2(bin string) (http2Style, error) {
	out, err := exec.Command(bin, "-v").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("proxy: %s -v: %w: %s", bin, err, bytes.TrimSpace(out))
	}
	maj, min, patch, ok := parseNginxVersion(string(out))
	if !ok {
		return 0, fmt.Errorf("proxy: cannot read the nginx version from %q", bytes.TrimSpace(out))
	}
	return http2StyleFor(maj, min, patch), nil
}

func http2StyleFor(maj, min, patch int) http2Style {
	if maj > 1 || (maj == 1 && (min > 25 || (min == 25 && patch >= 1))) {
		return http2Directive
	}
	return http2Listen
}

// parseNginxVersion reads "nginx version: nginx/1.22.1 ..." output.
func parseNginxVersion(s string) (maj, min, patch int, ok bool) {
	i := strings.Index(s, "nginx/")
	if i < 0 {
		return 0, 0, 0, false
	}
	v := s[i+len("nginx/"):]
	if j := strings.IndexAny(v, " \n\r\t("); j >= 0 {
		v = v[:j]
	}
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return 0, 0, 0, false
	}
	var n [3]int
	for k, p := range parts {
		x, err := strconv.Atoi(p)
		if err != nil || x < 0 {
			return 0, 0, 0, false
		}
		n[k] = x
	}
	return n[0], n[1], n[2], true
}

// haveIPv6 tells whether [::] can be bound, so "listen [::]:80" would not
// stop nginx on a host with IPv6 turned off.
func haveIPv6() bool {
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// recover puts back the previous file of a site whose apply was cut short
// between the rename and the check (see the package doc).
func (m *Manager) recover() error {
	ents, err := os.ReadDir(m.cfg.SitesDir)
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	for _, e := range ents {
		n := e.Name()
		if !strings.HasPrefix(n, ".") {
			continue
		}
		switch {
		case strings.HasSuffix(n, ".conf.prev"):
			live := filepath.Join(m.cfg.SitesDir, strings.TrimSuffix(n[1:], ".prev"))
			if err := os.Rename(filepath.Join(m.cfg.SitesDir, n), live); err != nil {
				return fmt.Errorf("proxy: restore %s: %w", live, err)
			}
		case strings.HasSuffix(n, ".conf.absent"):
			live := filepath.Join(m.cfg.SitesDir, strings.TrimSuffix(n[1:], ".absent"))
			if err := os.Remove(live); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("proxy: restore %s: %w", live, err)
			}
			if err := os.Remove(filepath.Join(m.cfg.SitesDir, n)); err != nil {
				return fmt.Errorf("proxy: %w", err)
			}
		case strings.Contains(n, ".tmp-"):
			os.Remove(filepath.Join(m.cfg.SitesDir, n))
		}
	}
	// Temporary files of writes cut short elsewhere.
	for _, dir := range []string{m.sitesStateDir(), m.certsDir(), m.keysDir(), m.cfg.ChallengeDir} {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("proxy: %w", err)
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), ".tmp-") {
				os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
	return syncDir(m.cfg.SitesDir)
}

// Generation is the number written with the last change; the status
// server answers it once nginx runs that configuration.
func (m *Manager) Generation() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.gen
}

// Reload tests the configuration as it is on disk, reloads nginx and waits
// until the new configuration answers.
func (m *Manager) Reload(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gen++
	if err := m.writeBase(); err != nil {
		return err
	}
	if err := m.test(ctx, nil); err != nil {
		return err
	}
	return m.reload(ctx)
}

// nginxArgs are the arguments that select this nginx (prefix, config,
// error log) followed by extra.
func (m *Manager) nginxArgs(extra ...string) []string {
	var a []string
	if m.cfg.NginxPrefix != "" {
		a = append(a, "-p", m.cfg.NginxPrefix)
	}
	a = append(a, "-c", m.cfg.NginxConf)
	if m.cfg.ErrorLog != "" {
		a = append(a, "-e", m.cfg.ErrorLog)
	}
	return append(a, extra...)
}

// test runs nginx -t. A warning that a host of the sites being changed is
// already served by another server block ("conflicting server name") fails
// it too: nginx would ignore one of the two and the app would silently not
// be reachable on that host. Such warnings about other hosts (sites the
// agent does not own) are left to their owners.
func (m *Manager) test(ctx context.Context, hosts map[string]bool) error {
	out, err := exec.CommandContext(ctx, m.cfg.NginxBin, m.nginxArgs("-t", "-q")...).CombinedOutput()
	msg := nginxMessage(out)
	if err != nil {
		if msg == "" {
			msg = err.Error()
		}
		return fmt.Errorf("nginx -t: %s", msg)
	}
	var conflicts []string
	for _, l := range strings.Split(msg, "; ") {
		// [warn] conflicting server name "a.test" on 127.0.0.1:80, ignored
		_, rest, ok := strings.Cut(l, `conflicting server name "`)
		if !ok {
			continue
		}
		name, _, _ := strings.Cut(rest, `"`)
		if hosts[name] {
			conflicts = append(conflicts, l)
		}
	}
	if len(conflicts) > 0 {
		return fmt.Errorf("nginx -t: %s (the host is already served by another site)", strings.Join(conflicts, "; "))
	}
	return nil
}

// nginxMessage keeps nginx's own lines, without the trailer that only
// repeats that the test failed.
func nginxMessage(out []byte) string {
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasSuffix(l, "test failed") || strings.HasSuffix(l, "syntax is ok") || strings.HasSuffix(l, "test is successful") {
			continue
		}
		keep = append(keep, strings.TrimPrefix(l, "nginx: "))
	}
	return strings.Join(keep, "; ")
}

// reload signals nginx and waits for the status server to answer the
// current generation.
func (m *Manager) reload(ctx context.Context) error {
	logOff := m.errorLogSize()
	// The workers running now: after the reload they must stop accepting
	// before the new configuration is the only one answering.
	old := m.oldWorkers(ctx)
	out, err := exec.CommandContext(ctx, m.cfg.NginxBin, m.nginxArgs("-s", "reload")...).CombinedOutput()
	if err != nil {
		msg := nginxMessage(out)
		if msg == "" {
			msg = err.Error()
		}
		return fmt.Errorf("nginx -s reload: %s", msg)
	}
	want := strconv.FormatUint(m.gen, 10)
	wctx, cancel := context.WithTimeout(ctx, m.cfg.ReloadTimeout)
	defer cancel()
	delay := 2 * time.Millisecond
	var last string
	for {
		got, err := m.statusGeneration(wctx)
		if err == nil && got == want {
			// A new worker answers; an old one may still accept a
			// connection until it has closed its listening sockets.
			if err := old.waitStopped(wctx); err != nil {
				return fmt.Errorf("nginx reload: old workers still accept connections: %w", err)
			}
			return nil
		}
		// A reload nginx refused (a port already taken, a file gone
		// since the check) is logged by the master at once; no need to
		// wait for the timeout to say so.
		if msg := m.errorLogFrom(logOff); msg != "" {
			return fmt.Errorf("nginx refused the reload and keeps its previous configuration: %s", msg)
		}
		if err != nil {
			last = err.Error()
		} else {
			last = "nginx still answers generation " + got
		}
		t := time.NewTimer(delay)
		select {
		case <-wctx.Done():
			t.Stop()
			if ctx.Err() != nil {
				return fmt.Errorf("nginx reload: %w", ctx.Err())
			}
			return fmt.Errorf("nginx did not take the new configuration within %s (%s)", m.cfg.ReloadTimeout, last)
		case <-t.C:
		}
		if delay < 100*time.Millisecond {
			delay *= 2
		}
	}
}

// oldWorkers are nginx's workers before a reload, found through the one
// that answers the status server or, when nginx runs a configuration
// without it (the first change after the agent was installed, beside the
// distribution's default site), through the sockets on our ports: its
// workers may still listen there.
func (m *Manager) oldWorkers(ctx context.Context) workers {
	if _, pid, err := m.status(ctx); err == nil && pid > 0 {
		return snapshotWorkers(pid)
	}
	return snapshotListeners(m.cfg.HTTPPort, m.cfg.HTTPSPort)
}

// statusGeneration asks the loopback status server, on a new connection
// each time so that an old worker's kept-alive connection cannot answer.
func (m *Manager) statusGeneration(ctx context.Context) (string, error) {
	gen, _, err := m.status(ctx)
	return gen, err
}

// status returns the generation nginx runs and the pid of the worker that
// answered.
func (m *Manager) status(ctx context.Context) (gen string, pid int, err error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(m.cfg.HTTPPort)))
	if err != nil {
		return "", 0, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	req := "GET " + statusPath + " HTTP/1.0\r\nHost: " + statusHost + "\r\n\r\n"
	if _, err := c.Write([]byte(req)); err != nil {
		return "", 0, err
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(&limitedReader{c, 4096}); err != nil {
		return "", 0, err
	}
	resp := buf.String()
	if !strings.HasPrefix(resp, "HTTP/1.1 200") && !strings.HasPrefix(resp, "HTTP/1.0 200") {
		line, _, _ := strings.Cut(resp, "\r\n")
		return "", 0, fmt.Errorf("status server answered %q", line)
	}
	_, body, ok := strings.Cut(resp, "\r\n\r\n")
	if !ok {
		return "", 0, errors.New("status server: no body")
	}
	gen, p, _ := strings.Cut(strings.TrimSpace(body), " ")
	pid, _ = strconv.Atoi(p)
	return gen, pid, nil
}

type limitedReader struct {
	c net.Conn
	n int
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errors.New("status answer too long")
	}
	if len(p) > l.n {
		p = p[:l.n]
	}
	n, err := l.c.Read(p)
	l.n -= n
	return n, err
}

// errorLogSize is the error log's size now (0 when unknown).
func (m *Manager) errorLogSize() int64 {
	if m.cfg.ErrorLog == "" {
		return 0
	}
	st, err := os.Stat(m.cfg.ErrorLog)
	if err != nil {
		return 0
	}
	return st.Size()
}

// errorLogFrom returns the emergency lines nginx logged after offset off,
// when the error log is known.
func (m *Manager) errorLogFrom(off int64) string {
	if m.cfg.ErrorLog == "" {
		return ""
	}
	f, err := os.Open(m.cfg.ErrorLog)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() <= off {
		return "" // nothing new (or the log was rotated: nothing known)
	}
	const max = 64 << 10
	n := st.Size() - off
	if n > max {
		off, n = st.Size()-max, max
	}
	buf := make([]byte, n)
	k, _ := f.ReadAt(buf, off)
	var keep []string
	for _, l := range strings.Split(string(buf[:k]), "\n") {
		// "2006/01/02 15:04:05 [emerg] 123#123: message"
		// Only [emerg]: that is how the master reports a configuration it
		// could not load; [crit] lines come from traffic (an upstream
		// socket missing) and say nothing about the reload.
		for _, lvl := range []string{"[emerg] "} {
			if i := strings.Index(l, lvl); i >= 0 {
				msg := l[i+len(lvl):]
				if j := strings.Index(msg, ": "); j >= 0 && strings.Contains(msg[:j], "#") {
					msg = msg[j+2:] // drop "pid#tid"
				}
				keep = append(keep, strings.TrimSpace(msg))
				break
			}
		}
	}
	if len(keep) > 5 {
		keep = keep[len(keep)-5:]
	}
	return strings.Join(keep, "; ")
}
