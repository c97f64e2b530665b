package deploy

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/berthhq/berth/agent/internal/backup"
)

// Backup job kinds: they run the backup package's pipeline under this
// executor, so they get its journal (numbered output and result delivered
// once, after a link loss or an agent restart), its deadlines and cancel.
// They run beside an app's deploys (see Spec.busyKey).
const (
	KindBackup         Kind = "backup"
	KindBackupVerify   Kind = "backup_verify"
	KindBackupRestore  Kind = "backup_restore"
	KindBackupDownload Kind = "backup_download"
	KindBackupProbe    Kind = "backup_probe"
	KindBackupDelete   Kind = "backup_delete"
)

// Steps of backup jobs.
const (
	StepBackup   = "backup"
	StepRestore  = "restore"
	StepDownload = "download"
	StepProbe    = "probe"
	StepDelete   = "delete"
)

// IsBackup reports whether k is a backup job kind.
func (k Kind) IsBackup() bool {
	switch k {
	case KindBackup, KindBackupVerify, KindBackupRestore, KindBackupDownload, KindBackupProbe, KindBackupDelete:
		return true
	}
	return false
}

// BackupJob is what a backup job kind needs. It is never journaled (Spec
// holds it as json:"-"): destination credentials, a connection URL and an
// age identity stay in memory for the job only, and an interrupted backup
// job is reported failed after a restart, never re-run from disk.
type BackupJob struct {
	Source backup.Source
	Dest   backup.Destination
	// Object: the stored object (verify, restore, download, delete); for a
	// new backup only Key (where to store it) is set.
	Object backup.Object
	// Recipient encrypts a new backup; Identity decrypts for a verify or
	// restore.
	Recipient string
	Identity  string
	Force     bool
}

// BackupObject is a backup job's stored object, in its result.
type BackupObject struct {
	Key    string `json:"key"`
	Size   int64  `json:"size"`
	SHA256 []byte `json:"sha256"`
}

func (s *Spec) normalizeBackup() error {
	if s.Backup == nil {
		return fmt.Errorf("deploy: %s job without its backup spec", s.Kind)
	}
	if s.Timeout <= 0 {
		s.Timeout = DefaultTimeout
	}
	return nil
}

// backupSecrets are what the redactor keeps out of a backup job's output,
// whatever a dump tool prints.
func backupSecrets(b *BackupJob) []string {
	if b == nil {
		return nil
	}
	out := []string{b.Dest.SecretAccessKey, b.Dest.Password, b.Identity, b.Source.ConnectionURL}
	for _, ln := range bytes.Split(b.Dest.PrivateKey, []byte("\n")) {
		if ln = bytes.TrimSpace(ln); len(ln) >= 16 && !bytes.HasPrefix(ln, []byte("-----")) {
			out = append(out, string(ln))
		}
	}
	return out
}

// logWriter hands a job's log whole lines from an io.Writer.
type logWriter struct {
	mu  sync.Mutex
	l   *logBuffer
	buf []byte
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.l.line(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > maxChunkBytes {
		w.l.line(w.buf)
		w.buf = nil
	}
	return len(p), nil
}

func (w *logWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.l.line(w.buf)
		w.buf = nil
	}
}

// backupJob runs a backup job kind.
func (j *job) backupJob(ctx context.Context, res *Result) error {
	b := j.spec.Backup
	lw := &logWriter{l: j.log}
	defer lw.flush()
	obj := b.Object
	obj.Dest = b.Dest
	switch j.spec.Kind {
	case KindBackup:
		return j.step(ctx, StepBackup, res, func() error {
			r, err := backup.Run(ctx, backup.Spec{Source: b.Source, Dest: b.Dest, Key: b.Object.Key, Recipient: b.Recipient, Log: lw})
			if err != nil {
				return err
			}
			sum, err := hex.DecodeString(r.SHA256)
			if err != nil || len(sum) != 32 {
				return errors.New("the pipeline returned no SHA-256")
			}
			res.BackupObject = &BackupObject{Key: r.Key, Size: r.Size, SHA256: sum}
			j.log.printf("stored %s: %d bytes, sha256 %s", r.Key, r.Size, r.SHA256)
			return nil
		})
	case KindBackupVerify:
		return j.step(ctx, StepVerify, res, func() error { return backup.Verify(ctx, obj, b.Identity, lw) })
	case KindBackupRestore:
		// The checked copy of the object goes to the agent's data
		// directory (on disk; /tmp may be a small tmpfs).
		return j.step(ctx, StepRestore, res, func() error {
			return backup.Restore(ctx, obj, b.Identity, backup.RestoreTarget{Source: b.Source, Force: b.Force, SpoolDir: j.e.cfg.DataDir}, lw)
		})
	case KindBackupProbe:
		return j.step(ctx, StepProbe, res, func() error {
			if err := backup.Probe(ctx, b.Dest); err != nil {
				return err
			}
			j.log.printf("wrote, read back and deleted a probe object")
			return nil
		})
	case KindBackupDelete:
		return j.step(ctx, StepDelete, res, func() error {
			n, err := backup.Delete(ctx, b.Dest, obj.Key)
			if n > 0 {
				j.log.printf("removed %d leftover(s) of an interrupted upload of %s", n, obj.Key)
			}
			if errors.Is(err, backup.ErrUploadsNotListed) {
				// The object is gone; failing would retry a delete
				// that can never do more, and keep its row for good.
				j.log.printf("warning: %v", err)
				err = nil
			}
			if err != nil {
				return err
			}
			j.log.printf("deleted %s", obj.Key)
			return nil
		})
	case KindBackupDownload:
		return j.step(ctx, StepDownload, res, func() error {
			if j.e.cfg.SendObject == nil {
				return errors.New("this agent cannot send objects")
			}
			rc, err := backup.Open(ctx, obj)
			if err != nil {
				return err
			}
			defer rc.Close()
			if err := j.e.cfg.SendObject(ctx, j.id, rc); err != nil {
				return err
			}
			j.log.printf("sent %s (%d bytes)", obj.Key, obj.Size)
			return nil
		})
	}
	return fmt.Errorf("deploy: unknown backup job kind %q", j.spec.Kind)
}

var _ io.Writer = (*logWriter)(nil)
