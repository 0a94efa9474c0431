package rewrite

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/golang-jwt/jwt/v5"
)

const legacyUUID = "21a2151a-cd37-41d5-a1c7-124bb05e7a6a"

func hsVerifier() *Verifier {
	return NewVerifier(VerifyConfig{
		HS256Secret: testSecret, Algorithms: []string{"HS256", "ES256", "RS256"},
		Issuer: "https://ref.supabase.co/auth/v1", Audience: "authenticated", Leeway: 30 * time.Second,
	})
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestClassifyHS256(t *testing.T) {
	v := hsVerifier()
	valid := joseSign(t, jose.HS256, testSecret, "", supabase(legacyUUID, t0.Add(time.Hour)))
	expired := joseSign(t, jose.HS256, testSecret, "", supabase(legacyUUID, t0.Add(-time.Minute)))
	inLeeway := joseSign(t, jose.HS256, testSecret, "", supabase(legacyUUID, t0.Add(-10*time.Second)))
	wrongAud := supabase(legacyUUID, t0.Add(time.Hour))
	wrongAud.Audience = josejwt.Audience{"anon-service"}
	wrongIss := supabase(legacyUUID, t0.Add(time.Hour))
	wrongIss.Issuer = "https://evil.example/auth/v1"
	notYet := supabase(legacyUUID, t0.Add(time.Hour))
	notYet.NotBefore = josejwt.NewNumericDate(t0.Add(10 * time.Minute))
	noExp := supabase(legacyUUID, t0)
	noExp.Expiry = nil
	otherSecret := []byte("another-secret-another-secret-another-secret")
	expiredBadSig := joseSign(t, jose.HS256, otherSecret, "", supabase(legacyUUID, t0.Add(-time.Hour)))
	rsaKey := newRSA(t)
	pubDER, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	// HS256 signed with the RSA public key as the HMAC secret: the alg
	// confusion attack. golang-jwt refuses []byte keys for RS, and
	// authgate never hands a JWKS key to an HS token.
	confusion := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": legacyUUID, "aud": "authenticated", "iss": "https://ref.supabase.co/auth/v1", "exp": t0.Add(time.Hour).Unix()})
		s, err := tok.SignedString(pubPEM)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()
	payload := b64(`{"sub":"` + legacyUUID + `","aud":"authenticated","iss":"https://ref.supabase.co/auth/v1","exp":` + formatInt(t0.Add(time.Hour).Unix()) + `}`)

	tests := []struct {
		name     string
		token    string
		class    Class
		verified bool
		subject  string
		reason   string
	}{
		{"missing", "", ClassMissing, false, "", "no token"},
		{"uuid lower", legacyUUID, ClassUUID, false, legacyUUID, "legacy uuid"},
		{"uuid upper normalised", strings.ToUpper(legacyUUID), ClassUUID, false, legacyUUID, "legacy uuid"},
		{"uuid with braces", "{" + legacyUUID + "}", ClassMalformed, false, "", "neither a uuid nor a jwt"},
		{"uuid with whitespace", " " + legacyUUID, ClassMalformed, false, "", "neither a uuid nor a jwt"},
		{"uuid without dashes", strings.ReplaceAll(legacyUUID, "-", ""), ClassMalformed, false, "", "neither a uuid nor a jwt"},
		{"garbage", "hello world", ClassMalformed, false, "", "neither a uuid nor a jwt"},
		{"two segments", "abc.def", ClassMalformed, false, "", "neither a uuid nor a jwt"},
		{"empty segment", "abc..def", ClassMalformed, false, "", "neither a uuid nor a jwt"},
		{"over 8 KiB", strings.Repeat("a", MaxTokenLen+1), ClassMalformed, false, "", "token over 8 KiB"},
		{"three segments not json", "abc.def.ghi", ClassMalformed, false, "", "undecodable jwt"},
		{"valid supabase HS256", valid, ClassJWT, true, legacyUUID, "valid jwt"},
		{"expired", expired, ClassJWTExpired, false, legacyUUID, "token expired"},
		{"expired within leeway", inLeeway, ClassJWT, true, legacyUUID, "valid jwt"},
		{"expired with bad signature", expiredBadSig, ClassJWTInvalid, false, "", "signature invalid"},
		{"wrong audience", joseSign(t, jose.HS256, testSecret, "", wrongAud), ClassJWTInvalid, false, "", "wrong audience"},
		{"wrong issuer", joseSign(t, jose.HS256, testSecret, "", wrongIss), ClassJWTInvalid, false, "", "wrong issuer"},
		{"not yet valid", joseSign(t, jose.HS256, testSecret, "", notYet), ClassJWTInvalid, false, "", "not yet valid"},
		{"missing exp", joseSign(t, jose.HS256, testSecret, "", noExp), ClassJWTInvalid, false, "", "exp claim missing"},
		{"bad signature", joseSign(t, jose.HS256, otherSecret, "", supabase(legacyUUID, t0.Add(time.Hour))), ClassJWTInvalid, false, "", "signature invalid"},
		{"alg none", b64(`{"alg":"none","typ":"JWT"}`) + "." + payload + ".", ClassJWTInvalid, false, "", "algorithm not allowed"},
		{"alg none with junk signature", b64(`{"alg":"none","typ":"JWT"}`) + "." + payload + ".x", ClassMalformed, false, "", "undecodable jwt"},
		{"alg None", b64(`{"alg":"None","typ":"JWT"}`) + "." + payload + ".", ClassJWTInvalid, false, "", "algorithm not allowed"},
		{"HS384 not in allow-list", joseSign(t, jose.HS384, testSecret, "", supabase(legacyUUID, t0.Add(time.Hour))), ClassJWTInvalid, false, "", "algorithm not allowed"},
		{"HS256 signed with RSA public key", confusion, ClassJWTInvalid, false, "", "signature invalid"},
		// Regression (battery): crit was ignored (RFC 7515 §4.1.11).
		{"crit header", joseSignCrit(t), ClassJWTInvalid, false, "", "unsupported crit header"},
		{"ES256 with no JWKS", joseSign(t, jose.ES256, newEC(t), "k1", supabase(legacyUUID, t0.Add(time.Hour))), ClassJWTInvalid, false, "", "no key for this algorithm or kid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := v.Classify(context.Background(), tt.token, t0)
			if got.Class != tt.class || got.Verified != tt.verified || got.Subject != tt.subject || got.Reason != tt.reason {
				t.Errorf("got %v verified=%v subject=%q reason=%q, want %v verified=%v subject=%q reason=%q",
					got.Class, got.Verified, got.Subject, got.Reason, tt.class, tt.verified, tt.subject, tt.reason)
			}
		})
	}
}

func formatInt(n int64) string { return strconv.FormatInt(n, 10) }

func TestClassifyUnverified(t *testing.T) {
	v := NewVerifier(VerifyConfig{Algorithms: []string{"HS256", "ES256"}, Audience: "authenticated"})
	if v.CanVerify() {
		t.Fatal("CanVerify with no keys: got true, want false")
	}
	other := []byte(strings.Repeat("whatever-secret-", 4)) // 64 bytes: enough for HS512
	tests := []struct {
		name  string
		token string
		class Class
	}{
		{"valid structure", joseSign(t, jose.HS256, other, "", supabase(legacyUUID, t0.Add(time.Hour))), ClassJWT},
		{"ES256 structure", joseSign(t, jose.ES256, newEC(t), "k", supabase(legacyUUID, t0.Add(time.Hour))), ClassJWT},
		{"expired", joseSign(t, jose.HS256, other, "", supabase(legacyUUID, t0.Add(-time.Hour))), ClassJWTExpired},
		{"alg not allowed", joseSign(t, jose.HS512, other, "", supabase(legacyUUID, t0.Add(time.Hour))), ClassJWTInvalid},
		{"alg none", b64(`{"alg":"none"}`) + "." + b64(`{"exp":`+formatInt(t0.Add(time.Hour).Unix())+`}`) + ".", ClassJWTInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := v.Classify(context.Background(), tt.token, t0)
			if got.Class != tt.class || got.Verified {
				t.Errorf("got %v verified=%v (%s), want %v verified=false", got.Class, got.Verified, got.Reason, tt.class)
			}
		})
	}
}

func TestClassifyJWKS(t *testing.T) {
	ec1, ec2, rs := newEC(t), newEC(t), newRSA(t)
	srv := newJWKSServer(t, publicJWK(ec1, "k1", "ES256"), publicJWK(rs, "r1", "RS256"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ks, err := NewJWKS(ctx, srv.URL, JWKSOptions{UnknownKIDEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	v := NewVerifier(VerifyConfig{
		HS256Secret: testSecret, JWKS: ks, Algorithms: []string{"HS256", "ES256", "RS256"},
		Audience: "authenticated", KeyTimeout: 200 * time.Millisecond,
	})
	claims := supabase(legacyUUID, t0.Add(time.Hour))
	// The JWKS RSA public key as an HS256 secret, the confusion attack
	// with a key the attacker can download.
	rsDER, _ := x509.MarshalPKIXPublicKey(&rs.PublicKey)
	tests := []struct {
		name  string
		token string
		class Class
	}{
		{"ES256 known kid", joseSign(t, jose.ES256, ec1, "k1", claims), ClassJWT},
		{"RS256 known kid", joseSign(t, jose.RS256, rs, "r1", claims), ClassJWT},
		{"ES256 signed by another key with known kid", joseSign(t, jose.ES256, ec2, "k1", claims), ClassJWTInvalid},
		{"ES256 unknown kid", joseSign(t, jose.ES256, ec2, "k9", claims), ClassJWTInvalid},
		{"RS256 with kid of an EC key", joseSign(t, jose.RS256, rs, "k1", claims), ClassJWTInvalid},
		{"HS256 keyed with JWKS public key", joseSign(t, jose.HS256, rsDER, "r1", claims), ClassJWTInvalid},
		{"HS256 with the secret still fine", joseSign(t, jose.HS256, testSecret, "", claims), ClassJWT},
		{"ES256 expired", joseSign(t, jose.ES256, ec1, "k1", supabase(legacyUUID, t0.Add(-time.Hour))), ClassJWTExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := v.Classify(context.Background(), tt.token, t0)
			if got.Class != tt.class {
				t.Errorf("got %v (%s), want %v", got.Class, got.Reason, tt.class)
			}
		})
	}

	t.Run("rotation", func(t *testing.T) {
		// Supabase rotates: k2 appears. The first token with k2 triggers
		// one refetch (the unknown-kid limiter allows one burst; a fresh
		// client, because the table above spent this one's).
		ks, err := NewJWKS(ctx, srv.URL, JWKSOptions{UnknownKIDEvery: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		v := v.WithKeySet(ks)
		srv.rotate(publicJWK(ec1, "k1", "ES256"), publicJWK(ec2, "k2", "ES256"))
		tok := joseSign(t, jose.ES256, ec2, "k2", claims)
		got := v.Classify(context.Background(), tok, t0)
		if got.Class != ClassJWT {
			t.Fatalf("after rotation: got %v (%s), want jwt", got.Class, got.Reason)
		}
	})

	t.Run("unknown kid flood is bounded", func(t *testing.T) {
		before := srv.fetches.Load()
		start := time.Now()
		for i := range 50 {
			tok := joseSign(t, jose.ES256, ec2, "flood-"+formatInt(int64(i)), claims)
			if got := v.Classify(context.Background(), tok, t0); got.Class != ClassJWTInvalid {
				t.Fatalf("flood %d: got %v, want jwt_invalid", i, got.Class)
			}
		}
		if n := srv.fetches.Load() - before; n > 1 {
			t.Errorf("JWKS fetches during a flood of 50 unknown kids: got %d, want at most 1", n)
		}
		if el := time.Since(start); el > 3*time.Second {
			t.Errorf("50 unknown kids took %v; requests must not wait on refetches", el)
		}
	})
}

func TestIsUUID(t *testing.T) {
	for _, s := range []string{legacyUUID, strings.ToUpper(legacyUUID), "00000000-0000-0000-0000-000000000000"} {
		if !IsUUID(s) {
			t.Errorf("IsUUID(%q): got false, want true", s)
		}
	}
	for _, s := range []string{"", legacyUUID[:35], legacyUUID + "0", "21a2151a-cd37-41d5-a1c7_124bb05e7a6a", "g1a2151a-cd37-41d5-a1c7-124bb05e7a6a", "21a2151acd3741d5a1c7124bb05e7a6a----"} {
		if IsUUID(s) {
			t.Errorf("IsUUID(%q): got true, want false", s)
		}
	}
}

// joseSignCrit signs a valid HS256 token whose header lists an extension
// in crit.
func joseSignCrit(t *testing.T) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT").WithHeader("crit", []string{"x-ext"}).WithHeader("x-ext", true)
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: testSecret}, opts)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := josejwt.Signed(s).Claims(supabase(legacyUUID, t0.Add(time.Hour))).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
