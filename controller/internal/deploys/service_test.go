package deploys

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/ca"
	"github.com/berthhq/berth/controller/internal/fleet"
	"github.com/berthhq/berth/controller/internal/secrets"
	"github.com/berthhq/berth/controller/internal/store"
	"github.com/berthhq/berth/controller/internal/testdb"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

func TestMain(m *testing.M) { testdb.Main(m) }

type env struct {
	st    *store.Store
	svc   *Service
	now   time.Time
	admin *auth.Principal
	srv   store.Server
}

func (e *env) as(scope store.Scope) *auth.Principal {
	p := *e.admin
	p.Scopes = []store.Scope{scope}
	return &p
}

func setup(t *testing.T) *env {
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
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	fl := fleet.New(st, authority, log, fleet.Config{})
	e := &env{st: st, now: time.Now()}
	e.svc = New(st, fl, log, Config{Now: func() time.Time { return e.now }, UnreachableGrace: time.Minute})
	ctx := context.Background()
	u, err := st.CreateUser(ctx, store.CreateUserParams{Email: "ops@example.com", PasswordHash: "$argon2id$x", Role: store.RoleAdmin, Status: store.UserActive})
	if err != nil {
		t.Fatal(err)
	}
	e.admin = &auth.Principal{UserID: u.ID, Email: u.Email, Scopes: []store.Scope{store.ScopeAdmin}}
	if e.srv, err = st.CreateServer(ctx, store.CreateServerParams{Name: "web-1"}); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) app(t *testing.T, name string) store.App {
	t.Helper()
	a, err := e.svc.CreateApp(context.Background(), e.admin, Peer{}, CreateAppParams{Server: "web-1",
		AppSettings: store.AppSettings{Name: name, RepositoryURL: "https://git.example.com/x.git", DeployPath: "/srv/" + name}})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestScopesAndValidation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	a := e.app(t, "shop")

	forbidden := []struct {
		what string
		err  error
	}{
		{"read creates an app", func() error {
			_, err := e.svc.CreateApp(ctx, e.as(store.ScopeRead), Peer{}, CreateAppParams{Server: "web-1", AppSettings: store.AppSettings{Name: "x", RepositoryURL: "https://h/x.git"}})
			return err
		}()},
		{"write deploys", func() error {
			_, err := e.svc.Deploy(ctx, e.as(store.ScopeWrite), Peer{}, DeployParams{App: "shop"})
			return err
		}()},
		{"write rolls back", func() error { _, err := e.svc.Rollback(ctx, e.as(store.ScopeWrite), Peer{}, "shop", ""); return err }()},
		{"deploy adds a credential", func() error {
			_, err := e.svc.AddGitCredential(ctx, e.as(store.ScopeDeploy), Peer{}, AddGitCredentialParams{Name: "k", Kind: store.GitCredentialSSH})
			return err
		}()},
		{"read sets env", func() error {
			_, err := e.svc.SetAppEnv(ctx, e.as(store.ScopeRead), Peer{}, "shop", "", map[string]string{"A": "b"}, nil)
			return err
		}()},
	}
	for _, f := range forbidden {
		if !errors.Is(f.err, auth.ErrForbidden) {
			t.Errorf("%s: %v", f.what, f.err)
		}
	}
	if _, err := e.svc.Deploy(ctx, nil, Peer{}, DeployParams{App: "shop"}); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("anonymous deploy: %v", err)
	}

	invalid := map[string]error{}
	mk := func(s store.AppSettings) error {
		_, err := e.svc.CreateApp(ctx, e.admin, Peer{}, CreateAppParams{Server: "web-1", AppSettings: s})
		return err
	}
	invalid["bad name"] = mk(store.AppSettings{Name: "Bad Name", RepositoryURL: "https://h/x.git"})
	invalid["password in url"] = mk(store.AppSettings{Name: "a1", RepositoryURL: "https://u:secret@h/x.git"})
	invalid["option as url"] = mk(store.AppSettings{Name: "a2", RepositoryURL: "--upload-pack=evil"})
	invalid["relative path"] = mk(store.AppSettings{Name: "a3", RepositoryURL: "https://h/x.git", DeployPath: "srv/a3"})
	invalid["escaping shared path"] = mk(store.AppSettings{Name: "a4", RepositoryURL: "https://h/x.git", SharedPaths: []string{"../etc"}})
	invalid["reserved name"] = mk(store.AppSettings{Name: "cancel", RepositoryURL: "https://h/x.git"})
	invalid["bad user"] = mk(store.AppSettings{Name: "a5", RepositoryURL: "https://h/x.git", RunAsUser: "root;rm"})
	invalid["huge script"] = mk(store.AppSettings{Name: "a6", RepositoryURL: "https://h/x.git", DeployScript: strings.Repeat("x", 300<<10)})
	_, invalid["bad commit"] = e.svc.Deploy(ctx, e.admin, Peer{}, DeployParams{App: "shop", Commit: "not-a-sha"})
	_, invalid["bad env"] = e.svc.Deploy(ctx, e.admin, Peer{}, DeployParams{App: "shop", Environment: "qa"})
	_, invalid["bad env key"] = e.svc.SetAppEnv(ctx, e.admin, Peer{}, "shop", "", map[string]string{"1BAD": "x"}, nil)
	_, invalid["bad key"] = e.svc.AddGitCredential(ctx, e.admin, Peer{}, AddGitCredentialParams{Name: "k", Kind: store.GitCredentialSSH, PrivateKey: "-----BEGIN nonsense"})
	_, invalid["https without token"] = e.svc.AddGitCredential(ctx, e.admin, Peer{}, AddGitCredentialParams{Name: "k", Kind: store.GitCredentialHTTPS, Username: "u"})
	for what, err := range invalid {
		if !errors.Is(err, ErrInvalid) && !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: %v", what, err)
		}
	}
	if _, err := e.svc.Deploy(ctx, e.admin, Peer{}, DeployParams{App: "nope"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown app: %v", err)
	}
	_ = a
}

func TestCredentialsAreWriteOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	c, err := e.svc.AddGitCredential(ctx, e.admin, Peer{}, AddGitCredentialParams{Name: "key", Kind: store.GitCredentialSSH})
	if err != nil || c.PublicKey == nil || !strings.HasPrefix(*c.PublicKey, "ssh-ed25519 ") || c.Fingerprint == nil {
		t.Fatalf("generated: %+v %v", c, err)
	}
	sec, err := e.st.GitCredentialSecret(ctx, c.ID)
	if err != nil || !strings.Contains(sec.PrivateKey, "OPENSSH PRIVATE KEY") {
		t.Fatalf("stored key: %v", err)
	}
	h, err := e.svc.AddGitCredential(ctx, e.admin, Peer{}, AddGitCredentialParams{Name: "tok", Kind: store.GitCredentialHTTPS, Username: "bot", Token: "tok-secret-123"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.AddGitCredential(ctx, e.admin, Peer{}, AddGitCredentialParams{Name: "tok", Kind: store.GitCredentialHTTPS, Username: "bot", Token: "x"}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate name: %v", err)
	}
	if _, err := e.svc.SetAppEnv(ctx, e.admin, Peer{}, e.app(t, "shop").Name, store.AppEnvProduction, map[string]string{"DB_PASSWORD": "env-secret-456"}, nil); err != nil {
		t.Fatal(err)
	}
	acts, err := e.st.ActivityLog(ctx, store.ActivityFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range acts {
		s := strings.ToLower(strings.Join([]string{a.Action, a.SubjectName, toJSON(a.Changes)}, " "))
		if strings.Contains(s, "tok-secret-123") || strings.Contains(s, "env-secret-456") || strings.Contains(s, "private key") || strings.Contains(s, sec.PrivateKey[40:80]) {
			t.Fatalf("secret in the activity log: %s", s)
		}
	}
	if len(acts) < 3 {
		t.Fatalf("%d activity entries", len(acts))
	}
	// In use: refused with the app's name.
	if _, err := e.svc.CreateApp(ctx, e.admin, Peer{}, CreateAppParams{Server: "web-1", Credential: "tok", AppSettings: store.AppSettings{Name: "api", RepositoryURL: "https://h/x.git"}}); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.DeleteGitCredential(ctx, e.admin, Peer{}, h.Name); !errors.Is(err, store.ErrReferenced) || !strings.Contains(err.Error(), "api") {
		t.Fatalf("delete in use: %v", err)
	}
	if err := e.svc.DeleteGitCredential(ctx, e.admin, Peer{}, "key"); err != nil {
		t.Fatal(err)
	}
}

func output(id store.ID, seq uint64, data string) *agentv1.ConnectRequest {
	return &agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_JobOutput{JobOutput: &agentv1.JobOutput{JobId: id.String(), Seq: seq, Step: "build", Data: []byte(data)}}}
}

func TestJobEventsExactlyOnceAndQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	a := e.app(t, "shop")
	q1, err := e.svc.Deploy(ctx, e.admin, Peer{}, DeployParams{App: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	q2, err := e.svc.Deploy(ctx, e.admin, Peer{}, DeployParams{App: "shop"})
	if err != nil || len(q2.Behind) != 1 || q2.Behind[0].ID != q1.Deployment.ID {
		t.Fatalf("second deploy queues behind the first: %+v %v", q2.Behind, err)
	}
	claimed, err := e.st.ClaimQueuedDeployments(ctx, []store.ID{e.srv.ID}, 10)
	if err != nil || len(claimed) != 1 || claimed[0].ID != q1.Deployment.ID {
		t.Fatalf("claim: one per app: %+v %v", claimed, err)
	}
	id := q1.Deployment.ID
	// The job start carries the environment, for this job only.
	if _, err := e.svc.SetAppEnv(ctx, e.admin, Peer{}, "shop", "", map[string]string{"K": "v"}, nil); err != nil {
		t.Fatal(err)
	}
	js, err := e.svc.jobStart(ctx, a, claimed[0])
	if err != nil || js.GetEnv()["K"] != "v" || js.GetKind() != "deploy" || js.GetDeployPath() != "/srv/shop" {
		t.Fatalf("job start: %+v %v", js, err)
	}

	ack := func(m *agentv1.ConnectRequest) *agentv1.JobAck {
		t.Helper()
		acks, err := e.svc.JobEvents(ctx, e.srv.ID, []*agentv1.ConnectRequest{m})
		if err != nil || len(acks) > 1 {
			t.Fatal(acks, err)
		}
		if len(acks) == 0 {
			return nil
		}
		return acks[0]
	}
	if a := ack(output(id, 1, "hello\n")); a.GetSeq() != 1 {
		t.Fatalf("ack %v", a)
	}
	if a := ack(output(id, 1, "hello\n")); a.GetSeq() != 1 { // re-sent: stored once
		t.Fatalf("dup ack %v", a)
	}
	if a := ack(output(id, 3, "gap\n")); a != nil { // out of order: no ack
		t.Fatalf("gap acked: %v", a)
	}
	sha := strings.Repeat("ab", 20)
	ack(&agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_JobProgress{JobProgress: &agentv1.JobProgress{JobId: id.String(), Seq: 2, Step: "fetch", Commit: sha, CommitMessage: "msg"}}})
	d, _ := e.st.Deployment(ctx, id)
	if d.Status != store.DeploymentRunning || d.CommitSHA == nil || *d.CommitSHA != sha {
		t.Fatalf("after progress: %+v", d)
	}
	// Another server cannot report on this job.
	other, _ := e.st.CreateServer(ctx, store.CreateServerParams{Name: "web-2"})
	if _, err := e.svc.JobEvents(ctx, other.ID, []*agentv1.ConnectRequest{output(id, 3, "x")}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("foreign server: %v", err)
	}
	ack(&agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_JobResult{JobResult: &agentv1.JobResult{
		JobId: id.String(), Seq: 3, Status: "succeeded", ReleasePath: "/srv/shop/releases/" + id.String(), Commit: sha}}})
	d, _ = e.st.Deployment(ctx, id)
	app, _ := e.st.App(ctx, a.ID)
	if d.Status != store.DeploymentSucceeded || d.ReleasePath == nil || app.CurrentDeploymentID == nil || *app.CurrentDeploymentID != id {
		t.Fatalf("after result: %+v current %v", d, app.CurrentDeploymentID)
	}
	var got []string
	if err := e.svc.Follow(ctx, e.admin, id.String(), 0, func(ev FollowEvent) error {
		if ev.Chunk != nil {
			got = append(got, string(ev.Chunk.Data))
		}
		if ev.Deployment != nil {
			got = append(got, string(ev.Deployment.Status))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, "|") != "hello\n|succeeded" {
		t.Fatalf("follow = %q", got)
	}

	// The second one may go now; cancel it while dispatched.
	if claimed, _ = e.st.ClaimQueuedDeployments(ctx, nil, 10); len(claimed) != 1 || claimed[0].ID != q2.Deployment.ID {
		t.Fatalf("second claim: %+v", claimed)
	}
	c, err := e.svc.Cancel(ctx, e.admin, Peer{}, q2.Deployment.ID.String())
	if err != nil || c.CancelRequestedAt == nil || c.Status != store.DeploymentDispatched {
		t.Fatalf("cancel: %+v %v", c, err)
	}
	// The agent never answers: past deadline plus grace it is failed.
	e.now = c.DeadlineAt.Add(30 * time.Second)
	e.svc.sweep(ctx)
	if d, _ = e.st.Deployment(ctx, c.ID); d.Status != store.DeploymentDispatched {
		t.Fatalf("within the grace: %s", d.Status)
	}
	e.now = c.DeadlineAt.Add(2 * time.Minute)
	e.svc.sweep(ctx)
	if d, _ = e.st.Deployment(ctx, c.ID); d.Status != store.DeploymentFailed || d.FailureReason == nil || *d.FailureReason != "agent unreachable" {
		t.Fatalf("unreachable: %+v", d)
	}
	// A queued one past its deadline times out; cancel of a finished one is refused.
	q3, _ := e.svc.Deploy(ctx, e.admin, Peer{}, DeployParams{App: "shop"})
	e.now = q3.Deployment.DeadlineAt.Add(time.Second)
	e.svc.sweep(ctx)
	if d, _ = e.st.Deployment(ctx, q3.Deployment.ID); d.Status != store.DeploymentTimedOut {
		t.Fatalf("queued past deadline: %s", d.Status)
	}
	if _, err := e.svc.Cancel(ctx, e.admin, Peer{}, q3.Deployment.ID.String()); !errors.Is(err, store.ErrWrongState) {
		t.Fatalf("cancel finished: %v", err)
	}
	// Rollback: only the earlier release; none exists here.
	if _, err := e.svc.Rollback(ctx, e.admin, Peer{}, "shop", ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("rollback without an earlier release: %v", err)
	}
}

// Events that queued up on a stream are stored together: one ack per job
// with its highest committed number (a skipped number holds the rest
// back), the result sees the commit an earlier event of the run set, a job
// deleted meanwhile is acknowledged, and another server's job ends the run.
func TestJobEventsBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	e.app(t, "shop")
	e.app(t, "blog")
	q1, err := e.svc.Deploy(ctx, e.admin, Peer{}, DeployParams{App: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	q2, err := e.svc.Deploy(ctx, e.admin, Peer{}, DeployParams{App: "blog"})
	if err != nil {
		t.Fatal(err)
	}
	if claimed, err := e.st.ClaimQueuedDeployments(ctx, []store.ID{e.srv.ID}, 10); err != nil || len(claimed) != 2 {
		t.Fatalf("claim: %+v %v", claimed, err)
	}
	a, b, gone := q1.Deployment.ID, q2.Deployment.ID, store.NewID()
	sha := strings.Repeat("ef", 20)
	acks, err := e.svc.JobEvents(ctx, e.srv.ID, []*agentv1.ConnectRequest{
		output(a, 1, "one\n"),
		output(b, 1, "x\n"),
		{Msg: &agentv1.ConnectRequest_JobProgress{JobProgress: &agentv1.JobProgress{JobId: a.String(), Seq: 2, Step: "fetch", Commit: sha, CommitMessage: "subject"}}},
		output(b, 3, "skipped 2\n"),
		output(gone, 7, "late\n"),
		{Msg: &agentv1.ConnectRequest_JobResult{JobResult: &agentv1.JobResult{JobId: a.String(), Seq: 3, Status: "succeeded", ReleasePath: "/srv/shop/releases/" + a.String()}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, ack := range acks {
		got[ack.GetJobId()] = ack.GetSeq()
	}
	if len(acks) != 3 || got[a.String()] != 3 || got[b.String()] != 1 || got[gone.String()] != 7 {
		t.Fatalf("acks = %v", got)
	}
	d, _ := e.st.Deployment(ctx, a)
	if d.Status != store.DeploymentSucceeded || d.CommitSHA == nil || *d.CommitSHA != sha || d.CommitMessage == nil || *d.CommitMessage != "subject" || d.AgentSeq != 3 {
		t.Fatalf("a after the run: %+v", d)
	}
	if d, _ = e.st.Deployment(ctx, b); d.Status != store.DeploymentRunning || d.AgentSeq != 1 {
		t.Fatalf("b after the run: %+v", d)
	}
	// Another server's job anywhere in a run ends it, and stores nothing.
	other, _ := e.st.CreateServer(ctx, store.CreateServerParams{Name: "web-2"})
	if _, err := e.svc.JobEvents(ctx, other.ID, []*agentv1.ConnectRequest{output(b, 2, "y\n")}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("foreign server: %v", err)
	}
	if d, _ = e.st.Deployment(ctx, b); d.AgentSeq != 1 {
		t.Fatalf("foreign event stored: seq %d", d.AgentSeq)
	}
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestNameAndCommitBounds(t *testing.T) {
	for s, want := range map[string]bool{
		"a": true, strings.Repeat("a", 63): true, strings.Repeat("a", 64): false, "": false,
		"-a": false, "a.b_c-d": true, "A": false,
	} {
		if validName(s) != want {
			t.Errorf("validName(%q) = %v", s, !want)
		}
	}
	for s, want := range map[string]bool{
		"abc": false, "abcd": true, strings.Repeat("0", 64): true, strings.Repeat("0", 65): false, "abcg": false,
	} {
		if validCommit(s) != want {
			t.Errorf("validCommit(%q) = %v", s, !want)
		}
	}
}
