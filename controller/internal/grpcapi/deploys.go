package grpcapi

import (
	"context"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/deploys"
	"github.com/berthhq/berth/controller/internal/store"
	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
)

// The apps and deployments RPCs. Responses never carry a secret: git
// credentials show their public part, apps the names of their variables.

func (a *adminServer) dep() (*deploys.Service, error) {
	if a.d.Deploys == nil {
		return nil, status.Error(codes.Unavailable, "deploys are not available on this controller")
	}
	return a.d.Deploys, nil
}

func ts(t *time.Time) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	return timestamppb.New(*t)
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func credentialPB(c store.GitCredential) *adminv1.GitCredential {
	return &adminv1.GitCredential{
		Id: c.ID.String(), Name: c.Name, Kind: string(c.Kind), PublicKey: str(c.PublicKey), Fingerprint: str(c.Fingerprint),
		Username: str(c.Username), CreatedAt: timestamppb.New(c.CreatedAt), LastUsedAt: ts(c.LastUsedAt),
		AllowedHosts: c.AllowedHosts, KnownHosts: c.KnownHosts,
	}
}

// credentialWithShares is credentialPB with the users it is shared with.
func (a *adminServer) credentialWithShares(ctx context.Context, svc *deploys.Service, c store.GitCredential) (*adminv1.GitCredential, error) {
	out := credentialPB(c)
	shares, err := svc.GitCredentialShares(ctx, auth.PrincipalFrom(ctx), c)
	if err != nil {
		return nil, toStatus(err)
	}
	out.SharedWith = shares
	return out, nil
}

func appPB(v deploys.AppView) *adminv1.App {
	a := v.App
	out := &adminv1.App{
		Id: a.ID.String(), Name: a.Name, ServerId: a.ServerID.String(), Server: v.ServerName, RepositoryUrl: a.RepositoryURL,
		Branch: a.Branch, Credential: v.CredentialName, DeployPath: a.DeployPath, RunAsUser: a.RunAsUser, DeployScript: a.DeployScript,
		HealthCheckCommand: str(a.HealthCheckCommand), HealthCheckUrl: str(a.HealthCheckURL),
		HealthCheckTimeoutSeconds: uint32(a.HealthCheckTimeoutSeconds), ReloadCommand: str(a.ReloadCommand),
		ReleasesToKeep: uint32(a.ReleasesToKeep), SharedPaths: a.SharedPaths, TimeoutSeconds: uint32(a.TimeoutSeconds),
		HasWebhookSecret: a.HasWebhookSecret, EnvKeys: map[string]*adminv1.EnvKeys{}, CreatedAt: timestamppb.New(a.CreatedAt),
		DeployScriptPath: str(a.DeployScriptPath),
	}
	for sc, keys := range v.EnvKeys {
		out.EnvKeys[string(sc)] = &adminv1.EnvKeys{Keys: keys}
	}
	if a.CurrentDeploymentID != nil {
		out.CurrentDeploymentId = a.CurrentDeploymentID.String()
	}
	out.UpstreamPort = v.UpstreamPort
	out.UpstreamUrl, out.StaticRoot = str(a.UpstreamURL), str(a.StaticRoot)
	for _, p := range v.Processes {
		out.Processes = append(out.Processes, processPB(p))
	}
	for _, sc := range v.Schedules {
		out.Schedules = append(out.Schedules, schedulePB(sc, a.Name))
	}
	return out
}

func deploymentPB(d store.Deployment, appName string) *adminv1.Deployment {
	out := &adminv1.Deployment{
		Id: d.ID.String(), AppId: d.AppID.String(), App: appName, TriggeredBy: string(d.TriggeredBy), Environment: string(d.Environment),
		Branch: d.Branch, CommitSha: str(d.CommitSHA), CommitMessage: str(d.CommitMessage), Status: string(d.Status),
		FailedStep: str(d.FailedStep), FailureReason: str(d.FailureReason), ReleasePath: str(d.ReleasePath),
		QueuedAt: timestamppb.New(d.QueuedAt), StartedAt: ts(d.StartedAt), FinishedAt: ts(d.FinishedAt),
		DeadlineAt: timestamppb.New(d.DeadlineAt), CancelRequested: d.CancelRequestedAt != nil, LogBytes: d.LogBytes, LogTruncated: d.LogTruncated,
		Kind: string(d.Kind), Schedule: str(d.ScheduleName),
	}
	if d.ExitCode != nil {
		out.ExitCode, out.HasExitCode = int32(*d.ExitCode), true
	}
	if d.RollbackFromID != nil {
		out.RollbackFromId = d.RollbackFromID.String()
	}
	return out
}

func (a *adminServer) appName(ctx context.Context, id store.ID) string {
	if app, err := a.d.Store.App(ctx, id); err == nil {
		return app.Name
	}
	return ""
}

func (a *adminServer) AddGitCredential(ctx context.Context, req *adminv1.AddGitCredentialRequest) (*adminv1.AddGitCredentialResponse, error) {
	svc, err := a.dep()
	if err != nil {
		return nil, err
	}
	c, err := svc.AddGitCredential(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), deploys.AddGitCredentialParams{
		Name: req.GetName(), Kind: store.GitCredentialKind(req.GetKind()), PrivateKey: req.GetPrivateKey(), Username: req.GetUsername(), Token: req.GetToken(),
		AllowedHosts: req.GetAllowedHosts(), KnownHosts: req.GetKnownHosts(),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.AddGitCredentialResponse{Credential: credentialPB(c)}, nil
}

func (a *adminServer) ListGitCredentials(ctx context.Context, _ *adminv1.ListGitCredentialsRequest) (*adminv1.ListGitCredentialsResponse, error) {
	svc, err := a.dep()
	if err != nil {
		return nil, err
	}
	list, err := svc.ListGitCredentials(ctx, auth.PrincipalFrom(ctx))
	if err != nil {
		return nil, toStatus(err)
	}
	out := &adminv1.ListGitCredentialsResponse{}
	for _, c := range list {
		pb, err := a.credentialWithShares(ctx, svc, c)
		if err != nil {
			return nil, err
		}
		out.Credentials = append(out.Credentials, pb)
	}
	return out, nil
}

func (a *adminServer) shareGitCredential(ctx context.Context, credential, user string, share bool) (*adminv1.GitCredential, error) {
	svc, err := a.dep()
	if err != nil {
		return nil, err
	}
	c, err := svc.ShareGitCredential(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), credential, user, share)
	if err != nil {
		return nil, toStatus(err)
	}
	return a.credentialWithShares(ctx, svc, c)
}

func (a *adminServer) ShareGitCredential(ctx context.Context, req *adminv1.ShareGitCredentialRequest) (*adminv1.ShareGitCredentialResponse, error) {
	c, err := a.shareGitCredential(ctx, req.GetCredential(), req.GetUser(), true)
	if err != nil {
		return nil, err
	}
	return &adminv1.ShareGitCredentialResponse{Credential: c}, nil
}

func (a *adminServer) UnshareGitCredential(ctx context.Context, req *adminv1.UnshareGitCredentialRequest) (*adminv1.UnshareGitCredentialResponse, error) {
	c, err := a.shareGitCredential(ctx, req.GetCredential(), req.GetUser(), false)
	if err != nil {
		return nil, err
	}
	return &adminv1.UnshareGitCredentialResponse{Credential: c}, nil
}

func hostKeyPB(k deploys.HostKey) *adminv1.HostKey {
	return &adminv1.HostKey{Type: k.Type, Fingerprint: k.Fingerprint}
}

func (a *adminServer) ScanGitHost(ctx context.Context, req *adminv1.ScanGitHostRequest) (*adminv1.ScanGitHostResponse, error) {
	svc, err := a.dep()
	if err != nil {
		return nil, err
	}
	keys, err := svc.ScanGitHost(ctx, auth.PrincipalFrom(ctx), req.GetCredential(), req.GetAddress())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &adminv1.ScanGitHostResponse{}
	for _, k := range keys {
		out.Keys = append(out.Keys, hostKeyPB(k))
	}
	return out, nil
}

func (a *adminServer) TrustGitHost(ctx context.Context, req *adminv1.TrustGitHostRequest) (*adminv1.TrustGitHostResponse, error) {
	svc, err := a.dep()
	if err != nil {
		return nil, err
	}
	c, k, err := svc.TrustGitHost(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), req.GetCredential(), req.GetAddress(), req.GetFingerprint())
	if err != nil {
		return nil, toStatus(err)
	}
	pb, err := a.credentialWithShares(ctx, svc, c)
	if err != nil {
		return nil, err
	}
	return &adminv1.TrustGitHostResponse{Credential: pb, Key: hostKeyPB(k)}, nil
}

func (a *adminServer) SetServerAllowRoot(ctx context.Context, req *adminv1.SetServerAllowRootRequest) (*adminv1.SetServerAllowRootResponse, error) {
	svc, err := a.dep()
	if err != nil {
		return nil, err
	}
	srv, err := svc.SetServerAllowRoot(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), req.GetServer(), req.GetAllow())
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.SetServerAllowRootResponse{Server: serverPB(srv)}, nil
}

func (a *adminServer) DeleteGitCredential(ctx context.Context, req *adminv1.DeleteGitCredentialRequest) (*adminv1.DeleteGitCredentialResponse, error) {
	svc, err := a.dep()
	if err != nil {
		return nil, err
	}
	if err := svc.DeleteGitCredential(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), req.GetCredential()); err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.DeleteGitCredentialResponse{}, nil
}

func optStr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func (a *adminServer) CreateApp(ctx context.Context, req *adminv1.CreateAppRequest) (*adminv1.CreateAppResponse, error) {
	svc, err := a.dep()
	if err != nil {
		return nil, err
	}
	if req.GetReleasesToKeep() > 1000 || req.GetTimeoutSeconds() > 1<<20 || req.GetHealthCheckTimeoutSeconds() > 1<<20 {
		return nil, status.Error(codes.InvalidArgument, "a number is out of range")
	}
	app, err := svc.CreateApp(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), deploys.CreateAppParams{
		Server: req.GetServer(), Credential: req.GetCredential(),
		AppSettings: store.AppSettings{
			Name: req.GetName(), RepositoryURL: req.GetRepositoryUrl(), Branch: req.GetBranch(), DeployPath: req.GetDeployPath(),
			RunAsUser: req.GetRunAsUser(), DeployScript: req.GetDeployScript(), HealthCheckCommand: optStr(req.GetHealthCheckCommand()),
			HealthCheckURL: optStr(req.GetHealthCheckUrl()), HealthCheckTimeoutSeconds: int(req.GetHealthCheckTimeoutSeconds()),
			ReloadCommand: optStr(req.GetReloadCommand()), ReleasesToKeep: int(req.GetReleasesToKeep()), SharedPaths: req.GetSharedPaths(),
			TimeoutSeconds: int(req.GetTimeoutSeconds()), DeployScriptPath: optStr(req.GetDeployScriptPath()),
		},
	})
	if err != nil {
		return nil, toStatus(err)
	}
	v, err := svc.View(ctx, app)
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.CreateAppResponse{App: appPB(v)}, nil
}

func (a *adminServer) ListApps(ctx context.Context, req *adminv1.ListAppsRequest) (*adminv1.ListAppsResponse, error) {
	svc, err := a.dep()
	if err != nil {
		return nil, err
	}
	list, err := svc.ListApps(ctx, auth.PrincipalFrom(ctx), req.GetServer())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &adminv1.ListAppsResponse{}
	for _, app := range list {
		v, err := svc.ViewBrief(ctx, app) // lists leave processes and schedules out
		if err != nil {
			return nil, toStatus(err)
		}
		out.Apps = append(out.Apps, appPB(v))
	}
	return out, nil
}

func (a *adminServer) GetApp(ctx context.Context, req *adminv1.GetAppRequest) (*adminv1.GetAppResponse, error) {
	svc, err := a.dep()
	if err != nil {
		return nil, err
	}
	v, err := svc.GetApp(ctx, auth.PrincipalFrom(ctx), req.GetApp())
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.GetAppResponse{App: appPB(v)}, nil
}

func optInt(v *uint32) *int {
	if v == nil {
		return nil
	}
	n := int(*v)
	return &n
}

func (a *adminServer) UpdateApp(ctx context.Context, req *adminv1.UpdateAppRequest) (*adminv1.UpdateAppResponse, error) {
	svc, err := a.dep()
	if err != nil {
		return nil, err
	}
	if req.GetReleasesToKeep() > 1000 || req.GetTimeoutSeconds() > 1<<20 || req.GetHealthCheckTimeoutSeconds() > 1<<20 {
		return nil, status.Error(codes.InvalidArgument, "a number is out of range")
	}
	p := deploys.UpdateAppParams{
		App: req.GetApp(), RepositoryURL: req.RepositoryUrl, Branch: req.Branch, Credential: req.Credential, DeployPath: req.DeployPath,
		RunAsUser: req.RunAsUser, DeployScript: req.DeployScript, HealthCheckCommand: req.HealthCheckCommand, HealthCheckURL: req.HealthCheckUrl,
		HealthCheckTimeoutSeconds: optInt(req.HealthCheckTimeoutSeconds), ReloadCommand: req.ReloadCommand,
		ReleasesToKeep: optInt(req.ReleasesToKeep), TimeoutSeconds: optInt(req.TimeoutSeconds), DeployScriptPath: req.DeployScriptPath,
	}
	if req.GetSetSharedPaths() {
		sp := req.GetSharedPaths()
		p.SharedPaths = &sp
	}
	app, err := a.updateApp(ctx, svc, req, p)
	if err != nil {
		return nil, toStatus(err)
	}
	v, err := svc.View(ctx, app)
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.UpdateAppResponse{App: appPB(v)}, nil
}

func (a *adminServer) DeleteApp(ctx context.Context, req *adminv1.DeleteAppRequest) (*adminv1.DeleteAppResponse, error) {
	svc, err := a.dep()
	if err != nil {
		return nil, err
	}
	res, err := svc.DeleteApp(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), req.GetApp(), req.GetKeepFiles())
	if err != nil {
		return nil, toStatus(err)
	}
	v, err := svc.View(ctx, res.App)
	if err != nil {
		return nil, toStatus(err)
	}
	// Deleted: the app is gone already (files kept; Job, if any, stops
	// its processes) rather than waiting for its delete job.
	out := &adminv1.DeleteAppResponse{App: appPB(v), Deleted: res.App.DeletedAt != nil}
	if res.Job != nil {
		out.Job = deploymentPB(*res.Job, res.App.Name)
	}
	return out, nil
}

func (a *adminServer) SetAppEnv(ctx context.Context, req *adminv1.SetAppEnvRequest) (*adminv1.SetAppEnvResponse, error) {
	svc, err := a.dep()
	if err != nil {
		return nil, err
	}
	keys, err := svc.SetAppEnv(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), req.GetApp(), store.AppEnvScope(req.GetScope()), req.GetSet(), req.GetUnset())
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.SetAppEnvResponse{Keys: keys}, nil
}

func (a *adminServer) SetAppWebhookSecret(ctx context.Context, req *adminv1.SetAppWebhookSecretRequest) (*adminv1.SetAppWebhookSecretResponse, error) {
	svc, err := a.dep()
	if err != nil {
		return nil, err
	}
	app, secret, err := svc.SetWebhookSecret(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), req.GetApp(), req.GetSecret())
	if err != nil {
		return nil, toStatus(err)
	}
	base := "/hooks/apps/" + app.ID.String() + "/"
	return &adminv1.SetAppWebhookSecretResponse{Secret: secret, GithubPath: base + "github", GitlabPath: base + "gitlab"}, nil
}

func (a *adminServer) queued(ctx context.Context, q deploys.Queued) (*adminv1.Deployment, []string) {
	name := a.appName(ctx, q.Deployment.AppID)
	behind := make([]string, 0, len(q.Behind))
	for _, d := range q.Behind {
		behind = append(behind, d.ID.String())
	}
	slices.Sort(behind)
	return deploymentPB(q.Deployment, name), behind
}

func (a *adminServer) Deploy(ctx context.Context, req *adminv1.DeployRequest) (*adminv1.DeployResponse, error) {
	svc, err := a.dep()
	if err != nil {
		return nil, err
	}
	q, err := svc.Deploy(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), deploys.DeployParams{App: req.GetApp(), Environment: store.Environment(req.GetEnvironment()), Commit: req.GetCommit()})
	if err != nil {
		return nil, toStatus(err)
	}
	d, behind := a.queued(ctx, q)
	return &adminv1.DeployResponse{Deployment: d, QueuedBehind: behind}, nil
}

func (a *adminServer) Rollback(ctx context.Context, req *adminv1.RollbackRequest) (*adminv1.RollbackResponse, error) {
	svc, err := a.dep()
	if err != nil {
		return nil, err
	}
	q, err := svc.Rollback(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), req.GetApp(), req.GetTo())
	if err != nil {
		return nil, toStatus(err)
	}
	d, behind := a.queued(ctx, q)
	return &adminv1.RollbackResponse{Deployment: d, QueuedBehind: behind}, nil
}

func (a *adminServer) CancelDeployment(ctx context.Context, req *adminv1.CancelDeploymentRequest) (*adminv1.CancelDeploymentResponse, error) {
	svc, err := a.dep()
	if err != nil {
		return nil, err
	}
	d, err := svc.Cancel(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.CancelDeploymentResponse{Deployment: deploymentPB(d, a.appName(ctx, d.AppID))}, nil
}

func (a *adminServer) ListDeployments(ctx context.Context, req *adminv1.ListDeploymentsRequest) (*adminv1.ListDeploymentsResponse, error) {
	svc, err := a.dep()
	if err != nil {
		return nil, err
	}
	var before *store.ID
	if req.GetBefore() != "" {
		id, err := store.ParseID(req.GetBefore())
		if err != nil {
			return nil, toStatus(err)
		}
		before = &id
	}
	limit := int(min(req.GetLimit(), 1000))
	list, err := svc.ListDeployments(ctx, auth.PrincipalFrom(ctx), req.GetApp(), before, limit)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &adminv1.ListDeploymentsResponse{}
	names := map[store.ID]string{}
	for _, d := range list {
		if _, ok := names[d.AppID]; !ok {
			names[d.AppID] = a.appName(ctx, d.AppID)
		}
		out.Deployments = append(out.Deployments, deploymentPB(d, names[d.AppID]))
	}
	if limit > 0 && len(list) == limit {
		out.NextBefore = list[len(list)-1].ID.String()
	}
	return out, nil
}

func (a *adminServer) GetDeployment(ctx context.Context, req *adminv1.GetDeploymentRequest) (*adminv1.GetDeploymentResponse, error) {
	svc, err := a.dep()
	if err != nil {
		return nil, err
	}
	d, err := svc.GetDeployment(ctx, auth.PrincipalFrom(ctx), req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.GetDeploymentResponse{Deployment: deploymentPB(d, a.appName(ctx, d.AppID))}, nil
}

func (a *adminServer) FollowDeployment(req *adminv1.FollowDeploymentRequest, stream grpc.ServerStreamingServer[adminv1.FollowDeploymentResponse]) error {
	svc, err := a.dep()
	if err != nil {
		return err
	}
	ctx := stream.Context()
	name := ""
	err = svc.Follow(ctx, auth.PrincipalFrom(ctx), req.GetId(), int64(min(req.GetAfterSeq(), 1<<62)), func(ev deploys.FollowEvent) error {
		m := &adminv1.FollowDeploymentResponse{}
		if c := ev.Chunk; c != nil {
			m.Seq, m.Step, m.Data = uint64(c.Seq), c.Step, c.Data
		}
		if d := ev.Deployment; d != nil {
			if name == "" {
				name = a.appName(ctx, d.AppID)
			}
			m.Deployment = deploymentPB(*d, name)
		}
		m.Waiting = ev.Waiting
		return stream.Send(m)
	})
	return toStatus(err)
}
