package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"
)

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// abruptUpstream accepts connections and closes them at once, after
// reading a little.
func abruptUpstream(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetReadDeadline(time.Now().Add(time.Second))
			c.Read(make([]byte, 1024))
			c.Close()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// TestUpstreamFailure: when the upstream cannot be reached or drops the
// connection, a WebSocket client still gets a handshake and then close
// 1014, an HTTP client a 502 JSON answer, and an upstream_error event is
// logged without the query string.
func TestUpstreamFailure(t *testing.T) {
	cases := []struct {
		name string
		addr func(t *testing.T) string
	}{
		{"down", deadAddr},
		{"closes abruptly", abruptUpstream},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := startProxy(t, testConfig{Upstream: "http://" + tc.addr(t)})
			jwtTok := validJWT(t, "u1")

			// gorilla's client refuses close code 1014 (registered after
			// it was written), so this client is gobwas/ws.
			code, reason := dialReadClose(t, h, "/api/v1/pam/ws?token="+jwtTok, http.Header{"X-Request-Id": {"ws-down"}})
			if code != 1014 || reason != "bad gateway" {
				t.Errorf("websocket: got close %d %q, want 1014 \"bad gateway\"", code, reason)
			}

			resp, body := h.do(t, "GET", "/api/v1/me?x=1", http.Header{"Authorization": {"Bearer " + jwtTok}, "X-Request-Id": {"http-down"}})
			if resp.StatusCode != http.StatusBadGateway {
				t.Fatalf("http: got %d %s, want 502", resp.StatusCode, body)
			}
			rb := decodeReject(t, resp, body)
			if rb.Error != "bad_gateway" || rb.Message != "bad gateway" || rb.RequestID != "http-down" {
				t.Errorf("http body: got %+v, want error bad_gateway, message \"bad gateway\", request_id http-down", rb)
			}

			for _, want := range []struct{ id, route, path string }{
				{"ws-down", "pam-ws", "/api/v1/pam/ws"},
				{"http-down", "api", "/api/v1/me"},
			} {
				ev := h.logs.waitEvent(t, "upstream_error", func(l logLine) bool { return l.str("request_id") == want.id })
				if ev.str("route") != want.route || ev.str("path") != want.path {
					t.Errorf("upstream_error %s: got route %q path %q, want %q %q", want.id, ev.str("route"), ev.str("path"), want.route, want.path)
				}
				if ev.str("level") != "error" {
					t.Errorf("upstream_error %s: got level %q, want error", want.id, ev.str("level"))
				}
				if strings.Contains(ev.raw, jwtTok) || strings.Contains(ev.raw, "?") {
					t.Errorf("upstream_error %s logs the token or a query: %s", want.id, ev.raw)
				}
			}
			if n := h.srv.OpenWebSockets(); n != 0 {
				t.Errorf("OpenWebSockets: got %d, want 0", n)
			}
		})
	}
}

// TestUpstreamRefusesUpgrade: an upstream that answers the upgrade with
// an error status has that answer passed to the client.
func TestUpstreamRefusesUpgrade(t *testing.T) {
	cases := []struct {
		status int
		body   string
	}{
		{http.StatusUnauthorized, `{"detail":"invalid token"}`},
		{http.StatusForbidden, `{"detail":"forbidden"}`},
		{http.StatusNotFound, `{"detail":"no such socket"}`},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			be := newBackend(t)
			be.onRequest = func(w http.ResponseWriter, r *http.Request) bool {
				w.Header().Set("Content-Type", "application/json")
				if tc.status == http.StatusUnauthorized {
					w.Header().Set("WWW-Authenticate", `Bearer realm="backend"`)
				}
				w.WriteHeader(tc.status)
				w.Write([]byte(tc.body))
				return true
			}
			h := startProxy(t, testConfig{Upstream: be.url})
			c, resp, err := h.dial(t, "/api/v1/pam/ws?token="+validJWT(t, "u1"), nil, nil)
			if err == nil {
				c.Close()
				t.Fatalf("dial: handshake completed, want HTTP %d", tc.status)
			}
			if !errors.Is(err, websocket.ErrBadHandshake) || resp == nil {
				t.Fatalf("dial: got %v, want a bad handshake with a response", err)
			}
			if resp.StatusCode != tc.status {
				t.Errorf("status: got %d, want %d", resp.StatusCode, tc.status)
			}
			if body := string(readAll(resp)); body != tc.body {
				t.Errorf("body: got %q, want %q", body, tc.body)
			}
			if tc.status == http.StatusUnauthorized {
				if got := resp.Header.Get("WWW-Authenticate"); got != `Bearer realm="backend"` {
					t.Errorf("WWW-Authenticate: got %q, want the backend's", got)
				}
			}
			if n := h.srv.OpenWebSockets(); n != 0 {
				t.Errorf("OpenWebSockets: got %d, want 0", n)
			}
		})
	}
}

// TestHealthPath: health_path is answered by authgate itself, with no
// token, and never reaches the backend.
func TestHealthPath(t *testing.T) {
	be := newBackend(t)
	h := startProxy(t, testConfig{Upstream: be.url})
	before := be.hits.Load()
	for _, path := range []string{"/healthz", "/healthz?probe=render"} {
		resp, body := h.do(t, "GET", path, nil)
		if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
			t.Errorf("GET %s: got %d %q, want 200 \"ok\\n\"", path, resp.StatusCode, body)
		}
	}
	if n := be.hits.Load() - before; n != 0 {
		t.Errorf("backend requests: got %d, want 0", n)
	}
	if evs := h.logs.events(t, "auth"); len(evs) != 0 {
		t.Errorf("auth events for the health path: got %d, want 0", len(evs))
	}
}

// TestWebSocketUnmatchedPass pins a bug: with unmatched: pass (the
// default), a WebSocket on a path no route matches is proxied with a nil
// route, and serveWebSocket dereferenced it (metrics label, ws_close
// route): the handler panicked after hijacking, leaving both sockets and
// a registry entry behind. The WebSocket must be relayed like any other.
func TestWebSocketUnmatchedPass(t *testing.T) {
	be := newBackend(t)
	h := startProxy(t, testConfig{Upstream: be.url, Unmatched: "pass"})
	c, _ := h.mustDial(t, "/ws/public?room=1", http.Header{
		"X-Authgate-Class": {"jwt"}, "X-Authgate-Legacy": {"1"}, "X-Request-Id": {"unmatched-ws"},
	}, nil)
	echoOnce(t, c, "hello")
	r := be.last(t)
	if r.RequestURI != "/ws/public?room=1" {
		t.Errorf("backend RequestURI: got %q, want /ws/public?room=1", r.RequestURI)
	}
	for _, k := range []string{"X-Authgate-Class", "X-Authgate-Legacy"} {
		if got := r.Header.Values(k); len(got) != 0 {
			t.Errorf("%s: got %q, want removed", k, got)
		}
	}
	// A reload with the WebSocket open decides open connections again.
	func() {
		defer func() {
			if p := recover(); p != nil {
				t.Errorf("Swap with an unmatched WebSocket open panicked: %v", p)
			}
		}()
		h.srv.Swap(parseConfig(t, testConfig{Upstream: be.url, Unmatched: "pass", UserIDs: "omit"}))
	}()
	echoOnce(t, c, "still open")
	ce := closeClient(t, c, 4000, "bye")
	if ce.Code != 4000 {
		t.Errorf("close answer: got %d, want 4000", ce.Code)
	}
	if !waitFor(3*time.Second, func() bool { return h.srv.OpenWebSockets() == 0 }) {
		t.Errorf("OpenWebSockets: got %d, want 0 after the close", h.srv.OpenWebSockets())
	}
	ev := h.logs.waitEvent(t, "ws_close", func(l logLine) bool { return l.str("request_id") == "unmatched-ws" })
	if code, _ := ev.num("close_code"); code != 4000 || ev.str("closed_by") != "client" {
		t.Errorf("ws_close: got close_code %v closed_by %q, want 4000 client", ev.fields["close_code"], ev.str("closed_by"))
	}
}

// dialReadClose opens a WebSocket through h with gobwas/ws, expects a
// completed handshake, and returns the code and reason of the first close
// frame it reads (answering it).
func dialReadClose(t *testing.T, h *harness, path string, hdr http.Header) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, br, _, err := ws.Dialer{Header: ws.HandshakeHeaderHTTP(hdr)}.Dial(ctx, h.wsBase+path)
	if err != nil {
		t.Fatalf("dial %s: got %v, want a completed handshake", path, err)
	}
	defer conn.Close()
	var rd io.Reader = conn
	if br != nil {
		rd = io.MultiReader(br, conn)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := ws.ReadFrame(rd)
		if err != nil {
			t.Fatalf("got %v, want a close frame", err)
		}
		if f.Header.OpCode != ws.OpClose {
			continue
		}
		if f.Header.Masked {
			t.Errorf("close frame from authgate is masked")
		}
		code, reason := ws.ParseCloseFrameData(f.Payload)
		ws.WriteFrame(conn, ws.MaskFrameInPlace(ws.NewCloseFrame(ws.NewCloseFrameBody(code, ""))))
		return int(code), reason
	}
}
