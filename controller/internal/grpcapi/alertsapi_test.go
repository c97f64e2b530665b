package grpcapi_test

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/berthhq/berth/controller/internal/ca"
	"github.com/berthhq/berth/controller/internal/store"
	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
)

// The alert rules of NotificationService over gRPC: an admin adds, shows,
// lists and removes them; bad input is InvalidArgument, a taken name
// AlreadyExists, an unknown one NotFound, a reader PermissionDenied.
func TestAlertRulesAPI(t *testing.T) {
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
	if _, err := e.fleetAdd(context.Background(), "web-1"); err != nil {
		t.Fatal(err)
	}

	add := &adminv1.AddAlertRequest{Name: "tmp-full", Metric: "disk", Above: proto.Float64(50), For: durationpb.New(10 * time.Second),
		Mount: "/mnt/t", Server: "web-1", Level: "critical"}
	res, err := c.AddAlert(as(admin), add)
	if err != nil {
		t.Fatal(err)
	}
	r := res.GetAlert()
	if r.GetServerName() != "web-1" || r.GetServerId() == "" || r.GetAbove() != 50 || r.GetResolveBelow() != 45 ||
		r.GetFor().AsDuration() != 10*time.Second || r.GetMount() != "/mnt/t" || r.GetLevel() != "critical" {
		t.Fatalf("added: %v", r)
	}
	if _, err := c.AddAlert(as(admin), add); code(err) != codes.AlreadyExists {
		t.Errorf("duplicate: %v", err)
	}
	if _, err := c.AddAlert(as(reader), &adminv1.AddAlertRequest{Name: "x", Metric: "cpu", Above: proto.Float64(90)}); code(err) != codes.PermissionDenied {
		t.Errorf("reader adds: %v", err)
	}
	for _, bad := range []*adminv1.AddAlertRequest{
		{Name: "x", Metric: "temperature", Above: proto.Float64(1)},
		{Name: "x", Metric: "cpu"},
		{Name: "x", Metric: "cpu", Above: proto.Float64(-1)},
		{Name: "x", Metric: "cpu", Above: proto.Float64(math.NaN())},
		{Name: "x", Metric: "cpu", Above: proto.Float64(50), Server: "web-1", Label: "env=prod"},
		{Name: "x", Metric: "cpu", Above: proto.Float64(50), Mount: "/"},
		{Name: "x", Metric: "cpu", Above: proto.Float64(50), For: durationpb.New(-time.Second)},
		{Name: "x", Metric: "cpu", Above: proto.Float64(50), For: durationpb.New(48 * time.Hour)},
		{Name: "x", Metric: "cpu", Above: proto.Float64(50), For: &durationpb.Duration{Seconds: 1, Nanos: -1}},
		{Name: "x", Metric: "offline", Above: proto.Float64(1)},
		{Name: strings.Repeat("n", 5000), Metric: "cpu", Above: proto.Float64(50)},
		{Name: "x", Metric: "disk", Above: proto.Float64(50), Mount: "/" + strings.Repeat("m", 5000)},
	} {
		if _, err := c.AddAlert(as(admin), bad); code(err) != codes.InvalidArgument {
			t.Errorf("%.80v: %v, want InvalidArgument", bad, err)
		}
	}
	if _, err := c.AddAlert(as(admin), &adminv1.AddAlertRequest{Name: "x", Metric: "cpu", Above: proto.Float64(50), Server: "web-404"}); code(err) != codes.NotFound {
		t.Errorf("unknown server: %v", err)
	}

	rep, err := c.AddAlert(as(admin), &adminv1.AddAlertRequest{Name: "tmp-full", Metric: "disk", Above: proto.Float64(60), Mount: "/mnt/t", Replace: true})
	if err != nil || rep.GetAlert().GetId() != r.GetId() || rep.GetAlert().GetAbove() != 60 || rep.GetAlert().GetServerId() != "" {
		t.Fatalf("replace: %v %v", rep, err)
	}
	got, err := c.GetAlert(as(reader), &adminv1.GetAlertRequest{Name: "tmp-full"})
	if err != nil || got.GetAlert().GetId() != r.GetId() || len(got.GetAlert().GetFiring()) != 0 {
		t.Fatalf("get: %v %v", got, err)
	}
	if _, err := c.GetAlert(as(reader), &adminv1.GetAlertRequest{Name: "nope"}); code(err) != codes.NotFound {
		t.Errorf("get unknown: %v", err)
	}
	list, err := c.ListAlerts(as(reader), &adminv1.ListAlertsRequest{})
	if err != nil || len(list.GetAlerts()) != 4 { // the three defaults and ours
		t.Fatalf("list: %v %v", list, err)
	}
	if _, err := c.ListAlerts(context.Background(), &adminv1.ListAlertsRequest{}); code(err) != codes.Unauthenticated {
		t.Errorf("list without a token: %v", err)
	}
	if _, err := c.RemoveAlert(as(reader), &adminv1.RemoveAlertRequest{Name: "tmp-full"}); code(err) != codes.PermissionDenied {
		t.Errorf("reader removes: %v", err)
	}
	if _, err := c.RemoveAlert(as(admin), &adminv1.RemoveAlertRequest{Name: "tmp-full"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RemoveAlert(as(admin), &adminv1.RemoveAlertRequest{Name: "tmp-full"}); code(err) != codes.NotFound {
		t.Errorf("remove again: %v", err)
	}
}
