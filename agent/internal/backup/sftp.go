package backup

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// sftpStore is a directory on an SFTP server whose host key is pinned.
type sftpStore struct {
	d      Destination
	ssh    *ssh.Client
	c      *sftp.Client
	stopAF func() bool
}

func hostPort(d Destination) string {
	port := d.Port
	if port == 0 {
		port = 22
	}
	return net.JoinHostPort(d.Host, strconv.Itoa(port))
}

// The host key algorithms tried, one handshake each, until the server shows
// the pinned key: a server with several host keys shows only one per
// handshake, and the pin names one of them.
var hostKeyAlgos = []string{
	ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
	ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256,
}

var errHostKeyMismatch = errors.New("host key mismatch")

func sftpConfig(d Destination) (*ssh.ClientConfig, error) {
	if d.Host == "" || d.Username == "" {
		return nil, errors.New("sftp destination: host and username are required")
	}
	if d.Port < 0 || d.Port > 65535 {
		return nil, fmt.Errorf("sftp destination: port %d is out of range", d.Port)
	}
	if !strings.HasPrefix(d.HostKeyFingerprint, "SHA256:") || len(strings.TrimRight(d.HostKeyFingerprint, "=")) != 50 {
		return nil, errors.New("sftp destination: the host key fingerprint is required as SHA256:... (ssh-keygen -lf KEY prints it); Berth never trusts a host key on first use")
	}
	if !path.IsAbs(d.Path) {
		return nil, fmt.Errorf("sftp destination: remote directory %q is not an absolute path", d.Path)
	}
	var auth []ssh.AuthMethod
	if len(d.PrivateKey) > 0 {
		signer, err := ssh.ParsePrivateKey(d.PrivateKey)
		if err != nil {
			var pp *ssh.PassphraseMissingError
			if errors.As(err, &pp) {
				return nil, errors.New("sftp destination: the private key is protected by a passphrase, which Berth cannot enter")
			}
			return nil, errors.New("sftp destination: the private key is not a valid OpenSSH or PEM private key")
		}
		auth = append(auth, ssh.PublicKeys(signer))
	}
	if d.Password != "" {
		auth = append(auth, ssh.Password(d.Password))
	}
	if len(auth) == 0 {
		return nil, errors.New("sftp destination: a password or a private key is required")
	}
	return &ssh.ClientConfig{User: d.Username, Auth: auth, Timeout: 30 * time.Second}, nil
}

func dialSSH(ctx context.Context, d Destination) (*ssh.Client, error) {
	cfg, err := sftpConfig(d)
	if err != nil {
		return nil, err
	}
	addr := hostPort(d)
	want := strings.TrimRight(d.HostKeyFingerprint, "=")
	var seen []string
	for _, algo := range hostKeyAlgos {
		c := *cfg
		c.HostKeyAlgorithms = []string{algo}
		c.HostKeyCallback = func(_ string, _ net.Addr, key ssh.PublicKey) error {
			got := ssh.FingerprintSHA256(key)
			if subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1 {
				return nil
			}
			seen = append(seen, key.Type()+" "+got)
			return errHostKeyMismatch
		}
		nc, err := (&net.Dialer{Timeout: 30 * time.Second}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("sftp destination %s: connect: %w", addr, err)
		}
		// The handshake honours ctx through the connection's deadline.
		stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
		sc, chans, reqs, err := ssh.NewClientConn(nc, addr, &c)
		stop()
		if err == nil {
			nc.SetDeadline(time.Time{})
			return ssh.NewClient(sc, chans, reqs), nil
		}
		nc.Close()
		msg := err.Error()
		switch {
		case errors.Is(err, errHostKeyMismatch), strings.Contains(msg, "no common algorithm for host key"):
			continue // this algorithm shows another key, or none
		case strings.Contains(msg, "unable to authenticate"):
			return nil, fmt.Errorf("sftp destination %s: authentication failed for user %s (wrong password or key)", addr, d.Username)
		case ctx.Err() != nil:
			return nil, fmt.Errorf("sftp destination %s: %w", addr, context.Cause(ctx))
		default:
			return nil, fmt.Errorf("sftp destination %s: ssh: %w", addr, err)
		}
	}
	if len(seen) == 0 {
		return nil, fmt.Errorf("sftp destination %s: the server offered no host key Berth can check", addr)
	}
	return nil, fmt.Errorf("sftp destination %s: host key mismatch, connection refused: the server shows %s, the destination pins %s (the server was replaced, or the pin is wrong)",
		addr, strings.Join(seen, ", "), d.HostKeyFingerprint)
}

func openSFTP(ctx context.Context, d Destination) (*sftpStore, error) {
	sc, err := dialSSH(ctx, d)
	if err != nil {
		return nil, err
	}
	c, err := sftp.NewClient(sc, sftp.UseConcurrentWrites(true), sftp.UseConcurrentReads(true))
	if err != nil {
		sc.Close()
		return nil, fmt.Errorf("sftp destination %s: start sftp: %w", hostPort(d), err)
	}
	s := &sftpStore{d: d, ssh: sc, c: c}
	// sftp calls take no context: closing the connection ends them.
	s.stopAF = context.AfterFunc(ctx, func() { sc.Close() })
	fi, err := c.Stat(d.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		s.close()
		return nil, fmt.Errorf("sftp destination %s: remote directory %s does not exist", hostPort(d), d.Path)
	case err != nil:
		s.close()
		return nil, s.wrap("stat "+d.Path, err)
	case !fi.IsDir():
		s.close()
		return nil, fmt.Errorf("sftp destination %s: %s is not a directory", hostPort(d), d.Path)
	}
	return s, nil
}

func (s *sftpStore) close() error {
	s.stopAF()
	s.c.Close()
	return s.ssh.Close()
}

func (s *sftpStore) wrap(what string, err error) error {
	if errors.Is(err, sftp.ErrSSHFxFailure) || strings.Contains(err.Error(), "no space left") {
		return fmt.Errorf("sftp destination %s: %s: %w (a full disk on the server reports this too)", hostPort(s.d), what, err)
	}
	return fmt.Errorf("sftp destination %s: %s: %w", hostPort(s.d), what, err)
}

func (s *sftpStore) full(key string) string { return path.Join(s.d.Path, key) }

func (s *sftpStore) checkAbsent(_ context.Context, key string) error {
	if _, err := s.c.Lstat(s.full(key)); err == nil {
		return fmt.Errorf("sftp destination: %s already exists: a backup never replaces another", s.full(key))
	}
	return nil
}

func (s *sftpStore) put(ctx context.Context, key string, r io.Reader) (n int64, err error) {
	final := s.full(key)
	if err := s.c.MkdirAll(path.Dir(final)); err != nil {
		return 0, s.wrap("create "+path.Dir(final), err)
	}
	tmp := final + tempSuffix()
	f, err := s.c.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return 0, s.wrap("create "+tmp, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			s.removeTemp(ctx, tmp)
		}
	}()
	n, err = f.ReadFrom(r)
	if err != nil {
		if cause := context.Cause(ctx); cause != nil {
			return n, fmt.Errorf("upload to sftp stopped: %w", cause)
		}
		return n, s.wrap("write "+key, err)
	}
	if err = f.Close(); err != nil {
		return n, s.wrap("close "+key, err)
	}
	if err = ctx.Err(); err != nil {
		return n, context.Cause(ctx)
	}
	if err = s.c.PosixRename(tmp, final); err != nil {
		return n, s.wrap("rename into "+key, err)
	}
	return n, nil
}

// removeTemp removes a partial upload, over a new connection when the
// failure took the first one down (a canceled backup closed it). When the
// server is gone, the temp name stays: it is never a backup's key.
func (s *sftpStore) removeTemp(ctx context.Context, tmp string) {
	if err := s.c.Remove(tmp); err == nil || errors.Is(err, fs.ErrNotExist) {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	sc, err := dialSSH(cctx, s.d)
	if err != nil {
		return
	}
	defer sc.Close()
	c, err := sftp.NewClient(sc)
	if err != nil {
		return
	}
	defer c.Close()
	_ = c.Remove(tmp)
}

func (s *sftpStore) get(_ context.Context, key string) (io.ReadCloser, error) {
	f, err := s.c.Open(s.full(key))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("sftp destination %s: %s does not exist", hostPort(s.d), s.full(key))
	}
	if err != nil {
		return nil, s.wrap("open "+key, err)
	}
	return f, nil
}

func (s *sftpStore) remove(_ context.Context, key string) error {
	err := s.c.Remove(s.full(key))
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return s.wrap("remove "+key, err)
}

// removeLeftovers removes key's temporary files on the server. ReadDir
// reports each entry as lstat does, so a symlink with such a name is seen
// as a symlink and left alone; only regular files go.
func (s *sftpStore) removeLeftovers(_ context.Context, key string) (int, error) {
	dir := path.Dir(s.full(key))
	ents, err := s.c.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, s.wrap("list "+dir, err)
	}
	n := 0
	for _, e := range ents {
		if !isPartialOf(e.Name(), key) || !e.Mode().IsRegular() {
			continue
		}
		err := s.c.Remove(path.Join(dir, e.Name()))
		switch {
		case err == nil:
			n++
		case errors.Is(err, fs.ErrNotExist):
		default:
			return n, s.wrap("remove "+path.Join(dir, e.Name()), err)
		}
	}
	return n, nil
}
