package deploys

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"path"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
)

// AddGitCredentialParams: Kind ssh with an empty PrivateKey generates an
// ed25519 deploy key; https needs Username and Token.
type AddGitCredentialParams struct {
	Name       string
	Kind       store.GitCredentialKind
	PrivateKey string
	Username   string
	Token      string
	// AllowedHosts bind the credential to repository hosts; empty: the
	// host of the first app that uses it.
	AllowedHosts []string
	// KnownHosts pins SSH host keys (OpenSSH known_hosts lines; ssh only).
	KnownHosts string
}

// AddGitCredential stores a credential; only its public part comes back.
// Managing credentials needs the admin scope: they open private repositories.
func (s *Service) AddGitCredential(ctx context.Context, pr *auth.Principal, peer Peer, p AddGitCredentialParams) (store.GitCredential, error) {
	if err := require(pr, store.ScopeAdmin); err != nil {
		return store.GitCredential{}, err
	}
	p.Name = strings.ToLower(strings.TrimSpace(p.Name))
	if !validName(p.Name) {
		return store.GitCredential{}, fmt.Errorf("%w: credential name must be a lowercase slug of 1-63 letters, digits, '.', '_' or '-'", ErrInvalid)
	}
	cp := store.CreateGitCredentialParams{Name: p.Name, Kind: p.Kind}
	hosts, err := normaliseHosts(p.AllowedHosts)
	if err != nil {
		return store.GitCredential{}, err
	}
	cp.AllowedHosts = hosts
	if strings.TrimSpace(p.KnownHosts) != "" {
		if p.Kind != store.GitCredentialSSH {
			return store.GitCredential{}, fmt.Errorf("%w: known hosts are for ssh credentials", ErrInvalid)
		}
		if cp.KnownHosts, err = parseKnownHosts(p.KnownHosts); err != nil {
			return store.GitCredential{}, err
		}
	}
	switch p.Kind {
	case store.GitCredentialSSH:
		if p.Username != "" || p.Token != "" {
			return store.GitCredential{}, fmt.Errorf("%w: an ssh credential takes a private key only", ErrInvalid)
		}
		key := strings.TrimSpace(p.PrivateKey)
		var signer ssh.Signer
		if key == "" {
			_, priv, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				return store.GitCredential{}, err
			}
			block, err := ssh.MarshalPrivateKey(priv, "berth deploy key "+p.Name)
			if err != nil {
				return store.GitCredential{}, err
			}
			key = string(pem.EncodeToMemory(block))
			if signer, err = ssh.NewSignerFromKey(priv); err != nil {
				return store.GitCredential{}, err
			}
		} else {
			if len(key) > 16<<10 {
				return store.GitCredential{}, fmt.Errorf("%w: private key too large", ErrInvalid)
			}
			var err error
			signer, err = ssh.ParsePrivateKey([]byte(key))
			var missing *ssh.PassphraseMissingError
			if errors.As(err, &missing) {
				return store.GitCredential{}, fmt.Errorf("%w: the private key is passphrase-protected; import an unencrypted deploy key", ErrInvalid)
			}
			if err != nil {
				return store.GitCredential{}, fmt.Errorf("%w: not an OpenSSH or PEM private key", ErrInvalid)
			}
			key += "\n"
		}
		pub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))) + " berth-" + p.Name
		fp := ssh.FingerprintSHA256(signer.PublicKey())
		cp.PublicKey, cp.Fingerprint = &pub, &fp
		cp.Secret = store.GitCredentialSecret{PrivateKey: key}
	case store.GitCredentialHTTPS:
		if p.PrivateKey != "" {
			return store.GitCredential{}, fmt.Errorf("%w: an https credential takes a username and token", ErrInvalid)
		}
		if p.Username == "" || len(p.Username) > 200 || strings.ContainsAny(p.Username, ":\n\r") {
			return store.GitCredential{}, fmt.Errorf("%w: https needs a username (no ':' or newline)", ErrInvalid)
		}
		tok := strings.TrimSpace(p.Token)
		if tok == "" || len(tok) > 4096 || strings.ContainsAny(tok, "\n\r") {
			return store.GitCredential{}, fmt.Errorf("%w: https needs a token of one line", ErrInvalid)
		}
		u := p.Username
		cp.Username = &u
		cp.Secret = store.GitCredentialSecret{Username: u, Token: tok}
	default:
		return store.GitCredential{}, fmt.Errorf("%w: credential kind must be ssh or https", ErrInvalid)
	}
	c, err := s.st.CreateGitCredential(ctx, cp)
	if errors.Is(err, store.ErrConflict) {
		return store.GitCredential{}, fmt.Errorf("%w: a git credential named %q already exists", store.ErrConflict, p.Name)
	}
	if err != nil {
		return store.GitCredential{}, err
	}
	s.activity(ctx, pr, peer, "git_credential.created", "git_credential", c.ID, c.Name, map[string]any{
		"kind": string(c.Kind), "credentials": map[string]any{"changed": true}, "allowed_hosts": c.AllowedHosts, "known_hosts_pinned": c.KnownHosts != "",
	})
	return c, nil
}

// ListGitCredentials lists credentials (public parts only).
func (s *Service) ListGitCredentials(ctx context.Context, pr *auth.Principal) ([]store.GitCredential, error) {
	if err := require(pr, store.ScopeRead); err != nil {
		return nil, err
	}
	var all []store.GitCredential
	var before *store.ID
	for {
		page, err := s.st.ListGitCredentials(ctx, store.GitCredentialFilter{Before: before, Limit: 500})
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if len(page) < 500 {
			return all, nil
		}
		before = &page[len(page)-1].ID
	}
}

// DeleteGitCredential deletes a credential no app uses.
func (s *Service) DeleteGitCredential(ctx context.Context, pr *auth.Principal, peer Peer, ref string) error {
	if err := require(pr, store.ScopeAdmin); err != nil {
		return err
	}
	c, err := s.resolveCredential(ctx, ref)
	if err != nil {
		return err
	}
	if err := s.st.DeleteGitCredential(ctx, c.ID); errors.Is(err, store.ErrReferenced) {
		names, _ := s.st.AppNamesUsingGitCredential(ctx, c.ID)
		return fmt.Errorf("%w: git credential %s is used by %s", store.ErrReferenced, c.Name, strings.Join(names, ", "))
	} else if err != nil {
		return err
	}
	s.activity(ctx, pr, peer, "git_credential.deleted", "git_credential", c.ID, c.Name, nil)
	return nil
}

// reservedAppNames would be read as a subcommand (berth deploy cancel) or
// a page (/apps/new) instead of the app.
var reservedAppNames = map[string]bool{"cancel": true, "new": true, "list": true, "logs": true}

// CreateAppParams is what an app is created with; Server and Credential
// are names or ids.
type CreateAppParams struct {
	store.AppSettings
	Server     string
	Credential string
}

// CreateApp validates and stores an app. Creating an app decides what
// code runs on a server: it needs the deploy scope (requireAppChange).
func (s *Service) CreateApp(ctx context.Context, pr *auth.Principal, peer Peer, p CreateAppParams) (store.App, error) {
	if err := requireAppChange(pr, changeCreate); err != nil {
		return store.App{}, err
	}
	a := p.AppSettings
	a.Name = strings.ToLower(strings.TrimSpace(a.Name))
	if !validName(a.Name) {
		return store.App{}, fmt.Errorf("%w: app name must be a lowercase slug of 1-63 letters, digits, '.', '_' or '-'", ErrInvalid)
	}
	if reservedAppNames[a.Name] {
		return store.App{}, fmt.Errorf("%w: %q is reserved (it is a word of the CLI or a page): choose another app name", ErrInvalid, a.Name)
	}
	srv, err := s.fleet.Resolve(ctx, p.Server)
	if err != nil {
		return store.App{}, fmt.Errorf("server %q: %w", p.Server, err)
	}
	a.ServerID = srv.ID
	if err := validateApp(&a); err != nil {
		return store.App{}, err
	}
	if err := checkRoot(a.Name, a.RunAsUser, srv); err != nil {
		return store.App{}, err
	}
	var app store.App
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		if p.Credential != "" {
			c, err := s.attachCredential(ctx, tx, pr, p.Credential, a.RepositoryURL, true)
			if err != nil {
				return err
			}
			a.GitCredentialID = &c.ID
		}
		var err error
		app, err = tx.CreateApp(ctx, store.CreateAppParams{AppSettings: a})
		return err
	})
	if errors.Is(err, store.ErrConflict) {
		return store.App{}, fmt.Errorf("%w: an app named %q or another app at %s on %s already exists", store.ErrConflict, a.Name, a.DeployPath, srv.Name)
	}
	if err != nil {
		return store.App{}, err
	}
	s.activity(ctx, pr, peer, "app.created", "app", app.ID, app.Name, map[string]any{
		"server": srv.Name, "repository_url": redactURL(app.RepositoryURL), "branch": app.Branch, "deploy_path": app.DeployPath,
		"run_as_user": app.RunAsUser,
	})
	return app, nil
}

// UpdateAppParams changes the settings that are not nil; the others stay.
// Credential "" detaches the app's credential.
type UpdateAppParams struct {
	App                       string
	RepositoryURL             *string
	Branch                    *string
	Credential                *string
	DeployPath                *string
	RunAsUser                 *string
	DeployScript              *string
	DeployScriptPath          *string // "" clears
	HealthCheckCommand        *string // "" clears
	HealthCheckURL            *string // "" clears
	HealthCheckTimeoutSeconds *int
	ReloadCommand             *string // "" clears
	ReleasesToKeep            *int
	SharedPaths               *[]string
	TimeoutSeconds            *int
}

// UpdateApp changes an app's settings. The scope needed is that of the
// fields that really change (appChangeScope): write for the harmless
// ones, deploy for the rest.
func (s *Service) UpdateApp(ctx context.Context, pr *auth.Principal, peer Peer, p UpdateAppParams) (store.App, error) {
	if err := require(pr, store.ScopeWrite); err != nil {
		return store.App{}, err
	}
	old, err := s.ResolveApp(ctx, p.App)
	if err != nil {
		return store.App{}, err
	}
	a := old.AppSettings
	set := func(dst *string, v *string) {
		if v != nil {
			*dst = strings.TrimSpace(*v)
		}
	}
	setOpt := func(dst **string, v *string) {
		if v != nil {
			*dst = optText(strings.TrimSpace(*v))
		}
	}
	setInt := func(dst *int, v *int) {
		if v != nil {
			*dst = *v
		}
	}
	set(&a.RepositoryURL, p.RepositoryURL)
	set(&a.Branch, p.Branch)
	set(&a.DeployPath, p.DeployPath)
	set(&a.RunAsUser, p.RunAsUser)
	if p.DeployScript != nil {
		a.DeployScript = *p.DeployScript
		if *p.DeployScript != "" && p.DeployScriptPath == nil {
			a.DeployScriptPath = nil // a stored script replaces a script path
		}
	}
	if p.DeployScriptPath != nil {
		a.DeployScriptPath = optText(strings.TrimSpace(*p.DeployScriptPath))
		if a.DeployScriptPath != nil && p.DeployScript == nil {
			a.DeployScript = "" // a script path replaces a stored script
		}
	}
	setOpt(&a.HealthCheckCommand, p.HealthCheckCommand)
	setOpt(&a.HealthCheckURL, p.HealthCheckURL)
	setOpt(&a.ReloadCommand, p.ReloadCommand)
	setInt(&a.HealthCheckTimeoutSeconds, p.HealthCheckTimeoutSeconds)
	setInt(&a.ReleasesToKeep, p.ReleasesToKeep)
	setInt(&a.TimeoutSeconds, p.TimeoutSeconds)
	if p.SharedPaths != nil {
		a.SharedPaths = slices.Clone(*p.SharedPaths)
		if a.SharedPaths == nil {
			a.SharedPaths = []string{}
		}
	}
	var newCred *store.GitCredential
	if p.Credential != nil {
		if ref := strings.TrimSpace(*p.Credential); ref == "" {
			a.GitCredentialID = nil
		} else {
			c, err := s.resolveCredential(ctx, ref)
			if err != nil {
				return store.App{}, err
			}
			a.GitCredentialID, newCred = &c.ID, &c
		}
	}
	if err := validateApp(&a); err != nil {
		return store.App{}, err
	}
	fields := changedAppFields(old.AppSettings, a)
	if err := requireAppChange(pr, fields...); err != nil {
		return store.App{}, err
	}
	if len(fields) == 0 {
		return old, nil
	}
	srv, err := s.st.Server(ctx, a.ServerID)
	if err != nil {
		return store.App{}, err
	}
	if slices.Contains(fields, "run_as_user") {
		if err := checkRoot(a.Name, a.RunAsUser, srv); err != nil {
			return store.App{}, err
		}
	}
	var app store.App
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		// The checks above judged the change against what was read first:
		// if someone changed the app since, writing the whole row back would
		// undo their change (a write-scoped edit could restore a repository
		// a deploy-scoped caller had just replaced), so refuse instead.
		cur, err := tx.LockApp(ctx, old.ID)
		if err != nil {
			return err
		}
		if len(changedAppFields(old.AppSettings, cur.AppSettings)) > 0 {
			return errAppChanged
		}
		credChanged := slices.Contains(fields, "credential")
		if a.GitCredentialID != nil && (credChanged || slices.Contains(fields, "repository_url")) {
			// Pointing an app that has a credential at another repository is
			// a new use of the credential: the same check as attaching it.
			reattach := (credChanged && newCred != nil) || slices.Contains(fields, "repository_url")
			if _, err := s.attachCredential(ctx, tx, pr, a.GitCredentialID.String(), a.RepositoryURL, reattach); err != nil {
				return err
			}
		}
		app, err = tx.UpdateApp(ctx, old.ID, a)
		return err
	})
	if errors.Is(err, errAppChanged) {
		return store.App{}, err
	}
	if errors.Is(err, store.ErrConflict) {
		return store.App{}, fmt.Errorf("%w: another app at %s on %s already exists", store.ErrConflict, a.DeployPath, srv.Name)
	}
	if err != nil {
		return store.App{}, err
	}
	changes := map[string]any{"fields": fields}
	if slices.Contains(fields, "repository_url") {
		changes["repository_url"] = redactURL(app.RepositoryURL)
	}
	if slices.Contains(fields, "run_as_user") {
		changes["run_as_user"] = app.RunAsUser
	}
	s.activity(ctx, pr, peer, kind.AppUpdated, "app", app.ID, app.Name, changes)
	s.appChange(ctx, s.st, app)
	return app, nil
}

// errAppChanged: the app's settings changed between an update's read and
// its write; the caller reads again and retries.
var errAppChanged = fmt.Errorf("%w: the app was changed by someone else meanwhile; read it again and retry", ErrRefused)

// redactURL drops a password from a URL for the audit trail.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

func validateApp(a *store.AppSettings) error {
	a.RepositoryURL = strings.TrimSpace(a.RepositoryURL)
	if a.RepositoryURL == "" || len(a.RepositoryURL) > 2048 || strings.HasPrefix(a.RepositoryURL, "-") || strings.ContainsAny(a.RepositoryURL, " \n\r") {
		return fmt.Errorf("%w: --repo must be a git URL", ErrInvalid)
	}
	if u, err := url.Parse(a.RepositoryURL); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			return fmt.Errorf("%w: put the password or token in a git credential, not in the repository URL", ErrInvalid)
		}
	}
	if strings.HasPrefix(a.Branch, "-") || strings.ContainsAny(a.Branch, " \n\r~^:?*[\\") || len(a.Branch) > 255 {
		return fmt.Errorf("%w: invalid branch name", ErrInvalid)
	}
	if a.DeployPath != "" && (!path.IsAbs(a.DeployPath) || path.Clean(a.DeployPath) != a.DeployPath || a.DeployPath == "/") {
		return fmt.Errorf("%w: --path must be a clean absolute path below /", ErrInvalid)
	}
	// An empty user is the schema's default, a dedicated unprivileged
	// account the agent creates; never empty, which meant the agent's own
	// user (root under systemd).
	if a.RunAsUser == "" {
		a.RunAsUser = store.DefaultAppRunAsUser
	}
	if a.RunAsUser != "0" && (len(a.RunAsUser) > 32 || !runAsRE.MatchString(a.RunAsUser)) {
		return fmt.Errorf("%w: --user must be a system user name", ErrInvalid)
	}
	if a.RunAsUser == "0" {
		a.RunAsUser = "root" // uid 0 by name: what the schema and the agent take
	}
	if len(a.DeployScript) > 256<<10 {
		return fmt.Errorf("%w: deploy script larger than 256 KiB", ErrInvalid)
	}
	if sp := a.DeployScriptPath; sp != nil {
		if *sp == "" {
			a.DeployScriptPath = nil
		} else {
			if a.DeployScript != "" {
				return fmt.Errorf("%w: --deploy-script and --deploy-script-path are exclusive: give one", ErrInvalid)
			}
			if len(*sp) > 1024 || path.IsAbs(*sp) || path.Clean(*sp) == "." || slices.Contains(strings.Split(*sp, "/"), "..") || strings.ContainsAny(*sp, "\x00\n\r") {
				return fmt.Errorf("%w: --deploy-script-path must be a path relative to the release, without '..' (like deploy/berth.sh)", ErrInvalid)
			}
		}
	}
	if a.HealthCheckURL != nil {
		u, err := url.Parse(*a.HealthCheckURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%w: the health check URL must be http(s)", ErrInvalid)
		}
	}
	if a.ReleasesToKeep < 0 || a.ReleasesToKeep > 100 {
		return fmt.Errorf("%w: --keep must be between 1 and 100", ErrInvalid)
	}
	if a.TimeoutSeconds < 0 || a.TimeoutSeconds > 86400 || a.HealthCheckTimeoutSeconds < 0 || a.HealthCheckTimeoutSeconds > 3600 {
		return fmt.Errorf("%w: timeout out of range", ErrInvalid)
	}
	for _, sp := range a.SharedPaths {
		c := path.Clean(sp)
		if sp == "" || path.IsAbs(sp) || c == "." || c == ".." || strings.HasPrefix(c, "../") {
			return fmt.Errorf("%w: shared path %q must be relative and stay inside the release", ErrInvalid, sp)
		}
	}
	return nil
}

// ListApps lists apps, optionally of one server.
func (s *Service) ListApps(ctx context.Context, pr *auth.Principal, server string) ([]store.App, error) {
	if err := require(pr, store.ScopeRead); err != nil {
		return nil, err
	}
	f := store.AppFilter{Limit: 500}
	if server != "" {
		srv, err := s.fleet.Resolve(ctx, server)
		if err != nil {
			return nil, err
		}
		f.ServerID = &srv.ID
	}
	var all []store.App
	for {
		page, err := s.st.ListApps(ctx, f)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if len(page) < 500 {
			return all, nil
		}
		f.Before = &page[len(page)-1].ID
	}
}

// AppView is an app with the names (never values) of its variables.
type AppView struct {
	store.App
	ServerName, CredentialName string
	EnvKeys                    map[store.AppEnvScope][]string
	// Processes and Schedules the app declares; UpstreamPort is its local
	// upstream on its server (0 until a process has a port).
	Processes    []ProcessView
	Schedules    []ScheduleView
	UpstreamPort uint32
}

// GetApp returns an app and the names of its variables.
func (s *Service) GetApp(ctx context.Context, pr *auth.Principal, ref string) (AppView, error) {
	if err := require(pr, store.ScopeRead); err != nil {
		return AppView{}, err
	}
	a, err := s.ResolveApp(ctx, ref)
	if err != nil {
		return AppView{}, err
	}
	return s.View(ctx, a)
}

// ViewBrief adds names and variable names to an app (lists: no processes
// or schedules).
func (s *Service) ViewBrief(ctx context.Context, a store.App) (AppView, error) {
	v := AppView{App: a, EnvKeys: map[store.AppEnvScope][]string{}, UpstreamPort: uint32(a.UpstreamPort)}
	if srv, err := s.st.Server(ctx, a.ServerID); err == nil {
		v.ServerName = srv.Name
	}
	if a.GitCredentialID != nil {
		if c, err := s.st.GitCredential(ctx, *a.GitCredentialID); err == nil {
			v.CredentialName = c.Name
		}
	}
	for _, sc := range []store.AppEnvScope{store.AppEnvCommon, store.AppEnvProduction, store.AppEnvStaging} {
		vars, err := s.st.AppEnv(ctx, a.ID, sc)
		if err != nil {
			return AppView{}, err
		}
		keys := make([]string, 0, len(vars))
		for k := range vars {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		v.EnvKeys[sc] = keys
	}
	return v, nil
}

// View adds names, variable names, processes and schedules to an app.
func (s *Service) View(ctx context.Context, a store.App) (AppView, error) {
	v, err := s.ViewBrief(ctx, a)
	if err != nil {
		return AppView{}, err
	}
	procs, err := s.st.AppProcesses(ctx, a.ID)
	if err != nil {
		return AppView{}, err
	}
	if v.Processes, err = s.processViews(ctx, a, procs); err != nil {
		return AppView{}, err
	}
	if v.Schedules, err = s.scheduleViews(ctx, a); err != nil {
		return AppView{}, err
	}
	v.UpstreamPort = uint32(a.UpstreamPort)
	return v, nil
}

// SetAppEnv sets and unsets variables of one scope (common, production,
// staging) and returns the names now set. The audit trail records only
// that the scope changed and which names were touched.
func (s *Service) SetAppEnv(ctx context.Context, pr *auth.Principal, peer Peer, ref string, scope store.AppEnvScope, set map[string]string, unset []string) ([]string, error) {
	if err := requireAppChange(pr, changeEnv); err != nil {
		return nil, err
	}
	if scope == "" {
		scope = store.AppEnvCommon
	}
	if scope != store.AppEnvCommon && scope != store.AppEnvProduction && scope != store.AppEnvStaging {
		return nil, fmt.Errorf("%w: --env must be production or staging (or omitted for every environment)", ErrInvalid)
	}
	if len(set)+len(unset) == 0 || len(set) > 500 {
		return nil, fmt.Errorf("%w: give 1-500 KEY=VALUE pairs", ErrInvalid)
	}
	for k, v := range set {
		if len(v) > 64<<10 || strings.ContainsRune(v, 0) {
			return nil, fmt.Errorf("%w: value of %s too large or holds a NUL byte", ErrInvalid, k)
		}
	}
	a, err := s.ResolveApp(ctx, ref)
	if err != nil {
		return nil, err
	}
	vars, err := s.st.UpdateAppEnv(ctx, a.ID, scope, set, unset)
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	touched := make([]string, 0, len(set)+len(unset))
	for k := range set {
		touched = append(touched, k)
	}
	touched = append(touched, unset...)
	slices.Sort(touched)
	col := map[store.AppEnvScope]string{store.AppEnvCommon: "env_vars", store.AppEnvProduction: "env_production", store.AppEnvStaging: "env_staging"}[scope]
	s.activity(ctx, pr, peer, "app.env_changed", "app", a.ID, a.Name, map[string]any{col: map[string]any{"changed": true, "keys": touched}})
	s.appChange(ctx, s.st, a)
	return keys, nil
}

// SetWebhookSecret sets the app's webhook secret (empty: generate one)
// and returns it, once. Whoever holds the secret triggers deployments, so
// setting it needs the deploy scope, and the deliveries deploy on this
// caller's behalf: they are refused once the caller's user may no longer
// deploy.
func (s *Service) SetWebhookSecret(ctx context.Context, pr *auth.Principal, peer Peer, ref, secret string) (store.App, string, error) {
	if err := requireAppChange(pr, changeWebhookSecret); err != nil {
		return store.App{}, "", err
	}
	if secret == "" {
		var b [32]byte
		_, _ = rand.Read(b[:])
		secret = base64.RawURLEncoding.EncodeToString(b[:])
	}
	if len(secret) < 16 || len(secret) > 256 {
		return store.App{}, "", fmt.Errorf("%w: a webhook secret has 16-256 characters", ErrInvalid)
	}
	a, err := s.ResolveApp(ctx, ref)
	if err != nil {
		return store.App{}, "", err
	}
	uid := pr.UserID
	if err := s.st.SetAppWebhookSecretBy(ctx, a.ID, []byte(secret), &uid); err != nil {
		return store.App{}, "", err
	}
	s.activity(ctx, pr, peer, "app.webhook_secret_changed", "app", a.ID, a.Name, map[string]any{"webhook_secret": map[string]any{"changed": true}})
	return a, secret, nil
}

// DeletedApp is what DeleteApp did: Job is the delete job that removes
// the app's files (the app is deleted once it succeeds); when the files
// are kept the app is deleted already and Job is the delete job that only
// stops its processes (nil when it runs none).
type DeletedApp struct {
	App store.App
	Job *store.Deployment
}

// DeleteApp deletes an app (deploy scope: it ends what runs on a server).
// Its deployments stay as history. Unless keepFiles, a delete job removes
// its releases, current, shared and .env from its server first, queued
// like a deploy (it waits for an offline agent), and the app is deleted
// when that job succeeds. Refused while a deployment of the app is
// unfinished.
func (s *Service) DeleteApp(ctx context.Context, pr *auth.Principal, peer Peer, ref string, keepFiles bool) (DeletedApp, error) {
	if err := require(pr, store.ScopeDeploy); err != nil {
		return DeletedApp{}, err
	}
	a, err := s.ResolveApp(ctx, ref)
	if err != nil {
		return DeletedApp{}, err
	}
	list, err := s.st.ListDeployments(ctx, store.DeploymentFilter{AppID: &a.ID, Limit: 100})
	if err != nil {
		return DeletedApp{}, err
	}
	for _, d := range list {
		// Jobs of other capabilities (a site being applied, a certificate
		// step) are short, and the delete job queues behind them.
		if !d.Status.Finished() && s.kinds[d.Kind] == nil {
			what := "deployment"
			if d.Kind == store.JobDelete {
				what = "delete job"
			}
			return DeletedApp{}, fmt.Errorf("%w: app %s has an unfinished %s %s (%s): wait for it or cancel it (berth deploy cancel %s), then delete",
				store.ErrWrongState, a.Name, what, d.ID, d.Status, d.ID)
		}
	}
	// A deleted app runs nothing any more: its schedules go now (a delete
	// job that fails leaves the app without them; they are declared again
	// with berth app schedule add). Its processes are stopped by the
	// delete job on the agent; with keepFiles, when it declares processes
	// and has a release, by a delete job queued just before the app is
	// marked deleted (the agent, given no deploy path, stops them and
	// keeps every file; see jobStart).
	if err := s.st.DeleteAppSchedules(ctx, a.ID); err != nil {
		return DeletedApp{}, err
	}
	if keepFiles {
		procs, err := s.st.AppProcesses(ctx, a.ID)
		if err != nil {
			return DeletedApp{}, err
		}
		var stopJob *store.Deployment
		// The job and the mark commit together, the job queued (never
		// dispatched before the mark): a delete job sent while the app
		// is not yet marked would carry its deploy path and remove files.
		err = s.st.InTx(ctx, func(tx *store.Store) error {
			// A site in nginx goes too: the agent's delete job removes it.
			if (len(procs) > 0 && a.CurrentDeploymentID != nil) || s.appHasSite(ctx, a.ID) {
				cp := store.CreateDeploymentParams{AppID: a.ID, UserID: &pr.UserID, TriggeredBy: store.TriggerUser, Kind: store.JobDelete}
				if pr.TokenID != nil {
					ref := pr.TokenID.String()
					cp.TriggeredBy, cp.TriggerRef = store.TriggerAPIToken, &ref
				}
				d, err := tx.CreateDeployment(ctx, cp)
				if err != nil {
					return err
				}
				stopJob = &d
			}
			if err := tx.SoftDeleteApp(ctx, a.ID); err != nil {
				return err
			}
			if gone, err := tx.App(ctx, a.ID); err == nil {
				s.appChange(ctx, tx, gone)
			}
			return nil
		})
		if err != nil {
			return DeletedApp{}, err
		}
		changes := map[string]any{"keep_files": true, "deploy_path": a.DeployPath}
		if stopJob != nil {
			changes["stop_job"] = stopJob.ID.String()
			s.poke()
			s.notify(ctx, "dispatch")
		}
		s.activity(ctx, pr, peer, kind.AppDeleted, "app", a.ID, a.Name, changes)
		a, err = s.st.App(ctx, a.ID)
		return DeletedApp{App: a, Job: stopJob}, err
	}
	cp := store.CreateDeploymentParams{AppID: a.ID, UserID: &pr.UserID, TriggeredBy: store.TriggerUser, Kind: store.JobDelete}
	if pr.TokenID != nil {
		ref := pr.TokenID.String()
		cp.TriggeredBy, cp.TriggerRef = store.TriggerAPIToken, &ref
	}
	q, err := s.enqueue(ctx, pr, peer, a, cp, kind.AppDeleteRequested)
	if err != nil {
		return DeletedApp{}, err
	}
	return DeletedApp{App: a, Job: &q.Deployment}, nil
}
