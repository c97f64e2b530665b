package domains

import (
	"context"
	"errors"
	"time"

	"github.com/go-acme/lego/v5/acme/api"

	"github.com/berthhq/berth/controller/internal/store"
)

// reconcileSites queues a site job for every app whose installed ACME
// certificate its newest finished site job does not carry. Recording a
// certificate and queueing the site job that serves it are two steps (the
// job machinery commits its own rows); a controller that dies between
// them leaves a certificate installed on the server but not served, and
// this loop, run on start and every tick by every controller, heals it.
func (s *Service) reconcileSites(ctx context.Context) {
	apps, err := s.st.AppsSiteBehindCertificates(ctx, 100)
	if err != nil {
		s.logErr(ctx, "find sites behind their certificates", err)
		return
	}
	for _, id := range apps {
		if err := s.syncSite(ctx, id, nil); err != nil {
			s.logErr(ctx, "queue the site job of an installed certificate", err)
			continue
		}
		s.log.Warn("queued the site job of an installed certificate that its site did not carry yet", "app", id.String())
	}
}

// ariPollAfter bounds the CA's Retry-After to [ARIPollMin, ARIPollMax];
// none (0) is the maximum.
func (s *Service) ariPollAfter(retryAfter time.Duration) time.Duration {
	if retryAfter <= 0 {
		return s.cfg.ARIPollMax
	}
	return min(max(retryAfter, s.cfg.ARIPollMin), s.cfg.ARIPollMax)
}

// claimARIPolls claims the domains whose renewal information is due to be
// asked again (at most limit) and asks, each in the attempt pool.
func (s *Service) claimARIPolls(ctx context.Context, now time.Time, limit int) {
	due, err := s.st.ClaimDomainsARIDue(ctx, now, now.Add(lease), limit)
	if err != nil {
		s.logErr(ctx, "claim renewal information polls", err)
		return
	}
	for _, d := range due {
		s.inPool("renewal information poll", d, func() {
			pctx, cancel := context.WithTimeout(ctx, lease-time.Minute)
			defer cancel()
			s.pollARI(pctx, d)
		})
	}
}

// pollARI asks the CA for the renewal window of d's certificate again and
// stores it with the time to ask next (the CA's Retry-After, bounded). A
// window that changed moves the next renewal to a time in it (at once when
// it is already open or past) while the certificate is active; a failed
// or running attempt keeps its own schedule.
func (s *Service) pollARI(ctx context.Context, d store.Domain) {
	if d.TLSCertificate == nil || d.TLSSerial == nil {
		return
	}
	now := s.cfg.Now()
	poll := store.ARIPoll{NextPollAt: now.Add(s.cfg.ARIPollMin)}
	leaf, err := leafOf([]byte(*d.TLSCertificate))
	if err != nil {
		s.log.Error("renewal information: stored certificate", "domain", d.Hostname, "err", err)
		poll.NextPollAt = now.Add(s.cfg.ARIPollMax)
		s.storeARI(ctx, d, poll)
		return
	}
	dir := s.cfg.ACMEDirectory
	if d.ACMEDirectoryURL != nil {
		dir = *d.ACMEDirectoryURL
	}
	client, err := s.client(ctx, dir)
	if err != nil {
		s.logErr(ctx, "renewal information: acme client", err)
		s.storeARI(ctx, d, poll)
		return
	}
	info, err := client.Certificate.GetRenewalInfo(ctx, leaf)
	switch {
	case errors.Is(err, api.ErrNoARI):
		poll.NextPollAt = now.Add(s.cfg.ARIPollMax)
	case err != nil:
		s.log.Info("renewal information not available; asking again later", "domain", d.Hostname, "err", err)
	case info.ExtendedRenewalInfo != nil:
		ws, we := info.SuggestedWindow.Start, info.SuggestedWindow.End
		poll.WindowStart, poll.WindowEnd = &ws, &we
		poll.NextPollAt = now.Add(s.ariPollAfter(info.RetryAfter))
		changed := d.TLSARIWindowStart == nil || d.TLSARIWindowEnd == nil ||
			!d.TLSARIWindowStart.Equal(ws) || !d.TLSARIWindowEnd.Equal(we)
		if changed {
			at := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) * 2 / 3)
			if a := info.ShouldRenewAt(now, leaf.NotAfter.Sub(now)); a != nil {
				at = *a
			}
			poll.RenewAt = &at
			s.log.Info("the CA moved the renewal window", "domain", d.Hostname, "start", ws, "end", we, "next_attempt_at", at)
		}
	}
	s.storeARI(ctx, d, poll)
}

func (s *Service) storeARI(ctx context.Context, d store.Domain, p store.ARIPoll) {
	if _, err := s.st.SetDomainARI(ctx, d.ID, *d.TLSSerial, p); err != nil && !errors.Is(err, store.ErrNotFound) {
		// Not found: removed, or renewed meanwhile (the new certificate
		// has its own window and poll).
		s.logErr(ctx, "record renewal information", err)
		return
	}
	if p.RenewAt != nil && !p.RenewAt.After(s.cfg.Now()) {
		s.poke()
	}
}
