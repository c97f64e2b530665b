package notify

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/mail"
	"regexp"
	"slices"
	"strings"
	"time"

	bmail "github.com/berthhq/berth/controller/internal/mail"
	"github.com/berthhq/berth/controller/internal/store"
)

// The channel kinds.
const (
	KindInbox   = "inbox"
	KindEmail   = "email"
	KindSlack   = "slack"
	KindDiscord = "discord"
	KindWebhook = "webhook"
)

// Config configures a Service. Store and Mailer are required for delivery
// (Mailer may be mail.Log when no SMTP relay is set: email then fails
// visibly on the channel).
type Config struct {
	Store  *store.Store
	Mailer bmail.Mailer
	Logger *slog.Logger
	// AllowPrivateTargets lets channels call private, loopback and
	// link-local addresses (`berth serve --allow-private-webhook-targets`).
	AllowPrivateTargets bool
	// PublicURL prefixes event links in messages (e.g. https://berth.example).
	PublicURL string
	// Now is the clock (tests inject one); default time.Now.
	Now func() time.Time
	// Workers is how many messages are sent at once; default 8.
	Workers int
	// Lease is how long a claimed row is left alone by other workers;
	// default 2 minutes, at least a second. A send ends before its lease
	// does (see deliver), so a lease shorter than the HTTP timeout
	// shortens the sends; it is also how long after a crash (kill -9) a
	// message the dead controller held is sent again.
	Lease time.Duration
	// MaxAttempts and MaxAge bound the retries; defaults 10 and 24 hours.
	MaxAttempts int
	MaxAge      time.Duration
	// Poll is how often idle workers look for due rows without a wake-up
	// (retries come due without one); default 5 seconds.
	Poll time.Duration
}

// Service manages channels and rules, and delivers the outbox. Safe for
// concurrent use; several Services (controllers) may share one database.
type Service struct {
	cfg    Config
	st     *store.Store
	log    *slog.Logger
	client *http.Client
	wake   chan struct{}
	// mailDomain is the right side of email Message-IDs.
	mailDomain string
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil {
		return nil, errors.New("notify: a store is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 2 * time.Minute
	}
	if cfg.Lease < time.Second {
		return nil, errors.New("notify: the delivery lease must be at least a second")
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 10
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = 24 * time.Hour
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 5 * time.Second
	}
	return &Service{
		cfg: cfg, st: cfg.Store, log: cfg.Logger.With("component", "notify"),
		client: newHTTPClient(cfg.AllowPrivateTargets), wake: make(chan struct{}, 1),
		mailDomain: mailDomain(cfg.PublicURL),
	}, nil
}

// Publish publishes e in a transaction of its own, for callers with no
// change to commit alongside it. Inside a transaction use the package
// function Publish.
func (s *Service) Publish(ctx context.Context, e Event) (store.ID, error) {
	if e.At.IsZero() {
		e.At = s.cfg.Now()
	}
	return Publish(ctx, s.st, e)
}

// ChannelSpec describes a channel to add.
type ChannelSpec struct {
	Name string // lowercase letters, digits, ".", "_", "-"; up to 63
	Kind string // inbox, email, slack, discord, webhook
	// To: an email channel's addresses (up to 20).
	To []string
	// ToAdmins: an inbox or email channel reaching every active admin.
	ToAdmins bool
	// URL: a slack, discord or webhook channel's URL (write-only).
	URL string
	// Secret: a webhook channel's signing secret, "whsec_" + base64 of
	// 24 to 64 bytes; generated when empty (write-only).
	Secret string
	// RateLimitPerHour: at most this many messages an hour (the rest are
	// held back for a digest), 1 to MaxRateLimit; 0 for
	// DefaultRateLimit.
	RateLimitPerHour int
}

// The bounds of a channel's rate limit (the table's check constraint).
const (
	DefaultRateLimit = 20
	MaxRateLimit     = 10000
)

// Channel is a channel as shown: never its URL or secret, only the URL's
// host.
type Channel struct {
	ID               store.ID
	Name             string
	Kind             string
	To               []string
	ToAdmins         bool
	Host             string
	RateLimitPerHour int
	LastError        string
	FailingSince     *time.Time
	LastDeliveredAt  *time.Time
	// GivenUp counts the channel's messages given up after their retries
	// or because the mail server refused an address for good
	// (within the outbox's retention).
	GivenUp   int64
	CreatedAt time.Time
}

func channelOf(c store.NotifyChannel) Channel {
	return Channel{
		ID: c.ID, Name: c.Name, Kind: c.Kind, To: c.Recipients, ToAdmins: c.ToAdmins, Host: c.URLHost,
		RateLimitPerHour: c.RateLimitPerHour, LastError: c.LastError, FailingSince: c.FailingSince,
		LastDeliveredAt: c.LastDeliveredAt, CreatedAt: c.CreatedAt,
	}
}

// channelConfig is the sealed part of a channel.
type channelConfig struct {
	URL    string `json:"url"`
	Secret string `json:"secret,omitempty"`
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

const (
	maxRecipients = 20
	secretPrefix  = "whsec_"
)

// AddChannel validates and stores a channel. For a webhook channel created
// without a secret, the generated secret is returned once (the only time it
// is shown), so the receiver can be configured with it.
func (s *Service) AddChannel(ctx context.Context, spec ChannelSpec) (Channel, string, error) {
	if !nameRE.MatchString(spec.Name) {
		return Channel{}, "", fmt.Errorf("%w: channel name must be 1-63 lowercase letters, digits, '.', '_' or '-'", ErrInvalid)
	}
	if spec.RateLimitPerHour == 0 {
		spec.RateLimitPerHour = DefaultRateLimit
	}
	if spec.RateLimitPerHour < 1 || spec.RateLimitPerHour > MaxRateLimit {
		return Channel{}, "", fmt.Errorf("%w: rate limit must be 1 to %d messages per hour", ErrInvalid, MaxRateLimit)
	}
	p := store.CreateNotifyChannelParams{Name: spec.Name, Kind: spec.Kind, ToAdmins: spec.ToAdmins, RateLimitPerHour: spec.RateLimitPerHour}
	generated := ""
	switch spec.Kind {
	case KindInbox:
		if !spec.ToAdmins || len(spec.To) > 0 || spec.URL != "" || spec.Secret != "" {
			return Channel{}, "", fmt.Errorf("%w: an inbox channel reaches every admin and takes no address, URL or secret", ErrInvalid)
		}
	case KindEmail:
		if spec.URL != "" || spec.Secret != "" {
			return Channel{}, "", fmt.Errorf("%w: an email channel takes addresses, not a URL or secret", ErrInvalid)
		}
		if len(spec.To) == 0 && !spec.ToAdmins {
			return Channel{}, "", fmt.Errorf("%w: an email channel needs at least one address", ErrInvalid)
		}
		if len(spec.To) > maxRecipients {
			return Channel{}, "", fmt.Errorf("%w: at most %d addresses", ErrInvalid, maxRecipients)
		}
		for _, a := range spec.To {
			addr, err := mail.ParseAddress(a)
			if err != nil || addr.Address != a || len(a) > 254 {
				return Channel{}, "", fmt.Errorf("%w: %q is not an email address", ErrInvalid, cut(a, 60))
			}
		}
		p.Recipients = spec.To
	case KindSlack, KindDiscord, KindWebhook:
		if len(spec.To) > 0 || spec.ToAdmins {
			return Channel{}, "", fmt.Errorf("%w: a %s channel takes a URL, not addresses", ErrInvalid, spec.Kind)
		}
		u, err := checkURL(spec.URL, s.cfg.AllowPrivateTargets)
		if err != nil {
			return Channel{}, "", err
		}
		cfg := channelConfig{URL: spec.URL}
		if spec.Kind == KindWebhook {
			if spec.Secret == "" {
				if generated, err = newSecret(); err != nil {
					return Channel{}, "", err
				}
				spec.Secret = generated
			}
			if _, err := secretKey(spec.Secret); err != nil {
				return Channel{}, "", err
			}
			cfg.Secret = spec.Secret
		} else if spec.Secret != "" {
			return Channel{}, "", fmt.Errorf("%w: only a webhook channel takes a secret", ErrInvalid)
		}
		b, err := json.Marshal(cfg)
		if err != nil {
			return Channel{}, "", err
		}
		p.Config = b
		p.URLHost = u.Hostname()
	default:
		return Channel{}, "", fmt.Errorf("%w: channel kind %q (want inbox, email, slack, discord or webhook)", ErrInvalid, cut(spec.Kind, 20))
	}
	c, err := s.st.CreateNotifyChannel(ctx, p)
	if err != nil {
		return Channel{}, "", fmt.Errorf("add channel %s: %w", spec.Name, err)
	}
	return channelOf(c), generated, nil
}

// newSecret makes a Standard Webhooks secret: whsec_ + base64 of 32 random
// bytes.
func newSecret() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate secret: %w", err)
	}
	return secretPrefix + base64.StdEncoding.EncodeToString(b[:]), nil
}

// secretKey decodes a whsec_ secret into its HMAC key.
func secretKey(secret string) ([]byte, error) {
	b64, ok := strings.CutPrefix(secret, secretPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: the secret must start with %q", ErrInvalid, secretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(key) < 24 || len(key) > 64 {
		return nil, fmt.Errorf("%w: the secret must be %q and the base64 of 24 to 64 bytes", ErrInvalid, secretPrefix)
	}
	return key, nil
}

// Channels lists the channels.
func (s *Service) Channels(ctx context.Context) ([]Channel, error) {
	cs, err := s.st.NotifyChannels(ctx)
	if err != nil {
		return nil, err
	}
	givenUp, err := s.st.NotifyGivenUpCounts(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Channel, len(cs))
	for i, c := range cs {
		out[i] = channelOf(c)
		out[i].GivenUp = givenUp[c.ID]
	}
	return out, nil
}

// Channel gets a channel by name (store.ErrNotFound when there is none).
func (s *Service) Channel(ctx context.Context, name string) (Channel, error) {
	c, err := s.st.NotifyChannelByName(ctx, name)
	if err != nil {
		return Channel{}, err
	}
	givenUp, err := s.st.NotifyGivenUpCounts(ctx)
	if err != nil {
		return Channel{}, err
	}
	out := channelOf(c)
	out.GivenUp = givenUp[c.ID]
	return out, nil
}

// RemoveChannel deletes a channel, its rules and its pending messages.
func (s *Service) RemoveChannel(ctx context.Context, name string) error {
	c, err := s.st.NotifyChannelByName(ctx, name)
	if err != nil {
		return err
	}
	return s.st.DeleteNotifyChannel(ctx, c.ID)
}

// TestChannel sends a test message to a channel now (not through the
// outbox) and records the result on the channel like any delivery.
func (s *Service) TestChannel(ctx context.Context, name string) error {
	c, err := s.st.NotifyChannelByName(ctx, name)
	if err != nil {
		return err
	}
	now := s.cfg.Now()
	if c.Kind == KindInbox {
		admins, err := s.st.ActiveAdminIDs(ctx)
		if err != nil {
			return err
		}
		for _, u := range admins {
			if _, _, err := s.st.CreateNotification(ctx, store.CreateNotificationParams{
				UserID: u, Kind: "notify.test", Title: "Test notification from Berth", Body: "This channel works.",
			}); err != nil {
				return err
			}
		}
		return s.st.NotifyChannelDelivered(ctx, c.ID, now)
	}
	m := message{
		ID: store.NewID(), Kind: "notify.test", Level: Info, Title: "Test notification from Berth",
		Body: "This channel works.", At: now,
	}
	return s.sendAndRecord(ctx, c, m)
}

// Delivery is one message to a channel, as shown: what it is about and
// how its delivery went, never the channel's URL.
type Delivery struct {
	ID            store.ID // the webhook-id
	ChannelID     store.ID
	Channel       string
	EventID       *store.ID // nil for a digest
	EventKind     string    // notify.digest for a digest
	Title         string
	Status        string // pending, delivered, failed, merged, held, digested
	Attempts      int
	LastError     string
	NextAttemptAt *time.Time // pending only: when it is tried (again)
	DeliveredAt   *time.Time
	CreatedAt     time.Time
	// DeliveredTo and RefusedTo are an email message's addresses that
	// have it and those the mail server refused for good (address -> its
	// reply); a message with any refused ends failed once the others
	// have it. Empty for other kinds.
	DeliveredTo []string
	RefusedTo   map[string]string
}

// DeliveryStatuses are the outbox states a delivery list filters on.
var DeliveryStatuses = []string{"pending", "delivered", "failed", "merged", "held", "digested"}

// MaxDeliveries bounds one delivery listing.
const MaxDeliveries = 200

// DeliveryFilter narrows a delivery list: a channel's name and a status
// ("" for any), and at most Limit rows (0: 50).
type DeliveryFilter struct {
	Channel string
	Status  string
	Limit   int
}

// Deliveries lists the latest messages, newest first, filtered by f. An
// unknown channel is store.ErrNotFound; a malformed filter ErrInvalid.
func (s *Service) Deliveries(ctx context.Context, f DeliveryFilter) ([]Delivery, error) {
	if f.Limit == 0 {
		f.Limit = 50
	}
	if f.Limit < 0 || f.Limit > MaxDeliveries {
		return nil, fmt.Errorf("%w: limit must be 1 to %d", ErrInvalid, MaxDeliveries)
	}
	if f.Status != "" && !slices.Contains(DeliveryStatuses, f.Status) {
		return nil, fmt.Errorf("%w: status %q (want %s)", ErrInvalid, cut(f.Status, 20), strings.Join(DeliveryStatuses, ", "))
	}
	sf := store.NotifyDeliveryFilter{Status: f.Status, Limit: f.Limit}
	if f.Channel != "" {
		if err := checkName(f.Channel); err != nil {
			return nil, err
		}
		c, err := s.st.NotifyChannelByName(ctx, f.Channel)
		if err != nil {
			return nil, fmt.Errorf("channel %s: %w", f.Channel, err)
		}
		sf.ChannelID = &c.ID
	}
	rows, err := s.st.NotifyDeliveries(ctx, sf)
	if err != nil {
		return nil, err
	}
	out := make([]Delivery, len(rows))
	for i, r := range rows {
		out[i] = Delivery{
			ID: r.ID, ChannelID: r.ChannelID, Channel: r.ChannelName, EventID: r.EventID, EventKind: r.EventKind, Title: r.Title,
			Status: r.Status, Attempts: r.Attempts, LastError: r.LastError, DeliveredAt: r.DeliveredAt, CreatedAt: r.CreatedAt,
			DeliveredTo: r.DeliveredTo, RefusedTo: r.RefusedTo,
		}
		if r.Status == "pending" {
			next := r.NextAttemptAt
			out[i].NextAttemptAt = &next
		}
	}
	return out, nil
}

// RuleSpec describes a rule to add.
type RuleSpec struct {
	// Events: kind patterns, an exact kind, "prefix.*" or "*" (1 to 50).
	Events   []string
	Channel  string // the channel's name
	ServerID *store.ID
	AppID    *store.ID
	MinLevel Level // default info
}

// Rule is a stored rule. ServerName and AppName are filled in by Rules
// for display.
type Rule struct {
	ID         store.ID
	Events     []string
	Channel    string
	ServerID   *store.ID
	ServerName string
	AppID      *store.ID
	AppName    string
	MinLevel   Level
}

var patternRE = regexp.MustCompile(`^(\*|[a-z][a-z0-9_]*(\.[a-z0-9_]+)*(\.\*)?)$`)

// AddRule validates and stores a rule.
func (s *Service) AddRule(ctx context.Context, spec RuleSpec) (Rule, error) {
	if len(spec.Events) == 0 || len(spec.Events) > 50 {
		return Rule{}, fmt.Errorf("%w: a rule needs 1 to 50 event patterns", ErrInvalid)
	}
	for _, p := range spec.Events {
		if len(p) > 100 || !patternRE.MatchString(p) {
			return Rule{}, fmt.Errorf("%w: event pattern %q (want a kind such as deployment.failed, deployment.* or *)", ErrInvalid, cut(p, 100))
		}
	}
	if spec.MinLevel == "" {
		spec.MinLevel = Info
	}
	if !spec.MinLevel.valid() {
		return Rule{}, fmt.Errorf("%w: level %q (want info, warning or critical)", ErrInvalid, cut(string(spec.MinLevel), 20))
	}
	c, err := s.st.NotifyChannelByName(ctx, spec.Channel)
	if err != nil {
		return Rule{}, fmt.Errorf("channel %q: %w", cut(spec.Channel, 63), err)
	}
	r, err := s.st.CreateNotifyRule(ctx, store.NotifyRule{
		ChannelID: c.ID, Events: spec.Events, ServerID: spec.ServerID, AppID: spec.AppID, MinLevel: string(spec.MinLevel),
	})
	if err != nil {
		return Rule{}, fmt.Errorf("add rule: %w", err)
	}
	return Rule{ID: r.ID, Events: r.Events, Channel: c.Name, ServerID: r.ServerID, AppID: r.AppID, MinLevel: Level(r.MinLevel)}, nil
}

// Rules lists the rules.
func (s *Service) Rules(ctx context.Context) ([]Rule, error) {
	rs, err := s.st.NotifyRules(ctx)
	if err != nil {
		return nil, err
	}
	cs, err := s.st.NotifyChannels(ctx)
	if err != nil {
		return nil, err
	}
	names := map[store.ID]string{}
	for _, c := range cs {
		names[c.ID] = c.Name
	}
	// Rules with a filter are few; their server and app names are looked
	// up one by one (a rule's server or app is deleted with its rule).
	servers, apps := map[store.ID]string{}, map[store.ID]string{}
	out := make([]Rule, len(rs))
	for i, r := range rs {
		out[i] = Rule{ID: r.ID, Events: r.Events, Channel: names[r.ChannelID], ServerID: r.ServerID, AppID: r.AppID, MinLevel: Level(r.MinLevel)}
		if r.ServerID != nil {
			if _, ok := servers[*r.ServerID]; !ok {
				srv, err := s.st.Server(ctx, *r.ServerID)
				if err != nil && !errors.Is(err, store.ErrNotFound) {
					return nil, err
				}
				servers[*r.ServerID] = srv.Name
			}
			out[i].ServerName = servers[*r.ServerID]
		}
		if r.AppID != nil {
			if _, ok := apps[*r.AppID]; !ok {
				app, err := s.st.App(ctx, *r.AppID)
				if err != nil && !errors.Is(err, store.ErrNotFound) {
					return nil, err
				}
				apps[*r.AppID] = app.Name
			}
			out[i].AppName = apps[*r.AppID]
		}
	}
	return out, nil
}

// RemoveRule deletes a rule.
func (s *Service) RemoveRule(ctx context.Context, id store.ID) error {
	return s.st.DeleteNotifyRule(ctx, id)
}

// DefaultEvents are what the default rules send: failures, alerts and
// security events (and the "resolved" events that close them).
var DefaultEvents = []string{
	KindDeploymentFailed, KindDeploymentTimedOut, KindServerOffline, KindServerOnline,
	"backup.failed", "backup.verification_failed", "certificate.*", "alert.firing", "alert.resolved", "security.*",
}

// defaultEmailChannel is the email channel EnsureDefaults adds.
const defaultEmailChannel = "admins-email"

// EnsureDefaults adds, on a controller that has an SMTP relay and no email
// channel yet, an email channel to every admin with the default rule. (The
// inbox default comes with the migration.) Safe on every start and on
// several controllers at once.
func (s *Service) EnsureDefaults(ctx context.Context, smtpConfigured bool) error {
	if !smtpConfigured {
		return nil
	}
	n, err := s.st.CountNotifyChannelsOfKind(ctx, KindEmail)
	if err != nil || n > 0 {
		return err
	}
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		c, err := tx.CreateNotifyChannel(ctx, store.CreateNotifyChannelParams{Name: defaultEmailChannel, Kind: KindEmail, ToAdmins: true, RateLimitPerHour: DefaultRateLimit})
		if err != nil {
			return err
		}
		_, err = tx.CreateNotifyRule(ctx, store.NotifyRule{ChannelID: c.ID, Events: DefaultEvents, MinLevel: string(Info)})
		return err
	})
	if errors.Is(err, store.ErrConflict) {
		return nil // another controller did it
	}
	return err
}

// Inbox lists a user's notifications, newest first.
func (s *Service) Inbox(ctx context.Context, userID store.ID, f store.NotificationFilter) ([]store.Notification, error) {
	return s.st.Notifications(ctx, userID, f)
}

// UnreadCount is a user's unread count.
func (s *Service) UnreadCount(ctx context.Context, userID store.ID) (int64, error) {
	return s.st.UnreadNotificationCount(ctx, userID)
}

// MarkRead marks one of a user's notifications read.
func (s *Service) MarkRead(ctx context.Context, userID, id store.ID) error {
	_, err := s.st.MarkNotificationRead(ctx, userID, id)
	return err
}

// MarkAllRead marks a user's inbox read.
func (s *Service) MarkAllRead(ctx context.Context, userID store.ID) (int64, error) {
	return s.st.MarkAllNotificationsRead(ctx, userID)
}
