package main_test

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

const (
	s3AccessKey = "AKIDBERTHTEST"
	s3Secret    = "s3-secret-0f1e2d3c4b5a69788796"
)

// fakeS3 serves an S3-compatible API (gofakes3, in memory) over HTTP on
// loopback, behind a check of each request's AWS Signature V4 (gofakes3
// checks none): a wrong key or secret gets S3's own 403 answer. It also
// decodes aws-chunked bodies for every upload as S3 does (gofakes3 only
// for a plain PUT). Adapted from the agent's backup package tests, which
// this module cannot import.
func fakeS3(t *testing.T, buckets ...string) (string, *s3mem.Backend) {
	t.Helper()
	return fakeS3Gated(t, nil, buckets...)
}

// s3Gate holds uploads (PUT requests) while closed: a backup waits in its
// upload, for as long as a test needs to kill something under it.
type s3Gate struct {
	mu      sync.Mutex
	open    chan struct{} // closed: uploads pass
	entered chan struct{} // gets a value when an upload waits
}

func newS3Gate() *s3Gate {
	return &s3Gate{open: make(chan struct{}), entered: make(chan struct{}, 100)}
}

func (g *s3Gate) hold() {
	g.mu.Lock()
	g.open = make(chan struct{})
	g.mu.Unlock()
}

func (g *s3Gate) release() {
	g.mu.Lock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
	g.mu.Unlock()
}

func (g *s3Gate) wait(r *http.Request) bool {
	if g == nil || r.Method != http.MethodPut {
		return true
	}
	g.mu.Lock()
	open := g.open
	g.mu.Unlock()
	select {
	case <-open:
		return true
	default:
	}
	g.entered <- struct{}{}
	select {
	case <-open:
		return true
	case <-r.Context().Done():
		return false
	}
}

func fakeS3Gated(t *testing.T, gate *s3Gate, buckets ...string) (string, *s3mem.Backend) {
	t.Helper()
	be := s3mem.New()
	for _, b := range buckets {
		if err := be.CreateBucket(b); err != nil {
			t.Fatal(err)
		}
	}
	h := gofakes3.New(be, gofakes3.WithTimeSkewLimit(0)).Server()
	fakeS3Handlers.Store(be, h)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if code := checkSigV4(r); code != "" {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>Access Denied</Message></Error>`, code)
			return
		}
		if !gate.wait(r) {
			return // the client went away while its upload was held
		}
		if strings.HasPrefix(r.Header.Get("X-Amz-Content-Sha256"), "STREAMING-") {
			n, err := strconv.ParseInt(r.Header.Get("X-Amz-Decoded-Content-Length"), 10, 64)
			if err != nil {
				http.Error(w, "bad decoded length", http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(&awsChunked{r: bufio.NewReader(r.Body)})
			r.ContentLength = n
			r.Header.Set("Content-Length", strconv.FormatInt(n, 10))
			r.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, be
}

// fakeS3Handlers: each fake server's gofakes3 handler by its backend, so
// a test can ask it what only the S3 API tells (unfinished multipart
// uploads) without signing a request.
var fakeS3Handlers sync.Map // *s3mem.Backend -> http.Handler

// incompleteUploads lists the keys of bucket's unfinished multipart
// uploads (S3's ListMultipartUploads, answered by gofakes3 itself).
func incompleteUploads(t *testing.T, be *s3mem.Backend, bucket string) []string {
	t.Helper()
	h, ok := fakeS3Handlers.Load(be)
	if !ok {
		t.Fatal("not a fake S3 backend")
	}
	rec := httptest.NewRecorder()
	h.(http.Handler).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/"+bucket+"?uploads", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("list multipart uploads: %d %s", rec.Code, rec.Body)
	}
	var res struct {
		Uploads []struct {
			Key string `xml:"Key"`
		} `xml:"Upload"`
	}
	if err := xml.Unmarshal(rec.Body.Bytes(), &res); err != nil {
		t.Fatalf("list multipart uploads: %v: %s", err, rec.Body)
	}
	var keys []string
	for _, u := range res.Uploads {
		keys = append(keys, u.Key)
	}
	return keys
}

// checkSigV4 returns an S3 error code when r is not signed with the test
// key pair, "" when it is.
func checkSigV4(r *http.Request) string {
	auth := r.Header.Get("Authorization")
	if !strings.HasPrefix(auth, "AWS4-HMAC-SHA256 ") {
		return "AccessDenied"
	}
	fields := map[string]string{}
	for _, f := range strings.Split(strings.TrimPrefix(auth, "AWS4-HMAC-SHA256 "), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(f), "=")
		fields[k] = v
	}
	cred := strings.Split(fields["Credential"], "/")
	if len(cred) != 5 {
		return "AccessDenied"
	}
	if cred[0] != s3AccessKey {
		return "InvalidAccessKeyId"
	}
	var ch strings.Builder
	for _, h := range strings.Split(fields["SignedHeaders"], ";") {
		var v string
		switch h {
		case "host":
			v = r.Host
		case "content-length":
			v = strconv.FormatInt(r.ContentLength, 10)
		default:
			vals := r.Header.Values(h)
			for i := range vals {
				vals[i] = strings.Join(strings.Fields(vals[i]), " ")
			}
			v = strings.Join(vals, ",")
		}
		ch.WriteString(h + ":" + v + "\n")
	}
	query := strings.ReplaceAll(r.URL.Query().Encode(), "+", "%20")
	canonical := strings.Join([]string{r.Method, r.URL.EscapedPath(), query, ch.String(), fields["SignedHeaders"],
		r.Header.Get("X-Amz-Content-Sha256")}, "\n")
	sum := sha256.Sum256([]byte(canonical))
	toSign := "AWS4-HMAC-SHA256\n" + r.Header.Get("X-Amz-Date") + "\n" + strings.Join(cred[1:], "/") + "\n" + hex.EncodeToString(sum[:])
	key := []byte("AWS4" + s3Secret)
	for _, p := range cred[1:] {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(p))
		key = m.Sum(nil)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(toSign))
	if !hmac.Equal([]byte(hex.EncodeToString(m.Sum(nil))), []byte(fields["Signature"])) {
		return "SignatureDoesNotMatch"
	}
	return ""
}

// awsChunked decodes an aws-chunked body (its chunk signatures are not
// checked; the request's signature is).
type awsChunked struct {
	r    *bufio.Reader
	left int64
	done bool
}

func (a *awsChunked) Read(p []byte) (int, error) {
	for a.left == 0 {
		if a.done {
			return 0, io.EOF
		}
		line, err := a.r.ReadString('\n')
		if err != nil {
			return 0, err
		}
		size, _, _ := strings.Cut(strings.TrimSpace(line), ";")
		n, err := strconv.ParseInt(size, 16, 64)
		if err != nil {
			return 0, fmt.Errorf("aws-chunked: bad chunk header %q", line)
		}
		if n == 0 {
			a.done = true
			_, _ = io.Copy(io.Discard, a.r) // trailers
			return 0, io.EOF
		}
		a.left = n
	}
	if int64(len(p)) > a.left {
		p = p[:a.left]
	}
	n, err := a.r.Read(p)
	a.left -= int64(n)
	if a.left == 0 && err == nil {
		if _, err := a.r.Discard(2); err != nil { // the chunk's CRLF
			return n, err
		}
	}
	return n, err
}

// The same PostgreSQL database goes to an S3-compatible server over HTTP
// and a directory to OpenSSH's internal-sftp, each verified and restored;
// wrong credentials, a missing bucket and a host key that does not match
// the pinned fingerprint fail with the reason and a notification.
func TestBackupS3AndSFTP(t *testing.T) {
	t.Parallel()
	e := setupDeploy(t)
	run := filepath.Join(e.dataDir, "postgres", "run")
	e.sqlExec(t, "berth", "CREATE DATABASE shopdata", "CREATE DATABASE s3restore")
	e.sqlExec(t, "shopdata",
		"CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, payload bytea NOT NULL)",
		"INSERT INTO items (name, payload) SELECT '"+backupDataMarker+"-' || g, sha256(g::text::bytea) FROM generate_series(1, 5000) g")
	want := e.tableDigest(t, "shopdata")
	e.createApp(t, "shop", "https://git.example.com/shop.git", "")
	url := fmt.Sprintf("postgres://berth:%s@/shopdata?host=%s", backupDBPassword, run)
	if r := e.cli(t, "", "app", "env", "set", "shop", "DATABASE_URL="+url); r.code != 0 {
		t.Fatalf("env set: %+v", r)
	}

	// S3.
	endpoint, be := fakeS3(t, "berth-backups")
	var dest map[string]any
	add := func(name, bucket, key string) int {
		return e.backupJSON(t, s3Secret+"\n", &dest, "backup", "destination", "add", name, "--kind", "s3", "--endpoint", endpoint,
			"--bucket", bucket, "--region", "us-east-1", "--prefix", "prod/", "--path-style", "--access-key-id", key, "--secret-access-key-stdin")
	}
	if code := add("s3", "berth-backups", s3AccessKey); code != 0 || dest["has_credentials"] != true {
		t.Fatalf("s3 destination add: %d %v", code, dest)
	}
	if code := e.backupJSON(t, "", &dest, "backup", "destination", "test", "s3"); code != 0 || dest["last_check"] != "ok" {
		t.Fatalf("s3 test: %d %v", code, dest)
	}
	var b backupRow
	if code := e.backupJSON(t, "", &b, "backup", "run", "shop", "--destination", "s3", "--kind", "postgres", "--source", "shopdata",
		"--connection-env", "DATABASE_URL", "--follow"); code != 0 || b.Status != "succeeded" {
		t.Fatalf("s3 backup: %d %+v", code, b)
	}
	obj, err := be.HeadObject("berth-backups", "prod/"+b.ObjectKey)
	if err != nil || obj.Size != b.SizeBytes {
		t.Fatalf("s3 object prod/%s: %+v %v (want %d bytes)", b.ObjectKey, obj, err, b.SizeBytes)
	}
	var task backupTask
	if code := e.backupJSON(t, "", &task, "backup", "verify", b.ID, "--follow"); code != 0 || task.Status != "succeeded" {
		t.Fatalf("s3 verify: %d %+v", code, task)
	}
	if code := e.backupJSON(t, "", &task, "backup", "restore", b.ID, "--to", "s3restore", "--connection-env", "DATABASE_URL", "--follow"); code != 0 || task.Status != "succeeded" {
		t.Fatalf("s3 restore: %d %+v", code, task)
	}
	if got := e.tableDigest(t, "s3restore"); got != want {
		t.Fatalf("restored from s3 %s, want %s", got, want)
	}

	// Wrong credentials and a missing bucket: failed, with the reason.
	before := e.notifyKinds(t)["backup.failed"]
	if code := add("s3-wrongkey", "berth-backups", "AKIDWRONG"); code != 0 {
		t.Fatalf("add s3-wrongkey: %d", code)
	}
	if code := add("s3-nobucket", "no-such-bucket", s3AccessKey); code != 0 {
		t.Fatalf("add s3-nobucket: %d", code)
	}
	for dst, reason := range map[string]string{"s3-wrongkey": "access key", "s3-nobucket": "bucket"} {
		var f backupRow
		if code := e.backupJSON(t, "", &f, "backup", "run", "shop", "--destination", dst, "--kind", "postgres", "--source", "shopdata",
			"--connection-env", "DATABASE_URL", "--follow"); code != 1 || f.Status != "failed" || !strings.Contains(strings.ToLower(f.FailureReason), strings.ToLower(reason)) {
			t.Fatalf("backup to %s: %d %+v (want a reason with %q)", dst, code, f, reason)
		}
		if code := e.backupJSON(t, "", &dest, "backup", "destination", "test", dst); code != 1 || dest["last_check"] != "failed" {
			t.Fatalf("test of %s: %d %v", dst, code, dest)
		}
	}
	if after := e.notifyKinds(t)["backup.failed"]; after < before+2 {
		t.Fatalf("backup.failed notifications %d -> %d, want two more", before, after)
	}

	// SFTP with a pinned host key.
	keyDir := t.TempDir()
	keyFile := filepath.Join(keyDir, "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", keyFile).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(keyFile + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	addr, fp := startSSHD(t, "restrict "+strings.TrimSpace(string(pub))+"\n", "Subsystem sftp internal-sftp", "ForceCommand internal-sftp")
	host, port, _ := strings.Cut(addr, ":")
	remote := filepath.Join(e.base, "sftp-store")
	if err := os.MkdirAll(remote, 0o700); err != nil {
		t.Fatal(err)
	}
	addSFTP := func(name, fingerprint string) int {
		return e.backupJSON(t, "", &dest, "backup", "destination", "add", name, "--kind", "sftp", "--host", host, "--port", port,
			"--username", "root", "--private-key-file", keyFile, "--path", remote, "--host-key-fingerprint", fingerprint)
	}
	if code := addSFTP("sftp", fp); code != 0 {
		t.Fatalf("sftp destination add: %d %v", code, dest)
	}
	if code := e.backupJSON(t, "", &dest, "backup", "destination", "test", "sftp"); code != 0 || dest["last_check"] != "ok" {
		t.Fatalf("sftp test: %d %v", code, dest)
	}
	src := filepath.Join(e.base, "uploads")
	for name, data := range map[string]string{"x/1.txt": "one\n", "x/2.bin": "\xff\xfe\x00two", "top": strings.Repeat("t", 70000)} {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var d backupRow
	if code := e.backupJSON(t, "", &d, "backup", "run", "shop", "--destination", "sftp", "--kind", "directory", "--source", src, "--follow"); code != 0 || d.Status != "succeeded" {
		t.Fatalf("sftp backup: %d %+v", code, d)
	}
	if st, err := os.Stat(filepath.Join(remote, d.ObjectKey)); err != nil || st.Size() != d.SizeBytes {
		t.Fatalf("sftp object: %v %v", st, err)
	}
	if code := e.backupJSON(t, "", &task, "backup", "verify", d.ID, "--follow"); code != 0 || task.Status != "succeeded" {
		t.Fatalf("sftp verify: %d %+v", code, task)
	}
	dst := filepath.Join(e.base, "uploads-restored")
	if code := e.backupJSON(t, "", &task, "backup", "restore", d.ID, "--to", dst, "--follow"); code != 0 || task.Status != "succeeded" {
		t.Fatalf("sftp restore: %d %+v", code, task)
	}
	if a, c := treeDigest(t, src), treeDigest(t, dst); a != c {
		t.Fatalf("restored tree differs:\n%s\nwant\n%s", c, a)
	}
	// Another host key than the pinned one: refused, never trusted.
	if code := addSFTP("sftp-otherkey", "SHA256:"+strings.Repeat("A", 43)); code != 0 {
		t.Fatalf("add sftp-otherkey: %d", code)
	}
	if code := e.backupJSON(t, "", &dest, "backup", "destination", "test", "sftp-otherkey"); code != 1 || dest["last_check"] != "failed" ||
		!strings.Contains(fmt.Sprint(dest["last_check_error"]), "host key") {
		t.Fatalf("test with a wrong host key: %d %v", code, dest)
	}

	key, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	keyLines := strings.Split(strings.TrimSpace(string(key)), "\n")
	e.noBackupSecrets(t, backupDBPassword, backupDataMarker, s3Secret, keyLines[1])
}

// kill -9 of the agent in the middle of a backup's upload: after its
// restart the backup is failed with the reason and no object is at the
// destination. kill -9 of the controller in the middle of one: the backup
// goes on, and its end reaches the restarted controller once; the object
// verifies.
func TestBackupKilledAgentAndController(t *testing.T) {
	t.Parallel()
	e := setupDeploy(t)
	run := filepath.Join(e.dataDir, "postgres", "run")
	e.sqlExec(t, "berth", "CREATE DATABASE shopdata")
	e.sqlExec(t, "shopdata",
		"CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, payload bytea NOT NULL)",
		"INSERT INTO items (name, payload) SELECT 'n-' || g, sha256(g::text::bytea) FROM generate_series(1, 2000) g")
	e.createApp(t, "shop", "https://git.example.com/shop.git", "")
	url := fmt.Sprintf("postgres://berth:%s@/shopdata?host=%s", backupDBPassword, run)
	if r := e.cli(t, "", "app", "env", "set", "shop", "DATABASE_URL="+url); r.code != 0 {
		t.Fatalf("env set: %+v", r)
	}
	gate := newS3Gate()
	endpoint, be := fakeS3Gated(t, gate, "berth-backups")
	var dest map[string]any
	if code := e.backupJSON(t, s3Secret+"\n", &dest, "backup", "destination", "add", "s3", "--kind", "s3", "--endpoint", endpoint,
		"--bucket", "berth-backups", "--path-style", "--access-key-id", s3AccessKey, "--secret-access-key-stdin"); code != 0 {
		t.Fatalf("destination add: %d %v", code, dest)
	}
	start := func() backupRow {
		var b backupRow
		if code := e.backupJSON(t, "", &b, "backup", "run", "shop", "--destination", "s3", "--kind", "postgres", "--source", "shopdata",
			"--connection-env", "DATABASE_URL"); code != 0 {
			t.Fatalf("backup run: %d %+v", code, b)
		}
		select {
		case <-gate.entered:
		case <-time.After(2 * time.Minute):
			t.Fatal("the backup's upload never reached the S3 server")
		}
		return b
	}
	show := func(id string) backupRow {
		var b backupRow
		if code := e.backupJSON(t, "", &b, "backup", "show", id); code != 0 {
			t.Fatalf("show %s: %d", id, code)
		}
		return b
	}

	// The agent dies mid-upload.
	b := start()
	// Its start reaches the controller as an event of its own, which may
	// trail the upload's first request.
	waitFor(t, "the backup to be running", time.Minute, func() bool { return show(b.ID).Status == "running" })
	_ = e.agent.cmd.Process.Kill()
	<-e.agent.done
	gate.release() // nothing waits any more; the restarted agent must not upload
	e.agent = e.startAgent(t)
	var got backupRow
	waitFor(t, "the interrupted backup to end", 2*time.Minute, func() bool {
		got = show(b.ID)
		return got.Status != "running" && got.Status != "dispatched" && got.Status != "queued"
	})
	if got.Status != "failed" || !strings.Contains(got.FailureReason, "agent restarted") || got.ObjectKey != "" || got.SizeBytes != 0 {
		t.Fatalf("backup across an agent kill: %+v", got)
	}
	if list, err := be.ListBucket("berth-backups", nil, gofakes3.ListBucketPage{}); err != nil || len(list.Contents) != 0 {
		t.Fatalf("objects after an interrupted backup: %+v %v", list, err)
	}
	if strings.Contains(e.agent.logs.String(), `"job started","job":"`+b.ID+`"`) {
		t.Fatalf("the restarted agent ran the interrupted backup again")
	}
	// The killed agent never aborted its multipart upload; the backup's
	// cleanup task (followed to its end) does.
	var shown backupShow
	if code := e.backupJSON(t, "", &shown, "backup", "show", b.ID); code != 0 {
		t.Fatalf("show %s: %d", b.ID, code)
	}
	cleaned := false
	for _, tk := range shown.Tasks {
		if tk.Kind == "cleanup" {
			if r := e.cli(t, "", "backup", "logs", tk.ID, "--follow"); r.code != 0 {
				t.Fatalf("cleanup task: %+v", r)
			}
			cleaned = true
		}
	}
	if !cleaned {
		t.Fatalf("no cleanup task for the interrupted backup: %+v", shown)
	}
	if keys := incompleteUploads(t, be, "berth-backups"); len(keys) != 0 {
		t.Fatalf("unfinished multipart uploads after the cleanup: %v", keys)
	}

	// The controller dies mid-upload; the backup goes on without it.
	gate.hold()
	b2 := start()
	_ = e.c.stop(t, syscall.SIGKILL)
	e.c = startControllerAt(t, e.dataDir, e.c.httpAddr, e.c.grpcAddr, "--metrics-interval", "1s", "--heartbeat-interval", "1s")
	gate.release()
	waitFor(t, "the backup to end after the controller's restart", 2*time.Minute, func() bool {
		got = show(b2.ID)
		return got.Status == "succeeded" || got.Status == "failed" || got.Status == "timed_out" || got.Status == "canceled"
	})
	if got.Status != "succeeded" || got.SizeBytes <= 0 {
		t.Fatalf("backup across a controller kill: %+v", got)
	}
	var task backupTask
	if code := e.backupJSON(t, "", &task, "backup", "verify", b2.ID, "--follow"); code != 0 || task.Status != "succeeded" {
		t.Fatalf("verify after a controller kill: %d %+v", code, task)
	}
	// Its log was stored once per chunk.
	logs := e.cli(t, "", "backup", "logs", b2.ID).stdout
	if n := strings.Count(logs, "==> done"); n != 1 {
		t.Fatalf("the log's end appears %d times:\n%s", n, logs)
	}

	// Cancel mid-upload: canceled (a follower exits 3), no object.
	gate.hold()
	b3 := start()
	if r := e.cli(t, "", "backup", "cancel", b3.ID); r.code != 0 {
		t.Fatalf("cancel: %+v", r)
	}
	if r := e.cli(t, "", "backup", "logs", b3.ID, "--follow"); r.code != 3 {
		t.Fatalf("follow of a canceled backup: %+v", r)
	}
	if got = show(b3.ID); got.Status != "canceled" || got.ObjectKey != "" {
		t.Fatalf("canceled backup: %+v", got)
	}
	gate.release()
	if _, err := be.HeadObject("berth-backups", "shop/"+b3.ID+".pgdump.zst.age"); err == nil {
		t.Fatal("a canceled backup left its object")
	}
	e.noBackupSecrets(t, backupDBPassword, s3Secret)
}
