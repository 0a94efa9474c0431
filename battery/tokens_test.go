package battery

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// outcome is what a client saw for one request.
type outcome struct {
	status  int    // HTTP status (101 for an upgrade)
	close   int    // close code after a 101; 0 = relayed (echo came back)
	body    string // body of a non-101 answer
	elapsed time.Duration
}

func (o outcome) String() string {
	if o.status == http.StatusSwitchingProtocols {
		if o.close == 0 {
			return "101 relayed"
		}
		return fmt.Sprintf("101 close %d", o.close)
	}
	return fmt.Sprintf("%d %.120s", o.status, o.body)
}

// tryWS upgrades target on in with extra header lines (each ending in
// \r\n). On 101 it sends a text frame: an echo means the connection was
// relayed; a close frame is authgate's rejection. Either way it then
// finishes the closing handshake and expects the TCP connection closed.
func tryWS(t *testing.T, addr, target, extra string) outcome {
	t.Helper()
	start := time.Now()
	rc, err := rawExchange(addr, upgradeReq(addr, target, extra))
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	defer rc.Close()
	o := outcome{status: rc.resp.StatusCode}
	if o.status != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(io.LimitReader(rc.resp.Body, 1<<16))
		o.body = string(b)
		o.elapsed = time.Since(start)
		return o
	}
	rc.c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	writeFrame(rc.c, ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Length: 5}, []byte("probe"))
	rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	hd, p, err := readFrame(rc.br)
	o.elapsed = time.Since(start)
	switch {
	case err != nil:
		t.Fatalf("after 101: %v", err)
	case hd.OpCode == ws.OpClose:
		o.close = 1005
		if len(p) >= 2 {
			o.close = int(p[0])<<8 | int(p[1])
		}
		// authgate's rejection lingers up to 1 s for the client's EOF
		// (see TestHandshakes/reject-close-handshake-latency); a client
		// may close first, which keeps the battery fast.
		replyClose(rc, o.close)
		return o
	case hd.OpCode == ws.OpText && string(p) == "probe":
		replyClose(rc, 1000)
		if cr := awaitClose(rc, 5*time.Second); cr.code != 1000 {
			t.Errorf("closing a relayed connection: got %+v, want close 1000 back", cr)
		}
	default:
		t.Fatalf("after 101: unexpected frame %v %q", hd.OpCode, p)
	}
	if err := expectEOF(rc, 4*time.Second); err != nil {
		t.Errorf("after the closing handshake: %v", err)
	}
	return o
}

// tryHTTP sends a GET with extra header lines and returns the answer.
func tryHTTP(t *testing.T, addr, target, extra string) outcome {
	t.Helper()
	start := time.Now()
	rc, err := rawExchange(addr, "GET "+target+" HTTP/1.1\r\nHost: "+addr+"\r\nConnection: close\r\n"+extra+"\r\n")
	if err != nil {
		t.Fatalf("GET %.80s: %v", target, err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(io.LimitReader(rc.resp.Body, 1<<16))
	return outcome{status: rc.resp.StatusCode, body: string(b), elapsed: time.Since(start)}
}

// tokCase is a token attack, sent on the WebSocket route /ws and on the
// HTTP route /api/ (reject_with: http).
type tokCase struct {
	name, attack string
	// build returns the raw query (without "?") and extra header lines.
	build func(t *testing.T) (query, headers string)
	// The exact answers: on /ws a status (101, 431, 400) and, after 101,
	// a close code (0 = relayed); on /api/x a status; the class logged
	// ("" = no auth event: the request never reached authgate's handler).
	wsStatus, wsClose, httpStatus int
	class                         string
	httpClass                     string // when it differs from class
	check                         func(t *testing.T, caseID string)
}

func TestTokens(t *testing.T) {
	beginTest(t)
	pemPub := pemPublicKey(h.key)
	derPub, _ := x509.MarshalPKIXPublicKey(&h.key.PublicKey)
	counting := newCountingServer()
	defer counting.srv.Close()

	q := func(tok string) func(*testing.T) (string, string) {
		return func(*testing.T) (string, string) { return "token=" + tok, "" }
	}
	bearer := func(tok string) func(*testing.T) (string, string) {
		return func(*testing.T) (string, string) { return "", "Authorization: Bearer " + tok + "\r\n" }
	}
	huge := strings.Repeat("a", 1<<20)
	secrets.add("1 MB token", huge)
	nowPlus := func(d time.Duration) map[string]any { return stdClaims(newSub(), time.Now().Add(d)) }
	signed := func(label string, hdr map[string]any, claims map[string]any, sign func([]byte) []byte) string {
		tok := makeJWT(hdr, claims, sign)
		secrets.add(label, tok)
		return tok
	}
	hsHdr := map[string]any{"alg": "HS256", "typ": "JWT"}
	uuidA := newUUID("uuid A")
	upperUUID := strings.ToUpper(newUUID("upper uuid"))
	dupUUID := newUUID("dup uuid")
	cookieUUID := newUUID("cookie uuid")
	srcUUID := newUUID("conflicting-source uuid")
	wsUUID := newUUID("whitespace uuid")

	cases := []tokCase{
		{name: "missing", attack: "no token anywhere",
			build: func(*testing.T) (string, string) { return "", "" }, wsStatus: 101, wsClose: 4001, httpStatus: 401, class: "missing"},
		{name: "valid-hs256", attack: "baseline: a valid HS256 JWT",
			build: q(hsJWT("valid hs256")), wsStatus: 101, wsClose: 0, httpStatus: 200, class: "jwt"},
		{name: "valid-rs256-kid", attack: "baseline: a valid RS256 JWT whose kid is in the JWKS",
			build: q(rsJWT("valid rs256", h.key, kidGood, nil)), wsStatus: 101, wsClose: 0, httpStatus: 200, class: "jwt"},
		{name: "expired", attack: "a correctly signed JWT one hour past exp",
			build: q(signed("expired", hsHdr, nowPlus(-time.Hour), hs256([]byte(hsSecret)))), wsStatus: 101, wsClose: 4002, httpStatus: 401, class: "jwt_expired"},
		{name: "1MB-header", attack: "a 1 MiB bearer token in Authorization (request head over the 64 KiB limit)",
			build: bearer(huge), wsStatus: 431, httpStatus: 431},
		{name: "1MB-query", attack: "a 1 MiB token in ?token= (the request line counts against the same 64 KiB head limit)",
			build: q(huge), wsStatus: 431, httpStatus: 431},
		{name: "8KiB+1", attack: "a correctly signed HS256 JWT padded to 8193 bytes",
			build: q(paddedJWT(t, 8<<10+1)), wsStatus: 101, wsClose: 4001, httpStatus: 401, class: "malformed"},
		{name: "8KiB-exact", attack: "boundary: a correctly signed HS256 JWT of exactly 8192 bytes",
			build: q(paddedJWT(t, 8<<10)), wsStatus: 101, wsClose: 0, httpStatus: 200, class: "jwt"},
		{name: "nul-percent", attack: "?token=%00<uuid> (NUL after percent-decoding)",
			build: q("%00" + uuidA), wsStatus: 101, wsClose: 4001, httpStatus: 401, class: "malformed"},
		{name: "nul-raw-query", attack: "a raw NUL byte in the request line's query",
			build: func(*testing.T) (string, string) { return "token=ab\x00cd", "" }, wsStatus: 400, httpStatus: 400},
		{name: "nul-raw-header", attack: "a raw NUL byte inside the Authorization header value",
			build: bearer("abc\x00" + uuidA), wsStatus: 400, httpStatus: 400},
		{name: "non-utf8-percent", attack: "?token=%FF%FE%FD%C0%AF (invalid UTF-8 after decoding)",
			build: q("%FF%FE%FD%C0%AF"), wsStatus: 101, wsClose: 4001, httpStatus: 401, class: "malformed"},
		{name: "non-utf8-raw-header", attack: "raw bytes 0xFF 0xFE in the bearer token (obs-text, allowed by HTTP)",
			build: bearer("\xff\xfe\xfdgarbage-token-bytes"), wsStatus: 101, wsClose: 4001, httpStatus: 401, class: "malformed"},
		{name: "bad-percent-escapes", attack: "?token=%ZZ%E0%A4%A (undecodable escapes: kept raw, classified)",
			build: q("%ZZ%E0%A4%A"), wsStatus: 101, wsClose: 4001, httpStatus: 401, class: "malformed"},
		{name: "percent-encoded-uuid", attack: "a UUID with its dashes written %2D: decodes to a UUID",
			build: q(strings.ReplaceAll(uuidA, "-", "%2D")), wsStatus: 101, wsClose: 0, httpStatus: 200, class: "uuid"},
		{name: "alg-none", attack: `alg "none", empty signature`,
			build:    q(signed("alg none", map[string]any{"alg": "none", "typ": "JWT"}, nowPlus(time.Hour), nil)),
			wsStatus: 101, wsClose: 4001, httpStatus: 401, class: "jwt_invalid"},
		{name: "alg-None", attack: `alg "None" (capitalised), empty signature`,
			build:    q(signed("alg None", map[string]any{"alg": "None", "typ": "JWT"}, nowPlus(time.Hour), nil)),
			wsStatus: 101, wsClose: 4001, httpStatus: 401, class: "jwt_invalid"},
		{name: "alg-missing", attack: "no alg header at all, HS256 signature",
			build:    q(signed("alg missing", map[string]any{"typ": "JWT"}, nowPlus(time.Hour), hs256([]byte(hsSecret)))),
			wsStatus: 101, wsClose: 4001, httpStatus: 401, class: "jwt_invalid"},
		{name: "hs256-empty-signature", attack: "alg HS256 with an empty signature",
			build:    q(signed("hs256 empty sig", hsHdr, nowPlus(time.Hour), nil)),
			wsStatus: 101, wsClose: 4001, httpStatus: 401, class: "jwt_invalid"},
		{name: "hs256-with-jwks-pem", attack: "HS256 signed with the JWKS RSA public key (PEM) as the HMAC secret, kid k1",
			build:    q(signed("hs/rs confusion pem", map[string]any{"alg": "HS256", "typ": "JWT", "kid": kidGood}, nowPlus(time.Hour), hs256(pemPub))),
			wsStatus: 101, wsClose: 4001, httpStatus: 401, class: "jwt_invalid"},
		{name: "hs256-with-jwks-der", attack: "HS256 signed with the JWKS RSA public key (DER) as the HMAC secret",
			build:    q(signed("hs/rs confusion der", map[string]any{"alg": "HS256", "typ": "JWT", "kid": kidGood}, nowPlus(time.Hour), hs256(derPub))),
			wsStatus: 101, wsClose: 4001, httpStatus: 401, class: "jwt_invalid"},
		{name: "kid-unknown", attack: "RS256 signed by an unpublished key, kid not in the JWKS (answer within 1.5 s)",
			build: q(rsJWT("unknown kid", h.attacker, "unknown-kid-0", nil)), wsStatus: 101, wsClose: 4001, httpStatus: 401, class: "jwt_invalid"},
		{name: "kid-k1-wrong-key", attack: "RS256 claiming kid k1 but signed by another key",
			build: q(rsJWT("k1 wrong key", h.attacker, kidGood, nil)), wsStatus: 101, wsClose: 4001, httpStatus: 401, class: "jwt_invalid"},
		{name: "jku-x5u-valid", attack: "a valid k1 token with jku and x5u pointing at a counting server (must be ignored: no fetch)",
			build:    q(rsJWT("jku valid", h.key, kidGood, map[string]any{"jku": counting.srv.URL + "/jku", "x5u": counting.srv.URL + "/x5u"})),
			wsStatus: 101, wsClose: 0, httpStatus: 200, class: "jwt",
			check: func(t *testing.T, _ string) {
				if n := counting.hits.Load(); n != 0 {
					t.Errorf("jku/x5u server got %d requests, want 0", n)
				}
			}},
		{name: "jku-attacker-key", attack: "attacker-signed token whose jku serves the attacker's key (kid att)",
			build:    q(rsJWT("jku attacker", h.attacker, "att", map[string]any{"jku": counting.srv.URL + "/jwks.json", "x5u": counting.srv.URL + "/x5u"})),
			wsStatus: 101, wsClose: 4001, httpStatus: 401, class: "jwt_invalid",
			check: func(t *testing.T, _ string) {
				if n := counting.hits.Load(); n != 0 {
					t.Errorf("jku/x5u server got %d requests, want 0", n)
				}
			}},
		{name: "crit-unknown-extension", attack: `a valid k1 token with crit:["x-battery"] (RFC 7515 §4.1.11: an extension not understood makes the JWS invalid)`,
			build:    q(rsJWT("crit", h.key, kidGood, map[string]any{"crit": []string{"x-battery"}, "x-battery": true})),
			wsStatus: 101, wsClose: 4001, httpStatus: 401, class: "jwt_invalid"},
		{name: "duplicate-query-different", attack: "?token=<valid jwt>&token=<uuid>: two different values in the winning source",
			build:    func(*testing.T) (string, string) { return "token=" + hsJWT("dup jwt") + "&token=" + uuidA, "" },
			wsStatus: 101, wsClose: 4001, httpStatus: 401, class: "malformed"},
		{name: "duplicate-query-escaped-key", attack: "?token=<valid jwt>&tok%65n=<uuid>: the same parameter, percent-encoded name",
			build:    func(*testing.T) (string, string) { return "token=" + hsJWT("dup jwt 2") + "&tok%65n=" + uuidA, "" },
			wsStatus: 101, wsClose: 4001, httpStatus: 401, class: "malformed"},
		{name: "duplicate-query-same-uuid", attack: "?token=<uuid>&token=<uuid>: the same value twice (rewritten; upstream gets exactly one token)",
			build:    func(*testing.T) (string, string) { return "token=" + dupUUID + "&token=" + dupUUID, "" },
			wsStatus: 101, wsClose: 0, httpStatus: 200, class: "uuid",
			check: func(t *testing.T, id string) {
				for _, s := range h.backend.got(id) {
					if n := strings.Count(s.RawQuery, "token="); n != 1 || strings.Contains(s.RawQuery, dupUUID) {
						t.Errorf("upstream query %q: want exactly one token=, the minted JWT", s.RawQuery)
					}
				}
			}},
		{name: "duplicate-authorization", attack: "two Authorization: Bearer headers with different values",
			build: func(*testing.T) (string, string) {
				return "", "Authorization: Bearer " + hsJWT("dup auth") + "\r\nAuthorization: Bearer " + uuidA + "\r\n"
			},
			wsStatus: 101, wsClose: 4001, httpStatus: 401, class: "malformed"},
		{name: "duplicate-cookie-different", attack: "Cookie: sb-access-token=<valid jwt>; sb-access-token=<uuid> (many backends read the last)",
			build: func(*testing.T) (string, string) {
				return "", "Cookie: sb-access-token=" + hsJWT("dup cookie") + "; sb-access-token=" + cookieUUID + "\r\n"
			},
			wsStatus: 101, wsClose: 4001, httpStatus: 401, class: "malformed"},
		{name: "conflicting-sources", attack: "?token=<valid jwt> and Authorization: Bearer <uuid>: first source in token.from wins (query on /ws, header on /api)",
			build: func(*testing.T) (string, string) {
				return "token=" + hsJWT("src jwt"), "Authorization: Bearer " + srcUUID + "\r\n"
			},
			wsStatus: 101, wsClose: 0, httpStatus: 200, class: "jwt", httpClass: "uuid"},
		{name: "uuid-upper-case", attack: "an upper-case UUID: class uuid, rewritten with sub normalised to lower case",
			build: q(upperUUID), wsStatus: 101, wsClose: 0, httpStatus: 200, class: "uuid",
			check: func(t *testing.T, id string) {
				got := h.backend.got(id)
				if len(got) == 0 {
					t.Fatalf("backend saw no request")
				}
				for _, s := range got {
					if sub := mintedSub(s); sub != strings.ToLower(upperUUID) {
						t.Errorf("minted sub %q, want %q", sub, strings.ToLower(upperUUID))
					}
					if s.Header.Get("X-Authgate-Legacy") != "1" || s.Header.Get("X-Authgate-Class") != "uuid" {
						t.Errorf("upstream X-Authgate-* = %q/%q, want uuid/1", s.Header.Get("X-Authgate-Class"), s.Header.Get("X-Authgate-Legacy"))
					}
				}
			}},
		{name: "uuid-braces", attack: "{uuid} (Microsoft registry form)",
			build: q("%7B" + uuidA + "%7D"), wsStatus: 101, wsClose: 4001, httpStatus: 401, class: "malformed"},
		{name: "uuid-urn", attack: "urn:uuid:<uuid>",
			build: q("urn:uuid:" + uuidA), wsStatus: 101, wsClose: 4001, httpStatus: 401, class: "malformed"},
		{name: "uuid-query-whitespace", attack: "?token=%20<uuid>%0A (whitespace inside the decoded value)",
			build: q("%20" + wsUUID + "%0A"), wsStatus: 101, wsClose: 4001, httpStatus: 401, class: "malformed"},
		{name: "uuid-header-ows", attack: "Authorization: Bearer \\t<uuid>  (HTTP optional whitespace: trimmed, so a uuid)",
			build:    func(*testing.T) (string, string) { return "", "Authorization: Bearer \t" + wsUUID + "  \r\n" },
			wsStatus: 101, wsClose: 0, httpStatus: 200, class: "uuid"},
		{name: "uuid-no-dashes", attack: "32 hex digits without dashes",
			build: q(strings.ReplaceAll(uuidA, "-", "")), wsStatus: 101, wsClose: 4001, httpStatus: 401, class: "malformed"},
		{name: "uuid-as-jwt-segments", attack: "<uuid>.<uuid>.<uuid>: every part is valid base64url, the whole looks like a JWS",
			build: q(uuidA + "." + uuidA + "." + uuidA), wsStatus: 101, wsClose: 4001, httpStatus: 401, class: "malformed"},
		{name: "uuid-jwt-header", attack: "a real JWT header segment, then <uuid>.<uuid> as payload and signature",
			build: q("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + uuidA + "." + uuidA), wsStatus: 101, wsClose: 4001, httpStatus: 401, class: "malformed"},
	}

	for _, c := range cases {
		var rows []tcase
		rows = append(rows, tcase{
			name:   c.name,
			attack: c.attack,
			want:   fmt.Sprintf("/ws: %d close %d; /api: %d; class %q", c.wsStatus, c.wsClose, c.httpStatus, c.class),
			run: func(t *testing.T) {
				query, hdrs := c.build(t)
				id := "tok-" + c.name
				target := "/ws"
				if query != "" {
					target += "?" + query
				}
				o := tryWS(t, h.main.addr, target, hdrs+"X-Request-Id: "+id+"-ws\r\nX-Case: "+id+"\r\n")
				if o.status != c.wsStatus || (o.status == 101 && o.close != c.wsClose) {
					t.Errorf("/ws: got %v, want %d close %d", o, c.wsStatus, c.wsClose)
				}
				if o.elapsed > 2*time.Second {
					t.Errorf("/ws answered after %v, want under 2s", o.elapsed)
				}
				api := "/api/x"
				if query != "" {
					api += "?" + query
				}
				ho := tryHTTP(t, h.main.addr, api, hdrs+"X-Request-Id: "+id+"-http\r\nX-Case: "+id+"\r\n")
				if ho.status != c.httpStatus {
					t.Errorf("/api: got %v, want %d", ho, c.httpStatus)
				}
				if ho.status == 401 {
					if jsonField(ho.body, "close_code") != "4001" && jsonField(ho.body, "close_code") != "4002" {
						t.Errorf("/api 401 body %q: want JSON with close_code", ho.body)
					}
				}
				checkClass(t, id+"-ws", c.class)
				hc := c.class
				if c.httpClass != "" {
					hc = c.httpClass
				}
				checkClass(t, id+"-http", hc)
				if c.check != nil {
					c.check(t, id)
				}
			},
		})
		runCases(t, rows)
	}
}

// checkClass requires the auth event of rid to carry class ("" = none).
func checkClass(t *testing.T, rid, class string) {
	t.Helper()
	if class == "" {
		if e := findEvent(h.main.logs, "auth", map[string]any{"request_id": rid}, 100*time.Millisecond); e != nil {
			t.Errorf("auth event for %s: %v, want none", rid, e)
		}
		return
	}
	e := authEvent(h.main, rid)
	if e == nil {
		t.Errorf("no auth event for %s", rid)
		return
	}
	if e["class"] != class {
		t.Errorf("%s: class %v (reason %v), want %s", rid, e["class"], e["reason"], class)
	}
}

// paddedJWT returns a correctly signed HS256 JWT of exactly n bytes.
func paddedJWT(t *testing.T, n int) string {
	claims := stdClaims(newSub(), time.Now().Add(time.Hour))
	hdr := map[string]any{"alg": "HS256", "typ": "JWT"}
	for pad := n * 3 / 4; pad > 0; pad-- {
		claims["pad"] = strings.Repeat("p", pad)
		tok := makeJWT(hdr, claims, hs256([]byte(hsSecret)))
		if len(tok) == n {
			secrets.add(fmt.Sprintf("padded jwt %d", n), tok)
			return tok
		}
		if len(tok) < n {
			break
		}
	}
	// Fine-tune with a second claim when base64 steps skip n.
	for extra := 0; extra < 8; extra++ {
		for pad := n * 3 / 4; pad > 0; pad-- {
			claims["pad"] = strings.Repeat("p", pad)
			claims["x"] = strings.Repeat("x", extra)
			tok := makeJWT(hdr, claims, hs256([]byte(hsSecret)))
			if len(tok) == n {
				secrets.add(fmt.Sprintf("padded jwt %d", n), tok)
				return tok
			}
			if len(tok) < n {
				break
			}
		}
	}
	t.Fatalf("cannot build a JWT of %d bytes", n)
	return ""
}

// mintedSub returns the sub of the JWT the upstream received in its
// query token or Authorization header.
func mintedSub(s seen) string {
	tok := strings.TrimPrefix(s.Header.Get("Authorization"), "Bearer ")
	for _, kv := range strings.Split(s.RawQuery, "&") {
		if v, ok := strings.CutPrefix(kv, "token="); ok {
			tok = v
		}
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return ""
	}
	b, err := b64.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct{ Sub string }
	json.Unmarshal(b, &c)
	return c.Sub
}

func pemPublicKey(k *rsa.PrivateKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// countingServer counts every request (jku/x5u must never be fetched).
type countingServer struct {
	srv  *httptest.Server
	hits atomic.Int64
}

func newCountingServer() *countingServer {
	c := &countingServer{}
	body, _ := json.Marshal(map[string]any{"keys": []any{pubJWK(h.attacker, "att")}})
	c.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.hits.Add(1)
		w.Write(body)
	}))
	c.srv.Config.SetKeepAlivesEnabled(false)
	c.srv.Start()
	return c
}

// TestUnknownKIDFlood: 100 tokens with made-up kids, 10 at a time, must
// each be answered promptly, and cost the JWKS URL at most one refetch
// (two fetches if the set had not been fetched before the flood).
func TestUnknownKIDFlood(t *testing.T) {
	beginTest(t)
	runCases(t, []tcase{{
		name:   "unknown-kid-flood",
		attack: "100 RS256 tokens, each with a different unknown kid, 10 concurrent, on /api (HTTP)",
		want:   "every answer 401 jwt_invalid within 1.5 s; the flood costs at most one JWKS refetch (two fetches if the set was never fetched)",
		run: func(t *testing.T) {
			before := h.jwks.hits.Load()
			toks := make([]string, 100)
			for i := range toks {
				toks[i] = rsJWT("kid flood", h.attacker, fmt.Sprintf("flood-kid-%d", i), nil)
			}
			var wg sync.WaitGroup
			var mu sync.Mutex
			var slow, wrong int
			work := make(chan string)
			for w := 0; w < 10; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for tok := range work {
						start := time.Now()
						o := tryHTTPQuiet(h.main.addr, "/api/flood", "Authorization: Bearer "+tok+"\r\n")
						mu.Lock()
						if time.Since(start) > 1500*time.Millisecond {
							slow++
						}
						if o != 401 {
							wrong++
						}
						mu.Unlock()
					}
				}()
			}
			for _, tok := range toks {
				work <- tok
			}
			close(work)
			wg.Wait()
			if slow > 0 || wrong > 0 {
				t.Errorf("%d answers slower than 1.5 s, %d not 401", slow, wrong)
			}
			if n, allowed := h.jwks.hits.Load()-before, max(2-before, 1); n > allowed {
				t.Errorf("the flood fetched the JWKS %d times (%d before it), want at most %d (initial + one rate-limited refetch)", n, before, allowed)
			}
		},
	}})
}

// tryHTTPQuiet is tryHTTP for worker goroutines: it returns the status
// (0 on a transport error) instead of failing the test.
func tryHTTPQuiet(addr, target, extra string) int {
	rc, err := rawExchange(addr, "GET "+target+" HTTP/1.1\r\nHost: "+addr+"\r\nConnection: close\r\n"+extra+"\r\n")
	if err != nil {
		return 0
	}
	defer rc.Close()
	io.Copy(io.Discard, io.LimitReader(rc.resp.Body, 1<<16))
	return rc.resp.StatusCode
}
