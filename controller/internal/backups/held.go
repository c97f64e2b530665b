package backups

// Agent-held schedules (issue 18 §3): schedules keep running while no
// controller is reachable.
//
// Each agent holds the enabled backup schedules of its apps, sent after
// every Welcome and whenever they change (HeldBackupSchedules). What a run
// needs besides the cron (the source with its connection URL, the
// destination with its credentials, the age recipient) travels as a
// BackupJob sealed with age to the agent's own X25519 recipient
// (Hello.held_recipient): the agent writes it to disk only sealed and
// opens it in memory for a run.
//
// Why sealed credentials rather than a short-lived destination grant: a
// grant (a presigned URL, a temporary S3 key) exists for S3 only, not for
// SFTP or a local directory, and it expires exactly when it is needed, in
// an outage of unknown length. A sealed copy works for every destination
// kind for as long as the outage lasts, and is no wider than what the
// agent already receives in every backup JobStart; rotating a
// destination's credentials re-sends the held schedules sealed again.
//
// While the agent is connected to some controller, that controller fires
// the ticks; the agent runs a tick itself only while it has no stream.
// A run it made is reported in the next Hello (HeldBackupRun): the
// controller stores it under the tick's run key (schedule, scheduled time;
// unique) before the stream counts as connected, so the due tick it would
// otherwise fire now conflicts and is not run again. Its job events then
// arrive as any job's (numbered, stored once). A controller run of the
// same tick that the agent never started (queued, or dispatched over a
// stream that was already dead) gives way to the agent's run.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"filippo.io/age"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

const maxHeldRuns = 1000

var errTickTaken = errors.New("the tick already ran")

// AgentHello reads an agent's hello before its stream counts as
// connected: the recipient its held schedules are sealed to, and the runs
// it made from them (stored here under their run keys). An error refuses
// the stream; a run that cannot be stored is logged and left for the next
// hello.
func (s *Service) AgentHello(ctx context.Context, serverID store.ID, hello *agentv1.Hello) error {
	rcpt := hello.GetHeldRecipient()
	if rcpt != "" {
		if len(rcpt) > 200 {
			return fmt.Errorf("%w: held_recipient of %d bytes", ErrInvalid, len(rcpt))
		}
		if _, err := age.ParseX25519Recipient(rcpt); err != nil {
			return fmt.Errorf("%w: held_recipient is not an age X25519 recipient", ErrInvalid)
		}
	}
	runs := hello.GetHeldRuns()
	if len(runs) > maxHeldRuns {
		return fmt.Errorf("%w: %d held runs in one hello", ErrInvalid, len(runs))
	}
	var acked []string
	for _, r := range runs {
		ok, err := s.adoptHeldRun(ctx, serverID, r)
		if err != nil {
			if errors.Is(err, ErrInvalid) {
				return err
			}
			s.log.Error("store a held backup run", "server_id", serverID.String(), "job", truncate(r.GetJobId(), 40), "err", err)
			continue
		}
		if ok {
			acked = append(acked, r.GetJobId())
		}
	}
	s.mu.Lock()
	if s.heldRecipients == nil {
		s.heldRecipients = map[store.ID]string{}
		s.heldAcks = map[store.ID][]string{}
	}
	s.heldRecipients[serverID] = rcpt
	s.heldAcks[serverID] = acked
	s.mu.Unlock()
	return nil
}

// adoptHeldRun stores one held run under its run key; ok: the agent may
// forget it (stored now or before, or refused for good).
func (s *Service) adoptHeldRun(ctx context.Context, serverID store.ID, r *agentv1.HeldBackupRun) (bool, error) {
	jobID, err := store.ParseID(r.GetJobId())
	if err != nil {
		return false, fmt.Errorf("%w: held run job id %q", ErrInvalid, truncate(r.GetJobId(), 40))
	}
	schedID, err := store.ParseID(r.GetScheduleId())
	if err != nil || r.GetScheduledFor() == nil || r.GetStartedAt() == nil {
		return false, fmt.Errorf("%w: held run %s without its schedule and times", ErrInvalid, jobID)
	}
	if b, err := s.st.Backup(ctx, jobID); err == nil {
		if b.ServerID == nil || *b.ServerID != serverID {
			return false, fmt.Errorf("%w: held run %s is not this server's", ErrInvalid, jobID)
		}
		return true, nil // a report seen before (its ack was lost)
	} else if !errors.Is(err, store.ErrNotFound) {
		return false, err
	}
	sc, err := s.st.BackupSchedule(ctx, schedID)
	if errors.Is(err, store.ErrNotFound) {
		s.log.Warn("held run of a removed schedule; not stored", "server_id", serverID.String(), "job", jobID.String())
		return true, nil
	}
	if err != nil {
		return false, err
	}
	a, err := s.st.App(ctx, sc.AppID)
	if err != nil {
		return false, err
	}
	if a.ServerID != serverID {
		return false, fmt.Errorf("%w: held run %s is of another server's schedule", ErrInvalid, jobID)
	}
	tick := r.GetScheduledFor().AsTime()
	started := r.GetStartedAt().AsTime()
	keyID := truncate(r.GetEncryptionKeyId(), 40)
	var stored store.Backup
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		p := store.ScheduledBackup{ID: jobID, Schedule: sc, AppName: a.Name, ServerID: serverID, ScheduledFor: tick,
			EncryptionKey: keyID, Timeout: s.cfg.Timeout, Held: true, StartedAt: &started}
		b, err := tx.InsertScheduledBackup(ctx, p)
		if errors.Is(err, store.ErrRunExists) {
			// A controller run of this tick that the agent never
			// started (queued, or dispatched over a stream that was
			// already dead: an agent that got it never runs the tick
			// from its held copy): it gives way.
			if _, serr := tx.SupersedeScheduledBackup(ctx, b.ID, "superseded by backup "+jobID.String()+
				", which the agent ran from its held schedule while no controller was reachable"); serr != nil {
				return fmt.Errorf("%w: the tick's run %s is %s", errTickTaken, b.ID, b.Status)
			}
			b, err = tx.InsertScheduledBackup(ctx, p)
		}
		if err != nil {
			return err
		}
		stored = b
		// The tick ran: the controller's next run is the first tick after
		// it and after now, never this one again.
		next, perr := parseCron(sc.Cron, sc.Timezone)
		if perr == nil && sc.Enabled {
			at := next(s.cfg.Now())
			if t2 := next(tick); t2.After(at) {
				at = t2
			}
			if _, err := tx.SetBackupScheduleRun(ctx, sc.ID, started, at); err != nil {
				return err
			}
		}
		s.systemActivity(ctx, tx, store.ActorAgent, "agent:"+serverID.String(), kind.BackupHeldRunReported, "backup", b.ID, a.Name,
			map[string]any{"schedule": sc.ID.String(), "scheduled_for": tick.UTC().Format(time.RFC3339), "started_at": started.UTC().Format(time.RFC3339)})
		return nil
	})
	if errors.Is(err, errTickTaken) {
		// Cannot happen with a well-behaved agent; acknowledged so it is
		// not reported forever, and said loudly.
		s.log.Error("held backup run of a tick that already ran; not stored", "server_id", serverID.String(), "job", jobID.String(), "err", err)
		return true, nil
	}
	if err != nil {
		return false, err
	}
	s.log.Info("held backup run stored", "server_id", serverID.String(), "backup", stored.ID.String(), "scheduled_for", tick)
	return true, nil
}

// heldConnected runs after the welcome: the agent gets its held schedules
// and the acks of the runs its hello reported.
func (s *Service) heldConnected(ctx context.Context, serverID store.ID) {
	s.mu.Lock()
	acks := s.heldAcks[serverID]
	delete(s.heldAcks, serverID)
	s.mu.Unlock()
	if len(acks) > 0 {
		_ = s.fleet.Hub().Send(serverID, &agentv1.ConnectResponse{Msg: &agentv1.ConnectResponse_HeldRunsAck{HeldRunsAck: &agentv1.HeldRunsAck{JobIds: acks}}})
	}
	s.sendHeld(ctx, serverID)
}

// heldChanged tells the controller holding a server's stream to re-send
// its held schedules.
func (s *Service) heldChanged(ctx context.Context, serverID store.ID) {
	s.notify(ctx, "held:"+serverID.String())
}

// AppChanged re-sends the held schedules of the app's server (through
// deploys.Service.OnAppChange): they carry the app's name (the object
// keys' prefix) and the connection URL taken from its environment, and an
// agent must stop holding the schedules of a deleted app, or it would run
// them during an outage. The NOTIFY goes through tx: sent at its commit,
// the schedules are read after the change.
func (s *Service) AppChanged(ctx context.Context, tx *store.Store, a store.App) {
	if err := tx.PgNotify(ctx, jobsChannel, "held:"+a.ServerID.String()); err != nil {
		s.log.Warn("re-send held backup schedules", "app_id", a.ID.String(), "err", err)
	}
}

// sendHeld sends a connected agent the schedules it holds, sealed to its
// recipient. An agent that named no recipient holds none.
func (s *Service) sendHeld(ctx context.Context, serverID store.ID) {
	if !s.fleet.Hub().Holds(serverID) {
		return
	}
	s.mu.Lock()
	rcpt := s.heldRecipients[serverID]
	s.mu.Unlock()
	if rcpt == "" {
		return
	}
	msg, err := s.heldSchedules(ctx, serverID, rcpt)
	if err != nil {
		s.log.Error("build held backup schedules", "server_id", serverID.String(), "err", err)
		return
	}
	if err := s.fleet.Hub().Send(serverID, &agentv1.ConnectResponse{Msg: &agentv1.ConnectResponse_HeldBackupSchedules{HeldBackupSchedules: msg}}); err != nil {
		s.log.Warn("send held backup schedules", "server_id", serverID.String(), "err", err)
	}
}

var objectSuffix = map[store.BackupKind]string{store.BackupPostgres: ".pgdump.zst.age", store.BackupMySQL: ".sql.zst.age", store.BackupDirectory: ".tar.zst.age"}

func (s *Service) heldSchedules(ctx context.Context, serverID store.ID, rcpt string) (*agentv1.HeldBackupSchedules, error) {
	r, err := age.ParseX25519Recipient(rcpt)
	if err != nil {
		return nil, err
	}
	scheds, err := s.st.HeldBackupSchedules(ctx, serverID)
	if err != nil {
		return nil, err
	}
	out := &agentv1.HeldBackupSchedules{}
	if len(scheds) == 0 {
		return out, nil
	}
	key, err := s.currentKey(ctx)
	if err != nil {
		return nil, err
	}
	// This server's recipient (serverkey.go), as for the jobs it is sent.
	recipient, err := s.serverRecipient(ctx, key.ID, serverID)
	if err != nil {
		return nil, err
	}
	for _, sc := range scheds {
		a, err := s.st.App(ctx, sc.AppID)
		if err != nil {
			return nil, err
		}
		dest, err := s.agentDestination(ctx, sc.DestinationID)
		if err != nil {
			return nil, err
		}
		url, err := s.connectionURL(ctx, &sc.AppID, sc.ConnectionEnv)
		if err != nil {
			// The agent cannot run this one alone; the controller's run
			// fails with the reason when it fires.
			s.log.Warn("held schedule left out", "schedule_id", sc.ID.String(), "err", safeReason(err))
			continue
		}
		job := &agentv1.BackupJob{
			Source:      sourceOf(&a, sc.Kind, sc.Source, url),
			Destination: dest, Recipient: recipient, ScheduleId: sc.ID.String(),
		}
		plain, err := proto.Marshal(job)
		if err != nil {
			return nil, err
		}
		var sealed bytes.Buffer
		w, err := age.Encrypt(&sealed, r)
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(plain); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
		clear(plain)
		h := &agentv1.HeldBackupSchedule{
			ScheduleId: sc.ID.String(), AppId: sc.AppID.String(), AppName: a.Name, Cron: sc.Cron, Timezone: sc.Timezone,
			Timeout: durationpb.New(s.cfg.Timeout), EncryptionKeyId: key.ID.String(), ObjectSuffix: objectSuffix[sc.Kind],
			Sealed: sealed.Bytes(),
		}
		if sc.NextRunAt != nil {
			h.NextRunAt = timestamppb.New(*sc.NextRunAt)
		}
		out.Schedules = append(out.Schedules, h)
	}
	return out, nil
}

// relayHeld handles a "held:<server>" (or "held:all") notification.
func (s *Service) relayHeld(rest string) {
	var servers []store.ID
	if rest == "all" {
		servers = s.fleet.Hub().Connected()
	} else if sid, err := store.ParseID(rest); err == nil && s.fleet.Hub().Holds(sid) {
		servers = []store.ID{sid}
	}
	if len(servers) == 0 {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, sid := range servers {
			s.sendHeld(ctx, sid)
		}
	}()
}
