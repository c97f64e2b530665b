package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/berthhq/berth/gen/dbsqlc"
)

// ClaimDomainsTLSDue claims the ACME and custom domains whose next
// certificate attempt is due at now (at most limit): their next attempt
// moves to leaseUntil, so no other controller takes them meanwhile and a
// controller that dies mid-attempt leaves them to be tried again then.
func (s *Store) ClaimDomainsTLSDue(ctx context.Context, now, leaseUntil time.Time, limit int) ([]Domain, error) {
	rows, err := s.q.ClaimDomainsTLSDue(ctx, dbsqlc.ClaimDomainsTLSDueParams{Now: now, LeaseUntil: leaseUntil, Lim: limitArg(limit)})
	if err != nil {
		return nil, mapErr("claim domains due for tls", err)
	}
	return domainsFromRows(rows), nil
}

// TLSAttempt is the whole outcome of an issuance, renewal or inspection:
// every field replaces the stored one.
type TLSAttempt struct {
	Status         TLSStatus
	Issuer         *string
	NotBefore      *time.Time
	ExpiresAt      *time.Time
	LastAttemptAt  *time.Time
	NextAttemptAt  *time.Time
	LastError      *string
	Certificate    *string
	Serial         *string
	Failures       int
	ARIWindowStart *time.Time
	ARIWindowEnd   *time.Time
	// ARINextPollAt: when to ask for renewal information again.
	ARINextPollAt *time.Time
}

// SetDomainTLSAttempt records an attempt's outcome. A new serial re-arms
// the expiry warning.
func (s *Store) SetDomainTLSAttempt(ctx context.Context, id ID, a TLSAttempt) (Domain, error) {
	r, err := s.q.SetDomainTLSAttempt(ctx, dbsqlc.SetDomainTLSAttemptParams{
		ID: pgID(id), TlsStatus: string(a.Status), TlsIssuer: a.Issuer, TlsNotBefore: a.NotBefore, TlsExpiresAt: a.ExpiresAt,
		TlsLastAttemptAt: a.LastAttemptAt, TlsNextAttemptAt: a.NextAttemptAt, TlsLastError: a.LastError,
		TlsCertificate: a.Certificate, TlsSerial: a.Serial, TlsFailures: int32(a.Failures),
		TlsAriWindowStart: a.ARIWindowStart, TlsAriWindowEnd: a.ARIWindowEnd,
		TlsAriNextPollAt: a.ARINextPollAt,
	})
	if err != nil {
		return Domain{}, mapErr("set domain tls attempt", err)
	}
	return domainFromRow(r), nil
}

// SetDomainNextAttempt schedules the next certificate attempt (nil: none);
// reset puts a failed certificate back to pending.
func (s *Store) SetDomainNextAttempt(ctx context.Context, id ID, at *time.Time, reset bool) (Domain, error) {
	r, err := s.q.SetDomainNextAttempt(ctx, dbsqlc.SetDomainNextAttemptParams{ID: pgID(id), At: at, Reset: reset})
	if err != nil {
		return Domain{}, mapErr("set domain next attempt", err)
	}
	return domainFromRow(r), nil
}

// SetAppDomainsStatus records the outcome of applying an app's site for
// the domains (ids) the applied site held; domains added since stay
// pending for the next site job.
func (s *Store) SetAppDomainsStatus(ctx context.Context, appID ID, ids []ID, status DomainStatus, lastError *string) ([]Domain, error) {
	pg := make([]pgtype.UUID, len(ids))
	for i, id := range ids {
		pg[i] = pgID(id)
	}
	rows, err := s.q.SetAppDomainsStatus(ctx, dbsqlc.SetAppDomainsStatusParams{AppID: pgID(appID), Ids: pg, Status: string(status), LastError: lastError})
	if err != nil {
		return nil, mapErr("set app domains status", err)
	}
	return domainsFromRows(rows), nil
}

// ExpireDomainCertificates marks active (or failed to renew) certificates
// past their expiry expired and returns them.
func (s *Store) ExpireDomainCertificates(ctx context.Context, now time.Time) ([]Domain, error) {
	rows, err := s.q.ExpireDomainCertificates(ctx, now)
	if err != nil {
		return nil, mapErr("expire domain certificates", err)
	}
	return domainsFromRows(rows), nil
}

// ClaimDomainsExpiring returns the certificates expiring within window
// (or a third of their lifetime, when shorter) whose warning was not
// raised yet, and marks it raised (once per certificate: a new serial
// re-arms it).
func (s *Store) ClaimDomainsExpiring(ctx context.Context, now time.Time, window time.Duration) ([]Domain, error) {
	rows, err := s.q.ClaimDomainsExpiring(ctx, dbsqlc.ClaimDomainsExpiringParams{Now: now, WindowSeconds: int64(window / time.Second)})
	if err != nil {
		return nil, mapErr("claim expiring domains", err)
	}
	return domainsFromRows(rows), nil
}

// AllDomains lists domains (one app's when appID is set), soonest
// certificate expiry first, then by name.
func (s *Store) AllDomains(ctx context.Context, appID *ID, limit int) ([]Domain, error) {
	if limit <= 0 {
		limit = 10000
	}
	rows, err := s.q.ListAllDomains(ctx, dbsqlc.ListAllDomainsParams{AppID: pgOptID(appID), Lim: int32(limit)})
	if err != nil {
		return nil, mapErr("list domains", err)
	}
	return domainsFromRows(rows), nil
}

// SetDeploymentParams stores a job's input (JSON, no secrets).
func (s *Store) SetDeploymentParams(ctx context.Context, id ID, params []byte) error {
	return mapErr("set job params", s.q.SetDeploymentParams(ctx, dbsqlc.SetDeploymentParamsParams{ID: pgID(id), Params: params}))
}

// SetDeploymentResultData stores what a job returned (JSON, no secrets).
func (s *Store) SetDeploymentResultData(ctx context.Context, id ID, result []byte) error {
	return mapErr("set job result", s.q.SetDeploymentResultData(ctx, dbsqlc.SetDeploymentResultDataParams{ID: pgID(id), Result: result}))
}

// DeploymentData returns a job's stored input and result (nil when unset).
func (s *Store) DeploymentData(ctx context.Context, id ID) (params, result []byte, err error) {
	r, err := s.q.GetDeploymentData(ctx, pgID(id))
	if err != nil {
		return nil, nil, mapErr("get job data", err)
	}
	return r.Params, r.Result, nil
}

// SetAppRouting sets where an app's site forwards (nil upstreamURL: its
// upstream port) and the static directory it serves instead (nil: none).
func (s *Store) SetAppRouting(ctx context.Context, id ID, upstreamURL, staticRoot *string) (App, error) {
	r, err := s.q.SetAppRouting(ctx, dbsqlc.SetAppRoutingParams{ID: pgID(id), UpstreamUrl: upstreamURL, StaticRoot: staticRoot})
	if err != nil {
		return App{}, mapErr("set app routing", err)
	}
	return appFromRow(r), nil
}

// ACMEAccount is the controller's account at one ACME directory.
type ACMEAccount struct {
	ID              ID
	DirectoryURL    string
	Email           string
	RegistrationURI *string
	key             []byte
}

func acmeAccountFromRow(r dbsqlc.AcmeAccount) ACMEAccount {
	return ACMEAccount{ID: fromPG(r.ID), DirectoryURL: r.DirectoryUrl, Email: r.Email, RegistrationURI: r.RegistrationUri, key: r.PrivateKey}
}

// ACMEAccountFor returns the account for a directory and email.
func (s *Store) ACMEAccountFor(ctx context.Context, directoryURL, email string) (ACMEAccount, error) {
	r, err := s.q.GetACMEAccount(ctx, dbsqlc.GetACMEAccountParams{DirectoryUrl: directoryURL, Email: email})
	if err != nil {
		return ACMEAccount{}, mapErr("get acme account", err)
	}
	return acmeAccountFromRow(r), nil
}

// CreateACMEAccount stores an account with its key sealed. When another
// controller stored the same account first, that one is returned.
func (s *Store) CreateACMEAccount(ctx context.Context, directoryURL, email string, keyPEM []byte) (ACMEAccount, error) {
	id := NewID()
	sealed, err := s.seal("acme_accounts", "private_key", id, keyPEM)
	if err != nil {
		return ACMEAccount{}, err
	}
	r, err := s.q.CreateACMEAccount(ctx, dbsqlc.CreateACMEAccountParams{ID: pgID(id), DirectoryUrl: directoryURL, Email: email, PrivateKey: sealed})
	if errors.Is(err, pgx.ErrNoRows) {
		return s.ACMEAccountFor(ctx, directoryURL, email)
	}
	if err != nil {
		return ACMEAccount{}, mapErr("create acme account", err)
	}
	return acmeAccountFromRow(r), nil
}

// ACMEAccountKey opens an account's key (PEM).
func (s *Store) ACMEAccountKey(a ACMEAccount) ([]byte, error) {
	return s.open("acme_accounts", "private_key", a.ID, a.key)
}

// SetACMEAccountRegistration records the account URL the CA returned.
func (s *Store) SetACMEAccountRegistration(ctx context.Context, id ID, uri string) error {
	return mapErr("set acme registration", s.q.SetACMEAccountRegistration(ctx, dbsqlc.SetACMEAccountRegistrationParams{ID: pgID(id), RegistrationUri: &uri}))
}

// DNSProvider holds the credentials of one DNS-01 provider.
type DNSProvider struct {
	ID          ID
	Name        string
	Provider    string
	CreatedAt   time.Time
	credentials []byte
}

func dnsProviderFromRow(r dbsqlc.DnsProvider) DNSProvider {
	return DNSProvider{ID: fromPG(r.ID), Name: r.Name, Provider: r.Provider, CreatedAt: r.CreatedAt, credentials: r.Credentials}
}

// CreateDNSProvider stores a provider with its credentials (JSON) sealed.
// ErrConflict: the name is taken.
func (s *Store) CreateDNSProvider(ctx context.Context, name, provider string, credentials []byte) (DNSProvider, error) {
	id := NewID()
	sealed, err := s.seal("dns_providers", "credentials", id, credentials)
	if err != nil {
		return DNSProvider{}, err
	}
	r, err := s.q.CreateDNSProvider(ctx, dbsqlc.CreateDNSProviderParams{ID: pgID(id), Name: name, Provider: provider, Credentials: sealed})
	if err != nil {
		return DNSProvider{}, mapErr("create dns provider", err)
	}
	return dnsProviderFromRow(r), nil
}

// DNSProviderByID gets a provider.
func (s *Store) DNSProviderByID(ctx context.Context, id ID) (DNSProvider, error) {
	r, err := s.q.GetDNSProvider(ctx, pgID(id))
	if err != nil {
		return DNSProvider{}, mapErr("get dns provider", err)
	}
	return dnsProviderFromRow(r), nil
}

// DNSProviderByName gets a provider by name.
func (s *Store) DNSProviderByName(ctx context.Context, name string) (DNSProvider, error) {
	r, err := s.q.GetDNSProviderByName(ctx, name)
	if err != nil {
		return DNSProvider{}, mapErr("get dns provider", fmt.Errorf("%q: %w", name, err))
	}
	return dnsProviderFromRow(r), nil
}

// DNSProviders lists providers by name.
func (s *Store) DNSProviders(ctx context.Context) ([]DNSProvider, error) {
	rows, err := s.q.ListDNSProviders(ctx)
	if err != nil {
		return nil, mapErr("list dns providers", err)
	}
	out := make([]DNSProvider, len(rows))
	for i, r := range rows {
		out[i] = dnsProviderFromRow(r)
	}
	return out, nil
}

// DNSProviderCredentials opens a provider's credentials (JSON).
func (s *Store) DNSProviderCredentials(p DNSProvider) ([]byte, error) {
	return s.open("dns_providers", "credentials", p.ID, p.credentials)
}

// AppsSiteBehindCertificates lists (at most limit) apps with an installed
// ACME certificate that their newest finished site job does not carry:
// what a controller that died between recording a certificate and queueing
// the site job that serves it leaves behind.
func (s *Store) AppsSiteBehindCertificates(ctx context.Context, limit int) ([]ID, error) {
	rows, err := s.q.ListAppsSiteBehindCertificates(ctx, limitArg(limit))
	if err != nil {
		return nil, mapErr("list apps whose site lacks a certificate", err)
	}
	out := make([]ID, len(rows))
	for i, r := range rows {
		out[i] = fromPG(r)
	}
	return out, nil
}

// ClaimDomainsARIDue claims (at most limit) ACME domains whose renewal
// information is due to be asked again; their next poll moves to
// leaseUntil.
func (s *Store) ClaimDomainsARIDue(ctx context.Context, now, leaseUntil time.Time, limit int) ([]Domain, error) {
	rows, err := s.q.ClaimDomainsARIDue(ctx, dbsqlc.ClaimDomainsARIDueParams{Now: now, LeaseUntil: leaseUntil, Lim: limitArg(limit)})
	if err != nil {
		return nil, mapErr("claim domains due for renewal information", err)
	}
	return domainsFromRows(rows), nil
}

// ARIPoll is a renewal-information poll's outcome.
type ARIPoll struct {
	WindowStart, WindowEnd *time.Time // nil keeps the stored window
	NextPollAt             time.Time
	RenewAt                *time.Time // the next attempt while active; nil keeps it
}

// SetDomainARI records a poll for the certificate with serial;
// ErrNotFound when the domain is gone or holds another certificate now.
func (s *Store) SetDomainARI(ctx context.Context, id ID, serial string, p ARIPoll) (Domain, error) {
	r, err := s.q.SetDomainARI(ctx, dbsqlc.SetDomainARIParams{
		ID: pgID(id), Serial: serial, WindowStart: p.WindowStart, WindowEnd: p.WindowEnd, NextPollAt: p.NextPollAt, RenewAt: p.RenewAt,
	})
	if err != nil {
		return Domain{}, mapErr("set domain renewal information", err)
	}
	return domainFromRow(r), nil
}
