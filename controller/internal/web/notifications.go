package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
)

// The inbox: every page's bell shows the signed-in person's unread count,
// kept live by /notifications/stream, and /notifications lists their
// notifications. The inbox is always the caller's own: every call passes
// the session's user id, and the store matches notifications by user, so
// another person's notification id is "not found", never theirs to read.

// inboxPageSize bounds the page; older notifications are in the CLI/API.
const inboxPageSize = 100

// maxBellStreams is the default bound (Config.BellStreams) on the open
// unread-count streams of the whole controller: each polls the database on its own, so the number of open
// tabs must not decide the database's load.
const maxBellStreams = 256

type inboxItem struct {
	store.Notification
	Unread bool
}

func (s *Server) notificationList(w http.ResponseWriter, r *http.Request, v *viewer) {
	unreadOnly := r.URL.Query().Get("unread") == "1"
	list, err := s.d.Notify.InboxAs(r.Context(), v.Principal, unreadOnly, inboxPageSize)
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	// Unread first, each group newest first (the store's order).
	items := make([]inboxItem, 0, len(list))
	for _, n := range list {
		if n.ReadAt == nil {
			items = append(items, inboxItem{n, true})
		}
	}
	unread := len(items)
	for _, n := range list {
		if n.ReadAt != nil {
			items = append(items, inboxItem{n, false})
		}
	}
	s.render(w, r, "notifications", view{Title: "Notifications", Nav: "notifications", User: v,
		Data: map[string]any{"Items": items, "UnreadShown": unread, "UnreadOnly": unreadOnly}})
}

func (s *Server) notificationRead(w http.ResponseWriter, r *http.Request, v *viewer) {
	id, err := store.ParseID(r.PathValue("id"))
	if err != nil {
		s.errorPage(w, r, http.StatusBadRequest, "Bad request", "not a notification id")
		return
	}
	if _, err := s.d.Notify.MarkReadAs(r.Context(), v.Principal, id.String()); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			// Unknown and someone else's look the same: ids are not
			// probed for existence.
			s.errorPage(w, r, http.StatusNotFound, "Not found", "No such notification in your inbox.")
			return
		}
		s.fail(w, r, v, err)
		return
	}
	s.redirect(w, r, "/notifications", "Notification marked read.")
}

func (s *Server) notificationReadAll(w http.ResponseWriter, r *http.Request, v *viewer) {
	n, err := s.d.Notify.MarkReadAs(r.Context(), v.Principal, "all")
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	s.redirect(w, r, "/notifications", fmt.Sprintf("%d marked read.", n))
}

// unreadCount is the bell's number for a page; a failure shows no number
// rather than failing the page the person asked for.
func (s *Server) unreadCount(r *http.Request, v *viewer) int64 {
	if v == nil || s.d.Notify == nil {
		return 0
	}
	n, err := s.d.Notify.UnreadCountAs(r.Context(), v.Principal)
	if err != nil {
		s.d.Log.Warn("unread count", "err", err)
		return 0
	}
	return n
}

// bellStream sends the caller's unread count whenever it changes. Inbox
// rows are written by whichever controller published the event, so the
// stream polls the database (one small indexed count per connection per
// tick) rather than listening to this process.
func (s *Server) bellStream(w http.ResponseWriter, r *http.Request, v *viewer) {
	select {
	case s.bellSlots <- struct{}{}:
		defer func() { <-s.bellSlots }()
	default:
		w.Header().Set("Retry-After", "30")
		s.errorPage(w, r, http.StatusServiceUnavailable, "Busy", "Too many live notification streams are open. Try again shortly.")
		return
	}
	fl, ok := startEvents(w)
	if !ok {
		return
	}
	_, _ = fmt.Fprint(w, "retry: 3000\n\n")
	fl.Flush()

	tick := time.NewTicker(s.cfg.EventsPoll)
	defer tick.Stop()
	keep := time.NewTicker(25 * time.Second)
	defer keep.Stop()
	recheck := time.NewTicker(time.Minute)
	defer recheck.Stop()
	last := int64(-1)
	send := func() bool {
		n, err := s.d.Notify.UnreadCountAs(r.Context(), v.Principal)
		if err != nil {
			if r.Context().Err() == nil {
				s.d.Log.Warn("unread count stream", "err", err)
			}
			return r.Context().Err() == nil
		}
		if n == last {
			return true
		}
		last = n
		b, _ := json.Marshal(map[string]int64{"unread": n})
		if _, err := fmt.Fprintf(w, "event: unread\ndata: %s\n\n", b); err != nil {
			return false
		}
		fl.Flush()
		return true
	}
	if !send() {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
			if !send() {
				return
			}
		case <-keep.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
			fl.Flush()
		case <-recheck.C:
			// A session can end while its stream is open.
			if _, err := s.authenticate(r); err != nil {
				return
			}
		}
	}
}
