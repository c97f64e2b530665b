package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/domains"
	"github.com/berthhq/berth/controller/internal/store"
)

// The Domains pages: an app's Domains tab (its hosts with routing and
// certificate status, and for writers the forms to add, renew and remove)
// and the all-domains page, soonest expiry first. Every call goes through
// domains.Service with the viewer's principal: the same authorisation
// (read to look, write to change), validation and audit as the gRPC
// DomainService.

// domainRow is one domain as the pages show it.
type domainRow struct {
	domains.Domain
	// DaysLeft is whole days until the certificate expires (negative once
	// expired); meaningful only when TLSExpiresAt is set.
	DaysLeft int
	// Expiry is DaysLeft in words ("in 40 days", "expired 2 days ago").
	Expiry string
	// Soon: within the expiry warning (14 days) or past it.
	Soon bool
}

// expiryWarning mirrors the domains service's certificate.expiring
// threshold, so the page marks what the inbox warns about.
const expiryWarning = 14 * 24 * time.Hour

func domainRows(ds []domains.Domain, now time.Time) []domainRow {
	out := make([]domainRow, len(ds))
	for i, d := range ds {
		r := domainRow{Domain: d}
		if d.TLSExpiresAt != nil {
			left := d.TLSExpiresAt.Sub(now)
			r.Soon = left < expiryWarning
			r.DaysLeft, r.Expiry = daysLeft(left)
		}
		out[i] = r
	}
	return out
}

// daysLeft counts whole days, rounding toward "less time left": a
// certificate with 13.9 days left has 13 days, one expired an hour ago
// expired 0 days ago, so the page never promises more time than there is.
func daysLeft(left time.Duration) (int, string) {
	if left >= 0 {
		n := int(left / (24 * time.Hour))
		switch n {
		case 0:
			return 0, "expires today"
		case 1:
			return 1, "1 day left"
		}
		return n, strconv.Itoa(n) + " days left"
	}
	n := int(-left / (24 * time.Hour))
	switch n {
	case 0:
		return 0, "expired today"
	case 1:
		return -1, "expired 1 day ago"
	}
	return -n, "expired " + strconv.Itoa(n) + " days ago"
}

// domainFlags names the form's fields where the service's messages name
// the CLI's flags, so a person at the form is told what to change there.
var domainFlags = strings.NewReplacer(
	"--redirect-to", "Redirect to",
	"--redirect-status", "Redirect status",
	"--tls custom|off", "TLS custom or off",
	"--tls", "TLS",
	"--cert-path", "Certificate path",
	"--key-path", "Key path",
	"--acme-directory", "ACME directory",
	"--hsts", "HSTS",
	"--dns-provider NAME (berth domain dns-provider add)", "a DNS provider (berth domain dns-provider add)",
	"--no-force-https", "Force HTTPS",
)

func domainMessage(err error) string {
	return domainFlags.Replace(publicMessage(err))
}

func (s *Server) domainList(w http.ResponseWriter, r *http.Request, v *viewer) {
	ds, err := s.d.Domains.List(r.Context(), v.Principal, "")
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	s.render(w, r, "domains", view{Title: "Domains", Nav: "domains", User: v, Data: map[string]any{
		"Domains": domainRows(ds, s.cfg.Now()),
	}})
}

func (s *Server) appDomains(w http.ResponseWriter, r *http.Request, v *viewer) {
	s.appDomainsView(w, r, v, 0, "")
}

// appDomainsView renders an app's Domains tab; after a refused add, r's
// form is rendered back so nothing typed is lost.
func (s *Server) appDomainsView(w http.ResponseWriter, r *http.Request, v *viewer, status int, errMsg string) {
	av, err := s.d.Deploys.GetApp(r.Context(), v.Principal, r.PathValue("app"))
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	ds, err := s.d.Domains.List(r.Context(), v.Principal, av.ID.String())
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	var providers []domains.DNSProvider
	if v.CanWrite() {
		if providers, err = s.d.Domains.ListDNSProviders(r.Context(), v.Principal); err != nil {
			s.fail(w, r, v, err)
			return
		}
	}
	serves := "its upstream port"
	switch {
	case av.StaticRoot != nil && *av.StaticRoot == ".":
		serves = "static files from current"
	case av.StaticRoot != nil:
		serves = "static files from current/" + *av.StaticRoot
	case av.UpstreamURL != nil:
		serves = *av.UpstreamURL
	case av.UpstreamPort != 0:
		serves = fmt.Sprintf("http://127.0.0.1:%d", av.UpstreamPort)
	}
	s.render(w, r, "app_domains", view{Title: av.Name + " domains", Nav: "apps", User: v, Status: status, Error: errMsg, Form: r.PostForm,
		Data: map[string]any{"App": av, "Domains": domainRows(ds, s.cfg.Now()), "Serves": serves, "Providers": providers}})
}

// domainAdd adds a domain from the tab's form.
func (s *Server) domainAdd(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	f := r.PostForm
	p := domains.AddParams{
		App: r.PathValue("app"), Host: f.Get("host"), Primary: f.Get("primary") != "",
		RedirectTo: strings.TrimSpace(f.Get("redirect_to")), TLS: f.Get("tls"),
		CertPath: strings.TrimSpace(f.Get("cert_path")), KeyPath: strings.TrimSpace(f.Get("key_path")),
		ACMEDirectory: strings.TrimSpace(f.Get("acme_directory")), NoForceHTTPS: f.Get("force_https") == "",
		HSTS: f.Get("hsts") != "", DNSProvider: f.Get("dns_provider"),
	}
	if raw := strings.TrimSpace(f.Get("redirect_status")); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil {
			s.appDomainsView(w, r, v, http.StatusBadRequest, "Redirect status must be 301, 302, 307 or 308.")
			return
		}
		p.RedirectStatus = n
	}
	// The form always sends a redirect status; it means something only
	// with a redirect target (the service refuses it alone).
	if p.RedirectTo == "" {
		p.RedirectStatus = 0
	}
	// Only the fields of the chosen TLS mode count: paths left in the
	// hidden custom fields are not an error when ACME was picked.
	if mode := strings.TrimSpace(f.Get("tls")); mode != "custom" {
		p.CertPath, p.KeyPath = "", ""
	}
	d, err := s.d.Domains.Add(r.Context(), v.Principal, s.peer(r), p)
	if err != nil {
		// A writer refused an option only an admin may use (custom files
		// outside the app's directory, a DNS provider) gets the form back
		// with why; one who may not add at all gets the refusal page.
		st := statusOf(err)
		if st == http.StatusForbidden && auth.Require(v.Principal, store.ScopeWrite) == nil {
			s.appDomainsView(w, r, v, st, domainMessage(err))
			return
		}
		if st == http.StatusBadRequest || st == http.StatusConflict || st == http.StatusNotFound {
			s.appDomainsView(w, r, v, st, domainMessage(err))
			return
		}
		s.fail(w, r, v, err)
		return
	}
	msg := "Domain " + d.Hostname + " added. Its site is applied on the server"
	if d.TLSMode != store.TLSOff {
		msg += "; its certificate follows"
	}
	s.redirect(w, r, "/apps/"+d.App+"/domains", msg+".")
}

// domainBack is where a renew or remove returns: the all-domains page
// when asked from there, else the app's tab.
func domainBack(r *http.Request, app string) string {
	if r.PostFormValue("back") == "all" {
		return "/domains"
	}
	return "/apps/" + app + "/domains"
}

func (s *Server) domainRenew(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	d, err := s.d.Domains.Renew(r.Context(), v.Principal, s.peer(r), r.PathValue("host"))
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	msg := "Renewal of " + d.Hostname + " requested."
	switch {
	case d.TLSStatus == store.TLSIssuing:
		msg = "A certificate attempt for " + d.Hostname + " is under way already."
	case d.TLSMode == store.TLSCustom:
		msg = "The certificate of " + d.Hostname + " is read again from the server."
	}
	s.redirect(w, r, domainBack(r, d.App), msg)
}

func (s *Server) domainRemove(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	// Read first for the app to return to: read is below the write that
	// Remove checks, so a refusal is still Remove's.
	d, err := s.d.Domains.Get(r.Context(), v.Principal, r.PathValue("host"))
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	if err := s.d.Domains.Remove(r.Context(), v.Principal, s.peer(r), d.Hostname); err != nil {
		s.fail(w, r, v, err)
		return
	}
	s.redirect(w, r, domainBack(r, d.App), "Domain "+d.Hostname+" removed: it leaves nginx and is never renewed again.")
}

// domainState is one domain's live state for domains.js: what the agent
// and the certificate loop last recorded, formatted as the page shows it.
type domainState struct {
	Host         string `json:"host"`
	Status       string `json:"status"`
	LastError    string `json:"last_error"`
	TLSStatus    string `json:"tls_status"`
	TLSLastError string `json:"tls_last_error"`
	Expiry       string `json:"expiry"`
	DaysLeft     int    `json:"days_left"`
	Soon         bool   `json:"soon"`
	ExpiresAt    string `json:"expires_at"`
	ExpiresISO   string `json:"expires_iso"`
	Issuer       string `json:"issuer"`
	NextAttempt  string `json:"next_attempt"`
	NextISO      string `json:"next_iso"`
}

// appDomainStates answers the Domains tab's poll while a domain's route or
// certificate is in progress, so its status changes without a reload
// (which would lose what is typed in the add form).
func (s *Server) appDomainStates(w http.ResponseWriter, r *http.Request, v *viewer) {
	av, err := s.d.Deploys.GetApp(r.Context(), v.Principal, r.PathValue("app"))
	if err != nil {
		jsonError(w, statusOf(err), publicMessage(err))
		return
	}
	ds, err := s.d.Domains.List(r.Context(), v.Principal, av.ID.String())
	if err != nil {
		jsonError(w, statusOf(err), publicMessage(err))
		return
	}
	out := make([]domainState, 0, len(ds))
	for _, d := range domainRows(ds, s.cfg.Now()) {
		st := domainState{Host: d.Hostname, Status: string(d.Status), LastError: deref(d.LastError), TLSStatus: string(d.TLSStatus),
			TLSLastError: deref(d.TLSLastError), Issuer: deref(d.TLSIssuer)}
		if d.TLSExpiresAt != nil {
			st.Expiry, st.DaysLeft, st.Soon = d.Expiry, d.DaysLeft, d.Soon
			st.ExpiresAt, st.ExpiresISO = d.TLSExpiresAt.UTC().Format("2006-01-02 15:04:05 UTC"), d.TLSExpiresAt.UTC().Format(time.RFC3339)
		}
		if d.TLSNextAttemptAt != nil {
			st.NextAttempt, st.NextISO = d.TLSNextAttemptAt.UTC().Format("2006-01-02 15:04:05 UTC"), d.TLSNextAttemptAt.UTC().Format(time.RFC3339)
		}
		out = append(out, st)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]any{"domains": out})
}
