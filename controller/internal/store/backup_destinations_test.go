package store_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/berthhq/berth/controller/internal/secrets"
	"github.com/berthhq/berth/controller/internal/store"
)

func jsonEqual(t *testing.T, got json.RawMessage, want string) bool {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("decode %s: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(g, w)
}

// mkDestination creates a local destination named name.
func (e appsEnv) mkDestination(t *testing.T, name string) store.BackupDestination {
	t.Helper()
	d, err := e.st.CreateBackupDestination(context.Background(), store.CreateBackupDestinationParams{
		Name: name, Kind: store.DestinationLocal, Config: json.RawMessage(`{"path":"/var/backups/berth"}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestBackupDestinations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newAppsEnv(t)
	st := e.st

	local := e.mkDestination(t, "local")
	if local.Kind != store.DestinationLocal || local.HasCredentials || !jsonEqual(t, local.Config, `{"path":"/var/backups/berth"}`) || local.LastCheckedAt != nil {
		t.Fatalf("local = %+v", local)
	}
	const secretKey = "wJalrXUtnFEMI-secret-access-key"
	s3, err := st.CreateBackupDestination(ctx, store.CreateBackupDestinationParams{
		Name: "s3-eu", Kind: store.DestinationS3,
		Config:      json.RawMessage(`{"bucket":"backups","region":"eu-west-1","path_style":true}`),
		Credentials: &store.BackupDestinationSecret{AccessKeyID: "AKIAEXAMPLE", SecretAccessKey: secretKey},
	})
	if err != nil || !s3.HasCredentials {
		t.Fatalf("s3 = %+v, %v", s3, err)
	}
	bare, err := st.CreateBackupDestination(ctx, store.CreateBackupDestinationParams{Name: "bare", Kind: store.DestinationSFTP})
	if err != nil || string(bare.Config) != "{}" {
		t.Fatalf("nil config = %s, %v", bare.Config, err)
	}

	if got, err := st.BackupDestinationByName(ctx, "s3-eu"); err != nil || got.ID != s3.ID || !jsonEqual(t, got.Config, `{"bucket":"backups","region":"eu-west-1","path_style":true}`) {
		t.Fatalf("by name = %+v, %v", got, err)
	}
	if got, err := st.BackupDestination(ctx, local.ID); err != nil || got.Name != "local" {
		t.Fatalf("get = %+v, %v", got, err)
	}
	_, err = st.BackupDestination(ctx, store.NewID())
	wantErr(t, "unknown id", err, store.ErrNotFound)
	_, err = st.BackupDestinationByName(ctx, "nope")
	wantErr(t, "unknown name", err, store.ErrNotFound)

	_, err = st.CreateBackupDestination(ctx, store.CreateBackupDestinationParams{Name: "local", Kind: store.DestinationLocal})
	wantErr(t, "duplicate name", err, store.ErrConflict)
	_, err = st.CreateBackupDestination(ctx, store.CreateBackupDestinationParams{Name: "ftp", Kind: "ftp"})
	wantErr(t, "bad kind", err, store.ErrInvalid)
	_, err = st.CreateBackupDestination(ctx, store.CreateBackupDestinationParams{Name: "arr", Kind: store.DestinationLocal, Config: json.RawMessage(`["x"]`)})
	wantErr(t, "config not an object", err, store.ErrInvalid)
	_, err = st.CreateBackupDestination(ctx, store.CreateBackupDestinationParams{Name: "junk", Kind: store.DestinationLocal, Config: json.RawMessage(`{nope`)})
	wantErr(t, "config not json", err, store.ErrInvalid)

	list := func(f store.BackupDestinationFilter) func(*store.ID, int) ([]store.ID, error) {
		return func(before *store.ID, limit int) ([]store.ID, error) {
			f.Before, f.Limit = before, limit
			l, err := st.ListBackupDestinations(ctx, f)
			out := make([]store.ID, len(l))
			for i, d := range l {
				out[i] = d.ID
			}
			return out, err
		}
	}
	checkNewestFirst(t, "destinations", pageAll(t, 2, list(store.BackupDestinationFilter{})), []store.ID{local.ID, s3.ID, bare.ID})
	checkNewestFirst(t, "s3 destinations", pageAll(t, 2, list(store.BackupDestinationFilter{Kind: store.DestinationS3})), []store.ID{s3.ID})

	// Credentials: round trip, redaction, raw column, moved ciphertext.
	sec, err := st.BackupDestinationCredentials(ctx, s3.ID)
	if err != nil || sec == nil || sec.AccessKeyID != "AKIAEXAMPLE" || sec.SecretAccessKey != secretKey {
		t.Fatalf("credentials: %v (got %v)", err, sec != nil)
	}
	if s := fmt.Sprintf("%v %+v %#v", *sec, *sec, sec); strings.Contains(s, secretKey) {
		t.Fatalf("secret printed: %s", s)
	}
	if none, err := st.BackupDestinationCredentials(ctx, local.ID); err != nil || none != nil {
		t.Fatalf("credentials of local = %v, %v", none, err)
	}
	_, err = st.BackupDestinationCredentials(ctx, store.NewID())
	wantErr(t, "credentials of unknown", err, store.ErrNotFound)
	raw := e.rawBytes(t, "backup_destinations", "credentials", s3.ID)
	if bytes.Contains(raw, []byte(secretKey)) || bytes.Contains(raw, []byte("AKIAEXAMPLE")) {
		t.Fatal("plaintext in backup_destinations.credentials")
	}
	if err := st.SetBackupDestinationCredentials(ctx, bare.ID, &store.BackupDestinationSecret{Password: "sftp-pass-9999"}); err != nil {
		t.Fatal(err)
	}
	if sec, err := st.BackupDestinationCredentials(ctx, bare.ID); err != nil || sec.Password != "sftp-pass-9999" {
		t.Fatalf("sftp credentials: %v", err)
	}
	e.moveCiphertext(t, "backup_destinations", "credentials", s3.ID, bare.ID)
	_, err = st.BackupDestinationCredentials(ctx, bare.ID)
	wantErr(t, "moved ciphertext", err, secrets.ErrCorrupt)
	if err := st.SetBackupDestinationCredentials(ctx, bare.ID, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.BackupDestination(ctx, bare.ID); got.HasCredentials {
		t.Fatal("credentials not cleared")
	}
	wantErr(t, "credentials of unknown", st.SetBackupDestinationCredentials(ctx, store.NewID(), nil), store.ErrNotFound)

	// Update and connection checks.
	upd, err := st.UpdateBackupDestination(ctx, local.ID, "local-disk", json.RawMessage(`{"path":"/mnt/backups"}`))
	if err != nil || upd.Name != "local-disk" || !jsonEqual(t, upd.Config, `{"path":"/mnt/backups"}`) || upd.Kind != store.DestinationLocal {
		t.Fatalf("update = %+v, %v", upd, err)
	}
	_, err = st.UpdateBackupDestination(ctx, local.ID, "s3-eu", nil)
	wantErr(t, "rename onto a taken name", err, store.ErrConflict)
	c, err := st.RecordBackupDestinationCheck(ctx, s3.ID, nil, ptrTo("403 Forbidden"))
	if err != nil || c.LastCheckedAt == nil || c.LastCheckOK == nil || *c.LastCheckOK || *c.LastCheckError != "403 Forbidden" {
		t.Fatalf("failed check = %+v, %v", c, err)
	}
	c, err = st.RecordBackupDestinationCheck(ctx, s3.ID, nil, nil)
	if err != nil || !*c.LastCheckOK || c.LastCheckError != nil {
		t.Fatalf("ok check = %+v, %v", c, err)
	}

	// Delete: refused while a schedule or a backup points at it.
	srv := rawServer(t, e.db, "web-1")
	app := e.mkApp(t, srv, "shop")
	sch, err := st.CreateBackupSchedule(ctx, store.CreateBackupScheduleParams{AppID: app.ID, BackupScheduleSettings: store.BackupScheduleSettings{
		DestinationID: s3.ID, Kind: store.BackupPostgres, Source: "shop", Cron: "0 3 * * *", RetentionCount: ptrTo(7),
	}})
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, "delete with a schedule", st.DeleteBackupDestination(ctx, s3.ID), store.ErrReferenced)
	if err := st.DeleteBackupSchedule(ctx, sch.ID); err != nil {
		t.Fatal(err)
	}
	b, err := st.CreateBackup(ctx, store.CreateBackupParams{AppID: &app.ID, DestinationID: s3.ID, TriggeredBy: store.TriggerUser, Kind: store.BackupPostgres, Source: "shop", TimeoutSeconds: 60})
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, "delete with a backup", st.DeleteBackupDestination(ctx, s3.ID), store.ErrReferenced)
	if err := st.DeleteBackup(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteBackupDestination(ctx, s3.ID); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "delete twice", st.DeleteBackupDestination(ctx, s3.ID), store.ErrNotFound)
}
