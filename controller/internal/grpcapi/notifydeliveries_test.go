package grpcapi_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/berthhq/berth/controller/internal/ca"
	"github.com/berthhq/berth/controller/internal/notify"
	"github.com/berthhq/berth/controller/internal/store"
	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
)

// ListDeliveries over gRPC: an admin lists the outbox newest first,
// filtered by channel and status, with the event's kind, attempts, last
// error, next attempt and delivery time; the channel counts what was given
// up. Malformed, oversized and unknown filters get InvalidArgument or
// NotFound; a read token is refused, no token is unauthenticated.
func TestListDeliveriesAPI(t *testing.T) {
	t.Parallel()
	e := setupMatrix(t)
	admin, _ := e.token(t, "admin", store.ScopeAdmin)
	deployer, _ := e.token(t, "deployer", store.ScopeDeploy)
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(ca.ClientTLSConfig(e.ca.Pool(), nil))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := adminv1.NewNotificationServiceClient(conn)
	as := func(tok string) context.Context {
		return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
	}
	ctx := context.Background()

	chans := map[string]string{}
	for _, name := range []string{"up", "down"} {
		res, err := c.AddChannel(as(admin), &adminv1.AddChannelRequest{Name: name, Kind: "webhook", Url: "https://" + name + ".example.com/in?token=sekrit"})
		if err != nil {
			t.Fatal(err)
		}
		chans[res.GetChannel().GetId()] = name
		if _, err := c.AddRule(as(admin), &adminv1.AddRuleRequest{Events: []string{"deployment.*"}, Channel: name}); err != nil {
			t.Fatal(err)
		}
	}
	// Two events, one row each per channel; then, as a worker would,
	// deliver both of "up", give up the first of "down" and leave the
	// second pending with its error and next attempt.
	for _, title := range []string{"Deploy of shop failed", "Deploy of blog failed"} {
		if _, err := notify.Publish(ctx, e.st, notify.Event{Kind: notify.KindDeploymentFailed, Level: notify.Critical, Title: title, At: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	rows, err := e.st.ClaimNotifyOutbox(ctx, now.Add(time.Second), now.Add(time.Minute), 10)
	if err != nil || len(rows) != 4 {
		t.Fatalf("claim: %d %v", len(rows), err)
	}
	var next time.Time
	downSeen := 0
	for _, r := range rows {
		if chans[r.ChannelID.String()] == "up" {
			if _, err := e.st.MarkNotifyOutboxDelivered(ctx, r.ID, now); err != nil {
				t.Fatal(err)
			}
			continue
		}
		downSeen++
		// The claim's locked_until is the lease the holder records under.
		var ok bool
		if downSeen == 1 {
			ok, err = e.st.FailNotifyOutbox(ctx, r.ID, *r.LockedUntil, "post to down.example.com: HTTP 500")
		} else {
			next = now.Add(time.Hour).Truncate(time.Second)
			ok, err = e.st.RetryNotifyOutbox(ctx, r.ID, *r.LockedUntil, next, "post to down.example.com: HTTP 503")
		}
		if err != nil || !ok {
			t.Fatalf("record failure: %v %v", ok, err)
		}
	}

	all, err := c.ListDeliveries(as(admin), &adminv1.ListDeliveriesRequest{})
	if err != nil || len(all.GetDeliveries()) != 4 {
		t.Fatalf("all deliveries: %v %v", all, err)
	}
	for i, d := range all.GetDeliveries() {
		if d.GetEventKind() != "deployment.failed" || d.GetEventId() == "" || d.GetAttempts() != 1 || !strings.HasPrefix(d.GetTitle(), "Deploy of ") {
			t.Errorf("delivery %d: %v", i, d)
		}
		if i > 0 && d.GetCreatedAt().AsTime().After(all.GetDeliveries()[i-1].GetCreatedAt().AsTime()) {
			t.Errorf("not newest first at %d", i)
		}
	}
	if s := all.String(); strings.Contains(s, "sekrit") || strings.Contains(s, "/in") {
		t.Errorf("a delivery shows the channel's URL: %s", s)
	}
	up, err := c.ListDeliveries(as(admin), &adminv1.ListDeliveriesRequest{Channel: "up", Status: "delivered"})
	if err != nil || len(up.GetDeliveries()) != 2 {
		t.Fatalf("up delivered: %v %v", up, err)
	}
	for _, d := range up.GetDeliveries() {
		if d.GetChannel() != "up" || d.GetStatus() != "delivered" || d.GetDeliveredAt() == nil || d.GetNextAttemptAt() != nil || d.GetLastError() != "" {
			t.Errorf("up: %v", d)
		}
	}
	failed, err := c.ListDeliveries(as(admin), &adminv1.ListDeliveriesRequest{Status: "failed"})
	if err != nil || len(failed.GetDeliveries()) != 1 || failed.GetDeliveries()[0].GetChannel() != "down" ||
		failed.GetDeliveries()[0].GetLastError() != "post to down.example.com: HTTP 500" || failed.GetDeliveries()[0].GetDeliveredAt() != nil {
		t.Fatalf("failed: %v %v", failed, err)
	}
	pending, err := c.ListDeliveries(as(admin), &adminv1.ListDeliveriesRequest{Channel: "down", Status: "pending"})
	if err != nil || len(pending.GetDeliveries()) != 1 || !pending.GetDeliveries()[0].GetNextAttemptAt().AsTime().Equal(next) ||
		pending.GetDeliveries()[0].GetLastError() != "post to down.example.com: HTTP 503" {
		t.Fatalf("pending: %v %v (next %v)", pending, err, next)
	}
	if one, err := c.ListDeliveries(as(admin), &adminv1.ListDeliveriesRequest{Limit: 1}); err != nil || len(one.GetDeliveries()) != 1 {
		t.Fatalf("limit 1: %v %v", one, err)
	}
	list, err := c.ListChannels(as(admin), &adminv1.ListChannelsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range list.GetChannels() {
		want := int64(0)
		if ch.GetName() == "down" {
			want = 1
		}
		if ch.GetGivenUp() != want {
			t.Errorf("channel %s given up %d, want %d", ch.GetName(), ch.GetGivenUp(), want)
		}
	}

	for _, tc := range []struct {
		req  *adminv1.ListDeliveriesRequest
		want codes.Code
	}{
		{&adminv1.ListDeliveriesRequest{Status: "lost"}, codes.InvalidArgument},
		{&adminv1.ListDeliveriesRequest{Status: strings.Repeat("s", 5000)}, codes.InvalidArgument},
		{&adminv1.ListDeliveriesRequest{Channel: "Not A Name!"}, codes.InvalidArgument},
		{&adminv1.ListDeliveriesRequest{Channel: strings.Repeat("c", 5000)}, codes.InvalidArgument},
		{&adminv1.ListDeliveriesRequest{Limit: -1}, codes.InvalidArgument},
		{&adminv1.ListDeliveriesRequest{Limit: 100000}, codes.InvalidArgument},
		{&adminv1.ListDeliveriesRequest{Channel: "nope"}, codes.NotFound},
	} {
		if _, err := c.ListDeliveries(as(admin), tc.req); status.Code(err) != tc.want {
			t.Errorf("%.80v: %v, want %v", tc.req, err, tc.want)
		}
	}
	if _, err := c.ListDeliveries(as(deployer), &adminv1.ListDeliveriesRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("deploy token: %v", err)
	}
	if _, err := c.ListDeliveries(ctx, &adminv1.ListDeliveriesRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("no token: %v", err)
	}
}
