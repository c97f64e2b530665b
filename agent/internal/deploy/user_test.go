package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		// The agent runs as root (it switches to each app's user); make
		// test runs as root too, as its dependency installer requires.
		t.Fatalf("%s needs root: run the tests as root, like the agent runs", t.Name())
	}
}

// testUser is a user name no one else uses, deleted (with its group) when
// the test ends; register it before anything that runs as it.
func testUser(t *testing.T) string {
	t.Helper()
	name := "bt" + strings.ToLower(newID()[14:])
	t.Cleanup(func() {
		// -f: a uid-0 alias shares its uid with every root process.
		if out, err := exec.Command("userdel", "-f", name).CombinedOutput(); err != nil && !strings.Contains(string(out), "does not exist") {
			t.Errorf("userdel %s: %v\n%s", name, err, out)
		}
		exec.Command("groupdel", name).Run() // gone with the user already, mostly
	})
	return name
}

// reachable lets other users into the test's deploy path, as /srv is.
func reachable(t *testing.T, p string) {
	t.Helper()
	for d := filepath.Dir(p); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func passwdLine(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if strings.HasPrefix(line, name+":") {
			return strings.TrimSpace(line)
		}
	}
	return ""
}

// A root agent runs an app that names no user as the dedicated app user,
// never as root, and creates it (and a named user) when missing.
func TestDefaultAppUserCreated(t *testing.T) {
	needRoot(t)
	def, named := testUser(t), testUser(t)
	repo := newRepo(t)
	repo.commit("c", map[string]string{"build.sh": buildSh})
	h := newHarness(t, Config{AppUser: def})
	reachable(t, h.deploy)

	for i, runAs := range []string{"", "", named} {
		s := h.spec(repo)
		s.RunAsUser, s.AllowRoot = runAs, false
		s.SharedPaths = []string{"storage"}
		s.Env = map[string]string{"A": "b"}
		s.DeployScript = "echo \"as=$(id -un)\"\n"
		mustSucceed(t, h, s.DeploymentID, h.run(s))
		want := runAs
		if want == "" {
			want = def
		}
		log := h.log(s.DeploymentID)
		if !strings.Contains(log, "as="+want+"\n") {
			t.Errorf("deploy %d did not run as %s:\n%s", i, want, log)
		}
		if (runAs == "") != strings.Contains(log, "no app user configured: the app runs as "+def) {
			t.Errorf("deploy %d: the log does not say who the app runs as:\n%s", i, log)
		}
		created := "created system user " + want
		if (i != 1) != strings.Contains(log, created) {
			t.Errorf("deploy %d: %q in the log is wrong:\n%s", i, created, log)
		}
		u, err := user.Lookup(want)
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		if uid == 0 {
			t.Fatalf("%s has uid 0", want)
		}
		release := filepath.Join(h.deploy, "releases", s.DeploymentID)
		for _, p := range []string{release, release + "/.env", release + "/build.sh"} {
			st, err := os.Lstat(p)
			if err != nil {
				t.Fatal(err)
			}
			if statUID(st) != uid {
				t.Errorf("%s owned by %d, want %d (%s)", p, statUID(st), uid, want)
			}
		}
		if _, err := user.LookupGroup(want); err != nil {
			t.Errorf("no group %s: %v", want, err)
		}
		// A system user whose home is the deploy path, never logged into.
		if line := passwdLine(t, want); !strings.HasSuffix(line, ":"+h.deploy+":/usr/sbin/nologin") && !strings.HasSuffix(line, ":"+h.deploy+":/sbin/nologin") {
			t.Errorf("passwd entry %q", line)
		}
	}
}

// uid 0, as root or under another name, runs only with the server's
// allowance.
func TestRootAppUserNeedsAllowance(t *testing.T) {
	needRoot(t)
	alias := testUser(t)
	if out, err := exec.Command("useradd", "--system", "--non-unique", "--uid", "0", "--gid", "0", "--no-create-home",
		"--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", alias).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v\n%s", err, out)
	}
	repo := newRepo(t)
	repo.commit("c", map[string]string{"build.sh": buildSh})
	h := newHarness(t, Config{})
	for _, name := range []string{"root", alias} {
		s := h.spec(repo)
		s.RunAsUser, s.AllowRoot = name, false
		s.DeployScript = "echo ran > " + filepath.Join(t.TempDir(), "ran") + "\n"
		res := h.run(s)
		if res.Status != StatusFailed || res.FailedStep != "start" || !strings.Contains(res.Error, "uid 0") || !strings.Contains(res.Error, "allow-root") {
			t.Errorf("%s without the allowance: %+v", name, res)
		}
		if _, err := os.Stat(filepath.Join(h.deploy, "releases", s.DeploymentID)); err == nil {
			t.Errorf("%s: a release was made", name)
		}
		s = h.spec(repo)
		s.RunAsUser, s.AllowRoot = name, true
		s.DeployScript = "echo \"uid=$(id -u)\"\n"
		mustSucceed(t, h, s.DeploymentID, h.run(s))
		if log := h.log(s.DeploymentID); !strings.Contains(log, "uid=0\n") {
			t.Errorf("%s with the allowance:\n%s", name, log)
		}
	}
}

// userHelper is an agent that is not root: the test binary, run as nobody,
// deploys once and prints the result and log as JSON.
func userHelper() {
	var (
		mu     sync.Mutex
		log    bytes.Buffer
		result = make(chan Result, 1)
	)
	ex, err := New(Config{DataDir: os.Getenv("DATA"), AppDirs: []string{os.TempDir()}, Sink: func(ev Event) {
		mu.Lock()
		defer mu.Unlock()
		switch ev.Type {
		case EventLog:
			log.Write(ev.Data)
		case EventResult:
			result <- *ev.Result
		}
	}})
	if err == nil {
		err = ex.Start(context.Background(), Spec{
			DeploymentID: newID(), AppID: "app1", Kind: KindDeploy, RepoURL: os.Getenv("REPO"),
			DeployPath: os.Getenv("DEPLOY"), RunAsUser: os.Getenv("RUNAS"), DeployScript: "echo \"as=$(id -un)\"\n",
		})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "user helper:", err)
		os.Exit(2)
	}
	res := <-result
	mu.Lock()
	json.NewEncoder(os.Stdout).Encode(map[string]string{"status": string(res.Status), "error": res.Error, "log": log.String()})
	os.Exit(0)
}

// An agent that is not root runs apps as itself, the only user it can run
// anything as, and says so in the deploy log; it refuses any other user.
func TestNonRootAgentRunsAppsAsItself(t *testing.T) {
	needRoot(t) // to become nobody
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	base := t.TempDir()
	reachable(t, filepath.Join(base, "x"))
	// The test binary, where nobody may run it.
	bin := filepath.Join(base, "agent.test")
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err == nil {
		_, err = io.Copy(dst, src)
		dst.Close()
	}
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	repo := newRepo(t)
	repo.commit("c", map[string]string{"build.sh": buildSh})
	reachable(t, repo.bare)
	run := func(runAs string) map[string]string {
		t.Helper()
		dir := filepath.Join(base, "run-"+runAs)
		for _, d := range []string{dir, dir + "/data", dir + "/srv"} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(d, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
		// git refuses a repository someone else owns.
		filepath.WalkDir(repo.root, func(p string, _ os.DirEntry, _ error) error { return os.Lchown(p, uid, gid) })
		cmd := exec.Command(bin, "-test.run=^$")
		cmd.Env = []string{"BERTH_DEPLOY_USER_HELPER=1", "PATH=" + minimalPath, "DATA=" + dir + "/data",
			"DEPLOY=" + dir + "/srv/app", "REPO=" + repo.url(), "RUNAS=" + runAs}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		var r map[string]string
		if err != nil || json.Unmarshal(out, &r) != nil {
			t.Fatalf("helper as nobody: %v\n%s\n%s", err, out, stderr.String())
		}
		return r
	}
	r := run("")
	if r["status"] != string(StatusSucceeded) || !strings.Contains(r["log"], "as=nobody\n") ||
		!strings.Contains(r["log"], "the agent runs as nobody, not root: the app runs as nobody too") {
		t.Errorf("no user named: %v", r)
	}
	r = run("root")
	if r["status"] != string(StatusFailed) || !strings.Contains(r["error"], "the agent runs as nobody, not root, and cannot run commands as root") {
		t.Errorf("root named: %v", r)
	}
}

// A user that can become root another way (here: a member of the disk
// group, which reads and writes raw disks) needs the allow-root setting
// like root itself; without it nothing is run and no release is made.
func TestRootEquivalentAppUserNeedsAllowance(t *testing.T) {
	needRoot(t)
	if _, err := user.LookupGroup("disk"); err != nil {
		t.Fatalf("this test needs the disk group (Debian's base system has it): %v", err)
	}
	name := testUser(t)
	if out, err := exec.Command("useradd", "--system", "--user-group", "--groups", "disk", "--no-create-home",
		"--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v\n%s", err, out)
	}
	repo := newRepo(t)
	repo.commit("c", map[string]string{"build.sh": buildSh})
	h := newHarness(t, Config{})
	reachable(t, h.deploy)
	s := h.spec(repo)
	s.RunAsUser, s.AllowRoot = name, false
	ran := filepath.Join(t.TempDir(), "ran")
	s.DeployScript = "echo ran > " + ran + "\n"
	res := h.run(s)
	if res.Status != StatusFailed || !strings.Contains(res.Error, "group disk") || !strings.Contains(res.Error, "allow-root") {
		t.Fatalf("a disk group member without the allowance: %+v", res)
	}
	if _, err := os.Stat(ran); err == nil {
		t.Fatal("the script ran")
	}
	if _, err := os.Stat(filepath.Join(h.deploy, "releases", s.DeploymentID)); err == nil {
		t.Fatal("a release was made")
	}
}

// Deploy paths lie below the agent's app directories: a path elsewhere
// (a system directory a root service reads, say) is refused and not made,
// and so is one that reaches outside them through a link.
func TestDeployPathOutsideAppDirsRefused(t *testing.T) {
	needRoot(t)
	repo := newRepo(t)
	repo.commit("c", map[string]string{"build.sh": buildSh})
	allowed := t.TempDir()
	outside := t.TempDir()
	h := newHarness(t, Config{AppDirs: []string{allowed}})
	link := filepath.Join(allowed, "escape")
	if err := os.Symlink(outside, link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(outside, "app", "nested"), filepath.Join(link, "app")} {
		s := h.spec(repo)
		s.DeployPath = p
		res := h.run(s)
		if res.Status != StatusFailed || !strings.Contains(res.Error, "app directories") {
			t.Errorf("%s: %+v", p, res)
		}
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Fatalf("something was made outside the app directories: %v", entries)
	}
	// Below them, a missing path is made as before.
	s := h.spec(repo)
	s.DeployPath = filepath.Join(allowed, "apps", "shop")
	mustSucceed(t, h, s.DeploymentID, h.run(s))
}
