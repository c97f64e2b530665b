package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain doubles as the agent process the crash test kills: with
// BERTH_DEPLOY_CRASH_HELPER set, the test binary starts a deploy and waits
// to be killed instead of running tests.
func TestMain(m *testing.M) {
	if os.Getenv("BERTH_DEPLOY_CRASH_HELPER") == "1" {
		crashHelper()
	}
	if os.Getenv("BERTH_DEPLOY_USER_HELPER") == "1" {
		userHelper()
	}
	if os.Getenv("BERTH_DEPLOY_WEB_HELPER") == "1" {
		webHelper()
	}
	if os.Getenv("BERTH_DEPLOY_PROC_CRASH_HELPER") == "1" {
		procCrashHelper()
	}
	code := m.Run()
	if agentBinDir != "" {
		os.RemoveAll(agentBinDir)
	}
	os.Exit(code)
}

func crashHelper() {
	ex, err := New(Config{DataDir: os.Getenv("DATA"), AppDirs: []string{os.TempDir()}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash helper:", err)
		os.Exit(2)
	}
	err = ex.Start(context.Background(), Spec{
		DeploymentID: os.Getenv("ID"), AppID: "app1", Kind: KindDeploy,
		RepoURL: os.Getenv("REPO"), DeployPath: os.Getenv("DEPLOY"), RunAsUser: "root", AllowRoot: true,
		DeployScript: longScript(os.Getenv("MARKS")),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash helper:", err)
		os.Exit(2)
	}
	select {}
}

func TestAgentCrashMidJob(t *testing.T) {
	repo := newRepo(t)
	sha := repo.commit("c", map[string]string{"build.sh": buildSh})
	h := newHarness(t, Config{})
	good := h.spec(repo)
	mustSucceed(t, h, good.DeploymentID, h.run(good))
	h.ex.Close()

	id, marks := newID(), t.TempDir()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "BERTH_DEPLOY_CRASH_HELPER=1",
		"DATA="+h.data, "ID="+id, "REPO="+repo.url(), "DEPLOY="+h.deploy, "MARKS="+marks)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	bg := waitFile(t, filepath.Join(marks, "bg.pid"))
	leader := waitFile(t, filepath.Join(marks, "leader.pid"))
	// Wait until "started" is journaled, so there is output to deliver.
	deadline := time.Now().Add(hangGuard)
	for !journalHas(filepath.Join(h.data, "jobs", id, eventsFile), "started") {
		if time.Now().After(deadline) {
			t.Fatalf("output never journaled; helper said:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()

	h.open(Config{})
	res := h.wait(id)
	// The state journaled step by step (in place) names the step and the
	// commit.
	if res.Status != StatusFailed || res.FailedStep != StepBuild || res.Error != "agent restarted during step build" || res.Commit != sha {
		t.Errorf("result = %+v", res)
	}
	if h.current() != good.DeploymentID {
		t.Errorf("current = %s, want %s", h.current(), good.DeploymentID)
	}
	if _, err := os.Stat(filepath.Join(h.deploy, "releases", id)); !os.IsNotExist(err) {
		t.Errorf("interrupted release left behind: %v", err)
	}
	// What the dead agent left running is gone too.
	waitGone(t, bg)
	waitGone(t, leader)

	// The output written before the crash is delivered, then the result.
	var p []Event
	for _, ev := range h.ex.Pending() {
		if ev.JobID == id {
			p = append(p, ev)
		}
	}
	var log strings.Builder
	for i, ev := range p {
		if ev.Seq != uint64(i+1) {
			t.Fatalf("pending[%d].Seq = %d", i, ev.Seq)
		}
		log.Write(ev.Data)
	}
	if !strings.Contains(log.String(), "started") || p[len(p)-1].Type != EventResult {
		t.Errorf("pending log:\n%s", log.String())
	}
	// The app is free for the next deploy.
	next := h.spec(repo)
	mustSucceed(t, h, next.DeploymentID, h.run(next))
}

func journalHas(path, s string) bool {
	evs, _, _ := readEvents(path)
	for _, ev := range evs {
		if strings.Contains(string(ev.Data), s) {
			return true
		}
	}
	return false
}

// After a power cut the state file, written without waiting for the disk,
// may be missing or empty: the job still ends failed, and its release
// (found by its name) is removed.
func TestRecoverWithoutStateFile(t *testing.T) {
	for name, state := range map[string]*string{"missing": nil, "empty": new(string)} {
		t.Run(name, func(t *testing.T) {
			repo := newRepo(t)
			repo.commit("c", map[string]string{"build.sh": buildSh})
			h := newHarness(t, Config{})
			good := h.spec(repo)
			mustSucceed(t, h, good.DeploymentID, h.run(good))
			h.ex.Close()

			s := h.spec(repo)
			dir := filepath.Join(h.data, "jobs", s.DeploymentID)
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(journalSpec{Spec: s, StartedAt: time.Now().UTC()})
			if err := os.WriteFile(filepath.Join(dir, specFile), b, 0o600); err != nil {
				t.Fatal(err)
			}
			if state != nil {
				if err := os.WriteFile(filepath.Join(dir, stateFile), []byte(*state), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			release := filepath.Join(h.deploy, "releases", s.DeploymentID)
			if err := os.MkdirAll(filepath.Join(release, "half"), 0o755); err != nil {
				t.Fatal(err)
			}

			h.open(Config{})
			res := h.wait(s.DeploymentID)
			if res.Status != StatusFailed || res.FailedStep != "start" || res.Error != "agent restarted during step start" {
				t.Errorf("result = %+v", res)
			}
			if _, err := os.Lstat(release); !os.IsNotExist(err) {
				t.Errorf("interrupted release left behind: %v", err)
			}
			if h.current() != good.DeploymentID {
				t.Errorf("current = %s, want %s", h.current(), good.DeploymentID)
			}
			next := h.spec(repo)
			mustSucceed(t, h, next.DeploymentID, h.run(next))
		})
	}
}
