package main_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

type scheduleRun struct {
	deployment
	Kind       string     `json:"kind"`
	Schedule   string     `json:"schedule"`
	Skipped    bool       `json:"skipped"`
	OutputTail string     `json:"output_tail"`
	QueuedAt   time.Time  `json:"queued_at"`
	StartedAt  *time.Time `json:"started_at"`
}

func (e *deployEnv) scheduleRuns(t *testing.T, app, name string) []scheduleRun {
	t.Helper()
	var runs []scheduleRun
	e.mustJSON(t, &runs, "app", "schedule", "runs", app, name, "--limit", "100")
	return runs
}

func countRuns(runs []scheduleRun, status string, skipped bool) int {
	n := 0
	for _, r := range runs {
		if r.Skipped == skipped && (status == "" || r.Status == status) {
			n++
		}
	}
	return n
}

// TestAppSchedulesRunAndNeverOverlap is issue 16 §4's schedules with the
// real binaries and real cron minutes: a schedule runs when due in the
// app's current release (exit code and output tail recorded), a failing
// one records its exit code, a run that lasts longer than its period makes
// the next due run skipped (never two at once), and `app delete` leaves no
// schedule, queued run or running command behind.
func TestAppSchedulesRunAndNeverOverlap(t *testing.T) {
	t.Parallel()
	e := setupDeploy(t)
	url := e.repo.serveHTTP(t, gitUser, gitToken)
	if r := e.cli(t, gitToken+"\n", "git-credential", "add", "gitcred", "--https", "--username", gitUser, "--token-stdin"); r.code != 0 {
		t.Fatalf("git-credential add: %+v", r)
	}
	e.repo.commit(t, "main", "first", map[string]string{"version.txt": "v1\n"})
	e.createApp(t, "shop", url, "gitcred")
	appDir := filepath.Join(e.base, "shop")
	appID := e.appShow(t, "shop").ID
	t.Cleanup(func() { killAppProcs(appDir, appID, e.agentDir, e.agent.cmd.Process.Pid) })
	if d, logs, code := e.deployFollow(t, "shop"); code != 0 {
		t.Fatalf("deploy: %d %+v\n%s", code, d, logs)
	}

	// Bad input is refused with one clear line.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"app", "schedule", "add", "shop", "tick", "--cron", "61 * * * *", "--command", "true"}, "cron"},
		{[]string{"app", "schedule", "add", "shop", "tick", "--cron", "* * *", "--command", "true"}, "cron"},
		{[]string{"app", "schedule", "add", "shop", "tick", "--cron", "* * * * *", "--command", "true", "--timezone", "Mars/Olympus"}, "Mars/Olympus"},
		{[]string{"app", "schedule", "add", "shop", "Bad!", "--cron", "* * * * *", "--command", "true"}, "name"},
		{[]string{"app", "schedule", "add", "nope", "tick", "--cron", "* * * * *", "--command", "true"}, "no app named"},
		{[]string{"app", "schedule", "runs", "shop", "ghost"}, "ghost"},
		{[]string{"app", "schedule", "remove", "shop", "ghost"}, "ghost"},
	} {
		if r := e.cli(t, "", tc.args...); r.code == 0 || !strings.Contains(r.stderr, tc.want) || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%v: %+v, want one error line with %q", tc.args, r, tc.want)
		}
	}

	marks := t.TempDir()
	if err := os.Chmod(marks, 0o777); err != nil {
		t.Fatal(err)
	}
	tickFile, slowFile, lock := filepath.Join(marks, "tick"), filepath.Join(marks, "slow"), filepath.Join(marks, "lock")
	var tick struct {
		Name      string     `json:"name"`
		Cron      string     `json:"cron"`
		Timezone  string     `json:"timezone"`
		NextRunAt *time.Time `json:"next_run_at"`
	}
	addedAt := time.Now()
	e.mustJSON(t, &tick, "app", "schedule", "add", "shop", "tick", "--cron", "* * * * *", "--timezone", "Europe/Paris",
		"--command", "echo \"tick $(cat version.txt) $(date +%s)\" >> "+tickFile+"; echo ran-ok")
	if tick.Name != "tick" || tick.Timezone != "Europe/Paris" || tick.NextRunAt == nil || !tick.NextRunAt.After(addedAt.Add(-time.Second)) ||
		tick.NextRunAt.Second() != 0 {
		t.Fatalf("schedule add tick: %+v", tick)
	}
	// slow outlasts its minute: the run due while it runs must be skipped.
	if r := e.cli(t, "", "app", "schedule", "add", "shop", "slow", "--cron", "* * * * *", "--command",
		"mkdir "+lock+" 2>/dev/null || echo OVERLAP >> "+slowFile+"; echo \"start $(date +%s.%N)\" >> "+slowFile+
			"; sleep 65; echo \"end $(date +%s.%N)\" >> "+slowFile+"; rmdir "+lock); r.code != 0 || !strings.Contains(r.stdout, "next run") {
		t.Fatalf("schedule add slow: %+v", r)
	}
	if r := e.cli(t, "", "app", "schedule", "add", "shop", "fail", "--cron", "* * * * *", "--command", "echo oops; exit 3"); r.code != 0 {
		t.Fatalf("schedule add fail: %+v", r)
	}
	if r := e.cli(t, "", "app", "schedule", "add", "shop", "fail", "--cron", "@hourly", "--command", "true"); r.code == 0 || !strings.Contains(r.stderr, "exist") {
		t.Fatalf("a second schedule of the same name without --replace: %+v", r)
	}
	if r := e.cli(t, "", "app", "schedule", "list", "shop"); r.code != 0 || !strings.Contains(r.stdout, "Europe/Paris") || !strings.Contains(r.stdout, "slow") ||
		!strings.Contains(r.stdout, "never") {
		t.Fatalf("schedule list: %+v", r)
	}

	// Real cron minutes: wait for the runs themselves.
	waitFor(t, "two tick runs, a failed run, and a slow run with a skipped one after it", 5*time.Minute, func() bool {
		return countRuns(e.scheduleRuns(t, "shop", "tick"), "succeeded", false) >= 2 &&
			countRuns(e.scheduleRuns(t, "shop", "fail"), "failed", false) >= 1 &&
			countRuns(e.scheduleRuns(t, "shop", "slow"), "succeeded", false) >= 1 &&
			countRuns(e.scheduleRuns(t, "shop", "slow"), "", true) >= 1
	})
	ticks := e.scheduleRuns(t, "shop", "tick")
	var firstTick *scheduleRun
	for i := range ticks {
		r := &ticks[i]
		if r.Kind != "schedule" || r.Schedule != "tick" {
			t.Fatalf("tick run: %+v", r)
		}
		if r.Status == "succeeded" {
			if r.ExitCode == nil || *r.ExitCode != 0 || !strings.Contains(r.OutputTail, "ran-ok") {
				t.Fatalf("succeeded tick run: %+v", r)
			}
			firstTick = r // runs come newest first
		}
	}
	if firstTick == nil || firstTick.StartedAt == nil {
		t.Fatalf("no started tick run: %+v", ticks)
	}
	if firstTick.StartedAt.Before(*tick.NextRunAt) {
		t.Fatalf("the first tick run started at %s, before it was due at %s", firstTick.StartedAt, tick.NextRunAt)
	}
	t.Logf("the first tick run was due at %s and started %v later", tick.NextRunAt.Format(time.TimeOnly), firstTick.StartedAt.Sub(*tick.NextRunAt))
	if b, err := os.ReadFile(tickFile); err != nil || !strings.Contains(string(b), "tick v1 ") {
		t.Fatalf("tick did not run in the current release: %q %v", b, err)
	}
	for _, r := range e.scheduleRuns(t, "shop", "fail") {
		if r.Status == "failed" && (r.ExitCode == nil || *r.ExitCode != 3 || !strings.Contains(r.OutputTail, "oops")) {
			t.Fatalf("failed run: %+v", r)
		}
	}
	if r := e.cli(t, "", "app", "schedule", "runs", "shop", "slow"); r.code != 0 || !strings.Contains(r.stdout, "skipped") {
		t.Fatalf("schedule runs slow (text): %+v", r)
	}
	show := e.appShow(t, "shop")
	if len(show.Schedules) != 3 {
		t.Fatalf("app show lists %d schedules", len(show.Schedules))
	}
	for _, s := range show.Schedules {
		if s.LastRun == nil || s.NextRunAt == nil {
			t.Fatalf("app show: schedule %s without last run or next run: %+v", s.Name, s)
		}
	}
	if r := e.cli(t, "", "app", "schedule", "remove", "shop", "fail"); r.code != 0 {
		t.Fatalf("schedule remove: %+v", r)
	}
	var list []map[string]any
	e.mustJSON(t, &list, "app", "schedule", "list", "shop")
	if len(list) != 2 {
		t.Fatalf("schedule list after remove: %v", list)
	}

	// Delete: no schedule, queued run or running command is left.
	var del struct {
		Job deployment `json:"job"`
	}
	e.mustJSON(t, &del, "app", "delete", "shop")
	e.waitStatus(t, appID, del.Job.ID, "succeeded")
	waitFor(t, "no process of the deleted app", 30*time.Second, func() bool {
		return len(appProcs(appDir, appID, e.agentDir, e.agent.cmd.Process.Pid)) == 0
	})
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.dsn())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var schedules, pending int
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM app_schedules WHERE app_id::text = $1),
		(SELECT count(*) FROM deployments WHERE app_id::text = $1 AND kind = 'schedule' AND status IN ('queued', 'dispatched', 'running'))`,
		uuidOf(t, appID)).Scan(&schedules, &pending); err != nil {
		t.Fatal(err)
	}
	if schedules != 0 || pending != 0 {
		t.Fatalf("after app delete: %d schedules and %d unfinished runs left", schedules, pending)
	}

	// Never two slow runs at once: no run found another's lock, and the
	// recorded intervals do not intersect.
	b, _ := os.ReadFile(slowFile)
	if strings.Contains(string(b), "OVERLAP") {
		t.Fatalf("two slow runs overlapped:\n%s", b)
	}
	var spans [][2]float64
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			t.Fatalf("slow marks line %q", line)
		}
		if f[0] == "start" {
			spans = append(spans, [2]float64{v, 1e18})
		} else if len(spans) > 0 {
			spans[len(spans)-1][1] = v
		}
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i][0] < spans[j][0] })
	for i := 1; i < len(spans); i++ {
		if spans[i][0] < spans[i-1][1] {
			t.Fatalf("slow runs overlap: %v", spans)
		}
	}
	if len(spans) == 0 {
		t.Fatalf("no slow run recorded:\n%s", b)
	}
	var runsJSON []byte
	runsJSON, _ = json.Marshal(spans)
	t.Logf("slow runs (start, end): %s", runsJSON)
}
