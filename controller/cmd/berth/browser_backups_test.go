package main_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"

	"github.com/berthhq/berth/controller/internal/store"
)

// The S3 secret the browser test types; it must never come back.
const browserS3Secret = "web-s3-secret-5e4d3c2b1a-never-shown"

// download posts the download form's request from the page (the
// browser's own cookies and same-origin headers) and returns what came
// back, or "error: ..." when the response broke off.
type downloadResult struct {
	Status      int    `json:"status"`
	Disposition string `json:"disposition"`
	Size        int    `json:"size"`
	Head        string `json:"head"`
	HasMarker   bool   `json:"hasMarker"`
	Error       string `json:"error"`
}

func (tb *tab) download(path, marker string) downloadResult {
	tb.t.Helper()
	js := fmt.Sprintf(`fetch(%q, {method: "POST"}).then(function (r) {
		return r.arrayBuffer().then(function (b) {
			var bytes = new Uint8Array(b), head = "", text = "";
			for (var i = 0; i < Math.min(5, bytes.length); i++) head += String.fromCharCode(bytes[i]);
			text = new TextDecoder("latin1").decode(bytes);
			return {status: r.status, disposition: r.headers.get("Content-Disposition") || "", size: bytes.length, head: head, hasMarker: text.indexOf(%q) >= 0};
		});
	}).catch(function (e) { return {error: String(e)}; })`, path, marker)
	return tabRun(tb, "download "+path, chromedp.Evaluate[downloadResult](js, chromedp.EvalAwaitPromise))
}

// TestBrowserBackups: a real controller, agent and PostgreSQL database, in
// headless Chromium. An admin adds destinations with the forms (bad input
// refused with a clear error that keeps what was typed, never a secret),
// tests the local one from the server, runs a backup of the app's database
// and watches it run and succeed live (the dump is held on a table lock the
// test releases), verifies it, is refused a restore with a wrong typed
// confirmation, restores into a fresh database with the right one (same
// rows), downloads the decrypted dump from the page, then sees a corrupted
// object fail verification live and its download refused. No page carries
// a secret.
func TestBrowserBackups(t *testing.T) {
	t.Parallel()
	e := setupDeploy(t)
	run := filepath.Join(e.dataDir, "postgres", "run")
	e.sqlExec(t, "berth", "CREATE DATABASE webshop", "CREATE DATABASE webrestore")
	e.sqlExec(t, "webshop",
		"CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, payload bytea NOT NULL)",
		"INSERT INTO items (name, payload) SELECT '"+backupDataMarker+"-' || g, sha256(g::text::bytea) FROM generate_series(1, 20000) g")
	want := e.tableDigest(t, "webshop")
	e.createApp(t, "shop", "https://git.example.com/shop.git", "")
	dbURL := fmt.Sprintf("postgres://berth:%s@/webshop?host=%s", backupDBPassword, run)
	if r := e.cli(t, "", "app", "env", "set", "shop", "DATABASE_URL="+dbURL); r.code != 0 {
		t.Fatalf("env set: %+v", r)
	}
	vault := filepath.Join(e.base, "vault")
	if err := os.MkdirAll(vault, 0o700); err != nil {
		t.Fatal(err)
	}

	bctx := startBrowser(t)
	tb := newTab(t, bctx, e.c, "ops")
	tb.login("ops@example.com", "correct horse battery staple")
	if st := tb.open("/backups"); st != 200 {
		t.Fatalf("/backups: %d", st)
	}
	if body := tb.bodyText(); !strings.Contains(body, "No destinations yet.") || strings.Contains(body, "not available") {
		t.Fatalf("empty backups page:\n%s", body)
	}

	// Bad input: a relative path; the error names the field, the form
	// keeps what was typed.
	tb.fill("#local-name", "vault", "#local-path", "relative/vault")
	tb.submit("#dest-local-form button[type=submit]")
	if msg := tb.text("#form-error"); !strings.Contains(msg, "Path must be an absolute, clean path") {
		t.Fatalf("relative path error: %q", msg)
	}
	if got := tb.value("#local-name") + " " + tb.value("#local-path"); got != "vault relative/vault" {
		t.Fatalf("the refused form kept %q", got)
	}
	tb.fill("#local-path", vault)
	tb.submit("#dest-local-form button[type=submit]")
	if body := tb.bodyText(); !strings.Contains(body, "Destination vault added.") {
		t.Fatalf("after adding vault:\n%s", body)
	}

	// An S3 destination: a bad endpoint keeps every field but the secret.
	tb.fill("#s3-name", "offsite", "#s3-endpoint", "s3.example.com", "#s3-bucket", "shop-backups", "#s3-key-id", "AKIAWEBTEST", "#s3-secret", browserS3Secret)
	tb.submit("#dest-s3-form button[type=submit]")
	if msg := tb.text("#form-error"); !strings.Contains(msg, "Endpoint must be an http(s) URL") || !strings.Contains(msg, "enter it again") {
		t.Fatalf("bad endpoint error: %q", msg)
	}
	if tb.value("#s3-bucket") != "shop-backups" || tb.value("#s3-key-id") != "AKIAWEBTEST" || tb.value("#s3-endpoint") != "s3.example.com" || tb.value("#s3-secret") != "" {
		t.Fatalf("refused s3 form: bucket %q key id %q secret kept: %v", tb.value("#s3-bucket"), tb.value("#s3-key-id"), tb.value("#s3-secret") != "")
	}
	if strings.Contains(tb.html(), browserS3Secret) {
		t.Fatal("the refused S3 form carries the secret")
	}
	tb.fill("#s3-endpoint", "https://s3.example.com", "#s3-secret", browserS3Secret)
	tb.submit("#dest-s3-form button[type=submit]")
	if body := tb.bodyText(); !strings.Contains(body, "Destination offsite added.") || !strings.Contains(tb.text(`tr[data-destination="offsite"]`), "set (write-only)") {
		t.Fatalf("after adding offsite:\n%s", body)
	}

	// Test the local destination from web-1: the server writes, reads back
	// and deletes a probe object.
	tb.fill(`#test-server-vault`, "web-1")
	tb.submit(`tr[data-destination="vault"] .test-form button[type=submit]`)
	if body := tb.bodyText(); !strings.Contains(body, "Destination vault works") || !strings.Contains(tb.text(`tr[data-destination="vault"] [data-field=check]`), "ok") {
		t.Fatalf("after testing vault:\n%s", body)
	}

	// Hold the dump on a table lock so the page is seen mid-backup.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s user=berth dbname=webshop sslmode=disable", run))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	lock, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lock.Rollback(ctx) }() // released below; a no-op then
	if _, err := lock.Exec(ctx, "LOCK TABLE items IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}

	tb.open("/apps/shop")
	tb.submit("#app-backups")
	if p := tb.path(); p != "/apps/shop/backups" {
		t.Fatalf("the app's backups link goes to %s", p)
	}
	// Bad input on the run form first: kept, with the reason.
	tb.fill("#run-destination", "vault", "#run-kind", "postgres", "#run-source", "web shop", "#run-env", "DATABASE_URL")
	tb.submit("#run-form button[type=submit]")
	if msg := tb.text("#form-error"); !strings.Contains(msg, "Source must be a database name") || tb.value("#run-source") != "web shop" ||
		tb.value("#run-env") != "DATABASE_URL" || tb.value("#run-kind") != "postgres" {
		t.Fatalf("refused run form: %q source %q", msg, tb.value("#run-source"))
	}
	tb.fill("#run-source", "webshop")
	tb.submit("#run-form button[type=submit]")
	p := tb.path()
	if !strings.HasPrefix(p, "/backups/") {
		t.Fatalf("after run at %s", p)
	}
	id := strings.TrimPrefix(p, "/backups/")
	tb.waitJS("the backup running with its dump started", `document.getElementById("job-status").textContent === "running" &&
		document.getElementById("log").textContent.indexOf("dumping postgres database webshop") >= 0`, 90*time.Second)
	if !tabRun(tb, "stored actions hidden", chromedp.Evaluate[bool](`document.getElementById("stored-actions").hidden`)) {
		t.Fatal("the stored object's actions show before the backup succeeded")
	}
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	tb.waitJS("the backup succeeded, live", `document.getElementById("job-status").textContent === "succeeded" &&
		/^[0-9a-f]{64}$/.test(document.getElementById("job-checksum").textContent) &&
		!document.getElementById("stored-actions").hidden && !document.getElementById("cancel-form")`, 2*time.Minute)
	if log := tb.text("#log"); !strings.Contains(log, "stored ") || !strings.Contains(log, "sha256") {
		t.Fatalf("backup log:\n%s", log)
	}
	if size := tb.text("#job-size"); !strings.Contains(size, "bytes") {
		t.Fatalf("size after success: %q", size)
	}

	// Verify, from the buttons the live page revealed.
	tb.submit("#verify-form button[type=submit]")
	if !strings.Contains(tb.path(), "/tasks/") {
		t.Fatalf("verify went to %s", tb.path())
	}
	tb.waitJS("the verify succeeded", `document.getElementById("job-status").textContent === "succeeded"`, 2*time.Minute)
	// The task is found only under its own backup (asked from the page,
	// so the tab stays where it is).
	other := strings.Replace(tb.path(), id, store.NewID().String(), 1)
	if st := tabRun(tb, "fetch "+other, chromedp.Evaluate[int](fmt.Sprintf(`fetch(%q).then(function (r) { return r.status; })`, other), chromedp.EvalAwaitPromise)); st != 404 {
		t.Fatalf("the task under another backup's id: %d", st)
	}
	tb.submit("#backup-link")
	if v := tb.text("#backup-verified"); !strings.Contains(v, "verified") {
		t.Fatalf("verified: %q", v)
	}

	// Restore: a wrong typed confirmation is refused and starts nothing.
	tb.fill("#restore-to", "webrestore", "#restore-env", "DATABASE_URL", "#restore-confirm", "shopp")
	tb.submit("#restore-form button[type=submit]")
	if msg := tb.text("#form-error"); !strings.Contains(msg, "The restore was not started: type the app name shop or the backup id "+id) {
		t.Fatalf("wrong confirmation: %q", msg)
	}
	if tb.value("#restore-to") != "webrestore" || tb.value("#restore-env") != "DATABASE_URL" || tb.value("#restore-confirm") != "shopp" {
		t.Fatal("the refused restore form lost what was typed")
	}
	if n := tb.count(`#tasks tr[data-kind="restore"]`); n != 0 {
		t.Fatalf("a refused restore left %d restore task(s)", n)
	}
	tb.fill("#restore-confirm", "shop")
	tb.submit("#restore-form button[type=submit]")
	tb.waitJS("the restore succeeded", `document.getElementById("job-status").textContent === "succeeded"`, 2*time.Minute)
	if got := e.tableDigest(t, "webrestore"); got != want {
		t.Fatalf("restored %s, want %s", got, want)
	}

	// Download: the decrypted, decompressed pg_dump archive.
	tb.open("/backups/" + id)
	dl := tb.download("/backups/"+id+"/download", backupDataMarker)
	if dl.Error != "" || dl.Status != 200 || dl.Head != "PGDMP" || !dl.HasMarker || !strings.Contains(dl.Disposition, "shop-"+id+".pgdump") {
		t.Fatalf("download: %+v", dl)
	}

	// The pages fit a phone's width and a laptop's without scrolling
	// sideways (long paths, checksums and object keys wrap).
	for _, w := range []int64{420, 1366} {
		tb.viewport(w, 900)
		for _, page := range []string{"/backups", "/apps/shop/backups", "/backups/" + id} {
			tb.noSideScroll(page)
		}
	}
	tb.viewport(1280, 960)

	// No secret in any page the admin saw.
	for _, page := range []string{"/backups", "/backups/" + id, "/apps/shop/backups", "/activity"} {
		tb.open(page)
		if h := tb.html(); strings.Contains(h, browserS3Secret) || strings.Contains(h, backupDBPassword) {
			t.Fatalf("%s carries a secret", page)
		}
	}

	// A corrupted object: verify fails live with the reason, and the
	// download does not hand out a file that looks complete.
	var objectKey string
	tb.open("/backups/" + id)
	objectKey = tb.text("#job-object")
	obj, err := os.ReadFile(filepath.Join(vault, objectKey))
	if err != nil {
		t.Fatal(err)
	}
	obj[len(obj)/2] ^= 0xff
	if err := os.WriteFile(filepath.Join(vault, objectKey), obj, 0o600); err != nil {
		t.Fatal(err)
	}
	tb.submit("#verify-form button[type=submit]")
	tb.waitJS("the verify failed", `document.getElementById("job-status").textContent === "failed" &&
		document.getElementById("job-result").textContent.length > 0`, 2*time.Minute)
	tb.submit("#backup-link")
	if v := tb.text("#backup-verified"); !strings.Contains(v, "failed") {
		t.Fatalf("verification after corruption: %q", v)
	}
	// Refused before a byte (an error page), or cut off mid-stream (the
	// fetch fails): either way no whole-looking file.
	bad := tb.download("/backups/"+id+"/download", backupDataMarker)
	if bad.Error == "" && bad.Status == 200 {
		t.Fatalf("a corrupted object downloaded as if whole: %+v", bad)
	}
	t.Logf("download of the corrupted object: status %d, error %q, %d bytes", bad.Status, bad.Error, bad.Size)
	tb.assertCleanConsole()
}
