package domains

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"regexp"
	"strings"

	"golang.org/x/net/idna"

	"github.com/berthhq/berth/controller/internal/deploys"
)

// ErrInvalid is deploys.ErrInvalid, so every caller maps it to the same
// status (InvalidArgument).
var ErrInvalid = deploys.ErrInvalid

// A DNS label as the schema's domains_hostname_check has it.
var labelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// hostProfile turns a Unicode name into its ASCII (punycode) form the way
// browsers look names up (UTS #46, lowercase mapping), and refuses
// characters no host name may hold.
var hostProfile = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.Transitional(false), idna.StrictDomainName(true), idna.VerifyDNSLength(true))

// NormalizeHost returns a host name as the domains table keeps it:
// trimmed, lowercase, no trailing dot, IDNs in punycode, "*." only as the
// first label of a name with at least two more labels. It refuses IP
// addresses, single labels and anything longer than DNS allows.
func NormalizeHost(raw string) (string, error) {
	h := strings.TrimSpace(raw)
	h = strings.TrimSuffix(h, ".")
	if h == "" {
		return "", fmt.Errorf("%w: a host name is required", ErrInvalid)
	}
	if len(h) > 1000 {
		return "", fmt.Errorf("%w: host name too long", ErrInvalid)
	}
	if ip := net.ParseIP(strings.Trim(h, "[]")); ip != nil {
		return "", fmt.Errorf("%w: %q is an IP address; give a host name", ErrInvalid, raw)
	}
	wildcard := false
	if strings.HasPrefix(h, "*.") {
		wildcard, h = true, h[2:]
	}
	if strings.Contains(h, "*") {
		return "", fmt.Errorf("%w: %q: a wildcard is allowed only as the whole first label (*.example.com)", ErrInvalid, raw)
	}
	ascii, err := hostProfile.ToASCII(h)
	if err != nil {
		return "", fmt.Errorf("%w: %q is not a valid host name", ErrInvalid, raw)
	}
	ascii = strings.ToLower(ascii)
	labels := strings.Split(ascii, ".")
	if len(labels) < 2 || (wildcard && len(labels) < 2) {
		return "", fmt.Errorf("%w: %q: give a fully qualified name (host.example.com)", ErrInvalid, raw)
	}
	for _, l := range labels {
		if len(l) > 63 || !labelRE.MatchString(l) {
			return "", fmt.Errorf("%w: %q is not a valid host name", ErrInvalid, raw)
		}
	}
	if wildcard {
		ascii = "*." + ascii
	}
	if len(ascii) > 253 {
		return "", fmt.Errorf("%w: host name longer than 253 characters", ErrInvalid)
	}
	return ascii, nil
}

// redirectTarget checks a redirect target (a URL with an http(s) scheme
// and a host, or a bare host) and returns it as stored and the host it
// points at.
func redirectTarget(raw string) (stored, host string, err error) {
	raw = strings.TrimSpace(raw)
	if raw == "" || len(raw) > 2048 {
		return "", "", fmt.Errorf("%w: --redirect-to must be a URL or a host name", ErrInvalid)
	}
	if !strings.Contains(raw, "://") {
		h, err := NormalizeHost(raw)
		if err != nil || strings.HasPrefix(h, "*.") {
			return "", "", fmt.Errorf("%w: --redirect-to %q is neither a URL nor a host name", ErrInvalid, raw)
		}
		return h, h, nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return "", "", fmt.Errorf("%w: --redirect-to %q must be an http or https URL with a host", ErrInvalid, raw)
	}
	if strings.ContainsAny(raw, " \t\r\n\"'{};\\") {
		return "", "", fmt.Errorf("%w: --redirect-to %q holds characters a URL may not", ErrInvalid, raw)
	}
	// The agent appends the request's own path and query, and refuses a
	// target with a query, a fragment or a path character outside this
	// set; a target it refuses would fail every site job of the app.
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(raw, "#") {
		return "", "", fmt.Errorf("%w: --redirect-to %q: no query or fragment (the request's own path and query are kept)", ErrInvalid, raw)
	}
	if !onlyChars(u.EscapedPath(), "/._-~%") {
		return "", "", fmt.Errorf("%w: --redirect-to %q: the path may hold only letters, digits, /._-~ and %%-escapes", ErrInvalid, raw)
	}
	h, err := NormalizeHost(u.Hostname())
	if err != nil || strings.HasPrefix(h, "*.") {
		return "", "", fmt.Errorf("%w: --redirect-to %q has no valid host", ErrInvalid, raw)
	}
	if p := u.Port(); p != "" {
		u.Host = h + ":" + p
	} else {
		u.Host = h
	}
	return u.String(), h, nil
}

// checkServerPath checks a path on the managed server (a custom
// certificate or key): absolute, clean, no characters nginx would read as
// syntax.
func checkServerPath(flag, p string) (string, error) {
	p = strings.TrimSpace(p)
	if p == "" {
		return "", fmt.Errorf("%w: %s is required with --tls custom", ErrInvalid, flag)
	}
	// The agent's rule (safePath): ASCII letters, digits and ._-/@+ only.
	if len(p) > 1024 || !strings.HasPrefix(p, "/") || path.Clean(p) != p || !onlyChars(p, "._-/@+") {
		return "", fmt.Errorf("%w: %s must be a clean absolute path of letters, digits and ._-/@+", ErrInvalid, flag)
	}
	return p, nil
}

// onlyChars says whether s holds only ASCII letters, digits and extra.
func onlyChars(s, extra string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(extra, c) >= 0) {
			return false
		}
	}
	return true
}

// checkUpstream checks an app's upstream: an http(s) URL on a host and
// port, or unix:/absolute/socket.
func checkUpstream(raw string) (string, error) {
	raw = strings.TrimSpace(raw)
	if strings.HasPrefix(raw, "unix:") {
		p := strings.TrimPrefix(raw, "unix:")
		if _, err := checkServerPath("--upstream unix:PATH", p); err != nil {
			return "", err
		}
		return "unix:" + p, nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || len(raw) > 1024 {
		return "", fmt.Errorf("%w: --upstream %q must be http://HOST:PORT or unix:/path/to.sock", ErrInvalid, raw)
	}
	if strings.ContainsAny(raw, " \t\r\n\"'{};$\\") {
		return "", fmt.Errorf("%w: --upstream %q holds characters a URL may not", ErrInvalid, raw)
	}
	return u.Scheme + "://" + u.Host, nil
}

// checkStaticRoot checks a directory relative to the release (current).
func checkStaticRoot(raw string) (string, error) {
	p := strings.Trim(strings.TrimSpace(raw), "/")
	if p == "" {
		p = "."
	}
	if len(p) > 1024 || path.Clean(p) != p || strings.HasPrefix(p, "..") || strings.ContainsAny(p, " \t\r\n\"'{};$\\") {
		return "", fmt.Errorf("%w: --static-root must be a directory inside the release (no '..', spaces, quotes, braces, ';' or '$')", ErrInvalid)
	}
	return p, nil
}

// checkDirectoryURL checks an ACME directory URL.
func checkDirectoryURL(raw string) (string, error) {
	raw = strings.TrimSpace(raw)
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || len(raw) > 2048 {
		return "", fmt.Errorf("%w: --acme-directory must be an https URL", ErrInvalid)
	}
	return raw, nil
}

// certName is the name an ACME certificate of host is installed under on
// the server: the host, with a wildcard's '*' spelt out.
func certName(host string) string {
	if strings.HasPrefix(host, "*.") {
		return "_wildcard." + host[2:]
	}
	return host
}
