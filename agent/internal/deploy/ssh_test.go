package deploy

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sshServer is a real sshd on a loopback port that lets key in as root
// and serves git over ssh like any git host.
type sshServer struct {
	port       int
	key        string // the client's private key (OpenSSH PEM)
	knownHosts string // the server's host key as a known_hosts line
	otherHost  string // a known_hosts line for the same address with another key
	log        *lockedBuffer
}

func keygen(t *testing.T, path string) (private, public string) {
	t.Helper()
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	priv, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return string(priv), strings.TrimSpace(string(pub))
}

func startSSHD(t *testing.T) *sshServer {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the ssh tests need root (sshd logs the git user in as root): run the tests as root, like the agent runs")
	}
	dir := t.TempDir()
	_, hostPub := keygen(t, filepath.Join(dir, "host_key"))
	_, otherPub := keygen(t, filepath.Join(dir, "other_host_key"))
	clientKey, clientPub := keygen(t, filepath.Join(dir, "id"))
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), []byte(clientPub+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cfg := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s/host_key
PidFile none
AuthorizedKeysFile %s/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
LogLevel VERBOSE
`, port, dir, dir)
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil { // sshd's privilege separation dir
		t.Fatal(err)
	}
	s := &sshServer{port: port, key: clientKey, log: &lockedBuffer{}}
	s.knownHosts = fmt.Sprintf("[127.0.0.1]:%d %s", port, hostPub)
	s.otherHost = fmt.Sprintf("[127.0.0.1]:%d %s", port, otherPub)
	cmd := exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("sshd log:\n%s", s.log.String())
		}
	})
	// Ready once it greets a connection.
	deadline := time.Now().Add(hangGuard)
	for {
		select {
		case <-done:
			t.Fatalf("sshd exited:\n%s", s.log.String())
		default:
		}
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(line, "SSH-") {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd never answered:\n%s", s.log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *sshServer) url(repo *testRepo) string {
	return fmt.Sprintf("ssh://root@127.0.0.1:%d%s", s.port, repo.bare)
}

// An ssh fetch uses the key only for the fetch: the deploy script, here
// running as root (the worst case), finds neither the key nor a trace of it
// anywhere it could look, and the host key is checked against exactly the
// pinned known_hosts, never learned.
func TestSSHKeyGoneBeforeScript(t *testing.T) {
	srv := startSSHD(t)
	repo := newRepo(t)
	repo.commit("c", map[string]string{"build.sh": "echo hi\n"})
	h := newHarness(t, Config{})
	// The script greps for a line of the key's body, read from a file
	// outside everything it searches (the script itself is journaled).
	keyLines := strings.Split(strings.TrimSpace(srv.key), "\n")
	mark := filepath.Join(t.TempDir(), "mark")
	if err := os.WriteFile(mark, []byte(keyLines[1]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cred := func(known string) *Credential {
		return &Credential{SSHPrivateKey: srv.key, AllowedHosts: []string{"127.0.0.1"}, KnownHosts: known}
	}
	for _, fail := range []bool{false, true} {
		s := h.spec(repo)
		s.RepoURL = srv.url(repo)
		s.Credential = cred(srv.knownHosts)
		jobDir := filepath.Join(h.data, "jobs", s.DeploymentID)
		s.DeployScript = fmt.Sprintf(`echo "ssh-command=[${GIT_SSH_COMMAND:-}]"
if grep -rqsF -f %[1]q %[2]q %[3]q /proc/$PPID/environ; then echo key-readable; else echo key-not-found; fi
find %[4]q -name id_key -o -name known_hosts | sed 's/^/found: /'
ls -A %[4]q/tmp | sed 's/^/tmp: /'
`, mark, h.data, h.deploy, jobDir)
		if fail {
			s.DeployScript += "exit 1\n"
		}
		res := h.run(s)
		log := h.log(s.DeploymentID)
		if fail != (res.Status == StatusFailed) {
			t.Fatalf("result %+v\n%s", res, log)
		}
		if !strings.Contains(log, "ssh-command=[]") || !strings.Contains(log, "key-not-found") ||
			strings.Contains(log, "found: ") || strings.Contains(log, "tmp: ssh") {
			t.Errorf("the script could see the key or its traces:\n%s", log)
		}
		if _, err := os.Stat(filepath.Join(jobDir, "tmp")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("job tmp dir left behind: %v", err)
		}
		grepTree(t, h.data, keyLines[1])
	}
	// Nothing was learned about the host: no known_hosts beside the mirror.
	if ents, _ := filepath.Glob(filepath.Join(h.data, "mirrors", "*known_hosts*")); len(ents) != 0 {
		t.Errorf("host keys kept: %v", ents)
	}

	// A host key other than the pinned one is refused (no accept-new),
	// on a fresh mirror as on a cached one.
	for _, app := range []string{"app1", "fresh"} {
		s := h.spec(repo)
		s.AppID = app
		s.RepoURL = srv.url(repo)
		s.Credential = cred(srv.otherHost)
		res := h.run(s)
		if res.Status != StatusFailed || res.FailedStep != StepFetch || !strings.Contains(h.log(s.DeploymentID), "Host key verification failed") {
			t.Fatalf("%s: wrong pinned host key: %+v\n%s", app, res, h.log(s.DeploymentID))
		}
	}
}

// An ssh credential without pinned host keys, or for a host it is not
// bound to, is refused before the job starts: nothing connects.
func TestCredentialRefusedBeforeConnecting(t *testing.T) {
	repo := newRepo(t)
	repo.commit("c", map[string]string{"build.sh": "echo hi\n"})
	h := newHarness(t, Config{})
	// A listener that counts connections stands where the git host would be.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan struct{}, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- struct{}{}
			c.Close()
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	const key = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----"
	for _, tc := range []struct {
		name, url string
		cred      Credential
		want      string
	}{
		{"no known_hosts", fmt.Sprintf("ssh://git@127.0.0.1:%d/x.git", port),
			Credential{SSHPrivateKey: key, AllowedHosts: []string{"127.0.0.1"}}, "no pinned SSH host keys"},
		{"scp-like, no known_hosts", "git@127.0.0.1:acme/x.git",
			Credential{SSHPrivateKey: key, AllowedHosts: []string{"127.0.0.1"}, KnownHosts: " \n"}, "no pinned SSH host keys"},
		{"other host", fmt.Sprintf("ssh://git@127.0.0.1:%d/x.git", port),
			Credential{SSHPrivateKey: key, AllowedHosts: []string{"github.com"}, KnownHosts: "github.com ssh-ed25519 AAAA"}, "only to github.com, not to 127.0.0.1"},
		{"no hosts", fmt.Sprintf("https://127.0.0.1:%d/x.git", port),
			Credential{Username: "u", Token: "t"}, "bound to no host"},
		{"https, other host", fmt.Sprintf("https://localhost:%d/x.git", port),
			Credential{Username: "u", Token: "t", AllowedHosts: []string{"127.0.0.1"}}, "not to localhost"},
		{"local repository", repo.url(),
			Credential{Username: "u", Token: "t", AllowedHosts: []string{"127.0.0.1"}}, "is on this machine"},
	} {
		s := h.spec(repo)
		s.RepoURL = tc.url
		c := tc.cred
		s.Credential = &c
		err := h.ex.Start(t.Context(), s)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Start = %v, want an error with %q", tc.name, err, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), key) || strings.Contains(err.Error(), "AAAA")) {
			t.Errorf("%s: the error shows the key: %v", tc.name, err)
		}
	}
	select {
	case <-accepted:
		t.Fatal("a refused credential's job connected to the host")
	default:
	}
}

func TestRepoHost(t *testing.T) {
	for _, tc := range []struct {
		url  string
		host string
		ssh  bool
		err  bool
	}{
		{"https://GitHub.com/acme/shop.git", "github.com", false, false},
		{"http://127.0.0.1:8080/r.git", "127.0.0.1", false, false},
		{"https://user:pw@git.example.com/r", "git.example.com", false, false},
		{"ssh://git@gitlab.com:2222/acme/shop.git", "gitlab.com", true, false},
		{"git+ssh://git@host.example/x", "host.example", true, false},
		{"git@github.com:acme/shop.git", "github.com", true, false},
		{"github.com:acme/shop.git", "github.com", true, false},
		{"git@[::1]:acme/shop.git", "::1", true, false},
		{"ssh://[::1]:22/x", "::1", true, false},
		{"/srv/git/shop.git", "", false, false},
		{"./dir:with/colon", "", false, false},
		{"file:///srv/git/shop.git", "", false, false},
		{"ext::sh -c touch% /tmp/x", "", false, true},
		{"ftp://example.com/x", "", false, true},
		{"https:///no-host", "", false, true},
	} {
		host, ssh, err := repoHost(tc.url)
		if host != tc.host || ssh != tc.ssh || (err != nil) != tc.err {
			t.Errorf("repoHost(%q) = %q, %v, %v; want %q, %v, error %v", tc.url, host, ssh, err, tc.host, tc.ssh, tc.err)
		}
	}
}
