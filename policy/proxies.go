package policy

import (
	"net/netip"
	"slices"
	"strings"
)

// CloudflareRangesDate is when the compiled-in Cloudflare list was last
// compared with the ranges Cloudflare publishes (cloudflare.com/ips-v4 and
// ips-v6). `authgate check` prints it, so an operator can tell a stale
// binary from a current one.
const CloudflareRangesDate = "2026-09-29"

// namedSets are the names trusted_proxies accepts besides CIDRs.
//
//   - private: where a platform's own proxy connects from. On Render the
//     request reaches the service from Render's proxy on a private (10.x)
//     address. RFC 1918, RFC 4193 (fc00::/7), loopback, link-local and
//     the shared address space of RFC 6598 (100.64.0.0/10, carrier-grade
//     NAT and some platforms' internal networks).
//   - cloudflare: Cloudflare's published edge ranges. Render puts
//     Cloudflare in front of every service, so X-Forwarded-For reads
//     "<browser>, <Cloudflare edge>" and the edge hop must be skipped to
//     reach the browser. Trusting them means believing an X-Forwarded-For
//     that came through Cloudflare: a Cloudflare Worker can write its own,
//     so someone who routes requests through a Worker can choose their
//     client_ip and dodge the per-IP rate limit. It cannot get past
//     authentication: client_ip feeds logs and rate limiting, never a
//     decision about a token.
var namedSets = map[string][]netip.Prefix{
	"private": prefixes(
		"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", // RFC 1918
		"fc00::/7",               // RFC 4193
		"127.0.0.0/8", "::1/128", // loopback
		"169.254.0.0/16", "fe80::/10", // link-local
		"100.64.0.0/10", // RFC 6598
	),
	"cloudflare": prefixes(
		"173.245.48.0/20", "103.21.244.0/22", "103.22.200.0/22", "103.31.4.0/22",
		"141.101.64.0/18", "108.162.192.0/18", "190.93.240.0/20", "188.114.96.0/20",
		"197.234.240.0/22", "198.41.128.0/17", "162.158.0.0/15", "104.16.0.0/13",
		"104.24.0.0/14", "172.64.0.0/13", "131.0.72.0/22",
		"2400:cb00::/32", "2606:4700::/32", "2803:f800::/32", "2405:b500::/32",
		"2405:8100::/32", "2a06:98c0::/29", "2c0f:f248::/32",
	),
}

// NamedSet returns the prefixes of a named trusted_proxies set, or nil.
func NamedSet(name string) []netip.Prefix { return slices.Clone(namedSets[name]) }

// IsPrivate reports whether a is in the private set: the kind of peer whose
// X-Forwarded-For usually means a platform proxy is in front.
func IsPrivate(a netip.Addr) bool {
	for _, p := range namedSets["private"] {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func setNames() string {
	names := make([]string, 0, len(namedSets))
	for n := range namedSets {
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

func prefixes(cidrs ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(cidrs))
	for i, c := range cidrs {
		out[i] = netip.MustParsePrefix(c)
	}
	return out
}
