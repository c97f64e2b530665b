package store

import (
	"context"
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
	CreatedAt    time.Time
}

func agentCertFromRow(r dbsqlc.AgentCertificate) AgentCertificate {
	return AgentCertificate{
		ID: fromPG(r.ID), ServerID: fromPG(r.ServerID), Serial: r.Serial, IssuedFor: r.IssuedFor,
		NotBefore: r.NotBefore, NotAfter: r.NotAfter, RevokedAt: r.RevokedAt, RevokeReason: r.RevokeReason, CreatedAt: r.CreatedAt,
	}
}

// RecordAgentCertificate stores an issued certificate.
func (s *Store) RecordAgentCertificate(ctx context.Context, c AgentCertificate) (AgentCertificate, error) {
	if c.ID == (ID{}) {
		c.ID = NewID()
	}
	r, err := s.q.CreateAgentCertificate(ctx, dbsqlc.CreateAgentCertificateParams{
		ID: pgID(c.ID), ServerID: pgID(c.ServerID), Serial: c.Serial, IssuedFor: c.IssuedFor, NotBefore: c.NotBefore, NotAfter: c.NotAfter,
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
}

// CheckAgentCertificate looks up serial for serverID. ErrNotFound means the
// serial was never issued to that server, or the server is gone.
func (s *Store) CheckAgentCertificate(ctx context.Context, serverID ID, serial string) (AgentCertificateStatus, error) {
	r, err := s.q.CheckAgentCertificate(ctx, dbsqlc.CheckAgentCertificateParams{Serial: serial, ServerID: pgID(serverID)})
	if err != nil {
		return AgentCertificateStatus{}, mapErr("check agent certificate", err)
	}
	return AgentCertificateStatus{Revoked: r.Revoked, ServerStatus: r.ServerStatus}, nil
}

// RevokeServerCertificates revokes every live certificate of a server.
func (s *Store) RevokeServerCertificates(ctx context.Context, serverID ID, reason string) (int64, error) {
	n, err := s.q.RevokeAgentCertificatesForServer(ctx, dbsqlc.RevokeAgentCertificatesForServerParams{ServerID: pgID(serverID), Reason: &reason})
	return n, mapErr("revoke server certificates", err)
}

// RevokeAgentCertificate revokes one certificate by serial.
func (s *Store) RevokeAgentCertificate(ctx context.Context, serial, reason string) (int64, error) {
	n, err := s.q.RevokeAgentCertificate(ctx, dbsqlc.RevokeAgentCertificateParams{Serial: serial, Reason: &reason})
	return n, mapErr("revoke agent certificate", err)
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
