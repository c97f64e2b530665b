package grpcapi_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/berthhq/berth/controller/internal/accounts"
	"github.com/berthhq/berth/controller/internal/alert"
	"github.com/berthhq/berth/controller/internal/audit"
	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/backups"
	"github.com/berthhq/berth/controller/internal/ca"
	"github.com/berthhq/berth/controller/internal/deploys"
	"github.com/berthhq/berth/controller/internal/domains"
	"github.com/berthhq/berth/controller/internal/fleet"
	"github.com/berthhq/berth/controller/internal/grpcapi"
	"github.com/berthhq/berth/controller/internal/notify"
	"github.com/berthhq/berth/controller/internal/secrets"
	"github.com/berthhq/berth/controller/internal/store"
	"github.com/berthhq/berth/controller/internal/testdb"
)

// The scope matrix: one row per method of every service registered on the
// controller's gRPC server, saying what a caller needs. The test calls
// every method with no token and with tokens of each scope (user role
// admin) and checks the answer, so a method added without a row, or
// without the check its row names, fails it.
//
// need:
//   - a scope: below it PermissionDenied, no token Unauthenticated, at or
//     above it anything but those two (the call got past authorisation);
//   - needAny: any valid token, no scope;
//   - needPublic: no credentials; the answer is the same with or without
//     a token (a bearer token changes nothing);
//   - needCert: agent methods behind the client certificate: a bearer
//     token never reaches them, every caller here gets Unauthenticated.
//
// Rules (issue 15): anything that decides what code runs on a server
// (creating an app, its repository, scripts, user, paths, environment,
// webhook secret, credential, deploys) needs deploy; harmless settings
// write; credentials, users, tokens through the API and server removal
// admin.
//
// req is the request in protobuf text format, with $SPARE_TOKEN,
// $VICTIM_USER and $NO_SUCH_ID replaced; it is valid enough that a refused
// caller is refused by the check and not by input validation.
type matrixRow struct {
	need store.Scope
	req  string
}

const (
	needAny    store.Scope = "any token"
	needPublic store.Scope = "public"
	needCert   store.Scope = "client certificate"
)

var scopeMatrix = map[string]matrixRow{
	// berth.admin.v1.AdminService
	"/berth.admin.v1.AdminService/GetVersion":          {needAny, ``},
	"/berth.admin.v1.AdminService/GetHealth":           {needPublic, ``},
	"/berth.admin.v1.AdminService/AddServer":           {store.ScopeWrite, `name: "added-1"`},
	"/berth.admin.v1.AdminService/ListServers":         {store.ScopeRead, ``},
	"/berth.admin.v1.AdminService/GetServer":           {store.ScopeRead, `server: "web-1"`},
	"/berth.admin.v1.AdminService/RemoveServer":        {store.ScopeAdmin, `server: "gone-1"`},
	"/berth.admin.v1.AdminService/DisableServer":       {store.ScopeAdmin, `server: "off-1"`},
	"/berth.admin.v1.AdminService/EnableServer":        {store.ScopeAdmin, `server: "off-1"`},
	"/berth.admin.v1.AdminService/GetMetrics":          {store.ScopeRead, `server: "web-1" since {seconds: 3600} step {seconds: 60}`},
	"/berth.admin.v1.AdminService/AddGitCredential":    {store.ScopeAdmin, `name: "cred-new" kind: "https" username: "u" token: "t"`},
	"/berth.admin.v1.AdminService/ListGitCredentials":  {store.ScopeRead, ``},
	"/berth.admin.v1.AdminService/DeleteGitCredential": {store.ScopeAdmin, `credential: "cred-rm"`},
	"/berth.admin.v1.AdminService/CreateApp":           {store.ScopeDeploy, `name: "app-new" server: "web-1" repository_url: "https://git.example.com/a.git" deploy_path: "/srv/a" run_as_user: "app"`},
	"/berth.admin.v1.AdminService/ListApps":            {store.ScopeRead, ``},
	// UpdateApp: write at the door, deploy for a field that decides what
	// code runs (the branch here); deploys' policy tests cover the rest.
	"/berth.admin.v1.AdminService/UpdateApp":            {store.ScopeDeploy, `app: "shop" branch: "release"`},
	"/berth.admin.v1.AdminService/DeleteApp":            {store.ScopeDeploy, `app: "shop"`},
	"/berth.admin.v1.AdminService/SetServerAllowRoot":   {store.ScopeAdmin, `server: "web-1" allow: true`},
	"/berth.admin.v1.AdminService/RevokeCertificate":    {store.ScopeAdmin, `serial: "00112233445566778899aabbccddeeff"`},
	"/berth.admin.v1.AdminService/ShareGitCredential":   {store.ScopeAdmin, `credential: "cred-rm" user: "$VICTIM_USER"`},
	"/berth.admin.v1.AdminService/UnshareGitCredential": {store.ScopeAdmin, `credential: "cred-rm" user: "$VICTIM_USER"`},
	"/berth.admin.v1.AdminService/ScanGitHost":          {store.ScopeAdmin, `credential: "cred-rm" address: "127.0.0.1:1"`},
	"/berth.admin.v1.AdminService/TrustGitHost":         {store.ScopeAdmin, `credential: "cred-rm" address: "127.0.0.1:1" fingerprint: "SHA256:AAAA"`},
	"/berth.admin.v1.AdminService/GetApp":               {store.ScopeRead, `app: "shop"`},
	"/berth.admin.v1.AdminService/SetAppEnv":            {store.ScopeDeploy, `app: "shop" scope: "production" set {key: "K" value: "v"}`},
	"/berth.admin.v1.AdminService/SetAppWebhookSecret":  {store.ScopeDeploy, `app: "shop"`},
	"/berth.admin.v1.AdminService/Deploy":               {store.ScopeDeploy, `app: "shop" environment: "production"`},
	"/berth.admin.v1.AdminService/Rollback":             {store.ScopeDeploy, `app: "shop"`},
	"/berth.admin.v1.AdminService/CancelDeployment":     {store.ScopeDeploy, `id: "$NO_SUCH_ID"`},
	"/berth.admin.v1.AdminService/ListDeployments":      {store.ScopeRead, `app: "shop"`},
	"/berth.admin.v1.AdminService/GetDeployment":        {store.ScopeRead, `id: "$NO_SUCH_ID"`},
	"/berth.admin.v1.AdminService/FollowDeployment":     {store.ScopeRead, `id: "$NO_SUCH_ID"`},
	// Processes and schedules decide what code runs: deploy to change or
	// control them, read to see them and their logs.
	"/berth.admin.v1.AdminService/AddAppProcess":       {store.ScopeDeploy, `app: "shop" name: "web" command: "./server" replace: true`},
	"/berth.admin.v1.AdminService/ListAppProcesses":    {store.ScopeRead, `app: "shop"`},
	"/berth.admin.v1.AdminService/RemoveAppProcess":    {store.ScopeDeploy, `app: "shop" name: "nope"`},
	"/berth.admin.v1.AdminService/ControlAppProcesses": {store.ScopeDeploy, `app: "shop" action: "restart"`},
	"/berth.admin.v1.AdminService/StreamAppLogs":       {store.ScopeRead, `app: "shop"`},
	"/berth.admin.v1.AdminService/AddAppSchedule":      {store.ScopeDeploy, `app: "shop" name: "nightly" cron: "@daily" command: "true" replace: true`},
	"/berth.admin.v1.AdminService/ListAppSchedules":    {store.ScopeRead, `app: "shop"`},
	"/berth.admin.v1.AdminService/RemoveAppSchedule":   {store.ScopeDeploy, `app: "shop" name: "nope"`},
	"/berth.admin.v1.AdminService/ListScheduleRuns":    {store.ScopeRead, `app: "shop" name: "nope"`},

	// berth.admin.v1.AccountService
	"/berth.admin.v1.AccountService/ListUsers":          {store.ScopeAdmin, ``},
	"/berth.admin.v1.AccountService/InviteUser":         {store.ScopeAdmin, `email: "new@example.com" role: "viewer"`},
	"/berth.admin.v1.AccountService/DisableUser":        {store.ScopeAdmin, `user: "$VICTIM_USER"`},
	"/berth.admin.v1.AccountService/EnableUser":         {store.ScopeAdmin, `user: "$VICTIM_USER"`},
	"/berth.admin.v1.AccountService/ListTokens":         {store.ScopeRead, ``},
	"/berth.admin.v1.AccountService/CreateToken":        {store.ScopeAdmin, `name: "child" scopes: "read" expires_in {seconds: 3600}`},
	"/berth.admin.v1.AccountService/RevokeToken":        {store.ScopeAdmin, `id: "$SPARE_TOKEN"`},
	"/berth.admin.v1.AccountService/ListSecurityEvents": {store.ScopeAdmin, ``},
	"/berth.admin.v1.AccountService/ListActivity":       {store.ScopeRead, ``},

	// berth.admin.v1.NotificationService: channels and rules are admin's;
	// the inbox is the caller's own.
	"/berth.admin.v1.NotificationService/AddChannel":            {store.ScopeAdmin, `name: "mail-new" kind: "email" to: "ops@example.com"`},
	"/berth.admin.v1.NotificationService/ListChannels":          {store.ScopeAdmin, ``},
	"/berth.admin.v1.NotificationService/TestChannel":           {store.ScopeAdmin, `name: "nope"`},
	"/berth.admin.v1.NotificationService/RemoveChannel":         {store.ScopeAdmin, `name: "nope"`},
	"/berth.admin.v1.NotificationService/AddRule":               {store.ScopeAdmin, `events: "deployment.*" channel: "nope"`},
	"/berth.admin.v1.NotificationService/ListRules":             {store.ScopeAdmin, ``},
	"/berth.admin.v1.NotificationService/RemoveRule":            {store.ScopeAdmin, `id: "$NO_SUCH_ID"`},
	"/berth.admin.v1.NotificationService/ListNotifications":     {store.ScopeRead, `unread_only: true`},
	"/berth.admin.v1.NotificationService/MarkNotificationsRead": {store.ScopeRead, `all: true`},
	"/berth.admin.v1.NotificationService/GetUnreadCount":        {store.ScopeRead, ``},
	"/berth.admin.v1.NotificationService/ListDeliveries":        {store.ScopeAdmin, `status: "failed"`},
	"/berth.admin.v1.NotificationService/UpdateChannel":         {store.ScopeAdmin, `name: "admins-inbox" rate_limit_per_hour: 30`},
	// Alert rules: admin to change, read to look.
	"/berth.admin.v1.NotificationService/AddAlert":    {store.ScopeAdmin, `name: "cpu-new" metric: "cpu" above: 90`},
	"/berth.admin.v1.NotificationService/ListAlerts":  {store.ScopeRead, ``},
	"/berth.admin.v1.NotificationService/GetAlert":    {store.ScopeRead, `name: "nope"`},
	"/berth.admin.v1.NotificationService/RemoveAlert": {store.ScopeAdmin, `name: "nope"`},

	// berth.admin.v1.DomainService: read to look, write to route hosts and
	// renew (like an app's harmless settings: no code runs); DNS provider
	// credentials are admin's.
	"/berth.admin.v1.DomainService/AddDomain":        {store.ScopeWrite, `app: "shop" hostname: "shop.example.com" tls: "off"`},
	"/berth.admin.v1.DomainService/ListDomains":      {store.ScopeRead, ``},
	"/berth.admin.v1.DomainService/GetDomain":        {store.ScopeRead, `hostname: "nope.example.com"`},
	"/berth.admin.v1.DomainService/RemoveDomain":     {store.ScopeWrite, `hostname: "nope.example.com"`},
	"/berth.admin.v1.DomainService/RenewDomain":      {store.ScopeWrite, `hostname: "nope.example.com"`},
	"/berth.admin.v1.DomainService/WatchDomain":      {store.ScopeRead, `hostname: "nope.example.com"`},
	"/berth.admin.v1.DomainService/AddDNSProvider":   {store.ScopeAdmin, `name: "dns-new" provider: "httpreq" credentials {key: "HTTPREQ_ENDPOINT" value: "https://dns.example.com"}`},
	"/berth.admin.v1.DomainService/ListDNSProviders": {store.ScopeRead, ``},

	// berth.admin.v1.BackupService: destinations hold credentials (admin to
	// add or remove); running, verifying, testing and canceling are write;
	// restore, delete and download (the data in the clear) and key
	// rotation are admin.
	"/berth.admin.v1.BackupService/AddBackupDestination":    {store.ScopeAdmin, `name: "dest-new" kind: "local" path: "/var/backups/berth"`},
	"/berth.admin.v1.BackupService/ListBackupDestinations":  {store.ScopeRead, ``},
	"/berth.admin.v1.BackupService/GetBackupDestination":    {store.ScopeRead, `name: "nope"`},
	"/berth.admin.v1.BackupService/TestBackupDestination":   {store.ScopeWrite, `name: "nope"`},
	"/berth.admin.v1.BackupService/RemoveBackupDestination": {store.ScopeAdmin, `name: "nope"`},
	"/berth.admin.v1.BackupService/RunBackup":               {store.ScopeWrite, `app: "shop" destination: "nope" kind: "postgres" source: "shop"`},
	"/berth.admin.v1.BackupService/ListBackups":             {store.ScopeRead, ``},
	"/berth.admin.v1.BackupService/GetBackup":               {store.ScopeRead, `id: "$NO_SUCH_ID"`},
	"/berth.admin.v1.BackupService/FollowBackupJob":         {store.ScopeRead, `id: "$NO_SUCH_ID"`},
	"/berth.admin.v1.BackupService/CancelBackupJob":         {store.ScopeWrite, `id: "$NO_SUCH_ID"`},
	"/berth.admin.v1.BackupService/VerifyBackup":            {store.ScopeWrite, `id: "$NO_SUCH_ID"`},
	"/berth.admin.v1.BackupService/RestoreBackup":           {store.ScopeAdmin, `id: "$NO_SUCH_ID"`},
	"/berth.admin.v1.BackupService/DownloadBackup":          {store.ScopeAdmin, `id: "$NO_SUCH_ID"`},
	"/berth.admin.v1.BackupService/DeleteBackup":            {store.ScopeAdmin, `id: "$NO_SUCH_ID"`},
	"/berth.admin.v1.BackupService/ListBackupKeys":          {store.ScopeRead, ``},
	"/berth.admin.v1.BackupService/RotateBackupKey":         {store.ScopeAdmin, ``},
	// Schedules: admin to change (retention deletes backups).
	"/berth.admin.v1.BackupService/AddBackupSchedule":     {store.ScopeAdmin, `app: "shop" destination: "nope" kind: "postgres" source: "shop" cron: "0 3 * * *" keep: 3`},
	"/berth.admin.v1.BackupService/ListBackupSchedules":   {store.ScopeRead, ``},
	"/berth.admin.v1.BackupService/GetBackupSchedule":     {store.ScopeRead, `id: "$NO_SUCH_ID"`},
	"/berth.admin.v1.BackupService/DisableBackupSchedule": {store.ScopeAdmin, `id: "$NO_SUCH_ID"`},
	"/berth.admin.v1.BackupService/EnableBackupSchedule":  {store.ScopeAdmin, `id: "$NO_SUCH_ID"`},
	"/berth.admin.v1.BackupService/RemoveBackupSchedule":  {store.ScopeAdmin, `id: "$NO_SUCH_ID"`},

	// berth.agent.v1.AgentService: enrollment is public (the join token is
	// the credential); the stream needs the client certificate.
	"/berth.agent.v1.AgentService/GetVersion": {needPublic, ``},
	"/berth.agent.v1.AgentService/Enroll":     {needPublic, `token: "not-a-join-token"`},
	"/berth.agent.v1.AgentService/Connect":    {needCert, ``},
	"/berth.agent.v1.AgentService/SendObject": {needCert, ``},

	// grpc.health.v1.Health: load balancers probe without credentials.
	"/grpc.health.v1.Health/Check": {needPublic, ``},
	"/grpc.health.v1.Health/Watch": {needPublic, ``},
	"/grpc.health.v1.Health/List":  {needPublic, ``},
}

// matrixEnv is the controller's gRPC server with every service the daemon
// registers (admin, accounts and audit, deploys, notifications, agent,
// health).
type matrixEnv struct {
	st     *store.Store
	srv    *grpc.Server
	addr   string
	ca     *ca.CA
	userID store.ID
}

func setupMatrix(t *testing.T) *matrixEnv {
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
	fl := fleet.New(st, authority, log, fleet.Config{ControllerAddr: "127.0.0.1:7443", EnrollPerMinute: 6000, EnrollBurst: 1000})
	dep := deploys.New(st, fl, log, deploys.Config{})
	acc, err := accounts.New(st, nil, accounts.Config{PublicURL: "https://berth.example.com", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(acc.Wait)
	ns, err := notify.New(notify.Config{Store: st, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	dom, err := domains.New(st, dep, log, domains.Config{})
	if err != nil {
		t.Fatal(err)
	}
	bk := backups.New(st, fl, dep, log, backups.Config{})
	deps := grpcapi.Deps{Store: st, CA: authority, Fleet: fl, Deploys: dep, Accounts: acc, Audit: audit.New(st), Notify: ns, Backups: bk, Log: log,
		Alerts: alert.NewService(st, nil, log), Domains: dom}
	authn := grpcapi.NewAuthenticator(deps)
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(authority.ServerTLSConfig(certs.GetCertificate))),
		grpc.UnaryInterceptor(authn.Unary), grpc.StreamInterceptor(authn.Stream))
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
	return &matrixEnv{st: st, srv: srv, addr: ln.Addr().String(), ca: authority, userID: u.ID}
}

func (e *matrixEnv) token(t *testing.T, name string, scopes ...store.Scope) (string, store.ID) {
	t.Helper()
	tok, hash := auth.NewToken()
	rec, err := e.st.CreateAPIToken(context.Background(), store.CreateAPITokenParams{UserID: e.userID, Name: name, TokenHash: hash, Scopes: scopes})
	if err != nil {
		t.Fatal(err)
	}
	return tok, rec.ID
}

// call invokes method with req, as the bearer of token ("" for none), and
// returns the status code. A server stream counts its first answer.
func (e *matrixEnv) call(t *testing.T, conn *grpc.ClientConn, md protoreflect.MethodDescriptor, method, token, reqText string) codes.Code {
	t.Helper()
	in, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
	if err != nil {
		t.Fatalf("%s: input type: %v", method, err)
	}
	out, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
	if err != nil {
		t.Fatalf("%s: output type: %v", method, err)
	}
	req := in.New().Interface()
	if err := prototext.Unmarshal([]byte(reqText), req); err != nil {
		t.Fatalf("%s: request %q: %v", method, reqText, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	resp := out.New().Interface()
	if !md.IsStreamingClient() && !md.IsStreamingServer() {
		return status.Code(conn.Invoke(ctx, method, req, resp))
	}
	s, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: md.IsStreamingServer(), ClientStreams: md.IsStreamingClient()}, method)
	if err != nil {
		return status.Code(err)
	}
	if err := s.SendMsg(req); err != nil && err != io.EOF {
		return status.Code(err)
	}
	if err := s.CloseSend(); err != nil {
		return status.Code(err)
	}
	err = s.RecvMsg(resp)
	if err == nil {
		return codes.OK
	}
	return status.Code(err)
}

func TestScopeMatrix(t *testing.T) {
	t.Parallel()
	e := setupMatrix(t)
	ctx := context.Background()

	// The objects the requests name.
	for _, name := range []string{"web-1", "gone-1", "off-1"} {
		if _, err := e.fleetAdd(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	victim, err := e.st.CreateUser(ctx, store.CreateUserParams{Email: "victim@example.com", PasswordHash: "$argon2id$x", Role: store.RoleViewer, Status: store.UserActive})
	if err != nil {
		t.Fatal(err)
	}
	_, spare := e.token(t, "spare", store.ScopeRead)

	tokens := []struct {
		name  string
		scope store.Scope
		token string
	}{{name: "no token"}}
	for _, sc := range []store.Scope{store.ScopeRead, store.ScopeWrite, store.ScopeDeploy, store.ScopeAdmin} {
		tok, _ := e.token(t, string(sc), sc)
		tokens = append(tokens, struct {
			name  string
			scope store.Scope
			token string
		}{string(sc) + " token", sc, tok})
	}
	e.seed(t, tokens[len(tokens)-1].token)

	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(ca.ClientTLSConfig(e.ca.Pool(), nil))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	repl := strings.NewReplacer("$SPARE_TOKEN", spare.String(), "$VICTIM_USER", victim.ID.String(), "$NO_SUCH_ID", store.NewID().String())
	var registered []string
	for svc := range e.srv.GetServiceInfo() {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
		if err != nil {
			t.Fatalf("service %s: %v", svc, err)
		}
		methods := d.(protoreflect.ServiceDescriptor).Methods()
		for i := range methods.Len() {
			md := methods.Get(i)
			method := "/" + svc + "/" + string(md.Name())
			registered = append(registered, method)
			row, ok := scopeMatrix[method]
			if !ok {
				t.Errorf("%s has no row in scopeMatrix: add one with the scope it needs", method)
				continue
			}
			req := repl.Replace(row.req)
			var first codes.Code
			for i, tk := range tokens {
				got := e.call(t, conn, md, method, tk.token, req)
				switch row.need {
				case needPublic:
					// Enroll refuses a bad join token with PermissionDenied:
					// that is its own credential, not the caller's scope.
					if i == 0 {
						first = got
					} else if got != first {
						t.Errorf("%s (public) with a %s: %v, without one %v: the token must change nothing", method, tk.name, got, first)
					}
				case needCert:
					if got != codes.Unauthenticated {
						t.Errorf("%s with a %s: %v, want Unauthenticated (needs a client certificate)", method, tk.name, got)
					}
				default:
					want := "allowed"
					switch {
					case tk.token == "":
						want = codes.Unauthenticated.String()
					case row.need != needAny && auth.Rank(tk.scope) < auth.Rank(row.need):
						want = codes.PermissionDenied.String()
					}
					gotS := got.String()
					if want == "allowed" && got != codes.Unauthenticated && got != codes.PermissionDenied {
						gotS = "allowed"
					}
					if gotS != want {
						t.Errorf("%s (needs %s) with %s: %v, want %s", method, row.need, tk.name, got, want)
					}
				}
			}
		}
	}
	for method := range scopeMatrix {
		if !slices.Contains(registered, method) {
			t.Errorf("scopeMatrix row %s names no registered method", method)
		}
	}
}

func (e *matrixEnv) fleetAdd(ctx context.Context, name string) (store.Server, error) {
	return e.st.CreateServer(ctx, store.CreateServerParams{Name: name})
}

// seed makes the credential and app the requests name, through the API
// (an admin token), as a person would.
func (e *matrixEnv) seed(t *testing.T, adminToken string) {
	t.Helper()
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(ca.ClientTLSConfig(e.ca.Pool(), nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+adminToken)
	for _, c := range []struct{ method, req string }{
		{"/berth.admin.v1.AdminService/AddGitCredential", `name: "cred-rm" kind: "https" username: "u" token: "t"`},
		{"/berth.admin.v1.AdminService/CreateApp", `name: "shop" server: "web-1" repository_url: "https://git.example.com/shop.git" deploy_path: "/srv/shop" run_as_user: "app"`},
	} {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(strings.ReplaceAll(strings.TrimPrefix(c.method, "/"), "/", ".")))
		if err != nil {
			t.Fatal(err)
		}
		md := d.(protoreflect.MethodDescriptor)
		in, _ := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
		out, _ := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
		req := in.New().Interface()
		if err := prototext.Unmarshal([]byte(c.req), req); err != nil {
			t.Fatal(err)
		}
		if err := conn.Invoke(ctx, c.method, req, out.New().Interface()); err != nil {
			t.Fatalf("seed %s: %v", c.method, err)
		}
	}
}
