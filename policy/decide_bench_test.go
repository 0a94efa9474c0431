package policy_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"authgate/policy"
	"authgate/rewrite"
)

// BenchmarkDecide measures one decision as the proxy makes it on a
// WebSocket upgrade (SPEC "Performance": extract, classify, verify HS256,
// decide; under 5us): the example config's snapshot, a browser's upgrade
// request to /api/v1/pam/ws, the token in the query.
func BenchmarkDecide(b *testing.B) {
	s := loadExample(b)
	now := stage0
	benches := []struct {
		name  string
		token string
		want  policy.Action
		class rewrite.Class
	}{
		{"jwt", userJWT(b, "8c3f1e2a-5b6d-4e7f-8a9b-0c1d2e3f4a5b", now.Add(time.Hour)), policy.ActionPass, rewrite.ClassJWT},
		{"uuid", legacyUser, policy.ActionRewrite, rewrite.ClassUUID},
	}
	// jwt-uncached: every decision verifies the signature and decodes the
	// claims (a client's first request with a new token).
	b.Run("jwt-uncached", func(b *testing.B) {
		tokens := make([]*http.Request, 4096)
		for i := range tokens {
			tokens[i] = benchUpgrade("/api/v1/pam/ws?token=" + userJWT(b, fmt.Sprintf("8c3f1e2a-5b6d-4e7f-8a9b-%012d", i), now.Add(time.Hour)))
		}
		cold := s.WithVerifier(rewrite.NewVerifier(withoutCache(s.Verifier.Config())))
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			d := cold.Decide(bg, tokens[i&4095], true, now)
			if d.Class != rewrite.ClassJWT {
				b.Fatalf("got %v, want jwt", d.Class)
			}
			i++
		}
	})
	for _, bb := range benches {
		b.Run(bb.name, func(b *testing.B) {
			r := benchUpgrade("/api/v1/pam/ws?token=" + bb.token)
			if d := s.Decide(bg, r, true, now); d.Action != bb.want || d.Class != bb.class {
				b.Fatalf("got %v %v, want %v %v", d.Class, d.Action, bb.class, bb.want)
			}
			b.ReportAllocs()
			for b.Loop() {
				d := s.Decide(bg, r, true, now)
				if d.Action != bb.want {
					b.Fatalf("got %v, want %v", d.Action, bb.want)
				}
			}
		})
	}
}

func withoutCache(c rewrite.VerifyConfig) rewrite.VerifyConfig {
	c.CacheSize = -1
	return c
}

// benchUpgrade is the upgrade a browser sends, headers and all.
func benchUpgrade(target string) *http.Request {
	r := upgrade(target)
	r.Host = "pam.example.com"
	r.Header.Set("Origin", appOrigin)
	r.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36")
	r.Header.Set("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")
	r.Header.Set("Accept-Language", "en-GB,en;q=0.9")
	r.Header.Set("Cookie", "theme=dark; sb-refresh-token=r1")
	return r
}
