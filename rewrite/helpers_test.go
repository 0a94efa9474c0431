package rewrite

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
)

// Tokens here are minted with go-jose, an implementation independent of
// the golang-jwt library authgate verifies with, so a shared bug in how
// both sides encode claims cannot hide.

var testSecret = []byte("super-secret-jwt-token-with-at-least-32-characters-long")

// t0 is the fixed "now" of the tests.
var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

type supabaseClaims struct {
	josejwt.Claims
	Role  string `json:"role,omitempty"`
	Email string `json:"email,omitempty"`
}

func supabase(sub string, exp time.Time) supabaseClaims {
	return supabaseClaims{
		Claims: josejwt.Claims{
			Issuer: "https://ref.supabase.co/auth/v1", Subject: sub,
			Audience: josejwt.Audience{"authenticated"},
			IssuedAt: josejwt.NewNumericDate(exp.Add(-time.Hour)), Expiry: josejwt.NewNumericDate(exp),
		},
		Role: "authenticated", Email: "user@example.com",
	}
}

func joseSign(t testing.TB, alg jose.SignatureAlgorithm, key any, kid string, claims any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := josejwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func newEC(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newRSA(t testing.TB) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// jwksServer serves a JWK Set that a test can swap (key rotation) and
// counts fetches.
type jwksServer struct {
	*httptest.Server
	mu      sync.Mutex
	set     jose.JSONWebKeySet
	fetches atomic.Int64
}

func newJWKSServer(t testing.TB, keys ...jose.JSONWebKey) *jwksServer {
	j := &jwksServer{set: jose.JSONWebKeySet{Keys: keys}}
	j.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		j.fetches.Add(1)
		j.mu.Lock()
		defer j.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(j.set)
	}))
	t.Cleanup(j.Close)
	return j
}

func (j *jwksServer) rotate(keys ...jose.JSONWebKey) {
	j.mu.Lock()
	j.set = jose.JSONWebKeySet{Keys: keys}
	j.mu.Unlock()
}

func publicJWK(key any, kid, alg string) jose.JSONWebKey {
	var pub any
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		pub = &k.PublicKey
	case *rsa.PrivateKey:
		pub = &k.PublicKey
	}
	return jose.JSONWebKey{Key: pub, KeyID: kid, Algorithm: alg, Use: "sig"}
}
