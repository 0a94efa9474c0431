package rewrite

import (
	"fmt"
	"net/http"
	"net/textproto"
	"strings"
)

// SourceKind says where in a request a token is carried.
type SourceKind uint8

// Source kinds, in the spelling of the configuration (`query:NAME`, ...).
const (
	SourceNone          SourceKind = iota
	SourceQuery                    // query:NAME
	SourceAuthorization            // header:authorization (Bearer scheme)
	SourceHeader                   // header:NAME (raw value)
	SourceCookie                   // cookie:NAME
	SourceProtocol                 // protocol (Sec-WebSocket-Protocol bearer entry)
)

// Source is one place a token may be found or put.
type Source struct {
	Kind SourceKind
	// Name is the query parameter, canonical header or cookie name; empty
	// for SourceAuthorization and SourceProtocol.
	Name string
}

// ParseSource parses `query:NAME`, `header:authorization`, `header:NAME`,
// `cookie:NAME` or `protocol`.
func ParseSource(s string) (Source, error) {
	kind, name, hasName := strings.Cut(s, ":")
	switch kind {
	case "protocol":
		if hasName {
			return Source{}, fmt.Errorf("%q: protocol takes no name", s)
		}
		return Source{Kind: SourceProtocol}, nil
	case "query", "header", "cookie":
	default:
		return Source{}, fmt.Errorf("%q: want query:NAME, header:authorization, header:NAME, cookie:NAME or protocol", s)
	}
	if name == "" || strings.ContainsAny(name, " \t\r\n;,=&?#") {
		return Source{}, fmt.Errorf("%q: %s needs a plain name after the colon", s, kind)
	}
	switch kind {
	case "query":
		return Source{Kind: SourceQuery, Name: name}, nil
	case "cookie":
		return Source{Kind: SourceCookie, Name: name}, nil
	}
	if strings.EqualFold(name, "authorization") {
		return Source{Kind: SourceAuthorization}, nil
	}
	lower := strings.ToLower(name)
	if lower == "cookie" || lower == "sec-websocket-protocol" || strings.HasPrefix(lower, "x-authgate-") {
		return Source{}, fmt.Errorf("%q: use cookie:NAME or protocol for that header; x-authgate-* headers are authgate's own", s)
	}
	return Source{Kind: SourceHeader, Name: textproto.CanonicalMIMEHeaderKey(name)}, nil
}

// String returns the configuration spelling of s; it is what the logs call
// token_source.
func (s Source) String() string {
	switch s.Kind {
	case SourceQuery:
		return "query:" + s.Name
	case SourceAuthorization:
		return "header:authorization"
	case SourceHeader:
		return "header:" + strings.ToLower(s.Name)
	case SourceCookie:
		return "cookie:" + s.Name
	case SourceProtocol:
		return "protocol"
	}
	return ""
}

// Forward says where a token goes in the upstream request. The zero value
// (ForwardSame) puts it back where it came from.
type Forward struct {
	Same bool
	To   Source // SourceQuery or SourceAuthorization when !Same
}

// ParseForward parses `same`, `query:NAME` or `header:authorization`.
func ParseForward(s string) (Forward, error) {
	if s == "" || s == "same" {
		return Forward{Same: true}, nil
	}
	src, err := ParseSource(s)
	if err != nil || (src.Kind != SourceQuery && src.Kind != SourceAuthorization) {
		return Forward{}, fmt.Errorf("%q: want same, query:NAME or header:authorization", s)
	}
	return Forward{To: src}, nil
}

// String returns the configuration spelling of f.
func (f Forward) String() string {
	if f.Same {
		return "same"
	}
	return f.To.String()
}

// headerValues returns the values of a canonical header key without the
// allocation of Header.Values' canonicalisation.
func headerValues(h http.Header, key string) []string { return h[key] }
