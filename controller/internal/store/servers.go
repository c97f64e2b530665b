package store

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"github.com/berthhq/berth/gen/dbsqlc"
)

// ServerStatus is a server's liveness as the controller sees it.
type ServerStatus string

// The server statuses: pending until the agent first says hello, then online
// and offline from heartbeats; disabled servers are refused until enabled.
const (
	ServerPending  ServerStatus = "pending"
	ServerOnline   ServerStatus = "online"
	ServerOffline  ServerStatus = "offline"
	ServerDisabled ServerStatus = "disabled"
)

// Server is a managed server. Neither the join token hash nor the encrypted
// SSH key is a field: HasJoinToken and HasSSHKey say whether they are set.
type Server struct {
	ID           ID
	Name         string
	Hostname     string
	IPAddress    *netip.Addr
	Labels       map[string]string
	Status       ServerStatus
	Facts        json.RawMessage // the agent's host facts, a JSON object
	AgentVersion string
	// HasJoinToken: an enrolment token was issued and not used yet (it may
	// have expired: see JoinTokenExpiresAt).
	HasJoinToken       bool
	JoinTokenExpiresAt *time.Time
	EnrolledAt         *time.Time
	LastSeenAt         *time.Time
	MetricsSeq         int64
	DisabledAt         *time.Time
	HasSSHKey          bool
	// AllowRoot: apps on this server may run as root (an admin's grant).
	AllowRoot bool
	CreatedAt time.Time
	UpdatedAt time.Time
}

func serverFromRow(r dbsqlc.Server) Server {
	return Server{
		ID: fromPG(r.ID), Name: r.Name, Hostname: textOf(r.Hostname), IPAddress: r.IpAddress,
		Labels: decodeLabels(r.Labels), Status: ServerStatus(r.Status), Facts: json.RawMessage(r.Facts),
		AgentVersion: textOf(r.AgentVersion), HasJoinToken: r.JoinTokenHash != nil,
		JoinTokenExpiresAt: r.JoinTokenExpiresAt, EnrolledAt: r.EnrolledAt, LastSeenAt: r.LastSeenAt,
		MetricsSeq: r.MetricsSeq, DisabledAt: r.DisabledAt, HasSSHKey: r.SshPrivateKey != nil,
		AllowRoot: r.AllowRoot, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
	}
}

func serversFromRows(rows []dbsqlc.Server) []Server {
	out := make([]Server, len(rows))
	for i, r := range rows {
		out[i] = serverFromRow(r)
	}
	return out
}

// decodeLabels reads the labels object. The store only writes strings, but
// a value written by hand that is not one is kept as its JSON text rather
// than failing the read.
func decodeLabels(b []byte) map[string]string {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return map[string]string{}
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		var s string
		if json.Unmarshal(v, &s) != nil {
			s = string(v)
		}
		out[k] = s
	}
	return out
}

// CreateServerParams describes a new server. JoinTokenHash is the SHA-256
// of the one-time enrolment token (32 bytes), with its expiry; both or
// neither.
type CreateServerParams struct {
	ID                 ID
	Name               string
	Labels             map[string]string
	JoinTokenHash      []byte
	JoinTokenExpiresAt *time.Time
}

// CreateServer stores a pending server; ErrConflict when the name is taken,
// ErrInvalid when it is not a lowercase slug.
func (s *Store) CreateServer(ctx context.Context, p CreateServerParams) (Server, error) {
	if p.ID == (ID{}) {
		p.ID = NewID()
	}
	labels, err := jsonObject(p.Labels)
	if err != nil {
		return Server{}, fmt.Errorf("create server: %w", err)
	}
	r, err := s.q.CreateServer(ctx, dbsqlc.CreateServerParams{
		ID: pgID(p.ID), Name: p.Name, Labels: labels, JoinTokenHash: p.JoinTokenHash, JoinTokenExpiresAt: p.JoinTokenExpiresAt,
	})
	if err != nil {
		return Server{}, mapErr("create server", err)
	}
	return serverFromRow(r), nil
}

// Server gets a server by id.
func (s *Store) Server(ctx context.Context, id ID) (Server, error) {
	r, err := s.q.GetServer(ctx, pgID(id))
	if err != nil {
		return Server{}, mapErr("get server", err)
	}
	return serverFromRow(r), nil
}

// ServerByName gets a server by its (lowercase) name.
func (s *Store) ServerByName(ctx context.Context, name string) (Server, error) {
	r, err := s.q.GetServerByName(ctx, name)
	if err != nil {
		return Server{}, mapErr("get server by name", err)
	}
	return serverFromRow(r), nil
}

// ServerFilter selects servers; zero fields do not filter. Labels matches
// servers that carry at least these labels.
type ServerFilter struct {
	Status ServerStatus
	Labels map[string]string
	Before *ID
	Limit  int
}

// Servers lists servers, newest first.
func (s *Store) Servers(ctx context.Context, f ServerFilter) ([]Server, error) {
	var labels []byte
	if len(f.Labels) > 0 {
		var err error
		if labels, err = jsonObject(f.Labels); err != nil {
			return nil, fmt.Errorf("list servers: %w", err)
		}
	}
	before, lim := keyset(f.Before, f.Limit)
	rows, err := s.q.ListServers(ctx, dbsqlc.ListServersParams{Status: nullEnum(f.Status), Labels: labels, Before: before, Lim: lim})
	if err != nil {
		return nil, mapErr("list servers", err)
	}
	return serversFromRows(rows), nil
}

// ServerCounts counts servers per status; statuses with none are absent.
func (s *Store) ServerCounts(ctx context.Context) (map[ServerStatus]int64, error) {
	rows, err := s.q.CountServersByStatus(ctx)
	if err != nil {
		return nil, mapErr("count servers", err)
	}
	out := make(map[ServerStatus]int64, len(rows))
	for _, r := range rows {
		out[ServerStatus(r.Status)] = r.Servers
	}
	return out, nil
}

// SetServerLabels replaces a server's labels.
func (s *Store) SetServerLabels(ctx context.Context, id ID, labels map[string]string) (Server, error) {
	b, err := jsonObject(labels)
	if err != nil {
		return Server{}, fmt.Errorf("set server labels: %w", err)
	}
	r, err := s.q.SetServerLabels(ctx, dbsqlc.SetServerLabelsParams{ID: pgID(id), Labels: b})
	if err != nil {
		return Server{}, mapErr("set server labels", err)
	}
	return serverFromRow(r), nil
}

// ServerFacts is what an agent reports about its host; zero fields leave
// the stored value as it is. Facts must be a JSON object.
type ServerFacts struct {
	Facts        json.RawMessage
	Hostname     string
	AgentVersion string
}

// UpdateServerFacts stores what the agent reported at enrollment (its
// hellos go through ServerHello).
func (s *Store) UpdateServerFacts(ctx context.Context, id ID, f ServerFacts) (Server, error) {
	r, err := s.q.UpdateServerFacts(ctx, dbsqlc.UpdateServerFactsParams{
		ID: pgID(id), Facts: f.Facts, Hostname: nullText(f.Hostname), AgentVersion: nullText(f.AgentVersion),
	})
	if err != nil {
		return Server{}, mapErr("update server facts", err)
	}
	return serverFromRow(r), nil
}

// MarkServerSeen records a hello or heartbeat: the server is online as of
// now, and ip (when not nil) is its latest peer address. It returns the
// status before, so the caller announces a transition to online once.
// ErrNotFound when the server is gone or disabled.
func (s *Store) MarkServerSeen(ctx context.Context, id ID, ip *netip.Addr) (Server, ServerStatus, error) {
	r, err := s.q.MarkServerSeen(ctx, dbsqlc.MarkServerSeenParams{ID: pgID(id), IpAddress: ip})
	if err != nil {
		return Server{}, "", mapErr("mark server seen", err)
	}
	return serverFromRow(r.Server), ServerStatus(r.PreviousStatus), nil
}

// ServerHello records an agent's hello in one statement: its facts as
// UpdateServerFacts, and online as of now as MarkServerSeen, whose results
// it returns. ErrNotFound when the server is gone or disabled (its facts
// are then left alone).
func (s *Store) ServerHello(ctx context.Context, id ID, f ServerFacts, ip *netip.Addr) (Server, ServerStatus, error) {
	r, err := s.q.ServerHello(ctx, dbsqlc.ServerHelloParams{
		ID: pgID(id), IpAddress: ip, Facts: f.Facts, Hostname: nullText(f.Hostname), AgentVersion: nullText(f.AgentVersion),
	})
	if err != nil {
		return Server{}, "", mapErr("server hello", err)
	}
	return serverFromRow(r.Server), ServerStatus(r.PreviousStatus), nil
}

// SetServerStatus moves a server between pending, online and offline;
// ErrNotFound when it is gone or disabled (see DisableServer), ErrInvalid
// for disabled or an unknown status.
func (s *Store) SetServerStatus(ctx context.Context, id ID, status ServerStatus) (Server, error) {
	r, err := s.q.SetServerStatus(ctx, dbsqlc.SetServerStatusParams{ID: pgID(id), Status: string(status)})
	if err != nil {
		return Server{}, mapErr("set server status", err)
	}
	return serverFromRow(r), nil
}

// StaleServers lists online servers last seen before cutoff, longest silent
// first.
func (s *Store) StaleServers(ctx context.Context, cutoff time.Time) ([]Server, error) {
	rows, err := s.q.ListStaleServers(ctx, cutoff)
	if err != nil {
		return nil, mapErr("list stale servers", err)
	}
	return serversFromRows(rows), nil
}

// MarkStaleServersOffline marks offline every online server last seen before
// cutoff and returns them. It is one statement, so a heartbeat racing it
// keeps its server online.
func (s *Store) MarkStaleServersOffline(ctx context.Context, cutoff time.Time) ([]Server, error) {
	rows, err := s.q.MarkStaleServersOffline(ctx, cutoff)
	if err != nil {
		return nil, mapErr("mark stale servers offline", err)
	}
	return serversFromRows(rows), nil
}

// DisableServer shuts a server out (idempotent). Revoking its certificates
// and cutting its stream are the caller's, in the same transaction.
func (s *Store) DisableServer(ctx context.Context, id ID) (Server, error) {
	r, err := s.q.DisableServer(ctx, pgID(id))
	if err != nil {
		return Server{}, mapErr("disable server", err)
	}
	return serverFromRow(r), nil
}

// EnableServer lets a disabled server back in, as offline (pending if it
// never enrolled); ErrNotFound when it is not disabled.
func (s *Store) EnableServer(ctx context.Context, id ID) (Server, error) {
	r, err := s.q.EnableServer(ctx, pgID(id))
	if err != nil {
		return Server{}, mapErr("enable server", err)
	}
	return serverFromRow(r), nil
}

// DeleteServer removes a server with its metrics and certificates, and
// the deleted apps that were on it with their history; ErrReferenced
// while apps not deleted are still on it.
func (s *Store) DeleteServer(ctx context.Context, id ID) error {
	return s.InTx(ctx, func(tx *Store) error {
		if _, err := tx.q.PurgeDeletedAppsOfServer(ctx, pgID(id)); err != nil {
			return mapErr("delete server", err)
		}
		n, err := tx.q.DeleteServer(ctx, pgID(id))
		return affected("delete server", n, err)
	})
}

// SetServerJoinToken issues a new one-time enrolment token (its SHA-256),
// replacing an unused one.
func (s *Store) SetServerJoinToken(ctx context.Context, id ID, hash []byte, expiresAt time.Time) (Server, error) {
	r, err := s.q.SetServerJoinToken(ctx, dbsqlc.SetServerJoinTokenParams{ID: pgID(id), TokenHash: hash, ExpiresAt: expiresAt})
	if err != nil {
		return Server{}, mapErr("set server join token", err)
	}
	return serverFromRow(r), nil
}

// ConsumeServerJoinToken enrolls with a join token, once: it clears the
// token and stamps enrolled_at in one statement. ErrNotFound when the hash is
// unknown, used, expired, or the server is disabled.
func (s *Store) ConsumeServerJoinToken(ctx context.Context, hash []byte) (Server, error) {
	r, err := s.q.ConsumeServerJoinToken(ctx, hash)
	if err != nil {
		return Server{}, mapErr("consume server join token", err)
	}
	return serverFromRow(r), nil
}

// SetServerSSHKey stores a private key for the operator, sealed; nil removes
// it.
func (s *Store) SetServerSSHKey(ctx context.Context, id ID, key []byte) error {
	ct, err := s.seal("servers", "ssh_private_key", id, key)
	if err != nil {
		return err
	}
	n, err := s.q.SetServerSSHKey(ctx, dbsqlc.SetServerSSHKeyParams{ID: pgID(id), SshPrivateKey: ct})
	return affected("set server ssh key", n, err)
}

// ServerSSHKey opens a server's stored private key; ErrNotFound when there
// is none.
func (s *Store) ServerSSHKey(ctx context.Context, id ID) ([]byte, error) {
	ct, err := s.q.GetServerSSHKey(ctx, pgID(id))
	if err != nil {
		return nil, mapErr("get server ssh key", err)
	}
	if ct == nil {
		return nil, fmt.Errorf("get server ssh key: %w", ErrNotFound)
	}
	return s.open("servers", "ssh_private_key", id, ct)
}

// SetServerAllowRoot grants or withdraws the allowance to run apps as root.
func (s *Store) SetServerAllowRoot(ctx context.Context, id ID, allow bool) (Server, error) {
	r, err := s.q.SetServerAllowRoot(ctx, dbsqlc.SetServerAllowRootParams{ID: pgID(id), AllowRoot: allow})
	if err != nil {
		return Server{}, mapErr("set server allow root", err)
	}
	return serverFromRow(r), nil
}
