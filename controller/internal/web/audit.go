package web

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/berthhq/berth/controller/internal/store"
)

type eventRow struct {
	store.SecurityEvent
	DetailsText string
}

type activityRow struct {
	store.Activity
	ChangesText string
	// Who is the actor as a person reads it: an agent's server by name,
	// linked to its page, with the raw actor kept for the title.
	Who, WhoLink string
}

func (s *Server) securityEvents(w http.ResponseWriter, r *http.Request, v *viewer) {
	q := r.URL.Query()
	f := store.SecurityEventFilter{Type: strings.TrimSpace(q.Get("type")), Severity: store.Severity(q.Get("severity")), Limit: 50}
	if !s.before(w, r, &f.Before) {
		return
	}
	list, err := s.d.Audit.SecurityEvents(r.Context(), v.Principal, f)
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	rows := make([]eventRow, len(list))
	for i, e := range list {
		rows[i] = eventRow{SecurityEvent: e, DetailsText: compactJSON(e.Details)}
	}
	s.render(w, r, "security", view{Title: "Security events", Nav: "security", User: v, Data: map[string]any{
		"Events": rows, "Filter": f, "Filtered": f.Type != "" || f.Severity != "", "Next": nextPage(r, len(list), f.Limit, idOf(list, func(e store.SecurityEvent) store.ID { return e.ID })),
	}})
}

func (s *Server) activityLog(w http.ResponseWriter, r *http.Request, v *viewer) {
	q := r.URL.Query()
	f := store.ActivityFilter{Action: strings.TrimSpace(q.Get("action")), SubjectType: strings.TrimSpace(q.Get("subject_type")), Limit: 50}
	if !s.before(w, r, &f.Before) {
		return
	}
	list, err := s.d.Audit.Activity(r.Context(), v.Principal, f)
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	rows := make([]activityRow, len(list))
	names := map[string]string{} // agent server id -> name ("" when gone)
	for i, a := range list {
		rows[i] = activityRow{Activity: a, ChangesText: compactJSON(a.Changes), Who: a.Actor}
		id, ok := strings.CutPrefix(a.Actor, "agent:")
		if !ok {
			continue
		}
		name, seen := names[id]
		if !seen {
			if srv, err := s.d.Fleet.Get(r.Context(), v.Principal, id); err == nil {
				name = srv.Name
			} else if !errors.Is(err, store.ErrNotFound) {
				s.fail(w, r, v, err)
				return
			}
			names[id] = name
		}
		if name != "" {
			rows[i].Who, rows[i].WhoLink = name, "/servers/"+name
		} else {
			rows[i].Who = "removed server"
		}
	}
	s.render(w, r, "activity", view{Title: "Activity", Nav: "activity", User: v, Data: map[string]any{
		"Entries": rows, "Filter": f, "Filtered": f.Action != "" || f.SubjectType != "", "Next": nextPage(r, len(list), f.Limit, idOf(list, func(a store.Activity) store.ID { return a.ID })),
	}})
}

// before reads the keyset cursor of a paged list.
func (s *Server) before(w http.ResponseWriter, r *http.Request, dst **store.ID) bool {
	b := r.URL.Query().Get("before")
	if b == "" {
		return true
	}
	id, err := store.ParseID(b)
	if err != nil {
		s.errorPage(w, r, http.StatusBadRequest, "Bad request", "before must be an id")
		return false
	}
	*dst = &id
	return true
}

func idOf[T any](list []T, id func(T) store.ID) *store.ID {
	if len(list) == 0 {
		return nil
	}
	v := id(list[len(list)-1])
	return &v
}

// nextPage links to the following page when this one is full.
func nextPage(r *http.Request, n, limit int, last *store.ID) string {
	if n < limit || last == nil {
		return ""
	}
	q := url.Values{}
	for k, v := range r.URL.Query() {
		if k != "before" {
			q[k] = v
		}
	}
	q.Set("before", last.String())
	return r.URL.Path + "?" + q.Encode()
}

// compactJSON renders details for a table cell, keys sorted.
func compactJSON(m map[string]any) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(" ")
		}
		v, _ := json.Marshal(m[k])
		b.WriteString(k + "=" + string(v))
	}
	return b.String()
}
