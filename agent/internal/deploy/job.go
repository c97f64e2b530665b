package deploy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// describeDelay is how long the deploy script runs before git is asked
// for the commit's subject: spawning processes is what a deploy's start
// costs most on a small VM, and the script's own start comes first.
const describeDelay = 250 * time.Millisecond

// execute runs the job to its end and reports the result.
func (j *job) execute(ctx context.Context) {
	j.log.start()
	res := Result{StartedAt: j.getState().StartedAt}
	var err error
	if j.spec.Kind.IsBackup() {
		// No app user, no deploy path: the backup package runs its tools
		// (dumps as the database's own superuser or with the job's
		// connection URL) and reaches the destination itself.
		if err = j.durable(); err == nil {
			err = j.backupJob(ctx, &res)
		}
		j.endJob(ctx, err, res)
		return
	}
	if err = os.Mkdir(j.tmp, 0o700); err == nil && j.spec.Kind != KindDelete {
		// A delete runs nothing as the app's user (nor creates it).
		j.user, err = j.appUser(ctx)
	}
	if err == nil && j.spec.Kind == KindDelete {
		// A delete of an app whose deploy path is gone has nothing to do.
		if _, lerr := os.Lstat(j.spec.DeployPath); lerr == nil {
			j.tree, err = j.openTree(false)
		} else if !errors.Is(lerr, fs.ErrNotExist) {
			err = lerr
		}
	} else if err == nil {
		// A rollback needs a deploy path that is there already.
		j.tree, err = j.openTree(j.spec.Kind == KindDeploy)
	}
	defer j.tree.close()
	if err != nil {
		res.FailedStep, res.ExitCode = "start", -1
	} else if j.spec.Kind == KindDelete {
		err = j.remove(ctx, &res)
	} else if j.spec.Kind == KindProcess {
		err = j.process(ctx, &res)
	} else if j.spec.Kind == KindSchedule {
		err = j.schedule(ctx, &res)
	} else if j.spec.Kind == KindRollback {
		err = j.rollback(ctx, &res)
	} else {
		err = j.deploy(ctx, &res)
	}
	// Secrets go first, whatever happened.
	if rerr := os.RemoveAll(j.tmp); rerr != nil {
		j.e.log.Error("remove job secrets", "job", j.id, "err", rerr)
	}
	cause := context.Cause(ctx)
	if errors.Is(cause, errShutdown) {
		j.log.close()
		j.abandon()
		return
	}
	if st := j.getState(); err != nil && j.spec.Kind == KindDeploy && st.Release != "" {
		// Never remove what current points at, however the job failed.
		// Nor what the app's processes still run.
		cur, cerr := j.tree.readCurrent()
		if cerr == nil && releaseIDOf(j.spec.DeployPath, cur) != j.id && !j.e.releaseInUse(j.spec.AppID, j.id) {
			if rerr := j.tree.root.RemoveAll(releaseRel(j.id)); rerr != nil {
				j.log.printf("[berth] could not remove the failed release: %v", rerr)
			}
		}
	}
	j.endJob(ctx, err, res)
}

// endJob turns a job's error and context into its result, and reports it.
func (j *job) endJob(ctx context.Context, err error, res Result) {
	cause := context.Cause(ctx)
	if errors.Is(cause, errShutdown) {
		j.log.close()
		j.abandon()
		return
	}
	switch {
	case err == nil:
		res.Status = StatusSucceeded
		if j.spec.Kind.IsBackup() || j.spec.Kind == KindDelete || j.spec.Kind == KindProcess || j.spec.Kind == KindSchedule {
			j.log.printf("==> done")
		} else {
			j.log.printf("==> done: %s", res.ReleasePath)
		}
	case errors.Is(cause, errCanceled):
		res.Status, res.Error = StatusCanceled, "canceled during step "+res.FailedStep
	case errors.Is(cause, errTimedOut):
		res.Status = StatusTimedOut
		res.Error = fmt.Sprintf("timed out after %s during step %s", j.spec.Timeout, res.FailedStep)
	default:
		res.Status, res.Error = StatusFailed, j.redact.string(err.Error())
	}
	if res.Status != StatusSucceeded {
		j.log.printf("==> %s: %s", res.Status, res.Error)
	}
	j.log.close()
	res.LogDroppedBytes = j.log.droppedBytes()
	res.FinishedAt = time.Now().UTC()
	j.finish(res)
}

// step runs one named step: banner, progress event, journaled state; a
// failure is recorded as this step's. Once the job's context is done no
// further step starts.
func (j *job) step(ctx context.Context, name string, res *Result, fn func() error) error {
	if ctx.Err() != nil {
		res.FailedStep, res.ExitCode = name, -1
		return context.Cause(ctx)
	}
	j.log.setStep(name)
	err := j.saveStep(name)
	j.emit(Event{Type: EventProgress, Step: name})
	j.log.printf("==> %s", name)
	if err == nil {
		err = fn()
	}
	if err != nil {
		res.FailedStep, res.ExitCode = name, -1
		var ee *exitError
		if errors.As(err, &ee) {
			res.ExitCode = ee.code
		}
	}
	return err
}

func (j *job) deploy(ctx context.Context, res *Result) error {
	release := releasePath(j.spec.DeployPath, j.id)
	res.ReleasePath = release
	// bash starts once the fetch has its first git process, and waits
	// for the script: its start-up overlaps the fetch and checkout
	// instead of following them.
	sh := j.startShell(ctx, release)
	defer sh.discard()
	var u *unpack
	err := j.step(ctx, StepFetch, res, func() (err error) { u, err = j.fetch(ctx, release, res); return err })
	j.markSpawned() // whether or not the fetch started a process
	// The fetch is over (every git that talked to the remote has exited):
	// its SSH key leaves the disk now, long before the script is handed
	// over, and a deploy that cannot remove it goes no further.
	if derr := j.dropCredential(); derr != nil && err == nil {
		res.FailedStep, res.ExitCode = StepFetch, -1
		err = derr
	}
	if err != nil {
		if u != nil {
			u.abort()
		}
		return err
	}
	// The commit's subject is asked for once the script has had its
	// start (it needs only the commit id): after describeDelay of the
	// build, or when the build ends, whichever comes first. It is in the
	// result however the deploy ends.
	var (
		descOnce sync.Once
		desc     *description
	)
	describe := func() { descOnce.Do(func() { desc = j.describe(ctx, res.Commit) }) }
	defer func() {
		describe()
		desc.wait()
		res.CommitMessage = desc.msg
	}()
	if err := j.step(ctx, StepCheckout, res, func() error { return u.wait() }); err != nil {
		u.stop() // a cancel may have kept wait from running
		return err
	}
	if err := j.step(ctx, StepLinkShared, res, func() error {
		for _, p := range j.spec.SharedPaths {
			if err := j.linkShared(p); err != nil {
				return fmt.Errorf("shared path %s: %w", p, err)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := j.step(ctx, StepWriteEnv, res, func() error {
		if len(j.spec.Env) == 0 {
			j.log.printf("no environment configured; .env left as the repository has it")
			return nil
		}
		return j.writeEnv()
	}); err != nil {
		return err
	}
	scriptStarted := func() { time.AfterFunc(describeDelay, describe) }
	err = j.step(ctx, StepBuild, res, func() error { return sh.run(res.Commit, scriptStarted) })
	describe()
	if err != nil {
		return err
	}
	// An app with processes is health-checked once they run the release
	// (its check may well ask them); one without is checked before the
	// switch, as ever.
	procs := j.hasProcesses()
	if !procs {
		if err := j.step(ctx, StepHealthCheck, res, func() error { return j.healthCheck(ctx, release, res.Commit) }); err != nil {
			return err
		}
	}
	var prev, prevTarget string
	if err := j.step(ctx, StepActivate, res, func() error {
		target, err := j.tree.readCurrent()
		if err != nil {
			return err
		}
		prevTarget = target
		prev = releaseIDOf(j.spec.DeployPath, target)
		res.PreviousRelease = prev
		// Journaled before the switch: a crash right after the rename
		// must still know what current pointed at.
		if err := j.saveState(func(s *jobState) { s.PrevTarget, s.Activated = target, true }); err != nil {
			return err
		}
		if err := j.tree.switchCurrent(release, j.user); err != nil {
			return err
		}
		j.log.printf("current -> %s", release)
		return nil
	}); err != nil {
		return err
	}
	// The processes move to the new release; when that fails the old
	// instances still serve, and current goes back to them.
	if procs {
		if err := j.step(ctx, StepProcesses, res, func() error { return j.moveProcesses(ctx, j.id, release) }); err != nil {
			j.restoreAfterRollback(ctx, prevTarget)
			return err
		}
	}
	// The app's reload command (php-fpm, a systemd unit...) makes it serve
	// the new release. If it fails, current goes back to what it was, so a
	// failed deploy never leaves a half-switched app.
	err = j.step(ctx, StepReload, res, func() error { return j.reload(ctx, release) })
	if err == nil && procs {
		err = j.step(ctx, StepHealthCheck, res, func() error { return j.healthCheck(ctx, release, res.Commit) })
	}
	if err != nil {
		j.restoreAfterRollback(ctx, prevTarget)
		if procs {
			j.processesBack(ctx, prevTarget)
		}
		return err
	}
	// The release is live: pruning runs even if a cancel arrives now, and
	// its failure is a warning, never a failed deploy.
	j.log.setStep(StepPrune)
	j.saveStep(StepPrune)
	j.emit(Event{Type: EventProgress, Step: StepPrune})
	j.log.printf("==> %s", StepPrune)
	if err := j.prune(j.id, prev); err != nil {
		j.log.printf("[berth] warning: prune: %v", err)
	}
	// The fetch skipped git's automatic housekeeping to keep it off the
	// critical path; it runs here, once the release is live.
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer cancel()
	if err := j.git(mctx, "--git-dir", j.mirrorPath(), "maintenance", "run", "--auto"); err != nil {
		j.log.printf("[berth] warning: mirror housekeeping: %v", err)
	}
	return nil
}

func (j *job) rollback(ctx context.Context, res *Result) error {
	release := releasePath(j.spec.DeployPath, j.spec.RollbackTo)
	res.ReleasePath = release
	if err := j.durable(); err != nil {
		res.FailedStep, res.ExitCode = "start", -1
		return err
	}
	if err := j.step(ctx, StepVerify, res, func() error {
		fi, err := j.tree.root.Stat(releaseRel(j.spec.RollbackTo))
		if err != nil || !fi.IsDir() {
			return fmt.Errorf("release %s was pruned (no %s on this server)", j.spec.RollbackTo, release)
		}
		j.log.printf("release %s is here", j.spec.RollbackTo)
		return nil
	}); err != nil {
		return err
	}
	var prevTarget string
	if err := j.step(ctx, StepActivate, res, func() error {
		var err error
		if prevTarget, err = j.tree.readCurrent(); err != nil {
			return err
		}
		res.PreviousRelease = releaseIDOf(j.spec.DeployPath, prevTarget)
		if err := j.saveState(func(s *jobState) { s.PrevTarget, s.Activated = prevTarget, true }); err != nil {
			return err
		}
		if err := j.tree.switchCurrent(release, j.user); err != nil {
			return err
		}
		j.log.printf("current -> %s", release)
		return nil
	}); err != nil {
		return err
	}
	// The processes move to the kept release as they would to a new one.
	procs := j.hasProcesses()
	if procs {
		if err := j.step(ctx, StepProcesses, res, func() error { return j.moveProcesses(ctx, j.spec.RollbackTo, release) }); err != nil {
			j.restoreAfterRollback(ctx, prevTarget)
			return err
		}
	}
	err := j.step(ctx, StepReload, res, func() error { return j.reload(ctx, release) })
	if err == nil {
		err = j.step(ctx, StepHealthCheck, res, func() error { return j.healthCheck(ctx, release, "") })
	}
	if err != nil {
		j.restoreAfterRollback(ctx, prevTarget)
		if procs {
			j.processesBack(ctx, prevTarget)
		}
	}
	return err
}

// reload runs the app's reload command from the release now current.
func (j *job) reload(ctx context.Context, release string) error {
	if j.spec.ReloadCommand == "" {
		j.log.printf("no reload command configured")
		return nil
	}
	return j.run(ctx, cmdSpec{
		argv: []string{"bash", "-c", j.spec.ReloadCommand}, dir: release,
		env: j.userEnv(release, ""), asUser: true, echo: j.spec.ReloadCommand,
	})
}

// restoreAfterRollback switches current back after a failed rollback (or
// a deploy whose reload failed) and
// reloads again so the app serves what current says.
func (j *job) restoreAfterRollback(ctx context.Context, prevTarget string) {
	j.log.printf("[berth] %s failed: switching current back to %q", j.spec.Kind, prevTarget)
	if err := j.tree.restoreCurrent(prevTarget); err != nil {
		j.log.printf("[berth] could not switch current back: %v", err)
		return
	}
	j.saveState(func(s *jobState) { s.Activated = false })
	if j.spec.ReloadCommand == "" || prevTarget == "" {
		return
	}
	// The job's own context may be canceled or past its deadline; the
	// reload that undoes the switch still gets its chance.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	dir := prevTarget
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(j.spec.DeployPath, dir)
	}
	if err := j.run(rctx, cmdSpec{
		argv: []string{"bash", "-c", j.spec.ReloadCommand}, dir: dir,
		env: j.userEnv(dir, ""), asUser: true, echo: j.spec.ReloadCommand,
	}); err != nil {
		j.log.printf("[berth] reload after switching back failed: %v", err)
	}
}

// userEnv is the environment of the app's own commands: a minimal base,
// a few BERTH_ variables, then the app's Env (which wins).
func (j *job) userEnv(release, commit string) []string {
	env := []string{
		"PATH=" + minimalPath,
		"HOME=" + j.user.home,
		"USER=" + j.user.name,
		"LOGNAME=" + j.user.name,
		"LANG=C.UTF-8",
		"BERTH_APP_NAME=" + j.spec.AppName,
		"BERTH_DEPLOYMENT_ID=" + j.id,
		"BERTH_DEPLOY_PATH=" + j.spec.DeployPath,
		"BERTH_RELEASE_PATH=" + release,
	}
	if commit != "" {
		env = append(env, "BERTH_COMMIT="+commit)
	}
	for k, v := range j.spec.Env {
		env = append(env, k+"="+v)
	}
	return env
}

var errHealthTimeout = errors.New("health check timed out")

// healthCheck runs the configured command and/or polls the URL, within
// the check's own timeout.
func (j *job) healthCheck(ctx context.Context, dir, commit string) error {
	hc := j.spec.HealthCheck
	if hc == nil {
		j.log.printf("no health check configured")
		return nil
	}
	hctx, cancel := context.WithTimeoutCause(ctx, hc.Timeout, errHealthTimeout)
	defer cancel()
	if hc.Command != "" {
		err := j.run(hctx, cmdSpec{
			argv: []string{"bash", "-c", hc.Command}, dir: dir,
			env: j.userEnv(dir, commit), asUser: true, echo: hc.Command,
		})
		if err != nil && ctx.Err() == nil && hctx.Err() != nil {
			return fmt.Errorf("health check command did not finish within %s", hc.Timeout)
		}
		if err != nil {
			return fmt.Errorf("health check command failed: %w", err)
		}
	}
	if hc.URL != "" {
		return j.pollURL(ctx, hctx, hc)
	}
	return nil
}

func (j *job) pollURL(ctx, hctx context.Context, hc *HealthCheck) error {
	url := j.redact.string(hc.URL)
	client := &http.Client{}
	last := ""
	for {
		req, err := http.NewRequestWithContext(hctx, http.MethodGet, hc.URL, nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "berth-agent health check")
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				j.log.printf("GET %s: %s", url, resp.Status)
				return nil
			}
			last = resp.Status
		} else {
			last = j.redact.string(err.Error())
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		j.log.printf("GET %s: %s", url, last)
		select {
		case <-hctx.Done():
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			return fmt.Errorf("health check %s got no 2xx answer within %s (last: %s)", url, hc.Timeout, last)
		case <-time.After(time.Second):
		}
	}
}
