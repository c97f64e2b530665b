package grpcapi_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/ca"
	"github.com/berthhq/berth/controller/internal/deploys"
	"github.com/berthhq/berth/controller/internal/fleet"
	"github.com/berthhq/berth/controller/internal/grpcapi"
	"github.com/berthhq/berth/controller/internal/secrets"
	"github.com/berthhq/berth/controller/internal/store"
	"github.com/berthhq/berth/controller/internal/testdb"
	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// setupDeploys is setup with encryption keys and the deploys service
// running (dispatcher, sweeper, notifications).
func setupDeploys(t *testing.T) *env {
	t.Helper()
	kr, err := secrets.Generate()
	if err != nil {
		t.Fatal(err)
	}
	db := testdb.New(t)
	st := store.New(db.Pool, secrets.NewSource(kr, ""))
	authority, _, err := ca.LoadOrCreate(t.TempDir(), ca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	certs, err := authority.ServerCertificateSource(nil)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	fl := fleet.New(st, authority, log, fleet.Config{ControllerAddr: "127.0.0.1:7443", EnrollPerMinute: 600, EnrollBurst: 100})
	dep := deploys.New(st, fl, log, deploys.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { dep.Run(ctx, db.Pool); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	deps := grpcapi.Deps{Store: st, CA: authority, Fleet: fl, Deploys: dep, Log: log}
	authn := grpcapi.NewAuthenticator(deps)
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(authority.ServerTLSConfig(certs.GetCertificate))),
		grpc.UnaryInterceptor(authn.Unary), grpc.StreamInterceptor(authn.Stream), grpc.MaxRecvMsgSize(4<<20))
	grpcapi.Register(srv, deps)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	u, err := st.CreateUser(context.Background(), store.CreateUserParams{Email: "ops@example.com", PasswordHash: "$argon2id$x", Role: store.RoleAdmin, Status: store.UserActive})
	if err != nil {
		t.Fatal(err)
	}
	return &env{st: st, ca: authority, fleet: fl, addr: ln.Addr().String(),
		admin: &auth.Principal{UserID: u.ID, Email: u.Email, Scopes: []store.Scope{store.ScopeAdmin}}}
}

func code(err error) codes.Code { return status.Code(err) }

// TestDeployRPCs: scopes, bad input, write-only secrets, and a job's trip
// over a real agent stream: JobStart with the credential and environment,
// output acked once per number, the result ending the deployment.
func TestDeployRPCs(t *testing.T) {
	t.Parallel()
	e := setupDeploys(t)
	serverID, cert := e.enroll(t, "web-1")
	admin, actx := e.adminClient(t, e.token(t, e.admin.UserID, store.ScopeAdmin))
	write, wctx := e.adminClient(t, e.token(t, e.admin.UserID, store.ScopeWrite))
	read, rctx := e.adminClient(t, e.token(t, e.admin.UserID, store.ScopeRead))
	anon, _ := e.adminClient(t, "")

	const token, envValue = "tok-never-shown-77", "env-never-shown-88"
	if _, err := write.AddGitCredential(wctx, &adminv1.AddGitCredentialRequest{Name: "c", Kind: "https", Username: "u", Token: token}); code(err) != codes.PermissionDenied {
		t.Fatalf("write adds a credential: %v", err)
	}
	cr, err := admin.AddGitCredential(actx, &adminv1.AddGitCredentialRequest{Name: "c", Kind: "https", Username: "u", Token: token})
	if err != nil || strings.Contains(prototext.Format(cr), token) {
		t.Fatalf("add credential: %v %v", cr, err)
	}
	appReq := &adminv1.CreateAppRequest{Name: "shop", Server: "web-1", RepositoryUrl: "https://git.example.com/shop.git", Credential: "c", DeployPath: "/srv/shop", RunAsUser: "root"}
	if _, err := read.CreateApp(rctx, appReq); code(err) != codes.PermissionDenied {
		t.Fatalf("read creates an app: %v", err)
	}
	// Only deploy scope decides what runs; root needs the server's
	// allowance, which only admin grants.
	if _, err := write.CreateApp(wctx, appReq); code(err) != codes.PermissionDenied {
		t.Fatalf("write creates an app: %v", err)
	}
	if _, err := admin.CreateApp(actx, appReq); code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "allow-root") {
		t.Fatalf("root app without the allowance: %v", err)
	}
	if _, err := write.SetServerAllowRoot(wctx, &adminv1.SetServerAllowRootRequest{Server: "web-1", Allow: true}); code(err) != codes.PermissionDenied {
		t.Fatalf("write allows root: %v", err)
	}
	if sr, err := admin.SetServerAllowRoot(actx, &adminv1.SetServerAllowRootRequest{Server: "web-1", Allow: true}); err != nil || !sr.GetServer().GetAllowRoot() {
		t.Fatalf("admin allows root: %v %v", sr, err)
	}
	if _, err := admin.CreateApp(actx, appReq); err != nil {
		t.Fatal(err)
	}
	if _, err := write.SetAppEnv(wctx, &adminv1.SetAppEnvRequest{App: "shop", Scope: "production", Set: map[string]string{"SECRET": envValue}}); code(err) != codes.PermissionDenied {
		t.Fatalf("write sets env: %v", err)
	}
	if _, err := admin.SetAppEnv(actx, &adminv1.SetAppEnvRequest{App: "shop", Scope: "production", Set: map[string]string{"SECRET": envValue}}); err != nil {
		t.Fatal(err)
	}
	if _, err := write.SetAppWebhookSecret(wctx, &adminv1.SetAppWebhookSecretRequest{App: "shop"}); code(err) != codes.PermissionDenied {
		t.Fatalf("write sets the webhook secret: %v", err)
	}
	if _, err := write.UpdateApp(wctx, &adminv1.UpdateAppRequest{App: "shop", DeployScript: proto.String("id")}); code(err) != codes.PermissionDenied {
		t.Fatalf("write changes the deploy script: %v", err)
	}
	if ua, err := write.UpdateApp(wctx, &adminv1.UpdateAppRequest{App: "shop", ReleasesToKeep: proto.Uint32(7)}); err != nil || ua.GetApp().GetReleasesToKeep() != 7 {
		t.Fatalf("write changes the releases kept: %v %v", ua, err)
	}
	if _, err := admin.UpdateApp(actx, &adminv1.UpdateAppRequest{App: "shop", RepositoryUrl: proto.String("https://evil.example/shop.git")}); code(err) != codes.FailedPrecondition {
		t.Fatalf("credential sent to another host: %v", err)
	}
	ga, err := read.GetApp(rctx, &adminv1.GetAppRequest{App: "shop"})
	if err != nil || strings.Contains(prototext.Format(ga), envValue) || ga.GetApp().GetEnvKeys()["production"].GetKeys()[0] != "SECRET" {
		t.Fatalf("get app: %v %v", ga, err)
	}
	lc, _ := read.ListGitCredentials(rctx, &adminv1.ListGitCredentialsRequest{})
	if strings.Contains(prototext.Format(lc), token) {
		t.Fatal("token listed")
	}

	// Refusals.
	if _, err := anon.Deploy(context.Background(), &adminv1.DeployRequest{App: "shop"}); code(err) != codes.Unauthenticated {
		t.Fatalf("anonymous deploy: %v", err)
	}
	if _, err := write.Deploy(wctx, &adminv1.DeployRequest{App: "shop"}); code(err) != codes.PermissionDenied {
		t.Fatalf("write deploys: %v", err)
	}
	bad := map[string]error{}
	_, bad["commit"] = admin.Deploy(actx, &adminv1.DeployRequest{App: "shop", Commit: "zzz; rm -rf /"})
	_, bad["environment"] = admin.Deploy(actx, &adminv1.DeployRequest{App: "shop", Environment: "qa"})
	_, bad["id"] = admin.GetDeployment(actx, &adminv1.GetDeploymentRequest{Id: "not-an-id"})
	_, bad["rollback target"] = admin.Rollback(actx, &adminv1.RollbackRequest{App: "shop", To: "../../etc"})
	_, bad["keep"] = admin.CreateApp(actx, &adminv1.CreateAppRequest{Name: "x", Server: "web-1", RepositoryUrl: "https://h/x.git", ReleasesToKeep: 1 << 30})
	_, bad["env value"] = admin.SetAppEnv(actx, &adminv1.SetAppEnvRequest{App: "shop", Set: map[string]string{"BIG": strings.Repeat("x", 100<<10)}})
	_, bad["env name"] = admin.SetAppEnv(actx, &adminv1.SetAppEnvRequest{App: "shop", Set: map[string]string{"BAD-NAME": "x"}})
	for what, err := range bad {
		if code(err) != codes.InvalidArgument {
			t.Errorf("bad %s: %v", what, err)
		}
	}
	fs, err := read.FollowDeployment(rctx, &adminv1.FollowDeploymentRequest{Id: store.NewID().String()})
	if err == nil {
		_, err = fs.Recv()
	}
	if code(err) != codes.NotFound {
		t.Fatalf("follow unknown: %v", err)
	}

	// A deploy, its agent connected: the job comes down the stream.
	dr, err := admin.Deploy(actx, &adminv1.DeployRequest{App: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	id := dr.GetDeployment().GetId()
	s, m, err := connect(t, e.client(t, &cert), nil)
	if err != nil || m.GetWelcome().GetServerId() != serverID.String() {
		t.Fatalf("connect: %v %v", m, err)
	}
	var start *agentv1.JobStart
	for start == nil {
		m, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		start = m.GetJobStart()
	}
	if start.GetJobId() != id || start.GetCredential().GetToken() != token || start.GetEnv()["SECRET"] != envValue || start.GetKind() != "deploy" ||
		!start.GetAllowRoot() || strings.Join(start.GetCredential().GetAllowedHosts(), ",") != "git.example.com" {
		t.Fatalf("job start: id %s kind %s", start.GetJobId(), start.GetKind())
	}
	recvAck := func() *agentv1.JobAck {
		t.Helper()
		for {
			m, err := s.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if a := m.GetJobAck(); a != nil {
				return a
			}
		}
	}
	out := &agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_JobOutput{JobOutput: &agentv1.JobOutput{JobId: id, Seq: 1, Step: "build", Data: []byte("hello\n")}}}
	for range 2 { // the second is a re-send: acked, stored once
		if err := s.Send(out); err != nil {
			t.Fatal(err)
		}
		if a := recvAck(); a.GetSeq() != 1 || a.GetJobId() != id {
			t.Fatalf("ack %v", a)
		}
	}
	follow, err := read.FollowDeployment(rctx, &adminv1.FollowDeploymentRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_JobResult{JobResult: &agentv1.JobResult{JobId: id, Seq: 2, Status: "succeeded", ReleasePath: "/srv/shop/releases/" + id}}}); err != nil {
		t.Fatal(err)
	}
	if a := recvAck(); a.GetSeq() != 2 {
		t.Fatalf("result ack %v", a)
	}
	var log strings.Builder
	var last *adminv1.Deployment
	for {
		m, err := follow.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		log.Write(m.GetData())
		if m.GetDeployment() != nil {
			last = m.GetDeployment()
		}
	}
	if log.String() != "hello\n" || last.GetStatus() != "succeeded" || last.GetReleasePath() == "" {
		t.Fatalf("followed %q, last %v", log.String(), last)
	}

	// Another server's agent cannot report on this job: its stream ends.
	_, cert2 := e.enroll(t, "web-2")
	s2, _, err := connect(t, e.client(t, &cert2), nil)
	if err != nil {
		t.Fatal(err)
	}
	forged := proto.Clone(out).(*agentv1.ConnectRequest)
	forged.GetJobOutput().Seq = 3
	_ = s2.Send(forged)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := s2.Recv(); err != nil {
			if code(err) != codes.InvalidArgument {
				t.Fatalf("forged job event: %v", err)
			}
			return
		}
	}
	t.Fatal("forged job event did not end the stream")
}
