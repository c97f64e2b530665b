// Package deploy is the agent's executor for an app's durable jobs:
// deploy, rollback, delete, process (an action on the app's supervised
// processes) and schedule (one run of a scheduled command). Deploys and
// rollbacks move the app's processes to their release through the
// supervise.Manager (step processes, after current is switched and before
// the app's health check); a failure there or later switches current, and
// the processes, back. It knows nothing of the transport: a job arrives as a Spec, its
// output and outcome leave as numbered Events through a Sink, and the
// transport acknowledges them with Ack once the controller has committed
// them. Everything a job produces is journaled on disk first, so a job keeps
// running while the link is down and its events are re-sent from Pending
// after a reconnect, or after an agent restart (Recover).
//
// On disk, under Config.DataDir:
//
//	jobs/<deployment id>/spec.json    the spec without secrets
//	jobs/<deployment id>/state.json   running/finished, current step, process group
//	jobs/<deployment id>/events.log   every event, one JSON line each, by seq
//	jobs/<deployment id>/acked        the highest seq the controller committed
//	jobs/<deployment id>/tmp/         git's HOME for the job's lifetime only
//	jobs/<deployment id>/tmp/ssh/     SSH key and pinned host keys, for the fetch only
//	mirrors/<app id>.git              bare mirror of the app's repository
//
// On the server, under Spec.DeployPath:
//
//	releases/<deployment id>/  one directory per kept release
//	shared/<path>              what SharedPaths link into every release
//	current -> releases/<id>   switched atomically with rename(2)
package deploy

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// Kind says what a job does.
type Kind string

const (
	KindDeploy   Kind = "deploy"
	KindRollback Kind = "rollback"
	// KindDelete stops a deleted app's processes and removes its files
	// (releases, current, shared, .env) under its deploy path, and its
	// mirror. Without a deploy path (app delete --keep-files) it stops the
	// processes and keeps every file.
	KindDelete Kind = "delete"
	// KindProcess applies Spec.ProcessAction to the app's processes, in the
	// release current points at.
	KindProcess Kind = "process"
	// KindSchedule is one run of a scheduled command in the release current
	// points at. It runs beside the app's other jobs; two runs of one
	// schedule never overlap.
	KindSchedule Kind = "schedule"
)

// Process actions (Spec.ProcessAction).
const (
	ProcessApply   = "apply"
	ProcessStart   = "start"
	ProcessStop    = "stop"
	ProcessRestart = "restart"
)

// Defaults for zero values in a Spec.
const (
	DefaultKeepReleases       = 5
	DefaultTimeout            = 30 * time.Minute
	DefaultHealthCheckTimeout = 30 * time.Second
)

// Step names, as reported in Result.FailedStep and Event.Step.
const (
	StepFetch       = "fetch"
	StepCheckout    = "checkout"
	StepLinkShared  = "link_shared"
	StepWriteEnv    = "write_env"
	StepBuild       = "build"
	StepHealthCheck = "health_check"
	StepActivate    = "activate"
	StepPrune       = "prune"
	// Rollback only.
	StepVerify = "verify"
	StepReload = "reload"
	// Delete only.
	StepRemove = "remove"
	// StepProcesses moves the app's processes to the release (deploy,
	// rollback) or applies a process job's action.
	StepProcesses = "processes"
	// StepSchedule is a schedule job's run of its command.
	StepSchedule = "schedule"
)

// Bounds of what a process or schedule job names.
const (
	maxScheduleCommand = 64 << 10
	maxProcesses       = 64
)

// maxDeployScript bounds a deploy script read from the release, as the
// controller bounds a stored one.
const maxDeployScript = 256 << 10

// Spec is one deploy or rollback job as the controller sends it.
type Spec struct {
	DeploymentID string `json:"deployment_id"` // ULID; also the release directory name
	// ControllerSeq is how many of the job's events the controller holds
	// already: not zero only for a job re-sent after a reconnect, which
	// this agent must know (see ErrRanBefore).
	ControllerSeq uint64 `json:"-"`
	AppID         string `json:"app_id"`
	AppName       string `json:"app_name"`
	Kind          Kind   `json:"kind"`

	RepoURL string `json:"repo_url"`
	Branch  string `json:"branch"`
	// Commit pins the deploy to a SHA; empty means the head of Branch (or
	// the repository's default branch when Branch is empty too).
	Commit string `json:"commit"`
	// Credential is never journaled, never written into the repository or
	// the mirror's config, and redacted from all output.
	Credential *Credential `json:"-"`
	// Backup is a backup job kind's spec, with its secrets: never
	// journaled, redacted from all output.
	Backup *BackupJob `json:"-"`

	DeployPath string `json:"deploy_path"` // absolute, e.g. /srv/berth/shop
	// RunAsUser runs the deploy script, health check and reload command (and
	// owns the release) as this system user, created when missing. Empty
	// means Config.AppUser when the agent runs as root, else the agent's
	// own user (the only one it can run anything as).
	RunAsUser string `json:"run_as_user"`
	// AllowRoot is the server's admin-granted allowance to run the app as
	// a user with uid 0; without it such a user is refused.
	AllowRoot    bool   `json:"allow_root"`
	DeployScript string `json:"deploy_script"`
	// DeployScriptPath: the deploy script is this file of the release
	// (relative to it), read through the release's os.Root when the build
	// step starts; DeployScript is then empty.
	DeployScriptPath string `json:"deploy_script_path,omitempty"`
	// Env is written to the release's .env (mode 0600, owned by the app
	// user) and passed to the deploy script, health check and reload
	// command. Only its keys are journaled.
	Env          map[string]string `json:"-"`
	HealthCheck  *HealthCheck      `json:"health_check,omitempty"`
	KeepReleases int               `json:"keep_releases"`
	// SharedPaths are relative paths (like "storage" or "database/app.db")
	// linked from DeployPath/shared into every release.
	SharedPaths []string      `json:"shared_paths"`
	Timeout     time.Duration `json:"timeout"`

	// Rollback only: the release to switch back to, and the command that
	// makes the running app pick it up (e.g. "sudo systemctl reload php-fpm").
	RollbackTo    string `json:"rollback_to"`
	ReloadCommand string `json:"reload_command"`

	// Processes is the app's whole declared process set: a deploy or
	// rollback moves them to its release (an empty set stops any the app
	// still has); a process job acts on them. The supervise package
	// validates each spec.
	Processes []*agentv1.ProcessSpec `json:"processes,omitempty"`
	// ProcessAction (process jobs): apply, start, stop or restart, on
	// ProcessNames (empty: all).
	ProcessAction string   `json:"process_action,omitempty"`
	ProcessNames  []string `json:"process_names,omitempty"`
	// UpstreamPort is the app's local upstream (127.0.0.1:UpstreamPort)
	// in front of its processes with a port; 0 is none.
	UpstreamPort uint32 `json:"upstream_port,omitempty"`
	// ProcessHealthTimeout is how long a new process instance may take to
	// pass its health check: the app's health-check timeout (0: the
	// process manager's default).
	ProcessHealthTimeout time.Duration `json:"process_health_timeout,omitempty"`
	// ScheduleName and ScheduleCommand (schedule jobs): the command runs
	// once with bash from the release current points at.
	ScheduleName    string `json:"schedule_name,omitempty"`
	ScheduleCommand string `json:"schedule_command,omitempty"`
}

// busyKey is what a running job holds: an app runs one job at a time,
// except that each of its schedules has a key of its own, so a schedule's
// runs queue behind each other but never behind a deploy.
func (s *Spec) busyKey() string {
	if s.Kind.IsBackup() {
		// Backups run beside the app's jobs and each other. A backup and
		// a delete of the same object key hold that key: a delete (the
		// cleanup of a backup the controller gave up on) waits for the
		// backup still running here to end, so it never removes a
		// temporary file or multipart upload that the backup then turns
		// into an object nobody calls good.
		if (s.Kind == KindBackup || s.Kind == KindBackupDelete) && s.Backup != nil && s.Backup.Object.Key != "" {
			return "backup-object/" + s.Backup.Object.Key
		}
		return "backup/" + s.DeploymentID
	}
	if s.Kind == KindSchedule {
		return s.AppID + "/schedule/" + s.ScheduleName
	}
	return s.AppID
}

// Credential is how the agent authenticates to the git server: either an
// SSH private key (OpenSSH PEM) or an HTTPS username and token.
type Credential struct {
	SSHPrivateKey string
	Username      string
	Token         string
	// AllowedHosts are the only repository hosts (lowercase, no port) the
	// credential may be sent to; empty refuses it everywhere.
	AllowedHosts []string
	// KnownHosts are the pinned SSH host keys (known_hosts lines) an ssh
	// fetch must match; ssh never learns one on its own.
	KnownHosts string
}

// allows reports whether the credential may be sent to host.
func (c *Credential) allows(host string) bool {
	if c == nil {
		return false
	}
	host = normalizeHost(host)
	return host != "" && slices.ContainsFunc(c.AllowedHosts, func(h string) bool { return normalizeHost(h) == host })
}

func normalizeHost(h string) string {
	return strings.TrimSuffix(strings.ToLower(strings.Trim(h, "[]")), ".")
}

// repoHost is the host a repository URL reaches over the network, and
// whether it is reached with ssh: https://, http://, git://, ssh:// URLs
// and scp-like [user@]host:path. It is "" for a path or file:// URL (this
// machine; no credential is sent anywhere).
func repoHost(raw string) (host string, ssh bool, err error) {
	if i := strings.Index(raw, "://"); i >= 0 {
		u, err := url.Parse(raw)
		if err != nil {
			return "", false, fmt.Errorf("deploy: repository URL %q does not parse: %w", raw, err)
		}
		switch strings.ToLower(u.Scheme) {
		case "file":
			return "", false, nil
		case "http", "https", "git":
		case "ssh", "git+ssh", "ssh+git":
			ssh = true
		default:
			return "", false, fmt.Errorf("deploy: repository URL scheme %q is not supported (https, http, ssh, git or a path)", u.Scheme)
		}
		if u.Hostname() == "" {
			return "", false, fmt.Errorf("deploy: repository URL %q names no host", raw)
		}
		return normalizeHost(u.Hostname()), ssh, nil
	}
	// git's transport::address syntax runs helpers, not a host.
	if i := strings.Index(raw, "::"); i > 0 && !strings.ContainsAny(raw[:i], "/@[") {
		return "", false, fmt.Errorf("deploy: repository URL %q uses a transport helper, which is not supported", raw)
	}
	// git's rule: a colon before any slash makes it scp-like; a bracketed
	// host may hold colons ([::1]:repo.git).
	rest := raw
	if at := strings.LastIndex(rest, "@"); at >= 0 && !strings.Contains(rest[:at], "/") {
		rest = rest[at+1:]
	}
	var hostPart string
	if strings.HasPrefix(rest, "[") {
		end := strings.Index(rest, "]:")
		if end < 0 {
			return "", false, nil
		}
		hostPart = rest[1:end]
	} else {
		colon := strings.Index(rest, ":")
		if colon < 0 || strings.Contains(rest[:colon], "/") {
			return "", false, nil // a local path
		}
		hostPart = rest[:colon]
	}
	if hostPart == "" {
		return "", false, fmt.Errorf("deploy: repository URL %q names no host", raw)
	}
	return normalizeHost(hostPart), true, nil
}

// checkCredential binds the credential to its hosts before anything is
// fetched: a repository URL naming another host (or none) never gets it,
// and an ssh fetch without pinned host keys never connects.
func (s *Spec) checkCredential() error {
	c := s.Credential
	if c == nil {
		return nil
	}
	host, ssh, err := repoHost(s.RepoURL)
	if err != nil {
		return err
	}
	if host == "" {
		return fmt.Errorf("deploy: repository %q is on this machine; a git credential is only sent to a host it is bound to", s.RepoURL)
	}
	if len(c.AllowedHosts) == 0 {
		return fmt.Errorf("deploy: the git credential is bound to no host; refusing to send it to %s", host)
	}
	if !c.allows(host) {
		return fmt.Errorf("deploy: the git credential may be sent only to %s, not to %s (the repository's host)", strings.Join(c.AllowedHosts, ", "), host)
	}
	if ssh && c.kind() == "ssh" && strings.TrimSpace(c.KnownHosts) == "" {
		return fmt.Errorf("deploy: the git credential has no pinned SSH host keys (known_hosts) for %s; refusing to connect without them", host)
	}
	return nil
}

func (c *Credential) kind() string {
	switch {
	case c == nil:
		return ""
	case c.SSHPrivateKey != "":
		return "ssh"
	default:
		return "https"
	}
}

// HealthCheck runs before a new release goes live (and after a rollback).
// Command runs with bash in the release directory and must exit 0 within
// Timeout. URL is polled with GET until it answers 2xx or Timeout passes
// (the app may need a moment to come up). When both are set, both must pass.
type HealthCheck struct {
	Command string        `json:"command,omitempty"`
	URL     string        `json:"url,omitempty"`
	Timeout time.Duration `json:"timeout,omitempty"`
}

var (
	ulidRE   = regexp.MustCompile(`^[0-7][0-9A-HJKMNP-TV-Z]{25}$`)
	safeIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)
	envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	shaRE    = regexp.MustCompile(`^[0-9a-fA-F]{4,64}$`)
	// userNameRE admits names useradd would take (and never an option).
	userNameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\$?$`)
	// slugRE is a process name; scheduleNameRE a schedule's (the
	// controller's name rule).
	slugRE         = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)
	scheduleNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
)

// IsReleaseID reports whether s is shaped like a ULID (26 Crockford base32
// characters), the only names the executor creates or prunes in releases/.
func IsReleaseID(s string) bool { return ulidRE.MatchString(s) }

// normalize checks s and fills in defaults. IDs become path components, so
// they are checked strictly.
func (s *Spec) normalize() error {
	if !IsReleaseID(s.DeploymentID) {
		return fmt.Errorf("deploy: deployment id %q is not a ULID", s.DeploymentID)
	}
	if s.Kind.IsBackup() {
		return s.normalizeBackup()
	}
	if !safeIDRE.MatchString(s.AppID) || s.AppID == "." || s.AppID == ".." {
		return fmt.Errorf("deploy: app id %q is not a safe identifier", s.AppID)
	}
	// A delete without a deploy path keeps the app's files (app delete
	// --keep-files): it only stops the app's processes.
	keepFiles := s.Kind == KindDelete && s.DeployPath == ""
	if !keepFiles && (s.DeployPath == "" || !filepath.IsAbs(s.DeployPath) || filepath.Clean(s.DeployPath) == "/") {
		return fmt.Errorf("deploy: deploy path %q must be an absolute path below /", s.DeployPath)
	}
	if !keepFiles {
		s.DeployPath = filepath.Clean(s.DeployPath)
	}
	if s.RunAsUser != "" && !userNameRE.MatchString(s.RunAsUser) {
		return fmt.Errorf("deploy: user name %q is not a valid system user name", s.RunAsUser)
	}
	if s.KeepReleases <= 0 {
		s.KeepReleases = DefaultKeepReleases
	}
	if s.Timeout <= 0 {
		s.Timeout = DefaultTimeout
	}
	if hc := s.HealthCheck; hc != nil {
		if hc.Command == "" && hc.URL == "" {
			s.HealthCheck = nil
		} else if hc.Timeout <= 0 {
			hc.Timeout = DefaultHealthCheckTimeout
		}
		if hc.URL != "" {
			u, err := url.Parse(hc.URL)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("deploy: health check URL %q is not an http(s) URL", hc.URL)
			}
		}
	}
	for k := range s.Env {
		if !envKeyRE.MatchString(k) {
			return fmt.Errorf("deploy: environment variable name %q is invalid", k)
		}
	}
	for _, p := range s.SharedPaths {
		if _, err := cleanRel(p); err != nil {
			return err
		}
	}
	if s.DeployScriptPath != "" {
		if s.DeployScript != "" {
			return errors.New("deploy: a deploy script and a deploy script path are exclusive")
		}
		c, err := cleanScriptPath(s.DeployScriptPath)
		if err != nil {
			return err
		}
		s.DeployScriptPath = c
	}
	if len(s.Processes) > maxProcesses {
		return fmt.Errorf("deploy: %d processes declared; at most %d", len(s.Processes), maxProcesses)
	}
	for _, p := range s.Processes {
		if p == nil {
			return errors.New("deploy: a declared process is empty")
		}
	}
	if s.UpstreamPort > 65535 {
		return fmt.Errorf("deploy: upstream port %d is not a TCP port", s.UpstreamPort)
	}
	switch s.Kind {
	case KindDelete:
		return nil
	case KindProcess:
		switch s.ProcessAction {
		case ProcessApply, ProcessStart, ProcessStop, ProcessRestart:
		default:
			return fmt.Errorf("deploy: process action %q is not apply, start, stop or restart", s.ProcessAction)
		}
		if len(s.ProcessNames) > maxProcesses {
			return fmt.Errorf("deploy: %d process names; at most %d", len(s.ProcessNames), maxProcesses)
		}
		for _, n := range s.ProcessNames {
			if !slugRE.MatchString(n) {
				return fmt.Errorf("deploy: process name %q is not a lowercase slug of at most 32 characters", n)
			}
		}
		return nil
	case KindSchedule:
		if !scheduleNameRE.MatchString(s.ScheduleName) {
			return fmt.Errorf("deploy: schedule name %q is not a lowercase slug of at most 63 characters", s.ScheduleName)
		}
		if strings.TrimSpace(s.ScheduleCommand) == "" {
			return errors.New("deploy: the schedule's command is empty")
		}
		if len(s.ScheduleCommand) > maxScheduleCommand {
			return fmt.Errorf("deploy: the schedule's command is %d bytes; at most 64 KiB", len(s.ScheduleCommand))
		}
		if strings.ContainsRune(s.ScheduleCommand, 0) {
			return errors.New("deploy: the schedule's command contains a NUL byte")
		}
		return nil
	case KindDeploy:
		if s.RepoURL == "" {
			return errors.New("deploy: repository URL is required")
		}
		if strings.HasPrefix(s.RepoURL, "-") || strings.HasPrefix(s.Branch, "-") {
			return errors.New("deploy: repository URL and branch must not start with '-'")
		}
		if s.Commit != "" && !shaRE.MatchString(s.Commit) {
			return fmt.Errorf("deploy: commit %q is not a hex SHA", s.Commit)
		}
		if err := s.moveURLCredential(); err != nil {
			return err
		}
		if c := s.Credential; c != nil && c.SSHPrivateKey == "" && c.Token == "" {
			s.Credential = nil
		}
		if err := s.checkCredential(); err != nil {
			return err
		}
	case KindRollback:
		if !IsReleaseID(s.RollbackTo) {
			return fmt.Errorf("deploy: rollback target %q is not a release id", s.RollbackTo)
		}
	default:
		return fmt.Errorf("deploy: unknown job kind %q", s.Kind)
	}
	return nil
}

// moveURLCredential takes a user:password out of an http(s) repository URL:
// git would otherwise store it in the mirror's config and print it.
func (s *Spec) moveURLCredential() error {
	u, err := url.Parse(s.RepoURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.User == nil {
		return nil
	}
	pass, ok := u.User.Password()
	if !ok {
		return nil
	}
	if s.Credential == nil {
		// Whoever wrote the URL chose the host and the secret together:
		// the credential is bound to that host.
		s.Credential = &Credential{Username: u.User.Username(), Token: pass, AllowedHosts: []string{u.Hostname()}}
	}
	u.User = nil
	s.RepoURL = u.String()
	return nil
}

// cleanRel checks a shared path: relative, inside the release, not the
// release itself.
func cleanRel(p string) (string, error) {
	c := filepath.Clean(p)
	if p == "" || filepath.IsAbs(p) || c == "." || c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("deploy: shared path %q must be relative and stay inside the release", p)
	}
	return c, nil
}

// cleanScriptPath checks a deploy script path: relative, inside the
// release, no "..".
func cleanScriptPath(p string) (string, error) {
	c := filepath.Clean(p)
	if p == "" || filepath.IsAbs(p) || c == "." || slices.Contains(strings.Split(filepath.ToSlash(p), "/"), "..") {
		return "", fmt.Errorf("deploy: deploy script path %q must be relative to the release, without '..'", p)
	}
	return c, nil
}
