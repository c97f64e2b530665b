package backups

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
)

// A download is a task whose agent sends the stored (encrypted) bytes over
// a SendObject stream to the controller holding its Connect stream; this
// controller checks size and SHA-256 on the way, decrypts and decompresses,
// and writes the dump to the client. The bytes pass through a pipe, so
// memory stays bounded and a slow client slows the agent's upload (HTTP/2
// flow control), never the agent's other messages. Like app logs, a
// download is served only by the controller holding that agent's stream.
type download struct {
	serverID store.ID
	pw       *io.PipeWriter
	attached bool
}

func (s *Service) downloadWaiting(id store.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.downloads[id]
	return ok
}

func (s *Service) cancelDownload(job string) {
	id, err := store.ParseID(job)
	if err != nil {
		return
	}
	s.mu.Lock()
	d := s.downloads[id]
	s.mu.Unlock()
	if d != nil {
		d.pw.CloseWithError(errors.New("download canceled"))
	}
}

// Download writes a backup's decrypted, decompressed dump to w (admin: it
// is every row of the database in the clear). The stored bytes are checked
// against the recorded size and SHA-256 as they arrive; a mismatch is
// ErrChecksum after what was written, so a client keeps the file only when
// Download returns nil.
func (s *Service) Download(ctx context.Context, pr *auth.Principal, peer Peer, ref string, w io.Writer) error {
	if err := require(pr, store.ScopeAdmin); err != nil {
		return err
	}
	b, err := s.loadStored(ctx, ref)
	if err != nil {
		return err
	}
	if !slices.Contains(s.fleet.Hub().Connected(), *b.ServerID) {
		return fmt.Errorf("%w: the agent of the server holding backup %s is not connected to this controller", ErrUnavailable, b.ID)
	}
	identity, err := s.identityFor(ctx, b)
	if err != nil {
		return err
	}
	ids, err := age.ParseIdentities(bytes.NewReader([]byte(identity)))
	if err != nil {
		return fmt.Errorf("%w: the backup's key could not be read", ErrRefused)
	}
	rd, pw := io.Pipe()
	defer rd.Close()
	tid := store.NewID()
	s.mu.Lock()
	s.downloads[tid] = &download{serverID: *b.ServerID, pw: pw}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.downloads, tid)
		s.mu.Unlock()
	}()
	// The job can end without sending a byte (the object is gone, the
	// destination is down, the agent restarted): its end closes the pipe
	// with its reason, or the read below would wait for ever.
	changed, unsubscribe := s.subscribe(tid)
	defer unsubscribe()
	_, err = s.queueTask(ctx, pr, peer, b, store.CreateBackupTaskParams{ID: tid, Kind: store.TaskDownload}, kind.BackupDownloaded, nil)
	if err != nil {
		return err
	}
	watchDone := make(chan struct{})
	defer close(watchDone)
	go s.closeWhenEnded(ctx, tid, changed, watchDone, pw)
	// The client going away ends the pipe, which ends the agent's upload.
	stop := context.AfterFunc(ctx, func() { pw.CloseWithError(context.Cause(ctx)) })
	defer stop()

	want := *b.SizeBytes
	h := sha256.New()
	cr := &countReader{r: rd, max: want}
	tee := io.TeeReader(cr, h)
	dec, err := age.Decrypt(tee, ids...)
	if err == nil {
		var zr *zstd.Decoder
		if zr, err = zstd.NewReader(dec, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxDecodeWindow)); err == nil {
			_, err = io.Copy(w, zr)
			zr.Close()
		}
	}
	if err == nil || ctx.Err() == nil {
		// Whatever follows the age stream's end still counts; after a
		// decryption error the rest is read too, so a corrupted object is
		// told apart from a broken transfer by its checksum.
		if _, derr := io.Copy(io.Discard, tee); err == nil {
			err = derr
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, errTooLong) || cr.n != want || !bytes.Equal(h.Sum(nil), b.ChecksumSHA256) {
		if err == nil || errors.Is(err, errTooLong) || cr.n >= want {
			s.markCorrupt(ctx, b, fmt.Sprintf("download: the stored object (%d bytes read) does not match its recorded size %d and SHA-256", cr.n, want))
			return ErrChecksum
		}
	}
	if err != nil {
		return fmt.Errorf("%w: download of backup %s: %v", ErrRefused, b.ID, err)
	}
	return nil
}

// closeWhenEnded closes a download's pipe with the job's reason once the
// job has ended. After a successful job the agent's upload has already
// closed it, and CloseWithError keeps that first close.
func (s *Service) closeWhenEnded(ctx context.Context, id store.ID, changed <-chan struct{}, done <-chan struct{}, pw *io.PipeWriter) {
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-changed:
		}
		t, err := s.st.BackupTask(ctx, id)
		if err != nil || !t.Status.Finished() {
			continue
		}
		reason := string(t.Status)
		if t.FailureReason != nil {
			reason += ": " + *t.FailureReason
		}
		pw.CloseWithError(fmt.Errorf("the download job ended %s", reason))
		return
	}
}

// markCorrupt records a failed check as a verification error.
func (s *Service) markCorrupt(ctx context.Context, b store.Backup, msg string) {
	now := s.cfg.Now()
	_ = s.st.InTx(ctx, func(tx *store.Store) error {
		nb, err := tx.RecordBackupVerification(ctx, b.ID, &now, &msg)
		if err != nil {
			return err
		}
		return s.publish(ctx, tx, nb, notifyVerification(nb, msg))
	})
}

var errTooLong = errors.New("the object is longer than its recorded size")

// maxDecodeWindow bounds the zstd window a download may ask for, and with
// it the decoder's memory (the agent's pipeline writes 2 MiB windows; its
// decoder refuses more than 64 MiB too).
const maxDecodeWindow = 64 << 20

type countReader struct {
	r   io.Reader
	n   int64
	max int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.max {
		return n, errTooLong
	}
	return n, err
}

// ReceiveObject takes the stored bytes a download job's agent sends
// (grpcapi's SendObject): recv returns the next data, an error the agent
// reports, or io.EOF at the end. The job must be a download of serverID
// that a client on this controller waits for.
func (s *Service) ReceiveObject(ctx context.Context, serverID store.ID, jobID string, recv func() ([]byte, string, error)) error {
	id, err := store.ParseID(jobID)
	if err != nil {
		return fmt.Errorf("%w: job id", ErrInvalid)
	}
	s.mu.Lock()
	d := s.downloads[id]
	ok := d != nil && d.serverID == serverID && !d.attached
	if ok {
		d.attached = true
	}
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: no download %s waits for this server", ErrRefused, id)
	}
	for {
		data, agentErr, err := recv()
		switch {
		case errors.Is(err, io.EOF):
			return d.pw.Close()
		case err != nil:
			d.pw.CloseWithError(fmt.Errorf("the agent's upload broke off: %w", err))
			return err
		case agentErr != "":
			d.pw.CloseWithError(errors.New("the agent could not read the object: " + truncate(agentErr, 500)))
			return nil
		}
		if _, err := d.pw.Write(data); err != nil {
			return fmt.Errorf("%w: the download's client is gone", ErrRefused)
		}
	}
}
