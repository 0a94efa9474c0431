package battery

import (
	"strings"
	"testing"
	"time"
)

// TestSpoofing: forwarding and identity headers from an untrusted peer,
// and legacy UUIDs from foreign Origins.
func TestSpoofing(t *testing.T) {
	beginTest(t)
	addr := h.main.addr
	spoofed := "X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\n" +
		"Forwarded: for=203.0.113.9;proto=https\r\nX-Real-Ip: 203.0.113.9\r\n" +
		"X-Authgate-Class: jwt\r\nX-Authgate-Legacy: 0\r\nX-AUTHGATE-User: admin\r\n"
	checkForwarded := func(t *testing.T, id, wantClass, wantLegacy string) {
		t.Helper()
		got := h.backend.got(id)
		if len(got) != 1 {
			t.Fatalf("backend saw %d requests, want 1", len(got))
		}
		hd := got[0].Header
		if v := hd.Values("X-Forwarded-For"); len(v) != 1 || v[0] != "127.0.0.1" {
			t.Errorf("X-Forwarded-For %q, want [127.0.0.1]", v)
		}
		if v := hd.Get("X-Forwarded-Proto"); v != "http" {
			t.Errorf("X-Forwarded-Proto %q, want http", v)
		}
		if v := hd.Get("X-Forwarded-Host"); v != addr {
			t.Errorf("X-Forwarded-Host %q, want %q", v, addr)
		}
		if v := hd.Get("Forwarded"); v != "" {
			t.Errorf("Forwarded %q reached the backend", v)
		}
		if v := hd.Values("X-Authgate-Class"); len(v) != 1 || v[0] != wantClass {
			t.Errorf("X-Authgate-Class %q, want [%s]", v, wantClass)
		}
		if v := hd.Values("X-Authgate-Legacy"); strings.Join(v, ",") != wantLegacy {
			t.Errorf("X-Authgate-Legacy %q, want %q", v, wantLegacy)
		}
		if v := hd.Get("X-Authgate-User"); v != "" {
			t.Errorf("client X-Authgate-User %q reached the backend", v)
		}
		e := authEvent(h.main, id)
		if e == nil || e["client_ip"] != "127.0.0.1" {
			t.Errorf("auth event %v: want client_ip 127.0.0.1", e)
		}
	}
	checkRequestID := func(t *testing.T, id, bad string) {
		t.Helper()
		got := h.backend.got(id)
		if len(got) != 1 {
			t.Fatalf("backend saw %d requests, want 1", len(got))
		}
		rid := got[0].Header.Get("X-Request-Id")
		if rid == "" || rid == bad || len(rid) > 128 || strings.ContainsAny(rid, "\t\x7f") {
			t.Errorf("backend X-Request-Id %q: want a fresh sane id", rid)
		}
		if e := findEvent(h.main.logs, "auth", map[string]any{"request_id": rid}, 2*time.Second); e == nil {
			t.Errorf("no auth event with request_id %q", rid)
		}
	}
	runCases(t, []tcase{
		{
			name:   "xff-untrusted-http",
			attack: "X-Forwarded-For/-Host/-Proto, Forwarded and X-Authgate-* from an untrusted peer, valid JWT, HTTP",
			want:   "200; backend: XFF 127.0.0.1 only, proto http, host = the request's, no Forwarded, X-Authgate-Class jwt, no X-Authgate-Legacy/-User; log client_ip 127.0.0.1",
			run: func(t *testing.T) {
				id := "spoof-http"
				if o := tryHTTP(t, addr, "/api/x", spoofed+"X-Case: "+id+"\r\nX-Request-Id: "+id+"\r\nAuthorization: Bearer "+hsJWT(id)+"\r\n"); o.status != 200 {
					t.Fatalf("got %v, want 200", o)
				}
				checkForwarded(t, id, "jwt", "")
			},
		},
		{
			name:   "xff-untrusted-websocket",
			attack: "the same spoofed headers on a WebSocket upgrade with a valid JWT",
			want:   "101 relayed; backend headers as for HTTP",
			run: func(t *testing.T) {
				id := "spoof-ws"
				if o := tryWS(t, addr, "/ws?token="+hsJWT(id), spoofed+"X-Case: "+id+"\r\nX-Request-Id: "+id+"\r\n"); o.status != 101 || o.close != 0 {
					t.Fatalf("got %v, want 101 relayed", o)
				}
				checkForwarded(t, id, "jwt", "")
			},
		},
		{
			name:   "authgate-headers-on-rewrite",
			attack: "X-Authgate-Class: jwt and X-Authgate-Legacy: 0 sent with a legacy UUID that gets rewritten",
			want:   "backend sees exactly X-Authgate-Class: uuid and X-Authgate-Legacy: 1",
			run: func(t *testing.T) {
				id := "spoof-rewrite"
				if o := tryWS(t, addr, "/ws?token="+newUUID(id), spoofed+"X-Case: "+id+"\r\nX-Request-Id: "+id+"\r\n"); o.status != 101 || o.close != 0 {
					t.Fatalf("got %v, want 101 relayed", o)
				}
				checkForwarded(t, id, "uuid", "1")
			},
		},
		{
			name:   "connection-header-strips-authgate-headers",
			attack: "Connection: X-Authgate-Class, X-Forwarded-For, X-Request-Id (asking the proxy to drop its own headers as hop-by-hop)",
			want:   "200; the backend still gets authgate's X-Authgate-Class jwt, X-Forwarded-For and an X-Request-Id",
			run: func(t *testing.T) {
				id := "spoof-connection"
				o := tryHTTP(t, addr, "/api/x", "X-Case: "+id+"\r\nX-Request-Id: "+id+"\r\nAuthorization: Bearer "+hsJWT(id)+
					"\r\nConnection: X-Authgate-Class, X-Forwarded-For, X-Request-Id\r\n")
				if o.status != 200 {
					t.Fatalf("got %v, want 200", o)
				}
				checkForwarded(t, id, "jwt", "")
			},
		},
		{
			name:   "request-id-with-tab",
			attack: "X-Request-Id: abc<TAB>def (a control character Go's server lets through)",
			want:   "200; authgate replaces it: the backend and the log get a fresh id",
			run: func(t *testing.T) {
				id := "spoof-rid-tab"
				bad := "abc\tdef"
				if o := tryHTTP(t, addr, "/api/x", "X-Case: "+id+"\r\nX-Request-Id: "+bad+"\r\nAuthorization: Bearer "+hsJWT(id)+"\r\n"); o.status != 200 {
					t.Fatalf("got %v, want 200", o)
				}
				checkRequestID(t, id, bad)
			},
		},
		{
			name:   "request-id-with-newline-escape",
			attack: `X-Request-Id: x","event":"auth","class":"jwt (a log-forging attempt) and obs-text bytes`,
			want:   "200; a fresh id; every log line stays one JSON object",
			run: func(t *testing.T) {
				id := "spoof-rid-forge"
				bad := `x","event":"auth","class":"jwt` + "\xff"
				if o := tryHTTP(t, addr, "/api/x", "X-Case: "+id+"\r\nX-Request-Id: "+bad+"\r\nAuthorization: Bearer "+hsJWT(id)+"\r\n"); o.status != 200 {
					t.Fatalf("got %v, want 200", o)
				}
				checkRequestID(t, id, bad)
			},
		},
		{
			name:   "request-id-with-ctl",
			attack: "X-Request-Id containing 0x01",
			want:   "400 from Go's server (invalid header value); no auth event",
			run: func(t *testing.T) {
				if o := tryHTTP(t, addr, "/api/x", "X-Request-Id: a\x01b\r\nAuthorization: Bearer "+hsJWT("ctl rid")+"\r\n"); o.status != 400 {
					t.Fatalf("got %v, want 400", o)
				}
			},
		},
		{
			name:   "request-id-10KB",
			attack: "a 10 KB X-Request-Id",
			want:   "200; the backend and the log get a fresh id of at most 128 characters",
			run: func(t *testing.T) {
				id := "spoof-rid-long"
				bad := strings.Repeat("r", 10<<10)
				if o := tryHTTP(t, addr, "/api/x", "X-Case: "+id+"\r\nX-Request-Id: "+bad+"\r\nAuthorization: Bearer "+hsJWT(id)+"\r\n"); o.status != 200 {
					t.Fatalf("got %v, want 200", o)
				}
				checkRequestID(t, id, bad)
				if strings.Contains(h.main.logs.String(), strings.Repeat("r", 200)) {
					t.Errorf("the 10 KB id reached the log")
				}
			},
		},
		{
			name:   "origin-cross-site-uuid",
			attack: "a legacy UUID from Origin https://evil.example on a route with legacy.origins",
			want:   "close 4003; backend sees nothing; auth reason 'origin not allowed'",
			run:    originCase("https://evil.example", 4003),
		},
		{
			name:   "origin-suffix-trick",
			attack: "a legacy UUID from Origin https://app.example.com.evil.example",
			want:   "close 4003",
			run:    originCase("https://app.example.com.evil.example", 4003),
		},
		{
			name:   "origin-null",
			attack: "a legacy UUID from Origin: null (sandboxed iframe, file://)",
			want:   "close 4003",
			run:    originCase("null", 4003),
		},
		{
			name:   "origin-missing",
			attack: "a legacy UUID with no Origin header (non-browser client)",
			want:   "close 4003",
			run:    originCase("", 4003),
		},
		{
			name:   "origin-allowed",
			attack: "baseline: a legacy UUID from the allowed Origin https://app.example.com",
			want:   "101 relayed (rewritten)",
			run:    originCase("https://app.example.com", 0),
		},
		{
			name:   "origin-cross-site-jwt",
			attack: "a valid JWT from a foreign Origin (legacy.origins restricts UUIDs only)",
			want:   "101 relayed",
			run: func(t *testing.T) {
				if o := tryWS(t, addr, "/ws-origin?token="+hsJWT("origin jwt"), "Origin: https://evil.example\r\n"); o.status != 101 || o.close != 0 {
					t.Errorf("got %v, want 101 relayed", o)
				}
			},
		},
	})
}

func originCase(origin string, want int) func(t *testing.T) {
	return func(t *testing.T) {
		id := "origin-" + strings.NewReplacer(":", "", "/", "", ".", "").Replace(origin)
		extra := "X-Case: " + id + "\r\nX-Request-Id: " + id + "\r\n"
		if origin != "" {
			extra += "Origin: " + origin + "\r\n"
		}
		o := tryWS(t, h.main.addr, "/ws-origin?token="+newUUID(id), extra)
		if o.status != 101 || o.close != want {
			t.Fatalf("got %v, want 101 close %d", o, want)
		}
		if want != 0 {
			if n := len(h.backend.got(id)); n != 0 {
				t.Errorf("backend saw %d requests, want 0", n)
			}
			if e := authEvent(h.main, id); e == nil || e["reason"] != "origin not allowed" || e["class"] != "uuid" {
				t.Errorf("auth event %v: want class uuid, reason 'origin not allowed'", e)
			}
		}
	}
}
