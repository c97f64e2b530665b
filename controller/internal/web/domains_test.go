package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/deploys"
	"github.com/berthhq/berth/controller/internal/store"
)

// domainForm is the Domains tab's add form as a browser posts it.
func domainForm(kv ...string) url.Values {
	f := url.Values{"form": {"domain"}, "redirect_status": {"301"}, "tls": {"acme"}, "force_https": {"1"}}
	for i := 0; i+1 < len(kv); i += 2 {
		f.Set(kv[i], kv[i+1])
	}
	return f
}

var domainRowRE = regexp.MustCompile(`<tr data-domain="([^"]+)"`)

// TestDomainPages: the Domains tab and the all-domains page through the
// domains service on a real database: add with normalisation, refusals
// that say what is wrong in the form's words and keep what was typed,
// the reason of a failure, expiry with days left sorted soonest first,
// renew and remove, and a viewer who may look but not change.
func TestDomainPages(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	admin := e.user("admin@example.com", store.RoleAdmin)
	e.user("viewer@example.com", store.RoleViewer)
	if _, err := e.st.CreateServer(ctx, store.CreateServerParams{Name: "web-1"}); err != nil {
		t.Fatal(err)
	}
	pr := &auth.Principal{UserID: admin.ID, Email: admin.Email, Role: store.RoleAdmin, Scopes: []store.Scope{store.ScopeAdmin}}
	for _, name := range []string{"shop", "blog"} {
		if _, err := e.dep.CreateApp(ctx, pr, deploys.Peer{}, deploys.CreateAppParams{Server: "web-1", AppSettings: store.AppSettings{
			Name: name, RepositoryURL: "https://git.example.com/" + name + ".git", DeployPath: "/srv/" + name, RunAsUser: "app"}}); err != nil {
			t.Fatal(err)
		}
	}
	c := e.client()
	c.login("admin@example.com", adminPassword)
	if resp, body := c.get("/apps/shop/domains"); resp.StatusCode != http.StatusOK || !strings.Contains(body, "No domains yet.") || !strings.Contains(body, `id="domain-form"`) {
		t.Fatalf("empty tab: %d\n%s", resp.StatusCode, body)
	}
	if _, body := c.get("/apps/shop"); !strings.Contains(body, `href="/apps/shop/domains"`) {
		t.Fatal("the app page has no Domains tab")
	}
	if resp, _ := c.get("/apps/nope/domains"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown app's tab: %d", resp.StatusCode)
	}

	// Added, normalised, primary, pending until the agent applies it.
	resp, _ := c.post("/apps/shop/domains", domainForm("host", "Shop.Example.TEST.", "tls", "off"))
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/apps/shop/domains" {
		t.Fatalf("add: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	_, body := c.get("/apps/shop/domains")
	if !strings.Contains(body, "Domain shop.example.test added.") || !strings.Contains(body, `<tr data-domain="shop.example.test"`) ||
		!strings.Contains(body, `data-field="primary"`) || !strings.Contains(body, `data-field="status">pending<`) {
		t.Fatalf("after add:\n%s", body)
	}
	d, err := e.dom.Get(ctx, pr, "shop.example.test")
	if err != nil || d.TLSMode != store.TLSOff || d.ForceHTTPS || !d.IsPrimary {
		t.Fatalf("stored: %+v %v", d, err)
	}
	// A redirect-only host with its status.
	if resp, body := c.post("/apps/shop/domains", domainForm("host", "www.example.test", "redirect_to", "shop.example.test", "redirect_status", "308", "tls", "off")); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("add redirect: %d\n%s", resp.StatusCode, body)
	}
	if d, err := e.dom.Get(ctx, pr, "www.example.test"); err != nil || d.RedirectTo == nil || *d.RedirectTo != "shop.example.test" || d.RedirectStatus != 308 || d.IsPrimary {
		t.Fatalf("redirect stored: %+v %v", d, err)
	}

	// Refusals: the form comes back with the message and what was typed.
	refused := []struct {
		app  string
		form url.Values
		code int
		want string
		kept []string
	}{
		{"shop", domainForm("host", "bad_host!.example.test", "redirect_to", "https://shop.example.test/x", "tls", "off"), http.StatusBadRequest,
			"is not a valid host name", []string{`value="bad_host!.example.test"`, `value="https://shop.example.test/x"`, `<option value="off" selected>`}},
		{"blog", domainForm("host", "SHOP.example.test", "tls", "custom", "cert_path", "/etc/ssl/s.pem", "key_path", "/etc/ssl/s.key"), http.StatusConflict,
			"shop.example.test is already routed to app shop", []string{`value="SHOP.example.test"`, `value="/etc/ssl/s.pem"`, `value="/etc/ssl/s.key"`, `<option value="custom" selected>`}},
		{"shop", domainForm("host", "self.example.test", "redirect_to", "https://self.example.test/", "tls", "off"), http.StatusBadRequest,
			"makes a redirect loop", []string{`value="self.example.test"`, `value="https://self.example.test/"`}},
		{"shop", domainForm("host", "c.example.test", "tls", "custom", "cert_path", "relative.pem", "key_path", "/k.pem"), http.StatusBadRequest,
			"Certificate path must be a clean absolute path", []string{`value="relative.pem"`, `value="/k.pem"`}},
		{"shop", domainForm("host", "d.example.test", "redirect_to", "shop.example.test", "redirect_status", "200", "tls", "off"), http.StatusBadRequest,
			"Redirect status must be 301, 302, 307 or 308", []string{`value="d.example.test"`}},
		{"shop", domainForm("host", "*.wild.example.test"), http.StatusBadRequest, "a wildcard certificate needs DNS-01", []string{`value="*.wild.example.test"`}},
	}
	// A loop through two hosts: a -> b stored, then b -> a refused.
	if resp, _ := c.post("/apps/blog/domains", domainForm("host", "a.example.test", "redirect_to", "b.example.test", "tls", "off")); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("a -> b: %d", resp.StatusCode)
	}
	refused = append(refused, struct {
		app  string
		form url.Values
		code int
		want string
		kept []string
	}{"blog", domainForm("host", "b.example.test", "redirect_to", "a.example.test", "tls", "off"), http.StatusBadRequest, "redirecting b.example.test to a.example.test makes a redirect loop", []string{`value="b.example.test"`, `value="a.example.test"`}})
	for _, tc := range refused {
		resp, body := c.post("/apps/"+tc.app+"/domains", tc.form)
		if resp.StatusCode != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("%s %v: %d, want %d with %q\n%s", tc.app, tc.form, resp.StatusCode, tc.code, tc.want, body)
			continue
		}
		if strings.Contains(body, "--") && strings.Contains(body, "--cert-path") {
			t.Errorf("%v: the message names a CLI flag", tc.form)
		}
		for _, k := range tc.kept {
			if !strings.Contains(body, k) {
				t.Errorf("%s %v: the form lost %s", tc.app, tc.form, k)
			}
		}
	}
	if ds, _ := e.dom.List(ctx, pr, ""); len(ds) != 3 {
		t.Fatalf("after the refusals %d domains, want 3: %+v", len(ds), ds)
	}
	// Oversized and malformed forms.
	if resp, _ := c.post("/apps/shop/domains", domainForm("host", strings.Repeat("a", 70<<10))); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized form: %d", resp.StatusCode)
	}
	if resp, _ := c.post("/apps/shop/domains", domainForm("host", strings.Repeat("a", 2000)+".test")); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("overlong host: %d", resp.StatusCode)
	}

	// Certificates: custom ones whose expiry the agent reported, one soon,
	// one later, and a routing failure with its reason.
	now := time.Now()
	expiry := map[string]time.Time{"late.example.test": now.Add(40*24*time.Hour + 12*time.Hour), "soon.example.test": now.Add(5*24*time.Hour + 12*time.Hour),
		"gone.example.test": now.Add(-(2*24*time.Hour + 12*time.Hour))}
	for host, exp := range expiry {
		if resp, body := c.post("/apps/shop/domains", domainForm("host", host, "tls", "custom", "cert_path", "/etc/ssl/"+host+".pem", "key_path", "/etc/ssl/"+host+".key")); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("add %s: %d\n%s", host, resp.StatusCode, body)
		}
		d, err := e.dom.Get(ctx, pr, host)
		if err != nil {
			t.Fatal(err)
		}
		st, issuer := store.TLSActive, "CN=berth test CA"
		if exp.Before(now) {
			st = store.TLSExpired
		}
		if _, err := e.st.SetDomainTLS(ctx, d.ID, store.DomainTLSReport{Status: st, Issuer: &issuer, ExpiresAt: &exp}); err != nil {
			t.Fatal(err)
		}
	}
	soon, _ := e.dom.Get(ctx, pr, "soon.example.test")
	reason := `nginx -t: cannot load certificate "/etc/ssl/soon.example.test.pem"`
	if _, err := e.st.SetDomainStatus(ctx, soon.ID, store.DomainFailed, &reason); err != nil {
		t.Fatal(err)
	}
	_, body = c.get("/domains")
	rows := domainRowRE.FindAllStringSubmatch(body, -1)
	var order []string
	for _, r := range rows {
		order = append(order, r[1])
	}
	want := []string{"gone.example.test", "soon.example.test", "late.example.test", "a.example.test", "shop.example.test", "www.example.test"}
	if strings.Join(order, " ") != strings.Join(want, " ") {
		t.Fatalf("all-domains order %v, want %v", order, want)
	}
	for _, s := range []string{"40 days left", `class="expiry-soon" data-days-left="5">5 days left`, `data-days-left="-2">expired 2 days ago`,
		"CN=berth test CA", `data-field="status">failed<`, "cannot load certificate &#34;/etc/ssl/soon.example.test.pem&#34;", `href="/apps/blog/domains"`} {
		if !strings.Contains(body, s) {
			t.Errorf("all-domains page lacks %q", s)
		}
	}
	if strings.Contains(body, `class="expiry-soon" data-days-left="40"`) {
		t.Error("40 days left is marked as soon")
	}
	if _, body := c.get("/apps/shop/domains"); !strings.Contains(body, "cannot load certificate") || !strings.Contains(body, "5 days left") {
		t.Fatalf("the tab lacks the failure or the expiry:\n%s", body)
	}
	// The tab's live states, as domains.js polls them.
	resp, body = c.get("/apps/shop/domains.json")
	var states struct {
		Domains []struct {
			Host      string `json:"host"`
			Status    string `json:"status"`
			LastError string `json:"last_error"`
			TLSStatus string `json:"tls_status"`
			Expiry    string `json:"expiry"`
			Issuer    string `json:"issuer"`
			DaysLeft  int    `json:"days_left"`
			Soon      bool   `json:"soon"`
		} `json:"domains"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &states) != nil {
		t.Fatalf("domains.json: %d %s", resp.StatusCode, body)
	}
	got := map[string]string{}
	for _, d := range states.Domains {
		got[d.Host] = fmt.Sprintf("%s/%s/%s/%d/%v/%s", d.Status, d.TLSStatus, d.Expiry, d.DaysLeft, d.Soon, d.Issuer)
		if d.Host == "soon.example.test" && !strings.Contains(d.LastError, "cannot load certificate") {
			t.Errorf("domains.json: soon's last error %q", d.LastError)
		}
	}
	if got["soon.example.test"] != "failed/active/5 days left/5/true/CN=berth test CA" || got["late.example.test"] != "pending/active/40 days left/40/false/CN=berth test CA" ||
		got["shop.example.test"] != "pending/disabled//0/false/" || len(got) != 5 {
		t.Fatalf("domains.json states: %v", got)
	}
	if resp, body := c.get("/apps/nope/domains.json"); resp.StatusCode != http.StatusNotFound || !strings.Contains(body, `"error"`) {
		t.Fatalf("domains.json of an unknown app: %d %s", resp.StatusCode, body)
	}

	// A viewer looks, and is refused every change; nothing changes.
	v := e.client()
	v.login("viewer@example.com", adminPassword)
	if resp, body := v.get("/apps/shop/domains"); resp.StatusCode != http.StatusOK || strings.Contains(body, `id="domain-form"`) || strings.Contains(body, "Renew now") {
		t.Fatalf("viewer's tab: %d (form or buttons shown)", resp.StatusCode)
	}
	for path, f := range map[string]url.Values{
		"/apps/shop/domains":                domainForm("host", "viewer.example.test", "tls", "off"),
		"/domains/late.example.test/renew":  {},
		"/domains/late.example.test/remove": {},
	} {
		if resp, body := v.post(path, f); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "Not allowed") {
			t.Errorf("viewer POST %s: %d", path, resp.StatusCode)
		}
	}
	if ds, _ := e.dom.List(ctx, pr, ""); len(ds) != 6 {
		t.Fatalf("after the viewer: %d domains", len(ds))
	}

	// Renew now: a custom certificate is read again; TLS off has nothing.
	resp, _ = c.post("/domains/late.example.test/renew", url.Values{"back": {"all"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/domains" {
		t.Fatalf("renew: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if _, body := c.get("/domains"); !strings.Contains(body, "The certificate of late.example.test is read again from the server.") {
		t.Fatal("renew flash missing")
	}
	if resp, body := c.post("/domains/shop.example.test/renew", url.Values{}); resp.StatusCode != http.StatusConflict || !strings.Contains(body, "TLS off") {
		t.Fatalf("renew with TLS off: %d", resp.StatusCode)
	}
	if resp, _ := c.post("/domains/nope.example.test/renew", url.Values{}); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("renew unknown: %d", resp.StatusCode)
	}
	if resp, _ := c.post("/domains/bad_host!/renew", url.Values{}); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("renew malformed host: %d", resp.StatusCode)
	}

	// An operator (write scope) may name custom certificate files inside
	// the app's directory only: outside it, the form comes back with why
	// and what was typed, and nothing is stored.
	e.user("operator@example.com", store.RoleOperator)
	o := e.client()
	o.login("operator@example.com", adminPassword)
	if resp, body := o.post("/apps/shop/domains", domainForm("host", "out.example.test", "tls", "custom", "cert_path", "/etc/ssl/out.pem", "key_path", "/etc/ssl/private/out.key")); resp.StatusCode != http.StatusForbidden ||
		!strings.Contains(body, "Certificate path and Key path outside the app&#39;s directory /srv/shop need the admin scope") ||
		!strings.Contains(body, `value="/etc/ssl/private/out.key"`) || !strings.Contains(body, `value="out.example.test"`) || !strings.Contains(body, `id="domain-form"`) {
		t.Fatalf("operator, custom files outside the app: %d\n%s", resp.StatusCode, body)
	}
	if _, err := e.dom.Get(ctx, pr, "out.example.test"); err == nil {
		t.Fatal("a refused custom domain was stored")
	}
	if resp, body := o.post("/apps/shop/domains", domainForm("host", "in.example.test", "tls", "custom", "cert_path", "/srv/shop/shared/tls/in.pem", "key_path", "/srv/shop/shared/tls/in.key")); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("operator, custom files inside the app: %d\n%s", resp.StatusCode, body)
	}
	// The admin may name files anywhere.
	if resp, body := c.post("/apps/shop/domains", domainForm("host", "out.example.test", "tls", "custom", "cert_path", "/etc/ssl/out.pem", "key_path", "/etc/ssl/private/out.key")); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("admin, custom files outside the app: %d\n%s", resp.StatusCode, body)
	}

	// Remove: back to the app's tab, gone from both pages and the store.
	resp, _ = c.post("/domains/www.example.test/remove", url.Values{})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/apps/shop/domains" {
		t.Fatalf("remove: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if _, body := c.get("/apps/shop/domains"); strings.Contains(body, `data-domain="www.example.test"`) || !strings.Contains(body, "Domain www.example.test removed") {
		t.Fatal("removed domain still listed, or no flash")
	}
	if _, err := e.dom.Get(ctx, pr, "www.example.test"); err == nil {
		t.Fatal("removed domain still stored")
	}
	if resp, _ := c.post("/domains/www.example.test/remove", url.Values{}); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("remove twice: %d", resp.StatusCode)
	}
	// Every change is in the activity log under the admin.
	acts, err := e.st.ActivityLog(ctx, store.ActivityFilter{SubjectType: "domain", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, a := range acts {
		if a.SubjectType == "domain" && a.Actor == admin.Email {
			seen[a.Action] = true
		}
	}
	if len(seen) < 3 {
		t.Fatalf("domain activity by the admin: %v", seen)
	}
}
