package deploy

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// ids makes ULID-shaped ids that sort in creation order.
var idCounter atomic.Uint64

func newID() string {
	const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	ms := uint64(time.Now().UnixMilli())
	n := idCounter.Add(1)
	var b [26]byte
	for i := 9; i >= 0; i-- {
		b[i] = alphabet[ms&31]
		ms >>= 5
	}
	for i := 25; i >= 10; i-- {
		b[i] = alphabet[n&31]
		n >>= 5
	}
	return string(b[:])
}

// hangGuard only stops a broken test from hanging; no assertion depends on it.
const hangGuard = 2 * time.Minute

func gitT(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_AUTHOR_NAME=Test", "GIT_AUTHOR_EMAIL=t@example.com",
		"GIT_COMMITTER_NAME=Test", "GIT_COMMITTER_EMAIL=t@example.com",
		"GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

type testRepo struct {
	t          *testing.T
	root, bare string
	work       string
}

func newRepo(t *testing.T) *testRepo {
	t.Helper()
	root := t.TempDir()
	r := &testRepo{t: t, root: root, bare: filepath.Join(root, "repo.git"), work: filepath.Join(root, "work")}
	gitT(t, root, "init", "-q", "--bare", "-b", "main", r.bare)
	gitT(t, root, "init", "-q", "-b", "main", r.work)
	return r
}

func (r *testRepo) url() string { return "file://" + r.bare }

// commit writes files, commits and pushes to the bare repo; it returns the SHA.
func (r *testRepo) commit(msg string, files map[string]string) string {
	r.t.Helper()
	for name, content := range files {
		p := filepath.Join(r.work, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			r.t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			r.t.Fatal(err)
		}
	}
	gitT(r.t, r.work, "add", "-A")
	gitT(r.t, r.work, "commit", "-q", "-m", msg)
	gitT(r.t, r.work, "push", "-q", r.bare, "main")
	return gitT(r.t, r.work, "rev-parse", "HEAD")
}

// harness is an executor with a sink that records every event.
type harness struct {
	t      *testing.T
	ex     *Executor
	data   string
	deploy string

	mu     sync.Mutex
	events []Event
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	h := &harness{t: t, data: t.TempDir(), deploy: filepath.Join(t.TempDir(), "app")}
	h.open(cfg)
	return h
}

func (h *harness) open(cfg Config) {
	h.t.Helper()
	cfg.DataDir = h.data
	if len(cfg.AppDirs) == 0 {
		cfg.AppDirs = []string{os.TempDir()} // deploy paths are t.TempDir()s
	}
	cfg.Sink = func(ev Event) {
		h.mu.Lock()
		h.events = append(h.events, ev)
		h.mu.Unlock()
	}
	if cfg.KillGrace == 0 {
		cfg.KillGrace = 2 * time.Second
	}
	ex, err := New(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := ex.Recover(); err != nil {
		h.t.Fatal(err)
	}
	h.ex = ex
	h.t.Cleanup(func() { ex.Close() })
}

func (h *harness) spec(repo *testRepo) Spec {
	return Spec{
		DeploymentID: newID(),
		AppID:        "app1",
		AppName:      "shop",
		Kind:         KindDeploy,
		RepoURL:      repo.url(),
		Branch:       "main",
		DeployPath:   h.deploy,
		DeployScript: "bash build.sh\n",
		// The agent's own user, as before apps had a default user: most
		// tests are about the deploy, not who runs it.
		RunAsUser: "root",
		AllowRoot: true,
	}
}

func (h *harness) start(s Spec) {
	h.t.Helper()
	if err := h.ex.Start(h.t.Context(), s); err != nil {
		h.t.Fatalf("start: %v", err)
	}
}

func (h *harness) run(s Spec) Result {
	h.t.Helper()
	h.start(s)
	return h.wait(s.DeploymentID)
}

// wait returns a job's result as the sink saw it.
func (h *harness) wait(id string) Result {
	h.t.Helper()
	deadline := time.Now().Add(hangGuard)
	for time.Now().Before(deadline) {
		h.mu.Lock()
		for _, ev := range h.events {
			if ev.JobID == id && ev.Type == EventResult {
				h.mu.Unlock()
				return *ev.Result
			}
		}
		h.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	h.t.Fatalf("job %s did not finish\nlog:\n%s", id, h.log(id))
	return Result{}
}

// jobEvents returns the events the sink got for a job.
func (h *harness) jobEvents(id string) []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []Event
	for _, ev := range h.events {
		if ev.JobID == id {
			out = append(out, ev)
		}
	}
	return out
}

func (h *harness) log(id string) string {
	var b bytes.Buffer
	for _, ev := range h.jobEvents(id) {
		if ev.Type == EventLog {
			b.Write(ev.Data)
		}
	}
	return b.String()
}

func (h *harness) current() string {
	h.t.Helper()
	t, err := os.Readlink(filepath.Join(h.deploy, "current"))
	if errors.Is(err, fs.ErrNotExist) {
		return ""
	}
	if err != nil {
		h.t.Fatal(err)
	}
	return releaseIDOf(h.deploy, t)
}

func (h *harness) releases() []string {
	h.t.Helper()
	ents, err := os.ReadDir(filepath.Join(h.deploy, "releases"))
	if err != nil {
		h.t.Fatal(err)
	}
	var ids []string
	for _, de := range ents {
		ids = append(ids, de.Name())
	}
	return ids
}

func mustSucceed(t *testing.T, h *harness, id string, res Result) {
	t.Helper()
	if res.Status != StatusSucceeded {
		t.Fatalf("job %s: %+v\nlog:\n%s", id, res, h.log(id))
	}
}

// waitFile waits until path exists and returns its content.
func waitFile(t *testing.T, path string) string {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 && bytes.HasSuffix(b, []byte("\n")) {
			return strings.TrimSpace(string(b))
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s never appeared", path)
	return ""
}

// processGone reports whether pid has exited (a zombie has exited too).
func processGone(pid string) bool {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && len(s) > i+2 && (s[i+2] == 'Z' || s[i+2] == 'X')
}

// waitGone waits for pid to exit; it fails the test if it never does.
func waitGone(t *testing.T, pid string) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for !processGone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %s is still running", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// grepTree fails the test if needle appears in any file below root.
func grepTree(t *testing.T, root, needle string) {
	t.Helper()
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(needle)) {
			t.Errorf("%s contains the secret %q", p, needle)
		}
		return nil
	})
}

func statUID(fi os.FileInfo) int { return int(fi.Sys().(*syscall.Stat_t).Uid) }

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
