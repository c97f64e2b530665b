package deploy

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// victim is a root-owned directory outside the app: a file and a
// release-shaped directory that a deploy following the app user's links
// would write over, chown or prune.
type victim struct {
	dir, file, oldRelease string
}

func newVictim(t *testing.T) victim {
	t.Helper()
	v := victim{dir: t.TempDir()}
	v.file = filepath.Join(v.dir, "secret")
	v.oldRelease = filepath.Join(v.dir, "01AAAAAAAAAAAAAAAAAAAAAAAA")
	if err := os.WriteFile(v.file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(v.oldRelease, 0o700); err != nil {
		t.Fatal(err)
	}
	return v
}

// untouched fails the test if anything in the victim directory changed.
func (v victim) untouched(t *testing.T, what string) {
	t.Helper()
	ents, err := os.ReadDir(v.dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != "01AAAAAAAAAAAAAAAAAAAAAAAA,secret" {
		t.Errorf("%s: the directory outside the app now holds %v", what, names)
	}
	for _, p := range []string{v.dir, v.file, v.oldRelease} {
		st, err := os.Lstat(p)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if statUID(st) != 0 {
			t.Errorf("%s: %s was given to uid %d", what, p, statUID(st))
		}
	}
	if b, _ := os.ReadFile(v.file); string(b) != "keep" {
		t.Errorf("%s: %s was written: %q", what, v.file, b)
	}
}

// The agent runs as root in directories the app user owns: a symlink the
// app user plants there (shared/, its parents, releases/, a shared file)
// pointing at root's files elsewhere must never be written, chowned or
// removed through.
func TestPlantedSymlinksAreNotFollowed(t *testing.T) {
	needRoot(t)
	appUser := testUser(t)
	repo := newRepo(t)
	repo.commit("c", map[string]string{"build.sh": buildSh, "storage/.keep": ""})
	for _, tc := range []struct {
		name   string
		shared []string
		plant  func(h *harness, v victim) error
		fails  bool
	}{
		{"shared is a link", []string{"storage", "config/app.ini", ".env"}, func(h *harness, v victim) error {
			os.RemoveAll(filepath.Join(h.deploy, "shared"))
			return os.Symlink(v.dir, filepath.Join(h.deploy, "shared"))
		}, true},
		{"a shared path's parent is a link", []string{"config/app.ini"}, func(h *harness, v victim) error {
			os.RemoveAll(filepath.Join(h.deploy, "shared", "config"))
			return os.Symlink(v.dir, filepath.Join(h.deploy, "shared", "config"))
		}, true},
		{"releases is a link", []string{"storage"}, func(h *harness, v victim) error {
			os.RemoveAll(filepath.Join(h.deploy, "releases"))
			return os.Symlink(v.dir, filepath.Join(h.deploy, "releases"))
		}, true},
		{"shared .env is a link", []string{".env"}, func(h *harness, v victim) error {
			os.Remove(filepath.Join(h.deploy, "shared", ".env"))
			return os.Symlink(v.file, filepath.Join(h.deploy, "shared", ".env"))
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			reachable(t, h.deploy)
			v := newVictim(t)
			spec := func() Spec {
				s := h.spec(repo)
				s.RunAsUser, s.AllowRoot = appUser, false
				s.SharedPaths = tc.shared
				s.Env = map[string]string{"APP_KEY": "k"}
				s.KeepReleases = 1
				return s
			}
			first := spec()
			mustSucceed(t, h, first.DeploymentID, h.run(first))
			if err := tc.plant(h, v); err != nil {
				t.Fatal(err)
			}
			s := spec()
			res := h.run(s)
			if tc.fails != (res.Status == StatusFailed) {
				t.Errorf("result %+v\n%s", res, h.log(s.DeploymentID))
			}
			v.untouched(t, tc.name)
		})
	}
}

// A deploy path below a directory the app user (or anyone but root) owns
// is refused: that user could swap the deploy path for a link.
func TestDeployPathParentMustBeRoots(t *testing.T) {
	needRoot(t)
	appUser := testUser(t)
	repo := newRepo(t)
	repo.commit("c", map[string]string{"build.sh": buildSh})
	h := newHarness(t, Config{})
	reachable(t, h.deploy)
	s := h.spec(repo)
	s.RunAsUser, s.AllowRoot = appUser, false
	// The user exists once the first job made it; the next deploy's
	// parent is given to it.
	mustSucceed(t, h, s.DeploymentID, h.run(s))
	u, err := user.Lookup(appUser)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	owned := filepath.Join(t.TempDir(), "owned")
	if err := os.Mkdir(owned, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(owned, uid, -1); err != nil {
		t.Fatal(err)
	}
	s = h.spec(repo)
	s.AppID = "app2"
	s.RunAsUser, s.AllowRoot = appUser, false
	s.DeployPath = filepath.Join(owned, "app")
	res := h.run(s)
	if res.Status != StatusFailed || res.FailedStep != "start" || !strings.Contains(res.Error, "is owned by uid "+u.Uid) {
		t.Fatalf("deploy below an app-owned directory: %+v", res)
	}
	// A missing deploy path is made below parents that stay root's.
	s = h.spec(repo)
	s.AppID = "app3"
	s.RunAsUser, s.AllowRoot = appUser, false
	base := t.TempDir()
	reachable(t, filepath.Join(base, "x"))
	s.DeployPath = filepath.Join(base, "srv", "berth", "app")
	mustSucceed(t, h, s.DeploymentID, h.run(s))
	for p, want := range map[string]int{filepath.Dir(s.DeployPath): 0, s.DeployPath: uid} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if statUID(st) != want || st.Mode().Perm() != 0o755 {
			t.Errorf("%s: uid %d mode %v, want uid %d mode 0755", p, statUID(st), st.Mode().Perm(), want)
		}
	}
}
