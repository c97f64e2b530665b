package domains

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// queuedSites returns the app's queued site jobs.
func (e *env) queuedSites(t *testing.T) []store.Deployment {
	t.Helper()
	jobs, err := e.st.ListDeployments(context.Background(), store.DeploymentFilter{AppID: &e.app.ID, Status: store.DeploymentQueued, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var out []store.Deployment
	for _, j := range jobs {
		if j.Kind == JobSite {
			out = append(out, j)
		}
	}
	return out
}

// runSite builds a queued site job as the dispatcher does when it sends
// it, and finishes it with status, as the agent's report does.
func (e *env) runSite(t *testing.T, j store.Deployment, status store.DeploymentStatus) *agentv1.SiteSpec {
	t.Helper()
	ctx := context.Background()
	js := &agentv1.JobStart{}
	if err := (siteJobs{e.s}).BuildJob(ctx, e.app, j, js); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.Pool.Exec(ctx, `UPDATE deployments SET status = $2, started_at = now(), finished_at = now() WHERE id = $1`,
		pgtype.UUID{Bytes: j.ID, Valid: true}, string(status)); err != nil {
		t.Fatal(err)
	}
	return js.GetSite()
}

func certNameOf(site *agentv1.SiteSpec, host string) string {
	for _, d := range site.GetDomains() {
		if d.GetHost() == host {
			return d.GetCertName()
		}
	}
	return ""
}

// A controller that died between recording a certificate (tls_status
// active, serial set) and queueing the site job that serves it leaves the
// certificate installed but not served: the newest site job ran before
// the certificate and carries no certificate name for its host. The loop
// (its first tick on start, then every tick) queues a site job, built
// with the certificate; once a site job carries it, nothing more is
// queued, whatever that job's outcome.
func TestCrashBetweenCertificateAndSiteHeals(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	const host = "shop.example.com"
	d, err := e.s.Add(ctx, e.pr, Peer{}, AddParams{App: "shop", Host: host})
	if err != nil {
		t.Fatal(err)
	}
	// The site job of the add runs before any certificate: plain HTTP.
	q := e.queuedSites(t)
	if len(q) != 1 {
		t.Fatalf("site jobs after add: %d", len(q))
	}
	if site := e.runSite(t, q[0], store.DeploymentSucceeded); certNameOf(site, host) != "" {
		t.Fatalf("a site before any certificate names one: %v", site)
	}
	// Nothing to heal yet: no certificate.
	e.s.Tick(ctx)
	e.attemptsDone()
	if q := e.queuedSites(t); len(q) != 0 {
		t.Fatalf("a site job queued without a certificate: %d", len(q))
	}
	// The issuance's record commits; the controller dies before its
	// syncSite (nothing queued, as the crash leaves it).
	issuer, serial := "Test CA", "0a0b"
	nb, na := e.now.Add(-time.Hour), e.now.Add(89*24*time.Hour)
	next := e.now.Add(60 * 24 * time.Hour)
	if _, err := e.st.SetDomainTLSAttempt(ctx, d.ID, store.TLSAttempt{Status: store.TLSActive, Issuer: &issuer, NotBefore: &nb,
		ExpiresAt: &na, Serial: &serial, NextAttemptAt: &next}); err != nil {
		t.Fatal(err)
	}
	// A restarted controller's first tick heals it.
	e.s.Tick(ctx)
	e.attemptsDone()
	q = e.queuedSites(t)
	if len(q) != 1 {
		t.Fatalf("site jobs queued by the loop after the crash: %d, want 1", len(q))
	}
	// A second tick while that job is queued adds none.
	e.s.Tick(ctx)
	e.attemptsDone()
	if got := e.queuedSites(t); len(got) != 1 {
		t.Fatalf("site jobs after a second tick: %d, want still 1", len(got))
	}
	site := e.runSite(t, q[0], store.DeploymentFailed)
	if certNameOf(site, host) != certName(host) {
		t.Fatalf("the healing site job does not serve the certificate: %v", site)
	}
	// It carried the certificate (even though it failed: the domain's
	// status says why, and a loop of re-sends would not help): done.
	e.s.Tick(ctx)
	e.attemptsDone()
	if q := e.queuedSites(t); len(q) != 0 {
		t.Fatalf("site jobs queued after one carried the certificate: %d", len(q))
	}
	// A deleted app is not healed.
	if _, err := e.db.Pool.Exec(ctx, `UPDATE deployments SET params = NULL WHERE app_id = $1`, pgtype.UUID{Bytes: e.app.ID, Valid: true}); err != nil {
		t.Fatal(err)
	}
	ids, err := e.st.AppsSiteBehindCertificates(ctx, 10)
	if err != nil || len(ids) != 1 {
		t.Fatalf("app with a certificate and no site carrying it: %v %v", ids, err)
	}
	if _, err := e.db.Pool.Exec(ctx, `UPDATE apps SET deleted_at = now() WHERE id = $1`, pgtype.UUID{Bytes: e.app.ID, Valid: true}); err != nil {
		t.Fatal(err)
	}
	if ids, err := e.st.AppsSiteBehindCertificates(ctx, 10); err != nil || len(ids) != 0 {
		t.Fatalf("a deleted app listed: %v %v", ids, err)
	}
}

// A poll's outcome is stored for the certificate it asked about only, and
// moves the next renewal only while the certificate is active (a failed
// one keeps its backoff). Retry-After is bounded.
func TestARIPollRecord(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	day := 24 * time.Hour
	d := e.addCert(t, "ari.example.com", e.now.Add(-10*day), e.now.Add(80*day))
	ws, we := e.now.Add(-time.Hour), e.now.Add(-time.Hour+time.Second)
	poll := e.now.Add(time.Hour)
	got, err := e.st.SetDomainARI(ctx, d.ID, *d.TLSSerial, store.ARIPoll{WindowStart: &ws, WindowEnd: &we, NextPollAt: poll, RenewAt: &e.now})
	if err != nil {
		t.Fatal(err)
	}
	if !got.TLSARIWindowStart.Equal(ws) || !got.TLSARIWindowEnd.Equal(we) || !got.TLSARINextPollAt.Equal(poll) || !got.TLSNextAttemptAt.Equal(e.now) {
		t.Fatalf("poll not stored: %+v", got)
	}
	// Another certificate's poll (renewed meanwhile) changes nothing.
	later := e.now.Add(9 * time.Hour)
	if _, err := e.st.SetDomainARI(ctx, d.ID, "other-serial", store.ARIPoll{NextPollAt: later, RenewAt: &later}); err == nil {
		t.Fatal("a poll of a replaced certificate was stored")
	}
	// A failed certificate keeps its backoff.
	msg := "boom"
	backoff := e.now.Add(2 * time.Hour)
	if _, err := e.st.SetDomainTLSAttempt(ctx, d.ID, store.TLSAttempt{Status: store.TLSFailed, Serial: d.TLSSerial, Certificate: d.TLSCertificate,
		NotBefore: d.TLSNotBefore, ExpiresAt: d.TLSExpiresAt, NextAttemptAt: &backoff, LastError: &msg, Failures: 1, ARINextPollAt: &poll}); err != nil {
		t.Fatal(err)
	}
	got, err = e.st.SetDomainARI(ctx, d.ID, *d.TLSSerial, store.ARIPoll{NextPollAt: later, RenewAt: &e.now})
	if err != nil || !got.TLSNextAttemptAt.Equal(backoff) || !got.TLSARINextPollAt.Equal(later) {
		t.Fatalf("failed certificate: %+v %v", got, err)
	}
	// Claimed once when due, by one controller.
	if _, err := e.db.Pool.Exec(ctx, `UPDATE domains SET tls_certificate = 'x' WHERE id = $1`, pgtype.UUID{Bytes: d.ID, Valid: true}); err != nil {
		t.Fatal(err)
	}
	if c, err := e.st.ClaimDomainsARIDue(ctx, later.Add(-time.Second), later.Add(time.Hour), 10); err != nil || len(c) != 0 {
		t.Fatalf("claimed before due: %v %v", c, err)
	}
	if c, err := e.st.ClaimDomainsARIDue(ctx, later, later.Add(time.Hour), 10); err != nil || len(c) != 1 {
		t.Fatalf("claim when due: %v %v", c, err)
	}
	if c, err := e.st.ClaimDomainsARIDue(ctx, later, later.Add(time.Hour), 10); err != nil || len(c) != 0 {
		t.Fatalf("claimed twice: %v %v", c, err)
	}
	for in, want := range map[time.Duration]time.Duration{0: 24 * time.Hour, time.Second: time.Hour, 6 * time.Hour: 6 * time.Hour, 72 * time.Hour: 24 * time.Hour} {
		if got := e.s.ariPollAfter(in); got != want {
			t.Errorf("ariPollAfter(%v) = %v, want %v", in, got, want)
		}
	}
}
