package rewrite

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func mustSources(t testing.TB, specs ...string) []Source {
	t.Helper()
	var out []Source
	for _, s := range specs {
		src, err := ParseSource(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, src)
	}
	return out
}

func TestParseSource(t *testing.T) {
	tests := []struct {
		in      string
		want    Source
		wantErr bool
	}{
		{"query:token", Source{SourceQuery, "token"}, false},
		{"header:authorization", Source{SourceAuthorization, ""}, false},
		{"header:Authorization", Source{SourceAuthorization, ""}, false},
		{"header:x-api-token", Source{SourceHeader, "X-Api-Token"}, false},
		{"cookie:sb-access-token", Source{SourceCookie, "sb-access-token"}, false},
		{"protocol", Source{SourceProtocol, ""}, false},
		{"protocol:x", Source{}, true},
		{"query:", Source{}, true},
		{"query:a b", Source{}, true},
		{"body:token", Source{}, true},
		{"header:x-authgate-class", Source{}, true},
		{"header:cookie", Source{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSource(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("got %+v, %v; want %+v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestExtract(t *testing.T) {
	all := mustSources(t, "query:token", "header:authorization", "header:x-token", "cookie:sb-access-token", "protocol")
	tests := []struct {
		name      string
		target    string
		header    http.Header
		sources   []Source
		value     string
		source    string
		ambiguous bool
	}{
		{name: "query", target: "/ws?token=abc", value: "abc", source: "query:token"},
		{name: "query escaped", target: "/ws?a=1&token=a%2Bb%3D", value: "a+b=", source: "query:token"},
		{name: "query plus is space", target: "/ws?token=a+b", value: "a b", source: "query:token"},
		{name: "query empty falls through", target: "/ws?token=", header: http.Header{"Authorization": {"Bearer xyz"}}, value: "xyz", source: "header:authorization"},
		{name: "query duplicate same", target: "/ws?token=abc&token=abc", value: "abc", source: "query:token"},
		{name: "query duplicate different", target: "/ws?token=abc&token=def", value: "abc", source: "query:token", ambiguous: true},
		{name: "query escaped name", target: "/ws?%74oken=abc", value: "abc", source: "query:token"},
		{name: "query bad escape kept raw", target: "/ws?token=%zz", value: "%zz", source: "query:token"},
		{name: "bearer case-insensitive", header: http.Header{"Authorization": {"bEaReR  xyz "}}, value: "xyz", source: "header:authorization"},
		{name: "basic is not a token", header: http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}}},
		{name: "two authorization headers", header: http.Header{"Authorization": {"Bearer a", "Bearer b"}}, value: "a", source: "header:authorization", ambiguous: true},
		{name: "raw header", header: http.Header{"X-Token": {" raw "}}, value: "raw", source: "header:x-token"},
		{name: "cookie", header: http.Header{"Cookie": {"a=1; sb-access-token=ck; b=2"}}, value: "ck", source: "cookie:sb-access-token"},
		// Regression (battery): a second, different copy of the cookie was
		// ignored, and a backend that reads the last copy used it unchecked.
		{name: "cookie twice different", header: http.Header{"Cookie": {"sb-access-token=a; sb-access-token=b"}}, value: "a", source: "cookie:sb-access-token", ambiguous: true},
		{name: "cookie twice same", header: http.Header{"Cookie": {"sb-access-token=a", "sb-access-token=a"}}, value: "a", source: "cookie:sb-access-token"},
		{name: "protocol dotted", header: http.Header{"Sec-Websocket-Protocol": {"pam.v1, bearer.tok123"}}, value: "tok123", source: "protocol"},
		{name: "protocol marker", header: http.Header{"Sec-Websocket-Protocol": {"bearer, tok456", "pam.v1"}}, value: "tok456", source: "protocol"},
		{name: "protocol marker split headers", header: http.Header{"Sec-Websocket-Protocol": {"bearer", "tok789"}}, value: "tok789", source: "protocol"},
		{name: "protocol none", header: http.Header{"Sec-Websocket-Protocol": {"pam.v1"}}},
		{name: "first source wins", target: "/ws?token=q", header: http.Header{"Authorization": {"Bearer h"}}, value: "q", source: "query:token"},
		{name: "order follows config", target: "/ws?token=q", header: http.Header{"Authorization": {"Bearer h"}}, sources: mustSources(t, "header:authorization", "query:token"), value: "h", source: "header:authorization"},
		{name: "missing", target: "/ws?other=1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := tt.target
			if target == "" {
				target = "/ws"
			}
			r := httptest.NewRequest("GET", target, nil)
			for k, v := range tt.header {
				r.Header[k] = v
			}
			srcs := tt.sources
			if srcs == nil {
				srcs = all
			}
			got := Extract(r, srcs)
			if got.Value != tt.value || got.Source.String() != tt.source || got.Ambiguous != tt.ambiguous {
				t.Errorf("got %q from %q ambiguous=%v, want %q from %q ambiguous=%v", got.Value, got.Source, got.Ambiguous, tt.value, tt.source, tt.ambiguous)
			}
		})
	}
}

func TestApply(t *testing.T) {
	tests := []struct {
		name     string
		target   string
		header   http.Header
		from     string
		forward  string
		token    string
		wantURL  string
		wantHdr  http.Header // checked keys only; "" value means absent
		identity bool
		others   []string // the route's other token sources
	}{
		{name: "same query rewritten", target: "/ws?a=1&token=u&b=%20x", from: "query:token", forward: "same", token: "JWT",
			wantURL: "/ws?a=1&b=%20x&token=JWT"},
		{name: "pass unchanged is byte-identical", target: "/ws?token=u&a=1", from: "query:token", forward: "same", token: "u",
			wantURL: "/ws?token=u&a=1", identity: true},
		{name: "query to authorization", target: "/ws?token=u&a=1", from: "query:token", forward: "header:authorization", token: "JWT",
			wantURL: "/ws?a=1", wantHdr: http.Header{"Authorization": {"Bearer JWT"}}},
		{name: "authorization to query", target: "/x", header: http.Header{"Authorization": {"Bearer u"}}, from: "header:authorization", forward: "query:access_token", token: "J+W",
			wantURL: "/x?access_token=J%2BW", wantHdr: http.Header{"Authorization": {""}}},
		{name: "same authorization", target: "/x", header: http.Header{"Authorization": {"Bearer u"}}, from: "header:authorization", forward: "same", token: "JWT",
			wantURL: "/x", wantHdr: http.Header{"Authorization": {"Bearer JWT"}}},
		{name: "destination replaced", target: "/ws?token=u", header: http.Header{"Authorization": {"Bearer stale"}}, from: "query:token", forward: "header:authorization", token: "JWT",
			wantURL: "/ws", wantHdr: http.Header{"Authorization": {"Bearer JWT"}}},
		{name: "cookie same", target: "/x", header: http.Header{"Cookie": {"a=1; sb-access-token=u; b=2"}}, from: "cookie:sb-access-token", forward: "same", token: "JWT",
			wantURL: "/x", wantHdr: http.Header{"Cookie": {"a=1; b=2; sb-access-token=JWT"}}},
		{name: "protocol goes to authorization", target: "/ws", header: http.Header{"Sec-Websocket-Protocol": {"pam.v1, bearer.u"}}, from: "protocol", forward: "same", token: "u",
			wantURL: "/ws", wantHdr: http.Header{"Sec-Websocket-Protocol": {"pam.v1"}, "Authorization": {"Bearer u"}}},
		{name: "protocol marker removed entirely", target: "/ws", header: http.Header{"Sec-Websocket-Protocol": {"bearer, u"}}, from: "protocol", forward: "query:token", token: "JWT",
			wantURL: "/ws?token=JWT", wantHdr: http.Header{"Sec-Websocket-Protocol": {""}}},
		{name: "ambiguous duplicates collapse", target: "/ws?token=a&token=b", from: "query:token", forward: "same", token: "a",
			wantURL: "/ws?token=a"},
		{name: "other sources stripped", target: "/ws?token=jwt", header: http.Header{"Authorization": {"Bearer 21a2151a-cd37-41d5-a1c7-124bb05e7a6a"}},
			from: "query:token", others: []string{"header:authorization"}, forward: "same", token: "jwt",
			wantURL: "/ws?token=jwt", wantHdr: http.Header{"Authorization": {""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tt.target, nil)
			for k, v := range tt.header {
				r.Header[k] = v
			}
			srcs := mustSources(t, tt.from)
			fwd, err := ParseForward(tt.forward)
			if err != nil {
				t.Fatal(err)
			}
			found := Extract(r, srcs)
			before := r.URL.String()
			ApplyFrom(r, append(srcs, mustSources(t, tt.others...)...), found, fwd, tt.token)
			if got := r.URL.RequestURI(); got != tt.wantURL {
				t.Errorf("url: got %q, want %q", got, tt.wantURL)
			}
			for k, v := range tt.wantHdr {
				if got := r.Header.Get(k); got != v[0] {
					t.Errorf("header %s: got %q, want %q", k, got, v[0])
				}
			}
			if tt.identity && r.URL.String() != before {
				t.Errorf("pass-through changed the URL: got %q, want %q", r.URL.String(), before)
			}
		})
	}
}

func TestProtocolAnswer(t *testing.T) {
	tests := []struct {
		offered  []string
		upstream string
		want     string
	}{
		{[]string{"pam.v1, bearer.tok"}, "pam.v1", "pam.v1"},
		{[]string{"bearer, tok"}, "", "bearer"},
		{[]string{"bearer.tok"}, "", "bearer.tok"},
		{[]string{"pam.v1"}, "", ""},
	}
	for _, tt := range tests {
		if got := ProtocolAnswer(tt.offered, tt.upstream); got != tt.want {
			t.Errorf("ProtocolAnswer(%q, %q): got %q, want %q", tt.offered, tt.upstream, got, tt.want)
		}
	}
}

func TestRedact(t *testing.T) {
	tok := "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
	got := Redact(tok)
	if strings.Contains(got, tok[6:12]) || !strings.HasPrefix(got, tok[:6]) {
		t.Errorf("Redact: got %q, want the first 6 characters and the length only", got)
	}
	if got := Redact("short"); strings.Contains(got, "short") {
		t.Errorf("Redact(short): got %q, must not contain the whole token", got)
	}
}

func TestMintVerifies(t *testing.T) {
	m, err := NewMinter(MintConfig{HS256Secret: testSecret, TTL: 5 * time.Minute, Issuer: "authgate", Audience: "authenticated", Claims: map[string]any{"role": "authenticated"}})
	if err != nil {
		t.Fatal(err)
	}
	tok, exp, err := m.Mint(legacyUUID, t0)
	if err != nil {
		t.Fatal(err)
	}
	if !exp.Equal(t0.Add(5 * time.Minute)) {
		t.Errorf("exp: got %v, want %v", exp, t0.Add(5*time.Minute))
	}
	// Verified here with golang-jwt directly and with the product's
	// verifier; the e2e tests verify with PyJWT.
	claims := jwt.MapClaims{}
	_, err = jwt.NewParser(jwt.WithTimeFunc(func() time.Time { return t0 }), jwt.WithAudience("authenticated"), jwt.WithValidMethods([]string{"HS256"})).
		ParseWithClaims(tok, claims, func(*jwt.Token) (any, error) { return testSecret, nil })
	if err != nil {
		t.Fatalf("minted token does not verify: %v", err)
	}
	if claims["sub"] != legacyUUID || claims["role"] != "authenticated" || claims["iss"] != "authgate" || claims["jti"] == "" {
		t.Errorf("claims: got %v", claims)
	}
	amr, _ := claims["amr"].([]any)
	if len(amr) != 1 || amr[0].(map[string]any)["method"] != "legacy_uuid" {
		t.Errorf("amr: got %v, want [{method: legacy_uuid}]", claims["amr"])
	}
	v := NewVerifier(VerifyConfig{HS256Secret: testSecret, Algorithms: []string{"HS256"}, Audience: "authenticated"})
	if r := v.Classify(context.Background(), tok, t0); r.Class != ClassJWT || r.Subject != legacyUUID {
		t.Errorf("Classify(minted): got %v %q, want jwt %q", r.Class, r.Subject, legacyUUID)
	}
	tok2, _, _ := m.Mint(legacyUUID, t0)
	if tok2 == tok {
		t.Error("two minted tokens are identical: jti must differ")
	}
}

func TestMintAsymmetricJWKS(t *testing.T) {
	ec := newEC(t)
	m, err := NewMinter(MintConfig{PrivateKey: ec, KID: "authgate-1", TTL: time.Minute, Audience: "authenticated"})
	if err != nil {
		t.Fatal(err)
	}
	if m.Algorithm() != "ES256" {
		t.Fatalf("algorithm: got %s, want ES256", m.Algorithm())
	}
	// Serve authgate's own /jwks.json content and verify through keyfunc,
	// as a backend that trusts authgate's JWKS would.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(m.PublicJWKS()) }))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ks, err := NewJWKS(ctx, srv.URL, JWKSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := m.Mint(legacyUUID, t0)
	if err != nil {
		t.Fatal(err)
	}
	v := NewVerifier(VerifyConfig{JWKS: ks, Algorithms: []string{"ES256"}, Audience: "authenticated"})
	if r := v.Classify(context.Background(), tok, t0); r.Class != ClassJWT || !r.Verified {
		t.Errorf("ES256 minted token via own JWKS: got %v verified=%v (%s), want verified jwt", r.Class, r.Verified, r.Reason)
	}
}
