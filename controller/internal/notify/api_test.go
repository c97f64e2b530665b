package notify

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
)

func principal(t *testing.T, e *env, email string, role store.UserRole, sc store.Scope) *auth.Principal {
	t.Helper()
	u, err := e.st.CreateUser(context.Background(), store.CreateUserParams{Email: email, Name: email, PasswordHash: "$argon2id$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA", Role: role})
	if err != nil {
		t.Fatal(err)
	}
	return &auth.Principal{UserID: u.ID, Email: u.Email, Role: role, Scopes: []store.Scope{sc}}
}

// Channels and rules need the admin scope; nobody (nil principal) and a
// deploy-scope caller are refused before anything changes.
func TestAPIAuthorisation(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	s := e.service(t, true)
	op := principal(t, e, "op@example.test", store.RoleOperator, store.ScopeDeploy)
	spec := ChannelSpec{Name: "ops", Kind: KindEmail, To: []string{"ops@example.test"}}
	for _, pr := range []*auth.Principal{nil, op} {
		want := auth.ErrForbidden
		if pr == nil {
			want = auth.ErrUnauthenticated
		}
		if _, _, err := s.AddChannelAs(ctx, pr, Peer{}, spec); !errors.Is(err, want) {
			t.Errorf("add channel as %v: %v, want %v", pr, err, want)
		}
		if _, err := s.ChannelsAs(ctx, pr); !errors.Is(err, want) {
			t.Errorf("channels: %v", err)
		}
		if _, err := s.ChannelAs(ctx, pr, "admins-inbox"); !errors.Is(err, want) {
			t.Errorf("channel: %v", err)
		}
		if _, err := s.DeliveriesAs(ctx, pr, DeliveryFilter{}); !errors.Is(err, want) {
			t.Errorf("deliveries: %v", err)
		}
		if _, err := s.TestChannelAs(ctx, pr, Peer{}, "inbox"); !errors.Is(err, want) {
			t.Errorf("test: %v", err)
		}
		if err := s.RemoveChannelAs(ctx, pr, Peer{}, "inbox"); !errors.Is(err, want) {
			t.Errorf("remove: %v", err)
		}
		if _, err := s.UpdateChannelAs(ctx, pr, Peer{}, "admins-inbox", ChannelUpdate{RateLimitPerHour: new(1)}); !errors.Is(err, want) {
			t.Errorf("update: %v", err)
		}
		if _, err := s.AddRuleAs(ctx, pr, Peer{}, RuleRequest{Events: []string{"*"}, Channel: "inbox"}); !errors.Is(err, want) {
			t.Errorf("add rule: %v", err)
		}
		if _, err := s.RulesAs(ctx, pr); !errors.Is(err, want) {
			t.Errorf("rules: %v", err)
		}
		if err := s.RemoveRuleAs(ctx, pr, Peer{}, store.NewID().String()); !errors.Is(err, want) {
			t.Errorf("remove rule: %v", err)
		}
	}
	if _, err := s.InboxAs(ctx, nil, false, 0); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("inbox as nobody: %v", err)
	}
	if _, err := s.UnreadCountAs(ctx, nil); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("unread as nobody: %v", err)
	}
	if _, err := s.MarkReadAs(ctx, nil, "all"); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("mark read as nobody: %v", err)
	}
	if _, err := e.st.NotifyChannelByName(ctx, "ops"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refused add left a channel: %v", err)
	}
	if c, err := e.st.NotifyChannelByName(ctx, "admins-inbox"); err != nil || c.RateLimitPerHour != DefaultRateLimit {
		t.Errorf("a refused update changed the inbox channel: %+v %v", c, err)
	}
}

// An admin changes a channel's rate limit in place, the install's inbox
// channel included: out of range, nothing to change and a bad name are
// ErrInvalid, an unknown channel ErrNotFound; the change is audited and
// holds from the next message on (lowered to 1 an hour, the first of
// three events goes out and the rest are held back for the digest).
func TestAPIUpdateChannelRateLimit(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	s := e.service(t, true)
	admin := &auth.Principal{UserID: e.admin, Email: "admin@example.test", Role: store.RoleAdmin, Scopes: []store.Scope{store.ScopeAdmin}}
	for _, tc := range []struct {
		name string
		u    ChannelUpdate
		want error
	}{
		{"admins-inbox", ChannelUpdate{}, ErrInvalid},
		{"admins-inbox", ChannelUpdate{RateLimitPerHour: new(0)}, ErrInvalid},
		{"admins-inbox", ChannelUpdate{RateLimitPerHour: new(-1)}, ErrInvalid},
		{"admins-inbox", ChannelUpdate{RateLimitPerHour: new(MaxRateLimit + 1)}, ErrInvalid},
		{"Not A Name", ChannelUpdate{RateLimitPerHour: new(5)}, ErrInvalid},
		{"nope", ChannelUpdate{RateLimitPerHour: new(5)}, store.ErrNotFound},
	} {
		if _, err := s.UpdateChannelAs(ctx, admin, Peer{}, tc.name, tc.u); !errors.Is(err, tc.want) {
			t.Errorf("%s %+v: %v, want %v", tc.name, tc.u, err, tc.want)
		}
	}
	c, err := s.UpdateChannelAs(ctx, admin, Peer{UserAgent: "test"}, "admins-inbox", ChannelUpdate{RateLimitPerHour: new(MaxRateLimit)})
	if err != nil || c.RateLimitPerHour != MaxRateLimit || c.Name != "admins-inbox" {
		t.Fatalf("update the inbox channel: %+v %v", c, err)
	}

	rcv := newReceiver(t, testSecret)
	if _, _, err := s.AddChannelAs(ctx, admin, Peer{}, ChannelSpec{Name: "hook", Kind: KindWebhook, URL: rcv.URL, Secret: testSecret}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddRuleAs(ctx, admin, Peer{}, RuleRequest{Events: []string{"backup.*"}, Channel: "hook"}); err != nil {
		t.Fatal(err)
	}
	if c, err = s.UpdateChannelAs(ctx, admin, Peer{}, "hook", ChannelUpdate{RateLimitPerHour: new(1)}); err != nil || c.RateLimitPerHour != 1 {
		t.Fatalf("lower the hook's limit: %+v %v", c, err)
	}
	for i := range 3 {
		if _, err := s.Publish(ctx, Event{Kind: "backup.failed", Title: "backup " + strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	drain(t, s)
	if _, ids, _, _, _ := rcv.snapshot(); len(ids) != 1 {
		t.Fatalf("the receiver got %d messages, want 1 within the new limit of 1 an hour", len(ids))
	}
	dels, err := s.DeliveriesAs(ctx, admin, DeliveryFilter{Channel: "hook"})
	if err != nil {
		t.Fatal(err)
	}
	held := 0
	for _, d := range dels {
		if d.Status == "held" {
			held++
		}
	}
	if held != 2 {
		t.Fatalf("%d held, want 2", held)
	}

	acts, err := e.st.ActivityLog(ctx, store.ActivityFilter{Limit: 50})
	if err != nil {
		t.Fatal(err)
	}
	var updates []string
	for _, a := range acts {
		if a.Action == "notify_channel.updated" {
			b, _ := json.Marshal(a.Changes)
			updates = append(updates, a.SubjectName+" "+string(b))
		}
	}
	want := []string{`hook {"rate_limit_per_hour":{"new":1,"old":20}}`, `admins-inbox {"rate_limit_per_hour":{"new":10000,"old":20}}`}
	if strings.Join(updates, "; ") != strings.Join(want, "; ") {
		t.Fatalf("activity: %v, want %v", updates, want)
	}
}

// An admin's changes are audited (never with the URL or secret); bad input
// is ErrInvalid, unknown names ErrNotFound, taken names ErrConflict.
func TestAPIAdminChangesAudited(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	s := e.service(t, true)
	admin := &auth.Principal{UserID: e.admin, Email: "admin@example.test", Role: store.RoleAdmin, Scopes: []store.Scope{store.ScopeAdmin}}
	rcv := newReceiver(t, "")
	url := rcv.URL + "/hook?token=sekrit-token"
	c, secret, err := s.AddChannelAs(ctx, admin, Peer{UserAgent: "test"}, ChannelSpec{Name: "hook", Kind: KindWebhook, URL: url})
	if err != nil || !strings.HasPrefix(secret, "whsec_") || c.Host != "127.0.0.1" {
		t.Fatalf("add: %+v %q %v", c, secret, err)
	}
	if _, _, err := s.AddChannelAs(ctx, admin, Peer{}, ChannelSpec{Name: "hook", Kind: KindWebhook, URL: url}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("taken name: %v", err)
	}
	for _, spec := range []ChannelSpec{
		{Name: "in2", Kind: KindInbox, ToAdmins: true},
		{Name: "mail2", Kind: KindEmail, ToAdmins: true},
		{Name: "BAD", Kind: KindEmail, To: []string{"a@example.test"}},
		{Name: "rate-low", Kind: KindEmail, To: []string{"a@example.test"}, RateLimitPerHour: -1},
		{Name: "rate-high", Kind: KindEmail, To: []string{"a@example.test"}, RateLimitPerHour: MaxRateLimit + 1},
	} {
		if _, _, err := s.AddChannelAs(ctx, admin, Peer{}, spec); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want invalid", spec, err)
		}
	}
	if _, err := s.TestChannelAs(ctx, admin, Peer{}, "hook"); err != nil {
		t.Fatalf("test channel: %v", err)
	}
	if n, _, _, _, _ := rcv.snapshot(); n != 1 {
		t.Errorf("receiver got %d requests, want 1", n)
	}
	if _, err := s.TestChannelAs(ctx, admin, Peer{}, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("test unknown: %v", err)
	}
	if _, err := s.TestChannelAs(ctx, admin, Peer{}, strings.Repeat("x", 500)); !errors.Is(err, ErrInvalid) {
		t.Errorf("test oversized name: %v", err)
	}
	r, err := s.AddRuleAs(ctx, admin, Peer{}, RuleRequest{Events: []string{"deployment.*"}, Channel: "hook", MinLevel: Warning})
	if err != nil || r.Channel != "hook" || r.MinLevel != Warning {
		t.Fatalf("add rule: %+v %v", r, err)
	}
	for _, req := range []RuleRequest{
		{Events: []string{"Deploy!"}, Channel: "hook"},
		{Events: []string{"*"}, Channel: "hook", Server: "no such server!"},
		{Events: []string{"*"}, Channel: "hook", App: strings.Repeat("a", 1000)},
		{Events: []string{"*"}, Channel: "hook", MinLevel: "loud"},
	} {
		if _, err := s.AddRuleAs(ctx, admin, Peer{}, req); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want invalid", req, err)
		}
	}
	if _, err := s.AddRuleAs(ctx, admin, Peer{}, RuleRequest{Events: []string{"*"}, Channel: "hook", Server: "web-9"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown server: %v", err)
	}
	if _, err := s.AddRuleAs(ctx, admin, Peer{}, RuleRequest{Events: []string{"*"}, Channel: "nope"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown channel: %v", err)
	}
	if err := s.RemoveRuleAs(ctx, admin, Peer{}, "not-an-id"); !errors.Is(err, ErrInvalid) {
		t.Errorf("remove rule bad id: %v", err)
	}
	if err := s.RemoveRuleAs(ctx, admin, Peer{}, store.NewID().String()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("remove unknown rule: %v", err)
	}
	if err := s.RemoveRuleAs(ctx, admin, Peer{}, r.ID.String()); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveChannelAs(ctx, admin, Peer{}, "hook"); err != nil {
		t.Fatal(err)
	}
	acts, err := e.st.ActivityLog(ctx, store.ActivityFilter{Limit: 50})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, a := range acts {
		got[a.Action]++
		if a.Actor != "admin@example.test" || a.UserID == nil || *a.UserID != e.admin {
			t.Errorf("%s: actor %q", a.Action, a.Actor)
		}
		b, _ := json.Marshal(a)
		if strings.Contains(string(b), "sekrit") || strings.Contains(string(b), secret) {
			t.Errorf("%s carries a secret: %s", a.Action, b)
		}
	}
	for _, want := range []string{"notify_channel.created", "notify_channel.tested", "notify_rule.created", "notify_rule.deleted", "notify_channel.deleted"} {
		if got[want] != 1 {
			t.Errorf("activity %s: %d entries, want 1 (all: %v)", want, got[want], got)
		}
	}
}

// The inbox is the caller's own: a viewer (read scope) lists, counts and
// marks only their notifications; another user's id is not found.
func TestAPIInboxIsOwn(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	s := e.service(t, true)
	viewer := principal(t, e, "viewer@example.test", store.RoleViewer, store.ScopeRead)
	mine, _, err := e.st.CreateNotification(ctx, store.CreateNotificationParams{UserID: viewer.UserID, Kind: "deployment.failed", Title: "mine"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.st.CreateNotification(ctx, store.CreateNotificationParams{UserID: viewer.UserID, Kind: "deployment.failed", Title: "mine 2"}); err != nil {
		t.Fatal(err)
	}
	theirs, _, err := e.st.CreateNotification(ctx, store.CreateNotificationParams{UserID: e.admin, Kind: "deployment.failed", Title: "theirs"})
	if err != nil {
		t.Fatal(err)
	}
	ns, err := s.InboxAs(ctx, viewer, true, 0)
	if err != nil || len(ns) != 2 {
		t.Fatalf("inbox: %d %v", len(ns), err)
	}
	for _, n := range ns {
		if n.UserID != viewer.UserID {
			t.Errorf("someone else's notification listed: %+v", n)
		}
	}
	for _, lim := range []int{-1, MaxInboxPage + 1} {
		if _, err := s.InboxAs(ctx, viewer, false, lim); !errors.Is(err, ErrInvalid) {
			t.Errorf("limit %d: %v", lim, err)
		}
	}
	if _, err := s.MarkReadAs(ctx, viewer, theirs.ID.String()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("mark another's: %v", err)
	}
	if _, err := s.MarkReadAs(ctx, viewer, "bogus"); !errors.Is(err, ErrInvalid) {
		t.Errorf("mark bogus: %v", err)
	}
	if n, err := s.MarkReadAs(ctx, viewer, mine.ID.String()); err != nil || n != 1 {
		t.Fatalf("mark mine: %d %v", n, err)
	}
	if n, err := s.UnreadCountAs(ctx, viewer); err != nil || n != 1 {
		t.Fatalf("unread: %d %v", n, err)
	}
	if n, err := s.MarkReadAs(ctx, viewer, "all"); err != nil || n != 1 {
		t.Fatalf("mark all: %d %v", n, err)
	}
	if n, _ := s.UnreadCountAs(ctx, viewer); n != 0 {
		t.Errorf("unread after all: %d", n)
	}
	if n, _ := e.st.UnreadNotificationCount(ctx, e.admin); n != 1 {
		t.Errorf("the admin's unread changed: %d", n)
	}
}
