package proxy

import (
	"bytes"
	"slices"
	"sync"
	"time"

	"authgate/policy"
)

// mintKeys is what /jwks.json serves: the public mint key in force and,
// after a rotation, each previous one for one mint ttl plus leeway, so a
// token minted a moment before the swap still verifies at a backend that
// reads the JWKS (SPEC Operations).
type mintKeys struct {
	mu      sync.Mutex
	retired []retiredKey
}

type retiredKey struct {
	jwk   []byte
	kid   string
	until time.Time
}

// rotate records a reload from old to next at now. It reports whether the
// key changed under the same kid (a JWKS consumer that looks keys up by
// kid alone may then pick the wrong one).
func (k *mintKeys) rotate(old, next *policy.Snapshot, now time.Time) (sameKID bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.retired = slices.DeleteFunc(k.retired, func(r retiredKey) bool { return !now.Before(r.until) })
	if old == nil || old.Minter == nil || old.Minter.PublicJWK() == nil {
		return false
	}
	prev := old.Minter.PublicJWK()
	var cur []byte
	if next.Minter != nil {
		cur = next.Minter.PublicJWK()
	}
	if bytes.Equal(prev, cur) {
		return false
	}
	// A key rotated back to is current again, not retired.
	k.retired = slices.DeleteFunc(k.retired, func(r retiredKey) bool { return bytes.Equal(r.jwk, cur) || bytes.Equal(r.jwk, prev) })
	k.retired = append(k.retired, retiredKey{
		jwk: prev, kid: old.Minter.KID(),
		until: now.Add(old.Minter.TTL() + old.Verifier.Config().Leeway),
	})
	return cur != nil && next.Minter.KID() == old.Minter.KID()
}

// jwks renders the JWK Set for snap at now: the current key first, then
// the retired ones still within their window. It returns nil when there
// is no public key to serve.
func (k *mintKeys) jwks(snap *policy.Snapshot, now time.Time) []byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	var keys [][]byte
	if snap.Minter != nil && snap.Minter.PublicJWK() != nil {
		keys = append(keys, snap.Minter.PublicJWK())
	}
	for _, r := range k.retired {
		if now.Before(r.until) {
			keys = append(keys, r.jwk)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	var b bytes.Buffer
	b.WriteString(`{"keys":[`)
	b.Write(bytes.Join(keys, []byte(",")))
	b.WriteString("]}")
	return b.Bytes()
}
