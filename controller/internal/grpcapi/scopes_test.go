package grpcapi_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/ca"
	"github.com/berthhq/berth/controller/internal/fleet"
	"github.com/berthhq/berth/controller/internal/store"
	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
)

// adminClient dials the admin API with token as the bearer.
func (e *env) adminClient(t *testing.T, token string) (adminv1.AdminServiceClient, context.Context) {
	t.Helper()
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(ca.ClientTLSConfig(e.ca.Pool(), nil))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token)
	return adminv1.NewAdminServiceClient(conn), ctx
}

func (e *env) token(t *testing.T, userID store.ID, scopes ...store.Scope) string {
	t.Helper()
	tok, hash := auth.NewToken()
	if _, err := e.st.CreateAPIToken(context.Background(), store.CreateAPITokenParams{UserID: userID, Name: "t" + time.Now().Format("150405.000000"), TokenHash: hash, Scopes: scopes}); err != nil {
		t.Fatal(err)
	}
	return tok
}

// Scopes are enforced server-side, and a token never does more than its
// user's current role allows.
func TestTokenScopesEnforced(t *testing.T) {
	e := setup(t, 5)
	ctx := context.Background()
	if _, err := e.fleet.AddServer(ctx, e.admin, fleet.Peer{}, "web-1", nil, time.Hour); err != nil {
		t.Fatal(err)
	}

	read, rctx := e.adminClient(t, e.token(t, e.admin.UserID, store.ScopeRead))
	if _, err := read.ListServers(rctx, &adminv1.ListServersRequest{}); err != nil {
		t.Fatalf("read token lists servers: %v", err)
	}
	if _, err := read.AddServer(rctx, &adminv1.AddServerRequest{Name: "web-2"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("read token adds a server: %v", err)
	}
	if _, err := read.RemoveServer(rctx, &adminv1.RemoveServerRequest{Server: "web-1"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("read token removes a server: %v", err)
	}

	write, wctx := e.adminClient(t, e.token(t, e.admin.UserID, store.ScopeWrite))
	if _, err := write.AddServer(wctx, &adminv1.AddServerRequest{Name: "web-2"}); err != nil {
		t.Fatalf("write token adds a server: %v", err)
	}
	if _, err := write.RemoveServer(wctx, &adminv1.RemoveServerRequest{Server: "web-2"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("write token removes a server: %v", err)
	}

	// An admin token of a user demoted to viewer only reads from then on.
	adminTok, actx := e.adminClient(t, e.token(t, e.admin.UserID, store.ScopeAdmin))
	if _, err := e.st.SetUserRole(ctx, e.admin.UserID, store.RoleViewer); err != nil {
		t.Fatal(err)
	}
	if _, err := adminTok.RemoveServer(actx, &adminv1.RemoveServerRequest{Server: "web-2"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("demoted user's admin token removes a server: %v", err)
	}
	if _, err := adminTok.ListServers(actx, &adminv1.ListServersRequest{}); err != nil {
		t.Fatalf("demoted user's admin token still reads: %v", err)
	}

	// A disabled user's tokens stop at once.
	if _, err := e.st.SetUserRole(ctx, e.admin.UserID, store.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.SetUserStatus(ctx, e.admin.UserID, store.UserDisabled); err != nil {
		t.Fatal(err)
	}
	if _, err := write.ListServers(wctx, &adminv1.ListServersRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("disabled user's token: %v", err)
	}
}
