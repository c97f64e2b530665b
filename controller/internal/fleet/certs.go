package fleet

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/ca"
	"github.com/berthhq/berth/controller/internal/store"
)

// ErrRenewLimited is a renewal over the server's hourly allowance.
var ErrRenewLimited = errors.New("too many certificate renewals for this server: try again later")

// renewalsPerHour is how many renewals a server may ask for in an hour: a
// third of the lifetime before expiry, an agent renews about 1.5 times per
// lifetime; twice that, and never fewer than 6 (a week's certificate), so a
// working agent never meets the limit while a stolen stream cannot mint
// certificates (and database rows) at will.
func (s *Service) renewalsPerHour() int64 {
	return max(6, int64(3*time.Hour/s.cfg.AgentCertTTL))
}

// renew issues a new certificate for the stream's server. In one
// transaction it locks the server's row (Disable and Remove take the same
// lock first), checks that the server is not disabled and the stream's own
// certificate not revoked, checks the hourly allowance and records the new
// certificate with its key: a renewal and a disable run one after the
// other, so a disable either sees the new certificate and revokes it, or
// the renewal sees the disable and is refused.
func (s *Service) renew(ctx context.Context, c *conn, csr []byte, peer Peer) ([]byte, error) {
	if err := ca.CheckCSR(csr); err != nil {
		return nil, fmt.Errorf("%w: renew: %v", ErrProtocol, err)
	}
	var issued *ca.Issued
	err := s.st.InTx(ctx, func(tx *store.Store) error {
		st, err := tx.LockServerForRenewal(ctx, c.serverID, c.serial)
		if errors.Is(err, store.ErrNotFound) {
			return ErrRevoked
		}
		if err != nil {
			return err
		}
		if st.Revoked || st.ServerStatus == string(store.ServerDisabled) {
			return ErrRevoked
		}
		n, err := tx.CountAgentRenewalsSince(ctx, c.serverID, s.cfg.Now().Add(-time.Hour))
		if err != nil {
			return err
		}
		if n >= s.renewalsPerHour() {
			return ErrRenewLimited
		}
		issued, err = s.ca.SignAgentCSR(csr, c.serverID, s.cfg.AgentCertTTL)
		if err != nil {
			return fmt.Errorf("%w: renew: %v", ErrProtocol, err)
		}
		_, err = tx.RecordAgentCertificate(ctx, store.AgentCertificate{ServerID: c.serverID, Serial: issued.SerialHex, IssuedFor: "renew",
			NotBefore: issued.NotBefore, NotAfter: issued.NotAfter, SPKISHA256: issued.SPKISHA256})
		return err
	})
	switch {
	case errors.Is(err, ErrRenewLimited):
		s.security(ctx, kind.CertificateRenewRefused, store.SeverityWarning, &c.serverID, nil, peer, map[string]any{"reason": "rate_limited", "per_hour": s.renewalsPerHour()})
		return nil, err
	case errors.Is(err, ErrRevoked):
		s.security(ctx, kind.CertificateRenewRefused, store.SeverityWarning, &c.serverID, nil, peer, map[string]any{"reason": "server disabled or certificate revoked", "serial": c.serial})
		return nil, err
	case err != nil:
		return nil, err
	}
	s.security(ctx, "certificate.issued", store.SeverityInfo, &c.serverID, nil, peer, map[string]any{"serial": issued.SerialHex, "reason": "renew"})
	return issued.DER, nil
}

// RenewalInUse revokes a server's certificates older than serial, now that
// a connection authenticated with serial (the renewal), and cuts any stream
// still using one of them, here or on another controller.
func (s *Service) RenewalInUse(ctx context.Context, serverID store.ID, serial string, peer Peer) {
	old, err := s.st.RevokeSupersededCertificates(ctx, serverID, serial)
	if err != nil {
		s.log.Error("revoke superseded certificates", "server_id", serverID.String(), "err", err)
		return
	}
	for _, o := range old {
		s.cutSerial(ctx, serverID, o)
		s.security(ctx, "certificate.revoked", store.SeverityInfo, &serverID, nil, peer, map[string]any{"serial": o, "reason": "superseded by renewal", "successor": serial})
	}
}

var serialRE = regexp.MustCompile(`^[0-9a-f]{1,40}$`)

// RevokeCertificate revokes one agent certificate by serial (admin) and
// cuts the live stream that uses it. It returns the server it was issued to.
func (s *Service) RevokeCertificate(ctx context.Context, pr *auth.Principal, peer Peer, serial string) (store.ID, error) {
	if err := require(pr, store.ScopeAdmin); err != nil {
		return store.ID{}, err
	}
	serial = strings.TrimLeft(strings.ToLower(strings.TrimSpace(serial)), "0")
	if !serialRE.MatchString(serial) {
		return store.ID{}, fmt.Errorf("%w: a serial is 1-40 hex digits (as `berth server show` lists them)", ErrInvalid)
	}
	// Under the server's row lock, as renewals take it: a renewal presenting
	// this certificate either finished before (its successor is listed by
	// `berth server show`) or sees the revocation and is refused; it cannot
	// read "not revoked" and then issue a successor after the revocation.
	var id store.ID
	err := s.st.InTx(ctx, func(tx *store.Store) error {
		c, err := tx.AgentCertificateBySerial(ctx, serial)
		if err != nil {
			return err
		}
		if err := tx.LockServer(ctx, c.ServerID); err != nil {
			return err
		}
		id, err = tx.RevokeAgentCertificate(ctx, serial, "revoked by an administrator")
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return store.ID{}, fmt.Errorf("%w: no live certificate with serial %s", store.ErrNotFound, serial)
	}
	if err != nil {
		return store.ID{}, err
	}
	s.cutSerial(ctx, id, serial)
	if srv, err := s.st.Server(ctx, id); err == nil {
		s.activity(ctx, pr, peer, "certificate.revoked", srv, map[string]any{"serial": serial})
	}
	s.security(ctx, "certificate.revoked", store.SeverityWarning, &id, pr, peer, map[string]any{"serial": serial, "reason": "revoked by an administrator"})
	return id, nil
}

// Certificates lists a server's agent certificates, newest first.
func (s *Service) Certificates(ctx context.Context, pr *auth.Principal, serverID store.ID) ([]store.AgentCertificate, error) {
	if err := require(pr, store.ScopeRead); err != nil {
		return nil, err
	}
	return s.st.AgentCertificates(ctx, serverID)
}

// cutSerial ends the server's stream here if it uses serial, and tells the
// other controllers to do the same.
func (s *Service) cutSerial(ctx context.Context, serverID store.ID, serial string) {
	s.hub.CutSerial(serverID, serial, ErrRevoked)
	s.announce(ctx, serverID.String()+":"+serial)
}
