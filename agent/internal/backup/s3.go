package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// s3Store is a bucket (and key prefix) of an S3-compatible service.
type s3Store struct {
	c      *minio.Client
	d      Destination
	prefix string
}

// s3PartSize is S3PartSize; tests lower it (S3's minimum is 5 MiB) to
// cross part boundaries with less data.
var s3PartSize uint64 = S3PartSize

func openS3(ctx context.Context, d Destination) (*s3Store, error) {
	u, err := url.Parse(d.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("s3 destination: endpoint %q is not an http(s)://host[:port] URL", d.Endpoint)
	}
	if d.Bucket == "" {
		return nil, errors.New("s3 destination: no bucket")
	}
	if d.AccessKeyID == "" || d.SecretAccessKey == "" {
		return nil, errors.New("s3 destination: access key id and secret are required")
	}
	prefix := strings.Trim(d.Prefix, "/")
	if prefix != "" {
		if err := checkKey(prefix); err != nil {
			return nil, fmt.Errorf("s3 destination: prefix: %w", err)
		}
		prefix += "/"
	}
	lookup := minio.BucketLookupAuto
	if d.PathStyle {
		lookup = minio.BucketLookupPath
	}
	tr, err := minio.DefaultTransport(u.Scheme == "https")
	if err != nil {
		return nil, fmt.Errorf("s3 destination: %w", err)
	}
	tr.ResponseHeaderTimeout = 2 * time.Minute
	c, err := minio.New(u.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(d.AccessKeyID, d.SecretAccessKey, ""),
		Secure:       u.Scheme == "https",
		Region:       d.Region,
		BucketLookup: lookup,
		Transport:    tr,
		// A destination that is down fails the backup in seconds, not
		// after minio-go's default ten attempts.
		MaxRetries: 3,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 destination: %w", err)
	}
	s := &s3Store{c: c, d: d, prefix: prefix}
	ok, err := c.BucketExists(ctx, d.Bucket)
	if err != nil {
		return nil, s.wrap("check bucket", err)
	}
	if !ok {
		return nil, fmt.Errorf("s3 destination: bucket %q does not exist at %s", d.Bucket, d.Endpoint)
	}
	return s, nil
}

func (s *s3Store) close() error { return nil }

// wrap says what failed in S3's own words (code and message carry no
// credentials), naming wrong credentials plainly.
func (s *s3Store) wrap(what string, err error) error {
	r := minio.ToErrorResponse(err)
	switch r.Code {
	case "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken":
		return fmt.Errorf("s3 destination %s: %s: access denied (%s: %s): check the access key id and secret", s.d.Endpoint, what, r.Code, r.Message)
	case "NoSuchBucket":
		return fmt.Errorf("s3 destination %s: %s: bucket %q does not exist", s.d.Endpoint, what, s.d.Bucket)
	case "":
		return fmt.Errorf("s3 destination %s: %s: %w", s.d.Endpoint, what, err)
	}
	return fmt.Errorf("s3 destination %s: %s: %s: %s", s.d.Endpoint, what, r.Code, r.Message)
}

func (s *s3Store) checkAbsent(ctx context.Context, key string) error {
	_, err := s.c.StatObject(ctx, s.d.Bucket, s.prefix+key, minio.StatObjectOptions{})
	if err == nil {
		return fmt.Errorf("s3 destination: %s already exists: a backup never replaces another", s.prefix+key)
	}
	if r := minio.ToErrorResponse(err); r.Code == "NoSuchKey" || r.StatusCode == http.StatusNotFound {
		return nil
	}
	return s.wrap("check "+key, err)
}

func (s *s3Store) put(ctx context.Context, key string, r io.Reader) (int64, error) {
	// Size -1: a multipart upload of fixed parts, one at a time; the
	// explicit part size is the whole buffer (minio-go would otherwise
	// size parts for a 5 TiB object). A read error or a canceled context
	// aborts the upload: no object appears.
	info, err := s.c.PutObject(ctx, s.d.Bucket, s.prefix+key, r, -1, minio.PutObjectOptions{
		PartSize:    s3PartSize,
		NumThreads:  1,
		ContentType: "application/octet-stream",
	})
	if err != nil {
		if cause := context.Cause(ctx); cause != nil {
			return 0, fmt.Errorf("upload to s3 stopped: %w", cause)
		}
		return 0, s.wrap("upload "+key, err)
	}
	return info.Size, nil
}

func (s *s3Store) get(ctx context.Context, key string) (io.ReadCloser, error) {
	o, err := s.c.GetObject(ctx, s.d.Bucket, s.prefix+key, minio.GetObjectOptions{})
	if err != nil {
		return nil, s.wrap("read "+key, err)
	}
	// GetObject is lazy: ask now so a missing key fails here.
	if _, err := o.Stat(); err != nil {
		o.Close()
		return nil, s.wrap("read "+key, err)
	}
	return o, nil
}

func (s *s3Store) remove(ctx context.Context, key string) error {
	if err := s.c.RemoveObject(ctx, s.d.Bucket, s.prefix+key, minio.RemoveObjectOptions{}); err != nil {
		if r := minio.ToErrorResponse(err); r.Code == "NoSuchKey" {
			return nil
		}
		return s.wrap("delete "+key, err)
	}
	return nil
}

// removeLeftovers aborts the unfinished multipart uploads of exactly
// prefix+key: a killed agent never aborted its upload, and the provider
// keeps (and bills) its parts until someone does. The listing is by
// prefix, so each upload's name is compared whole: another key that
// merely starts with this one is never touched.
func (s *s3Store) removeLeftovers(ctx context.Context, key string) (int, error) {
	name := s.prefix + key
	core := minio.Core{Client: s.c}
	n := 0
	for u := range s.c.ListIncompleteUploads(ctx, s.d.Bucket, name, true) {
		if u.Err != nil {
			if minio.ToErrorResponse(u.Err).Code == "AccessDenied" {
				// A permission of its own that a backup user's policy
				// often lacks: the delete goes on (see the error).
				return n, ErrUploadsNotListed
			}
			return n, s.wrap("list unfinished uploads of "+key, u.Err)
		}
		if u.Key != name || u.UploadID == "" {
			continue
		}
		if err := core.AbortMultipartUpload(ctx, s.d.Bucket, name, u.UploadID); err != nil {
			if minio.ToErrorResponse(err).Code == "NoSuchUpload" {
				continue // aborted or completed meanwhile
			}
			return n, s.wrap("abort unfinished upload of "+key, err)
		}
		n++
	}
	return n, nil
}
