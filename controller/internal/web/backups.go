package web

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/berthhq/berth/controller/internal/backups"
	"github.com/berthhq/berth/controller/internal/store"
)

// The Backups pages: destinations (anyone sees them with their last check;
// write tests one; admins add and remove them), an app's backups (write
// runs one now), a backup's page with its live log and its tasks (write
// verifies; admins restore, download and delete), and a task's page with
// its own live log. Every action goes through backups.Service, the same
// principal-taking methods the gRPC API calls, so authorisation, validation
// and the activity log are the service's; the pages only decide what to
// show. Secrets typed into the destination forms go to the service and are
// never written back into a page, not even after a refused form.

func (s *Server) backupRoutes() []route {
	return []route{
		{"GET /backups", s.backupPage(s.backupIndex)},
		{"POST /backups/destinations", s.backupPage(s.destinationAdd)},
		{"POST /backups/destinations/{name}/test", s.backupPage(s.destinationTest)},
		{"POST /backups/destinations/{name}/remove", s.backupPage(s.destinationRemove)},
		{"GET /apps/{app}/backups", s.backupPage(s.appBackups)},
		{"POST /apps/{app}/backups", s.backupPage(s.appBackupRun)},
		{"GET /backups/{id}", s.backupPage(s.backupShow)},
		{"GET /backups/{id}/log", s.backupPage(s.backupLog)},
		{"POST /backups/{id}/cancel", s.backupPage(s.backupCancel)},
		{"POST /backups/{id}/verify", s.backupPage(s.backupVerify)},
		{"POST /backups/{id}/restore", s.backupPage(s.backupRestore)},
		{"POST /backups/{id}/download", s.backupPage(s.backupDownload)},
		{"POST /backups/{id}/delete", s.backupPage(s.backupDelete)},
		{"GET /backups/{id}/tasks/{task}", s.backupPage(s.backupTaskShow)},
		{"GET /backups/{id}/tasks/{task}/log", s.backupPage(s.backupTaskLog)},
		{"POST /backups/{id}/tasks/{task}/cancel", s.backupPage(s.backupTaskCancel)},
		{"POST /apps/{app}/backup-schedules", s.backupPage(s.scheduleBackupAdd)},
		{"POST /backups/schedules/{id}/disable", s.backupPage(s.scheduleBackupEnabled(false))},
		{"POST /backups/schedules/{id}/enable", s.backupPage(s.scheduleBackupEnabled(true))},
		{"POST /backups/schedules/{id}/remove", s.backupPage(s.scheduleBackupRemove)},
	}
}

// SetBackups gives the UI the daemon's backups service (the one registered
// with the fleet as the agents' job handler; there can be only one).
func (s *Server) SetBackups(b *backups.Service) {
	if b != nil {
		s.d.Backups = b
	}
}

// backupPage is page for the backup routes: a controller built without
// the backups service answers 503 instead of failing on a nil service.
func (s *Server) backupPage(h handler) http.HandlerFunc {
	return s.page(func(w http.ResponseWriter, r *http.Request, v *viewer) {
		if s.d.Backups == nil {
			s.errorPage(w, r, http.StatusServiceUnavailable, "Backups unavailable", "This controller runs without the backups service.")
			return
		}
		h(w, r, v)
	})
}

// formStatus says whether a service error is one a form shows beside what
// was typed (bad input, a conflict, an unknown name, no server to run it);
// anything else gets the error page.
func formStatus(err error) (int, bool) {
	switch st := statusOf(err); st {
	case http.StatusBadRequest, http.StatusConflict, http.StatusNotFound, http.StatusServiceUnavailable:
		return st, true
	default:
		return st, false
	}
}

// flagNames turns the service's wording (written for the CLI's flags) into
// the labels of the web forms. Longer names first: a replacer tries them in
// this order at each position.
var flagNames = strings.NewReplacer(
	"--secret-access-key-stdin", "Secret access key",
	"--host-key-fingerprint", "Host key fingerprint",
	"--private-key-file", "Private key",
	"--connection-env", "Connection variable",
	"--access-key-id", "Access key ID",
	"--password-stdin", "Password",
	"--path-style", "Path-style",
	"--endpoint", "Endpoint",
	"--username", "Username",
	"--bucket", "Bucket",
	"--region", "Region",
	"--prefix", "Prefix",
	"--source", "Source",
	"--kind", "Kind",
	"--host", "Host",
	"--port", "Port",
	"--path", "Path",
	"--limit", "Limit",
	"--status", "Status",
	"--to", "Restore into",
	"--server", "Server",
	"--force", "Force",
	"--keep-days", "Keep days",
	"--keep", "Keep",
	"--cron", "Cron",
	"--timezone", "Time zone",
	"--verify", "Verify",
)

func backupMessage(err error) string { return flagNames.Replace(publicMessage(err)) }

// Destinations.

type destinationRow struct {
	backups.Destination
	Where string
	Check string // ok, failed, never
}

func destinationWhere(d backups.Destination) string {
	c := d.Settings
	switch d.Kind {
	case store.DestinationLocal:
		return c.Path + " on the server that makes the backup"
	case store.DestinationS3:
		w := c.Endpoint + " bucket " + c.Bucket
		if c.Prefix != "" {
			w += " prefix " + c.Prefix
		}
		if c.Region != "" {
			w += " region " + c.Region
		}
		if c.PathStyle {
			w += " (path-style)"
		}
		return w
	case store.DestinationSFTP:
		return fmt.Sprintf("%s@%s:%d %s, host key %s", c.Username, c.Host, c.Port, c.Path, c.HostKeyFingerprint)
	}
	return ""
}

func destinationRows(list []backups.Destination) []destinationRow {
	out := make([]destinationRow, len(list))
	for i, d := range list {
		check := "never"
		if d.LastCheckOK != nil {
			check = "failed"
			if *d.LastCheckOK {
				check = "ok"
			}
		}
		out[i] = destinationRow{Destination: d, Where: destinationWhere(d), Check: check}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// backupRow is a backup in a list.
type backupRow struct {
	store.Backup
	DestName string
	Size     string
}

func backupRows(list []store.Backup, dests []backups.Destination) []backupRow {
	names := map[store.ID]string{}
	for _, d := range dests {
		names[d.ID] = d.Name
	}
	out := make([]backupRow, len(list))
	for i, b := range list {
		out[i] = backupRow{Backup: b, DestName: names[b.DestinationID], Size: "—"}
		if out[i].DestName == "" {
			out[i].DestName = b.DestinationID.String()
		}
		if b.SizeBytes != nil {
			out[i].Size = humanBytes(*b.SizeBytes)
		}
	}
	return out
}

var backupStatuses = []string{"queued", "dispatched", "running", "succeeded", "failed", "canceled", "timed_out"}

func (s *Server) backupIndex(w http.ResponseWriter, r *http.Request, v *viewer) {
	s.backupIndexView(w, r, v, 0, "")
}

func (s *Server) backupIndexView(w http.ResponseWriter, r *http.Request, v *viewer, status int, errMsg string) {
	ctx := r.Context()
	dests, err := s.d.Backups.Destinations(ctx, v.Principal)
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	q := r.URL.Query()
	filter := backups.ListRequest{App: strings.TrimSpace(q.Get("app")), Status: q.Get("status"), Limit: 100}
	list, err := s.d.Backups.Backups(ctx, v.Principal, filter)
	if err != nil {
		st, ok := formStatus(err)
		if !ok {
			s.fail(w, r, v, err)
			return
		}
		// A bad filter: say so above an empty list, keeping the filter.
		if status == 0 {
			status, errMsg = st, backupMessage(err)
		}
	}
	servers, err := s.d.Fleet.List(ctx, v.Principal, store.ServerFilter{Limit: 500})
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	s.render(w, r, "backups", view{Title: "Backups", Nav: "backups", User: v, Status: status, Error: errMsg, Form: r.PostForm,
		Data: map[string]any{
			"Destinations": destinationRows(dests), "Backups": backupRows(list, dests), "Servers": servers,
			"FilterApp": filter.App, "FilterStatus": filter.Status, "Statuses": backupStatuses,
		}})
}

// destinationSecrets are the form fields that are never sent back.
var destinationSecrets = []string{"secret_access_key", "password", "private_key"}

func (s *Server) destinationAdd(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	f := r.PostForm
	trim := func(k string) string { return strings.TrimSpace(f.Get(k)) }
	sp := backups.DestinationSpec{Name: trim("name"), Kind: f.Get("kind")}
	bad := ""
	// Each kind has its own form; fields of the others are not read.
	switch sp.Kind {
	case string(store.DestinationLocal):
		sp.Path = trim("path")
	case string(store.DestinationS3):
		sp.Endpoint, sp.Bucket, sp.Region, sp.Prefix = trim("endpoint"), trim("bucket"), trim("region"), trim("prefix")
		sp.PathStyle = f.Get("path_style") != ""
		sp.AccessKeyID, sp.SecretAccessKey = trim("access_key_id"), f.Get("secret_access_key")
	case string(store.DestinationSFTP):
		sp.Host, sp.Username, sp.Path, sp.HostKeyFingerprint = trim("host"), trim("username"), trim("path"), trim("host_key_fingerprint")
		if p := trim("port"); p != "" {
			n, err := strconv.Atoi(p)
			if err != nil {
				bad = "Port must be a number from 1 to 65535."
			}
			sp.Port = n
		}
		sp.Password = f.Get("password")
		if k := strings.ReplaceAll(f.Get("private_key"), "\r\n", "\n"); strings.TrimSpace(k) != "" {
			sp.PrivateKey = []byte(k)
		}
	}
	var err error
	if bad == "" {
		_, err = s.d.Backups.AddDestination(r.Context(), v.Principal, s.peer(r), sp)
	}
	if bad != "" || err != nil {
		status := http.StatusBadRequest
		if err != nil {
			var ok bool
			if status, ok = formStatus(err); !ok {
				s.fail(w, r, v, err)
				return
			}
			bad = backupMessage(err)
		}
		typed := false
		for _, k := range destinationSecrets {
			typed = typed || f.Get(k) != ""
			f.Del(k)
		}
		if typed {
			bad += " Secrets are never sent back to the browser: enter it again."
		}
		s.backupIndexView(w, r, v, status, bad)
		return
	}
	s.redirect(w, r, "/backups", "Destination "+sp.Name+" added. Test it: a server writes, reads back and deletes a small probe object.")
}

func (s *Server) destinationTest(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	name := r.PathValue("name")
	d, _, err := s.d.Backups.TestDestination(r.Context(), v.Principal, s.peer(r), name, strings.TrimSpace(r.PostFormValue("server")))
	if err != nil {
		if st, ok := formStatus(err); ok {
			r.PostForm = nil
			s.backupIndexView(w, r, v, st, backupMessage(err))
			return
		}
		s.fail(w, r, v, err)
		return
	}
	msg := "Destination " + d.Name + " works: a server wrote, read back and deleted a probe object."
	if d.LastCheckOK == nil || !*d.LastCheckOK {
		// The flash is short; the table shows the whole reason.
		msg = "The test of destination " + d.Name + " failed: " + truncateRunes(deref(d.LastCheckError), 160)
	}
	s.redirect(w, r, "/backups", msg)
}

func (s *Server) destinationRemove(w http.ResponseWriter, r *http.Request, v *viewer) {
	name := r.PathValue("name")
	if err := s.d.Backups.RemoveDestination(r.Context(), v.Principal, s.peer(r), name); err != nil {
		// In use: the service says by how many backups and schedules.
		if st, ok := formStatus(err); ok {
			r.PostForm = nil
			s.backupIndexView(w, r, v, st, backupMessage(err))
			return
		}
		s.fail(w, r, v, err)
		return
	}
	s.redirect(w, r, "/backups", "Destination "+name+" removed.")
}

func truncateRunes(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// An app's backups.

func (s *Server) appBackups(w http.ResponseWriter, r *http.Request, v *viewer) {
	s.appBackupsView(w, r, v, 0, "")
}

func (s *Server) appBackupsView(w http.ResponseWriter, r *http.Request, v *viewer, status int, errMsg string) {
	ctx := r.Context()
	av, err := s.d.Deploys.GetApp(ctx, v.Principal, r.PathValue("app"))
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	list, err := s.d.Backups.Backups(ctx, v.Principal, backups.ListRequest{App: av.ID.String(), Limit: 100})
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	dests, err := s.d.Backups.Destinations(ctx, v.Principal)
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	scheds, err := s.d.Backups.Schedules(ctx, v.Principal, av.ID.String())
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	s.render(w, r, "app_backups", view{Title: "Backups of " + av.Name, Nav: "backups", User: v, Status: status, Error: errMsg, Form: r.PostForm,
		Data: map[string]any{"App": av, "Backups": backupRows(list, dests), "Destinations": destinationRows(dests), "Schedules": scheduleRows(scheds)}})
}

func (s *Server) appBackupRun(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	f := r.PostForm
	b, err := s.d.Backups.RunBackup(r.Context(), v.Principal, s.peer(r), backups.RunRequest{
		App: r.PathValue("app"), Destination: f.Get("destination"), Kind: f.Get("kind"),
		Source: strings.TrimSpace(f.Get("source")), ConnectionEnv: strings.TrimSpace(f.Get("connection_env")),
	})
	if err != nil {
		if st, ok := formStatus(err); ok {
			s.appBackupsView(w, r, v, st, backupMessage(err))
			return
		}
		s.fail(w, r, v, err)
		return
	}
	s.redirect(w, r, "/backups/"+b.ID.String(), "Backup queued: it succeeds only once the destination holds the object.")
}

// A backup's page.

// backupDetail is a backup as its page shows it.
type backupDetail struct {
	store.Backup
	DestName   string
	ServerName string
	Size       string
	Checksum   string
	Connection string
}

func (s *Server) backupDetail(r *http.Request, b store.Backup) backupDetail {
	d := backupDetail{Backup: b, DestName: s.d.Backups.DestinationName(r.Context(), b.DestinationID), Size: "—",
		Checksum: hex.EncodeToString(b.ChecksumSHA256), ServerName: "(removed)"}
	if b.SizeBytes != nil {
		d.Size = fmt.Sprintf("%s (%d bytes)", humanBytes(*b.SizeBytes), *b.SizeBytes)
	}
	if b.ServerID != nil {
		// Only the name, for a backup the caller may already read.
		if srv, err := s.d.Store.Server(r.Context(), *b.ServerID); err == nil {
			d.ServerName = srv.Name
		}
	}
	switch {
	case b.Kind == store.BackupDirectory:
		d.Connection = ""
	case b.ConnectionEnv != nil:
		d.Connection = "the URL in the app's " + *b.ConnectionEnv
	default:
		d.Connection = "the local superuser over the unix socket"
	}
	return d
}

func (s *Server) backupShow(w http.ResponseWriter, r *http.Request, v *viewer) {
	s.backupShowView(w, r, v, 0, "")
}

func (s *Server) backupShowView(w http.ResponseWriter, r *http.Request, v *viewer, status int, errMsg string) {
	b, tasks, err := s.d.Backups.Backup(r.Context(), v.Principal, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	s.render(w, r, "backup", view{Title: "Backup " + b.ID.String(), Nav: "backups", User: v, Status: status, Error: errMsg, Form: r.PostForm,
		Data: map[string]any{"B": s.backupDetail(r, b), "Tasks": tasks}})
}

// confirmed: the typed confirmation of a restore or delete is the backup's
// app name or its id.
func confirmed(typed string, b store.Backup) bool {
	typed = strings.TrimSpace(typed)
	return typed != "" && (typed == b.AppName || strings.EqualFold(typed, b.ID.String()))
}

func (s *Server) backupRestore(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	f := r.PostForm
	id := r.PathValue("id")
	b, _, err := s.d.Backups.Backup(r.Context(), v.Principal, id)
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	// A guard against a slip of the hand, not an authorisation: Restore
	// checks the admin scope itself.
	if !confirmed(f.Get("confirm"), b) {
		s.backupShowView(w, r, v, http.StatusBadRequest, fmt.Sprintf(
			"The restore was not started: type the app name %s or the backup id %s to confirm it.", b.AppName, b.ID))
		return
	}
	t, err := s.d.Backups.Restore(r.Context(), v.Principal, s.peer(r), backups.RestoreRequest{
		ID: id, To: strings.TrimSpace(f.Get("to")), Force: f.Get("force") != "", ConnectionEnv: strings.TrimSpace(f.Get("connection_env")),
	})
	if err != nil {
		if st, ok := formStatus(err); ok {
			s.backupShowView(w, r, v, st, backupMessage(err))
			return
		}
		s.fail(w, r, v, err)
		return
	}
	s.redirect(w, r, "/backups/"+b.ID.String()+"/tasks/"+t.ID.String(), "Restore queued on the server that made the backup.")
}

func (s *Server) backupDelete(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	id := r.PathValue("id")
	b, _, err := s.d.Backups.Backup(r.Context(), v.Principal, id)
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	if !confirmed(r.PostFormValue("confirm"), b) {
		s.backupShowView(w, r, v, http.StatusBadRequest, fmt.Sprintf(
			"The backup was not deleted: type the app name %s or the backup id %s to confirm it.", b.AppName, b.ID))
		return
	}
	t, err := s.d.Backups.Delete(r.Context(), v.Principal, s.peer(r), id)
	if err != nil {
		if st, ok := formStatus(err); ok {
			s.backupShowView(w, r, v, st, backupMessage(err))
			return
		}
		s.fail(w, r, v, err)
		return
	}
	if t != nil {
		s.redirect(w, r, "/backups?app="+b.AppName, "Deleting backup "+b.ID.String()+": its object is deleted first, then the row. A failed delete stays on its page with the reason.")
		return
	}
	s.redirect(w, r, "/backups?app="+b.AppName, "Backup "+b.ID.String()+" deleted (it had no stored object).")
}

func (s *Server) backupVerify(w http.ResponseWriter, r *http.Request, v *viewer) {
	id := r.PathValue("id")
	t, err := s.d.Backups.Verify(r.Context(), v.Principal, s.peer(r), id)
	if err != nil {
		if st, ok := formStatus(err); ok && st != http.StatusNotFound {
			r.PostForm = nil
			s.backupShowView(w, r, v, st, backupMessage(err))
			return
		}
		s.fail(w, r, v, err)
		return
	}
	s.redirect(w, r, "/backups/"+t.BackupID.String()+"/tasks/"+t.ID.String(),
		"Verify queued: the server reads the object back, checks its size and SHA-256, decrypts and decompresses it, and checks its content.")
}

func (s *Server) backupCancel(w http.ResponseWriter, r *http.Request, v *viewer) {
	j, err := s.d.Backups.Cancel(r.Context(), v.Principal, s.peer(r), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	s.redirect(w, r, jobPath(j), "Cancel requested: the agent stops the whole process group.")
}

func (s *Server) backupTaskCancel(w http.ResponseWriter, r *http.Request, v *viewer) {
	// The task's own id decides what is canceled; the page it goes back
	// to is the one of its own backup.
	j, err := s.d.Backups.Cancel(r.Context(), v.Principal, s.peer(r), r.PathValue("task"))
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	s.redirect(w, r, jobPath(j), "Cancel requested.")
}

// jobPath is the page of a backup or a task.
func jobPath(j backups.Job) string {
	if j.Backup != nil {
		return "/backups/" + j.Backup.ID.String()
	}
	if j.Task.BackupID != nil {
		return "/backups/" + j.Task.BackupID.String() + "/tasks/" + j.Task.ID.String()
	}
	return "/backups"
}

// downloadWriter sends the response headers with the first byte of the
// dump, so a download refused before any byte (scope, a missing backup, a
// disconnected agent) still gets a proper error page.
type downloadWriter struct {
	w       http.ResponseWriter
	started bool
	header  func()
}

func (d *downloadWriter) Write(p []byte) (int, error) {
	if !d.started {
		d.started = true
		d.header()
	}
	return d.w.Write(p)
}

var dumpExt = map[store.BackupKind]string{store.BackupPostgres: ".pgdump", store.BackupMySQL: ".sql", store.BackupDirectory: ".tar"}

// backupDownload streams a backup's decrypted, decompressed dump (admin).
// The service checks the stored object's size and SHA-256 as it arrives;
// when that fails after bytes were sent, the connection is cut instead of
// ending the response, so the browser reports a failed download rather
// than saving a file that looks complete.
func (s *Server) backupDownload(w http.ResponseWriter, r *http.Request, v *viewer) {
	id := r.PathValue("id")
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	dw := &downloadWriter{w: w, header: func() {
		name := "backup-" + id
		// Download has checked the admin scope by the first byte.
		if b, _, err := s.d.Backups.Backup(r.Context(), v.Principal, id); err == nil {
			name = b.AppName + "-" + b.ID.String() + dumpExt[b.Kind]
		}
		h := w.Header()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Disposition", `attachment; filename="`+safeFilename(name)+`"`)
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
	}}
	err := s.d.Backups.Download(r.Context(), v.Principal, s.peer(r), id, dw)
	if err == nil {
		if !dw.started {
			dw.header() // an empty dump is still a file
		}
		return
	}
	if !dw.started {
		if errors.Is(err, backups.ErrChecksum) {
			// Said plainly: the object at the destination is damaged
			// (and now recorded as failing verification).
			s.errorPage(w, r, http.StatusInternalServerError, "Download failed", err.Error()+
				": nothing was sent. The backup is marked as failing verification.")
			return
		}
		s.fail(w, r, v, err)
		return
	}
	s.d.Log.Warn("backup download broke off after it started", "backup", id, "err", err)
	panic(http.ErrAbortHandler)
}

// safeFilename keeps a Content-Disposition file name to characters that
// need no quoting (app names and ULIDs are such already).
func safeFilename(n string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, n)
}

// Tasks.

func (s *Server) backupTaskShow(w http.ResponseWriter, r *http.Request, v *viewer) {
	ctx := r.Context()
	t, err := s.d.Backups.Task(ctx, v.Principal, r.PathValue("id"), r.PathValue("task"))
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	b, _, err := s.d.Backups.Backup(ctx, v.Principal, t.BackupID.String())
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	s.render(w, r, "backup_task", view{Title: string(t.Kind) + " of backup " + b.ID.String(), Nav: "backups", User: v,
		Data: map[string]any{"T": t, "B": s.backupDetail(r, b)}})
}

// Live logs.

func (s *Server) backupLog(w http.ResponseWriter, r *http.Request, v *viewer) {
	id := r.PathValue("id")
	if _, _, err := s.d.Backups.Backup(r.Context(), v.Principal, id); err != nil {
		http.Error(w, publicMessage(err), statusOf(err))
		return
	}
	s.jobLog(w, r, v, id)
}

func (s *Server) backupTaskLog(w http.ResponseWriter, r *http.Request, v *viewer) {
	t, err := s.d.Backups.Task(r.Context(), v.Principal, r.PathValue("id"), r.PathValue("task"))
	if err != nil {
		http.Error(w, publicMessage(err), statusOf(err))
		return
	}
	s.jobLog(w, r, v, t.ID.String())
}

// jobLog streams a backup's or task's log and state as server-sent events,
// as the deployment page's: "chunk" (text), "status" (JSON) and "end" once
// it finished. A reconnect resumes after the last chunk (Last-Event-ID).
func (s *Server) jobLog(w http.ResponseWriter, r *http.Request, v *viewer, id string) {
	var after int64
	if le := r.Header.Get("Last-Event-ID"); le != "" {
		n, err := strconv.ParseInt(le, 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "bad Last-Event-ID", http.StatusBadRequest)
			return
		}
		after = n
	}
	fl, ok := startEvents(w)
	if !ok {
		return
	}
	err := s.d.Backups.Follow(r.Context(), v.Principal, id, after, true, func(c *backups.Chunk, j *backups.Job) error {
		if c != nil {
			b, _ := json.Marshal(map[string]any{"step": c.Step, "text": string(c.Data)})
			if _, err := fmt.Fprintf(w, "id: %d\nevent: chunk\ndata: %s\n\n", c.Seq, b); err != nil {
				return err
			}
		}
		if j != nil {
			b, _ := json.Marshal(jobState(*j))
			if _, err := fmt.Fprintf(w, "event: status\ndata: %s\n\n", b); err != nil {
				return err
			}
		}
		fl.Flush()
		return nil
	})
	if err == nil {
		_, _ = fmt.Fprint(w, "event: end\ndata: {}\n\n")
		fl.Flush()
	} else if !errors.Is(err, r.Context().Err()) {
		s.d.Log.Warn("backup log stream", "job", id, "err", err)
	}
}

// jobState is what the live page updates: the state, the reason, and for a
// backup what it stored.
func jobState(j backups.Job) map[string]any {
	m := map[string]any{}
	var st store.BackupStatus
	var reason *string
	var finished, cancel *time.Time
	if b := j.Backup; b != nil {
		st, reason, finished, cancel = b.Status, b.FailureReason, b.FinishedAt, b.CancelRequestedAt
		if b.SizeBytes != nil {
			m["size"] = fmt.Sprintf("%s (%d bytes)", humanBytes(*b.SizeBytes), *b.SizeBytes)
		}
		if len(b.ChecksumSHA256) > 0 {
			m["checksum"] = hex.EncodeToString(b.ChecksumSHA256)
		}
		if b.ObjectKey != nil {
			m["object_key"] = *b.ObjectKey
		}
	} else {
		t := j.Task
		st, reason, finished, cancel = t.Status, t.FailureReason, t.FinishedAt, t.CancelRequestedAt
	}
	m["status"] = st
	m["cancel_requested"] = cancel != nil
	if reason != nil {
		m["failure_reason"] = *reason
	}
	if finished != nil {
		m["finished_at"] = finished.UTC().Format(time.RFC3339)
	}
	return m
}

// Schedules (an app's backups page shows them; admins change them: a
// schedule's retention deletes backups).

type scheduleRow struct {
	backups.ScheduleView
	Retention string
}

func scheduleRows(list []backups.ScheduleView) []scheduleRow {
	out := make([]scheduleRow, len(list))
	for i, sc := range list {
		var keep []string
		if sc.RetentionCount != nil {
			keep = append(keep, fmt.Sprintf("newest %d", *sc.RetentionCount))
		}
		if sc.RetentionDays != nil {
			keep = append(keep, fmt.Sprintf("younger than %d days", *sc.RetentionDays))
		}
		out[i] = scheduleRow{ScheduleView: sc, Retention: strings.Join(keep, " and ")}
	}
	return out
}

func (s *Server) scheduleBackupAdd(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	f := r.PostForm
	keep, err1 := atoiOr(f.Get("keep"), 0)
	days, err2 := atoiOr(f.Get("keep_days"), 0)
	if err1 != nil || err2 != nil {
		s.appBackupsView(w, r, v, http.StatusBadRequest, "Keep and Keep days are whole numbers.")
		return
	}
	sc, err := s.d.Backups.AddSchedule(r.Context(), v.Principal, s.peer(r), backups.ScheduleRequest{
		App: r.PathValue("app"), Destination: f.Get("destination"), Kind: f.Get("kind"),
		Source: strings.TrimSpace(f.Get("source")), ConnectionEnv: strings.TrimSpace(f.Get("connection_env")),
		Cron: f.Get("cron"), Timezone: f.Get("timezone"), Keep: keep, KeepDays: days, Verify: f.Get("verify") != "",
	})
	if err != nil {
		if st, ok := formStatus(err); ok {
			s.appBackupsView(w, r, v, st, backupMessage(err))
			return
		}
		s.fail(w, r, v, err)
		return
	}
	s.redirect(w, r, "/apps/"+sc.AppName+"/backups", "Schedule added: the first run is "+runAt(sc.NextRunAt)+".")
}

func runAt(t *time.Time) string {
	if t == nil {
		return "not planned"
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

func (s *Server) scheduleBackupEnabled(enabled bool) handler {
	return func(w http.ResponseWriter, r *http.Request, v *viewer) {
		sc, err := s.d.Backups.SetScheduleEnabled(r.Context(), v.Principal, s.peer(r), r.PathValue("id"), enabled)
		if err != nil {
			s.fail(w, r, v, err)
			return
		}
		msg := "Schedule disabled: no more runs until it is enabled again."
		if enabled {
			msg = "Schedule enabled: the next run is " + runAt(sc.NextRunAt) + " (missed runs are not caught up)."
		}
		s.redirect(w, r, "/apps/"+sc.AppName+"/backups", msg)
	}
}

func (s *Server) scheduleBackupRemove(w http.ResponseWriter, r *http.Request, v *viewer) {
	// The page to go back to is named by the form (?app=), so a caller
	// the service refuses is refused before anything is read.
	to := "/backups"
	id := r.PathValue("id")
	if err := s.d.Backups.RemoveSchedule(r.Context(), v.Principal, s.peer(r), id); err != nil {
		s.fail(w, r, v, err)
		return
	}
	if app := r.URL.Query().Get("app"); validAppName(app) {
		to = "/apps/" + app + "/backups"
	}
	s.redirect(w, r, to, "Schedule removed. Its backups stay; nothing prunes them any more.")
}

// validAppName: the characters of an app name, so a redirect built from
// one stays a path on this site.
func validAppName(n string) bool {
	if n == "" || len(n) > 63 {
		return false
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
