package proxy

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Domain is one host of an app as the controller sends it.
type Domain struct {
	Host           string // normalised by the controller (punycode, lowercase, no trailing dot), "*.x" allowed
	Primary        bool
	RedirectTo     string // redirect-only host: target URL
	RedirectStatus int    // 301|302|307|308; 0 means 301
	ForceHTTPS     bool
	HSTS           bool
	TLS            string // "acme" | "custom" | "off" ("" is off)
	CertPath       string // custom
	KeyPath        string // custom
	CertName       string // acme: name of the certificate under StateDir/certs (set when issued)
	// ConfineRoot (custom): the app's directory CertPath and KeyPath are
	// in. They are read through an os.Root of it (a symlink out of it is
	// refused) and nginx serves the copies below, which the agent makes
	// on every apply: a link swapped in after the check reaches nothing.
	ConfineRoot string `json:",omitempty"`
	// CertCopy and KeyCopy are those copies (set by the agent).
	CertCopy string `json:",omitempty"`
	KeyCopy  string `json:",omitempty"`
}

// Site is everything nginx needs to route an app's domains.
type Site struct {
	App        string
	Upstream   string // http://127.0.0.1:PORT or unix:/path
	StaticRoot string // served when there is no upstream
	Domains    []Domain
}

// Mozilla's "intermediate" profile: TLS 1.2 and 1.3, ECDHE with AEAD
// ciphers only (the current guideline; the DHE suites it once listed need
// a dhparam file and serve no client that lacks ECDHE).
const (
	tlsProtocols = "TLSv1.2 TLSv1.3"
	tlsCiphers   = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
	tlsCurves    = "X25519:prime256v1:secp384r1"
	hstsValue    = "max-age=63072000"
	upgradeVar   = "$berth_connection_upgrade"
)

// certFiles returns the certificate and key nginx should use for d, and
// whether they are there to use. An ACME domain without an installed
// certificate has none, so it is served over plain HTTP (with the
// challenge path) until its first certificate arrives; a custom one is
// always rendered, and nginx -t tells when its files are wrong.
func (m *Manager) certFiles(d Domain) (cert, key string, ok bool) {
	switch d.TLS {
	case TLSCustom:
		if d.ConfineRoot != "" {
			return d.CertCopy, d.KeyCopy, d.CertCopy != "" && d.KeyCopy != ""
		}
		return d.CertPath, d.KeyPath, true
	case TLSACME:
		if d.CertName == "" {
			return "", "", false
		}
		cert, key = m.certPath(d.CertName), m.keyPath(d.CertName)
		if fileExists(cert) && fileExists(key) {
			return cert, key, true
		}
	}
	return "", "", false
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

func siteHeader(app string) string {
	return "# Written by berth-agent for app " + app + ". Do not edit: the agent replaces this file.\n"
}

// render writes the site file. The site has been validated.
//
// Hosts that are handled alike (same redirect, same certificate, same
// HTTPS and HSTS settings) share one pair of server blocks with several
// server_name entries: nginx builds a TLS context per server block, and
// for a site with hundreds of names on one certificate that is most of
// the cost of nginx -t and of every reload.
func (m *Manager) render(s Site) string {
	var b strings.Builder
	b.WriteString(siteHeader(s.App))
	for _, g := range m.group(s.Domains) {
		m.renderHTTP(&b, s, g)
		if g.hasCert {
			m.renderHTTPS(&b, s, g)
		}
	}
	return b.String()
}

// hostGroup is hosts rendered into the same server blocks; d is the
// first one's settings, which all of them share.
type hostGroup struct {
	hosts     []string
	d         Domain
	cert, key string
	hasCert   bool
}

func (m *Manager) group(ds []Domain) []*hostGroup {
	type key struct {
		redirect    string
		status      int
		force, hsts bool
		cert, key   string
		hasCert     bool
	}
	var out []*hostGroup
	byKey := map[key]*hostGroup{}
	for _, d := range ds {
		cert, k, has := m.certFiles(d)
		status := d.RedirectStatus
		if status == 0 {
			status = 301
		}
		gk := key{d.RedirectTo, status, d.ForceHTTPS && has, d.HSTS && has, cert, k, has}
		if g, ok := byKey[gk]; ok {
			g.hosts = append(g.hosts, d.Host)
			continue
		}
		g := &hostGroup{hosts: []string{d.Host}, d: d, cert: cert, key: k, hasCert: has}
		byKey[gk] = g
		out = append(out, g)
	}
	return out
}

func (m *Manager) listenHTTP() []string {
	return m.listens(m.cfg.HTTPPort, "")
}

func (m *Manager) listens(port int, params string) []string {
	p := strconv.Itoa(port)
	if params != "" {
		params = " " + params
	}
	if m.cfg.ListenAddr == "" {
		l := []string{p + params}
		if m.ipv6 {
			l = append(l, "[::]:"+p+params)
		}
		return l
	}
	return []string{net.JoinHostPort(m.cfg.ListenAddr, p) + params}
}

func (m *Manager) renderHTTP(b *strings.Builder, s Site, g *hostGroup) {
	d := g.d
	b.WriteString("\nserver {\n")
	for _, l := range m.listenHTTP() {
		fmt.Fprintf(b, "    listen %s;\n", l)
	}
	fmt.Fprintf(b, "    server_name %s;\n", strings.Join(g.hosts, " "))
	m.renderChallenge(b)
	switch {
	case d.RedirectTo != "":
		renderRedirect(b, d)
	case d.ForceHTTPS && g.hasCert:
		// Everything but the challenge goes to HTTPS. $host is the name
		// the request matched (one of server_name's, lowercased).
		target := "https://" + d.Host
		if len(g.hosts) > 1 || strings.HasPrefix(d.Host, "*.") {
			target = "https://$host"
		}
		if m.cfg.HTTPSPort != 443 {
			target += ":" + strconv.Itoa(m.cfg.HTTPSPort)
		}
		fmt.Fprintf(b, "    location / {\n        return 301 %s$request_uri;\n    }\n", target)
	default:
		renderApp(b, s)
	}
	b.WriteString("}\n")
}

func (m *Manager) renderHTTPS(b *strings.Builder, s Site, g *hostGroup) {
	d := g.d
	b.WriteString("\nserver {\n")
	params := "ssl"
	if m.http2 == http2Listen {
		params = "ssl http2"
	}
	for _, l := range m.listens(m.cfg.HTTPSPort, params) {
		fmt.Fprintf(b, "    listen %s;\n", l)
	}
	if m.http2 == http2Directive {
		b.WriteString("    http2 on;\n")
	}
	fmt.Fprintf(b, "    server_name %s;\n", strings.Join(g.hosts, " "))
	fmt.Fprintf(b, "    ssl_certificate \"%s\";\n    ssl_certificate_key \"%s\";\n", g.cert, g.key)
	fmt.Fprintf(b, "    ssl_protocols %s;\n    ssl_ciphers %s;\n    ssl_ecdh_curve %s;\n", tlsProtocols, tlsCiphers, tlsCurves)
	b.WriteString("    ssl_prefer_server_ciphers off;\n")
	b.WriteString("    ssl_session_timeout 1d;\n    ssl_session_cache shared:berth_tls:10m;\n    ssl_session_tickets off;\n")
	if d.HSTS {
		fmt.Fprintf(b, "    add_header Strict-Transport-Security \"%s\" always;\n", hstsValue)
	}
	m.renderChallenge(b)
	if d.RedirectTo != "" {
		renderRedirect(b, d)
	} else {
		renderApp(b, s)
	}
	b.WriteString("}\n")
}

// renderChallenge: the ACME HTTP-01 answers, before any other location
// can redirect them (^~ wins over regular expression locations too).
func (m *Manager) renderChallenge(b *strings.Builder) {
	fmt.Fprintf(b, "    location ^~ /.well-known/acme-challenge/ {\n        alias \"%s/\";\n        default_type text/plain;\n    }\n", m.cfg.ChallengeDir)
}

func renderRedirect(b *strings.Builder, d Domain) {
	status := d.RedirectStatus
	if status == 0 {
		status = 301
	}
	target, _ := redirectTarget(d.RedirectTo) // validated
	fmt.Fprintf(b, "    location / {\n        return %d %s$request_uri;\n    }\n", status, target)
}

func renderApp(b *strings.Builder, s Site) {
	switch {
	case s.Upstream != "":
		up, _ := parseUpstream(s.Upstream) // validated
		fmt.Fprintf(b, "    location / {\n        proxy_pass %s;\n", up.pass)
		b.WriteString("        proxy_http_version 1.1;\n")
		b.WriteString("        proxy_set_header Host $host;\n")
		b.WriteString("        proxy_set_header X-Real-IP $remote_addr;\n")
		b.WriteString("        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n")
		b.WriteString("        proxy_set_header X-Forwarded-Proto $scheme;\n")
		b.WriteString("        proxy_set_header X-Forwarded-Host $host;\n")
		b.WriteString("        proxy_set_header Upgrade $http_upgrade;\n")
		fmt.Fprintf(b, "        proxy_set_header Connection %s;\n", upgradeVar)
		b.WriteString("    }\n")
	case s.StaticRoot != "":
		fmt.Fprintf(b, "    location / {\n        root \"%s\";\n        index index.html;\n        try_files $uri $uri/ =404;\n    }\n", s.StaticRoot)
	default:
		// Domains before the app has an upstream: say so, serve nothing.
		b.WriteString("    location / {\n        return 503;\n    }\n")
	}
}

// renderBase is SitesDir/_berth.conf: the WebSocket upgrade map every
// proxied site uses, and the loopback status server that tells which
// generation nginx runs.
func (m *Manager) renderBase() string {
	var b strings.Builder
	b.WriteString("# Written by berth-agent. Do not edit: the agent replaces this file.\n")
	fmt.Fprintf(&b, "map $http_upgrade %s {\n    default upgrade;\n    '' close;\n}\n", upgradeVar)
	b.WriteString("\nserver {\n")
	fmt.Fprintf(&b, "    listen 127.0.0.1:%d;\n", m.cfg.HTTPPort)
	fmt.Fprintf(&b, "    server_name %s;\n", statusHost)
	b.WriteString("    access_log off;\n")
	fmt.Fprintf(&b, "    location = %s {\n        allow 127.0.0.1;\n        deny all;\n        default_type text/plain;\n        return 200 \"%d $pid\\n\";\n    }\n", statusPath, m.gen)
	b.WriteString("    location / {\n        return 404;\n    }\n}\n")
	return b.String()
}

func (m *Manager) writeBase() error {
	return writeFileAtomic(filepath.Join(m.cfg.SitesDir, baseFile), []byte(m.renderBase()), 0o644)
}
