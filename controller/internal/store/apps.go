package store

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"time"

	"github.com/berthhq/berth/gen/dbsqlc"
)

// The settings an app gets when CreateAppParams leaves them zero (the
// schema's defaults).
const (
	DefaultAppBranch                    = "main"
	DefaultAppRunAsUser                 = "berth"
	DefaultAppHealthCheckTimeoutSeconds = 30
	DefaultAppReleasesToKeep            = 5
	DefaultAppTimeoutSeconds            = 1800
)

// DefaultAppDeployPath is where an app lives when no path is given.
func DefaultAppDeployPath(name string) string { return "/srv/berth/" + name }

// AppSettings is everything about an app that is neither a secret nor
// bookkeeping: what CreateApp takes and UpdateApp replaces.
type AppSettings struct {
	ServerID        ID
	GitCredentialID *ID // nil: a public repository
	Name            string
	RepositoryURL   string
	Branch          string
	DeployPath      string
	RunAsUser       string
	// DeployScript runs with bash from the new release directory.
	DeployScript string
	// DeployScriptPath: the script is this file of the release being
	// deployed (relative to it) instead; DeployScript is then empty.
	DeployScriptPath          *string
	HealthCheckCommand        *string
	HealthCheckURL            *string
	HealthCheckTimeoutSeconds int
	// ReloadCommand runs after `current` switches (deploy and rollback).
	ReloadCommand  *string
	ReleasesToKeep int
	// SharedPaths are relative to the release, linked into <deploy path>/shared.
	SharedPaths    []string
	TimeoutSeconds int
}

// withDefaults fills zero values with the schema's defaults.
func (a AppSettings) withDefaults() AppSettings {
	if a.Branch == "" {
		a.Branch = DefaultAppBranch
	}
	if a.DeployPath == "" && a.Name != "" {
		a.DeployPath = DefaultAppDeployPath(a.Name)
	}
	if a.RunAsUser == "" {
		a.RunAsUser = DefaultAppRunAsUser
	}
	if a.HealthCheckTimeoutSeconds == 0 {
		a.HealthCheckTimeoutSeconds = DefaultAppHealthCheckTimeoutSeconds
	}
	if a.ReleasesToKeep == 0 {
		a.ReleasesToKeep = DefaultAppReleasesToKeep
	}
	if a.TimeoutSeconds == 0 {
		a.TimeoutSeconds = DefaultAppTimeoutSeconds
	}
	if a.SharedPaths == nil {
		a.SharedPaths = []string{}
	}
	return a
}

// App is an application deployed from git onto one server. Its secrets
// (webhook secret, environments) are not here; the Has fields say which
// are set.
type App struct {
	ID ID
	AppSettings
	HasWebhookSecret bool
	// WebhookSecretSetBy is the user who set the webhook secret: deliveries
	// deploy with that user's rights (nil: nobody vouches, refused).
	WebhookSecretSetBy *ID
	HasEnvVars         bool // common variables
	HasEnvProduction   bool
	HasEnvStaging      bool
	// The deployment whose release `current` points at.
	CurrentDeploymentID *ID
	// DeletedAt: the app was deleted; the row stays for its deployments'
	// history. Lookups by name and lists skip it; App by id still finds it.
	DeletedAt *time.Time
	// UpstreamPort is the app's local upstream on its server (0: none yet).
	UpstreamPort int
	// UpstreamURL overrides where the app's nginx site forwards (nil: its
	// upstream port); StaticRoot serves a directory of current instead.
	UpstreamURL *string
	StaticRoot  *string
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

func appFromRow(r dbsqlc.App) App {
	return App{
		ID: fromPG(r.ID),
		AppSettings: AppSettings{
			ServerID: fromPG(r.ServerID), GitCredentialID: fromOptPG(r.GitCredentialID), Name: r.Name,
			RepositoryURL: r.RepositoryUrl, Branch: r.Branch, DeployPath: r.DeployPath, RunAsUser: r.RunAsUser,
			DeployScript: r.DeployScript, DeployScriptPath: r.DeployScriptPath, HealthCheckCommand: r.HealthCheckCommand, HealthCheckURL: r.HealthCheckUrl,
			HealthCheckTimeoutSeconds: int(r.HealthCheckTimeoutSeconds), ReloadCommand: r.ReloadCommand,
			ReleasesToKeep: int(r.ReleasesToKeep), SharedPaths: r.SharedPaths, TimeoutSeconds: int(r.TimeoutSeconds),
		},
		HasWebhookSecret: r.WebhookSecret != nil, WebhookSecretSetBy: fromOptPG(r.WebhookSecretSetBy), HasEnvVars: r.EnvVars != nil,
		HasEnvProduction: r.EnvProduction != nil, HasEnvStaging: r.EnvStaging != nil,
		CurrentDeploymentID: fromOptPG(r.CurrentDeploymentID), DeletedAt: r.DeletedAt, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
		UpstreamPort: int(deref32(r.UpstreamPort)), UpstreamURL: r.UpstreamUrl, StaticRoot: r.StaticRoot,
	}
}

func deref32(p *int32) int32 {
	if p == nil {
		return 0
	}
	return *p
}

// AppEnvScope names one of an app's encrypted environments.
type AppEnvScope string

// The environment scopes: common variables, overlaid by the deployment
// environment's.
const (
	AppEnvCommon     AppEnvScope = "common"
	AppEnvProduction AppEnvScope = "production"
	AppEnvStaging    AppEnvScope = "staging"
)

// column is the apps column that holds the scope.
func (sc AppEnvScope) column() (string, error) {
	switch sc {
	case AppEnvCommon:
		return "env_vars", nil
	case AppEnvProduction:
		return "env_production", nil
	case AppEnvStaging:
		return "env_staging", nil
	}
	return "", fmt.Errorf("unknown environment scope %q: %w", sc, ErrInvalid)
}

// EnvScope is the scope that overlays the common variables in env.
func EnvScope(env Environment) (AppEnvScope, error) {
	switch env {
	case EnvironmentProduction:
		return AppEnvProduction, nil
	case EnvironmentStaging:
		return AppEnvStaging, nil
	}
	return "", fmt.Errorf("unknown environment %q: %w", env, ErrInvalid)
}

// envKey is what an environment variable name may look like: it must
// survive a dotenv file and a shell.
var envKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func checkEnv(vars map[string]string) error {
	for k := range vars {
		if !envKey.MatchString(k) {
			return fmt.Errorf("environment variable name %q: %w", k, ErrInvalid)
		}
	}
	return nil
}

// sealEnv encodes vars as a JSON object and seals it; an empty map is NULL.
func (s *Store) sealEnv(id ID, sc AppEnvScope, vars map[string]string) ([]byte, error) {
	col, err := sc.column()
	if err != nil {
		return nil, err
	}
	if err := checkEnv(vars); err != nil {
		return nil, err
	}
	if len(vars) == 0 {
		return nil, nil
	}
	pt, err := json.Marshal(vars)
	if err != nil {
		return nil, err
	}
	return s.seal("apps", col, id, pt)
}

// openEnv opens one scope; NULL is an empty (non-nil) map.
func (s *Store) openEnv(id ID, sc AppEnvScope, ct []byte) (map[string]string, error) {
	col, err := sc.column()
	if err != nil {
		return nil, err
	}
	vars := map[string]string{}
	if ct == nil {
		return vars, nil
	}
	pt, err := s.open("apps", col, id, ct)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(pt, &vars); err != nil {
		return nil, fmt.Errorf("decode apps.%s: %w", col, err)
	}
	return vars, nil
}

// CreateAppParams describes a new app. Zero settings get the defaults
// (DefaultApp*; the deploy path /srv/berth/NAME). The secrets are optional
// and sealed to the new row.
type CreateAppParams struct {
	ID ID
	AppSettings
	WebhookSecret []byte
	Env           map[AppEnvScope]map[string]string
}

// CreateApp stores an app.
func (s *Store) CreateApp(ctx context.Context, p CreateAppParams) (App, error) {
	if p.ID == (ID{}) {
		p.ID = NewID()
	}
	a := p.AppSettings.withDefaults()
	arg := dbsqlc.CreateAppParams{
		ID: pgID(p.ID), ServerID: pgID(a.ServerID), GitCredentialID: pgOptID(a.GitCredentialID), Name: a.Name,
		RepositoryUrl: a.RepositoryURL, Branch: a.Branch, DeployPath: a.DeployPath, RunAsUser: a.RunAsUser,
		DeployScript: a.DeployScript, DeployScriptPath: a.DeployScriptPath, HealthCheckCommand: a.HealthCheckCommand, HealthCheckUrl: a.HealthCheckURL,
		HealthCheckTimeoutSeconds: int32(a.HealthCheckTimeoutSeconds), ReloadCommand: a.ReloadCommand,
		ReleasesToKeep: int32(a.ReleasesToKeep), SharedPaths: a.SharedPaths, TimeoutSeconds: int32(a.TimeoutSeconds),
	}
	var err error
	if len(p.WebhookSecret) > 0 {
		if arg.WebhookSecret, err = s.seal("apps", "webhook_secret", p.ID, p.WebhookSecret); err != nil {
			return App{}, mapErr("create app", err)
		}
	}
	for sc, vars := range p.Env {
		ct, err := s.sealEnv(p.ID, sc, vars)
		if err != nil {
			return App{}, mapErr("create app", err)
		}
		switch sc {
		case AppEnvCommon:
			arg.EnvVars = ct
		case AppEnvProduction:
			arg.EnvProduction = ct
		case AppEnvStaging:
			arg.EnvStaging = ct
		}
	}
	r, err := s.q.CreateApp(ctx, arg)
	if err != nil {
		return App{}, mapErr("create app", err)
	}
	return appFromRow(r), nil
}

// App returns an app by id.
func (s *Store) App(ctx context.Context, id ID) (App, error) {
	r, err := s.q.GetApp(ctx, pgID(id))
	if err != nil {
		return App{}, mapErr("get app", err)
	}
	return appFromRow(r), nil
}

// AppByName returns an app by its name (never a deleted one).
func (s *Store) AppByName(ctx context.Context, name string) (App, error) {
	r, err := s.q.GetAppByName(ctx, name)
	if err != nil {
		return App{}, mapErr("get app", err)
	}
	return appFromRow(r), nil
}

// AppFilter selects and pages apps. Before is the last id of the previous
// page; Limit 0 is DefaultPageSize.
type AppFilter struct {
	ServerID        *ID
	GitCredentialID *ID
	Before          *ID
	Limit           int
}

// ListApps lists apps, newest first.
func (s *Store) ListApps(ctx context.Context, f AppFilter) ([]App, error) {
	rows, err := s.q.ListApps(ctx, dbsqlc.ListAppsParams{
		ServerID: pgOptID(f.ServerID), GitCredentialID: pgOptID(f.GitCredentialID),
		Before: pgOptID(f.Before), Lim: limitArg(f.Limit),
	})
	if err != nil {
		return nil, mapErr("list apps", err)
	}
	out := make([]App, len(rows))
	for i, r := range rows {
		out[i] = appFromRow(r)
	}
	return out, nil
}

// AppNamesUsingGitCredential names the apps that use a credential, which
// is what keeps it from being deleted.
func (s *Store) AppNamesUsingGitCredential(ctx context.Context, credentialID ID) ([]string, error) {
	names, err := s.q.ListAppNamesByGitCredential(ctx, pgID(credentialID))
	return names, mapErr("list apps using git credential", err)
}

// UpdateApp replaces an app's settings (zero values get the defaults, as
// in CreateApp). Changing ServerID moves the app's domains with it.
func (s *Store) UpdateApp(ctx context.Context, id ID, settings AppSettings) (App, error) {
	a := settings.withDefaults()
	r, err := s.q.UpdateApp(ctx, dbsqlc.UpdateAppParams{
		ID: pgID(id), ServerID: pgID(a.ServerID), GitCredentialID: pgOptID(a.GitCredentialID), Name: a.Name,
		RepositoryUrl: a.RepositoryURL, Branch: a.Branch, DeployPath: a.DeployPath, RunAsUser: a.RunAsUser,
		DeployScript: a.DeployScript, DeployScriptPath: a.DeployScriptPath, HealthCheckCommand: a.HealthCheckCommand, HealthCheckUrl: a.HealthCheckURL,
		HealthCheckTimeoutSeconds: int32(a.HealthCheckTimeoutSeconds), ReloadCommand: a.ReloadCommand,
		ReleasesToKeep: int32(a.ReleasesToKeep), SharedPaths: a.SharedPaths, TimeoutSeconds: int32(a.TimeoutSeconds),
	})
	if err != nil {
		return App{}, mapErr("update app", err)
	}
	return appFromRow(r), nil
}

// LockApp reads a live app and locks its row until the transaction ends.
func (s *Store) LockApp(ctx context.Context, id ID) (App, error) {
	r, err := s.q.LockApp(ctx, pgID(id))
	if err != nil {
		return App{}, mapErr("lock app", err)
	}
	return appFromRow(r), nil
}

// SetAppCurrentDeployment records which deployment's release `current`
// points at (nil: none). A deployment of another app is ErrMissingParent.
func (s *Store) SetAppCurrentDeployment(ctx context.Context, appID ID, deploymentID *ID) (App, error) {
	r, err := s.q.SetAppCurrentDeployment(ctx, dbsqlc.SetAppCurrentDeploymentParams{ID: pgID(appID), DeploymentID: pgOptID(deploymentID)})
	if err != nil {
		return App{}, mapErr("set app current deployment", err)
	}
	return appFromRow(r), nil
}

// SoftDeleteApp marks an app deleted: its row stays for the history of
// its deployments (and backups), its name and deploy path are free, its
// secrets and credential link are cleared. ErrNotFound: no such app, or
// deleted already.
func (s *Store) SoftDeleteApp(ctx context.Context, id ID) error {
	n, err := s.q.SoftDeleteApp(ctx, pgID(id))
	return affected("delete app", n, err)
}

// UnfinishedDeployments counts the app's queued, dispatched and running
// deployments.
func (s *Store) UnfinishedDeployments(ctx context.Context, appID ID) (int, error) {
	n, err := s.q.CountUnfinishedDeployments(ctx, pgID(appID))
	return int(n), mapErr("count unfinished deployments", err)
}

// DeleteApp deletes an app with its deployments, domains and backup
// schedules; its backups stay (app_id cleared, app_name kept).
func (s *Store) DeleteApp(ctx context.Context, id ID) error {
	n, err := s.q.DeleteApp(ctx, pgID(id))
	return affected("delete app", n, err)
}

// setAppEnvColumn writes one sealed scope.
func (s *Store) setAppEnvColumn(ctx context.Context, id ID, sc AppEnvScope, ct []byte) (int64, error) {
	switch sc {
	case AppEnvCommon:
		return s.q.SetAppEnvVars(ctx, dbsqlc.SetAppEnvVarsParams{ID: pgID(id), Ciphertext: ct})
	case AppEnvProduction:
		return s.q.SetAppEnvProduction(ctx, dbsqlc.SetAppEnvProductionParams{ID: pgID(id), Ciphertext: ct})
	case AppEnvStaging:
		return s.q.SetAppEnvStaging(ctx, dbsqlc.SetAppEnvStagingParams{ID: pgID(id), Ciphertext: ct})
	}
	_, err := sc.column()
	return 0, err
}

// SetAppEnv replaces one environment of an app; an empty map clears it.
func (s *Store) SetAppEnv(ctx context.Context, appID ID, scope AppEnvScope, vars map[string]string) error {
	ct, err := s.sealEnv(appID, scope, vars)
	if err != nil {
		return mapErr("set app env", err)
	}
	n, err := s.setAppEnvColumn(ctx, appID, scope, ct)
	return affected("set app env", n, err)
}

// UpdateAppEnv sets and removes variables of one environment in a single
// locked read-modify-write, and returns the result.
func (s *Store) UpdateAppEnv(ctx context.Context, appID ID, scope AppEnvScope, set map[string]string, unset []string) (map[string]string, error) {
	var out map[string]string
	err := s.InTx(ctx, func(tx *Store) error {
		r, err := tx.q.GetAppSecretsForUpdate(ctx, pgID(appID))
		if err != nil {
			return err
		}
		vars, err := tx.openEnv(appID, scope, scopeCiphertext(scope, r.EnvVars, r.EnvProduction, r.EnvStaging))
		if err != nil {
			return err
		}
		maps.Copy(vars, set)
		for _, k := range unset {
			delete(vars, k)
		}
		ct, err := tx.sealEnv(appID, scope, vars)
		if err != nil {
			return err
		}
		if _, err := tx.setAppEnvColumn(ctx, appID, scope, ct); err != nil {
			return err
		}
		out = vars
		return nil
	})
	if err != nil {
		return nil, mapErr("update app env", err)
	}
	return out, nil
}

func scopeCiphertext(sc AppEnvScope, common, production, staging []byte) []byte {
	switch sc {
	case AppEnvCommon:
		return common
	case AppEnvProduction:
		return production
	case AppEnvStaging:
		return staging
	}
	return nil
}

// AppEnv opens one environment of an app (empty when unset).
func (s *Store) AppEnv(ctx context.Context, appID ID, scope AppEnvScope) (map[string]string, error) {
	r, err := s.q.GetAppSecrets(ctx, pgID(appID))
	if err != nil {
		return nil, mapErr("get app env", err)
	}
	vars, err := s.openEnv(appID, scope, scopeCiphertext(scope, r.EnvVars, r.EnvProduction, r.EnvStaging))
	if err != nil {
		return nil, mapErr("get app env", err)
	}
	return vars, nil
}

// MergedAppEnv is what a deployment to env runs with: the common
// variables overlaid by env's.
func (s *Store) MergedAppEnv(ctx context.Context, appID ID, env Environment) (map[string]string, error) {
	sc, err := EnvScope(env)
	if err != nil {
		return nil, mapErr("get merged app env", err)
	}
	r, err := s.q.GetAppSecrets(ctx, pgID(appID))
	if err != nil {
		return nil, mapErr("get merged app env", err)
	}
	vars, err := s.openEnv(appID, AppEnvCommon, r.EnvVars)
	if err != nil {
		return nil, mapErr("get merged app env", err)
	}
	over, err := s.openEnv(appID, sc, scopeCiphertext(sc, r.EnvVars, r.EnvProduction, r.EnvStaging))
	if err != nil {
		return nil, mapErr("get merged app env", err)
	}
	maps.Copy(vars, over)
	return vars, nil
}

// SetAppWebhookSecret replaces the secret webhooks are verified with; nil
// or empty clears it (the webhook endpoint then refuses the app).
func (s *Store) SetAppWebhookSecret(ctx context.Context, appID ID, secret []byte) error {
	return s.SetAppWebhookSecretBy(ctx, appID, secret, nil)
}

// SetAppWebhookSecretBy is SetAppWebhookSecret recording who set it.
func (s *Store) SetAppWebhookSecretBy(ctx context.Context, appID ID, secret []byte, setBy *ID) error {
	var ct []byte
	if len(secret) > 0 {
		var err error
		if ct, err = s.seal("apps", "webhook_secret", appID, secret); err != nil {
			return mapErr("set app webhook secret", err)
		}
	}
	n, err := s.q.SetAppWebhookSecret(ctx, dbsqlc.SetAppWebhookSecretParams{ID: pgID(appID), Ciphertext: ct, SetBy: pgOptID(setBy)})
	return affected("set app webhook secret", n, err)
}

// AppWebhookSecret opens the app's webhook secret; nil when none is set.
func (s *Store) AppWebhookSecret(ctx context.Context, appID ID) ([]byte, error) {
	r, err := s.q.GetAppSecrets(ctx, pgID(appID))
	if err != nil {
		return nil, mapErr("get app webhook secret", err)
	}
	pt, err := s.open("apps", "webhook_secret", appID, r.WebhookSecret)
	if err != nil {
		return nil, mapErr("get app webhook secret", err)
	}
	return pt, nil
}
