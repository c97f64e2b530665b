package deploy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/berthhq/berth/agent/internal/backup"
)

func TestRedactor(t *testing.T) {
	r := newRedactor(Spec{
		Credential: &Credential{Username: "bob", Token: "tok_ABCDEFGH"},
		Env:        map[string]string{"DB_PASSWORD": "hunter22", "APP_ENV": "production", "API_KEY": "abc"},
	})
	for in, want := range map[string]string{
		"fatal: https://bob:tok_ABCDEFGH@git.example.com/x": "fatal: https://***@git.example.com/x",
		"token tok_ABCDEFGH here":                           "token *** here",
		"Authorization: Basic Ym9iOnRva19BQkNERUZHSA==":     "Authorization: Basic ***",
		"url http://u:p4ss@host/x":                          "url http://u:***@host/x",
		"db hunter22 env production key abc":                "db *** env production key abc",
		"ssh://git@github.com/a/b.git":                      "ssh://git@github.com/a/b.git",
	} {
		if got := r.string(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDotenvQuote(t *testing.T) {
	for in, want := range map[string]string{
		"production":     "production",
		"":               "''",
		"two words":      "'two words'",
		"a$b":            "'a$b'",
		"it's":           `"it's"`,
		"line1\nline2\"": `"line1\nline2\""`,
	} {
		if got := dotenvQuote(in); got != want {
			t.Errorf("dotenvQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestSpecValidation(t *testing.T) {
	good := Spec{DeploymentID: newID(), AppID: "a", Kind: KindDeploy, RepoURL: "file:///x", DeployPath: "/srv/x"}
	for name, mod := range map[string]func(*Spec){
		"id":          func(s *Spec) { s.DeploymentID = "x/../y" },
		"app":         func(s *Spec) { s.AppID = "../a" },
		"path":        func(s *Spec) { s.DeployPath = "srv" },
		"root":        func(s *Spec) { s.DeployPath = "/" },
		"kind":        func(s *Spec) { s.Kind = "backup" },
		"shared":      func(s *Spec) { s.SharedPaths = []string{"../etc"} },
		"env":         func(s *Spec) { s.Env = map[string]string{"A B": "x"} },
		"commit":      func(s *Spec) { s.Commit = "--upload-pack=x" },
		"rollback to": func(s *Spec) { s.Kind = KindRollback },
		"health url":  func(s *Spec) { s.HealthCheck = &HealthCheck{URL: "file:///etc/passwd"} },
	} {
		s := good
		mod(&s)
		if err := s.normalize(); err == nil {
			t.Errorf("%s: accepted %+v", name, s)
		}
	}
	s := good
	if err := s.normalize(); err != nil || s.KeepReleases != DefaultKeepReleases || s.Timeout != DefaultTimeout {
		t.Errorf("defaults: %v %+v", err, s)
	}
}

// A graceful agent stop kills the job and leaves its journal running: the
// next start reports it like a crash.
func TestCloseThenRecover(t *testing.T) {
	repo := newRepo(t)
	repo.commit("c", map[string]string{"build.sh": buildSh})
	h := newHarness(t, Config{})
	dir := t.TempDir()
	s := h.spec(repo)
	s.DeployScript = longScript(dir)
	h.start(s)
	bg := waitFile(t, filepath.Join(dir, "bg.pid"))
	if err := h.ex.Close(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, bg)
	if err := h.ex.Start(t.Context(), h.spec(repo)); err != ErrClosed {
		t.Errorf("start after close: %v", err)
	}
	h.open(Config{})
	res := h.wait(s.DeploymentID)
	if res.Status != StatusFailed || !strings.Contains(res.Error, "agent restarted during step build") {
		t.Errorf("result = %+v", res)
	}
	if _, err := os.Stat(filepath.Join(h.deploy, "releases", s.DeploymentID)); !os.IsNotExist(err) {
		t.Errorf("release left behind: %v", err)
	}
}

func TestSecondExecutorRefused(t *testing.T) {
	h := newHarness(t, Config{})
	if _, err := New(Config{DataDir: h.data}); err == nil {
		t.Error("a second executor on the same data dir was allowed")
	}
}

// The state file is overwritten in place while it fits in a page: a
// shorter state leaves the file's length and pads with spaces, which JSON
// reads past; a state past a page, or one that waits for the disk, is
// renamed into place (a new inode), and in-place writes go on after it.
func TestWriteStateInPlace(t *testing.T) {
	dir := t.TempDir()
	j := &job{dir: dir}
	path := filepath.Join(dir, stateFile)
	read := func() (jobState, int, uint64) {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var st jobState
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatalf("state %q: %v", b, err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return st, len(b), fi.Sys().(*syscall.Stat_t).Ino
	}
	long := strings.Repeat("x", 300)
	if err := j.writeState(func(s *jobState) { s.Step, s.Release = StepBuild, long }, false); err != nil {
		t.Fatal(err)
	}
	st, n1, ino1 := read()
	if st.Release != long || st.Step != StepBuild {
		t.Fatalf("state = %+v", st)
	}
	if err := j.writeState(func(s *jobState) { s.Release = "" }, false); err != nil {
		t.Fatal(err)
	}
	st, n2, ino2 := read()
	if st.Release != "" || st.Step != StepBuild || n2 != n1 || ino2 != ino1 {
		t.Fatalf("after a shorter state: %+v, %d bytes (was %d), inode %d (was %d)", st, n2, n1, ino2, ino1)
	}
	// Past a page: renamed into place, whole.
	huge := strings.Repeat("y", inPlaceMax)
	if err := j.writeState(func(s *jobState) { s.PrevTarget = huge }, false); err != nil {
		t.Fatal(err)
	}
	st, _, ino3 := read()
	if st.PrevTarget != huge || ino3 == ino1 {
		t.Fatalf("large state: %d bytes of prev_target, inode %d (in place: %d)", len(st.PrevTarget), ino3, ino1)
	}
	// Waiting for the disk: renamed too; the next hint goes to the new file.
	if err := j.writeState(func(s *jobState) { s.PrevTarget, s.Activated = "p", true }, true); err != nil {
		t.Fatal(err)
	}
	if err := j.writeState(func(s *jobState) { s.Step = StepReload }, false); err != nil {
		t.Fatal(err)
	}
	st, _, _ = read()
	if !st.Activated || st.PrevTarget != "p" || st.Step != StepReload {
		t.Fatalf("after a synced state and a hint: %+v", st)
	}
	// A large state on disk is not padded into a write past a page.
	if err := j.writeState(func(s *jobState) { s.PrevTarget = huge }, true); err != nil {
		t.Fatal(err)
	}
	_, _, ino4 := read()
	if err := j.writeState(func(s *jobState) { s.PrevTarget = "q" }, false); err != nil {
		t.Fatal(err)
	}
	st, n5, ino5 := read()
	if st.PrevTarget != "q" || ino5 == ino4 || n5 > inPlaceMax {
		t.Fatalf("a small state after a large one: prev_target %q, %d bytes, inode %d (was %d)", st.PrevTarget, n5, ino5, ino4)
	}
	j.closeStateLocked()
}

// A backup and the delete (the controller's cleanup) of the same object
// key hold one busy key, so the delete waits for a backup still running
// here; other jobs of that backup, and other keys, run beside them.
func TestBackupObjectBusyKey(t *testing.T) {
	spec := func(id string, k Kind, key string) *Spec {
		return &Spec{DeploymentID: id, Kind: k, Backup: &BackupJob{Object: backup.Object{Key: key}}}
	}
	b := spec("01A", KindBackup, "app/1.tar.zst.age")
	if got, want := spec("01B", KindBackupDelete, "app/1.tar.zst.age").busyKey(), b.busyKey(); got != want {
		t.Errorf("delete of the key holds %q, the backup %q", got, want)
	}
	for _, other := range []*Spec{
		spec("01C", KindBackupDelete, "app/2.tar.zst.age"),
		spec("01D", KindBackupVerify, "app/1.tar.zst.age"),
		spec("01E", KindBackupDownload, "app/1.tar.zst.age"),
		spec("01F", KindBackupProbe, ""),
	} {
		if other.busyKey() == b.busyKey() {
			t.Errorf("%s job %s holds the backup's key %q", other.Kind, other.DeploymentID, b.busyKey())
		}
	}
}
