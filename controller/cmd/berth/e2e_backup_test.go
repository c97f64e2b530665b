package main_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// Secrets the backup tests plant; none may show in a log line, a table's
// plain columns or an API answer.
const (
	backupDBPassword = "dbpw-7a6b5c4d3e2f-secret"
	backupDataMarker = "row-payload-marker"
)

type backupRow struct {
	ID                string `json:"id"`
	Status            string `json:"status"`
	FailureReason     string `json:"failure_reason"`
	ObjectKey         string `json:"object_key"`
	SizeBytes         int64  `json:"size_bytes"`
	ChecksumSHA256    string `json:"checksum_sha256"`
	EncryptionKeyID   string `json:"encryption_key_id"`
	VerifiedAt        any    `json:"verified_at"`
	VerificationError string `json:"verification_error"`
}

type backupTask struct {
	ID            string `json:"id"`
	Kind          string `json:"kind"`
	Status        string `json:"status"`
	FailureReason string `json:"failure_reason"`
}

// sqlExec runs statements on the controller's own PostgreSQL cluster (the
// test's database server).
func (e *deployEnv) sqlExec(t *testing.T, db string, stmts ...string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s user=berth dbname=%s sslmode=disable", filepath.Join(e.dataDir, "postgres", "run"), db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// tableDigest is the row count and a checksum of every row of items.
func (e *deployEnv) tableDigest(t *testing.T, db string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s user=berth dbname=%s sslmode=disable", filepath.Join(e.dataDir, "postgres", "run"), db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int64
	var sum string
	if err := conn.QueryRow(ctx, `SELECT count(*), coalesce(md5(string_agg(id::text || ':' || name || ':' || encode(payload, 'hex'), ',' ORDER BY id)), '')
		FROM items`).Scan(&n, &sum); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d rows, md5 %s", n, sum)
}

func (e *deployEnv) backupJSON(t *testing.T, stdin string, v any, args ...string) int {
	t.Helper()
	r := e.cli(t, stdin, append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		t.Fatalf("%v: %v: %+v", args, err, r)
	}
	return r.code
}

// treeDigest lists every file, directory and link under root with its
// mode and content, for a byte-for-byte comparison.
func treeDigest(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil // the target itself is made by the restore
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %v", rel, info.Mode())
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			fmt.Fprintf(&b, " -> %s", target)
		case info.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " %d bytes sha256 %x", len(data), sha256.Sum256(data))
		}
		b.WriteString("\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// A PostgreSQL database with data is backed up by a real agent to a local
// destination, verified, restored into a fresh database (row counts and
// checksums equal), downloaded in the clear; a directory makes the round
// trip byte for byte; a corrupted object fails verification; failures carry
// their reason and a notification; no secret shows anywhere.
func TestBackupLocalRoundTrips(t *testing.T) {
	t.Parallel()
	e := setupDeploy(t)
	run := filepath.Join(e.dataDir, "postgres", "run")
	e.sqlExec(t, "berth", "CREATE DATABASE shopdata", "CREATE DATABASE shoprestore")
	e.sqlExec(t, "shopdata",
		"CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, payload bytea NOT NULL)",
		"INSERT INTO items (name, payload) SELECT '"+backupDataMarker+"-' || g, sha256(g::text::bytea) FROM generate_series(1, 20000) g")
	want := e.tableDigest(t, "shopdata")

	e.createApp(t, "shop", "https://git.example.com/shop.git", "")
	url := fmt.Sprintf("postgres://berth:%s@/shopdata?host=%s", backupDBPassword, run)
	if r := e.cli(t, "", "app", "env", "set", "shop", "DATABASE_URL="+url); r.code != 0 {
		t.Fatalf("env set: %+v", r)
	}
	vault := filepath.Join(e.base, "vault")
	var dest map[string]any
	if code := e.backupJSON(t, "", &dest, "backup", "destination", "add", "vault", "--kind", "local", "--path", vault); code != 0 || dest["kind"] != "local" {
		t.Fatalf("destination add: %d %v", code, dest)
	}
	// The test writes, reads back and deletes a probe object from the
	// server: a missing directory fails it, with the reason recorded.
	if code := e.backupJSON(t, "", &dest, "backup", "destination", "test", "vault"); code != 1 || dest["last_check"] != "failed" ||
		!strings.Contains(fmt.Sprint(dest["last_check_error"]), "does not exist") {
		t.Fatalf("test of a missing directory: %d %v", code, dest)
	}
	if err := os.MkdirAll(vault, 0o700); err != nil {
		t.Fatal(err)
	}
	if code := e.backupJSON(t, "", &dest, "backup", "destination", "test", "vault"); code != 0 || dest["last_check"] != "ok" {
		t.Fatalf("destination test: %d %v", code, dest)
	}

	// Backup: succeeded only with the object's size and checksum.
	var b backupRow
	if code := e.backupJSON(t, "", &b, "backup", "run", "shop", "--destination", "vault", "--kind", "postgres", "--source", "shopdata",
		"--connection-env", "DATABASE_URL", "--follow"); code != 0 || b.Status != "succeeded" || b.SizeBytes <= 0 || len(b.ChecksumSHA256) != 64 || b.EncryptionKeyID == "" {
		t.Fatalf("backup run: %d %+v", code, b)
	}
	obj, err := os.ReadFile(filepath.Join(vault, b.ObjectKey))
	if err != nil || int64(len(obj)) != b.SizeBytes {
		t.Fatalf("object %s: %d bytes, %v (want %d)", b.ObjectKey, len(obj), err, b.SizeBytes)
	}
	if !bytes.HasPrefix(obj, []byte("age-encryption.org/v1")) || bytes.Contains(obj, []byte(backupDataMarker)) {
		t.Fatalf("the stored object is not age-encrypted")
	}

	// Verify, then restore into a fresh database: the same rows.
	var task backupTask
	if code := e.backupJSON(t, "", &task, "backup", "verify", b.ID, "--follow"); code != 0 || task.Status != "succeeded" {
		t.Fatalf("verify: %d %+v", code, task)
	}
	if code := e.backupJSON(t, "", &b, "backup", "show", b.ID); code != 0 || b.VerifiedAt == nil || b.VerificationError != "" {
		t.Fatalf("show after verify: %+v", b)
	}
	if code := e.backupJSON(t, "", &task, "backup", "restore", b.ID, "--to", "shoprestore", "--connection-env", "DATABASE_URL", "--follow"); code != 0 || task.Status != "succeeded" {
		t.Fatalf("restore: %d %+v", code, task)
	}
	if got := e.tableDigest(t, "shoprestore"); got != want {
		t.Fatalf("restored %s, want %s", got, want)
	}
	// A non-empty database needs --force.
	if code := e.backupJSON(t, "", &task, "backup", "restore", b.ID, "--to", "shoprestore", "--connection-env", "DATABASE_URL", "--follow"); code != 1 || task.Status != "failed" || task.FailureReason == "" {
		t.Fatalf("restore into a non-empty database without --force: %d %+v", code, task)
	}

	// Download: the decrypted, decompressed dump (pg_dump's custom format).
	out := filepath.Join(t.TempDir(), "shop.pgdump")
	if r := e.cli(t, "", "backup", "download", b.ID, "--output", out); r.code != 0 {
		t.Fatalf("download: %+v", r)
	}
	dump, err := os.ReadFile(out)
	if err != nil || !bytes.HasPrefix(dump, []byte("PGDMP")) {
		t.Fatalf("download is not a pg_dump archive: %v", err)
	}
	if lst, err := exec.Command("pg_restore", "--list", out).CombinedOutput(); err != nil || !strings.Contains(string(lst), "TABLE public items") {
		t.Fatalf("pg_restore --list: %v\n%s", err, lst)
	}

	// A directory, byte for byte, symlinks and modes included.
	src := filepath.Join(e.base, "files")
	for name, data := range map[string]string{"a.txt": "alpha\n", "sub/b.bin": "\x00\x01\x02binary", "sub/deeper/c": strings.Repeat("c", 100000)} {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("a.txt", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	var d backupRow
	if code := e.backupJSON(t, "", &d, "backup", "run", "shop", "--destination", "vault", "--kind", "directory", "--source", src, "--follow"); code != 0 || d.Status != "succeeded" {
		t.Fatalf("directory backup: %d %+v", code, d)
	}
	dst := filepath.Join(e.base, "files-restored")
	if code := e.backupJSON(t, "", &task, "backup", "restore", d.ID, "--to", dst, "--follow"); code != 0 || task.Status != "succeeded" {
		t.Fatalf("directory restore: %d %+v", code, task)
	}
	if a, c := treeDigest(t, src), treeDigest(t, dst); a != c {
		t.Fatalf("restored tree differs:\n%s\nwant\n%s", c, a)
	}

	// A corrupted object fails verification, visibly and with a notification.
	obj[len(obj)/2] ^= 0xff
	if err := os.WriteFile(filepath.Join(vault, b.ObjectKey), obj, 0o600); err != nil {
		t.Fatal(err)
	}
	if code := e.backupJSON(t, "", &task, "backup", "verify", b.ID, "--follow"); code != 1 || task.Status != "failed" {
		t.Fatalf("verify of a corrupted object: %d %+v", code, task)
	}
	if code := e.backupJSON(t, "", &b, "backup", "show", b.ID); code != 0 || b.VerificationError == "" {
		t.Fatalf("show after a failed verify: %+v", b)
	}
	// Its download fails on the checksum and leaves no file.
	bad := filepath.Join(t.TempDir(), "bad.pgdump")
	if r := e.cli(t, "", "backup", "download", b.ID, "--output", bad); r.code == 0 || !strings.Contains(r.stderr, "DataLoss") {
		t.Fatalf("download of a corrupted object: %+v", r)
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Fatalf("a failed download left %s: %v", bad, err)
	}
	if left, _ := filepath.Glob(bad + ".partial*"); len(left) > 0 {
		t.Fatalf("a failed download left its partial file: %v", left)
	}
	// An object gone from the destination: the agent's download job fails
	// before it sends a byte, and the download ends with its reason instead
	// of waiting for bytes that never come.
	if err := os.Remove(filepath.Join(vault, b.ObjectKey)); err != nil {
		t.Fatal(err)
	}
	if r := e.cli(t, "", "backup", "download", b.ID, "--output", bad); r.code == 0 || !strings.Contains(r.stderr, "does not exist") {
		t.Fatalf("download of a missing object: %+v", r)
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Fatalf("a failed download left %s: %v", bad, err)
	}

	// Failures say why and notify: a database that does not exist, and a
	// connection variable the app's environment lacks.
	var f backupRow
	if code := e.backupJSON(t, "", &f, "backup", "run", "shop", "--destination", "vault", "--kind", "postgres", "--source", "nosuchdb",
		"--connection-env", "DATABASE_URL", "--follow"); code != 1 || f.Status != "failed" || f.FailureReason == "" || f.ObjectKey != "" {
		t.Fatalf("backup of a missing database: %d %+v", code, f)
	}
	if code := e.backupJSON(t, "", &f, "backup", "run", "shop", "--destination", "vault", "--kind", "postgres", "--source", "shopdata",
		"--connection-env", "NO_SUCH_VAR", "--follow"); code != 1 || f.Status != "failed" || !strings.Contains(f.FailureReason, "NO_SUCH_VAR") {
		t.Fatalf("backup with a missing connection variable: %d %+v", code, f)
	}
	kinds := e.notifyKinds(t)
	for _, k := range []string{"backup.succeeded", "backup.failed", "backup.verification_failed"} {
		if kinds[k] == 0 {
			t.Fatalf("no %s notification: %v", k, kinds)
		}
	}

	// A used destination cannot be removed, and says why.
	if r := e.cli(t, "", "backup", "destination", "remove", "vault"); r.code == 0 || !strings.Contains(r.stderr, "backup(s)") {
		t.Fatalf("remove of a used destination: %+v", r)
	}
	// --forget is only for a backup whose delete failed: refused here,
	// and the backup and its object stay.
	if r := e.cli(t, "", "backup", "delete", d.ID, "--forget"); r.code == 0 || !strings.Contains(r.stderr, "delete it first") {
		t.Fatalf("delete --forget of a backup never deleted: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(vault, d.ObjectKey)); err != nil {
		t.Fatalf("object after a refused --forget: %v", err)
	}
	// Delete: the object first, then the row.
	if code := e.backupJSON(t, "", &task, "backup", "delete", d.ID); code != 0 || task.Status != "succeeded" {
		t.Fatalf("delete: %d %+v", code, task)
	}
	if _, err := os.Stat(filepath.Join(vault, d.ObjectKey)); !os.IsNotExist(err) {
		t.Fatalf("deleted backup's object still there: %v", err)
	}
	if r := e.cli(t, "", "backup", "show", d.ID); r.code == 0 || !strings.Contains(r.stderr, "NotFound") {
		t.Fatalf("deleted backup still shown: %+v", r)
	}

	e.noBackupSecrets(t, backupDBPassword, backupDataMarker)
}

func (e *deployEnv) notifyKinds(t *testing.T) map[string]int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.dsn())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT kind, count(*)::int FROM notify_events GROUP BY kind`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for rows.Next() {
		var k string
		var n int
		if err := rows.Scan(&k, &n); err != nil {
			t.Fatal(err)
		}
		out[k] = n
	}
	return out
}

// noBackupSecrets is noSecrets with the backup tables in the dump scan.
func (e *deployEnv) noBackupSecrets(t *testing.T, secrets ...string) {
	t.Helper()
	e.noSecrets(t, secrets...)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.dsn())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var dump strings.Builder
	for _, q := range []string{
		"SELECT row_to_json(b)::text FROM backups b",
		"SELECT row_to_json(t)::text FROM backup_tasks t",
		"SELECT convert_from(data, 'UTF8') FROM backup_logs",
		"SELECT row_to_json(d)::text FROM backup_destinations d",
		"SELECT row_to_json(k)::text FROM backup_encryption_keys k",
		"SELECT row_to_json(n)::text FROM notify_events n",
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
	for _, s := range append(secrets, "AGE-SECRET-KEY-") {
		if strings.Contains(dump.String(), s) {
			t.Fatalf("secret %.8q… appears in the backup tables", s)
		}
		if strings.Contains(e.c.logs.String()+e.agent.logs.String()+e.outputs.String(), s) {
			t.Fatalf("secret %.8q… appears in a log or CLI output", s)
		}
	}
}
