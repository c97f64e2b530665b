package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/deploys"
	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// Bounds of what the process and schedule forms accept before the service
// sees them; the service checks its own rules too. Each says what is
// wrong, and the page keeps everything typed.
const (
	maxCommandLen = 4096
	maxLogsSince  = 31 * 24 * time.Hour // as deploys.StreamLogs
)

// formValue fills a field of the named form from the failed post that
// re-rendered the page, so a mistake loses nothing typed; other forms on
// the page stay blank.
func formValue(f url.Values, form, field string) string {
	if f == nil || f.Get("form") != form {
		return ""
	}
	return f.Get(field)
}

// editProcessForm is the process form filled with a declared process's
// settings and "replace" ticked, or nil when there is no such process.
func editProcessForm(procs []deploys.ProcessView, name string) url.Values {
	for _, p := range procs {
		if name == "" || p.Name != name {
			continue
		}
		f := url.Values{"form": {"process"}, "name": {p.Name}, "command": {p.Command}, "instances": {strconv.Itoa(int(p.DesiredInstances))},
			"health_path": {p.HealthPath}, "stop_signal": {p.StopSignal}, "restart": {p.Restart}, "replace": {"1"}}
		if p.Port {
			f.Set("port", "1")
		}
		if p.StopGrace > 0 {
			f.Set("stop_grace", p.StopGrace.String())
		}
		if p.MemoryMax > 0 {
			f.Set("memory_max", formatSize(p.MemoryMax))
		}
		if p.CPUMaxPercent > 0 {
			f.Set("cpu_max", strconv.Itoa(int(p.CPUMaxPercent))+"%")
		}
		return f
	}
	return nil
}

// formatSize writes bytes the way parseSize reads them, exactly.
func formatSize(n uint64) string {
	for _, u := range []struct {
		suffix string
		mul    uint64
	}{{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if n%u.mul == 0 {
			return strconv.FormatUint(n/u.mul, 10) + u.suffix
		}
	}
	return strconv.FormatUint(n, 10)
}

// parseSize reads 512M, 1G, 1048576 (bytes), with K/M/G/T as powers of
// 1024 like systemd's MemoryMax.
func parseSize(v string) (uint64, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, nil
	}
	mul := uint64(1)
	switch strings.ToUpper(v[len(v)-1:]) {
	case "K":
		mul = 1 << 10
	case "M":
		mul = 1 << 20
	case "G":
		mul = 1 << 30
	case "T":
		mul = 1 << 40
	}
	if mul != 1 {
		v = v[:len(v)-1]
	}
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
	if err != nil || n == 0 || n > (1<<62)/mul {
		return 0, fmt.Errorf("memory limit %q: a whole number with K, M, G or T (512M), or empty for none", v)
	}
	return n * mul, nil
}

// parsePercent reads 100% or 100 (percent of one CPU).
func parsePercent(v string) (uint32, error) {
	v = strings.TrimSuffix(strings.TrimSpace(v), "%")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
	if err != nil || n == 0 || n > 100*1024 {
		return 0, fmt.Errorf("CPU limit %q: a whole percentage of one CPU, such as 50%% or 200%%, or empty for none", v)
	}
	return uint32(n), nil
}

// processParams reads the process form: the fields of
// `berth app process add`.
func processParams(app string, f url.Values) (deploys.ProcessParams, string) {
	p := deploys.ProcessParams{App: app, Name: strings.TrimSpace(f.Get("name")), Command: strings.TrimSpace(strings.ReplaceAll(f.Get("command"), "\r\n", "\n")),
		Port: f.Get("port") != "", HealthPath: strings.TrimSpace(f.Get("health_path")), StopSignal: strings.TrimSpace(f.Get("stop_signal")),
		Restart: strings.TrimSpace(f.Get("restart")), Replace: f.Get("replace") != ""}
	switch {
	case p.Name == "":
		return p, "Name the process (a lowercase slug such as web or worker)."
	case len(p.Name) > 32:
		return p, "A process name is at most 32 characters."
	case p.Command == "":
		return p, "Give the command the process runs."
	case len(p.Command) > maxCommandLen || !utf8.ValidString(p.Command):
		return p, fmt.Sprintf("The command is at most %d bytes of text.", maxCommandLen)
	case len(p.HealthPath) > 1024:
		return p, "The health path is at most 1024 characters."
	}
	if v := strings.TrimSpace(f.Get("instances")); v != "" {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n < 1 || n > 32 {
			return p, "Instances is a whole number from 1 to 32."
		}
		p.Instances = uint32(n)
	}
	if v := strings.TrimSpace(f.Get("stop_grace")); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > time.Hour {
			return p, "Stop grace is a duration such as 30s or 2m (at most 1h)."
		}
		p.StopGrace = d
	}
	var err error
	if p.MemoryMax, err = parseSize(f.Get("memory_max")); err != nil {
		return p, "The " + err.Error() + "."
	}
	if p.CPUMaxPercent, err = parsePercent(f.Get("cpu_max")); err != nil {
		return p, "The " + err.Error() + "."
	}
	return p, ""
}

// appFormError re-renders the app page with the message and the form as
// typed (400), or the service's refusal (its status) in the same way.
func (s *Server) appFormError(w http.ResponseWriter, r *http.Request, v *viewer, err error) {
	if st := statusOf(err); st == http.StatusBadRequest || st == http.StatusConflict || st == http.StatusNotFound {
		s.appView(w, r, v, st, publicMessage(err), "")
		return
	}
	s.fail(w, r, v, err)
}

// mayDeploy refuses a caller without the deploy scope before a process or
// schedule form is read: such a caller gets the refusal, not the form's
// validation. The service checks the same principal again.
func (s *Server) mayDeploy(w http.ResponseWriter, r *http.Request, v *viewer) bool {
	if err := auth.Require(v.Principal, store.ScopeDeploy); err != nil {
		s.fail(w, r, v, err)
		return false
	}
	return true
}

func (s *Server) processAdd(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.mayDeploy(w, r, v) || !s.parseForm(w, r) {
		return
	}
	app := r.PathValue("app")
	p, msg := processParams(app, r.PostForm)
	if msg != "" {
		s.appView(w, r, v, http.StatusBadRequest, msg, "")
		return
	}
	pv, job, err := s.d.Deploys.AddProcess(r.Context(), v.Principal, s.peer(r), p)
	if err != nil {
		s.appFormError(w, r, v, err)
		return
	}
	verb := "added"
	if p.Replace {
		verb = "replaced"
	}
	if job != nil {
		s.redirect(w, r, "/deployments/"+job.ID.String(), fmt.Sprintf("Process %s %s; this job applies it on the server.", pv.Name, verb))
		return
	}
	s.redirect(w, r, "/apps/"+app+"#processes", fmt.Sprintf("Process %s %s. It starts with the next deploy.", pv.Name, verb))
}

func (s *Server) processRemove(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.mayDeploy(w, r, v) {
		return
	}
	app, name := r.PathValue("app"), r.PathValue("name")
	job, err := s.d.Deploys.RemoveProcess(r.Context(), v.Principal, s.peer(r), app, name)
	if err != nil {
		s.appFormError(w, r, v, err)
		return
	}
	if job != nil {
		s.redirect(w, r, "/deployments/"+job.ID.String(), "Process "+name+" removed; this job stops it on the server.")
		return
	}
	s.redirect(w, r, "/apps/"+app+"#processes", "Process "+name+" removed.")
}

// processControl starts, stops or restarts one process (name) or all.
func (s *Server) processControl(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.mayDeploy(w, r, v) || !s.parseForm(w, r) {
		return
	}
	action := r.PostFormValue("action")
	if action != "start" && action != "stop" && action != "restart" {
		s.appView(w, r, v, http.StatusBadRequest, "The action is start, stop or restart.", "")
		return
	}
	var names []string
	if n := strings.TrimSpace(r.PostFormValue("name")); n != "" {
		names = []string{n}
	}
	job, err := s.d.Deploys.ControlProcesses(r.Context(), v.Principal, s.peer(r), r.PathValue("app"), action, names)
	if err != nil {
		s.appFormError(w, r, v, err)
		return
	}
	what := "all processes"
	if len(names) == 1 {
		what = names[0]
	}
	s.redirect(w, r, "/deployments/"+job.ID.String(), fmt.Sprintf("%s of %s queued.", strings.ToUpper(action[:1])+action[1:], what))
}

func (s *Server) scheduleAdd(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.mayDeploy(w, r, v) || !s.parseForm(w, r) {
		return
	}
	f := r.PostForm
	app := r.PathValue("app")
	p := deploys.ScheduleParams{App: app, Name: strings.TrimSpace(f.Get("name")), Cron: strings.TrimSpace(f.Get("cron")),
		Command: strings.TrimSpace(strings.ReplaceAll(f.Get("command"), "\r\n", "\n")), Timezone: strings.TrimSpace(f.Get("timezone")), Replace: f.Get("replace") != ""}
	msg := ""
	switch {
	case p.Name == "":
		msg = "Name the schedule (a lowercase slug such as nightly-report)."
	case len(p.Name) > 63:
		msg = "A schedule name is at most 63 characters."
	case p.Cron == "":
		msg = "Give the schedule a cron expression, such as */5 * * * * or @daily."
	case len(p.Cron) > 128:
		msg = "The cron expression is at most 128 characters."
	case p.Command == "":
		msg = "Give the command the schedule runs."
	case len(p.Command) > maxCommandLen || !utf8.ValidString(p.Command):
		msg = fmt.Sprintf("The command is at most %d bytes of text.", maxCommandLen)
	case len(p.Timezone) > 64:
		msg = "The time zone is an IANA name such as Europe/Berlin."
	}
	if msg != "" {
		s.appView(w, r, v, http.StatusBadRequest, msg, "")
		return
	}
	sv, err := s.d.Deploys.AddSchedule(r.Context(), v.Principal, s.peer(r), p)
	if err != nil {
		s.appFormError(w, r, v, err)
		return
	}
	s.redirect(w, r, "/apps/"+app+"#schedules", fmt.Sprintf("Schedule %s saved; next run %s.", sv.Name, sv.NextRunAt.UTC().Format("2006-01-02 15:04 UTC")))
}

func (s *Server) scheduleRemove(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.mayDeploy(w, r, v) {
		return
	}
	app, name := r.PathValue("app"), r.PathValue("name")
	if err := s.d.Deploys.RemoveSchedule(r.Context(), v.Principal, s.peer(r), app, name); err != nil {
		s.appFormError(w, r, v, err)
		return
	}
	s.redirect(w, r, "/apps/"+app+"#schedules", "Schedule "+name+" removed; its past runs stay listed under Deployments.")
}

func (s *Server) scheduleRuns(w http.ResponseWriter, r *http.Request, v *viewer) {
	app, name := r.PathValue("app"), r.PathValue("name")
	av, err := s.d.Deploys.GetApp(r.Context(), v.Principal, app)
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	runs, err := s.d.Deploys.ScheduleRuns(r.Context(), v.Principal, app, name, 100)
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	var sched *deploys.ScheduleView
	for i := range av.Schedules {
		if av.Schedules[i].Name == name {
			sched = &av.Schedules[i]
		}
	}
	s.render(w, r, "schedule_runs", view{Title: "Runs of " + name, Nav: "apps", User: v, Data: map[string]any{
		"App": av, "Name": name, "Schedule": sched, "Runs": runs,
	}})
}

// appLogs is the live log view; the lines come from appLogStream.
func (s *Server) appLogs(w http.ResponseWriter, r *http.Request, v *viewer) {
	av, err := s.d.Deploys.GetApp(r.Context(), v.Principal, r.PathValue("app"))
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	q := r.URL.Query()
	since := q.Get("since")
	if since == "" {
		since = "10m"
	}
	follow := q.Get("follow") != "0"
	proc := q.Get("process")
	errMsg, status := "", 0
	if _, msg := logsParams(av.Name, q); msg != "" {
		errMsg, status = msg, http.StatusBadRequest
	}
	stream := url.Values{"since": {since}}
	if proc != "" {
		stream.Set("process", proc)
	}
	if follow {
		stream.Set("follow", "1")
	}
	s.render(w, r, "app_logs", view{Title: "Logs of " + av.Name, Nav: "apps", User: v, Status: status, Error: errMsg, Data: map[string]any{
		"App": av, "Process": proc, "Since": since, "Follow": follow, "Stream": "/apps/" + av.Name + "/logs/stream?" + stream.Encode(),
		"Valid": errMsg == "",
	}})
}

// logsParams reads the log view's query: process (a name, or empty for
// all), since (a duration, at most 7 days) and follow.
func logsParams(app string, q url.Values) (deploys.LogsParams, string) {
	p := deploys.LogsParams{App: app, Follow: q.Get("follow") == "1", Since: 10 * time.Minute}
	if v := strings.TrimSpace(q.Get("process")); v != "" {
		if len(v) > 32 {
			return p, "A process name is at most 32 characters."
		}
		p.Processes = []string{v}
	}
	if v := strings.TrimSpace(q.Get("since")); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > maxLogsSince {
			return p, "Since is a duration such as 10m or 2h, at most 744h (31 days)."
		}
		p.Since = d
	}
	return p, ""
}

// logLine is one line as the page gets it.
type logLine struct {
	Time     string `json:"time,omitempty"`
	Process  string `json:"process"`
	Instance uint32 `json:"instance"`
	Stream   string `json:"stream"`
	Text     string `json:"text"`
}

// appLogStream streams an app's process logs as server-sent events:
// "lines" (a JSON array), "failure" (why it stopped) and "end". The
// agent's stream is held only while the page listens: the request's
// context ends when the page goes, and StreamLogs cancels on the agent.
func (s *Server) appLogStream(w http.ResponseWriter, r *http.Request, v *viewer) {
	p, msg := logsParams(r.PathValue("app"), r.URL.Query())
	if msg != "" {
		http.Error(w, msg, http.StatusBadRequest)
		return
	}
	if _, err := s.d.Deploys.GetApp(r.Context(), v.Principal, p.App); err != nil {
		http.Error(w, publicMessage(err), statusOf(err))
		return
	}
	fl, ok := startEvents(w)
	if !ok {
		return
	}
	_, _ = fmt.Fprint(w, "retry: 5000\n\n")
	fl.Flush()
	err := s.d.Deploys.StreamLogs(r.Context(), v.Principal, p, func(lines []*agentv1.LogLine) error {
		out := make([]logLine, len(lines))
		for i, l := range lines {
			out[i] = logLine{Process: l.GetProcess(), Instance: l.GetInstance(), Stream: l.GetStream(), Text: l.GetText()}
			if l.GetTime() != nil {
				out[i].Time = l.GetTime().AsTime().UTC().Format(time.RFC3339Nano)
			}
		}
		b, err := json.Marshal(out)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "event: lines\ndata: %s\n\n", b); err != nil {
			return err
		}
		fl.Flush()
		return nil
	})
	if r.Context().Err() != nil {
		return
	}
	if err != nil {
		if statusOf(err) == http.StatusInternalServerError {
			s.d.Log.Error("app logs stream", "app", p.App, "err", err)
		}
		b, _ := json.Marshal(map[string]string{"message": publicMessage(err)})
		_, _ = fmt.Fprintf(w, "event: failure\ndata: %s\n\n", b)
	}
	_, _ = fmt.Fprint(w, "event: end\ndata: {}\n\n")
	fl.Flush()
}

// processCounts is the summary of a process's instances by state.
func processCounts(p deploys.ProcessView) string {
	if len(p.Instances) == 0 {
		return ""
	}
	n := map[string]int{}
	for _, in := range p.Instances {
		n[in.State]++
	}
	var parts []string
	for _, st := range []string{"running", "starting", "restarting", "failed", "stopped"} {
		if n[st] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n[st], st))
		}
	}
	return strings.Join(parts, ", ")
}

// uptime is how long an instance has run, or "" when it is not running.
func uptime(started *time.Time) string {
	if started == nil {
		return ""
	}
	d := time.Since(*started).Round(time.Second)
	switch {
	case d < 0:
		return "0s"
	case d < time.Hour:
		return d.String()
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}

// jobTitle names what a job of the deployments table does.
func jobTitle(d store.Deployment) string {
	switch d.Kind {
	case store.JobDelete:
		return "app delete"
	case store.JobProcess:
		if d.ProcessAction != nil && *d.ProcessAction != "apply" {
			return "process " + *d.ProcessAction
		}
		return "process change"
	case store.JobSchedule:
		return "scheduled run"
	}
	if d.TriggeredBy == store.TriggerRollback {
		return "rollback"
	}
	return "deployment"
}

// processStates is the app page's live view of its processes (polled by
// processes.js): what the agent last reported, per process and instance.
func (s *Server) processStates(w http.ResponseWriter, r *http.Request, v *viewer) {
	procs, _, err := s.d.Deploys.ListProcesses(r.Context(), v.Principal, r.PathValue("app"))
	if err != nil {
		jsonError(w, statusOf(err), publicMessage(err))
		return
	}
	type inst struct {
		Index    uint32 `json:"index"`
		State    string `json:"state"`
		PID      string `json:"pid"`
		Port     string `json:"port"`
		Restarts uint32 `json:"restarts"`
		Uptime   string `json:"uptime"`
		Last     string `json:"last"`
	}
	type proc struct {
		Name      string `json:"name"`
		State     string `json:"state"`
		Summary   string `json:"summary"`
		Instances []inst `json:"instances"`
	}
	out := make([]proc, 0, len(procs))
	for _, p := range procs {
		pp := proc{Name: p.Name, State: p.State, Summary: processCounts(p), Instances: []inst{}}
		for _, in := range p.Instances {
			i := inst{Index: in.Index, State: in.State, Restarts: in.Restarts, Uptime: uptime(in.StartedAt), Last: in.LastError}
			if in.PID != 0 {
				i.PID = strconv.Itoa(int(in.PID))
			}
			if in.Port != 0 {
				i.Port = strconv.Itoa(int(in.Port))
			}
			if i.Last == "" && in.LastExitCode != 0 {
				i.Last = fmt.Sprintf("exit %d", in.LastExitCode)
			}
			pp.Instances = append(pp.Instances, i)
		}
		out = append(out, pp)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]any{"processes": out})
}
