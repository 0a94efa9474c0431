package rewrite

import (
	"net/http"
	"net/url"
	"strings"
)

// Destination returns where fwd puts a token that was found at src. A
// protocol token never goes back into Sec-WebSocket-Protocol (the upstream
// would have to echo it, and it would sit in every proxy's logs), so
// `same` sends it as `Authorization: Bearer`.
func Destination(src Source, fwd Forward) Source {
	if !fwd.Same {
		return fwd.To
	}
	if src.Kind == SourceProtocol {
		return Source{Kind: SourceAuthorization}
	}
	return src
}

// Apply edits the outgoing request out so the upstream receives token at
// the destination chosen by fwd, removing the client's token from where it
// was found. A token forwarded unchanged to the place it came from leaves
// the request byte-identical.
func Apply(out *http.Request, found Token, fwd Forward, token string) {
	ApplyFrom(out, nil, found, fwd, token)
}

// ApplyFrom is Apply for a route whose token sources are sources: any
// other of them that holds a value is removed too, so the upstream sees
// only the token authgate checked (a query JWT sent alongside a
// `Bearer <uuid>` must not smuggle the UUID past the policy).
func ApplyFrom(out *http.Request, sources []Source, found Token, fwd Forward, token string) {
	if found.Missing() {
		return
	}
	dst := Destination(found.Source, fwd)
	for _, src := range sources {
		if src != found.Source && src != dst && holds(out, src) {
			remove(out, src, "")
		}
	}
	if dst == found.Source && token == found.Value && !found.Ambiguous {
		return
	}
	remove(out, found.Source, found.Value)
	if dst != found.Source {
		// The destination may hold something else already (a client
		// sending both a query token and a stale header): replace it.
		remove(out, dst, found.Value)
	}
	put(out, dst, token)
}

// remove deletes the token at src; token is the client's value (a copy
// of it elsewhere in the subprotocol offer goes too).
func remove(r *http.Request, src Source, token string) {
	switch src.Kind {
	case SourceQuery:
		r.URL.RawQuery = deleteQuery(r.URL.RawQuery, src.Name)
		r.URL.ForceQuery = false
	case SourceAuthorization:
		r.Header.Del("Authorization")
	case SourceHeader:
		r.Header.Del(src.Name)
	case SourceCookie:
		deleteCookie(r, src.Name)
	case SourceProtocol:
		if rest := StripProtocolToken(r.Header.Values("Sec-Websocket-Protocol"), token); rest != "" {
			r.Header.Set("Sec-Websocket-Protocol", rest)
		} else {
			r.Header.Del("Sec-Websocket-Protocol")
		}
	}
}

func put(r *http.Request, dst Source, token string) {
	switch dst.Kind {
	case SourceQuery:
		kv := url.QueryEscape(dst.Name) + "=" + url.QueryEscape(token)
		if r.URL.RawQuery == "" {
			r.URL.RawQuery = kv
		} else {
			r.URL.RawQuery += "&" + kv
		}
	case SourceAuthorization:
		r.Header.Set("Authorization", "Bearer "+token)
	case SourceHeader:
		r.Header.Set(dst.Name, token)
	case SourceCookie:
		c := (&http.Cookie{Name: dst.Name, Value: token}).String()
		if prev := r.Header.Get("Cookie"); prev != "" {
			r.Header.Set("Cookie", prev+"; "+c)
		} else {
			r.Header.Set("Cookie", c)
		}
	}
}

// deleteQuery removes every name= parameter from a raw query, leaving the
// others exactly as the client encoded them.
func deleteQuery(raw, name string) string {
	var b strings.Builder
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		k, _, _ := strings.Cut(kv, "=")
		if k == name {
			continue
		}
		if uk, err := url.QueryUnescape(k); err == nil && uk == name {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(kv)
	}
	return b.String()
}

func deleteCookie(r *http.Request, name string) {
	var kept []string
	for _, h := range r.Header.Values("Cookie") {
		for _, part := range strings.Split(h, ";") {
			p := strings.TrimSpace(part)
			if p == "" {
				continue
			}
			if k, _, _ := strings.Cut(p, "="); strings.TrimSpace(k) == name {
				continue
			}
			kept = append(kept, p)
		}
	}
	if len(kept) == 0 {
		r.Header.Del("Cookie")
		return
	}
	r.Header.Set("Cookie", strings.Join(kept, "; "))
}

// StripProtocolToken returns the Sec-WebSocket-Protocol offer without its
// bearer entries (`bearer.<token>`, or `bearer` and the entry after it)
// and without any other entry equal to token, joined with ", ".
func StripProtocolToken(vals []string, token string) string {
	var kept []string
	skipNext := false
	for _, h := range vals {
		for _, e := range strings.Split(h, ",") {
			e = strings.TrimSpace(e)
			switch {
			case e == "":
			case skipNext:
				skipNext = false
			case strings.EqualFold(e, "bearer"):
				skipNext = true
			case len(e) > 7 && strings.EqualFold(e[:7], "bearer."):
			case token != "" && e == token:
			default:
				kept = append(kept, e)
			}
		}
	}
	return strings.Join(kept, ", ")
}

// ProtocolAnswer returns the Sec-WebSocket-Protocol authgate answers the
// client with. The upstream's choice wins. When the upstream chose none but
// the client offered its token as a subprotocol, a browser fails the
// handshake unless one offered entry is selected (RFC 6455 §4.1, step 6 of
// the client's checks as browsers apply it), so authgate selects the
// `bearer` marker, or the `bearer.<token>` entry when that was all.
func ProtocolAnswer(offered []string, upstreamChose string) string {
	if upstreamChose != "" {
		return upstreamChose
	}
	entry := ""
	for _, h := range offered {
		for _, e := range strings.Split(h, ",") {
			e = strings.TrimSpace(e)
			if strings.EqualFold(e, "bearer") {
				return e
			}
			if entry == "" && len(e) > 7 && strings.EqualFold(e[:7], "bearer.") {
				entry = e
			}
		}
	}
	return entry
}

// holds reports whether src has a value in r (so that removing nothing
// never rewrites a header).
func holds(r *http.Request, src Source) bool {
	switch src.Kind {
	case SourceQuery:
		v, _ := queryValue(r.URL.RawQuery, src.Name)
		return v != ""
	case SourceAuthorization:
		v, _ := bearerValue(r.Header["Authorization"])
		return v != ""
	case SourceHeader:
		return len(r.Header[src.Name]) > 0
	case SourceCookie:
		return len(r.CookiesNamed(src.Name)) > 0
	case SourceProtocol:
		return protocolToken(r.Header["Sec-Websocket-Protocol"]) != ""
	}
	return false
}
