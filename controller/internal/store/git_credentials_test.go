package store_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/berthhq/berth/controller/internal/secrets"
	"github.com/berthhq/berth/controller/internal/store"
)

func TestGitCredentialsCRUD(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newAppsEnv(t)
	st := e.st

	ssh, err := st.CreateGitCredential(ctx, store.CreateGitCredentialParams{
		Name: "deploy-key", Kind: store.GitCredentialSSH,
		PublicKey: ptrTo("ssh-ed25519 AAAAC3Nz berth"), Fingerprint: ptrTo("SHA256:abc"),
		Secret: store.GitCredentialSecret{PrivateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nsshsecretbody\n"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if ssh.ID == (store.ID{}) || ssh.Kind != store.GitCredentialSSH || *ssh.PublicKey != "ssh-ed25519 AAAAC3Nz berth" || ssh.Username != nil || ssh.LastUsedAt != nil {
		t.Fatalf("created ssh credential = %+v", ssh)
	}
	https, err := st.CreateGitCredential(ctx, store.CreateGitCredentialParams{
		Name: "github-token", Kind: store.GitCredentialHTTPS, Username: ptrTo("octo"),
		Secret: store.GitCredentialSecret{Token: "ghp_tokenvalue123"},
	})
	if err != nil {
		t.Fatal(err)
	}

	got, err := st.GitCredential(ctx, ssh.ID)
	if err != nil || got.Name != "deploy-key" || *got.Fingerprint != "SHA256:abc" || !got.CreatedAt.Equal(ssh.CreatedAt) {
		t.Fatalf("get = %+v, %v", got, err)
	}
	got, err = st.GitCredentialByName(ctx, "github-token")
	if err != nil || got.ID != https.ID || *got.Username != "octo" || got.PublicKey != nil {
		t.Fatalf("by name = %+v, %v", got, err)
	}
	_, err = st.GitCredentialByName(ctx, "nope")
	wantErr(t, "unknown name", err, store.ErrNotFound)
	_, err = st.GitCredential(ctx, store.NewID())
	wantErr(t, "unknown id", err, store.ErrNotFound)

	// Constraints.
	_, err = st.CreateGitCredential(ctx, store.CreateGitCredentialParams{Name: "deploy-key", Kind: store.GitCredentialHTTPS, Username: ptrTo("u"), Secret: store.GitCredentialSecret{Token: "t"}})
	wantErr(t, "duplicate name", err, store.ErrConflict)
	_, err = st.CreateGitCredential(ctx, store.CreateGitCredentialParams{Name: "Upper", Kind: store.GitCredentialHTTPS, Username: ptrTo("u"), Secret: store.GitCredentialSecret{Token: "t"}})
	wantErr(t, "bad name", err, store.ErrInvalid)
	_, err = st.CreateGitCredential(ctx, store.CreateGitCredentialParams{Name: "nokey", Kind: store.GitCredentialSSH, Secret: store.GitCredentialSecret{PrivateKey: "k"}})
	wantErr(t, "ssh without public key", err, store.ErrInvalid)
	_, err = st.CreateGitCredential(ctx, store.CreateGitCredentialParams{Name: "ftp", Kind: "ftp", Secret: store.GitCredentialSecret{Token: "t"}})
	wantErr(t, "bad kind", err, store.ErrInvalid)

	// Filter and paging.
	var all []store.ID
	all = append(all, ssh.ID, https.ID)
	for i := range 5 {
		c, err := st.CreateGitCredential(ctx, store.CreateGitCredentialParams{Name: fmt.Sprintf("tok-%d", i), Kind: store.GitCredentialHTTPS, Username: ptrTo("u"), Secret: store.GitCredentialSecret{Token: "t"}})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, c.ID)
	}
	ids := pageAll(t, 2, func(before *store.ID, limit int) ([]store.ID, error) {
		l, err := st.ListGitCredentials(ctx, store.GitCredentialFilter{Before: before, Limit: limit})
		out := make([]store.ID, len(l))
		for i, c := range l {
			out[i] = c.ID
		}
		return out, err
	})
	checkNewestFirst(t, "git credentials", ids, all)
	sshOnly, err := st.ListGitCredentials(ctx, store.GitCredentialFilter{Kind: store.GitCredentialSSH})
	if err != nil || len(sshOnly) != 1 || sshOnly[0].ID != ssh.ID {
		t.Fatalf("ssh filter = %v, %v", sshOnly, err)
	}

	// Rename, touch.
	r, err := st.RenameGitCredential(ctx, https.ID, "gh")
	if err != nil || r.Name != "gh" {
		t.Fatalf("rename = %+v, %v", r, err)
	}
	_, err = st.RenameGitCredential(ctx, https.ID, "deploy-key")
	wantErr(t, "rename onto a taken name", err, store.ErrConflict)
	if err := st.TouchGitCredential(ctx, https.ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.GitCredential(ctx, https.ID); got.LastUsedAt == nil {
		t.Fatal("touch did not set last_used_at")
	}
	wantErr(t, "touch unknown", st.TouchGitCredential(ctx, store.NewID()), store.ErrNotFound)

	// Delete: refused while an app uses it, then allowed.
	srv := rawServer(t, e.db, "web-1")
	app, err := st.CreateApp(ctx, store.CreateAppParams{AppSettings: store.AppSettings{
		ServerID: srv, Name: "shop", RepositoryURL: "git@github.com:acme/shop.git", GitCredentialID: &ssh.ID,
	}})
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, "delete used credential", st.DeleteGitCredential(ctx, ssh.ID), store.ErrReferenced)
	names, err := st.AppNamesUsingGitCredential(ctx, ssh.ID)
	if err != nil || len(names) != 1 || names[0] != "shop" {
		t.Fatalf("apps using = %v, %v", names, err)
	}
	if _, err := st.GitCredential(ctx, ssh.ID); err != nil {
		t.Fatalf("refused delete removed the credential: %v", err)
	}
	app.GitCredentialID = nil
	if _, err := st.UpdateApp(ctx, app.ID, app.AppSettings); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteGitCredential(ctx, ssh.ID); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "delete twice", st.DeleteGitCredential(ctx, ssh.ID), store.ErrNotFound)
	_, err = st.GitCredentialSecret(ctx, ssh.ID)
	wantErr(t, "secret of deleted", err, store.ErrNotFound)
	_, err = st.CreateApp(ctx, store.CreateAppParams{AppSettings: store.AppSettings{
		ServerID: srv, Name: "blog", RepositoryURL: "x", GitCredentialID: &ssh.ID,
	}})
	wantErr(t, "app with deleted credential", err, store.ErrMissingParent)
}

func TestGitCredentialSecrets(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newAppsEnv(t)
	st := e.st

	const key = "PRIVATE-KEY-sshsecretbody-0123456789"
	const token = "glpat-supersecrettoken"
	ssh, err := st.CreateGitCredential(ctx, store.CreateGitCredentialParams{
		Name: "key", Kind: store.GitCredentialSSH, PublicKey: ptrTo("ssh-ed25519 AAA"), Fingerprint: ptrTo("SHA256:x"),
		Secret: store.GitCredentialSecret{PrivateKey: key},
	})
	if err != nil {
		t.Fatal(err)
	}
	https, err := st.CreateGitCredential(ctx, store.CreateGitCredentialParams{
		Name: "tok", Kind: store.GitCredentialHTTPS, Username: ptrTo("deployer"), Secret: store.GitCredentialSecret{Token: token},
	})
	if err != nil {
		t.Fatal(err)
	}
	sec, err := st.GitCredentialSecret(ctx, ssh.ID)
	if err != nil || sec.PrivateKey != key || sec.Token != "" {
		t.Fatalf("ssh secret = %v (key match %v)", err, sec.PrivateKey == key)
	}
	sec, err = st.GitCredentialSecret(ctx, https.ID)
	if err != nil || sec.Token != token || sec.Username != "deployer" {
		t.Fatalf("https secret: %v (token match %v, username %q)", err, sec.Token == token, sec.Username)
	}

	// The secret never shows when printed or logged.
	var logBuf bytes.Buffer
	slog.New(slog.NewTextHandler(&logBuf, nil)).Info("x", "secret", sec)
	for _, s := range []string{fmt.Sprintf("%v %+v %#v %s", sec, sec, sec, sec), logBuf.String()} {
		if strings.Contains(s, token) {
			t.Fatalf("secret printed: %s", s)
		}
	}

	// Raw column: ciphertext under the primary key, no plaintext.
	var raw []byte
	if err := e.db.Pool.QueryRow(ctx, `SELECT credentials FROM git_credentials WHERE id = $1`, pgu(https.ID)).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(token)) || bytes.Contains(raw, []byte("deployer")) {
		t.Fatal("plaintext in git_credentials.credentials")
	}
	if kid, err := secrets.KeyID(raw); err != nil || kid != e.kr.PrimaryID() {
		t.Fatalf("key id = %d, %v; primary %d", kid, err, e.kr.PrimaryID())
	}

	// Replace the secret (a new key pair).
	upd, err := st.UpdateGitCredentialSecret(ctx, ssh.ID, store.UpdateGitCredentialSecretParams{
		PublicKey: ptrTo("ssh-ed25519 BBB"), Fingerprint: ptrTo("SHA256:y"), Secret: store.GitCredentialSecret{PrivateKey: "new-key"},
	})
	if err != nil || *upd.PublicKey != "ssh-ed25519 BBB" || upd.Kind != store.GitCredentialSSH {
		t.Fatalf("update secret = %+v, %v", upd, err)
	}
	if sec, err := st.GitCredentialSecret(ctx, ssh.ID); err != nil || sec.PrivateKey != "new-key" {
		t.Fatalf("after update: %v", err)
	}
	_, err = st.UpdateGitCredentialSecret(ctx, ssh.ID, store.UpdateGitCredentialSecretParams{Secret: store.GitCredentialSecret{PrivateKey: "k"}})
	wantErr(t, "ssh update without public key", err, store.ErrInvalid)
	_, err = st.UpdateGitCredentialSecret(ctx, store.NewID(), store.UpdateGitCredentialSecretParams{Username: ptrTo("u")})
	wantErr(t, "update unknown", err, store.ErrNotFound)

	// A ciphertext moved to another row does not open.
	e.moveCiphertext(t, "git_credentials", "credentials", https.ID, ssh.ID)
	_, err = st.GitCredentialSecret(ctx, ssh.ID)
	wantErr(t, "moved ciphertext", err, secrets.ErrCorrupt)
	if sec, err := st.GitCredentialSecret(ctx, https.ID); err != nil || sec.Token != token {
		t.Fatalf("source row after move: %v", err)
	}

	// A store without keys cannot create or read secrets.
	nokeys := store.New(e.db.Pool, nil)
	if _, err := nokeys.GitCredentialSecret(ctx, https.ID); err == nil {
		t.Fatal("read a secret without keys")
	}
}
