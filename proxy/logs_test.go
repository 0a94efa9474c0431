package proxy_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

// wantAuth is the auth event one request must produce.
type wantAuth struct {
	id        string
	route     string
	transport string
	class     string
	action    string
	source    string // "" when missing
	path      string
	user      string // raw user id ("" = none)
	closeCode int    // when rejected with a close frame
	status    int    // when rejected with HTTP
	verified  bool
	reason    string // "" = any non-empty reason
	origin    string // "" = no origin field
}

// run is what driveAll did: the auth events it expects, the relayed
// WebSockets (request ids) and every secret it sent or caused to be sent.
type run struct {
	auths   []wantAuth
	relayed []string
	secrets []string // tokens: never in a log line, whole or in part
	noEvent []string // request ids that must produce no auth event
}

// driveAll sends one request of every kind through h.
func driveAll(t *testing.T, h *harness, be *backend) run {
	t.Helper()
	sub := "9b2f6d1c-5e4a-4c1b-8f7e-0d3c2b1a0f9e"
	jwtTok := validJWT(t, sub)
	expired := expiredJWT(t, sub)
	forged := forgedJWT(t, sub)
	garbage := "garbage-token-value-3f9a"
	var r run
	r.secrets = []string{jwtTok, expired, forged, garbage}
	upperUUID := strings.ToUpper(testUUID)

	wsOK := func(w wantAuth, path string, hdr http.Header, d *websocket.Dialer) {
		t.Helper()
		if hdr == nil {
			hdr = http.Header{}
		}
		hdr.Set("X-Request-Id", w.id)
		c, _ := h.mustDial(t, path, hdr, d)
		echoOnce(t, c, "log me not")
		closeClient(t, c, 4000, "client done")
		r.auths = append(r.auths, w)
		r.relayed = append(r.relayed, w.id)
	}
	wsRejected := func(w wantAuth, path string, hdr http.Header) {
		t.Helper()
		if hdr == nil {
			hdr = http.Header{}
		}
		hdr.Set("X-Request-Id", w.id)
		c, _ := h.mustDial(t, path, hdr, nil)
		if ce := readClose(t, c); ce.Code != w.closeCode {
			t.Errorf("%s: got close %d, want %d", w.id, ce.Code, w.closeCode)
		}
		r.auths = append(r.auths, w)
	}
	httpReq := func(w wantAuth, path string, hdr http.Header, wantStatus int) {
		t.Helper()
		if hdr == nil {
			hdr = http.Header{}
		}
		hdr.Set("X-Request-Id", w.id)
		resp, body := h.do(t, "GET", path, hdr)
		if resp.StatusCode != wantStatus {
			t.Errorf("%s: got %d %s, want %d", w.id, resp.StatusCode, body, wantStatus)
		}
		if w.route != "" {
			r.auths = append(r.auths, w)
		} else {
			r.noEvent = append(r.noEvent, w.id)
		}
	}
	bearerH := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	const pamPath = "/api/v1/pam/ws"

	wsOK(wantAuth{id: "ws-jwt", route: "pam-ws", transport: "websocket", class: "jwt", action: "pass", source: "query:token", path: pamPath, user: sub, verified: true},
		pamPath+"?token="+jwtTok+"&v=1", nil, nil)
	wsOK(wantAuth{id: "ws-uuid", route: "pam-ws", transport: "websocket", class: "uuid", action: "rewrite", source: "query:token", path: pamPath, user: testUUID},
		pamPath+"?token="+upperUUID, nil, nil)
	wsOK(wantAuth{id: "ws-uuid-proto", route: "pam-ws", transport: "websocket", class: "uuid", action: "rewrite", source: "protocol", path: pamPath, user: testUUID},
		pamPath, nil, &websocket.Dialer{Subprotocols: []string{"bearer", testUUID}})
	wsOK(wantAuth{id: "ws-jwt-proto", route: "pam-ws", transport: "websocket", class: "jwt", action: "pass", source: "protocol", path: pamPath, user: sub, verified: true},
		pamPath, nil, &websocket.Dialer{Subprotocols: []string{"bearer." + jwtTok}})
	wsOK(wantAuth{id: "ws-jwt-cookie", route: "pam-ws", transport: "websocket", class: "jwt", action: "pass", source: "cookie:sb-access-token", path: pamPath, user: sub, verified: true},
		pamPath, http.Header{"Cookie": {"sb-access-token=" + jwtTok}}, nil)
	wsOK(wantAuth{id: "ws-fwd-uuid", route: "ws-fwd", transport: "websocket", class: "uuid", action: "rewrite", source: "query:token", path: "/ws/fwd", user: testUUID},
		"/ws/fwd?token="+testUUID, nil, nil)

	wsRejected(wantAuth{id: "ws-missing", route: "ws-strict", transport: "websocket", class: "missing", action: "reject", path: "/ws/strict", closeCode: 4001}, "/ws/strict", nil)
	wsRejected(wantAuth{id: "ws-malformed", route: "ws-strict", transport: "websocket", class: "malformed", action: "reject", source: "query:token", path: "/ws/strict", closeCode: 4001}, "/ws/strict?token="+garbage, nil)
	wsRejected(wantAuth{id: "ws-invalid", route: "ws-strict", transport: "websocket", class: "jwt_invalid", action: "reject", source: "header:authorization", path: "/ws/strict", closeCode: 4001}, "/ws/strict", bearerH(forged))
	wsRejected(wantAuth{id: "ws-expired", route: "ws-strict", transport: "websocket", class: "jwt_expired", action: "reject", source: "query:token", path: "/ws/strict", user: sub, closeCode: 4002}, "/ws/strict?token="+expired, nil)
	wsRejected(wantAuth{id: "ws-uuid-rejected", route: "ws-strict", transport: "websocket", class: "uuid", action: "reject", source: "query:token", path: "/ws/strict", user: testUUID, closeCode: 4003}, "/ws/strict?token="+testUUID, nil)
	wsRejected(wantAuth{id: "ws-origin", route: "ws-origin", transport: "websocket", class: "uuid", action: "reject", source: "query:token", path: "/ws/origin", user: testUUID, closeCode: 4003, reason: "origin not allowed", origin: "https://evil.example.com"},
		"/ws/origin?token="+testUUID, http.Header{"Origin": {"https://evil.example.com"}})

	// reject_with: http on a WebSocket route.
	{
		w := wantAuth{id: "ws-http-uuid", route: "ws-http", transport: "websocket", class: "uuid", action: "reject", source: "query:token", path: "/ws/http", user: testUUID, status: 403}
		c, resp, err := h.dial(t, "/ws/http?token="+testUUID, http.Header{"X-Request-Id": {w.id}}, nil)
		if err == nil {
			c.Close()
			t.Errorf("%s: handshake completed, want 403", w.id)
		} else if resp == nil || resp.StatusCode != 403 {
			t.Errorf("%s: got %v, want 403", w.id, err)
		} else {
			readAll(resp)
		}
		r.auths = append(r.auths, w)
	}

	httpReq(wantAuth{id: "http-jwt", route: "api", transport: "http", class: "jwt", action: "pass", source: "header:authorization", path: "/api/v1/me", user: sub, verified: true}, "/api/v1/me?token=x&y=2", bearerH(jwtTok), 200)
	httpReq(wantAuth{id: "http-uuid", route: "api", transport: "http", class: "uuid", action: "rewrite", source: "header:authorization", path: "/api/v1/me", user: testUUID}, "/api/v1/me", bearerH(testUUID), 200)
	httpReq(wantAuth{id: "http-expired", route: "api", transport: "http", class: "jwt_expired", action: "reject", source: "header:authorization", path: "/api/v1/me", user: sub, status: 401}, "/api/v1/me", bearerH(expired), 401)
	httpReq(wantAuth{id: "http-missing", route: "api", transport: "http", class: "missing", action: "reject", path: "/api/v1/me", status: 401}, "/api/v1/me", nil, 401)
	httpReq(wantAuth{id: "http-uuid-rejected", route: "api-strict", transport: "http", class: "uuid", action: "reject", source: "header:authorization", path: "/strict/x", user: testUUID, status: 403}, "/strict/x", bearerH(testUUID), 403)
	httpReq(wantAuth{id: "http-unmatched"}, "/nowhere?token="+jwtTok, nil, 404)
	httpReq(wantAuth{id: "http-health"}, "/healthz?token="+jwtTok, nil, 200)

	// The tokens authgate minted and the backend saw are secrets too.
	for _, req := range be.requests() {
		if req.Header.Get("X-Authgate-Legacy") != "1" {
			continue
		}
		if a := req.Header.Get("Authorization"); a != "" {
			r.secrets = append(r.secrets, strings.TrimPrefix(a, "Bearer "))
		}
		if u, err := url.Parse(req.RequestURI); err == nil && u.Query().Get("token") != "" {
			r.secrets = append(r.secrets, u.Query().Get("token"))
		}
	}
	if len(r.secrets) < 4+4 {
		t.Errorf("minted tokens seen by the backend: got %d, want 4", len(r.secrets)-4)
	}
	return r
}

func hashUser(user string) string {
	m := hmac.New(sha256.New, []byte(testHashKey))
	m.Write([]byte(user))
	return hex.EncodeToString(m.Sum(nil))[:16]
}

// TestLogs: over a run of every kind of request, no log line holds a
// token or a part of one, a query string, or (with user_ids: hash) a raw
// user id; every auth and ws_close event carries the fields SPEC "Logs"
// lists.
func TestLogs(t *testing.T) {
	for _, mode := range []string{"plain", "hash"} {
		t.Run(mode, func(t *testing.T) {
			be := newBackend(t)
			h := startProxy(t, testConfig{Upstream: be.url, UserIDs: mode})
			r := driveAll(t, h, be)
			for _, id := range r.relayed {
				h.logs.waitEvent(t, "ws_close", func(l logLine) bool { return l.str("request_id") == id })
			}
			lines := h.logs.lines(t)
			if len(lines) == 0 {
				t.Fatal("no log lines")
			}
			wantUser := func(u string) string {
				if mode == "hash" && u != "" {
					return hashUser(u)
				}
				return u
			}

			// Nothing secret, anywhere.
			for _, l := range lines {
				for _, k := range []string{"level", "message", "event", "time"} {
					if _, ok := l.fields[k]; !ok {
						t.Errorf("line without %q: %s", k, l.raw)
					}
				}
				for _, s := range r.secrets {
					if strings.Contains(l.raw, s) {
						t.Errorf("line holds a whole token: %s", l.raw)
					}
					for _, seg := range strings.Split(s, ".") {
						if len(seg) >= 8 && strings.Contains(l.raw, seg) {
							t.Errorf("line holds a token segment %q: %s", seg, l.raw)
						}
					}
				}
				if strings.Contains(l.raw, "token=") {
					t.Errorf("line holds a query string: %s", l.raw)
				}
				if p := l.str("path"); strings.Contains(p, "?") {
					t.Errorf("path with a query string: %s", l.raw)
				}
				rest := map[string]any{}
				for k, v := range l.fields {
					rest[k] = v
				}
				if mode == "plain" {
					delete(rest, "user") // the user id is the UUID, by design
				}
				b, _ := json.Marshal(rest)
				low := strings.ToLower(string(b))
				for _, u := range []string{testUUID, "9b2f6d1c-5e4a-4c1b-8f7e-0d3c2b1a0f9e"} {
					if strings.Contains(low, u) {
						t.Errorf("line holds the raw user id %s outside the user field (user_ids: %s): %s", u, mode, l.raw)
					}
				}
			}

			// One auth event per matched request, with SPEC's fields.
			auths := map[string][]logLine{}
			for _, l := range lines {
				if l.str("event") == "auth" {
					auths[l.str("request_id")] = append(auths[l.str("request_id")], l)
				}
			}
			for _, id := range r.noEvent {
				if n := len(auths[id]); n != 0 {
					t.Errorf("%s: got %d auth events, want none (no route)", id, n)
				}
			}
			for _, w := range r.auths {
				evs := auths[w.id]
				if len(evs) != 1 {
					t.Errorf("%s: got %d auth events, want 1", w.id, len(evs))
					continue
				}
				checkAuth(t, w, evs[0], wantUser(w.user))
			}

			// One ws_close per relayed WebSocket.
			closes := map[string]logLine{}
			for _, l := range lines {
				if l.str("event") == "ws_close" {
					closes[l.str("request_id")] = l
				}
			}
			byID := map[string]wantAuth{}
			for _, w := range r.auths {
				byID[w.id] = w
			}
			for _, id := range r.relayed {
				l, ok := closes[id]
				if !ok {
					t.Errorf("%s: no ws_close event", id)
					continue
				}
				w := byID[id]
				if got := l.str("route"); got != w.route {
					t.Errorf("%s ws_close route: got %q, want %q", id, got, w.route)
				}
				if got := l.str("user"); got != wantUser(w.user) {
					t.Errorf("%s ws_close user: got %q, want %q", id, got, wantUser(w.user))
				}
				for _, k := range []string{"duration_ms", "bytes_in", "bytes_out", "close_code"} {
					v, ok := l.num(k)
					if !ok || v < 0 {
						t.Errorf("%s ws_close %s: got %v, want a number >= 0", id, k, l.fields[k])
					}
				}
				if v, _ := l.num("bytes_in"); v == 0 {
					t.Errorf("%s ws_close bytes_in: got 0, want the client's frames counted", id)
				}
				if v, _ := l.num("bytes_out"); v == 0 {
					t.Errorf("%s ws_close bytes_out: got 0, want the upstream's frames counted", id)
				}
				if v, _ := l.num("close_code"); v != 4000 || l.str("closed_by") != "client" {
					t.Errorf("%s ws_close: got close_code %v closed_by %q, want 4000 client", id, l.fields["close_code"], l.str("closed_by"))
				}
				if _, ok := l.fields["reason"]; !ok {
					t.Errorf("%s ws_close: no reason field", id)
				}
			}
		})
	}
}

func checkAuth(t *testing.T, w wantAuth, l logLine, user string) {
	t.Helper()
	str := func(k, want string) {
		if got := l.str(k); got != want {
			t.Errorf("%s auth %s: got %q, want %q", w.id, k, got, want)
		}
	}
	str("route", w.route)
	str("transport", w.transport)
	str("class", w.class)
	str("action", w.action)
	str("path", w.path)
	str("client_ip", "127.0.0.1")
	str("user_agent", testUA)
	str("user", user)
	str("origin", w.origin)
	if w.source == "" {
		if _, ok := l.fields["token_source"]; ok {
			t.Errorf("%s auth token_source: got %v, want absent (missing token)", w.id, l.fields["token_source"])
		}
	} else {
		str("token_source", w.source)
	}
	if w.reason != "" {
		str("reason", w.reason)
	} else if l.str("reason") == "" {
		t.Errorf("%s auth reason: got %v, want a non-empty string", w.id, l.fields["reason"])
	}
	if _, ok := l.num("stage"); !ok {
		t.Errorf("%s auth stage: got %v, want a number", w.id, l.fields["stage"])
	}
	if v, ok := l.fields["verified"].(bool); !ok || v != w.verified {
		t.Errorf("%s auth verified: got %v, want %v", w.id, l.fields["verified"], w.verified)
	}
	cc, hasCC := l.num("close_code")
	st, hasSt := l.num("status")
	switch {
	case w.closeCode != 0:
		if !hasCC || int(cc) != w.closeCode || hasSt {
			t.Errorf("%s auth: got close_code %v status %v, want close_code %d only", w.id, l.fields["close_code"], l.fields["status"], w.closeCode)
		}
	case w.status != 0:
		if !hasSt || int(st) != w.status || hasCC {
			t.Errorf("%s auth: got close_code %v status %v, want status %d only", w.id, l.fields["close_code"], l.fields["status"], w.status)
		}
	default:
		if hasCC || hasSt {
			t.Errorf("%s auth: got close_code %v status %v, want neither (not rejected)", w.id, l.fields["close_code"], l.fields["status"])
		}
	}
	wantLevel := "info"
	if w.class == "uuid" || w.action == "reject" {
		wantLevel = "warn"
	}
	str("level", wantLevel)
	if l.str("message") == "" {
		t.Errorf("%s auth: empty message", w.id)
	}
}
