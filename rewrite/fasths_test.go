package rewrite

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
)

// hsToken signs header and claims JSON as they are, so tests and the fuzz
// target control every byte golang-jwt and the fast path will read.
func hsToken(t testing.TB, alg, header, claims string) string {
	t.Helper()
	signed := b64(header) + "." + b64(claims)
	sig, err := jwt.GetSigningMethod(alg).Sign(signed, testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + b64(string(sig))
}

// agree runs the fast path and golang-jwt's parser on token. When the fast
// path answers, golang-jwt must accept the token and decode the same
// claims. It returns whether the fast path answered.
func agree(t *testing.T, v *Verifier, token string) bool {
	t.Helper()
	var fast, slow jwt.RegisteredClaims
	if !v.hsFast(token, &fast) {
		return false
	}
	if r, ok := v.parse(context.Background(), token, &slow); !ok {
		t.Fatalf("fast path accepted what golang-jwt refuses (%s: %s)", r.Class, r.Reason)
	}
	if !reflect.DeepEqual(fast, slow) {
		t.Fatalf("claims differ:\nfast %#v\nslow %#v", fast, slow)
	}
	return true
}

const plainHeader = `{"alg":"HS256","typ":"JWT"}`

func TestFastHSTakesSupabaseTokens(t *testing.T) {
	v := hsVerifier()
	// A real-world shape: signed by go-jose, not by the test's own helper.
	tok := joseSign(t, jose.HS256, testSecret, "", supabase(legacyUUID, t0.Add(time.Hour)))
	if !agree(t, v, tok) {
		t.Fatal("fast path declined a plain Supabase HS256 token")
	}
	full := `{"aud":"authenticated","exp":1795000000,"iat":1794996400,"iss":"https://ref.supabase.co/auth/v1",` +
		`"sub":"21a2151a-cd37-41d5-a1c7-124bb05e7a6a","email":"a@b.c","phone":"","app_metadata":{"provider":"email",` +
		`"providers":["email"]},"user_metadata":{"name":"Zoë \"Z\" \u00e9"},"role":"authenticated","aal":"aal1",` +
		`"amr":[{"method":"password","timestamp":1794996400}],"session_id":"x","is_anonymous":false}`
	if !agree(t, v, hsToken(t, "HS256", `{"alg":"HS256","kid":"k1","typ":"JWT"}`, full)) {
		t.Fatal("fast path declined a full Supabase claim set")
	}
}

func TestFastHSMatchesGolangJWT(t *testing.T) {
	v := NewVerifier(VerifyConfig{HS256Secret: testSecret, Algorithms: []string{"HS256", "HS384", "HS512"}})
	cases := []struct {
		name, alg, header, claims string
		fast                      bool // the fast path must answer
	}{
		{"plain", "HS256", plainHeader, `{"sub":"u","exp":1795000000}`, true},
		{"hs384", "HS384", `{"alg":"HS384"}`, `{"sub":"u","exp":1795000000}`, true},
		{"hs512", "HS512", `{"alg":"HS512"}`, `{"sub":"u","exp":1795000000}`, true},
		{"white space", "HS256", " {\"alg\" : \"HS256\"}\n", "\t{ \"exp\" : 1 , \"sub\":\"u\" }\r\n", true},
		{"fractional exp", "HS256", plainHeader, `{"exp":1795000000.75,"nbf":-1.5,"iat":1e9}`, true},
		{"names fold case", "HS256", plainHeader, `{"SUB":"a","Exp":2,"ISS":"i","AuD":"x","jTi":"j"}`, true},
		{"long s folds to s", "HS256", plainHeader, `{"ſub":"a","exp":2}`, true},
		{"last duplicate wins", "HS256", plainHeader, `{"sub":"a","exp":1,"sub":"b","Sub":"c","exp":3}`, true},
		{"header duplicate alg", "HS256", `{"alg":"none","alg":"HS256"}`, `{"exp":1}`, true},
		{"aud array", "HS256", plainHeader, `{"aud":["a","b"],"exp":1}`, true},
		{"aud empty array", "HS256", plainHeader, `{"aud":[],"exp":1}`, true},
		{"unicode sub", "HS256", plainHeader, `{"sub":"zoë","exp":1}`, true},
		{"nested unknowns", "HS256", plainHeader, `{"x":{"sub":"no","exp":"no"},"y":[1,{"a":null}],"exp":1}`, true},
		{"empty object", "HS256", plainHeader, `{}`, true},

		{"escaped sub", "HS256", plainHeader, `{"sub":"a\u0062","exp":1}`, false},
		{"escaped name", "HS256", plainHeader, `{"s\u0075b":"a","exp":1}`, false},
		{"crit", "HS256", `{"alg":"HS256","crit":["b64"]}`, `{"exp":1}`, false},
		{"alg case", "HS256", `{"ALG":"HS256","alg":"HS256"}`, `{"exp":1}`, true},
		{"exp string", "HS256", plainHeader, `{"exp":"1"}`, false},
		{"exp null", "HS256", plainHeader, `{"exp":null}`, false},
		{"exp huge", "HS256", plainHeader, `{"exp":1e400}`, false},
		{"sub number", "HS256", plainHeader, `{"sub":1,"exp":1}`, false},
		{"aud mixed", "HS256", plainHeader, `{"aud":["a",1],"exp":1}`, false},
		{"claims array", "HS256", plainHeader, `[1]`, false},
		{"claims null", "HS256", plainHeader, `null`, false},
		{"trailing garbage", "HS256", plainHeader, `{"exp":1}x`, false},
		{"header not json", "HS256", `alg`, `{"exp":1}`, false},
		{"header number out of range", "HS256", `{"alg":"HS256","x":1e999}`, `{"exp":1}`, false},
		{"header nested number", "HS256", `{"alg":"HS256","jwk":{"n":[1e400]}}`, `{"exp":1}`, false},
		{"header number", "HS256", `{"alg":"HS256","x":1}`, `{"exp":1}`, false},
		{"claim number out of range elsewhere", "HS256", plainHeader, `{"x":1e999,"exp":1}`, true},
		{"invalid utf-8", "HS256", plainHeader, "{\"sub\":\"\xff\",\"exp\":1}", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok := hsToken(t, c.alg, c.header, c.claims)
			if got := agree(t, v, tok); got != c.fast {
				t.Fatalf("fast path answered %v, want %v", got, c.fast)
			}
		})
	}
}

func TestFastHSDeclinesWhatItMustNotJudge(t *testing.T) {
	v := hsVerifier() // allows HS256, ES256, RS256
	good := hsToken(t, "HS256", plainHeader, `{"iss":"https://ref.supabase.co/auth/v1","aud":"authenticated","sub":"u","exp":1900000000}`)
	var c jwt.RegisteredClaims
	for name, tok := range map[string]string{
		"bad signature":      good[:len(good)-2] + "AA",
		"signature too long": good + strings.Repeat("A", 100),
		"alg not allowed":    hsToken(t, "HS512", `{"alg":"HS512"}`, `{"exp":1}`),
		"alg none":           b64(`{"alg":"none"}`) + "." + b64(`{"exp":1}`) + ".",
		"padded base64":      b64(plainHeader) + "=." + b64(`{"exp":1}`) + ".x",
		"huge claims":        hsToken(t, "HS256", plainHeader, `{"exp":1,"x":"`+strings.Repeat("a", maxFastSegment)+`"}`),
	} {
		if v.hsFast(tok, &c) {
			t.Errorf("%s: fast path answered", name)
		}
	}
	if none := NewVerifier(VerifyConfig{Algorithms: []string{"HS256"}}); none.hsFast(good, &c) {
		t.Error("fast path answered without a secret")
	}
	// The whole Classify result is the same either way.
	if r := v.Classify(context.Background(), good, t0); r.Class != ClassJWT || !r.Verified || r.Subject != "u" {
		t.Errorf("Classify = %+v", r)
	}
}

// FuzzFastHS signs arbitrary header and claims JSON with the test secret
// and checks that whenever the fast path answers, golang-jwt's parser
// accepts the token and decodes the same claims.
func FuzzFastHS(f *testing.F) {
	f.Add(plainHeader, `{"sub":"u","exp":1795000000,"aud":["a"]}`, uint8(0))
	f.Add(`{"alg":"HS384","kid":"x"}`, `{"SUB":"a","ſub":"b","Exp":1.5e9,"nbf":-0.5}`, uint8(1))
	f.Add(`{"alg":"HS512","alg":"HS512"}`, `{"aud":"x","iat":0,"jti":"j","o":{"sub":1}}`, uint8(2))
	f.Add(plainHeader, `{"exp":1e308,"nbf":-1e308,"iat":123456789012345678901234567890}`, uint8(0))
	f.Add(plainHeader, "{\"sub\":\"\\ud800\",\"exp\":01}", uint8(0))
	f.Add(`{"alg":"HS256","x":1e999}`, `{"exp":1}`, uint8(0))
	v := NewVerifier(VerifyConfig{HS256Secret: testSecret, Algorithms: []string{"HS256", "HS384", "HS512"}})
	algs := []string{"HS256", "HS384", "HS512"}
	f.Fuzz(func(t *testing.T, header, claims string, alg uint8) {
		agree(t, v, hsToken(t, algs[int(alg)%len(algs)], header, claims))
	})
}
