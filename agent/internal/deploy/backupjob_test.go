package deploy

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/berthhq/berth/agent/internal/backup"
)

// A backup job runs the backup package's pipeline under the journal: its
// result carries the stored object, and nothing secret it was given
// (destination credentials, a connection URL, the age identity) reaches
// the journal on disk or its output.
func TestBackupJobJournalHoldsNoSecrets(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{})
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "files")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "a.txt"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	store := t.TempDir()
	const secret = "journal-secret-5e4d3c2b1a"
	dest := backup.Destination{Kind: "local", Path: store, SecretAccessKey: secret, Password: secret}
	spec := Spec{DeploymentID: newID(), AppName: "shop", Kind: KindBackup, Backup: &BackupJob{
		Source: backup.Source{Kind: "directory", Name: src}, Dest: dest,
		Object: backup.Object{Key: "shop/x.tar.zst.age"}, Recipient: id.Recipient().String(), Identity: secret,
	}}
	res := h.run(spec)
	if res.Status != StatusSucceeded || res.BackupObject == nil || res.BackupObject.Key != "shop/x.tar.zst.age" ||
		res.BackupObject.Size <= 0 || len(res.BackupObject.SHA256) != 32 {
		t.Fatalf("backup job: %+v %+v\n%s", res, res.BackupObject, h.log(spec.DeploymentID))
	}
	if st, err := os.Stat(filepath.Join(store, "shop", "x.tar.zst.age")); err != nil || st.Size() != res.BackupObject.Size {
		t.Fatalf("stored object: %v %v", st, err)
	}
	// The journal (still there: nothing acknowledged it) holds no secret.
	if _, err := os.Stat(filepath.Join(h.data, "jobs", spec.DeploymentID, specFile)); err != nil {
		t.Fatalf("journal: %v", err)
	}
	grepTree(t, h.data, secret)

	// Verify with the identity: the identity is not journaled either.
	o := backup.Object{Key: res.BackupObject.Key, Size: res.BackupObject.Size, Kind: "directory"}
	o.SHA256 = hex.EncodeToString(res.BackupObject.SHA256)
	verify := Spec{DeploymentID: newID(), AppName: "shop", Kind: KindBackupVerify, Backup: &BackupJob{Dest: dest, Object: o, Identity: id.String()}}
	if res := h.run(verify); res.Status != StatusSucceeded {
		t.Fatalf("verify job: %+v\n%s", res, h.log(verify.DeploymentID))
	}
	grepTree(t, h.data, id.String())
	if strings.Contains(h.log(verify.DeploymentID)+h.log(spec.DeploymentID), "AGE-SECRET-KEY") {
		t.Fatal("the identity reached a job's output")
	}

	// A backup job without its spec is refused.
	if err := h.ex.Start(t.Context(), Spec{DeploymentID: newID(), Kind: KindBackup}); err == nil {
		t.Fatal("a backup job without its backup spec started")
	}
}
