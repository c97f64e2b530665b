package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berthhq/berth/gen/dbsqlc"
)

// This file is the storage of the notifications service
// (controller/internal/notify): events, channels, rules and the outbox. The
// service holds the rules of the game; these are plain reads and writes.

// NotifyEvent is something that happened, as published.
type NotifyEvent struct {
	ID           ID
	Kind         string
	Level        string // info, warning, critical
	Title        string
	Body         string
	ServerID     *ID
	AppID        *ID
	DeploymentID *ID
	Link         string
	DedupeKey    string
	Resolves     bool
	CreatedAt    time.Time
}

func notifyEventFromRow(r dbsqlc.NotifyEvent) NotifyEvent {
	return NotifyEvent{
		ID: fromPG(r.ID), Kind: r.Kind, Level: r.Level, Title: r.Title, Body: r.Body,
		ServerID: fromOptPG(r.ServerID), AppID: fromOptPG(r.AppID), DeploymentID: fromOptPG(r.DeploymentID),
		Link: textOf(r.Link), DedupeKey: textOf(r.DedupeKey), Resolves: r.Resolves, CreatedAt: r.CreatedAt,
	}
}

// InsertNotifyEvent records an event; ID must be set.
func (s *Store) InsertNotifyEvent(ctx context.Context, e NotifyEvent) (NotifyEvent, error) {
	r, err := s.q.InsertNotifyEvent(ctx, dbsqlc.InsertNotifyEventParams{
		ID: pgID(e.ID), Kind: e.Kind, Level: e.Level, Title: e.Title, Body: e.Body,
		ServerID: pgOptID(e.ServerID), AppID: pgOptID(e.AppID), DeploymentID: pgOptID(e.DeploymentID),
		Link: nullText(e.Link), DedupeKey: nullText(e.DedupeKey), Resolves: e.Resolves, CreatedAt: e.CreatedAt,
	})
	if err != nil {
		return NotifyEvent{}, mapErr("insert notify event", err)
	}
	return notifyEventFromRow(r), nil
}

// NotifyEventByID gets one event.
func (s *Store) NotifyEventByID(ctx context.Context, id ID) (NotifyEvent, error) {
	r, err := s.q.GetNotifyEvent(ctx, pgID(id))
	if err != nil {
		return NotifyEvent{}, mapErr("get notify event", err)
	}
	return notifyEventFromRow(r), nil
}

// NotifyChannel is a destination. Config is the sealed URL and secret; it
// is opened only by NotifyChannelConfig, for delivery.
type NotifyChannel struct {
	ID               ID
	Name             string
	Kind             string
	ToAdmins         bool
	Recipients       []string
	URLHost          string
	Enabled          bool
	RateLimitPerHour int
	LastError        string
	FailingSince     *time.Time
	LastDeliveredAt  *time.Time
	CreatedAt        time.Time
	config           []byte
}

func notifyChannelFromRow(r dbsqlc.NotifyChannel) NotifyChannel {
	return NotifyChannel{
		ID: fromPG(r.ID), Name: r.Name, Kind: r.Kind, ToAdmins: r.ToAdmins, Recipients: r.Recipients,
		URLHost: textOf(r.UrlHost), Enabled: r.Enabled, RateLimitPerHour: int(r.RateLimitPerHour),
		LastError: textOf(r.LastError), FailingSince: r.FailingSince, LastDeliveredAt: r.LastDeliveredAt,
		CreatedAt: r.CreatedAt, config: r.Config,
	}
}

// CreateNotifyChannelParams describes a channel. Config (the URL and
// secret of a slack, discord or webhook channel) is sealed before it is
// stored.
type CreateNotifyChannelParams struct {
	ID               ID
	Name             string
	Kind             string
	ToAdmins         bool
	Recipients       []string
	URLHost          string
	Config           []byte
	RateLimitPerHour int
}

// CreateNotifyChannel stores a channel; ErrConflict when the name is taken.
func (s *Store) CreateNotifyChannel(ctx context.Context, p CreateNotifyChannelParams) (NotifyChannel, error) {
	if p.ID == (ID{}) {
		p.ID = NewID()
	}
	if p.Recipients == nil {
		p.Recipients = []string{}
	}
	sealed, err := s.seal("notify_channels", "config", p.ID, p.Config)
	if err != nil {
		return NotifyChannel{}, err
	}
	r, err := s.q.CreateNotifyChannel(ctx, dbsqlc.CreateNotifyChannelParams{
		ID: pgID(p.ID), Name: p.Name, Kind: p.Kind, ToAdmins: p.ToAdmins, Recipients: p.Recipients,
		UrlHost: nullText(p.URLHost), Config: sealed, RateLimitPerHour: int32(p.RateLimitPerHour),
	})
	if err != nil {
		return NotifyChannel{}, mapErr("create notify channel", err)
	}
	return notifyChannelFromRow(r), nil
}

// SetNotifyChannelRateLimit changes a channel's rate limit (messages per
// rolling hour); ErrNotFound when the channel is gone.
func (s *Store) SetNotifyChannelRateLimit(ctx context.Context, id ID, perHour int) (NotifyChannel, error) {
	r, err := s.q.SetNotifyChannelRateLimit(ctx, dbsqlc.SetNotifyChannelRateLimitParams{ID: pgID(id), RateLimitPerHour: int32(perHour)})
	if err != nil {
		return NotifyChannel{}, mapErr("set notify channel rate limit", err)
	}
	return notifyChannelFromRow(r), nil
}

// NotifyChannelConfig opens a channel's sealed configuration (nil for
// channels that have none).
func (s *Store) NotifyChannelConfig(c NotifyChannel) ([]byte, error) {
	return s.open("notify_channels", "config", c.ID, c.config)
}

// NotifyChannelByID gets a channel.
func (s *Store) NotifyChannelByID(ctx context.Context, id ID) (NotifyChannel, error) {
	r, err := s.q.GetNotifyChannel(ctx, pgID(id))
	if err != nil {
		return NotifyChannel{}, mapErr("get notify channel", err)
	}
	return notifyChannelFromRow(r), nil
}

// NotifyChannelByName gets a channel by its name.
func (s *Store) NotifyChannelByName(ctx context.Context, name string) (NotifyChannel, error) {
	r, err := s.q.GetNotifyChannelByName(ctx, name)
	if err != nil {
		return NotifyChannel{}, mapErr("get notify channel", err)
	}
	return notifyChannelFromRow(r), nil
}

// NotifyChannels lists every channel by name.
func (s *Store) NotifyChannels(ctx context.Context) ([]NotifyChannel, error) {
	rows, err := s.q.ListNotifyChannels(ctx)
	if err != nil {
		return nil, mapErr("list notify channels", err)
	}
	out := make([]NotifyChannel, len(rows))
	for i, r := range rows {
		out[i] = notifyChannelFromRow(r)
	}
	return out, nil
}

// DeleteNotifyChannel removes a channel with its rules and outbox rows.
func (s *Store) DeleteNotifyChannel(ctx context.Context, id ID) error {
	n, err := s.q.DeleteNotifyChannel(ctx, pgID(id))
	return affected("delete notify channel", n, err)
}

// CountNotifyChannelsOfKind counts the channels of one kind.
func (s *Store) CountNotifyChannelsOfKind(ctx context.Context, kind string) (int64, error) {
	n, err := s.q.CountNotifyChannelsOfKind(ctx, kind)
	return n, mapErr("count notify channels", err)
}

// NotifyChannelDelivered records a successful delivery and clears the
// channel's failure.
func (s *Store) NotifyChannelDelivered(ctx context.Context, id ID, at time.Time) error {
	return mapErr("notify channel delivered", s.q.NotifyChannelDelivered(ctx, dbsqlc.NotifyChannelDeliveredParams{At: &at, ID: pgID(id)}))
}

// NotifyChannelFailed records a failed attempt; failing_since keeps the
// first one of a run.
func (s *Store) NotifyChannelFailed(ctx context.Context, id ID, msg string, at time.Time) error {
	return mapErr("notify channel failed", s.q.NotifyChannelFailed(ctx, dbsqlc.NotifyChannelFailedParams{LastError: &msg, At: &at, ID: pgID(id)}))
}

// MatchNotifyChannels returns the enabled channels with a rule matching an
// event.
func (s *Store) MatchNotifyChannels(ctx context.Context, e NotifyEvent) ([]NotifyChannel, error) {
	rows, err := s.q.MatchNotifyChannels(ctx, dbsqlc.MatchNotifyChannelsParams{
		ServerID: pgOptID(e.ServerID), AppID: pgOptID(e.AppID), Level: e.Level, Kind: e.Kind,
	})
	if err != nil {
		return nil, mapErr("match notify channels", err)
	}
	out := make([]NotifyChannel, len(rows))
	for i, r := range rows {
		out[i] = notifyChannelFromRow(r)
	}
	return out, nil
}

// AdminEmails lists the active admins' addresses.
func (s *Store) AdminEmails(ctx context.Context) ([]string, error) {
	out, err := s.q.AdminEmails(ctx)
	return out, mapErr("admin emails", err)
}

// ActiveAdminIDs lists the active admins.
func (s *Store) ActiveAdminIDs(ctx context.Context) ([]ID, error) {
	rows, err := s.q.ActiveAdminIDs(ctx)
	if err != nil {
		return nil, mapErr("active admins", err)
	}
	out := make([]ID, len(rows))
	for i, r := range rows {
		out[i] = fromPG(r)
	}
	return out, nil
}

// ResolveNotifications marks every unread notification of a condition read.
func (s *Store) ResolveNotifications(ctx context.Context, dedupeKey string, at time.Time) (int64, error) {
	n, err := s.q.ResolveNotifications(ctx, dbsqlc.ResolveNotificationsParams{At: &at, DedupeKey: &dedupeKey})
	return n, mapErr("resolve notifications", err)
}

// NotifyRule sends events matching Events (and the filters) to a channel.
type NotifyRule struct {
	ID        ID
	ChannelID ID
	Events    []string
	ServerID  *ID
	AppID     *ID
	MinLevel  string
	CreatedAt time.Time
}

func notifyRuleFromRow(r dbsqlc.NotifyRule) NotifyRule {
	return NotifyRule{
		ID: fromPG(r.ID), ChannelID: fromPG(r.ChannelID), Events: r.Events, ServerID: fromOptPG(r.ServerID),
		AppID: fromOptPG(r.AppID), MinLevel: r.MinLevel, CreatedAt: r.CreatedAt,
	}
}

// CreateNotifyRule stores a rule.
func (s *Store) CreateNotifyRule(ctx context.Context, r NotifyRule) (NotifyRule, error) {
	if r.ID == (ID{}) {
		r.ID = NewID()
	}
	row, err := s.q.CreateNotifyRule(ctx, dbsqlc.CreateNotifyRuleParams{
		ID: pgID(r.ID), ChannelID: pgID(r.ChannelID), Events: r.Events, ServerID: pgOptID(r.ServerID),
		AppID: pgOptID(r.AppID), MinLevel: r.MinLevel,
	})
	if err != nil {
		return NotifyRule{}, mapErr("create notify rule", err)
	}
	return notifyRuleFromRow(row), nil
}

// NotifyRules lists every rule.
func (s *Store) NotifyRules(ctx context.Context) ([]NotifyRule, error) {
	rows, err := s.q.ListNotifyRules(ctx)
	if err != nil {
		return nil, mapErr("list notify rules", err)
	}
	out := make([]NotifyRule, len(rows))
	for i, r := range rows {
		out[i] = notifyRuleFromRow(r)
	}
	return out, nil
}

// DeleteNotifyRule removes a rule.
func (s *Store) DeleteNotifyRule(ctx context.Context, id ID) error {
	n, err := s.q.DeleteNotifyRule(ctx, pgID(id))
	return affected("delete notify rule", n, err)
}

// NotifyOutbox is one message to deliver to one channel.
type NotifyOutbox struct {
	ID            ID
	ChannelID     ID
	EventID       *ID // nil for a digest
	DedupeKey     string
	Resolves      bool
	Status        string
	DigestID      *ID
	DigestTitle   string
	DigestBody    string
	Attempts      int
	NextAttemptAt time.Time
	LockedUntil   *time.Time
	LastError     string
	DeliveredAt   *time.Time
	CreatedAt     time.Time
	// DeliveredTo and RefusedTo are an email message's addresses the mail
	// server accepted it for, and refused permanently (address -> the
	// server's reply); neither is sent to again.
	DeliveredTo []string
	RefusedTo   map[string]string
}

func notifyOutboxFromRow(r dbsqlc.NotifyOutbox) NotifyOutbox {
	return NotifyOutbox{
		ID: fromPG(r.ID), ChannelID: fromPG(r.ChannelID), EventID: fromOptPG(r.EventID), DedupeKey: textOf(r.DedupeKey),
		Resolves: r.Resolves, Status: r.Status, DigestID: fromOptPG(r.DigestID), DigestTitle: textOf(r.DigestTitle),
		DigestBody: textOf(r.DigestBody), Attempts: int(r.Attempts), NextAttemptAt: r.NextAttemptAt,
		LockedUntil: r.LockedUntil, LastError: textOf(r.LastError), DeliveredAt: r.DeliveredAt, CreatedAt: r.CreatedAt,
		DeliveredTo: r.DeliveredTo, RefusedTo: refusedOf(r.RefusedTo),
	}
}

// refusedOf decodes refused_to, a JSON object (the column's CHECK says
// so) of address -> reply.
func refusedOf(raw []byte) map[string]string {
	out := map[string]string{}
	_ = json.Unmarshal(raw, &out)
	return out
}

func notifyOutboxRows(rows []dbsqlc.NotifyOutbox) []NotifyOutbox {
	out := make([]NotifyOutbox, len(rows))
	for i, r := range rows {
		out[i] = notifyOutboxFromRow(r)
	}
	return out
}

// InsertNotifyOutbox queues a message; CreatedAt is also its first due time.
func (s *Store) InsertNotifyOutbox(ctx context.Context, o NotifyOutbox) (NotifyOutbox, error) {
	if o.ID == (ID{}) {
		o.ID = NewID()
	}
	r, err := s.q.InsertNotifyOutbox(ctx, dbsqlc.InsertNotifyOutboxParams{
		ID: pgID(o.ID), ChannelID: pgID(o.ChannelID), EventID: pgOptID(o.EventID), DedupeKey: nullText(o.DedupeKey),
		Resolves: o.Resolves, Status: o.Status, DigestTitle: nullText(o.DigestTitle), DigestBody: nullText(o.DigestBody),
		CreatedAt: o.CreatedAt,
	})
	if err != nil {
		return NotifyOutbox{}, mapErr("insert notify outbox", err)
	}
	return notifyOutboxFromRow(r), nil
}

// LastNotifyOutboxForKey is a channel's latest unmerged message about a
// condition; ok is false when there is none.
func (s *Store) LastNotifyOutboxForKey(ctx context.Context, channelID ID, key string) (NotifyOutbox, bool, error) {
	r, err := s.q.LastNotifyOutboxForKey(ctx, dbsqlc.LastNotifyOutboxForKeyParams{ChannelID: pgID(channelID), DedupeKey: &key})
	if errors.Is(err, pgx.ErrNoRows) {
		return NotifyOutbox{}, false, nil
	}
	if err != nil {
		return NotifyOutbox{}, false, mapErr("last notify outbox", err)
	}
	return notifyOutboxFromRow(r), true, nil
}

// SetNotifyOutboxStatus sets a row's status (merged, held, ...).
func (s *Store) SetNotifyOutboxStatus(ctx context.Context, id ID, status string) error {
	return mapErr("set notify outbox status", s.q.SetNotifyOutboxStatus(ctx, dbsqlc.SetNotifyOutboxStatusParams{Status: status, ID: pgID(id)}))
}

// CountNotifyOutboxSince counts a channel's messages sent or to send since.
func (s *Store) CountNotifyOutboxSince(ctx context.Context, channelID ID, since time.Time) (int64, error) {
	n, err := s.q.CountNotifyOutboxSince(ctx, dbsqlc.CountNotifyOutboxSinceParams{ChannelID: pgID(channelID), Since: since})
	return n, mapErr("count notify outbox", err)
}

// ClaimNotifyOutbox leases up to limit due rows until leaseUntil.
func (s *Store) ClaimNotifyOutbox(ctx context.Context, now, leaseUntil time.Time, limit int) ([]NotifyOutbox, error) {
	rows, err := s.q.ClaimNotifyOutbox(ctx, dbsqlc.ClaimNotifyOutboxParams{LeaseUntil: &leaseUntil, Now: now, Lim: int32(limit)})
	if err != nil {
		return nil, mapErr("claim notify outbox", err)
	}
	return notifyOutboxRows(rows), nil
}

// MarkNotifyOutboxDelivered reports false when the row was no longer
// pending (another worker finished it).
func (s *Store) MarkNotifyOutboxDelivered(ctx context.Context, id ID, at time.Time) (bool, error) {
	n, err := s.q.MarkNotifyOutboxDelivered(ctx, dbsqlc.MarkNotifyOutboxDeliveredParams{At: &at, ID: pgID(id)})
	return n > 0, mapErr("mark notify outbox delivered", err)
}

// RetryNotifyOutbox releases a row to be tried again at next. lease is the
// row's locked_until as the claim returned it: when the row has been
// claimed again since (this worker's lease ran out), nothing changes and
// ok is false.
func (s *Store) RetryNotifyOutbox(ctx context.Context, id ID, lease time.Time, next time.Time, msg string) (bool, error) {
	n, err := s.q.RetryNotifyOutbox(ctx, dbsqlc.RetryNotifyOutboxParams{NextAttemptAt: next, LastError: &msg, ID: pgID(id), Lease: &lease})
	return n > 0, mapErr("retry notify outbox", err)
}

// FailNotifyOutbox gives a row up, if lease (as for RetryNotifyOutbox)
// still holds it.
func (s *Store) FailNotifyOutbox(ctx context.Context, id ID, lease time.Time, msg string) (bool, error) {
	n, err := s.q.FailNotifyOutbox(ctx, dbsqlc.FailNotifyOutboxParams{LastError: &msg, ID: pgID(id), Lease: &lease})
	return n > 0, mapErr("fail notify outbox", err)
}

// ReleaseNotifyOutbox frees a claimed row that was not (fully) sent, if
// lease (as for RetryNotifyOutbox) still holds it.
func (s *Store) ReleaseNotifyOutbox(ctx context.Context, id ID, lease time.Time) (bool, error) {
	n, err := s.q.ReleaseNotifyOutbox(ctx, dbsqlc.ReleaseNotifyOutboxParams{ID: pgID(id), Lease: &lease})
	return n > 0, mapErr("release notify outbox", err)
}

// RecordNotifyOutboxRecipients adds to a pending email message the
// addresses the mail server accepted it for and those it refused
// permanently (address -> reply). It is not fenced by the lease: whoever
// holds the row, those addresses must not be sent to again. ok is false
// when the row is no longer pending.
func (s *Store) RecordNotifyOutboxRecipients(ctx context.Context, id ID, delivered []string, refused map[string]string) (bool, error) {
	if delivered == nil {
		delivered = []string{}
	}
	if refused == nil {
		refused = map[string]string{}
	}
	raw, err := json.Marshal(refused)
	if err != nil {
		return false, fmt.Errorf("record notify recipients: %w", err)
	}
	n, err := s.q.RecordNotifyOutboxRecipients(ctx, dbsqlc.RecordNotifyOutboxRecipientsParams{ID: pgID(id), Delivered: delivered, Refused: raw})
	return n > 0, mapErr("record notify recipients", err)
}

// EndNotifyOutboxRefused ends a pending email message whose every address
// either got it or was refused permanently, some refused: status failed
// with msg, and delivered_at when anyone got it.
func (s *Store) EndNotifyOutboxRefused(ctx context.Context, id ID, at time.Time, msg string) (bool, error) {
	n, err := s.q.EndNotifyOutboxRefused(ctx, dbsqlc.EndNotifyOutboxRefusedParams{LastError: &msg, At: at, ID: pgID(id)})
	return n > 0, mapErr("end notify outbox refused", err)
}

// NotifyOutboxByID gets one row.
func (s *Store) NotifyOutboxByID(ctx context.Context, id ID) (NotifyOutbox, error) {
	r, err := s.q.GetNotifyOutbox(ctx, pgID(id))
	if err != nil {
		return NotifyOutbox{}, mapErr("get notify outbox", err)
	}
	return notifyOutboxFromRow(r), nil
}

// NotifyOutboxForEvent lists an event's messages.
func (s *Store) NotifyOutboxForEvent(ctx context.Context, eventID ID) ([]NotifyOutbox, error) {
	rows, err := s.q.ListNotifyOutboxForEvent(ctx, pgID(eventID))
	if err != nil {
		return nil, mapErr("list notify outbox", err)
	}
	return notifyOutboxRows(rows), nil
}

// NotifyChannelsWithHeld lists the channels with messages held back.
func (s *Store) NotifyChannelsWithHeld(ctx context.Context) ([]ID, error) {
	rows, err := s.q.NotifyChannelsWithHeld(ctx)
	if err != nil {
		return nil, mapErr("channels with held", err)
	}
	out := make([]ID, len(rows))
	for i, r := range rows {
		out[i] = fromPG(r)
	}
	return out, nil
}

// HeldNotify is a held-back message, for a digest.
type HeldNotify struct {
	ID        ID
	Kind      string
	Level     string
	Title     string
	CreatedAt time.Time
}

// HeldNotifyOutbox locks and lists a channel's held messages.
func (s *Store) HeldNotifyOutbox(ctx context.Context, channelID ID) ([]HeldNotify, error) {
	rows, err := s.q.HeldNotifyOutbox(ctx, pgID(channelID))
	if err != nil {
		return nil, mapErr("held notify outbox", err)
	}
	out := make([]HeldNotify, len(rows))
	for i, r := range rows {
		out[i] = HeldNotify{ID: fromPG(r.ID), Kind: r.Kind, Level: r.Level, Title: r.Title, CreatedAt: r.CreatedAt}
	}
	return out, nil
}

// DigestNotifyOutbox marks held rows as sent in digest.
func (s *Store) DigestNotifyOutbox(ctx context.Context, digest ID, ids []ID) (int64, error) {
	n, err := s.q.DigestNotifyOutbox(ctx, dbsqlc.DigestNotifyOutboxParams{DigestID: pgID(digest), Ids: pgIDs(ids)})
	return n, mapErr("digest notify outbox", err)
}

// DeleteNotifyBefore is the retention of finished outbox rows and of the
// events nothing pending needs any more.
func (s *Store) DeleteNotifyBefore(ctx context.Context, before time.Time) (int64, error) {
	n, err := s.q.DeleteNotifyOutboxBefore(ctx, before)
	if err != nil {
		return 0, mapErr("delete notify outbox", err)
	}
	m, err := s.q.DeleteNotifyEventsBefore(ctx, before)
	return n + m, mapErr("delete notify events", err)
}

// PgNotify sends a NOTIFY on channel; inside a transaction PostgreSQL
// delivers it at commit.
func (s *Store) PgNotify(ctx context.Context, channel, payload string) error {
	_, err := s.db.Exec(ctx, "SELECT pg_notify($1, $2)", channel, payload)
	return mapErr("notify", err)
}

// NotifyDelivery is one outbox row as the delivery list shows it: with its
// channel's name and its event's kind and title.
type NotifyDelivery struct {
	ID            ID
	ChannelID     ID
	ChannelName   string
	EventID       *ID // nil for a digest
	EventKind     string
	Title         string
	Status        string
	Attempts      int
	LastError     string
	NextAttemptAt time.Time
	DeliveredAt   *time.Time
	CreatedAt     time.Time
	DeliveredTo   []string          // email: addresses that have it
	RefusedTo     map[string]string // email: addresses refused for good -> the server's reply
}

// NotifyDeliveryFilter narrows the delivery list: a channel, a status
// (both optional) and at most Limit rows.
type NotifyDeliveryFilter struct {
	ChannelID *ID
	Status    string
	Limit     int
}

// NotifyDeliveries lists outbox rows newest first.
func (s *Store) NotifyDeliveries(ctx context.Context, f NotifyDeliveryFilter) ([]NotifyDelivery, error) {
	rows, err := s.q.ListNotifyDeliveries(ctx, dbsqlc.ListNotifyDeliveriesParams{
		ChannelID: pgOptID(f.ChannelID), Status: nullText(f.Status), Lim: int32(f.Limit),
	})
	if err != nil {
		return nil, mapErr("list notify deliveries", err)
	}
	out := make([]NotifyDelivery, len(rows))
	for i, r := range rows {
		out[i] = NotifyDelivery{
			ID: fromPG(r.ID), ChannelID: fromPG(r.ChannelID), ChannelName: r.ChannelName, EventID: fromOptPG(r.EventID),
			EventKind: r.EventKind, Title: r.Title, Status: r.Status, Attempts: int(r.Attempts), LastError: textOf(r.LastError),
			NextAttemptAt: r.NextAttemptAt, DeliveredAt: r.DeliveredAt, CreatedAt: r.CreatedAt,
			DeliveredTo: r.DeliveredTo, RefusedTo: refusedOf(r.RefusedTo),
		}
	}
	return out, nil
}

// NotifyGivenUpCounts is, per channel, how many messages were given up
// (status failed) and are still within the outbox's retention.
func (s *Store) NotifyGivenUpCounts(ctx context.Context) (map[ID]int64, error) {
	rows, err := s.q.CountNotifyOutboxFailedByChannel(ctx)
	if err != nil {
		return nil, mapErr("count given-up notifications", err)
	}
	out := make(map[ID]int64, len(rows))
	for _, r := range rows {
		out[fromPG(r.ChannelID)] = r.GivenUp
	}
	return out, nil
}
