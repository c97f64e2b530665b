// Package jobrelay carries job notifications between the controllers that
// share one database, for every kind of job (deployments, backups): one
// PostgreSQL LISTEN/NOTIFY channel per kind with three messages,
//
//	dispatch              something may be dispatchable
//	cancel:<server>:<id>  send JobCancel for job id to that server's agent
//	log:<id>              the job has new log or state
//
// and the followers on this controller waiting for a job's next change. A
// request served by one controller so reaches the agent or the follower
// that another one holds. Notifications are hints: after a lost LISTEN
// connection every follower and the dispatcher are woken, since what was
// sent meanwhile is gone.
package jobrelay

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/berthhq/berth/controller/internal/store"
)

// Handlers are what a relayed message does on this controller.
type Handlers struct {
	// Dispatch wakes the dispatcher.
	Dispatch func()
	// Cancel sends a JobCancel to the server's agent if it is connected
	// here.
	Cancel func(server store.ID, job string)
	// Other gets any other message (kind:rest), such as the backups'
	// held:<server>.
	Other func(kind, rest string)
}

// Relay is one job kind's channel.
type Relay struct {
	pool    *pgxpool.Pool
	channel string
	log     *slog.Logger
	h       Handlers

	mu        sync.Mutex
	followers map[store.ID]map[chan struct{}]struct{}
}

// New returns the relay of channel (a PostgreSQL identifier).
func New(pool *pgxpool.Pool, channel string, log *slog.Logger, h Handlers) *Relay {
	return &Relay{pool: pool, channel: channel, log: log, h: h, followers: map[store.ID]map[chan struct{}]struct{}{}}
}

// Notify sends one message to every controller (this one included).
func (r *Relay) Notify(ctx context.Context, payload string) {
	if _, err := r.pool.Exec(ctx, "SELECT pg_notify($1, $2)", r.channel, payload); err != nil && ctx.Err() == nil {
		r.log.Warn("notify", "payload", payload, "err", err)
	}
}

// NotifyAll sends several messages with one statement.
func (r *Relay) NotifyAll(ctx context.Context, payloads []string) {
	if len(payloads) == 0 {
		return
	}
	if _, err := r.pool.Exec(ctx, "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", r.channel, payloads); err != nil && ctx.Err() == nil {
		r.log.Warn("notify", "payloads", payloads, "err", err)
	}
}

// Listen relays messages, LISTENing on a connection of pool, until ctx
// ends; after a lost connection it listens again and wakes every follower
// and the dispatcher.
func (r *Relay) Listen(ctx context.Context, pool *pgxpool.Pool) {
	for ctx.Err() == nil {
		r.listenOnce(ctx, pool)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (r *Relay) listenOnce(ctx context.Context, pool *pgxpool.Pool) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return
	}
	pc := conn.Hijack() // a LISTENing session must not go back to the pool
	defer pc.Close(context.Background())
	if _, err := pc.Exec(ctx, "LISTEN "+r.channel); err != nil {
		return
	}
	if r.h.Dispatch != nil {
		r.h.Dispatch()
	}
	r.wakeAll()
	for {
		n, err := pc.WaitForNotification(ctx)
		if err != nil {
			return
		}
		r.relay(n.Payload)
	}
}

func (r *Relay) relay(payload string) {
	kind, rest, _ := strings.Cut(payload, ":")
	switch kind {
	case "dispatch":
		if r.h.Dispatch != nil {
			r.h.Dispatch()
		}
	case "cancel":
		srv, job, _ := strings.Cut(rest, ":")
		sid, err1 := store.ParseID(srv)
		if _, err2 := store.ParseID(job); err1 != nil || err2 != nil || r.h.Cancel == nil {
			return
		}
		r.h.Cancel(sid, job)
	case "log":
		if id, err := store.ParseID(rest); err == nil {
			r.Wake(id)
		}
	default:
		if r.h.Other != nil {
			r.h.Other(kind, rest)
		}
	}
}

// Subscribe returns a channel poked when job id changes, and its release.
func (r *Relay) Subscribe(id store.ID) (chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	r.mu.Lock()
	if r.followers[id] == nil {
		r.followers[id] = map[chan struct{}]struct{}{}
	}
	r.followers[id][ch] = struct{}{}
	r.mu.Unlock()
	return ch, func() {
		r.mu.Lock()
		delete(r.followers[id], ch)
		if len(r.followers[id]) == 0 {
			delete(r.followers, id)
		}
		r.mu.Unlock()
	}
}

// Wake pokes job id's followers on this controller.
func (r *Relay) Wake(id store.ID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for ch := range r.followers[id] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (r *Relay) wakeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, chs := range r.followers {
		for ch := range chs {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}
