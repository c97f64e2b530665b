// Package grpcapi implements the controller's gRPC services: the admin API
// (berth.admin.v1) and the agent API (berth.agent.v1).
package grpcapi

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/berthhq/berth/controller/internal/buildinfo"
	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// ProtocolVersion is bumped on incompatible changes to berth.agent.v1.
const ProtocolVersion = 1

// Pinger is the part of the database pool the health RPC needs.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Register adds every service to s.
func Register(s *grpc.Server, db Pinger, schemaVersion uint) *health.Server {
	adminv1.RegisterAdminServiceServer(s, &adminServer{db: db, schema: schemaVersion})
	agentv1.RegisterAgentServiceServer(s, &agentServer{})
	hs := health.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	return hs
}

type adminServer struct {
	adminv1.UnimplementedAdminServiceServer
	db     Pinger
	schema uint
}

func (a *adminServer) GetVersion(context.Context, *adminv1.GetVersionRequest) (*adminv1.GetVersionResponse, error) {
	return &adminv1.GetVersionResponse{Version: buildinfo.Version, Commit: buildinfo.Commit(), SchemaVersion: uint64(a.schema)}, nil
}

func (a *adminServer) GetHealth(ctx context.Context, _ *adminv1.GetHealthRequest) (*adminv1.GetHealthResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return &adminv1.GetHealthResponse{DatabaseOk: a.db.Ping(ctx) == nil}, nil
}

type agentServer struct {
	agentv1.UnimplementedAgentServiceServer
}

func (agentServer) GetVersion(context.Context, *agentv1.GetVersionRequest) (*agentv1.GetVersionResponse, error) {
	return &agentv1.GetVersionResponse{Version: buildinfo.Version, Commit: buildinfo.Commit(), ProtocolVersion: ProtocolVersion}, nil
}
