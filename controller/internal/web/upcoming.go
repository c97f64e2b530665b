package web

import "net/http"

// section is a product area whose own service is not part of this build
// yet. Its navigation entry stays, so the layout does not shift as
// capabilities land, and the page says plainly what is there today.
type section struct {
	Key, Path, Title, Empty string
}

var upcoming = []section{}

func (s *Server) upcomingPage(sec section) handler {
	return func(w http.ResponseWriter, r *http.Request, v *viewer) {
		s.render(w, r, "upcoming", view{Title: sec.Title, Nav: sec.Key, User: v, Data: map[string]any{"Empty": sec.Empty}})
	}
}
