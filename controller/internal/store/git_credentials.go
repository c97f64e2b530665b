package store

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/berthhq/berth/gen/dbsqlc"
)

// GitCredentialKind is how a credential authenticates to a git host.
type GitCredentialKind string

// The git credential kinds.
const (
	// GitCredentialSSH is a deploy key (generated ed25519 or imported).
	GitCredentialSSH GitCredentialKind = "ssh"
	// GitCredentialHTTPS is a username and token.
	GitCredentialHTTPS GitCredentialKind = "https"
)

// GitCredential is what may be shown of a credential: never its secret.
type GitCredential struct {
	ID   ID
	Name string
	Kind GitCredentialKind
	// ssh: the OpenSSH public key to paste into the git host, and its
	// SHA256:... fingerprint. nil for https.
	PublicKey   *string
	Fingerprint *string
	// https: the username (not secret). nil for ssh.
	Username *string
	// AllowedHosts are the repository hosts (lowercase, no port) the
	// credential may be sent to; empty until the first app attaches it.
	AllowedHosts []string
	// KnownHosts are the OpenSSH known_hosts lines an ssh credential's
	// fetches trust, one per line; empty: none pinned yet.
	KnownHosts string
	LastUsedAt *time.Time
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// GitCredentialSecret is the encrypted part of a credential: PrivateKey for
// ssh, Username and Token for https. It formats and logs as redacted, so
// printing it by mistake shows nothing.
type GitCredentialSecret struct {
	PrivateKey string `json:"private_key,omitempty"`
	Username   string `json:"username,omitempty"`
	Token      string `json:"token,omitempty"`
}

// Format prints the type name only, for every verb.
func (GitCredentialSecret) Format(f fmt.State, _ rune) {
	_, _ = f.Write([]byte("GitCredentialSecret{redacted}"))
}

// LogValue keeps the secret out of slog output.
func (GitCredentialSecret) LogValue() slog.Value { return slog.StringValue("redacted") }

func gitCredentialFromRow(r dbsqlc.GitCredential) GitCredential {
	return GitCredential{
		ID: fromPG(r.ID), Name: r.Name, Kind: GitCredentialKind(r.Kind),
		PublicKey: r.PublicKey, Fingerprint: r.Fingerprint, Username: r.Username,
		AllowedHosts: r.AllowedHosts, KnownHosts: r.KnownHosts,
		LastUsedAt: r.LastUsedAt, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
	}
}

// CreateGitCredentialParams describes a new credential. For https, an empty
// Secret.Username is filled from Username.
type CreateGitCredentialParams struct {
	ID          ID
	Name        string
	Kind        GitCredentialKind
	PublicKey   *string
	Fingerprint *string
	Username    *string
	Secret      GitCredentialSecret
	// AllowedHosts and KnownHosts as GitCredential's; nil and "": none yet.
	AllowedHosts []string
	KnownHosts   string
}

func (s *Store) sealGitCredential(id ID, kind GitCredentialKind, username *string, sec GitCredentialSecret) ([]byte, error) {
	if kind == GitCredentialHTTPS && sec.Username == "" && username != nil {
		sec.Username = *username
	}
	pt, err := json.Marshal(sec)
	if err != nil {
		return nil, err
	}
	return s.seal("git_credentials", "credentials", id, pt)
}

// CreateGitCredential stores a credential, its secret sealed to the new row.
func (s *Store) CreateGitCredential(ctx context.Context, p CreateGitCredentialParams) (GitCredential, error) {
	if p.ID == (ID{}) {
		p.ID = NewID()
	}
	ct, err := s.sealGitCredential(p.ID, p.Kind, p.Username, p.Secret)
	if err != nil {
		return GitCredential{}, mapErr("create git credential", err)
	}
	r, err := s.q.CreateGitCredential(ctx, dbsqlc.CreateGitCredentialParams{
		ID: pgID(p.ID), Name: p.Name, Kind: string(p.Kind), Credentials: ct,
		PublicKey: p.PublicKey, Fingerprint: p.Fingerprint, Username: p.Username,
		AllowedHosts: emptyIfNil(p.AllowedHosts), KnownHosts: p.KnownHosts,
	})
	if err != nil {
		return GitCredential{}, mapErr("create git credential", err)
	}
	return gitCredentialFromRow(r), nil
}

// GitCredential returns a credential by id.
func (s *Store) GitCredential(ctx context.Context, id ID) (GitCredential, error) {
	r, err := s.q.GetGitCredential(ctx, pgID(id))
	if err != nil {
		return GitCredential{}, mapErr("get git credential", err)
	}
	return gitCredentialFromRow(r), nil
}

// GitCredentialByName returns a credential by its name.
func (s *Store) GitCredentialByName(ctx context.Context, name string) (GitCredential, error) {
	r, err := s.q.GetGitCredentialByName(ctx, name)
	if err != nil {
		return GitCredential{}, mapErr("get git credential", err)
	}
	return gitCredentialFromRow(r), nil
}

// GitCredentialFilter selects and pages credentials. Before is the last id
// of the previous page; Limit 0 is DefaultPageSize.
type GitCredentialFilter struct {
	Kind   GitCredentialKind // "" for every kind
	Before *ID
	Limit  int
}

// ListGitCredentials lists credentials, newest first.
func (s *Store) ListGitCredentials(ctx context.Context, f GitCredentialFilter) ([]GitCredential, error) {
	rows, err := s.q.ListGitCredentials(ctx, dbsqlc.ListGitCredentialsParams{
		Kind: nullText(string(f.Kind)), Before: pgOptID(f.Before), Lim: limitArg(f.Limit),
	})
	if err != nil {
		return nil, mapErr("list git credentials", err)
	}
	out := make([]GitCredential, len(rows))
	for i, r := range rows {
		out[i] = gitCredentialFromRow(r)
	}
	return out, nil
}

// GitCredentialSecret opens a credential's secret, for the job that needs it.
func (s *Store) GitCredentialSecret(ctx context.Context, id ID) (GitCredentialSecret, error) {
	r, err := s.q.GetGitCredential(ctx, pgID(id))
	if err != nil {
		return GitCredentialSecret{}, mapErr("get git credential secret", err)
	}
	pt, err := s.open("git_credentials", "credentials", id, r.Credentials)
	if err != nil {
		return GitCredentialSecret{}, fmt.Errorf("get git credential secret: %w", err)
	}
	var sec GitCredentialSecret
	if err := json.Unmarshal(pt, &sec); err != nil {
		return GitCredentialSecret{}, fmt.Errorf("get git credential secret: decode: %w", err)
	}
	return sec, nil
}

// UpdateGitCredentialSecretParams replaces a credential's secret and the
// public parts that belong to it (a new key has a new public key and
// fingerprint). The kind cannot change.
type UpdateGitCredentialSecretParams struct {
	PublicKey   *string
	Fingerprint *string
	Username    *string
	Secret      GitCredentialSecret
}

// UpdateGitCredentialSecret replaces a credential's secret.
func (s *Store) UpdateGitCredentialSecret(ctx context.Context, id ID, p UpdateGitCredentialSecretParams) (GitCredential, error) {
	var out GitCredential
	err := s.InTx(ctx, func(tx *Store) error {
		cur, err := tx.q.GetGitCredential(ctx, pgID(id))
		if err != nil {
			return err
		}
		ct, err := tx.sealGitCredential(id, GitCredentialKind(cur.Kind), p.Username, p.Secret)
		if err != nil {
			return err
		}
		r, err := tx.q.UpdateGitCredentialSecret(ctx, dbsqlc.UpdateGitCredentialSecretParams{
			ID: pgID(id), Credentials: ct, PublicKey: p.PublicKey, Fingerprint: p.Fingerprint, Username: p.Username,
		})
		out = gitCredentialFromRow(r)
		return err
	})
	if err != nil {
		return GitCredential{}, mapErr("update git credential secret", err)
	}
	return out, nil
}

// RenameGitCredential changes a credential's name.
func (s *Store) RenameGitCredential(ctx context.Context, id ID, name string) (GitCredential, error) {
	r, err := s.q.RenameGitCredential(ctx, dbsqlc.RenameGitCredentialParams{ID: pgID(id), Name: name})
	if err != nil {
		return GitCredential{}, mapErr("rename git credential", err)
	}
	return gitCredentialFromRow(r), nil
}

// TouchGitCredential records that a job used the credential.
func (s *Store) TouchGitCredential(ctx context.Context, id ID) error {
	n, err := s.q.TouchGitCredential(ctx, pgID(id))
	return affected("touch git credential", n, err)
}

// DeleteGitCredential deletes a credential; ErrReferenced while an app uses
// it (AppNamesUsingGitCredential names them).
func (s *Store) DeleteGitCredential(ctx context.Context, id ID) error {
	n, err := s.q.DeleteGitCredential(ctx, pgID(id))
	return affected("delete git credential", n, err)
}

func emptyIfNil(v []string) []string {
	if v == nil {
		return []string{}
	}
	return v
}

// GitCredentialForUpdate returns a credential and locks its row until the
// transaction ends: attaching it to an app (the first attach binds its
// hosts) and pinning host keys are read-modify-writes.
func (s *Store) GitCredentialForUpdate(ctx context.Context, id ID) (GitCredential, error) {
	r, err := s.q.GetGitCredentialForUpdate(ctx, pgID(id))
	if err != nil {
		return GitCredential{}, mapErr("get git credential for update", err)
	}
	return gitCredentialFromRow(r), nil
}

// SetGitCredentialAllowedHosts replaces the hosts a credential may be sent to.
func (s *Store) SetGitCredentialAllowedHosts(ctx context.Context, id ID, hosts []string) (GitCredential, error) {
	r, err := s.q.SetGitCredentialAllowedHosts(ctx, dbsqlc.SetGitCredentialAllowedHostsParams{ID: pgID(id), AllowedHosts: emptyIfNil(hosts)})
	if err != nil {
		return GitCredential{}, mapErr("set git credential allowed hosts", err)
	}
	return gitCredentialFromRow(r), nil
}

// SetGitCredentialKnownHosts replaces a credential's pinned host keys.
func (s *Store) SetGitCredentialKnownHosts(ctx context.Context, id ID, knownHosts string) (GitCredential, error) {
	r, err := s.q.SetGitCredentialKnownHosts(ctx, dbsqlc.SetGitCredentialKnownHostsParams{ID: pgID(id), KnownHosts: knownHosts})
	if err != nil {
		return GitCredential{}, mapErr("set git credential known hosts", err)
	}
	return gitCredentialFromRow(r), nil
}

// ShareGitCredential lets a user attach the credential to apps; changed is
// false when it was shared already.
func (s *Store) ShareGitCredential(ctx context.Context, id, userID ID) (changed bool, err error) {
	n, err := s.q.InsertGitCredentialShare(ctx, dbsqlc.InsertGitCredentialShareParams{GitCredentialID: pgID(id), UserID: pgID(userID)})
	if err != nil {
		return false, mapErr("share git credential", err)
	}
	return n > 0, nil
}

// UnshareGitCredential withdraws a share; changed is false when there was none.
func (s *Store) UnshareGitCredential(ctx context.Context, id, userID ID) (changed bool, err error) {
	n, err := s.q.DeleteGitCredentialShare(ctx, dbsqlc.DeleteGitCredentialShareParams{GitCredentialID: pgID(id), UserID: pgID(userID)})
	if err != nil {
		return false, mapErr("unshare git credential", err)
	}
	return n > 0, nil
}

// GitCredentialSharedWith reports whether the credential is shared with a user.
func (s *Store) GitCredentialSharedWith(ctx context.Context, id, userID ID) (bool, error) {
	ok, err := s.q.GitCredentialSharedWith(ctx, dbsqlc.GitCredentialSharedWithParams{GitCredentialID: pgID(id), UserID: pgID(userID)})
	if err != nil {
		return false, mapErr("git credential shared with", err)
	}
	return ok, nil
}

// GitCredentialShares lists the emails of the users a credential is shared with.
func (s *Store) GitCredentialShares(ctx context.Context, id ID) ([]string, error) {
	out, err := s.q.ListGitCredentialShareEmails(ctx, pgID(id))
	if err != nil {
		return nil, mapErr("list git credential shares", err)
	}
	return out, nil
}
