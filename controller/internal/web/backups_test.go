package web_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/pem"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/backups"
	"github.com/berthhq/berth/controller/internal/deploys"
	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// Secrets typed into the destination forms; none may come back in a page,
// the activity log or the controller's log.
const (
	s3Secret   = "s3-secret-9f8e7d6c5b4a-never-shown"
	sftpSecret = "sftp-password-1a2b3c4d-never-shown"
)

var backupPeer = backups.Peer{}

func backupSpec(name string) backups.DestinationSpec {
	return backups.DestinationSpec{Name: name, Kind: "local", Path: "/var/backups/" + name}
}

func backupsEnv(t *testing.T) (*env, *auth.Principal) {
	t.Helper()
	e := newEnv(t, false)
	ctx := context.Background()
	admin := e.user("admin@example.com", store.RoleAdmin)
	e.user("operator@example.com", store.RoleOperator)
	e.user("viewer@example.com", store.RoleViewer)
	if _, err := e.st.CreateServer(ctx, store.CreateServerParams{Name: "web-1"}); err != nil {
		t.Fatal(err)
	}
	pr := &auth.Principal{UserID: admin.ID, Email: admin.Email, Role: store.RoleAdmin, Scopes: []store.Scope{store.ScopeAdmin}}
	if _, err := e.dep.CreateApp(ctx, pr, deploys.Peer{}, deploys.CreateAppParams{Server: "web-1", AppSettings: store.AppSettings{
		Name: "shop", RepositoryURL: "https://git.example.com/shop.git", DeployPath: "/srv/shop", RunAsUser: "app"}}); err != nil {
		t.Fatal(err)
	}
	return e, pr
}

func mustContain(t *testing.T, what, body string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(body, w) {
			t.Fatalf("%s lacks %q:\n%s", what, w, body)
		}
	}
}

func mustNotContain(t *testing.T, what, body string, bad ...string) {
	t.Helper()
	for _, b := range bad {
		if strings.Contains(body, b) {
			t.Fatalf("%s contains %q", what, b)
		}
	}
}

// The destination forms: bad input is refused with a clear message that
// keeps every non-secret field typed and never echoes a secret; secrets are
// write-only on every page, in the activity log and in the log; a
// destination in use is not removed, and the page says why.
func TestBackupDestinationForms(t *testing.T) {
	e, _ := backupsEnv(t)
	admin := e.client()
	admin.login("admin@example.com", adminPassword)

	// An S3 destination with an endpoint that is not a URL.
	s3 := url.Values{"form": {"dest-s3"}, "kind": {"s3"}, "name": {"offsite"}, "endpoint": {"ftp://s3.example.com"}, "bucket": {"shop-backups"},
		"region": {"eu-west-1"}, "prefix": {"berth/"}, "path_style": {"1"}, "access_key_id": {"AKIAEXAMPLE"}, "secret_access_key": {s3Secret}}
	resp, body := admin.post("/backups/destinations", s3)
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad endpoint: %d", resp.StatusCode)
	}
	mustContain(t, "refused s3 form", body, "Endpoint must be an http(s) URL", "enter it again",
		`value="shop-backups"`, `value="eu-west-1"`, `value="berth/"`, `value="AKIAEXAMPLE"`, `value="offsite"`, `name="path_style" value="1" checked`)
	mustNotContain(t, "refused s3 form", body, s3Secret, "--endpoint")

	s3.Set("endpoint", "https://s3.example.com")
	if resp, body = admin.post("/backups/destinations", s3); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("s3 add: %d %s", resp.StatusCode, body)
	}
	// The same name again: a conflict, said plainly.
	if resp, body = admin.post("/backups/destinations", s3); resp.StatusCode != http.StatusConflict || !strings.Contains(body, "a destination named offsite exists") {
		t.Fatalf("s3 add twice: %d %s", resp.StatusCode, body)
	}
	mustNotContain(t, "conflict page", body, s3Secret)

	// SFTP: a port that is no number, then a fingerprint that is not one,
	// then a valid one with a password, and one with a private key.
	// No '+' or '/': html/template writes '+' as &#43; in attributes.
	fp := "SHA256:" + strings.NewReplacer("+", "x", "/", "y").Replace(base64.RawStdEncoding.EncodeToString(func() []byte { h := sha256.Sum256([]byte("host key")); return h[:] }()))
	sftp := url.Values{"form": {"dest-sftp"}, "kind": {"sftp"}, "name": {"remote"}, "host": {"backup.example.com"}, "port": {"twenty-two"},
		"username": {"berth"}, "path": {"/srv/backups"}, "host_key_fingerprint": {fp}, "password": {sftpSecret}}
	resp, body = admin.post("/backups/destinations", sftp)
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad port: %d", resp.StatusCode)
	}
	mustContain(t, "refused sftp form", body, "Port must be a number from 1 to 65535.", `value="backup.example.com"`, `value="twenty-two"`, `value="/srv/backups"`, `value="`+fp+`"`)
	mustNotContain(t, "refused sftp form", body, sftpSecret)
	sftp.Set("port", "2222")
	sftp.Set("host_key_fingerprint", "MD5:aa:bb")
	resp, body = admin.post("/backups/destinations", sftp)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "Host key fingerprint must be SHA256:") || !strings.Contains(body, `value="MD5:aa:bb"`) {
		t.Fatalf("bad fingerprint: %d %s", resp.StatusCode, body)
	}
	mustNotContain(t, "refused sftp form", body, sftpSecret)
	sftp.Set("host_key_fingerprint", fp)
	if resp, body = admin.post("/backups/destinations", sftp); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sftp add: %d %s", resp.StatusCode, body)
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := string(pem.EncodeToMemory(blk))
	keyBody := strings.Split(keyPEM, "\n")[1]
	if resp, body = admin.post("/backups/destinations", url.Values{"form": {"dest-sftp"}, "kind": {"sftp"}, "name": {"remote-key"}, "host": {"10.0.0.9"},
		"username": {"berth"}, "path": {"/srv/backups"}, "host_key_fingerprint": {fp}, "private_key": {strings.ReplaceAll(keyPEM, "\n", "\r\n")}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sftp add with a key: %d %s", resp.StatusCode, body)
	}
	// A local one, and bad input for it (a relative path).
	resp, body = admin.post("/backups/destinations", url.Values{"form": {"dest-local"}, "kind": {"local"}, "name": {"vault"}, "path": {"var/backups"}})
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "Path must be an absolute, clean path") || !strings.Contains(body, `value="var/backups"`) {
		t.Fatalf("relative local path: %d %s", resp.StatusCode, body)
	}
	if resp, _ = admin.post("/backups/destinations", url.Values{"form": {"dest-local"}, "kind": {"local"}, "name": {"vault"}, "path": {"/var/backups/berth"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("local add: %d", resp.StatusCode)
	}

	_, page := admin.get("/backups")
	mustContain(t, "destinations", page, `data-destination="offsite"`, "https://s3.example.com bucket shop-backups prefix berth/ region eu-west-1 (path-style)",
		`data-destination="remote"`, "berth@backup.example.com:2222 /srv/backups, host key "+fp, `data-destination="vault"`,
		"/var/backups/berth on the server that makes the backup", "set (write-only)", "never tested")
	_, activity := admin.get("/activity")
	for what, text := range map[string]string{"backups page": page, "activity": activity, "log": e.logs.String()} {
		mustNotContain(t, what, text, s3Secret, sftpSecret, keyBody)
	}

	// In use: removal refused with the reason; unused: removed.
	resp, body = admin.post("/apps/shop/backups", url.Values{"form": {"run"}, "destination": {"vault"}, "kind": {"directory"}, "source": {"/srv/shop/shared"}})
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/backups/") {
		t.Fatalf("run: %d %s", resp.StatusCode, body)
	}
	resp, body = admin.post("/backups/destinations/vault/remove", nil)
	if resp.StatusCode != http.StatusConflict || !strings.Contains(body, "destination vault is used by 1 backup(s) and 0 schedule(s)") {
		t.Fatalf("remove in use: %d %s", resp.StatusCode, body)
	}
	if resp, _ = admin.post("/backups/destinations/remote/remove", nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("remove unused: %d", resp.StatusCode)
	}
	if _, page = admin.get("/backups"); strings.Contains(page, `data-destination="remote"`) || !strings.Contains(page, "Destination remote removed.") {
		t.Fatalf("after removal:\n%s", page)
	}
	// Testing needs a connected server: none here, and the page says so.
	resp, body = admin.post("/backups/destinations/vault/test", url.Values{"server": {""}})
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "no server is connected to run the test") {
		t.Fatalf("test without a server: %d %s", resp.StatusCode, body)
	}
	// A bad filter on the list is a clear error.
	if resp, body = admin.get("/backups?status=done"); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "Status must be queued, dispatched") {
		t.Fatalf("bad status filter: %d %s", resp.StatusCode, body)
	}
}

// What each role sees: viewers read, operators (write) test, run, verify
// and cancel, admins also add and remove destinations, restore, download
// and delete. The hidden actions are refused (403) when posted anyway.
// Restore and delete need the typed confirmation; a wrong one changes
// nothing and keeps what was typed.
func TestBackupPagesByRole(t *testing.T) {
	e, pr := backupsEnv(t)
	ctx := context.Background()
	if _, err := e.bk.AddDestination(ctx, pr, backupPeer, backupSpec("vault")); err != nil {
		t.Fatal(err)
	}
	viewer, operator, admin := e.client(), e.client(), e.client()
	viewer.login("viewer@example.com", adminPassword)
	operator.login("operator@example.com", adminPassword)
	admin.login("admin@example.com", adminPassword)

	_, vpage := viewer.get("/backups")
	_, opage := operator.get("/backups")
	_, apage := admin.get("/backups")
	mustNotContain(t, "viewer's backups page", vpage, "dest-local-form", "dest-s3-form", "test-form", "remove-form")
	mustContain(t, "operator's backups page", opage, "test-form")
	mustNotContain(t, "operator's backups page", opage, "dest-local-form", "remove-form")
	mustContain(t, "admin's backups page", apage, "dest-local-form", "dest-s3-form", "dest-sftp-form", "test-form", "remove-form")

	_, vapp := viewer.get("/apps/shop/backups")
	mustNotContain(t, "viewer's app backups", vapp, "run-form")
	_, oapp := operator.get("/apps/shop/backups")
	mustContain(t, "operator's app backups", oapp, "run-form", `<option value="vault"`)

	// Bad input on the run form: the error, and everything typed kept.
	resp, body := operator.post("/apps/shop/backups", url.Values{"form": {"run"}, "destination": {"vault"}, "kind": {"postgres"}, "source": {"shop data"}, "connection_env": {"DATABASE_URL"}})
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad source: %d", resp.StatusCode)
	}
	mustContain(t, "refused run form", body, "Source must be a database name", `value="shop data"`, `value="DATABASE_URL"`, `<option value="postgres" selected>`, `<option value="vault" selected>`)
	if resp, _ = viewer.post("/apps/shop/backups", url.Values{"destination": {"vault"}, "kind": {"directory"}, "source": {"/srv/shop/shared"}}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("viewer runs a backup: %d", resp.StatusCode)
	}
	resp, _ = operator.post("/apps/shop/backups", url.Values{"destination": {"vault"}, "kind": {"directory"}, "source": {"/srv/shop/shared"}})
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/backups/") {
		t.Fatalf("operator runs a backup: %d %s", resp.StatusCode, loc)
	}
	id := strings.TrimPrefix(loc, "/backups/")

	_, vb := viewer.get(loc)
	_, ob := operator.get(loc)
	_, ab := admin.get(loc)
	mustContain(t, "backup page", vb, "Backup of shop", `id="job-status">queued`, `data-log="/backups/`+id+`/log"`, "/srv/shop/shared")
	mustNotContain(t, "viewer's backup page", vb, "cancel-form", "verify-form", "restore-form", "download-form", "delete-form")
	mustContain(t, "operator's backup page", ob, "cancel-form", "verify-form")
	mustNotContain(t, "operator's backup page", ob, "restore-form", "download-form", "delete-form")
	mustContain(t, "admin's backup page", ab, "cancel-form", "verify-form", "restore-form", "download-form")
	// Not stored yet: the stored object's actions wait hidden.
	mustContain(t, "admin's backup page", ab, `<div id="stored-actions" hidden>`)

	// Restore: a wrong typed confirmation is refused, keeping the form.
	resp, body = admin.post(loc+"/restore", url.Values{"form": {"restore"}, "to": {"/srv/shop/restored"}, "confirm": {"shopp"}})
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("wrong confirmation: %d", resp.StatusCode)
	}
	mustContain(t, "refused restore", body, "The restore was not started: type the app name shop or the backup id "+id, `value="/srv/shop/restored"`, `value="shopp"`)
	// The right one from a viewer or an operator: 403; from an admin the
	// service refuses a backup that stored nothing.
	for _, c := range []*client{viewer, operator} {
		if resp, _ = c.post(loc+"/restore", url.Values{"confirm": {"shop"}}); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("restore by a non-admin: %d", resp.StatusCode)
		}
		if resp, _ = c.post(loc+"/download", nil); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("download by a non-admin: %d", resp.StatusCode)
		}
	}
	if resp, body = admin.post(loc+"/restore", url.Values{"confirm": {strings.ToLower(id)}}); resp.StatusCode != http.StatusConflict || !strings.Contains(body, "only a succeeded backup has an object") {
		t.Fatalf("restore of a queued backup: %d %s", resp.StatusCode, body)
	}
	if resp, body = admin.post(loc+"/download", nil); resp.StatusCode != http.StatusConflict || resp.Header.Get("Content-Disposition") != "" {
		t.Fatalf("download of a queued backup: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	if resp, body = viewer.post(loc+"/verify", nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("verify by a viewer: %d", resp.StatusCode)
	}
	if resp, body = operator.post(loc+"/verify", nil); resp.StatusCode != http.StatusConflict || !strings.Contains(body, "only a succeeded backup has an object") {
		t.Fatalf("verify of a queued backup: %d %s", resp.StatusCode, body)
	}

	// Cancel (write), then delete (admin, typed confirmation).
	if resp, _ = viewer.post(loc+"/cancel", nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cancel by a viewer: %d", resp.StatusCode)
	}
	if resp, _ = operator.post(loc+"/cancel", nil); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != loc {
		t.Fatalf("cancel: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	_, ab = admin.get(loc)
	mustContain(t, "canceled backup", ab, `id="job-status">canceled`, "canceled before it was dispatched", "delete-form")
	mustNotContain(t, "canceled backup", ab, "cancel-form")
	if resp, body = admin.post(loc+"/delete", url.Values{"form": {"delete"}, "confirm": {"nope"}}); resp.StatusCode != http.StatusBadRequest ||
		!strings.Contains(body, "The backup was not deleted") || !strings.Contains(body, `value="nope"`) || !strings.Contains(body, `<details id="delete-box" open>`) {
		t.Fatalf("delete with a wrong confirmation: %d %s", resp.StatusCode, body)
	}
	if resp, _ = operator.post(loc+"/delete", url.Values{"confirm": {"shop"}}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("delete by an operator: %d", resp.StatusCode)
	}
	if resp, _ = admin.post(loc+"/delete", url.Values{"confirm": {"shop"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	if resp, _ = admin.get(loc); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("deleted backup's page: %d", resp.StatusCode)
	}
	// Not an id: a clear error, not a 500.
	if resp, body = admin.get("/backups/not-an-id"); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "is not a backup id") {
		t.Fatalf("bad id: %d %s", resp.StatusCode, body)
	}
}

// Schedules on an app's backups page: admins add one (a bad cron or no
// retention is refused with the reason, keeping what was typed), disable,
// enable and remove it; operators and viewers see the list only and are
// refused when they post anyway.
func TestBackupSchedulesOnAppPage(t *testing.T) {
	e, pr := backupsEnv(t)
	if _, err := e.bk.AddDestination(context.Background(), pr, backupPeer, backupSpec("vault")); err != nil {
		t.Fatal(err)
	}
	operator, admin := e.client(), e.client()
	operator.login("operator@example.com", adminPassword)
	admin.login("admin@example.com", adminPassword)

	_, page := admin.get("/apps/shop/backups")
	mustContain(t, "admin's app backups", page, "No backup schedules for shop.", `id="schedule-form"`)
	add := url.Values{"form": {"schedule"}, "destination": {"vault"}, "kind": {"postgres"}, "source": {"shopdata"}, "connection_env": {"DATABASE_URL"},
		"cron": {"0 25 * * *"}, "timezone": {"Europe/Berlin"}, "keep": {"7"}, "verify": {"1"}}
	resp, body := admin.post("/apps/shop/backup-schedules", add)
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad cron: %d", resp.StatusCode)
	}
	mustContain(t, "refused schedule form", body, `value="0 25 * * *"`, `value="Europe/Berlin"`, `value="shopdata"`, `value="7"`, `name="verify" value="1" checked`, `<details id="schedule-box" open>`)
	if !strings.Contains(body, `id="form-error"`) {
		t.Fatalf("bad cron without an error:\n%s", body)
	}
	add.Set("cron", "0 3 * * *")
	add.Set("keep", "")
	if resp, body = admin.post("/apps/shop/backup-schedules", add); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "give Keep N and/or Keep days D") {
		t.Fatalf("no retention: %d %s", resp.StatusCode, body)
	}
	add.Set("keep", "seven")
	if resp, body = admin.post("/apps/shop/backup-schedules", add); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "Keep and Keep days are whole numbers.") || !strings.Contains(body, `value="seven"`) {
		t.Fatalf("keep not a number: %d %s", resp.StatusCode, body)
	}
	add.Set("keep", "7")
	if resp, _ = operator.post("/apps/shop/backup-schedules", add); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("operator adds a schedule: %d", resp.StatusCode)
	}
	if resp, body = admin.post("/apps/shop/backup-schedules", add); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("add schedule: %d %s", resp.StatusCode, body)
	}
	_, page = admin.get("/apps/shop/backups")
	mustContain(t, "schedules", page, "Schedule added: the first run is", "0 3 * * *", "Europe/Berlin", "newest 7", "verified after each run", "status-active\">enabled", "none yet")
	scheds, err := e.bk.Schedules(context.Background(), pr, "shop")
	if err != nil || len(scheds) != 1 {
		t.Fatalf("schedules: %v %v", scheds, err)
	}
	sid := scheds[0].ID.String()
	_, opage := operator.get("/apps/shop/backups")
	mustContain(t, "operator's app backups", opage, `data-schedule="`+sid+`"`)
	mustNotContain(t, "operator's app backups", opage, `id="schedule-form"`, "/backups/schedules/"+sid+"/disable")
	if resp, _ = operator.post("/backups/schedules/"+sid+"/disable", nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("operator disables: %d", resp.StatusCode)
	}
	if resp, _ = admin.post("/backups/schedules/"+sid+"/disable", nil); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/apps/shop/backups" {
		t.Fatalf("disable: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if _, page = admin.get("/apps/shop/backups"); !strings.Contains(page, "status-disabled\">disabled") || !strings.Contains(page, "/backups/schedules/"+sid+"/enable") {
		t.Fatalf("after disable:\n%s", page)
	}
	if resp, _ = admin.post("/backups/schedules/"+sid+"/enable", nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("enable: %d", resp.StatusCode)
	}
	// The destination is in use by the schedule now: not removable.
	if resp, body = admin.post("/backups/destinations/vault/remove", nil); resp.StatusCode != http.StatusConflict || !strings.Contains(body, "0 backup(s) and 1 schedule(s)") {
		t.Fatalf("remove a scheduled destination: %d %s", resp.StatusCode, body)
	}
	// A redirect target that is not an app name is not followed.
	if resp, _ = admin.post("/backups/schedules/"+sid+"/remove?app=//evil.example", nil); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/backups" {
		t.Fatalf("remove: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if _, page = admin.get("/apps/shop/backups"); strings.Contains(page, `data-schedule="`+sid+`"`) {
		t.Fatal("the removed schedule is still listed")
	}
}

// Malformed and oversized requests to the backup routes: a form over the
// limit, a log stream resumed from a Last-Event-ID that is no number, a
// task id that is not one; each a clear 4xx, nothing stored.
func TestBackupBadRequests(t *testing.T) {
	e, pr := backupsEnv(t)
	ctx := context.Background()
	if _, err := e.bk.AddDestination(ctx, pr, backupPeer, backupSpec("vault")); err != nil {
		t.Fatal(err)
	}
	b, err := e.bk.RunBackup(ctx, pr, backupPeer, backups.RunRequest{App: "shop", Destination: "vault", Kind: "directory", Source: "/srv/shop/shared"})
	if err != nil {
		t.Fatal(err)
	}
	admin := e.client()
	admin.login("admin@example.com", adminPassword)

	huge := url.Values{"form": {"dest-sftp"}, "kind": {"sftp"}, "name": {"huge"}, "host": {"h.example.com"}, "username": {"u"}, "path": {"/b"},
		"host_key_fingerprint": {"SHA256:abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ"}, "private_key": {strings.Repeat("k", 70<<10)}}
	if resp, body := admin.post("/backups/destinations", huge); resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(body, "limited to 64 KiB") {
		t.Fatalf("oversized form: %d %s", resp.StatusCode, body)
	}
	if _, err := e.bk.Destination(ctx, pr, "huge"); err == nil {
		t.Fatal("the oversized form stored a destination")
	}
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/backups/"+b.ID.String()+"/log", nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Last-Event-ID", "twelve")
	if resp, body := admin.do(req); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "bad Last-Event-ID") {
		t.Fatalf("bad Last-Event-ID: %d %s", resp.StatusCode, body)
	}
	if resp, body := admin.get("/backups/" + b.ID.String() + "/tasks/nope"); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "is not a backup id") {
		t.Fatalf("bad task id: %d %s", resp.StatusCode, body)
	}
	if resp, _ := admin.get("/backups/" + b.ID.String() + "/tasks/" + b.ID.String() + "/log"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a backup's id as a task's: %d", resp.StatusCode)
	}
}

// A backup that failed after reaching its agent shows its cleanup on its
// page: pending while the cleanup task waits, then failed with the reason
// (and that it is retried).
func TestBackupPageShowsCleanup(t *testing.T) {
	e, pr := backupsEnv(t)
	ctx := context.Background()
	if _, err := e.bk.AddDestination(ctx, pr, backupPeer, backupSpec("vault")); err != nil {
		t.Fatal(err)
	}
	srv, err := e.st.ServerByName(ctx, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.bk.RunBackup(ctx, pr, backupPeer, backups.RunRequest{App: "shop", Destination: "vault", Kind: "directory", Source: "/srv/shop/shared"})
	if err != nil {
		t.Fatal(err)
	}
	end := func(id store.ID, status, reason string) {
		t.Helper()
		if _, err := e.st.ClaimQueuedBackups(ctx, []store.ID{srv.ID}, 10); err != nil {
			t.Fatal(err)
		}
		if _, err := e.st.ClaimQueuedBackupTasks(ctx, []store.ID{srv.ID}, 10); err != nil {
			t.Fatal(err)
		}
		if _, err := e.bk.JobEvents(ctx, srv.ID, []*agentv1.ConnectRequest{{Msg: &agentv1.ConnectRequest_JobResult{JobResult: &agentv1.JobResult{
			JobId: id.String(), Seq: 1, Status: status, Error: reason, StartedAt: timestamppb.Now(), FinishedAt: timestamppb.Now()}}}}); err != nil {
			t.Fatal(err)
		}
	}
	end(b.ID, "failed", "tar: the agent was killed")
	admin := e.client()
	admin.login("admin@example.com", adminPassword)
	loc := "/backups/" + b.ID.String()
	_, page := admin.get(loc)
	mustContain(t, "failed backup's page", page, `id="backup-cleanup"`, ">pending</dd>")
	_, tasks, err := e.bk.Backup(ctx, pr, b.ID.String())
	if err != nil || len(tasks) != 1 || tasks[0].Kind != store.TaskCleanup {
		t.Fatalf("tasks %+v %v", tasks, err)
	}
	end(tasks[0].ID, "failed", "local destination /var/backups/vault: permission denied")
	_, page = admin.get(loc)
	mustContain(t, "failed cleanup", page, `id="backup-cleanup"`, "failed: cleanup failed: local destination /var/backups/vault: permission denied (retried)")
}
