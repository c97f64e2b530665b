// Package domains is the domains and certificates capability: host names
// routed to apps by their server's nginx, and their TLS certificates.
//
// Routing: every change to an app's domains (or its upstream) queues a
// 'site' job on the deployments job machinery; the job carries the app's
// whole site, built when it is sent, so a queued one always has the newest
// state and one queued job per app is enough. The agent renders the nginx
// site, checks it with nginx -t, swaps it in atomically and reloads; a
// failed check keeps the previous site, and its error becomes the domains'
// status and last_error.
//
// Certificates: the controller runs the ACME client (lego) and the agent
// keeps every certificate key: an 'acme' job asks it for a CSR (it makes
// the key), HTTP-01 answers are 'acme' present/cleanup jobs it writes where
// nginx serves /.well-known/acme-challenge/ (before any redirect), and the
// issued chain is an 'acme' install job. DNS-01 (wildcards) runs in the
// controller through lego's DNS providers. We chose this over an ACME
// client in the agent to keep the agent lean (no lego, no DNS provider
// SDKs there) and the account keys and DNS credentials in one place,
// sealed in PostgreSQL.
//
// Renewal: every controller runs the loop; due domains are claimed with
// FOR UPDATE SKIP LOCKED on tls_next_attempt_at (a lease), so one
// controller works on each. After an issuance the next attempt is the
// time ACME Renewal Information (RFC 9773) suggests when the CA offers it,
// else two thirds into the certificate's lifetime, which holds for 6-day,
// 45-day and 90-day certificates alike. The renewal information is asked
// again on the CA's Retry-After (bounded), claimed the same way, so a
// window moved earlier moves the renewal. Recording a certificate and
// queueing the site job that serves it are two commits; the loop queues
// the site job of any installed certificate the app's newest site lacks,
// so a controller killed between them leaves nothing unserved. Failures retry with exponential
// backoff, set tls_status and tls_last_error at once and publish
// certificate.renewal_failed; a certificate within 14 days of expiry
// raises certificate.expiring once; one past expiry is expired, never
// active. A removed domain's row is gone, so nothing renews it again.
package domains

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/go-acme/lego/v5/challenge/dns01"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/deploys"
	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// Job kinds on the deployments machinery.
const (
	JobSite store.JobKind = "site"
	JobACME store.JobKind = "acme"
)

// LetsEncrypt is the default ACME directory.
const LetsEncrypt = "https://acme-v02.api.letsencrypt.org/directory"

// Config tunes the service.
type Config struct {
	// ACMEDirectory is the install's ACME directory (default Let's
	// Encrypt); a domain may name its own.
	ACMEDirectory string
	// ACMEEmail is the account's contact address ("" registers none).
	ACMEEmail string
	// EABKeyID and EABHMAC bind the install's account to an account at a
	// CA that requires External Account Binding (ZeroSSL, ...).
	EABKeyID string
	EABHMAC  string
	// ACMECAFile: PEM roots trusted (besides the system's) for HTTPS to
	// ACME directories: a private CA, or a test CA.
	ACMECAFile string
	// DNSResolvers (host:port) are asked whether a DNS-01 record is
	// visible before the CA is told to look; empty is the system's.
	DNSResolvers []string
	// DNSSkipPropagationCheck trusts the provider's answer at once (a DNS
	// server that is authoritative and updated synchronously).
	DNSSkipPropagationCheck bool
	// AllowDNSExec lets an admin store an 'exec' DNS provider, which runs
	// a program on the controller.
	AllowDNSExec bool
	// Tick is how often the renewal loop looks for due work (default 10s).
	Tick time.Duration
	// RetryBase and RetryMax bound the backoff after a failed attempt
	// (default 1m doubling up to 6h).
	RetryBase, RetryMax time.Duration
	// JobTimeout bounds each agent step (default 2m).
	JobTimeout time.Duration
	// ExpiryWarning is how long before expiry certificate.expiring is
	// raised (default 14 days).
	ExpiryWarning time.Duration
	// CustomCheckEvery is how often a custom certificate is read again
	// (default 12h).
	CustomCheckEvery time.Duration
	// ARIPollMin and ARIPollMax bound how soon renewal information is
	// asked again after the CA's Retry-After (default 1h and 24h): a CA
	// asking for less is not polled more often than the minimum, one
	// asking for more (or nothing) is still asked at the maximum.
	ARIPollMin, ARIPollMax time.Duration
	Now                    func() time.Time
}

// Service is the domains capability.
type Service struct {
	st   *store.Store
	dep  *deploys.Service
	log  *slog.Logger
	cfg  Config
	wake chan struct{}
	http *http.Client
	// sem bounds the certificate attempts this controller runs at once.
	sem chan struct{}
}

// New returns the service and registers its job kinds with dep.
func New(st *store.Store, dep *deploys.Service, log *slog.Logger, cfg Config) (*Service, error) {
	if cfg.ACMEDirectory == "" {
		cfg.ACMEDirectory = LetsEncrypt
	}
	if _, err := checkDirectoryURL(cfg.ACMEDirectory); err != nil {
		return nil, fmt.Errorf("--acme-directory: %w", err)
	}
	if (cfg.EABKeyID == "") != (cfg.EABHMAC == "") {
		return nil, errors.New("--acme-eab-kid and --acme-eab-hmac go together")
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 10 * time.Second
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = time.Minute
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 6 * time.Hour
	}
	if cfg.JobTimeout <= 0 {
		cfg.JobTimeout = 2 * time.Minute
	}
	if cfg.ExpiryWarning <= 0 {
		cfg.ExpiryWarning = 14 * 24 * time.Hour
	}
	if cfg.CustomCheckEvery <= 0 {
		cfg.CustomCheckEvery = 12 * time.Hour
	}
	if cfg.ARIPollMin <= 0 {
		cfg.ARIPollMin = time.Hour
	}
	if cfg.ARIPollMax <= 0 {
		cfg.ARIPollMax = 24 * time.Hour
	}
	if cfg.ARIPollMax < cfg.ARIPollMin {
		return nil, errors.New("the ARI poll maximum is below its minimum")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if cfg.ACMECAFile != "" {
		pem, err := os.ReadFile(cfg.ACMECAFile)
		if err != nil {
			return nil, fmt.Errorf("--acme-ca-file: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--acme-ca-file %s: no PEM certificate in it", cfg.ACMECAFile)
		}
	}
	if len(cfg.DNSResolvers) > 0 {
		// lego's DNS-01 lookups (zone, CNAME, propagation) ask these.
		dns01.SetDefaultClient(dns01.NewClient(&dns01.Options{RecursiveNameservers: cfg.DNSResolvers, Timeout: 10 * time.Second}))
	}
	s := &Service{
		st: st, dep: dep, log: log.With("component", "domains"), cfg: cfg, wake: make(chan struct{}, 1),
		http: newACMEHTTPClient(pool), sem: make(chan struct{}, 4),
	}
	dep.HandleJobKind(JobSite, siteJobs{s})
	dep.HandleJobKind(JobACME, acmeJobs{s})
	return s, nil
}

// poke wakes this controller's renewal loop.
func (s *Service) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

var require = auth.Require

// Peer is where a request came from, for the audit trail.
type Peer = deploys.Peer

func (s *Service) activity(ctx context.Context, pr *auth.Principal, peer Peer, action string, id store.ID, name string, changes map[string]any) {
	p := store.CreateActivityParams{
		Action: action, SubjectType: "domain", SubjectID: &id, SubjectName: name, Changes: changes,
		IPAddress: peer.IP, UserAgent: peer.UserAgent,
	}
	p.ActorType, p.Actor, p.UserID = pr.Actor()
	if _, err := s.st.CreateActivity(ctx, p); err != nil {
		s.log.Error("record activity", "action", action, "err", err)
	}
}

func (s *Service) systemActivity(ctx context.Context, st *store.Store, action string, id store.ID, name string, changes map[string]any) {
	if _, err := st.CreateActivity(ctx, store.CreateActivityParams{
		ActorType: store.ActorSystem, Actor: "system", Action: action, SubjectType: "domain", SubjectID: &id,
		SubjectName: name, Changes: changes,
	}); err != nil {
		s.log.Error("record activity", "action", action, "err", err)
	}
}

// Domain is a domain with its app's name, as shown.
type Domain struct {
	store.Domain
	App         string
	DNSProvider string
}

func (s *Service) view(ctx context.Context, d store.Domain) Domain {
	v := Domain{Domain: d}
	if a, err := s.st.App(ctx, d.AppID); err == nil {
		v.App = a.Name
	}
	if d.DNSProviderID != nil {
		if p, err := s.st.DNSProviderByID(ctx, *d.DNSProviderID); err == nil {
			v.DNSProvider = p.Name
		}
	}
	return v
}

// AddParams asks for a domain.
type AddParams struct {
	App            string
	Host           string
	Primary        bool
	RedirectTo     string
	RedirectStatus int
	NoForceHTTPS   bool
	TLS            string // acme (""), custom, off
	CertPath       string
	KeyPath        string
	ACMEDirectory  string
	HSTS           bool
	DNSProvider    string
}

// Add routes a host to an app (write scope; admin with a DNS provider or
// an ACME directory other than the install's). The host is normalised; a
// host another app (or this one) already has is refused, as are redirect
// loops. Its site is synced and, for acme and custom, its certificate
// attempt scheduled at once.
func (s *Service) Add(ctx context.Context, pr *auth.Principal, peer Peer, p AddParams) (Domain, error) {
	if err := require(pr, store.ScopeWrite); err != nil {
		return Domain{}, err
	}
	// Two options are more than a harmless setting: a DNS provider spends
	// the credentials an admin stored (DNS-01 proves control of any name
	// in their zones, wherever its DNS points, so the write scope could
	// get a trusted certificate for any such name), and a directory of the
	// caller's choosing makes the controller talk to that server.
	if strings.TrimSpace(p.DNSProvider) != "" || (strings.TrimSpace(p.ACMEDirectory) != "" && strings.TrimSpace(p.ACMEDirectory) != s.cfg.ACMEDirectory) {
		if err := require(pr, store.ScopeAdmin); err != nil {
			return Domain{}, err
		}
	}
	host, err := NormalizeHost(p.Host)
	if err != nil {
		return Domain{}, err
	}
	a, err := s.dep.ResolveApp(ctx, p.App)
	if err != nil {
		return Domain{}, err
	}
	set := store.DomainSettings{ForceHTTPS: !p.NoForceHTTPS, HSTS: p.HSTS}
	switch strings.ToLower(strings.TrimSpace(p.TLS)) {
	case "", "acme":
		set.TLSMode = store.TLSACME
	case "custom":
		set.TLSMode = store.TLSCustom
	case "off":
		set.TLSMode, set.ForceHTTPS = store.TLSOff, false
	default:
		return Domain{}, fmt.Errorf("%w: --tls must be acme, custom or off", ErrInvalid)
	}
	if set.HSTS && set.TLSMode == store.TLSOff {
		return Domain{}, fmt.Errorf("%w: --hsts needs TLS (acme or custom)", ErrInvalid)
	}
	if set.TLSMode == store.TLSCustom {
		cp, err := checkServerPath("--cert-path", p.CertPath)
		if err != nil {
			return Domain{}, err
		}
		kp, err := checkServerPath("--key-path", p.KeyPath)
		if err != nil {
			return Domain{}, err
		}
		set.TLSCertPath, set.TLSKeyPath = &cp, &kp
		// nginx's master runs as root and reads these: a path anywhere
		// would let the write scope serve (never see, but probe with
		// nginx -t's errors) any key on the server. Inside the app's
		// directory the agent reads them through it without following a
		// link out and nginx serves its copies; anywhere else is an
		// admin's decision.
		if !insideApp(a, cp) || !insideApp(a, kp) {
			if err := require(pr, store.ScopeAdmin); err != nil {
				return Domain{}, fmt.Errorf("%w: --cert-path and --key-path outside the app's directory %s need the admin scope", auth.ErrForbidden, a.DeployPath)
			}
		}
	} else if p.CertPath != "" || p.KeyPath != "" {
		return Domain{}, fmt.Errorf("%w: --cert-path and --key-path go with --tls custom", ErrInvalid)
	}
	if p.ACMEDirectory != "" {
		if set.TLSMode != store.TLSACME {
			return Domain{}, fmt.Errorf("%w: --acme-directory goes with --tls acme", ErrInvalid)
		}
		u, err := checkDirectoryURL(p.ACMEDirectory)
		if err != nil {
			return Domain{}, err
		}
		set.ACMEDirectoryURL = &u
	}
	if p.DNSProvider != "" {
		dp, err := s.st.DNSProviderByName(ctx, strings.TrimSpace(p.DNSProvider))
		if err != nil {
			return Domain{}, err
		}
		set.DNSProviderID = &dp.ID
	}
	if strings.HasPrefix(host, "*.") && set.TLSMode == store.TLSACME && set.DNSProviderID == nil {
		return Domain{}, fmt.Errorf("%w: a wildcard certificate needs DNS-01: give --dns-provider NAME (berth domain dns-provider add), or --tls custom|off", ErrInvalid)
	}
	switch p.RedirectStatus {
	case 0:
		set.RedirectStatus = 301
	case 301, 302, 307, 308:
		set.RedirectStatus = p.RedirectStatus
	default:
		return Domain{}, fmt.Errorf("%w: --redirect-status must be 301, 302, 307 or 308", ErrInvalid)
	}
	if p.RedirectTo != "" {
		target, thost, err := redirectTarget(p.RedirectTo)
		if err != nil {
			return Domain{}, err
		}
		if p.Primary {
			return Domain{}, fmt.Errorf("%w: a redirect-only host cannot be the primary", ErrInvalid)
		}
		if strings.HasPrefix(host, "*.") {
			return Domain{}, fmt.Errorf("%w: a wildcard host cannot redirect", ErrInvalid)
		}
		if err := s.checkLoop(ctx, host, thost); err != nil {
			return Domain{}, err
		}
		set.RedirectTo = &target
	} else if p.RedirectStatus != 0 {
		return Domain{}, fmt.Errorf("%w: --redirect-status goes with --redirect-to", ErrInvalid)
	}
	if cur, err := s.st.DomainByHostname(ctx, host); err == nil {
		owner := "another app"
		if o, err := s.st.App(ctx, cur.AppID); err == nil {
			owner = "app " + o.Name
		}
		return Domain{}, fmt.Errorf("%w: %s is already routed to %s", store.ErrConflict, host, owner)
	} else if !errors.Is(err, store.ErrNotFound) {
		return Domain{}, err
	}
	existing, err := s.st.DomainsForApp(ctx, a.ID)
	if err != nil {
		return Domain{}, err
	}
	// The first host that is not a redirect is the app's primary unless
	// one is named.
	primary := p.Primary
	if !primary && set.RedirectTo == nil && !strings.HasPrefix(host, "*.") {
		has := false
		for _, e := range existing {
			has = has || e.IsPrimary
		}
		primary = !has
	}
	var d store.Domain
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		var err error
		d, err = tx.CreateDomain(ctx, store.CreateDomainParams{AppID: a.ID, Hostname: host, DomainSettings: set})
		if err != nil {
			return err
		}
		if primary {
			if d, err = tx.SetPrimaryDomain(ctx, d.ID); err != nil {
				return err
			}
		}
		if set.TLSMode != store.TLSOff {
			now := s.cfg.Now()
			d, err = tx.SetDomainNextAttempt(ctx, d.ID, &now, false)
		}
		return err
	})
	if errors.Is(err, store.ErrConflict) {
		return Domain{}, fmt.Errorf("%w: %s is already routed", store.ErrConflict, host)
	}
	if err != nil {
		return Domain{}, err
	}
	s.activity(ctx, pr, peer, kind.DomainAdded, d.ID, host, map[string]any{
		"app": a.Name, "tls": string(set.TLSMode), "primary": d.IsPrimary, "redirect_to": set.RedirectTo,
	})
	if err := s.syncSite(ctx, a.ID, &pr.UserID); err != nil {
		return Domain{}, err
	}
	s.poke()
	return s.view(ctx, d), nil
}

// checkLoop refuses a redirect of host to target when following the
// redirects of the hosts Berth routes leads back to host.
func (s *Service) checkLoop(ctx context.Context, host, target string) error {
	cur := target
	for range 16 {
		if cur == host {
			return fmt.Errorf("%w: redirecting %s to %s makes a redirect loop", ErrInvalid, host, target)
		}
		d, err := s.st.DomainByHostname(ctx, cur)
		if errors.Is(err, store.ErrNotFound) || (err == nil && d.RedirectTo == nil) {
			return nil
		}
		if err != nil {
			return err
		}
		_, next, err := redirectTarget(*d.RedirectTo)
		if err != nil {
			return nil
		}
		cur = next
	}
	return fmt.Errorf("%w: redirecting %s to %s makes a redirect chain of more than 16 hosts", ErrInvalid, host, target)
}

// List lists domains (one app's when app is set), soonest expiry first.
func (s *Service) List(ctx context.Context, pr *auth.Principal, app string) ([]Domain, error) {
	if err := require(pr, store.ScopeRead); err != nil {
		return nil, err
	}
	var appID *store.ID
	if strings.TrimSpace(app) != "" {
		a, err := s.dep.ResolveApp(ctx, app)
		if err != nil {
			return nil, err
		}
		appID = &a.ID
	}
	ds, err := s.st.AllDomains(ctx, appID, 0)
	if err != nil {
		return nil, err
	}
	out := make([]Domain, len(ds))
	names := map[store.ID]string{}
	for i, d := range ds {
		v := Domain{Domain: d}
		if n, ok := names[d.AppID]; ok {
			v.App = n
		} else if a, err := s.st.App(ctx, d.AppID); err == nil {
			names[d.AppID], v.App = a.Name, a.Name
		}
		if d.DNSProviderID != nil {
			if p, err := s.st.DNSProviderByID(ctx, *d.DNSProviderID); err == nil {
				v.DNSProvider = p.Name
			}
		}
		out[i] = v
	}
	return out, nil
}

// Get shows one domain by host name.
func (s *Service) Get(ctx context.Context, pr *auth.Principal, host string) (Domain, error) {
	if err := require(pr, store.ScopeRead); err != nil {
		return Domain{}, err
	}
	d, err := s.byHost(ctx, host)
	if err != nil {
		return Domain{}, err
	}
	return s.view(ctx, d), nil
}

func (s *Service) byHost(ctx context.Context, host string) (store.Domain, error) {
	h, err := NormalizeHost(host)
	if err != nil {
		return store.Domain{}, err
	}
	d, err := s.st.DomainByHostname(ctx, h)
	if errors.Is(err, store.ErrNotFound) {
		return store.Domain{}, fmt.Errorf("%w: no domain %s", store.ErrNotFound, h)
	}
	return d, err
}

// Remove removes a domain (write scope): it leaves nginx with the next
// site job and, its row gone, is never renewed again.
func (s *Service) Remove(ctx context.Context, pr *auth.Principal, peer Peer, host string) error {
	if err := require(pr, store.ScopeWrite); err != nil {
		return err
	}
	d, err := s.byHost(ctx, host)
	if err != nil {
		return err
	}
	if err := s.st.DeleteDomain(ctx, d.ID); err != nil {
		return err
	}
	name := ""
	if a, err := s.st.App(ctx, d.AppID); err == nil {
		name = a.Name
	}
	s.activity(ctx, pr, peer, kind.DomainRemoved, d.ID, d.Hostname, map[string]any{"app": name})
	if err := s.syncSite(ctx, d.AppID, &pr.UserID); err != nil {
		return err
	}
	if d.TLSMode == store.TLSACME {
		// After the site job (the app's jobs run in order), the server
		// deletes the certificate and its key: a key left behind would be
		// reused by the host's next owner on that server.
		params, err := protojson.Marshal(&agentv1.AcmeStep{Op: "delete", CertName: certName(d.Hostname), Hosts: []string{d.Hostname}})
		if err != nil {
			return err
		}
		if _, err := s.dep.EnqueueJob(ctx, d.AppID, JobACME, &pr.UserID, params, s.cfg.JobTimeout); err != nil {
			return err
		}
	}
	return nil
}

// Renew asks for a certificate attempt now (write scope): an ACME
// issuance, or a fresh read of a custom certificate.
func (s *Service) Renew(ctx context.Context, pr *auth.Principal, peer Peer, host string) (Domain, error) {
	if err := require(pr, store.ScopeWrite); err != nil {
		return Domain{}, err
	}
	d, err := s.byHost(ctx, host)
	if err != nil {
		return Domain{}, err
	}
	if d.TLSMode == store.TLSOff {
		return Domain{}, fmt.Errorf("%w: %s has TLS off: there is no certificate to renew", store.ErrWrongState, d.Hostname)
	}
	if d.TLSStatus == store.TLSIssuing {
		// An attempt is under way (or its controller died and its lease
		// brings it back): a second order beside it would only race it.
		return s.view(ctx, d), nil
	}
	now := s.cfg.Now()
	// Not sooner than the retry base after the last attempt: renew in a
	// loop would otherwise be an ACME order per call, spending the CA's
	// rate limits that all the install's domains share.
	at := now
	if d.TLSLastAttemptAt != nil {
		if earliest := d.TLSLastAttemptAt.Add(s.cfg.RetryBase); earliest.After(at) {
			at = earliest
		}
	}
	if d, err = s.st.SetDomainNextAttempt(ctx, d.ID, &at, true); err != nil {
		return Domain{}, err
	}
	s.activity(ctx, pr, peer, kind.DomainRenewRequested, d.ID, d.Hostname, nil)
	s.poke()
	return s.view(ctx, d), nil
}

// Watch calls send with the domain now and whenever it changes, until a
// certificate attempt that ended after since is recorded (or the domain
// has TLS off, or is removed), or ctx ends. It polls: a domain changes a
// few times per attempt.
func (s *Service) Watch(ctx context.Context, pr *auth.Principal, host string, since time.Time, send func(Domain) error) error {
	d, err := s.Get(ctx, pr, host)
	if err != nil {
		return err
	}
	last := time.Time{}
	for {
		cur, err := s.st.Domain(ctx, d.ID)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("%w: %s was removed", store.ErrNotFound, d.Hostname)
		}
		if err != nil {
			return err
		}
		if !cur.UpdatedAt.Equal(last) {
			last = cur.UpdatedAt
			if err := send(s.view(ctx, cur)); err != nil {
				return err
			}
		}
		ended := cur.TLSLastAttemptAt != nil && !cur.TLSLastAttemptAt.Before(since) && cur.TLSStatus != store.TLSIssuing
		if cur.TLSMode == store.TLSOff || ended {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// RoutingParams changes where an app's site forwards; nil leaves a field.
type RoutingParams struct {
	App        string
	Upstream   *string // "" goes back to the app's upstream port
	StaticRoot *string // "" clears it
}

// SetAppRouting changes an app's upstream or static root (deploy scope:
// it decides what answers the app's public names) and syncs its site.
func (s *Service) SetAppRouting(ctx context.Context, pr *auth.Principal, peer Peer, p RoutingParams) (store.App, error) {
	if err := require(pr, store.ScopeDeploy); err != nil {
		return store.App{}, err
	}
	a, err := s.dep.ResolveApp(ctx, p.App)
	if err != nil {
		return store.App{}, err
	}
	up, root := a.UpstreamURL, a.StaticRoot
	if p.Upstream != nil {
		up = nil
		if strings.TrimSpace(*p.Upstream) != "" {
			u, err := checkUpstream(*p.Upstream)
			if err != nil {
				return store.App{}, err
			}
			up = &u
		}
	}
	if p.StaticRoot != nil {
		root = nil
		if strings.TrimSpace(*p.StaticRoot) != "" {
			r, err := checkStaticRoot(*p.StaticRoot)
			if err != nil {
				return store.App{}, err
			}
			root = &r
		}
	}
	if up != nil && root != nil {
		return store.App{}, fmt.Errorf("%w: an app has an upstream or a static root, not both", ErrInvalid)
	}
	a, err = s.st.SetAppRouting(ctx, a.ID, up, root)
	if err != nil {
		return store.App{}, err
	}
	p2 := store.CreateActivityParams{
		Action: kind.AppRoutingChanged, SubjectType: "app", SubjectID: &a.ID, SubjectName: a.Name,
		Changes: map[string]any{"upstream": up, "static_root": root}, IPAddress: peer.IP, UserAgent: peer.UserAgent,
	}
	p2.ActorType, p2.Actor, p2.UserID = pr.Actor()
	if _, err := s.st.CreateActivity(ctx, p2); err != nil {
		s.log.Error("record activity", "action", kind.AppRoutingChanged, "err", err)
	}
	if ds, err := s.st.DomainsForApp(ctx, a.ID); err == nil && len(ds) > 0 {
		if err := s.syncSite(ctx, a.ID, &pr.UserID); err != nil {
			return store.App{}, err
		}
	}
	return a, nil
}

// syncSite queues a site job for the app unless one is queued already
// (it is built when sent, so it will carry this change too).
func (s *Service) syncSite(ctx context.Context, appID store.ID, userID *store.ID) error {
	queued, err := s.st.ListDeployments(ctx, store.DeploymentFilter{AppID: &appID, Status: store.DeploymentQueued, Limit: 100})
	if err != nil {
		return err
	}
	for _, q := range queued {
		if q.Kind == JobSite {
			return nil
		}
	}
	_, err = s.dep.EnqueueJob(ctx, appID, JobSite, userID, nil, s.cfg.JobTimeout)
	return err
}

// insideApp tells whether p (clean, absolute) is a file below the app's
// deploy path.
func insideApp(a store.App, p string) bool {
	root := strings.TrimSuffix(a.DeployPath, "/")
	return root != "" && strings.HasPrefix(a.DeployPath, "/") && strings.HasPrefix(p, root+"/")
}
