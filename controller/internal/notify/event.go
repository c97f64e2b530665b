package notify

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/berthhq/berth/controller/internal/store"
)

// Level is how urgent an event is.
type Level string

// The levels, in order.
const (
	Info     Level = "info"
	Warning  Level = "warning"
	Critical Level = "critical"
)

func (l Level) valid() bool { return l == Info || l == Warning || l == Critical }

// The event kinds published today (dotted, as notifications.kind). Kinds of
// capabilities not built yet (backup.*, certificate.*, alert.*) are published
// by them when they land.
const (
	KindDeploymentFailed    = "deployment.failed"
	KindDeploymentSucceeded = "deployment.succeeded"
	KindDeploymentTimedOut  = "deployment.timed_out"
	KindServerOffline       = "server.offline"
	KindServerOnline        = "server.online"
	KindServerEnrolled      = "server.enrolled"
	KindAdminCreated        = "security.admin_created"
	KindTwoFactorDisabled   = "security.two_factor_disabled"
	KindTokenCreated        = "security.token_created"
	KindLoginFailures       = "security.login_failures"
)

// Limits on an event's text; longer text is cut, not refused, since an
// event reports something that already happened.
const (
	maxTitle = 300
	maxBody  = 8000
)

// ErrInvalid wraps every refusal of bad input.
var ErrInvalid = errors.New("invalid")

var kindRE = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$`)

// Event is what a capability publishes.
type Event struct {
	Kind  string // dotted lowercase, e.g. deployment.failed
	Level Level  // default info
	Title string
	Body  string
	// The objects it is about (each optional); rules filter on server and
	// app.
	ServerID     *store.ID
	AppID        *store.ID
	DeploymentID *store.ID
	Link         string // relative web UI URL
	// DedupeKey names the condition the event opens or, with Resolves,
	// closes (see the package doc).
	DedupeKey string
	Resolves  bool
	// At defaults to now.
	At time.Time
}

func (e *Event) normalise() error {
	if !kindRE.MatchString(e.Kind) || len(e.Kind) > 100 {
		return fmt.Errorf("%w: event kind %q", ErrInvalid, cut(e.Kind, 100))
	}
	if e.Level == "" {
		e.Level = Info
	}
	if !e.Level.valid() {
		return fmt.Errorf("%w: level %q", ErrInvalid, cut(string(e.Level), 20))
	}
	e.Title = cut(strings.TrimSpace(e.Title), maxTitle)
	if e.Title == "" {
		e.Title = e.Kind
	}
	e.Body = cut(e.Body, maxBody)
	if e.Resolves && e.DedupeKey == "" {
		return fmt.Errorf("%w: a resolving event needs the dedupe key it closes", ErrInvalid)
	}
	if len(e.DedupeKey) > 300 || len(e.Link) > 2000 {
		return fmt.Errorf("%w: dedupe key or link too long", ErrInvalid)
	}
	if e.At.IsZero() {
		e.At = time.Now()
	}
	return nil
}

// cut shortens s to at most n bytes on a rune boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// wakeChannel is poked (at commit) when outbox rows are added, so idle
// delivery workers on every controller start at once.
const wakeChannel = "berth_notify"

// DedupeWindow: a repeat of a condition delivered less than this ago is
// merged.
const DedupeWindow = time.Hour

// Publish records e in tx (the transaction of the change it reports) and
// fans it out to the matching channels in the same transaction. It
// returns the event's id.
func Publish(ctx context.Context, tx *store.Store, e Event) (store.ID, error) {
	if err := e.normalise(); err != nil {
		return store.ID{}, err
	}
	id := store.NewID()
	var out store.ID
	err := tx.InTx(ctx, func(tx *store.Store) error { // a savepoint when nested
		ev, err := tx.InsertNotifyEvent(ctx, store.NotifyEvent{
			ID: id, Kind: e.Kind, Level: string(e.Level), Title: e.Title, Body: e.Body,
			ServerID: e.ServerID, AppID: e.AppID, DeploymentID: e.DeploymentID, Link: e.Link,
			DedupeKey: e.DedupeKey, Resolves: e.Resolves, CreatedAt: e.At,
		})
		if err != nil {
			return err
		}
		out = ev.ID
		return fanOut(ctx, tx, ev)
	})
	if err != nil {
		return store.ID{}, fmt.Errorf("publish %s: %w", e.Kind, err)
	}
	return out, nil
}

// fanOut writes the inbox rows and outbox rows of one event.
func fanOut(ctx context.Context, tx *store.Store, ev store.NotifyEvent) error {
	chans, err := tx.MatchNotifyChannels(ctx, ev)
	if err != nil {
		return err
	}
	queued := false
	inboxDone := false
	for _, c := range chans {
		if c.Kind == KindInbox {
			if inboxDone {
				continue // several inbox channels reach the same admins
			}
			inboxDone = true
			if err := toInbox(ctx, tx, ev); err != nil {
				return err
			}
			continue
		}
		status, err := outboxStatus(ctx, tx, c, ev)
		if err != nil {
			return err
		}
		if _, err := tx.InsertNotifyOutbox(ctx, store.NotifyOutbox{
			ChannelID: c.ID, EventID: &ev.ID, DedupeKey: ev.DedupeKey, Resolves: ev.Resolves,
			Status: status, CreatedAt: ev.CreatedAt,
		}); err != nil {
			return err
		}
		queued = queued || status == "pending"
	}
	if queued {
		// Delivered by PostgreSQL at commit, not before.
		if err := tx.PgNotify(ctx, wakeChannel, ""); err != nil {
			return fmt.Errorf("wake delivery: %w", err)
		}
	}
	return nil
}

// inboxLevel maps an event to the inbox's levels.
func inboxLevel(ev store.NotifyEvent) store.NotificationLevel {
	switch {
	case ev.Level == string(Critical):
		return store.NotifyError
	case ev.Level == string(Warning):
		return store.NotifyWarning
	case ev.Resolves || strings.HasSuffix(ev.Kind, ".succeeded"):
		return store.NotifySuccess
	}
	return store.NotifyInfo
}

func toInbox(ctx context.Context, tx *store.Store, ev store.NotifyEvent) error {
	key := ev.DedupeKey
	if ev.Resolves {
		if _, err := tx.ResolveNotifications(ctx, key, ev.CreatedAt); err != nil {
			return err
		}
		key += ":resolved"
	}
	admins, err := tx.ActiveAdminIDs(ctx)
	if err != nil {
		return err
	}
	for _, u := range admins {
		if _, _, err := tx.CreateNotification(ctx, store.CreateNotificationParams{
			UserID: u, Kind: ev.Kind, Level: inboxLevel(ev), Title: ev.Title, Body: ev.Body,
			Link: ev.Link, DedupeKey: key,
		}); err != nil {
			return err
		}
	}
	return nil
}

// outboxStatus applies the noise rules of the package doc to one channel.
func outboxStatus(ctx context.Context, tx *store.Store, c store.NotifyChannel, ev store.NotifyEvent) (string, error) {
	if ev.DedupeKey != "" {
		last, ok, err := tx.LastNotifyOutboxForKey(ctx, c.ID, ev.DedupeKey)
		if err != nil {
			return "", err
		}
		open := ok && !last.Resolves
		unsent := open && (last.Status == "pending" || last.Status == "held") && last.Attempts == 0
		switch {
		case ev.Resolves && !open:
			return "merged", nil // the channel never heard of it
		case ev.Resolves && unsent:
			if err := tx.SetNotifyOutboxStatus(ctx, last.ID, "merged"); err != nil {
				return "", err
			}
			return "merged", nil
		case !ev.Resolves && open && (last.Status == "pending" || last.Status == "held"):
			return "merged", nil
		case !ev.Resolves && open && last.DeliveredAt != nil && ev.CreatedAt.Sub(*last.DeliveredAt) < DedupeWindow:
			return "merged", nil
		}
	}
	n, err := tx.CountNotifyOutboxSince(ctx, c.ID, ev.CreatedAt.Add(-time.Hour))
	if err != nil {
		return "", err
	}
	if n >= int64(c.RateLimitPerHour) {
		return "held", nil
	}
	return "pending", nil
}
