package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const buildSh = `echo "building $BERTH_APP_NAME at $BERTH_COMMIT"
echo "to stderr" >&2
echo "APP_ENV is $APP_ENV"
echo built > built.txt
`

func TestDeploy(t *testing.T) {
	repo := newRepo(t)
	sha := repo.commit("first release", map[string]string{
		"build.sh": buildSh, "index.html": "v1\n", "storage/app/.gitkeep": "",
	})
	h := newHarness(t, Config{})
	s := h.spec(repo)
	s.Env = map[string]string{"APP_ENV": "production", "DB_PASSWORD": "s3cret'$pass"}
	s.SharedPaths = []string{"storage", "database/app.db"}
	s.HealthCheck = &HealthCheck{Command: "test -f built.txt"}
	res := h.run(s)
	mustSucceed(t, h, s.DeploymentID, res)

	release := filepath.Join(h.deploy, "releases", s.DeploymentID)
	if res.Commit != sha || res.CommitMessage != "first release" || res.ReleasePath != release {
		t.Errorf("result = %+v, want commit %s", res, sha)
	}
	if h.current() != s.DeploymentID {
		t.Errorf("current = %q, want %s", h.current(), s.DeploymentID)
	}
	for _, f := range []string{"index.html", "built.txt"} {
		if _, err := os.Stat(filepath.Join(h.deploy, "current", f)); err != nil {
			t.Error(err)
		}
	}
	if _, err := os.Stat(filepath.Join(release, ".git")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("release has a .git: %v", err)
	}

	// The environment: 0600, readable back, and given to the script.
	fi, err := os.Stat(filepath.Join(release, ".env"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf(".env mode = %v, want 0600", fi.Mode().Perm())
	}
	env, _ := os.ReadFile(filepath.Join(release, ".env"))
	if want := "APP_ENV=production\nDB_PASSWORD=\"s3cret'\\$pass\"\n"; string(env) != want {
		t.Errorf(".env = %q, want %q", env, want)
	}

	// Shared paths: seeded from the release (storage), created (app.db).
	for _, p := range []string{"storage", "database/app.db"} {
		target, err := os.Readlink(filepath.Join(release, p))
		if err != nil || target != filepath.Join(h.deploy, "shared", p) {
			t.Errorf("%s -> %q, %v", p, target, err)
		}
	}
	if _, err := os.Stat(filepath.Join(h.deploy, "shared", "storage", "app", ".gitkeep")); err != nil {
		t.Errorf("shared storage not seeded from the release: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(h.deploy, "shared", "database", "app.db")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("shared file not created: %v", err)
	}

	log := h.log(s.DeploymentID)
	for _, want := range []string{
		"==> fetch", "==> checkout", "==> link_shared", "==> write_env", "==> build",
		"==> health_check", "==> activate", "==> reload", "==> prune",
		"building shop at " + sha, "to stderr", "APP_ENV is production",
		"commit " + sha + "\n",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q", want)
		}
	}

	// Events: numbered 1..n without gaps, progress in step order, result last.
	evs := h.jobEvents(s.DeploymentID)
	var steps []string
	for i, ev := range evs {
		if ev.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d", i, ev.Seq)
		}
		if ev.Type == EventProgress && ev.Commit == "" {
			steps = append(steps, ev.Step)
		}
		if ev.Type == EventProgress && ev.Commit != "" && ev.Commit != sha {
			t.Errorf("progress commit = %s", ev.Commit)
		}
	}
	if evs[len(evs)-1].Type != EventResult {
		t.Error("last event is not the result")
	}
	// The subject follows the commit id, once the script runs, and is
	// in the result.
	subject := false
	for _, ev := range evs {
		subject = subject || ev.Type == EventProgress && ev.Commit == sha && ev.CommitMessage == "first release"
	}
	if !subject {
		t.Error("no progress event carries the commit's subject")
	}
	if res := evs[len(evs)-1].Result; res.Commit != sha || res.CommitMessage != "first release" {
		t.Errorf("result commit = %q %q", res.Commit, res.CommitMessage)
	}
	if got := strings.Join(steps, ","); got != "fetch,checkout,link_shared,write_env,build,health_check,activate,reload,prune" {
		t.Errorf("steps = %s", got)
	}
	if r := h.ex.Running(); len(r) != 0 {
		t.Errorf("running after the result: %v", r)
	}
}

func TestRedeployFetchesIncrementally(t *testing.T) {
	repo := newRepo(t)
	repo.commit("one", map[string]string{"build.sh": buildSh, "v": "1"})
	h := newHarness(t, Config{})
	s1 := h.spec(repo)
	mustSucceed(t, h, s1.DeploymentID, h.run(s1))
	if !strings.Contains(h.log(s1.DeploymentID), "$ git clone --mirror") {
		t.Errorf("first deploy did not clone:\n%s", h.log(s1.DeploymentID))
	}
	// A marker in the mirror survives only if the mirror is reused.
	marker := filepath.Join(h.data, "mirrors", "app1.git", "berth-test-marker")
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	sha2 := repo.commit("two", map[string]string{"v": "2"})
	s2 := h.spec(repo)
	res := h.run(s2)
	mustSucceed(t, h, s2.DeploymentID, res)
	log := h.log(s2.DeploymentID)
	if strings.Contains(log, "clone") || !strings.Contains(log, "$ git --git-dir") || !strings.Contains(log, "fetch --prune") {
		t.Errorf("second deploy did not fetch into the mirror:\n%s", log)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("mirror was replaced: %v", err)
	}
	if res.Commit != sha2 || res.PreviousRelease != s1.DeploymentID {
		t.Errorf("result = %+v", res)
	}
	if b, _ := os.ReadFile(filepath.Join(h.deploy, "current", "v")); string(b) != "2" {
		t.Errorf("current/v = %q", b)
	}

	// A pinned commit deploys that commit, not the branch head.
	s3 := h.spec(repo)
	s3.Commit = res.Commit[:12]
	repo.commit("three", map[string]string{"v": "3"})
	res3 := h.run(s3)
	mustSucceed(t, h, s3.DeploymentID, res3)
	if res3.Commit != sha2 {
		t.Errorf("pinned deploy got %s, want %s", res3.Commit, sha2)
	}
	// An unknown commit fails the fetch step.
	s4 := h.spec(repo)
	s4.Commit = "0123456789abcdef0123456789abcdef01234567"
	res4 := h.run(s4)
	if res4.Status != StatusFailed || res4.FailedStep != StepFetch || !strings.Contains(res4.Error, "not found") {
		t.Errorf("unknown commit: %+v", res4)
	}
}

// gitHTTPServer serves repo over smart HTTP through git http-backend,
// requiring basic auth user:token.
func gitHTTPServer(t *testing.T, repo *testRepo, user, token string) string {
	return gitHTTPServerWrapped(t, repo, user, token, nil)
}

// gitHTTPServerWrapped is gitHTTPServer with wrap around git http-backend.
func gitHTTPServerWrapped(t *testing.T, repo *testRepo, user, token string, wrap func(http.Handler) http.Handler) string {
	backend := "/usr/lib/git-core/git-http-backend"
	if _, err := os.Stat(backend); err != nil {
		t.Fatalf("git http-backend not installed (it comes with Debian's git package): %v", err)
	}
	var h http.Handler = &cgi.Handler{
		Path: backend,
		Env:  []string{"GIT_PROJECT_ROOT=" + repo.root, "GIT_HTTP_EXPORT_ALL=1"},
	}
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != user || p != token {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/repo.git"
}

func TestHTTPSCredential(t *testing.T) {
	repo := newRepo(t)
	const token = "ghp_TopSecretToken1234567890"
	repo.commit("over http", map[string]string{"build.sh": "echo token is $GIT_TOKEN_PROBE; git config -l 2>&1 || true\n"})
	url := gitHTTPServer(t, repo, "deployer", token)
	h := newHarness(t, Config{})

	// Without the credential the fetch is refused.
	s := h.spec(repo)
	s.RepoURL = url
	res := h.run(s)
	if res.Status != StatusFailed || res.FailedStep != StepFetch {
		t.Fatalf("fetch without credential: %+v\n%s", res, h.log(s.DeploymentID))
	}
	if _, err := os.Stat(filepath.Join(h.deploy, "current")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("current exists after a failed first deploy: %v", err)
	}

	// With it, the deploy works.
	s = h.spec(repo)
	s.RepoURL = url
	s.Credential = &Credential{Username: "deployer", Token: token, AllowedHosts: []string{"127.0.0.1"}}
	// What the script (root here) can see of the token: its environment,
	// git's config where it runs, and every process's environment (the
	// agent's git processes that are running then among them). Written to
	// a file, not the log, which would redact it.
	seen := filepath.Join(t.TempDir(), "seen")
	s.DeployScript = fmt.Sprintf("{ env; git config -l; for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < \"$f\" || true; done; } > %q 2>&1\n", seen)
	mustSucceed(t, h, s.DeploymentID, h.run(s))
	if b, err := os.ReadFile(seen); err != nil || bytes.Contains(b, []byte(token)) || bytes.Contains(b, []byte("ZGVwbG95ZXI6")) || bytes.Contains(b, []byte("extraHeader")) {
		t.Errorf("the script could see the token (%v):\n%s", err, b)
	}

	// The same token embedded in the URL is moved out of it (and redacted).
	s3 := h.spec(repo)
	s3.RepoURL = strings.Replace(url, "http://", "http://deployer:"+token+"@", 1)
	res3 := h.run(s3)
	mustSucceed(t, h, s3.DeploymentID, res3)

	for _, id := range []string{s.DeploymentID, s3.DeploymentID} {
		if log := h.log(id); strings.Contains(log, token) {
			t.Errorf("log of %s contains the token:\n%s", id, log)
		}
	}
	// Not in the journal (unacked events are still there), the mirror
	// config or any release.
	grepTree(t, h.data, token)
	grepTree(t, h.deploy, token)
	grepTree(t, h.data, "ZGVwbG95ZXI6") // base64("deployer:")
	cfg, _ := os.ReadFile(filepath.Join(h.data, "mirrors", "app1.git", "config"))
	if strings.Contains(string(cfg), "deployer") {
		t.Errorf("mirror config has credentials:\n%s", cfg)
	}
}

func TestBuildFailureKeepsCurrent(t *testing.T) {
	repo := newRepo(t)
	repo.commit("good", map[string]string{"build.sh": buildSh})
	h := newHarness(t, Config{})
	good := h.spec(repo)
	mustSucceed(t, h, good.DeploymentID, h.run(good))

	repo.commit("bad", map[string]string{"build.sh": "echo compiling; echo 'syntax error' >&2; exit 3\n"})
	bad := h.spec(repo)
	res := h.run(bad)
	if res.Status != StatusFailed || res.FailedStep != StepBuild || res.ExitCode != 3 {
		t.Fatalf("result = %+v", res)
	}
	if res.Commit == "" || res.CommitMessage != "bad" {
		t.Errorf("failed result lacks the commit: %+v", res)
	}
	if h.current() != good.DeploymentID {
		t.Errorf("current = %s, want %s", h.current(), good.DeploymentID)
	}
	if _, err := os.Stat(filepath.Join(h.deploy, "releases", bad.DeploymentID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed release left behind: %v", err)
	}
	if log := h.log(bad.DeploymentID); !strings.Contains(log, "syntax error") || !strings.Contains(log, "==> failed") {
		t.Errorf("log:\n%s", log)
	}
}

func TestHealthCheckFailureKeepsCurrent(t *testing.T) {
	repo := newRepo(t)
	repo.commit("c", map[string]string{"build.sh": buildSh})
	h := newHarness(t, Config{})
	good := h.spec(repo)
	good.HealthCheck = &HealthCheck{Command: "grep -q built built.txt"}
	mustSucceed(t, h, good.DeploymentID, h.run(good))

	bad := h.spec(repo)
	bad.HealthCheck = &HealthCheck{Command: "echo unhealthy; exit 7"}
	res := h.run(bad)
	if res.Status != StatusFailed || res.FailedStep != StepHealthCheck || res.ExitCode != 7 {
		t.Fatalf("command check: %+v", res)
	}
	if h.current() != good.DeploymentID {
		t.Errorf("current = %s", h.current())
	}

	// A URL that never answers 2xx within the check's timeout.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	bad2 := h.spec(repo)
	bad2.HealthCheck = &HealthCheck{URL: srv.URL + "/up", Timeout: 1500 * time.Millisecond}
	res = h.run(bad2)
	if res.Status != StatusFailed || res.FailedStep != StepHealthCheck || !strings.Contains(res.Error, "503") {
		t.Fatalf("URL check: %+v\n%s", res, h.log(bad2.DeploymentID))
	}
	if h.current() != good.DeploymentID {
		t.Errorf("current = %s", h.current())
	}

	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer ok.Close()
	good2 := h.spec(repo)
	good2.HealthCheck = &HealthCheck{URL: ok.URL}
	mustSucceed(t, h, good2.DeploymentID, h.run(good2))
	if !strings.Contains(h.log(good2.DeploymentID), "200 OK") {
		t.Errorf("log:\n%s", h.log(good2.DeploymentID))
	}
}

// longScript starts a background child, records both pids, then waits.
func longScript(dir string) string {
	return fmt.Sprintf(`sleep 1000 &
echo $! > %[1]s/bg.pid
echo $$ > %[1]s/leader.pid
echo started
sleep 1000
`, dir)
}

func TestCancelKillsProcessGroup(t *testing.T) {
	repo := newRepo(t)
	repo.commit("c", map[string]string{"build.sh": buildSh})
	h := newHarness(t, Config{})
	good := h.spec(repo)
	mustSucceed(t, h, good.DeploymentID, h.run(good))

	dir := t.TempDir()
	s := h.spec(repo)
	s.DeployScript = longScript(dir)
	h.start(s)
	bg := waitFile(t, filepath.Join(dir, "bg.pid"))
	leader := waitFile(t, filepath.Join(dir, "leader.pid"))
	if got := h.ex.Running(); len(got) != 1 || got[0] != s.DeploymentID {
		t.Errorf("Running() = %v", got)
	}
	if err := h.ex.Cancel(s.DeploymentID); err != nil {
		t.Fatal(err)
	}
	res := h.wait(s.DeploymentID)
	if res.Status != StatusCanceled || res.FailedStep != StepBuild {
		t.Fatalf("result = %+v", res)
	}
	for _, pid := range []string{bg, leader} {
		if !processGone(pid) {
			t.Errorf("process %s survived the cancel", pid)
		}
	}
	if h.current() != good.DeploymentID {
		t.Errorf("current = %s", h.current())
	}
	if _, err := os.Stat(filepath.Join(h.deploy, "releases", s.DeploymentID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("canceled release left behind: %v", err)
	}
	if err := h.ex.Cancel(s.DeploymentID); !errors.Is(err, ErrNotRunning) {
		t.Errorf("second cancel: %v", err)
	}
}

func TestTimeout(t *testing.T) {
	repo := newRepo(t)
	repo.commit("c", map[string]string{"build.sh": buildSh})
	h := newHarness(t, Config{})
	dir := t.TempDir()
	s := h.spec(repo)
	s.DeployScript = longScript(dir)
	s.Timeout = 3 * time.Second
	res := h.run(s)
	if res.Status != StatusTimedOut || res.FailedStep != StepBuild {
		t.Fatalf("result = %+v\n%s", res, h.log(s.DeploymentID))
	}
	waitGone(t, waitFile(t, filepath.Join(dir, "bg.pid")))
	if _, err := os.Stat(filepath.Join(h.deploy, "current")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("current exists: %v", err)
	}
}

func TestOneJobPerApp(t *testing.T) {
	repo := newRepo(t)
	repo.commit("c", map[string]string{"build.sh": buildSh})
	h := newHarness(t, Config{})
	dir := t.TempDir()
	s := h.spec(repo)
	s.DeployScript = longScript(dir)
	h.start(s)
	if err := h.ex.Start(t.Context(), s); !errors.Is(err, ErrJobExists) {
		t.Errorf("same job again: %v", err)
	}
	s2 := h.spec(repo)
	if err := h.ex.Start(t.Context(), s2); !errors.Is(err, ErrAppBusy) {
		t.Errorf("second job for the app: %v", err)
	}
	// Another app runs in parallel.
	other := h.spec(repo)
	other.AppID, other.DeployPath = "app2", filepath.Join(t.TempDir(), "app2")
	mustSucceed(t, h, other.DeploymentID, h.run(other))

	waitFile(t, filepath.Join(dir, "bg.pid"))
	h.ex.Cancel(s.DeploymentID)
	h.wait(s.DeploymentID)
	// The app is free again.
	mustSucceed(t, h, s2.DeploymentID, h.run(s2))

	bad := h.spec(repo)
	bad.DeploymentID = "../../etc"
	if err := h.ex.Start(t.Context(), bad); err == nil {
		t.Error("a path as deployment id was accepted")
	}
}

func TestPruneKeepsCurrentAndPrevious(t *testing.T) {
	repo := newRepo(t)
	repo.commit("c", map[string]string{"build.sh": buildSh})
	h := newHarness(t, Config{})
	deploy := func() string {
		s := h.spec(repo)
		s.KeepReleases = 3
		mustSucceed(t, h, s.DeploymentID, h.run(s))
		return s.DeploymentID
	}
	a, b, c := deploy(), deploy(), deploy()
	if got := h.releases(); strings.Join(got, ",") != strings.Join([]string{a, b, c}, ",") {
		t.Fatalf("releases = %v", got)
	}
	// Roll back to the oldest, then deploy: the oldest is now "previous"
	// and must survive; the next oldest goes.
	rb := Spec{DeploymentID: newID(), AppID: "app1", Kind: KindRollback, DeployPath: h.deploy, RollbackTo: a, RunAsUser: "root", AllowRoot: true}
	mustSucceed(t, h, rb.DeploymentID, h.run(rb))
	d := deploy()
	if got := h.releases(); strings.Join(got, ",") != strings.Join([]string{a, c, d}, ",") {
		t.Errorf("releases = %v, want %v", got, []string{a, c, d})
	}
	e := deploy()
	if got := h.releases(); strings.Join(got, ",") != strings.Join([]string{c, d, e}, ",") {
		t.Errorf("releases = %v, want %v", got, []string{c, d, e})
	}
	if h.current() != e {
		t.Errorf("current = %s", h.current())
	}
}

func TestRollback(t *testing.T) {
	repo := newRepo(t)
	repo.commit("v1", map[string]string{"build.sh": buildSh, "v": "1"})
	h := newHarness(t, Config{})
	marks := t.TempDir()
	script := fmt.Sprintf("echo x >> %s/builds\n", marks)
	s1 := h.spec(repo)
	s1.DeployScript = script
	mustSucceed(t, h, s1.DeploymentID, h.run(s1))
	repo.commit("v2", map[string]string{"v": "2"})
	s2 := h.spec(repo)
	s2.DeployScript = script
	mustSucceed(t, h, s2.DeploymentID, h.run(s2))

	rb := Spec{
		DeploymentID: newID(), AppID: "app1", Kind: KindRollback, DeployPath: h.deploy,
		RunAsUser: "root", AllowRoot: true,
		RollbackTo:    s1.DeploymentID,
		ReloadCommand: fmt.Sprintf("cat v >> %s/reloads", marks),
		HealthCheck:   &HealthCheck{Command: "test -f v"},
		DeployScript:  script, // must not run
	}
	res := h.run(rb)
	mustSucceed(t, h, rb.DeploymentID, res)
	if h.current() != s1.DeploymentID || res.PreviousRelease != s2.DeploymentID {
		t.Errorf("current = %s, result = %+v", h.current(), res)
	}
	builds, _ := os.ReadFile(filepath.Join(marks, "builds"))
	reloads, _ := os.ReadFile(filepath.Join(marks, "reloads"))
	if string(builds) != "x\nx\n" || string(reloads) != "1" {
		t.Errorf("builds %q, reloads %q", builds, reloads)
	}

	// A rollback whose health check fails switches back and reloads again.
	rb2 := rb
	rb2.DeploymentID, rb2.RollbackTo = newID(), s2.DeploymentID
	rb2.HealthCheck = &HealthCheck{Command: "exit 1"}
	res = h.run(rb2)
	if res.Status != StatusFailed || res.FailedStep != StepHealthCheck {
		t.Fatalf("result = %+v", res)
	}
	if h.current() != s1.DeploymentID {
		t.Errorf("current = %s, want it switched back to %s", h.current(), s1.DeploymentID)
	}
	reloads, _ = os.ReadFile(filepath.Join(marks, "reloads"))
	if string(reloads) != "121" {
		t.Errorf("reloads %q, want 1 then 2 then 1", reloads)
	}

	// A pruned (or never built) release is refused, current untouched.
	rb3 := rb
	rb3.DeploymentID, rb3.RollbackTo = newID(), newID()
	res = h.run(rb3)
	if res.Status != StatusFailed || res.FailedStep != StepVerify || !strings.Contains(res.Error, "release "+rb3.RollbackTo+" was pruned") {
		t.Errorf("result = %+v", res)
	}
	if h.current() != s1.DeploymentID {
		t.Errorf("current = %s", h.current())
	}
}

func TestLogCap(t *testing.T) {
	repo := newRepo(t)
	repo.commit("c", map[string]string{"build.sh": buildSh})
	h := newHarness(t, Config{MaxLogBytes: 4096})
	s := h.spec(repo)
	s.DeployScript = "for i in $(seq 1 2000); do echo line $i; done\n"
	res := h.run(s)
	mustSucceed(t, h, s.DeploymentID, res)
	log := h.log(s.DeploymentID)
	if strings.Count(log, "output truncated") != 1 || res.LogDroppedBytes == 0 {
		t.Errorf("dropped %d, log:\n%s", res.LogDroppedBytes, log)
	}
	if len(log) > 4096+200 {
		t.Errorf("log is %d bytes", len(log))
	}
	if strings.Contains(log, "line 2000") {
		t.Error("output past the cap was kept")
	}
}

func TestJournalReplay(t *testing.T) {
	repo := newRepo(t)
	repo.commit("c", map[string]string{"build.sh": buildSh})
	h := newHarness(t, Config{})
	s := h.spec(repo)
	h.run(s)
	all := h.ex.Pending()
	if len(all) < 5 || all[len(all)-1].Type != EventResult {
		t.Fatalf("pending = %d events", len(all))
	}
	for i, ev := range all {
		if ev.Seq != uint64(i+1) || ev.JobID != s.DeploymentID {
			t.Fatalf("pending[%d] = seq %d job %s", i, ev.Seq, ev.JobID)
		}
	}
	k := uint64(3)
	h.ex.Ack(s.DeploymentID, k)
	h.ex.Ack(s.DeploymentID, 1) // an old ack changes nothing
	if p := h.ex.Pending(); len(p) != len(all)-int(k) || p[0].Seq != k+1 {
		t.Fatalf("after ack: %d events from seq %d", len(p), p[0].Seq)
	}

	// A restarted agent re-sends exactly the unacked events, from disk.
	h.ex.Close()
	h.open(Config{})
	p := h.ex.Pending()
	if len(p) != len(all)-int(k) {
		t.Fatalf("after restart: %d events, want %d", len(p), len(all)-int(k))
	}
	for i, ev := range p {
		want := all[int(k)+i]
		if ev.Seq != want.Seq || ev.Type != want.Type || string(ev.Data) != string(want.Data) {
			t.Errorf("replayed %d: %+v, want %+v", i, ev, want)
		}
	}
	// Acking the result deletes the journal.
	h.ex.Ack(s.DeploymentID, all[len(all)-1].Seq)
	if p := h.ex.Pending(); len(p) != 0 {
		t.Errorf("pending after the final ack: %v", p)
	}
	if _, err := os.Stat(filepath.Join(h.data, "jobs", s.DeploymentID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("journal kept after the final ack: %v", err)
	}
	// The controller re-sending the job (it read it as unfinished before
	// the result reached it) does not run it again.
	again := s
	again.ControllerSeq = k
	if err := h.ex.Start(t.Context(), again); !errors.Is(err, ErrRanBefore) {
		t.Errorf("re-sent finished job: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.data, "jobs", s.DeploymentID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a journal was made for the re-sent job: %v", err)
	}
	if p := h.ex.Pending(); len(p) != 0 {
		t.Errorf("events of a re-sent finished job: %v", p)
	}
}

func TestJournalHasNoEnvValues(t *testing.T) {
	repo := newRepo(t)
	repo.commit("c", map[string]string{"build.sh": buildSh})
	h := newHarness(t, Config{})
	s := h.spec(repo)
	s.Env = map[string]string{"APP_KEY": "base64:verysecretvalue", "APP_ENV": "production"}
	s.DeployScript = "echo key=$APP_KEY\n"
	mustSucceed(t, h, s.DeploymentID, h.run(s))
	b, err := os.ReadFile(filepath.Join(h.data, "jobs", s.DeploymentID, specFile))
	if err != nil || !strings.Contains(string(b), "APP_KEY") {
		t.Fatalf("spec.json: %v\n%s", err, b)
	}
	grepTree(t, h.data, "verysecretvalue")
	if log := h.log(s.DeploymentID); !strings.Contains(log, "key=***") {
		t.Errorf("secret env value not redacted:\n%s", log)
	}
}

func TestRunAsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		// The agent runs as root (it switches to each app's user); make
		// test runs as root too, as its dependency installer requires.
		t.Fatal("TestRunAsUser needs root: run the tests as root, like the agent runs")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("the nobody user: %v", err)
	}
	nobodyUID, _ := strconv.Atoi(u.Uid)
	repo := newRepo(t)
	repo.commit("c", map[string]string{"build.sh": buildSh})
	h := newHarness(t, Config{})
	// The app user must be able to reach its deploy path.
	for d := filepath.Dir(h.deploy); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	s := h.spec(repo)
	s.RunAsUser = "nobody"
	s.Env = map[string]string{"A": "b"}
	s.SharedPaths = []string{"storage"}
	s.DeployScript = "id -un; touch made-by-script\n"
	mustSucceed(t, h, s.DeploymentID, h.run(s))
	if log := h.log(s.DeploymentID); !strings.Contains(log, "\nnobody\n") {
		t.Errorf("script did not run as nobody:\n%s", log)
	}
	release := filepath.Join(h.deploy, "releases", s.DeploymentID)
	for _, p := range []string{release, release + "/.env", release + "/build.sh", release + "/made-by-script", h.deploy + "/shared/storage"} {
		var st os.FileInfo
		if st, err = os.Stat(p); err != nil {
			t.Fatal(err)
		}
		if uid := statUID(st); uid != nobodyUID {
			t.Errorf("%s owned by %d, want %d", p, uid, nobodyUID)
		}
	}
	if st, _ := os.Stat(release + "/build.sh"); st.Mode().Perm() != 0o644 {
		t.Errorf("build.sh mode %v", st.Mode().Perm())
	}
}

// A deploy reloads the app after the switch; a failing reload puts current
// back, so the app never serves a release it did not reload into.
func TestDeployReload(t *testing.T) {
	repo := newRepo(t)
	repo.commit("c", map[string]string{"build.sh": buildSh})
	h := newHarness(t, Config{})
	marker := filepath.Join(t.TempDir(), "reloaded")
	good := h.spec(repo)
	good.ReloadCommand = "pwd >> " + marker
	mustSucceed(t, h, good.DeploymentID, h.run(good))
	if got := strings.TrimSpace(waitFile(t, marker)); got != filepath.Join(h.deploy, "releases", good.DeploymentID) {
		t.Fatalf("reload ran in %q", got)
	}

	bad := h.spec(repo)
	bad.ReloadCommand = "pwd >> " + marker + "; test \"$(basename \"$PWD\")\" = " + good.DeploymentID
	res := h.run(bad)
	if res.Status != StatusFailed || res.FailedStep != StepReload || res.ExitCode != 1 {
		t.Fatalf("failing reload: %+v\n%s", res, h.log(bad.DeploymentID))
	}
	if h.current() != good.DeploymentID {
		t.Fatalf("current = %s after a failed reload", h.current())
	}
	// The reload ran again in the restored release.
	lines := strings.Split(strings.TrimSpace(waitFile(t, marker)), "\n")
	if len(lines) != 3 || lines[2] != filepath.Join(h.deploy, "releases", good.DeploymentID) {
		t.Fatalf("reload runs: %q", lines)
	}
}
