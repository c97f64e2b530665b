package backup

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
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
