package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrNoChallenge: VerifyChallenge found no stored answer for the token.
var ErrNoChallenge = errors.New("no such challenge")

// PutChallenge writes the HTTP-01 key authorisation for token, served at
// /.well-known/acme-challenge/TOKEN on every host of every site.
func (m *Manager) PutChallenge(token, keyAuth string) error {
	return m.PutChallengeFor("", token, keyAuth)
}

// PutChallengeFor is PutChallenge for app's job: the answer is recorded as
// app's, and app's delete removes it if it is still there.
func (m *Manager) PutChallengeFor(app, token, keyAuth string) error {
	if !validToken(token) {
		return invalid("challenge token: want 16 to 256 base64url characters")
	}
	// RFC 8555 §8.1: keyAuthorization = token || '.' || base64url(thumbprint).
	thumb, ok := strings.CutPrefix(keyAuth, token+".")
	if !ok || len(thumb) < 16 || len(thumb) > 128 || !allB64URL(thumb) {
		return invalid("key authorisation: want TOKEN.THUMBPRINT in base64url")
	}
	if err := m.own(ownChallenges, token, app); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(m.cfg.ChallengeDir, token), []byte(keyAuth), 0o644)
}

func allB64URL(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isB64URL(s[i]) {
			return false
		}
	}
	return true
}

// DeleteChallenge removes token's answer; removing one that is not there
// is not an error.
func (m *Manager) DeleteChallenge(token string) error {
	if !validToken(token) {
		return invalid("challenge token: want 16 to 256 base64url characters")
	}
	if err := removeIfExists(filepath.Join(m.cfg.ChallengeDir, token)); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	return m.disown(ownChallenges, token)
}

// VerifyChallenge fetches token's answer through nginx the way the CA
// will, over plain HTTP with host in the Host header but on this server's
// own address, and checks it is the stored key authorisation. The
// controller asks for it before telling the CA to validate, so a site that
// would not answer (nginx not reloaded, a directory nginx's workers cannot
// read) fails here with a reason instead of at the CA.
func (m *Manager) VerifyChallenge(ctx context.Context, host, token string) error {
	if !validHost(host) || strings.HasPrefix(host, "*.") {
		return invalid("host %q: HTTP-01 needs a host name without a wildcard", host)
	}
	if !validToken(token) {
		return invalid("challenge token: want 16 to 256 base64url characters")
	}
	want, err := os.ReadFile(filepath.Join(m.cfg.ChallengeDir, token))
	if errors.Is(err, os.ErrNotExist) {
		return ErrNoChallenge
	}
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	addr := m.cfg.ListenAddr
	switch {
	case addr == "" || addr == "0.0.0.0":
		addr = "127.0.0.1"
	case net.ParseIP(addr).IsUnspecified(): // "::"
		addr = "::1"
	}
	target := net.JoinHostPort(addr, strconv.Itoa(m.cfg.HTTPPort))
	var d net.Dialer
	client := &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return d.DialContext(ctx, "tcp", target)
			},
			DisableKeepAlives: true,
			Proxy:             nil,
		},
		// The CA follows redirects, but an answer that needs one is the
		// redirect-swallows-the-challenge bug this check exists to catch.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/.well-known/acme-challenge/"+token, nil)
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("challenge self-check for %s: %w", host, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return fmt.Errorf("challenge self-check for %s: %w", host, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("challenge self-check for %s: nginx answered %s", host, resp.Status)
	}
	if strings.TrimSpace(string(body)) != string(want) {
		return fmt.Errorf("challenge self-check for %s: nginx answered another key authorisation", host)
	}
	return nil
}
