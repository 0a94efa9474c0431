package proxy_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

// TestBearerSubprotocol: a token offered as a Sec-WebSocket-Protocol
// entry reaches the backend as Authorization: Bearer, never as a
// subprotocol; the client is answered with a protocol it offered, so its
// handshake succeeds, and an application protocol the backend chose wins.
func TestBearerSubprotocol(t *testing.T) {
	jwtTok := validJWT(t, "7d0e3a52-7f39-4c64-9d3c-2b6f0c1de5a1")
	cases := []struct {
		name        string
		path        string
		offer       []string
		backendApp  []string // the backend's Upgrader.Subprotocols
		wantChosen  string
		wantBackend string // Sec-WebSocket-Protocol the backend was offered ("" = none)
	}{
		{name: "bearer marker", path: "/api/v1/pam/ws", offer: []string{"bearer", jwtTok}, wantChosen: "bearer"},
		{name: "bearer dot entry", path: "/api/v1/pam/ws", offer: []string{"bearer." + jwtTok}, wantChosen: "bearer." + jwtTok},
		{name: "app protocol chosen by backend", path: "/api/v1/pam/ws", offer: []string{"pam.v1", "bearer", jwtTok}, backendApp: []string{"pam.v1"}, wantChosen: "pam.v1", wantBackend: "pam.v1"},
		{name: "app protocol after dot entry", path: "/api/v1/pam/ws", offer: []string{"bearer." + jwtTok, "pam.v1"}, backendApp: []string{"pam.v1"}, wantChosen: "pam.v1", wantBackend: "pam.v1"},
		{name: "forward header:authorization marker", path: "/ws/fwd", offer: []string{"bearer", jwtTok}, wantChosen: "bearer"},
		{name: "forward header:authorization app protocol", path: "/ws/fwd", offer: []string{"bearer." + jwtTok, "pam.v1"}, backendApp: []string{"pam.v1"}, wantChosen: "pam.v1", wantBackend: "pam.v1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			be := newBackend(t)
			be.upgrader.Subprotocols = tc.backendApp
			h := startProxy(t, testConfig{Upstream: be.url})
			c, resp := h.mustDial(t, tc.path, nil, &websocket.Dialer{Subprotocols: tc.offer})
			if got := c.Subprotocol(); got != tc.wantChosen {
				t.Errorf("client's subprotocol: got %q, want %q", got, tc.wantChosen)
			}
			if got := resp.Header.Values("Sec-Websocket-Protocol"); len(got) != 1 {
				t.Errorf("101 Sec-WebSocket-Protocol: got %q, want exactly one", got)
			}
			echoOnce(t, c, "hi")
			closeClient(t, c, websocket.CloseNormalClosure, "")
			r := be.last(t)
			if got := r.Header.Values("Authorization"); len(got) != 1 || got[0] != "Bearer "+jwtTok {
				t.Errorf("backend Authorization: got %q, want [Bearer <jwt>]", got)
			}
			got := strings.Join(r.Header.Values("Sec-Websocket-Protocol"), ", ")
			if got != tc.wantBackend {
				t.Errorf("backend Sec-WebSocket-Protocol: got %q, want %q", got, tc.wantBackend)
			}
			if strings.Contains(strings.ToLower(got), "bearer") {
				t.Errorf("backend Sec-WebSocket-Protocol %q holds a bearer entry", got)
			}
		})
	}
}

// TestHostHeaderModes: host_header upstream sends the upstream URL's
// host, client the client's Host, anything else that literal host; the
// client's Host is kept in X-Forwarded-Host.
func TestHostHeaderModes(t *testing.T) {
	be := newBackend(t)
	upHost := strings.TrimPrefix(be.url, "http://")
	jwtTok := validJWT(t, "u1")
	cases := []struct {
		mode string
		want string
	}{
		{"upstream", upHost},
		{"client", "app.example.com:8443"},
		{"api.internal.example", "api.internal.example"},
	}
	for _, tc := range cases {
		t.Run(tc.mode, func(t *testing.T) {
			h := startProxy(t, testConfig{Upstream: be.url, HostHeader: tc.mode})
			hdr := http.Header{"Host": {"app.example.com:8443"}, "Authorization": {"Bearer " + jwtTok}}

			resp, body := h.do(t, "GET", "/api/v1/me", hdr)
			if resp.StatusCode != 200 {
				t.Fatalf("http status: got %d %s, want 200", resp.StatusCode, body)
			}
			r := be.last(t)
			if r.Host != tc.want {
				t.Errorf("http: backend Host: got %q, want %q", r.Host, tc.want)
			}
			if got := r.Header.Get("X-Forwarded-Host"); got != "app.example.com:8443" {
				t.Errorf("http: X-Forwarded-Host: got %q, want app.example.com:8443", got)
			}

			c, _ := h.mustDial(t, "/api/v1/pam/ws", hdr, nil)
			closeClient(t, c, websocket.CloseNormalClosure, "")
			r = be.last(t)
			if r.Host != tc.want {
				t.Errorf("websocket: backend Host: got %q, want %q", r.Host, tc.want)
			}
			if got := r.Header.Get("X-Forwarded-Host"); got != "app.example.com:8443" {
				t.Errorf("websocket: X-Forwarded-Host: got %q, want app.example.com:8443", got)
			}
		})
	}
}

// TestForwardedHeaders: what the client says about itself is not
// believed: X-Authgate-* headers are removed or overwritten, an untrusted
// peer's X-Forwarded-For and -Proto are replaced, a trusted proxy's chain
// is extended, and X-Request-Id is kept only when it is sane.
func TestForwardedHeaders(t *testing.T) {
	be := newBackend(t)
	jwtTok := validJWT(t, "u1")
	untrusted := startProxy(t, testConfig{Upstream: be.url})
	trustedH := startProxy(t, testConfig{Upstream: be.url, Trusted: []string{"127.0.0.1/32"}, Unmatched: "pass"})

	// send makes one request of the given transport and returns what
	// the backend received.
	send := func(t *testing.T, h *harness, ws bool, path string, hdr http.Header) seenRequest {
		t.Helper()
		if ws {
			c, _ := h.mustDial(t, path, hdr, nil)
			closeClient(t, c, websocket.CloseNormalClosure, "")
		} else {
			resp, body := h.do(t, "GET", path, hdr)
			if resp.StatusCode != 200 {
				t.Fatalf("status: got %d %s, want 200", resp.StatusCode, body)
			}
		}
		return be.last(t)
	}
	transports := []struct {
		name string
		ws   bool
		path string // a matched route taking header:authorization
	}{
		{"http", false, "/api/v1/me"},
		{"websocket", true, "/api/v1/pam/ws"},
	}
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			spoof := func(token string) http.Header {
				hdr := http.Header{
					"Authorization":     {"Bearer " + token},
					"X-Authgate-Class":  {"jwt"},
					"X-Authgate-Legacy": {"1"},
					"X-Authgate-User":   {"admin"},
					"X-Forwarded-For":   {"203.0.113.9"},
					"X-Forwarded-Proto": {"https"},
					"X-Forwarded-Host":  {"evil.example.com"},
					"X-Request-Id":      {"req-" + tr.name},
				}
				if !tr.ws {
					// gorilla's Dialer sets Connection itself.
					hdr.Set("Connection", "X-Drop-Me")
					hdr.Set("X-Drop-Me", "hop-by-hop")
				}
				return hdr
			}
			t.Run("spoofed authgate headers with a uuid", func(t *testing.T) {
				r := send(t, untrusted, tr.ws, tr.path, spoof(testUUID))
				if got := r.Header.Values("X-Authgate-Class"); len(got) != 1 || got[0] != "uuid" {
					t.Errorf("X-Authgate-Class: got %q, want [uuid]", got)
				}
				if got := r.Header.Values("X-Authgate-Legacy"); len(got) != 1 || got[0] != "1" {
					t.Errorf("X-Authgate-Legacy: got %q, want [1]", got)
				}
				if got := r.Header.Values("X-Authgate-User"); len(got) != 0 {
					t.Errorf("X-Authgate-User: got %q, want removed", got)
				}
			})
			t.Run("spoofed authgate headers with a jwt", func(t *testing.T) {
				r := send(t, untrusted, tr.ws, tr.path, spoof(jwtTok))
				if got := r.Header.Values("X-Authgate-Class"); len(got) != 1 || got[0] != "jwt" {
					t.Errorf("X-Authgate-Class: got %q, want [jwt]", got)
				}
				if got := r.Header.Values("X-Authgate-Legacy"); len(got) != 0 {
					t.Errorf("X-Authgate-Legacy: got %q, want removed", got)
				}
				if got := r.Header.Values("X-Authgate-User"); len(got) != 0 {
					t.Errorf("X-Authgate-User: got %q, want removed", got)
				}
				if got := r.Header.Values("X-Drop-Me"); len(got) != 0 {
					t.Errorf("X-Drop-Me (named in Connection): got %q, want removed", got)
				}
			})
			t.Run("untrusted peer", func(t *testing.T) {
				r := send(t, untrusted, tr.ws, tr.path, spoof(jwtTok))
				if got := r.Header.Values("X-Forwarded-For"); len(got) != 1 || got[0] != "127.0.0.1" {
					t.Errorf("X-Forwarded-For: got %q, want [127.0.0.1]", got)
				}
				if got := r.Header.Get("X-Forwarded-Proto"); got != "http" {
					t.Errorf("X-Forwarded-Proto: got %q, want http", got)
				}
				ev := untrusted.logs.waitEvent(t, "auth", func(l logLine) bool { return l.str("request_id") == "req-"+tr.name })
				if got := ev.str("client_ip"); got != "127.0.0.1" {
					t.Errorf("auth client_ip: got %q, want 127.0.0.1", got)
				}
			})
			t.Run("trusted proxy", func(t *testing.T) {
				hdr := spoof(jwtTok)
				hdr.Set("X-Request-Id", "trusted-"+tr.name)
				r := send(t, trustedH, tr.ws, tr.path, hdr)
				if got := r.Header.Values("X-Forwarded-For"); len(got) != 1 || got[0] != "203.0.113.9, 127.0.0.1" {
					t.Errorf("X-Forwarded-For: got %q, want [203.0.113.9, 127.0.0.1]", got)
				}
				if got := r.Header.Get("X-Forwarded-Proto"); got != "https" {
					t.Errorf("X-Forwarded-Proto: got %q, want https (believed from a trusted proxy)", got)
				}
				ev := trustedH.logs.waitEvent(t, "auth", func(l logLine) bool { return l.str("request_id") == "trusted-"+tr.name })
				if got := ev.str("client_ip"); got != "203.0.113.9" {
					t.Errorf("auth client_ip: got %q, want 203.0.113.9", got)
				}
			})
			t.Run("unmatched path", func(t *testing.T) {
				if tr.ws {
					t.Skip("see TestWebSocketUnmatchedPass")
				}
				r := send(t, trustedH, tr.ws, "/public/page", spoof(jwtTok))
				for _, k := range []string{"X-Authgate-Class", "X-Authgate-Legacy", "X-Authgate-User"} {
					if got := r.Header.Values(k); len(got) != 0 {
						t.Errorf("%s: got %q, want removed on an unmatched route", k, got)
					}
				}
			})
			// RFC 7239 Forwarded says the same as X-Forwarded-For; the
			// HTTP path (httputil.ReverseProxy's Rewrite) drops it, and a
			// WebSocket upgrade must not let it through either.
			t.Run("spoofed Forwarded header", func(t *testing.T) {
				hdr := spoof(jwtTok)
				hdr.Set("Forwarded", "for=203.0.113.9;proto=https")
				r := send(t, untrusted, tr.ws, tr.path, hdr)
				if got := r.Header.Values("Forwarded"); len(got) != 0 {
					t.Errorf("Forwarded: got %q, want removed (client-sent, untrusted peer)", got)
				}
			})
		})
	}

	t.Run("request id", func(t *testing.T) {
		long128 := strings.Repeat("r", 128)
		cases := []struct {
			name string
			id   string
			keep bool
		}{
			{"sane", "abc-123_DEF.456:789", true},
			{"128 chars", long128, true},
			{"129 chars", long128 + "x", false},
			{"tab", "abc\tdef", false},
			{"space", "abc def", false},
			{"non-ascii", "abc\u00e9", false},
			{"log forging quote", `abc","level":"error`, true}, // visible ASCII; JSON encoding escapes it
		}
		for _, tc := range cases {
			for _, tr := range transports {
				t.Run(tc.name+"/"+tr.name, func(t *testing.T) {
					hdr := http.Header{"Authorization": {"Bearer " + jwtTok}, "X-Request-Id": {tc.id}}
					r := send(t, untrusted, tr.ws, tr.path, hdr)
					got := r.Header.Values("X-Request-Id")
					if len(got) != 1 {
						t.Fatalf("X-Request-Id: got %q, want one value", got)
					}
					if tc.keep && got[0] != tc.id {
						t.Errorf("X-Request-Id: got %q, want %q kept", got[0], tc.id)
					}
					if !tc.keep {
						if got[0] == tc.id || got[0] == "" || len(got[0]) > 128 || strings.ContainsAny(got[0], " \t\r\n") {
							t.Errorf("X-Request-Id: got %q, want a fresh sane id in place of %q", got[0], tc.id)
						}
						for _, c := range got[0] {
							if c <= ' ' || c >= 0x7f {
								t.Errorf("X-Request-Id %q: character %q is not visible ASCII", got[0], c)
								break
							}
						}
					}
					// The auth event is logged under the id the upstream got.
					untrusted.logs.waitEvent(t, "auth", func(l logLine) bool { return l.str("request_id") == got[0] })
				})
			}
		}
		// Two requests without an id get different ones.
		a := send(t, untrusted, false, "/api/v1/me", http.Header{"Authorization": {"Bearer " + jwtTok}}).Header.Get("X-Request-Id")
		b := send(t, untrusted, false, "/api/v1/me", http.Header{"Authorization": {"Bearer " + jwtTok}}).Header.Get("X-Request-Id")
		if a == "" || a == b {
			t.Errorf("generated request ids: got %q and %q, want two different non-empty ids", a, b)
		}
	})
}
