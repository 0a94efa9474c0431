package policy_test

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"authgate/policy"
	"authgate/rewrite"
)

const (
	legacyUser = "4b0a5f8e-3c1d-4e2f-9a7b-0c1d2e3f4a5b"
	appOrigin  = "https://app.example.com"
)

// stage0 is an instant in the example config's first uuid stage (rewrite).
var stage0 = date("2026-06-01T00:00:00Z")

// randomUUIDs returns n distinct v4-shaped UUIDs from a fixed seed, so
// share counts are the same on every run.
func randomUUIDs(n int, seed uint64) []string {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	out := make([]string, n)
	for i := range out {
		a, b := r.Uint64(), r.Uint64()
		out[i] = fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x", a>>32, a>>16&0xffff, a&0xfff, b>>48&0x3fff|0x8000, b&0xffffffffffff)
	}
	return out
}

func TestDecideClasses(t *testing.T) {
	s := loadExample(t)
	now := stage0
	valid := userJWT(t, "user-1", now.Add(time.Hour))
	expired := userJWT(t, "user-1", now.Add(-time.Hour))
	inLeeway := userJWT(t, "user-1", now.Add(-10*time.Second))
	wrongAud := hs256(t, testSecret, jwt.MapClaims{"sub": "user-1", "aud": "service_role", "exp": now.Add(time.Hour).Unix()})
	wrongKey := hs256(t, "another-secret-another-secret-another-secret", jwt.MapClaims{"sub": "user-1", "aud": "authenticated", "exp": now.Add(time.Hour).Unix()})
	noExp := hs256(t, testSecret, jwt.MapClaims{"sub": "user-1", "aud": "authenticated"})
	notYet := hs256(t, testSecret, jwt.MapClaims{"sub": "user-1", "aud": "authenticated", "nbf": now.Add(time.Hour).Unix(), "exp": now.Add(2 * time.Hour).Unix()})
	hs384, err := jwt.NewWithClaims(jwt.SigningMethodHS384, jwt.MapClaims{"sub": "user-1", "aud": "authenticated", "exp": now.Add(time.Hour).Unix()}).SignedString([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	// {"alg":"none"}.{"sub":"user-1","exp":<far>}.<junk signature>
	algNone := "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1c2VyLTEiLCJleHAiOjk5OTk5OTk5OTl9.AAAA"
	algNoneEmpty := strings.TrimSuffix(algNone, "AAAA")

	missing := policy.DefaultRejections[rewrite.ClassMissing]
	invalid := policy.DefaultRejections[rewrite.ClassJWTInvalid]
	malformed := policy.DefaultRejections[rewrite.ClassMalformed]
	exp := policy.DefaultRejections[rewrite.ClassJWTExpired]

	type want struct {
		route    string
		class    rewrite.Class
		source   string
		value    string // the token Decide saw
		verified bool
		user     string
		action   policy.Action
		reason   string
		rej      policy.Rejection
	}
	tests := []struct {
		name      string
		req       func() *http.Request
		websocket bool
		want      want
	}{
		{"jwt in query", func() *http.Request { return upgrade("/api/v1/pam/ws?token=" + valid) }, true,
			want{"pam-ws", rewrite.ClassJWT, "query:token", valid, true, "user-1", policy.ActionPass, "valid jwt", policy.Rejection{}}},
		{"jwt in Authorization", func() *http.Request {
			r := upgrade("/api/v1/pam/ws")
			r.Header.Set("Authorization", "Bearer "+valid)
			return r
		}, true, want{"pam-ws", rewrite.ClassJWT, "header:authorization", valid, true, "user-1", policy.ActionPass, "valid jwt", policy.Rejection{}}},
		{"jwt in Authorization, scheme in lower case", func() *http.Request {
			r := upgrade("/api/v1/pam/ws")
			r.Header.Set("Authorization", "bearer "+valid)
			return r
		}, true, want{"pam-ws", rewrite.ClassJWT, "header:authorization", valid, true, "user-1", policy.ActionPass, "valid jwt", policy.Rejection{}}},
		{"jwt as bearer.<token> subprotocol", func() *http.Request {
			r := upgrade("/api/v1/pam/ws")
			r.Header.Set("Sec-WebSocket-Protocol", "chat, bearer."+valid)
			return r
		}, true, want{"pam-ws", rewrite.ClassJWT, "protocol", valid, true, "user-1", policy.ActionPass, "valid jwt", policy.Rejection{}}},
		{"jwt after a bearer subprotocol marker", func() *http.Request {
			r := upgrade("/api/v1/pam/ws")
			r.Header.Set("Sec-WebSocket-Protocol", "bearer, "+valid)
			return r
		}, true, want{"pam-ws", rewrite.ClassJWT, "protocol", valid, true, "user-1", policy.ActionPass, "valid jwt", policy.Rejection{}}},
		{"jwt in cookie", func() *http.Request {
			r := upgrade("/api/v1/pam/ws")
			r.AddCookie(&http.Cookie{Name: "sb-access-token", Value: valid})
			return r
		}, true, want{"pam-ws", rewrite.ClassJWT, "cookie:sb-access-token", valid, true, "user-1", policy.ActionPass, "valid jwt", policy.Rejection{}}},
		{"expired jwt", func() *http.Request { return upgrade("/api/v1/pam/ws?token=" + expired) }, true,
			want{"pam-ws", rewrite.ClassJWTExpired, "query:token", expired, false, "user-1", policy.ActionReject, "token expired", exp}},
		{"expired within the leeway", func() *http.Request { return upgrade("/api/v1/pam/ws?token=" + inLeeway) }, true,
			want{"pam-ws", rewrite.ClassJWT, "query:token", inLeeway, true, "user-1", policy.ActionPass, "valid jwt", policy.Rejection{}}},
		{"wrong audience", func() *http.Request { return upgrade("/api/v1/pam/ws?token=" + wrongAud) }, true,
			want{"pam-ws", rewrite.ClassJWTInvalid, "query:token", wrongAud, false, "", policy.ActionReject, "wrong audience", invalid}},
		{"wrong key", func() *http.Request { return upgrade("/api/v1/pam/ws?token=" + wrongKey) }, true,
			want{"pam-ws", rewrite.ClassJWTInvalid, "query:token", wrongKey, false, "", policy.ActionReject, "signature invalid", invalid}},
		{"no exp", func() *http.Request { return upgrade("/api/v1/pam/ws?token=" + noExp) }, true,
			want{"pam-ws", rewrite.ClassJWTInvalid, "query:token", noExp, false, "", policy.ActionReject, "exp claim missing", invalid}},
		{"not yet valid", func() *http.Request { return upgrade("/api/v1/pam/ws?token=" + notYet) }, true,
			want{"pam-ws", rewrite.ClassJWTInvalid, "query:token", notYet, false, "", policy.ActionReject, "not yet valid", invalid}},
		{"HS384 not in the allow-list", func() *http.Request { return upgrade("/api/v1/pam/ws?token=" + hs384) }, true,
			want{"pam-ws", rewrite.ClassJWTInvalid, "query:token", hs384, false, "", policy.ActionReject, "algorithm not allowed", invalid}},
		{"alg none, empty signature", func() *http.Request { return upgrade("/api/v1/pam/ws?token=" + algNoneEmpty) }, true,
			want{"pam-ws", rewrite.ClassJWTInvalid, "query:token", algNoneEmpty, false, "", policy.ActionReject, "algorithm not allowed", invalid}},
		{"alg none", func() *http.Request { return upgrade("/api/v1/pam/ws?token=" + algNone) }, true,
			want{"pam-ws", rewrite.ClassJWTInvalid, "query:token", algNone, false, "", policy.ActionReject, "algorithm not allowed", invalid}},
		{"uuid from the allowed origin", func() *http.Request {
			r := upgrade("/api/v1/pam/ws?token=" + legacyUser)
			r.Header.Set("Origin", appOrigin)
			return r
		}, true, want{"pam-ws", rewrite.ClassUUID, "query:token", legacyUser, false, legacyUser, policy.ActionRewrite, "legacy uuid", policy.Rejection{}}},
		{"upper-case uuid is normalised", func() *http.Request {
			r := upgrade("/api/v1/pam/ws?token=" + strings.ToUpper(legacyUser))
			r.Header.Set("Origin", appOrigin)
			return r
		}, true, want{"pam-ws", rewrite.ClassUUID, "query:token", strings.ToUpper(legacyUser), false, legacyUser, policy.ActionRewrite, "legacy uuid", policy.Rejection{}}},
		{"garbage", func() *http.Request { return upgrade("/api/v1/pam/ws?token=hello") }, true,
			want{"pam-ws", rewrite.ClassMalformed, "query:token", "hello", false, "", policy.ActionReject, "neither a uuid nor a jwt", malformed}},
		{"over 8 KiB", func() *http.Request {
			r := upgrade("/api/v1/pam/ws")
			r.Header.Set("Authorization", "Bearer "+strings.Repeat("a", rewrite.MaxTokenLen+1))
			return r
		}, true, want{"pam-ws", rewrite.ClassMalformed, "header:authorization", strings.Repeat("a", rewrite.MaxTokenLen+1), false, "", policy.ActionReject, "token over 8 KiB", malformed}},
		{"missing", func() *http.Request { return upgrade("/api/v1/pam/ws") }, true,
			want{"pam-ws", rewrite.ClassMissing, "", "", false, "", policy.ActionReject, "no token", missing}},
		{"empty query token, no other", func() *http.Request { return upgrade("/api/v1/pam/ws?token=") }, true,
			want{"pam-ws", rewrite.ClassMissing, "", "", false, "", policy.ActionReject, "no token", missing}},
		{"Basic credentials are no token", func() *http.Request {
			r := upgrade("/api/v1/pam/ws")
			r.Header.Set("Authorization", "Basic dXNlcjpwYXNz")
			return r
		}, true, want{"pam-ws", rewrite.ClassMissing, "", "", false, "", policy.ActionReject, "no token", missing}},
		{"two different query tokens", func() *http.Request { return upgrade("/api/v1/pam/ws?token=" + valid + "&token=" + legacyUser) }, true,
			want{"pam-ws", rewrite.ClassMalformed, "query:token", valid, false, "", policy.ActionReject, "conflicting token values", malformed}},
		{"the first source that holds a value wins", func() *http.Request {
			r := upgrade("/api/v1/pam/ws?token=" + legacyUser)
			r.Header.Set("Origin", appOrigin)
			r.Header.Set("Authorization", "Bearer "+valid)
			return r
		}, true, want{"pam-ws", rewrite.ClassUUID, "query:token", legacyUser, false, legacyUser, policy.ActionRewrite, "legacy uuid", policy.Rejection{}}},
		{"an empty first source is skipped", func() *http.Request {
			r := upgrade("/api/v1/pam/ws?token=")
			r.Header.Set("Authorization", "Bearer "+valid)
			return r
		}, true, want{"pam-ws", rewrite.ClassJWT, "header:authorization", valid, true, "user-1", policy.ActionPass, "valid jwt", policy.Rejection{}}},
		{"api: missing passes", func() *http.Request { return httptest.NewRequest(http.MethodGet, "/api/v1/items", nil) }, false,
			want{"api", rewrite.ClassMissing, "", "", false, "", policy.ActionPass, "no token", policy.Rejection{}}},
		{"api: query is not a source there", func() *http.Request { return httptest.NewRequest(http.MethodGet, "/api/v1/items?token="+valid, nil) }, false,
			want{"api", rewrite.ClassMissing, "", "", false, "", policy.ActionPass, "no token", policy.Rejection{}}},
		{"api: uuid in Authorization, no Origin needed", func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/api/v1/items", nil)
			r.Header.Set("Authorization", "Bearer "+legacyUser)
			return r
		}, false, want{"api", rewrite.ClassUUID, "header:authorization", legacyUser, false, legacyUser, policy.ActionRewrite, "legacy uuid", policy.Rejection{}}},
		{"api: expired jwt", func() *http.Request {
			r := httptest.NewRequest(http.MethodGet, "/api/v1/items", nil)
			r.Header.Set("Authorization", "Bearer "+expired)
			return r
		}, false, want{"api", rewrite.ClassJWTExpired, "header:authorization", expired, false, "user-1", policy.ActionReject, "token expired", exp}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := s.Decide(bg, tt.req(), tt.websocket, now)
			w := tt.want
			if d.Route == nil || d.Route.Name != w.route {
				t.Fatalf("route: got %v, want %s", d.Route, w.route)
			}
			checks := []struct {
				what      string
				got, want any
			}{
				{"class", d.Class, w.class},
				{"source", d.Source.String(), w.source},
				{"token", d.Token().Value, w.value},
				{"verified", d.Verified, w.verified},
				{"user", d.User, w.user},
				{"action", d.Action, w.action},
				{"would", d.Would, policy.ActionNone},
				{"reason", d.Reason, w.reason},
				{"rejection", d.Rejection, w.rej},
				{"stage", d.Stage, 0},
			}
			for _, c := range checks {
				if c.got != c.want {
					t.Errorf("%s: got %v, want %v", c.what, c.got, c.want)
				}
			}
			if w.class == rewrite.ClassJWT || w.class == rewrite.ClassJWTExpired {
				if d.Expiry.IsZero() {
					t.Errorf("expiry: got zero, want the token's exp")
				}
			}
		})
	}
}

func TestDecideRouteMatching(t *testing.T) {
	ex := loadExample(t)
	custom := parse(t, `upstream: {url: http://x}
verify: {hs256_secret: `+testSecret+`}
unmatched: reject
routes:
  - name: exact
    match: {path: /a/b}
  - name: prefix
    match: {prefix: /a/}
  - name: ws-only
    match: {prefix: /w, websocket: true}
  - name: http-only
    match: {prefix: /w, websocket: false}
    token: {from: [header:authorization]}
  - name: never
    match: {path: /a/b}
`)
	tests := []struct {
		name      string
		s         *policy.Snapshot
		target    string
		websocket bool
		want      string // route name; "" for none
	}{
		{"example: the ws route", ex, "/api/v1/pam/ws?token=x", true, "pam-ws"},
		{"example: same path, plain request: the api prefix", ex, "/api/v1/pam/ws", false, "api"},
		{"example: exact path takes no trailing slash", ex, "/api/v1/pam/ws/", true, ""},
		{"example: exact path takes no suffix", ex, "/api/v1/pam/wsx", true, ""},
		{"example: api prefix", ex, "/api/v1/items", false, "api"},
		{"example: api prefix, upgrade", ex, "/api/v1/items", true, ""},
		{"example: prefix needs its slash", ex, "/api", false, ""},
		{"example: other path", ex, "/static/app.js", false, ""},
		{"exact", custom, "/a/b", false, "exact"},
		{"exact, upgrade (websocket absent matches both)", custom, "/a/b", true, "exact"},
		{"prefix", custom, "/a/c", false, "prefix"},
		{"prefix below the exact path", custom, "/a/b/c", true, "prefix"},
		{"websocket true", custom, "/w/x", true, "ws-only"},
		{"websocket false", custom, "/w/x", false, "http-only"},
		{"first match wins over a later equal route", custom, "/a/b", false, "exact"},
		{"case matters", custom, "/A/b", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, tt.target, nil)
			d := tt.s.Decide(bg, r, tt.websocket, stage0)
			got := ""
			if d.Route != nil {
				got = d.Route.Name
			}
			if got != tt.want {
				t.Fatalf("route: got %q, want %q", got, tt.want)
			}
			if m := tt.s.Match(r.URL.Path, tt.websocket); (m == nil) != (tt.want == "") || m != nil && m.Name != tt.want {
				t.Errorf("Match: got %v, want %q", m, tt.want)
			}
			if tt.want != "" {
				return
			}
			want := policy.Decision{Action: tt.s.Unmatched, Reason: "no route"}
			if tt.s.Unmatched == policy.ActionReject {
				want.Rejection = policy.Rejection{CloseCode: 4004, Status: http.StatusNotFound, Message: "not found"}
			}
			if d.Action != want.Action || d.Reason != want.Reason || d.Rejection != want.Rejection || d.Class != rewrite.ClassMissing {
				t.Errorf("unmatched: got action %v reason %q rejection %+v, want %v %q %+v", d.Action, d.Reason, d.Rejection, want.Action, want.Reason, want.Rejection)
			}
		})
	}
}

// uuidDecide decides a legacy UUID on the example's pam-ws route.
func uuidDecide(s *policy.Snapshot, user string, now time.Time) policy.Decision {
	r := upgrade("/api/v1/pam/ws?token=" + user)
	r.Header.Set("Origin", appOrigin)
	return s.Decide(bg, r, true, now)
}

func TestDecideStageBoundaries(t *testing.T) {
	s := loadExample(t)
	ws := s.Routes[0]
	end0 := date("2026-12-15T00:00:00Z")
	end1 := date("2027-01-15T00:00:00Z")
	// One user inside the 25% share of stage 1, one outside, chosen with
	// the route's own rollout test so the expectations are exact.
	var in, out string
	for _, u := range randomUUIDs(200, 1) {
		if ws.InRollout(u, 25) && in == "" {
			in = u
		}
		if !ws.InRollout(u, 25) && out == "" {
			out = u
		}
	}
	tests := []struct {
		name   string
		user   string
		now    time.Time
		stage  int
		action policy.Action
		would  policy.Action
	}{
		{"stage 0, 1ns before its until", in, end0.Add(-time.Nanosecond), 0, policy.ActionRewrite, policy.ActionNone},
		{"at until the next stage applies (in share)", in, end0, 1, policy.ActionReject, policy.ActionNone},
		{"at until the next stage applies (out of share)", out, end0, 1, policy.ActionRewrite, policy.ActionNone},
		{"1ns after until (in share)", in, end0.Add(time.Nanosecond), 1, policy.ActionReject, policy.ActionNone},
		{"stage 1, 1ns before its until", in, end1.Add(-time.Nanosecond), 1, policy.ActionReject, policy.ActionNone},
		{"last stage at the until before it: dry run", in, end1, 2, policy.ActionRewrite, policy.ActionReject},
		{"last stage, dry run, out of the old share too", out, end1.Add(time.Nanosecond), 2, policy.ActionRewrite, policy.ActionReject},
		{"last stage, years later", out, date("2035-01-01T00:00:00Z"), 2, policy.ActionRewrite, policy.ActionReject},
		{"stage 0 long before", out, date("2000-01-01T00:00:00Z"), 0, policy.ActionRewrite, policy.ActionNone},
		{"an until in another zone is the same instant", in, end0.In(time.FixedZone("X", -5*3600)).Add(-time.Nanosecond), 0, policy.ActionRewrite, policy.ActionNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := uuidDecide(s, tt.user, tt.now)
			if d.Stage != tt.stage || d.Action != tt.action || d.Would != tt.would {
				t.Errorf("got stage %d action %v would %v, want stage %d action %v would %v", d.Stage, d.Action, d.Would, tt.stage, tt.action, tt.would)
			}
			wantRej := policy.Rejection{}
			if tt.action == policy.ActionReject {
				wantRej = policy.DefaultRejections[rewrite.ClassUUID]
			}
			if d.Rejection != wantRej {
				t.Errorf("rejection: got %+v, want %+v", d.Rejection, wantRej)
			}
			if idx, _ := ws.Rules[rewrite.ClassUUID].At(tt.now); idx != tt.stage {
				t.Errorf("Rule.At: got stage %d, want %d", idx, tt.stage)
			}
		})
	}
	t.Run("api: reject after its only until", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodGet, "/api/v1/items", nil)
		r.Header.Set("Authorization", "Bearer "+legacyUser)
		for _, c := range []struct {
			now    time.Time
			action policy.Action
			stage  int
		}{{end0.Add(-time.Nanosecond), policy.ActionRewrite, 0}, {end0, policy.ActionReject, 1}} {
			d := s.Decide(bg, r, false, c.now)
			if d.Action != c.action || d.Stage != c.stage {
				t.Errorf("at %v: got %v stage %d, want %v stage %d", c.now, d.Action, d.Stage, c.action, c.stage)
			}
		}
	})
}

func TestDecidePercent(t *testing.T) {
	const cfg = `upstream: {url: http://x}
mint: {hs256_secret: ` + testSecret + `}
routes:
  - name: alpha
    match: {path: /alpha}
    policy:
      uuid:
        - {action: reject, percent: %d, otherwise: rewrite}
  - name: beta
    match: {path: /beta}
    policy:
      uuid:
        - {action: reject, percent: %d, otherwise: rewrite}
`
	decide := func(s *policy.Snapshot, path, user string) policy.Decision {
		return s.Decide(bg, httptest.NewRequest(http.MethodGet, path+"?token="+user, nil), false, stage0)
	}
	users := randomUUIDs(200, 42)

	t.Run("distribution", func(t *testing.T) {
		tests := []struct {
			percent  int
			min, max int // rejected users of 200
		}{
			{50, 60, 140},
			{25, 20, 80},
			{100, 200, 200},
			{1, 0, 12},
		}
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%d%%", tt.percent), func(t *testing.T) {
				s := parse(t, fmt.Sprintf(cfg, tt.percent, tt.percent))
				rejected := 0
				for _, u := range users {
					d := decide(s, "/alpha", u)
					switch d.Action {
					case policy.ActionReject:
						rejected++
						if d.Rejection != policy.DefaultRejections[rewrite.ClassUUID] {
							t.Errorf("%s: rejection got %+v, want the uuid default", u, d.Rejection)
						}
					case policy.ActionRewrite:
					default:
						t.Fatalf("%s: got action %v, want reject or rewrite", u, d.Action)
					}
					if in := s.Routes[0].InRollout(u, tt.percent); in != (d.Action == policy.ActionReject) {
						t.Errorf("%s: InRollout %v but action %v", u, in, d.Action)
					}
				}
				if rejected < tt.min || rejected > tt.max {
					t.Errorf("got %d of %d users rejected, want between %d and %d", rejected, len(users), tt.min, tt.max)
				}
			})
		}
	})

	t.Run("stable per user", func(t *testing.T) {
		s := parse(t, fmt.Sprintf(cfg, 50, 50))
		for _, u := range users[:20] {
			first := decide(s, "/alpha", u).Action
			for i := range 100 {
				if got := decide(s, "/alpha", u).Action; got != first {
					t.Fatalf("%s call %d: got %v, want %v as on the first call", u, i, got, first)
				}
			}
			if got := decide(s, "/alpha", strings.ToUpper(u)).Action; got != first {
				t.Errorf("%s in upper case: got %v, want %v (the same user)", u, got, first)
			}
			// A reload builds a new snapshot: the user keeps the answer.
			if got := decide(parse(t, fmt.Sprintf(cfg, 50, 50)), "/alpha", u).Action; got != first {
				t.Errorf("%s after reload: got %v, want %v", u, got, first)
			}
		}
	})

	t.Run("monotonic in percent", func(t *testing.T) {
		// Raising the share only adds users: nobody rejected at 25% is let
		// back in at 50%.
		s25, s50 := parse(t, fmt.Sprintf(cfg, 25, 25)), parse(t, fmt.Sprintf(cfg, 50, 50))
		for _, u := range users {
			if decide(s25, "/alpha", u).Action == policy.ActionReject && decide(s50, "/alpha", u).Action != policy.ActionReject {
				t.Errorf("%s: rejected at 25%%, got %v at 50%%, want reject", u, decide(s50, "/alpha", u).Action)
			}
		}
	})

	t.Run("independent across route names", func(t *testing.T) {
		s := parse(t, fmt.Sprintf(cfg, 50, 50))
		differ := 0
		for _, u := range users {
			if decide(s, "/alpha", u).Action != decide(s, "/beta", u).Action {
				differ++
			}
		}
		// Independent 50% draws differ for about half the users; the same
		// draw on both routes would differ for none, a mirrored one for all.
		if differ < 60 || differ > 140 {
			t.Errorf("got %d of %d users treated differently on alpha and beta, want between 60 and 140", differ, len(users))
		}
	})
}

func TestDecideDryRunStages(t *testing.T) {
	s := parse(t, `upstream: {url: http://x}
mint: {hs256_secret: `+testSecret+`}
routes:
  - name: dry
    match: {path: /dry}
    policy:
      uuid:
        - {until: 2026-01-01, action: reject, dry_run: true, otherwise: rewrite}
        - {until: 2027-01-01, action: reject, percent: 50, dry_run: true, otherwise: pass}
        - {action: pass, dry_run: true, otherwise: reject}
`)
	rt := s.Routes[0]
	users := randomUUIDs(50, 7)
	for _, u := range users {
		r := httptest.NewRequest(http.MethodGet, "/dry?token="+u, nil)
		t.Run(u, func(t *testing.T) {
			d := s.Decide(bg, r, false, date("2025-06-01T00:00:00Z"))
			if d.Action != policy.ActionRewrite || d.Would != policy.ActionReject || d.Rejection != (policy.Rejection{}) {
				t.Errorf("stage 0: got action %v would %v rejection %+v, want rewrite, would reject, no rejection", d.Action, d.Would, d.Rejection)
			}
			d = s.Decide(bg, r, false, date("2026-06-01T00:00:00Z"))
			wantWould := policy.ActionNone
			if rt.InRollout(u, 50) {
				wantWould = policy.ActionReject
			}
			if d.Action != policy.ActionPass || d.Would != wantWould {
				t.Errorf("stage 1: got action %v would %v, want pass would %v", d.Action, d.Would, wantWould)
			}
			d = s.Decide(bg, r, false, date("2028-01-01T00:00:00Z"))
			if d.Action != policy.ActionReject || d.Would != policy.ActionPass || d.Rejection != policy.DefaultRejections[rewrite.ClassUUID] {
				t.Errorf("stage 2: got action %v would %v rejection %+v, want reject, would pass, the uuid rejection", d.Action, d.Would, d.Rejection)
			}
		})
	}
}

func TestDecideLegacyOrigins(t *testing.T) {
	s := parse(t, `upstream: {url: http://x}
verify: {hs256_secret: `+testSecret+`}
mint: {hs256_secret: `+testSecret+`}
routes:
  - name: pam-ws
    match: {path: /api/v1/pam/ws, websocket: true}
    legacy:
      origins: ["https://app.example.com", "HTTPS://Admin.Example.com:8443/"]
    policy: {uuid: rewrite}
`)
	now := stage0
	valid := userJWT(t, "user-1", now.Add(time.Hour))
	refused := policy.DefaultRejections[rewrite.ClassUUID]
	tests := []struct {
		name    string
		token   string
		origins []string // Origin header values; nil sends none
		action  policy.Action
		reason  string
		stage   int
	}{
		{"allowed", legacyUser, []string{appOrigin}, policy.ActionRewrite, "legacy uuid", 0},
		{"allowed, trailing slash", legacyUser, []string{appOrigin + "/"}, policy.ActionRewrite, "legacy uuid", 0},
		{"allowed, host in upper case", legacyUser, []string{"https://APP.example.com"}, policy.ActionRewrite, "legacy uuid", 0},
		{"second origin, normalised when loaded", legacyUser, []string{"https://admin.example.com:8443"}, policy.ActionRewrite, "legacy uuid", 0},
		{"second origin without its port", legacyUser, []string{"https://admin.example.com"}, policy.ActionReject, "origin not allowed", 0},
		{"other origin", legacyUser, []string{"https://evil.example.com"}, policy.ActionReject, "origin not allowed", 0},
		{"other scheme", legacyUser, []string{"http://app.example.com"}, policy.ActionReject, "origin not allowed", 0},
		{"other port", legacyUser, []string{"https://app.example.com:8443"}, policy.ActionReject, "origin not allowed", 0},
		{"suffix of the allowed host", legacyUser, []string{"https://app.example.com.evil.net"}, policy.ActionReject, "origin not allowed", 0},
		{"null origin", legacyUser, []string{"null"}, policy.ActionReject, "origin not allowed", 0},
		{"no origin", legacyUser, nil, policy.ActionReject, "origin not allowed", 0},
		{"empty origin", legacyUser, []string{""}, policy.ActionReject, "origin not allowed", 0},
		{"jwt from another origin passes", valid, []string{"https://evil.example.com"}, policy.ActionPass, "valid jwt", 0},
		{"jwt without origin passes", valid, nil, policy.ActionPass, "valid jwt", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := upgrade("/api/v1/pam/ws?token=" + tt.token)
			for _, o := range tt.origins {
				r.Header.Add("Origin", o)
			}
			d := s.Decide(bg, r, true, now)
			if d.Action != tt.action || d.Reason != tt.reason || d.Stage != tt.stage {
				t.Errorf("got action %v reason %q stage %d, want %v %q %d", d.Action, d.Reason, d.Stage, tt.action, tt.reason, tt.stage)
			}
			wantRej := policy.Rejection{}
			if tt.action == policy.ActionReject {
				wantRej = refused
			}
			if d.Rejection != wantRej {
				t.Errorf("rejection: got %+v, want %+v", d.Rejection, wantRej)
			}
			// Re-deciding an open connection from its facts (revocation)
			// gives the same answer.
			if again := d.Route.Evaluate(d.Facts(), strings.Join(tt.origins, ""), now); again.Action != d.Action || again.Reason != d.Reason {
				t.Errorf("Evaluate(Facts()): got %v %q, want %v %q", again.Action, again.Reason, d.Action, d.Reason)
			}
		})
	}
	t.Run("origins: [] restricts nothing", func(t *testing.T) {
		s := parse(t, `upstream: {url: http://x}
routes:
  - name: ws
    match: {path: /ws}
    legacy: {origins: []}
    policy: {uuid: pass}
`)
		r := upgrade("/ws?token=" + legacyUser)
		r.Header.Set("Origin", "https://other.example.com")
		if d := s.Decide(bg, r, true, now); d.Action != policy.ActionPass {
			t.Errorf("got %v %q, want pass", d.Action, d.Reason)
		}
	})
	t.Run("before stages: even a pass stage refuses a foreign origin", func(t *testing.T) {
		s := parse(t, `upstream: {url: http://x}
routes:
  - name: ws
    match: {path: /ws}
    legacy: {origins: ["https://app.example.com"]}
    policy: {uuid: pass}
`)
		r := upgrade("/ws?token=" + legacyUser)
		r.Header.Set("Origin", "https://other.example.com")
		if d := s.Decide(bg, r, true, now); d.Action != policy.ActionReject || d.Reason != "origin not allowed" {
			t.Errorf("got %v %q, want reject %q", d.Action, d.Reason, "origin not allowed")
		}
	})
}

// TestDecideOriginRefusalStage: an origin refusal logs the stage in force
// (the origin rule overrides its action, not the schedule).
func TestDecideOriginRefusalStage(t *testing.T) {
	s := parse(t, `upstream: {url: http://x}
mint: {hs256_secret: `+testSecret+`}
routes:
  - name: pam-ws
    match: {path: /api/v1/pam/ws, websocket: true}
    legacy: {origins: ["https://app.example.com"]}
    policy:
      uuid:
        - {until: 2026-03-01, action: rewrite}
        - {until: 2026-09-01, action: rewrite}
        - {action: reject}
`)
	r := upgrade("/api/v1/pam/ws?token=" + legacyUser)
	r.Header.Set("Origin", "https://evil.example.com")
	d := s.Decide(bg, r, true, stage0) // 2026-06-01: the second stage
	if d.Action != policy.ActionReject || d.Reason != "origin not allowed" || d.Stage != 1 {
		t.Errorf("got action %v reason %q stage %d, want reject \"origin not allowed\" at stage 1", d.Action, d.Reason, d.Stage)
	}
}

// TestDecideRejections pins SPEC "Rejections": the default close code,
// status and message per class, and per-route close_codes overrides.
func TestDecideRejections(t *testing.T) {
	const base = `upstream: {url: http://x}
verify: {hs256_secret: ` + testSecret + `}
routes:
  - name: all
    match: {path: /all}
    reject_with: http
    legacy: {origins: ["https://app.example.com"]}
    policy: {jwt: reject, jwt_expired: reject, jwt_invalid: reject, malformed: reject, missing: reject, uuid: reject}
  - name: custom
    match: {path: /custom}
    legacy: {origins: ["https://app.example.com"]}
    policy: {jwt: reject, jwt_expired: reject, jwt_invalid: reject, malformed: reject, missing: reject, uuid: reject}
    close_codes:
      missing: 4401
      malformed: 4400
      jwt_expired: 4440
      jwt_invalid: 1008
      uuid: 4403
      jwt: 4000
`
	s := parse(t, base)
	now := stage0
	tokens := map[rewrite.Class]string{
		rewrite.ClassMissing:    "",
		rewrite.ClassMalformed:  "not-a-token",
		rewrite.ClassUUID:       legacyUser,
		rewrite.ClassJWT:        userJWT(t, "u", now.Add(time.Hour)),
		rewrite.ClassJWTExpired: userJWT(t, "u", now.Add(-time.Hour)),
		rewrite.ClassJWTInvalid: hs256(t, "wrong-wrong-wrong-wrong-wrong-wrong-wrong", jwt.MapClaims{"aud": "authenticated", "exp": now.Add(time.Hour).Unix()}),
	}
	tests := []struct {
		name   string
		route  string
		class  rewrite.Class
		origin string
		want   policy.Rejection
	}{
		{"missing", "/all", rewrite.ClassMissing, "", policy.Rejection{CloseCode: 4001, Status: 401, Message: "authentication required"}},
		{"malformed", "/all", rewrite.ClassMalformed, "", policy.Rejection{CloseCode: 4001, Status: 401, Message: "invalid token"}},
		{"jwt_invalid", "/all", rewrite.ClassJWTInvalid, "", policy.Rejection{CloseCode: 4001, Status: 401, Message: "invalid token"}},
		{"jwt_expired", "/all", rewrite.ClassJWTExpired, "", policy.Rejection{CloseCode: 4002, Status: 401, Message: "token expired (refresh and reconnect)"}},
		{"uuid rejected", "/all", rewrite.ClassUUID, appOrigin, policy.Rejection{CloseCode: 4003, Status: 403, Message: "legacy authentication no longer accepted"}},
		{"origin refused", "/all", rewrite.ClassUUID, "https://evil.example.com", policy.Rejection{CloseCode: 4003, Status: 403, Message: "legacy authentication no longer accepted"}},
		{"jwt rejected by policy", "/all", rewrite.ClassJWT, "", policy.Rejection{CloseCode: 4001, Status: 401, Message: "token not accepted"}},
		{"override missing", "/custom", rewrite.ClassMissing, "", policy.Rejection{CloseCode: 4401, Status: 401, Message: "authentication required"}},
		{"override malformed", "/custom", rewrite.ClassMalformed, "", policy.Rejection{CloseCode: 4400, Status: 401, Message: "invalid token"}},
		{"override jwt_invalid with a defined code", "/custom", rewrite.ClassJWTInvalid, "", policy.Rejection{CloseCode: 1008, Status: 401, Message: "invalid token"}},
		{"override jwt_expired", "/custom", rewrite.ClassJWTExpired, "", policy.Rejection{CloseCode: 4440, Status: 401, Message: "token expired (refresh and reconnect)"}},
		{"override uuid", "/custom", rewrite.ClassUUID, appOrigin, policy.Rejection{CloseCode: 4403, Status: 403, Message: "legacy authentication no longer accepted"}},
		{"override applies to origin refusal", "/custom", rewrite.ClassUUID, "https://evil.example.com", policy.Rejection{CloseCode: 4403, Status: 403, Message: "legacy authentication no longer accepted"}},
		{"override jwt", "/custom", rewrite.ClassJWT, "", policy.Rejection{CloseCode: 4000, Status: 401, Message: "token not accepted"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := tt.route
			if tok := tokens[tt.class]; tok != "" {
				target += "?token=" + tok
			}
			r := upgrade(target)
			if tt.origin != "" {
				r.Header.Set("Origin", tt.origin)
			}
			d := s.Decide(bg, r, true, now)
			if d.Class != tt.class {
				t.Fatalf("class: got %v, want %v", d.Class, tt.class)
			}
			if d.Action != policy.ActionReject {
				t.Fatalf("action: got %v, want reject", d.Action)
			}
			if d.Rejection != tt.want {
				t.Errorf("got %+v, want %+v", d.Rejection, tt.want)
			}
		})
	}
	t.Run("DefaultRejections is not changed by an override", func(t *testing.T) {
		if got := policy.DefaultRejections[rewrite.ClassUUID].CloseCode; got != 4003 {
			t.Errorf("got %d, want 4003", got)
		}
		if got := s.Routes[0].Codes[rewrite.ClassUUID].CloseCode; got != 4003 {
			t.Errorf("route without close_codes: got %d, want 4003", got)
		}
	})
	t.Run("described", func(t *testing.T) {
		d := s.Description(now)
		if got := d.Routes[1].CloseCodes["uuid"]; got != 4403 {
			t.Errorf("custom uuid close code: got %d, want 4403", got)
		}
		if got := d.Routes[0].RejectWith; got != "http" {
			t.Errorf("reject_with: got %q, want http", got)
		}
	})
}

func TestNextBoundary(t *testing.T) {
	ex := loadExample(t)
	multi := parse(t, `upstream: {url: http://x}
mint: {hs256_secret: `+testSecret+`}
routes:
  - name: a
    match: {path: /a}
    policy:
      uuid:
        - {until: 2026-03-01, action: rewrite}
        - {action: reject}
  - name: b
    match: {path: /b}
    policy:
      missing:
        - {until: "2026-02-01T12:00:00Z", action: pass}
        - {until: 2026-04-01, action: reject, percent: 10, otherwise: pass}
        - {action: reject}
`)
	none := parse(t, "upstream: {url: http://x}\nroutes: [{name: a, match: {path: /a}}]\n")
	end0 := date("2026-12-15T00:00:00Z")
	tests := []struct {
		name string
		s    *policy.Snapshot
		now  time.Time
		want time.Time
	}{
		{"example, stage 0", ex, stage0, end0},
		{"example, 1ns before the first until", ex, end0.Add(-time.Nanosecond), end0},
		{"example, at the first until: the next one", ex, end0, date("2027-01-15T00:00:00Z")},
		{"example, at the last until: none", ex, date("2027-01-15T00:00:00Z"), time.Time{}},
		{"example, long after", ex, date("2030-01-01T00:00:00Z"), time.Time{}},
		{"earliest across routes and classes", multi, date("2026-01-01T00:00:00Z"), date("2026-02-01T12:00:00Z")},
		{"then the other route's", multi, date("2026-02-01T12:00:00Z"), date("2026-03-01T00:00:00Z")},
		{"then the third", multi, date("2026-03-01T00:00:00Z"), date("2026-04-01T00:00:00Z")},
		{"single actions only", none, stage0, time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.s.NextBoundary(tt.now); !got.Equal(tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// TestDecideAlgorithmAllowList pins that verify.algorithms is an
// allow-list even when it leaves no algorithm usable with the configured
// keys. Regression guard: rewrite.NewVerifier once built the method list
// from the algorithms usable with the keys; with hs256_secret set,
// algorithms [ES256] and no jwks_url that list was nil, golang-jwt treats
// WithValidMethods(nil) as "no restriction", and an HS256 token signed
// with the secret classified as a valid jwt.
func TestDecideAlgorithmAllowList(t *testing.T) {
	now := stage0
	tok := userJWT(t, "user-1", now.Add(time.Hour))
	tests := []struct {
		name   string
		verify string
		class  rewrite.Class
		reason string
	}{
		{"HS256 allowed", "{hs256_secret: " + testSecret + ", algorithms: [HS256]}", rewrite.ClassJWT, "valid jwt"},
		{"only HS384 allowed", "{hs256_secret: " + testSecret + ", algorithms: [HS384]}", rewrite.ClassJWTInvalid, "algorithm not allowed"},
		{"only ES256 allowed, no jwks_url", "{hs256_secret: " + testSecret + ", algorithms: [ES256]}", rewrite.ClassJWTInvalid, "algorithm not allowed"},
		{"only ES256 allowed, with jwks_url", "{hs256_secret: " + testSecret + ", algorithms: [ES256], jwks_url: \"https://keys.example.com/jwks.json\"}", rewrite.ClassJWTInvalid, "algorithm not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := parse(t, "upstream: {url: http://x}\nverify: "+tt.verify+"\nroutes: [{name: ws, match: {path: /ws}}]\n")
			d := s.Decide(bg, upgrade("/ws?token="+tok), true, now)
			if d.Class != tt.class || d.Reason != tt.reason {
				t.Errorf("got %v %q, want %v %q", d.Class, d.Reason, tt.class, tt.reason)
			}
		})
	}
}
