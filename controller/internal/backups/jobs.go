package backups

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/jobs"
	"github.com/berthhq/berth/controller/internal/notify"
	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// Job kinds as the agent knows them.
const (
	KindBackup   = "backup"
	KindVerify   = "backup_verify"
	KindRestore  = "backup_restore"
	KindDownload = "backup_download"
	KindProbe    = "backup_probe"
	KindDelete   = "backup_delete"
)

var taskKinds = map[store.BackupTaskKind]string{
	store.TaskVerify: KindVerify, store.TaskRestore: KindRestore, store.TaskDownload: KindDownload,
	store.TaskProbe: KindProbe, store.TaskDelete: KindDelete,
	// A cleanup is the agent's delete of the backup's key: the object if
	// any, and the key's leftovers (see cleanup.go).
	store.TaskCleanup: KindDelete,
}

// dispatch sends the queued backups and tasks of the agents connected here.
func (s *Service) dispatch(ctx context.Context) {
	servers := s.fleet.Hub().Connected()
	if len(servers) == 0 {
		return
	}
	bs, err := s.st.ClaimQueuedBackups(ctx, servers, 100)
	if err != nil && ctx.Err() == nil {
		s.log.Error("claim queued backups", "err", err)
	}
	for _, b := range bs {
		s.sendBackup(ctx, b, false)
		s.notify(ctx, "log:"+b.ID.String())
	}
	ts, err := s.st.ClaimQueuedBackupTasks(ctx, servers, 100)
	if err != nil && ctx.Err() == nil {
		s.log.Error("claim queued backup tasks", "err", err)
	}
	for _, t := range ts {
		s.sendTask(ctx, t)
		s.notify(ctx, "log:"+t.ID.String())
	}
}

// objectKey is where a backup's object goes, under the destination's
// directory or prefix: the app's name, then the backup's id.
func objectKey(b store.Backup) string {
	ext := map[store.BackupKind]string{store.BackupPostgres: ".pgdump", store.BackupMySQL: ".sql", store.BackupDirectory: ".tar"}[b.Kind]
	return path.Join(b.AppName, b.ID.String()+ext+".zst.age")
}

// destinationOfRow is the agent's view of a destination, with its
// credentials: for a JobStart only.
func (s *Service) agentDestination(ctx context.Context, id store.ID) (*agentv1.BackupDestination, error) {
	d, err := s.st.BackupDestination(ctx, id)
	if err != nil {
		return nil, err
	}
	c := destinationOf(d).Settings
	out := &agentv1.BackupDestination{
		Kind: string(d.Kind), Path: c.Path, Endpoint: c.Endpoint, Bucket: c.Bucket, Region: c.Region, Prefix: c.Prefix,
		PathStyle: c.PathStyle, Host: c.Host, Port: uint32(c.Port), Username: c.Username, HostKeyFingerprint: c.HostKeyFingerprint,
	}
	if d.HasCredentials {
		sec, err := s.st.BackupDestinationCredentials(ctx, id)
		if err != nil {
			return nil, err
		}
		if sec != nil {
			out.AccessKeyId, out.SecretAccessKey, out.Password = sec.AccessKeyID, sec.SecretAccessKey, sec.Password
			if sec.PrivateKey != "" {
				out.PrivateKey = []byte(sec.PrivateKey)
			}
		}
	}
	return out, nil
}

// connectionURL reads a connection URL from the app's merged environment.
func (s *Service) connectionURL(ctx context.Context, appID *store.ID, env *string) (string, error) {
	if env == nil || *env == "" {
		return "", nil
	}
	if appID == nil {
		return "", fmt.Errorf("%w: the app was deleted, so its environment (%s) is gone", ErrRefused, *env)
	}
	vars, err := s.st.MergedAppEnv(ctx, *appID, store.EnvironmentProduction)
	if err != nil {
		return "", err
	}
	v, ok := vars[*env]
	if !ok || v == "" {
		return "", fmt.Errorf("%w: the app's environment has no %s", ErrRefused, *env)
	}
	return v, nil
}

func (s *Service) backupStart(ctx context.Context, b store.Backup) (*agentv1.JobStart, error) {
	if b.EncryptionKeyID == nil {
		return nil, fmt.Errorf("%w: no encryption key chosen", ErrRefused)
	}
	kid, err := store.ParseID(*b.EncryptionKeyID)
	if err != nil {
		return nil, fmt.Errorf("%w: unknown encryption key", ErrRefused)
	}
	var recipient string
	keys, err := s.st.BackupEncryptionKeys(ctx)
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if k.ID == kid {
			recipient = k.Recipient
		}
	}
	if recipient == "" {
		return nil, fmt.Errorf("%w: encryption key %s is not in the keyring", ErrRefused, kid)
	}
	if b.ServerID == nil {
		return nil, errServerRemoved
	}
	// The server's own recipient, not the keyring's: the identity its
	// verify and restore jobs get opens this server's backups only.
	if recipient, err = s.serverRecipient(ctx, kid, *b.ServerID); err != nil {
		return nil, err
	}
	dest, err := s.agentDestination(ctx, b.DestinationID)
	if err != nil {
		return nil, err
	}
	url, err := s.connectionURL(ctx, b.AppID, b.ConnectionEnv)
	if err != nil {
		return nil, err
	}
	app, err := s.appOf(ctx, b.AppID)
	if err != nil {
		return nil, err
	}
	js := &agentv1.JobStart{
		JobId: b.ID.String(), AppName: b.AppName, Kind: KindBackup,
		Timeout: durationpb.New(time.Duration(b.TimeoutSeconds) * time.Second), AckedSeq: uint64(b.AgentSeq),
		Backup: &agentv1.BackupJob{
			Source:      sourceOf(app, b.Kind, b.Source, url),
			Destination: dest, Object: &agentv1.BackupObject{Key: objectKey(b), Kind: string(b.Kind)}, Recipient: recipient,
		},
	}
	if b.AppID != nil {
		js.AppId = b.AppID.String()
	}
	if b.ScheduleID != nil && b.ScheduledFor != nil {
		// The run key: the agent never runs this tick from its held copy.
		js.Backup.ScheduleId, js.Backup.ScheduledFor = b.ScheduleID.String(), timestamppb.New(*b.ScheduledFor)
	}
	return js, nil
}

// appOf is the backup's app, nil for none (its app_id was cleared when the
// app went).
func (s *Service) appOf(ctx context.Context, id *store.ID) (*store.App, error) {
	if id == nil {
		return nil, nil
	}
	a, err := s.st.App(ctx, *id)
	if err != nil {
		return nil, err
	}
	return &a, nil
}

func (s *Service) taskStart(ctx context.Context, t store.BackupTask) (*agentv1.JobStart, error) {
	dest, err := s.agentDestination(ctx, t.DestinationID)
	if err != nil {
		return nil, err
	}
	js := &agentv1.JobStart{
		JobId: t.ID.String(), Kind: taskKinds[t.Kind],
		Timeout: durationpb.New(time.Duration(t.TimeoutSeconds) * time.Second), AckedSeq: uint64(t.AgentSeq),
		Backup: &agentv1.BackupJob{Destination: dest, Force: t.Force},
	}
	if t.Kind == store.TaskProbe {
		js.AppName = "probe"
		return js, nil
	}
	if t.BackupID == nil {
		return nil, fmt.Errorf("%w: the backup was deleted", store.ErrNotFound)
	}
	b, err := s.st.Backup(ctx, *t.BackupID)
	if err != nil {
		return nil, err
	}
	if t.Kind == store.TaskCleanup {
		// The key the backup was given; nothing there is called good.
		if b.Status == store.BackupSucceeded || !b.Status.Finished() {
			return nil, fmt.Errorf("%w: backup %s is %s; only an unsucceeded backup is cleaned up", ErrRefused, b.ID, b.Status)
		}
		js.AppName = b.AppName
		if b.AppID != nil {
			js.AppId = b.AppID.String()
		}
		js.Backup.Object = &agentv1.BackupObject{Key: objectKey(b), Kind: string(b.Kind)}
		return js, nil
	}
	if b.ObjectKey == nil || b.SizeBytes == nil {
		return nil, fmt.Errorf("%w: backup %s has no stored object", ErrRefused, b.ID)
	}
	js.AppName = b.AppName
	if b.AppID != nil {
		js.AppId = b.AppID.String()
	}
	js.Backup.Object = &agentv1.BackupObject{Key: *b.ObjectKey, Size: *b.SizeBytes, Sha256: b.ChecksumSHA256, Kind: string(b.Kind)}
	js.Backup.Source = &agentv1.BackupSource{Kind: string(b.Kind), Name: b.Source}
	switch t.Kind {
	case store.TaskVerify, store.TaskRestore:
		id, err := s.identityFor(ctx, b)
		if err != nil {
			return nil, err
		}
		js.Backup.Identity = string(id)
	}
	if t.Kind == store.TaskRestore {
		url, err := s.connectionURL(ctx, b.AppID, t.ConnectionEnv)
		if err != nil {
			return nil, err
		}
		// A directory inside the app's path is written through it, as it
		// was read (sourceOf): the app's user may have put a symlink out
		// of the app on the way since, and the agent restores as root.
		app, err := s.appOf(ctx, b.AppID)
		if err != nil {
			return nil, err
		}
		js.Backup.Source = sourceOf(app, b.Kind, deref(t.Target), url)
	}
	return js, nil
}

// sendBackup sends a backup's JobStart (and its cancel) to its agent. A job
// that cannot be built fails at once with the reason; resent says an agent
// may have it already (and so needs its cleanup).
func (s *Service) sendBackup(ctx context.Context, b store.Backup, resent bool) {
	if b.ServerID == nil {
		s.failUnbuildable(ctx, Job{Backup: &b}, errServerRemoved, resent)
		return
	}
	js, err := s.backupStart(ctx, b)
	if err != nil {
		s.failUnbuildable(ctx, Job{Backup: &b}, err, resent)
		return
	}
	s.sendJob(*b.ServerID, js, b.CancelRequestedAt != nil)
}

func (s *Service) sendTask(ctx context.Context, t store.BackupTask) {
	if t.ServerID == nil {
		s.failUnbuildable(ctx, Job{Task: &t}, errServerRemoved, false)
		return
	}
	if t.Kind == store.TaskDownload && !s.downloadWaiting(t.ID) {
		// The client that asked went away (or asked another controller):
		// nobody would read the bytes.
		s.failUnbuildable(ctx, Job{Task: &t}, fmt.Errorf("%w: the download's client is gone", ErrRefused), false)
		return
	}
	js, err := s.taskStart(ctx, t)
	if err != nil {
		s.failUnbuildable(ctx, Job{Task: &t}, err, false)
		return
	}
	s.sendJob(*t.ServerID, js, t.CancelRequestedAt != nil)
}

func (s *Service) sendJob(server store.ID, js *agentv1.JobStart, cancel bool) {
	jobs.Send(s.fleet.Hub(), s.log, server, js, cancel, "job")
}

// errServerRemoved: the job's server was removed before it ran.
var errServerRemoved = fmt.Errorf("%w: the server was removed", ErrRefused)

// safeReason keeps an error's kind but never a store error's details.
func safeReason(err error) string {
	switch {
	case errors.Is(err, ErrRefused), errors.Is(err, ErrInvalid):
		return err.Error() // built from names, never secrets
	case errors.Is(err, store.ErrNotFound):
		return "a referenced record is missing"
	default:
		return "secrets could not be opened (check the encryption keys)"
	}
}

// failUnbuildable fails a job that could not be built. A backup just
// claimed never reached an agent and needs no cleanup; one re-sent
// (sent) may be running there.
func (s *Service) failUnbuildable(ctx context.Context, j Job, cause error, sent bool) {
	reason := "could not prepare the job: " + safeReason(cause)
	s.log.Error("dispatch: build backup job", "job", jobID(j).String(), "err", cause)
	err := s.st.InTx(ctx, func(tx *store.Store) error {
		return s.endJob(ctx, tx, j, store.BackupResult{Status: store.BackupFailed, FailureReason: &reason}, nil, store.ActorSystem, "system", sent)
	})
	if err == nil {
		s.notify(ctx, "log:"+jobID(j).String())
	}
}

func jobID(j Job) store.ID {
	if j.Backup != nil {
		return j.Backup.ID
	}
	return j.Task.ID
}

// AgentConnected re-sends the server's unfinished backups and tasks, then
// lets the deploys service do the same for its jobs.
func (s *Service) AgentConnected(ctx context.Context, serverID store.ID) {
	bs, err := s.st.ActiveBackupsForServer(ctx, serverID)
	if err != nil {
		s.log.Error("list active backups", "server_id", serverID.String(), "err", err)
	}
	for _, b := range bs {
		s.sendBackup(ctx, b, true)
	}
	ts, err := s.st.ActiveBackupTasksForServer(ctx, serverID)
	if err != nil {
		s.log.Error("list active backup tasks", "server_id", serverID.String(), "err", err)
	}
	for _, t := range ts {
		s.sendTask(ctx, t)
	}
	s.heldConnected(ctx, serverID)
	s.poke()
	if s.next != nil {
		s.next.AgentConnected(ctx, serverID)
	}
}

// JobEvents stores the events of backups and tasks (one transaction, each
// number once) and hands the rest, in their order, to the deploys service.
// An event for another server's backup job is ErrInvalid (the stream
// ends).
func (s *Service) JobEvents(ctx context.Context, serverID store.ID, msgs []*agentv1.ConnectRequest) ([]*agentv1.JobAck, error) {
	var (
		mine    []store.BackupJobEvent
		decoded []jobs.Event // mine[i] as the agent wrote it
		others  []*agentv1.ConnectRequest
		known   = map[string]bool{} // job id -> a backup job of this server
	)
	for _, m := range msgs {
		e, ok, err := jobs.Decode(m)
		if err != nil {
			return nil, fmt.Errorf("%w: %s", ErrInvalid, err)
		}
		if !ok {
			others = append(others, m)
			continue
		}
		jobID, at := e.JobID, e.At
		ev := store.BackupJobEvent{Seq: e.Seq, Step: e.Step, Data: e.Data}
		if r := e.Result; r != nil {
			ev.Apply = func(tx *store.Store, j store.BackupJob) error { return s.finish(ctx, tx, serverID, j, r) }
			ev.Fresh = true
		} else {
			ev.Apply = func(tx *store.Store, j store.BackupJob) error { return startIfDispatched(ctx, tx, j, at) }
		}
		mineJob, checked := known[jobID]
		if !checked {
			id, err := store.ParseID(jobID)
			if err == nil {
				k, sid, err := s.st.BackupJobServer(ctx, id)
				switch {
				case errors.Is(err, store.ErrNotFound):
				case err != nil:
					return nil, err
				case sid == nil || *sid != serverID:
					return nil, fmt.Errorf("%w: backup job %s is not this server's", ErrInvalid, jobID)
				default:
					_ = k
					mineJob = true
				}
			}
			known[jobID] = mineJob
		}
		if !mineJob {
			others = append(others, m)
			continue
		}
		if ev.Seq <= 0 {
			return nil, fmt.Errorf("%w: job event for %q seq %d", ErrInvalid, truncate(jobID, 40), ev.Seq)
		}
		ev.JobID, _ = store.ParseID(jobID)
		mine = append(mine, ev)
		decoded = append(decoded, e)
	}
	var acks []*agentv1.JobAck
	if len(others) > 0 && s.next != nil {
		a, err := s.next.JobEvents(ctx, serverID, others)
		if err != nil {
			return nil, err
		}
		acks = a
	}
	if len(mine) == 0 {
		return acks, nil
	}
	out, err := s.st.CommitBackupJobEvents(ctx, mine, s.cfg.LogCap)
	if err != nil {
		return nil, err
	}
	keys := make([]store.ID, len(mine))
	for i, ev := range mine {
		keys[i] = ev.JobID
	}
	var notes []string
	for _, c := range jobs.Acks(s.log, "backup job", "job", keys, decoded, out) {
		acks = append(acks, c.AckOf())
		if c.Changed {
			notes = append(notes, "log:"+c.JobID)
		}
	}
	s.notifyAll(ctx, notes)
	return acks, nil
}

func startIfDispatched(ctx context.Context, tx *store.Store, j store.BackupJob, at time.Time) error {
	atp := jobs.StartedAt(at)
	var err error
	switch {
	case j.Backup != nil && j.Backup.Status == store.BackupDispatched:
		_, err = tx.StartBackup(ctx, j.Backup.ID, atp)
	case j.Task != nil && j.Task.Status == store.BackupDispatched:
		_, err = tx.StartBackupTask(ctx, j.Task.ID, atp)
	}
	return jobs.IgnoreWrongState(err)
}

// finish applies a job's result. A job already ended by the controller
// keeps its status. A backup succeeds only with its object's key, size and
// SHA-256; an agent that reports success without them, or with another
// key than the one it was given, fails it.
func (s *Service) finish(ctx context.Context, tx *store.Store, serverID store.ID, j store.BackupJob, r *agentv1.JobResult) error {
	if jobStatus(j).Finished() {
		s.log.Info("result for a backup job already ended", "job", jobID(j).String(), "agent_status", r.GetStatus())
		return nil
	}
	st := store.BackupStatus(r.GetStatus())
	if !st.Finished() {
		return fmt.Errorf("%w: job result status %q", ErrInvalid, truncate(r.GetStatus(), 20))
	}
	if err := startIfDispatched(ctx, tx, j, r.GetStartedAt().AsTime()); err != nil {
		return err
	}
	res := store.BackupResult{Status: st, FailureReason: optText(truncate(r.GetError(), 2000))}
	if ft := r.GetFinishedAt(); ft != nil && ft.AsTime().Unix() > 0 {
		t := ft.AsTime()
		res.At = &t
	}
	var obj *store.BackupObject
	if st == store.BackupSucceeded && j.Backup != nil {
		o := r.GetBackupObject()
		want := objectKey(*j.Backup)
		switch {
		case o == nil || len(o.GetSha256()) != 32 || o.GetSize() <= 0:
			res = store.BackupResult{Status: store.BackupFailed, At: res.At, FailureReason: optText("the agent reported success without the stored object's size and SHA-256")}
		case o.GetKey() != want:
			res = store.BackupResult{Status: store.BackupFailed, At: res.At, FailureReason: optText("the agent reported another object key than the one it was given")}
		default:
			obj = &store.BackupObject{ObjectKey: want, SizeBytes: o.GetSize(), ChecksumSHA256: o.GetSha256(), EncryptionKeyID: deref(j.Backup.EncryptionKeyID), At: res.At}
		}
	}
	if res.Status != store.BackupSucceeded && res.FailureReason == nil {
		res.FailureReason = optText(string(res.Status) + " during step " + truncate(r.GetFailedStep(), 64))
	}
	return s.end(ctx, tx, j, res, obj, store.ActorAgent, "agent:"+serverID.String())
}

// end records a job's end in tx, with what it means (a verification, a
// check of the destination, a deleted row, a cleanup to queue), its
// notification and its activity.
func (s *Service) end(ctx context.Context, tx *store.Store, j store.BackupJob, res store.BackupResult, obj *store.BackupObject, actorType store.ActorType, actor string) error {
	return s.endJob(ctx, tx, j, res, obj, actorType, actor, true)
}

// endJob is end; cleanup false: the backup certainly never reached an
// agent, so it left nothing to clean up.
func (s *Service) endJob(ctx context.Context, tx *store.Store, j store.BackupJob, res store.BackupResult, obj *store.BackupObject, actorType store.ActorType, actor string, cleanup bool) error {
	if j.Backup != nil {
		var done store.Backup
		var err error
		if res.Status == store.BackupSucceeded {
			done, err = tx.SucceedBackup(ctx, j.Backup.ID, *obj)
		} else {
			done, err = tx.FinishBackup(ctx, j.Backup.ID, res)
		}
		if errors.Is(err, store.ErrWrongState) {
			return nil
		}
		if err != nil {
			return err
		}
		if done.Status == store.BackupSucceeded {
			if _, err := tx.RecordBackupDestinationCheck(ctx, done.DestinationID, res.At, nil); err != nil {
				return err
			}
		}
		changes := map[string]any{"status": string(done.Status)}
		if done.FailureReason != nil {
			changes["reason"] = *done.FailureReason
		}
		if done.SizeBytes != nil {
			changes["size_bytes"] = *done.SizeBytes
			changes["sha256"] = hex.EncodeToString(done.ChecksumSHA256)
		}
		s.systemActivity(ctx, tx, actorType, actor, "backup."+string(done.Status), "backup", done.ID, done.AppName, changes)
		if err := s.afterScheduledRun(ctx, tx, done); err != nil {
			return err
		}
		if cleanup && needsCleanup(done) {
			if _, err := s.queueCleanup(ctx, tx, done, nil, Peer{}, false); err != nil {
				return err
			}
		}
		return s.publishBackup(ctx, tx, done)
	}
	t := *j.Task
	done, err := tx.FinishBackupTask(ctx, t.ID, res)
	if errors.Is(err, store.ErrWrongState) {
		return nil
	}
	if err != nil {
		return err
	}
	reason := deref(done.FailureReason)
	switch t.Kind {
	case store.TaskProbe:
		var cerr *string
		if done.Status != store.BackupSucceeded {
			cerr = optText(truncate("test "+string(done.Status)+": "+reason, 2000))
		}
		if _, err := tx.RecordBackupDestinationCheck(ctx, t.DestinationID, res.At, cerr); err != nil {
			return err
		}
	case store.TaskVerify:
		if t.BackupID != nil {
			var verr *string
			if done.Status != store.BackupSucceeded {
				verr = optText(truncate("verification "+string(done.Status)+": "+reason, 2000))
			}
			b, err := tx.RecordBackupVerification(ctx, *t.BackupID, res.At, verr)
			if err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrWrongState) {
				return err
			}
			if err == nil && verr != nil {
				if err := s.publish(ctx, tx, b, notifyVerification(b, *verr)); err != nil {
					return err
				}
			}
		}
	case store.TaskCleanup:
		if err := s.cleanupEnded(ctx, tx, t, done, actorType, actor); err != nil {
			return err
		}
	case store.TaskDelete:
		if t.BackupID != nil {
			if done.Status == store.BackupSucceeded {
				b, err := tx.Backup(ctx, *t.BackupID)
				if err == nil {
					if err := tx.DeleteBackup(ctx, b.ID); err != nil {
						return err
					}
					s.systemActivity(ctx, tx, actorType, actor, kind.BackupDeleted, "backup", b.ID, b.AppName, map[string]any{"object_key": deref(b.ObjectKey)})
				} else if !errors.Is(err, store.ErrNotFound) {
					return err
				}
			} else if err := tx.RecordBackupDeleteError(ctx, *t.BackupID, truncate("delete "+string(done.Status)+": "+reason, 2000)); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
	}
	changes := map[string]any{"status": string(done.Status), "kind": string(t.Kind)}
	if reason != "" {
		changes["reason"] = reason
	}
	subject := t.ID
	if t.BackupID != nil {
		subject = *t.BackupID
	}
	s.systemActivity(ctx, tx, actorType, actor, "backup_task."+string(done.Status), "backup", subject, string(t.Kind), changes)
	return nil
}

// publishBackup publishes backup.succeeded or backup.failed (canceled and
// timed_out backups are failures to whoever counts on them).
func (s *Service) publishBackup(ctx context.Context, tx *store.Store, b store.Backup) error {
	if b.Status == store.BackupSucceeded {
		return s.publish(ctx, tx, b, notify.Event{Kind: "backup.succeeded", Level: notify.Info,
			Title: "Backup of " + b.AppName + " stored", Body: fmt.Sprintf("%s %s: %d bytes, SHA-256 %s", b.Kind, b.Source, deref64(b.SizeBytes), hex.EncodeToString(b.ChecksumSHA256))})
	}
	body := string(b.Status)
	if b.FailureReason != nil {
		body += ": " + *b.FailureReason
	}
	return s.publish(ctx, tx, b, notify.Event{Kind: "backup.failed", Level: notify.Critical,
		Title: "Backup of " + b.AppName + " " + strings.ReplaceAll(string(b.Status), "_", " "), Body: body})
}

func (s *Service) publish(ctx context.Context, tx *store.Store, b store.Backup, e notify.Event) error {
	e.AppID, e.ServerID, e.Link = b.AppID, b.ServerID, "/backups/"+b.ID.String()
	if _, err := notify.Publish(ctx, tx, e); err != nil {
		return fmt.Errorf("publish %s: %w", e.Kind, err)
	}
	return nil
}

func deref64(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

// sweep ends overdue backups and tasks as deploys' sweep ends deployments.
func (s *Service) sweep(ctx context.Context) {
	now := s.cfg.Now()
	bs, err := s.st.OverdueBackups(ctx, now, 100)
	if err != nil && ctx.Err() == nil {
		s.log.Error("list overdue backups", "err", err)
	}
	var overdue []Job
	for i := range bs {
		overdue = append(overdue, Job{Backup: &bs[i]})
	}
	ts, err := s.st.OverdueBackupTasks(ctx, now, 100)
	if err != nil && ctx.Err() == nil {
		s.log.Error("list overdue backup tasks", "err", err)
	}
	for i := range ts {
		overdue = append(overdue, Job{Task: &ts[i]})
	}
	g := jobs.Grace{Unreachable: s.cfg.UnreachableGrace, Start: s.cfg.StartGrace, Started: s.started}
	for _, j := range overdue {
		st, reason, ok := jobs.Overdue[store.BackupStatus](g, now, jobStatus(j) == store.BackupQueued, cancelRequested(j), deadlineOf(j))
		if !ok {
			continue
		}
		res := store.BackupResult{Status: st, FailureReason: optText(reason)}
		err := s.st.InTx(ctx, func(tx *store.Store) error {
			return s.end(ctx, tx, j, res, nil, store.ActorSystem, "system")
		})
		if err != nil {
			continue
		}
		s.log.Warn("backup job ended by the controller", "job", jobID(j).String(), "status", res.Status, "reason", *res.FailureReason)
		s.notify(ctx, "log:"+jobID(j).String())
	}
}

func deadlineOf(j Job) time.Time {
	if j.Backup != nil {
		return j.Backup.DeadlineAt
	}
	return j.Task.DeadlineAt
}

func cancelRequested(j Job) bool {
	if j.Backup != nil {
		return j.Backup.CancelRequestedAt != nil
	}
	return j.Task.CancelRequestedAt != nil
}

func notifyVerification(b store.Backup, msg string) notify.Event {
	return notify.Event{Kind: "backup.verification_failed", Level: notify.Critical,
		Title: "Backup of " + b.AppName + " failed verification", Body: msg}
}
