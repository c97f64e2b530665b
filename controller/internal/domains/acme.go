package domains

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/go-acme/lego/v5/acme"
	"github.com/go-acme/lego/v5/acme/api"
	"github.com/go-acme/lego/v5/certificate"
	"github.com/go-acme/lego/v5/challenge"
	"github.com/go-acme/lego/v5/lego"
	"github.com/go-acme/lego/v5/registration"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/notify"
	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// Event kinds this capability publishes.
const (
	KindRenewalFailed = "certificate.renewal_failed"
	KindExpiring      = "certificate.expiring"
	KindExpired       = "certificate.expired"
)

// lease is how long a claimed domain is this controller's: past it, a
// controller that died mid-attempt leaves the domain to another.
const lease = 30 * time.Minute

func newACMEHTTPClient(pool *x509.CertPool) *http.Client {
	return &http.Client{
		Timeout: 2 * time.Minute,
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   30 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			TLSClientConfig:       &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		},
	}
}

// Run is the certificate loop: it marks expired certificates, raises
// expiry warnings and runs the attempts that are due, until ctx ends.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(s.cfg.Tick)
	defer t.Stop()
	for {
		s.Tick(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.wake:
		}
	}
}

// Tick does one round of the loop; attempts it starts run on.
func (s *Service) Tick(ctx context.Context) {
	now := s.cfg.Now()
	if exp, err := s.st.ExpireDomainCertificates(ctx, now); err != nil {
		s.logErr(ctx, "expire certificates", err)
	} else {
		for _, d := range exp {
			s.publish(ctx, d, KindExpired, notify.Critical, "The certificate of "+d.Hostname+" expired",
				"It expired at "+fmtTime(d.TLSExpiresAt)+"."+lastErrText(d))
		}
	}
	if warn, err := s.st.ClaimDomainsExpiring(ctx, now, s.cfg.ExpiryWarning); err != nil {
		s.logErr(ctx, "expiring certificates", err)
	} else {
		for _, d := range warn {
			s.publish(ctx, d, KindExpiring, notify.Warning, "The certificate of "+d.Hostname+" expires soon",
				"It expires at "+fmtTime(d.TLSExpiresAt)+" and has not been renewed."+lastErrText(d))
		}
	}
	s.reconcileSites(ctx)
	free := cap(s.sem) - len(s.sem)
	if free <= 0 {
		return
	}
	s.claimARIPolls(ctx, now, free)
	free = cap(s.sem) - len(s.sem)
	if free <= 0 {
		return
	}
	due, err := s.st.ClaimDomainsTLSDue(ctx, now, now.Add(lease), free)
	if err != nil {
		s.logErr(ctx, "claim due certificates", err)
		return
	}
	for _, d := range due {
		s.inPool("certificate attempt", d, func() { s.attempt(ctx, d) })
	}
}

// inPool runs fn for d in a goroutine holding a slot of the attempt pool
// (waiting for one), so attempts and renewal-information polls together
// stay within its size; a panic is logged, not fatal.
func (s *Service) inPool(what string, d store.Domain, fn func()) {
	s.sem <- struct{}{}
	go func() {
		defer func() { <-s.sem }()
		defer func() {
			if r := recover(); r != nil {
				s.log.Error(what+" panicked", "domain", d.Hostname, "panic", r)
			}
		}()
		fn()
	}()
}

func (s *Service) logErr(ctx context.Context, what string, err error) {
	if ctx.Err() == nil {
		s.log.Error(what, "err", err)
	}
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "an unknown time"
	}
	return t.UTC().Format(time.RFC3339)
}

func lastErrText(d store.Domain) string {
	if d.TLSLastError == nil {
		return ""
	}
	return "\nLast error: " + *d.TLSLastError
}

func (s *Service) publish(ctx context.Context, d store.Domain, k string, lvl notify.Level, title, body string) {
	s.publishIn(ctx, s.st, d, k, lvl, title, body)
}

// publishIn publishes in tx (the transaction of the change it reports).
func (s *Service) publishIn(ctx context.Context, tx *store.Store, d store.Domain, k string, lvl notify.Level, title, body string) {
	id := d.AppID
	srv := d.ServerID
	if _, err := notify.Publish(ctx, tx, notify.Event{
		Kind: k, Level: lvl, Title: title, Body: body, AppID: &id, ServerID: &srv,
		Link: "/domains/" + d.Hostname, DedupeKey: k + ":" + d.ID.String(),
	}); err != nil {
		s.log.Error("publish", "kind", k, "domain", d.Hostname, "err", err)
	}
}

// attempt runs one claimed domain's due work: an ACME issuance or
// renewal, or a fresh read of a custom certificate.
func (s *Service) attempt(ctx context.Context, d store.Domain) {
	ctx, cancel := context.WithTimeout(ctx, lease-time.Minute)
	defer cancel()
	switch d.TLSMode {
	case store.TLSCustom:
		s.inspect(ctx, d)
	case store.TLSACME:
		s.issue(ctx, d)
	}
}

// inspect reads a custom certificate on the server.
func (s *Service) inspect(ctx context.Context, d store.Domain) {
	a, err := s.st.App(ctx, d.AppID)
	if err != nil {
		return
	}
	var cert *agentv1.CertInfo
	st := &agentv1.AcmeStep{Op: "inspect", CertPath: deref(d.TLSCertPath), Hosts: []string{d.Hostname}}
	if insideApp(a, st.CertPath) && insideApp(a, deref(d.TLSKeyPath)) {
		st.ConfineRoot = path.Clean(a.DeployPath)
	}
	res, err := s.step(ctx, a, st)
	if err == nil {
		cert, err = res.cert()
	}
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if _, err := s.recordCustom(ctx, s.st, d, cert, msg); err != nil {
		s.logErr(ctx, "record custom certificate", err)
		return
	}
	// A custom certificate replaced on the server (renewed by another
	// tool) is served only once nginx reloads, and a confined one only
	// once the agent copies it again: both happen in a site job.
	if cert != nil && d.TLSSerial != nil && *d.TLSSerial != truncate(cert.GetSerialHex(), 100) {
		if err := s.syncSite(ctx, a.ID, nil); err != nil {
			s.logErr(ctx, "queue the site job of a replaced custom certificate", err)
		}
	}
}

// issue obtains a certificate for d from its CA and installs it, or
// records the failure with its backoff.
func (s *Service) issue(ctx context.Context, d store.Domain) {
	now := s.cfg.Now()
	leaseUntil := now.Add(lease)
	if _, err := s.st.SetDomainTLS(ctx, d.ID, store.DomainTLSReport{Status: store.TLSIssuing, NextAttemptAt: &leaseUntil, LastError: d.TLSLastError}); err != nil {
		s.logErr(ctx, "mark issuing", err)
		return
	}
	out, err := s.obtain(ctx, d)
	if errors.Is(err, store.ErrNotFound) {
		return // removed meanwhile: nothing to record, nothing to renew
	}
	if err != nil {
		s.failed(ctx, d, err)
		return
	}
	var done store.Domain
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		var err error
		if done, err = tx.SetDomainTLSAttempt(ctx, d.ID, out); err != nil {
			return err // not found: removed while it was issued
		}
		s.systemActivity(ctx, tx, kind.DomainCertIssued, d.ID, d.Hostname, map[string]any{
			"issuer": deref(out.Issuer), "serial": deref(out.Serial), "expires_at": fmtTime(out.ExpiresAt), "next_attempt_at": fmtTime(out.NextAttemptAt),
		})
		return nil
	})
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.logErr(ctx, "record certificate", err)
		}
		return
	}
	s.log.Info("certificate installed", "domain", d.Hostname, "expires_at", fmtTime(out.ExpiresAt), "next_attempt_at", fmtTime(out.NextAttemptAt))
	// The site now serves HTTPS with it (or reloads nginx for the new one).
	if err := s.syncSite(ctx, done.AppID, nil); err != nil {
		s.logErr(ctx, "sync site after issuance", err)
	}
}

// failed records a failed attempt: tls_status failed (expired once past
// the certificate's expiry), the error, the next try after a backoff that
// doubles with each failure in a row, and certificate.renewal_failed.
func (s *Service) failed(ctx context.Context, d store.Domain, cause error) {
	now := s.cfg.Now()
	n := d.TLSFailures + 1
	wait := s.cfg.RetryBase
	for i := 1; i < n && wait < s.cfg.RetryMax; i++ {
		wait *= 2
	}
	wait = min(wait, s.cfg.RetryMax)
	// Never sleep past the moment an expiring certificate still could be
	// replaced: keep at least four tries in what is left of its life.
	if d.TLSExpiresAt != nil {
		if left := d.TLSExpiresAt.Sub(now) / 4; left > 0 && left < wait {
			wait = max(left, s.cfg.RetryBase)
		}
	}
	next := now.Add(wait)
	msg := truncate(cause.Error(), 2000)
	st := store.TLSFailed
	if d.TLSExpiresAt != nil && !d.TLSExpiresAt.After(now) {
		st = store.TLSExpired
	}
	a := store.TLSAttempt{
		Status: st, Issuer: d.TLSIssuer, NotBefore: d.TLSNotBefore, ExpiresAt: d.TLSExpiresAt, LastAttemptAt: &now,
		NextAttemptAt: &next, LastError: &msg, Certificate: d.TLSCertificate, Serial: d.TLSSerial, Failures: n,
		ARIWindowStart: d.TLSARIWindowStart, ARIWindowEnd: d.TLSARIWindowEnd, ARINextPollAt: d.TLSARINextPollAt,
	}
	what := "issued"
	if d.TLSSerial != nil {
		what = "renewed"
	}
	d.TLSLastError = &msg
	// The record, its audit entry and the notification commit together:
	// a domain removed meanwhile gets none of them (its row is gone, the
	// update finds nothing), so nothing is said about it after removal.
	err := s.st.InTx(ctx, func(tx *store.Store) error {
		if _, err := tx.SetDomainTLSAttempt(ctx, d.ID, a); err != nil {
			return err
		}
		s.systemActivity(ctx, tx, kind.DomainCertFailed, d.ID, d.Hostname, map[string]any{"error": msg, "failures": n, "next_attempt_at": fmtTime(&next)})
		s.publishIn(ctx, tx, d, KindRenewalFailed, notify.Critical, "The certificate of "+d.Hostname+" could not be "+what,
			msg+"\nNext try at "+fmtTime(&next)+".")
		return nil
	})
	if err != nil {
		s.logErr(ctx, "record certificate failure", err)
		return
	}
	s.log.Warn("certificate attempt failed", "domain", d.Hostname, "failures", n, "next_attempt_at", next, "err", msg)
}

// obtain runs the ACME order for d with a CSR from its server and installs
// the certificate there, returning what to record.
func (s *Service) obtain(ctx context.Context, d store.Domain) (store.TLSAttempt, error) {
	a, err := s.st.App(ctx, d.AppID)
	if err != nil {
		return store.TLSAttempt{}, err
	}
	dir := s.cfg.ACMEDirectory
	if d.ACMEDirectoryURL != nil {
		dir = *d.ACMEDirectoryURL
	}
	client, err := s.client(ctx, dir)
	if err != nil {
		return store.TLSAttempt{}, err
	}
	name := certName(d.Hostname)
	res, err := s.step(ctx, a, &agentv1.AcmeStep{Op: "csr", CertName: name, Hosts: []string{d.Hostname}})
	if err != nil {
		return store.TLSAttempt{}, fmt.Errorf("certificate request from the server: %w", err)
	}
	csr, err := checkCSR(res.CSR, d.Hostname)
	if err != nil {
		return store.TLSAttempt{}, err
	}
	if d.DNSProviderID != nil {
		p, opts, err := s.dnsProvider(ctx, *d.DNSProviderID)
		if err != nil {
			return store.TLSAttempt{}, err
		}
		if err := client.Challenge.SetDNS01Provider(p, opts...); err != nil {
			return store.TLSAttempt{}, err
		}
	} else if err := client.Challenge.SetHTTP01Provider(http01{s: s, app: a}); err != nil {
		return store.TLSAttempt{}, err
	}
	req := certificate.ObtainForCSRRequest{CSR: csr, Bundle: true}
	if d.TLSCertificate != nil && d.TLSARIWindowStart != nil {
		// The CA offers ARI: say which certificate this one replaces.
		if old, err := leafOf([]byte(*d.TLSCertificate)); err == nil {
			if id, err := api.MakeARICertID(old); err == nil {
				req.ReplacesCertID = id
			}
		}
	}
	cert, err := client.Certificate.ObtainForCSR(ctx, req)
	if err != nil && req.ReplacesCertID != "" {
		// A CA may refuse "replaces" (already replaced, unknown): the new
		// certificate matters more than the hint.
		req.ReplacesCertID = ""
		cert, err = client.Certificate.ObtainForCSR(ctx, req)
	}
	if err != nil {
		return store.TLSAttempt{}, fmt.Errorf("acme: %w", err)
	}
	leaf, err := leafOf(cert.Certificate)
	if err != nil {
		return store.TLSAttempt{}, err
	}
	if _, err := s.step(ctx, a, &agentv1.AcmeStep{Op: "install", CertName: name, Hosts: []string{d.Hostname}, ChainPem: cert.Certificate}); err != nil {
		return store.TLSAttempt{}, fmt.Errorf("installing the certificate on the server: %w", err)
	}
	now := s.cfg.Now()
	issuer := leaf.Issuer.CommonName
	if issuer == "" {
		issuer = leaf.Issuer.String()
	}
	serial := hex.EncodeToString(leaf.SerialNumber.Bytes())
	chain := string(cert.Certificate)
	nb, na := leaf.NotBefore, leaf.NotAfter
	out := store.TLSAttempt{
		Status: store.TLSActive, Issuer: &issuer, NotBefore: &nb, ExpiresAt: &na, LastAttemptAt: &now,
		Certificate: &chain, Serial: &serial,
	}
	next := nb.Add(na.Sub(nb) * 2 / 3)
	if info, err := client.Certificate.GetRenewalInfo(ctx, leaf); err == nil && info.ExtendedRenewalInfo != nil {
		ws, we := info.SuggestedWindow.Start, info.SuggestedWindow.End
		out.ARIWindowStart, out.ARIWindowEnd = &ws, &we
		if at := info.ShouldRenewAt(now, na.Sub(now)); at != nil {
			next = *at
		}
		// Asked again on the CA's schedule: a window moved earlier (a
		// mass revocation) is heard before the renewal this one sets.
		poll := now.Add(s.ariPollAfter(info.RetryAfter))
		out.ARINextPollAt = &poll
	} else if err != nil && !errors.Is(err, api.ErrNoARI) {
		s.log.Info("renewal information not available; renewing at two thirds of the lifetime", "domain", d.Hostname, "err", err)
	}
	out.NextAttemptAt = &next
	return out, nil
}

// checkCSR parses the server's certificate request and accepts it only
// when it asks for exactly host. lego orders every name a CSR holds (its
// common name and IP addresses as well as its DNS names), and the
// controller solves DNS-01 for whatever is ordered, so a server (or
// whoever holds its agent key) could otherwise add another app's host in
// the common name and get a certificate for it, its key on this server.
func checkCSR(raw []byte, host string) (*x509.CertificateRequest, error) {
	blk, _ := pem.Decode(raw)
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("the server returned no PEM certificate request")
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil || csr.CheckSignature() != nil {
		return nil, errors.New("the server returned an invalid certificate request")
	}
	if !slices.Equal(csr.DNSNames, []string{host}) {
		return nil, fmt.Errorf("the server's certificate request names %q, not %s", truncate(strings.Join(csr.DNSNames, ","), 300), host)
	}
	if cn := csr.Subject.CommonName; cn != "" && cn != host {
		return nil, fmt.Errorf("the server's certificate request has common name %q, not %s", truncate(cn, 100), host)
	}
	if len(csr.IPAddresses) > 0 || len(csr.EmailAddresses) > 0 || len(csr.URIs) > 0 {
		return nil, errors.New("the server's certificate request holds IP addresses, email addresses or URIs besides its host name")
	}
	return csr, nil
}

func leafOf(chain []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(chain)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("the CA returned no PEM certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}

// stepResult is what an acme job returned.
type stepResult struct {
	CSR     []byte
	rawCert json.RawMessage
}

func (r stepResult) cert() (*agentv1.CertInfo, error) {
	if r.rawCert == nil {
		return nil, errors.New("the server reported no certificate")
	}
	c := &agentv1.CertInfo{}
	if err := protojson.Unmarshal(r.rawCert, c); err != nil {
		return nil, err
	}
	return c, nil
}

// step runs one acme job on the app's server and waits for its end.
func (s *Service) step(ctx context.Context, a store.App, st *agentv1.AcmeStep) (stepResult, error) {
	params, err := protojson.Marshal(st)
	if err != nil {
		return stepResult{}, err
	}
	j, err := s.dep.EnqueueJob(ctx, a.ID, JobACME, nil, params, s.cfg.JobTimeout)
	if err != nil {
		return stepResult{}, err
	}
	done, err := s.dep.WaitJob(ctx, j.ID)
	if err != nil {
		return stepResult{}, err
	}
	if done.Status != store.DeploymentSucceeded {
		reason := string(done.Status)
		if done.FailureReason != nil {
			reason = *done.FailureReason
		}
		return stepResult{}, fmt.Errorf("%s on the server: %s", st.GetOp(), reason)
	}
	_, raw, err := s.st.DeploymentData(ctx, j.ID)
	if err != nil {
		return stepResult{}, err
	}
	var r acmeResult
	if raw != nil {
		if err := json.Unmarshal(raw, &r); err != nil {
			return stepResult{}, err
		}
	}
	return stepResult{CSR: r.CSR, rawCert: r.Cert}, nil
}

// http01 answers HTTP-01 through the app's server: the agent writes the
// answer where nginx serves /.well-known/acme-challenge/, and the CA is
// told to look only once the agent said it is in place.
type http01 struct {
	s   *Service
	app store.App
}

var _ challenge.Provider = http01{}

func (h http01) Present(ctx context.Context, domain, token, keyAuth string) error {
	_, err := h.s.step(ctx, h.app, &agentv1.AcmeStep{Op: "present", Hosts: []string{domain}, Token: token, KeyAuth: keyAuth})
	return err
}

func (h http01) CleanUp(ctx context.Context, domain, token, keyAuth string) error {
	_, err := h.s.step(ctx, h.app, &agentv1.AcmeStep{Op: "cleanup", Hosts: []string{domain}, Token: token})
	return err
}

// user is the ACME account as lego sees it.
type user struct {
	email string
	key   crypto.Signer
	reg   *acme.ExtendedAccount
}

func (u *user) GetEmail() string                       { return u.email }
func (u *user) GetRegistration() *acme.ExtendedAccount { return u.reg }
func (u *user) GetPrivateKey() crypto.Signer           { return u.key }

var _ registration.User = (*user)(nil)

// client returns a lego client for a directory with the install's
// account there, created (key sealed in PostgreSQL) and registered on
// first use.
func (s *Service) client(ctx context.Context, dir string) (*lego.Client, error) {
	email := s.cfg.ACMEEmail
	acct, err := s.st.ACMEAccountFor(ctx, dir, email)
	if errors.Is(err, store.ErrNotFound) {
		k, kerr := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if kerr != nil {
			return nil, kerr
		}
		der, kerr := x509.MarshalPKCS8PrivateKey(k)
		if kerr != nil {
			return nil, kerr
		}
		acct, err = s.st.CreateACMEAccount(ctx, dir, email, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	}
	if err != nil {
		return nil, err
	}
	keyPEM, err := s.st.ACMEAccountKey(acct)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(keyPEM)
	if blk == nil {
		return nil, errors.New("acme account key: not PEM")
	}
	parsed, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("acme account key: %w", err)
	}
	signer, ok := parsed.(crypto.Signer)
	if !ok {
		return nil, errors.New("acme account key: not a signing key")
	}
	u := &user{email: email, key: signer}
	if acct.RegistrationURI != nil {
		u.reg = &acme.ExtendedAccount{Location: *acct.RegistrationURI}
	}
	cfg := lego.NewConfig(u)
	// A copy per client: lego wraps the client's Transport in place
	// (sender.NewDoer), which on a shared client races between attempts
	// running at once and stacks one more wrapper per client made.
	hc := *s.http
	cfg.CADirURL, cfg.HTTPClient, cfg.UserAgent = dir, &hc, "berth"
	client, err := lego.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("acme directory %s: %w", dir, err)
	}
	if u.reg == nil {
		var reg *acme.ExtendedAccount
		if s.cfg.EABKeyID != "" && dir == s.cfg.ACMEDirectory {
			reg, err = client.Registration.RegisterWithExternalAccountBinding(ctx, registration.RegisterEABOptions{
				TermsOfServiceAgreed: true, Kid: s.cfg.EABKeyID, HmacEncoded: s.cfg.EABHMAC,
			})
		} else {
			reg, err = client.Registration.Register(ctx, registration.RegisterOptions{TermsOfServiceAgreed: true})
		}
		if err != nil {
			return nil, fmt.Errorf("acme account registration at %s: %w", dir, err)
		}
		if err := s.st.SetACMEAccountRegistration(ctx, acct.ID, reg.Location); err != nil {
			return nil, err
		}
		u.reg = reg
		// A client made before registration signs with a JWK; the next
		// one uses the account URL (kid) as ACME requires.
		cfg := lego.NewConfig(u)
		hc := *s.http
		cfg.CADirURL, cfg.HTTPClient, cfg.UserAgent = dir, &hc, "berth"
		if client, err = lego.NewClient(cfg); err != nil {
			return nil, err
		}
	}
	return client, nil
}
