package policy_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"authgate/policy"
)

// The environment the example config needs (SPEC "Configuration"): the
// tests never read the process environment.
const (
	testSecret   = "super-secret-jwt-token-with-at-least-32-characters-long"
	testUpstream = "http://127.0.0.1:8000"
	exampleFile  = "../config.yaml"
)

// env returns a LookupEnv over vars only.
func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := vars[k]
		return v, ok
	}
}

func exampleEnv() map[string]string {
	return map[string]string{"UPSTREAM_URL": testUpstream, "SUPABASE_JWT_SECRET": testSecret}
}

// loadExample loads ../config.yaml with the example environment.
func loadExample(t testing.TB) *policy.Snapshot {
	t.Helper()
	s, err := policy.Load(exampleFile, policy.Options{LookupEnv: env(exampleEnv())})
	if err != nil {
		t.Fatalf("Load(%s) = %v, want no error", exampleFile, err)
	}
	return s
}

// parse loads a config given as text, failing the test on error.
func parse(t testing.TB, text string) *policy.Snapshot {
	t.Helper()
	s, err := policy.Parse("test.yaml", []byte(text), policy.Options{LookupEnv: env(exampleEnv())})
	if err != nil {
		t.Fatalf("Parse:\n%s\ngot error:\n%v\nwant none", text, err)
	}
	return s
}

// lineOf returns the 1-based line of the first line of file containing
// substr, so tests that pin positions in the shared example config follow
// edits to its comments.
func lineOf(t testing.TB, file, substr string) int {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, substr) {
			return i + 1
		}
	}
	t.Fatalf("%s: no line contains %q", file, substr)
	return 0
}

// hs256 signs claims with key; aud "authenticated" unless claims say
// otherwise.
func hs256(t testing.TB, key string, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// userJWT is a Supabase-like access token for sub, expiring at exp.
func userJWT(t testing.TB, sub string, exp time.Time) string {
	t.Helper()
	return hs256(t, testSecret, jwt.MapClaims{
		"sub": sub, "aud": "authenticated", "role": "authenticated",
		"iat": exp.Add(-time.Hour).Unix(), "exp": exp.Unix(),
	})
}

// upgrade builds a WebSocket upgrade request as a browser sends it.
func upgrade(target string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, target, nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Sec-WebSocket-Version", "13")
	r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	return r
}

var bg = context.Background()
