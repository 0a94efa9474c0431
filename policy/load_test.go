package policy_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"authgate/policy"
	"authgate/rewrite"
)

var update = flag.Bool("update", false, "rewrite testdata/bad/*.err from the current output (review the diff!)")

func date(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestLoadExampleConfig(t *testing.T) {
	s := loadExample(t)

	t.Run("top level", func(t *testing.T) {
		tests := []struct {
			name      string
			got, want any
		}{
			{"File", s.File, exampleFile},
			{"Listen (PORT unset: the default)", s.Listen, ":8080"},
			{"AdminListen", s.AdminListen, "127.0.0.1:9091"},
			{"HealthPath", s.HealthPath, "/healthz"},
			{"ShutdownTimeout", s.ShutdownTimeout, 25 * time.Second},
			{"TrustedProxies", strings.Join(s.TrustedNames, ","), "private,cloudflare"},
			{"Upstream.UpgradeTimeout", s.Upstream.UpgradeTimeout, 90 * time.Second},
			{"Upstream.ResponseTimeout", s.Upstream.ResponseTimeout, 90 * time.Second},
			{"Upstream.WriteTimeout", s.Upstream.WriteTimeout, 10 * time.Second},
			{"Upstream.URL", s.Upstream.URL.String(), testUpstream},
			{"Upstream.HostHeader", s.Upstream.HostHeader, policy.HostUpstream},
			{"Upstream.DialTimeout", s.Upstream.DialTimeout, 5 * time.Second},
			{"JWKSURL", s.JWKSURL, ""},
			{"Verifier.CanVerify", s.Verifier.CanVerify(), true},
			{"Verifier secret", string(s.Verifier.Config().HS256Secret), testSecret},
			{"Verifier algorithms", strings.Join(s.Verifier.Config().Algorithms, ","), "HS256"},
			{"Verifier audience", s.Verifier.Config().Audience, "authenticated"},
			{"Verifier issuer", s.Verifier.Config().Issuer, ""},
			{"Verifier leeway", s.Verifier.Config().Leeway, 30 * time.Second},
			{"Minter set", s.Minter != nil, true},
			{"Log", s.Log.Level + " " + s.Log.Format + " " + s.Log.UserIDs, "info json plain"},
			{"Log.HashKey", len(s.Log.HashKey), 0},
			{"Log.Heartbeat (default)", s.Log.Heartbeat, 5 * time.Minute},
			{"Log.MaxLinesPerMinute (default)", s.Log.MaxLinesPerMinute, 3000},
			{"Unmatched", s.Unmatched, policy.ActionPass},
			{"RateLimit", s.RateLimit, policy.RateLimit{PerMinute: 30, Burst: 10}},
			{"Warnings", len(s.Warnings), 0},
			{"route count", len(s.Routes), 2},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if tt.got != tt.want {
					t.Errorf("got %v, want %v", tt.got, tt.want)
				}
			})
		}
		if s.Minter != nil {
			if got := s.Minter.Algorithm(); got != "HS256" {
				t.Errorf("Minter.Algorithm() = %q, want HS256", got)
			}
			if got := s.Minter.TTL(); got != 5*time.Minute {
				t.Errorf("Minter.TTL() = %v, want 5m", got)
			}
			if got := s.Minter.PublicJWKS(); got != nil {
				t.Errorf("Minter.PublicJWKS() = %s, want nil for an HS256 key", got)
			}
		}
	})

	if len(s.Routes) != 2 {
		t.Fatalf("got %d routes, want 2", len(s.Routes))
	}
	ws, api := s.Routes[0], s.Routes[1]
	t.Run("routes", func(t *testing.T) {
		tests := []struct {
			name      string
			got, want any
		}{
			{"pam-ws name", ws.Name, "pam-ws"},
			{"pam-ws index", ws.Index, 0},
			{"pam-ws path", ws.Path, "/api/v1/pam/ws"},
			{"pam-ws exact", ws.Prefix, false},
			{"pam-ws websocket", fmt.Sprint(ws.WebSocket != nil && *ws.WebSocket), "true"},
			{"pam-ws sources", sourceList(ws.Sources), "query:token header:authorization protocol cookie:sb-access-token"},
			{"pam-ws forward", ws.Forward.String(), "same"},
			{"pam-ws reject_with", ws.RejectHTTP, false},
			{"pam-ws origins (origins: [] restricts nothing)", len(ws.Origins), 0},
			{"pam-ws close_on_expiry", ws.CloseOnExpiry, true},
			{"pam-ws revoke_open", ws.RevokeOpen, true},
			{"pam-ws codes", ws.Codes, policy.DefaultRejections},
			{"api name", api.Name, "api"},
			{"api index", api.Index, 1},
			{"api path", api.Path, "/api/"},
			{"api prefix", api.Prefix, true},
			{"api websocket", fmt.Sprint(api.WebSocket != nil && !*api.WebSocket), "true"},
			{"api sources", sourceList(api.Sources), "header:authorization"},
			{"api reject_with (default close)", api.RejectHTTP, false},
			{"api origins", len(api.Origins), 0},
			{"api close_on_expiry (default)", api.CloseOnExpiry, false},
			{"api revoke_open (default)", api.RevokeOpen, true},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if tt.got != tt.want {
					t.Errorf("got %v, want %v", tt.got, tt.want)
				}
			})
		}
	})

	t.Run("stages", func(t *testing.T) {
		tests := []struct {
			name  string
			route *policy.Route
			class rewrite.Class
			want  policy.Rule
		}{
			{"pam-ws jwt", ws, rewrite.ClassJWT, single(policy.ActionPass)},
			{"pam-ws jwt_expired", ws, rewrite.ClassJWTExpired, single(policy.ActionReject)},
			{"pam-ws jwt_invalid", ws, rewrite.ClassJWTInvalid, single(policy.ActionReject)},
			{"pam-ws malformed", ws, rewrite.ClassMalformed, single(policy.ActionReject)},
			{"pam-ws missing", ws, rewrite.ClassMissing, single(policy.ActionReject)},
			{"pam-ws uuid", ws, rewrite.ClassUUID, policy.Rule{Stages: []policy.Stage{
				{Until: date("2026-12-15T00:00:00Z"), Action: policy.ActionRewrite},
				{Until: date("2027-01-15T00:00:00Z"), Action: policy.ActionReject, Percent: 25, Otherwise: policy.ActionRewrite},
				{Action: policy.ActionReject, DryRun: true, Otherwise: policy.ActionRewrite},
			}}},
			{"api missing", api, rewrite.ClassMissing, single(policy.ActionPass)},
			{"api jwt", api, rewrite.ClassJWT, single(policy.ActionPass)},
			{"api uuid", api, rewrite.ClassUUID, policy.Rule{Stages: []policy.Stage{
				{Until: date("2026-12-15T00:00:00Z"), Action: policy.ActionRewrite},
				{Action: policy.ActionReject},
			}}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if got := tt.route.Rules[tt.class]; !ruleEqual(got, tt.want) {
					t.Errorf("got %+v, want %+v", got, tt.want)
				}
			})
		}
	})

	t.Run("PORT from the environment", func(t *testing.T) {
		e := exampleEnv()
		e["PORT"] = "10000"
		s, err := policy.Load(exampleFile, policy.Options{LookupEnv: env(e)})
		if err != nil {
			t.Fatal(err)
		}
		if s.Listen != ":10000" {
			t.Errorf("Listen: got %q, want %q", s.Listen, ":10000")
		}
	})

	t.Run("unset variables", func(t *testing.T) {
		urlLine := lineOf(t, exampleFile, `url: "${UPSTREAM_URL}"`)
		verifyLine := lineOf(t, exampleFile, `hs256_secret: "${SUPABASE_JWT_SECRET}"`)
		// The mint secret is the second such line.
		mintLine := nthLine(t, exampleFile, `hs256_secret: "${SUPABASE_JWT_SECRET}"`, 2)
		unsetURL := fmt.Sprintf("%s:%d: upstream.url: environment variable UPSTREAM_URL is not set; set it, or write ${UPSTREAM_URL:-default}", exampleFile, urlLine)
		unsetVerify := fmt.Sprintf("%s:%d: verify.hs256_secret: environment variable SUPABASE_JWT_SECRET is not set; set it, or write ${SUPABASE_JWT_SECRET:-default}", exampleFile, verifyLine)
		unsetMint := fmt.Sprintf("%s:%d: mint.hs256_secret: environment variable SUPABASE_JWT_SECRET is not set; set it, or write ${SUPABASE_JWT_SECRET:-default}", exampleFile, mintLine)
		tests := []struct {
			name  string
			unset []string
			want  []string
		}{
			{"UPSTREAM_URL", []string{"UPSTREAM_URL"}, []string{unsetURL}},
			{"SUPABASE_JWT_SECRET", []string{"SUPABASE_JWT_SECRET"}, []string{unsetVerify, unsetMint}},
			{"both", []string{"UPSTREAM_URL", "SUPABASE_JWT_SECRET"}, []string{unsetURL, unsetVerify, unsetMint}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				e := exampleEnv()
				for _, k := range tt.unset {
					delete(e, k)
				}
				s, err := policy.Load(exampleFile, policy.Options{LookupEnv: env(e)})
				if s != nil {
					t.Errorf("got a snapshot, want none")
				}
				if got, want := fmt.Sprint(err), strings.Join(tt.want, "\n"); got != want {
					t.Errorf("got error\n%s\nwant\n%s", got, want)
				}
			})
		}
	})
}

func nthLine(t testing.TB, file, substr string, n int) int {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, substr) {
			if n--; n == 0 {
				return i + 1
			}
		}
	}
	t.Fatalf("%s: fewer than %d lines contain %q", file, n, substr)
	return 0
}

func single(a policy.Action) policy.Rule {
	return policy.Rule{Single: true, Stages: []policy.Stage{{Action: a}}}
}

func ruleEqual(a, b policy.Rule) bool {
	return a.Single == b.Single && slices.EqualFunc(a.Stages, b.Stages, func(x, y policy.Stage) bool {
		return x.Until.Equal(y.Until) && x.Action == y.Action && x.Percent == y.Percent && x.Otherwise == y.Otherwise && x.DryRun == y.DryRun
	})
}

func sourceList(srcs []rewrite.Source) string {
	out := make([]string, len(srcs))
	for i, s := range srcs {
		out[i] = s.String()
	}
	return strings.Join(out, " ")
}

// TestLoadBadConfigs loads every testdata/bad/*.yaml and pins its whole
// error output in the sibling .err file (regenerate with -update, then
// read the diff: a golden file is only as right as its review).
func TestLoadBadConfigs(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 40 {
		t.Fatalf("got %d bad configs, want at least 40", len(files))
	}
	opt := policy.Options{LookupEnv: env(exampleEnv())}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		t.Run(name, func(t *testing.T) {
			s, err := policy.Load(file, opt)
			if err == nil {
				t.Fatalf("got a valid snapshot (warnings %v), want an error", s.Warnings)
			}
			var perr *policy.Error
			if !errors.As(err, &perr) {
				t.Fatalf("got %T, want *policy.Error", err)
			}
			for i, p := range perr.Problems {
				if p.File != file {
					t.Errorf("problem %d: File %q, want %q", i, p.File, file)
				}
				if p.Msg == "" {
					t.Errorf("problem %d: empty Msg", i)
				}
				if i > 0 && p.Line < perr.Problems[i-1].Line {
					t.Errorf("problem %d at line %d follows line %d: want line order", i, p.Line, perr.Problems[i-1].Line)
				}
			}
			golden := strings.TrimSuffix(file, ".yaml") + ".err"
			got := err.Error() + "\n"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("got\n%s\nwant\n%s", got, want)
			}
		})
	}
}

// TestLoadErrorsDeterministic pins that the same file gives the same text
// every time. Problems on one line are kept in the order they were found,
// and keys of YAML mappings (close_codes, mint.claims) must be visited in
// file order, not Go's random map order.
func TestLoadErrorsDeterministic(t *testing.T) {
	tests := []struct{ name, text string }{
		{"close_codes on one line", "upstream: {url: http://x}\nroutes:\n  - name: a\n    match: {path: /a}\n    close_codes: {foo: 4000, bar: 4001, baz: 1, qux: 2}\n"},
		{"reserved claims on one line", "upstream: {url: http://x}\nmint: {hs256_secret: 0123456789abcdef0123456789abcdef, claims: {sub: a, iat: 1, exp: 2, jti: x}}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := policy.Parse("c.yaml", []byte(tt.text), policy.Options{LookupEnv: env(nil)})
			if err == nil {
				t.Fatal("got no error, want one")
			}
			first := err.Error()
			for range 50 {
				_, err := policy.Parse("c.yaml", []byte(tt.text), policy.Options{LookupEnv: env(nil)})
				if got := fmt.Sprint(err); got != first {
					t.Fatalf("got\n%s\nthen\n%s\nwant the same text every time", first, got)
				}
			}
		})
	}
}

func TestLoadWarnings(t *testing.T) {
	tests := []struct {
		name string
		text string
		want []string
	}{
		{
			name: "no verify key",
			text: "upstream: {url: http://x}\nroutes:\n  - name: ws\n    match: {path: /ws}\n",
			want: []string{"test.yaml: verify: JWTs cannot be verified because no key is configured (hs256_secret or jwks_url): they are classified by structure and expiry only, logged verified=false"},
		},
		{
			name: "no routes",
			text: "upstream: {url: http://x}\nverify: {hs256_secret: " + testSecret + "}\n",
			want: []string{"test.yaml: routes: no routes: every request is proxied unchecked (unmatched: pass)"},
		},
		{
			name: "short secrets",
			text: "upstream: {url: http://x}\nverify:\n  hs256_secret: short\nmint:\n  hs256_secret: short\nroutes: [{name: a, match: {path: /a}}]\n",
			want: []string{
				"test.yaml:3: verify.hs256_secret: shorter than 32 bytes; Supabase secrets are longer, check the value",
				"test.yaml:5: mint.hs256_secret: shorter than 32 bytes; Supabase secrets are longer, check the value",
			},
		},
		{
			name: "origins without a uuid policy",
			text: "upstream: {url: http://x}\nverify: {hs256_secret: " + testSecret + "}\nroutes:\n  - name: a\n    match: {path: /a}\n    legacy:\n      origins: [https://app.example.com]\n",
			want: []string{"test.yaml:7: routes[0].legacy.origins: set, but policy.uuid is not: UUIDs are rejected anyway (the default)"},
		},
		{
			name: "asymmetric algorithms without jwks_url",
			text: "upstream: {url: http://x}\nverify:\n  hs256_secret: " + testSecret + "\n  algorithms: [ES256]\nroutes: [{name: a, match: {path: /a}}]\n",
			want: []string{"test.yaml:4: verify.algorithms: asymmetric algorithms are allowed but verify.jwks_url is not set: such tokens will be jwt_invalid"},
		},
		{
			// Issue 13: behind Render's proxy with nothing trusted, one
			// looping client's rejections lock every other client out.
			name: "rate limit on, nothing trusted",
			text: "upstream: {url: http://x}\nverify: {hs256_secret: " + testSecret + "}\nroutes: [{name: a, match: {path: /a}}]\nrate_limit: {per_minute: 30}\n",
			want: []string{"test.yaml: trusted_proxies: empty while rate_limit is on: behind a proxy (Render, a load balancer) every client shares the proxy's address, one client_ip and one rate-limit bucket; on Render write [private, cloudflare]"},
		},
		{
			name: "rate limit off, nothing trusted",
			text: "upstream: {url: http://x}\nverify: {hs256_secret: " + testSecret + "}\nroutes: [{name: a, match: {path: /a}}]\nrate_limit: {per_minute: 0}\n",
		},
		{
			name: "ca_file on a plain http upstream",
			text: "upstream: {url: http://x, ca_file: testdata/ca.pem}\nverify: {hs256_secret: " + testSecret + "}\nroutes: [{name: a, match: {path: /a}}]\ntrusted_proxies: [private]\n",
			want: []string{"test.yaml:1: upstream.ca_file: set, but upstream.url is http: the CA is used only for https upstreams"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := tt.text
			if !strings.Contains(text, "rate_limit") && !strings.Contains(text, "trusted_proxies") {
				text += "trusted_proxies: [private]\n" // keeps the warning above out of the other cases
			}
			s, err := policy.Parse("test.yaml", []byte(text), policy.Options{LookupEnv: env(nil)})
			if err != nil {
				t.Fatalf("got error %v, want warnings only", err)
			}
			var got []string
			for _, w := range s.Warnings {
				got = append(got, w.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got warnings\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			d := s.Description(time.Now())
			if !slices.Equal(d.Warnings, tt.want) {
				t.Errorf("Description().Warnings: got %q, want %q", d.Warnings, tt.want)
			}
		})
	}
	t.Run("no key: JWTs still classified, unverified", func(t *testing.T) {
		s := parse(t, "upstream: {url: http://x}\nroutes:\n  - name: ws\n    match: {path: /ws}\n")
		if s.Verifier.CanVerify() {
			t.Errorf("CanVerify: got true, want false")
		}
		now := time.Now()
		tok := hs256(t, "any key at all, nobody checks it", jwt.MapClaims{"sub": "u1", "exp": now.Add(time.Hour).Unix()})
		d := s.Decide(bg, upgrade("/ws?token="+tok), true, now)
		if d.Class != rewrite.ClassJWT || d.Verified || d.Action != policy.ActionPass {
			t.Errorf("got class %v verified %v action %v, want jwt false pass", d.Class, d.Verified, d.Action)
		}
	})
}

func TestLoadEnvExpansion(t *testing.T) {
	tests := []struct {
		name  string
		vars  map[string]string
		value string // written as health_path: "<value>"
		want  string
	}{
		{"plain", map[string]string{"P": "healthz"}, "/${P}", "/healthz"},
		{"default used when unset", nil, "/${P:-ready}", "/ready"},
		{"default used when empty", map[string]string{"P": ""}, "/${P:-ready}", "/ready"},
		{"set wins over default", map[string]string{"P": "live"}, "/${P:-ready}", "/live"},
		{"empty without default stays empty", map[string]string{"P": ""}, "/x${P}", "/x"},
		{"empty default", nil, "/x${P:-}", "/x"},
		{"default with colon and slash", nil, "/${P:-a:b/c}", "/a:b/c"},
		{"two variables", map[string]string{"A": "a", "B": "b"}, "/${A}-${B}", "/a-b"},
		{"$${ is a literal ${", nil, "/$${P}", "/${P}"},
		{"$${ after text", map[string]string{"P": "x"}, "/a$${P}b${P}", "/a${P}bx"},
		{"lone $ untouched", nil, "/a$b", "/a$b"},
		{"value is not re-expanded", map[string]string{"P": "${Q}"}, "/${P}", "/${Q}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := fmt.Sprintf("upstream: {url: http://x}\nhealth_path: %q\n", tt.value)
			s, err := policy.Parse("test.yaml", []byte(text), policy.Options{LookupEnv: env(tt.vars)})
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if s.HealthPath != tt.want {
				t.Errorf("got %q, want %q", s.HealthPath, tt.want)
			}
		})
	}
	t.Run("in mint claims, keeping YAML types", func(t *testing.T) {
		text := "upstream: {url: http://x}\nmint:\n  hs256_secret: ${S}\n  claims: {role: \"${ROLE:-authenticated}\", tier: 3, beta: true, note: \"$${literal}\"}\n"
		s, err := policy.Parse("test.yaml", []byte(text), policy.Options{LookupEnv: env(map[string]string{"S": testSecret})})
		if err != nil {
			t.Fatal(err)
		}
		got := s.Description(time.Now()).Mint.Claims
		want := map[string]any{"role": "authenticated", "tier": int64(3), "beta": true, "note": "${literal}"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("got %v, want %v", got, want)
		}
		tok, _, err := s.Minter.Mint("4b0a5f8e-3c1d-4e2f-9a7b-0c1d2e3f4a5b", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		var claims jwt.MapClaims
		if _, err := jwt.ParseWithClaims(tok, &claims, func(*jwt.Token) (any, error) { return []byte(testSecret), nil }); err != nil {
			t.Fatalf("minted token does not verify with the expanded secret: %v", err)
		}
		if claims["role"] != "authenticated" || claims["note"] != "${literal}" || claims["tier"] != float64(3) || claims["beta"] != true {
			t.Errorf("minted claims: got %v, want role, note, tier, beta as configured", claims)
		}
	})
}

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"30s", 30 * time.Second, false},
		{"5m", 5 * time.Minute, false},
		{"1h30m", 90 * time.Minute, false},
		{"7d", 7 * 24 * time.Hour, false},
		{"1d12h", 36 * time.Hour, false},
		{"1d30m15s", 24*time.Hour + 30*time.Minute + 15*time.Second, false},
		{"0d", 0, false},
		{"0s", 0, false},
		{"", 0, true},
		{"d", 0, true},
		{"7", 0, true},
		{"1.5d", 0, true},
		{"-1d", 0, true},
		{"1d-1h", 0, true},
		{"1dd", 0, true},
		{"1h1d", 0, true},
		{"one day", 0, true},
		{"7 d", 0, true},
		{"65535d", 65535 * 24 * time.Hour, false},
		// Days plus hours past the int64 range: an error, not a wrapped
		// negative duration.
		{"65535d2562047h", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := policy.ParseDuration(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("got error %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			if err == nil {
				back, err := policy.ParseDuration(policy.FormatDuration(got))
				if err != nil || back != got {
					t.Errorf("round trip via %q: got %v %v, want %v", policy.FormatDuration(got), back, err, got)
				}
			}
		})
	}
	t.Run("in the config", func(t *testing.T) {
		s := parse(t, "shutdown_timeout: 1d12h\nupstream: {url: http://x, dial_timeout: 7d}\nmint: {hs256_secret: "+testSecret+", ttl: 1d}\n")
		if s.ShutdownTimeout != 36*time.Hour {
			t.Errorf("shutdown_timeout: got %v, want 36h", s.ShutdownTimeout)
		}
		if s.Upstream.DialTimeout != 7*24*time.Hour {
			t.Errorf("dial_timeout: got %v, want 168h", s.Upstream.DialTimeout)
		}
		if s.Minter.TTL() != 24*time.Hour {
			t.Errorf("mint.ttl: got %v, want 24h", s.Minter.TTL())
		}
		if got := s.Description(time.Now()).ShutdownTimeout; got != "36h0m0s" {
			t.Errorf("described shutdown_timeout: got %q, want %q", got, "36h0m0s")
		}
	})
}

func TestParseTime(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Time
		wantErr bool
	}{
		{"2025-08-16", time.Date(2025, 8, 16, 0, 0, 0, 0, time.UTC), false},
		{"2025-08-16T09:30:00Z", time.Date(2025, 8, 16, 9, 30, 0, 0, time.UTC), false},
		{"2025-08-16T09:30:00+02:00", time.Date(2025, 8, 16, 7, 30, 0, 0, time.UTC), false},
		{"2025-08-16T09:30:00.5-01:00", time.Date(2025, 8, 16, 10, 30, 0, 5e8, time.UTC), false},
		{"2025-8-16", time.Time{}, true},
		{"2025-13-01", time.Time{}, true},
		{"2025-02-30", time.Time{}, true},
		{"2025-08-16 09:30:00", time.Time{}, true},
		{"2025-08-16T09:30:00", time.Time{}, true},
		{"16/08/2025", time.Time{}, true},
		{"", time.Time{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := policy.ParseTime(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("got error %v, want error %v", err, tt.wantErr)
			}
			if !got.Equal(tt.want) || got.Location() != time.UTC {
				t.Errorf("got %v, want %v (UTC)", got, tt.want)
			}
		})
	}
	t.Run("in stages", func(t *testing.T) {
		s := parse(t, `upstream: {url: http://x}
mint: {hs256_secret: `+testSecret+`}
routes:
  - name: ws
    match: {path: /ws}
    policy:
      uuid:
        - {until: 2025-08-16, action: rewrite}
        - {until: "2025-08-16T09:00:00+02:00", action: reject, percent: 50, otherwise: rewrite}
        - {action: reject}
`)
		st := s.Routes[0].Rules[rewrite.ClassUUID].Stages
		if want := date("2025-08-16T00:00:00Z"); !st[0].Until.Equal(want) {
			t.Errorf("stage 0: got %v, want %v", st[0].Until, want)
		}
		if want := date("2025-08-16T07:00:00Z"); !st[1].Until.Equal(want) {
			t.Errorf("stage 1: got %v, want %v", st[1].Until, want)
		}
	})
}

func TestLoadTrustedProxiesNamedSets(t *testing.T) {
	s := parse(t, "upstream: {url: http://x}\ntrusted_proxies: [private, cloudflare, 198.51.100.0/24]\n")
	if got, want := strings.Join(s.TrustedNames, " "), "private cloudflare 198.51.100.0/24"; got != want {
		t.Errorf("TrustedNames: got %q, want %q", got, want)
	}
	in := func(a string) bool {
		for _, p := range s.TrustedProxies {
			if p.Contains(netip.MustParseAddr(a)) {
				return true
			}
		}
		return false
	}
	tests := []struct {
		addr string
		want bool
	}{
		{"10.214.0.7", true},        // Render's proxy: RFC 1918
		{"172.31.255.1", true},      // RFC 1918
		{"192.168.1.1", true},       // RFC 1918
		{"100.64.3.4", true},        // RFC 6598
		{"127.0.0.1", true},         // loopback
		{"169.254.1.1", true},       // link-local
		{"fd12::1", true},           // RFC 4193
		{"fe80::1", true},           // link-local
		{"::1", true},               // loopback
		{"172.70.42.7", true},       // Cloudflare 172.64.0.0/13
		{"104.23.255.1", true},      // Cloudflare 104.16.0.0/13
		{"2606:4700::6810:1", true}, // Cloudflare v6
		{"198.51.100.9", true},      // the CIDR
		{"203.0.113.5", false},      // a browser
		{"8.8.8.8", false},          // not Cloudflare
		{"172.32.0.1", false},       // just past 172.16.0.0/12
		{"2001:db8::1", false},
	}
	for _, tt := range tests {
		if got := in(tt.addr); got != tt.want {
			t.Errorf("%s trusted: got %v, want %v", tt.addr, got, tt.want)
		}
	}
	if d := s.Description(time.Now()); !slices.Equal(d.TrustedProxies, []string{"private", "cloudflare", "198.51.100.0/24"}) {
		t.Errorf("/policy trusted_proxies: got %q, want the entries as written", d.TrustedProxies)
	}
}

func TestLoadCAFile(t *testing.T) {
	s, err := policy.Load("testdata/ca.yaml", policy.Options{LookupEnv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("testdata/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	ca, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if s.Upstream.RootCAs == nil {
		t.Fatal("RootCAs nil, want the system roots plus ca.pem")
	}
	if _, err := ca.Verify(x509.VerifyOptions{Roots: s.Upstream.RootCAs}); err != nil {
		t.Errorf("ca.pem does not verify against RootCAs: %v", err)
	}
	abs, _ := filepath.Abs("testdata/ca.pem")
	if got, _ := filepath.Abs(s.Upstream.CAFile); got != abs {
		t.Errorf("CAFile: got %q, want %q (relative to the config's directory)", s.Upstream.CAFile, abs)
	}
	if !slices.Contains(s.Files, s.Upstream.CAFile) {
		t.Errorf("Files %q: want the CA file listed, so a reloader watches it", s.Files)
	}
}

// TestLoadHashCoversNamedFiles pins issue 14: the snapshot's hash changes
// when a file the config names changes, config.yaml untouched, so a
// rotated mint key is not skipped as "unchanged".
func TestLoadHashCoversNamedFiles(t *testing.T) {
	files := map[string][]byte{"c.yaml": []byte("upstream: {url: http://x}\nmint: {private_key_file: k.pem, kid: k1}\n")}
	key1, _ := os.ReadFile("testdata/bad/ec256.pem")
	files["k.pem"] = key1
	opt := policy.Options{LookupEnv: env(nil), ReadFile: func(p string) ([]byte, error) {
		if b, ok := files[p]; ok {
			return b, nil
		}
		return nil, os.ErrNotExist
	}}
	s1, err := policy.Load("c.yaml", opt)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := policy.Load("c.yaml", opt)
	if err != nil {
		t.Fatal(err)
	}
	if s1.Hash != s2.Hash {
		t.Error("same content, different hashes")
	}
	files["k.pem"] = append(append([]byte{}, key1...), '\n')
	s3, err := policy.Load("c.yaml", opt)
	if err != nil {
		t.Fatal(err)
	}
	if s3.Hash == s1.Hash {
		t.Error("key file changed, hash did not: a rotation would be skipped")
	}
	delete(files, "k.pem")
	_, err = policy.Load("c.yaml", opt)
	var pe *policy.Error
	if !errors.As(err, &pe) || pe.Hash == s1.Hash || pe.Hash == ([32]byte{}) {
		t.Errorf("key file gone: got %v (hash %x), want an error with a hash of its own", err, pe.Hash)
	}
}

func TestLoadTrustedProxies(t *testing.T) {
	s := parse(t, "upstream: {url: http://x}\ntrusted_proxies: [10.1.2.3, \"2001:db8::1\", 10.0.0.0/8, \"::ffff:192.0.2.7\", \"fd00::/8\"]\n")
	want := []netip.Prefix{
		netip.MustParsePrefix("10.1.2.3/32"),
		netip.MustParsePrefix("2001:db8::1/128"),
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("192.0.2.7/32"),
		netip.MustParsePrefix("fd00::/8"),
	}
	if !slices.Equal(s.TrustedProxies, want) {
		t.Errorf("got %v, want %v", s.TrustedProxies, want)
	}
	if !s.TrustedProxies[0].Contains(netip.MustParseAddr("10.1.2.3")) || s.TrustedProxies[0].Contains(netip.MustParseAddr("10.1.2.4")) {
		t.Errorf("single address %v: want it to hold 10.1.2.3 and nothing else", s.TrustedProxies[0])
	}
}

func TestLoadMintPrivateKeyFile(t *testing.T) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	ecPKCS8, err := x509.MarshalPKCS8PrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	rsaPKCS8, err := x509.MarshalPKCS8PrivateKey(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		block   *pem.Block
		alg     string
		public  any
		keyPath string // as written in the config; "" means keys/mint.pem
	}{
		{"ES256 SEC 1", &pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}, "ES256", &ecKey.PublicKey, ""},
		{"ES256 PKCS 8", &pem.Block{Type: "PRIVATE KEY", Bytes: ecPKCS8}, "ES256", &ecKey.PublicKey, ""},
		{"RS256 PKCS 1", &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}, "RS256", &rsaKey.PublicKey, ""},
		{"RS256 PKCS 8", &pem.Block{Type: "PRIVATE KEY", Bytes: rsaPKCS8}, "RS256", &rsaKey.PublicKey, ""},
		{"absolute path", &pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}, "ES256", &ecKey.PublicKey, "ABS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.MkdirAll(filepath.Join(dir, "keys"), 0o700); err != nil {
				t.Fatal(err)
			}
			keyFile := filepath.Join(dir, "keys", "mint.pem")
			if err := os.WriteFile(keyFile, pem.EncodeToMemory(tt.block), 0o600); err != nil {
				t.Fatal(err)
			}
			written := "keys/mint.pem" // relative: resolved against the config's directory
			if tt.keyPath == "ABS" {
				written = keyFile
			}
			cfg := filepath.Join(dir, "config.yaml")
			text := "upstream: {url: http://x}\nmint:\n  private_key_file: " + written + "\n  kid: authgate-1\n"
			if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			// Load from another working directory's point of view: the
			// relative key path must not depend on the process's cwd.
			s, err := policy.Load(cfg, policy.Options{LookupEnv: env(nil)})
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if got := s.Minter.Algorithm(); got != tt.alg {
				t.Errorf("Algorithm: got %q, want %q", got, tt.alg)
			}
			var set struct {
				Keys []map[string]any `json:"keys"`
			}
			if err := json.Unmarshal(s.Minter.PublicJWKS(), &set); err != nil {
				t.Fatalf("PublicJWKS: %v", err)
			}
			if len(set.Keys) != 1 || set.Keys[0]["kid"] != "authgate-1" || set.Keys[0]["alg"] != tt.alg {
				t.Errorf("PublicJWKS: got %v, want one key, kid authgate-1, alg %s", set.Keys, tt.alg)
			}
			for _, private := range []string{"d", "p", "q", "dp", "dq", "qi"} {
				if _, ok := set.Keys[0][private]; ok {
					t.Errorf("PublicJWKS holds private member %q", private)
				}
			}
			tok, _, err := s.Minter.Mint("4b0a5f8e-3c1d-4e2f-9a7b-0c1d2e3f4a5b", time.Now())
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return tt.public, nil }, jwt.WithValidMethods([]string{tt.alg}))
			if err != nil {
				t.Fatalf("minted token does not verify with the public key: %v", err)
			}
			if parsed.Header["kid"] != "authgate-1" {
				t.Errorf("kid header: got %v, want authgate-1", parsed.Header["kid"])
			}
			if d := s.Description(time.Now()); d.Mint == nil || d.Mint.Algorithm != tt.alg || d.Mint.KID != "authgate-1" {
				t.Errorf("Description().Mint: got %+v, want algorithm %s kid authgate-1", d.Mint, tt.alg)
			}
		})
	}
	t.Run("weak keys refused", func(t *testing.T) {
		p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalECPrivateKey(p384)
		if err != nil {
			t.Fatal(err)
		}
		small, err := rsa.GenerateKey(rand.Reader, 1024)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []struct {
			name  string
			block *pem.Block
			want  string
		}{
			{"P-384", &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}, "ecdsa mint key must use curve P-256 (ES256)"},
			{"RSA 1024", &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(small)}, "rsa mint key must have at least 2048 bits"},
		} {
			t.Run(k.name, func(t *testing.T) {
				dir := t.TempDir()
				if err := os.WriteFile(filepath.Join(dir, "k.pem"), pem.EncodeToMemory(k.block), 0o600); err != nil {
					t.Fatal(err)
				}
				cfg := filepath.Join(dir, "c.yaml")
				if err := os.WriteFile(cfg, []byte("upstream: {url: http://x}\nmint:\n  private_key_file: k.pem\n  kid: a\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				_, err := policy.Load(cfg, policy.Options{LookupEnv: env(nil)})
				want := cfg + ":3: mint.private_key_file: " + k.want
				if fmt.Sprint(err) != want {
					t.Errorf("got %v, want %s", err, want)
				}
			})
		}
	})
}

// TestDescriptionHidesSecrets is the /policy view's guarantee: no secret
// reaches its JSON (STYLE "Logs and metrics", BBE TestHideConfigSecrets).
func TestDescriptionHidesSecrets(t *testing.T) {
	const (
		verifySecret = "verify-secret-0123456789abcdef-VERIFY"
		mintSecret   = "mint-secret-0123456789abcdef-MINT-xx"
		hashKey      = "hash-key-0123456789-HASH"
	)
	text := `upstream: {url: "https://api.example.com"}
verify:
  hs256_secret: "${VS}"
  audience: authenticated
mint:
  hs256_secret: "${MS}"
log:
  user_ids: hash
  hash_key: "${HK}"
routes:
  - name: ws
    match: {path: /ws, websocket: true}
    legacy: {origins: ["https://app.example.com"]}
    policy:
      uuid:
        - {until: 2026-12-15, action: rewrite}
        - {action: reject, dry_run: true, otherwise: rewrite}
`
	s, err := policy.Parse("test.yaml", []byte(text), policy.Options{LookupEnv: env(map[string]string{"VS": verifySecret, "MS": mintSecret, "HK": hashKey})})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(s.Description(date("2026-06-01T00:00:00Z")))
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{verifySecret, mintSecret, hashKey, "0123456789abcdef"} {
		if strings.Contains(string(b), secret) {
			t.Errorf("Description JSON holds secret %q:\n%s", secret, b)
		}
	}
	for _, want := range []string{`"hs256_secret_set":true`, `"hash_key_set":true`, `"user_ids":"hash"`, `"algorithm":"HS256"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("Description JSON lacks %s:\n%s", want, b)
		}
	}
	// The example's own secret, through its real file.
	ex := loadExample(t)
	b, err = json.Marshal(ex.Description(time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), testSecret) {
		t.Errorf("example Description JSON holds the secret:\n%s", b)
	}
}

func TestDescriptionCurrentStage(t *testing.T) {
	s := loadExample(t)
	tests := []struct {
		now  string
		want string
	}{
		{"2026-06-01T00:00:00Z", "stage 0 (until 2026-12-15T00:00:00Z): rewrite"},
		{"2026-12-15T00:00:00Z", "stage 1 (until 2027-01-15T00:00:00Z): reject 25%, otherwise rewrite"},
		{"2027-02-01T00:00:00Z", "stage 2 (open-ended): dry run of reject, otherwise rewrite"},
	}
	for _, tt := range tests {
		t.Run(tt.now, func(t *testing.T) {
			d := s.Description(date(tt.now))
			if got := d.Routes[0].Current["uuid"]; got != tt.want {
				t.Errorf("pam-ws uuid: got %q, want %q", got, tt.want)
			}
			if got := d.Routes[0].Current["jwt"]; got != "pass" {
				t.Errorf("pam-ws jwt: got %q, want %q", got, "pass")
			}
			if got := d.Routes[1].Current["missing"]; got != "pass" {
				t.Errorf("api missing: got %q, want %q", got, "pass")
			}
			if !d.Now.Equal(date(tt.now)) {
				t.Errorf("Now: got %v, want %v", d.Now, tt.now)
			}
		})
	}
	t.Run("Description does not share its routes", func(t *testing.T) {
		a := s.Description(date("2026-06-01T00:00:00Z"))
		s.Description(date("2027-02-01T00:00:00Z"))
		if got := a.Routes[0].Current["uuid"]; !strings.HasPrefix(got, "stage 0") {
			t.Errorf("an earlier Description changed: got %q, want stage 0", got)
		}
	})
}

// TestLoadAliasBomb pins that YAML aliases cannot blow a few lines of
// config up into millions of values: mint.claims is free-form, and
// expanding nested aliases there is exponential (10^depth values here).
// yaml.v3 refuses "excessive aliasing" when it decodes values itself; the
// policy decoder must bound it too.
func TestLoadAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("upstream: {url: http://x}\nmint:\n  hs256_secret: " + testSecret + "\n  claims:\n    l0: &l0 [x,x,x,x,x,x,x,x,x,x]\n")
	for i := 1; i < 6; i++ {
		p := fmt.Sprintf("*l%d", i-1)
		fmt.Fprintf(&b, "    l%d: &l%d [%s]\n", i, i, strings.Repeat(p+",", 9)+p)
	}
	start := time.Now()
	s, err := policy.Parse("bomb.yaml", []byte(b.String()), policy.Options{LookupEnv: env(nil)})
	took := time.Since(start)
	if err == nil {
		t.Errorf("a %d-byte config expanding to 10^6 claim values loaded (in %v): want an error about excessive aliasing", b.Len(), took)
		_ = s
	}
}

// TestLoadDefaultSourcesPlainHTTPRoute pins that a route matching only
// plain requests (websocket: false) loads without token.from: the default
// list holds protocol, which exists only on upgrades, so for such a route
// it must be left out rather than reported as an error on a key the
// operator never wrote (routes[0].token.from[2]).
func TestLoadDefaultSourcesPlainHTTPRoute(t *testing.T) {
	tests := []struct {
		name, match, want string
	}{
		{"websocket false", "{prefix: /api/, websocket: false}", "query:token header:authorization"},
		{"websocket true", "{path: /ws, websocket: true}", "query:token header:authorization protocol"},
		{"websocket absent", "{path: /ws}", "query:token header:authorization protocol"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := "upstream: {url: http://x}\nroutes:\n  - name: r\n    match: " + tt.match + "\n"
			s, err := policy.Parse("test.yaml", []byte(text), policy.Options{LookupEnv: env(nil)})
			if err != nil {
				t.Fatalf("got error\n%v\nwant none", err)
			}
			if got := sourceList(s.Routes[0].Sources); got != tt.want {
				t.Errorf("got sources %q, want %q", got, tt.want)
			}
		})
	}
}

// TestLoadLogHeartbeatAndBudget: issue 21's log.heartbeat and
// log.max_lines_per_minute, their defaults and their "off" values (the
// invalid ones are pinned in testdata/bad/log_heartbeat_*.yaml and
// log_budget_*.yaml).
func TestLoadLogHeartbeatAndBudget(t *testing.T) {
	tests := []struct {
		name, log     string
		wantHeartbeat time.Duration
		wantBudget    int
	}{
		{"defaults", "{level: info}", 5 * time.Minute, 3000},
		{"off", "{heartbeat: 0s, max_lines_per_minute: 0}", 0, 0},
		{"one second", "{heartbeat: 1s, max_lines_per_minute: 300}", time.Second, 300},
		{"days", "{heartbeat: 1d}", 24 * time.Hour, 3000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := "upstream: {url: http://x}\nlog: " + tt.log + "\n"
			s, err := policy.Parse("test.yaml", []byte(text), policy.Options{LookupEnv: env(nil)})
			if err != nil {
				t.Fatalf("got error\n%v\nwant none", err)
			}
			if s.Log.Heartbeat != tt.wantHeartbeat || s.Log.MaxLinesPerMinute != tt.wantBudget {
				t.Errorf("got heartbeat %v, budget %d; want %v, %d", s.Log.Heartbeat, s.Log.MaxLinesPerMinute, tt.wantHeartbeat, tt.wantBudget)
			}
			d := s.Description(time.Unix(0, 0))
			if d.Log.Heartbeat != policy.FormatDuration(tt.wantHeartbeat) || d.Log.MaxLinesPerMinute != tt.wantBudget {
				t.Errorf("/policy shows heartbeat %q, budget %d", d.Log.Heartbeat, d.Log.MaxLinesPerMinute)
			}
		})
	}
}

func TestLoadFile(t *testing.T) {
	t.Run("missing file", func(t *testing.T) {
		_, err := policy.Load("testdata/no-such-config.yaml", policy.Options{LookupEnv: env(nil)})
		want := "testdata/no-such-config.yaml: cannot read config: no such file or directory"
		if fmt.Sprint(err) != want {
			t.Errorf("got %v, want %s", err, want)
		}
	})
	t.Run("hash follows the bytes", func(t *testing.T) {
		a := parse(t, "upstream: {url: http://x}\n")
		b := parse(t, "upstream: {url: http://x}\n")
		c := parse(t, "upstream: {url: http://x} # changed\n")
		if a.Hash != b.Hash {
			t.Errorf("same bytes: got different hashes")
		}
		if a.Hash == c.Hash {
			t.Errorf("different bytes: got the same hash")
		}
	})
	t.Run("ReadFile option reads the config and key files", func(t *testing.T) {
		pemKey, err := os.ReadFile("testdata/bad/ec256.pem")
		if err != nil {
			t.Fatal(err)
		}
		files := map[string][]byte{
			"/etc/authgate/config.yaml":   []byte("upstream: {url: http://x}\nmint: {private_key_file: keys/mint.pem, kid: k1}\n"),
			"/etc/authgate/keys/mint.pem": pemKey,
		}
		var read []string
		opt := policy.Options{LookupEnv: env(nil), ReadFile: func(name string) ([]byte, error) {
			read = append(read, name)
			if b, ok := files[name]; ok {
				return b, nil
			}
			return nil, os.ErrNotExist
		}}
		s, err := policy.Load("/etc/authgate/config.yaml", opt)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := strings.Join(read, " "), "/etc/authgate/config.yaml /etc/authgate/keys/mint.pem"; got != want {
			t.Errorf("read %q, want %q", got, want)
		}
		if s.Minter.Algorithm() != "ES256" {
			t.Errorf("got %s, want ES256", s.Minter.Algorithm())
		}
	})
}

// TestDescriptionMintDefaults pins that /policy shows the effective mint
// settings, defaults included: with mint.claims not written, minted tokens
// carry role: authenticated, and the description must say so.
func TestDescriptionMintDefaults(t *testing.T) {
	s := parse(t, "upstream: {url: http://x}\nmint: {hs256_secret: "+testSecret+"}\n")
	m := s.Description(time.Now()).Mint
	if m == nil {
		t.Fatal("Mint: got nil, want a description")
	}
	if m.TTL != "5m0s" || m.Issuer != "authgate" || m.Audience != "authenticated" || m.Algorithm != "HS256" {
		t.Errorf("got ttl %q issuer %q audience %q algorithm %q, want 5m0s authgate authenticated HS256", m.TTL, m.Issuer, m.Audience, m.Algorithm)
	}
	tok, _, err := s.Minter.Mint(legacyUser, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var claims jwt.MapClaims
	if _, err := jwt.ParseWithClaims(tok, &claims, func(*jwt.Token) (any, error) { return []byte(testSecret), nil }); err != nil {
		t.Fatal(err)
	}
	if claims["role"] != "authenticated" {
		t.Fatalf("minted role: got %v, want authenticated", claims["role"])
	}
	if got := fmt.Sprint(m.Claims); got != "map[role:authenticated]" {
		t.Errorf("described claims: got %s, want map[role:authenticated] (what minted tokens carry)", got)
	}
}
