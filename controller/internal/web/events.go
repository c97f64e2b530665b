package web

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
)

// serverEvent is what the live feed sends when a server's status or last
// contact changes.
type serverEvent struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Status   string `json:"status"`
	LastSeen string `json:"last_seen_at,omitempty"`
}

// broadcaster polls the servers table and fans changes out to every open
// event stream. Polling the database (once, for all browsers) rather than
// listening to this process's own fleet hub keeps it right when several
// controllers share the database: an agent may stream to any of them.
type broadcaster struct {
	st   *store.Store
	log  *slog.Logger
	poll time.Duration

	mu   sync.Mutex
	subs map[chan []serverEvent]struct{}
	wake chan struct{}
}

func newBroadcaster(st *store.Store, log *slog.Logger, poll time.Duration) *broadcaster {
	return &broadcaster{st: st, log: log, poll: poll, subs: map[chan []serverEvent]struct{}{}, wake: make(chan struct{}, 1)}
}

func (b *broadcaster) subscribe() chan []serverEvent {
	ch := make(chan []serverEvent, 8)
	b.mu.Lock()
	b.subs[ch] = struct{}{}
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return ch
}

func (b *broadcaster) unsubscribe(ch chan []serverEvent) {
	b.mu.Lock()
	delete(b.subs, ch)
	b.mu.Unlock()
}

func (b *broadcaster) listeners() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

func (b *broadcaster) run(ctx context.Context) {
	last := map[store.ID]serverEvent{}
	t := time.NewTicker(b.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-b.wake:
		}
		if b.listeners() == 0 {
			// Nobody watching: forget, so the next watcher starts fresh.
			clear(last)
			continue
		}
		changed, err := b.diff(ctx, last)
		if err != nil {
			b.log.Warn("live status poll", "err", err)
			continue
		}
		if len(changed) == 0 {
			continue
		}
		b.mu.Lock()
		for ch := range b.subs {
			select {
			case ch <- changed:
			default: // a slow browser skips a beat; the next change catches it up
			}
		}
		b.mu.Unlock()
	}
}

// diff returns the servers whose status or last contact changed since the
// last poll. Pages up through the whole fleet by id.
func (b *broadcaster) diff(ctx context.Context, last map[store.ID]serverEvent) ([]serverEvent, error) {
	var out []serverEvent
	seen := map[store.ID]bool{}
	f := store.ServerFilter{Limit: 1000}
	for {
		list, err := b.st.Servers(ctx, f)
		if err != nil {
			return nil, err
		}
		for _, s := range list {
			ev := serverEvent{ID: s.ID.String(), Name: s.Name, Status: string(s.Status)}
			if s.LastSeenAt != nil {
				ev.LastSeen = s.LastSeenAt.UTC().Format(time.RFC3339)
			}
			seen[s.ID] = true
			if last[s.ID] != ev {
				last[s.ID] = ev
				out = append(out, ev)
			}
		}
		if len(list) < f.Limit {
			break
		}
		id := list[len(list)-1].ID
		f.Before = &id
	}
	for id, ev := range last {
		if !seen[id] {
			delete(last, id)
			ev.Status = "removed"
			out = append(out, ev)
		}
	}
	return out, nil
}

// eventStream is the server-sent events feed of live status.
func (s *Server) eventStream(w http.ResponseWriter, r *http.Request, v *viewer) {
	if err := s.d.Fleet.CanWatch(v.Principal); err != nil {
		s.fail(w, r, v, err)
		return
	}
	fl, ok := startEvents(w)
	if !ok {
		return
	}
	_, _ = fmt.Fprint(w, "retry: 3000\n\n")
	fl.Flush()

	ch := s.events.subscribe()
	defer s.events.unsubscribe(ch)
	keep := time.NewTicker(25 * time.Second)
	defer keep.Stop()
	// A session can end while its stream is open (logout, revocation):
	// check it now and then and close the stream when it is gone.
	recheck := time.NewTicker(time.Minute)
	defer recheck.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case evs := <-ch:
			for _, ev := range evs {
				b, _ := json.Marshal(ev)
				if _, err := fmt.Fprintf(w, "event: server\ndata: %s\n\n", b); err != nil {
					return
				}
			}
			fl.Flush()
		case <-keep.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
			fl.Flush()
		case <-recheck.C:
			if _, err := s.authenticate(r); err != nil {
				return
			}
		}
	}
}

// startEvents begins a server-sent events response: headers, no write
// deadline (a stream lives long), no proxy buffering.
func startEvents(w http.ResponseWriter) (http.Flusher, bool) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return nil, false
	}
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fl.Flush()
	return fl, true
}
