package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/berthhq/berth/controller/internal/deploys"
	"github.com/berthhq/berth/controller/internal/store"
)

func (s *Server) appList(w http.ResponseWriter, r *http.Request, v *viewer) {
	rows, err := s.d.Deploys.AppRows(r.Context(), v.Principal)
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	s.render(w, r, "apps", view{Title: "Apps", Nav: "apps", User: v, Data: map[string]any{"Apps": rows}})
}

func (s *Server) appNewView(w http.ResponseWriter, r *http.Request, v *viewer, status int, errMsg string) {
	servers, err := s.d.Fleet.List(r.Context(), v.Principal, store.ServerFilter{Limit: 500})
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	var creds []store.GitCredential
	if v.IsAdmin() {
		creds, _ = s.d.Deploys.ListGitCredentials(r.Context(), v.Principal)
	}
	s.render(w, r, "app_new", view{Title: "New app", Nav: "apps", User: v, Status: status, Error: errMsg, Form: r.PostForm,
		Data: map[string]any{"Servers": servers, "Credentials": creds}})
}

func (s *Server) appNew(w http.ResponseWriter, r *http.Request, v *viewer) {
	s.appNewView(w, r, v, 0, "")
}

func optional(v string) *string {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil
	}
	return &v
}

func atoiOr(v string, def int) (int, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return def, nil
	}
	return strconv.Atoi(v)
}

func (s *Server) appCreate(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	f := r.PostForm
	keep, err1 := atoiOr(f.Get("keep"), 0)
	timeout, err2 := atoiOr(f.Get("timeout_minutes"), 0)
	hcTimeout, err3 := atoiOr(f.Get("health_timeout"), 0)
	if err := errors.Join(err1, err2, err3); err != nil {
		s.appNewView(w, r, v, http.StatusBadRequest, "Releases to keep and the timeouts are whole numbers.")
		return
	}
	var shared []string
	for _, p := range strings.FieldsFunc(f.Get("shared_paths"), func(c rune) bool { return c == '\n' || c == ',' }) {
		if p = strings.TrimSpace(p); p != "" {
			shared = append(shared, p)
		}
	}
	p := deploys.CreateAppParams{Server: f.Get("server"), Credential: f.Get("credential"), AppSettings: store.AppSettings{
		Name: f.Get("name"), RepositoryURL: f.Get("repo"), Branch: f.Get("branch"), DeployPath: f.Get("path"), RunAsUser: f.Get("user"),
		DeployScript: strings.ReplaceAll(f.Get("deploy_script"), "\r\n", "\n"), HealthCheckCommand: optional(f.Get("health_cmd")),
		HealthCheckURL: optional(f.Get("health_url")), HealthCheckTimeoutSeconds: hcTimeout, ReloadCommand: optional(f.Get("reload_cmd")),
		ReleasesToKeep: keep, SharedPaths: shared, TimeoutSeconds: timeout * 60,
	}}
	a, err := s.d.Deploys.CreateApp(r.Context(), v.Principal, s.peer(r), p)
	if err != nil {
		if st := statusOf(err); st == http.StatusBadRequest || st == http.StatusConflict || st == http.StatusNotFound {
			s.appNewView(w, r, v, st, publicMessage(err))
			return
		}
		s.fail(w, r, v, err)
		return
	}
	s.redirect(w, r, "/apps/"+a.Name, "App "+a.Name+" created. Set its environment, then deploy.")
}

func (s *Server) appShow(w http.ResponseWriter, r *http.Request, v *viewer) {
	s.appView(w, r, v, 0, "", "")
}

func (s *Server) appView(w http.ResponseWriter, r *http.Request, v *viewer, status int, errMsg, webhookSecret string) {
	av, err := s.d.Deploys.GetApp(r.Context(), v.Principal, r.PathValue("app"))
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	list, err := s.d.Deploys.ListDeployments(r.Context(), v.Principal, av.ID.String(), nil, 30)
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	kept := rollbackOptions(list, av.CurrentDeploymentID, av.ReleasesToKeep)
	scopes := []store.AppEnvScope{store.AppEnvCommon, store.AppEnvProduction, store.AppEnvStaging}
	type envScope struct {
		Scope store.AppEnvScope
		Keys  []string
	}
	var env []envScope
	for _, sc := range scopes {
		keys := append([]string(nil), av.EnvKeys[sc]...)
		sort.Strings(keys)
		env = append(env, envScope{sc, keys})
	}
	form := r.PostForm
	if form == nil {
		// "Edit" on a process opens the form filled with its settings.
		form = editProcessForm(av.Processes, r.URL.Query().Get("edit"))
	}
	s.render(w, r, "app", view{Title: av.Name, Nav: "apps", User: v, Status: status, Error: errMsg, Form: form, Data: map[string]any{
		"App": av, "Deployments": list, "Kept": kept, "Env": env, "CanDeploy": v.CanDeploy(),
		"WebhookSecret": webhookSecret, "HookBase": "/hooks/apps/" + av.ID.String(),
	}})
}

// releaseOption is one entry of the "Roll back to" list.
type releaseOption struct {
	ID       store.ID
	Label    string
	Current  bool // shown for orientation, never selectable
	Selected bool
}

// rollbackOptions lists the releases a rollback can go to, newest first
// (list is newest first): succeeded deploys whose release is still kept
// (the newest keep, and the current one). Rollback rows are left out:
// rolling back to one re-activates the release it points at, which is
// listed already. The release before the current one is preselected, as
// `berth rollback` without --to picks it; the current one never is.
func rollbackOptions(list []store.Deployment, current *store.ID, keep int) []releaseOption {
	var out []releaseOption
	n := 0
	for _, d := range list {
		if d.Kind != store.JobDeploy || d.TriggeredBy == store.TriggerRollback || d.Status != store.DeploymentSucceeded || d.ReleasePath == nil {
			continue
		}
		isCur := current != nil && d.ID == *current
		if n >= keep && keep > 0 && !isCur {
			n++
			continue
		}
		n++
		out = append(out, releaseOption{ID: d.ID, Label: releaseLabel(d), Current: isCur})
	}
	pick := -1
	for i, o := range out {
		if o.Current {
			continue
		}
		if current == nil || o.ID.Compare(*current) < 0 {
			pick = i
			break
		}
		if pick < 0 {
			pick = i
		}
	}
	if pick >= 0 {
		out[pick].Selected = true
	}
	if pick < 0 {
		return nil // only the current release: nothing to roll back to
	}
	return out
}

// releaseLabel names a release as people remember it: the commit's
// subject, its short sha and when it was deployed.
func releaseLabel(d store.Deployment) string {
	var parts []string
	if d.CommitMessage != nil {
		subj, _, _ := strings.Cut(strings.TrimSpace(*d.CommitMessage), "\n")
		if r := []rune(subj); len(r) > 60 {
			subj = string(r[:59]) + "…"
		}
		if subj != "" {
			parts = append(parts, subj)
		}
	}
	if d.CommitSHA != nil && *d.CommitSHA != "" {
		sha := *d.CommitSHA
		if len(sha) > 7 {
			sha = sha[:7]
		}
		parts = append(parts, sha)
	}
	at := d.QueuedAt
	if d.FinishedAt != nil {
		at = *d.FinishedAt
	}
	parts = append(parts, at.UTC().Format("2006-01-02 15:04 UTC"))
	return strings.Join(parts, " · ")
}

// appEnv sets and unsets variables of one scope. Values are write-only:
// the page shows names, never values.
func (s *Server) appEnv(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	set := map[string]string{}
	for _, line := range strings.Split(strings.ReplaceAll(r.PostFormValue("set"), "\r\n", "\n"), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		k, val, ok := strings.Cut(line, "=")
		if !ok {
			s.appView(w, r, v, http.StatusBadRequest, "Variables are KEY=VALUE, one per line.", "")
			return
		}
		set[strings.TrimSpace(k)] = val
	}
	_, err := s.d.Deploys.SetAppEnv(r.Context(), v.Principal, s.peer(r), r.PathValue("app"), store.AppEnvScope(r.PostFormValue("scope")), set, r.PostForm["unset"])
	if err != nil {
		if st := statusOf(err); st == http.StatusBadRequest {
			s.appView(w, r, v, st, publicMessage(err), "")
			return
		}
		s.fail(w, r, v, err)
		return
	}
	s.redirect(w, r, "/apps/"+r.PathValue("app"), fmt.Sprintf("Environment saved (%d set, %d removed). It applies from the next deploy.", len(set), len(r.PostForm["unset"])))
}

func (s *Server) appWebhook(w http.ResponseWriter, r *http.Request, v *viewer) {
	_, secret, err := s.d.Deploys.SetWebhookSecret(r.Context(), v.Principal, s.peer(r), r.PathValue("app"), "")
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	// Shown on this response only.
	s.appView(w, r, v, 0, "", secret)
}

func (s *Server) appDeploy(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	q, err := s.d.Deploys.Deploy(r.Context(), v.Principal, s.peer(r), deploys.DeployParams{
		App: r.PathValue("app"), Environment: store.Environment(r.PostFormValue("env")), Commit: strings.TrimSpace(r.PostFormValue("commit")),
	})
	s.queued(w, r, v, q, err, "Deployment")
}

func (s *Server) appRollback(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	q, err := s.d.Deploys.Rollback(r.Context(), v.Principal, s.peer(r), r.PathValue("app"), r.PostFormValue("to"))
	s.queued(w, r, v, q, err, "Rollback")
}

func (s *Server) queued(w http.ResponseWriter, r *http.Request, v *viewer, q deploys.Queued, err error, what string) {
	if err != nil {
		if st := statusOf(err); st == http.StatusBadRequest || st == http.StatusConflict || st == http.StatusNotFound {
			s.appView(w, r, v, st, publicMessage(err), "")
			return
		}
		s.fail(w, r, v, err)
		return
	}
	msg := what + " queued."
	if n := len(q.Behind); n > 0 {
		msg = fmt.Sprintf("%s queued behind %d unfinished deployment(s) of this app: it starts when they end.", what, n)
	}
	s.redirect(w, r, "/deployments/"+q.Deployment.ID.String(), msg)
}

func (s *Server) deploymentList(w http.ResponseWriter, r *http.Request, v *viewer) {
	const limit = 50
	var before *store.ID
	if !s.before(w, r, &before) {
		return
	}
	rows, err := s.d.Deploys.AllDeployments(r.Context(), v.Principal, before, limit)
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	s.render(w, r, "deployments", view{Title: "Deployments", Nav: "deployments", User: v, Data: map[string]any{
		"Deployments": rows, "Next": nextPage(r, len(rows), limit, idOf(rows, func(d deploys.DeploymentRow) store.ID { return d.ID })),
	}})
}

func (s *Server) deploymentShow(w http.ResponseWriter, r *http.Request, v *viewer) {
	d, app, err := s.d.Deploys.DeploymentWithApp(r.Context(), v.Principal, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	waiting, err := s.d.Deploys.WaitingReason(r.Context(), d)
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	s.render(w, r, "deployment", view{Title: "Deployment " + d.ID.String(), Nav: "deployments", User: v, Data: map[string]any{
		"D": d, "App": app, "CanDeploy": v.CanDeploy(), "Waiting": waiting,
	}})
}

func (s *Server) deploymentCancel(w http.ResponseWriter, r *http.Request, v *viewer) {
	d, err := s.d.Deploys.Cancel(r.Context(), v.Principal, s.peer(r), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	s.redirect(w, r, "/deployments/"+d.ID.String(), "Cancel requested: the agent stops the whole process group.")
}

// deploymentLog streams a deployment's log and state as server-sent
// events: "chunk" (text), "status" (JSON), and "end" when it finished.
func (s *Server) deploymentLog(w http.ResponseWriter, r *http.Request, v *viewer) {
	var after int64
	if le := r.Header.Get("Last-Event-ID"); le != "" {
		n, err := strconv.ParseInt(le, 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "bad Last-Event-ID", http.StatusBadRequest)
			return
		}
		after = n
	}
	if _, err := s.d.Deploys.GetDeployment(r.Context(), v.Principal, r.PathValue("id")); err != nil {
		http.Error(w, publicMessage(err), statusOf(err))
		return
	}
	fl, ok := startEvents(w)
	if !ok {
		return
	}
	err := s.d.Deploys.Follow(r.Context(), v.Principal, r.PathValue("id"), after, func(ev deploys.FollowEvent) error {
		if ev.Chunk != nil {
			b, _ := json.Marshal(map[string]any{"step": ev.Chunk.Step, "text": string(ev.Chunk.Data)})
			if _, err := fmt.Fprintf(w, "id: %d\nevent: chunk\ndata: %s\n\n", ev.Chunk.Seq, b); err != nil {
				return err
			}
		}
		if d := ev.Deployment; d != nil {
			b, _ := json.Marshal(deploymentState(*d))
			if _, err := fmt.Fprintf(w, "event: status\ndata: %s\n\n", b); err != nil {
				return err
			}
		}
		if ev.Waiting != nil {
			b, _ := json.Marshal(map[string]string{"text": *ev.Waiting})
			if _, err := fmt.Fprintf(w, "event: waiting\ndata: %s\n\n", b); err != nil {
				return err
			}
		}
		fl.Flush()
		return nil
	})
	if err == nil {
		_, _ = fmt.Fprint(w, "event: end\ndata: {}\n\n")
		fl.Flush()
	}
}

func deploymentState(d store.Deployment) map[string]any {
	m := map[string]any{"status": d.Status, "cancel_requested": d.CancelRequestedAt != nil}
	if d.FailedStep != nil {
		m["failed_step"] = *d.FailedStep
	}
	if d.FailureReason != nil {
		m["failure_reason"] = *d.FailureReason
	}
	if d.ExitCode != nil {
		m["exit_code"] = *d.ExitCode
	}
	if d.CommitSHA != nil {
		m["commit_sha"] = *d.CommitSHA
	}
	if d.CommitMessage != nil {
		m["commit_message"] = *d.CommitMessage
	}
	if d.FinishedAt != nil {
		m["finished_at"] = d.FinishedAt.UTC().Format(time.RFC3339)
	}
	return m
}

// Git credentials (admins: they open private repositories).

func (s *Server) credentialsView(w http.ResponseWriter, r *http.Request, v *viewer, status int, errMsg string, created *store.GitCredential) {
	list, err := s.d.Deploys.ListGitCredentials(r.Context(), v.Principal)
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	s.render(w, r, "credentials", view{Title: "Git credentials", Nav: "apps", User: v, Status: status, Error: errMsg, Form: r.PostForm,
		Data: map[string]any{"Credentials": list, "Created": created}})
}

func (s *Server) credentialList(w http.ResponseWriter, r *http.Request, v *viewer) {
	s.credentialsView(w, r, v, 0, "", nil)
}

func (s *Server) credentialCreate(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	p := deploys.AddGitCredentialParams{Name: r.PostFormValue("name"), Kind: store.GitCredentialKind(r.PostFormValue("kind")),
		PrivateKey: strings.ReplaceAll(r.PostFormValue("private_key"), "\r\n", "\n"), Username: r.PostFormValue("username"), Token: r.PostFormValue("token")}
	c, err := s.d.Deploys.AddGitCredential(r.Context(), v.Principal, s.peer(r), p)
	if err != nil {
		if st := statusOf(err); st == http.StatusBadRequest || st == http.StatusConflict {
			r.PostForm.Del("private_key")
			r.PostForm.Del("token")
			s.credentialsView(w, r, v, st, publicMessage(err), nil)
			return
		}
		s.fail(w, r, v, err)
		return
	}
	r.PostForm = nil
	s.credentialsView(w, r, v, http.StatusCreated, "", &c)
}

func (s *Server) credentialDelete(w http.ResponseWriter, r *http.Request, v *viewer) {
	if err := s.d.Deploys.DeleteGitCredential(r.Context(), v.Principal, s.peer(r), r.PathValue("name")); err != nil {
		s.fail(w, r, v, err)
		return
	}
	s.redirect(w, r, "/git-credentials", "Credential deleted.")
}

// appEdit shows the edit form; what may be saved is the service's call
// (UpdateApp: write for the harmless fields, deploy for the rest).
func (s *Server) appEdit(w http.ResponseWriter, r *http.Request, v *viewer) {
	s.appEditView(w, r, v, 0, "")
}

func (s *Server) appEditView(w http.ResponseWriter, r *http.Request, v *viewer, status int, errMsg string) {
	av, err := s.d.Deploys.GetApp(r.Context(), v.Principal, r.PathValue("app"))
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	s.render(w, r, "app_edit", view{Title: "Edit " + av.Name, Nav: "apps", User: v, Status: status, Error: errMsg, Data: map[string]any{
		"App": av, "Shared": strings.Join(av.SharedPaths, "\n"), "ScriptPath": deref(av.DeployScriptPath),
		"HealthCmd": deref(av.HealthCheckCommand), "HealthURL": deref(av.HealthCheckURL), "ReloadCmd": deref(av.ReloadCommand),
		"TimeoutMinutes": av.TimeoutSeconds / 60,
	}})
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// appUpdate saves the edit form through UpdateApp: only the fields the
// form carries are set, and only those that differ count as changes.
func (s *Server) appUpdate(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	f := r.PostForm
	str := func(name string) *string {
		if _, ok := f[name]; !ok {
			return nil
		}
		val := strings.ReplaceAll(f.Get(name), "\r\n", "\n")
		return &val
	}
	num := func(name string, mul int) (*int, error) {
		if _, ok := f[name]; !ok || strings.TrimSpace(f.Get(name)) == "" {
			return nil, nil
		}
		n, err := strconv.Atoi(strings.TrimSpace(f.Get(name)))
		n *= mul
		return &n, err
	}
	keep, err1 := num("keep", 1)
	timeout, err2 := num("timeout_minutes", 60)
	hcTimeout, err3 := num("health_timeout", 1)
	if err := errors.Join(err1, err2, err3); err != nil {
		s.appEditView(w, r, v, http.StatusBadRequest, "Releases to keep and the timeouts are whole numbers.")
		return
	}
	p := deploys.UpdateAppParams{
		App: r.PathValue("app"), RepositoryURL: str("repo"), Branch: str("branch"), Credential: str("credential"), DeployPath: str("path"),
		RunAsUser: str("user"), DeployScript: str("deploy_script"), DeployScriptPath: str("deploy_script_path"),
		HealthCheckCommand: str("health_cmd"), HealthCheckURL: str("health_url"), ReloadCommand: str("reload_cmd"),
		HealthCheckTimeoutSeconds: hcTimeout, ReleasesToKeep: keep, TimeoutSeconds: timeout,
	}
	if sp := str("shared_paths"); sp != nil {
		shared := []string{}
		for _, x := range strings.FieldsFunc(*sp, func(c rune) bool { return c == '\n' || c == ',' }) {
			if x = strings.TrimSpace(x); x != "" {
				shared = append(shared, x)
			}
		}
		p.SharedPaths = &shared
	}
	a, err := s.d.Deploys.UpdateApp(r.Context(), v.Principal, s.peer(r), p)
	if err != nil {
		if st := statusOf(err); st == http.StatusBadRequest || st == http.StatusConflict || st == http.StatusNotFound {
			s.appEditView(w, r, v, st, publicMessage(err))
			return
		}
		s.fail(w, r, v, err)
		return
	}
	s.redirect(w, r, "/apps/"+a.Name, "App "+a.Name+" saved. The changes apply from the next deploy.")
}

// appDelete deletes an app once its name is typed as confirmation.
func (s *Server) appDelete(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	name := r.PathValue("app")
	if strings.TrimSpace(r.PostFormValue("confirm")) != name {
		s.appView(w, r, v, http.StatusBadRequest, "Type the app's name to delete it.", "")
		return
	}
	res, err := s.d.Deploys.DeleteApp(r.Context(), v.Principal, s.peer(r), name, r.PostFormValue("keep_files") != "")
	if err != nil {
		if st := statusOf(err); st == http.StatusBadRequest || st == http.StatusConflict || st == http.StatusNotFound {
			s.appView(w, r, v, st, publicMessage(err), "")
			return
		}
		s.fail(w, r, v, err)
		return
	}
	if res.Job != nil {
		s.redirect(w, r, "/deployments/"+res.Job.ID.String(), "Deleting "+name+": this job removes its files; the app is deleted when it succeeds.")
		return
	}
	s.redirect(w, r, "/apps", "App "+name+" deleted; its files stay on the server.")
}
