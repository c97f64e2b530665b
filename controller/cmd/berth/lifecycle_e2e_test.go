package main_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An app's deploy script read from the repository, then its delete with
// the real binaries: files gone, history kept, name reusable, and
// --keep-files keeps them.
func TestAppDeleteAndScriptPath(t *testing.T) {
	t.Parallel()
	e := setupDeploy(t)
	url := e.repo.serveHTTP(t, gitUser, gitToken)
	if err := os.MkdirAll(filepath.Join(e.repo.work, "deploy"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.repo.commit(t, "main", "first", map[string]string{"version.txt": "v1\n", "deploy/berth.sh": deployScript})
	if r := e.cli(t, gitToken+"\n", "git-credential", "add", "gitcred", "--https", "--username", gitUser, "--token-stdin"); r.code != 0 {
		t.Fatalf("git-credential add: %+v", r)
	}
	e.createApp(t, "shop", url, "gitcred", "--shared", "storage")
	if r := e.cli(t, "", "app", "update", "shop", "--deploy-script-path", "deploy/berth.sh"); r.code != 0 {
		t.Fatalf("app update --deploy-script-path: %+v", r)
	}
	var app map[string]any
	e.mustJSON(t, &app, "app", "show", "shop")
	if app["deploy_script_path"] != "deploy/berth.sh" || app["deploy_script"] != "" || app["health_check_command"] == "" ||
		app["releases_to_keep"] == nil || app["run_as_user"] != "root" {
		t.Fatalf("app show: %v", app)
	}
	if r := e.cli(t, "", "app", "show", "shop"); r.code != 0 || !strings.Contains(r.stdout, "from the release: deploy/berth.sh") ||
		!strings.Contains(r.stdout, "SECRET_KEY") || strings.Contains(r.stdout, envSecret) {
		t.Fatalf("app show (text): %+v", r)
	}
	d1, logs, code := e.deployFollow(t, "shop")
	if code != 0 || d1.Status != "succeeded" || !strings.Contains(logs, "deploy script: deploy/berth.sh of the release") || !strings.Contains(logs, "building v1") {
		t.Fatalf("deploy with the script from the release: %d %+v\n%s", code, d1, logs)
	}
	appID := app["id"].(string)
	dir := filepath.Join(e.base, "shop")

	// Delete: a job removes the files; the app goes once it succeeded.
	var del struct {
		Deleted bool       `json:"deleted"`
		Job     deployment `json:"job"`
	}
	e.mustJSON(t, &del, "app", "delete", "shop")
	if del.Deleted || del.Job.ID == "" {
		t.Fatalf("app delete: %+v", del)
	}
	e.waitStatus(t, appID, del.Job.ID, "succeeded")
	if r := e.cli(t, "", "deployments", "list", appID); r.code != 0 || !strings.Contains(r.stdout, "(app delete)") {
		t.Fatalf("deployments list of the deleted app: %+v", r)
	}
	for _, name := range []string{"releases", "current", "shared", ".env"} {
		if _, err := os.Lstat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after app delete: %v", name, err)
		}
	}
	if r := e.cli(t, "", "app", "show", "shop"); r.code == 0 || !strings.Contains(r.stderr, "no app named") {
		t.Fatalf("deleted app shown: %+v", r)
	}
	if d := e.deployment(t, appID, d1.ID); d.Status != "succeeded" {
		t.Fatalf("history of the deleted app: %+v", d)
	}

	// The name (and path) are free; --keep-files leaves the files.
	e.createApp(t, "shop", url, "gitcred")
	d2, logs, code := e.deployFollow(t, "shop")
	if code != 0 || d2.Status != "succeeded" {
		t.Fatalf("deploy of the new shop: %d %+v\n%s", code, d2, logs)
	}
	r := e.cli(t, "", "app", "delete", "shop", "--keep-files", "-o", "json")
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &del) != nil || !del.Deleted {
		t.Fatalf("app delete --keep-files: %+v", r)
	}
	if e.current(t, "shop") != d2.ID {
		t.Fatalf("--keep-files removed current")
	}
	if r := e.cli(t, "", "app", "list", "-o", "json"); r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("app list after deletes: %+v", r)
	}
	e.noSecrets(t, gitToken, envSecret)
}
