package proxy_test

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestRejectWebSocketClose: with reject_with: close (the default), every
// refused upgrade completes the handshake and at once closes with the
// class's code and reason, so browser code can read them; the backend is
// never reached.
func TestRejectWebSocketClose(t *testing.T) {
	be := newBackend(t)
	h := startProxy(t, testConfig{Upstream: be.url})
	sub := "7d0e3a52-7f39-4c64-9d3c-2b6f0c1de5a1"
	cases := []struct {
		name       string
		path       string
		hdr        http.Header
		subproto   []string
		wantCode   int
		wantReason string
	}{
		{"missing", "/ws/strict", nil, nil, 4001, "authentication required"},
		{"missing empty query value", "/ws/strict?token=", nil, nil, 4001, "authentication required"},
		{"malformed", "/ws/strict?token=not-a-token", nil, nil, 4001, "invalid token"},
		{"malformed oversized", "/ws/strict?token=" + strings.Repeat("a", 9<<10), nil, nil, 4001, "invalid token"},
		{"malformed ambiguous", "/ws/strict?token=" + validJWT(t, sub) + "&token=" + testUUID, nil, nil, 4001, "invalid token"},
		{"jwt_invalid signature", "/ws/strict?token=" + forgedJWT(t, sub), nil, nil, 4001, "invalid token"},
		{"jwt_invalid alg none", "/ws/strict?token=" + noneJWT(sub), nil, nil, 4001, "invalid token"},
		{"jwt_expired", "/ws/strict?token=" + expiredJWT(t, sub), nil, nil, 4002, "token expired (refresh and reconnect)"},
		{"jwt_expired in header", "/ws/strict", http.Header{"Authorization": {"Bearer " + expiredJWT(t, sub)}}, nil, 4002, "token expired (refresh and reconnect)"},
		{"uuid rejected", "/ws/strict?token=" + testUUID, nil, nil, 4003, "legacy authentication no longer accepted"},
		{"uuid as bearer subprotocol", "/ws/strict", nil, []string{"bearer", testUUID}, 4003, "legacy authentication no longer accepted"},
		{"origin refused", "/ws/origin?token=" + testUUID, http.Header{"Origin": {"https://evil.example.com"}}, nil, 4003, "legacy authentication no longer accepted"},
		{"origin missing", "/ws/origin?token=" + testUUID, nil, nil, 4003, "legacy authentication no longer accepted"},
		{"close_codes missing", "/ws/codes", nil, nil, 4401, "authentication required"},
		{"close_codes malformed", "/ws/codes?token=xyz", nil, nil, 4400, "invalid token"},
		{"close_codes jwt_expired", "/ws/codes?token=" + expiredJWT(t, sub), nil, nil, 4419, "token expired (refresh and reconnect)"},
		{"close_codes uuid", "/ws/codes?token=" + testUUID, nil, nil, 4403, "legacy authentication no longer accepted"},
		{"close_codes default jwt_invalid", "/ws/codes?token=" + forgedJWT(t, sub), nil, nil, 4001, "invalid token"},
		{"unmatched", "/ws/nowhere?token=" + validJWT(t, sub), nil, nil, 4004, "not found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := be.hits.Load()
			c, resp, err := h.dial(t, tc.path, tc.hdr, &websocket.Dialer{Subprotocols: tc.subproto})
			if err != nil {
				status := 0
				if resp != nil {
					status = resp.StatusCode
				}
				t.Fatalf("dial: got %v (status %d), want a completed handshake", err, status)
			}
			if len(tc.subproto) > 0 {
				// A browser fails a handshake that selects no offered
				// protocol, and would then see 1006, not the code.
				if got := c.Subprotocol(); !offered(tc.subproto, got) {
					t.Errorf("selected subprotocol: got %q, want one of %q", got, tc.subproto)
				}
			}
			ce := readClose(t, c)
			if ce.Code != tc.wantCode || ce.Text != tc.wantReason {
				t.Errorf("close: got %d %q, want %d %q", ce.Code, ce.Text, tc.wantCode, tc.wantReason)
			}
			if n := be.hits.Load() - before; n != 0 {
				t.Errorf("backend requests: got %d, want 0", n)
			}
		})
	}
}

func offered(list []string, p string) bool {
	for _, o := range list {
		if o == p {
			return true
		}
	}
	return false
}

// noneJWT is an unsigned token (alg none) that would otherwise be valid.
func noneJWT(sub string) string {
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	return enc(`{"alg":"none","typ":"JWT"}`) + "." + enc(`{"sub":"`+sub+`","aud":"authenticated","exp":4102444800}`) + "."
}

// rejectBody is the JSON body of an HTTP rejection.
type rejectBody struct {
	Error     string `json:"error"`
	Message   string `json:"message"`
	CloseCode int    `json:"close_code"`
	RequestID string `json:"request_id"`
}

func decodeReject(t *testing.T, resp *http.Response, body []byte) rejectBody {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type: got %q, want application/json", ct)
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(body, &keys); err != nil {
		t.Fatalf("body %q: got %v, want a JSON object", body, err)
	}
	for _, k := range []string{"error", "message", "close_code", "request_id"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("body %s: missing key %q", body, k)
		}
	}
	var rb rejectBody
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rb); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	if rb.RequestID == "" || resp.Header.Get("X-Request-Id") != rb.RequestID {
		t.Errorf("request_id: got body %q header %q, want equal and non-empty", rb.RequestID, resp.Header.Get("X-Request-Id"))
	}
	return rb
}

// TestRejectHTTP: plain requests, and upgrades on reject_with: http
// routes, are refused with the class's status and a JSON body; 401s carry
// WWW-Authenticate: Bearer error="invalid_token"; unmatched: reject is a
// 404.
func TestRejectHTTP(t *testing.T) {
	be := newBackend(t)
	h := startProxy(t, testConfig{Upstream: be.url})
	sub := "7d0e3a52-7f39-4c64-9d3c-2b6f0c1de5a1"
	bearerHdr := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	cases := []struct {
		name       string
		ws         bool
		path       string
		hdr        http.Header
		wantStatus int
		want       rejectBody // RequestID not compared
	}{
		{"missing", false, "/api/v1/me", nil, 401, rejectBody{"missing", "authentication required", 4001, ""}},
		{"basic auth is missing", false, "/api/v1/me", http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}}, 401, rejectBody{"missing", "authentication required", 4001, ""}},
		{"malformed", false, "/api/v1/me", bearerHdr("garbage"), 401, rejectBody{"malformed", "invalid token", 4001, ""}},
		{"jwt_invalid", false, "/api/v1/me", bearerHdr(forgedJWT(t, sub)), 401, rejectBody{"jwt_invalid", "invalid token", 4001, ""}},
		{"jwt_expired", false, "/api/v1/me", bearerHdr(expiredJWT(t, sub)), 401, rejectBody{"jwt_expired", "token expired (refresh and reconnect)", 4002, ""}},
		{"uuid rejected", false, "/strict/x", bearerHdr(testUUID), 403, rejectBody{"uuid", "legacy authentication no longer accepted", 4003, ""}},
		{"unmatched", false, "/nowhere?token=" + validJWT(t, sub), nil, 404, rejectBody{"not_found", "not found", 4004, ""}},
		{"unmatched websocket-only path without upgrade", false, "/ws/strict", bearerHdr(validJWT(t, sub)), 404, rejectBody{"not_found", "not found", 4004, ""}},
		{"reject_with http missing", true, "/ws/http", nil, 401, rejectBody{"missing", "authentication required", 4001, ""}},
		{"reject_with http expired", true, "/ws/http?token=" + expiredJWT(t, sub), nil, 401, rejectBody{"jwt_expired", "token expired (refresh and reconnect)", 4002, ""}},
		{"reject_with http uuid", true, "/ws/http?token=" + testUUID, nil, 403, rejectBody{"uuid", "legacy authentication no longer accepted", 4003, ""}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := be.hits.Load()
			var (
				resp *http.Response
				body []byte
			)
			if tc.ws {
				c, r, err := h.dial(t, tc.path, tc.hdr, nil)
				if err == nil {
					c.Close()
					t.Fatalf("dial: handshake completed, want HTTP %d", tc.wantStatus)
				}
				if r == nil {
					t.Fatalf("dial: got %v and no response, want HTTP %d", err, tc.wantStatus)
				}
				resp = r
				body = readAll(r)
			} else {
				resp, body = h.do(t, "GET", tc.path, tc.hdr)
			}
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status: got %d, want %d (body %s)", resp.StatusCode, tc.wantStatus, body)
			}
			rb := decodeReject(t, resp, body)
			rb.RequestID = ""
			if rb != tc.want {
				t.Errorf("body: got %+v, want %+v", rb, tc.want)
			}
			wa := resp.Header.Values("WWW-Authenticate")
			if tc.wantStatus == 401 && (len(wa) != 1 || wa[0] != `Bearer error="invalid_token"`) {
				t.Errorf("WWW-Authenticate: got %q, want [Bearer error=\"invalid_token\"]", wa)
			}
			if tc.wantStatus != 401 && len(wa) != 0 {
				t.Errorf("WWW-Authenticate: got %q, want none on %d", wa, tc.wantStatus)
			}
			if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control: got %q, want no-store", cc)
			}
			if n := be.hits.Load() - before; n != 0 {
				t.Errorf("backend requests: got %d, want 0", n)
			}
		})
	}
}

func readAll(r *http.Response) []byte {
	if r.Body == nil {
		return nil
	}
	defer r.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := r.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return []byte(b.String())
		}
	}
}

// TestRejectInvalidHandshakeLogsStatus pins a log inaccuracy: an upgrade
// authgate cannot complete itself (here Sec-WebSocket-Version 8) is
// refused with HTTP even on a reject_with: close route, and its auth
// event must say what the client got: status 401, not close_code 4001.
func TestRejectInvalidHandshakeLogsStatus(t *testing.T) {
	be := newBackend(t)
	h := startProxy(t, testConfig{Upstream: be.url})
	conn, err := net.DialTimeout("tcp", h.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET /ws/strict HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\nX-Request-Id: bad-version\r\n\r\n", h.addr)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status: got %d, want 401", resp.StatusCode)
	}
	ev := h.logs.waitEvent(t, "auth", func(l logLine) bool { return l.str("request_id") == "bad-version" })
	st, hasSt := ev.num("status")
	_, hasCC := ev.num("close_code")
	if !hasSt || st != 401 || hasCC {
		t.Errorf("auth event: got status %v close_code %v, want status 401 and no close_code (the client got HTTP 401)", ev.fields["status"], ev.fields["close_code"])
	}
}

// TestRejectRepeatAttempts pins the cheaper answer to a stale build's
// reconnect loop (issue 23): the same legacy user from the same address
// gets three 4003 close frames a minute, then 403 before the upgrade
// (no 101), each logged as the same decision with status in place of
// close_code; another user is apart; none reaches the backend.
func TestRejectRepeatAttempts(t *testing.T) {
	be := newBackend(t)
	h := startProxy(t, testConfig{Upstream: be.url})
	other := "7d0e3a52-7f39-4c64-9d3c-2b6f0c1de5a1"
	var answers []string
	for range 5 {
		c, resp, err := h.dial(t, "/ws/strict?token="+testUUID, nil, nil)
		switch {
		case err == nil:
			answers = append(answers, fmt.Sprint(readClose(t, c).Code))
			c.Close()
		case resp != nil:
			var body struct {
				Error     string `json:"error"`
				CloseCode int    `json:"close_code"`
			}
			json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			conn := "keep-alive"
			if resp.Close {
				conn = "close"
			}
			answers = append(answers, fmt.Sprintf("%d %s %d %s", resp.StatusCode, body.Error, body.CloseCode, conn))
		default:
			t.Fatalf("dial: %v", err)
		}
	}
	want := "[4003 4003 4003 403 uuid 4003 close 403 uuid 4003 close]"
	if fmt.Sprint(answers) != want {
		t.Errorf("five attempts of one stale user: got %v, want %s", answers, want)
	}
	c, _ := h.mustDial(t, "/ws/strict?token="+other, nil, nil)
	if ce := readClose(t, c); ce.Code != 4003 {
		t.Errorf("another user's first attempt: got %d, want 4003", ce.Code)
	}
	c.Close()
	var logged []string
	for _, l := range h.logs.events(t, "auth") {
		code, _ := l.num("close_code")
		status, _ := l.num("status")
		logged = append(logged, fmt.Sprintf("%s/%s/%s/%.0f/%.0f", l.str("class"), l.str("action"), l.str("user")[:8], code, status))
	}
	wantLog := "[uuid/reject/21a2151a/4003/0 uuid/reject/21a2151a/4003/0 uuid/reject/21a2151a/4003/0 uuid/reject/21a2151a/0/403 uuid/reject/21a2151a/0/403 uuid/reject/7d0e3a52/4003/0]"
	if fmt.Sprint(logged) != wantLog {
		t.Errorf("auth lines: got %v, want %s", logged, wantLog)
	}
	if n := be.hits.Load(); n != 0 {
		t.Errorf("backend requests: got %d, want 0", n)
	}
}
