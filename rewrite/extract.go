package rewrite

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Token is what Extract found: the raw credential and where it was.
//
// Value is a secret. It must never be logged; use Redact to show it.
type Token struct {
	Value  string
	Source Source
	// Ambiguous is set when the winning source held more than one
	// different value (two `token` query parameters, two Authorization
	// headers). authgate would check one and the upstream might use the
	// other, so such a request is classified malformed.
	Ambiguous bool
}

// Missing reports whether no source held a value.
func (t Token) Missing() bool { return t.Source.Kind == SourceNone }

// Extract returns the token of the first source in sources that holds a
// non-empty value, or a Token with Source.Kind == SourceNone.
func Extract(r *http.Request, sources []Source) Token {
	for _, src := range sources {
		var (
			v         string
			ambiguous bool
		)
		switch src.Kind {
		case SourceQuery:
			v, ambiguous = queryValue(r.URL.RawQuery, src.Name)
		case SourceAuthorization:
			v, ambiguous = bearerValue(headerValues(r.Header, "Authorization"))
		case SourceHeader:
			vals := headerValues(r.Header, src.Name)
			if len(vals) > 0 {
				v = strings.TrimSpace(vals[0])
				ambiguous = !allEqual(vals)
			}
		case SourceCookie:
			// Browsers send a cookie twice when two paths or domains set
			// it; a backend may read either copy (Starlette keeps the
			// last), so differing copies are ambiguous.
			for _, c := range r.CookiesNamed(src.Name) {
				if c.Value == "" {
					continue
				}
				if v == "" {
					v = c.Value
				} else if c.Value != v {
					ambiguous = true
				}
			}
		case SourceProtocol:
			v = protocolToken(headerValues(r.Header, "Sec-Websocket-Protocol"))
		}
		if v != "" {
			return Token{Value: v, Source: src, Ambiguous: ambiguous}
		}
	}
	return Token{}
}

// queryValue returns the unescaped value of the first non-empty name= in
// raw, and whether another occurrence carries a different value.
func queryValue(raw, name string) (value string, ambiguous bool) {
	found := false
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(kv, "=")
		if k != name {
			if strings.IndexByte(k, '%') < 0 && strings.IndexByte(k, '+') < 0 {
				continue
			}
			if uk, err := url.QueryUnescape(k); err != nil || uk != name {
				continue
			}
		}
		if strings.IndexByte(v, '%') >= 0 || strings.IndexByte(v, '+') >= 0 {
			uv, err := url.QueryUnescape(v)
			if err != nil {
				// Undecodable escapes: keep the raw text so the value is
				// classified (malformed) rather than silently dropped.
				uv = v
			}
			v = uv
		}
		if v == "" {
			continue
		}
		if !found {
			value, found = v, true
		} else if v != value {
			ambiguous = true
		}
	}
	return value, ambiguous
}

// bearerValue returns the credential of an `Authorization: Bearer x`
// header (scheme case-insensitive, RFC 7235 §2.1). Other schemes hold no
// token for authgate.
func bearerValue(vals []string) (string, bool) {
	value := ""
	ambiguous := false
	for _, h := range vals {
		h = strings.TrimSpace(h)
		if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") {
			continue
		}
		v := strings.TrimSpace(h[7:])
		if v == "" {
			continue
		}
		if value == "" {
			value = v
		} else if v != value {
			ambiguous = true
		}
	}
	return value, ambiguous
}

// protocolToken finds `bearer.<token>` or the entry after a literal
// `bearer` in the Sec-WebSocket-Protocol offer (browsers cannot set an
// Authorization header on a WebSocket, so clients smuggle it here).
func protocolToken(vals []string) string {
	marker := false
	for _, h := range vals {
		for h != "" {
			var e string
			e, h, _ = strings.Cut(h, ",")
			e = strings.TrimSpace(e)
			if marker && e != "" {
				return e
			}
			if strings.EqualFold(e, "bearer") {
				marker = true
				continue
			}
			if len(e) > 7 && strings.EqualFold(e[:7], "bearer.") {
				return e[7:]
			}
		}
	}
	return ""
}

func allEqual(vals []string) bool {
	for _, v := range vals[1:] {
		if strings.TrimSpace(v) != strings.TrimSpace(vals[0]) {
			return false
		}
	}
	return true
}

// Redact shows enough of a token to tell tokens apart in `explain` output
// and never the whole: at most the first 6 characters and the length.
// Logs never carry even this.
func Redact(token string) string {
	if token == "" {
		return ""
	}
	n := 6
	if len(token) <= 12 {
		n = len(token) / 3
	}
	return token[:n] + "…(" + strconv.Itoa(len(token)) + " chars)"
}
