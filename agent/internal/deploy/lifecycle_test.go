package deploy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A delete job removes releases, current, shared and .env under the deploy
// path, never what a symlink there points at, and keeps files it did not make.
func TestDeleteRemovesAppFiles(t *testing.T) {
	repo := newRepo(t)
	repo.commit("first", map[string]string{"build.sh": "true\n", "index.html": "v1\n"})
	h := newHarness(t, Config{})
	s := h.spec(repo)
	s.SharedPaths = []string{"storage"}
	mustSucceed(t, h, s.DeploymentID, h.run(s))

	outside := t.TempDir()
	keep := filepath.Join(outside, "keep.txt")
	if err := os.WriteFile(keep, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A link planted under shared/ must be removed, not followed.
	if err := os.Symlink(outside, filepath.Join(h.deploy, "shared", "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.deploy, ".env"), []byte("A=1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.deploy, "notes.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}

	d := Spec{DeploymentID: newID(), AppID: s.AppID, AppName: s.AppName, Kind: KindDelete, DeployPath: h.deploy}
	mustSucceed(t, h, d.DeploymentID, h.run(d))
	for _, name := range []string{"releases", "current", "shared", ".env"} {
		if _, err := os.Lstat(filepath.Join(h.deploy, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there: %v", name, err)
		}
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("file behind a symlink was removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.deploy, "notes.txt")); err != nil {
		t.Errorf("a file the deploy did not make was removed: %v", err)
	}

	// Again, now with nothing left but notes.txt; then with no deploy path.
	os.Remove(filepath.Join(h.deploy, "notes.txt"))
	d2 := d
	d2.DeploymentID = newID()
	mustSucceed(t, h, d2.DeploymentID, h.run(d2))
	if _, err := os.Lstat(h.deploy); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty deploy path kept: %v", err)
	}
	d3 := d
	d3.DeploymentID = newID()
	mustSucceed(t, h, d3.DeploymentID, h.run(d3))
}

// The deploy script may come from the release; a missing one fails the
// build step by name, and one linked out of the release is refused.
func TestDeployScriptPath(t *testing.T) {
	repo := newRepo(t)
	repo.commit("first", map[string]string{"deploy/berth.sh": "echo from-repo > built.txt\n"})
	h := newHarness(t, Config{})
	s := h.spec(repo)
	s.DeployScript, s.DeployScriptPath = "", "deploy/berth.sh"
	mustSucceed(t, h, s.DeploymentID, h.run(s))
	b, err := os.ReadFile(filepath.Join(h.deploy, "current", "built.txt"))
	if err != nil || strings.TrimSpace(string(b)) != "from-repo" {
		t.Fatalf("built.txt = %q, %v", b, err)
	}

	s2 := h.spec(repo)
	s2.DeployScript, s2.DeployScriptPath = "", "deploy/missing.sh"
	res := h.run(s2)
	if res.Status != StatusFailed || res.FailedStep != StepBuild || !strings.Contains(res.Error, "deploy/missing.sh is not in the release") {
		t.Fatalf("missing script: %+v", res)
	}

	outside := filepath.Join(t.TempDir(), "evil.sh")
	if err := os.WriteFile(outside, []byte("touch pwned\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(repo.work, "link.sh")); err != nil {
		t.Fatal(err)
	}
	repo.commit("link", nil)
	s3 := h.spec(repo)
	s3.DeployScript, s3.DeployScriptPath = "", "link.sh"
	if res := h.run(s3); res.Status != StatusFailed || res.FailedStep != StepBuild {
		t.Fatalf("script linked out of the release ran: %+v\n%s", res, h.log(s3.DeploymentID))
	}

	for _, bad := range []string{"../x.sh", "/etc/passwd", "a/../../b"} {
		s4 := h.spec(repo)
		s4.DeployScript, s4.DeployScriptPath = "", bad
		if err := s4.normalize(); err == nil {
			t.Errorf("path %q accepted", bad)
		}
	}
}
