package web

import (
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
)

func TestRollbackOptions(t *testing.T) {
	at := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	path := "/srv/x/releases/r"
	dep := func(msg, sha string, st store.DeploymentStatus, trig store.Trigger) store.Deployment {
		at = at.Add(time.Minute)
		fin := at
		m, s := msg, sha
		return store.Deployment{ID: store.NewID(), Kind: store.JobDeploy, Status: st, TriggeredBy: trig, CommitMessage: &m, CommitSHA: &s,
			ReleasePath: &path, QueuedAt: at, FinishedAt: &fin}
	}
	// Oldest first, then reversed: the page lists newest first.
	d1 := dep("first release\n\nbody", "1111111aaaa", store.DeploymentSucceeded, store.TriggerUser)
	d2 := dep("second", "2222222bbbb", store.DeploymentSucceeded, store.TriggerUser)
	d3 := dep("broken", "3333333cccc", store.DeploymentFailed, store.TriggerUser)
	d4 := dep("third", "4444444dddd", store.DeploymentSucceeded, store.TriggerUser)
	rb := dep("", "", store.DeploymentSucceeded, store.TriggerRollback)
	list := []store.Deployment{rb, d4, d3, d2, d1}

	opts := rollbackOptions(list, &d4.ID, 5)
	if len(opts) != 3 || opts[0].ID != d4.ID || !opts[0].Current || opts[0].Selected || opts[1].ID != d2.ID || !opts[1].Selected {
		t.Fatalf("current d4: %+v", opts)
	}
	if want := "first release · 1111111 · 2026-12-06 10:01 UTC"; opts[2].Label != want {
		t.Fatalf("label %q, want %q", opts[2].Label, want)
	}
	// After a rollback to d2, d1 is the one before it; d4 stays listed.
	opts = rollbackOptions(list, &d2.ID, 5)
	if len(opts) != 3 || !opts[1].Current || !opts[2].Selected || opts[2].ID != d1.ID {
		t.Fatalf("current d2: %+v", opts)
	}
	// Current is the oldest: the newest other release is preselected.
	opts = rollbackOptions(list, &d1.ID, 5)
	if !opts[0].Selected || opts[0].ID != d4.ID {
		t.Fatalf("current d1: %+v", opts)
	}
	// Pruned releases are not offered.
	if opts = rollbackOptions(list, &d4.ID, 2); len(opts) != 2 || opts[1].ID != d2.ID {
		t.Fatalf("keep 2: %+v", opts)
	}
	// Only the current release: no list.
	if opts = rollbackOptions([]store.Deployment{d1}, &d1.ID, 5); opts != nil {
		t.Fatalf("only current: %+v", opts)
	}
	long := dep(strings.Repeat("x", 100), "5555555", store.DeploymentSucceeded, store.TriggerUser)
	if l := releaseLabel(long); !strings.HasPrefix(l, strings.Repeat("x", 59)+"… · 5555555 · ") {
		t.Fatalf("long subject label %q", l)
	}
}
