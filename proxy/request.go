package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
)

// peerAddr returns the address of the TCP peer.
func peerAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err == nil {
		return ap.Addr().Unmap()
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}

func trusted(a netip.Addr, nets []netip.Prefix) bool {
	for _, p := range nets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientIP works out the client's address: the peer, unless the peer is a
// trusted proxy, in which case X-Forwarded-For is read from the right,
// skipping trusted hops. A client's own X-Forwarded-For is never believed
// from an untrusted peer. The returned chain is what the upstream gets as
// X-Forwarded-For: the believed part of the client's header plus the peer.
func clientIP(r *http.Request, nets []netip.Prefix) (ip string, xff string) {
	peer := peerAddr(r)
	peerS := peer.String()
	if len(nets) == 0 || !trusted(peer, nets) {
		return peerS, peerS
	}
	prior := strings.Join(r.Header.Values("X-Forwarded-For"), ", ")
	if prior == "" {
		return peerS, peerS
	}
	hops := strings.Split(prior, ",")
	client := peerS
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		client = a.Unmap().String()
		if !trusted(a.Unmap(), nets) {
			break
		}
	}
	return client, prior + ", " + peerS
}

var (
	idPrefix  = newIDPrefix()
	idCounter atomic.Uint64
)

func newIDPrefix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:]) + "-"
}

// requestID keeps a client's X-Request-Id when it is a sane token (at most
// 128 visible ASCII characters, so it cannot forge log lines or bloat
// them), and otherwise makes one: a per-process random prefix and a
// counter, unique without a syscall per request.
func requestID(r *http.Request) string {
	if v := r.Header.Get("X-Request-Id"); v != "" && len(v) <= 128 && visibleASCII(v) {
		return v
	}
	return idPrefix + strconv.FormatUint(idCounter.Add(1), 16)
}

func visibleASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// isWebSocketUpgrade reports whether r asks for a WebSocket (RFC 6455 §4.1:
// Upgrade: websocket and Connection: upgrade, on GET).
func isWebSocketUpgrade(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", "websocket")
}

func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h[key] {
		for v != "" {
			var t string
			t, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// stripAuthgateHeaders removes client-sent X-Authgate-* headers: only
// authgate sets them, and the upstream may trust them.
func stripAuthgateHeaders(h http.Header) {
	for k := range h {
		if isAuthgateHeader(k) {
			delete(h, k)
		}
	}
}
