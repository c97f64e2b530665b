package backup

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

func mustNoEntries(t *testing.T, dir string) {
	t.Helper()
	var found []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			found = append(found, p)
		}
		return nil
	})
	if len(found) > 0 {
		t.Fatalf("the destination holds %v", found)
	}
}

func randomDir(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	b := make([]byte, size)
	rand.Read(b)
	if err := os.WriteFile(filepath.Join(dir, "random.bin"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A dump that exits non-zero fails the backup with its reason and leaves
// nothing at the destination.
func TestDumpFails(t *testing.T) {
	ctx := ctxT(t)
	db := newPGDatabase(t, 10)
	// A table the app's user may not read: pg_dump through its URL fails.
	mustPSQL(t, db, "CREATE TABLE secrets (v text); INSERT INTO secrets VALUES ('x'); REVOKE ALL ON secrets FROM PUBLIC")
	_, recipient := ageKeys(t)
	dest := Destination{Kind: "local", Path: t.TempDir()}
	url := "postgresql://app:app-secret-pw-7731@/" + db + "?host=" + pgDir + "&port=5432"
	var log lockedLog
	_, err := Run(ctx, Spec{Source: Source{Kind: "postgres", ConnectionURL: url}, Dest: dest, Key: "a/b.age", Recipient: recipient, Log: &log})
	if err == nil || !strings.Contains(err.Error(), "pg_dump failed (exit status 1)") || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	checkNoSecrets(t, []string{"app-secret-pw-7731"}, err.Error(), log.String())
	mustNoEntries(t, dest.Path)
}

// A missing or empty source fails before anything is stored.
func TestEmptyOrMissingSource(t *testing.T) {
	ctx := ctxT(t)
	startPostgres(t)
	startMariaDB(t)
	mustPSQL(t, "postgres", "DROP DATABASE IF EXISTS bk_empty; CREATE DATABASE bk_empty")
	mustMySQL(t, "", "DROP DATABASE IF EXISTS bk_empty; CREATE DATABASE bk_empty")
	_, recipient := ageKeys(t)
	dest := Destination{Kind: "local", Path: t.TempDir()}
	for _, tc := range []struct {
		src  Source
		want string
	}{
		{Source{Kind: "postgres", Name: "bk_missing"}, "postgres database bk_missing (as the local superuser over the unix socket) does not exist"},
		{Source{Kind: "postgres", Name: "bk_empty"}, "has no tables: nothing to back up"},
		{Source{Kind: "mysql", Name: "bk_missing"}, "mysql database bk_missing (as the local superuser over the unix socket) does not exist"},
		{Source{Kind: "mysql", Name: "bk_empty"}, "has no tables: nothing to back up"},
		{Source{Kind: "directory", Name: "/nonexistent/berth"}, "directory /nonexistent/berth does not exist"},
		{Source{Kind: "directory", Name: t.TempDir()}, "is empty: nothing to back up"},
		{Source{Kind: "directory", Name: "relative/dir"}, "not a clean absolute path"},
		{Source{Kind: "postgres", Name: "x; DROP TABLE y"}, "use letters, digits"},
		{Source{Kind: "mysql", ConnectionURL: "mysql://u:p@h/db`x"}, "names no usable database"},
		{Source{Kind: "postgres", ConnectionURL: "mysql://u:p@h/db"}, "not postgres"},
		{Source{Kind: "mongodb", Name: "x"}, "not one of postgres, mysql, directory"},
	} {
		_, err := Run(ctx, Spec{Source: tc.src, Dest: dest, Key: "k.age", Recipient: recipient})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.src, err, tc.want)
		}
	}
	mustNoEntries(t, dest.Path)
}

// Each destination kind: the probe works when it should; a missing
// destination, wrong credentials, a missing bucket or a host key other than
// the pinned one each fail with a clear reason and no secret.
func TestDestinationChecks(t *testing.T) {
	ctx := ctxT(t)
	s3 := startS3(t, "backups")
	srv := startSFTP(t)
	dir := randomDir(t, 1000)
	_, recipient := ageKeys(t)
	good := map[string]Destination{
		"local":        {Kind: "local", Path: t.TempDir()},
		"s3":           s3.dest("backups"),
		"sftp key":     srv.keyDest(),
		"sftp passwod": srv.passwordDest(),
	}
	for name, d := range good {
		if err := Probe(ctx, d); err != nil {
			t.Errorf("%s: Probe: %v", name, err)
		}
	}
	if keys := s3.keys(t, "backups"); len(keys) != 0 {
		t.Errorf("the probe left %v in the bucket", keys)
	}
	mustNoEntries(t, srv.dir)

	with := func(d Destination, f func(*Destination)) Destination { f(&d); return d }
	otherKey, _ := keygen(t, filepath.Join(t.TempDir(), "other"))
	for _, tc := range []struct {
		name string
		d    Destination
		want string
	}{
		{"local missing", Destination{Kind: "local", Path: "/nonexistent/backups"}, "directory /nonexistent/backups does not exist"},
		{"local relative", Destination{Kind: "local", Path: "backups"}, "not an absolute path"},
		{"bucket missing", s3.dest("nobucket"), `bucket "nobucket" does not exist`},
		{"s3 wrong secret", with(s3.dest("backups"), func(d *Destination) { d.SecretAccessKey = "wrong-secret-3344" }), "access denied (AccessDenied"},
		{"s3 wrong key id", with(s3.dest("backups"), func(d *Destination) { d.AccessKeyID = "NOSUCHKEY" }), "check the access key id and secret"},
		{"s3 down", with(s3.dest("backups"), func(d *Destination) { d.Endpoint = "http://127.0.0.1:1" }), "connect"},
		{"s3 bad endpoint", with(s3.dest("backups"), func(d *Destination) { d.Endpoint = "ftp://x" }), "not an http(s)://host[:port] URL"},
		{"sftp wrong password", with(srv.passwordDest(), func(d *Destination) { d.Password = "wrong-pw-5566" }), "authentication failed for user " + sftpUser},
		{"sftp wrong key", with(srv.keyDest(), func(d *Destination) { d.PrivateKey = otherKey }), "authentication failed for user root"},
		{"sftp host key mismatch", with(srv.keyDest(), func(d *Destination) { d.HostKeyFingerprint = srv.otherFP }), "host key mismatch, connection refused: the server shows ssh-ed25519 " + srv.fingerprint},
		{"sftp no pin", with(srv.keyDest(), func(d *Destination) { d.HostKeyFingerprint = "" }), "never trusts a host key on first use"},
		{"sftp dir missing", with(srv.keyDest(), func(d *Destination) { d.Path = "/nonexistent/x" }), "remote directory /nonexistent/x does not exist"},
		{"sftp bad key", with(srv.keyDest(), func(d *Destination) {
			d.PrivateKey = []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n")
		}), "not a valid OpenSSH or PEM private key"},
		{"kind", Destination{Kind: "ftp"}, "not one of local, s3, sftp"},
	} {
		var log lockedLog
		_, err := Run(ctx, Spec{Source: Source{Kind: "directory", Name: dir}, Dest: tc.d, Key: "x/y.age", Recipient: recipient, Log: &log})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Run: %v, want %q", tc.name, err, tc.want)
			continue
		}
		perr := Probe(ctx, tc.d)
		if perr == nil || !strings.Contains(perr.Error(), tc.want) {
			t.Errorf("%s: Probe: %v, want %q", tc.name, perr, tc.want)
		}
		checkNoSecrets(t, []string{"wrong-secret-3344", testSecretKey, sftpPassword, "wrong-pw-5566", "AAAA"}, err.Error(), log.String())
		if strings.Contains(log.String(), "archiving") {
			t.Errorf("%s: the dump started before the destination was checked:\n%s", tc.name, log.String())
		}
	}
	if keys := s3.keys(t, "backups"); len(keys) != 0 {
		t.Errorf("failed backups left %v in the bucket", keys)
	}
	mustNoEntries(t, srv.dir)
}

// A full disk on a local destination fails the backup with that reason and
// leaves no file behind.
func TestLocalDiskFull(t *testing.T) {
	ctx := ctxT(t)
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount a 1 MiB tmpfs (the test needs root): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	_, recipient := ageKeys(t)
	src := randomDir(t, 3<<20)
	_, err := Run(ctx, Spec{Source: Source{Kind: "directory", Name: src}, Dest: Destination{Kind: "local", Path: mnt}, Key: "big/1.tar.zst.age", Recipient: recipient})
	if err == nil || !strings.Contains(err.Error(), "is full (no space left on device)") {
		t.Fatalf("Run: %v", err)
	}
	mustNoEntries(t, mnt)
}

// The destination goes down in the middle of the upload (the connection is
// cut): the backup fails and no object is left under the key.
func TestDestinationDownMidUpload(t *testing.T) {
	ctx := ctxT(t)
	_, recipient := ageKeys(t)
	src := randomDir(t, 12<<20)

	t.Run("s3", func(t *testing.T) {
		old := s3PartSize
		s3PartSize = 5 << 20 // S3's smallest part: the cut comes after the first part
		t.Cleanup(func() { s3PartSize = old })
		s3 := startS3(t, "backups")
		p := startCutProxy(t, strings.TrimPrefix(s3.url, "http://"), 7<<20)
		d := s3.dest("backups")
		d.Endpoint = "http://127.0.0.1:" + itoa(p.port())
		_, err := Run(ctx, Spec{Source: Source{Kind: "directory", Name: src}, Dest: d, Key: "cut/1.age", Recipient: recipient})
		if err == nil {
			t.Fatal("Run succeeded through a cut connection")
		}
		t.Logf("error: %v", err)
		if keys := s3.keys(t, "backups"); len(keys) != 0 {
			t.Fatalf("the bucket holds %v after a cut upload", keys)
		}
	})
	t.Run("sftp", func(t *testing.T) {
		srv := startSFTP(t)
		p := startCutProxy(t, "127.0.0.1:"+itoa(srv.port), 2<<20)
		d := srv.keyDest()
		d.Port = p.port()
		_, err := Run(ctx, Spec{Source: Source{Kind: "directory", Name: src}, Dest: d, Key: "cut/1.age", Recipient: recipient})
		if err == nil {
			t.Fatal("Run succeeded through a cut connection")
		}
		t.Logf("error: %v", err)
		if _, err := os.Stat(filepath.Join(srv.dir, "cut/1.age")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the key exists after a cut upload: %v", err)
		}
		// The server went away: only a temporary name may be left.
		ents, _ := os.ReadDir(filepath.Join(srv.dir, "cut"))
		for _, e := range ents {
			if !strings.Contains(e.Name(), ".partial-") {
				t.Errorf("left behind: %s", e.Name())
			}
		}
	})
}

// Canceling the context mid-backup stops the dump's process group and
// aborts the upload: no object, no multipart upload left, no pg_dump.
func TestCancelMidBackup(t *testing.T) {
	db := newPGDatabase(t, 10)
	_, recipient := ageKeys(t)
	s3 := startS3(t, "backups")
	// A session holds a lock pg_dump waits for: the dump is running and
	// stuck when the cancel comes.
	locker := exec.Command(pgBin("psql"), "-X", "-q", "-h", pgDir, "-p", "5432", "-U", "postgres", "-d", db)
	locker.SysProcAttr = nil
	stdin, _ := locker.StdinPipe()
	if err := locker.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); locker.Process.Kill(); locker.Wait() })
	io.WriteString(stdin, "BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600);\n")
	waitFor(t, "the lock", func() bool {
		return mustPSQL(t, "postgres", "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND relation IS NOT NULL AND granted") != "0"
	})
	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan error, 1)
	var log lockedLog
	go func() {
		_, err := Run(ctx, Spec{Source: Source{Kind: "postgres", Name: db}, Dest: s3.dest("backups"), Key: "c/1.age", Recipient: recipient, Log: &log})
		done <- err
	}()
	waitFor(t, "pg_dump waiting for the lock", func() bool {
		return mustPSQL(t, "postgres", "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump' AND wait_event_type = 'Lock'") == "1"
	})
	cancel()
	err := <-done
	if err == nil || !strings.Contains(err.Error(), "canceled") {
		t.Fatalf("Run after cancel: %v\n%s", err, log.String())
	}
	waitFor(t, "pg_dump's session to end", func() bool {
		return mustPSQL(t, "postgres", "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump'") == "0"
	})
	if keys := s3.keys(t, "backups"); len(keys) != 0 {
		t.Fatalf("bucket holds %v after cancel", keys)
	}
	mc, err := minio.New(strings.TrimPrefix(s3.url, "http://"), &minio.Options{Creds: credentials.NewStaticV4(testAccessKey, testSecretKey, ""), BucketLookup: minio.BucketLookupPath, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	for u := range mc.ListIncompleteUploads(context.Background(), "backups", "", true) {
		if u.Err != nil {
			t.Fatalf("list uploads: %v", u.Err)
		}
		t.Errorf("multipart upload left after cancel: %s %s", u.Key, u.UploadID)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A corrupted or truncated object fails verification (and restore) with a
// checksum error; the wrong identity is told apart from corruption.
func TestCorruptedObject(t *testing.T) {
	ctx := ctxT(t)
	identity, recipient := ageKeys(t)
	dest := Destination{Kind: "local", Path: t.TempDir()}
	src := randomDir(t, 200<<10)
	res, err := Run(ctx, Spec{Source: Source{Kind: "directory", Name: src}, Dest: dest, Key: "v/1.age", Recipient: recipient})
	if err != nil {
		t.Fatal(err)
	}
	obj := Object{Dest: dest, Key: res.Key, Size: res.Size, SHA256: res.SHA256, Kind: "directory"}
	if err := Verify(ctx, obj, identity, nil); err != nil {
		t.Fatalf("Verify before damage: %v", err)
	}
	other, _ := ageKeys(t)
	err = Verify(ctx, obj, other, nil)
	if err == nil || !strings.Contains(err.Error(), "another key") {
		t.Fatalf("Verify with another identity: %v", err)
	}
	checkNoSecrets(t, []string{identity, other}, err.Error())
	if err := Verify(ctx, obj, "AGE-SECRET-KEY-1NOTAKEY", nil); err == nil || strings.Contains(err.Error(), "NOTAKEY") {
		t.Fatalf("Verify with a malformed identity: %v", err)
	}
	p := filepath.Join(dest.Path, res.Key)
	b, _ := os.ReadFile(p)
	b[len(b)/2] ^= 0x40
	os.WriteFile(p, b, 0o600)
	err = Verify(ctx, obj, identity, nil)
	if err == nil || !strings.Contains(err.Error(), "SHA-256 is") {
		t.Fatalf("Verify of a flipped byte: %v", err)
	}
	target := filepath.Join(t.TempDir(), "r")
	if err := Restore(ctx, obj, identity, RestoreTarget{Source: Source{Kind: "directory", Name: target}}, nil); err == nil {
		t.Fatal("Restore of a corrupted object succeeded")
	}
	os.WriteFile(p, b[:len(b)-100], 0o600)
	err = Verify(ctx, obj, identity, nil)
	if err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("Verify of a truncated object: %v", err)
	}
	// The recorded checksum is what counts, even for an intact object.
	b[len(b)/2] ^= 0x40
	os.WriteFile(p, b, 0o600)
	bad := obj
	bad.SHA256 = strings.Repeat("0", 64)
	if err := Verify(ctx, bad, identity, nil); err == nil || !strings.Contains(err.Error(), "SHA-256 is") {
		t.Fatalf("Verify against another checksum: %v", err)
	}
}

// storePlain stores plain as a backup object (zstd, age) the way Run does,
// for archives Run would never make.
func storePlain(t *testing.T, dest Destination, key string, plain []byte, recipient string) Object {
	t.Helper()
	rcp, err := age.ParseX25519Recipient(recipient)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	aw, _ := age.Encrypt(&buf, rcp)
	zw, _ := zstd.NewWriter(aw)
	zw.Write(plain)
	zw.Close()
	aw.Close()
	os.MkdirAll(filepath.Dir(filepath.Join(dest.Path, key)), 0o700)
	if err := os.WriteFile(filepath.Join(dest.Path, key), buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	return Object{Dest: dest, Key: key, Size: int64(buf.Len()), SHA256: hex.EncodeToString(sum[:]), Kind: "directory"}
}

type tarEntry struct {
	name, link string
	typ        byte
	body       string
}

func makeTar(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body)), ModTime: time.Unix(1700000000, 0)}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, e.body)
	}
	tw.Close()
	return buf.Bytes()
}

// A directory restore never writes outside its target: entries with .. or
// an absolute name, symlinks pointing out, hard links, and writes through a
// symlink already in the target are all refused.
func TestRestoreRefusesEscapes(t *testing.T) {
	ctx := ctxT(t)
	identity, recipient := ageKeys(t)
	dest := Destination{Kind: "local", Path: t.TempDir()}
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	os.Mkdir(outside, 0o755)
	for i, tc := range []struct {
		name    string
		entries []tarEntry
		pre     func(target string)
		want    string
	}{
		{"dotdot", []tarEntry{{name: "ok.txt", typ: tar.TypeReg, body: "ok"}, {name: "../outside/evil", typ: tar.TypeReg, body: "x"}}, nil, "climbs out with .."},
		{"nested dotdot", []tarEntry{{name: "a/../../outside/evil", typ: tar.TypeReg, body: "x"}}, nil, "climbs out with .."},
		{"absolute", []tarEntry{{name: outside + "/evil", typ: tar.TypeReg, body: "x"}}, nil, "is an absolute path"},
		{"symlink absolute", []tarEntry{{name: "link", link: outside, typ: tar.TypeSymlink}, {name: "link/evil", typ: tar.TypeReg, body: "x"}}, nil, "points outside"},
		{"symlink relative", []tarEntry{{name: "d/link", link: "../../outside", typ: tar.TypeSymlink}}, nil, "points outside"},
		{"hard link", []tarEntry{{name: "h", link: "/etc/passwd", typ: tar.TypeLink}}, nil, "hard link"},
		{"through an existing symlink", []tarEntry{{name: "out/evil", typ: tar.TypeReg, body: "x"}},
			func(target string) { os.MkdirAll(target, 0o755); os.Symlink(outside, filepath.Join(target, "out")) }, "out"},
	} {
		obj := storePlain(t, dest, "esc/"+itoa(i), makeTar(t, tc.entries...), recipient)
		target := filepath.Join(base, "t"+itoa(i))
		force := false
		if tc.pre != nil {
			tc.pre(target)
			force = true
		}
		err := Restore(ctx, obj, identity, RestoreTarget{Source: Source{Kind: "directory", Name: target}, Force: force}, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Restore: %v, want %q", tc.name, err, tc.want)
		}
		if tc.pre == nil {
			if err := Verify(ctx, obj, identity, nil); err == nil {
				t.Errorf("%s: Verify accepted the archive", tc.name)
			}
		}
		if ents, _ := os.ReadDir(outside); len(ents) != 0 {
			t.Fatalf("%s: written outside the target: %v", tc.name, ents)
		}
		if _, err := os.Lstat(filepath.Join(base, "evil")); err == nil {
			t.Fatalf("%s: written next to the target", tc.name)
		}
	}
}
