package backup

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// checkNoSecrets fails when any of secrets shows in any of texts.
func checkNoSecrets(t *testing.T, secrets []string, texts ...string) {
	t.Helper()
	for _, s := range secrets {
		for _, txt := range texts {
			if s != "" && strings.Contains(txt, s) {
				t.Errorf("a secret (%.4s...) shows in: %s", s, txt)
			}
		}
	}
}

// A PostgreSQL database dumped as the local superuser to a local directory,
// verified, and restored into a fresh database has the same rows; restoring
// over a non-empty database needs Force, which then replaces it.
func TestPostgresRoundTripLocal(t *testing.T) {
	ctx := ctxT(t)
	db := newPGDatabase(t, 2000)
	want := pgFingerprint(t, db)
	identity, recipient := ageKeys(t)
	dest := Destination{Kind: "local", Path: t.TempDir()}
	var log lockedLog
	res, err := Run(ctx, Spec{Source: Source{Kind: "postgres", Name: db}, Dest: dest, Key: "app/2026/01J.dump.zst.age", Recipient: recipient, Log: &log})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	fi, err := os.Stat(filepath.Join(dest.Path, "app/2026/01J.dump.zst.age"))
	if err != nil || fi.Size() != res.Size || res.Size == 0 || len(res.SHA256) != 64 {
		t.Fatalf("stored object %v %v, result %+v", fi, err, res)
	}
	ents, _ := os.ReadDir(filepath.Join(dest.Path, "app/2026"))
	if len(ents) != 1 {
		t.Errorf("the destination holds %d entries, want the object alone: %v", len(ents), ents)
	}
	t.Logf("backup log:\n%s", log.String())
	obj := Object{Dest: dest, Key: res.Key, Size: res.Size, SHA256: res.SHA256, Kind: "postgres"}
	var vlog lockedLog
	if err := Verify(ctx, obj, identity, &vlog); err != nil {
		t.Fatalf("Verify: %v\n%s", err, vlog.String())
	}
	if !strings.Contains(vlog.String(), "pg_restore --list: ") || !strings.Contains(vlog.String(), "2 tables with data") {
		t.Errorf("verify log: %s", vlog.String())
	}
	fresh := db + "_restored"
	t.Cleanup(func() { psql("postgres", "DROP DATABASE IF EXISTS "+fresh+" WITH (FORCE)") })
	var rlog lockedLog
	if err := Restore(ctx, obj, identity, RestoreTarget{Source: Source{Kind: "postgres", Name: fresh}}, &rlog); err != nil {
		t.Fatalf("Restore: %v\n%s", err, rlog.String())
	}
	if got := pgFingerprint(t, fresh); got != want {
		t.Fatalf("restored database differs:\n got %s\nwant %s", got, want)
	}
	// Over a non-empty database: refused without Force.
	mustPSQL(t, fresh, "DELETE FROM orders WHERE id % 2 = 0; INSERT INTO customers (name) VALUES ('added after')")
	err = Restore(ctx, obj, identity, RestoreTarget{Source: Source{Kind: "postgres", Name: fresh}}, nil)
	if err == nil || !strings.Contains(err.Error(), "not empty") || !strings.Contains(err.Error(), "force") {
		t.Fatalf("restore over a non-empty database without force: %v", err)
	}
	if err := Restore(ctx, obj, identity, RestoreTarget{Source: Source{Kind: "postgres", Name: fresh}, Force: true}, &rlog); err != nil {
		t.Fatalf("Restore with force: %v\n%s", err, rlog.String())
	}
	if got := pgFingerprint(t, fresh); got != want {
		t.Fatalf("database restored with force differs:\n got %s\nwant %s", got, want)
	}
	// The same key is never overwritten.
	_, err = Run(ctx, Spec{Source: Source{Kind: "postgres", Name: db}, Dest: dest, Key: res.Key, Recipient: recipient})
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second backup to the same key: %v", err)
	}
}

// A dump through an app's connection URL (password authentication) to S3,
// restored through the URL into a database it creates; the password shows
// nowhere, not even when authentication fails.
func TestPostgresConnectionURLToS3(t *testing.T) {
	ctx := ctxT(t)
	db := newPGDatabase(t, 500)
	want := pgFingerprint(t, db)
	identity, recipient := ageKeys(t)
	s3 := startS3(t, "backups")
	dest := s3.dest("backups")
	const pw = "app-secret-pw-7731"
	url := "postgres://app:" + pw + "@/" + db + "?host=" + pgDir + "&port=5432"
	var log lockedLog
	res, err := Run(ctx, Spec{Source: Source{Kind: "postgres", ConnectionURL: url}, Dest: dest, Key: "shop/01K.dump.zst.age", Recipient: recipient, Log: &log})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	if keys := s3.keys(t, "backups"); len(keys) != 1 || keys[0] != "berth/backups/shop/01K.dump.zst.age" {
		t.Fatalf("bucket holds %v", keys)
	}
	obj := Object{Dest: dest, Key: res.Key, Size: res.Size, SHA256: res.SHA256, Kind: "postgres"}
	if err := Verify(ctx, obj, identity, &log); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	fresh := db + "_url"
	t.Cleanup(func() { psql("postgres", "DROP DATABASE IF EXISTS "+fresh+" WITH (FORCE)") })
	target := Source{Kind: "postgres", Name: fresh, ConnectionURL: url}
	if err := Restore(ctx, obj, identity, RestoreTarget{Source: target}, &log); err != nil {
		t.Fatalf("Restore: %v\n%s", err, log.String())
	}
	if got := pgFingerprint(t, fresh); got != want {
		t.Fatalf("restored database differs:\n got %s\nwant %s", got, want)
	}
	if owner := mustPSQL(t, fresh, "SELECT tableowner FROM pg_tables WHERE tablename = 'orders'"); owner != "app" {
		t.Errorf("restored through the URL, orders belongs to %q, want app", owner)
	}
	// Open hands out the stored bytes as they are.
	rc, err := Open(ctx, obj)
	if err != nil {
		t.Fatal(err)
	}
	n, sum := hashAll(t, rc)
	if n != res.Size || sum != res.SHA256 {
		t.Errorf("Open: %d bytes %s, want %d %s", n, sum, res.Size, res.SHA256)
	}
	// A wrong password fails with PostgreSQL's reason and without either password.
	bad := strings.Replace(url, pw, "wrong-pw-9090", 1)
	_, err = Run(ctx, Spec{Source: Source{Kind: "postgres", ConnectionURL: bad}, Dest: dest, Key: "shop/bad.age", Recipient: recipient, Log: &log})
	if err == nil || !strings.Contains(err.Error(), "password authentication failed") {
		t.Fatalf("wrong password: %v", err)
	}
	checkNoSecrets(t, []string{pw, "wrong-pw-9090", identity, testSecretKey}, log.String(), err.Error())
	if _, err := Delete(ctx, dest, res.Key); err != nil {
		t.Fatal(err)
	}
	if keys := s3.keys(t, "backups"); len(keys) != 0 {
		t.Fatalf("after delete the bucket holds %v", keys)
	}
	if _, err := Delete(ctx, dest, res.Key); err != nil {
		t.Fatalf("deleting a deleted key again: %v", err)
	}
}

// MariaDB as root over its socket, to SFTP with a key; restored into a new
// database; then through a connection URL (TCP, password) to SFTP with a
// password.
func TestMySQLRoundTripSFTP(t *testing.T) {
	ctx := ctxT(t)
	db := newMyDatabase(t, 1000)
	want := myFingerprint(t, db)
	identity, recipient := ageKeys(t)
	srv := startSFTP(t)
	var log lockedLog
	res, err := Run(ctx, Spec{Source: Source{Kind: "mysql", Name: db}, Dest: srv.keyDest(), Key: "m/01.sql.zst.age", Recipient: recipient, Log: &log})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	obj := Object{Dest: srv.keyDest(), Key: res.Key, Size: res.Size, SHA256: res.SHA256, Kind: "mysql"}
	if err := Verify(ctx, obj, identity, &log); err != nil {
		t.Fatalf("Verify: %v\n%s", err, log.String())
	}
	if !strings.Contains(log.String(), "completion trailer") {
		t.Errorf("verify log: %s", log.String())
	}
	fresh := db + "_r"
	t.Cleanup(func() { mysqlExec("", "DROP DATABASE IF EXISTS "+fresh) })
	if err := Restore(ctx, obj, identity, RestoreTarget{Source: Source{Kind: "mysql", Name: fresh}}, &log); err != nil {
		t.Fatalf("Restore: %v\n%s", err, log.String())
	}
	if got := myFingerprint(t, fresh); got != want {
		t.Fatalf("restored database differs:\n got %s\nwant %s", got, want)
	}
	err = Restore(ctx, obj, identity, RestoreTarget{Source: Source{Kind: "mysql", Name: fresh}}, &log)
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("restore over a non-empty database without force: %v", err)
	}
	mustMySQL(t, fresh, "DELETE FROM orders WHERE id < 100")
	if err := Restore(ctx, obj, identity, RestoreTarget{Source: Source{Kind: "mysql", Name: fresh}, Force: true}, &log); err != nil {
		t.Fatalf("Restore with force: %v\n%s", err, log.String())
	}
	if got := myFingerprint(t, fresh); got != want {
		t.Fatalf("restored (force) database differs:\n got %s\nwant %s", got, want)
	}

	// Through the connection URL, to the password user.
	const pw = "my-app-secret-5521"
	url := "mysql://app:" + pw + "@127.0.0.1:" + itoa(myPort) + "/" + db
	res2, err := Run(ctx, Spec{Source: Source{Kind: "mysql", ConnectionURL: url}, Dest: srv.passwordDest(), Key: "p/02.sql.zst.age", Recipient: recipient, Log: &log})
	if err != nil {
		t.Fatalf("Run (URL): %v\n%s", err, log.String())
	}
	obj2 := Object{Dest: srv.passwordDest(), Key: res2.Key, Size: res2.Size, SHA256: res2.SHA256, Kind: "mysql"}
	fresh2 := db + "_u"
	t.Cleanup(func() { mysqlExec("", "DROP DATABASE IF EXISTS "+fresh2) })
	if err := Restore(ctx, obj2, identity, RestoreTarget{Source: Source{Kind: "mysql", Name: fresh2, ConnectionURL: url}}, &log); err != nil {
		t.Fatalf("Restore (URL): %v\n%s", err, log.String())
	}
	if got := myFingerprint(t, fresh2); got != want {
		t.Fatalf("restored (URL) database differs:\n got %s\nwant %s", got, want)
	}
	checkNoSecrets(t, []string{pw, sftpPassword, identity}, log.String())
	// Open over sftp gives the stored bytes; Delete removes them.
	rc, err := Open(ctx, obj2)
	if err != nil {
		t.Fatal(err)
	}
	if n, sum := hashAll(t, rc); n != res2.Size || sum != res2.SHA256 {
		t.Errorf("Open: %d bytes %s, want %d %s", n, sum, res2.Size, res2.SHA256)
	}
	if _, err := Delete(ctx, srv.passwordDest(), res2.Key); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(srv.dir, res2.Key)); !os.IsNotExist(err) {
		t.Fatalf("after Delete over sftp: %v", err)
	}
	if err := Restore(ctx, obj2, identity, RestoreTarget{Source: Source{Kind: "mysql", Name: fresh2 + "x"}}, &log); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("restore of a deleted object: %v", err)
	}
	// Nothing but the object in the remote directory.
	if ents, _ := os.ReadDir(filepath.Join(srv.dir, "m")); len(ents) != 1 {
		t.Errorf("remote directory holds %v", ents)
	}
}

// A directory round trip restores every byte, mode, link and time.
func TestDirectoryRoundTrip(t *testing.T) {
	ctx := ctxT(t)
	src := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "uploads/2026/01"), 0o755))
	must(os.MkdirAll(filepath.Join(src, "empty-dir"), 0o700))
	must(os.WriteFile(filepath.Join(src, "uploads/2026/01/a.txt"), []byte("hello\n"), 0o640))
	must(os.WriteFile(filepath.Join(src, "empty"), nil, 0o600))
	big := make([]byte, 3<<20+17)
	rand.Read(big)
	must(os.WriteFile(filepath.Join(src, "uploads/big.bin"), big, 0o644))
	must(os.Symlink("uploads/2026/01/a.txt", filepath.Join(src, "latest")))
	must(os.Symlink("../a.txt", filepath.Join(src, "uploads/2026/01/rel-inside")))
	must(os.Chmod(filepath.Join(src, "uploads/2026"), 0o750))
	identity, recipient := ageKeys(t)
	dest := Destination{Kind: "local", Path: t.TempDir()}
	var log lockedLog
	res, err := Run(ctx, Spec{Source: Source{Kind: "directory", Name: src}, Dest: dest, Key: "files/01.tar.zst.age", Recipient: recipient, Log: &log})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	obj := Object{Dest: dest, Key: res.Key, Size: res.Size, SHA256: res.SHA256, Kind: "directory"}
	if err := Verify(ctx, obj, identity, &log); err != nil {
		t.Fatalf("Verify: %v\n%s", err, log.String())
	}
	if !strings.Contains(log.String(), "tar listing: 9 entries") {
		t.Errorf("verify log: %s", log.String())
	}
	target := filepath.Join(t.TempDir(), "restored")
	if err := Restore(ctx, obj, identity, RestoreTarget{Source: Source{Kind: "directory", Name: target}}, &log); err != nil {
		t.Fatalf("Restore: %v\n%s", err, log.String())
	}
	if got, want := treeDigest(t, target), treeDigest(t, src); got != want {
		t.Fatalf("restored tree differs:\n got:\n%s\nwant:\n%s", got, want)
	}
	err = Restore(ctx, obj, identity, RestoreTarget{Source: Source{Kind: "directory", Name: target}}, &log)
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("restore into a non-empty directory without force: %v", err)
	}
	must(os.WriteFile(filepath.Join(target, "uploads/2026/01/a.txt"), []byte("changed"), 0o600))
	must(os.Remove(filepath.Join(target, "latest")))
	must(os.Symlink("/etc/passwd", filepath.Join(target, "latest")))
	if err := Restore(ctx, obj, identity, RestoreTarget{Source: Source{Kind: "directory", Name: target}, Force: true}, &log); err != nil {
		t.Fatalf("Restore with force: %v\n%s", err, log.String())
	}
	if got, want := treeDigest(t, target), treeDigest(t, src); got != want {
		t.Fatalf("restored (force) tree differs:\n got:\n%s\nwant:\n%s", got, want)
	}
	if _, err := Delete(ctx, dest, res.Key); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dest.Path, res.Key)); !os.IsNotExist(err) {
		t.Fatalf("after Delete: %v", err)
	}
	if _, err := Delete(ctx, dest, res.Key); err != nil {
		t.Fatalf("deleting a deleted key again: %v", err)
	}
	if _, err := Delete(ctx, dest, "../outside"); err == nil {
		t.Fatal("Delete accepted a key leaving the destination")
	}
}
