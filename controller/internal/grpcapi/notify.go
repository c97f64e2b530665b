package grpcapi

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthhq/berth/controller/internal/alert"
	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/notify"
	"github.com/berthhq/berth/controller/internal/store"
	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
)

// notifyServer is the gRPC face of the notifications service: the same
// principal-taking methods the web UI calls, so scopes and audit are the
// same.
type notifyServer struct {
	adminv1.UnimplementedNotificationServiceServer
	d Deps
}

// Request bounds, checked before the service sees a request, so an
// oversized request is refused with a clear message and no database work.
const (
	maxNotifyField = 4096 // a URL, secret, name or address
	maxNotifyList  = 50   // addresses or event patterns
)

func notifyPeer(ctx context.Context) notify.Peer {
	p := peerOf(ctx)
	return notify.Peer{IP: p.IP, UserAgent: p.UserAgent}
}

// notifyStatus maps notify errors; the rest goes to toStatus.
func notifyStatus(err error) error {
	switch {
	case errors.Is(err, notify.ErrInvalid), errors.Is(err, notify.ErrPrivateTarget), errors.Is(err, alert.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return toStatus(err)
}

func checkSizes(fields []string, lists ...[]string) error {
	for _, f := range fields {
		if len(f) > maxNotifyField {
			return status.Errorf(codes.InvalidArgument, "a field is longer than %d bytes", maxNotifyField)
		}
	}
	for _, l := range lists {
		if len(l) > maxNotifyList {
			return status.Errorf(codes.InvalidArgument, "at most %d items in a list", maxNotifyList)
		}
		for _, f := range l {
			if len(f) > maxNotifyField {
				return status.Errorf(codes.InvalidArgument, "a field is longer than %d bytes", maxNotifyField)
			}
		}
	}
	return nil
}

func notifyChannelPB(c notify.Channel) *adminv1.NotifyChannel {
	out := &adminv1.NotifyChannel{
		Id: c.ID.String(), Name: c.Name, Kind: c.Kind, To: c.To, ToAdmins: c.ToAdmins, UrlHost: c.Host,
		RateLimitPerHour: int32(c.RateLimitPerHour), LastError: c.LastError, CreatedAt: timestamppb.New(c.CreatedAt),
		GivenUp: c.GivenUp,
	}
	if c.FailingSince != nil {
		out.FailingSince = timestamppb.New(*c.FailingSince)
	}
	if c.LastDeliveredAt != nil {
		out.LastDeliveredAt = timestamppb.New(*c.LastDeliveredAt)
	}
	return out
}

func notifyRulePB(r notify.Rule) *adminv1.NotifyRule {
	out := &adminv1.NotifyRule{Id: r.ID.String(), Events: r.Events, Channel: r.Channel, MinLevel: string(r.MinLevel)}
	if r.ServerID != nil {
		out.ServerId = r.ServerID.String()
	}
	if r.AppID != nil {
		out.AppId = r.AppID.String()
	}
	return out
}

func notificationPB(n store.Notification) *adminv1.Notification {
	out := &adminv1.Notification{
		Id: n.ID.String(), Kind: n.Kind, Level: string(n.Level), Title: n.Title, Body: n.Body, Link: n.Link,
		CreatedAt: timestamppb.New(n.CreatedAt),
	}
	if n.ReadAt != nil {
		out.ReadAt = timestamppb.New(*n.ReadAt)
	}
	return out
}

func (s *notifyServer) AddChannel(ctx context.Context, req *adminv1.AddChannelRequest) (*adminv1.AddChannelResponse, error) {
	if err := checkSizes([]string{req.GetName(), req.GetKind(), req.GetUrl(), req.GetSecret()}, req.GetTo()); err != nil {
		return nil, err
	}
	c, secret, err := s.d.Notify.AddChannelAs(ctx, auth.PrincipalFrom(ctx), notifyPeer(ctx), notify.ChannelSpec{
		Name: req.GetName(), Kind: strings.ToLower(req.GetKind()), To: req.GetTo(), URL: req.GetUrl(), Secret: req.GetSecret(),
		RateLimitPerHour: int(req.GetRateLimitPerHour()),
	})
	if err != nil {
		return nil, notifyStatus(err)
	}
	return &adminv1.AddChannelResponse{Channel: notifyChannelPB(c), WebhookSecret: secret}, nil
}

func (s *notifyServer) ListChannels(ctx context.Context, _ *adminv1.ListChannelsRequest) (*adminv1.ListChannelsResponse, error) {
	cs, err := s.d.Notify.ChannelsAs(ctx, auth.PrincipalFrom(ctx))
	if err != nil {
		return nil, notifyStatus(err)
	}
	out := &adminv1.ListChannelsResponse{}
	for _, c := range cs {
		out.Channels = append(out.Channels, notifyChannelPB(c))
	}
	return out, nil
}

func (s *notifyServer) TestChannel(ctx context.Context, req *adminv1.TestChannelRequest) (*adminv1.TestChannelResponse, error) {
	if err := checkSizes([]string{req.GetName()}); err != nil {
		return nil, err
	}
	c, err := s.d.Notify.TestChannelAs(ctx, auth.PrincipalFrom(ctx), notifyPeer(ctx), req.GetName())
	if err != nil {
		// A send that failed is the receiver's answer, not bad input: the
		// channel's last_error says what happened.
		if !errors.Is(err, notify.ErrInvalid) && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, auth.ErrForbidden) && !errors.Is(err, auth.ErrUnauthenticated) && c.Name != "" {
			return nil, status.Errorf(codes.Unavailable, "test message to %s failed: %s", c.Name, c.LastError)
		}
		return nil, notifyStatus(err)
	}
	return &adminv1.TestChannelResponse{Channel: notifyChannelPB(c)}, nil
}

func (s *notifyServer) RemoveChannel(ctx context.Context, req *adminv1.RemoveChannelRequest) (*adminv1.RemoveChannelResponse, error) {
	if err := checkSizes([]string{req.GetName()}); err != nil {
		return nil, err
	}
	if err := s.d.Notify.RemoveChannelAs(ctx, auth.PrincipalFrom(ctx), notifyPeer(ctx), req.GetName()); err != nil {
		return nil, notifyStatus(err)
	}
	return &adminv1.RemoveChannelResponse{}, nil
}

func (s *notifyServer) UpdateChannel(ctx context.Context, req *adminv1.UpdateChannelRequest) (*adminv1.UpdateChannelResponse, error) {
	if err := checkSizes([]string{req.GetName()}); err != nil {
		return nil, err
	}
	var u notify.ChannelUpdate
	if req.RateLimitPerHour != nil {
		n := int(req.GetRateLimitPerHour())
		u.RateLimitPerHour = &n
	}
	c, err := s.d.Notify.UpdateChannelAs(ctx, auth.PrincipalFrom(ctx), notifyPeer(ctx), req.GetName(), u)
	if err != nil {
		return nil, notifyStatus(err)
	}
	return &adminv1.UpdateChannelResponse{Channel: notifyChannelPB(c)}, nil
}

func (s *notifyServer) AddRule(ctx context.Context, req *adminv1.AddRuleRequest) (*adminv1.AddRuleResponse, error) {
	if err := checkSizes([]string{req.GetChannel(), req.GetServer(), req.GetApp(), req.GetMinLevel()}, req.GetEvents()); err != nil {
		return nil, err
	}
	r, err := s.d.Notify.AddRuleAs(ctx, auth.PrincipalFrom(ctx), notifyPeer(ctx), notify.RuleRequest{
		Events: req.GetEvents(), Channel: req.GetChannel(), Server: req.GetServer(), App: req.GetApp(), MinLevel: notify.Level(req.GetMinLevel()),
	})
	if err != nil {
		return nil, notifyStatus(err)
	}
	return &adminv1.AddRuleResponse{Rule: notifyRulePB(r)}, nil
}

func (s *notifyServer) ListRules(ctx context.Context, _ *adminv1.ListRulesRequest) (*adminv1.ListRulesResponse, error) {
	rs, err := s.d.Notify.RulesAs(ctx, auth.PrincipalFrom(ctx))
	if err != nil {
		return nil, notifyStatus(err)
	}
	out := &adminv1.ListRulesResponse{}
	for _, r := range rs {
		out.Rules = append(out.Rules, notifyRulePB(r))
	}
	return out, nil
}

func (s *notifyServer) RemoveRule(ctx context.Context, req *adminv1.RemoveRuleRequest) (*adminv1.RemoveRuleResponse, error) {
	if err := checkSizes([]string{req.GetId()}); err != nil {
		return nil, err
	}
	if err := s.d.Notify.RemoveRuleAs(ctx, auth.PrincipalFrom(ctx), notifyPeer(ctx), req.GetId()); err != nil {
		return nil, notifyStatus(err)
	}
	return &adminv1.RemoveRuleResponse{}, nil
}

func (s *notifyServer) ListNotifications(ctx context.Context, req *adminv1.ListNotificationsRequest) (*adminv1.ListNotificationsResponse, error) {
	ns, err := s.d.Notify.InboxAs(ctx, auth.PrincipalFrom(ctx), req.GetUnreadOnly(), int(req.GetLimit()))
	if err != nil {
		return nil, notifyStatus(err)
	}
	out := &adminv1.ListNotificationsResponse{}
	for _, n := range ns {
		out.Notifications = append(out.Notifications, notificationPB(n))
	}
	return out, nil
}

func (s *notifyServer) MarkNotificationsRead(ctx context.Context, req *adminv1.MarkNotificationsReadRequest) (*adminv1.MarkNotificationsReadResponse, error) {
	if err := checkSizes([]string{req.GetId()}); err != nil {
		return nil, err
	}
	ref := req.GetId()
	switch {
	case req.GetAll() && ref != "":
		return nil, status.Error(codes.InvalidArgument, "give an id or all, not both")
	case req.GetAll():
		ref = "all"
	case ref == "" || ref == "all":
		return nil, status.Error(codes.InvalidArgument, "give a notification id, or all")
	}
	n, err := s.d.Notify.MarkReadAs(ctx, auth.PrincipalFrom(ctx), ref)
	if err != nil {
		return nil, notifyStatus(err)
	}
	return &adminv1.MarkNotificationsReadResponse{Marked: n}, nil
}

func (s *notifyServer) GetUnreadCount(ctx context.Context, _ *adminv1.GetUnreadCountRequest) (*adminv1.GetUnreadCountResponse, error) {
	n, err := s.d.Notify.UnreadCountAs(ctx, auth.PrincipalFrom(ctx))
	if err != nil {
		return nil, notifyStatus(err)
	}
	return &adminv1.GetUnreadCountResponse{Unread: n}, nil
}

func notifyDeliveryPB(d notify.Delivery) *adminv1.NotifyDelivery {
	out := &adminv1.NotifyDelivery{
		Id: d.ID.String(), Channel: d.Channel, EventKind: d.EventKind, Title: d.Title, Status: d.Status,
		Attempts: int32(d.Attempts), LastError: d.LastError, CreatedAt: timestamppb.New(d.CreatedAt),
		DeliveredTo: d.DeliveredTo, RefusedTo: d.RefusedTo,
	}
	if d.EventID != nil {
		out.EventId = d.EventID.String()
	}
	if d.NextAttemptAt != nil {
		out.NextAttemptAt = timestamppb.New(*d.NextAttemptAt)
	}
	if d.DeliveredAt != nil {
		out.DeliveredAt = timestamppb.New(*d.DeliveredAt)
	}
	return out
}

func (s *notifyServer) ListDeliveries(ctx context.Context, req *adminv1.ListDeliveriesRequest) (*adminv1.ListDeliveriesResponse, error) {
	if err := checkSizes([]string{req.GetChannel(), req.GetStatus()}); err != nil {
		return nil, err
	}
	ds, err := s.d.Notify.DeliveriesAs(ctx, auth.PrincipalFrom(ctx), notify.DeliveryFilter{
		Channel: req.GetChannel(), Status: req.GetStatus(), Limit: int(req.GetLimit()),
	})
	if err != nil {
		return nil, notifyStatus(err)
	}
	out := &adminv1.ListDeliveriesResponse{}
	for _, d := range ds {
		out.Deliveries = append(out.Deliveries, notifyDeliveryPB(d))
	}
	return out, nil
}
