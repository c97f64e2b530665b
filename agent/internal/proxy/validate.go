package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrInvalid wraps every refusal of a site, host, name or token for what
// it contains, so callers can tell bad input from a failing nginx.
var ErrInvalid = errors.New("invalid")

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, a...)...)
}

// Everything rendered into a site file passes one of these checks. They
// are allow-lists: none of them lets through whitespace, a quote, ';',
// '{', '}', '$', '#' or '\', so nothing can end a directive, open a
// block or expand an nginx variable.

// validHost: a DNS name of lowercase LDH labels (punycode for IDN), at
// most 253 characters, optionally "*." in front (a wildcard), no trailing
// dot. The controller normalises; the agent refuses anything else.
func validHost(h string) bool {
	h = strings.TrimPrefix(h, "*.")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// validAppName is the controller's app name rule, so it is also a safe
// file name: ^[a-z0-9][a-z0-9._-]{0,62}$, and never "." or "..".
func validAppName(s string) bool {
	if s == "" || len(s) > 63 || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if i > 0 {
			ok = ok || c == '.' || c == '_' || c == '-'
		}
		if !ok {
			return false
		}
	}
	return true
}

// validCertName: a certificate's file name under StateDir, the same
// shape as a host name without the wildcard but allowing '_' (a
// controller may name it after a wildcard, "_.example.com").
func validCertName(s string) bool {
	if s == "" || len(s) > 200 || strings.Contains(s, "..") || strings.HasSuffix(s, ".next") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_'
		if i > 0 {
			ok = ok || c == '.' || c == '-'
		}
		if !ok {
			return false
		}
	}
	return true
}

// safePath: an absolute, clean path of letters, digits and ._-/@+ only,
// no "..". Used for static roots, unix sockets and custom certificate
// paths, which are rendered in double quotes.
func safePath(p string) bool {
	if p == "" || len(p) > 1024 || p[0] != '/' || filepath.Clean(p) != p {
		return false
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == ".." {
			return false
		}
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '_' || c == '-' || c == '/' || c == '@' || c == '+') {
			return false
		}
	}
	return true
}

// validToken: an ACME token is base64url without padding (RFC 8555 §8.3).
func validToken(s string) bool {
	if len(s) < 16 || len(s) > 256 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isB64URL(s[i]) {
			return false
		}
	}
	return true
}

func isB64URL(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// upstream is a validated proxy target, rendered into proxy_pass.
type upstream struct {
	pass string // "http://127.0.0.1:3000" or "http://unix:/run/app.sock:"
}

// parseUpstream accepts http(s)://HOST:PORT (an IP or a host name, no
// path, query or credentials) or unix:/absolute/path.
func parseUpstream(s string) (upstream, error) {
	if rest, ok := strings.CutPrefix(s, "unix:"); ok {
		if !safePath(rest) {
			return upstream{}, invalid("upstream %q: a unix socket must be an absolute path of letters, digits and ._-/@+", s)
		}
		// The colon after the path ends it (nginx's unix: syntax).
		return upstream{pass: "http://unix:" + rest + ":"}, nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Opaque != "" {
		return upstream{}, invalid("upstream %q: want http://HOST:PORT, https://HOST:PORT or unix:/path", s)
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return upstream{}, invalid("upstream %q: no credentials, path or query allowed", s)
	}
	host, port := u.Hostname(), u.Port()
	p, err := strconv.Atoi(port)
	if err != nil || !validPort(p) || strconv.Itoa(p) != port {
		return upstream{}, invalid("upstream %q: needs a port", s)
	}
	var hp string
	if ip := net.ParseIP(host); ip != nil {
		hp = net.JoinHostPort(ip.String(), port)
	} else if validHost(host) && !strings.HasPrefix(host, "*.") {
		hp = host + ":" + port
	} else {
		return upstream{}, invalid("upstream %q: bad host", s)
	}
	return upstream{pass: u.Scheme + "://" + hp}, nil
}

// redirectTarget validates a redirect-only host's target: http or https,
// a host (name or IP) and optional port, an optional path of unreserved
// and percent-encoded characters; no query or fragment, since the
// request's own path and query are appended. The result has no trailing
// slash, for the same reason.
func redirectTarget(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Opaque != "" || u.Host == "" {
		return "", invalid("redirect target %q: want an http:// or https:// URL", s)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return "", invalid("redirect target %q: no credentials, query or fragment (the request's path and query are kept)", s)
	}
	host, port := u.Hostname(), u.Port()
	hp := host
	if ip := net.ParseIP(host); ip != nil {
		hp = ip.String()
		if ip.To4() == nil {
			hp = "[" + hp + "]"
		}
	} else if !validHost(host) || strings.HasPrefix(host, "*.") {
		return "", invalid("redirect target %q: bad host", s)
	}
	if port != "" {
		p, err := strconv.Atoi(port)
		if err != nil || !validPort(p) || strconv.Itoa(p) != port {
			return "", invalid("redirect target %q: bad port", s)
		}
		hp += ":" + port
	}
	path := u.EscapedPath()
	for i := 0; i < len(path); i++ {
		c := path[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '/' || c == '.' || c == '_' || c == '-' || c == '~' || c == '%') {
			return "", invalid("redirect target %q: path may hold only letters, digits, /._-~ and %%-escapes", s)
		}
	}
	return u.Scheme + "://" + hp + strings.TrimRight(path, "/"), nil
}

// TLS modes of a Domain.
const (
	TLSACME   = "acme"
	TLSCustom = "custom"
	TLSOff    = "off"
)

// validate checks a whole site before anything is rendered or written.
func (s *Site) validate() error {
	if !validAppName(s.App) {
		return invalid("app name %q: want ^[a-z0-9][a-z0-9._-]{0,62}$", s.App)
	}
	if s.Upstream != "" && s.StaticRoot != "" {
		return invalid("site %s: an upstream or a static root, not both", s.App)
	}
	if s.Upstream != "" {
		if _, err := parseUpstream(s.Upstream); err != nil {
			return err
		}
	}
	if s.StaticRoot != "" && !safePath(s.StaticRoot) {
		return invalid("static root %q: an absolute path of letters, digits and ._-/@+", s.StaticRoot)
	}
	if len(s.Domains) == 0 {
		return invalid("site %s: no domains", s.App)
	}
	if len(s.Domains) > 1000 {
		return invalid("site %s: %d domains, at most 1000", s.App, len(s.Domains))
	}
	seen := make(map[string]bool, len(s.Domains))
	for i := range s.Domains {
		d := &s.Domains[i]
		if !validHost(d.Host) {
			return invalid("host %q: want a lowercase DNS name (punycode for IDN, optional leading *., no trailing dot)", d.Host)
		}
		if seen[d.Host] {
			return invalid("host %s listed twice", d.Host)
		}
		seen[d.Host] = true
		if d.RedirectTo != "" {
			if _, err := redirectTarget(d.RedirectTo); err != nil {
				return err
			}
			switch d.RedirectStatus {
			case 0, 301, 302, 307, 308:
			default:
				return invalid("host %s: redirect status %d, want 301, 302, 307 or 308", d.Host, d.RedirectStatus)
			}
		} else if d.RedirectStatus != 0 {
			return invalid("host %s: a redirect status without a redirect target", d.Host)
		}
		switch d.TLS {
		case TLSOff, "":
		case TLSACME:
			if d.CertName != "" && !validCertName(d.CertName) {
				return invalid("host %s: certificate name %q", d.Host, d.CertName)
			}
		case TLSCustom:
			if !safePath(d.CertPath) || !safePath(d.KeyPath) {
				return invalid("host %s: custom certificate and key need absolute paths of letters, digits and ._-/@+ (got %q, %q)", d.Host, d.CertPath, d.KeyPath)
			}
			if d.ConfineRoot != "" {
				if !safePath(d.ConfineRoot) || d.ConfineRoot == "/" {
					return invalid("host %s: app directory %q", d.Host, d.ConfineRoot)
				}
				if !within(d.CertPath, d.ConfineRoot) || !within(d.KeyPath, d.ConfineRoot) || d.CertPath == d.ConfineRoot || d.KeyPath == d.ConfineRoot {
					return invalid("host %s: %s and %s must be files inside the app's directory %s", d.Host, d.CertPath, d.KeyPath, d.ConfineRoot)
				}
			}
		default:
			return invalid("host %s: TLS mode %q, want acme, custom or off", d.Host, d.TLS)
		}
	}
	// A redirect to a host of this site that itself redirects is a loop
	// or a chain; both are mistakes a person would not notice until a
	// browser gives up.
	for _, d := range s.Domains {
		if d.RedirectTo == "" {
			continue
		}
		u, _ := url.Parse(d.RedirectTo)
		th := u.Hostname()
		for _, o := range s.Domains {
			if o.Host == th && o.RedirectTo != "" {
				return invalid("host %s redirects to %s, which redirects too (a loop or a chain)", d.Host, th)
			}
		}
	}
	return nil
}
