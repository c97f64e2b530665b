package client

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/berthhq/berth/agent/internal/deploy"
	"github.com/berthhq/berth/agent/internal/held"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// OpenHeld opens the agent's held backup schedules (package held) on this
// link's executor; call Run on the result with the agent's context.
func (j *Jobs) OpenHeld(dataDir string, cfg held.Config) (*held.Holder, error) {
	cfg.DataDir = dataDir
	cfg.Start = j.startHeld
	cfg.Running = func(id string) bool { _, found := slices.BinarySearch(j.Exec.Running(), id); return found }
	if cfg.NewID == nil {
		cfg.NewID = NewULID
	}
	h, err := held.Open(cfg)
	if err != nil {
		return nil, err
	}
	j.held = h
	return h, nil
}

// startHeld runs a held tick's backup on the executor, as if the
// controller had sent it: the same job kind, journal and events.
func (j *Jobs) startHeld(ctx context.Context, jobID string, s held.Schedule, job *agentv1.BackupJob) error {
	err := j.Exec.Start(ctx, deploy.Spec{
		DeploymentID: jobID, AppID: s.AppID, AppName: s.AppName, Kind: deploy.KindBackup, Timeout: s.Timeout,
		Backup: backupJobOf(job),
	})
	if err == nil {
		j.poke()
	}
	return err
}

// heldHello fills a hello with the recipient and the runs to report.
func (j *Jobs) heldHello(h *agentv1.Hello) {
	if j == nil || j.held == nil {
		return
	}
	h.HeldRecipient, h.HeldRuns = j.held.Recipient(), j.held.Hello()
}

func (j *Jobs) heldLink(up bool) {
	if j == nil || j.held == nil {
		return
	}
	if up {
		j.held.Up()
	} else {
		j.held.Down()
	}
}

// heldDispatched: a scheduled backup the controller sent. It says which
// held job ran the same tick, if one did (then the job is refused).
func (j *Jobs) heldDispatched(js *agentv1.JobStart) string {
	b := js.GetBackup()
	if j.held == nil || b.GetScheduleId() == "" || b.GetScheduledFor() == nil {
		return ""
	}
	ran, err := j.held.Dispatched(b.GetScheduleId(), b.GetScheduledFor().AsTime(), js.GetJobId())
	if err != nil {
		// Not recorded: the worst case is a held run of a tick that ran,
		// which the controller then refuses by its run key.
		return ""
	}
	return ran
}

// heldWaits: the events of a held run wait until the controller stored it.
func (j *Jobs) heldWaits(jobID string) bool {
	return j.held != nil && j.held.Unacked(jobID)
}

func (j *Jobs) handleHeld(m *agentv1.ConnectResponse) error {
	if j == nil || j.held == nil {
		return nil
	}
	switch msg := m.Msg.(type) {
	case *agentv1.ConnectResponse_HeldBackupSchedules:
		return j.held.Replace(msg.HeldBackupSchedules)
	case *agentv1.ConnectResponse_HeldRunsAck:
		err := j.held.Acked(msg.HeldRunsAck.GetJobIds())
		j.poke() // their events may go up now
		return err
	}
	return nil
}

const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// NewULID makes a ULID (48-bit milliseconds, 80 random bits) in its
// 26-character form, as the controller's job ids are.
func NewULID(t time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(t.UnixMilli())<<16)
	if _, err := rand.Read(b[6:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	// 128 bits as 26 base32 digits, the first carrying 3 bits.
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	out := make([]byte, 26)
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out)
}
