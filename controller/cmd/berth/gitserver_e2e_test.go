package main_test

import (
	"crypto/subtle"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// gitRepo is a bare repository served to agents, and a work tree to commit
// into it.
type gitRepo struct {
	root string // the directory holding app.git
	bare string
	work string
}

func gitCmd(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=e2e", "GIT_AUTHOR_EMAIL=e2e@example.com",
		"GIT_COMMITTER_NAME=e2e", "GIT_COMMITTER_EMAIL=e2e@example.com", "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func newGitRepo(t *testing.T) *gitRepo {
	t.Helper()
	base := t.TempDir()
	r := &gitRepo{root: filepath.Join(base, "srv"), work: filepath.Join(base, "work")}
	r.bare = filepath.Join(r.root, "app.git")
	for _, d := range []string{r.bare, r.work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	gitCmd(t, r.bare, "init", "-q", "--bare", "-b", "main")
	gitCmd(t, r.work, "init", "-q", "-b", "main")
	gitCmd(t, r.work, "remote", "add", "origin", r.bare)
	return r
}

// commit writes files (an empty value deletes the file), commits them on
// branch and pushes; it returns the commit's SHA.
func (r *gitRepo) commit(t *testing.T, branch, msg string, files map[string]string) string {
	t.Helper()
	if cur := gitCmd(t, r.work, "symbolic-ref", "--short", "HEAD"); cur != branch {
		if strings.Contains(gitCmd(t, r.work, "branch", "--list", branch), branch) {
			gitCmd(t, r.work, "checkout", "-q", branch)
		} else {
			gitCmd(t, r.work, "checkout", "-q", "-b", branch)
		}
	}
	for name, content := range files {
		p := filepath.Join(r.work, name)
		if content == "" {
			_ = os.Remove(p)
			continue
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gitCmd(t, r.work, "add", "-A")
	gitCmd(t, r.work, "commit", "-q", "--allow-empty", "-m", msg)
	gitCmd(t, r.work, "push", "-q", "origin", branch)
	return gitCmd(t, r.work, "rev-parse", "HEAD")
}

// serveHTTP serves the repository with git http-backend behind basic auth:
// without the username and token nothing can be fetched.
func (r *gitRepo) serveHTTP(t *testing.T, user, token string) string {
	t.Helper()
	backend := &cgi.Handler{
		Path: "/usr/lib/git-core/git-http-backend",
		Env:  []string{"GIT_PROJECT_ROOT=" + r.root, "GIT_HTTP_EXPORT_ALL=1"},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		u, p, ok := req.BasicAuth()
		if !ok || u != user || subtle.ConstantTimeCompare([]byte(p), []byte(token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		backend.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/app.git"
}

// serveSSH runs a real sshd on a loopback port that lets in only
// authorizedKey, and only for git-shell (fetching the repository). It
// returns the repository's URL and the SHA256 fingerprint of the host key,
// which a test checks scan-host against before trust-host, as an admin would.
func (r *gitRepo) serveSSH(t *testing.T, authorizedKey string) (url, hostKeyFingerprint string) {
	t.Helper()
	ak := `command="git-shell -c \"$SSH_ORIGINAL_COMMAND\"",no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty ` + strings.TrimSpace(authorizedKey) + "\n"
	addr, fp := startSSHD(t, ak)
	return "ssh://root@" + addr + r.bare, fp
}

// startSSHD runs a real OpenSSH sshd on a loopback port with the given
// authorized_keys (and extra config lines) and returns its address and the
// SHA256 fingerprint of its host key. The git tests serve git-shell with it,
// the backup tests internal-sftp.
func startSSHD(t *testing.T, authorizedKeys string, extra ...string) (addr, hostKeyFingerprint string) {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, "host_key")).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), []byte(authorizedKeys), 0o600); err != nil {
		t.Fatal(err)
	}
	addr = freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	cfg := strings.Join(append([]string{
		"Port " + port, "ListenAddress 127.0.0.1", "HostKey " + filepath.Join(dir, "host_key"),
		"PidFile " + filepath.Join(dir, "sshd.pid"), "AuthorizedKeysFile " + filepath.Join(dir, "authorized_keys"),
		"PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
		"PermitRootLogin prohibit-password", "StrictModes no", "UsePAM no", "LogLevel VERBOSE",
	}, append(extra, "")...), "\n")
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = os.MkdirAll("/run/sshd", 0o755) // privilege separation directory
	logs := &syncBuffer{}
	cmd := exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("sshd log:\n%s", logs.String())
		}
	})
	waitFor(t, "sshd listening", 10e9, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	pubLine, err := os.ReadFile(filepath.Join(dir, "host_key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(pubLine)
	if err != nil {
		t.Fatal(err)
	}
	return addr, ssh.FingerprintSHA256(pub)
}

var execCommand = exec.Command
