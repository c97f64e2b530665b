package grpcapi

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/buildinfo"
	"github.com/berthhq/berth/controller/internal/store"
	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
)

type adminServer struct {
	adminv1.UnimplementedAdminServiceServer
	d Deps
}

func (a *adminServer) GetVersion(context.Context, *adminv1.GetVersionRequest) (*adminv1.GetVersionResponse, error) {
	return &adminv1.GetVersionResponse{Version: buildinfo.Version, Commit: buildinfo.Commit(), SchemaVersion: uint64(a.d.SchemaVersion)}, nil
}

func (a *adminServer) GetHealth(ctx context.Context, _ *adminv1.GetHealthRequest) (*adminv1.GetHealthResponse, error) {
	return &adminv1.GetHealthResponse{DatabaseOk: pingDB(ctx, a.d.Store)}, nil
}

func serverPB(s store.Server) *adminv1.Server {
	out := &adminv1.Server{
		Id: s.ID.String(), Name: s.Name, Status: string(s.Status), Labels: s.Labels, Hostname: s.Hostname,
		AgentVersion: s.AgentVersion, FactsJson: string(s.Facts), CreatedAt: timestamppb.New(s.CreatedAt),
		AllowRoot: s.AllowRoot,
	}
	if s.LastSeenAt != nil {
		out.LastSeenAt = timestamppb.New(*s.LastSeenAt)
	}
	if s.EnrolledAt != nil {
		out.EnrolledAt = timestamppb.New(*s.EnrolledAt)
	}
	if s.IPAddress != nil {
		out.IpAddress = s.IPAddress.String()
	}
	return out
}

func (a *adminServer) AddServer(ctx context.Context, req *adminv1.AddServerRequest) (*adminv1.AddServerResponse, error) {
	res, err := a.d.Fleet.AddServer(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), req.GetName(), req.GetLabels(), req.GetTokenTtl().AsDuration())
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.AddServerResponse{
		Server: serverPB(res.Server), Token: res.Token, TokenExpiresAt: timestamppb.New(res.TokenExpiresAt),
		CaPin: res.CAPin, EnrollCommand: res.EnrollCommand, InstallCommand: res.InstallCommand, Warnings: res.Warnings,
	}, nil
}

func (a *adminServer) ListServers(ctx context.Context, req *adminv1.ListServersRequest) (*adminv1.ListServersResponse, error) {
	f := store.ServerFilter{Status: store.ServerStatus(req.GetStatus()), Limit: int(req.GetLimit())}
	if req.GetBefore() != "" {
		id, err := store.ParseID(req.GetBefore())
		if err != nil {
			return nil, toStatus(err)
		}
		f.Before = &id
	}
	list, err := a.d.Fleet.List(ctx, auth.PrincipalFrom(ctx), f)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &adminv1.ListServersResponse{}
	for _, s := range list {
		out.Servers = append(out.Servers, serverPB(s))
	}
	if f.Limit > 0 && len(list) == f.Limit {
		out.NextBefore = list[len(list)-1].ID.String()
	}
	return out, nil
}

func (a *adminServer) GetServer(ctx context.Context, req *adminv1.GetServerRequest) (*adminv1.GetServerResponse, error) {
	s, err := a.d.Fleet.Get(ctx, auth.PrincipalFrom(ctx), req.GetServer())
	if err != nil {
		return nil, toStatus(err)
	}
	certs, err := a.d.Fleet.Certificates(ctx, auth.PrincipalFrom(ctx), s.ID)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &adminv1.GetServerResponse{Server: serverPB(s)}
	for _, c := range certs {
		pc := &adminv1.AgentCertificate{Serial: c.Serial, IssuedFor: c.IssuedFor, NotBefore: timestamppb.New(c.NotBefore), NotAfter: timestamppb.New(c.NotAfter), Revoked: c.RevokedAt != nil}
		if c.RevokedAt != nil {
			pc.RevokedAt = timestamppb.New(*c.RevokedAt)
		}
		if c.RevokeReason != nil {
			pc.RevokeReason = *c.RevokeReason
		}
		out.Certificates = append(out.Certificates, pc)
	}
	return out, nil
}

func (a *adminServer) RevokeCertificate(ctx context.Context, req *adminv1.RevokeCertificateRequest) (*adminv1.RevokeCertificateResponse, error) {
	id, err := a.d.Fleet.RevokeCertificate(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), req.GetSerial())
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.RevokeCertificateResponse{ServerId: id.String()}, nil
}

func (a *adminServer) RemoveServer(ctx context.Context, req *adminv1.RemoveServerRequest) (*adminv1.RemoveServerResponse, error) {
	if err := a.d.Fleet.Remove(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), req.GetServer()); err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.RemoveServerResponse{}, nil
}

func (a *adminServer) DisableServer(ctx context.Context, req *adminv1.DisableServerRequest) (*adminv1.DisableServerResponse, error) {
	s, err := a.d.Fleet.Disable(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), req.GetServer())
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.DisableServerResponse{Server: serverPB(s)}, nil
}

func val(p *float64) float64 {
	if p == nil {
		return 0
	}
	return *p
}

func (a *adminServer) GetMetrics(ctx context.Context, req *adminv1.GetMetricsRequest) (*adminv1.GetMetricsResponse, error) {
	pts, err := a.d.Fleet.Metrics(ctx, auth.PrincipalFrom(ctx), req.GetServer(), req.GetSince().AsDuration(), req.GetStep().AsDuration())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &adminv1.GetMetricsResponse{}
	for _, p := range pts {
		out.Points = append(out.Points, &adminv1.MetricPoint{
			T: timestamppb.New(p.T), CpuPercent: val(p.CPUPercent), Load1: val(p.Load1), Load5: val(p.Load5), Load15: val(p.Load15),
			MemUsed: val(p.MemUsed), MemTotal: val(p.MemTotal), SwapUsed: val(p.SwapUsed), SwapTotal: val(p.SwapTotal),
			DiskUsed: val(p.DiskUsed), DiskTotal: val(p.DiskTotal), DiskReadBps: val(p.DiskReadBps), DiskWriteBps: val(p.DiskWriteBps),
			NetRxBps: val(p.NetRxBps), NetTxBps: val(p.NetTxBps),
			// df's figure (used / (used + avail)), computed by the store.
			DiskAvail: val(p.DiskAvail), DiskPercent: val(p.DiskPercent), HasDiskPercent: p.DiskPercent != nil,
			InodesTotal: val(p.InodesTotal), InodesFree: val(p.InodesFree), InodesPercent: val(p.InodesPercent),
			HasInodesPercent: p.InodesPercent != nil,
		})
	}
	return out, nil
}

func (a *adminServer) EnableServer(ctx context.Context, req *adminv1.EnableServerRequest) (*adminv1.EnableServerResponse, error) {
	res, err := a.d.Fleet.Enable(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), req.GetServer(), req.GetTokenTtl().AsDuration())
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.EnableServerResponse{
		Server: serverPB(res.Server), Token: res.Token, TokenExpiresAt: timestamppb.New(res.TokenExpiresAt),
		CaPin: res.CAPin, EnrollCommand: res.EnrollCommand, InstallCommand: res.InstallCommand, Warnings: res.Warnings,
	}, nil
}
