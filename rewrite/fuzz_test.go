package rewrite

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

// FuzzClassify feeds arbitrary query strings and headers through Extract
// and Classify. Invariants: no panic; a class is always one of the six;
// only a valid, verified JWT is verified; a UUID result is the canonical
// lower-case form; Apply never leaves the old token in the request when it
// forwards a different one.
func FuzzClassify(f *testing.F) {
	seeds := []struct{ query, auth, proto string }{
		{"token=21a2151a-cd37-41d5-a1c7-124bb05e7a6a", "", ""},                     // legacy uuid
		{"token=21A2151A-CD37-41D5-A1C7-124BB05E7A6A", "", ""},                     // upper-case uuid
		{"token=eyJhbGciOiJub25lIn0.eyJleHAiOjk5OTk5OTk5OTl9.", "", ""},            // alg none
		{"token=a&token=b", "", ""},                                                // duplicates
		{"token=%00%ff%zz", "", ""},                                                // NUL, non-UTF-8, bad escape
		{"", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", ""},               // bad signature
		{"", "bearer   ", ""},                                                      // empty bearer
		{"", "", "bearer, eyJhbGciOiJIUzI1NiJ9.e30.x"},                             // protocol marker
		{"", "", "bearer." + strings.Repeat("A", 9000)},                            // oversized
		{"token=" + strings.Repeat("a.", 40), "", ""},                              // many dots
		{"token=e30.e30.", "", ""},                                                 // empty json objects
		{"token=eyJhbGciOiJIUzI1NiIsImtpZCI6eyJ4IjoxfX0.e30.c2ln", "", ""},         // kid not a string
		{"token=eyJhbGciOiJIUzI1NiIsImNyaXQiOlsiZXhwIl19.e30.c2ln", "", ""},        // crit header
		{"token=eyJhbGciOiJIUzI1NiIsImprdSI6Imh0dHA6Ly9ldmlsIn0.e30.c2ln", "", ""}, // jku header
	}
	for _, s := range seeds {
		f.Add(s.query, s.auth, s.proto)
	}
	v := hsVerifier()
	srcs := mustSources(f, "query:token", "header:authorization", "protocol")
	f.Fuzz(func(t *testing.T, query, auth, proto string) {
		r, err := http.NewRequest("GET", "http://h/ws", nil)
		if err != nil {
			t.Skip()
		}
		r.URL.RawQuery = query
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		if proto != "" {
			r.Header.Set("Sec-WebSocket-Protocol", proto)
		}
		tok := Extract(r, srcs)
		res := v.Classify(context.Background(), tok.Value, t0)
		if int(res.Class) >= NumClasses {
			t.Fatalf("class out of range: %d", res.Class)
		}
		if res.Verified && res.Class != ClassJWT {
			t.Fatalf("verified=true for class %v", res.Class)
		}
		if res.Class == ClassUUID && (res.Subject != strings.ToLower(tok.Value) || !IsUUID(res.Subject)) {
			t.Fatalf("uuid subject %q for token %q", res.Subject, tok.Value)
		}
		if tok.Missing() != (res.Class == ClassMissing) {
			t.Fatalf("missing token %v but class %v", tok.Missing(), res.Class)
		}
		if !tok.Missing() && len(tok.Value) >= 8 {
			Apply(r, tok, Forward{Same: true}, "REPLACEMENT")
			for _, q := range r.URL.Query()["token"] {
				if q == tok.Value {
					t.Fatalf("old token %q still in the query after Apply", tok.Value)
				}
			}
			if r.Header.Get("Authorization") == "Bearer "+tok.Value {
				t.Fatalf("old token %q still in Authorization after Apply", tok.Value)
			}
			// The bearer entries are `bearer` and `bearer.<token>` (SPEC,
			// sources); other names that merely start with "bearer" are
			// ordinary subprotocols and stay.
			for _, e := range strings.Split(r.Header.Get("Sec-Websocket-Protocol"), ",") {
				e = strings.TrimSpace(e)
				bearer := strings.EqualFold(e, "bearer") || len(e) > 7 && strings.EqualFold(e[:7], "bearer.")
				if tok.Source.Kind == SourceProtocol && (e == tok.Value || bearer) {
					t.Fatalf("token or bearer entry %q still offered upstream after Apply", e)
				}
			}
		}
	})
}
