package grpcapi

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/ca"
	"github.com/berthhq/berth/controller/internal/fleet"
	"github.com/berthhq/berth/controller/internal/store"
)

// Methods callable without credentials. Everything else needs a client
// certificate (agent API) or a bearer token (admin API): fail closed.
var public = map[string]bool{
	"/berth.agent.v1.AgentService/GetVersion": true,
	"/berth.agent.v1.AgentService/Enroll":     true,
	"/berth.admin.v1.AdminService/GetHealth":  true,
	"/grpc.health.v1.Health/Check":            true,
	"/grpc.health.v1.Health/Watch":            true,
	"/grpc.health.v1.Health/List":             true,
}

const agentPrefix = "/berth.agent.v1.AgentService/"

func peerOf(ctx context.Context) fleet.Peer {
	ua := ""
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("user-agent"); len(v) > 0 {
			ua = v[0]
		}
	}
	if p, ok := peer.FromContext(ctx); ok {
		return fleet.ParsePeer(p.Addr.String(), ua)
	}
	return fleet.Peer{UserAgent: ua}
}

// Authenticator builds the interceptors.
type Authenticator struct {
	d      Deps
	budget *refusalBudget // refusals of the agent port, per address
}

// NewAuthenticator returns the interceptors' owner.
func NewAuthenticator(d Deps) *Authenticator {
	return &Authenticator{d: d, budget: newRefusalBudget(d.Store, d.Log, d.Now)}
}

func (a *Authenticator) authenticate(ctx context.Context, method string) (context.Context, error) {
	if public[method] {
		return ctx, nil
	}
	if strings.HasPrefix(method, agentPrefix) {
		ag, err := a.agent(ctx)
		if err != nil {
			return nil, err
		}
		return auth.WithAgent(ctx, ag), nil
	}
	pr, err := a.principal(ctx)
	if err != nil {
		return nil, err
	}
	return auth.WithPrincipal(ctx, pr), nil
}

// agent checks the client certificate: it chains to our CA (checked in the
// handshake and again here), names a server, and the database says the
// serial was issued to that server for this very key (so a certificate
// forged with a leaked CA key and a real serial is refused), is not
// revoked, and the server exists and is not disabled. Refusals are
// recorded within the refusal budget of the caller's address.
//
// The first call made with a renewed certificate revokes the server's
// older certificates: the renewal is in use, so the old ones are spare keys.
func (a *Authenticator) agent(ctx context.Context) (*auth.Agent, error) {
	pe := peerOf(ctx)
	refuse := func(reason string, serverID *store.ID, sev store.Severity) error {
		a.budget.record(ctx, store.CreateSecurityEventParams{
			Type: "agent.connection_refused", Severity: sev, ServerID: serverID,
			IPAddress: pe.IP, UserAgent: pe.UserAgent, Details: map[string]any{"reason": reason},
		})
		return status.Error(codes.Unauthenticated, "agent not authorised: "+reason)
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, refuse("no peer", nil, store.SeverityWarning)
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return nil, refuse("no client certificate", nil, store.SeverityWarning)
	}
	chain := []*x509.Certificate(ti.State.PeerCertificates)
	id, serial, err := a.d.CA.VerifyAgentChain(chain, time.Time{})
	if err != nil {
		return nil, refuse("certificate not valid", nil, store.SeverityWarning)
	}
	sid := store.ID(id)
	st, err := a.d.Store.CheckAgentCertificate(ctx, sid, serial)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, refuse("unknown certificate or server removed", nil, store.SeverityWarning)
	case err != nil:
		return nil, status.Error(codes.Unavailable, "cannot check the certificate now")
	case st.Revoked:
		return nil, refuse("certificate revoked", &sid, store.SeverityWarning)
	case st.ServerStatus == string(store.ServerDisabled):
		return nil, refuse("server disabled", &sid, store.SeverityWarning)
	}
	spki := ca.SPKIHash(chain[0])
	switch {
	case st.SPKISHA256 == nil:
		// Issued before keys were recorded (migration 000024): this first
		// connection fixes the key.
		if _, err := a.d.Store.PinAgentCertificateKey(ctx, sid, serial, spki); err != nil {
			return nil, status.Error(codes.Unavailable, "cannot check the certificate now")
		}
	case !bytes.Equal(st.SPKISHA256, spki):
		return nil, refuse("certificate key does not match the key it was issued for", &sid, store.SeverityCritical)
	}
	if st.Superseded > 0 && a.d.Fleet != nil {
		a.d.Fleet.RenewalInUse(ctx, sid, serial, pe)
	}
	return &auth.Agent{ServerID: sid, Serial: serial, Peer: pe.String()}, nil
}

// principal checks the bearer token.
func (a *Authenticator) principal(ctx context.Context) (*auth.Principal, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) != 1 {
		return nil, status.Error(codes.Unauthenticated, "missing bearer token")
	}
	token, ok := strings.CutPrefix(vals[0], "Bearer ")
	if !ok || !auth.WellFormed(token) {
		return nil, status.Error(codes.Unauthenticated, "malformed bearer token")
	}
	t, err := a.d.Store.APITokenByHash(ctx, auth.HashToken(token))
	if errors.Is(err, store.ErrNotFound) {
		return nil, status.Error(codes.Unauthenticated, "invalid token")
	}
	if err != nil {
		return nil, status.Error(codes.Unavailable, "cannot check the token now")
	}
	if t.RevokedAt != nil || (t.ExpiresAt != nil && time.Now().After(*t.ExpiresAt)) || t.UserStatus != string(store.UserActive) {
		return nil, status.Error(codes.Unauthenticated, "token revoked, expired or its user disabled")
	}
	pe := peerOf(ctx)
	if t.LastUsedAt == nil || time.Since(*t.LastUsedAt) >= time.Minute {
		// The store records a use at most once a minute; asking it more
		// often only costs every call a round trip.
		_ = a.d.Store.TouchAPIToken(ctx, t.ID, pe.IP)
	}
	id := t.ID
	// The token's scopes, capped by its user's role now (not when it was
	// made): demoting a user demotes their tokens at once.
	return &auth.Principal{
		UserID: t.UserID, Email: t.UserEmail, Role: t.UserRole, TokenID: &id, TokenName: t.Name, TokenExpiresAt: t.ExpiresAt,
		Scopes: auth.CapScopes(t.Scopes, t.UserRole), IP: pe.String(),
	}, nil
}

// Unary is the unary interceptor.
func (a *Authenticator) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, err := a.authenticate(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return h(ctx, req)
}

// Stream is the stream interceptor.
func (a *Authenticator) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, err := a.authenticate(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return h(srv, &wrapped{ServerStream: ss, ctx: ctx})
}

type wrapped struct {
	grpc.ServerStream
	ctx context.Context
}

func (w *wrapped) Context() context.Context { return w.ctx }
