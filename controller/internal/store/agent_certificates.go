package store

import (
	"context"
	"fmt"
	"time"

	"github.com/berthhq/berth/gen/dbsqlc"
)

// AgentCertificate records a client certificate issued to an agent.
type AgentCertificate struct {
	ID           ID
	ServerID     ID
	Serial       string
	IssuedFor    string // enroll or renew
	NotBefore    time.Time
	NotAfter     time.Time
	RevokedAt    *time.Time
	RevokeReason *string
	// SPKISHA256 is the SHA-256 of the certificate's public key
	// (SubjectPublicKeyInfo), nil for certificates issued before keys were
	// recorded (see PinAgentCertificateKey).
	SPKISHA256 []byte
	CreatedAt  time.Time
}

func agentCertFromRow(r dbsqlc.AgentCertificate) AgentCertificate {
	return AgentCertificate{
		ID: fromPG(r.ID), ServerID: fromPG(r.ServerID), Serial: r.Serial, IssuedFor: r.IssuedFor,
		NotBefore: r.NotBefore, NotAfter: r.NotAfter, RevokedAt: r.RevokedAt, RevokeReason: r.RevokeReason, SPKISHA256: r.SpkiSha256, CreatedAt: r.CreatedAt,
	}
}

// RecordAgentCertificate stores an issued certificate.
func (s *Store) RecordAgentCertificate(ctx context.Context, c AgentCertificate) (AgentCertificate, error) {
	if c.ID == (ID{}) {
		c.ID = NewID()
	}
	r, err := s.q.CreateAgentCertificate(ctx, dbsqlc.CreateAgentCertificateParams{
		ID: pgID(c.ID), ServerID: pgID(c.ServerID), Serial: c.Serial, IssuedFor: c.IssuedFor, NotBefore: c.NotBefore, NotAfter: c.NotAfter, SpkiSha256: c.SPKISHA256,
	})
	if err != nil {
		return AgentCertificate{}, mapErr("record agent certificate", err)
	}
	return agentCertFromRow(r), nil
}

// AgentCertificateStatus is what a connection check learns.
type AgentCertificateStatus struct {
	Revoked      bool
	ServerStatus string
	// SPKISHA256 is the key the serial was issued for (nil: not recorded).
	SPKISHA256 []byte
	// Superseded counts the server's older certificates still live.
	Superseded int64
}

// CheckAgentCertificate looks up serial for serverID. ErrNotFound means the
// serial was never issued to that server, or the server is gone.
func (s *Store) CheckAgentCertificate(ctx context.Context, serverID ID, serial string) (AgentCertificateStatus, error) {
	r, err := s.q.CheckAgentCertificate(ctx, dbsqlc.CheckAgentCertificateParams{Serial: serial, ServerID: pgID(serverID)})
	if err != nil {
		return AgentCertificateStatus{}, mapErr("check agent certificate", err)
	}
	return AgentCertificateStatus{Revoked: r.Revoked, ServerStatus: r.ServerStatus, SPKISHA256: r.SpkiSha256, Superseded: r.Superseded}, nil
}

// RevokeServerCertificates revokes every live certificate of a server.
func (s *Store) RevokeServerCertificates(ctx context.Context, serverID ID, reason string) (int64, error) {
	n, err := s.q.RevokeAgentCertificatesForServer(ctx, dbsqlc.RevokeAgentCertificatesForServerParams{ServerID: pgID(serverID), Reason: &reason})
	return n, mapErr("revoke server certificates", err)
}

// RevokeAgentCertificate revokes one live certificate by serial and returns
// the server it was issued to; ErrNotFound when no live certificate has
// that serial.
func (s *Store) RevokeAgentCertificate(ctx context.Context, serial, reason string) (ID, error) {
	ids, err := s.q.RevokeAgentCertificate(ctx, dbsqlc.RevokeAgentCertificateParams{Serial: serial, Reason: &reason})
	if err != nil {
		return ID{}, mapErr("revoke agent certificate", err)
	}
	if len(ids) == 0 {
		return ID{}, fmt.Errorf("revoke agent certificate: %w", ErrNotFound)
	}
	return fromPG(ids[0]), nil
}

// AgentCertificateBySerial returns one certificate.
func (s *Store) AgentCertificateBySerial(ctx context.Context, serial string) (AgentCertificate, error) {
	r, err := s.q.GetAgentCertificateBySerial(ctx, serial)
	if err != nil {
		return AgentCertificate{}, mapErr("agent certificate", err)
	}
	return agentCertFromRow(r), nil
}

// PinAgentCertificateKey records the key of a certificate issued before
// keys were recorded; it never replaces a recorded key. It reports whether
// it recorded one.
func (s *Store) PinAgentCertificateKey(ctx context.Context, serverID ID, serial string, spki []byte) (bool, error) {
	n, err := s.q.PinAgentCertificateKey(ctx, dbsqlc.PinAgentCertificateKeyParams{ServerID: pgID(serverID), Serial: serial, SpkiSha256: spki})
	return n == 1, mapErr("pin agent certificate key", err)
}

// RevokeSupersededCertificates revokes the server's certificates issued
// before serial that are still live, and returns their serials.
func (s *Store) RevokeSupersededCertificates(ctx context.Context, serverID ID, serial string) ([]string, error) {
	serials, err := s.q.RevokeSupersededAgentCertificates(ctx, dbsqlc.RevokeSupersededAgentCertificatesParams{ServerID: pgID(serverID), Serial: serial})
	return serials, mapErr("revoke superseded certificates", err)
}

// LockServerForRenewal locks the server's row for the rest of the
// transaction and returns its status and whether serial (the certificate
// asking to renew) is revoked. Disable and remove take the same lock first
// (LockServer), so a renewal and a disable run one after the other.
// ErrNotFound when the server or the serial is gone.
func (s *Store) LockServerForRenewal(ctx context.Context, serverID ID, serial string) (AgentCertificateStatus, error) {
	r, err := s.q.LockServerForRenewal(ctx, dbsqlc.LockServerForRenewalParams{ServerID: pgID(serverID), Serial: serial})
	if err != nil {
		return AgentCertificateStatus{}, mapErr("lock server for renewal", err)
	}
	return AgentCertificateStatus{Revoked: r.Revoked, ServerStatus: r.ServerStatus}, nil
}

// LockServer locks a server's row for the rest of the transaction.
func (s *Store) LockServer(ctx context.Context, id ID) error {
	_, err := s.q.LockServer(ctx, pgID(id))
	return mapErr("lock server", err)
}

// CountAgentRenewalsSince counts the certificates renewed for a server
// since a time.
func (s *Store) CountAgentRenewalsSince(ctx context.Context, serverID ID, since time.Time) (int64, error) {
	n, err := s.q.CountAgentRenewalsSince(ctx, dbsqlc.CountAgentRenewalsSinceParams{ServerID: pgID(serverID), Since: since})
	return n, mapErr("count agent renewals", err)
}

// AgentCertificates lists a server's certificates, newest first.
func (s *Store) AgentCertificates(ctx context.Context, serverID ID) ([]AgentCertificate, error) {
	rows, err := s.q.ListAgentCertificates(ctx, pgID(serverID))
	if err != nil {
		return nil, mapErr("list agent certificates", err)
	}
	out := make([]AgentCertificate, len(rows))
	for i, r := range rows {
		out[i] = agentCertFromRow(r)
	}
	return out, nil
}
