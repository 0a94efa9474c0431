package rewrite

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// TestVerifiedCache pins that a cached token is re-checked against time
// on every use, and that the cache stays bounded.
func TestVerifiedCache(t *testing.T) {
	v := hsVerifier()
	tok := joseSign(t, jose.HS256, testSecret, "", supabase(legacyUUID, t0.Add(time.Minute)))
	if r := v.Classify(context.Background(), tok, t0); r.Class != ClassJWT || !r.Verified {
		t.Fatalf("first use: got %v verified=%v, want verified jwt", r.Class, r.Verified)
	}
	if _, ok := v.cache.get(tok); !ok {
		t.Fatal("verified token not cached")
	}
	if r := v.Classify(context.Background(), tok, t0.Add(2*time.Minute)); r.Class != ClassJWTExpired {
		t.Errorf("cached token after exp+leeway: got %v, want jwt_expired", r.Class)
	}
	if r := v.Classify(context.Background(), tok, t0.Add(time.Minute+10*time.Second)); r.Class != ClassJWT {
		t.Errorf("cached token within leeway: got %v, want jwt", r.Class)
	}
	// One changed character misses the cache and fails the signature.
	tampered := tok[:len(tok)-2] + "AA"
	if tampered == tok {
		tampered = tok[:len(tok)-2] + "BB"
	}
	if r := v.Classify(context.Background(), tampered, t0); r.Class != ClassJWTInvalid {
		t.Errorf("tampered token: got %v, want jwt_invalid", r.Class)
	}
	small := NewVerifier(VerifyConfig{HS256Secret: testSecret, Algorithms: []string{"HS256"}, Audience: "authenticated", CacheSize: 50})
	for i := range 200 {
		c := supabase("user-"+strconv.Itoa(i), t0.Add(time.Hour))
		small.Classify(context.Background(), joseSign(t, jose.HS256, testSecret, "", c), t0)
	}
	if n := len(small.cache.m); n > 50 {
		t.Errorf("cache size after 200 tokens: got %d, want at most 50", n)
	}
	off := NewVerifier(VerifyConfig{HS256Secret: testSecret, Algorithms: []string{"HS256"}, CacheSize: -1})
	off.Classify(context.Background(), tok, t0)
	if off.cache != nil {
		t.Error("CacheSize -1: want no cache")
	}
}
