package deploys

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
)

// scanTimeout bounds one host-key scan (every handshake it makes).
const scanTimeout = 10 * time.Second

// HostKey is one key an SSH host offered.
type HostKey struct {
	Type        string
	Fingerprint string
	key         ssh.PublicKey
}

// errKeySeen ends a scan's handshake once the host key is recorded: a scan
// never authenticates.
var errKeySeen = errors.New("host key recorded")

// scanAlgorithms: one handshake per key family, since a server shows only
// the one key the handshake negotiated.
var scanAlgorithms = [][]string{
	{ssh.KeyAlgoED25519},
	{ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521},
	{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256},
}

// parseSSHAddress takes HOST or HOST:PORT ([v6]:PORT) and returns host:port.
func parseSSHAddress(addr string) (string, error) {
	addr = strings.TrimSpace(addr)
	host, port := addr, "22"
	if h, p, err := net.SplitHostPort(addr); err == nil {
		host, port = h, p
	} else if strings.HasPrefix(addr, "[") && strings.HasSuffix(addr, "]") {
		host = addr[1 : len(addr)-1]
	}
	h, err := checkHostName(host)
	if err != nil {
		return "", fmt.Errorf("%w: address %q: %v", ErrInvalid, addr, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("%w: address %q: the port must be 1-65535", ErrInvalid, addr)
	}
	return net.JoinHostPort(h, port), nil
}

// scanHostKeys connects to addr and records the host keys it offers, one
// handshake per key family, each aborted once the key is seen. Nothing is
// trusted or stored here.
func scanHostKeys(ctx context.Context, addr string) ([]HostKey, error) {
	ctx, cancel := context.WithTimeout(ctx, scanTimeout)
	defer cancel()
	var keys []HostKey
	var lastErr error
	for _, algos := range scanAlgorithms {
		var seen ssh.PublicKey
		cfg := &ssh.ClientConfig{
			User: "git", HostKeyAlgorithms: algos, Timeout: scanTimeout,
			HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
				seen = key
				return errKeySeen
			},
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil && len(keys) > 0 {
			break // the time is up: show what was seen
		}
		if err != nil {
			return nil, fmt.Errorf("%w: cannot reach %s: %v", ErrRefused, addr, err)
		}
		if dl, ok := ctx.Deadline(); ok {
			_ = conn.SetDeadline(dl)
		}
		stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
		_, _, _, err = ssh.NewClientConn(conn, addr, cfg)
		stop()
		_ = conn.Close()
		if seen == nil {
			lastErr = err // this family is not offered, or the host is not SSH
			continue
		}
		fp := ssh.FingerprintSHA256(seen)
		if !slices.ContainsFunc(keys, func(k HostKey) bool { return k.Fingerprint == fp }) {
			keys = append(keys, HostKey{Type: seen.Type(), Fingerprint: fp, key: seen})
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: %s offered no SSH host key: %v", ErrRefused, addr, lastErr)
	}
	return keys, nil
}

// ScanGitHost shows the host keys of addr (HOST[:PORT]) for an admin to
// check against the git host's published fingerprints. It stores nothing.
func (s *Service) ScanGitHost(ctx context.Context, pr *auth.Principal, credential, addr string) ([]HostKey, error) {
	if err := require(pr, store.ScopeAdmin); err != nil {
		return nil, err
	}
	c, err := s.resolveCredential(ctx, credential)
	if err != nil {
		return nil, err
	}
	if c.Kind != store.GitCredentialSSH {
		return nil, fmt.Errorf("%w: git credential %s is not an ssh credential", ErrInvalid, c.Name)
	}
	hp, err := parseSSHAddress(addr)
	if err != nil {
		return nil, err
	}
	return scanHostKeys(ctx, hp)
}

// TrustGitHost pins addr's host key to an ssh credential: a fresh scan
// must offer a key with the fingerprint the admin checked and typed, so
// what is stored is what the admin confirmed; otherwise nothing is stored.
func (s *Service) TrustGitHost(ctx context.Context, pr *auth.Principal, peer Peer, credential, addr, fingerprint string) (store.GitCredential, HostKey, error) {
	if err := require(pr, store.ScopeAdmin); err != nil {
		return store.GitCredential{}, HostKey{}, err
	}
	fingerprint = strings.TrimSpace(fingerprint)
	if !strings.HasPrefix(fingerprint, "SHA256:") || len(fingerprint) > 100 {
		return store.GitCredential{}, HostKey{}, fmt.Errorf("%w: --fingerprint must be SHA256:... as scan-host or ssh-keygen -l prints it", ErrInvalid)
	}
	c, err := s.resolveCredential(ctx, credential)
	if err != nil {
		return store.GitCredential{}, HostKey{}, err
	}
	if c.Kind != store.GitCredentialSSH {
		return store.GitCredential{}, HostKey{}, fmt.Errorf("%w: git credential %s is not an ssh credential", ErrInvalid, c.Name)
	}
	hp, err := parseSSHAddress(addr)
	if err != nil {
		return store.GitCredential{}, HostKey{}, err
	}
	keys, err := scanHostKeys(ctx, hp)
	if err != nil {
		return store.GitCredential{}, HostKey{}, err
	}
	i := slices.IndexFunc(keys, func(k HostKey) bool { return k.Fingerprint == fingerprint })
	if i < 0 {
		offered := make([]string, len(keys))
		for j, k := range keys {
			offered[j] = k.Type + " " + k.Fingerprint
		}
		return store.GitCredential{}, HostKey{}, fmt.Errorf("%w: %s offers no key with fingerprint %s (it offers %s); nothing was stored",
			ErrRefused, hp, fingerprint, strings.Join(offered, ", "))
	}
	key := keys[i]
	line := knownhosts.Line([]string{knownhosts.Normalize(hp)}, key.key)
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		cur, err := tx.GitCredentialForUpdate(ctx, c.ID)
		if err != nil {
			return err
		}
		lines := strings.Split(strings.TrimSpace(cur.KnownHosts), "\n")
		lines = slices.DeleteFunc(lines, func(l string) bool { return l == "" || l == line })
		lines = append(lines, line)
		c, err = tx.SetGitCredentialKnownHosts(ctx, c.ID, strings.Join(lines, "\n")+"\n")
		return err
	})
	if err != nil {
		return store.GitCredential{}, HostKey{}, err
	}
	s.activity(ctx, pr, peer, kind.GitCredentialHostTrusted, "git_credential", c.ID, c.Name, map[string]any{
		"address": hp, "key_type": key.Type, "fingerprint": key.Fingerprint,
	})
	return c, key, nil
}

// ShareGitCredential lets a user (by email) attach the credential to apps.
func (s *Service) ShareGitCredential(ctx context.Context, pr *auth.Principal, peer Peer, credential, email string, share bool) (store.GitCredential, error) {
	if err := require(pr, store.ScopeAdmin); err != nil {
		return store.GitCredential{}, err
	}
	c, err := s.resolveCredential(ctx, credential)
	if err != nil {
		return store.GitCredential{}, err
	}
	email = strings.ToLower(strings.TrimSpace(email))
	if email == "" || len(email) > 320 {
		return store.GitCredential{}, fmt.Errorf("%w: --user must be a user's email", ErrInvalid)
	}
	u, err := s.st.UserByEmail(ctx, email)
	if errors.Is(err, store.ErrNotFound) {
		return store.GitCredential{}, fmt.Errorf("%w: no user %s", store.ErrNotFound, email)
	}
	if err != nil {
		return store.GitCredential{}, err
	}
	var changed bool
	action := kind.GitCredentialShared
	if share {
		changed, err = s.st.ShareGitCredential(ctx, c.ID, u.ID)
	} else {
		action = kind.GitCredentialUnshared
		changed, err = s.st.UnshareGitCredential(ctx, c.ID, u.ID)
	}
	if err != nil {
		return store.GitCredential{}, err
	}
	if changed {
		s.activity(ctx, pr, peer, action, "git_credential", c.ID, c.Name, map[string]any{"user": u.Email})
	}
	return c, nil
}

// GitCredentialShares lists who a credential is shared with (emails).
func (s *Service) GitCredentialShares(ctx context.Context, pr *auth.Principal, c store.GitCredential) ([]string, error) {
	if err := require(pr, store.ScopeRead); err != nil {
		return nil, err
	}
	return s.st.GitCredentialShares(ctx, c.ID)
}

// SetServerAllowRoot grants or withdraws a server's allowance to run apps
// as root. Only an admin may: an app running as root owns the server.
func (s *Service) SetServerAllowRoot(ctx context.Context, pr *auth.Principal, peer Peer, server string, allow bool) (store.Server, error) {
	if err := require(pr, store.ScopeAdmin); err != nil {
		return store.Server{}, err
	}
	srv, err := s.fleet.Resolve(ctx, server)
	if err != nil {
		return store.Server{}, err
	}
	out, err := s.st.SetServerAllowRoot(ctx, srv.ID, allow)
	if err != nil {
		return store.Server{}, err
	}
	if srv.AllowRoot != allow {
		action := kind.ServerRootAllowed
		if !allow {
			action = kind.ServerRootDenied
		}
		s.activity(ctx, pr, peer, action, "server", out.ID, out.Name, map[string]any{"allow_root": map[string]any{"old": srv.AllowRoot, "new": allow}})
	}
	return out, nil
}
