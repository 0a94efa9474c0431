package proxy

import (
	"sync"
	"time"

	"golang.org/x/time/rate"

	"authgate/policy"
)

// maxLimiterEntries bounds the rate limiter's memory however many client
// IPs appear: about 100 bytes each.
const maxLimiterEntries = 100_000

// ipLimiter limits rejected authentications per client IP with a token
// bucket each. Only rejections take tokens; a client whose bucket is empty
// is refused (4029 / 429) before its token is even classified, which also
// spares the verifier a flood. A bucket that has refilled holds nothing a
// new one would not, so the sweep drops it; when the table is full an
// arbitrary entry is dropped (Go map order is random).
type ipLimiter struct {
	mu      sync.Mutex
	limit   rate.Limit
	burst   int
	entries map[string]*rate.Limiter
	swept   time.Time
}

func newIPLimiter() *ipLimiter { return &ipLimiter{entries: map[string]*rate.Limiter{}} }

// configure applies rate_limit from a (re)loaded snapshot.
func (l *ipLimiter) configure(rl policy.RateLimit) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := rate.Limit(float64(rl.PerMinute) / 60)
	if lim == l.limit && rl.Burst == l.burst {
		return
	}
	l.limit, l.burst = lim, rl.Burst
	clear(l.entries)
}

// blocked reports whether ip has no rejections left, without taking one.
func (l *ipLimiter) blocked(ip string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.limit == 0 {
		return false
	}
	e := l.entries[ip]
	return e != nil && e.TokensAt(now) < 1
}

// rejected records one rejected authentication for ip.
func (l *ipLimiter) rejected(ip string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.limit == 0 {
		return
	}
	e := l.entries[ip]
	if e == nil {
		l.sweep(now)
		e = rate.NewLimiter(l.limit, l.burst)
		l.entries[ip] = e
	}
	e.AllowN(now, 1)
}

// sweep drops refilled buckets at most once a second, and makes room
// when the table is full. Called with mu held.
func (l *ipLimiter) sweep(now time.Time) {
	if len(l.entries) < maxLimiterEntries && now.Sub(l.swept) < time.Second {
		return
	}
	if now.Sub(l.swept) >= time.Second {
		l.swept = now
		for ip, e := range l.entries {
			if e.TokensAt(now) >= float64(l.burst) {
				delete(l.entries, ip)
			}
		}
	}
	for ip := range l.entries {
		if len(l.entries) < maxLimiterEntries {
			break
		}
		delete(l.entries, ip)
	}
}

func (l *ipLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}
