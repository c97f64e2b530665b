package deploys

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
)

// ErrRefused: the request is well formed but a policy refuses it (a root
// user without the server's allowance, a credential sent to a host it is
// not bound to, an SSH host without a pinned key). Its message says what
// would allow it and is safe to show: it names no secret.
var ErrRefused = errors.New("refused")

// harmlessAppFields are the app settings a write-scoped caller may change:
// none of them decides what code runs, as whom or where. Every other field,
// and every other change to an app (creating it, its environments, its
// webhook secret, its credential), needs the deploy scope: whoever sets
// them runs code on the app's server. Keep this the only list.
var harmlessAppFields = map[string]bool{
	"releases_to_keep":             true,
	"timeout_seconds":              true,
	"health_check_timeout_seconds": true,
}

// Changes to an app other than its settings, for requireAppChange.
const (
	changeCreate        = "create"
	changeEnv           = "env"
	changeWebhookSecret = "webhook_secret"
)

// appChangeScope is the scope a change of these app fields needs.
func appChangeScope(fields []string) store.Scope {
	for _, f := range fields {
		if !harmlessAppFields[f] {
			return store.ScopeDeploy
		}
	}
	return store.ScopeWrite
}

// requireAppChange is the one authorisation check of every change to an
// app: the scope its fields need (appChangeScope).
func requireAppChange(pr *auth.Principal, fields ...string) error {
	need := appChangeScope(fields)
	if err := require(pr, need); err != nil {
		if need == store.ScopeDeploy && len(fields) > 0 && pr != nil && pr.Allows(store.ScopeWrite) {
			return fmt.Errorf("%w (changing %s decides what code runs on the server)", err, strings.Join(fields, ", "))
		}
		return err
	}
	return nil
}

// changedAppFields names the settings that differ between two apps.
func changedAppFields(old, cur store.AppSettings) []string {
	var out []string
	add := func(name string, changed bool) {
		if changed {
			out = append(out, name)
		}
	}
	add("server", old.ServerID != cur.ServerID)
	add("credential", !eqPtr(old.GitCredentialID, cur.GitCredentialID))
	add("name", old.Name != cur.Name)
	add("repository_url", old.RepositoryURL != cur.RepositoryURL)
	add("branch", old.Branch != cur.Branch)
	add("deploy_path", old.DeployPath != cur.DeployPath)
	add("run_as_user", old.RunAsUser != cur.RunAsUser)
	add("deploy_script", old.DeployScript != cur.DeployScript)
	add("deploy_script_path", !eqPtr(old.DeployScriptPath, cur.DeployScriptPath))
	add("health_check_command", !eqPtr(old.HealthCheckCommand, cur.HealthCheckCommand))
	add("health_check_url", !eqPtr(old.HealthCheckURL, cur.HealthCheckURL))
	add("health_check_timeout_seconds", old.HealthCheckTimeoutSeconds != cur.HealthCheckTimeoutSeconds)
	add("reload_command", !eqPtr(old.ReloadCommand, cur.ReloadCommand))
	add("releases_to_keep", old.ReleasesToKeep != cur.ReleasesToKeep)
	add("shared_paths", !slices.Equal(old.SharedPaths, cur.SharedPaths))
	add("timeout_seconds", old.TimeoutSeconds != cur.TimeoutSeconds)
	return out
}

func eqPtr[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// isRootUser: the names that are uid 0 on every system. The agent also
// refuses any other name that resolves to uid 0 without the allowance.
func isRootUser(u string) bool { return u == "root" || u == "0" }

// checkRoot refuses a root app on a server that does not allow root.
func checkRoot(appName, user string, srv store.Server) error {
	if isRootUser(user) && !srv.AllowRoot {
		return fmt.Errorf("%w: app %s runs as root, which server %s does not allow (an admin can allow it: berth server allow-root %s; or choose another --user)",
			ErrRefused, appName, srv.Name, srv.Name)
	}
	return nil
}

// repoLocation is where a repository URL points: its host (lowercase, no
// port), its port ("" for the scheme's default) and whether git reaches it
// over ssh.
type repoLocation struct {
	Host, Port string
	SSH        bool
}

// sshAddress is the host as known_hosts names it: host, or [host]:port.
func (l repoLocation) sshAddress() string {
	port := l.Port
	if port == "" {
		port = "22"
	}
	return knownhosts.Normalize(net.JoinHostPort(l.Host, port))
}

// parseRepoHost finds the host of a repository URL: https://host/..,
// ssh://user@host:port/.. or scp-like user@host:path. A local path has
// none and is an error, as is a host that is not plain ASCII (an IDN must
// be written in its xn-- form, so what is compared is what git dials).
func parseRepoHost(raw string) (repoLocation, error) {
	var loc repoLocation
	var host string
	if scheme, _, ok := strings.Cut(raw, "://"); ok {
		// git hands an ssh:// URL's authority to ssh as written, so
		// "ssh://github.com#@evil.example/x" dials evil.example while a URL
		// parser reads github.com: refuse what the two could read apart.
		if strings.ContainsAny(raw, "#?\\ \t\r\n") {
			return loc, fmt.Errorf("%w: repository URL %q has a character git and this check could read differently (# ? \\ or space)", ErrInvalid, raw)
		}
		u, err := url.Parse(raw)
		if err != nil {
			return loc, fmt.Errorf("%w: repository URL %q does not parse", ErrInvalid, raw)
		}
		switch strings.ToLower(scheme) {
		case "https", "http", "git":
		case "ssh", "git+ssh", "ssh+git":
			loc.SSH = true
		default:
			return loc, fmt.Errorf("%w: a git credential is for http(s) or ssh repositories, not %s://", ErrInvalid, scheme)
		}
		if strings.HasPrefix(u.Host, "[") {
			host, loc.Port = u.Hostname(), u.Port()
			if _, err := netip.ParseAddr(host); err != nil {
				return loc, fmt.Errorf("%w: repository URL %q has an invalid address", ErrInvalid, raw)
			}
			loc.Host = strings.ToLower(host)
			return loc, nil
		}
		host, loc.Port = u.Hostname(), u.Port()
		if _, hasPort := strings.CutPrefix(u.Host, host+":"); hasPort && loc.Port == "" {
			return loc, fmt.Errorf("%w: repository URL %q has an empty port", ErrInvalid, raw)
		}
		if loc.Port != "" {
			if n, err := strconv.Atoi(loc.Port); err != nil || n < 1 || n > 65535 {
				return loc, fmt.Errorf("%w: repository URL %q has an invalid port", ErrInvalid, raw)
			}
		}
	} else {
		// scp-like [user@]host:path; a ':' after a '/' is a local path.
		before, _, ok := strings.Cut(raw, ":")
		if !ok || strings.Contains(before, "/") {
			return loc, fmt.Errorf("%w: repository %q is a local path; a git credential is only for remote repositories", ErrInvalid, raw)
		}
		if i := strings.LastIndex(before, "@"); i >= 0 {
			before = before[i+1:]
		}
		host, loc.SSH = before, true
	}
	h, err := checkHostName(host)
	if err != nil {
		return loc, fmt.Errorf("%w: repository URL %q: %v", ErrInvalid, raw, err)
	}
	loc.Host = h
	return loc, nil
}

// checkHostName lowercases a DNS name or IP address and refuses anything
// else: empty, non-ASCII (IDN), or characters no host name has.
func checkHostName(host string) (string, error) {
	if host == "" {
		return "", errors.New("no host")
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a.String(), nil
	}
	for _, r := range host {
		if r > 0x7e {
			return "", fmt.Errorf("host %q is not ASCII: write an internationalised name in its xn-- form", host)
		}
	}
	host = strings.ToLower(host)
	if len(host) > 253 {
		return "", errors.New("host name too long")
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", fmt.Errorf("%q is not a host name", host)
		}
		for _, c := range label {
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
				return "", fmt.Errorf("%q is not a host name", host)
			}
		}
	}
	return host, nil
}

// normaliseHosts checks and lowercases a list of allowed hosts, dropping
// repeats.
func normaliseHosts(hosts []string) ([]string, error) {
	out := []string{}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if strings.Contains(h, ":") && !strings.Contains(h, "::") {
			return nil, fmt.Errorf("%w: allowed host %q: give the host without a port or scheme", ErrInvalid, h)
		}
		n, err := checkHostName(h)
		if err != nil {
			return nil, fmt.Errorf("%w: allowed host: %v", ErrInvalid, err)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	if len(out) > 50 {
		return nil, fmt.Errorf("%w: at most 50 allowed hosts", ErrInvalid)
	}
	return out, nil
}

// checkCredentialHost refuses a credential for a repository whose host it
// is not bound to, and an ssh fetch from a host with no pinned key. An
// unbound credential (no app used it yet) passes: CreateApp binds it.
func checkCredentialHost(c store.GitCredential, repoURL string) (repoLocation, error) {
	loc, err := parseRepoHost(repoURL)
	if err != nil {
		return loc, err
	}
	// A token over plain http (or git://) crosses the network in clear:
	// only a repository on this machine's loopback may be reached that way.
	if c.Kind == store.GitCredentialHTTPS && !loc.SSH && !strings.HasPrefix(strings.ToLower(repoURL), "https://") && !isLoopbackHost(loc.Host) {
		return loc, fmt.Errorf("%w: git credential %s is an https token: the repository URL must start with https:// (over http the token would travel in clear)", ErrRefused, c.Name)
	}
	if len(c.AllowedHosts) > 0 && !slices.Contains(c.AllowedHosts, loc.Host) {
		return loc, fmt.Errorf("%w: git credential %s may only be sent to %s, not to %s", ErrRefused, c.Name, strings.Join(c.AllowedHosts, ", "), loc.Host)
	}
	return loc, nil
}

// isLoopbackHost: localhost or a loopback address.
func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.IsLoopback()
}

// checkPinned refuses an ssh credential's fetch from a host whose key is
// not pinned to the credential.
func checkPinned(c store.GitCredential, loc repoLocation) error {
	if c.Kind != store.GitCredentialSSH || !loc.SSH {
		return nil
	}
	if hostPinned(c.KnownHosts, loc.sshAddress()) {
		return nil
	}
	addr := loc.Host
	if loc.Port != "" {
		addr = net.JoinHostPort(loc.Host, loc.Port)
	}
	return fmt.Errorf("%w: git credential %s has no pinned host key for %s (an admin runs: berth git-credential scan-host %s %s, then trust-host with the fingerprint checked)",
		ErrRefused, c.Name, loc.sshAddress(), c.Name, addr)
}

// hostPinned reports whether known_hosts holds a plain key line for addr.
func hostPinned(known, addr string) bool {
	rest := []byte(known)
	for len(rest) > 0 {
		marker, hosts, _, _, r, err := ssh.ParseKnownHosts(rest)
		if err != nil {
			return false
		}
		rest = r
		if marker == "" && slices.Contains(hosts, addr) {
			return true
		}
	}
	return false
}

// parseKnownHosts checks known_hosts text given with a credential and
// returns it re-serialised, one canonical line per key. Only plain host
// names are taken: a pin names its host (no wildcard, no hashed name, no
// marker).
func parseKnownHosts(text string) (string, error) {
	if len(text) > 64<<10 {
		return "", fmt.Errorf("%w: known_hosts larger than 64 KiB", ErrInvalid)
	}
	var lines []string
	rest := []byte(text)
	for n := 1; len(strings.TrimSpace(string(rest))) > 0; n++ {
		marker, hosts, key, _, r, err := ssh.ParseKnownHosts(rest)
		if err != nil {
			return "", fmt.Errorf("%w: known_hosts: not OpenSSH known_hosts lines", ErrInvalid)
		}
		rest = r
		if marker != "" {
			return "", fmt.Errorf("%w: known_hosts: @%s lines are not taken; pin each host's key", ErrInvalid, marker)
		}
		for i, h := range hosts {
			if strings.HasPrefix(h, "|") || strings.ContainsAny(h, "*?!") {
				return "", fmt.Errorf("%w: known_hosts: %q: give plain host names (no hashed names or patterns)", ErrInvalid, h)
			}
			name, port := h, ""
			if strings.HasPrefix(h, "[") {
				hp, p, err := net.SplitHostPort(h)
				if err != nil {
					return "", fmt.Errorf("%w: known_hosts: %q is not [host]:port", ErrInvalid, h)
				}
				name, port = hp, p
			}
			cn, err := checkHostName(name)
			if err != nil {
				return "", fmt.Errorf("%w: known_hosts: %v", ErrInvalid, err)
			}
			if port == "" {
				port = "22"
			}
			hosts[i] = knownhosts.Normalize(net.JoinHostPort(cn, port))
		}
		lines = append(lines, knownhosts.Line(hosts, key))
	}
	if len(lines) == 0 {
		return "", nil
	}
	return strings.Join(lines, "\n") + "\n", nil
}

// canAttach: an admin attaches any credential, anyone else only one an
// admin shared with them.
func (s *Service) canAttach(ctx context.Context, tx *store.Store, pr *auth.Principal, c store.GitCredential) error {
	if pr.Allows(store.ScopeAdmin) {
		return nil
	}
	shared, err := tx.GitCredentialSharedWith(ctx, c.ID, pr.UserID)
	if err != nil {
		return err
	}
	if !shared {
		return fmt.Errorf("%w: git credential %s is not shared with you (an admin can: berth git-credential share %s --user %s)", auth.ErrForbidden, c.Name, c.Name, pr.Email)
	}
	return nil
}

// attachCredential checks that the caller may attach c to an app at
// repoURL and that c may be sent there, binding an unbound credential to
// the host, in tx (which holds the credential's row lock).
func (s *Service) attachCredential(ctx context.Context, tx *store.Store, pr *auth.Principal, ref, repoURL string, attaching bool) (store.GitCredential, error) {
	c, err := s.resolveCredentialIn(ctx, tx, ref)
	if err != nil {
		return store.GitCredential{}, err
	}
	if c, err = tx.GitCredentialForUpdate(ctx, c.ID); err != nil {
		return store.GitCredential{}, err
	}
	if attaching {
		if err := s.canAttach(ctx, tx, pr, c); err != nil {
			return store.GitCredential{}, err
		}
	}
	loc, err := checkCredentialHost(c, repoURL)
	if err != nil {
		return store.GitCredential{}, err
	}
	if len(c.AllowedHosts) == 0 {
		// The first app that uses a credential binds it to its host.
		if c, err = tx.SetGitCredentialAllowedHosts(ctx, c.ID, []string{loc.Host}); err != nil {
			return store.GitCredential{}, err
		}
	}
	return c, nil
}

// checkRunnable is what a deployment of a must satisfy before the agent
// sees anything: a root user only where the server allows root; the
// credential (for a fetch) only to its hosts, and over ssh only to a host
// whose key it pins.
func checkRunnable(a store.App, srv store.Server, c *store.GitCredential) error {
	if err := checkRoot(a.Name, a.RunAsUser, srv); err != nil {
		return err
	}
	if c == nil {
		return nil
	}
	if len(c.AllowedHosts) == 0 {
		return fmt.Errorf("%w: git credential %s is bound to no host; attach it to the app again to bind it", ErrRefused, c.Name)
	}
	loc, err := checkCredentialHost(*c, a.RepositoryURL)
	if err != nil {
		return err
	}
	return checkPinned(*c, loc)
}

// loadRunnable loads what checkRunnable needs and checks it.
func (s *Service) loadRunnable(ctx context.Context, a store.App, fetch bool) (store.Server, *store.GitCredential, error) {
	srv, err := s.st.Server(ctx, a.ServerID)
	if err != nil {
		return store.Server{}, nil, err
	}
	var c *store.GitCredential
	if fetch && a.GitCredentialID != nil {
		gc, err := s.st.GitCredential(ctx, *a.GitCredentialID)
		if err != nil {
			return store.Server{}, nil, err
		}
		c = &gc
	}
	return srv, c, checkRunnable(a, srv, c)
}

// roleMayDeploy: the user is active and their role holds the deploy scope.
func roleMayDeploy(u store.User) bool {
	if u.Status != store.UserActive {
		return false
	}
	return auth.Rank(auth.RoleScope(u.Role)) >= auth.Rank(store.ScopeDeploy)
}
