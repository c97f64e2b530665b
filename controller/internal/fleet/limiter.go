package fleet

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// ipLimiter rate-limits by peer address, with a global cap so a flood from
// many addresses is bounded too. Idle entries are forgotten so memory stays
// bounded under a spray of addresses.
type ipLimiter struct {
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

func newIPLimiter(perMinute, burst int, globalPerSecond float64) *ipLimiter {
	return &ipLimiter{
		perIP:   make(map[string]*limEntry),
		every:   rate.Limit(float64(perMinute) / 60),
		burst:   burst,
		global:  rate.NewLimiter(rate.Limit(globalPerSecond), int(globalPerSecond)+1),
		maxKeys: 100000,
	}
}

func (l *ipLimiter) allow(ip string, now time.Time) bool {
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
