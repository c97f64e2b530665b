package grpcapi

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthhq/berth/controller/internal/accounts"
	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
)

// accountServer is the gRPC face of the accounts and audit services: the
// same methods the web UI calls, so roles, scopes and audit are the same.
type accountServer struct {
	adminv1.UnimplementedAccountServiceServer
	d Deps
}

// actor is the caller as the accounts service sees it.
func (a *accountServer) actor(ctx context.Context) (accounts.Actor, error) {
	pe := peerOf(ctx)
	meta := accounts.Meta{UserAgent: pe.UserAgent}
	if pe.IP != nil {
		meta.IP = *pe.IP
	}
	act, err := a.d.Accounts.TokenActor(ctx, auth.PrincipalFrom(ctx), meta)
	if err != nil {
		return accounts.Actor{}, accountsStatus(err)
	}
	return act, nil
}

// accountsStatus maps accounts errors to codes; the rest goes to toStatus.
func accountsStatus(err error) error {
	var te *accounts.ThrottledError
	switch {
	case errors.As(err, &te):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, accounts.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, accounts.ErrEmailTaken), errors.Is(err, accounts.ErrTwoFactorEnabled):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, accounts.ErrCannotDisableSelf), errors.Is(err, accounts.ErrLastAdmin):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, accounts.ErrInvalidInput), errors.Is(err, accounts.ErrWeakPassword):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, accounts.ErrSessionInvalid):
		return status.Error(codes.Unauthenticated, err.Error())
	case errors.Is(err, accounts.ErrMailFailed):
		return status.Error(codes.Unavailable, err.Error())
	}
	return toStatus(err)
}

func userPB(u store.User) *adminv1.User {
	out := &adminv1.User{Id: u.ID.String(), Email: u.Email, Name: u.Name, Role: string(u.Role), Status: string(u.Status),
		TwoFactorEnabled: u.TwoFactorEnabled, CreatedAt: timestamppb.New(u.CreatedAt)}
	if u.LastLoginAt != nil {
		out.LastLoginAt = timestamppb.New(*u.LastLoginAt)
	}
	return out
}

func tokenPB(t store.APIToken) *adminv1.Token {
	out := &adminv1.Token{Id: t.ID.String(), Name: t.Name, CreatedAt: timestamppb.New(t.CreatedAt)}
	for _, s := range t.Scopes {
		out.Scopes = append(out.Scopes, string(s))
	}
	if t.ExpiresAt != nil {
		out.ExpiresAt = timestamppb.New(*t.ExpiresAt)
	}
	if t.LastUsedAt != nil {
		out.LastUsedAt = timestamppb.New(*t.LastUsedAt)
	}
	if t.RevokedAt != nil {
		out.RevokedAt = timestamppb.New(*t.RevokedAt)
	}
	return out
}

func (a *accountServer) ListUsers(ctx context.Context, _ *adminv1.ListUsersRequest) (*adminv1.ListUsersResponse, error) {
	act, err := a.actor(ctx)
	if err != nil {
		return nil, err
	}
	list, err := a.d.Accounts.ListUsers(ctx, act)
	if err != nil {
		return nil, accountsStatus(err)
	}
	out := &adminv1.ListUsersResponse{}
	for _, u := range list {
		out.Users = append(out.Users, userPB(u))
	}
	return out, nil
}

func (a *accountServer) InviteUser(ctx context.Context, req *adminv1.InviteUserRequest) (*adminv1.InviteUserResponse, error) {
	act, err := a.actor(ctx)
	if err != nil {
		return nil, err
	}
	inv, err := a.d.Accounts.InviteUser(ctx, act, req.GetEmail(), store.UserRole(req.GetRole()))
	if err != nil {
		return nil, accountsStatus(err)
	}
	return &adminv1.InviteUserResponse{User: userPB(inv.User), Mailed: inv.Mailed, InviteUrl: inv.Link}, nil
}

func (a *accountServer) setUser(ctx context.Context, ref string, fn func(context.Context, accounts.Actor, store.ID) (store.User, error)) (*adminv1.User, error) {
	act, err := a.actor(ctx)
	if err != nil {
		return nil, err
	}
	id, err := a.d.Accounts.ResolveUser(ctx, act, ref)
	if err != nil {
		return nil, accountsStatus(err)
	}
	u, err := fn(ctx, act, id)
	if err != nil {
		return nil, accountsStatus(err)
	}
	return userPB(u), nil
}

func (a *accountServer) DisableUser(ctx context.Context, req *adminv1.DisableUserRequest) (*adminv1.DisableUserResponse, error) {
	u, err := a.setUser(ctx, req.GetUser(), a.d.Accounts.DisableUser)
	if err != nil {
		return nil, err
	}
	return &adminv1.DisableUserResponse{User: u}, nil
}

func (a *accountServer) EnableUser(ctx context.Context, req *adminv1.EnableUserRequest) (*adminv1.EnableUserResponse, error) {
	u, err := a.setUser(ctx, req.GetUser(), a.d.Accounts.EnableUser)
	if err != nil {
		return nil, err
	}
	return &adminv1.EnableUserResponse{User: u}, nil
}

func (a *accountServer) ListTokens(ctx context.Context, _ *adminv1.ListTokensRequest) (*adminv1.ListTokensResponse, error) {
	act, err := a.actor(ctx)
	if err != nil {
		return nil, err
	}
	list, err := a.d.Accounts.ListTokens(ctx, act)
	if err != nil {
		return nil, accountsStatus(err)
	}
	out := &adminv1.ListTokensResponse{}
	for _, t := range list {
		out.Tokens = append(out.Tokens, tokenPB(t))
	}
	return out, nil
}

func (a *accountServer) CreateToken(ctx context.Context, req *adminv1.CreateTokenRequest) (*adminv1.CreateTokenResponse, error) {
	act, err := a.actor(ctx)
	if err != nil {
		return nil, err
	}
	var exp *time.Time
	if d := req.GetExpiresIn(); d != nil && d.AsDuration() != 0 {
		if d.AsDuration() < 0 {
			return nil, status.Error(codes.InvalidArgument, "expires_in must be positive")
		}
		t := time.Now().Add(d.AsDuration())
		exp = &t
	}
	scopes := make([]store.Scope, 0, len(req.GetScopes()))
	for _, s := range req.GetScopes() {
		scopes = append(scopes, store.Scope(s))
	}
	tok, info, err := a.d.Accounts.CreateToken(ctx, act, req.GetName(), scopes, exp)
	if err != nil {
		return nil, accountsStatus(err)
	}
	return &adminv1.CreateTokenResponse{Token: tok, Info: tokenPB(info)}, nil
}

func (a *accountServer) RevokeToken(ctx context.Context, req *adminv1.RevokeTokenRequest) (*adminv1.RevokeTokenResponse, error) {
	act, err := a.actor(ctx)
	if err != nil {
		return nil, err
	}
	id, err := store.ParseID(req.GetId())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "id must be a token id")
	}
	if err := a.d.Accounts.RevokeToken(ctx, act, id); err != nil {
		return nil, accountsStatus(err)
	}
	return &adminv1.RevokeTokenResponse{}, nil
}

func before(s string) (*store.ID, error) {
	if s == "" {
		return nil, nil
	}
	id, err := store.ParseID(s)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "before must be an id")
	}
	return &id, nil
}

// pageLimit is a request's page size: 50 when unset; anything too large is
// left for the audit service to refuse with its message.
func pageLimit(n uint32) int {
	if n == 0 {
		return 50
	}
	return int(min(n, 1000))
}

func ipString(ip *netip.Addr) string {
	if ip == nil {
		return ""
	}
	return ip.String()
}

func idString(id *store.ID) string {
	if id == nil {
		return ""
	}
	return id.String()
}

func structOf(m map[string]any) *structpb.Struct {
	if len(m) == 0 {
		return nil
	}
	s, err := structpb.NewStruct(m)
	if err != nil {
		return nil
	}
	return s
}

func (a *accountServer) ListSecurityEvents(ctx context.Context, req *adminv1.ListSecurityEventsRequest) (*adminv1.ListSecurityEventsResponse, error) {
	b, err := before(req.GetBefore())
	if err != nil {
		return nil, err
	}
	f := store.SecurityEventFilter{Type: req.GetType(), Severity: store.Severity(req.GetSeverity()), Before: b, Limit: pageLimit(req.GetLimit())}
	list, err := a.d.Audit.SecurityEvents(ctx, auth.PrincipalFrom(ctx), f)
	if err != nil {
		return nil, accountsStatus(err)
	}
	out := &adminv1.ListSecurityEventsResponse{}
	for _, e := range list {
		out.Events = append(out.Events, &adminv1.SecurityEvent{
			Id: e.ID.String(), Type: e.Type, Severity: string(e.Severity), Actor: e.Actor, IpAddress: ipString(e.IPAddress),
			UserAgent: e.UserAgent, Details: structOf(e.Details), CreatedAt: timestamppb.New(e.CreatedAt),
			UserId: idString(e.UserID), ServerId: idString(e.ServerID),
		})
	}
	if len(list) == f.Limit {
		out.NextBefore = list[len(list)-1].ID.String()
	}
	return out, nil
}

func (a *accountServer) ListActivity(ctx context.Context, req *adminv1.ListActivityRequest) (*adminv1.ListActivityResponse, error) {
	b, err := before(req.GetBefore())
	if err != nil {
		return nil, err
	}
	f := store.ActivityFilter{Action: req.GetAction(), SubjectType: req.GetSubjectType(), Before: b, Limit: pageLimit(req.GetLimit())}
	list, err := a.d.Audit.Activity(ctx, auth.PrincipalFrom(ctx), f)
	if err != nil {
		return nil, accountsStatus(err)
	}
	out := &adminv1.ListActivityResponse{}
	for _, e := range list {
		out.Entries = append(out.Entries, &adminv1.ActivityEntry{
			Id: e.ID.String(), ActorType: string(e.ActorType), Actor: e.Actor, Action: e.Action, SubjectType: e.SubjectType,
			SubjectId: idString(e.SubjectID), SubjectName: e.SubjectName, Changes: structOf(e.Changes),
			IpAddress: ipString(e.IPAddress), CreatedAt: timestamppb.New(e.CreatedAt),
		})
	}
	if len(list) == f.Limit {
		out.NextBefore = list[len(list)-1].ID.String()
	}
	return out, nil
}
