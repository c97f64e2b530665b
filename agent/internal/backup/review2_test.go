package backup

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
)

// An S3 key that may put, get and delete objects but not list unfinished
// multipart uploads (s3:ListBucketMultipartUploads is a permission of its
// own, often left out of a backup user's policy): a delete still removes
// the object, and says that the leftovers could not be looked for,
// instead of failing every delete (retention, berth backup delete, the
// cleanup a delete waits for) for good.
func TestDeleteWithoutListUploadsPermission(t *testing.T) {
	ctx := ctxT(t)
	s3 := startS3(t, "backups")
	up, err := url.Parse(s3.url)
	if err != nil {
		t.Fatal(err)
	}
	var listed atomic.Int32
	proxy := httputil.NewSingleHostReverseProxy(up)
	deny := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := r.URL.Query()["uploads"]; ok && r.Method == http.MethodGet {
			listed.Add(1)
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>`)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(deny.Close)
	d := s3.dest("backups")
	d.Endpoint = deny.URL
	_, recipient := ageKeys(t)
	res, err := Run(ctx, Spec{Source: Source{Kind: "directory", Name: randomDir(t, 64<<10)}, Dest: d, Key: "app/1.tar.zst.age", Recipient: recipient})
	if err != nil {
		t.Fatalf("backup through a key without the listing permission: %v", err)
	}
	n, err := Delete(ctx, d, res.Key)
	if listed.Load() == 0 {
		t.Fatal("the delete never asked for the unfinished uploads")
	}
	if n != 0 || !errors.Is(err, ErrUploadsNotListed) {
		t.Fatalf("Delete: %d, %v; want 0 and ErrUploadsNotListed", n, err)
	}
	if keys := s3.keys(t, "backups"); slices.Contains(keys, d.Prefix+"/"+res.Key) {
		t.Fatalf("the object is still there: %v", keys)
	}
}

// A directory restore with Within (the app's deploy path, as the
// controller sends it for a target inside the app) is written through
// it: when the app's user has swapped a component of the target for a
// symlink out of the app (current -> /etc) after the backup, the restore
// running as root refuses instead of writing the archive there. Inside,
// through links that stay in the app, it restores as before.
func TestDirectoryRestoreWithinConfines(t *testing.T) {
	ctx := ctxT(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	app, outside := t.TempDir(), t.TempDir()
	must(os.MkdirAll(filepath.Join(app, "releases/1/storage"), 0o755))
	must(os.WriteFile(filepath.Join(app, "releases/1/storage/evil.txt"), []byte("* * * * * root sh -c pwned\n"), 0o644))
	must(os.Symlink("releases/1", filepath.Join(app, "current")))
	identity, recipient := ageKeys(t)
	dest := Destination{Kind: "local", Path: t.TempDir()}
	src := filepath.Join(app, "current/storage")
	res, err := Run(ctx, Spec{Source: Source{Kind: "directory", Name: src, Within: app}, Dest: dest, Key: "app/1.tar.zst.age", Recipient: recipient})
	if err != nil {
		t.Fatal(err)
	}
	obj := Object{Dest: dest, Key: res.Key, Size: res.Size, SHA256: res.SHA256, Kind: "directory"}

	// Inside: into a fresh directory under the app, through current.
	must(os.MkdirAll(filepath.Join(app, "releases/2"), 0o755))
	must(os.Remove(filepath.Join(app, "current")))
	must(os.Symlink("releases/2", filepath.Join(app, "current")))
	if err := Restore(ctx, obj, identity, RestoreTarget{Source: Source{Kind: "directory", Name: src, Within: app}}, io.Discard); err != nil {
		t.Fatalf("restore inside the app: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(app, "releases/2/storage/evil.txt")); err != nil || !strings.Contains(string(b), "pwned") {
		t.Fatalf("restored inside: %q %v", b, err)
	}

	// current now leads out of the app: refused, nothing written outside,
	// with force too and whether the target exists there or not.
	must(os.Remove(filepath.Join(app, "current")))
	must(os.Symlink(outside, filepath.Join(app, "current")))
	for _, exists := range []bool{false, true} {
		if exists {
			must(os.Mkdir(filepath.Join(outside, "storage"), 0o755))
		}
		err := Restore(ctx, obj, identity, RestoreTarget{Source: Source{Kind: "directory", Name: src, Within: app}, Force: true}, io.Discard)
		if err == nil {
			t.Errorf("restore through a symlink out of the app (target exists: %v) succeeded", exists)
		}
		ents, _ := os.ReadDir(outside)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		if want := map[bool]int{false: 0, true: 1}[exists]; len(names) != want {
			t.Errorf("outside the app after the refused restore: %v", names)
		}
		if _, err := os.Lstat(filepath.Join(outside, "storage/evil.txt")); !os.IsNotExist(err) {
			t.Errorf("the archive was written outside the app: %v", err)
		}
	}
	// A target outside Within is refused before anything runs.
	if err := Restore(ctx, obj, identity, RestoreTarget{Source: Source{Kind: "directory", Name: outside, Within: app}}, io.Discard); err == nil || !strings.Contains(err.Error(), "not inside") {
		t.Errorf("restore to a target outside within: %v", err)
	}
}
