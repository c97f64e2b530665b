package backups

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/ca"
	"github.com/berthhq/berth/controller/internal/deploys"
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
	admin *auth.Principal
	srv   store.Server
	app   store.App
}

func (e *env) as(scope store.Scope) *auth.Principal {
	p := *e.admin
	p.Scopes = []store.Scope{scope}
	return &p
}

const s3SecretKey = "s3-secret-unit-9a8b7c6d5e4f"

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
	dep := deploys.New(st, fl, log, deploys.Config{})
	e := &env{st: st, svc: New(st, fl, dep, log, Config{})}
	ctx := context.Background()
	u, err := st.CreateUser(ctx, store.CreateUserParams{Email: "ops@example.com", PasswordHash: "$argon2id$x", Role: store.RoleAdmin, Status: store.UserActive})
	if err != nil {
		t.Fatal(err)
	}
	e.admin = &auth.Principal{UserID: u.ID, Email: u.Email, Scopes: []store.Scope{store.ScopeAdmin}}
	if e.srv, err = st.CreateServer(ctx, store.CreateServerParams{Name: "web-1"}); err != nil {
		t.Fatal(err)
	}
	if e.app, err = dep.CreateApp(ctx, e.admin, deploys.Peer{}, deploys.CreateAppParams{Server: "web-1",
		AppSettings: store.AppSettings{Name: "shop", RepositoryURL: "https://git.example.com/x.git", DeployPath: "/srv/shop"}}); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) localDest(t *testing.T, name string) Destination {
	t.Helper()
	d, err := e.svc.AddDestination(context.Background(), e.admin, Peer{}, DestinationSpec{Name: name, Kind: "local", Path: "/var/backups/" + name})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// dispatched runs a backup and claims it as a dispatcher would.
func (e *env) dispatched(t *testing.T, dest string) store.Backup {
	t.Helper()
	ctx := context.Background()
	b, err := e.svc.RunBackup(ctx, e.admin, Peer{}, RunRequest{App: "shop", Destination: dest, Kind: "postgres", Source: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.ClaimQueuedBackups(ctx, []store.ID{e.srv.ID}, 10); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestScopes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	e.localDest(t, "vault")
	b := e.dispatched(t, "vault")
	cases := []struct {
		what string
		err  error
	}{
		{"read adds a destination", func() error {
			_, err := e.svc.AddDestination(ctx, e.as(store.ScopeRead), Peer{}, DestinationSpec{Name: "x", Kind: "local", Path: "/x"})
			return err
		}()},
		{"write adds a destination (it holds credentials)", func() error {
			_, err := e.svc.AddDestination(ctx, e.as(store.ScopeWrite), Peer{}, DestinationSpec{Name: "x", Kind: "local", Path: "/x"})
			return err
		}()},
		{"write removes a destination", e.svc.RemoveDestination(ctx, e.as(store.ScopeWrite), Peer{}, "vault")},
		{"read runs a backup", func() error {
			_, err := e.svc.RunBackup(ctx, e.as(store.ScopeRead), Peer{}, RunRequest{App: "shop", Destination: "vault", Kind: "postgres", Source: "shop"})
			return err
		}()},
		{"read tests a destination", func() error {
			_, _, err := e.svc.TestDestination(ctx, e.as(store.ScopeRead), Peer{}, "vault", "")
			return err
		}()},
		{"read cancels", func() error { _, err := e.svc.Cancel(ctx, e.as(store.ScopeRead), Peer{}, b.ID.String()); return err }()},
		{"read verifies", func() error { _, err := e.svc.Verify(ctx, e.as(store.ScopeRead), Peer{}, b.ID.String()); return err }()},
		{"deploy restores", func() error {
			_, err := e.svc.Restore(ctx, e.as(store.ScopeDeploy), Peer{}, RestoreRequest{ID: b.ID.String()})
			return err
		}()},
		{"deploy deletes", func() error { _, err := e.svc.Delete(ctx, e.as(store.ScopeDeploy), Peer{}, b.ID.String()); return err }()},
		{"deploy downloads", e.svc.Download(ctx, e.as(store.ScopeDeploy), Peer{}, b.ID.String(), io.Discard)},
		{"deploy rotates the key", func() error { _, err := e.svc.RotateKey(ctx, e.as(store.ScopeDeploy), Peer{}); return err }()},
	}
	for _, c := range cases {
		if !errors.Is(c.err, auth.ErrForbidden) {
			t.Errorf("%s: %v, want forbidden", c.what, c.err)
		}
	}
	if _, err := e.svc.Destinations(ctx, nil); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("no principal lists destinations: %v", err)
	}
	if _, err := e.svc.Backups(ctx, e.as(store.ScopeRead), ListRequest{}); err != nil {
		t.Errorf("read lists backups: %v", err)
	}
}

func TestValidation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	e.localDest(t, "vault")
	big := strings.Repeat("k", maxSecret+1)
	bad := map[string]DestinationSpec{
		"bad name":              {Name: "Bad Name!", Kind: "local", Path: "/x"},
		"long name":             {Name: strings.Repeat("a", 64), Kind: "local", Path: "/x"},
		"unknown kind":          {Name: "x", Kind: "ftp", Path: "/x"},
		"relative path":         {Name: "x", Kind: "local", Path: "backups"},
		"dotdot path":           {Name: "x", Kind: "local", Path: "/srv/../etc"},
		"local with a secret":   {Name: "x", Kind: "local", Path: "/x", SecretAccessKey: "s"},
		"s3 ftp endpoint":       {Name: "x", Kind: "s3", Endpoint: "ftp://h", Bucket: "bkt", AccessKeyID: "a", SecretAccessKey: "s"},
		"s3 endpoint with path": {Name: "x", Kind: "s3", Endpoint: "https://h/p", Bucket: "bkt", AccessKeyID: "a", SecretAccessKey: "s"},
		"s3 endpoint with user": {Name: "x", Kind: "s3", Endpoint: "https://u:p@h", Bucket: "bkt", AccessKeyID: "a", SecretAccessKey: "s"},
		"s3 bad bucket":         {Name: "x", Kind: "s3", Endpoint: "https://h", Bucket: "B", AccessKeyID: "a", SecretAccessKey: "s"},
		"s3 no secret":          {Name: "x", Kind: "s3", Endpoint: "https://h", Bucket: "bkt", AccessKeyID: "a"},
		"s3 absolute prefix":    {Name: "x", Kind: "s3", Endpoint: "https://h", Bucket: "bkt", Prefix: "/p", AccessKeyID: "a", SecretAccessKey: "s"},
		"s3 oversized secret":   {Name: "x", Kind: "s3", Endpoint: "https://h", Bucket: "bkt", AccessKeyID: "a", SecretAccessKey: big},
		"sftp no fingerprint":   {Name: "x", Kind: "sftp", Host: "h", Username: "u", Path: "/b", Password: "p"},
		"sftp bad fingerprint":  {Name: "x", Kind: "sftp", Host: "h", Username: "u", Path: "/b", Password: "p", HostKeyFingerprint: "MD5:aa"},
		"sftp password and key": {Name: "x", Kind: "sftp", Host: "h", Username: "u", Path: "/b", Password: "p", PrivateKey: []byte("k"), HostKeyFingerprint: "SHA256:" + strings.Repeat("A", 43)},
		"sftp garbage key":      {Name: "x", Kind: "sftp", Host: "h", Username: "u", Path: "/b", PrivateKey: []byte("not a key"), HostKeyFingerprint: "SHA256:" + strings.Repeat("A", 43)},
		"sftp bad port":         {Name: "x", Kind: "sftp", Host: "h", Port: 70000, Username: "u", Path: "/b", Password: "p", HostKeyFingerprint: "SHA256:" + strings.Repeat("A", 43)},
		"sftp host with space":  {Name: "x", Kind: "sftp", Host: "h h", Username: "u", Path: "/b", Password: "p", HostKeyFingerprint: "SHA256:" + strings.Repeat("A", 43)},
	}
	for what, sp := range bad {
		_, err := e.svc.AddDestination(ctx, e.admin, Peer{}, sp)
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: %v, want invalid", what, err)
		}
		if err != nil && (strings.Contains(err.Error(), big) || strings.Contains(err.Error(), "not a key")) {
			t.Errorf("%s: the error quotes a secret", what)
		}
	}
	if _, err := e.svc.AddDestination(ctx, e.admin, Peer{}, DestinationSpec{Name: "vault", Kind: "local", Path: "/y"}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("duplicate name: %v", err)
	}
	runs := map[string]RunRequest{
		"bad kind":             {App: "shop", Destination: "vault", Kind: "redis", Source: "x"},
		"db with slash":        {App: "shop", Destination: "vault", Kind: "postgres", Source: "a/b"},
		"db with quote":        {App: "shop", Destination: "vault", Kind: "mysql", Source: "a'b"},
		"db like an option":    {App: "shop", Destination: "vault", Kind: "postgres", Source: "--help"},
		"db too long":          {App: "shop", Destination: "vault", Kind: "postgres", Source: strings.Repeat("d", 64)},
		"relative directory":   {App: "shop", Destination: "vault", Kind: "directory", Source: "srv/x"},
		"directory with ..":    {App: "shop", Destination: "vault", Kind: "directory", Source: "/srv/../etc"},
		"env on a directory":   {App: "shop", Destination: "vault", Kind: "directory", Source: "/srv/x", ConnectionEnv: "DATABASE_URL"},
		"bad env name":         {App: "shop", Destination: "vault", Kind: "postgres", Source: "x", ConnectionEnv: "DATABASE-URL"},
		"bad app name":         {App: "Shop!!", Destination: "vault", Kind: "postgres", Source: "x"},
		"bad destination name": {App: "shop", Destination: "Vault!", Kind: "postgres", Source: "x"},
	}
	for what, r := range runs {
		if _, err := e.svc.RunBackup(ctx, e.admin, Peer{}, r); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("run with %s: %v, want invalid", what, err)
		}
	}
	if _, err := e.svc.RunBackup(ctx, e.admin, Peer{}, RunRequest{App: "nope", Destination: "vault", Kind: "postgres", Source: "x"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown app: %v", err)
	}
	for _, id := range []string{"", "not-a-ulid", strings.Repeat("Z", 5000)} {
		if _, _, err := e.svc.Backup(ctx, e.admin, id); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("backup id %.20q: %v", id, err)
		}
	}
	if _, _, err := e.svc.Backup(ctx, e.admin, store.NewID().String()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown backup: %v", err)
	}
	// A backup that did not succeed has nothing to verify, restore or download.
	b := e.dispatched(t, "vault")
	if _, err := e.svc.Verify(ctx, e.admin, Peer{}, b.ID.String()); !errors.Is(err, deploys.ErrRefused) {
		t.Errorf("verify of an unfinished backup: %v", err)
	}
	if _, err := e.svc.Delete(ctx, e.admin, Peer{}, b.ID.String()); !errors.Is(err, deploys.ErrRefused) {
		t.Errorf("delete of a running backup: %v", err)
	}
}

func TestCredentialsAreWriteOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	d, err := e.svc.AddDestination(ctx, e.admin, Peer{}, DestinationSpec{Name: "s3", Kind: "s3", Endpoint: "https://s3.example.com",
		Bucket: "bkt", AccessKeyID: "AKID", SecretAccessKey: s3SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	list, err := e.svc.Destinations(ctx, e.as(store.ScopeRead))
	if err != nil {
		t.Fatal(err)
	}
	shown, _ := json.Marshal([]any{d, list})
	if bytes.Contains(shown, []byte(s3SecretKey)) || !d.HasCredentials {
		t.Fatalf("a destination as shown holds its secret (or says it has none): %s", shown)
	}
	var dump string
	if err := e.st.Pool().QueryRow(ctx, `SELECT (SELECT string_agg(row_to_json(a)::text, ',') FROM activity_log a) ||
		(SELECT string_agg(encode(credentials, 'escape'), ',') FROM backup_destinations)`).Scan(&dump); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(dump, s3SecretKey) || !strings.Contains(dump, "backup_destination.created") {
		t.Fatalf("secret in the activity log or stored in the clear, or no activity: %s", dump)
	}
	// The agent gets it inside the job that needs it.
	js, err := e.svc.taskStart(ctx, store.BackupTask{ID: store.NewID(), Kind: store.TaskProbe, DestinationID: d.ID, TimeoutSeconds: 60})
	if err != nil || js.GetBackup().GetDestination().GetSecretAccessKey() != s3SecretKey {
		t.Fatalf("probe job: %v", err)
	}
}

func TestRemoveDestinationInUse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	e.localDest(t, "vault")
	e.localDest(t, "spare")
	b := e.dispatched(t, "vault")
	err := e.svc.RemoveDestination(ctx, e.admin, Peer{}, "vault")
	// It says which: the backup by id, with its app.
	if !errors.Is(err, store.ErrReferenced) || !strings.Contains(err.Error(), "1 backup(s) and 0 schedule(s): backups "+b.ID.String()+" (shop);") {
		t.Fatalf("remove of a used destination: %v", err)
	}
	if err := e.svc.RemoveDestination(ctx, e.admin, Peer{}, "spare"); err != nil {
		t.Fatalf("remove of an unused destination: %v", err)
	}
	if _, err := e.svc.Destination(ctx, e.admin, "spare"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("removed destination still there: %v", err)
	}
}

func output(id string, seq uint64, data string) *agentv1.ConnectRequest {
	return &agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_JobOutput{JobOutput: &agentv1.JobOutput{JobId: id, Seq: seq, Step: "backup", Data: []byte(data), Time: timestamppb.Now()}}}
}

func result(id string, seq uint64, status string, obj *agentv1.BackupObject) *agentv1.ConnectRequest {
	return &agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_JobResult{JobResult: &agentv1.JobResult{JobId: id, Seq: seq, Status: status,
		Error: map[bool]string{true: "", false: "pg_dump exited 1"}[status == "succeeded"], BackupObject: obj,
		StartedAt: timestamppb.Now(), FinishedAt: timestamppb.Now()}}}
}

// Agent events are stored once each, in order: a replayed batch changes
// nothing; success needs the object's size and checksum under the key the
// controller chose; another server's job ends the stream.
func TestJobEventsExactlyOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	e.localDest(t, "vault")
	b := e.dispatched(t, "vault")
	id := b.ID.String()
	sum := sha256.Sum256([]byte("object"))
	good := &agentv1.BackupObject{Key: objectKey(b), Size: 1234, Sha256: sum[:]}
	batch := []*agentv1.ConnectRequest{output(id, 1, "dumping\n"), output(id, 2, "uploading\n"), result(id, 3, "succeeded", good)}
	for round := 0; round < 2; round++ { // the second round is a replay
		acks, err := e.svc.JobEvents(ctx, e.srv.ID, batch)
		if err != nil || len(acks) != 1 || acks[0].GetSeq() != 3 {
			t.Fatalf("round %d: acks %v, %v", round, acks, err)
		}
	}
	got, err := e.st.Backup(ctx, b.ID)
	if err != nil || got.Status != store.BackupSucceeded || *got.SizeBytes != 1234 || !bytes.Equal(got.ChecksumSHA256, sum[:]) || *got.ObjectKey != objectKey(b) {
		t.Fatalf("after the result: %+v %v", got, err)
	}
	logs, err := e.st.BackupLogs(ctx, b.ID, 0, 100)
	if err != nil || len(logs) != 2 {
		t.Fatalf("log chunks %d (want 2, stored once): %v", len(logs), err)
	}
	var n int
	if err := e.st.Pool().QueryRow(ctx, `SELECT count(*) FROM activity_log WHERE action = 'backup.succeeded'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("backup.succeeded recorded %d times: %v", n, err)
	}
	if err := e.st.Pool().QueryRow(ctx, `SELECT count(*) FROM notify_events WHERE kind = 'backup.succeeded'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("backup.succeeded published %d times: %v", n, err)
	}

	// Success without a checksum, or under another key: failed.
	for what, obj := range map[string]*agentv1.BackupObject{
		"no checksum": {Key: "", Size: 10},
		"another key": {Key: "../elsewhere", Size: 10, Sha256: sum[:]},
	} {
		b := e.dispatched(t, "vault")
		if _, err := e.svc.JobEvents(ctx, e.srv.ID, []*agentv1.ConnectRequest{result(b.ID.String(), 1, "succeeded", obj)}); err != nil {
			t.Fatal(err)
		}
		got, _ := e.st.Backup(ctx, b.ID)
		if got.Status != store.BackupFailed || got.ObjectKey != nil || got.FailureReason == nil {
			t.Errorf("success with %s: %+v", what, got)
		}
	}
	// A failure: its reason and a notification.
	f := e.dispatched(t, "vault")
	if _, err := e.svc.JobEvents(ctx, e.srv.ID, []*agentv1.ConnectRequest{result(f.ID.String(), 1, "failed", nil)}); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.st.Backup(ctx, f.ID); got.Status != store.BackupFailed || deref(got.FailureReason) != "pg_dump exited 1" {
		t.Fatalf("failed backup: %+v", got)
	}
	if err := e.st.Pool().QueryRow(ctx, `SELECT count(*) FROM notify_events WHERE kind = 'backup.failed'`).Scan(&n); err != nil || n != 3 {
		t.Fatalf("backup.failed published %d times, want 3: %v", n, err)
	}

	// Another server's job, a malformed id, a bad number, an oversized chunk.
	other, err := e.st.CreateServer(ctx, store.CreateServerParams{Name: "web-2"})
	if err != nil {
		t.Fatal(err)
	}
	x := e.dispatched(t, "vault")
	for what, msgs := range map[string][]*agentv1.ConnectRequest{
		"another server's job": {output(x.ID.String(), 1, "x")},
		"seq 0":                {output(x.ID.String(), 0, "x")},
		"oversized chunk":      {output(x.ID.String(), 1, strings.Repeat("x", store.MaxLogChunk+1))},
		"bad status":           {result(x.ID.String(), 1, "great", nil)},
	} {
		sid := e.srv.ID
		if what == "another server's job" {
			sid = other.ID
		}
		if _, err := e.svc.JobEvents(ctx, sid, msgs); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: %v, want invalid", what, err)
		}
	}
	// Events of jobs that are not backups go on to the deploys service,
	// which acknowledges a job it does not know so the agent forgets it.
	gone := store.NewID().String()
	acks, err := e.svc.JobEvents(ctx, e.srv.ID, []*agentv1.ConnectRequest{output(gone, 1, "x")})
	if err != nil || len(acks) != 1 || acks[0].GetJobId() != gone {
		t.Fatalf("unknown job: %v %v", acks, err)
	}
}

// Rotation: new backups use the new key, old ones keep theirs.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	e.localDest(t, "vault")
	b1 := e.dispatched(t, "vault")
	k2, err := e.svc.RotateKey(ctx, e.admin, Peer{})
	if err != nil {
		t.Fatal(err)
	}
	b2 := e.dispatched(t, "vault")
	if *b1.EncryptionKeyID == *b2.EncryptionKeyID || *b2.EncryptionKeyID != k2.ID.String() {
		t.Fatalf("keys: %s then %s, rotated to %s", *b1.EncryptionKeyID, *b2.EncryptionKeyID, k2.ID)
	}
	keys, err := e.svc.Keys(ctx, e.as(store.ScopeRead))
	if err != nil || len(keys) != 2 || keys[0].ID != k2.ID {
		t.Fatalf("keyring: %v %v", keys, err)
	}
	// Each backup's job encrypts to its own key's recipient, and that
	// key's identity decrypts it.
	for _, b := range []store.Backup{b1, b2} {
		js, err := e.svc.backupStart(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		rcp, err := age.ParseX25519Recipient(js.GetBackup().GetRecipient())
		if err != nil {
			t.Fatal(err)
		}
		var ct bytes.Buffer
		w, _ := age.Encrypt(&ct, rcp)
		_, _ = w.Write([]byte("data"))
		_ = w.Close()
		idn, err := e.svc.identityFor(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		id, err := age.ParseX25519Identity(string(idn))
		if err != nil {
			t.Fatal(err)
		}
		r, err := age.Decrypt(&ct, id)
		if err != nil {
			t.Fatalf("backup %s: its key does not decrypt what its job encrypts: %v", b.ID, err)
		}
		if got, _ := io.ReadAll(r); string(got) != "data" {
			t.Fatalf("decrypted %q", got)
		}
	}
	var ident string
	if err := e.st.Pool().QueryRow(ctx, `SELECT string_agg(encode(identity, 'escape'), ',') FROM backup_encryption_keys`).Scan(&ident); err != nil || strings.Contains(ident, "AGE-SECRET-KEY") {
		t.Fatalf("identities stored in the clear: %v", err)
	}
}

// Overdue jobs end as deployments do: dispatched ones whose agent never
// reports fail "agent unreachable" once past their deadline and the grace.
func TestSweep(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	e.localDest(t, "vault")
	now := time.Now()
	e.svc.cfg.Now = func() time.Time { return now }
	e.svc.started = now.Add(-time.Hour)
	queued, err := e.svc.RunBackup(ctx, e.admin, Peer{}, RunRequest{App: "shop", Destination: "vault", Kind: "postgres", Source: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	running := e.dispatched(t, "vault") // claims the queued one as well
	now = now.Add(7 * time.Hour)
	e.svc.sweep(ctx)
	for _, id := range []store.ID{queued.ID, running.ID} {
		got, _ := e.st.Backup(ctx, id)
		if got.Status != store.BackupFailed || deref(got.FailureReason) != "agent unreachable" {
			t.Errorf("overdue backup %s: %s %v", id, got.Status, deref(got.FailureReason))
		}
	}
}

// An agent's SendObject is taken only for a download of its own server
// that a client here waits for, once.
func TestReceiveObjectRefusals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	eof := func() ([]byte, string, error) { return nil, "", io.EOF }
	if err := e.svc.ReceiveObject(ctx, e.srv.ID, "not-an-id", eof); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("malformed job id: %v", err)
	}
	if err := e.svc.ReceiveObject(ctx, e.srv.ID, store.NewID().String(), eof); !errors.Is(err, deploys.ErrRefused) {
		t.Errorf("no download waits: %v", err)
	}
	id := store.NewID()
	rd, pw := io.Pipe()
	e.svc.mu.Lock()
	e.svc.downloads[id] = &download{serverID: e.srv.ID, pw: pw}
	e.svc.mu.Unlock()
	if err := e.svc.ReceiveObject(ctx, store.NewID(), id.String(), eof); !errors.Is(err, deploys.ErrRefused) {
		t.Errorf("another server's download: %v", err)
	}
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(rd); got <- b }()
	chunks := [][]byte{[]byte("stored "), []byte("bytes")}
	recv := func() ([]byte, string, error) {
		if len(chunks) == 0 {
			return nil, "", io.EOF
		}
		c := chunks[0]
		chunks = chunks[1:]
		return c, "", nil
	}
	if err := e.svc.ReceiveObject(ctx, e.srv.ID, id.String(), recv); err != nil {
		t.Fatalf("the waited-for download: %v", err)
	}
	if b := <-got; string(b) != "stored bytes" {
		t.Fatalf("relayed %q", b)
	}
	if err := e.svc.ReceiveObject(ctx, e.srv.ID, id.String(), eof); !errors.Is(err, deploys.ErrRefused) {
		t.Errorf("a replayed upload: %v", err)
	}
}

// The schedules' entry points: a scheduled backup gets the newest key and
// never overlaps its schedule's unfinished run; retention deletes through
// a delete task.
func TestSystemEntryPoints(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	d := e.localDest(t, "vault")
	three, now := 3, time.Now()
	sched, err := e.st.CreateBackupSchedule(ctx, store.CreateBackupScheduleParams{AppID: e.app.ID, BackupScheduleSettings: store.BackupScheduleSettings{
		DestinationID: d.ID, Kind: store.BackupPostgres, Source: "shop", Cron: "0 3 * * *", RetentionCount: &three, Enabled: true, NextRunAt: &now}})
	if err != nil {
		t.Fatal(err)
	}
	p := store.CreateBackupParams{AppID: &e.app.ID, DestinationID: d.ID, ScheduleID: &sched.ID, Kind: store.BackupPostgres, Source: "shop"}
	var b store.Backup
	if err := e.st.InTx(ctx, func(tx *store.Store) error { b, err = e.svc.EnqueueScheduled(ctx, tx, p); return err }); err != nil {
		t.Fatal(err)
	}
	if b.TriggeredBy != store.TriggerSchedule || b.EncryptionKeyID == nil {
		t.Fatalf("scheduled backup: %+v", b)
	}
	if err := e.st.InTx(ctx, func(tx *store.Store) error { _, err := e.svc.EnqueueScheduled(ctx, tx, p); return err }); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("a second run while the first is unfinished: %v", err)
	}
	if _, err := e.svc.QueueSystemTask(ctx, b.ID, store.TaskDelete); !errors.Is(err, deploys.ErrRefused) {
		t.Fatalf("delete of an unfinished backup: %v", err)
	}
	if _, err := e.svc.QueueSystemTask(ctx, b.ID, store.TaskRestore); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("a system restore: %v", err)
	}
}
