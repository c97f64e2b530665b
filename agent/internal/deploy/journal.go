package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Journal files in a job's directory.
const (
	specFile   = "spec.json"
	stateFile  = "state.json"
	eventsFile = "events.log"
	ackedFile  = "acked"
	tmpDir     = "tmp"
)

// jobState is what Recover needs to finish an interrupted job honestly.
type jobState struct {
	Running   bool      `json:"running"`
	Step      string    `json:"step"`
	StartedAt time.Time `json:"started_at"`

	Commit        string `json:"commit,omitempty"`
	CommitMessage string `json:"commit_message,omitempty"`
	// Release is set once this job created its release directory, so
	// Recover removes only what the job made.
	Release string `json:"release,omitempty"`
	// Activated means `current` may have been switched (it is journaled
	// just before the rename); PrevTarget is what it pointed at before.
	Activated  bool   `json:"activated,omitempty"`
	PrevTarget string `json:"prev_target,omitempty"`

	// The process group running now, identified well enough to kill what
	// is left of it after an agent crash without hitting a recycled pid.
	PGID      int    `json:"pgid,omitempty"`
	PGIDStart uint64 `json:"pgid_start,omitempty"`
	BootID    string `json:"boot_id,omitempty"`
}

// journalSpec is the spec as journaled: no credential, no env values.
// StartedAt makes it the job's first state too, so creating a journal
// waits for the disk once (see recoverJob).
type journalSpec struct {
	Spec
	CredentialKind string    `json:"credential_kind,omitempty"`
	EnvKeys        []string  `json:"env_keys,omitempty"`
	StartedAt      time.Time `json:"started_at"`
}

type job struct {
	e    *Executor
	id   string
	spec Spec
	dir  string

	// Guarded by e.mu.
	events    []Event // journaled, not yet acked, by Seq
	nextSeq   uint64  // last Seq used
	acked     uint64
	resultSeq uint64
	running   bool
	// runsIn is the release a running schedule job's command runs in,
	// which pruning keeps.
	runsIn    string
	file      *os.File // events.log while the job may append
	ackedFile *os.File // acked, once written (see writeAckedLocked)
	cancel    context.CancelCauseFunc

	emitMu sync.Mutex // keeps journal order and Sink order the same

	stateMu   sync.Mutex
	state     jobState
	stateFile *os.File // state.json, overwritten in place (see writeState)
	stateLen  int      // its length on disk

	// spawned is closed once the job has started its first process (or
	// its fetch step ended): the deploy script's bash waits for it, see
	// startShell.
	spawned     chan struct{}
	spawnedOnce sync.Once

	synced  chan struct{} // closed once the journal is on disk, see durable
	syncErr error

	// credDropped: the fetch is over and its credential gone from disk
	// (see dropCredential).
	credMu      sync.Mutex
	credDropped bool

	log    *logBuffer
	redact *redactor
	user   *runAs
	tree   *appTree // the deploy path, open while the job runs
	tmp    string   // secrets and git's HOME, removed when the job ends
}

func newJob(e *Executor, spec Spec) *job {
	j := &job{
		e:       e,
		id:      spec.DeploymentID,
		spec:    spec,
		dir:     filepath.Join(e.jobsDir, spec.DeploymentID),
		running: true,
		state:   jobState{Running: true, StartedAt: time.Now().UTC()},
		spawned: make(chan struct{}),
		synced:  make(chan struct{}),
	}
	j.tmp = filepath.Join(j.dir, tmpDir)
	j.redact = newRedactor(spec)
	j.log = newLogBuffer(j, e.cfg.MaxLogBytes, e.cfg.FlushInterval)
	return j
}

// create writes the job's journal before anything runs. An existing
// journal (a job this agent already ran) is left alone.
func (j *job) create() error {
	if err := os.Mkdir(j.dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%w: %s", ErrJobExists, j.id)
		}
		return fmt.Errorf("deploy: %w", err)
	}
	if err := j.writeJournal(); err != nil {
		os.RemoveAll(j.dir)
		return err
	}
	return nil
}

func (j *job) writeJournal() error {
	js := journalSpec{Spec: j.spec, CredentialKind: j.spec.Credential.kind(), StartedAt: j.state.StartedAt}
	for k := range j.spec.Env {
		js.EnvKeys = append(js.EnvKeys, k)
	}
	slices.Sort(js.EnvKeys)
	if hc := js.HealthCheck; hc != nil {
		c := *hc
		c.URL = string(j.redact.apply([]byte(c.URL)))
		js.HealthCheck = &c
	}
	b, err := json.MarshalIndent(js, "", "  ")
	if err != nil {
		return err
	}
	// Written in place, not renamed into place: the job's directory is
	// new, and Recover removes a journal whose spec does not parse (the
	// agent died while creating it, before anything ran). The spec holds
	// the job's first state too, so no state file is written yet.
	spec, err := os.OpenFile(filepath.Join(j.dir, specFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("deploy: %w", err)
	}
	if _, err := spec.Write(b); err != nil {
		spec.Close()
		return fmt.Errorf("deploy: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(j.dir, eventsFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		spec.Close()
		return fmt.Errorf("deploy: %w", err)
	}
	j.file = f
	// The wait for the disk runs beside the job's first steps (see
	// durable): a kill of the agent finds the journal in the page cache
	// anyway, and only a power cut needs it on disk.
	go func() {
		err := spec.Sync()
		if cerr := spec.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			err = fmt.Errorf("deploy: journal: %w", err)
		}
		j.syncErr = err
		close(j.synced)
	}()
	return nil
}

// durable waits until the job's journal is on disk. A job does nothing it
// could not take back before: it creates no release and switches nothing.
// A power cut before then leaves no journal; the controller's re-send of
// the job is then refused (ErrRanBefore if it had events already) and
// the deployment ends failed, or, with none, the job starts afresh.
func (j *job) durable() error {
	<-j.synced
	return j.syncErr
}

// saveState applies change and writes the state file. A failure to write
// it fails the job's next step: without a journal, a crash could not be
// reported honestly.
func (j *job) saveState(change func(*jobState)) error {
	return j.writeState(change, true)
}

// saveStep journals the step the job is in. It does not wait for the
// disk: the step only names where a job stopped, and an agent killed
// mid-job still leaves the file whole; the records recovery acts on
// (release, switch of current) go through saveState.
func (j *job) saveStep(name string) error {
	return j.writeState(func(s *jobState) { s.Step = name }, false)
}

// writeState applies change and writes the state file; sync waits for
// the disk. A write that need not wait overwrites the file in place with
// one pwrite, padded with spaces (JSON ignores them) to the length before:
// creating and renaming a file costs a deploy a millisecond of metadata
// work each time on a small VM, and a job writes its state at every step.
// Such a write stays within a page, which a kill of the agent cannot cut
// in half; a larger state, and every write that waits for the disk, goes
// through a new file renamed over the old one instead.
func (j *job) writeState(change func(*jobState), sync bool) error {
	j.stateMu.Lock()
	defer j.stateMu.Unlock()
	change(&j.state)
	b, err := json.Marshal(j.state)
	if err != nil {
		return err
	}
	path := filepath.Join(j.dir, stateFile)
	if !sync && len(b) <= inPlaceMax {
		if j.stateFile == nil {
			f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
			if err != nil {
				return fmt.Errorf("deploy: journal state: %w", err)
			}
			fi, err := f.Stat()
			if err != nil {
				f.Close()
				return fmt.Errorf("deploy: journal state: %w", err)
			}
			j.stateFile, j.stateLen = f, int(fi.Size())
		}
		if j.stateLen <= inPlaceMax {
			if pad := j.stateLen - len(b); pad > 0 {
				b = append(b, bytes.Repeat([]byte{' '}, pad)...)
			}
			if _, err := j.stateFile.WriteAt(b, 0); err != nil {
				return fmt.Errorf("deploy: journal state: %w", err)
			}
			j.stateLen = len(b)
			return nil
		}
	}
	if err := writeFile(path, b, 0o600, sync); err != nil {
		return fmt.Errorf("deploy: journal state: %w", err)
	}
	// The open handle, if any, names the file just replaced.
	j.closeStateLocked()
	return nil
}

// inPlaceMax bounds a state written in place to one page.
const inPlaceMax = 4096

func (j *job) closeStateLocked() {
	if j.stateFile != nil {
		j.stateFile.Close()
		j.stateFile, j.stateLen = nil, 0
	}
}

func (j *job) getState() jobState {
	j.stateMu.Lock()
	defer j.stateMu.Unlock()
	return j.state
}

// emit numbers ev, appends it to the journal and hands it to the Sink.
func (j *job) emit(ev Event) Event {
	j.emitMu.Lock()
	defer j.emitMu.Unlock()
	e := j.e
	e.mu.Lock()
	j.nextSeq++
	ev.JobID, ev.Seq = j.id, j.nextSeq
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	if line, err := json.Marshal(ev); err != nil {
		e.log.Error("encode event", "job", j.id, "err", err)
	} else if _, err := j.file.Write(append(line, '\n')); err != nil {
		// The event still goes out from memory; only a crash before its
		// ack would lose it.
		e.log.Error("journal event", "job", j.id, "seq", ev.Seq, "err", err)
	}
	if ev.Type == EventResult {
		j.resultSeq = ev.Seq
		if err := j.file.Sync(); err != nil {
			e.log.Error("sync journal", "job", j.id, "err", err)
		}
	}
	j.events = append(j.events, ev)
	e.mu.Unlock()
	if e.cfg.Sink != nil {
		e.cfg.Sink(ev)
	}
	return ev
}

// finish journals the result and releases the app for its next job.
func (j *job) finish(res Result) {
	if err := j.saveState(func(s *jobState) { s.Running = false; s.PGID = 0 }); err != nil {
		j.e.log.Error("journal state", "job", j.id, "err", err)
	}
	r := res
	j.emitMu.Lock() // the result goes last, after any log flush in flight
	j.e.mu.Lock()
	j.running = false
	if key := j.spec.busyKey(); j.e.busy[key] == j.id {
		delete(j.e.busy, key)
	}
	j.e.mu.Unlock()
	j.emitMu.Unlock()
	j.emit(Event{Type: EventResult, Step: res.FailedStep, Result: &r})
	j.e.mu.Lock()
	j.file.Close()
	j.e.mu.Unlock()
}

// abandon leaves a job's journal as it is (still "running") for the next
// Recover to report: used when the executor closes under a running job.
func (j *job) abandon() {
	j.e.mu.Lock()
	defer j.e.mu.Unlock()
	j.running = false
	if key := j.spec.busyKey(); j.e.busy[key] == j.id {
		delete(j.e.busy, key)
	}
	delete(j.e.jobs, j.id)
	j.file.Close()
	j.closeAckedLocked()
	j.stateMu.Lock()
	j.closeStateLocked()
	j.stateMu.Unlock()
}

// Recover loads the journals left by an earlier agent process: events not
// yet acked become Pending again, and a job that was running when that
// process died is finished now as failed with "agent restarted during step
// <step>". What is left of its process group is killed, its half-built
// release removed and `current` left as it was (a rollback that had
// already switched it is switched back). Call it once after New, before
// connecting and before Start.
func (e *Executor) Recover() error {
	entries, err := os.ReadDir(e.jobsDir)
	if err != nil {
		return fmt.Errorf("deploy: %w", err)
	}
	var errs []error
	for _, de := range entries {
		if !de.IsDir() || !IsReleaseID(de.Name()) {
			continue
		}
		e.mu.Lock()
		_, known := e.jobs[de.Name()]
		e.mu.Unlock()
		if known {
			continue
		}
		if err := e.recoverJob(de.Name()); err != nil {
			errs = append(errs, fmt.Errorf("deploy: recover job %s: %w", de.Name(), err))
		}
	}
	return errors.Join(errs...)
}

func (e *Executor) recoverJob(id string) error {
	dir := filepath.Join(e.jobsDir, id)
	var js journalSpec
	b, err := os.ReadFile(filepath.Join(dir, specFile))
	if err == nil {
		err = json.Unmarshal(b, &js)
	}
	if err != nil {
		// The agent died while creating the journal: nothing ran and
		// nothing was sent.
		e.log.Warn("removing incomplete job journal", "job", id, "err", err)
		return os.RemoveAll(dir)
	}
	// The state file is written without waiting for the disk; after a
	// power cut it may be missing or empty, and the job then counts as
	// started with nothing else known (the spec is on disk).
	st := jobState{Running: true, StartedAt: js.StartedAt}
	if b, err := os.ReadFile(filepath.Join(dir, stateFile)); err == nil {
		var saved jobState
		if json.Unmarshal(b, &saved) == nil {
			st = saved
		} else {
			e.log.Warn("job state unreadable; the job counts as started", "job", id)
		}
	}
	j := newJob(e, js.Spec)
	close(j.synced) // whatever the journal holds, it is all there is
	j.state = st
	j.running = false
	if b, err := os.ReadFile(filepath.Join(dir, ackedFile)); err == nil {
		j.acked, _ = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	}
	events, good, err := readEvents(filepath.Join(dir, eventsFile))
	if err != nil {
		return err
	}
	for _, ev := range events {
		j.nextSeq = ev.Seq
		if ev.Type == EventResult {
			j.resultSeq = ev.Seq
		}
		if ev.Seq > j.acked {
			j.events = append(j.events, ev)
		}
	}
	os.RemoveAll(j.tmp) // a key file left by the crash
	if j.resultSeq != 0 && j.acked >= j.resultSeq {
		return os.RemoveAll(dir)
	}
	e.mu.Lock()
	e.jobs[id] = j
	e.mu.Unlock()
	if j.resultSeq != 0 {
		return nil
	}

	// Interrupted: cut off a half-written last line, then finish the job.
	f, err := os.OpenFile(filepath.Join(dir, eventsFile), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(good); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Seek(good, 0); err != nil {
		f.Close()
		return err
	}
	j.file = f
	res := e.settleInterrupted(j)
	j.log.line(fmt.Appendf(nil, "[berth] %s", res.Error))
	j.log.flush()
	j.finish(res)
	return nil
}

// settleInterrupted undoes what an interrupted job left behind and says
// how it ended.
func (e *Executor) settleInterrupted(j *job) Result {
	st, spec := j.state, j.spec
	if st.PGID > 0 {
		killOrphanGroup(st.PGID, st.PGIDStart, st.BootID, e.cfg.KillGrace)
	}
	step := st.Step
	if step == "" {
		step = "start"
	}
	res := Result{
		Status:        StatusFailed,
		FailedStep:    step,
		ExitCode:      -1,
		Error:         "agent restarted during step " + step,
		Commit:        st.Commit,
		CommitMessage: st.CommitMessage,
		StartedAt:     st.StartedAt,
		FinishedAt:    time.Now().UTC(),
	}
	if spec.Kind.IsBackup() {
		// Its secrets were never journaled, so it is not run again. The
		// backup package stores an object under its key only when it is
		// complete (a temporary name, or an unfinished multipart upload),
		// so what the crash cut short is never taken for a backup.
		return res
	}
	// Everything below the deploy path is the app user's: it is reached
	// through the app tree only (see appTree), never by following a path.
	tree, err := (&job{spec: spec, e: e}).openTree(false)
	if err != nil {
		e.log.Warn("open the deploy path of an interrupted job", "job", j.id, "err", err)
		if spec.Kind == KindDeploy {
			os.RemoveAll(filepath.Join(e.mirrorsDir, spec.AppID+".git.tmp-"+j.id))
		}
		return res
	}
	defer tree.close()
	// A temporary symlink of a switch the crash cut short.
	if d, err := tree.root.Open("."); err == nil {
		names, _ := d.Readdirnames(-1)
		d.Close()
		for _, n := range names {
			if strings.HasPrefix(n, ".current.tmp-") {
				tree.root.Remove(n)
			}
		}
	}
	cur, _ := tree.readCurrent()
	res.PreviousRelease = releaseIDOf(spec.DeployPath, st.PrevTarget)
	switch spec.Kind {
	case KindDeploy:
		// The release directory is named by the job, whatever the state
		// file managed to say before the crash.
		if _, err := tree.root.Lstat(releaseRel(j.id)); err == nil {
			res.ReleasePath = releasePath(spec.DeployPath, j.id)
		}
		inUse := e.releaseInUse(spec.AppID, j.id)
		prevInUse := e.releaseInUse(spec.AppID, releaseIDOf(spec.DeployPath, st.PrevTarget))
		afterSwitch := step == StepReload || step == StepProcesses || step == StepHealthCheck
		if releaseIDOf(spec.DeployPath, cur) == j.id && afterSwitch && inUse && !prevInUse {
			// The app's processes moved to the release already: current
			// stays with them, and the deploy is failed, not silently
			// kept.
			res.Error = "agent restarted during step " + step + "; the release is current and the app's processes run it: deploy again or roll back"
			break
		}
		// Otherwise a move cut short left the old instances serving (the
		// next deploy retires any new one it started): current goes back
		// to them below, and a release a new instance runs stays.
		if releaseIDOf(spec.DeployPath, cur) == j.id && afterSwitch {
			// Switched but never reloaded (or its processes never moved
			// or were never checked): the app may still serve the old
			// code, so put current back and fail the deploy.
			if err := tree.restoreCurrent(st.PrevTarget); err != nil {
				e.log.Warn("restore current after interrupted deploy", "job", j.id, "err", err)
			}
			cur = st.PrevTarget
		}
		if releaseIDOf(spec.DeployPath, cur) == j.id {
			// Only pruning was left: the release is live, say so.
			res.Status, res.FailedStep, res.ExitCode = StatusSucceeded, "", 0
			res.Error = "agent restarted during step " + step + "; the release is active"
			break
		}
		if res.ReleasePath != "" && !inUse {
			if err := tree.root.RemoveAll(releaseRel(j.id)); err != nil {
				e.log.Warn("remove interrupted release", "job", j.id, "err", err)
			}
		}
		// A first clone the crash cut short.
		os.RemoveAll(filepath.Join(e.mirrorsDir, spec.AppID+".git.tmp-"+j.id))
	case KindRollback:
		res.ReleasePath = releasePath(spec.DeployPath, spec.RollbackTo)
		if releaseIDOf(spec.DeployPath, cur) == spec.RollbackTo && e.releaseInUse(spec.AppID, spec.RollbackTo) &&
			!e.releaseInUse(spec.AppID, releaseIDOf(spec.DeployPath, st.PrevTarget)) {
			// The processes moved to the kept release already: current
			// stays with them (as for a deploy, see above).
			res.Error = "agent restarted during step " + step + "; the kept release is current and the app's processes run it"
			break
		}
		if st.Activated && cur != st.PrevTarget {
			if err := tree.restoreCurrent(st.PrevTarget); err != nil {
				e.log.Warn("restore current after interrupted rollback", "job", j.id, "err", err)
			}
		}
	}
	return res
}

// readEvents parses events.log, stopping at the first line that is not a
// whole event (the agent died mid-write). good is the length of the whole
// lines.
func readEvents(path string) (events []Event, good int64, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	for len(b[good:]) > 0 {
		i := bytes.IndexByte(b[good:], '\n')
		if i < 0 {
			break
		}
		var ev Event
		if json.Unmarshal(b[good:good+int64(i)], &ev) != nil {
			break
		}
		events = append(events, ev)
		good += int64(i) + 1
	}
	return events, good, nil
}

// writeAckedLocked records the last acked event number, with e.mu held.
// It does not wait for the disk (a stale ack after a power cut only makes
// the controller see events again, which it ignores by number) and is
// written in place, fixed-width, with one pwrite that a kill of the agent
// cannot cut in half: an ack comes with every batch of events a deploy
// sends, and creating and renaming a file each time would hold e.mu,
// which the deploy's next event waits for, for a millisecond.
func (j *job) writeAckedLocked() error {
	if j.ackedFile == nil {
		f, err := os.OpenFile(filepath.Join(j.dir, ackedFile), os.O_WRONLY|os.O_CREATE, 0o600)
		if err != nil {
			return err
		}
		j.ackedFile = f
	}
	_, err := j.ackedFile.WriteAt(fmt.Appendf(nil, "%20d\n", j.acked), 0)
	return err
}

func (j *job) closeAckedLocked() {
	if j.ackedFile != nil {
		j.ackedFile.Close()
		j.ackedFile = nil
	}
}

func writeFile(path string, data []byte, perm os.FileMode, sync bool) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
