package main_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"
)

// TestDeployOverSSH deploys a private repository that only a deploy key
// can read, through a real sshd; an imported key works as well as a
// generated one, and a deploy past its timeout ends timed_out.
func TestDeployOverSSH(t *testing.T) {
	t.Parallel()
	e := setupDeploy(t)
	c1 := e.repo.commit(t, "main", "first", map[string]string{"version.txt": "v1\n"})

	// A generated ed25519 deploy key: only its public part is shown.
	var gen map[string]any
	e.mustJSON(t, &gen, "git-credential", "add", "genkey", "--ssh-key")
	pub, _ := gen["public_key"].(string)
	if !strings.HasPrefix(pub, "ssh-ed25519 ") || !strings.HasPrefix(fmt.Sprint(gen["fingerprint"]), "SHA256:") {
		t.Fatalf("generated key: %v", gen)
	}
	// An imported key.
	keyFile := filepath.Join(t.TempDir(), "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "imported", "-f", keyFile).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, out)
	}
	var imp map[string]any
	e.mustJSON(t, &imp, "git-credential", "add", "impkey", "--ssh-key", "--private-key-file", keyFile)
	impPub, _ := os.ReadFile(keyFile + ".pub")
	if f := strings.Fields(string(impPub)); len(f) < 2 || !strings.Contains(fmt.Sprint(imp["public_key"]), f[1]) {
		t.Fatalf("imported key's public part: %v", imp)
	}
	privLines := strings.Split(strings.TrimSpace(string(must(os.ReadFile(keyFile)))), "\n")

	url, hostFP := e.repo.serveSSH(t, pub+"\n"+strings.TrimSpace(string(impPub)))
	hostPort := strings.TrimPrefix(url, "ssh://root@")
	hostPort = hostPort[:strings.Index(hostPort, "/")]
	e.createApp(t, "api", url, "genkey")
	// No host key pinned yet: refused before dispatch, naming the command.
	if r := e.cli(t, "", "deploy", "api"); r.code == 0 || !strings.Contains(r.stderr, "scan-host") {
		t.Fatalf("deploy without a pinned host key: %+v", r)
	}
	// The admin scans, checks the fingerprint, and pins it to each key.
	var keys []map[string]string
	e.mustJSON(t, &keys, "git-credential", "scan-host", "genkey", hostPort)
	if !slices.ContainsFunc(keys, func(k map[string]string) bool { return k["fingerprint"] == hostFP }) {
		t.Fatalf("scan-host: %v, want %s", keys, hostFP)
	}
	for _, cred := range []string{"genkey", "impkey"} {
		if r := e.cli(t, "", "git-credential", "trust-host", cred, hostPort, "--fingerprint", hostFP); r.code != 0 {
			t.Fatalf("trust-host %s: %+v", cred, r)
		}
	}
	d, logs, code := e.deployFollow(t, "api")
	if code != 0 || d.Status != "succeeded" || d.CommitSHA != c1 || e.current(t, "api") != d.ID {
		t.Fatalf("deploy over ssh: %d %+v\n%s", code, d, logs)
	}
	e.createApp(t, "api2", url, "impkey")
	if d, logs, code := e.deployFollow(t, "api2"); code != 0 || d.Status != "succeeded" {
		t.Fatalf("deploy over ssh with an imported key: %d %+v\n%s", code, d, logs)
	}
	// Without a credential the repository cannot be read.
	e.createApp(t, "nokey", url, "")
	if d, logs, code := e.deployFollow(t, "nokey"); code == 0 || d.Status != "failed" || d.FailedStep != "fetch" {
		t.Fatalf("deploy without a key: %d %+v\n%s", code, d, logs)
	}

	// Timeout: a build past the app's timeout is killed and timed_out.
	e.repo.commit(t, "main", "slow", map[string]string{"slow": "x\n"})
	e.createApp(t, "slowapp", url, "genkey", "--timeout", "3")
	d, logs, code = e.deployFollow(t, "slowapp")
	if code != 4 || d.Status != "timed_out" || e.current(t, "slowapp") != "" {
		t.Fatalf("timeout: %d %+v\n%s", code, d, logs)
	}
	e.noSecrets(t, append(privLines[1:len(privLines)-1], envSecret)...)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func postHook(t *testing.T, url string, headers map[string]string, body []byte) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(res.Body)
	_ = json.Unmarshal(b, &m)
	return res.StatusCode, m
}

// TestDeployWebhook: GitHub (HMAC signature) and GitLab (token) push
// events deploy the app's branch; bad signatures are refused, other
// branches ignored, and a replayed delivery is processed once.
func TestDeployWebhook(t *testing.T) {
	t.Parallel()
	e := setupDeploy(t)
	url := e.repo.serveHTTP(t, gitUser, gitToken)
	c1 := e.repo.commit(t, "main", "first", map[string]string{"version.txt": "v1\n"})
	if r := e.cli(t, gitToken+"\n", "git-credential", "add", "gitcred", "--https", "--username", gitUser, "--token-stdin"); r.code != 0 {
		t.Fatalf("credential: %+v", r)
	}
	e.createApp(t, "shop", url, "gitcred")
	r := runIn(t, e.env, "", "webhook-secret", "app", "webhook-secret", "shop", "-o", "json") // shown once, by design
	var hook struct {
		Secret     string `json:"secret"`
		GithubPath string `json:"github_path"`
		GitlabPath string `json:"gitlab_path"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &hook) != nil || hook.Secret == "" {
		t.Fatalf("webhook-secret: %+v", r)
	}
	push := func(ref, sha string) []byte {
		b, _ := json.Marshal(map[string]any{"ref": ref, "after": sha, "checkout_sha": sha, "head_commit": map[string]any{"id": sha, "message": "first"}})
		return b
	}
	sign := func(secret string, body []byte) string {
		m := hmac.New(sha256.New, []byte(secret))
		m.Write(body)
		return "sha256=" + hex.EncodeToString(m.Sum(nil))
	}
	gh := e.c.url(hook.GithubPath)
	body := push("refs/heads/main", c1)
	hdr := map[string]string{"X-GitHub-Event": "push", "X-GitHub-Delivery": "delivery-1", "X-Hub-Signature-256": sign(hook.Secret, body), "Content-Type": "application/json"}

	// Bad signature: refused, nothing queued.
	bad := map[string]string{"X-GitHub-Event": "push", "X-GitHub-Delivery": "delivery-bad", "X-Hub-Signature-256": sign("wrong-secret-wrong", body)}
	if code, _ := postHook(t, gh, bad, body); code != http.StatusUnauthorized {
		t.Fatalf("bad signature: %d", code)
	}
	if code, _ := postHook(t, gh, map[string]string{"X-GitHub-Event": "push", "X-GitHub-Delivery": "delivery-none"}, body); code != http.StatusUnauthorized {
		t.Fatalf("no signature: %d", code)
	}
	code, m := postHook(t, gh, hdr, body)
	id, _ := m["deployment_id"].(string)
	if code != http.StatusAccepted || id == "" {
		t.Fatalf("good push: %d %v", code, m)
	}
	if d := e.waitStatus(t, "shop", id, "succeeded", "failed"); d.Status != "succeeded" || d.CommitSHA != c1 || d.TriggeredBy != "webhook" {
		t.Fatalf("webhook deploy: %+v", d)
	}
	// Replayed delivery: processed once, also under a new delivery id
	// (the header is not signed; the body is).
	if code, m := postHook(t, gh, hdr, body); code != http.StatusOK || m["result"] != "already processed" {
		t.Fatalf("replay: %d %v", code, m)
	}
	hdr["X-GitHub-Delivery"] = "delivery-1-replayed"
	if code, m := postHook(t, gh, hdr, body); code != http.StatusOK || m["result"] != "already processed" {
		t.Fatalf("replayed body under a new delivery id: %d %v", code, m)
	}
	// Another branch: ignored.
	other := push("refs/heads/feature", c1)
	if code, m := postHook(t, gh, map[string]string{"X-GitHub-Event": "push", "X-GitHub-Delivery": "delivery-2", "X-Hub-Signature-256": sign(hook.Secret, other)}, other); code != http.StatusAccepted || m["result"] != "ignored_branch" {
		t.Fatalf("other branch: %d %v", code, m)
	}
	// GitLab: token checked, then deployed once.
	c2 := e.repo.commit(t, "main", "second", map[string]string{"version.txt": "v2\n"})
	gl := e.c.url(hook.GitlabPath)
	body = push("refs/heads/main", c2)
	if code, _ := postHook(t, gl, map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": "gl-bad", "X-Gitlab-Token": "nope-nope-nope-nope"}, body); code != http.StatusUnauthorized {
		t.Fatalf("gitlab bad token: %d", code)
	}
	glh := map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": "gl-1", "X-Gitlab-Token": hook.Secret}
	code, m = postHook(t, gl, glh, body)
	id2, _ := m["deployment_id"].(string)
	if code != http.StatusAccepted || id2 == "" {
		t.Fatalf("gitlab push: %d %v", code, m)
	}
	if d := e.waitStatus(t, "shop", id2, "succeeded", "failed"); d.Status != "succeeded" || d.CommitSHA != c2 {
		t.Fatalf("gitlab deploy: %+v", d)
	}
	if code, m := postHook(t, gl, glh, body); code != http.StatusOK || m["result"] != "already processed" {
		t.Fatalf("gitlab replay: %d %v", code, m)
	}
	var list []deployment
	e.mustJSON(t, &list, "deployments", "list", "shop")
	if len(list) != 2 {
		t.Fatalf("%d deployments, want 2: %+v", len(list), list)
	}
	e.noSecrets(t, gitToken, envSecret, hook.Secret)
}

// TestDeployKilledControllerAndAgent: kill -9 the controller mid-deploy:
// the deploy goes on and its whole log lands once the controller is back,
// no line lost or doubled. kill -9 the agent mid-deploy: the deployment is
// failed with the reason, current is untouched, and the next deploy works.
func TestDeployKilledControllerAndAgent(t *testing.T) {
	t.Parallel()
	e := setupDeploy(t)
	url := e.repo.serveHTTP(t, gitUser, gitToken)
	e.repo.commit(t, "main", "lines", map[string]string{"version.txt": "v1\n", "lines": "x\n"})
	if r := e.cli(t, gitToken+"\n", "git-credential", "add", "gitcred", "--https", "--username", gitUser, "--token-stdin"); r.code != 0 {
		t.Fatalf("credential: %+v", r)
	}
	e.createApp(t, "shop", url, "gitcred")

	var d deployment
	e.mustJSON(t, &d, "deploy", "shop")
	waitFor(t, "the build to print lines", time.Minute, func() bool {
		return strings.Contains(e.cli(t, "", "deployments", "logs", d.ID).stdout, "line 3\n")
	})
	// A follower started before the kill resumes after the restart from
	// the last chunk it printed.
	follower := exec.Command(berthBin, "deployments", "logs", d.ID, "--follow")
	follower.Env = append(os.Environ(), e.env...)
	var followed, followErr bytes.Buffer
	follower.Stdout, follower.Stderr = &followed, &followErr
	if err := follower.Start(); err != nil {
		t.Fatal(err)
	}
	followDone := make(chan error, 1)
	go func() { followDone <- follower.Wait() }()
	t.Cleanup(func() { _ = follower.Process.Kill() })
	_ = e.c.stop(t, syscall.SIGKILL)
	time.Sleep(4 * time.Second) // the build goes on meanwhile
	e.c = startControllerAt(t, e.dataDir, e.c.httpAddr, e.c.grpcAddr, "--metrics-interval", "1s", "--heartbeat-interval", "1s")
	if got := e.waitStatus(t, "shop", d.ID, "succeeded", "failed", "timed_out", "canceled"); got.Status != "succeeded" {
		t.Fatalf("deploy across a controller kill: %+v", got)
	}
	logs := e.cli(t, "", "deployments", "logs", d.ID).stdout
	for i := 1; i <= 40; i++ {
		if n := strings.Count(logs, fmt.Sprintf("line %d\n", i)); n != 1 {
			t.Fatalf("line %d appears %d times in the log:\n%s", i, n, logs)
		}
	}
	if e.current(t, "shop") != d.ID {
		t.Fatalf("current = %s", e.current(t, "shop"))
	}
	select {
	case err := <-followDone:
		if err != nil {
			t.Fatalf("follower: %v\n%s", err, followErr.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("the follower did not end with the deployment")
	}
	for i := 1; i <= 40; i++ {
		if n := strings.Count(followed.String(), fmt.Sprintf("line %d\n", i)); n != 1 {
			t.Fatalf("follower: line %d appears %d times:\n%s\n%s", i, n, followed.String(), followErr.String())
		}
	}

	// kill -9 the agent during a slow build.
	e.repo.commit(t, "main", "slow", map[string]string{"lines": "", "slow": "x\n"})
	var slow deployment
	e.mustJSON(t, &slow, "deploy", "shop")
	waitFor(t, "the slow build to start", time.Minute, func() bool {
		return strings.Contains(e.cli(t, "", "deployments", "logs", slow.ID).stdout, "sleeping")
	})
	_ = e.agent.cmd.Process.Kill()
	<-e.agent.done
	e.agent = e.startAgent(t)
	got := e.waitStatus(t, "shop", slow.ID, "failed", "succeeded", "canceled", "timed_out")
	if got.Status != "failed" || !strings.Contains(got.FailureReason, "agent restarted") || e.current(t, "shop") != d.ID {
		t.Fatalf("deploy across an agent kill: %+v (current %s)", got, e.current(t, "shop"))
	}
	if _, err := os.Stat(filepath.Join(e.base, "shop", "releases", slow.ID)); !os.IsNotExist(err) {
		t.Fatalf("the interrupted release is still there: %v", err)
	}
	e.repo.commit(t, "main", "fixed", map[string]string{"slow": "", "version.txt": "v3\n"})
	next, nextLogs, code := e.deployFollow(t, "shop")
	if code != 0 || e.current(t, "shop") != next.ID {
		t.Fatalf("deploy after the agent kill: %d %+v\n%s", code, next, nextLogs)
	}
	// The controller re-sends the interrupted job on the reconnect if it
	// reads it before the recovered result arrives: the agent must never run
	// it again. A re-send comes on the agent's one stream ahead of the next
	// deploy's job, and the agent takes jobs in order, so once the next
	// deploy has started there, a re-run would already be in the log.
	agentLog := e.agent.logs.String()
	if !strings.Contains(agentLog, `"job started","job":"`+next.ID+`"`) {
		t.Fatalf("the next deploy's start is not in the agent's log:\n%s", agentLog)
	}
	if strings.Contains(agentLog, `"job started","job":"`+slow.ID+`"`) {
		t.Fatalf("the restarted agent ran the interrupted job again:\n%s", agentLog)
	}

	// The log is stored once per chunk: chunk numbers are unique and the
	// stored bytes match the count.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.dsn())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var stored, counted int64
	if err := conn.QueryRow(ctx, `SELECT coalesce(sum(octet_length(l.data)),0), d.log_bytes FROM deployments d LEFT JOIN deployment_logs l ON l.deployment_id = d.id WHERE d.id::text = $1 GROUP BY d.log_bytes`,
		uuidOf(t, d.ID)).Scan(&stored, &counted); err != nil {
		t.Fatal(err)
	}
	if stored != counted || stored == 0 {
		t.Fatalf("log bytes stored %d, counted %d", stored, counted)
	}
	e.noSecrets(t, gitToken, envSecret)
}

// uuidOf is a ULID string as PostgreSQL prints the uuid it is stored as.
func uuidOf(t *testing.T, id string) string {
	t.Helper()
	u, err := ulid.ParseStrict(id)
	if err != nil {
		t.Fatal(err)
	}
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// TestDeployAgentNeverReturns: a deployment whose agent is gone for good is
// failed "agent unreachable" by the controller after its deadline plus the
// grace; nothing stays running forever.
func TestDeployAgentNeverReturns(t *testing.T) {
	t.Parallel()
	// No start grace: the controller has been up all along.
	e := setupDeploy(t, "--start-grace", "1s", "--unreachable-grace", "3s")
	url := e.repo.serveHTTP(t, gitUser, gitToken)
	e.repo.commit(t, "main", "slow", map[string]string{"version.txt": "v1\n", "slow": "x\n"})
	if r := e.cli(t, gitToken+"\n", "git-credential", "add", "gitcred", "--https", "--username", gitUser, "--token-stdin"); r.code != 0 {
		t.Fatalf("credential: %+v", r)
	}
	e.createApp(t, "shop", url, "gitcred", "--timeout", "5")
	var d deployment
	e.mustJSON(t, &d, "deploy", "shop")
	e.waitStatus(t, "shop", d.ID, "running")
	_ = e.agent.cmd.Process.Kill()
	<-e.agent.done
	got := e.waitStatus(t, "shop", d.ID, "failed", "timed_out", "succeeded", "canceled")
	if got.Status != "failed" || got.FailureReason != "agent unreachable" {
		t.Fatalf("agent gone: %+v", got)
	}
	// Not before its deadline plus the 3 s grace.
	if got.FinishedAt == nil || got.FinishedAt.Sub(got.DeadlineAt) < 3*time.Second {
		t.Errorf("failed at %v, before its deadline %v plus the grace (3s)", got.FinishedAt, got.DeadlineAt)
	}
	// A later deploy waits in the queue, then times out there.
	var q deployment
	e.mustJSON(t, &q, "deploy", "shop")
	if got := e.waitStatus(t, "shop", q.ID, "timed_out", "failed", "succeeded", "canceled"); got.Status != "timed_out" {
		t.Fatalf("queued without an agent: %+v", got)
	}
	// When the agent does come back, it cleans up the interrupted job (its
	// processes and half-built release) and reports it; the row keeps the
	// controller's verdict.
	e.agent = e.startAgent(t)
	waitFor(t, "the interrupted release to be removed", time.Minute, func() bool {
		_, err := os.Stat(filepath.Join(e.base, "shop", "releases", d.ID))
		return os.IsNotExist(err)
	})
	if got := e.deployment(t, "shop", d.ID); got.Status != "failed" || got.FailureReason != "agent unreachable" {
		t.Fatalf("after the agent returned: %+v", got)
	}
}

// TestDeployThroughAnotherController: two controllers share the database;
// the agent streams to the first, the CLI talks to the second. Dispatch,
// the followed log and cancel reach across (LISTEN/NOTIFY).
func TestDeployThroughAnotherController(t *testing.T) {
	t.Parallel()
	e := setupDeploy(t)
	d2 := shortDir(t)
	if err := os.MkdirAll(d2, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ca.key", "ca.crt", "encryption.keys"} {
		if err := os.WriteFile(filepath.Join(d2, name), must(os.ReadFile(filepath.Join(e.dataDir, name))), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c2 := startController(t, d2, "--database-url", e.dsn(), "--heartbeat-interval", "1s")
	url := e.repo.serveHTTP(t, gitUser, gitToken)
	e.repo.commit(t, "main", "first", map[string]string{"version.txt": "v1\n", "lines": "x\n"})
	if r := e.cli(t, gitToken+"\n", "git-credential", "add", "gitcred", "--https", "--username", gitUser, "--token-stdin"); r.code != 0 {
		t.Fatalf("credential: %+v", r)
	}
	e.createApp(t, "shop", url, "gitcred")
	// From here on the CLI uses the second controller.
	for i, kv := range e.env {
		if strings.HasPrefix(kv, "BERTH_ADDR=") {
			e.env[i] = "BERTH_ADDR=" + c2.grpcAddr
		}
	}
	d, logs, code := e.deployFollow(t, "shop")
	if code != 0 || d.Status != "succeeded" || strings.Count(logs, "line 40\n") != 1 || strings.Count(logs, "line 1\n") != 1 {
		t.Fatalf("deploy through the second controller: %d %+v\n%s", code, d, logs)
	}
	e.repo.commit(t, "main", "slow", map[string]string{"lines": "", "slow": "x\n"})
	var slow deployment
	e.mustJSON(t, &slow, "deploy", "shop")
	waitFor(t, "the slow build to start", time.Minute, func() bool {
		return strings.Contains(e.cli(t, "", "deployments", "logs", slow.ID).stdout, "sleeping")
	})
	if r := e.cli(t, "", "deploy", "cancel", slow.ID); r.code != 0 {
		t.Fatalf("cancel: %+v", r)
	}
	if got := e.waitStatus(t, "shop", slow.ID, "canceled", "failed", "succeeded"); got.Status != "canceled" || e.current(t, "shop") != d.ID {
		t.Fatalf("cancel across controllers: %+v", got)
	}
}
