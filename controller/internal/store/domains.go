package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berthhq/berth/gen/dbsqlc"
)

// DomainStatus is the state of a domain's route on its server.
type DomainStatus string

// The route states.
const (
	DomainPending DomainStatus = "pending" // not yet applied by the agent
	DomainActive  DomainStatus = "active"
	DomainFailed  DomainStatus = "failed" // see LastError
)

// TLSMode is how a domain gets its certificate.
type TLSMode string

// The TLS modes.
const (
	TLSOff    TLSMode = "off"    // plain HTTP
	TLSACME   TLSMode = "acme"   // automatic (Let's Encrypt unless ACMEDirectoryURL names another CA)
	TLSCustom TLSMode = "custom" // a certificate the operator placed on the server
)

// TLSStatus is what the agent last reported about a domain's certificate.
type TLSStatus string

// The certificate states. TLSDisabled goes with TLSOff and only with it.
const (
	TLSDisabled TLSStatus = "disabled"
	TLSPending  TLSStatus = "pending"
	TLSIssuing  TLSStatus = "issuing"
	TLSActive   TLSStatus = "active"
	TLSFailed   TLSStatus = "failed"
	TLSExpired  TLSStatus = "expired"
)

// DomainSettings is what CreateDomain takes and UpdateDomain replaces.
type DomainSettings struct {
	// RedirectTo makes the host only redirect (e.g. www -> apex).
	RedirectTo     *string
	RedirectStatus int // 301, 302, 307, 308; 0 is 301
	ForceHTTPS     bool
	TLSMode        TLSMode // "" is acme
	// ACMEDirectoryURL nil is Let's Encrypt production.
	ACMEDirectoryURL *string
	// TLSCertPath and TLSKeyPath are paths on the server, for custom only.
	TLSCertPath *string
	TLSKeyPath  *string
	// HSTS sends Strict-Transport-Security over HTTPS.
	HSTS bool
	// DNSProviderID answers ACME by DNS-01 (wildcards need it).
	DNSProviderID *ID
}

func (d DomainSettings) withDefaults() DomainSettings {
	if d.RedirectStatus == 0 {
		d.RedirectStatus = 301
	}
	if d.TLSMode == "" {
		d.TLSMode = TLSACME
	}
	return d
}

// Domain is a host name routed to an app by its server's proxy.
type Domain struct {
	ID       ID
	AppID    ID
	ServerID ID // always the app's server
	Hostname string
	// IsPrimary: the app's canonical name; at most one per app.
	IsPrimary bool
	DomainSettings
	Status           DomainStatus
	LastError        *string
	TLSStatus        TLSStatus
	TLSIssuer        *string
	TLSNotBefore     *time.Time
	TLSExpiresAt     *time.Time
	TLSLastAttemptAt *time.Time
	TLSNextAttemptAt *time.Time
	TLSLastError     *string
	// TLSCertificate is the chain the CA last issued (public).
	TLSCertificate *string
	TLSSerial      *string
	// TLSFailures counts failed attempts in a row (the backoff grows with it).
	TLSFailures           int
	TLSExpiringNotifiedAt *time.Time
	// ARI's suggested renewal window (RFC 9773).
	TLSARIWindowStart *time.Time
	TLSARIWindowEnd   *time.Time
	// TLSARINextPollAt: when the renewal information is asked again (nil:
	// never, the CA offers none).
	TLSARINextPollAt *time.Time
	CreatedAt        time.Time
	UpdatedAt        time.Time
}

func domainFromRow(r dbsqlc.Domain) Domain {
	return Domain{
		ID: fromPG(r.ID), AppID: fromPG(r.AppID), ServerID: fromPG(r.ServerID), Hostname: r.Hostname, IsPrimary: r.IsPrimary,
		DomainSettings: DomainSettings{
			RedirectTo: r.RedirectTo, RedirectStatus: int(r.RedirectStatus), ForceHTTPS: r.ForceHttps, TLSMode: TLSMode(r.TlsMode),
			ACMEDirectoryURL: r.AcmeDirectoryUrl, TLSCertPath: r.TlsCertPath, TLSKeyPath: r.TlsKeyPath,
			HSTS: r.Hsts, DNSProviderID: fromOptPG(r.DnsProviderID),
		},
		Status: DomainStatus(r.Status), LastError: r.LastError, TLSStatus: TLSStatus(r.TlsStatus), TLSIssuer: r.TlsIssuer,
		TLSNotBefore: r.TlsNotBefore, TLSExpiresAt: r.TlsExpiresAt, TLSLastAttemptAt: r.TlsLastAttemptAt,
		TLSNextAttemptAt: r.TlsNextAttemptAt, TLSLastError: r.TlsLastError, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
		TLSCertificate: r.TlsCertificate, TLSSerial: r.TlsSerial, TLSFailures: int(r.TlsFailures),
		TLSExpiringNotifiedAt: r.TlsExpiringNotifiedAt, TLSARIWindowStart: r.TlsAriWindowStart, TLSARIWindowEnd: r.TlsAriWindowEnd,
		TLSARINextPollAt: r.TlsAriNextPollAt,
	}
}

func domainsFromRows(rows []dbsqlc.Domain) []Domain {
	out := make([]Domain, len(rows))
	for i, r := range rows {
		out[i] = domainFromRow(r)
	}
	return out
}

// normalizeHostname lowercases and drops a trailing dot; the schema checks
// the rest (IDNs must already be punycode).
func normalizeHostname(h string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
}

// CreateDomainParams describes a new domain. The server is the app's.
type CreateDomainParams struct {
	ID        ID
	AppID     ID
	Hostname  string
	IsPrimary bool
	DomainSettings
}

// CreateDomain adds a host name to an app; its route and certificate start
// pending (TLS disabled for TLSOff). ErrConflict: the host name is taken,
// or the app already has a primary; ErrMissingParent: no such app.
func (s *Store) CreateDomain(ctx context.Context, p CreateDomainParams) (Domain, error) {
	if p.ID == (ID{}) {
		p.ID = NewID()
	}
	d := p.DomainSettings.withDefaults()
	r, err := s.q.CreateDomain(ctx, dbsqlc.CreateDomainParams{
		ID: pgID(p.ID), AppID: pgID(p.AppID), Hostname: normalizeHostname(p.Hostname), IsPrimary: p.IsPrimary,
		RedirectTo: d.RedirectTo, RedirectStatus: int16(d.RedirectStatus), ForceHttps: d.ForceHTTPS, TlsMode: string(d.TLSMode),
		AcmeDirectoryUrl: d.ACMEDirectoryURL, TlsCertPath: d.TLSCertPath, TlsKeyPath: d.TLSKeyPath,
		Hsts: d.HSTS, DnsProviderID: pgOptID(d.DNSProviderID),
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return Domain{}, fmt.Errorf("create domain: %w (app)", ErrMissingParent)
	}
	if err != nil {
		return Domain{}, mapErr("create domain", err)
	}
	return domainFromRow(r), nil
}

// Domain returns a domain by id.
func (s *Store) Domain(ctx context.Context, id ID) (Domain, error) {
	r, err := s.q.GetDomain(ctx, pgID(id))
	if err != nil {
		return Domain{}, mapErr("get domain", err)
	}
	return domainFromRow(r), nil
}

// DomainByHostname returns a domain by host name (case and a trailing dot
// do not matter).
func (s *Store) DomainByHostname(ctx context.Context, hostname string) (Domain, error) {
	r, err := s.q.GetDomainByHostname(ctx, normalizeHostname(hostname))
	if err != nil {
		return Domain{}, mapErr("get domain", err)
	}
	return domainFromRow(r), nil
}

// DomainsForApp lists an app's domains, the primary first, then by name.
func (s *Store) DomainsForApp(ctx context.Context, appID ID) ([]Domain, error) {
	rows, err := s.q.ListDomainsForApp(ctx, pgID(appID))
	if err != nil {
		return nil, mapErr("list app domains", err)
	}
	return domainsFromRows(rows), nil
}

// DomainsForServer lists every domain a server routes, by host name.
func (s *Store) DomainsForServer(ctx context.Context, serverID ID) ([]Domain, error) {
	rows, err := s.q.ListDomainsForServer(ctx, pgID(serverID))
	if err != nil {
		return nil, mapErr("list server domains", err)
	}
	return domainsFromRows(rows), nil
}

// DomainFilter selects and pages domains. Before is the last id of the
// previous page; Limit 0 is DefaultPageSize.
type DomainFilter struct {
	AppID     *ID
	ServerID  *ID
	Status    DomainStatus // "" for every status
	TLSStatus TLSStatus    // "" for every status
	Before    *ID
	Limit     int
}

// ListDomains lists domains, newest first.
func (s *Store) ListDomains(ctx context.Context, f DomainFilter) ([]Domain, error) {
	rows, err := s.q.ListDomains(ctx, dbsqlc.ListDomainsParams{
		AppID: pgOptID(f.AppID), ServerID: pgOptID(f.ServerID), Status: nullText(string(f.Status)),
		TlsStatus: nullText(string(f.TLSStatus)), Before: pgOptID(f.Before), Lim: limitArg(f.Limit),
	})
	if err != nil {
		return nil, mapErr("list domains", err)
	}
	return domainsFromRows(rows), nil
}

// UpdateDomain replaces a domain's settings. The route goes back to pending
// for the agent to apply; a new TLS mode restarts the certificate (pending,
// or disabled for TLSOff).
func (s *Store) UpdateDomain(ctx context.Context, id ID, settings DomainSettings) (Domain, error) {
	d := settings.withDefaults()
	r, err := s.q.UpdateDomain(ctx, dbsqlc.UpdateDomainParams{
		ID: pgID(id), RedirectTo: d.RedirectTo, RedirectStatus: int16(d.RedirectStatus), ForceHttps: d.ForceHTTPS,
		TlsMode: string(d.TLSMode), AcmeDirectoryUrl: d.ACMEDirectoryURL, TlsCertPath: d.TLSCertPath, TlsKeyPath: d.TLSKeyPath,
		Hsts: d.HSTS, DnsProviderID: pgOptID(d.DNSProviderID),
	})
	if err != nil {
		return Domain{}, mapErr("update domain", err)
	}
	return domainFromRow(r), nil
}

// SetPrimaryDomain makes a domain its app's primary, and the previous one
// not, atomically.
func (s *Store) SetPrimaryDomain(ctx context.Context, id ID) (Domain, error) {
	var out Domain
	err := s.InTx(ctx, func(tx *Store) error {
		cur, err := tx.q.GetDomain(ctx, pgID(id))
		if err != nil {
			return err
		}
		if err := tx.q.ClearPrimaryDomain(ctx, cur.AppID); err != nil {
			return err
		}
		r, err := tx.q.SetPrimaryDomain(ctx, pgID(id))
		out = domainFromRow(r)
		return err
	})
	if err != nil {
		return Domain{}, mapErr("set primary domain", err)
	}
	return out, nil
}

// SetDomainStatus records what the agent reported after applying the
// route; lastError is replaced (nil clears it).
func (s *Store) SetDomainStatus(ctx context.Context, id ID, status DomainStatus, lastError *string) (Domain, error) {
	r, err := s.q.SetDomainStatus(ctx, dbsqlc.SetDomainStatusParams{ID: pgID(id), Status: string(status), LastError: lastError})
	if err != nil {
		return Domain{}, mapErr("set domain status", err)
	}
	return domainFromRow(r), nil
}

// DomainTLSReport is what the agent reports about a certificate. Nil
// Issuer, NotBefore, ExpiresAt and LastAttemptAt keep the stored values;
// NextAttemptAt and LastError are replaced (nil clears them).
type DomainTLSReport struct {
	Status        TLSStatus
	Issuer        *string
	NotBefore     *time.Time
	ExpiresAt     *time.Time
	LastAttemptAt *time.Time
	NextAttemptAt *time.Time
	LastError     *string
}

// SetDomainTLS records a certificate report. ErrInvalid when the status
// does not fit the mode (disabled is for TLSOff only; active needs an
// expiry).
func (s *Store) SetDomainTLS(ctx context.Context, id ID, rep DomainTLSReport) (Domain, error) {
	r, err := s.q.SetDomainTLS(ctx, dbsqlc.SetDomainTLSParams{
		ID: pgID(id), TlsStatus: string(rep.Status), TlsIssuer: rep.Issuer, TlsNotBefore: rep.NotBefore,
		TlsExpiresAt: rep.ExpiresAt, TlsLastAttemptAt: rep.LastAttemptAt, TlsNextAttemptAt: rep.NextAttemptAt,
		TlsLastError: rep.LastError,
	})
	if err != nil {
		return Domain{}, mapErr("set domain tls", err)
	}
	return domainFromRow(r), nil
}

// DomainsExpiringBefore lists ACME domains whose certificate expires before
// cutoff, soonest first: the renewal scan.
func (s *Store) DomainsExpiringBefore(ctx context.Context, cutoff time.Time, limit int) ([]Domain, error) {
	rows, err := s.q.ListDomainsExpiringBefore(ctx, dbsqlc.ListDomainsExpiringBeforeParams{Cutoff: cutoff, Lim: limitArg(limit)})
	if err != nil {
		return nil, mapErr("list expiring domains", err)
	}
	return domainsFromRows(rows), nil
}

// DomainsTLSAttemptDue lists domains whose next certificate attempt is at
// or before now, earliest first.
func (s *Store) DomainsTLSAttemptDue(ctx context.Context, now time.Time, limit int) ([]Domain, error) {
	rows, err := s.q.ListDomainsTLSAttemptDue(ctx, dbsqlc.ListDomainsTLSAttemptDueParams{Now: now, Lim: limitArg(limit)})
	if err != nil {
		return nil, mapErr("list domains due for tls", err)
	}
	return domainsFromRows(rows), nil
}

// DeleteDomain deletes a domain.
func (s *Store) DeleteDomain(ctx context.Context, id ID) error {
	n, err := s.q.DeleteDomain(ctx, pgID(id))
	return affected("delete domain", n, err)
}
