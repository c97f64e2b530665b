package deploy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/berthhq/berth/agent/internal/supervise"
)

// Defaults for zero values in a Config.
const (
	DefaultKillGrace     = 10 * time.Second
	DefaultFlushInterval = 200 * time.Millisecond
	DefaultMaxLogBytes   = 4 << 20
	// DefaultAppUser is the dedicated unprivileged account apps run as by
	// default: never root.
	DefaultAppUser = "berth"
	// maxChunkBytes bounds one log event; a chunk is cut earlier at every
	// flush interval and step change.
	maxChunkBytes = 64 << 10
)

// Errors from Start and Cancel.
var (
	ErrAppBusy   = errors.New("deploy: another job is running for this app")
	ErrJobExists = errors.New("deploy: job already known to this agent")
	// ErrRanBefore is a job this agent no longer knows but the controller
	// holds events of: it ran here and its journal is gone (finished and
	// acknowledged, or lost with the disk). A job id runs once.
	ErrRanBefore  = errors.New("deploy: the job ran on this agent before and its journal is gone; it is not run again")
	ErrNotRunning = errors.New("deploy: job is not running")
	ErrClosed     = errors.New("deploy: executor closed")
)

// Causes of a job's context ending.
var (
	errCanceled = errors.New("canceled")
	errTimedOut = errors.New("timed out")
	errShutdown = errors.New("agent shutting down")
)

// Config configures an Executor.
type Config struct {
	// DataDir is the agent's data directory; the executor uses jobs/ and
	// mirrors/ below it.
	DataDir string
	Logger  *slog.Logger
	// Sink receives every event right after it is journaled, in Seq order
	// per job. It must not block for long (jobs wait for it): when the
	// link is down it should drop the event, since Pending returns every
	// event not yet acked. It must not call back into the executor other
	// than Ack.
	Sink func(Event)
	// KillGrace is how long a canceled or timed-out job's processes get
	// between SIGTERM and SIGKILL.
	KillGrace time.Duration
	// FlushInterval bounds how long output waits before it becomes an
	// event, so live logs stay near real time.
	FlushInterval time.Duration
	// MaxLogBytes caps a job's output; the rest is dropped and counted.
	MaxLogBytes int64
	// AppUser is who apps run as when the agent runs as root and a job
	// names no user (default DefaultAppUser); created when missing.
	AppUser string
	// AppDirs are the directories deploy paths must lie below (default
	// DefaultAppDirs). The agent runs as root and gives each deploy path to
	// its app user: without this bound a deploy-scoped caller could name
	// a system directory (a systemd drop-in directory, say) and have it
	// made and handed to the app user, which is root by another road.
	AppDirs []string
	// SendObject sends a download job's stored bytes to the controller
	// (nil: this executor refuses download jobs).
	SendObject func(ctx context.Context, jobID string, r io.Reader) error
	// Processes supervises the apps' processes: deploys and rollbacks move
	// them to the new release, process jobs act on them, a delete stops
	// them and pruning keeps the releases they run. Nil: this executor runs
	// no app processes, and a job that needs them fails.
	Processes *supervise.Manager
}

// DefaultAppDirs are where deploy paths may lie unless the agent is told
// otherwise (berth-agent run --app-dirs).
var DefaultAppDirs = []string{"/srv", "/var/www", "/opt", "/home"}

// Executor runs an app's jobs (deploy, rollback, delete, process) one at a
// time per app, and each schedule's runs one at a time beside them (see
// Spec.busyKey); it journals them under Config.DataDir. It is safe for concurrent use.
type Executor struct {
	cfg        Config
	log        *slog.Logger
	jobsDir    string
	mirrorsDir string
	lock       *os.File // flock on jobs/.lock: one executor per data dir

	mu   sync.Mutex
	jobs map[string]*job // every job with a journal: running or not fully acked
	// busy maps a running job's busy key (see Spec.busyKey: the app, or
	// one of its schedules) to the job's id.
	busy   map[string]string
	closed bool
	wg     sync.WaitGroup

	userMu sync.Mutex // serialises creating app users
}

// New opens the executor's directories under cfg.DataDir and locks them
// against a second agent. Call Recover next, before starting jobs.
func New(cfg Config) (*Executor, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("deploy: DataDir is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.KillGrace <= 0 {
		cfg.KillGrace = DefaultKillGrace
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	if cfg.MaxLogBytes <= 0 {
		cfg.MaxLogBytes = DefaultMaxLogBytes
	}
	if cfg.AppUser == "" {
		cfg.AppUser = DefaultAppUser
	}
	if len(cfg.AppDirs) == 0 {
		cfg.AppDirs = DefaultAppDirs
	}
	e := &Executor{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "deploy"),
		jobsDir:    filepath.Join(cfg.DataDir, "jobs"),
		mirrorsDir: filepath.Join(cfg.DataDir, "mirrors"),
		jobs:       map[string]*job{},
		busy:       map[string]string{},
	}
	// Journals hold build output and mirrors hold source: the agent's eyes only.
	for _, d := range []string{e.jobsDir, e.mirrorsDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("deploy: %w", err)
		}
	}
	f, err := os.OpenFile(filepath.Join(e.jobsDir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("deploy: %w", err)
	}
	// The kernel drops the lock when the process dies, however it dies,
	// which is what tells Recover that journaled "running" jobs are orphans.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("deploy: %s is in use by another agent: %w", e.jobsDir, err)
	}
	e.lock = f
	return e, nil
}

// Start begins a job and returns once it is journaled; the job runs on in
// the background until it finishes, is canceled, times out or the executor
// is closed. ctx bounds only Start itself (its values are kept), so a
// transport may pass its stream's context.
func (e *Executor) Start(ctx context.Context, spec Spec) error {
	if err := spec.normalize(); err != nil {
		return err
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return ErrClosed
	}
	if _, ok := e.jobs[spec.DeploymentID]; ok {
		e.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrJobExists, spec.DeploymentID)
	}
	if spec.ControllerSeq > 0 {
		e.mu.Unlock()
		return ErrRanBefore
	}
	key := spec.busyKey()
	if other, ok := e.busy[key]; ok {
		e.mu.Unlock()
		if spec.Kind == KindSchedule {
			return fmt.Errorf("%w: schedule %s of app %s is running (job %s)", ErrAppBusy, spec.ScheduleName, spec.AppID, other)
		}
		return fmt.Errorf("%w: app %s is running job %s", ErrAppBusy, spec.AppID, other)
	}
	j := newJob(e, spec)
	e.jobs[j.id] = j
	e.busy[key] = j.id
	e.mu.Unlock()

	if err := j.create(); err != nil {
		e.mu.Lock()
		delete(e.jobs, j.id)
		delete(e.busy, key)
		e.mu.Unlock()
		return err
	}
	jctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	jctx, cancelTimeout := context.WithTimeoutCause(jctx, spec.Timeout, errTimedOut)
	j.cancel = cancel
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		defer cancelTimeout()
		j.execute(jctx)
	}()
	return nil
}

// Cancel stops a running job: its process group gets SIGTERM, then SIGKILL
// after the grace period; the half-built release is removed and the job
// ends canceled. Cancel returns at once; the result follows as an event.
func (e *Executor) Cancel(id string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	j, ok := e.jobs[id]
	if !ok || !j.running {
		return fmt.Errorf("%w: %s", ErrNotRunning, id)
	}
	j.cancel(errCanceled)
	return nil
}

// Ack records that the controller committed job id's events up to seq.
// They are forgotten; once the result is acked, the job's journal is
// deleted. Acks for unknown jobs or old numbers are harmless.
func (e *Executor) Ack(id string, seq uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	j, ok := e.jobs[id]
	if !ok || seq <= j.acked {
		return
	}
	j.acked = min(seq, j.nextSeq)
	n := 0
	for n < len(j.events) && j.events[n].Seq <= j.acked {
		n++
	}
	j.events = slices.Delete(j.events, 0, n)
	if !j.running && j.resultSeq != 0 && j.acked >= j.resultSeq {
		delete(e.jobs, id)
		j.closeAckedLocked()
		if err := os.RemoveAll(j.dir); err != nil {
			e.log.Warn("remove acked job journal", "job", id, "err", err)
		}
		return
	}
	if err := j.writeAckedLocked(); err != nil {
		e.log.Warn("journal ack", "job", id, "err", err)
	}
}

// Pending returns every event not yet acked: jobs in id (so start) order,
// each job's events in Seq order. After a reconnect the transport re-sends
// them all; the controller ignores numbers it already has.
func (e *Executor) Pending() []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	ids := make([]string, 0, len(e.jobs))
	for id := range e.jobs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var out []Event
	for _, id := range ids {
		out = append(out, e.jobs[id].events...)
	}
	return out
}

// Running returns the ids of the jobs running now, sorted.
func (e *Executor) Running() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var ids []string
	for id, j := range e.jobs {
		if j.running {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// Close stops the executor: running jobs are killed like Cancel but get no
// result, because they did not end on their own: their journals still say
// running, so the next Recover reports them failed ("agent restarted during
// step ..."), exactly as after a crash. Close waits for them and releases
// the data dir lock.
func (e *Executor) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	for _, j := range e.jobs {
		if j.running {
			j.cancel(errShutdown)
		}
		j.closeAckedLocked()
	}
	e.mu.Unlock()
	e.wg.Wait()
	return e.lock.Close()
}
