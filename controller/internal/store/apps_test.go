package store_test

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/berthhq/berth/controller/internal/secrets"
	"github.com/berthhq/berth/controller/internal/store"
)

func TestAppsCRUD(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newAppsEnv(t)
	st := e.st
	web1, web2 := rawServer(t, e.db, "web-1"), rawServer(t, e.db, "web-2")

	a := e.mkApp(t, web1, "shop")
	if a.Branch != "main" || a.DeployPath != "/srv/berth/shop" || a.RunAsUser != "berth" || a.HealthCheckTimeoutSeconds != 30 ||
		a.ReleasesToKeep != 5 || a.TimeoutSeconds != 1800 || a.SharedPaths == nil || len(a.SharedPaths) != 0 ||
		a.HasWebhookSecret || a.HasEnvVars || a.CurrentDeploymentID != nil || a.GitCredentialID != nil || a.ServerID != web1 {
		t.Fatalf("defaults: %+v", a)
	}
	full, err := st.CreateApp(ctx, store.CreateAppParams{AppSettings: store.AppSettings{
		ServerID: web2, Name: "api", RepositoryURL: "https://git.example.com/api.git", Branch: "release",
		DeployPath: "/var/www/api", RunAsUser: "www-data", DeployScript: "composer install\n",
		HealthCheckCommand: ptrTo("curl -fsS localhost:8080/health"), HealthCheckURL: ptrTo("http://127.0.0.1:8080/"),
		HealthCheckTimeoutSeconds: 10, ReloadCommand: ptrTo("systemctl reload php-fpm"), ReleasesToKeep: 3,
		SharedPaths: []string{"storage", ".env.local"}, TimeoutSeconds: 600,
	}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := st.App(ctx, full.ID)
	if err != nil || got.Branch != "release" || got.DeployPath != "/var/www/api" || got.RunAsUser != "www-data" ||
		got.DeployScript != "composer install\n" || *got.HealthCheckCommand != "curl -fsS localhost:8080/health" ||
		*got.HealthCheckURL != "http://127.0.0.1:8080/" || got.HealthCheckTimeoutSeconds != 10 ||
		*got.ReloadCommand != "systemctl reload php-fpm" || got.ReleasesToKeep != 3 ||
		!slices.Equal(got.SharedPaths, []string{"storage", ".env.local"}) || got.TimeoutSeconds != 600 {
		t.Fatalf("get = %+v, %v", got, err)
	}
	if got, err := st.AppByName(ctx, "shop"); err != nil || got.ID != a.ID {
		t.Fatalf("by name = %+v, %v", got, err)
	}
	_, err = st.AppByName(ctx, "nope")
	wantErr(t, "unknown name", err, store.ErrNotFound)
	_, err = st.App(ctx, store.NewID())
	wantErr(t, "unknown id", err, store.ErrNotFound)

	// Constraints.
	_, err = st.CreateApp(ctx, store.CreateAppParams{AppSettings: store.AppSettings{ServerID: web2, Name: "shop", RepositoryURL: "x"}})
	wantErr(t, "duplicate name", err, store.ErrConflict)
	_, err = st.CreateApp(ctx, store.CreateAppParams{AppSettings: store.AppSettings{ServerID: web2, Name: "other", RepositoryURL: "x", DeployPath: "/var/www/api"}})
	wantErr(t, "same path on one server", err, store.ErrConflict)
	if _, err := st.CreateApp(ctx, store.CreateAppParams{AppSettings: store.AppSettings{ServerID: web1, Name: "other", RepositoryURL: "x", DeployPath: "/var/www/api"}}); err != nil {
		t.Fatalf("same path on another server: %v", err)
	}
	_, err = st.CreateApp(ctx, store.CreateAppParams{AppSettings: store.AppSettings{ServerID: store.NewID(), Name: "orphan", RepositoryURL: "x"}})
	wantErr(t, "unknown server", err, store.ErrMissingParent)
	_, err = st.CreateApp(ctx, store.CreateAppParams{AppSettings: store.AppSettings{ServerID: web1, Name: "bad", RepositoryURL: "x", RunAsUser: "Root!"}})
	wantErr(t, "bad user", err, store.ErrInvalid)
	_, err = st.CreateApp(ctx, store.CreateAppParams{AppSettings: store.AppSettings{ServerID: web1, Name: "bad", RepositoryURL: "x", DeployPath: "/srv/../etc"}})
	wantErr(t, "path with ..", err, store.ErrInvalid)
	_, err = st.CreateApp(ctx, store.CreateAppParams{AppSettings: store.AppSettings{ServerID: web1, Name: "bad", RepositoryURL: "x", TimeoutSeconds: -1}})
	wantErr(t, "negative timeout", err, store.ErrInvalid)
	_, err = st.CreateApp(ctx, store.CreateAppParams{AppSettings: store.AppSettings{ServerID: web1, Name: "bad", RepositoryURL: "x"}, Env: map[store.AppEnvScope]map[string]string{"qa": {"A": "b"}}})
	wantErr(t, "unknown env scope", err, store.ErrInvalid)

	// Update: replace settings, move server.
	s := got.AppSettings
	s.Branch, s.ServerID, s.HealthCheckURL, s.SharedPaths = "main", web1, nil, nil
	_, err = st.UpdateApp(ctx, full.ID, s)
	wantErr(t, "move onto a path taken on the new server", err, store.ErrConflict)
	s.DeployPath = "/var/www/api2"
	upd, err := st.UpdateApp(ctx, full.ID, s)
	if err != nil || upd.Branch != "main" || upd.ServerID != web1 || upd.HealthCheckURL != nil || len(upd.SharedPaths) != 0 ||
		upd.DeployScript != "composer install\n" || !upd.UpdatedAt.After(full.UpdatedAt) {
		t.Fatalf("update = %+v, %v", upd, err)
	}
	s.Name = "shop"
	_, err = st.UpdateApp(ctx, full.ID, s)
	wantErr(t, "rename onto a taken name", err, store.ErrConflict)
	_, err = st.UpdateApp(ctx, store.NewID(), a.AppSettings)
	wantErr(t, "update unknown", err, store.ErrNotFound)

	// Delete.
	if err := st.DeleteApp(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "delete twice", st.DeleteApp(ctx, a.ID), store.ErrNotFound)
	_, err = st.App(ctx, a.ID)
	wantErr(t, "get deleted", err, store.ErrNotFound)
}

func TestAppsListPaging(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newAppsEnv(t)
	web1, web2 := rawServer(t, e.db, "web-1"), rawServer(t, e.db, "web-2")
	cred, err := e.st.CreateGitCredential(ctx, store.CreateGitCredentialParams{Name: "tok", Kind: store.GitCredentialHTTPS, Username: ptrTo("u"), Secret: store.GitCredentialSecret{Token: "t"}})
	if err != nil {
		t.Fatal(err)
	}
	var all, on1, withCred []store.ID
	for i := range 7 {
		srv := web1
		if i%2 == 1 {
			srv = web2
		}
		p := store.CreateAppParams{AppSettings: store.AppSettings{ServerID: srv, Name: fmt.Sprintf("app-%d", i), RepositoryURL: "x"}}
		if i%3 == 0 {
			p.GitCredentialID = &cred.ID
		}
		a, err := e.st.CreateApp(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, a.ID)
		if srv == web1 {
			on1 = append(on1, a.ID)
		}
		if i%3 == 0 {
			withCred = append(withCred, a.ID)
		}
	}
	list := func(f store.AppFilter) func(*store.ID, int) ([]store.ID, error) {
		return func(before *store.ID, limit int) ([]store.ID, error) {
			f.Before, f.Limit = before, limit
			l, err := e.st.ListApps(ctx, f)
			out := make([]store.ID, len(l))
			for i, a := range l {
				out[i] = a.ID
			}
			return out, err
		}
	}
	checkNewestFirst(t, "all apps, pages of 3", pageAll(t, 3, list(store.AppFilter{})), all)
	checkNewestFirst(t, "all apps, pages of 1", pageAll(t, 1, list(store.AppFilter{})), all)
	checkNewestFirst(t, "apps on web-1", pageAll(t, 2, list(store.AppFilter{ServerID: &web1})), on1)
	checkNewestFirst(t, "apps with credential", pageAll(t, 2, list(store.AppFilter{GitCredentialID: &cred.ID})), withCred)
	if l, err := e.st.ListApps(ctx, store.AppFilter{}); err != nil || len(l) != 7 {
		t.Fatalf("default limit list: %d, %v", len(l), err)
	}
}

func TestAppSecrets(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newAppsEnv(t)
	st := e.st
	srv := rawServer(t, e.db, "web-1")

	a, err := st.CreateApp(ctx, store.CreateAppParams{
		AppSettings:   store.AppSettings{ServerID: srv, Name: "shop", RepositoryURL: "x"},
		WebhookSecret: []byte("whsec-created-0001"),
		Env: map[store.AppEnvScope]map[string]string{
			store.AppEnvCommon:     {"APP_NAME": "shop", "DB_PASSWORD": "common-pw-1111"},
			store.AppEnvProduction: {"DB_PASSWORD": "prod-pw-2222", "APP_ENV": "production"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !a.HasWebhookSecret || !a.HasEnvVars || !a.HasEnvProduction || a.HasEnvStaging {
		t.Fatalf("has flags: %+v", a)
	}
	if ws, err := st.AppWebhookSecret(ctx, a.ID); err != nil || string(ws) != "whsec-created-0001" {
		t.Fatalf("webhook secret = %q, %v", ws, err)
	}
	prod, err := st.MergedAppEnv(ctx, a.ID, store.EnvironmentProduction)
	if err != nil || !maps.Equal(prod, map[string]string{"APP_NAME": "shop", "DB_PASSWORD": "prod-pw-2222", "APP_ENV": "production"}) {
		t.Fatalf("merged production = %v, %v", prod, err)
	}
	stg, err := st.MergedAppEnv(ctx, a.ID, store.EnvironmentStaging)
	if err != nil || !maps.Equal(stg, map[string]string{"APP_NAME": "shop", "DB_PASSWORD": "common-pw-1111"}) {
		t.Fatalf("merged staging = %v, %v", stg, err)
	}
	_, err = st.MergedAppEnv(ctx, a.ID, "qa")
	wantErr(t, "unknown environment", err, store.ErrInvalid)

	// Set, read back, update, clear.
	if err := st.SetAppEnv(ctx, a.ID, store.AppEnvStaging, map[string]string{"APP_ENV": "staging", "DEBUG": "1"}); err != nil {
		t.Fatal(err)
	}
	if v, err := st.AppEnv(ctx, a.ID, store.AppEnvStaging); err != nil || !maps.Equal(v, map[string]string{"APP_ENV": "staging", "DEBUG": "1"}) {
		t.Fatalf("staging = %v, %v", v, err)
	}
	v, err := st.UpdateAppEnv(ctx, a.ID, store.AppEnvStaging, map[string]string{"DEBUG": "0", "QUEUE": "redis"}, []string{"APP_ENV", "MISSING"})
	if err != nil || !maps.Equal(v, map[string]string{"DEBUG": "0", "QUEUE": "redis"}) {
		t.Fatalf("update env = %v, %v", v, err)
	}
	if v, err := st.AppEnv(ctx, a.ID, store.AppEnvStaging); err != nil || !maps.Equal(v, map[string]string{"DEBUG": "0", "QUEUE": "redis"}) {
		t.Fatalf("staging after update = %v, %v", v, err)
	}
	if err := st.SetAppEnv(ctx, a.ID, store.AppEnvCommon, nil); err != nil {
		t.Fatal(err)
	}
	if v, err := st.AppEnv(ctx, a.ID, store.AppEnvCommon); err != nil || v == nil || len(v) != 0 {
		t.Fatalf("cleared common = %v, %v", v, err)
	}
	if got, _ := st.App(ctx, a.ID); got.HasEnvVars || !got.HasEnvStaging {
		t.Fatalf("has flags after clear: %+v", got)
	}
	wantErr(t, "bad variable name", st.SetAppEnv(ctx, a.ID, store.AppEnvCommon, map[string]string{"BAD-NAME": "x"}), store.ErrInvalid)
	wantErr(t, "bad scope", st.SetAppEnv(ctx, a.ID, "qa", map[string]string{"A": "x"}), store.ErrInvalid)
	wantErr(t, "env of unknown app", st.SetAppEnv(ctx, store.NewID(), store.AppEnvCommon, map[string]string{"A": "x"}), store.ErrNotFound)
	_, err = st.AppEnv(ctx, store.NewID(), store.AppEnvCommon)
	wantErr(t, "read env of unknown app", err, store.ErrNotFound)
	_, err = st.UpdateAppEnv(ctx, store.NewID(), store.AppEnvCommon, map[string]string{"A": "x"}, nil)
	wantErr(t, "update env of unknown app", err, store.ErrNotFound)

	// Webhook secret: replace and clear.
	if err := st.SetAppWebhookSecret(ctx, a.ID, []byte("whsec-rotated-0002")); err != nil {
		t.Fatal(err)
	}
	if ws, err := st.AppWebhookSecret(ctx, a.ID); err != nil || string(ws) != "whsec-rotated-0002" {
		t.Fatalf("webhook secret = %q, %v", ws, err)
	}

	// Raw columns: no plaintext anywhere in the row.
	var row []byte
	if err := e.db.Pool.QueryRow(ctx, `SELECT convert_to(t::text, 'UTF8') FROM apps t WHERE id = $1`, pgu(a.ID)).Scan(&row); err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"whsec-rotated-0002", "prod-pw-2222", "redis", "DB_PASSWORD", "QUEUE"} {
		if bytes.Contains(row, []byte(secret)) || bytes.Contains(row, []byte(fmt.Sprintf("%x", secret))) {
			t.Fatalf("plaintext %q in the apps row", secret)
		}
	}

	// Moved ciphertexts do not open: another row, or another column.
	b := e.mkApp(t, srv, "blog")
	e.moveCiphertext(t, "apps", "env_production", a.ID, b.ID)
	_, err = st.AppEnv(ctx, b.ID, store.AppEnvProduction)
	wantErr(t, "env moved to another app", err, secrets.ErrCorrupt)
	_, err = st.MergedAppEnv(ctx, b.ID, store.EnvironmentProduction)
	wantErr(t, "merged env with a moved value", err, secrets.ErrCorrupt)
	e.moveCiphertext(t, "apps", "webhook_secret", a.ID, b.ID)
	_, err = st.AppWebhookSecret(ctx, b.ID)
	wantErr(t, "webhook secret moved", err, secrets.ErrCorrupt)
	if _, err := e.db.Pool.Exec(ctx, `UPDATE apps SET env_vars = env_staging WHERE id = $1`, pgu(a.ID)); err != nil {
		t.Fatal(err)
	}
	_, err = st.AppEnv(ctx, a.ID, store.AppEnvCommon)
	wantErr(t, "env moved to another column", err, secrets.ErrCorrupt)

	if err := st.SetAppWebhookSecret(ctx, a.ID, nil); err != nil {
		t.Fatal(err)
	}
	if ws, err := st.AppWebhookSecret(ctx, a.ID); err != nil || ws != nil {
		t.Fatalf("cleared webhook secret = %q, %v", ws, err)
	}
}
