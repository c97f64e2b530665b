// Package held keeps the backup schedules of this server's apps and runs
// their ticks while no controller is reachable (issue 18 §3).
//
// The controller sends the schedules after every welcome and whenever they
// change. What a run needs (the source with its connection URL, the
// destination with its credentials, the recipient backups are encrypted
// to) arrives as a BackupJob sealed with age to this agent's own X25519
// recipient, whose identity is held.key in the data dir (mode 0600). The
// schedules file (held-backups.json, 0600) stores that job only sealed; it
// is opened in memory for a run and handed to the executor, whose journal
// never writes a job's secrets. Sealed credentials, not a short-lived
// destination grant: a grant exists for S3 only and expires during the
// very outage it is for (see controller/internal/backups/held.go).
//
// Who runs a tick: while the agent has a stream the controller does, and
// the agent only moves past the tick. While a stream is being opened the
// agent waits: the hello it sent lists its held runs, and a run started
// after it would reach a controller that does not know it yet. With no
// stream the agent runs the tick itself under the tick's run key
// (schedule, scheduled time), journals the run in the schedules file
// before starting the job, and reports it in every hello until the
// controller acknowledges it (HeldRunsAck); its events go up as any job's,
// once. A tick the controller already started here (a JobStart carrying
// the run key) is never run again from the held copy, and a run never
// overlaps the schedule's previous one.
package held

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"filippo.io/age"
	"github.com/robfig/cron/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// Files in the data dir.
const (
	KeyFile   = "held.key"
	StateFile = "held-backups.json"
)

// maxRuns bounds the unacknowledged runs kept (an outage of weeks with a
// schedule every few minutes): the oldest are reported first, and the
// controller refuses a hello with more than 1000.
const maxRuns = 1000

// Run is one tick the agent ran.
type Run struct {
	JobID        string    `json:"job_id"`
	ScheduleID   string    `json:"schedule_id"`
	ScheduledFor time.Time `json:"scheduled_for"`
	StartedAt    time.Time `json:"started_at"`
	KeyID        string    `json:"key_id"`
}

// Schedule is a held schedule as stored (its job sealed).
type Schedule struct {
	ID      string        `json:"id"`
	AppID   string        `json:"app_id"`
	AppName string        `json:"app_name"`
	Cron    string        `json:"cron"`
	TZ      string        `json:"timezone"`
	Timeout time.Duration `json:"timeout"`
	KeyID   string        `json:"key_id"`
	Suffix  string        `json:"object_suffix"`
	Sealed  []byte        `json:"sealed"`
	// Due: the next tick this agent considers.
	Due time.Time `json:"due"`
}

type state struct {
	Schedules []Schedule `json:"schedules"`
	Runs      []Run      `json:"runs"`
	// Taken: per schedule, the newest tick run here (held or dispatched);
	// Last: the job of that run (a new run never starts beside it).
	Taken map[string]time.Time `json:"taken"`
	Last  map[string]string    `json:"last"`
}

// Start runs a held tick's backup: jobID, the schedule, its opened job
// with the object key set. It is the executor's Start, through the client
// (which turns the job into a spec).
type Start func(ctx context.Context, jobID string, s Schedule, job *agentv1.BackupJob) error

// Config configures a Holder.
type Config struct {
	DataDir string
	Start   Start
	// Running reports whether a job still runs on the executor.
	Running func(jobID string) bool
	Log     *slog.Logger
	Now     func() time.Time
	// NewID makes a job id (a ULID).
	NewID func(time.Time) string
}

type link int

const (
	down link = iota
	connecting
	up
)

// Holder holds the schedules.
type Holder struct {
	cfg  Config
	id   *age.X25519Identity
	wake chan struct{}

	mu   sync.Mutex
	st   state
	link link
}

var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Open loads (or makes) the agent's held key and the schedules file.
func Open(cfg Config) (*Holder, error) {
	if cfg.DataDir == "" || cfg.Start == nil || cfg.NewID == nil {
		return nil, errors.New("held: DataDir, Start and NewID are required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Running == nil {
		cfg.Running = func(string) bool { return false }
	}
	id, err := loadKey(filepath.Join(cfg.DataDir, KeyFile))
	if err != nil {
		return nil, err
	}
	// Until the first connection attempt ends the agent does not know
	// whether a controller runs its ticks: it waits for it.
	h := &Holder{cfg: cfg, id: id, wake: make(chan struct{}, 1), st: state{Taken: map[string]time.Time{}, Last: map[string]string{}}, link: connecting}
	b, err := os.ReadFile(filepath.Join(cfg.DataDir, StateFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("held: read %s: %w", StateFile, err)
	default:
		if err := json.Unmarshal(b, &h.st); err != nil {
			return nil, fmt.Errorf("held: %s is damaged: %w", StateFile, err)
		}
		if h.st.Taken == nil {
			h.st.Taken = map[string]time.Time{}
		}
		if h.st.Last == nil {
			h.st.Last = map[string]string{}
		}
	}
	return h, nil
}

func loadKey(path string) (*age.X25519Identity, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		id, err := age.ParseX25519Identity(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("held: %s is not an age identity", KeyFile)
		}
		return id, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("held: read %s: %w", KeyFile, err)
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, err
	}
	if err := writeAtomic(path, []byte(id.String()+"\n")); err != nil {
		return nil, err
	}
	return id, nil
}

// Recipient is what the controller seals held schedules to.
func (h *Holder) Recipient() string { return h.id.Recipient().String() }

// Hello marks a stream being opened and returns the runs to report.
func (h *Holder) Hello() []*agentv1.HeldBackupRun {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.link = connecting
	out := make([]*agentv1.HeldBackupRun, 0, len(h.st.Runs))
	for _, r := range h.st.Runs {
		out = append(out, &agentv1.HeldBackupRun{JobId: r.JobID, ScheduleId: r.ScheduleID, ScheduledFor: timestamppb.New(r.ScheduledFor),
			StartedAt: timestamppb.New(r.StartedAt), EncryptionKeyId: r.KeyID})
	}
	return out
}

// Up: the stream is open (welcome received); the controller runs ticks.
func (h *Holder) Up() { h.setLink(up) }

// Down: no stream; the agent runs ticks.
func (h *Holder) Down() { h.setLink(down) }

func (h *Holder) setLink(l link) {
	h.mu.Lock()
	h.link = l
	h.mu.Unlock()
	h.poke()
}

func (h *Holder) poke() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// Replace takes the controller's current set of schedules.
func (h *Holder) Replace(m *agentv1.HeldBackupSchedules) error {
	var list []Schedule
	for _, s := range m.GetSchedules() {
		if _, err := parseCron(s.GetCron(), s.GetTimezone()); err != nil {
			h.cfg.Log.Warn("held schedule not understood; not held", "schedule_id", s.GetScheduleId(), "err", err)
			continue
		}
		list = append(list, Schedule{ID: s.GetScheduleId(), AppID: s.GetAppId(), AppName: s.GetAppName(), Cron: s.GetCron(),
			TZ: s.GetTimezone(), Timeout: s.GetTimeout().AsDuration(), KeyID: s.GetEncryptionKeyId(), Suffix: s.GetObjectSuffix(),
			Sealed: s.GetSealed(), Due: s.GetNextRunAt().AsTime()})
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	keep := map[string]bool{}
	for i := range list {
		keep[list[i].ID] = true
		// A tick run here already is not due again.
		if t, ok := h.st.Taken[list[i].ID]; ok && !list[i].Due.After(t) {
			next, _ := parseCron(list[i].Cron, list[i].TZ)
			list[i].Due = next(t)
		}
	}
	for id := range h.st.Taken {
		if !keep[id] {
			delete(h.st.Taken, id)
			delete(h.st.Last, id)
		}
	}
	h.st.Schedules = list
	return h.saveLocked()
}

// Acked drops the runs the controller stored.
func (h *Holder) Acked(jobIDs []string) error {
	drop := map[string]bool{}
	for _, id := range jobIDs {
		drop[id] = true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	runs := h.st.Runs[:0]
	for _, r := range h.st.Runs {
		if !drop[r.JobID] {
			runs = append(runs, r)
		}
	}
	h.st.Runs = runs
	return h.saveLocked()
}

// Dispatched records a tick the controller sent here as job jobID, and
// says (with the held job's id) whether this agent ran that tick already.
func (h *Holder) Dispatched(scheduleID string, tick time.Time, jobID string) (ranAs string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.st.Runs {
		if r.ScheduleID == scheduleID && r.ScheduledFor.Equal(tick) {
			return r.JobID, nil
		}
	}
	if t, ok := h.st.Taken[scheduleID]; !ok || tick.After(t) {
		h.st.Taken[scheduleID] = tick
	}
	h.st.Last[scheduleID] = jobID
	return "", h.saveLocked()
}

// Run steps the schedules every second until ctx ends.
func (h *Holder) Run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		h.Step(ctx, h.cfg.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-h.wake:
		}
	}
}

// Step handles the ticks due at now and returns the jobs it started.
func (h *Holder) Step(ctx context.Context, now time.Time) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var started []string
	changed := false
	for i := range h.st.Schedules {
		s := &h.st.Schedules[i]
		if s.Due.IsZero() || s.Due.After(now) {
			continue
		}
		next, err := parseCron(s.Cron, s.TZ)
		if err != nil {
			continue
		}
		switch h.link {
		case connecting:
			continue // decided once the stream is up or down
		case up:
			s.Due, changed = next(now), true // the controller's tick
			continue
		}
		tick := s.Due
		s.Due, changed = next(now), true
		if t, ok := h.st.Taken[s.ID]; ok && !tick.After(t) {
			continue
		}
		if prev := h.st.Last[s.ID]; prev != "" && h.cfg.Running(prev) {
			h.cfg.Log.Warn("held backup tick skipped: the previous run is still running", "schedule_id", s.ID, "tick", tick, "previous", prev)
			continue
		}
		job, err := h.open(s.Sealed)
		if err != nil {
			h.cfg.Log.Error("held backup schedule cannot be opened; tick not run", "schedule_id", s.ID, "err", err)
			continue
		}
		id := h.cfg.NewID(now)
		job.Object = &agentv1.BackupObject{Key: s.AppName + "/" + id + s.Suffix, Kind: job.GetSource().GetKind()}
		job.ScheduledFor = timestamppb.New(tick)
		// Journal the run before it starts: a run this agent made is
		// reported even if it dies mid-job (the executor then reports the
		// job interrupted).
		h.st.Runs = append(h.st.Runs, Run{JobID: id, ScheduleID: s.ID, ScheduledFor: tick, StartedAt: now, KeyID: s.KeyID})
		if len(h.st.Runs) > maxRuns {
			h.st.Runs = h.st.Runs[len(h.st.Runs)-maxRuns:]
		}
		h.st.Taken[s.ID], h.st.Last[s.ID] = tick, id
		if err := h.saveLocked(); err != nil {
			h.cfg.Log.Error("held backup run not journaled; not started", "schedule_id", s.ID, "err", err)
			h.st.Runs = h.st.Runs[:len(h.st.Runs)-1]
			continue
		}
		changed = false
		if err := h.cfg.Start(ctx, id, *s, job); err != nil {
			h.cfg.Log.Error("held backup run refused by the executor", "job", id, "err", err)
			continue
		}
		h.cfg.Log.Info("held backup run started while no controller is reachable", "job", id, "schedule_id", s.ID, "tick", tick)
		started = append(started, id)
	}
	if changed {
		if err := h.saveLocked(); err != nil {
			h.cfg.Log.Error("save held schedules", "err", err)
		}
	}
	return started
}

// Unacked says whether jobID is a held run the controller has not
// stored yet: its events wait until it has (a controller acknowledges the
// events of a job it does not know, and they would be lost).
func (h *Holder) Unacked(jobID string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.st.Runs {
		if r.JobID == jobID {
			return true
		}
	}
	return false
}

// Runs lists the unacknowledged runs (tests, status).
func (h *Holder) Runs() []Run {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Run(nil), h.st.Runs...)
}

func (h *Holder) open(sealed []byte) (*agentv1.BackupJob, error) {
	r, err := age.Decrypt(bytes.NewReader(sealed), h.id)
	if err != nil {
		return nil, err
	}
	plain, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return nil, err
	}
	job := &agentv1.BackupJob{}
	err = proto.Unmarshal(plain, job)
	clear(plain)
	return job, err
}

func parseCron(expr, tz string) (func(time.Time) time.Time, error) {
	sched, err := parser.Parse(expr)
	if err != nil {
		return nil, err
	}
	loc := time.UTC
	if tz != "" {
		if loc, err = time.LoadLocation(tz); err != nil {
			return nil, err
		}
	}
	return func(t time.Time) time.Time { return sched.Next(t.In(loc)).UTC() }, nil
}

func (h *Holder) saveLocked() error {
	b, err := json.Marshal(h.st)
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(h.cfg.DataDir, StateFile), b)
}

func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".held-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
