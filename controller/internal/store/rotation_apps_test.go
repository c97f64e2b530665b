package store_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"

	"github.com/berthhq/berth/controller/internal/secrets"
	"github.com/berthhq/berth/controller/internal/store"
)

// appsEncryptedColumns are the encrypted columns of the apps, git
// credentials and backup destinations tables.
var appsEncryptedColumns = []store.Column{
	{Table: "git_credentials", Column: "credentials"},
	{Table: "apps", Column: "env_vars"},
	{Table: "apps", Column: "env_production"},
	{Table: "apps", Column: "env_staging"},
	{Table: "apps", Column: "webhook_secret"},
	{Table: "backup_destinations", Column: "credentials"},
}

func TestAppsEncryptedColumnsRotation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newAppsEnv(t)
	for _, c := range appsEncryptedColumns {
		if !slices.Contains(store.EncryptedColumns, c) {
			t.Fatalf("store.EncryptedColumns misses %s.%s", c.Table, c.Column)
		}
	}
	srv := rawServer(t, e.db, "web-1")
	cred, err := e.st.CreateGitCredential(ctx, store.CreateGitCredentialParams{Name: "tok", Kind: store.GitCredentialHTTPS, Username: ptrTo("u"), Secret: store.GitCredentialSecret{Token: "tok-secret"}})
	if err != nil {
		t.Fatal(err)
	}
	env := map[store.AppEnvScope]map[string]string{
		store.AppEnvCommon: {"A": "common"}, store.AppEnvProduction: {"A": "prod"}, store.AppEnvStaging: {"A": "staging"},
	}
	var apps []store.ID
	for _, name := range []string{"shop", "blog", "api"} {
		a, err := e.st.CreateApp(ctx, store.CreateAppParams{
			AppSettings:   store.AppSettings{ServerID: srv, Name: name, RepositoryURL: "x", GitCredentialID: &cred.ID},
			WebhookSecret: []byte("hook-" + name), Env: env,
		})
		if err != nil {
			t.Fatal(err)
		}
		apps = append(apps, a.ID)
	}
	dest, err := e.st.CreateBackupDestination(ctx, store.CreateBackupDestinationParams{Name: "s3", Kind: store.DestinationS3, Credentials: &store.BackupDestinationSecret{SecretAccessKey: "dest-secret"}})
	if err != nil {
		t.Fatal(err)
	}

	kr2, err := e.kr.AddKey()
	if err != nil {
		t.Fatal(err)
	}
	st2 := store.New(e.db.Pool, secrets.NewSource(kr2, ""))
	want := map[string]int64{"git_credentials": 1, "apps": 3, "backup_destinations": 1}
	for _, c := range appsEncryptedColumns {
		n, err := st2.ReencryptColumn(ctx, c, 2) // batches smaller than the rows
		if err != nil || n != want[c.Table] {
			t.Fatalf("reencrypt %s.%s = %d, %v; want %d", c.Table, c.Column, n, err, want[c.Table])
		}
		if n, err := st2.ReencryptColumn(ctx, c, 2); err != nil || n != 0 {
			t.Fatalf("second reencrypt of %s.%s = %d, %v", c.Table, c.Column, n, err)
		}
	}
	check := func(table, column string, id store.ID) {
		t.Helper()
		kid, err := secrets.KeyID(e.rawBytes(t, table, column, id))
		if err != nil || kid != kr2.PrimaryID() || kid == e.kr.PrimaryID() {
			t.Fatalf("%s.%s key id = %d, %v; want the new primary %d", table, column, kid, err, kr2.PrimaryID())
		}
	}
	check("git_credentials", "credentials", cred.ID)
	check("backup_destinations", "credentials", dest.ID)
	for _, id := range apps {
		for _, col := range []string{"env_vars", "env_production", "env_staging", "webhook_secret"} {
			check("apps", col, id)
		}
	}

	// Everything still reads with the new keyring.
	if sec, err := st2.GitCredentialSecret(ctx, cred.ID); err != nil || sec.Token != "tok-secret" {
		t.Fatalf("git credential after rotation: %v", err)
	}
	if sec, err := st2.BackupDestinationCredentials(ctx, dest.ID); err != nil || sec.SecretAccessKey != "dest-secret" {
		t.Fatalf("destination after rotation: %v", err)
	}
	for i, id := range apps {
		if ws, err := st2.AppWebhookSecret(ctx, id); err != nil || string(ws) != "hook-"+[]string{"shop", "blog", "api"}[i] {
			t.Fatalf("webhook secret after rotation = %q, %v", ws, err)
		}
		for sc, vars := range env {
			if got, err := st2.AppEnv(ctx, id, sc); err != nil || !maps.Equal(got, vars) {
				t.Fatalf("%s env after rotation = %v, %v", sc, got, err)
			}
		}
	}
	// The old keyring no longer has the key the values are under.
	if _, err := e.st.GitCredentialSecret(ctx, cred.ID); !errors.Is(err, secrets.ErrUnknownKey) {
		t.Fatalf("old keyring read a rotated value: %v", err)
	}
}
