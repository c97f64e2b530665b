package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berthhq/berth/gen/dbsqlc"
)

// BackupEncryptionKey is a keyring key as shown: its recipient (public),
// never its identity.
type BackupEncryptionKey struct {
	ID        ID
	Recipient string
	CreatedAt time.Time
}

// BackupIdentity is an age identity (AGE-SECRET-KEY-1...). It formats and
// logs as redacted.
type BackupIdentity string

// Format prints the type name only, for every verb.
func (BackupIdentity) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte("BackupIdentity{redacted}")) }

// LogValue keeps the identity out of slog output.
func (BackupIdentity) LogValue() slog.Value { return slog.StringValue("redacted") }

func backupKeyFromRow(r dbsqlc.BackupEncryptionKey) BackupEncryptionKey {
	return BackupEncryptionKey{ID: fromPG(r.ID), Recipient: r.Recipient, CreatedAt: r.CreatedAt}
}

// CreateBackupEncryptionKey stores a key, its identity sealed to the row.
func (s *Store) CreateBackupEncryptionKey(ctx context.Context, recipient string, identity BackupIdentity) (BackupEncryptionKey, error) {
	id := NewID()
	ct, err := s.seal("backup_encryption_keys", "identity", id, []byte(identity))
	if err != nil {
		return BackupEncryptionKey{}, mapErr("create backup key", err)
	}
	r, err := s.q.CreateBackupEncryptionKey(ctx, dbsqlc.CreateBackupEncryptionKeyParams{ID: pgID(id), Recipient: recipient, Identity: ct})
	if err != nil {
		return BackupEncryptionKey{}, mapErr("create backup key", err)
	}
	return backupKeyFromRow(r), nil
}

// LockBackupEncryptionKeys serialises key creation until the transaction
// ends (run it in InTx).
func (s *Store) LockBackupEncryptionKeys(ctx context.Context) error {
	return mapErr("lock backup keys", s.q.LockBackupEncryptionKeys(ctx))
}

// NewestBackupEncryptionKey is the key new backups use; ErrNotFound when
// the keyring is empty.
func (s *Store) NewestBackupEncryptionKey(ctx context.Context) (BackupEncryptionKey, error) {
	r, err := s.q.GetNewestBackupEncryptionKey(ctx)
	if err != nil {
		return BackupEncryptionKey{}, mapErr("get newest backup key", err)
	}
	return backupKeyFromRow(r), nil
}

// BackupEncryptionKeys lists the keyring, newest first.
func (s *Store) BackupEncryptionKeys(ctx context.Context) ([]BackupEncryptionKey, error) {
	rows, err := s.q.ListBackupEncryptionKeys(ctx)
	if err != nil {
		return nil, mapErr("list backup keys", err)
	}
	out := make([]BackupEncryptionKey, len(rows))
	for i, r := range rows {
		out[i] = backupKeyFromRow(r)
	}
	return out, nil
}

// BackupEncryptionIdentity opens a key's identity.
func (s *Store) BackupEncryptionIdentity(ctx context.Context, id ID) (BackupIdentity, error) {
	r, err := s.q.GetBackupEncryptionKey(ctx, pgID(id))
	if err != nil {
		return "", mapErr("get backup key", err)
	}
	pt, err := s.open("backup_encryption_keys", "identity", id, r.Identity)
	if err != nil {
		return "", fmt.Errorf("get backup key: %w", err)
	}
	return BackupIdentity(pt), nil
}

// BackupDestinationUse counts what keeps a destination from being removed.
func (s *Store) BackupDestinationUse(ctx context.Context, id ID) (backups, schedules int64, err error) {
	r, err := s.q.CountBackupDestinationUse(ctx, pgID(id))
	if err != nil {
		return 0, 0, mapErr("count backup destination use", err)
	}
	return r.Backups, r.Schedules, nil
}

// RequestBackupDelete marks a finished backup as being deleted;
// ErrWrongState while it runs.
func (s *Store) RequestBackupDelete(ctx context.Context, id ID) (Backup, error) {
	r, err := s.q.RequestBackupDelete(ctx, pgID(id))
	return s.backupCAS(ctx, "request backup delete", id, r, err)
}

// RecordBackupDeleteError keeps why deleting a backup's object failed.
func (s *Store) RecordBackupDeleteError(ctx context.Context, id ID, msg string) error {
	return mapErr("record backup delete error", s.q.RecordBackupDeleteError(ctx, dbsqlc.RecordBackupDeleteErrorParams{ID: pgID(id), DeleteError: &msg}))
}

// BackupTaskKind is what a backup task does.
type BackupTaskKind string

// The task kinds.
const (
	TaskVerify   BackupTaskKind = "verify"
	TaskRestore  BackupTaskKind = "restore"
	TaskDownload BackupTaskKind = "download"
	TaskProbe    BackupTaskKind = "probe"
	TaskDelete   BackupTaskKind = "delete"
	// TaskCleanup removes what an unsucceeded backup may have left under
	// its key (see Backup.CleanupStatus).
	TaskCleanup BackupTaskKind = "cleanup"
)

// BackupTask is a job acting on a backup or testing a destination. Its
// states are the backups' (BackupStatus).
type BackupTask struct {
	ID                ID
	Kind              BackupTaskKind
	BackupID          *ID
	DestinationID     ID
	ServerID          *ID
	TriggeredBy       Trigger
	Target            *string
	Force             bool
	ConnectionEnv     *string
	Status            BackupStatus
	FailureReason     *string
	TimeoutSeconds    int
	DeadlineAt        time.Time
	CancelRequestedAt *time.Time
	QueuedAt          time.Time
	DispatchedAt      *time.Time
	StartedAt         *time.Time
	FinishedAt        *time.Time
	AgentSeq          int64
	LogBytes          int64
	LogTruncated      bool
	CreatedAt         time.Time
}

func backupTaskFromRow(r dbsqlc.BackupTask) BackupTask {
	return BackupTask{
		ID: fromPG(r.ID), Kind: BackupTaskKind(r.Kind), BackupID: fromOptPG(r.BackupID), DestinationID: fromPG(r.BackupDestinationID),
		ServerID: fromOptPG(r.ServerID), TriggeredBy: Trigger(r.TriggeredBy), Target: r.Target, Force: r.Force,
		ConnectionEnv: r.ConnectionEnv, Status: BackupStatus(r.Status), FailureReason: r.FailureReason,
		TimeoutSeconds: int(r.TimeoutSeconds), DeadlineAt: r.DeadlineAt, CancelRequestedAt: r.CancelRequestedAt,
		QueuedAt: r.QueuedAt, DispatchedAt: r.DispatchedAt, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt,
		AgentSeq: r.AgentSeq, LogBytes: r.LogBytes, LogTruncated: r.LogTruncated, CreatedAt: r.CreatedAt,
	}
}

func backupTasksFromRows(rows []dbsqlc.BackupTask) []BackupTask {
	out := make([]BackupTask, len(rows))
	for i, r := range rows {
		out[i] = backupTaskFromRow(r)
	}
	return out
}

// CreateBackupTaskParams describes a task to enqueue.
type CreateBackupTaskParams struct {
	ID             ID // zero: a new one
	Kind           BackupTaskKind
	BackupID       *ID
	DestinationID  ID
	ServerID       ID
	TriggeredBy    Trigger
	Target         string
	Force          bool
	ConnectionEnv  string
	TimeoutSeconds int
}

// CreateBackupTask enqueues a task (status queued).
func (s *Store) CreateBackupTask(ctx context.Context, p CreateBackupTaskParams) (BackupTask, error) {
	sid := p.ServerID
	if p.ID == (ID{}) {
		p.ID = NewID()
	}
	r, err := s.q.CreateBackupTask(ctx, dbsqlc.CreateBackupTaskParams{
		ID: pgID(p.ID), Kind: string(p.Kind), BackupID: pgOptID(p.BackupID), BackupDestinationID: pgID(p.DestinationID),
		ServerID: pgOptID(&sid), TriggeredBy: string(p.TriggeredBy), Target: nullText(p.Target), Force: p.Force,
		ConnectionEnv: nullText(p.ConnectionEnv), TimeoutSeconds: int32(p.TimeoutSeconds),
	})
	if err != nil {
		return BackupTask{}, mapErr("create backup task", err)
	}
	return backupTaskFromRow(r), nil
}

// BackupTask returns a task by id.
func (s *Store) BackupTask(ctx context.Context, id ID) (BackupTask, error) {
	r, err := s.q.GetBackupTask(ctx, pgID(id))
	if err != nil {
		return BackupTask{}, mapErr("get backup task", err)
	}
	return backupTaskFromRow(r), nil
}

// BackupTasks lists a backup's tasks, newest first.
func (s *Store) BackupTasks(ctx context.Context, backupID ID, limit int) ([]BackupTask, error) {
	rows, err := s.q.ListBackupTasks(ctx, dbsqlc.ListBackupTasksParams{BackupID: pgID(backupID), Lim: limitArg(limit)})
	if err != nil {
		return nil, mapErr("list backup tasks", err)
	}
	return backupTasksFromRows(rows), nil
}

// ClaimQueuedBackupTasks is ClaimQueuedBackups for tasks.
func (s *Store) ClaimQueuedBackupTasks(ctx context.Context, serverIDs []ID, limit int) ([]BackupTask, error) {
	rows, err := s.q.ClaimQueuedBackupTasks(ctx, dbsqlc.ClaimQueuedBackupTasksParams{ServerIds: pgIDsOrNull(serverIDs), Lim: limitArg(limit)})
	if err != nil {
		return nil, mapErr("claim queued backup tasks", err)
	}
	return backupTasksFromRows(rows), nil
}

func (s *Store) taskCAS(ctx context.Context, what string, id ID, r dbsqlc.BackupTask, err error) (BackupTask, error) {
	if errors.Is(err, pgx.ErrNoRows) {
		cur, gerr := s.q.GetBackupTask(ctx, pgID(id))
		if gerr != nil {
			return BackupTask{}, mapErr(what, gerr)
		}
		return BackupTask{}, wrongState(what, cur.Status)
	}
	if err != nil {
		return BackupTask{}, mapErr(what, err)
	}
	return backupTaskFromRow(r), nil
}

// StartBackupTask moves a dispatched task to running (at nil: now).
func (s *Store) StartBackupTask(ctx context.Context, id ID, at *time.Time) (BackupTask, error) {
	r, err := s.q.StartBackupTask(ctx, dbsqlc.StartBackupTaskParams{ID: pgID(id), At: at})
	return s.taskCAS(ctx, "start backup task", id, r, err)
}

// taskFinishFrom: a task succeeds from running only (its result comes from
// the agent); the rest as backups.
var taskFinishFrom = map[BackupStatus][]string{
	BackupSucceeded: {string(BackupRunning)},
	BackupFailed:    {string(BackupQueued), string(BackupDispatched), string(BackupRunning)},
	BackupCanceled:  {string(BackupQueued), string(BackupDispatched), string(BackupRunning)},
	BackupTimedOut:  {string(BackupQueued), string(BackupDispatched), string(BackupRunning)},
}

// FinishBackupTask ends a task; ErrWrongState from a state that does not
// allow it.
func (s *Store) FinishBackupTask(ctx context.Context, id ID, res BackupResult) (BackupTask, error) {
	from, ok := taskFinishFrom[res.Status]
	if !ok {
		return BackupTask{}, fmt.Errorf("finish backup task: %q is not a final status: %w", res.Status, ErrInvalid)
	}
	r, err := s.q.FinishBackupTask(ctx, dbsqlc.FinishBackupTaskParams{
		ID: pgID(id), Status: string(res.Status), At: res.At, FailureReason: res.FailureReason, FromStatuses: from,
	})
	return s.taskCAS(ctx, "finish backup task", id, r, err)
}

// RequestBackupTaskCancel records a cancel request on an unfinished task.
func (s *Store) RequestBackupTaskCancel(ctx context.Context, id ID) (BackupTask, error) {
	r, err := s.q.RequestBackupTaskCancel(ctx, pgID(id))
	return s.taskCAS(ctx, "request backup task cancel", id, r, err)
}

// OverdueBackupTasks lists unfinished tasks past their deadline.
func (s *Store) OverdueBackupTasks(ctx context.Context, now time.Time, limit int) ([]BackupTask, error) {
	rows, err := s.q.ListOverdueBackupTasks(ctx, dbsqlc.ListOverdueBackupTasksParams{Now: now, Lim: limitArg(limit)})
	if err != nil {
		return nil, mapErr("list overdue backup tasks", err)
	}
	return backupTasksFromRows(rows), nil
}

// ActiveBackupTasksForServer lists a server's dispatched and running tasks.
func (s *Store) ActiveBackupTasksForServer(ctx context.Context, serverID ID) ([]BackupTask, error) {
	rows, err := s.q.ListActiveBackupTasksForServer(ctx, pgID(serverID))
	if err != nil {
		return nil, mapErr("list active backup tasks", err)
	}
	return backupTasksFromRows(rows), nil
}

// BackupJobKind says whether an id is a backup's or a task's.
type BackupJobKind string

// The backup job kinds.
const (
	JobIsBackup BackupJobKind = "backup"
	JobIsTask   BackupJobKind = "task"
)

// BackupJobServer says whether id is a backup or a task and which server
// runs it (nil: removed); ErrNotFound when it is neither.
func (s *Store) BackupJobServer(ctx context.Context, id ID) (BackupJobKind, *ID, error) {
	r, err := s.q.GetBackupJobServer(ctx, pgID(id))
	if err != nil {
		return "", nil, mapErr("get backup job server", err)
	}
	return BackupJobKind(r.Job), fromOptPG(r.ServerID), nil
}

// BackupJob is a backup or a task, as an agent event finds it.
type BackupJob struct {
	Backup *Backup
	Task   *BackupTask
}

// BackupJobEvent is one numbered agent event for a backup or task.
type BackupJobEvent struct {
	JobID ID
	Seq   int64
	Step  string
	Data  []byte
	Apply func(tx *Store, j BackupJob) error
	Fresh bool
}

// CommitBackupJobEvents is CommitJobEvents for backups and tasks: the
// same numbering, exactly once, and capped log.
func (s *Store) CommitBackupJobEvents(ctx context.Context, evs []BackupJobEvent, logCap int64) ([]JobEventOutcome, error) {
	nevs := make([]numberedEvent[BackupJob], len(evs))
	for i, ev := range evs {
		nevs[i] = numberedEvent[BackupJob]{JobID: ev.JobID, Seq: ev.Seq, Step: ev.Step, Data: ev.Data, Apply: ev.Apply, Fresh: ev.Fresh}
	}
	return commitNumbered(ctx, s, nevs, logCap, backupJobs)
}

var backupJobs = jobTable[BackupJob]{
	lock: func(ctx context.Context, tx *Store, id ID) (BackupJob, jobCounters, error) {
		if r, err := tx.q.LockBackupSeq(ctx, pgID(id)); err == nil {
			b := backupFromRow(r)
			return BackupJob{Backup: &b}, jobCounters{Seq: b.AgentSeq, LogBytes: b.LogBytes, Truncated: b.LogTruncated}, nil
		} else if !errors.Is(err, pgx.ErrNoRows) {
			return BackupJob{}, jobCounters{}, err
		}
		r, err := tx.q.LockBackupTaskSeq(ctx, pgID(id))
		if err != nil {
			return BackupJob{}, jobCounters{}, err
		}
		t := backupTaskFromRow(r)
		return BackupJob{Task: &t}, jobCounters{Seq: t.AgentSeq, LogBytes: t.LogBytes, Truncated: t.LogTruncated}, nil
	},
	get: func(ctx context.Context, tx *Store, id ID) (BackupJob, error) {
		if r, err := tx.q.GetBackup(ctx, pgID(id)); err == nil {
			b := backupFromRow(r)
			return BackupJob{Backup: &b}, nil
		} else if !errors.Is(err, pgx.ErrNoRows) {
			return BackupJob{}, err
		}
		r, err := tx.q.GetBackupTask(ctx, pgID(id))
		if err != nil {
			return BackupJob{}, err
		}
		t := backupTaskFromRow(r)
		return BackupJob{Task: &t}, nil
	},
	insertLog: func(ctx context.Context, tx *Store, id ID, seq int64, step string, data []byte) error {
		return tx.q.InsertBackupLog(ctx, dbsqlc.InsertBackupLogParams{JobID: pgID(id), Seq: seq, Step: step, Data: data})
	},
	advance: func(ctx context.Context, tx *Store, id ID, c jobCounters) error {
		if n, err := tx.q.AdvanceBackupSeqRows(ctx, dbsqlc.AdvanceBackupSeqRowsParams{ID: pgID(id), AgentSeq: c.Seq, LogBytes: c.LogBytes, LogTruncated: c.Truncated}); err != nil || n > 0 {
			return err
		}
		return tx.q.AdvanceBackupTaskSeq(ctx, dbsqlc.AdvanceBackupTaskSeqParams{ID: pgID(id), AgentSeq: c.Seq, LogBytes: c.LogBytes, LogTruncated: c.Truncated})
	},
}

// BackupLogs returns up to limit chunks of a backup's or task's log
// numbered after after, in order.
func (s *Store) BackupLogs(ctx context.Context, jobID ID, after int64, limit int) ([]LogChunk, error) {
	rows, err := s.q.ListBackupLogs(ctx, dbsqlc.ListBackupLogsParams{JobID: pgID(jobID), After: after, Lim: limitArg(limit)})
	if err != nil {
		return nil, mapErr("list backup logs", err)
	}
	out := make([]LogChunk, len(rows))
	for i, r := range rows {
		out[i] = LogChunk{DeploymentID: fromPG(r.JobID), Seq: r.Seq, Step: r.Step, Data: r.Data, CreatedAt: r.CreatedAt}
	}
	return out, nil
}

// SetBackupEncryptionKey records the keyring key a queued backup encrypts
// to (a key's id as a ULID string).
func (s *Store) SetBackupEncryptionKey(ctx context.Context, id ID, keyID string) (Backup, error) {
	r, err := s.q.SetBackupEncryptionKey(ctx, dbsqlc.SetBackupEncryptionKeyParams{ID: pgID(id), EncryptionKeyID: &keyID})
	return s.backupCAS(ctx, "set backup encryption key", id, r, err)
}
