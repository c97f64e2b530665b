package backups

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
)

// DestinationSpec describes a destination to add. Secrets
// (SecretAccessKey, Password, PrivateKey) are write-only.
type DestinationSpec struct {
	Name               string
	Kind               string // local, s3, sftp
	Path               string // local directory; sftp directory
	Endpoint           string
	Bucket             string
	Region             string
	Prefix             string
	PathStyle          bool
	AccessKeyID        string
	SecretAccessKey    string
	Host               string
	Port               int
	Username           string
	Password           string
	PrivateKey         []byte
	HostKeyFingerprint string
}

// Destination is a destination as shown: its settings, never its
// credentials.
type Destination struct {
	store.BackupDestination
	Settings DestinationConfig
}

// DestinationConfig is the non-secret settings (backup_destinations.config).
type DestinationConfig struct {
	Path               string `json:"path,omitempty"`
	Endpoint           string `json:"endpoint,omitempty"`
	Bucket             string `json:"bucket,omitempty"`
	Region             string `json:"region,omitempty"`
	Prefix             string `json:"prefix,omitempty"`
	PathStyle          bool   `json:"path_style,omitempty"`
	Host               string `json:"host,omitempty"`
	Port               int    `json:"port,omitempty"`
	Username           string `json:"username,omitempty"`
	HostKeyFingerprint string `json:"host_key_fingerprint,omitempty"`
}

func destinationOf(d store.BackupDestination) Destination {
	out := Destination{BackupDestination: d}
	_ = json.Unmarshal(d.Config, &out.Settings) // written by this package only
	return out
}

// Bounds of what a destination names.
const (
	maxPath   = 4096
	maxField  = 1024
	maxSecret = 16 << 10
)

var (
	bucketRE      = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
	fingerprintRE = regexp.MustCompile(`^SHA256:[A-Za-z0-9+/]{43}$`)
	hostRE        = regexp.MustCompile(`^[A-Za-z0-9.:-]+$`)
	envVarRE      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// checkAbsPath: an absolute, clean path without NUL.
func checkAbsPath(what, p string) error {
	if p == "" || len(p) > maxPath || !strings.HasPrefix(p, "/") || strings.ContainsRune(p, 0) || path.Clean(p) != p {
		return fmt.Errorf("%w: %s must be an absolute, clean path (no .., no trailing /) of at most %d bytes", ErrInvalid, what, maxPath)
	}
	return nil
}

func (sp *DestinationSpec) check() (DestinationConfig, *store.BackupDestinationSecret, error) {
	sp.Name = strings.ToLower(strings.TrimSpace(sp.Name))
	if !validName(sp.Name) {
		return DestinationConfig{}, nil, fmt.Errorf("%w: destination name: lowercase letters, digits, '.', '_', '-', up to 63, starting with a letter or digit", ErrInvalid)
	}
	for _, f := range []string{sp.Endpoint, sp.Bucket, sp.Region, sp.Prefix, sp.AccessKeyID, sp.Host, sp.Username, sp.HostKeyFingerprint} {
		if len(f) > maxField {
			return DestinationConfig{}, nil, fmt.Errorf("%w: a field is longer than %d bytes", ErrInvalid, maxField)
		}
	}
	if len(sp.SecretAccessKey) > maxSecret || len(sp.Password) > maxSecret || len(sp.PrivateKey) > maxSecret {
		return DestinationConfig{}, nil, fmt.Errorf("%w: a secret is longer than %d bytes", ErrInvalid, maxSecret)
	}
	switch store.DestinationKind(sp.Kind) {
	case store.DestinationLocal:
		if err := checkAbsPath("--path", sp.Path); err != nil {
			return DestinationConfig{}, nil, err
		}
		if sp.Endpoint != "" || sp.Bucket != "" || sp.Host != "" || sp.AccessKeyID != "" || sp.SecretAccessKey != "" || sp.Password != "" || len(sp.PrivateKey) > 0 {
			return DestinationConfig{}, nil, fmt.Errorf("%w: a local destination takes --path only", ErrInvalid)
		}
		return DestinationConfig{Path: sp.Path}, nil, nil
	case store.DestinationS3:
		u, err := url.Parse(sp.Endpoint)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return DestinationConfig{}, nil, fmt.Errorf("%w: --endpoint must be an http(s) URL with a host and nothing else, e.g. https://s3.eu-west-1.amazonaws.com", ErrInvalid)
		}
		if !bucketRE.MatchString(sp.Bucket) || strings.Contains(sp.Bucket, "..") {
			return DestinationConfig{}, nil, fmt.Errorf("%w: --bucket must be a valid S3 bucket name (3-63 lowercase letters, digits, '.', '-')", ErrInvalid)
		}
		if sp.Prefix != "" && (strings.HasPrefix(sp.Prefix, "/") || strings.Contains(sp.Prefix, "..") || strings.ContainsAny(sp.Prefix, "\x00\\")) {
			return DestinationConfig{}, nil, fmt.Errorf("%w: --prefix must be relative (no leading /, no ..)", ErrInvalid)
		}
		if sp.Region != "" && !hostRE.MatchString(sp.Region) {
			return DestinationConfig{}, nil, fmt.Errorf("%w: --region", ErrInvalid)
		}
		if sp.AccessKeyID == "" || sp.SecretAccessKey == "" {
			return DestinationConfig{}, nil, fmt.Errorf("%w: an s3 destination needs --access-key-id and the secret access key (--secret-access-key-stdin)", ErrInvalid)
		}
		if strings.ContainsAny(sp.AccessKeyID, " \t\r\n") {
			return DestinationConfig{}, nil, fmt.Errorf("%w: --access-key-id has white space", ErrInvalid)
		}
		if sp.Host != "" || sp.Password != "" || len(sp.PrivateKey) > 0 || sp.Path != "" {
			return DestinationConfig{}, nil, fmt.Errorf("%w: an s3 destination takes --endpoint, --bucket, --region, --prefix, --path-style and its keys only", ErrInvalid)
		}
		return DestinationConfig{Endpoint: strings.TrimSuffix(sp.Endpoint, "/"), Bucket: sp.Bucket, Region: sp.Region, Prefix: sp.Prefix, PathStyle: sp.PathStyle},
			&store.BackupDestinationSecret{AccessKeyID: sp.AccessKeyID, SecretAccessKey: sp.SecretAccessKey}, nil
	case store.DestinationSFTP:
		if sp.Host == "" || !hostRE.MatchString(sp.Host) {
			return DestinationConfig{}, nil, fmt.Errorf("%w: --host must be a host name or address", ErrInvalid)
		}
		if sp.Port == 0 {
			sp.Port = 22
		}
		if sp.Port < 1 || sp.Port > 65535 {
			return DestinationConfig{}, nil, fmt.Errorf("%w: --port must be 1-65535", ErrInvalid)
		}
		if sp.Username == "" || strings.ContainsAny(sp.Username, " \t\r\n:@/") {
			return DestinationConfig{}, nil, fmt.Errorf("%w: --username is required (no spaces, ':', '@', '/')", ErrInvalid)
		}
		if err := checkAbsPath("--path", sp.Path); err != nil {
			return DestinationConfig{}, nil, err
		}
		// Pinned, never trust on first use: the fingerprint is required.
		if !fingerprintRE.MatchString(sp.HostKeyFingerprint) {
			return DestinationConfig{}, nil, fmt.Errorf("%w: --host-key-fingerprint must be SHA256:<43 base64 characters> as ssh-keygen -lf prints it", ErrInvalid)
		}
		if _, err := base64.RawStdEncoding.DecodeString(strings.TrimPrefix(sp.HostKeyFingerprint, "SHA256:")); err != nil {
			return DestinationConfig{}, nil, fmt.Errorf("%w: --host-key-fingerprint is not base64", ErrInvalid)
		}
		if (sp.Password == "") == (len(sp.PrivateKey) == 0) {
			return DestinationConfig{}, nil, fmt.Errorf("%w: an sftp destination needs exactly one of the password (--password-stdin) and a private key (--private-key-file)", ErrInvalid)
		}
		if len(sp.PrivateKey) > 0 {
			// Parsed only to refuse what could never log in; the error
			// names no part of the key.
			if _, err := ssh.ParsePrivateKey(sp.PrivateKey); err != nil {
				return DestinationConfig{}, nil, fmt.Errorf("%w: the private key could not be read (an unencrypted OpenSSH or PEM key is needed)", ErrInvalid)
			}
		}
		if sp.Endpoint != "" || sp.Bucket != "" || sp.AccessKeyID != "" || sp.SecretAccessKey != "" {
			return DestinationConfig{}, nil, fmt.Errorf("%w: an sftp destination takes no s3 settings", ErrInvalid)
		}
		return DestinationConfig{Host: sp.Host, Port: sp.Port, Username: sp.Username, Path: sp.Path, HostKeyFingerprint: sp.HostKeyFingerprint},
			&store.BackupDestinationSecret{Password: sp.Password, PrivateKey: string(sp.PrivateKey)}, nil
	}
	return DestinationConfig{}, nil, fmt.Errorf("%w: --kind must be local, s3 or sftp", ErrInvalid)
}

// AddDestination stores a destination (admin): its credentials sealed,
// never returned.
func (s *Service) AddDestination(ctx context.Context, pr *auth.Principal, peer Peer, sp DestinationSpec) (Destination, error) {
	if err := require(pr, store.ScopeAdmin); err != nil {
		return Destination{}, err
	}
	cfg, sec, err := sp.check()
	if err != nil {
		return Destination{}, err
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		return Destination{}, err
	}
	var d store.BackupDestination
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		var err error
		d, err = tx.CreateBackupDestination(ctx, store.CreateBackupDestinationParams{Name: sp.Name, Kind: store.DestinationKind(sp.Kind), Config: raw, Credentials: sec})
		if errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("%w: a destination named %s exists", store.ErrConflict, sp.Name)
		}
		if err != nil {
			return err
		}
		// The settings, never the secrets: that one was set is enough.
		changes := map[string]any{"kind": sp.Kind, "config": cfg}
		if sec != nil {
			changes["credentials"] = map[string]any{"changed": true}
		}
		s.activity(ctx, tx, pr, peer, kind.BackupDestinationCreated, "backup_destination", d.ID, d.Name, changes)
		return nil
	})
	if err != nil {
		return Destination{}, err
	}
	return destinationOf(d), nil
}

// Destinations lists every destination (read).
func (s *Service) Destinations(ctx context.Context, pr *auth.Principal) ([]Destination, error) {
	if err := require(pr, store.ScopeRead); err != nil {
		return nil, err
	}
	var out []Destination
	var before *store.ID
	for {
		page, err := s.st.ListBackupDestinations(ctx, store.BackupDestinationFilter{Before: before, Limit: 500})
		if err != nil {
			return nil, err
		}
		for _, d := range page {
			out = append(out, destinationOf(d))
		}
		if len(page) < 500 {
			return out, nil
		}
		id := page[len(page)-1].ID
		before = &id
	}
}

// Destination returns one destination by name or id (read).
func (s *Service) Destination(ctx context.Context, pr *auth.Principal, ref string) (Destination, error) {
	if err := require(pr, store.ScopeRead); err != nil {
		return Destination{}, err
	}
	d, err := s.resolveDestination(ctx, ref)
	if err != nil {
		return Destination{}, err
	}
	return destinationOf(d), nil
}

func (s *Service) resolveDestination(ctx context.Context, ref string) (store.BackupDestination, error) {
	if id, err := store.ParseID(ref); err == nil {
		return s.st.BackupDestination(ctx, id)
	}
	name := strings.ToLower(strings.TrimSpace(ref))
	if !validName(name) {
		return store.BackupDestination{}, fmt.Errorf("%w: destination name %q", ErrInvalid, truncate(ref, 64))
	}
	d, err := s.st.BackupDestinationByName(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return store.BackupDestination{}, fmt.Errorf("%w: no backup destination named %q", store.ErrNotFound, name)
	}
	return d, err
}

// RemoveDestination deletes a destination (admin); ErrInUse, saying how
// many, while backups or schedules use it.
func (s *Service) RemoveDestination(ctx context.Context, pr *auth.Principal, peer Peer, ref string) error {
	if err := require(pr, store.ScopeAdmin); err != nil {
		return err
	}
	d, err := s.resolveDestination(ctx, ref)
	if err != nil {
		return err
	}
	nb, ns, err := s.st.BackupDestinationUse(ctx, d.ID)
	if err != nil {
		return err
	}
	if nb > 0 || ns > 0 {
		return fmt.Errorf("%w: destination %s is used by %d backup(s) and %d schedule(s)%s; delete those backups and remove those schedules first",
			ErrInUse, d.Name, nb, ns, s.nameUsers(ctx, d.ID, nb, ns))
	}
	return s.st.InTx(ctx, func(tx *store.Store) error {
		err := tx.DeleteBackupDestination(ctx, d.ID)
		if errors.Is(err, store.ErrReferenced) {
			return fmt.Errorf("%w: destination %s is in use (a backup or schedule was added meanwhile)", ErrInUse, d.Name)
		}
		if err != nil {
			return err
		}
		s.activity(ctx, tx, pr, peer, kind.BackupDestinationRemoved, "backup_destination", d.ID, d.Name, map[string]any{"kind": string(d.Kind)})
		return nil
	})
}

// nameUsers says which schedules and backups use a destination (the first
// few of each, with their apps) for the refusal of its removal.
func (s *Service) nameUsers(ctx context.Context, id store.ID, nb, ns int64) string {
	users, err := s.st.BackupDestinationUsers(ctx, id)
	if err != nil || len(users) == 0 {
		return ""
	}
	var scheds, backups []string
	for _, u := range users {
		if u.What == "schedule" {
			scheds = append(scheds, u.ID.String()+" ("+u.AppName+")")
		} else {
			backups = append(backups, u.ID.String()+" ("+u.AppName+")")
		}
	}
	part := func(what string, ids []string, n int64) string {
		if len(ids) == 0 {
			return ""
		}
		p := what + " " + strings.Join(ids, ", ")
		if more := n - int64(len(ids)); more > 0 {
			p += fmt.Sprintf(" and %d more", more)
		}
		return p
	}
	var parts []string
	for _, p := range []string{part("schedules", scheds, ns), part("backups", backups, nb)} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return ": " + strings.Join(parts, "; ")
}

// TestDestination runs a probe job on a server (serverRef, or any
// connected server) and waits for its end (write scope: it changes
// nothing but the recorded check). The result is recorded on the
// destination (last_checked_at, last_check_ok, last_check_error).
func (s *Service) TestDestination(ctx context.Context, pr *auth.Principal, peer Peer, ref, serverRef string) (Destination, store.BackupTask, error) {
	if err := require(pr, store.ScopeWrite); err != nil {
		return Destination{}, store.BackupTask{}, err
	}
	d, err := s.resolveDestination(ctx, ref)
	if err != nil {
		return Destination{}, store.BackupTask{}, err
	}
	var sid store.ID
	if serverRef != "" {
		srv, err := s.resolveServer(ctx, serverRef)
		if err != nil {
			return Destination{}, store.BackupTask{}, err
		}
		sid = srv.ID
	} else {
		conn := s.fleet.Hub().Connected()
		if len(conn) == 0 {
			return Destination{}, store.BackupTask{}, fmt.Errorf("%w: no server is connected to run the test (name one with --server)", ErrUnavailable)
		}
		sid = conn[0]
	}
	var t store.BackupTask
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		var err error
		t, err = tx.CreateBackupTask(ctx, store.CreateBackupTaskParams{
			Kind: store.TaskProbe, DestinationID: d.ID, ServerID: sid, TriggeredBy: trigger(pr),
			TimeoutSeconds: int(s.cfg.ProbeTimeout / time.Second),
		})
		if err != nil {
			return err
		}
		s.activity(ctx, tx, pr, peer, kind.BackupDestinationTested, "backup_destination", d.ID, d.Name, map[string]any{"task": t.ID.String(), "server_id": sid.String()})
		return nil
	})
	if err != nil {
		return Destination{}, store.BackupTask{}, err
	}
	s.notify(ctx, "dispatch")
	t, err = s.waitTask(ctx, t.ID)
	if err != nil {
		return Destination{}, t, err
	}
	d, err = s.st.BackupDestination(ctx, d.ID)
	if err != nil {
		return Destination{}, t, err
	}
	return destinationOf(d), t, nil
}

// waitTask waits until a task has finished (or ctx ends).
func (s *Service) waitTask(ctx context.Context, id store.ID) (store.BackupTask, error) {
	ch, stop := s.subscribe(id)
	defer stop()
	for {
		t, err := s.st.BackupTask(ctx, id)
		if err != nil {
			return t, err
		}
		if t.Status.Finished() {
			return t, nil
		}
		select {
		case <-ctx.Done():
			return t, ctx.Err()
		case <-ch:
		}
	}
}
