package main_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"google.golang.org/protobuf/proto"

	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// heldJob opens the agent's held copy of schedule id with the agent's own
// held key: ok false while the agent does not hold it.
func heldJob(t *testing.T, agentDir, id string) (job *agentv1.BackupJob, appName string, ok bool) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(agentDir, "held-backups.json"))
	if err != nil {
		return nil, "", false
	}
	var st struct {
		Schedules []struct {
			ID      string `json:"id"`
			AppName string `json:"app_name"`
			Sealed  []byte `json:"sealed"`
		} `json:"schedules"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatalf("held-backups.json: %v", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(agentDir, "held.key"))
	if err != nil {
		t.Fatal(err)
	}
	id0, err := age.ParseX25519Identity(strings.TrimSpace(string(keyPEM)))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st.Schedules {
		if s.ID != id {
			continue
		}
		r, err := age.Decrypt(bytes.NewReader(s.Sealed), id0)
		if err != nil {
			t.Fatalf("open the held job: %v", err)
		}
		var b bytes.Buffer
		if _, err := b.ReadFrom(r); err != nil {
			t.Fatal(err)
		}
		job = &agentv1.BackupJob{}
		if err := proto.Unmarshal(b.Bytes(), job); err != nil {
			t.Fatal(err)
		}
		return job, s.AppName, true
	}
	return nil, "", false
}

// An agent's held schedules follow its apps: a changed environment
// variable that a schedule connects with reaches the held copy (else a
// backup made during an outage would use the old database URL), and the
// schedules of a deleted app leave the agent (else it would keep backing
// up an app that no longer exists whenever the controller is away).
func TestHeldSchedulesFollowAppChanges(t *testing.T) {
	t.Parallel()
	e := setupDeploy(t)
	e.createApp(t, "shop", "https://git.example.com/shop.git", "")
	vault := filepath.Join(e.base, "vault")
	if err := os.MkdirAll(vault, 0o700); err != nil {
		t.Fatal(err)
	}
	if r := e.cli(t, "", "backup", "destination", "add", "vault", "--kind", "local", "--path", vault); r.code != 0 {
		t.Fatalf("destination add: %+v", r)
	}
	url := func(db string) string { return "postgres://shop:pw-" + db + "@127.0.0.1:5432/" + db }
	if r := e.cli(t, "", "app", "env", "set", "shop", "DATABASE_URL="+url("one")); r.code != 0 {
		t.Fatalf("env set: %+v", r)
	}
	var sc scheduleRow
	if code := e.backupJSON(t, "", &sc, "backup", "schedule", "add", "shop", "--destination", "vault", "--kind", "postgres",
		"--source", "one", "--connection-env", "DATABASE_URL", "--cron", "0 3 * * *", "--keep", "3"); code != 0 {
		t.Fatalf("schedule add: %d", code)
	}
	connURL := func() string {
		job, _, ok := heldJob(t, e.agentDir, sc.ID)
		if !ok {
			return ""
		}
		return job.GetSource().GetConnectionUrl()
	}
	waitFor(t, "the agent to hold the schedule with the first URL", time.Minute, func() bool { return connURL() == url("one") })

	if r := e.cli(t, "", "app", "env", "set", "shop", "DATABASE_URL="+url("two")); r.code != 0 {
		t.Fatalf("env set: %+v", r)
	}
	waitFor(t, "the held copy to carry the changed URL", time.Minute, func() bool { return connURL() == url("two") })

	if r := e.cli(t, "", "app", "delete", "shop"); r.code != 0 {
		t.Fatalf("app delete: %+v", r)
	}
	waitFor(t, "the agent to drop the deleted app's schedule", 2*time.Minute, func() bool {
		_, _, ok := heldJob(t, e.agentDir, sc.ID)
		return !ok
	})
}
