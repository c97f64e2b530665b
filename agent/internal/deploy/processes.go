package deploy

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/berthhq/berth/agent/internal/supervise"
)

// errNoSupervisor is a job that needs app processes on an executor
// without a process manager (Config.Processes).
var errNoSupervisor = errors.New("this agent does not supervise app processes")

// restoreTimeout bounds the work that undoes a failed deploy's switch
// (processes back to the previous release), which runs even after the
// job's own context ended.
const restoreTimeout = 5 * time.Minute

// hasProcesses reports whether a deploy or rollback must move processes:
// the app declares some, or the manager still runs some of it (declared
// before, now none: the move stops them).
func (j *job) hasProcesses() bool {
	if len(j.spec.Processes) > 0 {
		return true
	}
	m := j.e.cfg.Processes
	if m == nil {
		return false
	}
	if len(m.ReleasesInUse(j.spec.AppID)) > 0 {
		return true
	}
	for _, a := range m.Report().GetApps() {
		if a.GetAppId() == j.spec.AppID {
			return true
		}
	}
	return false
}

// processApp is the app as the process manager sees it, running the
// release id (whose directory is release).
func (j *job) processApp(id, release string) supervise.App {
	return supervise.App{
		ID:            j.spec.AppID,
		ReleaseID:     id,
		ReleaseDir:    release,
		UID:           uint32(j.user.uid),
		GID:           uint32(j.user.gid),
		Env:           j.appEnv(id, release),
		Processes:     j.spec.Processes,
		UpstreamPort:  j.spec.UpstreamPort,
		HealthTimeout: j.spec.ProcessHealthTimeout,
	}
}

// appEnv is the environment of the app's long-running processes and
// scheduled commands: as the deploy script's (userEnv), but naming the
// release they run rather than the job that started them.
func (j *job) appEnv(id, release string) []string {
	env := []string{
		"PATH=" + minimalPath,
		"HOME=" + j.user.home,
		"USER=" + j.user.name,
		"LOGNAME=" + j.user.name,
		"LANG=C.UTF-8",
		"BERTH_APP_NAME=" + j.spec.AppName,
		"BERTH_DEPLOYMENT_ID=" + id,
		"BERTH_DEPLOY_PATH=" + j.spec.DeployPath,
		"BERTH_RELEASE_PATH=" + release,
	}
	for k, v := range j.spec.Env {
		env = append(env, k+"="+v)
	}
	return env
}

// moveProcesses is the processes step of a deploy or rollback: the
// manager starts the new instances, waits for their health, switches the
// upstream and stops the old ones; when it fails the old ones still serve.
func (j *job) moveProcesses(ctx context.Context, id, release string) error {
	m := j.e.cfg.Processes
	if m == nil {
		return fmt.Errorf("the app declares %d process(es), but %w", len(j.spec.Processes), errNoSupervisor)
	}
	if len(j.spec.Processes) == 0 {
		j.log.printf("the app declares no processes: stopping those it still has")
	} else {
		j.log.printf("moving %d process(es) to release %s", len(j.spec.Processes), id)
	}
	if err := m.Deploy(ctx, j.processApp(id, release), j.log.printf); err != nil {
		return fmt.Errorf("processes: %w", err)
	}
	return nil
}

// processesBack undoes moveProcesses after a later step failed and
// current went back to prevTarget: the processes move back to that
// release, or stop when there was none (a first deploy). It runs even when
// the job's context has ended.
func (j *job) processesBack(ctx context.Context, prevTarget string) {
	m := j.e.cfg.Processes
	if m == nil {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), restoreTimeout)
	defer cancel()
	prev := releaseIDOf(j.spec.DeployPath, prevTarget)
	if prev == "" {
		j.log.printf("[berth] no previous release: stopping the app's processes")
		if err := m.DeleteApp(rctx, j.spec.AppID); err != nil {
			j.log.printf("[berth] could not stop the app's processes: %v", err)
		}
		return
	}
	j.log.printf("[berth] moving the processes back to release %s", prev)
	if err := m.Deploy(rctx, j.processApp(prev, releasePath(j.spec.DeployPath, prev)), j.log.printf); err != nil {
		j.log.printf("[berth] could not move the processes back: %v", err)
	}
}

// releaseInUse reports whether the app's running instances use release
// id (a directory of the app's releases/), which must then stay.
func (e *Executor) releaseInUse(appID, id string) bool {
	return slices.Contains(e.releasesInUse(appID), id)
}

// releasesInUse are the ids of the releases the app's instances run.
func (e *Executor) releasesInUse(appID string) []string {
	if e.cfg.Processes == nil {
		return nil
	}
	var ids []string
	for _, dir := range e.cfg.Processes.ReleasesInUse(appID) {
		dir = filepath.Clean(dir)
		if filepath.Base(filepath.Dir(dir)) == "releases" && IsReleaseID(filepath.Base(dir)) {
			ids = append(ids, filepath.Base(dir))
		}
	}
	return ids
}

// currentRelease is the release current points at: its id and absolute
// directory. An app without one (never deployed here, or its current
// names no release) is an error for jobs that run in it.
func (j *job) currentRelease() (id, dir string, err error) {
	if j.tree == nil {
		return "", "", fmt.Errorf("the app has no current release on this server (%s does not exist): deploy it first", j.spec.DeployPath)
	}
	target, err := j.tree.readCurrent()
	if err != nil {
		return "", "", err
	}
	id = releaseIDOf(j.spec.DeployPath, target)
	if id == "" {
		return "", "", fmt.Errorf("the app has no current release on this server (%s/current is missing or names no release): deploy it first", j.spec.DeployPath)
	}
	fi, err := j.tree.root.Stat(releaseRel(id))
	if err != nil || !fi.IsDir() {
		return "", "", fmt.Errorf("current names release %s, which is not on this server", id)
	}
	return id, releasePath(j.spec.DeployPath, id), nil
}

// process is a process job: the action on the app's processes, in the
// release current points at.
func (j *job) process(ctx context.Context, res *Result) error {
	if err := j.durable(); err != nil {
		res.FailedStep, res.ExitCode = "start", -1
		return err
	}
	return j.step(ctx, StepProcesses, res, func() error {
		m := j.e.cfg.Processes
		if m == nil {
			return errNoSupervisor
		}
		id, release, err := j.currentRelease()
		if err != nil {
			return err
		}
		res.ReleasePath = release
		what := "all processes"
		if len(j.spec.ProcessNames) > 0 {
			what = fmt.Sprint(j.spec.ProcessNames)
		}
		j.log.printf("%s %s in release %s", j.spec.ProcessAction, what, id)
		return m.Action(ctx, j.processApp(id, release), j.spec.ProcessAction, j.spec.ProcessNames, j.log.printf)
	})
}

// schedule is one run of a scheduled command: bash from the release
// current points at, as the app's user, with the app's environment,
// its output in the job's log like a deploy script's; cancel and the
// deadline end its whole process group.
func (j *job) schedule(ctx context.Context, res *Result) error {
	if err := j.durable(); err != nil {
		res.FailedStep, res.ExitCode = "start", -1
		return err
	}
	return j.step(ctx, StepSchedule, res, func() error {
		id, release, err := j.currentRelease()
		if err != nil {
			return err
		}
		res.ReleasePath = release
		j.e.mu.Lock()
		j.runsIn = id
		j.e.mu.Unlock()
		j.log.printf("schedule %s in release %s", j.spec.ScheduleName, id)
		env := append(j.appEnv(id, release), "BERTH_SCHEDULE_NAME="+j.spec.ScheduleName, "BERTH_JOB_ID="+j.id)
		return j.run(ctx, cmdSpec{
			argv: []string{"bash", "-c", j.spec.ScheduleCommand}, dir: release,
			env: env, asUser: true, echo: j.spec.ScheduleCommand,
		})
	})
}

// stopProcesses is a delete job's first step: the app's processes, its
// supervisors and its upstream stop, and the manager forgets the app,
// before any of its files go.
func (j *job) stopProcesses(ctx context.Context, res *Result) error {
	m := j.e.cfg.Processes
	if m == nil {
		return nil
	}
	return j.step(ctx, StepProcesses, res, func() error {
		if err := m.DeleteApp(ctx, j.spec.AppID); err != nil {
			return fmt.Errorf("stop the app's processes: %w", err)
		}
		j.log.printf("stopped the app's processes and its upstream")
		return nil
	})
}

// releasesOfSchedules are the releases the app's running scheduled
// commands run in: a deploy beside them must not prune those.
func (e *Executor) releasesOfSchedules(appID string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var ids []string
	for _, j := range e.jobs {
		if j.running && j.spec.AppID == appID && j.spec.Kind == KindSchedule && j.runsIn != "" {
			ids = append(ids, j.runsIn)
		}
	}
	return ids
}
