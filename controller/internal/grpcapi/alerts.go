package grpcapi

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthhq/berth/controller/internal/alert"
	"github.com/berthhq/berth/controller/internal/auth"
	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
)

// The alert rules of NotificationService: the same alert.Service methods
// the web UI calls.

func (s *notifyServer) alerts() (*alert.Service, error) {
	if s.d.Alerts == nil {
		return nil, status.Error(codes.Unimplemented, "threshold alerts are not enabled on this controller")
	}
	return s.d.Alerts, nil
}

func alertRulePB(r alert.Rule) *adminv1.AlertRule {
	out := &adminv1.AlertRule{
		Id: r.ID.String(), Name: r.Name, Metric: r.Metric, Above: r.Above, ResolveBelow: r.ResolveBelow,
		For: durationpb.New(r.For), Mount: r.Mount, ServerName: r.ServerName, LabelKey: r.LabelKey, LabelValue: r.LabelValue,
		Level: r.Level, CreatedAt: timestamppb.New(r.CreatedAt),
	}
	if r.ServerID != nil {
		out.ServerId = r.ServerID.String()
	}
	for _, f := range r.Firing {
		out.Firing = append(out.Firing, &adminv1.AlertFiring{
			ServerId: f.ServerID.String(), ServerName: f.ServerName, Mount: f.Mount,
			PendingSince: timestamppb.New(f.PendingSince), Since: timestamppb.New(f.Since), Value: f.Value,
		})
	}
	return out
}

func (s *notifyServer) AddAlert(ctx context.Context, req *adminv1.AddAlertRequest) (*adminv1.AddAlertResponse, error) {
	svc, err := s.alerts()
	if err != nil {
		return nil, err
	}
	if err := checkSizes([]string{req.GetName(), req.GetMetric(), req.GetMount(), req.GetServer(), req.GetLabel(), req.GetLevel()}); err != nil {
		return nil, err
	}
	spec := alert.Spec{
		Name: req.GetName(), Metric: req.GetMetric(), Above: req.Above, ResolveBelow: req.ResolveBelow,
		Mount: req.GetMount(), Server: req.GetServer(), Label: req.GetLabel(), Level: req.GetLevel(),
		Replace: req.GetReplace(),
	}
	if req.For != nil {
		if err := req.GetFor().CheckValid(); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "for: %v", err)
		}
		d := req.GetFor().AsDuration() // saturates: the service refuses it
		spec.For = &d
	}
	r, err := svc.AddAs(ctx, auth.PrincipalFrom(ctx), notifyPeer(ctx), spec)
	if err != nil {
		return nil, notifyStatus(err)
	}
	return &adminv1.AddAlertResponse{Alert: alertRulePB(r)}, nil
}

func (s *notifyServer) ListAlerts(ctx context.Context, _ *adminv1.ListAlertsRequest) (*adminv1.ListAlertsResponse, error) {
	svc, err := s.alerts()
	if err != nil {
		return nil, err
	}
	rs, err := svc.ListAs(ctx, auth.PrincipalFrom(ctx))
	if err != nil {
		return nil, notifyStatus(err)
	}
	out := &adminv1.ListAlertsResponse{}
	for _, r := range rs {
		out.Alerts = append(out.Alerts, alertRulePB(r))
	}
	return out, nil
}

func (s *notifyServer) GetAlert(ctx context.Context, req *adminv1.GetAlertRequest) (*adminv1.GetAlertResponse, error) {
	svc, err := s.alerts()
	if err != nil {
		return nil, err
	}
	if err := checkSizes([]string{req.GetName()}); err != nil {
		return nil, err
	}
	r, err := svc.GetAs(ctx, auth.PrincipalFrom(ctx), req.GetName())
	if err != nil {
		return nil, notifyStatus(err)
	}
	return &adminv1.GetAlertResponse{Alert: alertRulePB(r)}, nil
}

func (s *notifyServer) RemoveAlert(ctx context.Context, req *adminv1.RemoveAlertRequest) (*adminv1.RemoveAlertResponse, error) {
	svc, err := s.alerts()
	if err != nil {
		return nil, err
	}
	if err := checkSizes([]string{req.GetName()}); err != nil {
		return nil, err
	}
	if err := svc.RemoveAs(ctx, auth.PrincipalFrom(ctx), notifyPeer(ctx), req.GetName()); err != nil {
		return nil, notifyStatus(err)
	}
	return &adminv1.RemoveAlertResponse{}, nil
}
