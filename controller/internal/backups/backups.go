package backups

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// RunRequest asks for a backup of an app's database or directory.
type RunRequest struct {
	App         string
	Destination string
	Kind        string // postgres, mysql, directory
	// Source: the database name, or the directory's absolute path.
	Source string
	// ConnectionEnv: the app environment variable holding a connection URL
	// ("" connects as the local superuser over the unix socket).
	ConnectionEnv string
}

const maxDBName = 63

func checkSource(k store.BackupKind, src string) error {
	switch k {
	case store.BackupPostgres, store.BackupMySQL:
		if src == "" || len(src) > maxDBName || strings.ContainsAny(src, "\x00/\\'\"` \t\r\n") || strings.HasPrefix(src, "-") {
			return fmt.Errorf("%w: --source must be a database name (up to %d characters, no quotes, slashes, spaces, not starting with -)", ErrInvalid, maxDBName)
		}
		return nil
	case store.BackupDirectory:
		return checkAbsPath("--source", src)
	}
	return fmt.Errorf("%w: --kind must be postgres, mysql or directory", ErrInvalid)
}

// insideDir says whether p is dir or lies below it (both clean and
// absolute).
func insideDir(dir, p string) bool {
	return dir != "" && (p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/"))
}

// sourceOf is what the agent dumps or archives. A directory inside the
// app's deploy path is opened through it (Within): whoever may deploy
// the app may put symlinks there, and none of them may lead the archive
// out.
func sourceOf(a *store.App, kind store.BackupKind, name, url string) *agentv1.BackupSource {
	src := &agentv1.BackupSource{Kind: string(kind), Name: name, ConnectionUrl: url}
	if kind == store.BackupDirectory && a != nil && insideDir(a.DeployPath, name) {
		src.Within = a.DeployPath
	}
	return src
}

func checkConnectionEnv(k store.BackupKind, v string) error {
	if v == "" {
		return nil
	}
	if k == store.BackupDirectory {
		return fmt.Errorf("%w: --connection-env is for database backups", ErrInvalid)
	}
	if len(v) > 128 || !envVarRE.MatchString(v) {
		return fmt.Errorf("%w: --connection-env must be an environment variable name", ErrInvalid)
	}
	return nil
}

// RunBackup queues a backup on the app's server (write scope). The newest
// keyring key is chosen now and kept: a re-sent job encrypts to the same
// recipient.
func (s *Service) RunBackup(ctx context.Context, pr *auth.Principal, peer Peer, r RunRequest) (store.Backup, error) {
	if err := require(pr, store.ScopeWrite); err != nil {
		return store.Backup{}, err
	}
	k := store.BackupKind(r.Kind)
	if err := checkSource(k, r.Source); err != nil {
		return store.Backup{}, err
	}
	if err := checkConnectionEnv(k, r.ConnectionEnv); err != nil {
		return store.Backup{}, err
	}
	a, err := s.resolveApp(ctx, r.App)
	if err != nil {
		return store.Backup{}, err
	}
	// The agent runs as root: a directory outside the app's own is any
	// file of the server (keys, /etc/shadow). Encrypted and readable by
	// admins only, but the write scope is for an app, so it backs up the
	// app's directory only (sourceOf confines the agent to it).
	if k == store.BackupDirectory && !insideDir(a.DeployPath, r.Source) {
		if err := require(pr, store.ScopeAdmin); err != nil {
			return store.Backup{}, fmt.Errorf("%w: %s is outside the app's directory %s: backing it up needs the admin scope", auth.ErrForbidden, r.Source, a.DeployPath)
		}
	}
	d, err := s.resolveDestination(ctx, r.Destination)
	if err != nil {
		return store.Backup{}, err
	}
	key, err := s.currentKey(ctx)
	if err != nil {
		return store.Backup{}, err
	}
	var b store.Backup
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		var err error
		b, err = tx.CreateBackup(ctx, store.CreateBackupParams{
			AppID: &a.ID, DestinationID: d.ID, TriggeredBy: trigger(pr), Kind: k, Source: r.Source,
			TimeoutSeconds: int(s.cfg.Timeout / time.Second), ConnectionEnv: r.ConnectionEnv,
		})
		if err != nil {
			return err
		}
		if b, err = tx.SetBackupEncryptionKey(ctx, b.ID, key.ID.String()); err != nil {
			return err
		}
		s.activity(ctx, tx, pr, peer, kind.BackupQueued, "backup", b.ID, a.Name, map[string]any{
			"kind": r.Kind, "source": r.Source, "destination": d.Name, "connection_env": r.ConnectionEnv,
		})
		return nil
	})
	if err != nil {
		return store.Backup{}, err
	}
	s.notify(ctx, "dispatch")
	return b, nil
}

func (s *Service) resolveApp(ctx context.Context, ref string) (store.App, error) {
	if id, err := store.ParseID(ref); err == nil {
		a, err := s.st.App(ctx, id)
		if err == nil && a.DeletedAt != nil {
			return store.App{}, fmt.Errorf("%w: app %s was deleted", store.ErrNotFound, a.Name)
		}
		return a, err
	}
	name := strings.ToLower(strings.TrimSpace(ref))
	if !validName(name) {
		return store.App{}, fmt.Errorf("%w: app name %q", ErrInvalid, truncate(ref, 64))
	}
	a, err := s.st.AppByName(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return store.App{}, fmt.Errorf("%w: no app named %q", store.ErrNotFound, name)
	}
	return a, err
}

// ListRequest filters backups.
type ListRequest struct {
	App    string
	Status string
	Limit  int
}

// Backups lists backups, newest first (read).
func (s *Service) Backups(ctx context.Context, pr *auth.Principal, r ListRequest) ([]store.Backup, error) {
	if err := require(pr, store.ScopeRead); err != nil {
		return nil, err
	}
	f := store.BackupFilter{Limit: r.Limit}
	if r.Limit < 0 || r.Limit > 1000 {
		return nil, fmt.Errorf("%w: --limit is 1-1000", ErrInvalid)
	}
	if r.Status != "" {
		st := store.BackupStatus(r.Status)
		switch st {
		case store.BackupQueued, store.BackupDispatched, store.BackupRunning, store.BackupSucceeded, store.BackupFailed, store.BackupCanceled, store.BackupTimedOut:
		default:
			return nil, fmt.Errorf("%w: --status must be queued, dispatched, running, succeeded, failed, canceled or timed_out", ErrInvalid)
		}
		f.Status = st
	}
	if r.App != "" {
		a, err := s.resolveApp(ctx, r.App)
		if err != nil {
			return nil, err
		}
		f.AppID = &a.ID
	}
	return s.st.ListBackups(ctx, f)
}

func parseJobID(ref string) (store.ID, error) {
	id, err := store.ParseID(strings.TrimSpace(ref))
	if err != nil {
		return store.ID{}, fmt.Errorf("%w: %q is not a backup id (a 26-character ULID)", ErrInvalid, truncate(ref, 40))
	}
	return id, nil
}

// Backup returns a backup and its tasks (read).
func (s *Service) Backup(ctx context.Context, pr *auth.Principal, ref string) (store.Backup, []store.BackupTask, error) {
	if err := require(pr, store.ScopeRead); err != nil {
		return store.Backup{}, nil, err
	}
	id, err := parseJobID(ref)
	if err != nil {
		return store.Backup{}, nil, err
	}
	b, err := s.st.Backup(ctx, id)
	if err != nil {
		return store.Backup{}, nil, err
	}
	tasks, err := s.st.BackupTasks(ctx, id, 50)
	return b, tasks, err
}

// DestinationName names a backup's destination for display.
func (s *Service) DestinationName(ctx context.Context, id store.ID) string {
	d, err := s.st.BackupDestination(ctx, id)
	if err != nil {
		return id.String()
	}
	return d.Name
}

// Job is a backup or a task, as a follower or canceller sees it.
type Job = store.BackupJob

func (s *Service) job(ctx context.Context, id store.ID) (Job, error) {
	if b, err := s.st.Backup(ctx, id); err == nil {
		return Job{Backup: &b}, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return Job{}, err
	}
	t, err := s.st.BackupTask(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return Job{}, fmt.Errorf("%w: no backup or backup task %s", store.ErrNotFound, id)
	}
	if err != nil {
		return Job{}, err
	}
	return Job{Task: &t}, nil
}

func jobStatus(j Job) store.BackupStatus {
	if j.Backup != nil {
		return j.Backup.Status
	}
	return j.Task.Status
}

// Cancel asks an unfinished backup or task to stop (write; admin for a
// restore, which only an admin starts).
func (s *Service) Cancel(ctx context.Context, pr *auth.Principal, peer Peer, ref string) (Job, error) {
	if err := require(pr, store.ScopeWrite); err != nil {
		return Job{}, err
	}
	id, err := parseJobID(ref)
	if err != nil {
		return Job{}, err
	}
	j, err := s.job(ctx, id)
	if err != nil {
		return Job{}, err
	}
	var server *store.ID
	name := ""
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		if j.Backup != nil {
			b, err := tx.RequestBackupCancel(ctx, id)
			if err != nil {
				return err
			}
			j.Backup, server, name = &b, b.ServerID, b.AppName
			if b.Status == store.BackupQueued {
				done, err := tx.FinishBackup(ctx, id, store.BackupResult{Status: store.BackupCanceled, FailureReason: optText("canceled before it was dispatched")})
				if err != nil {
					return err
				}
				j.Backup = &done
				server = nil
			}
		} else {
			if j.Task.Kind == store.TaskRestore {
				if err := require(pr, store.ScopeAdmin); err != nil {
					return err
				}
			}
			t, err := tx.RequestBackupTaskCancel(ctx, id)
			if err != nil {
				return err
			}
			j.Task, server, name = &t, t.ServerID, string(t.Kind)
			if t.Status == store.BackupQueued {
				done, err := tx.FinishBackupTask(ctx, id, store.BackupResult{Status: store.BackupCanceled, FailureReason: optText("canceled before it was dispatched")})
				if err != nil {
					return err
				}
				j.Task = &done
				server = nil
				if t.Kind == store.TaskCleanup {
					// A cleanup that never ran failed: recorded on its
					// backup (retried, and a delete waiting for it says
					// why), never left pending with no task behind it.
					actorType, actor, _ := pr.Actor()
					if err := s.cleanupEnded(ctx, tx, t, done, actorType, actor); err != nil {
						return err
					}
				}
			}
		}
		s.activity(ctx, tx, pr, peer, kind.BackupCancelRequested, "backup", id, name, nil)
		return nil
	})
	if err != nil {
		return Job{}, err
	}
	if server != nil {
		s.notify(ctx, "cancel:"+server.String()+":"+id.String())
	}
	s.notify(ctx, "log:"+id.String())
	return j, nil
}

// loadStored returns a backup whose object is stored (succeeded).
func (s *Service) loadStored(ctx context.Context, ref string) (store.Backup, error) {
	id, err := parseJobID(ref)
	if err != nil {
		return store.Backup{}, err
	}
	b, err := s.st.Backup(ctx, id)
	if err != nil {
		return store.Backup{}, err
	}
	if b.Status != store.BackupSucceeded {
		return store.Backup{}, fmt.Errorf("%w: backup %s is %s; only a succeeded backup has an object", ErrRefused, b.ID, b.Status)
	}
	if b.ServerID == nil {
		return store.Backup{}, fmt.Errorf("%w: the server that made backup %s was removed", ErrRefused, b.ID)
	}
	return b, nil
}

// Verify queues a verify job on the server that made the backup (write).
func (s *Service) Verify(ctx context.Context, pr *auth.Principal, peer Peer, ref string) (store.BackupTask, error) {
	if err := require(pr, store.ScopeWrite); err != nil {
		return store.BackupTask{}, err
	}
	b, err := s.loadStored(ctx, ref)
	if err != nil {
		return store.BackupTask{}, err
	}
	return s.queueTask(ctx, pr, peer, b, store.CreateBackupTaskParams{Kind: store.TaskVerify}, kind.BackupVerifyQueued, nil)
}

// RestoreRequest asks for a restore.
type RestoreRequest struct {
	ID string
	// To: another database or directory ("" the backup's source).
	To string
	// Force: into a non-empty database.
	Force         bool
	ConnectionEnv string
}

// Restore queues a restore on the server that made the backup (admin).
func (s *Service) Restore(ctx context.Context, pr *auth.Principal, peer Peer, r RestoreRequest) (store.BackupTask, error) {
	if err := require(pr, store.ScopeAdmin); err != nil {
		return store.BackupTask{}, err
	}
	b, err := s.loadStored(ctx, r.ID)
	if err != nil {
		return store.BackupTask{}, err
	}
	if r.To != "" {
		if err := checkSource(b.Kind, r.To); err != nil {
			return store.BackupTask{}, fmt.Errorf("--to: %w", err)
		}
	}
	if err := checkConnectionEnv(b.Kind, r.ConnectionEnv); err != nil {
		return store.BackupTask{}, err
	}
	if r.ConnectionEnv == "" && b.ConnectionEnv != nil && r.To == "" {
		r.ConnectionEnv = *b.ConnectionEnv
	}
	target := r.To
	if target == "" {
		target = b.Source
	}
	return s.queueTask(ctx, pr, peer, b, store.CreateBackupTaskParams{Kind: store.TaskRestore, Target: target, Force: r.Force, ConnectionEnv: r.ConnectionEnv},
		kind.BackupRestoreQueued, map[string]any{"to": target, "force": r.Force})
}

// Delete deletes a backup (admin): a finished backup without an object
// goes at once; a stored object is deleted by a job first, then the row;
// an unsucceeded backup that reached an agent is cleaned up first (its
// pending cleanup, or a new one), then the row; asked again after that
// cleanup failed, the row goes (see giveUp). A failed delete keeps the
// row with delete_error.
func (s *Service) Delete(ctx context.Context, pr *auth.Principal, peer Peer, ref string) (*store.BackupTask, error) {
	if err := require(pr, store.ScopeAdmin); err != nil {
		return nil, err
	}
	id, err := parseJobID(ref)
	if err != nil {
		return nil, err
	}
	b, err := s.st.Backup(ctx, id)
	if err != nil {
		return nil, err
	}
	if !b.Status.Finished() {
		return nil, fmt.Errorf("%w: backup %s is %s; cancel it first", ErrRefused, b.ID, b.Status)
	}
	// A cleanup that failed under an earlier delete of this backup was
	// its chance: the admin asking again gives it up (a destination
	// unreachable for good, wrong credentials or a removed bucket, fails
	// every attempt, and the row would keep the destination forever).
	// The key that may hold leftovers is kept in the activity log.
	giveUp := b.CleanupStatus == store.CleanupFailed && b.DeleteRequestedAt != nil
	if b.Status != store.BackupSucceeded && needsCleanup(b) && b.CleanupStatus != store.CleanupDone && b.ServerID != nil && !giveUp {
		// What it may have left at the destination goes first (its
		// cleanup, queued again if it failed or never ran), then the row.
		return s.deleteAfterCleanup(ctx, pr, peer, b)
	}
	if b.Status != store.BackupSucceeded || b.ObjectKey == nil {
		// No row calls anything stored good, and nothing is left at the
		// destination: never dispatched, cleaned up, or its server (the
		// only way there) was removed.
		err := s.st.InTx(ctx, func(tx *store.Store) error {
			if err := tx.DeleteBackup(ctx, b.ID); err != nil {
				return err
			}
			changes := map[string]any{"status": string(b.Status)}
			if giveUp {
				changes["cleanup"] = string(store.CleanupFailed)
				changes["cleanup_error"] = deref(b.CleanupError)
				changes["object_key"] = objectKey(b)
				changes["destination_id"] = b.DestinationID.String()
			}
			s.activity(ctx, tx, pr, peer, kind.BackupDeleted, "backup", b.ID, b.AppName, changes)
			return nil
		})
		return nil, err
	}
	if b.ServerID == nil {
		return nil, fmt.Errorf("%w: the server that made backup %s was removed; its object cannot be reached to delete it", ErrRefused, b.ID)
	}
	t, err := s.queueTask(ctx, pr, peer, b, store.CreateBackupTaskParams{Kind: store.TaskDelete}, kind.BackupDeleteRequested, nil)
	if err != nil {
		return nil, err
	}
	return &t, nil
}

// Forget removes the record of a stored backup whose object cannot be
// deleted (admin): its delete failed (a destination gone for good, wrong
// credentials, a removed bucket) or its server was removed. Without it
// such a row stays for ever, and so does its destination, which cannot be
// removed while a backup uses it. The object stays where it is; the
// activity log keeps its key, destination and the delete's error. A
// backup whose delete never failed is refused: delete it first.
func (s *Service) Forget(ctx context.Context, pr *auth.Principal, peer Peer, ref string) error {
	if err := require(pr, store.ScopeAdmin); err != nil {
		return err
	}
	id, err := parseJobID(ref)
	if err != nil {
		return err
	}
	return s.st.InTx(ctx, func(tx *store.Store) error {
		b, err := tx.Backup(ctx, id)
		if err != nil {
			return err
		}
		unreachable := b.ServerID == nil
		failedDelete := b.DeleteRequestedAt != nil && b.DeleteError != nil
		if b.Status != store.BackupSucceeded || b.ObjectKey == nil || (!unreachable && !failedDelete) {
			return fmt.Errorf("%w: backup %s: --forget only removes the record of a stored backup whose delete failed or whose server was removed; delete it first (berth backup delete %s)", ErrRefused, b.ID, b.ID)
		}
		tasks, err := tx.BackupTasks(ctx, b.ID, 100)
		if err != nil {
			return err
		}
		for _, t := range tasks {
			if !t.Status.Finished() {
				return fmt.Errorf("%w: backup %s has an unfinished %s task %s; wait for it or cancel it", ErrRefused, b.ID, t.Kind, t.ID)
			}
		}
		if err := tx.DeleteBackup(ctx, b.ID); err != nil {
			return err
		}
		changes := map[string]any{"object_key": *b.ObjectKey, "destination_id": b.DestinationID.String(), "object_kept": true}
		if b.DeleteError != nil {
			changes["delete_error"] = *b.DeleteError
		}
		if unreachable {
			changes["server_removed"] = true
		}
		s.activity(ctx, tx, pr, peer, kind.BackupForgotten, "backup", b.ID, b.AppName, changes)
		return nil
	})
}

// deleteAfterCleanup marks an unsucceeded backup for deletion once its
// cleanup is done and returns the cleanup task: the pending one, or a new
// one when the last failed (or none ran, for a backup older than cleanups).
func (s *Service) deleteAfterCleanup(ctx context.Context, pr *auth.Principal, peer Peer, b store.Backup) (*store.BackupTask, error) {
	var t *store.BackupTask
	err := s.st.InTx(ctx, func(tx *store.Store) error {
		cur, err := tx.RequestBackupDelete(ctx, b.ID)
		if err != nil {
			return err
		}
		if cur.CleanupStatus == store.CleanupDone {
			// Done since the caller read it (its result came in between):
			// nothing is left at the destination, the row goes now.
			if err := tx.DeleteBackup(ctx, b.ID); err != nil {
				return err
			}
			s.activity(ctx, tx, pr, peer, kind.BackupDeleted, "backup", b.ID, b.AppName, map[string]any{"status": string(b.Status)})
			return nil
		}
		if cur.CleanupStatus == store.CleanupPending {
			ts, err := tx.BackupTasks(ctx, b.ID, 50)
			if err != nil {
				return err
			}
			for i := range ts {
				if ts[i].Kind == store.TaskCleanup && !ts[i].Status.Finished() {
					t = &ts[i]
					break
				}
			}
		} else if t, err = s.queueCleanup(ctx, tx, cur, pr, peer, cur.CleanupStatus == store.CleanupFailed); err != nil {
			return err
		}
		if t == nil {
			return fmt.Errorf("%w: backup %s: its cleanup is %s but has no running task", ErrRefused, b.ID, cur.CleanupStatus)
		}
		s.activity(ctx, tx, pr, peer, kind.BackupDeleteRequested, "backup", b.ID, b.AppName,
			map[string]any{"task": t.ID.String(), "status": string(b.Status), "after": "cleanup"})
		return nil
	})
	if err != nil || t == nil {
		return nil, err
	}
	s.notify(ctx, "dispatch")
	return t, nil
}

// queueTask creates a task for a stored backup on its server.
func (s *Service) queueTask(ctx context.Context, pr *auth.Principal, peer Peer, b store.Backup, p store.CreateBackupTaskParams, action string, changes map[string]any) (store.BackupTask, error) {
	p.BackupID, p.DestinationID, p.ServerID, p.TriggeredBy = &b.ID, b.DestinationID, *b.ServerID, trigger(pr)
	p.TimeoutSeconds = int(s.cfg.Timeout / time.Second)
	var t store.BackupTask
	err := s.st.InTx(ctx, func(tx *store.Store) error {
		if p.Kind == store.TaskDelete {
			if _, err := tx.RequestBackupDelete(ctx, b.ID); err != nil {
				return err
			}
		}
		var err error
		if t, err = tx.CreateBackupTask(ctx, p); err != nil {
			return err
		}
		if changes == nil {
			changes = map[string]any{}
		}
		changes["task"] = t.ID.String()
		s.activity(ctx, tx, pr, peer, action, "backup", b.ID, b.AppName, changes)
		return nil
	})
	if err != nil {
		return store.BackupTask{}, err
	}
	s.notify(ctx, "dispatch")
	return t, nil
}

// Chunk is a piece of a job's log.
type Chunk = store.LogChunk

// Follow sends a backup's or task's log after after, then (follow) new
// chunks and state changes until it finished; send gets the job when its
// state changed and with the last chunk.
func (s *Service) Follow(ctx context.Context, pr *auth.Principal, ref string, after int64, follow bool, send func(c *Chunk, j *Job) error) error {
	if err := require(pr, store.ScopeRead); err != nil {
		return err
	}
	id, err := parseJobID(ref)
	if err != nil {
		return err
	}
	if after < 0 {
		return fmt.Errorf("%w: after_seq", ErrInvalid)
	}
	j, err := s.job(ctx, id)
	if err != nil {
		return err
	}
	ch, stop := s.subscribe(id)
	defer stop()
	last := store.BackupStatus("")
	for {
		chunks, err := s.st.BackupLogs(ctx, id, after, 500)
		if err != nil {
			return err
		}
		for i := range chunks {
			if err := send(&chunks[i], nil); err != nil {
				return err
			}
			after = chunks[i].Seq
		}
		if len(chunks) == 500 {
			continue
		}
		if j, err = s.job(ctx, id); err != nil {
			return err
		}
		st := jobStatus(j)
		if st.Finished() || !follow {
			// A last look: chunks committed with the result, then the job.
			chunks, err := s.st.BackupLogs(ctx, id, after, 500)
			if err != nil {
				return err
			}
			for i := range chunks {
				if err := send(&chunks[i], nil); err != nil {
					return err
				}
			}
			return send(nil, &j)
		}
		if st != last {
			last = st
			if err := send(nil, &j); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}
