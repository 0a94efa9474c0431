package proxy

import (
	"bufio"
	"bytes"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"authgate/rewrite"
)

// The pooled head writers must put on the wire what Request.Write and
// Header.Write put there: the upstream and the client parse the same
// request and response either way.

func upgradeRequest(uri, host string, h http.Header) *http.Request {
	u, err := url.ParseRequestURI(uri)
	if err != nil {
		return nil
	}
	u.Scheme, u.Host = "http", "upstream.test"
	return &http.Request{Method: http.MethodGet, URL: u, Host: host, Header: h, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
}

// viaRequestWrite is what dialUpgrade wrote before the pooled writer.
func viaRequestWrite(t testing.TB, out *http.Request) []byte {
	var b bytes.Buffer
	c := *out
	c.Header = out.Header.Clone()
	if _, ok := c.Header["User-Agent"]; !ok {
		c.Header["User-Agent"] = []string{""}
	}
	if err := c.Write(&b); err != nil {
		t.Fatalf("Request.Write: %v", err)
	}
	return b.Bytes()
}

func parseHead(t testing.TB, raw []byte) *http.Request {
	r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatalf("parse %q: %v", raw, err)
	}
	return r
}

func sameRequest(t testing.TB, out *http.Request) {
	t.Helper()
	b, ok := appendUpgradeRequest(nil, out)
	if !ok {
		t.Fatalf("appendUpgradeRequest refused host %q", out.Host)
	}
	got, want := parseHead(t, b), parseHead(t, viaRequestWrite(t, out))
	if got.Method != want.Method || got.RequestURI != want.RequestURI || got.Host != want.Host || got.Proto != want.Proto {
		t.Fatalf("request line/host: got %s %s %s %s, want %s %s %s %s", got.Method, got.RequestURI, got.Proto, got.Host, want.Method, want.RequestURI, want.Proto, want.Host)
	}
	if !reflect.DeepEqual(got.Header, want.Header) {
		t.Fatalf("header:\n got  %q\n want %q\nwire: %q", got.Header, want.Header, b)
	}
}

func TestUpgradeRequestHeadMatchesRequestWrite(t *testing.T) {
	base := func() http.Header {
		return http.Header{
			"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="},
			"Sec-Websocket-Version": {"13"}, "X-Forwarded-For": {"203.0.113.7"}, "Cookie": {"a=1", "b=2"},
		}
	}
	cases := map[string]func(h http.Header){
		"plain":                   func(http.Header) {},
		"user agent":              func(h http.Header) { h["User-Agent"] = []string{"Mozilla/5.0", "second"} },
		"empty user agent":        func(h http.Header) { h["User-Agent"] = []string{""} },
		"content-length kept out": func(h http.Header) { h["Content-Length"] = []string{"0"}; h["Trailer"] = []string{"X"} },
		"CR LF in a value":        func(h http.Header) { h["X-Evil"] = []string{"a\r\nX-Injected: 1"} },
		"invalid name dropped": func(h http.Header) {
			h["Bad Name"] = []string{"x"}
			h["Bad:Name"] = []string{"y"}
			h[""] = []string{"z"}
		},
		"padded value": func(h http.Header) { h["X-Pad"] = []string{"  v \t"} },
		"empty value":  func(h http.Header) { h["X-Empty"] = []string{""} },
	}
	for name, edit := range cases {
		t.Run(name, func(t *testing.T) {
			h := base()
			edit(h)
			sameRequest(t, upgradeRequest("/ws/chat?room=1&token=eyJ.a.b", "app.example.com", h))
		})
	}
	t.Run("no query, URL host", func(t *testing.T) {
		sameRequest(t, upgradeRequest("/ws", "", base()))
	})
	for _, host := range []string{"bücher.example", "a b", "x\r\ny", "\"", "h/p"} {
		if _, ok := appendUpgradeRequest(nil, upgradeRequest("/ws", host, base())); ok {
			t.Errorf("host %q: want the Request.Write fallback", host)
		}
	}
}

// viaHeaderWrite is what writeSwitching wrote before the pooled writer.
func viaHeaderWrite(t testing.TB, r *http.Request, resp *http.Response) []byte {
	h := resp.Header.Clone()
	removeHopHeaders(h)
	stripAuthgateHeaders(h)
	proto := rewrite.ProtocolAnswer(r.Header.Values("Sec-Websocket-Protocol"), h.Get("Sec-Websocket-Protocol"))
	h.Del("Sec-Websocket-Protocol")
	var b strings.Builder
	b.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
	if proto != "" {
		b.WriteString("Sec-WebSocket-Protocol: " + proto + "\r\n")
	}
	if err := h.Write(&b); err != nil {
		t.Fatal(err)
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}

func parseResponse(t testing.TB, raw []byte) *http.Response {
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
	if err != nil {
		t.Fatalf("parse %q: %v", raw, err)
	}
	return resp
}

func sameSwitching(t testing.TB, r *http.Request, resp *http.Response) {
	t.Helper()
	b := appendSwitching(nil, r, resp)
	got, want := parseResponse(t, b), parseResponse(t, viaHeaderWrite(t, r, resp))
	if got.StatusCode != 101 || !reflect.DeepEqual(got.Header, want.Header) {
		t.Fatalf("101:\n got  %d %q\n want %q\nwire: %q", got.StatusCode, got.Header, want.Header, b)
	}
}

func TestSwitchingHeadMatchesHeaderWrite(t *testing.T) {
	client := func(protocols ...string) *http.Request {
		h := http.Header{}
		if len(protocols) > 0 {
			h["Sec-Websocket-Protocol"] = protocols
		}
		return &http.Request{Header: h}
	}
	upstream := func(h http.Header) *http.Response {
		base := http.Header{
			"Upgrade": {"websocket"}, "Connection": {"Upgrade"}, "Sec-Websocket-Accept": {"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="},
		}
		for k, v := range h {
			base[k] = v
		}
		return &http.Response{StatusCode: 101, Header: base}
	}
	cases := []struct {
		name string
		r    *http.Request
		resp *http.Response
	}{
		{"plain", client(), upstream(nil)},
		{"upstream chose a protocol", client("chat, superchat"), upstream(http.Header{"Sec-Websocket-Protocol": {"chat"}})},
		{"token offered as a protocol", client("bearer, eyJ.a.b"), upstream(nil)},
		{"deflate and a cookie", client(), upstream(http.Header{"Sec-Websocket-Extensions": {"permessage-deflate; server_no_context_takeover"}, "Set-Cookie": {"s=1", "t=2"}})},
		{"authgate headers stripped", client(), upstream(http.Header{"X-Authgate-Class": {"jwt"}, "x-authgate-evil": {"1"}})},
		{"connection-listed stripped", client(), upstream(http.Header{"Connection": {"Upgrade, X-Secret"}, "X-Secret": {"s"}, "Keep-Alive": {"timeout=5"}})},
		{"protocol listed in Connection", client("bearer, eyJ.a.b"), upstream(http.Header{"Connection": {"Upgrade, Sec-WebSocket-Protocol"}, "Sec-Websocket-Protocol": {"chat"}})},
		{"CR LF in a value", client(), upstream(http.Header{"X-Evil": {"a\r\nX-Injected: 1"}})},
		{"invalid name dropped", client(), upstream(http.Header{"Bad Name": {"x"}})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { sameSwitching(t, c.r, c.resp) })
	}
}

func FuzzHeads(f *testing.F) {
	f.Add("/ws?token=x", "app.example.com", "X-Custom", "value", "chat")
	f.Add("/", "h:8080", "Cookie", " a=1; b=2 ", "bearer, eyJ")
	f.Add("/a%20b?q=%0d%0a", "h", "X-A", "a\r\nb", "")
	f.Fuzz(func(t *testing.T, uri, host, key, value, proto string) {
		key = http.CanonicalHeaderKey(key)
		h := http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}
		h[key] = append(h[key], value)
		out := upgradeRequest(uri, host, h)
		if out == nil || !plainHost(host) {
			return
		}
		var wire bytes.Buffer
		c := *out
		c.Header = out.Header.Clone()
		c.Header["User-Agent"] = append(c.Header["User-Agent"], "")
		if c.Write(&wire) != nil {
			return // Request.Write refuses this host: so does the upstream path
		}
		if _, err := http.ReadRequest(bufio.NewReader(&wire)); err != nil {
			return // not a request Go's parser reads back either way
		}
		sameRequest(t, out)
		r := &http.Request{Header: http.Header{"Sec-Websocket-Protocol": {proto}}}
		resp := &http.Response{StatusCode: 101, Header: http.Header{"Upgrade": {"websocket"}, key: {value}}}
		if _, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(viaHeaderWrite(t, r, resp))), nil); err != nil {
			return
		}
		sameSwitching(t, r, resp)
	})
}
