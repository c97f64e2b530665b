package backup

import (
	"archive/tar"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A PostgreSQL connection URL may carry its password as a query parameter
// (libpq reads ?password=): it must reach pg_dump through PGPASSWORD, never
// its argv, which every user of the server can read in /proc/PID/cmdline.
// A real backup through such a URL then works and logs no password.
func TestPostgresURLQueryPasswordNotInArgv(t *testing.T) {
	const pw = "app-secret-pw-7731"
	for _, url := range []string{
		"postgres://app@db.internal:5432/shop?password=" + pw + "&sslmode=disable",
		"postgresql://app:" + pw + "@db.internal/shop?sslmode=disable",
		"postgres://app@db.internal/shop?sslmode=disable&PASSWORD=" + pw,
	} {
		c, err := parseConn(Source{Kind: "postgres", ConnectionURL: url})
		if err != nil {
			t.Fatalf("parseConn: %v", err)
		}
		cmd, err := c.pgCommand("pg_dump", "--format=custom", "--dbname="+c.pgDBArg())
		if err != nil {
			t.Fatal(err)
		}
		if argv := strings.Join(cmd.argv, " "); strings.Contains(argv, pw) {
			t.Errorf("%s: the password is in pg_dump's argv: %s", url, argv)
		}
		if !strings.Contains(strings.Join(cmd.env, "\n"), "PGPASSWORD="+pw) {
			t.Errorf("%s: PGPASSWORD not set from the URL", url)
		}
		if len(cmd.secrets) == 0 || cmd.secrets[0] != pw {
			t.Errorf("%s: the password is not masked in the tool's output", url)
		}
	}
	// sslpassword has no environment variable in libpq: refused, not leaked.
	_, err := parseConn(Source{Kind: "postgres", ConnectionURL: "postgres://app@h/shop?sslpassword=" + pw})
	if err == nil || strings.Contains(err.Error(), pw) {
		t.Errorf("sslpassword in the URL: %v", err)
	}

	ctx := ctxT(t)
	db := newPGDatabase(t, 20)
	_, recipient := ageKeys(t)
	dest := Destination{Kind: "local", Path: t.TempDir()}
	var log lockedLog
	url := "postgres://app@/" + db + "?host=" + pgDir + "&port=5432&password=" + pw
	if _, err := Run(ctx, Spec{Source: Source{Kind: "postgres", ConnectionURL: url}, Dest: dest, Key: "q/pw.dump.zst.age", Recipient: recipient, Log: &log}); err != nil {
		t.Fatalf("Run with the password in the query: %v\n%s", err, log.String())
	}
	checkNoSecrets(t, []string{pw}, log.String())
}

// The destination is not trusted: whoever can write there can replace an
// object with another encrypted to the same (public) recipient. A restore
// must not act on a single byte before the object matched the size and
// SHA-256 the backup recorded: a directory restore writes no file, a
// database client never starts (mysql's \! would run a shell as root).
func TestRestoreActsOnlyOnCheckedBytes(t *testing.T) {
	ctx := ctxT(t)
	identity, recipient := ageKeys(t)
	dest := Destination{Kind: "local", Path: t.TempDir()}
	obj := storePlain(t, dest, "app/01K.tar.zst.age", makeTar(t, tarEntry{name: "good.txt", typ: tar.TypeReg, body: "the real backup"}), recipient)
	// The attacker's object, same key, encrypted to the same recipient,
	// padded to the recorded size so only the checksum tells them apart.
	evil := makeTar(t, tarEntry{name: ".ssh/authorized_keys", typ: tar.TypeReg, body: "ssh-ed25519 AAAA attacker"})
	forged := storePlain(t, dest, obj.Key, evil, recipient)
	if forged.SHA256 == obj.SHA256 {
		t.Fatal("the forged object is the original")
	}
	target := filepath.Join(t.TempDir(), "restore")
	err := Restore(ctx, obj, identity, RestoreTarget{Source: Source{Kind: "directory", Name: target}}, nil)
	if err == nil || !strings.Contains(err.Error(), "SHA-256") && !strings.Contains(err.Error(), "bytes") {
		t.Fatalf("restore of a replaced object: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(target, ".ssh")); err == nil {
		t.Fatal("the replaced object's files were written before its checksum was checked")
	}
	// The genuine object restores.
	storePlainAt(t, dest, obj.Key, makeTar(t, tarEntry{name: "good.txt", typ: tar.TypeReg, body: "the real backup"}), recipient, &obj)
	if err := Restore(ctx, obj, identity, RestoreTarget{Source: Source{Kind: "directory", Name: target}, Force: true}, nil); err != nil {
		t.Fatalf("restore of the genuine object: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(target, "good.txt")); err != nil || string(b) != "the real backup" {
		t.Fatalf("restored %q, %v", b, err)
	}
	// Nothing of the checked copy stays behind in the spool directory.
	if left, _ := filepath.Glob(filepath.Join(os.TempDir(), "berth-restore-*")); len(left) > 0 {
		t.Errorf("spool files left: %v", left)
	}
}

// storePlainAt stores plain under key again and points obj at it.
func storePlainAt(t *testing.T, dest Destination, key string, plain []byte, recipient string, obj *Object) {
	t.Helper()
	o := storePlain(t, dest, key, plain, recipient)
	obj.Size, obj.SHA256 = o.Size, o.SHA256
}

// Modes round-trip as far as they are safe: a sticky directory (a shared
// upload directory) stays sticky; setuid and setgid bits are never
// restored, so no archive can plant a setuid program.
func TestDirectoryRestoreModes(t *testing.T) {
	ctx := ctxT(t)
	src := t.TempDir()
	if err := os.Mkdir(filepath.Join(src, "shared"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(src, "shared"), 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "tool"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(src, "tool"), 0o755|os.ModeSetuid|os.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	identity, recipient := ageKeys(t)
	dest := Destination{Kind: "local", Path: t.TempDir()}
	res, err := Run(ctx, Spec{Source: Source{Kind: "directory", Name: src}, Dest: dest, Key: "m/01.tar.zst.age", Recipient: recipient})
	if err != nil {
		t.Fatal(err)
	}
	obj := Object{Dest: dest, Key: res.Key, Size: res.Size, SHA256: res.SHA256, Kind: "directory"}
	target := filepath.Join(t.TempDir(), "r")
	if err := Restore(ctx, obj, identity, RestoreTarget{Source: Source{Kind: "directory", Name: target}}, nil); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(target, "shared"))
	if err != nil || fi.Mode() != os.ModeDir|os.ModeSticky|0o777 {
		t.Errorf("shared restored as %v, %v; want sticky drwxrwxrwx", fi.Mode(), err)
	}
	fi, err = os.Stat(filepath.Join(target, "tool"))
	if err != nil || fi.Mode() != 0o755 {
		t.Errorf("tool restored as %v, %v; want -rwxr-xr-x without setuid/setgid", fi.Mode(), err)
	}
}

// A directory backup with Within (an app's deploy path) is opened through
// it: a symlink that a deployed release put on the way cannot lead the
// archive outside, while links that stay inside (current -> releases/N)
// work. Without Within the same path is followed: that is why the
// controller sets it for every directory inside an app's path.
func TestDirectoryWithinConfines(t *testing.T) {
	ctx := ctxT(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	app, outside := t.TempDir(), t.TempDir()
	must(os.MkdirAll(filepath.Join(app, "releases/1/storage"), 0o755))
	must(os.WriteFile(filepath.Join(app, "releases/1/storage/file.txt"), []byte("app data\n"), 0o644))
	must(os.Symlink("releases/1", filepath.Join(app, "current")))
	must(os.MkdirAll(filepath.Join(outside, "keys"), 0o700))
	must(os.WriteFile(filepath.Join(outside, "keys/secret.txt"), []byte("server secret\n"), 0o600))
	must(os.Symlink(outside, filepath.Join(app, "releases/1/evil")))
	identity, recipient := ageKeys(t)
	dest := Destination{Kind: "local", Path: t.TempDir()}
	var log lockedLog

	// Inside: through the current symlink, confined to the app.
	res, err := Run(ctx, Spec{Source: Source{Kind: "directory", Name: filepath.Join(app, "current/storage"), Within: app},
		Dest: dest, Key: "app/1.tar.zst.age", Recipient: recipient, Log: &log})
	if err != nil {
		t.Fatalf("backup inside the app: %v\n%s", err, log.String())
	}
	obj := Object{Dest: dest, Key: res.Key, Size: res.Size, SHA256: res.SHA256, Kind: "directory"}
	target := filepath.Join(t.TempDir(), "restored")
	if err := Restore(ctx, obj, identity, RestoreTarget{Source: Source{Kind: "directory", Name: target}}, &log); err != nil {
		t.Fatalf("restore: %v\n%s", err, log.String())
	}
	if got, want := treeDigest(t, target), treeDigest(t, filepath.Join(app, "releases/1/storage")); got != want {
		t.Fatalf("restored %s, want %s", got, want)
	}

	// Out through the release's symlink: refused, nothing stored.
	escape := filepath.Join(app, "current/evil/keys")
	_, err = Run(ctx, Spec{Source: Source{Kind: "directory", Name: escape, Within: app},
		Dest: dest, Key: "app/2.tar.zst.age", Recipient: recipient, Log: &log})
	if err == nil || !strings.Contains(err.Error(), escape) {
		t.Fatalf("backup through a symlink out of the app: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dest.Path, "app/2.tar.zst.age")); !os.IsNotExist(err) {
		t.Fatalf("an object was stored for the refused backup: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Join(dest.Path, "app"))
	if len(entries) != 1 {
		t.Fatalf("destination holds %d entries after the refused backup", len(entries))
	}
	// A name outside Within is refused before anything runs.
	if _, err := Run(ctx, Spec{Source: Source{Kind: "directory", Name: outside, Within: app},
		Dest: dest, Key: "app/3.tar.zst.age", Recipient: recipient}); err == nil || !strings.Contains(err.Error(), "not inside") {
		t.Fatalf("backup of a directory outside Within: %v", err)
	}

	// The same path without Within reaches the secret: the case Within is for.
	res, err = Run(ctx, Spec{Source: Source{Kind: "directory", Name: escape}, Dest: dest, Key: "admin/4.tar.zst.age", Recipient: recipient, Log: &log})
	if err != nil {
		t.Fatalf("unconfined backup: %v", err)
	}
	obj = Object{Dest: dest, Key: res.Key, Size: res.Size, SHA256: res.SHA256, Kind: "directory"}
	target = filepath.Join(t.TempDir(), "restored")
	if err := Restore(ctx, obj, identity, RestoreTarget{Source: Source{Kind: "directory", Name: target}}, &log); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(target, "secret.txt")); err != nil || string(b) != "server secret\n" {
		t.Fatalf("unconfined backup holds %q %v", b, err)
	}
}
