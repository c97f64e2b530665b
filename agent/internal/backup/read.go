package backup

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
)

// reading is one object being read back: stored bytes -> SHA-256 and size
// -> age -> zstd -> plain, the dump as it was made.
type reading struct {
	o      Object
	st     store
	raw    io.ReadCloser
	sum    *hashReader
	zr     *zstd.Decoder
	plain  io.Reader
	plainN *countReader
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func openReading(ctx context.Context, o Object, identity string) (*reading, error) {
	if err := checkKey(o.Key); err != nil {
		return nil, err
	}
	if len(o.SHA256) != 64 {
		return nil, errors.New("the backup's recorded SHA-256 is missing or malformed")
	}
	id, err := parseIdentity(identity)
	if err != nil {
		return nil, err
	}
	st, err := openStore(ctx, o.Dest)
	if err != nil {
		return nil, err
	}
	raw, err := st.get(ctx, o.Key)
	if err != nil {
		st.close()
		return nil, err
	}
	return newReading(o, id, st, raw)
}

// openChecked is openReading for a restore: the stored bytes are first
// copied into an unlinked file in dir (os.TempDir() when "") and checked
// against the recorded size and SHA-256, and only then decrypted from that
// copy. Whoever can write to the destination can replace an object with
// another encrypted to the same public recipient; a streamed restore would
// have written its files, or had pg_restore or the mysql client execute its
// statements (mysql's \! runs a shell), before the mismatch showed at the
// end. The copy needs the object's (compressed, encrypted) size on disk.
func openChecked(ctx context.Context, o Object, identity, dir string, lg *logger) (*reading, error) {
	if err := checkKey(o.Key); err != nil {
		return nil, err
	}
	if len(o.SHA256) != 64 {
		return nil, errors.New("the backup's recorded SHA-256 is missing or malformed")
	}
	id, err := parseIdentity(identity)
	if err != nil {
		return nil, err
	}
	f, err := spoolChecked(ctx, o, dir)
	if err != nil {
		return nil, err
	}
	lg.printf("read %s (%s) and checked its size and SHA-256 before restoring from it", o.Key, humanBytes(o.Size))
	return newReading(o, id, nil, f)
}

// spoolChecked copies o's stored bytes into a temporary file in dir that is
// unlinked at once (its space goes back when it is closed, or when the
// agent dies), checks size and SHA-256, and returns it rewound.
func spoolChecked(ctx context.Context, o Object, dir string) (_ *os.File, err error) {
	st, err := openStore(ctx, o.Dest)
	if err != nil {
		return nil, err
	}
	defer st.close()
	raw, err := st.get(ctx, o.Key)
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	if dir == "" {
		dir = os.TempDir()
	}
	f, err := os.CreateTemp(dir, "berth-restore-*")
	if err != nil {
		return nil, fmt.Errorf("create a file for the object's checked copy: %w", err)
	}
	_ = os.Remove(f.Name())
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(f, h), io.LimitReader(raw, o.Size+1), make([]byte, 64<<10))
	switch {
	case err != nil && isENOSPC(err):
		return nil, fmt.Errorf("the checked copy of the object (%s) does not fit in %s: %w", humanBytes(o.Size), dir, err)
	case err != nil:
		if cerr := context.Cause(ctx); cerr != nil {
			return nil, cerr
		}
		return nil, fmt.Errorf("read the stored object: %w", err)
	case n > o.Size:
		return nil, fmt.Errorf("the stored object is longer than the %d bytes the backup recorded: it is corrupted or replaced", o.Size)
	case n < o.Size:
		return nil, fmt.Errorf("the stored object has %d bytes, the backup recorded %d: it is truncated, corrupted or replaced", n, o.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(got, o.SHA256) {
		return nil, fmt.Errorf("the stored object's SHA-256 is %s, the backup recorded %s: it is corrupted or replaced", got, o.SHA256)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return f, nil
}

// newReading decrypts and decompresses raw (st, when not nil, is closed
// with it).
func newReading(o Object, id age.Identity, st store, raw io.ReadCloser) (*reading, error) {
	r := &reading{o: o, st: st, raw: raw, sum: &hashReader{r: raw, h: sha256.New()}}
	ar, err := age.Decrypt(r.sum, id)
	if err != nil {
		err = r.explain(fmt.Errorf("decrypt: %w", err))
		r.close()
		return nil, err
	}
	r.zr, err = zstd.NewReader(ar, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxDecodeWindow),
		zstd.WithDecoderLowmem(true))
	if err != nil {
		r.close()
		return nil, fmt.Errorf("decompress: %w", err)
	}
	r.plainN = &countReader{r: r.zr}
	r.plain = &checkedReader{r: r.plainN, end: r.checkSum}
	return r, nil
}

func (r *reading) close() {
	if r.zr != nil {
		r.zr.Close()
	}
	r.raw.Close()
	if r.st != nil {
		r.st.close()
	}
}

// checkSum reads what is left of the stored bytes and compares size and
// SHA-256 with the record.
func (r *reading) checkSum() error {
	if _, err := io.Copy(io.Discard, r.sum); err != nil {
		return fmt.Errorf("read the stored object: %w", err)
	}
	got := hex.EncodeToString(r.sum.h.Sum(nil))
	if r.sum.n != r.o.Size {
		return fmt.Errorf("the stored object has %d bytes, the backup recorded %d: it is truncated, corrupted or replaced", r.sum.n, r.o.Size)
	}
	if !strings.EqualFold(got, r.o.SHA256) {
		return fmt.Errorf("the stored object's SHA-256 is %s, the backup recorded %s: it is corrupted or replaced", got, r.o.SHA256)
	}
	return nil
}

// explain turns a decryption or decompression failure into the checksum
// mismatch it usually is, when it is one (reading the rest to find out).
func (r *reading) explain(err error) error {
	if sumErr := r.checkSum(); sumErr != nil {
		return sumErr
	}
	return fmt.Errorf("the object matches its checksum but cannot be read back: %w (was it encrypted to another key?)", err)
}

// drain reads the plain stream to its end (the age and zstd checks run on
// every byte) and checks size and checksum.
func (r *reading) drain() error {
	_, err := io.Copy(io.Discard, r.plain)
	return err
}

type hashReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (h *hashReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += int64(n)
	return n, err
}

// checkedReader gives io.EOF only after end() accepted the stream: a
// consumer (pg_restore, mariadb, tar) never sees a clean end of something
// that does not match its checksum.
type checkedReader struct {
	r    io.Reader
	end  func() error
	done bool
	err  error
}

func (c *checkedReader) Read(p []byte) (int, error) {
	if c.done {
		return 0, c.err
	}
	n, err := c.r.Read(p)
	if errors.Is(err, io.EOF) {
		c.done = true
		c.err = io.EOF
		if e := c.end(); e != nil {
			c.err = e
		}
		return n, c.err
	}
	if err != nil {
		c.done, c.err = true, err
	}
	return n, err
}

// Verify reads o back and checks it all the way: size and SHA-256 of the
// stored bytes, decryption with identity, decompression to the end, and the
// content: pg_restore --list for postgres, a full tar listing for a
// directory, the dump's header and trailer for mysql.
func Verify(ctx context.Context, o Object, identity string, log io.Writer) error {
	lg := newLogger(log)
	start := time.Now()
	r, err := openReading(ctx, o, identity)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	defer r.close()
	var what string
	switch o.Kind {
	case "postgres":
		what, err = verifyPostgres(ctx, r, lg)
	case "mysql":
		what, err = verifyMySQL(r)
	case "directory":
		var n int
		var size int64
		n, size, err = listTar(r.plain)
		if err == nil {
			err = r.drain()
		}
		what = fmt.Sprintf("tar listing: %d entries, %s of file data", n, humanBytes(size))
	default:
		return fmt.Errorf("verify: source kind %q is not one of postgres, mysql, directory", o.Kind)
	}
	if err != nil {
		// Tell a damaged object from a bad dump: a checksum mismatch
		// explains any content error.
		if sumErr := r.checkSum(); sumErr != nil {
			return fmt.Errorf("verify: %w", sumErr)
		}
		return fmt.Errorf("verify: %w", err)
	}
	lg.printf("verified %s: %s stored, sha256 matches, decrypted and decompressed to the end (%s), %s, in %s",
		o.Key, humanBytes(o.Size), humanBytes(r.plainN.n), what, time.Since(start).Round(time.Millisecond))
	return nil
}

// verifyPostgres feeds the dump to pg_restore --list (which reads the
// archive's table of contents) and reads the rest to the end.
func verifyPostgres(ctx context.Context, r *reading, lg *logger) (string, error) {
	var list bytes.Buffer
	cmd, err := localCommand("pg_restore", "--list")
	if err != nil {
		return "", err
	}
	cmd.stdout = &limitedBuffer{b: &list, max: 16 << 20}
	var copyErr error
	cmd.feed = func(w io.Writer) error {
		_, copyErr = io.Copy(w, r.plain)
		return copyErr
	}
	if err := cmd.run(ctx, lg); err != nil {
		return "", err
	}
	// pg_restore may stop reading once it has the table of contents; the
	// rest is read all the same.
	if err := r.drain(); err != nil {
		return "", err
	}
	entries, tables := 0, 0
	sc := bufio.NewScanner(&list)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, ";") {
			continue
		}
		entries++
		if strings.Contains(line, " TABLE DATA ") {
			tables++
		}
	}
	if entries == 0 {
		return "", errors.New("pg_restore --list found no entries in the dump")
	}
	return fmt.Sprintf("pg_restore --list: %d entries, %d tables with data", entries, tables), nil
}

// verifyMySQL checks the dump's first line (a mysqldump/mariadb-dump header)
// and its last (the "-- Dump completed" trailer, written only when the dump
// finished), reading every byte between. Lines are not kept whole (an
// extended INSERT can be megabytes): only the first bytes of each.
func verifyMySQL(r *reading) (string, error) {
	br := bufio.NewReaderSize(r.plain, 64<<10)
	var first, last []byte
	lines := 0
	atStart := true
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			if atStart {
				head := bytes.TrimSpace(chunk[:min(len(chunk), 80)])
				if lines == 0 {
					first = append([]byte(nil), head...)
				}
				if len(head) > 0 {
					last = append(last[:0], head...)
				}
				lines++
			}
			atStart = chunk[len(chunk)-1] == '\n'
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", err
		}
	}
	f := string(first)
	if !strings.HasPrefix(f, "-- MariaDB dump") && !strings.HasPrefix(f, "-- MySQL dump") && !strings.HasPrefix(f, "/*M!999999") {
		return "", fmt.Errorf("the content is not a MySQL/MariaDB dump (first line %q)", truncate(f, 60))
	}
	if !bytes.HasPrefix(last, []byte("-- Dump completed")) {
		return "", fmt.Errorf("the dump has no \"-- Dump completed\" trailer (last line %q): it was cut short", truncate(string(last), 60))
	}
	return fmt.Sprintf("dump of %d lines with its completion trailer", lines), nil
}

func truncate(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
