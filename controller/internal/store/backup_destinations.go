package store

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/berthhq/berth/gen/dbsqlc"
)

// DestinationKind is where a destination keeps backups.
type DestinationKind string

// The destination kinds.
const (
	DestinationLocal DestinationKind = "local" // a directory on the server that made the backup
	DestinationS3    DestinationKind = "s3"    // any S3-compatible service
	DestinationSFTP  DestinationKind = "sftp"
)

// BackupDestination is what may be shown of a destination: never its
// credentials (HasCredentials says whether it has any).
type BackupDestination struct {
	ID   ID
	Name string
	Kind DestinationKind
	// Config holds the non-secret settings, a JSON object (local {path};
	// s3 {bucket, region, endpoint, prefix, path_style}; sftp {host, port,
	// username, path, host_key_fingerprint}).
	Config         json.RawMessage
	HasCredentials bool
	LastCheckedAt  *time.Time
	LastCheckOK    *bool
	LastCheckError *string
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// BackupDestinationSecret is a destination's encrypted credentials: s3
// AccessKeyID and SecretAccessKey; sftp Password or PrivateKey. It formats
// and logs as redacted.
type BackupDestinationSecret struct {
	AccessKeyID     string `json:"access_key_id,omitempty"`
	SecretAccessKey string `json:"secret_access_key,omitempty"`
	Password        string `json:"password,omitempty"`
	PrivateKey      string `json:"private_key,omitempty"`
}

// Format prints the type name only, for every verb.
func (BackupDestinationSecret) Format(f fmt.State, _ rune) {
	_, _ = f.Write([]byte("BackupDestinationSecret{redacted}"))
}

// LogValue keeps the secret out of slog output.
func (BackupDestinationSecret) LogValue() slog.Value { return slog.StringValue("redacted") }

func backupDestinationFromRow(r dbsqlc.BackupDestination) BackupDestination {
	return BackupDestination{
		ID: fromPG(r.ID), Name: r.Name, Kind: DestinationKind(r.Kind), Config: json.RawMessage(r.Config),
		HasCredentials: r.Credentials != nil, LastCheckedAt: r.LastCheckedAt, LastCheckOK: r.LastCheckOk,
		LastCheckError: r.LastCheckError, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
	}
}

func (s *Store) sealDestinationSecret(id ID, sec *BackupDestinationSecret) ([]byte, error) {
	if sec == nil {
		return nil, nil
	}
	pt, err := json.Marshal(sec)
	if err != nil {
		return nil, err
	}
	return s.seal("backup_destinations", "credentials", id, pt)
}

func configOrEmpty(c json.RawMessage) []byte {
	if len(c) == 0 {
		return []byte("{}")
	}
	return c
}

// CreateBackupDestinationParams describes a new destination. Config nil is
// {}; Credentials nil stores none (local, or s3 with an instance role).
type CreateBackupDestinationParams struct {
	ID          ID
	Name        string
	Kind        DestinationKind
	Config      json.RawMessage
	Credentials *BackupDestinationSecret
}

// CreateBackupDestination stores a destination, its credentials sealed to
// the new row.
func (s *Store) CreateBackupDestination(ctx context.Context, p CreateBackupDestinationParams) (BackupDestination, error) {
	if p.ID == (ID{}) {
		p.ID = NewID()
	}
	ct, err := s.sealDestinationSecret(p.ID, p.Credentials)
	if err != nil {
		return BackupDestination{}, mapErr("create backup destination", err)
	}
	r, err := s.q.CreateBackupDestination(ctx, dbsqlc.CreateBackupDestinationParams{
		ID: pgID(p.ID), Name: p.Name, Kind: string(p.Kind), Config: configOrEmpty(p.Config), Credentials: ct,
	})
	if err != nil {
		return BackupDestination{}, mapErr("create backup destination", err)
	}
	return backupDestinationFromRow(r), nil
}

// BackupDestination returns a destination by id.
func (s *Store) BackupDestination(ctx context.Context, id ID) (BackupDestination, error) {
	r, err := s.q.GetBackupDestination(ctx, pgID(id))
	if err != nil {
		return BackupDestination{}, mapErr("get backup destination", err)
	}
	return backupDestinationFromRow(r), nil
}

// BackupDestinationByName returns a destination by its name.
func (s *Store) BackupDestinationByName(ctx context.Context, name string) (BackupDestination, error) {
	r, err := s.q.GetBackupDestinationByName(ctx, name)
	if err != nil {
		return BackupDestination{}, mapErr("get backup destination", err)
	}
	return backupDestinationFromRow(r), nil
}

// BackupDestinationFilter selects and pages destinations. Before is the
// last id of the previous page; Limit 0 is DefaultPageSize.
type BackupDestinationFilter struct {
	Kind   DestinationKind // "" for every kind
	Before *ID
	Limit  int
}

// ListBackupDestinations lists destinations, newest first.
func (s *Store) ListBackupDestinations(ctx context.Context, f BackupDestinationFilter) ([]BackupDestination, error) {
	rows, err := s.q.ListBackupDestinations(ctx, dbsqlc.ListBackupDestinationsParams{
		Kind: nullText(string(f.Kind)), Before: pgOptID(f.Before), Lim: limitArg(f.Limit),
	})
	if err != nil {
		return nil, mapErr("list backup destinations", err)
	}
	out := make([]BackupDestination, len(rows))
	for i, r := range rows {
		out[i] = backupDestinationFromRow(r)
	}
	return out, nil
}

// UpdateBackupDestination replaces a destination's name and settings
// (config nil is {}); the kind and credentials stay.
func (s *Store) UpdateBackupDestination(ctx context.Context, id ID, name string, config json.RawMessage) (BackupDestination, error) {
	r, err := s.q.UpdateBackupDestination(ctx, dbsqlc.UpdateBackupDestinationParams{ID: pgID(id), Name: name, Config: configOrEmpty(config)})
	if err != nil {
		return BackupDestination{}, mapErr("update backup destination", err)
	}
	return backupDestinationFromRow(r), nil
}

// SetBackupDestinationCredentials replaces a destination's credentials;
// nil removes them.
func (s *Store) SetBackupDestinationCredentials(ctx context.Context, id ID, sec *BackupDestinationSecret) error {
	ct, err := s.sealDestinationSecret(id, sec)
	if err != nil {
		return mapErr("set backup destination credentials", err)
	}
	n, err := s.q.SetBackupDestinationCredentials(ctx, dbsqlc.SetBackupDestinationCredentialsParams{ID: pgID(id), Credentials: ct})
	return affected("set backup destination credentials", n, err)
}

// BackupDestinationCredentials opens a destination's credentials; nil when
// it has none.
func (s *Store) BackupDestinationCredentials(ctx context.Context, id ID) (*BackupDestinationSecret, error) {
	ct, err := s.q.GetBackupDestinationCredentials(ctx, pgID(id))
	if err != nil {
		return nil, mapErr("get backup destination credentials", err)
	}
	if ct == nil {
		return nil, nil
	}
	pt, err := s.open("backup_destinations", "credentials", id, ct)
	if err != nil {
		return nil, fmt.Errorf("get backup destination credentials: %w", err)
	}
	var sec BackupDestinationSecret
	if err := json.Unmarshal(pt, &sec); err != nil {
		return nil, fmt.Errorf("get backup destination credentials: decode: %w", err)
	}
	return &sec, nil
}

// RecordBackupDestinationCheck records a connection test: checkErr nil is
// success. at nil is now.
func (s *Store) RecordBackupDestinationCheck(ctx context.Context, id ID, at *time.Time, checkErr *string) (BackupDestination, error) {
	r, err := s.q.RecordBackupDestinationCheck(ctx, dbsqlc.RecordBackupDestinationCheckParams{
		ID: pgID(id), At: at, Ok: checkErr == nil, CheckError: checkErr,
	})
	if err != nil {
		return BackupDestination{}, mapErr("record backup destination check", err)
	}
	return backupDestinationFromRow(r), nil
}

// DeleteBackupDestination deletes a destination; ErrReferenced while
// backups or schedules point at it.
func (s *Store) DeleteBackupDestination(ctx context.Context, id ID) error {
	n, err := s.q.DeleteBackupDestination(ctx, pgID(id))
	return affected("delete backup destination", n, err)
}

// BackupDestinationUser is a schedule or backup that stores into a
// destination.
type BackupDestinationUser struct {
	What    string // "schedule" or "backup"
	ID      ID
	AppName string
}

// BackupDestinationUsers names the first (up to five of each) schedules
// and newest backups that keep a destination from being removed.
func (s *Store) BackupDestinationUsers(ctx context.Context, id ID) ([]BackupDestinationUser, error) {
	rows, err := s.q.ListBackupDestinationUsers(ctx, pgID(id))
	if err != nil {
		return nil, mapErr("list backup destination users", err)
	}
	out := make([]BackupDestinationUser, 0, len(rows))
	for _, r := range rows {
		out = append(out, BackupDestinationUser{What: r.What, ID: fromPG(r.ID), AppName: r.AppName})
	}
	return out, nil
}
