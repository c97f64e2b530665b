package domains

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/notify"
	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// siteParams is a site job's stored input: the site as first sent, so a
// re-send after a reconnect carries the same site, and the domains it
// held, whose status the job's end sets.
type siteParams struct {
	DomainIDs []string        `json:"domain_ids"`
	Site      json.RawMessage `json:"site"`
}

type siteJobs struct{ s *Service }

// BuildJob builds the app's whole site from its domains.
func (h siteJobs) BuildJob(ctx context.Context, a store.App, d store.Deployment, js *agentv1.JobStart) error {
	s := h.s
	params, _, err := s.st.DeploymentData(ctx, d.ID)
	if err != nil {
		return err
	}
	if params != nil {
		var p siteParams
		site := &agentv1.SiteSpec{}
		if err := json.Unmarshal(params, &p); err != nil {
			return fmt.Errorf("site job %s: %w", d.ID, err)
		}
		if err := protojson.Unmarshal(p.Site, site); err != nil {
			return fmt.Errorf("site job %s: %w", d.ID, err)
		}
		js.Site = site
		return nil
	}
	ds, err := s.st.DomainsForApp(ctx, a.ID)
	if err != nil {
		return err
	}
	site, ids := siteSpec(a, ds, s.cfg.Now())
	raw, err := protojson.Marshal(site)
	if err != nil {
		return err
	}
	buf, err := json.Marshal(siteParams{DomainIDs: ids, Site: raw})
	if err != nil {
		return err
	}
	if err := s.st.SetDeploymentParams(ctx, d.ID, buf); err != nil {
		return err
	}
	js.Site = site
	return nil
}

// siteSpec renders what the agent needs of an app's domains. An ACME
// domain without an installed certificate is served over plain HTTP (no
// redirect to an HTTPS server that has no certificate yet), and the site
// job after its issuance turns HTTPS on.
func siteSpec(a store.App, ds []store.Domain, now time.Time) (*agentv1.SiteSpec, []string) {
	site := &agentv1.SiteSpec{}
	switch {
	case a.StaticRoot != nil:
		site.StaticRoot = path.Join(a.DeployPath, "current", *a.StaticRoot)
	case a.UpstreamURL != nil:
		site.Upstream = *a.UpstreamURL
	case a.UpstreamPort > 0:
		site.Upstream = fmt.Sprintf("http://127.0.0.1:%d", a.UpstreamPort)
	}
	// A bare-host redirect goes to HTTPS when its target can answer it:
	// a host of this site with a certificate in place, or a host Berth
	// does not route here (its owner's business).
	secure := map[string]bool{}
	for _, d := range ds {
		secure[d.Hostname] = d.TLSMode == store.TLSCustom || (d.TLSMode == store.TLSACME && d.TLSSerial != nil)
	}
	ids := make([]string, 0, len(ds))
	for _, d := range ds {
		ids = append(ids, d.ID.String())
		sd := &agentv1.SiteDomain{
			Host: d.Hostname, Primary: d.IsPrimary, ForceHttps: d.ForceHTTPS, Hsts: d.HSTS, Tls: string(d.TLSMode),
		}
		if d.RedirectTo != nil {
			sd.RedirectTo, sd.RedirectStatus = *d.RedirectTo, uint32(d.RedirectStatus)
			if !strings.Contains(sd.RedirectTo, "://") {
				scheme := "https"
				if ok, ours := secure[sd.RedirectTo]; ours && !ok {
					scheme = "http"
				}
				sd.RedirectTo = scheme + "://" + sd.RedirectTo
			}
		}
		switch d.TLSMode {
		case store.TLSCustom:
			sd.CertPath, sd.KeyPath = deref(d.TLSCertPath), deref(d.TLSKeyPath)
			if insideApp(a, sd.CertPath) && insideApp(a, sd.KeyPath) {
				sd.ConfineRoot = path.Clean(a.DeployPath)
			}
		case store.TLSACME:
			if d.TLSSerial != nil {
				sd.CertName = certName(d.Hostname)
			} else {
				sd.Tls, sd.ForceHttps, sd.Hsts = string(store.TLSOff), false, false
			}
		}
		site.Domains = append(site.Domains, sd)
	}
	return site, ids
}

// JobEnded records the site's outcome as the status of the domains it
// held, and the custom certificates the agent read.
func (h siteJobs) JobEnded(ctx context.Context, tx *store.Store, d store.Deployment, r *agentv1.JobResult) error {
	s := h.s
	params, _, err := tx.DeploymentData(ctx, d.ID)
	if err != nil || params == nil {
		return err
	}
	var p siteParams
	if err := json.Unmarshal(params, &p); err != nil {
		return nil // a row written by another version: nothing to record
	}
	ids := make([]store.ID, 0, len(p.DomainIDs))
	for _, raw := range p.DomainIDs {
		if id, err := store.ParseID(raw); err == nil {
			ids = append(ids, id)
		}
	}
	status, lastErr := store.DomainActive, (*string)(nil)
	if d.Status != store.DeploymentSucceeded {
		status = store.DomainFailed
		msg := "the site was not applied"
		if d.FailureReason != nil && *d.FailureReason != "" {
			msg = *d.FailureReason
		}
		lastErr = &msg
	}
	updated, err := tx.SetAppDomainsStatus(ctx, d.AppID, ids, status, lastErr)
	if err != nil {
		return err
	}
	if status == store.DomainFailed && len(updated) > 0 {
		name := d.AppID.String()
		var srv *store.ID
		if a, err := tx.App(ctx, d.AppID); err == nil {
			name, srv = a.Name, &a.ServerID
		}
		s.systemActivity(ctx, tx, kind.DomainSiteFailed, updated[0].ID, name, map[string]any{"job": d.ID.String(), "error": *lastErr})
		if _, err := notify.Publish(ctx, tx, notify.Event{
			Kind: "domain.site_failed", Level: notify.Critical, Title: "The nginx site of " + name + " was not applied",
			Body: *lastErr + "\nThe previous configuration stays live.", AppID: &d.AppID, ServerID: srv,
			Link: "/apps/" + d.AppID.String(), DedupeKey: "domain.site_failed:" + d.AppID.String(),
		}); err != nil {
			s.log.Error("publish site failure", "app", name, "err", err)
		}
	}
	if r == nil {
		return nil
	}
	for _, c := range r.GetSiteCerts() {
		dom, err := tx.DomainByHostname(ctx, c.GetHost())
		if err != nil || dom.AppID != d.AppID || dom.TLSMode != store.TLSCustom {
			continue
		}
		if _, err := s.recordCustom(ctx, tx, dom, c.GetCert(), c.GetError()); err != nil {
			return err
		}
	}
	return nil
}

// recordCustom records what the agent read of a custom certificate.
func (s *Service) recordCustom(ctx context.Context, tx *store.Store, d store.Domain, c *agentv1.CertInfo, readErr string) (store.Domain, error) {
	now := s.cfg.Now()
	next := now.Add(s.cfg.CustomCheckEvery)
	a := store.TLSAttempt{LastAttemptAt: &now, NextAttemptAt: &next}
	if readErr != "" || c == nil || c.GetNotAfter() == nil {
		msg := truncate("reading the certificate: "+readErr, 2000)
		a.Status, a.LastError, a.Failures = store.TLSFailed, &msg, d.TLSFailures+1
		return tx.SetDomainTLSAttempt(ctx, d.ID, a)
	}
	nb, na := c.GetNotBefore().AsTime(), c.GetNotAfter().AsTime()
	issuer, serial := truncate(c.GetIssuer(), 500), truncate(c.GetSerialHex(), 100)
	a.Issuer, a.NotBefore, a.ExpiresAt, a.Serial = &issuer, &nb, &na, &serial
	a.Status = store.TLSActive
	if !na.After(now) {
		a.Status = store.TLSExpired
	}
	return tx.SetDomainTLSAttempt(ctx, d.ID, a)
}

// acmeResult is what an acme job returned.
type acmeResult struct {
	CSR  []byte          `json:"csr,omitempty"`
	Cert json.RawMessage `json:"cert,omitempty"`
}

type acmeJobs struct{ s *Service }

// BuildJob sends the step stored with the job.
func (h acmeJobs) BuildJob(ctx context.Context, a store.App, d store.Deployment, js *agentv1.JobStart) error {
	params, _, err := h.s.st.DeploymentData(ctx, d.ID)
	if err != nil {
		return err
	}
	step := &agentv1.AcmeStep{}
	if err := protojson.Unmarshal(params, step); err != nil {
		return fmt.Errorf("acme job %s: %w", d.ID, err)
	}
	js.Acme = step
	return nil
}

// JobEnded keeps what the agent returned for the issuance waiting on it.
func (h acmeJobs) JobEnded(ctx context.Context, tx *store.Store, d store.Deployment, r *agentv1.JobResult) error {
	if r == nil || d.Status != store.DeploymentSucceeded {
		return nil
	}
	res := acmeResult{CSR: r.GetCsrPem()}
	if len(res.CSR) > 64<<10 {
		return fmt.Errorf("%w: a CSR of %d bytes", ErrInvalid, len(res.CSR))
	}
	if c := r.GetCert(); c != nil {
		raw, err := protojson.Marshal(c)
		if err != nil {
			return err
		}
		res.Cert = raw
	}
	buf, err := json.Marshal(res)
	if err != nil {
		return err
	}
	return tx.SetDeploymentResultData(ctx, d.ID, buf)
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
