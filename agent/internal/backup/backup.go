package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"path"
	"regexp"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
)

// Destination is where backups are stored. Which fields apply depends on
// Kind; credentials are only ever held in memory.
type Destination struct {
	Kind string // "local" | "s3" | "sftp"
	Path string // local: directory on this server; sftp: remote directory

	// s3: Endpoint is a URL (http(s)://host:port).
	Endpoint, Bucket, Region, Prefix string
	PathStyle                        bool
	AccessKeyID, SecretAccessKey     string

	// sftp
	Host               string
	Port               int
	Username, Password string
	PrivateKey         []byte
	HostKeyFingerprint string // "SHA256:..." as ssh-keygen -l prints it; required, never trust-on-first-use
}

// Source is what a backup dumps, or what a restore writes into.
type Source struct {
	Kind string // "postgres" | "mysql" | "directory"
	Name string // database name, or the directory's path for "directory"
	// ConnectionURL (optional, e.g. an app's DATABASE_URL): postgres:// or
	// mysql:// with user and password. Empty: the local superuser over the
	// unix socket (postgres: pg_dump runs as the postgres system user;
	// MySQL/MariaDB: root through its socket). The socket's place is
	// libpq's or the MySQL client's default unless the agent's environment
	// names another (PGHOST/PGPORT, MYSQL_UNIX_PORT).
	ConnectionURL string
	// Within (directories only, optional): a directory Name lies in (the
	// app's deploy path). Name is then opened through it, so that no
	// symlink on the way, such as one a deployed release put there, leads
	// outside: the archive holds only what is under Within. A directory
	// restore with Within writes through it the same way.
	Within string
}

// Spec is one backup to make.
type Spec struct {
	Source Source
	Dest   Destination
	// Key is the object's key or path relative to the destination (and its
	// prefix), chosen by the controller.
	Key string
	// Recipient is an age X25519 recipient ("age1..."): the agent encrypts
	// to it and never sees the matching identity for a backup.
	Recipient string
	// Log gets human-readable progress lines (never a secret). May be nil.
	Log io.Writer
}

// Result is a stored backup.
type Result struct {
	Key    string
	Size   int64  // bytes stored (encrypted)
	SHA256 string // hex SHA-256 of the stored bytes
}

// Object is a stored backup to read back.
type Object struct {
	Dest   Destination
	Key    string
	Size   int64
	SHA256 string
	Kind   string // the source kind it was made from
}

// RestoreTarget is where a restore writes: the backup's own database or
// directory, or another one. A non-empty database or directory is only
// written into with Force (for postgres that means pg_restore --clean
// --if-exists; for mysql the dump's own DROP TABLE IF EXISTS; for a
// directory, files of the backup replace files of the same name).
type RestoreTarget struct {
	Source Source
	Force  bool
	// SpoolDir holds the checked copy of the stored object while it is
	// restored (an unlinked file, the object's size); "" is os.TempDir().
	SpoolDir string
}

// S3PartSize is the size of one multipart upload part, and so the S3
// uploader's whole buffer (one part in flight at a time).
const S3PartSize = 16 << 20

// zstd settings: the window bounds the encoder's memory (and the decoder
// refuses anything wider than maxDecodeWindow, so a hostile object cannot
// make the agent allocate much).
const (
	zstdWindow      = 2 << 20
	maxDecodeWindow = 64 << 20
)

var errUploadGone = errors.New("the upload stopped reading")

// Run makes one backup: it dumps s.Source and streams it, compressed and
// encrypted, to s.Dest under s.Key. It returns only once the destination
// holds the complete object, or an error saying why not; in the error case
// no object is left under the key.
func Run(ctx context.Context, s Spec) (Result, error) {
	lg := newLogger(s.Log)
	if err := checkKey(s.Key); err != nil {
		return Result{}, err
	}
	if err := checkSource(s.Source); err != nil {
		return Result{}, err
	}
	rcp, err := parseRecipient(s.Recipient)
	if err != nil {
		return Result{}, err
	}
	start := time.Now()
	st, err := openStore(ctx, s.Dest)
	if err != nil {
		return Result{}, err
	}
	defer st.close()
	lg.printf("destination %s is reachable", describeDest(s.Dest))
	if err := st.checkAbsent(ctx, s.Key); err != nil {
		return Result{}, err
	}
	src, err := prepareSource(ctx, s.Source, lg)
	if err != nil {
		return Result{}, err
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	pipe := newBufPipe()
	stored := &countHash{h: sha256.New()}
	var raw int64
	prodDone := make(chan error, 1)
	go func() {
		err := produce(ctx, src, rcp, io.MultiWriter(pipe, stored), &raw)
		// On an error the upload sees it instead of an end of file: it
		// must not complete the object.
		pipe.CloseWrite(err)
		prodDone <- err
	}()
	n, upErr := st.put(ctx, s.Key, pipe)
	if upErr != nil {
		pipe.CloseRead(errUploadGone)
		cancel(upErr)
	}
	prodErr := <-prodDone
	switch {
	case prodErr != nil && !errors.Is(prodErr, errUploadGone) && !errors.Is(prodErr, io.ErrClosedPipe):
		if upErr == nil {
			// Cannot happen with a well-behaved store (it saw the
			// error); make sure all the same.
			_ = st.remove(context.WithoutCancel(ctx), s.Key)
		}
		if ctxErr := context.Cause(ctx); ctxErr != nil && errors.Is(prodErr, context.Canceled) {
			return Result{}, fmt.Errorf("backup canceled: %w", ctxErr)
		}
		return Result{}, prodErr
	case upErr != nil:
		return Result{}, upErr
	case prodErr != nil:
		return Result{}, prodErr
	}
	if n != stored.n {
		_ = st.remove(context.WithoutCancel(ctx), s.Key)
		return Result{}, fmt.Errorf("the destination stored %d bytes of %d: removed the object", n, stored.n)
	}
	res := Result{Key: s.Key, Size: stored.n, SHA256: hex.EncodeToString(stored.h.Sum(nil))}
	elapsed := time.Since(start)
	lg.printf("stored %s: %s (dump %s), sha256 %s, in %s (%s/s of dump)", s.Key, humanBytes(res.Size), humanBytes(raw),
		res.SHA256, elapsed.Round(time.Millisecond), humanBytes(int64(float64(raw)/max(elapsed.Seconds(), 0.001))))
	return res, nil
}

// produce writes the dump through zstd and age into w.
func produce(ctx context.Context, src source, rcp age.Recipient, w io.Writer, raw *int64) error {
	// Encryption (and, through w, hashing and the upload's pipe) runs in a
	// goroutine of its own, as age runs in a process of its own in the
	// shell pipeline: compression and encryption overlap.
	pipe := newBufPipe()
	encDone := make(chan error, 1)
	go func() {
		aw, err := age.Encrypt(w, rcp)
		if err == nil {
			// Only a complete stream gets age's final chunk: after a
			// read error the ciphertext stays visibly cut.
			if _, err = io.CopyBuffer(aw, pipe, make([]byte, 64<<10)); err == nil {
				err = aw.Close()
			}
		}
		if err != nil {
			err = fmt.Errorf("encrypt: %w", err)
			pipe.CloseRead(err)
		}
		encDone <- err
	}()
	pw := pipe
	fail := func(err error) error {
		pw.CloseWrite(err)
		<-encDone
		return err
	}
	// SpeedFastest (zstd level 1 class) with a 2 MiB window: on pg_dump
	// output it used less CPU per byte than the zstd CLI's default level 3
	// and compressed as well (see BENCHMARKS.md); SpeedDefault took about
	// 40% more CPU for no gain. A backup shares the server with its app.
	// Two encoders let one block compress while the last one is written.
	zw, err := zstd.NewWriter(pw, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithWindowSize(zstdWindow),
		zstd.WithEncoderConcurrency(2), zstd.WithLowerEncoderMem(true))
	if err != nil {
		return fail(fmt.Errorf("start compression: %w", err))
	}
	cw := &countWriter{w: zw}
	if err := src.writeTo(ctx, cw); err != nil {
		zw.Close()
		return fail(err)
	}
	*raw = cw.n
	if cw.n == 0 {
		zw.Close()
		return fail(fmt.Errorf("%s produced no data: nothing to back up", src.describe()))
	}
	if err := zw.Close(); err != nil {
		return fail(fmt.Errorf("compress: %w", err))
	}
	pw.CloseWrite(nil)
	return <-encDone
}

// Open returns the stored (encrypted) bytes of o, for a download that the
// controller decrypts. The caller closes it.
func Open(ctx context.Context, o Object) (io.ReadCloser, error) {
	if err := checkKey(o.Key); err != nil {
		return nil, err
	}
	st, err := openStore(ctx, o.Dest)
	if err != nil {
		return nil, err
	}
	rc, err := st.get(ctx, o.Key)
	if err != nil {
		st.close()
		return nil, err
	}
	return &closeBoth{ReadCloser: rc, after: st.close}, nil
}

// ErrUploadsNotListed: Delete removed the object but could not list the
// unfinished multipart uploads of its key on S3 (the key lacks the
// s3:ListBucketMultipartUploads permission), so any an interrupted upload
// left stay until a lifecycle rule (AbortIncompleteMultipartUpload)
// removes them. The delete itself is done: callers report this as a
// warning, never as a failure that would be retried forever.
var ErrUploadsNotListed = errors.New("the destination's key may not list unfinished multipart uploads (s3:ListBucketMultipartUploads), so what an interrupted upload may have left there was not looked for; an S3 lifecycle rule AbortIncompleteMultipartUpload removes it")

// Delete removes key from d, and everything an interrupted upload of key
// left there (its temporary files on a local or SFTP destination, its
// unfinished multipart uploads on S3); it returns how many such leftovers
// it removed. Keys are unique per backup, so nothing of another backup is
// touched. A key that is already gone, or has no leftovers, is not an
// error, so that a retried delete succeeds.
func Delete(ctx context.Context, d Destination, key string) (leftovers int, err error) {
	if err := checkKey(key); err != nil {
		return 0, err
	}
	st, err := openStore(ctx, d)
	if err != nil {
		return 0, err
	}
	defer st.close()
	// Leftovers first: an upload still finishing elsewhere then fails at
	// its rename or completion instead of leaving an object behind the
	// remove below.
	leftovers, err = st.removeLeftovers(ctx, key)
	unlisted := errors.Is(err, ErrUploadsNotListed)
	if err != nil && !unlisted {
		return leftovers, err
	}
	if err := st.remove(ctx, key); err != nil {
		return leftovers, err
	}
	if unlisted {
		return leftovers, ErrUploadsNotListed
	}
	return leftovers, nil
}

type closeBoth struct {
	io.ReadCloser
	after func() error
}

func (c *closeBoth) Close() error {
	err := c.ReadCloser.Close()
	if err2 := c.after(); err == nil {
		err = err2
	}
	return err
}

// countHash counts and hashes what is written through it.
type countHash struct {
	h hash.Hash
	n int64
}

func (c *countHash) Write(p []byte) (int, error) {
	c.h.Write(p)
	c.n += int64(len(p))
	return len(p), nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

var keyRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._/+=-]*$`)

// checkKey refuses keys that could leave the destination's directory or
// prefix, or mean something else to one of the stores.
func checkKey(key string) error {
	switch {
	case key == "":
		return errors.New("backup key is empty")
	case len(key) > 512:
		return fmt.Errorf("backup key is %d bytes long, more than 512", len(key))
	case !keyRE.MatchString(key) || path.Clean(key) != key || strings.HasPrefix(key, "../") || key == ".." ||
		strings.Contains(key, "/../") || strings.HasSuffix(key, "/..") || strings.Contains(key, ".partial-"):
		return fmt.Errorf("backup key %q is not a clean relative path of letters, digits and ._/+=-", key)
	}
	return nil
}

func parseRecipient(s string) (age.Recipient, error) {
	if !strings.HasPrefix(s, "age1") {
		return nil, errors.New("the encryption recipient must be an age X25519 recipient (age1...)")
	}
	r, err := age.ParseX25519Recipient(s)
	if err != nil {
		return nil, fmt.Errorf("the encryption recipient is not a valid age X25519 recipient: %w", err)
	}
	return r, nil
}

// parseIdentity never puts the identity into its error.
func parseIdentity(s string) (age.Identity, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "AGE-SECRET-KEY-1") {
		return nil, errors.New("the decryption identity must be an age X25519 identity (AGE-SECRET-KEY-1...)")
	}
	id, err := age.ParseX25519Identity(s)
	if err != nil {
		return nil, errors.New("the decryption identity is not a valid age X25519 identity")
	}
	return id, nil
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
