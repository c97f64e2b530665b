package web

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/berthhq/berth/controller/internal/alert"
	"github.com/berthhq/berth/controller/internal/store"
)

// The Alerts page: threshold rules with where each fires now, and (for
// admins) the forms to add and remove them. Everything goes through
// alert.Service, the same authorisation, validation and audit as the
// gRPC API.

type alertRow struct {
	alert.Rule
	Condition string
	Scope     string
}

func alertCondition(r alert.Rule) string {
	if r.Above == nil {
		return "offline for " + r.For.String()
	}
	return r.Metric + " > " + alert.FormatValue(r.Metric, *r.Above) + " for " + r.For.String() +
		" (resolves below " + alert.FormatValue(r.Metric, *r.ResolveBelow) + ")"
}

func alertScope(r alert.Rule) string {
	s := "every server"
	switch {
	case r.ServerName != "":
		s = "server " + r.ServerName
	case r.LabelKey != "":
		s = "servers labelled " + r.LabelKey + "=" + r.LabelValue
	}
	if r.Mount != "" {
		s += ", mount " + r.Mount
	} else if r.Metric == alert.MetricDisk || r.Metric == alert.MetricInodes {
		s += ", every mount"
	}
	return s
}

func (s *Server) alertsView(w http.ResponseWriter, r *http.Request, v *viewer, status int, errMsg string) {
	rules, err := s.d.Alerts.ListAs(r.Context(), v.Principal)
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	rows := make([]alertRow, len(rules))
	firing := 0
	for i, rule := range rules {
		rows[i] = alertRow{Rule: rule, Condition: alertCondition(rule), Scope: alertScope(rule)}
		firing += len(rule.Firing)
	}
	s.render(w, r, "alerts", view{Title: "Alerts", Nav: "alerts", User: v, Status: status, Error: errMsg, Form: r.PostForm,
		Data: map[string]any{"Rules": rows, "Firing": firing, "Metrics": alert.Metrics}})
}

func (s *Server) alertList(w http.ResponseWriter, r *http.Request, v *viewer) {
	s.alertsView(w, r, v, 0, "")
}

// alertSpec reads the add and edit forms into a spec for the service,
// which validates it; bad is set (and the spec unusable) when a field is
// not even a number or a duration.
func alertSpec(f url.Values) (spec alert.Spec, bad string) {
	spec = alert.Spec{Name: f.Get("name"), Metric: f.Get("metric"), Mount: strings.TrimSpace(f.Get("mount")), Level: f.Get("level")}
	switch f.Get("scope") {
	case "server":
		spec.Server = strings.TrimSpace(f.Get("server"))
	case "label":
		spec.Label = strings.TrimSpace(f.Get("label"))
	}
	num := func(field string) (*float64, bool) {
		raw := strings.TrimSpace(f.Get(field))
		if raw == "" {
			return nil, true
		}
		x, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return nil, false
		}
		return &x, true
	}
	var ok bool
	if spec.Above, ok = num("above"); !ok {
		return spec, "Above must be a number."
	}
	if spec.ResolveBelow, ok = num("resolve_below"); !ok {
		return spec, "Resolve below must be a number."
	}
	if raw := strings.TrimSpace(f.Get("for")); raw != "" {
		d, err := time.ParseDuration(raw)
		if err != nil {
			return spec, "For must be a duration such as 30s, 5m or 1h."
		}
		spec.For = &d
	}
	return spec, ""
}

// alertRefusal is the page's message for a refusal the form can fix, and
// its status; ok is false for anything else (the error page's business).
func alertRefusal(err error, spec alert.Spec) (msg string, st int, ok bool) {
	st = statusOf(err)
	switch st {
	case http.StatusBadRequest, http.StatusConflict:
		return publicMessage(err), st, true
	case http.StatusNotFound:
		if spec.Server != "" {
			// The only lookup a valid spec makes: say which.
			return "There is no server " + strconv.Quote(cutRunes(spec.Server, 63)) + ".", st, true
		}
		return publicMessage(err), st, true
	}
	return "", st, false
}

func cutRunes(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n])
	}
	return s
}

func (s *Server) alertCreate(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	spec, bad := alertSpec(r.PostForm)
	if bad != "" {
		s.alertsView(w, r, v, http.StatusBadRequest, bad)
		return
	}
	rule, err := s.d.Alerts.AddAs(r.Context(), v.Principal, alert.Peer(s.peer(r)), spec)
	if err != nil {
		if msg, st, ok := alertRefusal(err, spec); ok {
			s.alertsView(w, r, v, st, msg)
			return
		}
		s.fail(w, r, v, err)
		return
	}
	s.redirect(w, r, "/alerts", "Alert "+rule.Name+" added.")
}

// The edit page changes a rule through the same service call as `berth
// alert add NAME ... --replace` (AddAs with Replace): the admin scope,
// the same validation, and an alert_rule.replaced audit entry; what the
// old definition had firing is resolved. The name is the rule's identity
// and is not edited.

// alertForm is a rule as the form's fields, for the edit page's first
// showing.
func alertForm(r alert.Rule) url.Values {
	f := url.Values{"name": {r.Name}, "metric": {r.Metric}, "for": {shortDuration(r.For)}, "mount": {r.Mount}, "level": {r.Level}, "scope": {"all"}}
	if r.Above != nil {
		f.Set("above", strconv.FormatFloat(*r.Above, 'f', -1, 64))
	}
	if r.ResolveBelow != nil {
		f.Set("resolve_below", strconv.FormatFloat(*r.ResolveBelow, 'f', -1, 64))
	}
	switch {
	case r.ServerID != nil:
		f.Set("scope", "server")
		f.Set("server", r.ServerName)
	case r.LabelKey != "":
		f.Set("scope", "label")
		f.Set("label", r.LabelKey+"="+r.LabelValue)
	}
	return f
}

// shortDuration writes 5m rather than 5m0s, 1h rather than 1h0m0s.
func shortDuration(d time.Duration) string {
	out := d.String()
	if strings.HasSuffix(out, "m0s") {
		out = strings.TrimSuffix(out, "0s")
	}
	if strings.HasSuffix(out, "h0m") {
		out = strings.TrimSuffix(out, "0m")
	}
	return out
}

// alertEditView renders the edit form of the rule named in the path: with
// the rule's definition, or with what was typed (r.PostForm) after a
// refusal.
func (s *Server) alertEditView(w http.ResponseWriter, r *http.Request, v *viewer, status int, errMsg string) {
	rule, err := s.d.Alerts.GetAs(r.Context(), v.Principal, r.PathValue("name"))
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	form := r.PostForm
	if form == nil {
		form = alertForm(rule)
	}
	s.render(w, r, "alert_edit", view{Title: "Edit alert " + rule.Name, Nav: "alerts", User: v, Status: status, Error: errMsg, Form: form,
		Data: map[string]any{"Rule": alertRow{Rule: rule, Condition: alertCondition(rule), Scope: alertScope(rule)}, "Metrics": alert.Metrics}})
}

func (s *Server) alertEdit(w http.ResponseWriter, r *http.Request, v *viewer) {
	r.PostForm = nil
	s.alertEditView(w, r, v, 0, "")
}

func (s *Server) alertUpdate(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	name := r.PathValue("name")
	// Replace adds a rule that is not there; an edit must not bring back
	// a rule removed since its form was opened.
	if _, err := s.d.Alerts.GetAs(r.Context(), v.Principal, name); err != nil {
		s.fail(w, r, v, err)
		return
	}
	r.PostForm.Set("name", name)
	spec, bad := alertSpec(r.PostForm)
	if bad != "" {
		s.alertEditView(w, r, v, http.StatusBadRequest, bad)
		return
	}
	spec.Replace = true
	rule, err := s.d.Alerts.AddAs(r.Context(), v.Principal, alert.Peer(s.peer(r)), spec)
	if err != nil {
		if msg, st, ok := alertRefusal(err, spec); ok {
			s.alertEditView(w, r, v, st, msg)
			return
		}
		s.fail(w, r, v, err)
		return
	}
	s.redirect(w, r, "/alerts", "Alert "+rule.Name+" changed.")
}

func (s *Server) alertRemove(w http.ResponseWriter, r *http.Request, v *viewer) {
	name := r.PathValue("name")
	if err := s.d.Alerts.RemoveAs(r.Context(), v.Principal, alert.Peer(s.peer(r)), name); err != nil {
		s.fail(w, r, v, err)
		return
	}
	s.redirect(w, r, "/alerts", "Alert "+name+" removed.")
}

// serverAlert is one rule firing on a server's page.
type serverAlert struct {
	RuleName    string
	Level       string
	What        string
	FiringSince time.Time
}

func (s *Server) serverAlerts(r *http.Request, v *viewer, id store.ID) ([]serverAlert, error) {
	list, err := s.d.Alerts.FiringOnServerAs(r.Context(), v.Principal, id)
	if err != nil {
		return nil, err
	}
	out := make([]serverAlert, len(list))
	for i, a := range list {
		what := a.Metric
		switch {
		case a.Metric == alert.MetricOffline:
			what = "offline"
		case a.Mount != "":
			what += " on " + a.Mount + " at " + alert.FormatValue(a.Metric, a.Value)
		default:
			what += " at " + alert.FormatValue(a.Metric, a.Value)
		}
		out[i] = serverAlert{RuleName: a.RuleName, Level: a.Level, What: what, FiringSince: a.FiringSince}
	}
	return out, nil
}
