package grpcapi

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/ratelimit"
	"github.com/berthhq/berth/controller/internal/store"
)

// Refusal budget of the agent port, per address: RefusalBurst events at
// once, refilled at RefusalsPerMinute; 50 a second over all addresses.
// Like the webhook path's (deploys' badHooks): the port takes TLS without a
// client certificate (enrollment needs that), many calls share one HTTP/2
// connection, and without a budget every refused call from anyone was one
// security_events row.
const (
	RefusalsPerMinute = 10
	RefusalBurst      = 10
	refusalsPerSecond = 50
	// maxSuppressed bounds the addresses whose suppressed refusals are
	// being counted; past it, refusals from new addresses are dropped
	// without a summary (the global cap has long been reached then).
	maxSuppressed = 100000
)

// refusalBudget writes the security events of refused agent connections
// and calls within a budget per address. The first refusal over budget
// writes one summarising agent.events_suppressed event; the refusals after
// it are only counted, and the next event recorded from that address
// carries the count (details.suppressed), so nothing is lost from the
// trail but its rows.
type refusalBudget struct {
	st    *store.Store
	log   *slog.Logger
	now   func() time.Time
	limit *ratelimit.PerKey
	// summaries bounds the summaries themselves when many addresses go
	// over budget at once.
	summaries *rate.Limiter

	mu         sync.Mutex
	suppressed map[string]int
}

func newRefusalBudget(st *store.Store, log *slog.Logger, now func() time.Time) *refusalBudget {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &refusalBudget{
		st: st, log: log, now: now,
		limit:      ratelimit.New(RefusalsPerMinute, RefusalBurst, refusalsPerSecond),
		summaries:  rate.NewLimiter(refusalsPerSecond, refusalsPerSecond),
		suppressed: map[string]int{},
	}
}

// record writes p if the budget of its address allows. It never fails the
// caller: the refusal stands whether or not it was recorded.
func (b *refusalBudget) record(ctx context.Context, p store.CreateSecurityEventParams) {
	key := ""
	if p.IPAddress != nil {
		key = p.IPAddress.String()
	}
	now := b.now()
	if !b.limit.Allow(key, now) {
		b.mu.Lock()
		n, counting := b.suppressed[key]
		if counting || len(b.suppressed) < maxSuppressed {
			b.suppressed[key] = n + 1
		}
		b.mu.Unlock()
		if counting || !b.summaries.AllowN(now, 1) {
			return
		}
		p = store.CreateSecurityEventParams{
			Type: kind.AgentEventsSuppressed, Severity: store.SeverityWarning, IPAddress: p.IPAddress, UserAgent: p.UserAgent,
			Details: map[string]any{
				"first_suppressed": p.Type, "budget_per_minute": RefusalsPerMinute, "budget_burst": RefusalBurst,
				"note": "further refusals from this address are counted, not recorded, until its budget refills; the next event recorded from it carries the count",
			},
		}
	} else {
		b.mu.Lock()
		n := b.suppressed[key]
		delete(b.suppressed, key)
		b.mu.Unlock()
		if n > 0 {
			d := make(map[string]any, len(p.Details)+1)
			for k, v := range p.Details {
				d[k] = v
			}
			d["suppressed"] = n
			p.Details = d
		}
	}
	if _, err := b.st.CreateSecurityEvent(ctx, p); err != nil {
		b.log.Error("record security event", "type", p.Type, "err", err)
	}
}

// HandshakeRefused records a TLS handshake the agent port refused (an
// unknown CA, an expired certificate, a wrong usage, a stall), within the
// refusal budget. For AdmitOptions.Refused.
func (a *Authenticator) HandshakeRefused(addr netip.Addr, reason string, details map[string]any) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := map[string]any{"reason": reason}
	for k, v := range details {
		d[k] = v
	}
	p := store.CreateSecurityEventParams{Type: kind.AgentHandshakeRefused, Severity: store.SeverityWarning, Details: d}
	if addr.IsValid() {
		p.IPAddress = &addr
	}
	a.budget.record(ctx, p)
}
