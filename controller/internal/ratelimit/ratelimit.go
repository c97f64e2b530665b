// Package ratelimit limits events per key (a peer address, say) with a
// global cap, in bounded memory. Shared by enrollment and webhooks.
package ratelimit

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// PerKey rate-limits by key (a peer address), with a global cap so a flood from
// many addresses is bounded too. Idle entries are forgotten so memory stays
// bounded under a spray of addresses.
type PerKey struct {
	mu      sync.Mutex
	perIP   map[string]*limEntry
	every   rate.Limit
	burst   int
	global  *rate.Limiter
	maxKeys int
}

type limEntry struct {
	lim  *rate.Limiter
	seen time.Time
}

// New allows perMinute events per key with the given burst, and at most
// globalPerSecond over all keys.
func New(perMinute, burst int, globalPerSecond float64) *PerKey {
	return &PerKey{
		perIP:   make(map[string]*limEntry),
		every:   rate.Limit(float64(perMinute) / 60),
		burst:   burst,
		global:  rate.NewLimiter(rate.Limit(globalPerSecond), int(globalPerSecond)+1),
		maxKeys: 100000,
	}
}

// Allow takes one event for key at now; false means over a limit.
func (l *PerKey) Allow(ip string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.perIP[ip]
	if e == nil {
		if len(l.perIP) >= l.maxKeys {
			for k, v := range l.perIP {
				if now.Sub(v.seen) > 10*time.Minute {
					delete(l.perIP, k)
				}
			}
			if len(l.perIP) >= l.maxKeys {
				return false
			}
		}
		e = &limEntry{lim: rate.NewLimiter(l.every, l.burst)}
		l.perIP[ip] = e
	}
	e.seen = now
	return e.lim.AllowN(now, 1) && l.global.AllowN(now, 1)
}
