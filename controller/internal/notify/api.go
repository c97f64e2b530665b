package notify

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
)

// The principal-taking entry points below are what every interface (gRPC,
// CLI through gRPC, web UI) calls: authorisation, validation and audit
// happen here, in one place. Channels and rules need the admin scope; the
// inbox is the caller's own and needs the read scope. The methods without
// a principal (AddChannel, Inbox, ...) are for internal callers that act
// as the system.

// Peer is where a request came from, for the audit trail. (notify cannot
// use fleet.Peer: fleet publishes events through this package.)
type Peer struct {
	IP        *netip.Addr
	UserAgent string
}

// MaxInboxPage bounds one inbox listing.
const MaxInboxPage = 200

func (s *Service) activity(ctx context.Context, pr *auth.Principal, peer Peer, action, subjectType string, id store.ID, name string, changes map[string]any) {
	p := store.CreateActivityParams{
		Action: action, SubjectType: subjectType, SubjectID: &id, SubjectName: name, Changes: changes,
		IPAddress: peer.IP, UserAgent: peer.UserAgent,
	}
	p.ActorType, p.Actor, p.UserID = pr.Actor()
	if _, err := s.st.CreateActivity(ctx, p); err != nil {
		s.log.Error("record activity", "action", action, "err", err)
	}
}

// AddChannelAs adds a channel for an admin. The inbox kind is not offered:
// the install's inbox channel comes with the migration. The audit entry
// records the kind, addresses and URL host, never the URL or secret.
func (s *Service) AddChannelAs(ctx context.Context, pr *auth.Principal, peer Peer, spec ChannelSpec) (Channel, string, error) {
	if err := auth.Require(pr, store.ScopeAdmin); err != nil {
		return Channel{}, "", err
	}
	if spec.Kind == KindInbox || spec.ToAdmins {
		return Channel{}, "", fmt.Errorf("%w: channel kind must be email, slack, discord or webhook, with its own addresses or URL", ErrInvalid)
	}
	c, secret, err := s.AddChannel(ctx, spec)
	if err != nil {
		return Channel{}, "", err
	}
	changes := map[string]any{"kind": c.Kind, "rate_limit_per_hour": c.RateLimitPerHour}
	if len(c.To) > 0 {
		changes["to"] = c.To
	}
	if c.Host != "" {
		changes["url_host"] = c.Host
	}
	s.activity(ctx, pr, peer, kind.NotifyChannelCreated, "notify_channel", c.ID, c.Name, changes)
	return c, secret, nil
}

// ChannelsAs lists the channels for an admin.
func (s *Service) ChannelsAs(ctx context.Context, pr *auth.Principal) ([]Channel, error) {
	if err := auth.Require(pr, store.ScopeAdmin); err != nil {
		return nil, err
	}
	return s.Channels(ctx)
}

// ChannelAs gets one channel by name for an admin.
func (s *Service) ChannelAs(ctx context.Context, pr *auth.Principal, name string) (Channel, error) {
	if err := auth.Require(pr, store.ScopeAdmin); err != nil {
		return Channel{}, err
	}
	if err := checkName(name); err != nil {
		return Channel{}, err
	}
	c, err := s.Channel(ctx, name)
	if err != nil {
		return Channel{}, fmt.Errorf("channel %s: %w", name, err)
	}
	return c, nil
}

// TestChannelAs sends a test message for an admin and returns the channel
// as it is after the attempt (its last_error shows a failure). A failed
// send is reported in the error too.
func (s *Service) TestChannelAs(ctx context.Context, pr *auth.Principal, peer Peer, name string) (Channel, error) {
	if err := auth.Require(pr, store.ScopeAdmin); err != nil {
		return Channel{}, err
	}
	if err := checkName(name); err != nil {
		return Channel{}, err
	}
	c, err := s.Channel(ctx, name)
	if err != nil {
		return Channel{}, fmt.Errorf("channel %s: %w", name, err)
	}
	sendErr := s.TestChannel(ctx, name)
	result := "delivered"
	if sendErr != nil {
		result = "failed"
	}
	s.activity(ctx, pr, peer, kind.NotifyChannelTested, "notify_channel", c.ID, c.Name, map[string]any{"result": result})
	if after, err := s.Channel(ctx, name); err == nil {
		c = after
	}
	if sendErr != nil {
		return c, fmt.Errorf("test channel %s: %w", name, sendErr)
	}
	return c, nil
}

// RemoveChannelAs deletes a channel for an admin.
func (s *Service) RemoveChannelAs(ctx context.Context, pr *auth.Principal, peer Peer, name string) error {
	if err := auth.Require(pr, store.ScopeAdmin); err != nil {
		return err
	}
	if err := checkName(name); err != nil {
		return err
	}
	c, err := s.Channel(ctx, name)
	if err != nil {
		return fmt.Errorf("channel %s: %w", name, err)
	}
	if err := s.RemoveChannel(ctx, name); err != nil {
		return fmt.Errorf("remove channel %s: %w", name, err)
	}
	s.activity(ctx, pr, peer, kind.NotifyChannelDeleted, "notify_channel", c.ID, c.Name, map[string]any{"kind": c.Kind})
	return nil
}

// ChannelUpdate is a change to a channel: each field set is changed, the
// others are kept. (A channel's URL, secret and addresses are not changed
// in place: remove and add it.)
type ChannelUpdate struct {
	// RateLimitPerHour: 1 to MaxRateLimit messages an hour.
	RateLimitPerHour *int
}

// UpdateChannelAs changes a channel for an admin, the install's inbox and
// email channels included. The change holds from the next message on
// (every publish and delivery reads the channel's limit). A request that
// changes nothing is refused, so a typo in a client never passes for a
// change.
func (s *Service) UpdateChannelAs(ctx context.Context, pr *auth.Principal, peer Peer, name string, u ChannelUpdate) (Channel, error) {
	if err := auth.Require(pr, store.ScopeAdmin); err != nil {
		return Channel{}, err
	}
	if err := checkName(name); err != nil {
		return Channel{}, err
	}
	if u.RateLimitPerHour == nil {
		return Channel{}, fmt.Errorf("%w: nothing to change: give a rate limit", ErrInvalid)
	}
	if n := *u.RateLimitPerHour; n < 1 || n > MaxRateLimit {
		return Channel{}, fmt.Errorf("%w: rate limit must be 1 to %d messages per hour", ErrInvalid, MaxRateLimit)
	}
	old, err := s.st.NotifyChannelByName(ctx, name)
	if err != nil {
		return Channel{}, fmt.Errorf("channel %s: %w", name, err)
	}
	if _, err := s.st.SetNotifyChannelRateLimit(ctx, old.ID, *u.RateLimitPerHour); err != nil {
		return Channel{}, fmt.Errorf("channel %s: %w", name, err)
	}
	s.activity(ctx, pr, peer, kind.NotifyChannelUpdated, "notify_channel", old.ID, old.Name,
		map[string]any{"rate_limit_per_hour": map[string]any{"old": old.RateLimitPerHour, "new": *u.RateLimitPerHour}})
	c, err := s.Channel(ctx, name)
	if err != nil {
		return Channel{}, fmt.Errorf("channel %s: %w", name, err)
	}
	return c, nil
}

// RuleRequest is a rule as an interface names it: server and app by name
// or id ("" for any).
type RuleRequest struct {
	Events   []string
	Channel  string
	Server   string
	App      string
	MinLevel Level
}

// AddRuleAs adds a rule for an admin.
func (s *Service) AddRuleAs(ctx context.Context, pr *auth.Principal, peer Peer, req RuleRequest) (Rule, error) {
	if err := auth.Require(pr, store.ScopeAdmin); err != nil {
		return Rule{}, err
	}
	if err := checkName(req.Channel); err != nil {
		return Rule{}, err
	}
	spec := RuleSpec{Events: req.Events, Channel: req.Channel, MinLevel: req.MinLevel}
	var serverName, appName string
	if req.Server != "" {
		srv, err := s.resolveServer(ctx, req.Server)
		if err != nil {
			return Rule{}, err
		}
		spec.ServerID, serverName = &srv.ID, srv.Name
	}
	if req.App != "" {
		app, err := s.resolveApp(ctx, req.App)
		if err != nil {
			return Rule{}, err
		}
		spec.AppID, appName = &app.ID, app.Name
	}
	r, err := s.AddRule(ctx, spec)
	if err != nil {
		return Rule{}, err
	}
	r.ServerName, r.AppName = serverName, appName
	changes := map[string]any{"events": r.Events, "channel": r.Channel, "min_level": string(r.MinLevel)}
	if req.Server != "" {
		changes["server"] = req.Server
	}
	if req.App != "" {
		changes["app"] = req.App
	}
	s.activity(ctx, pr, peer, kind.NotifyRuleCreated, "notify_rule", r.ID, r.Channel, changes)
	return r, nil
}

func (s *Service) resolveServer(ctx context.Context, ref string) (store.Server, error) {
	if len(ref) > 63*2 {
		return store.Server{}, fmt.Errorf("%w: server name too long", ErrInvalid)
	}
	if id, err := store.ParseID(ref); err == nil {
		srv, err := s.st.Server(ctx, id)
		if err != nil {
			return store.Server{}, fmt.Errorf("server %s: %w", ref, err)
		}
		return srv, nil
	}
	if !nameRE.MatchString(ref) {
		return store.Server{}, fmt.Errorf("%w: server %q is not a server name or id", ErrInvalid, cut(ref, 63))
	}
	srv, err := s.st.ServerByName(ctx, ref)
	if err != nil {
		return store.Server{}, fmt.Errorf("server %s: %w", ref, err)
	}
	return srv, nil
}

func (s *Service) resolveApp(ctx context.Context, ref string) (store.App, error) {
	if len(ref) > 63*2 {
		return store.App{}, fmt.Errorf("%w: app name too long", ErrInvalid)
	}
	if id, err := store.ParseID(ref); err == nil {
		app, err := s.st.App(ctx, id)
		if err != nil {
			return store.App{}, fmt.Errorf("app %s: %w", ref, err)
		}
		return app, nil
	}
	if !nameRE.MatchString(ref) {
		return store.App{}, fmt.Errorf("%w: app %q is not an app name or id", ErrInvalid, cut(ref, 63))
	}
	app, err := s.st.AppByName(ctx, ref)
	if err != nil {
		return store.App{}, fmt.Errorf("app %s: %w", ref, err)
	}
	return app, nil
}

// RulesAs lists the rules for an admin.
func (s *Service) RulesAs(ctx context.Context, pr *auth.Principal) ([]Rule, error) {
	if err := auth.Require(pr, store.ScopeAdmin); err != nil {
		return nil, err
	}
	return s.Rules(ctx)
}

// RemoveRuleAs deletes a rule, given its id, for an admin.
func (s *Service) RemoveRuleAs(ctx context.Context, pr *auth.Principal, peer Peer, ref string) error {
	if err := auth.Require(pr, store.ScopeAdmin); err != nil {
		return err
	}
	id, err := store.ParseID(ref)
	if err != nil {
		return fmt.Errorf("%w: rule %q is not a rule id", ErrInvalid, cut(ref, 40))
	}
	if err := s.RemoveRule(ctx, id); err != nil {
		return fmt.Errorf("rule %s: %w", id, err)
	}
	s.activity(ctx, pr, peer, kind.NotifyRuleDeleted, "notify_rule", id, "", nil)
	return nil
}

// InboxAs lists the caller's own notifications, newest first (1 to
// MaxInboxPage; 0 means 50).
func (s *Service) InboxAs(ctx context.Context, pr *auth.Principal, unreadOnly bool, limit int) ([]store.Notification, error) {
	if err := auth.Require(pr, store.ScopeRead); err != nil {
		return nil, err
	}
	if limit == 0 {
		limit = 50
	}
	if limit < 0 || limit > MaxInboxPage {
		return nil, fmt.Errorf("%w: limit must be 1 to %d", ErrInvalid, MaxInboxPage)
	}
	return s.Inbox(ctx, pr.UserID, store.NotificationFilter{UnreadOnly: unreadOnly, Limit: limit})
}

// UnreadCountAs is the caller's own unread count.
func (s *Service) UnreadCountAs(ctx context.Context, pr *auth.Principal) (int64, error) {
	if err := auth.Require(pr, store.ScopeRead); err != nil {
		return 0, err
	}
	return s.UnreadCount(ctx, pr.UserID)
}

// MarkReadAs marks one of the caller's own notifications read ("all":
// every one) and reports how many it marked (1 for one notification, read
// before or not). Another user's
// notification is not found. Reading one's inbox is not audited: it
// changes nothing but the caller's own view.
func (s *Service) MarkReadAs(ctx context.Context, pr *auth.Principal, ref string) (int64, error) {
	if err := auth.Require(pr, store.ScopeRead); err != nil {
		return 0, err
	}
	if ref == "all" {
		return s.MarkAllRead(ctx, pr.UserID)
	}
	id, err := store.ParseID(ref)
	if err != nil {
		return 0, fmt.Errorf("%w: %q is not a notification id or \"all\"", ErrInvalid, cut(ref, 40))
	}
	if _, err := s.st.MarkNotificationRead(ctx, pr.UserID, id); err != nil {
		return 0, fmt.Errorf("notification %s: %w", id, err)
	}
	return 1, nil
}

func checkName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w: channel name must be 1-63 lowercase letters, digits, '.', '_' or '-'", ErrInvalid)
	}
	return nil
}

// DeliveriesAs lists recent deliveries for an admin: every channel's or
// one's, in any status or one (see Deliveries).
func (s *Service) DeliveriesAs(ctx context.Context, pr *auth.Principal, f DeliveryFilter) ([]Delivery, error) {
	if err := auth.Require(pr, store.ScopeAdmin); err != nil {
		return nil, err
	}
	return s.Deliveries(ctx, f)
}
