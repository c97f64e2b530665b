package grpcapi_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/berthhq/berth/controller/internal/ca"
	"github.com/berthhq/berth/controller/internal/store"
	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
)

// NotificationService over gRPC: an admin adds, lists and removes channels
// and rules (URLs and secrets never come back); malformed, oversized and
// unauthorised requests get InvalidArgument, NotFound or PermissionDenied;
// the inbox is the caller's own.
func TestNotificationServiceAPI(t *testing.T) {
	t.Parallel()
	e := setupMatrix(t)
	admin, _ := e.token(t, "admin", store.ScopeAdmin)
	reader, _ := e.token(t, "reader", store.ScopeRead)
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(ca.ClientTLSConfig(e.ca.Pool(), nil))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := adminv1.NewNotificationServiceClient(conn)
	as := func(tok string) context.Context {
		return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
	}
	code := func(err error) codes.Code { return status.Code(err) }

	// Private targets are refused (this server does not allow them).
	if _, err := c.AddChannel(as(admin), &adminv1.AddChannelRequest{Name: "hook", Kind: "webhook", Url: "https://127.0.0.1/hook"}); code(err) != codes.InvalidArgument {
		t.Errorf("loopback webhook: %v", err)
	}
	url := "https://hooks.example.com/services/T000/B000/sekrit-token"
	resp, err := c.AddChannel(as(admin), &adminv1.AddChannelRequest{Name: "slack", Kind: "slack", Url: url})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetChannel().GetUrlHost() != "hooks.example.com" || resp.GetWebhookSecret() != "" {
		t.Errorf("slack channel: %v", resp)
	}
	wh, err := c.AddChannel(as(admin), &adminv1.AddChannelRequest{Name: "hook", Kind: "webhook", Url: "https://receiver.example.com/in"})
	if err != nil || !strings.HasPrefix(wh.GetWebhookSecret(), "whsec_") {
		t.Fatalf("webhook: %v %v", wh, err)
	}
	list, err := c.ListChannels(as(admin), &adminv1.ListChannelsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if s := list.String(); strings.Contains(s, "sekrit") || strings.Contains(s, wh.GetWebhookSecret()) || !strings.Contains(s, "slack") {
		t.Errorf("listing shows a secret or misses a channel: %s", s)
	}
	if _, err := c.AddChannel(as(admin), &adminv1.AddChannelRequest{Name: "slack", Kind: "slack", Url: url}); code(err) != codes.AlreadyExists {
		t.Errorf("taken name: %v", err)
	}
	for _, bad := range []*adminv1.AddChannelRequest{
		{Name: "x", Kind: "sms"},
		{Name: "x", Kind: "inbox"},
		{Name: "x", Kind: "webhook", Url: "not a url"},
		{Name: "x", Kind: "webhook", Url: "https://example.com/" + strings.Repeat("a", 5000)},
		{Name: strings.Repeat("n", 5000), Kind: "email", To: []string{"a@example.com"}},
		{Name: "x", Kind: "email", To: make([]string, 51)},
		{Name: "x", Kind: "email", To: []string{"not an address"}},
		{Name: "x", Kind: "webhook", Url: "https://example.com/", Secret: "whsec_short"},
		{Name: "x", Kind: "email", To: []string{"a@example.com"}, RateLimitPerHour: 10001},
		{Name: "x", Kind: "email", To: []string{"a@example.com"}, RateLimitPerHour: -1},
	} {
		_, err := c.AddChannel(as(admin), bad)
		if code(err) != codes.InvalidArgument {
			t.Errorf("%.80v: %v, want InvalidArgument", bad, err)
		}
		if err != nil && strings.Contains(err.Error(), "sekrit") {
			t.Errorf("error carries a secret: %v", err)
		}
	}
	// A rate limit out of range says so; one in range is stored and
	// listed (0 is the default, 20).
	if _, err := c.AddChannel(as(admin), &adminv1.AddChannelRequest{Name: "rated", Kind: "email", To: []string{"a@example.com"}, RateLimitPerHour: 10001}); code(err) != codes.InvalidArgument ||
		!strings.Contains(status.Convert(err).Message(), "rate limit must be 1 to 10000 messages per hour") {
		t.Errorf("rate limit 10001: %v", err)
	}
	rated, err := c.AddChannel(as(admin), &adminv1.AddChannelRequest{Name: "rated", Kind: "email", To: []string{"a@example.com"}, RateLimitPerHour: 10000})
	if err != nil || rated.GetChannel().GetRateLimitPerHour() != 10000 {
		t.Fatalf("rate limit 10000: %v %v", rated, err)
	}
	all, err := c.ListChannels(as(admin), &adminv1.ListChannelsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range all.GetChannels() {
		want := int32(20)
		if ch.GetName() == "rated" {
			want = 10000
		}
		if ch.GetRateLimitPerHour() != want {
			t.Errorf("%s lists rate limit %d, want %d", ch.GetName(), ch.GetRateLimitPerHour(), want)
		}
	}
	// UpdateChannel changes the limit in place, the install's inbox
	// channel included; out of range, nothing to change, unknown and
	// unauthorised requests are refused and change nothing.
	for _, bad := range []*adminv1.UpdateChannelRequest{
		{Name: "rated"},
		{Name: "rated", RateLimitPerHour: new(int32(0))},
		{Name: "rated", RateLimitPerHour: new(int32(-5))},
		{Name: "rated", RateLimitPerHour: new(int32(10001))},
		{Name: "Not A Name", RateLimitPerHour: new(int32(5))},
		{Name: strings.Repeat("n", 5000), RateLimitPerHour: new(int32(5))},
	} {
		if _, err := c.UpdateChannel(as(admin), bad); code(err) != codes.InvalidArgument {
			t.Errorf("update %.60v: %v, want InvalidArgument", bad, err)
		}
	}
	if _, err := c.UpdateChannel(as(admin), &adminv1.UpdateChannelRequest{Name: "nope", RateLimitPerHour: new(int32(5))}); code(err) != codes.NotFound {
		t.Errorf("update unknown: %v", err)
	}
	if _, err := c.UpdateChannel(as(reader), &adminv1.UpdateChannelRequest{Name: "rated", RateLimitPerHour: new(int32(5))}); code(err) != codes.PermissionDenied {
		t.Errorf("reader updates: %v", err)
	}
	upd, err := c.UpdateChannel(as(admin), &adminv1.UpdateChannelRequest{Name: "admins-inbox", RateLimitPerHour: new(int32(50))})
	if err != nil || upd.GetChannel().GetRateLimitPerHour() != 50 || upd.GetChannel().GetName() != "admins-inbox" {
		t.Fatalf("update the inbox channel: %v %v", upd, err)
	}
	all, err = c.ListChannels(as(admin), &adminv1.ListChannelsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range all.GetChannels() {
		want := int32(20)
		switch ch.GetName() {
		case "rated":
			want = 10000
		case "admins-inbox":
			want = 50
		}
		if ch.GetRateLimitPerHour() != want {
			t.Errorf("after the update %s lists rate limit %d, want %d", ch.GetName(), ch.GetRateLimitPerHour(), want)
		}
	}
	if _, err := c.RemoveChannel(as(admin), &adminv1.RemoveChannelRequest{Name: "rated"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddChannel(as(reader), &adminv1.AddChannelRequest{Name: "r", Kind: "email", To: []string{"a@example.com"}, RateLimitPerHour: 5}); code(err) != codes.PermissionDenied {
		t.Errorf("reader adds a channel: %v", err)
	}
	if _, err := c.TestChannel(as(admin), &adminv1.TestChannelRequest{Name: "nope"}); code(err) != codes.NotFound {
		t.Errorf("test unknown: %v", err)
	}

	if _, err := e.fleetAdd(context.Background(), "web-1"); err != nil {
		t.Fatal(err)
	}
	rule, err := c.AddRule(as(admin), &adminv1.AddRuleRequest{Events: []string{"deployment.*", "server.offline"}, Channel: "hook", Server: "web-1", MinLevel: "warning"})
	if err != nil || rule.GetRule().GetServerId() == "" || rule.GetRule().GetChannel() != "hook" {
		t.Fatalf("add rule: %v %v", rule, err)
	}
	for _, bad := range []*adminv1.AddRuleRequest{
		{Channel: "hook"},
		{Events: []string{"Not A Kind"}, Channel: "hook"},
		{Events: make([]string, 51), Channel: "hook"},
		{Events: []string{"*"}, Channel: "hook", MinLevel: "loud"},
	} {
		if _, err := c.AddRule(as(admin), bad); code(err) != codes.InvalidArgument {
			t.Errorf("%.80v: %v, want InvalidArgument", bad, err)
		}
	}
	if _, err := c.AddRule(as(admin), &adminv1.AddRuleRequest{Events: []string{"*"}, Channel: "hook", Server: "web-404"}); code(err) != codes.NotFound {
		t.Errorf("unknown server: %v", err)
	}
	rules, err := c.ListRules(as(admin), &adminv1.ListRulesRequest{})
	if err != nil || len(rules.GetRules()) < 2 { // the install's inbox default and ours
		t.Fatalf("rules: %v %v", rules, err)
	}
	if _, err := c.RemoveRule(as(admin), &adminv1.RemoveRuleRequest{Id: "nope"}); code(err) != codes.InvalidArgument {
		t.Errorf("remove rule bad id: %v", err)
	}
	if _, err := c.RemoveRule(as(admin), &adminv1.RemoveRuleRequest{Id: rule.GetRule().GetId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RemoveChannel(as(reader), &adminv1.RemoveChannelRequest{Name: "slack"}); code(err) != codes.PermissionDenied {
		t.Errorf("reader removes: %v", err)
	}
	if _, err := c.RemoveChannel(as(admin), &adminv1.RemoveChannelRequest{Name: "slack"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RemoveChannel(as(admin), &adminv1.RemoveChannelRequest{Name: "slack"}); code(err) != codes.NotFound {
		t.Errorf("remove again: %v", err)
	}

	// The inbox: the caller's own (the token's user).
	ctx := context.Background()
	n, _, err := e.st.CreateNotification(ctx, store.CreateNotificationParams{UserID: e.userID, Kind: "deployment.failed", Title: "Deploy of shop failed"})
	if err != nil {
		t.Fatal(err)
	}
	inbox, err := c.ListNotifications(as(reader), &adminv1.ListNotificationsRequest{UnreadOnly: true})
	if err != nil || len(inbox.GetNotifications()) != 1 || inbox.GetNotifications()[0].GetId() != n.ID.String() {
		t.Fatalf("inbox: %v %v", inbox, err)
	}
	if _, err := c.ListNotifications(as(reader), &adminv1.ListNotificationsRequest{Limit: 100000}); code(err) != codes.InvalidArgument {
		t.Errorf("oversized limit: %v", err)
	}
	for _, bad := range []*adminv1.MarkNotificationsReadRequest{{}, {Id: "x", All: true}, {Id: "bogus"}} {
		if _, err := c.MarkNotificationsRead(as(reader), bad); code(err) != codes.InvalidArgument {
			t.Errorf("mark %v: %v", bad, err)
		}
	}
	if _, err := c.MarkNotificationsRead(as(reader), &adminv1.MarkNotificationsReadRequest{Id: store.NewID().String()}); code(err) != codes.NotFound {
		t.Errorf("mark unknown: %v", err)
	}
	if u, err := c.GetUnreadCount(as(reader), &adminv1.GetUnreadCountRequest{}); err != nil || u.GetUnread() != 1 {
		t.Fatalf("unread: %v %v", u, err)
	}
	if m, err := c.MarkNotificationsRead(as(reader), &adminv1.MarkNotificationsReadRequest{Id: n.ID.String()}); err != nil || m.GetMarked() != 1 {
		t.Fatalf("mark: %v %v", m, err)
	}
	if u, err := c.GetUnreadCount(as(reader), &adminv1.GetUnreadCountRequest{}); err != nil || u.GetUnread() != 0 {
		t.Fatalf("unread after: %v %v", u, err)
	}
	if _, err := c.GetUnreadCount(context.Background(), &adminv1.GetUnreadCountRequest{}); code(err) != codes.Unauthenticated {
		t.Errorf("no token: %v", err)
	}
}
