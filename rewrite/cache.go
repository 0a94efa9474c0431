package rewrite

import (
	"sync"
	"time"
)

// maxCachedToken is the longest token the verified cache keeps: real JWTs
// are well under it, and the bound keeps the cache's memory small.
const maxCachedToken = 2048

type cachedClaims struct {
	subject  string
	exp, nbf time.Time
}

// verifiedCache remembers tokens whose signature, issuer and audience
// verified, keyed by the whole token (any change misses). It is bounded;
// when full, an arbitrary entry goes (Go's map order is random), and
// entries past their exp are dropped as they are met. It lives in one
// Verifier, so a reload (new keys, new audience) starts empty.
type verifiedCache struct {
	mu  sync.RWMutex
	max int
	m   map[string]cachedClaims
}

func newVerifiedCache(max int) *verifiedCache {
	if max <= 0 {
		return nil
	}
	return &verifiedCache{max: max, m: make(map[string]cachedClaims)}
}

func (c *verifiedCache) get(token string) (cachedClaims, bool) {
	if c == nil {
		return cachedClaims{}, false
	}
	c.mu.RLock()
	v, ok := c.m[token]
	c.mu.RUnlock()
	return v, ok
}

func (c *verifiedCache) put(token string, v cachedClaims) {
	if c == nil || len(token) > maxCachedToken {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		now := time.Now()
		n := 0
		for k, e := range c.m {
			if n >= 8 {
				break
			}
			// Prefer evicting expired entries; otherwise any.
			if e.exp.Before(now) || n == 0 {
				delete(c.m, k)
			}
			n++
		}
	}
	c.m[token] = v
}
