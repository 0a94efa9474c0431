package proxy_test

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

// TestRewriteLegacyUUID: a legacy UUID reaches the backend as a JWT the
// backend verifies with the shared secret, wherever the route forwards it,
// with X-Authgate-Class: uuid and X-Authgate-Legacy: 1, and the UUID
// itself appears nowhere in what the backend read.
func TestRewriteLegacyUUID(t *testing.T) {
	upper := strings.ToUpper(testUUID)
	cases := []struct {
		name string
		ws   bool
		path string
		hdr  http.Header
		d    *websocket.Dialer
		// forwarded extracts the token the backend got.
		forwarded func(t *testing.T, r seenRequest) string
	}{
		{
			name: "websocket query",
			ws:   true,
			path: "/api/v1/pam/ws?v=2&token=" + testUUID + "&lang=en",
			forwarded: func(t *testing.T, r seenRequest) string {
				u, _ := url.Parse(r.RequestURI)
				q := u.Query()
				if q.Get("v") != "2" || q.Get("lang") != "en" {
					t.Errorf("backend query: got %q, want v=2 and lang=en kept", u.RawQuery)
				}
				if len(q["token"]) != 1 {
					t.Errorf("backend query: got %q, want exactly one token", u.RawQuery)
				}
				return q.Get("token")
			},
		},
		{
			name: "websocket query upper case",
			ws:   true,
			path: "/api/v1/pam/ws?token=" + upper,
			forwarded: func(t *testing.T, r seenRequest) string {
				u, _ := url.Parse(r.RequestURI)
				return u.Query().Get("token")
			},
		},
		{
			name: "websocket authorization header",
			ws:   true,
			path: "/api/v1/pam/ws",
			hdr:  http.Header{"Authorization": {"Bearer " + testUUID}},
			forwarded: func(t *testing.T, r seenRequest) string {
				return bearer(t, r)
			},
		},
		{
			name: "websocket bearer subprotocol",
			ws:   true,
			path: "/api/v1/pam/ws",
			d:    &websocket.Dialer{Subprotocols: []string{"bearer", testUUID}},
			forwarded: func(t *testing.T, r seenRequest) string {
				if p := r.Header.Values("Sec-Websocket-Protocol"); len(p) != 0 {
					t.Errorf("backend Sec-WebSocket-Protocol: got %q, want none", p)
				}
				return bearer(t, r)
			},
		},
		{
			name: "websocket cookie",
			ws:   true,
			path: "/api/v1/pam/ws",
			hdr:  http.Header{"Cookie": {"theme=dark; sb-access-token=" + testUUID}},
			forwarded: func(t *testing.T, r seenRequest) string {
				req := http.Request{Header: r.Header}
				if c, err := req.Cookie("theme"); err != nil || c.Value != "dark" {
					t.Errorf("backend cookies: got %q, want theme=dark kept", r.Header.Values("Cookie"))
				}
				c, err := req.Cookie("sb-access-token")
				if err != nil {
					t.Fatalf("backend cookies: got %q, want sb-access-token", r.Header.Values("Cookie"))
				}
				return c.Value
			},
		},
		{
			name: "websocket forward header:authorization",
			ws:   true,
			path: "/ws/fwd?token=" + testUUID + "&x=1",
			forwarded: func(t *testing.T, r seenRequest) string {
				if u, _ := url.Parse(r.RequestURI); u.Query().Has("token") || u.Query().Get("x") != "1" {
					t.Errorf("backend query: got %q, want x=1 and no token", u.RawQuery)
				}
				return bearer(t, r)
			},
		},
		{
			name: "http bearer",
			path: "/api/v1/me?x=1",
			hdr:  http.Header{"Authorization": {"Bearer " + testUUID}},
			forwarded: func(t *testing.T, r seenRequest) string {
				if r.RequestURI != "/api/v1/me?x=1" {
					t.Errorf("backend RequestURI: got %q, want /api/v1/me?x=1", r.RequestURI)
				}
				return bearer(t, r)
			},
		},
		{
			name: "http bearer scheme lower case",
			path: "/api/v1/me",
			hdr:  http.Header{"Authorization": {"bearer " + upper}},
			forwarded: func(t *testing.T, r seenRequest) string {
				return bearer(t, r)
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			be := newBackend(t)
			h := startProxy(t, testConfig{Upstream: be.url})
			if tc.ws {
				c, _ := h.mustDial(t, tc.path, tc.hdr, tc.d)
				echoOnce(t, c, "hello")
				closeClient(t, c, websocket.CloseNormalClosure, "done")
			} else {
				resp, body := h.do(t, "GET", tc.path, tc.hdr)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status: got %d %s, want 200", resp.StatusCode, body)
				}
			}
			r := be.last(t)
			tok := tc.forwarded(t, r)
			if tok == "" {
				t.Fatalf("backend received no token; request %+v", r)
			}
			verifyMinted(t, tok, testUUID) // sub is normalised to lower case
			if got := r.Header.Values("X-Authgate-Class"); len(got) != 1 || got[0] != "uuid" {
				t.Errorf("X-Authgate-Class: got %q, want [uuid]", got)
			}
			if got := r.Header.Values("X-Authgate-Legacy"); len(got) != 1 || got[0] != "1" {
				t.Errorf("X-Authgate-Legacy: got %q, want [1]", got)
			}
			raw := be.raw.String()
			for _, u := range []string{testUUID, upper, url.QueryEscape(testUUID)} {
				if strings.Contains(raw, u) {
					t.Errorf("backend read the legacy UUID %q; upstream request:\n%s", u, raw)
				}
			}
		})
	}
}

func bearer(t *testing.T, r seenRequest) string {
	t.Helper()
	vals := r.Header.Values("Authorization")
	if len(vals) != 1 || !strings.HasPrefix(vals[0], "Bearer ") {
		t.Fatalf("backend Authorization: got %q, want one Bearer credential", vals)
	}
	return strings.TrimPrefix(vals[0], "Bearer ")
}

// TestJWTPassThroughByteIdentical: a verified JWT passes unchanged: the
// request line and the Authorization header reach the backend exactly as
// the client sent them.
func TestJWTPassThroughByteIdentical(t *testing.T) {
	be := newBackend(t)
	h := startProxy(t, testConfig{Upstream: be.url})
	jwtTok := validJWT(t, "7d0e3a52-7f39-4c64-9d3c-2b6f0c1de5a1")

	cases := []struct {
		name string
		ws   bool
		uri  string
		auth string
	}{
		{name: "websocket query", ws: true, uri: "/api/v1/pam/ws?a=1&token=" + jwtTok + "&b=%2F%20x&c="},
		{name: "websocket header", ws: true, uri: "/api/v1/pam/ws?z=%7E", auth: "Bearer " + jwtTok},
		{name: "websocket header lower-case scheme", ws: true, uri: "/api/v1/pam/ws", auth: "bearer " + jwtTok},
		{name: "http header", uri: "/api/v1/items/a%2Fb?q=%C3%A9&q=2", auth: "Bearer " + jwtTok},
		{name: "http header odd spacing", uri: "/api/v1/x", auth: "BEARER   " + jwtTok},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hdr := http.Header{}
			if tc.auth != "" {
				hdr.Set("Authorization", tc.auth)
			}
			if tc.ws {
				c, _ := h.mustDial(t, tc.uri, hdr, nil)
				echoOnce(t, c, "hi")
				closeClient(t, c, websocket.CloseNormalClosure, "")
			} else {
				resp, body := h.do(t, "GET", tc.uri, hdr)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status: got %d %s, want 200", resp.StatusCode, body)
				}
			}
			r := be.last(t)
			if r.RequestURI != tc.uri {
				t.Errorf("backend RequestURI: got %q, want %q", r.RequestURI, tc.uri)
			}
			got := r.Header.Values("Authorization")
			if tc.auth == "" && len(got) != 0 {
				t.Errorf("backend Authorization: got %q, want none", got)
			}
			if tc.auth != "" && (len(got) != 1 || got[0] != tc.auth) {
				t.Errorf("backend Authorization: got %q, want [%q]", got, tc.auth)
			}
			if got := r.Header.Get("X-Authgate-Class"); got != "jwt" {
				t.Errorf("X-Authgate-Class: got %q, want jwt", got)
			}
			if got := r.Header.Values("X-Authgate-Legacy"); len(got) != 0 {
				t.Errorf("X-Authgate-Legacy: got %q, want none", got)
			}
			if !bytes.Contains([]byte(be.raw.String()), []byte(tc.uri)) {
				t.Errorf("backend did not read the request line with %q byte for byte", tc.uri)
			}
		})
	}
}
