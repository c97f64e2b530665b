package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berthhq/berth/gen/dbsqlc"
)

// BackupStatus is where a backup job is: the job states of deployments.
type BackupStatus string

// The backup states. A backup is succeeded only once its object is stored
// at the destination.
const (
	BackupQueued     BackupStatus = "queued"
	BackupDispatched BackupStatus = "dispatched"
	BackupRunning    BackupStatus = "running"
	BackupSucceeded  BackupStatus = "succeeded"
	BackupFailed     BackupStatus = "failed"
	BackupCanceled   BackupStatus = "canceled"
	BackupTimedOut   BackupStatus = "timed_out"
)

// Finished reports whether the status is terminal.
func (st BackupStatus) Finished() bool {
	switch st {
	case BackupSucceeded, BackupFailed, BackupCanceled, BackupTimedOut:
		return true
	}
	return false
}

// backupFinishFrom: as deploymentFinishFrom (succeeded goes through
// SucceedBackup, from running only).
var backupFinishFrom = map[BackupStatus][]string{
	BackupFailed:   {string(BackupDispatched), string(BackupRunning)},
	BackupCanceled: {string(BackupQueued), string(BackupDispatched), string(BackupRunning)},
	BackupTimedOut: {string(BackupQueued), string(BackupDispatched), string(BackupRunning)},
}

// BackupKind is what a backup copies.
type BackupKind string

// The backup kinds.
const (
	BackupPostgres  BackupKind = "postgres"
	BackupMySQL     BackupKind = "mysql"
	BackupDirectory BackupKind = "directory"
)

// BackupCompression is how a backup object is compressed.
type BackupCompression string

// The compressions.
const (
	CompressionZstd BackupCompression = "zstd"
	CompressionGzip BackupCompression = "gzip"
	CompressionNone BackupCompression = "none"
)

// Backup is a backup job and the object it produced.
type Backup struct {
	ID ID
	// AppID is nil once the app was deleted; AppName keeps its name.
	AppID   *ID
	AppName string
	// ServerID: the server that made it (and, for a local destination,
	// holds it); nil once the server was removed.
	ServerID      *ID
	DestinationID ID
	// ScheduleID: nil for a manual backup, or once the schedule was deleted.
	ScheduleID  *ID
	TriggeredBy Trigger
	Kind        BackupKind
	Source      string
	Status      BackupStatus
	// ObjectKey, SizeBytes, ChecksumSHA256 and EncryptionKeyID describe the
	// stored object; all set once succeeded.
	ObjectKey         *string
	Compression       BackupCompression
	EncryptionKeyID   *string
	SizeBytes         *int64
	ChecksumSHA256    []byte
	FailureReason     *string
	TimeoutSeconds    int
	DeadlineAt        time.Time
	CancelRequestedAt *time.Time
	QueuedAt          time.Time
	DispatchedAt      *time.Time
	StartedAt         *time.Time
	FinishedAt        *time.Time
	VerifiedAt        *time.Time
	VerificationError *string
	// ConnectionEnv: nil connects as the local superuser over the unix
	// socket; else the app environment variable holding a connection URL.
	ConnectionEnv *string
	AgentSeq      int64
	LogBytes      int64
	LogTruncated  bool
	// DeleteRequestedAt is set while its object is being deleted (and
	// after that failed, with DeleteError).
	DeleteRequestedAt *time.Time
	DeleteError       *string
	// ScheduledFor: the schedule's tick this backup is the run of (its
	// run key with ScheduleID); Held: the agent ran it from its held copy
	// of the schedule while no controller was reachable.
	ScheduledFor *time.Time
	Held         bool
	// Cleanup of what an unsucceeded backup that reached an agent may
	// have left under its key (000034): "" none needed, or CleanupPending,
	// CleanupDone, CleanupFailed (with CleanupError); CleanupAt: when it
	// last changed.
	CleanupStatus CleanupStatus
	CleanupError  *string
	CleanupAt     *time.Time
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

func backupFromRow(r dbsqlc.Backup) Backup {
	return Backup{
		ID: fromPG(r.ID), AppID: fromOptPG(r.AppID), AppName: r.AppName, ServerID: fromOptPG(r.ServerID),
		DestinationID: fromPG(r.BackupDestinationID), ScheduleID: fromOptPG(r.BackupScheduleID),
		TriggeredBy: Trigger(r.TriggeredBy), Kind: BackupKind(r.Kind), Source: r.Source, Status: BackupStatus(r.Status),
		ObjectKey: r.ObjectKey, Compression: BackupCompression(r.Compression), EncryptionKeyID: r.EncryptionKeyID,
		SizeBytes: r.SizeBytes, ChecksumSHA256: r.ChecksumSha256, FailureReason: r.FailureReason,
		TimeoutSeconds: int(r.TimeoutSeconds), DeadlineAt: r.DeadlineAt, CancelRequestedAt: r.CancelRequestedAt,
		QueuedAt: r.QueuedAt, DispatchedAt: r.DispatchedAt, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt,
		VerifiedAt: r.VerifiedAt, VerificationError: r.VerificationError, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
		ConnectionEnv: r.ConnectionEnv, AgentSeq: r.AgentSeq, LogBytes: r.LogBytes, LogTruncated: r.LogTruncated,
		DeleteRequestedAt: r.DeleteRequestedAt, DeleteError: r.DeleteError,
		ScheduledFor: r.ScheduledFor, Held: r.Held,
		CleanupStatus: cleanupStatusOf(r.CleanupStatus), CleanupError: r.CleanupError, CleanupAt: r.CleanupAt,
	}
}

func backupsFromRows(rows []dbsqlc.Backup) []Backup {
	out := make([]Backup, len(rows))
	for i, r := range rows {
		out[i] = backupFromRow(r)
	}
	return out
}

// CreateBackupParams describes a backup to enqueue.
type CreateBackupParams struct {
	ID    ID
	AppID *ID
	// AppName "" and ServerID nil are the app's.
	AppName       string
	ServerID      *ID
	DestinationID ID
	ScheduleID    *ID
	TriggeredBy   Trigger
	Kind          BackupKind
	Source        string            // database name or directory path
	Compression   BackupCompression // "" is zstd
	// TimeoutSeconds must be positive.
	TimeoutSeconds int
	// DeadlineAt bounds the wait in the queue; nil is now + the timeout.
	DeadlineAt *time.Time
	// ConnectionEnv "" connects as the local superuser.
	ConnectionEnv string
}

// CreateBackup enqueues a backup (status queued). ErrConflict when its
// schedule's previous run is unfinished (the tick is skipped; a caller's
// transaction stays usable). An unknown AppID is ErrMissingParent when
// AppName is given, and ErrInvalid (no name to copy) when it is not.
func (s *Store) CreateBackup(ctx context.Context, p CreateBackupParams) (Backup, error) {
	if p.ID == (ID{}) {
		p.ID = NewID()
	}
	if p.Compression == "" {
		p.Compression = CompressionZstd
	}
	r, err := s.q.CreateBackup(ctx, dbsqlc.CreateBackupParams{
		ID: pgID(p.ID), AppID: pgOptID(p.AppID), AppName: nullText(p.AppName), ServerID: pgOptID(p.ServerID),
		BackupDestinationID: pgID(p.DestinationID), BackupScheduleID: pgOptID(p.ScheduleID),
		TriggeredBy: string(p.TriggeredBy), Kind: string(p.Kind), Source: p.Source, Compression: string(p.Compression),
		TimeoutSeconds: int32(p.TimeoutSeconds), DeadlineAt: p.DeadlineAt, ConnectionEnv: nullText(p.ConnectionEnv),
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return Backup{}, fmt.Errorf("create backup: %w (backups_one_active_per_schedule_key)", ErrConflict)
	}
	if err != nil {
		return Backup{}, mapErr("create backup", err)
	}
	return backupFromRow(r), nil
}

// Backup returns a backup by id.
func (s *Store) Backup(ctx context.Context, id ID) (Backup, error) {
	r, err := s.q.GetBackup(ctx, pgID(id))
	if err != nil {
		return Backup{}, mapErr("get backup", err)
	}
	return backupFromRow(r), nil
}

// BackupFilter selects and pages backups. Before is the last id of the
// previous page; Limit 0 is DefaultPageSize.
type BackupFilter struct {
	AppID         *ID
	ServerID      *ID
	DestinationID *ID
	ScheduleID    *ID
	Status        BackupStatus // "" for every status
	Kind          BackupKind   // "" for every kind
	Before        *ID
	Limit         int
}

// ListBackups lists backups, newest first.
func (s *Store) ListBackups(ctx context.Context, f BackupFilter) ([]Backup, error) {
	rows, err := s.q.ListBackups(ctx, dbsqlc.ListBackupsParams{
		AppID: pgOptID(f.AppID), ServerID: pgOptID(f.ServerID), BackupDestinationID: pgOptID(f.DestinationID),
		BackupScheduleID: pgOptID(f.ScheduleID), Status: nullText(string(f.Status)), Kind: nullText(string(f.Kind)),
		Before: pgOptID(f.Before), Lim: limitArg(f.Limit),
	})
	if err != nil {
		return nil, mapErr("list backups", err)
	}
	return backupsFromRows(rows), nil
}

// ClaimQueuedBackups moves up to limit of the oldest queued backups made on
// one of serverIDs (nil: any) to dispatched, skipping rows other
// dispatchers hold, and returns them oldest first. Their deadline becomes
// dispatch time + timeout.
func (s *Store) ClaimQueuedBackups(ctx context.Context, serverIDs []ID, limit int) ([]Backup, error) {
	rows, err := s.q.ClaimQueuedBackups(ctx, dbsqlc.ClaimQueuedBackupsParams{ServerIds: pgIDsOrNull(serverIDs), Lim: limitArg(limit)})
	if err != nil {
		return nil, mapErr("claim queued backups", err)
	}
	out := backupsFromRows(rows)
	slices.SortFunc(out, func(a, b Backup) int {
		return cmp.Or(a.QueuedAt.Compare(b.QueuedAt), a.ID.Compare(b.ID))
	})
	return out, nil
}

func (s *Store) backupCAS(ctx context.Context, what string, id ID, r dbsqlc.Backup, err error) (Backup, error) {
	if errors.Is(err, pgx.ErrNoRows) {
		cur, gerr := s.q.GetBackup(ctx, pgID(id))
		if gerr != nil {
			return Backup{}, mapErr(what, gerr)
		}
		return Backup{}, wrongState(what, cur.Status)
	}
	if err != nil {
		return Backup{}, mapErr(what, err)
	}
	return backupFromRow(r), nil
}

// DispatchBackup moves a queued backup to dispatched (deadline = now +
// timeout); ErrWrongState when it is not queued.
func (s *Store) DispatchBackup(ctx context.Context, id ID) (Backup, error) {
	r, err := s.q.DispatchBackup(ctx, pgID(id))
	return s.backupCAS(ctx, "dispatch backup", id, r, err)
}

// StartBackup moves a dispatched backup to running (at nil: now).
func (s *Store) StartBackup(ctx context.Context, id ID, at *time.Time) (Backup, error) {
	r, err := s.q.StartBackup(ctx, dbsqlc.StartBackupParams{ID: pgID(id), At: at})
	return s.backupCAS(ctx, "start backup", id, r, err)
}

// BackupObject is what a backup stored at its destination.
type BackupObject struct {
	ObjectKey       string
	SizeBytes       int64
	ChecksumSHA256  []byte // 32 bytes
	EncryptionKeyID string
	At              *time.Time // when it finished (nil: now)
}

// SucceedBackup moves a running backup to succeeded with its stored
// object; ErrWrongState from any other state, ErrInvalid when the object
// is incomplete.
func (s *Store) SucceedBackup(ctx context.Context, id ID, obj BackupObject) (Backup, error) {
	r, err := s.q.SucceedBackup(ctx, dbsqlc.SucceedBackupParams{
		ID: pgID(id), At: obj.At, ObjectKey: nullText(obj.ObjectKey), SizeBytes: &obj.SizeBytes,
		ChecksumSha256: obj.ChecksumSHA256, EncryptionKeyID: nullText(obj.EncryptionKeyID),
	})
	return s.backupCAS(ctx, "succeed backup", id, r, err)
}

// BackupResult ends a backup without success.
type BackupResult struct {
	Status        BackupStatus // failed, canceled or timed_out
	At            *time.Time   // nil: now
	FailureReason *string
}

// FinishBackup ends a backup: failed from dispatched or running; canceled
// and timed_out from queued, dispatched or running. Anything else is
// ErrWrongState and changes nothing; success goes through SucceedBackup.
func (s *Store) FinishBackup(ctx context.Context, id ID, res BackupResult) (Backup, error) {
	from, ok := backupFinishFrom[res.Status]
	if !ok {
		return Backup{}, fmt.Errorf("finish backup: %q is not a failure status: %w", res.Status, ErrInvalid)
	}
	r, err := s.q.FinishBackup(ctx, dbsqlc.FinishBackupParams{
		ID: pgID(id), Status: string(res.Status), At: res.At, FailureReason: res.FailureReason, FromStatuses: from,
	})
	return s.backupCAS(ctx, "finish backup", id, r, err)
}

// RequestBackupCancel records a cancel request on an unfinished backup;
// ErrWrongState once it finished.
func (s *Store) RequestBackupCancel(ctx context.Context, id ID) (Backup, error) {
	r, err := s.q.RequestBackupCancel(ctx, pgID(id))
	return s.backupCAS(ctx, "request backup cancel", id, r, err)
}

// RecordBackupVerification records a verification of a succeeded backup:
// verifyErr nil stamps VerifiedAt (at, nil: now) and clears the error;
// otherwise the error is kept beside the last success. ErrWrongState when
// the backup has not succeeded.
func (s *Store) RecordBackupVerification(ctx context.Context, id ID, at *time.Time, verifyErr *string) (Backup, error) {
	r, err := s.q.RecordBackupVerification(ctx, dbsqlc.RecordBackupVerificationParams{ID: pgID(id), At: at, VerificationError: verifyErr})
	return s.backupCAS(ctx, "record backup verification", id, r, err)
}

// OverdueBackups lists unfinished backups whose deadline is before now,
// oldest deadline first.
func (s *Store) OverdueBackups(ctx context.Context, now time.Time, limit int) ([]Backup, error) {
	rows, err := s.q.ListOverdueBackups(ctx, dbsqlc.ListOverdueBackupsParams{Now: now, Lim: limitArg(limit)})
	if err != nil {
		return nil, mapErr("list overdue backups", err)
	}
	return backupsFromRows(rows), nil
}

// ActiveBackupsForServer lists a server's dispatched and running backups,
// oldest first, to re-send when its agent reconnects.
func (s *Store) ActiveBackupsForServer(ctx context.Context, serverID ID) ([]Backup, error) {
	rows, err := s.q.ListActiveBackupsForServer(ctx, pgID(serverID))
	if err != nil {
		return nil, mapErr("list active backups", err)
	}
	return backupsFromRows(rows), nil
}

// LatestSucceededBackupForSchedule is the schedule's newest succeeded
// backup; ErrNotFound when there is none.
func (s *Store) LatestSucceededBackupForSchedule(ctx context.Context, scheduleID ID) (Backup, error) {
	r, err := s.q.GetLatestSucceededBackupForSchedule(ctx, pgID(scheduleID))
	if err != nil {
		return Backup{}, mapErr("get latest backup", err)
	}
	return backupFromRow(r), nil
}

// LatestSucceededBackupForApp is the app's newest succeeded backup;
// ErrNotFound when there is none.
func (s *Store) LatestSucceededBackupForApp(ctx context.Context, appID ID) (Backup, error) {
	r, err := s.q.GetLatestSucceededBackupForApp(ctx, pgID(appID))
	if err != nil {
		return Backup{}, mapErr("get latest backup", err)
	}
	return backupFromRow(r), nil
}

// BackupRetentionCandidates lists, oldest first, the schedule's succeeded
// backups that its retention no longer keeps at time now. A backup is kept
// while it is among the newest RetentionCount or younger than
// RetentionDays (either rule that is set keeps it), and the newest
// succeeded backup is always kept. The caller deletes the object, then the
// row.
func (s *Store) BackupRetentionCandidates(ctx context.Context, scheduleID ID, now time.Time) ([]Backup, error) {
	rows, err := s.q.ListBackupRetentionCandidates(ctx, dbsqlc.ListBackupRetentionCandidatesParams{BackupScheduleID: pgID(scheduleID), Now: now})
	if err != nil {
		return nil, mapErr("list backup retention candidates", err)
	}
	return backupsFromRows(rows), nil
}

// DeleteBackup deletes a backup's row and its log (delete its object
// first).
func (s *Store) DeleteBackup(ctx context.Context, id ID) error {
	n, err := s.q.DeleteBackup(ctx, pgID(id))
	if err := affected("delete backup", n, err); err != nil {
		return err
	}
	return mapErr("delete backup log", s.q.DeleteBackupLogs(ctx, pgID(id)))
}
