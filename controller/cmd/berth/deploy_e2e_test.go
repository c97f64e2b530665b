package main_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Secrets the deploy tests plant; none may ever show in a log line, the
// database's plain columns or an API answer.
const (
	gitUser   = "deployer"
	gitToken  = "tok-9f8e7d6c5b4a-secret"
	envSecret = "s3cr3t-env-value-42"
)

// deployScript is what every test app runs: markers in the commit pick a
// failing build, a slow build or a build that prints numbered lines. It
// checks the secret variable by its hash, so the script shows no secret.
var deployScript = `set -e
echo "building $(cat version.txt)"
if [ -f fail ]; then echo "build broke on purpose"; exit 7; fi
if [ -f slow ]; then echo "sleeping"; sleep 120; fi
if [ -f lines ]; then for i in $(seq 1 40); do echo "line $i"; sleep 0.25; done; fi
if [ -f loud ]; then head -c 6000000 /dev/zero | tr '\0' x | fold -w 100; fi
test "$(printf %s "$SECRET_KEY" | sha256sum | cut -c1-64)" = "` + sha256hex(envSecret) + `" || { echo "SECRET_KEY missing"; exit 9; }
echo "mode=$MODE"
cp version.txt built.txt
`

type deployEnv struct {
	*fleetEnv
	agentDir string
	agent    *agentProc
	repo     *gitRepo
	base     string // where apps are deployed
	outputs  *strings.Builder
	// agentArgs are extra `berth-agent run` flags (nginx for domains).
	agentArgs []string
}

// setupDeploy starts a controller (with extra serve flags) and an enrolled
// agent on server web-1, and a private repository.
func setupDeploy(t *testing.T, extra ...string) *deployEnv {
	t.Helper()
	return setupDeployWith(t, nil, extra...)
}

// setupDeployWith is setupDeploy with extra agent flags.
func setupDeployWith(t *testing.T, agentArgs []string, extra ...string) *deployEnv {
	t.Helper()
	dataDir := shortDir(t)
	c := startController(t, dataDir, append([]string{"--metrics-interval", "1s", "--heartbeat-interval", "1s"}, extra...)...)
	f := startFleetOn(t, &fleetEnv{c: c, dataDir: dataDir})
	a := f.addServer(t, "web-1")
	e := &deployEnv{fleetEnv: f, agentDir: filepath.Join(shortDir(t), "agent"), repo: newGitRepo(t), base: t.TempDir(), outputs: &strings.Builder{}, agentArgs: agentArgs}
	if r := enrollAgent(t, f.c.grpcAddr, a.Token, a.CAPin, e.agentDir); r.code != 0 {
		t.Fatalf("enroll: %+v", r)
	}
	e.agent = e.startAgent(t)
	// The e2e apps run as root (the test's own user): an admin's grant.
	var srv map[string]any
	e.mustJSON(t, &srv, "server", "allow-root", "web-1")
	e.mustJSON(t, &srv, "server", "show", "web-1")
	if srv["allow_root"] != true {
		t.Fatalf("server show after allow-root: %v", srv)
	}
	return e
}

func (e *deployEnv) startAgent(t *testing.T) *agentProc {
	t.Helper()
	p := startAgent(t, e.agentDir, e.agentArgs...)
	waitFor(t, "web-1 online", 30*time.Second, func() bool {
		s := e.server(t, "web-1")
		return s != nil && s["status"] == "online"
	})
	return p
}

// cli runs berth with the fleet's token and records the output for the
// secrets check.
func (e *deployEnv) cli(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	r := runIn(t, e.env, stdin, strings.Join(args, " "), args...)
	e.outputs.WriteString(r.stdout + r.stderr)
	return r
}

func (e *deployEnv) mustJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	r := e.cli(t, "", append(args, "-o", "json")...)
	if r.code != 0 {
		t.Fatalf("%v: %+v", args, r)
	}
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		t.Fatalf("%v: %v: %s", args, err, r.stdout)
	}
}

type deployment struct {
	ID             string     `json:"id"`
	Status         string     `json:"status"`
	FailedStep     string     `json:"failed_step"`
	FailureReason  string     `json:"failure_reason"`
	ExitCode       *int       `json:"exit_code"`
	CommitSHA      string     `json:"commit_sha"`
	ReleasePath    string     `json:"release_path"`
	RollbackFromID string     `json:"rollback_from_id"`
	TriggeredBy    string     `json:"triggered_by"`
	DeadlineAt     time.Time  `json:"deadline_at"`
	FinishedAt     *time.Time `json:"finished_at"`
	QueuedBehind   []string
}

func (e *deployEnv) deployment(t *testing.T, app, id string) deployment {
	t.Helper()
	var list []deployment
	e.mustJSON(t, &list, "deployments", "list", app)
	for _, d := range list {
		if d.ID == id {
			return d
		}
	}
	t.Fatalf("deployment %s not listed", id)
	return deployment{}
}

func (e *deployEnv) waitStatus(t *testing.T, app, id string, want ...string) deployment {
	t.Helper()
	var d deployment
	waitFor(t, "deployment "+id+" to be "+strings.Join(want, "/"), 3*time.Minute, func() bool {
		d = e.deployment(t, app, id)
		for _, w := range want {
			if d.Status == w {
				return true
			}
		}
		return false
	})
	return d
}

// deployFollow runs `berth deploy APP --follow -o json` and returns the
// result, the log (stderr) and the exit code.
func (e *deployEnv) deployFollow(t *testing.T, app string, extra ...string) (deployment, string, int) {
	t.Helper()
	r := e.cli(t, "", append([]string{"deploy", app, "--follow", "-o", "json"}, extra...)...)
	var d deployment
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil {
		t.Fatalf("deploy --follow: %v: %+v", err, r)
	}
	return d, r.stderr, r.code
}

func (e *deployEnv) current(t *testing.T, app string) string {
	t.Helper()
	target, err := os.Readlink(filepath.Join(e.base, app, "current"))
	if err != nil {
		return ""
	}
	return filepath.Base(target)
}

func (e *deployEnv) createApp(t *testing.T, name, repoURL, credential string, extra ...string) {
	t.Helper()
	script := filepath.Join(t.TempDir(), "deploy.sh")
	if err := os.WriteFile(script, []byte(deployScript), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"app", "create", name, "--server", "web-1", "--repo", repoURL, "--path", filepath.Join(e.base, name),
		"--user", "root", "--deploy-script", script, "--health-cmd", "test -f built.txt && test ! -f unhealthy", "-o", "json"}
	if credential != "" {
		args = append(args, "--credential", credential)
	}
	if r := e.cli(t, "", append(args, extra...)...); r.code != 0 {
		t.Fatalf("app create: %+v", r)
	}
	if r := e.cli(t, "", "app", "env", "set", name, "SECRET_KEY="+envSecret, "MODE=common"); r.code != 0 {
		t.Fatalf("env set: %+v", r)
	}
	if r := e.cli(t, "", "app", "env", "set", name, "--env", "production", "MODE=prod"); r.code != 0 {
		t.Fatalf("env set production: %+v", r)
	}
}

func (e *deployEnv) dsn() string {
	return fmt.Sprintf("host=%s user=berth dbname=berth sslmode=disable", filepath.Join(e.dataDir, "postgres", "run"))
}

// noSecrets checks logs, CLI/API output and the database's plain text.
func (e *deployEnv) noSecrets(t *testing.T, secrets ...string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.dsn())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var dump strings.Builder
	for _, q := range []string{
		"SELECT row_to_json(d)::text FROM deployments d",
		"SELECT convert_from(data, 'UTF8') FROM deployment_logs",
		"SELECT row_to_json(a)::text FROM activity_log a",
		"SELECT row_to_json(s)::text FROM security_events s",
		"SELECT coalesce(public_key,'') || coalesce(username,'') FROM git_credentials",
		"SELECT row_to_json(w)::text FROM webhook_deliveries w",
	} {
		rows, err := conn.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		vals, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		dump.WriteString(strings.Join(vals, "\n"))
	}
	sources := map[string]string{"controller log": e.c.logs.String(), "agent log": e.agent.logs.String(), "CLI output": e.outputs.String(), "database": dump.String()}
	for where, text := range sources {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Fatalf("secret %.6q… appears in the %s", s, where)
			}
		}
	}
}

func TestDeployOverHTTPS(t *testing.T) {
	t.Parallel()
	e := setupDeploy(t)
	url := e.repo.serveHTTP(t, gitUser, gitToken)
	c1 := e.repo.commit(t, "main", "first", map[string]string{"version.txt": "v1\n"})

	// The repository is private: nothing without the credential.
	if out, err := gitLsRemote(url); err == nil {
		t.Fatalf("anonymous ls-remote worked: %s", out)
	}
	var cred map[string]any
	r := e.cli(t, gitToken+"\n", "git-credential", "add", "gitcred", "--https", "--username", gitUser, "--token-stdin", "-o", "json")
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &cred) != nil || cred["username"] != gitUser || cred["kind"] != "https" {
		t.Fatalf("git-credential add: %+v", r)
	}
	reloads := filepath.Join(e.base, "reloads")
	e.createApp(t, "shop", url, "gitcred", "--keep", "2", "--reload-cmd", "cat version.txt >> "+reloads)

	// First deploy: succeeds, current points at its release, .env is 0600
	// with the merged environment.
	d1, logs, code := e.deployFollow(t, "shop")
	if code != 0 || d1.Status != "succeeded" || d1.CommitSHA != c1 || !strings.Contains(logs, "building v1") || !strings.Contains(logs, "mode=prod") {
		t.Fatalf("first deploy: code %d %+v\n%s", code, d1, logs)
	}
	if e.current(t, "shop") != d1.ID {
		t.Fatalf("current = %q, want %s", e.current(t, "shop"), d1.ID)
	}
	envFile := filepath.Join(e.base, "shop", "releases", d1.ID, ".env")
	st, err := os.Stat(envFile)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf(".env: %v %v", st, err)
	}
	if b, _ := os.ReadFile(envFile); !strings.Contains(string(b), "SECRET_KEY") || !strings.Contains(string(b), "MODE") {
		t.Fatalf(".env lacks the variables")
	}

	// Redeploy a new commit.
	c2 := e.repo.commit(t, "main", "second", map[string]string{"version.txt": "v2\n"})
	d2, logs, code := e.deployFollow(t, "shop")
	if code != 0 || d2.Status != "succeeded" || d2.CommitSHA != c2 || e.current(t, "shop") != d2.ID {
		t.Fatalf("redeploy: code %d %+v\n%s", code, d2, logs)
	}

	// A failing build names its step and exit code; current stays.
	c3 := e.repo.commit(t, "main", "broken", map[string]string{"version.txt": "v3\n", "fail": "x\n"})
	d3, logs, code := e.deployFollow(t, "shop")
	if code == 0 || d3.Status != "failed" || d3.FailedStep != "build" || d3.ExitCode == nil || *d3.ExitCode != 7 || d3.CommitSHA != c3 ||
		!strings.Contains(logs, "build broke on purpose") || e.current(t, "shop") != d2.ID {
		t.Fatalf("failing build: code %d %+v\n%s", code, d3, logs)
	}

	// A failing health check: current stays.
	e.repo.commit(t, "main", "unhealthy", map[string]string{"fail": "", "unhealthy": "x\n"})
	d4, logs, code := e.deployFollow(t, "shop")
	if code == 0 || d4.Status != "failed" || d4.FailedStep != "health_check" || e.current(t, "shop") != d2.ID {
		t.Fatalf("failing health check: code %d %+v\n%s", code, d4, logs)
	}

	// Rollback to the release before the current one, without rebuilding.
	r = e.cli(t, "", "rollback", "shop", "--follow", "-o", "json")
	var rb deployment
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &rb) != nil || rb.Status != "succeeded" || rb.RollbackFromID != d1.ID || rb.TriggeredBy != "rollback" ||
		e.current(t, "shop") != d1.ID || strings.Contains(r.stderr, "building") {
		t.Fatalf("rollback: %+v %+v", r, rb)
	}
	// The reload command ran in the release rolled back to.
	if b, _ := os.ReadFile(reloads); !strings.HasSuffix(string(b), "v1\n") {
		t.Fatalf("reload command after rollback: %q", b)
	}

	// Deploy an explicit commit (the second one) by --commit.
	d5, logs, code := e.deployFollow(t, "shop", "--commit", c2)
	if code != 0 || d5.CommitSHA != c2 || e.current(t, "shop") != d5.ID {
		t.Fatalf("deploy --commit: code %d %+v\n%s", code, d5, logs)
	}
	e.repo.commit(t, "main", "healthy again", map[string]string{"unhealthy": "", "version.txt": "v6\n"})
	if d6, logs, code := e.deployFollow(t, "shop"); code != 0 {
		t.Fatalf("deploy 6: %d %+v\n%s", code, d6, logs)
	}
	// keep 2: the first release is pruned, and rolling back to it is refused.
	r = e.cli(t, "", "rollback", "shop", "--to", d1.ID)
	if r.code == 0 || !strings.Contains(r.stderr, "pruned") {
		t.Fatalf("rollback to a pruned release: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(e.base, "shop", "releases", d1.ID)); !os.IsNotExist(err) {
		t.Fatalf("release %s still on disk: %v", d1.ID, err)
	}

	// A build that prints more than a deployment's stored log may hold: the
	// log ends at the cap with a visible marker, later output (the script's
	// last line) is not stored, and the deploy itself succeeds.
	e.repo.commit(t, "main", "loud", map[string]string{"loud": "x\n"})
	loud, _, code := e.deployFollow(t, "shop")
	if code != 0 || loud.Status != "succeeded" {
		t.Fatalf("loud build: code %d %+v", code, loud)
	}
	r = e.cli(t, "", "deployments", "logs", loud.ID)
	// (The agent caps the job's output at the same size the controller
	// stores, so the agent's marker is the one that shows.)
	if out := r.stdout; r.code != 0 || !strings.Contains(out, "building v6") || !strings.HasSuffix(out, "; the rest is dropped\n") ||
		!strings.Contains(out, "output truncated") || strings.Contains(out, "mode=prod") || len(out) < 4<<20-64<<10 || len(out) > 4<<20+64<<10 {
		t.Fatalf("loud build's log: code %d, %d bytes, tail %q", r.code, len(out), out[max(0, len(out)-200):])
	}

	// Cancel: a slow build is killed, a deploy behind it says it queues.
	e.repo.commit(t, "main", "slow", map[string]string{"slow": "x\n", "loud": ""})
	cur := e.current(t, "shop")
	var slow deployment
	e.mustJSON(t, &slow, "deploy", "shop")
	// The app is idle and its agent connected here: the deployment is
	// created dispatched and sent without the dispatcher's round.
	if slow.Status != "dispatched" && slow.Status != "running" {
		t.Fatalf("deploy of an idle app: %+v", slow)
	}
	e.waitStatus(t, "shop", slow.ID, "running")
	waitFor(t, "the slow build to print", time.Minute, func() bool {
		r := e.cli(t, "", "deployments", "logs", slow.ID)
		return strings.Contains(r.stdout, "sleeping")
	})
	r = e.cli(t, "", "deploy", "shop")
	if r.code != 0 || !strings.Contains(r.stdout, "queued behind 1") {
		t.Fatalf("second deploy does not say it queues: %+v", r)
	}
	queued := strings.Fields(r.stdout)[1]
	if r := e.cli(t, "", "deploy", "cancel", slow.ID); r.code != 0 {
		t.Fatalf("cancel: %+v", r)
	}
	if d := e.waitStatus(t, "shop", slow.ID, "canceled", "failed", "succeeded"); d.Status != "canceled" {
		t.Fatalf("canceled deploy: %+v", d)
	}
	if e.current(t, "shop") != cur {
		t.Fatal("cancel moved current")
	}
	// The queued one runs next (the same slow commit): cancel it while queued
	// or running; either way it ends canceled.
	if r := e.cli(t, "", "deploy", "cancel", queued); r.code != 0 {
		t.Fatalf("cancel queued: %+v", r)
	}
	if d := e.waitStatus(t, "shop", queued, "canceled", "failed", "succeeded"); d.Status != "canceled" {
		t.Fatalf("second canceled deploy: %+v", d)
	}

	e.noSecrets(t, gitToken, envSecret)
}

func sha256hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func gitLsRemote(url string) (string, error) {
	cmd := execCommand("git", "ls-remote", url)
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_ASKPASS=/bin/false")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

var (
	_ = hmac.New
	_ = sha256.New
	_ = hex.EncodeToString
	_ = io.ReadAll
	_ = http.StatusOK
	_ = syscall.SIGKILL
)
