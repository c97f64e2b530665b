package backup

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// leftoverTree lays out, under dir, what interrupted uploads of two
// backups (app/1 and app/2) leave on a local or SFTP destination, and
// names that only look like leftovers of app/1. It returns the names that
// a delete of app/1 must remove and those it must keep.
func leftoverTree(t *testing.T, dir string) (gone, kept []string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "app"), 0o777); err != nil {
		t.Fatal(err)
	}
	write := func(name string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("partial bytes of "+name), 0o666); err != nil {
			t.Fatal(err)
		}
	}
	// Two temporary files of the key (an upload retried after a crash
	// leaves one per attempt) and the object itself.
	gone = []string{"app/1.tar.zst.age" + tempSuffix(), "app/1.tar.zst.age" + tempSuffix(), "app/1.tar.zst.age"}
	// The neighbour backup: its object and its own temporary file.
	kept = []string{"app/2.tar.zst.age", "app/2.tar.zst.age" + tempSuffix(),
		// Not exactly KEY.partial-<16 hex>.
		"app/1.tar.zst.age.partial-0123456789abcdeg", "app/1.tar.zst.age.partial-0123456789abcdef0",
		"app/1.tar.zst.age.partial-0123456789ABCDEF", "app/x1.tar.zst.age.partial-0123456789abcdef",
		"app/1.tar.zst.age.partial-",
	}
	for _, n := range append(slices.Clone(gone), kept...) {
		write(n)
	}
	// A symlink with a leftover's name, pointing outside: neither it nor
	// its target is touched. A directory with such a name stays too.
	outside := filepath.Join(t.TempDir(), "precious")
	if err := os.WriteFile(outside, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := "app/1.tar.zst.age.partial-00000000000000aa"
	if err := os.Symlink(outside, filepath.Join(dir, link)); err != nil {
		t.Fatal(err)
	}
	sub := "app/1.tar.zst.age.partial-00000000000000bb"
	if err := os.Mkdir(filepath.Join(dir, sub), 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if b, err := os.ReadFile(outside); err != nil || string(b) != "keep me" {
			t.Errorf("the symlink's target outside the destination changed: %q %v", b, err)
		}
	})
	return gone, append(kept, link, sub)
}

func checkLeftovers(t *testing.T, dir string, gone, kept []string) {
	t.Helper()
	for _, n := range gone {
		if _, err := os.Lstat(filepath.Join(dir, n)); !os.IsNotExist(err) {
			t.Errorf("%s is still there (%v)", n, err)
		}
	}
	for _, n := range kept {
		if _, err := os.Lstat(filepath.Join(dir, n)); err != nil {
			t.Errorf("%s was removed: %v", n, err)
		}
	}
}

// A delete removes the key's object and the temporary files interrupted
// uploads of that key left, on local and SFTP destinations, and nothing
// else: not the neighbour backup's files or temporary files, not names
// that merely look alike, never through a symlink. A second delete finds
// nothing and succeeds.
func TestDeleteRemovesLeftovers(t *testing.T) {
	ctx := ctxT(t)
	run := func(t *testing.T, d Destination, dir string) {
		gone, kept := leftoverTree(t, dir)
		n, err := Delete(ctx, d, "app/1.tar.zst.age")
		if err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if n != 2 {
			t.Errorf("Delete removed %d leftovers, want 2", n)
		}
		checkLeftovers(t, dir, gone, kept)
		if n, err := Delete(ctx, d, "app/1.tar.zst.age"); err != nil || n != 0 {
			t.Errorf("second Delete: %d, %v; want 0, nil", n, err)
		}
		// A key whose directory never existed: nothing to do.
		if n, err := Delete(ctx, d, "never/1.tar.zst.age"); err != nil || n != 0 {
			t.Errorf("Delete of a key in a missing directory: %d, %v; want 0, nil", n, err)
		}
	}
	t.Run("local", func(t *testing.T) {
		dir := t.TempDir()
		run(t, Destination{Kind: "local", Path: dir}, dir)
	})
	t.Run("sftp", func(t *testing.T) {
		srv := startSFTP(t)
		run(t, srv.keyDest(), srv.dir)
	})
}

// A real interrupted SFTP upload: the server goes away mid-upload, so
// the upload's own removal of its temporary file cannot reach it; the
// delete (the controller's cleanup), with the server reachable again,
// removes what is left.
func TestDeleteAfterCutSFTPUpload(t *testing.T) {
	ctx := ctxT(t)
	srv := startSFTP(t)
	_, recipient := ageKeys(t)
	src := randomDir(t, 6<<20)
	p := startCutProxy(t, "127.0.0.1:"+itoa(srv.port), 2<<20)
	d := srv.keyDest()
	d.Port = p.port()
	if _, err := Run(ctx, Spec{Source: Source{Kind: "directory", Name: src}, Dest: d, Key: "cut/1.tar.zst.age", Recipient: recipient}); err == nil {
		t.Fatal("Run succeeded through a cut connection")
	}
	if _, err := Delete(ctx, srv.keyDest(), "cut/1.tar.zst.age"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	ents, err := os.ReadDir(filepath.Join(srv.dir, "cut"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Fatalf("left after the cleanup: %v", ents)
	}
}

// On S3 a killed agent leaves an unfinished multipart upload whose parts
// the provider keeps. A delete aborts the uploads of exactly its key
// (under the destination's prefix): another key's upload, and one whose
// name only starts with this key, stay.
func TestDeleteAbortsIncompleteUploads(t *testing.T) {
	ctx := ctxT(t)
	s3 := startS3(t, "backups")
	d := s3.dest("backups")
	mc, err := minio.New(strings.TrimPrefix(s3.url, "http://"), &minio.Options{Creds: credentials.NewStaticV4(testAccessKey, testSecretKey, ""), BucketLookup: minio.BucketLookupPath, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	core := minio.Core{Client: mc}
	prefix := d.Prefix + "/"
	start := func(name string) string {
		t.Helper()
		id, err := core.NewMultipartUpload(ctx, "backups", name, minio.PutObjectOptions{})
		if err != nil {
			t.Fatalf("new multipart upload %s: %v", name, err)
		}
		part := bytes.Repeat([]byte("x"), 1<<20)
		if _, err := core.PutObjectPart(ctx, "backups", name, id, 1, bytes.NewReader(part), int64(len(part)), minio.PutObjectPartOptions{}); err != nil {
			t.Fatalf("put part of %s: %v", name, err)
		}
		return id
	}
	start(prefix + "app/1.pgdump.zst.age")
	start(prefix + "app/1.pgdump.zst.age") // a second attempt's upload
	other := start(prefix + "app/2.pgdump.zst.age")
	longer := start(prefix + "app/1.pgdump.zst.age.other")
	noPrefix := start("app/1.pgdump.zst.age") // the same key outside the destination's prefix

	n, err := Delete(ctx, d, "app/1.pgdump.zst.age")
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if n != 2 {
		t.Errorf("Delete aborted %d uploads, want 2", n)
	}
	var left []string
	for u := range mc.ListIncompleteUploads(ctx, "backups", "", true) {
		if u.Err != nil {
			t.Fatalf("list uploads: %v", u.Err)
		}
		left = append(left, u.Key+" "+u.UploadID)
	}
	slices.Sort(left)
	want := []string{"app/1.pgdump.zst.age " + noPrefix, prefix + "app/1.pgdump.zst.age.other " + longer, prefix + "app/2.pgdump.zst.age " + other}
	slices.Sort(want)
	if !slices.Equal(left, want) {
		t.Errorf("uploads left:\n%v\nwant:\n%v", left, want)
	}
	if n, err := Delete(ctx, d, "app/1.pgdump.zst.age"); err != nil || n != 0 {
		t.Errorf("second Delete: %d, %v; want 0, nil", n, err)
	}
	// The other upload is still whole: it completes into its object.
	parts, err := core.ListObjectParts(ctx, "backups", prefix+"app/2.pgdump.zst.age", other, 0, 100)
	if err != nil || len(parts.ObjectParts) != 1 {
		t.Fatalf("the other key's upload lost its part: %v %v", parts.ObjectParts, err)
	}
	if _, err := core.CompleteMultipartUpload(ctx, "backups", prefix+"app/2.pgdump.zst.age", other,
		[]minio.CompletePart{{PartNumber: 1, ETag: parts.ObjectParts[0].ETag}}, minio.PutObjectOptions{}); err != nil {
		t.Fatalf("complete the other key's upload: %v", err)
	}
	if keys := s3.keys(t, "backups"); !slices.Equal(keys, []string{prefix + "app/2.pgdump.zst.age"}) {
		t.Errorf("bucket holds %v", keys)
	}
}
