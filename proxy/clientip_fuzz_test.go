package proxy

import (
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"authgate/policy"
)

// FuzzClientIP walks X-Forwarded-For chains from an attacker: whatever
// the header says, client_ip is the peer unless the peer is trusted, and
// then an address that appears in the chain (or the peer); an untrusted
// address left of the client is never chosen over one to its right
// (a client's own prefix never wins); nothing panics.
func FuzzClientIP(f *testing.F) {
	// Seeds: Render's shape (browser, Cloudflare edge, from a private
	// peer), a spoofed prefix, garbage, IPv6, an empty header.
	f.Add("10.214.3.7", "203.0.113.9, 172.70.1.1")
	f.Add("10.214.3.7", "198.51.100.1, 203.0.113.9, 172.70.1.1")
	f.Add("203.0.113.50", "127.0.0.1")
	f.Add("10.0.0.1", "not-an-ip, 172.70.1.1")
	f.Add("10.0.0.1", "2606:4700::1, ::ffff:203.0.113.9")
	f.Add("10.0.0.1", "")
	f.Add("10.0.0.1", ",,, ,")
	trustedNets := append(policy.NamedSet("private"), policy.NamedSet("cloudflare")...)
	f.Fuzz(func(t *testing.T, peer, xff string) {
		pa, err := netip.ParseAddr(peer)
		if err != nil || pa.Zone() != "" {
			return
		}
		r := &http.Request{RemoteAddr: netip.AddrPortFrom(pa, 4242).String(), Header: http.Header{}}
		if xff != "" {
			r.Header.Set("X-Forwarded-For", xff)
		}
		ip, chain := clientIP(r, trustedNets)
		p := pa.Unmap().String()
		if !strings.HasSuffix(chain, p) {
			t.Fatalf("chain %q does not end with the peer %s", chain, p)
		}
		if !trusted(pa.Unmap(), trustedNets) {
			if ip != p {
				t.Fatalf("untrusted peer %s: client_ip %q, want the peer", p, ip)
			}
			return
		}
		var hops []string
		for _, h := range strings.Split(r.Header.Get("X-Forwarded-For"), ",") {
			if a, err := netip.ParseAddr(strings.TrimSpace(h)); err == nil {
				hops = append(hops, a.Unmap().String())
			} else {
				hops = append(hops, "")
			}
		}
		if ip != p && !slices.Contains(hops, ip) {
			t.Fatalf("client_ip %q is neither the peer nor in X-Forwarded-For %q", ip, xff)
		}
		// Right of the chosen hop, every hop is trusted.
		if i := slices.Index(hops, ip); i >= 0 {
			for _, h := range hops[i+1:] {
				a, err := netip.ParseAddr(h)
				if err != nil || !trusted(a, trustedNets) {
					// An unparsable or untrusted hop right of the client
					// means the walk went past where it should stop, unless
					// the same address also appears further right.
					if j := slices.Index(hops[i+1:], ip); j < 0 {
						t.Fatalf("client_ip %q chosen past untrusted hop %q in %q", ip, h, xff)
					}
				}
			}
		}
	})
}
