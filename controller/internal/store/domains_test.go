package store_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
)

func TestDomains(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newAppsEnv(t)
	st := e.st
	s1, s2 := rawServer(t, e.db, "web-1"), rawServer(t, e.db, "web-2")
	shop, blog := e.mkApp(t, s1, "shop"), e.mkApp(t, s1, "blog")

	apex, err := st.CreateDomain(ctx, store.CreateDomainParams{AppID: shop.ID, Hostname: "Shop.Example.COM.", IsPrimary: true, DomainSettings: store.DomainSettings{ForceHTTPS: true}})
	if err != nil {
		t.Fatal(err)
	}
	if apex.Hostname != "shop.example.com" || apex.ServerID != s1 || apex.AppID != shop.ID || !apex.IsPrimary || apex.RedirectStatus != 301 ||
		!apex.ForceHTTPS || apex.TLSMode != store.TLSACME || apex.TLSStatus != store.TLSPending || apex.Status != store.DomainPending {
		t.Fatalf("created = %+v", apex)
	}
	www, err := st.CreateDomain(ctx, store.CreateDomainParams{AppID: shop.ID, Hostname: "www.shop.example.com",
		DomainSettings: store.DomainSettings{RedirectTo: ptrTo("https://shop.example.com"), RedirectStatus: 308, TLSMode: store.TLSOff}})
	if err != nil || www.TLSStatus != store.TLSDisabled || www.RedirectStatus != 308 || *www.RedirectTo != "https://shop.example.com" || www.ForceHTTPS {
		t.Fatalf("www = %+v, %v", www, err)
	}
	custom, err := st.CreateDomain(ctx, store.CreateDomainParams{AppID: blog.ID, Hostname: "*.blog.example.com",
		DomainSettings: store.DomainSettings{TLSMode: store.TLSCustom, TLSCertPath: ptrTo("/etc/ssl/blog.pem"), TLSKeyPath: ptrTo("/etc/ssl/blog.key")}})
	if err != nil || custom.TLSStatus != store.TLSPending || *custom.TLSCertPath != "/etc/ssl/blog.pem" {
		t.Fatalf("custom = %+v, %v", custom, err)
	}

	// Lookups.
	if got, err := st.DomainByHostname(ctx, "SHOP.example.com"); err != nil || got.ID != apex.ID {
		t.Fatalf("by hostname = %+v, %v", got, err)
	}
	if got, err := st.Domain(ctx, www.ID); err != nil || got.Hostname != "www.shop.example.com" {
		t.Fatalf("get = %+v, %v", got, err)
	}
	_, err = st.DomainByHostname(ctx, "nope.example.com")
	wantErr(t, "unknown hostname", err, store.ErrNotFound)
	_, err = st.Domain(ctx, store.NewID())
	wantErr(t, "unknown id", err, store.ErrNotFound)

	// Constraints.
	_, err = st.CreateDomain(ctx, store.CreateDomainParams{AppID: blog.ID, Hostname: "shop.example.com"})
	wantErr(t, "duplicate hostname", err, store.ErrConflict)
	_, err = st.CreateDomain(ctx, store.CreateDomainParams{AppID: shop.ID, Hostname: "second.example.com", IsPrimary: true})
	wantErr(t, "second primary", err, store.ErrConflict)
	for _, h := range []string{"bad_host.example.com", "a.*.example.com", "-x.example.com", ""} {
		_, err = st.CreateDomain(ctx, store.CreateDomainParams{AppID: shop.ID, Hostname: h})
		wantErr(t, "hostname "+h, err, store.ErrInvalid)
	}
	_, err = st.CreateDomain(ctx, store.CreateDomainParams{AppID: shop.ID, Hostname: "c.example.com", DomainSettings: store.DomainSettings{TLSMode: store.TLSCustom}})
	wantErr(t, "custom without paths", err, store.ErrInvalid)
	_, err = st.CreateDomain(ctx, store.CreateDomainParams{AppID: shop.ID, Hostname: "r.example.com", DomainSettings: store.DomainSettings{RedirectStatus: 200}})
	wantErr(t, "bad redirect status", err, store.ErrInvalid)
	_, err = st.CreateDomain(ctx, store.CreateDomainParams{AppID: store.NewID(), Hostname: "orphan.example.com"})
	wantErr(t, "unknown app", err, store.ErrMissingParent)

	// Per app (primary first, then by name) and per server (by name).
	api, err := st.CreateDomain(ctx, store.CreateDomainParams{AppID: shop.ID, Hostname: "api.shop.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	hosts := func(ds []store.Domain) []string {
		out := make([]string, len(ds))
		for i, d := range ds {
			out[i] = d.Hostname
		}
		return out
	}
	forApp, err := st.DomainsForApp(ctx, shop.ID)
	if err != nil || !slices.Equal(hosts(forApp), []string{"shop.example.com", "api.shop.example.com", "www.shop.example.com"}) {
		t.Fatalf("for app = %v, %v", hosts(forApp), err)
	}
	forServer, err := st.DomainsForServer(ctx, s1)
	if err != nil || !slices.Equal(hosts(forServer), []string{"*.blog.example.com", "api.shop.example.com", "shop.example.com", "www.shop.example.com"}) {
		t.Fatalf("for server = %v, %v", hosts(forServer), err)
	}
	list := func(f store.DomainFilter) func(*store.ID, int) ([]store.ID, error) {
		return func(before *store.ID, limit int) ([]store.ID, error) {
			f.Before, f.Limit = before, limit
			l, err := st.ListDomains(ctx, f)
			out := make([]store.ID, len(l))
			for i, d := range l {
				out[i] = d.ID
			}
			return out, err
		}
	}
	checkNewestFirst(t, "all domains", pageAll(t, 1, list(store.DomainFilter{})), []store.ID{apex.ID, www.ID, custom.ID, api.ID})
	checkNewestFirst(t, "shop domains", pageAll(t, 2, list(store.DomainFilter{AppID: &shop.ID})), []store.ID{apex.ID, www.ID, api.ID})
	checkNewestFirst(t, "tls disabled", pageAll(t, 2, list(store.DomainFilter{TLSStatus: store.TLSDisabled})), []store.ID{www.ID})

	// Primary moves atomically.
	p, err := st.SetPrimaryDomain(ctx, api.ID)
	if err != nil || !p.IsPrimary {
		t.Fatalf("set primary = %+v, %v", p, err)
	}
	if old, _ := st.Domain(ctx, apex.ID); old.IsPrimary {
		t.Fatal("old primary still primary")
	}
	_, err = st.SetPrimaryDomain(ctx, store.NewID())
	wantErr(t, "primary unknown", err, store.ErrNotFound)

	// Route status from the agent.
	d, err := st.SetDomainStatus(ctx, apex.ID, store.DomainFailed, ptrTo("port 80 in use"))
	if err != nil || d.Status != store.DomainFailed || *d.LastError != "port 80 in use" {
		t.Fatalf("status failed = %+v, %v", d, err)
	}
	if d, err = st.SetDomainStatus(ctx, apex.ID, store.DomainActive, nil); err != nil || d.Status != store.DomainActive || d.LastError != nil {
		t.Fatalf("status active = %+v, %v", d, err)
	}
	_, err = st.SetDomainStatus(ctx, apex.ID, "up", nil)
	wantErr(t, "bad status", err, store.ErrInvalid)

	// Certificates.
	_, err = st.SetDomainTLS(ctx, apex.ID, store.DomainTLSReport{Status: store.TLSActive})
	wantErr(t, "active without expiry", err, store.ErrInvalid)
	_, err = st.SetDomainTLS(ctx, apex.ID, store.DomainTLSReport{Status: store.TLSDisabled})
	wantErr(t, "disabled on acme", err, store.ErrInvalid)
	now := time.Now().UTC().Truncate(time.Microsecond)
	exp := now.Add(20 * 24 * time.Hour)
	d, err = st.SetDomainTLS(ctx, apex.ID, store.DomainTLSReport{
		Status: store.TLSActive, Issuer: ptrTo("R11"), NotBefore: &now, ExpiresAt: &exp, LastAttemptAt: &now,
	})
	if err != nil || d.TLSStatus != store.TLSActive || *d.TLSIssuer != "R11" || !d.TLSExpiresAt.Equal(exp) || !d.TLSNotBefore.Equal(now) || d.TLSLastError != nil {
		t.Fatalf("tls active = %+v, %v", d, err)
	}
	retry := now.Add(time.Hour)
	d, err = st.SetDomainTLS(ctx, apex.ID, store.DomainTLSReport{Status: store.TLSFailed, LastError: ptrTo("rate limited"), NextAttemptAt: &retry})
	if err != nil || d.TLSStatus != store.TLSFailed || *d.TLSIssuer != "R11" || !d.TLSExpiresAt.Equal(exp) || *d.TLSLastError != "rate limited" || !d.TLSNextAttemptAt.Equal(retry) {
		t.Fatalf("tls failed keeps the certificate facts: %+v, %v", d, err)
	}
	soon, later := now.Add(5*24*time.Hour), now.Add(60*24*time.Hour)
	for id, at := range map[store.ID]time.Time{api.ID: soon, custom.ID: now.Add(24 * time.Hour)} {
		if _, err := st.SetDomainTLS(ctx, id, store.DomainTLSReport{Status: store.TLSActive, ExpiresAt: &at}); err != nil {
			t.Fatal(err)
		}
	}
	third, err := st.CreateDomain(ctx, store.CreateDomainParams{AppID: blog.ID, Hostname: "blog.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.SetDomainTLS(ctx, third.ID, store.DomainTLSReport{Status: store.TLSActive, ExpiresAt: &later}); err != nil {
		t.Fatal(err)
	}
	expiring, err := st.DomainsExpiringBefore(ctx, now.Add(30*24*time.Hour), 10)
	if err != nil || !slices.Equal(hosts(expiring), []string{"api.shop.example.com", "shop.example.com"}) {
		t.Fatalf("expiring (acme only, soonest first) = %v, %v", hosts(expiring), err)
	}
	if due, err := st.DomainsTLSAttemptDue(ctx, now, 10); err != nil || len(due) != 0 {
		t.Fatalf("due now = %v, %v", hosts(due), err)
	}
	if due, err := st.DomainsTLSAttemptDue(ctx, now.Add(2*time.Hour), 10); err != nil || !slices.Equal(hosts(due), []string{"shop.example.com"}) {
		t.Fatalf("due in 2h = %v, %v", hosts(due), err)
	}

	// Settings: the route goes back to pending; TLS restarts only when the
	// mode changes.
	d, err = st.UpdateDomain(ctx, apex.ID, store.DomainSettings{ForceHTTPS: false, TLSMode: store.TLSACME, ACMEDirectoryURL: ptrTo("https://acme.example.com/dir")})
	if err != nil || d.Status != store.DomainPending || d.TLSStatus != store.TLSFailed || d.ForceHTTPS || *d.ACMEDirectoryURL != "https://acme.example.com/dir" {
		t.Fatalf("update same mode = %+v, %v", d, err)
	}
	d, err = st.UpdateDomain(ctx, apex.ID, store.DomainSettings{TLSMode: store.TLSOff})
	if err != nil || d.TLSStatus != store.TLSDisabled || d.TLSMode != store.TLSOff || d.ACMEDirectoryURL != nil {
		t.Fatalf("update to off = %+v, %v", d, err)
	}
	d, err = st.UpdateDomain(ctx, apex.ID, store.DomainSettings{})
	if err != nil || d.TLSStatus != store.TLSPending || d.TLSMode != store.TLSACME {
		t.Fatalf("update back to acme = %+v, %v", d, err)
	}
	_, err = st.UpdateDomain(ctx, apex.ID, store.DomainSettings{TLSMode: store.TLSCustom})
	wantErr(t, "custom without paths", err, store.ErrInvalid)
	_, err = st.UpdateDomain(ctx, store.NewID(), store.DomainSettings{})
	wantErr(t, "update unknown", err, store.ErrNotFound)

	// Moving the app moves its domains; deleting it deletes them.
	moved := shop.AppSettings
	moved.ServerID = s2
	if _, err := st.UpdateApp(ctx, shop.ID, moved); err != nil {
		t.Fatal(err)
	}
	for _, d := range []store.ID{apex.ID, www.ID, api.ID} {
		if got, _ := st.Domain(ctx, d); got.ServerID != s2 {
			t.Fatalf("domain %s stayed on %s", got.Hostname, got.ServerID)
		}
	}
	if err := st.DeleteDomain(ctx, www.ID); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "delete twice", st.DeleteDomain(ctx, www.ID), store.ErrNotFound)
	if err := st.DeleteApp(ctx, shop.ID); err != nil {
		t.Fatal(err)
	}
	if l, err := st.DomainsForServer(ctx, s2); err != nil || len(l) != 0 {
		t.Fatalf("domains left after the app went: %v, %v", hosts(l), err)
	}
}
