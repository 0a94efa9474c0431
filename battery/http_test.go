package battery

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// TestHTTP: request-level attacks: header limits, smuggling shapes,
// broken handshakes, absolute-form targets and foreign Hosts.
func TestHTTP(t *testing.T) {
	beginTest(t)
	addr := h.main.addr
	upHost := strings.TrimPrefix(h.backend.srv.URL, "http://")
	runCases(t, []tcase{
		{
			name:   "headers-over-limit",
			attack: "a 70 KiB Cookie header with a valid bearer token (head over MaxHeaderBytes 64 KiB)",
			want:   "431 from Go's server; no auth event; the backend sees nothing",
			run: func(t *testing.T) {
				tok := hsJWT("431 jwt")
				o := tryHTTP(t, addr, "/api/x", "X-Case: h431\r\nAuthorization: Bearer "+tok+"\r\nCookie: c="+strings.Repeat("x", 70<<10)+"\r\n")
				if o.status != 431 {
					t.Errorf("got %v, want 431", o)
				}
				if n := len(h.backend.got("h431")); n != 0 {
					t.Errorf("backend saw %d requests, want 0", n)
				}
			},
		},
		{
			name:   "many-headers-over-limit",
			attack: "4000 small headers (about 90 KiB of head)",
			want:   "431",
			run: func(t *testing.T) {
				var b strings.Builder
				for i := 0; i < 4000; i++ {
					fmt.Fprintf(&b, "X-H-%d: vvvvvvvvvv\r\n", i)
				}
				if o := tryHTTP(t, addr, "/api/x", b.String()); o.status != 431 {
					t.Errorf("got %v, want 431", o)
				}
			},
		},
		{
			name: "te-chunked-plus-content-length",
			attack: "POST with Transfer-Encoding: chunked AND Content-Length: 4; the chunked body is followed by a " +
				"smuggled 'GET /smuggled' on the same connection",
			want: "Go's server accepts it the RFC 9112 §6.1 way (chunked wins, Content-Length dropped): 200 with Connection: close; " +
				"the backend gets body 'hello' with no Content-Length; then the connection closes (issue 14), so the smuggled request is never read, by authgate or the backend",
			run: func(t *testing.T) {
				tok := hsJWT("smuggle jwt")
				raw := "POST /api/x HTTP/1.1\r\nHost: " + addr + "\r\nX-Case: smuggle\r\nAuthorization: Bearer " + tok +
					"\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5\r\nhello\r\n0\r\n\r\n" +
					"GET /smuggled HTTP/1.1\r\nHost: " + addr + "\r\nX-Case: smuggle\r\nConnection: close\r\n\r\n"
				rc, err := rawExchange(addr, raw)
				if err != nil {
					t.Fatal(err)
				}
				defer rc.Close()
				io.Copy(io.Discard, rc.resp.Body)
				if rc.resp.StatusCode != 200 || !rc.resp.Close {
					t.Errorf("first request: %d close=%v, want 200 and Connection: close", rc.resp.StatusCode, rc.resp.Close)
				}
				if rest, err := io.ReadAll(rc.br); len(rest) != 0 || err != nil {
					t.Errorf("after the first response: got %q, %v; want EOF: the smuggled request must not be answered", rest, err)
				}
				got := h.backend.got("smuggle")
				if len(got) != 1 {
					t.Fatalf("backend saw %d requests, want 1", len(got))
				}
				s := got[0]
				if s.Body != "hello" || s.Header.Get("Content-Length") != "" || s.Path != "/api/x" {
					t.Errorf("backend saw path %q body %q Content-Length %q TE %v; want /api/x, hello, none", s.Path, s.Body, s.Header.Get("Content-Length"), s.TE)
				}
			},
		},
		{
			name:   "duplicate-differing-content-length",
			attack: "Content-Length: 4 and Content-Length: 5",
			want:   "400 from Go's server; the backend sees nothing",
			run: func(t *testing.T) {
				tok := hsJWT("dup cl jwt")
				rc, err := rawExchange(addr, "POST /api/x HTTP/1.1\r\nHost: "+addr+"\r\nX-Case: dupcl\r\nAuthorization: Bearer "+tok+
					"\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nhello")
				if err != nil {
					t.Fatal(err)
				}
				defer rc.Close()
				if rc.resp.StatusCode != 400 {
					t.Errorf("got %d, want 400", rc.resp.StatusCode)
				}
				if n := len(h.backend.got("dupcl")); n != 0 {
					t.Errorf("backend saw %d requests, want 0", n)
				}
			},
		},
		{
			name:   "content-length-plus-sign",
			attack: "Content-Length: +5",
			want:   "400 from Go's server",
			run: func(t *testing.T) {
				rc, err := rawExchange(addr, "POST /api/x HTTP/1.1\r\nHost: "+addr+"\r\nContent-Length: +5\r\n\r\nhello")
				if err != nil {
					t.Fatal(err)
				}
				defer rc.Close()
				if rc.resp.StatusCode != 400 {
					t.Errorf("got %d, want 400", rc.resp.StatusCode)
				}
			},
		},
		{
			name:   "transfer-encoding-unsupported",
			attack: "Transfer-Encoding: gzip, chunked",
			want:   "501 from Go's server; the backend sees nothing",
			run: func(t *testing.T) {
				rc, err := rawExchange(addr, "POST /api/x HTTP/1.1\r\nHost: "+addr+"\r\nX-Case: te501\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")
				if err != nil {
					t.Fatal(err)
				}
				defer rc.Close()
				if rc.resp.StatusCode != 501 {
					t.Errorf("got %d, want 501", rc.resp.StatusCode)
				}
				if n := len(h.backend.got("te501")); n != 0 {
					t.Errorf("backend saw %d requests, want 0", n)
				}
			},
		},
		{
			name:   "connection-upgrade-without-upgrade",
			attack: "GET /ws with Connection: upgrade and a valid token but no Upgrade header",
			want:   "not a WebSocket request, so the websocket-only route does not match: 404 JSON not_found (unmatched: reject)",
			run: func(t *testing.T) {
				o := tryHTTP(t, addr, "/ws?token="+hsJWT("conn-upgrade jwt"), "Connection: upgrade\r\nX-Case: connup\r\n")
				if o.status != 404 || jsonField(o.body, "error") != "not_found" {
					t.Errorf("got %v, want 404 not_found", o)
				}
				if n := len(h.backend.got("connup")); n != 0 {
					t.Errorf("backend saw %d requests, want 0", n)
				}
			},
		},
		{
			name:   "dot-segment-path",
			attack: "GET /x/../ws?token=<uuid> and GET //ws: a path the backend might normalise onto a route authgate did not match",
			want:   "400 JSON bad_path; backend sees nothing",
			run: func(t *testing.T) {
				u := newUUID("dot-segment uuid")
				for _, p := range []string{"/x/../ws?token=" + u, "//ws?token=" + u, "/api/./x"} {
					o := tryHTTP(t, addr, p, "X-Case: dotseg\r\n")
					if o.status != 400 || jsonField(o.body, "error") != "bad_path" {
						t.Errorf("%s: got %v, want 400 bad_path", p, o)
					}
				}
				if n := len(h.backend.got("dotseg")); n != 0 {
					t.Errorf("backend saw %d requests, want 0", n)
				}
			},
		},
		{
			name:   "upgrade-on-post",
			attack: "POST /ws with Upgrade: websocket, a valid key and a valid token",
			want:   "400 JSON bad_handshake; backend sees nothing",
			run: func(t *testing.T) {
				raw := strings.Replace(upgradeReq(addr, "/ws?token="+hsJWT("post jwt"), "X-Case: postup\r\nContent-Length: 0\r\n"), "GET", "POST", 1)
				o := rawOutcome(t, addr, raw)
				if o.status != 400 || jsonField(o.body, "error") != "bad_handshake" {
					t.Errorf("got %v, want 400 bad_handshake", o)
				}
				if n := len(h.backend.got("postup")); n != 0 {
					t.Errorf("backend saw %d requests, want 0", n)
				}
			},
		},
		{
			name:   "upgrade-on-post-no-token",
			attack: "POST /ws with Upgrade: websocket and no token",
			want:   "401 JSON missing (a close frame needs a valid handshake)",
			run: func(t *testing.T) {
				raw := strings.Replace(upgradeReq(addr, "/ws", "Content-Length: 0\r\n"), "GET", "POST", 1)
				o := rawOutcome(t, addr, raw)
				if o.status != 401 || jsonField(o.body, "error") != "missing" {
					t.Errorf("got %v, want 401 missing", o)
				}
			},
		},
		{
			name:   "missing-sec-websocket-key",
			attack: "a valid token, no Sec-WebSocket-Key",
			want:   "400 JSON bad_handshake",
			run: func(t *testing.T) {
				raw := "GET /ws?token=" + hsJWT("nokey jwt") + " HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"
				if o := rawOutcome(t, addr, raw); o.status != 400 || jsonField(o.body, "error") != "bad_handshake" {
					t.Errorf("got %v, want 400 bad_handshake", o)
				}
			},
		},
		{
			name:   "wrong-sec-websocket-key",
			attack: "a valid token, Sec-WebSocket-Key: abc (not 16 bytes of base64)",
			want:   "400 JSON bad_handshake",
			run: func(t *testing.T) {
				raw := strings.Replace(upgradeReq(addr, "/ws?token="+hsJWT("badkey jwt"), ""), wsKey, "abc", 1)
				if o := rawOutcome(t, addr, raw); o.status != 400 || jsonField(o.body, "error") != "bad_handshake" {
					t.Errorf("got %v, want 400 bad_handshake", o)
				}
			},
		},
		{
			name:   "wrong-sec-websocket-version",
			attack: "a valid token, Sec-WebSocket-Version: 8",
			want:   "400 JSON bad_handshake",
			run: func(t *testing.T) {
				raw := strings.Replace(upgradeReq(addr, "/ws?token="+hsJWT("v8 jwt"), ""), "Version: 13", "Version: 8", 1)
				if o := rawOutcome(t, addr, raw); o.status != 400 || jsonField(o.body, "error") != "bad_handshake" {
					t.Errorf("got %v, want 400 bad_handshake", o)
				}
			},
		},
		{
			name:   "missing-key-and-token",
			attack: "no token and no Sec-WebSocket-Key",
			want:   "401 JSON missing with WWW-Authenticate (cannot complete a handshake to send 4001)",
			run: func(t *testing.T) {
				raw := "GET /ws HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"
				rc, err := rawExchange(addr, raw)
				if err != nil {
					t.Fatal(err)
				}
				defer rc.Close()
				b, _ := io.ReadAll(io.LimitReader(rc.resp.Body, 4096))
				if rc.resp.StatusCode != 401 || jsonField(string(b), "close_code") != "4001" || rc.resp.Header.Get("WWW-Authenticate") == "" {
					t.Errorf("got %d %s %v, want 401 JSON close_code 4001 + WWW-Authenticate", rc.resp.StatusCode, b, rc.resp.Header)
				}
			},
		},
		{
			name:   "http10-upgrade",
			attack: "an HTTP/1.0 upgrade request with a valid token",
			want:   "400 JSON bad_handshake (RFC 6455 §4.1 needs HTTP/1.1)",
			run: func(t *testing.T) {
				raw := strings.Replace(upgradeReq(addr, "/ws?token="+hsJWT("http10 jwt"), ""), "HTTP/1.1", "HTTP/1.0", 1)
				if o := rawOutcome(t, addr, raw); o.status != 400 || jsonField(o.body, "error") != "bad_handshake" {
					t.Errorf("got %v, want 400 bad_handshake", o)
				}
			},
		},
		{
			name:   "absolute-form-websocket",
			attack: "GET http://evil.example/ws?token=<jwt> HTTP/1.1 (absolute-form target), Host: evil.example",
			want:   "101 relayed; the backend sees path /ws, Host = the upstream's host, X-Forwarded-Host evil.example",
			run: func(t *testing.T) {
				raw := upgradeReq("evil.example", "http://evil.example/ws?token="+hsJWT("absform jwt"), "X-Case: absws\r\n")
				o := rawWSOutcome(t, addr, raw)
				if o.status != 101 || o.close != 0 {
					t.Fatalf("got %v, want 101 relayed", o)
				}
				checkHost(t, "absws", upHost, "evil.example", "/ws")
			},
		},
		{
			name:   "absolute-form-http",
			attack: "GET http://evil.example/api/x HTTP/1.1 with a valid bearer token",
			want:   "200; the backend sees path /api/x and Host = the upstream's host",
			run: func(t *testing.T) {
				raw := "GET http://evil.example/api/x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\nX-Case: abshttp\r\nAuthorization: Bearer " + hsJWT("abs http jwt") + "\r\n\r\n"
				if o := rawOutcome(t, addr, raw); o.status != 200 {
					t.Fatalf("got %v, want 200", o)
				}
				checkHost(t, "abshttp", upHost, "evil.example", "/api/x")
			},
		},
		{
			name:   "foreign-host",
			attack: "Host: evil.example on a valid request (host_header: upstream)",
			want:   "200; the backend sees Host = the upstream's host, X-Forwarded-Host evil.example",
			run: func(t *testing.T) {
				raw := "GET /api/x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\nX-Case: fhost\r\nAuthorization: Bearer " + hsJWT("fhost jwt") + "\r\n\r\n"
				if o := rawOutcome(t, addr, raw); o.status != 200 {
					t.Fatalf("got %v, want 200", o)
				}
				checkHost(t, "fhost", upHost, "evil.example", "/api/x")
			},
		},
		{
			name:   "reject-close-handshake-latency",
			attack: "a rejected upgrade (no token): the client answers authgate's 4001 close frame at once, then waits for the server to close TCP (RFC 6455 §7.1.1, as browsers do)",
			want:   "close 4001, then TCP closed within 300 ms of the client's close frame (browsers fire onclose only then)",
			run: func(t *testing.T) {
				rc := rawUpgrade(t, addr, "/ws", "")
				defer rc.Close()
				cr := awaitClose(rc, 3*time.Second)
				if cr.code != 4001 {
					t.Fatalf("got %+v, want close 4001", cr)
				}
				replyClose(rc, 4001)
				start := time.Now()
				if err := expectEOF(rc, 3*time.Second); err != nil {
					t.Fatal(err)
				}
				if d := time.Since(start); d > 300*time.Millisecond {
					t.Errorf("TCP closed %v after the client's close frame, want under 300ms", d.Round(time.Millisecond))
				}
			},
		},
	})
}

// rawOutcome sends raw and returns status and body.
func rawOutcome(t *testing.T, addr, raw string) outcome {
	t.Helper()
	rc, err := rawExchange(addr, raw)
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(io.LimitReader(rc.resp.Body, 1<<16))
	return outcome{status: rc.resp.StatusCode, body: string(b)}
}

// rawWSOutcome is tryWS for a hand-written upgrade request.
func rawWSOutcome(t *testing.T, addr, raw string) outcome {
	t.Helper()
	rc, err := rawExchange(addr, raw)
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	defer rc.Close()
	o := outcome{status: rc.resp.StatusCode}
	if o.status != 101 {
		return o
	}
	if err := rawEcho(rc, "absolute"); err != nil {
		cr := awaitClose(rc, time.Second)
		o.close = cr.code
		return o
	}
	replyClose(rc, 1000)
	awaitClose(rc, 3*time.Second)
	return o
}

func checkHost(t *testing.T, c, upHost, fwdHost, path string) {
	t.Helper()
	got := h.backend.got(c)
	if len(got) != 1 {
		t.Fatalf("backend saw %d requests, want 1", len(got))
	}
	s := got[0]
	if s.Host != upHost || s.Header.Get("X-Forwarded-Host") != fwdHost || s.Path != path {
		t.Errorf("backend saw Host %q X-Forwarded-Host %q path %q; want %q %q %q", s.Host, s.Header.Get("X-Forwarded-Host"), s.Path, upHost, fwdHost, path)
	}
}
