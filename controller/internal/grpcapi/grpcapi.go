// Package grpcapi implements the controller's gRPC services: the admin API
// (berth.admin.v1, bearer API tokens) and the agent API (berth.agent.v1,
// client certificates). Handlers translate between protobuf and the service
// layer and map errors to status codes; the services decide.
package grpcapi

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/berthhq/berth/controller/internal/accounts"
	"github.com/berthhq/berth/controller/internal/alert"
	"github.com/berthhq/berth/controller/internal/audit"
	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/backups"
	"github.com/berthhq/berth/controller/internal/buildinfo"
	"github.com/berthhq/berth/controller/internal/ca"
	"github.com/berthhq/berth/controller/internal/deploys"
	"github.com/berthhq/berth/controller/internal/domains"
	"github.com/berthhq/berth/controller/internal/fleet"
	"github.com/berthhq/berth/controller/internal/notify"
	"github.com/berthhq/berth/controller/internal/store"
	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// ProtocolVersion is bumped on incompatible changes to berth.agent.v1.
const ProtocolVersion = 1

// Deps are what the services need.
type Deps struct {
	Store    *store.Store
	CA       *ca.CA
	Fleet    *fleet.Service
	Deploys  *deploys.Service
	Accounts *accounts.Service
	Audit    *audit.Service
	// Notify is the notifications service (NotificationService is not
	// registered without it).
	Notify *notify.Service
	// Domains is the domains service (DomainService is not registered
	// without it).
	Domains *domains.Service
	// Alerts is the threshold alerts service (NotificationService's alert
	// methods answer Unimplemented without it).
	Alerts *alert.Service
	// Backups is the backups service (BackupService is not registered
	// without it).
	Backups       *backups.Service
	SchemaVersion uint
	Log           *slog.Logger
	// Now is the clock of the agent port's refusal budget (time.Now when
	// nil).
	Now func() time.Time
}

// Register adds every service to s.
func Register(s *grpc.Server, d Deps) *health.Server {
	adminv1.RegisterAdminServiceServer(s, &adminServer{d: d})
	agentv1.RegisterAgentServiceServer(s, &agentServer{d: d})
	if d.Accounts != nil && d.Audit != nil {
		adminv1.RegisterAccountServiceServer(s, &accountServer{d: d})
	}
	if d.Notify != nil {
		adminv1.RegisterNotificationServiceServer(s, &notifyServer{d: d})
	}
	if d.Domains != nil {
		adminv1.RegisterDomainServiceServer(s, &domainServer{d: d})
	}
	if d.Backups != nil {
		adminv1.RegisterBackupServiceServer(s, &backupServer{d: d})
	}
	hs := health.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	return hs
}

// toStatus maps service and store errors to gRPC codes with messages safe
// to show (they never carry secrets: services build them from names).
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && status.Code(err) != codes.Unknown {
		return err
	}
	switch {
	case errors.Is(err, auth.ErrUnauthenticated):
		return status.Error(codes.Unauthenticated, err.Error())
	case errors.Is(err, auth.ErrForbidden):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, fleet.ErrEnrollToken):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, deploys.ErrUnavailable), errors.Is(err, fleet.ErrNotConnected):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, fleet.ErrRateLimited), errors.Is(err, fleet.ErrSlowAgent), errors.Is(err, fleet.ErrRenewLimited):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, deploys.ErrPruned), errors.Is(err, deploys.ErrRefused), errors.Is(err, store.ErrWrongState):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, fleet.ErrInvalid), errors.Is(err, store.ErrInvalid), errors.Is(err, fleet.ErrProtocol), errors.Is(err, deploys.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, store.ErrConflict):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, store.ErrReferenced):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, fleet.ErrRevoked):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, fleet.ErrReplaced):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	}
	return status.Error(codes.Internal, "internal error")
}

func pingDB(ctx context.Context, st *store.Store) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return st.Pool().Ping(ctx) == nil
}

type agentServer struct {
	agentv1.UnimplementedAgentServiceServer
	d Deps
}

func (a *agentServer) GetVersion(context.Context, *agentv1.GetVersionRequest) (*agentv1.GetVersionResponse, error) {
	return &agentv1.GetVersionResponse{Version: buildinfo.Version, Commit: buildinfo.Commit(), ProtocolVersion: ProtocolVersion}, nil
}

func (a *agentServer) Enroll(ctx context.Context, req *agentv1.EnrollRequest) (*agentv1.EnrollResponse, error) {
	res, err := a.d.Fleet.Enroll(ctx, peerOf(ctx), req.GetToken(), req.GetCsrDer(), req.GetFacts())
	if err != nil {
		return nil, toStatus(err)
	}
	return &agentv1.EnrollResponse{ServerId: res.ServerID.String(), CertificateDer: res.CertDER, CaCertificateDer: a.d.CA.Cert().Raw}, nil
}

func (a *agentServer) Connect(stream grpc.BidiStreamingServer[agentv1.ConnectRequest, agentv1.ConnectResponse]) error {
	ag := auth.AgentFrom(stream.Context())
	if ag == nil {
		return status.Error(codes.Unauthenticated, "client certificate required")
	}
	err := a.d.Fleet.Serve(stream, ag, peerOf(stream.Context()))
	if err != nil && stream.Context().Err() == nil && !errors.Is(err, fleet.ErrRevoked) && !errors.Is(err, fleet.ErrReplaced) {
		a.d.Log.Warn("agent stream ended", "server_id", ag.ServerID.String(), "err", err)
	}
	return toStatus(err)
}
