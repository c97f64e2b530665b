package web

import (
	"net/http"
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

func (s *Server) alertCreate(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	f := r.PostForm
	spec := alert.Spec{Name: f.Get("name"), Metric: f.Get("metric"), Mount: strings.TrimSpace(f.Get("mount")),
		Level: f.Get("level")}
	switch f.Get("scope") {
	case "server":
		spec.Server = strings.TrimSpace(f.Get("server"))
	case "label":
		spec.Label = strings.TrimSpace(f.Get("label"))
	}
	bad := func(msg string) { s.alertsView(w, r, v, http.StatusBadRequest, msg) }
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
		bad("Above must be a number.")
		return
	}
	if spec.ResolveBelow, ok = num("resolve_below"); !ok {
		bad("Resolve below must be a number.")
		return
	}
	if raw := strings.TrimSpace(f.Get("for")); raw != "" {
		d, err := time.ParseDuration(raw)
		if err != nil {
			bad("For must be a duration such as 30s, 5m or 1h.")
			return
		}
		spec.For = &d
	}
	rule, err := s.d.Alerts.AddAs(r.Context(), v.Principal, alert.Peer(s.peer(r)), spec)
	if err != nil {
		if st := statusOf(err); st == http.StatusBadRequest || st == http.StatusConflict || st == http.StatusNotFound {
			s.alertsView(w, r, v, st, publicMessage(err))
			return
		}
		s.fail(w, r, v, err)
		return
	}
	s.redirect(w, r, "/alerts", "Alert "+rule.Name+" added.")
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
