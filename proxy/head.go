package proxy

import (
	"net/http"
	"strings"
	"sync"

	"authgate/rewrite"
)

// The heads of a relayed upgrade (the request to the upstream, the 101 to
// the client) are written from pooled buffers in one write each, without
// the copy, sort and bufio.Writer that Request.Write and Header.Write
// cost on every upgrade. What they write is what those would write: the
// same excluded fields, invalid field names dropped, CR and LF in a value
// turned into spaces, values trimmed.

var headPool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// headBuf is a pooled buffer; release it with putHead after the write.
func headBuf() *[]byte { return headPool.Get().(*[]byte) }

func putHead(b *[]byte) {
	if cap(*b) > 64<<10 {
		return // a huge head (64 KiB of cookies) is not kept
	}
	*b = (*b)[:0]
	headPool.Put(b)
}

// requestExcluded are the fields Request.Write writes itself or not at all.
var requestExcluded = map[string]bool{"Host": true, "User-Agent": true, "Content-Length": true, "Transfer-Encoding": true, "Trailer": true}

// appendUpgradeRequest appends out's head as the upstream receives it:
// GET, HTTP/1.1, Host, then out.Header. ok is false when out's Host is
// not a plain host[:port] (Request.Write would convert, refuse or drop
// it); the caller then uses Request.Write.
func appendUpgradeRequest(b []byte, out *http.Request) (_ []byte, ok bool) {
	host := out.Host
	if host == "" {
		host = out.URL.Host
	}
	if !plainHost(host) {
		return b, false
	}
	b = append(b, out.Method...)
	b = append(b, ' ')
	b = append(b, out.URL.RequestURI()...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\n"...)
	if ua := out.Header["User-Agent"]; len(ua) > 0 && ua[0] != "" {
		b = appendField(b, "User-Agent", ua[0])
	}
	for k, vs := range out.Header {
		if requestExcluded[k] {
			continue
		}
		for _, v := range vs {
			b = appendField(b, k, v)
		}
	}
	return append(b, "\r\n"...), true
}

// appendSwitching appends the 101 the client gets: the upstream's
// answer without hop-by-hop and X-Authgate-* fields, and the subprotocol
// the client needs when its token came as one.
func appendSwitching(b []byte, r *http.Request, resp *http.Response) []byte {
	chose := resp.Header.Get("Sec-Websocket-Protocol")
	if headerHasToken(resp.Header, "Connection", "Sec-Websocket-Protocol") {
		chose = "" // named hop-by-hop: not the upstream's answer to the client
	}
	proto := rewrite.ProtocolAnswer(r.Header.Values("Sec-Websocket-Protocol"), chose)
	b = append(b, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"...)
	if proto != "" {
		b = appendField(b, "Sec-WebSocket-Protocol", proto)
	}
	for k, vs := range resp.Header {
		if k == "Sec-Websocket-Protocol" || isHopHeader(k) || isAuthgateHeader(k) || headerHasToken(resp.Header, "Connection", k) {
			continue
		}
		for _, v := range vs {
			b = appendField(b, k, v)
		}
	}
	return append(b, "\r\n"...)
}

// appendField appends "k: v\r\n" as Header.Write does: nothing for an
// invalid name, CR and LF in v as spaces, v trimmed.
func appendField(b []byte, k, v string) []byte {
	if !validFieldName(k) {
		return b
	}
	b = append(b, k...)
	b = append(b, ": "...)
	v = strings.Trim(v, " \t")
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		b = append(b, c)
	}
	return append(b, "\r\n"...)
}

// validFieldName reports whether k is an RFC 9110 token.
func validFieldName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c >= 0x80 || !tokenChar[c] {
			return false
		}
	}
	return true
}

var tokenChar = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// plainHost reports whether h is a non-empty host[:port] of letters,
// digits, '.', '-', '_', ':', '[' and ']' (IPv6 literals included).
func plainHost(h string) bool {
	if h == "" {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == '_' || c == ':' || c == '[' || c == ']') {
			return false
		}
	}
	return true
}

func isHopHeader(k string) bool {
	for _, h := range hopHeaders {
		if k == h {
			return true
		}
	}
	return false
}

func isAuthgateHeader(k string) bool {
	return len(k) >= 11 && strings.EqualFold(k[:11], "X-Authgate-")
}
