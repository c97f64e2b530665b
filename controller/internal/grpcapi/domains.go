package grpcapi

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/deploys"
	"github.com/berthhq/berth/controller/internal/domains"
	"github.com/berthhq/berth/controller/internal/store"
	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
)

// domainServer is the gRPC face of the domains service: the same
// principal-taking methods the web UI calls.
type domainServer struct {
	adminv1.UnimplementedDomainServiceServer
	d Deps
}

// maxDomainField bounds every string of a domain request (a URL, a path,
// a host), checked before the service sees it.
const maxDomainField = 4096

func checkDomainFields(fields ...string) error {
	for _, f := range fields {
		if len(f) > maxDomainField {
			return status.Errorf(codes.InvalidArgument, "a field is longer than %d bytes", maxDomainField)
		}
	}
	return nil
}

func tsOpt(t *time.Time) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	return timestamppb.New(*t)
}

func domainPB(v domains.Domain) *adminv1.Domain {
	d := v.Domain
	return &adminv1.Domain{
		Id: d.ID.String(), Hostname: d.Hostname, App: v.App, AppId: d.AppID.String(), ServerId: d.ServerID.String(),
		Primary: d.IsPrimary, RedirectTo: str(d.RedirectTo), RedirectStatus: uint32(d.RedirectStatus), ForceHttps: d.ForceHTTPS,
		Hsts: d.HSTS, Status: string(d.Status), LastError: str(d.LastError), TlsMode: string(d.TLSMode),
		AcmeDirectory: str(d.ACMEDirectoryURL), CertPath: str(d.TLSCertPath), KeyPath: str(d.TLSKeyPath),
		TlsStatus: string(d.TLSStatus), TlsIssuer: str(d.TLSIssuer), TlsNotBefore: tsOpt(d.TLSNotBefore),
		TlsExpiresAt: tsOpt(d.TLSExpiresAt), TlsLastAttemptAt: tsOpt(d.TLSLastAttemptAt), TlsNextAttemptAt: tsOpt(d.TLSNextAttemptAt),
		TlsLastError: str(d.TLSLastError), DnsProvider: v.DNSProvider, CreatedAt: timestamppb.New(d.CreatedAt),
		UpdatedAt: timestamppb.New(d.UpdatedAt), TlsSerial: str(d.TLSSerial),
	}
}

func (g *domainServer) AddDomain(ctx context.Context, req *adminv1.AddDomainRequest) (*adminv1.AddDomainResponse, error) {
	if err := checkDomainFields(req.GetApp(), req.GetHostname(), req.GetRedirectTo(), req.GetTls(), req.GetCertPath(),
		req.GetKeyPath(), req.GetAcmeDirectory(), req.GetDnsProvider()); err != nil {
		return nil, err
	}
	if req.GetRedirectStatus() > 999 {
		return nil, status.Error(codes.InvalidArgument, "--redirect-status must be 301, 302, 307 or 308")
	}
	d, err := g.d.Domains.Add(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), domains.AddParams{
		App: req.GetApp(), Host: req.GetHostname(), Primary: req.GetPrimary(), RedirectTo: req.GetRedirectTo(),
		RedirectStatus: int(req.GetRedirectStatus()), NoForceHTTPS: req.GetNoForceHttps(), TLS: req.GetTls(),
		CertPath: req.GetCertPath(), KeyPath: req.GetKeyPath(), ACMEDirectory: req.GetAcmeDirectory(), HSTS: req.GetHsts(),
		DNSProvider: req.GetDnsProvider(),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.AddDomainResponse{Domain: domainPB(d)}, nil
}

func (g *domainServer) ListDomains(ctx context.Context, req *adminv1.ListDomainsRequest) (*adminv1.ListDomainsResponse, error) {
	if err := checkDomainFields(req.GetApp()); err != nil {
		return nil, err
	}
	ds, err := g.d.Domains.List(ctx, auth.PrincipalFrom(ctx), req.GetApp())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &adminv1.ListDomainsResponse{}
	for _, d := range ds {
		out.Domains = append(out.Domains, domainPB(d))
	}
	return out, nil
}

func (g *domainServer) GetDomain(ctx context.Context, req *adminv1.GetDomainRequest) (*adminv1.GetDomainResponse, error) {
	if err := checkDomainFields(req.GetHostname()); err != nil {
		return nil, err
	}
	d, err := g.d.Domains.Get(ctx, auth.PrincipalFrom(ctx), req.GetHostname())
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.GetDomainResponse{Domain: domainPB(d)}, nil
}

func (g *domainServer) RemoveDomain(ctx context.Context, req *adminv1.RemoveDomainRequest) (*adminv1.RemoveDomainResponse, error) {
	if err := checkDomainFields(req.GetHostname()); err != nil {
		return nil, err
	}
	if err := g.d.Domains.Remove(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), req.GetHostname()); err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.RemoveDomainResponse{}, nil
}

func (g *domainServer) RenewDomain(ctx context.Context, req *adminv1.RenewDomainRequest) (*adminv1.RenewDomainResponse, error) {
	if err := checkDomainFields(req.GetHostname()); err != nil {
		return nil, err
	}
	d, err := g.d.Domains.Renew(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), req.GetHostname())
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.RenewDomainResponse{Domain: domainPB(d)}, nil
}

func (g *domainServer) WatchDomain(req *adminv1.WatchDomainRequest, stream grpc.ServerStreamingServer[adminv1.WatchDomainResponse]) error {
	if err := checkDomainFields(req.GetHostname()); err != nil {
		return err
	}
	ctx := stream.Context()
	since := time.Now()
	err := g.d.Domains.Watch(ctx, auth.PrincipalFrom(ctx), req.GetHostname(), since, func(d domains.Domain) error {
		return stream.Send(&adminv1.WatchDomainResponse{Domain: domainPB(d)})
	})
	return toStatus(err)
}

func (g *domainServer) AddDNSProvider(ctx context.Context, req *adminv1.AddDNSProviderRequest) (*adminv1.AddDNSProviderResponse, error) {
	if err := checkDomainFields(req.GetName(), req.GetProvider()); err != nil {
		return nil, err
	}
	if len(req.GetCredentials()) > 16 {
		return nil, status.Error(codes.InvalidArgument, "at most 16 variables")
	}
	for k, v := range req.GetCredentials() {
		if err := checkDomainFields(k, v); err != nil {
			return nil, err
		}
	}
	p, err := g.d.Domains.AddDNSProvider(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), req.GetName(), req.GetProvider(), req.GetCredentials())
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.AddDNSProviderResponse{Provider: dnsProviderPB(p)}, nil
}

func (g *domainServer) ListDNSProviders(ctx context.Context, _ *adminv1.ListDNSProvidersRequest) (*adminv1.ListDNSProvidersResponse, error) {
	ps, err := g.d.Domains.ListDNSProviders(ctx, auth.PrincipalFrom(ctx))
	if err != nil {
		return nil, toStatus(err)
	}
	out := &adminv1.ListDNSProvidersResponse{}
	for _, p := range ps {
		out.Providers = append(out.Providers, dnsProviderPB(p))
	}
	return out, nil
}

func dnsProviderPB(p domains.DNSProvider) *adminv1.DNSProvider {
	return &adminv1.DNSProvider{Id: p.ID.String(), Name: p.Name, Provider: p.Provider, Variables: p.Variables, CreatedAt: timestamppb.New(p.CreatedAt)}
}

// updateApp applies an UpdateApp request: the routing fields (upstream,
// static root) through the domains service, which syncs the app's site,
// the rest through the deploys service.
func (a *adminServer) updateApp(ctx context.Context, svc *deploys.Service, req *adminv1.UpdateAppRequest, p deploys.UpdateAppParams) (store.App, error) {
	pr, peer := auth.PrincipalFrom(ctx), peerOf(ctx)
	routing := req.Upstream != nil || req.StaticRoot != nil
	if routing {
		if a.d.Domains == nil {
			return store.App{}, status.Error(codes.Unimplemented, "domains are not served by this controller")
		}
		if err := checkDomainFields(req.GetUpstream(), req.GetStaticRoot()); err != nil {
			return store.App{}, err
		}
		if _, err := a.d.Domains.SetAppRouting(ctx, pr, peer, domains.RoutingParams{App: req.GetApp(), Upstream: req.Upstream, StaticRoot: req.StaticRoot}); err != nil {
			return store.App{}, err
		}
	}
	other := p.RepositoryURL != nil || p.Branch != nil || p.Credential != nil || p.DeployPath != nil || p.RunAsUser != nil ||
		p.DeployScript != nil || p.DeployScriptPath != nil || p.HealthCheckCommand != nil || p.HealthCheckURL != nil ||
		p.HealthCheckTimeoutSeconds != nil || p.ReloadCommand != nil || p.ReleasesToKeep != nil || p.SharedPaths != nil || p.TimeoutSeconds != nil
	if routing && !other {
		return svc.ResolveApp(ctx, req.GetApp())
	}
	return svc.UpdateApp(ctx, pr, peer, p)
}
