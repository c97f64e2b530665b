package backups

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/deploys"
	"github.com/berthhq/berth/controller/internal/store"
)

// One server's agent gets an identity for its verify and restore jobs; it
// must open that server's backups only. With one keyring identity for all
// servers, a single compromised server (or any verify run on it) could
// decrypt every other server's backups. Each server encrypts to its own
// recipient, derived from the keyring key, and gets only its own identity.
func TestServerKeysAreIsolated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	e.localDest(t, "vault")
	other, err := e.st.CreateServer(ctx, store.CreateServerParams{Name: "web-2"})
	if err != nil {
		t.Fatal(err)
	}
	dep := deploys.New(e.st, e.svc.fleet, e.svc.log, deploys.Config{})
	if _, err := dep.CreateApp(ctx, e.admin, deploys.Peer{}, deploys.CreateAppParams{Server: "web-2",
		AppSettings: store.AppSettings{Name: "blog", RepositoryURL: "https://git.example.com/b.git", DeployPath: "/srv/blog"}}); err != nil {
		t.Fatal(err)
	}
	mk := func(app string) (store.Backup, string) {
		b, err := e.svc.RunBackup(ctx, e.admin, Peer{}, RunRequest{App: app, Destination: "vault", Kind: "postgres", Source: app})
		if err != nil {
			t.Fatal(err)
		}
		js, err := e.svc.backupStart(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		return b, js.GetBackup().GetRecipient()
	}
	bA, rcptA := mk("shop")
	bB, rcptB := mk("blog")
	if *bB.ServerID != other.ID {
		t.Fatalf("blog's backup is on %s", bB.ServerID)
	}
	if rcptA == rcptB {
		t.Fatal("two servers encrypt to the same recipient")
	}
	keys, err := e.st.BackupEncryptionKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rcptA == keys[0].Recipient || rcptB == keys[0].Recipient {
		t.Fatal("a server encrypts to the keyring's own recipient")
	}
	seal := func(rcpt string) []byte {
		r, err := age.ParseX25519Recipient(rcpt)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		w, _ := age.Encrypt(&buf, r)
		io.WriteString(w, "rows")
		w.Close()
		return buf.Bytes()
	}
	opens := func(identity store.BackupIdentity, ct []byte) bool {
		ids, err := age.ParseIdentities(bytes.NewReader([]byte(identity)))
		if err != nil {
			t.Fatal(err)
		}
		r, err := age.Decrypt(bytes.NewReader(ct), ids...)
		if err != nil {
			return false
		}
		b, err := io.ReadAll(r)
		return err == nil && string(b) == "rows"
	}
	idA, err := e.svc.identityFor(ctx, bA)
	if err != nil {
		t.Fatal(err)
	}
	idB, err := e.svc.identityFor(ctx, bB)
	if err != nil {
		t.Fatal(err)
	}
	if !opens(idA, seal(rcptA)) || !opens(idB, seal(rcptB)) {
		t.Fatal("a server's identity does not open its own backups")
	}
	if opens(idA, seal(rcptB)) || opens(idB, seal(rcptA)) {
		t.Fatal("one server's identity opens another server's backups")
	}
	// Deterministic: a re-sent job encrypts to the same recipient.
	if _, again := mk("shop"); again != rcptA {
		t.Fatal("the server's recipient changed between two backups with the same key")
	}
}

// The write scope backs up its app's directory only: the agent is root,
// and a directory elsewhere is any file of the server. Admins may name any
// directory. A directory inside the app's path is sent with within set
// (the agent opens it through the app's path, so a symlink a release put
// there cannot lead out); one outside, an admin's, without.
func TestDirectoryBackupScope(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	e.localDest(t, "vault")
	for _, src := range []string{"/etc", "/srv/shopping", "/srv", "/"} {
		_, err := e.svc.RunBackup(ctx, e.as(store.ScopeWrite), Peer{}, RunRequest{App: "shop", Destination: "vault", Kind: "directory", Source: src})
		if !errors.Is(err, auth.ErrForbidden) && !(src == "/" && errors.Is(err, store.ErrInvalid)) {
			t.Errorf("write token backs up %s: %v", src, err)
		}
	}
	list, err := e.svc.Backups(ctx, e.admin, ListRequest{})
	if err != nil || len(list) != 0 {
		t.Fatalf("refused runs left %d backups (%v)", len(list), err)
	}
	within := func(pr *auth.Principal, src string) string {
		t.Helper()
		b, err := e.svc.RunBackup(ctx, pr, Peer{}, RunRequest{App: "shop", Destination: "vault", Kind: "directory", Source: src})
		if err != nil {
			t.Fatalf("backup of %s: %v", src, err)
		}
		js, err := e.svc.backupStart(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		if js.GetBackup().GetSource().GetName() != src {
			t.Fatalf("source %q", js.GetBackup().GetSource().GetName())
		}
		if _, err := e.svc.Cancel(ctx, e.admin, Peer{}, b.ID.String()); err != nil {
			t.Fatal(err)
		}
		return js.GetBackup().GetSource().GetWithin()
	}
	for _, src := range []string{"/srv/shop", "/srv/shop/current/storage"} {
		if got := within(e.as(store.ScopeWrite), src); got != "/srv/shop" {
			t.Errorf("write token's backup of %s: within %q", src, got)
		}
	}
	if got := within(e.admin, "/srv/shop/shared"); got != "/srv/shop" {
		t.Errorf("admin's backup inside the app: within %q", got)
	}
	if got := within(e.admin, "/etc"); got != "" {
		t.Errorf("admin's backup of /etc: within %q", got)
	}
}

// A stored backup whose delete failed (its destination gone for good)
// would keep its row, and so its destination, for ever: an admin may
// forget it, the record only, with the object's key in the activity log.
// Forget is refused for a backup whose delete never failed or is under
// way, for anyone but an admin, and for an id already forgotten.
func TestForgetBackupWhoseDeleteFailed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	e.localDest(t, "vault")
	b := e.succeed(t, e.dispatched(t, "vault"))
	// Never deleted: refused, nothing happens.
	if err := e.svc.Forget(ctx, e.admin, Peer{}, b.ID.String()); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "delete it first") {
		t.Fatalf("forget of a backup never deleted: %v", err)
	}
	task, err := e.svc.Delete(ctx, e.admin, Peer{}, b.ID.String())
	if err != nil || task == nil {
		t.Fatalf("delete: %v %v", task, err)
	}
	// Under way: refused.
	if err := e.svc.Forget(ctx, e.admin, Peer{}, b.ID.String()); !errors.Is(err, ErrRefused) {
		t.Fatalf("forget while the delete is under way: %v", err)
	}
	e.finishTask(t, task.ID, "failed")
	got := e.backup(t, b.ID)
	if got.DeleteError == nil {
		t.Fatalf("the failed delete is not on the backup: %+v", got)
	}
	// Not an admin: refused.
	for _, sc := range []store.Scope{store.ScopeRead, store.ScopeWrite, store.ScopeDeploy} {
		if err := e.svc.Forget(ctx, e.as(sc), Peer{}, b.ID.String()); !errors.Is(err, auth.ErrForbidden) {
			t.Fatalf("%s forgets: %v", sc, err)
		}
	}
	for _, bad := range []string{"", "nope", strings.Repeat("Z", 5000)} {
		if err := e.svc.Forget(ctx, e.admin, Peer{}, bad); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("forget %.20q: %v", bad, err)
		}
	}
	if err := e.svc.Forget(ctx, e.admin, Peer{}, b.ID.String()); err != nil {
		t.Fatalf("forget after a failed delete: %v", err)
	}
	if _, err := e.st.Backup(ctx, b.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the forgotten backup's row: %v", err)
	}
	if n := e.count(t, `SELECT count(*) FROM activity_log WHERE action = 'backup.forgotten' AND changes->>'object_key' = $1 AND changes ? 'delete_error'`, objectKey(b)); n != 1 {
		t.Fatalf("backup.forgotten recorded %d times with the key and the error", n)
	}
	// Replayed: the row is gone.
	if err := e.svc.Forget(ctx, e.admin, Peer{}, b.ID.String()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("forget again: %v", err)
	}
	// Its destination is free now.
	if err := e.svc.RemoveDestination(ctx, e.admin, Peer{}, "vault"); err != nil {
		t.Fatalf("remove the destination after forgetting its last backup: %v", err)
	}
}
