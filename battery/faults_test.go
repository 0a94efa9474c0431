package battery

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// rawBackend is a misbehaving upstream on a raw TCP listener; the path of
// the upgrade request picks the misbehaviour.
type rawBackend struct {
	ln     net.Listener
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]bool
	closes map[string]chan int // close code authgate sent, by path
}

func newRawBackend(t *testing.T) *rawBackend {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rb := &rawBackend{ln: ln, conns: map[net.Conn]bool{}, closes: map[string]chan int{}}
	rb.wg.Add(1)
	go func() {
		defer rb.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			rb.mu.Lock()
			rb.conns[c] = true
			rb.mu.Unlock()
			rb.wg.Add(1)
			go func() {
				defer rb.wg.Done()
				defer func() {
					c.Close()
					rb.mu.Lock()
					delete(rb.conns, c)
					rb.mu.Unlock()
				}()
				rb.handle(c)
			}()
		}
	}()
	return rb
}

func (rb *rawBackend) url() string { return "http://" + rb.ln.Addr().String() }

func (rb *rawBackend) closeCh(path string) chan int {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	ch, ok := rb.closes[path]
	if !ok {
		ch = make(chan int, 1)
		rb.closes[path] = ch
	}
	return ch
}

// rawProxy starts a raw backend and a proxy (rawYAML) in front of it; both
// are closed when t ends, the proxy first.
func rawProxy(t *testing.T) (*rawBackend, *instance) {
	t.Helper()
	rb := newRawBackend(t)
	t.Cleanup(rb.close)
	in, err := startInstance(rawYAML, rawEnv(rb.url()), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.close)
	return rb, in
}

func (rb *rawBackend) close() {
	rb.ln.Close()
	rb.mu.Lock()
	for c := range rb.conns {
		c.Close()
	}
	rb.mu.Unlock()
	rb.wg.Wait()
}

func accept(key string) string {
	s := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(s[:])
}

func (rb *rawBackend) handle(c net.Conn) {
	c.SetDeadline(time.Now().Add(25 * time.Second))
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	switching := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		accept(req.Header.Get("Sec-WebSocket-Key")) + "\r\n\r\n"
	// readCloses records the close code authgate sends us.
	readCloses := func() {
		c.SetReadDeadline(time.Now().Add(6 * time.Second))
		for {
			hd, p, err := readFrame(br)
			if err != nil {
				select {
				case rb.closeCh(req.URL.Path) <- -1:
				default:
				}
				return
			}
			if hd.OpCode == ws.OpClose {
				code := 1005
				if len(p) >= 2 {
					code = int(p[0])<<8 | int(p[1])
				}
				if !hd.Masked {
					code = -2 // frames to a server must be masked
				}
				select {
				case rb.closeCh(req.URL.Path) <- code:
				default:
				}
				ws.WriteHeader(c, ws.Header{Fin: true, OpCode: ws.OpClose})
				return
			}
		}
	}
	switch req.URL.Path {
	case "/raw/masked":
		io.WriteString(c, switching)
		writeFrame(c, ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Length: 3}, []byte("bad"))
		readCloses()
	case "/raw/length-msb":
		io.WriteString(c, switching)
		c.Write([]byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1})
		readCloses()
	case "/raw/close-after-101":
		io.WriteString(c, switching)
	case "/raw/401":
		body := `{"detail":"Invalid JWT format: Not enough segments"}`
		fmt.Fprintf(c, "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nWWW-Authenticate: Bearer\r\nX-Authgate-Class: forged\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	case "/raw/garbage":
		io.WriteString(c, "SSH-2.0-OpenSSH_9.6\r\n\r\n")
	case "/raw/midframe-small":
		io.WriteString(c, switching)
		ws.WriteHeader(c, ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 1000})
		c.Write(make([]byte, 10))
		time.Sleep(50 * time.Millisecond)
	case "/raw/midframe-large":
		io.WriteString(c, switching)
		ws.WriteHeader(c, ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 1 << 20})
		c.Write(make([]byte, 200<<10))
		time.Sleep(50 * time.Millisecond)
	case "/raw/hang":
		// Accept TCP, never answer; hold until authgate gives up.
		io.Copy(io.Discard, br)
	}
}

const rawYAML = `
listen: "127.0.0.1:0"
admin_listen: ""
upstream:
  url: "${UP}"
  dial_timeout: 1s
  upgrade_timeout: 3s
verify:
  hs256_secret: "${SECRET}"
rate_limit: {per_minute: 0}
unmatched: reject
routes:
  - name: raw
    match: {prefix: /raw/, websocket: true}
    token: {from: [query:token]}
  - name: ws
    match: {path: /ws, websocket: true}
    token: {from: [query:token]}
  - name: api
    match: {prefix: /api/, websocket: false}
    token: {from: [header:authorization]}
    reject_with: http
`

func rawEnv(up string) map[string]string { return map[string]string{"UP": up, "SECRET": hsSecret} }

// TestUpstreamFaults: upstreams that refuse, garble, close or cheat.
func TestUpstreamFaults(t *testing.T) {
	beginTest(t)
	rb, in := rawProxy(t)
	// An upstream port nobody listens on.
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL := "http://" + dead.Addr().String()
	dead.Close()
	refused, err := startInstance(rawYAML, rawEnv(deadURL), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer refused.close()

	wsTo := func(t *testing.T, inst *instance, path string) (*rawConn, closeResult) {
		rc := rawUpgrade(t, inst.addr, path+"?token="+hsJWT("fault "+path), "")
		return rc, awaitClose(rc, 5*time.Second)
	}
	runCases(t, []tcase{
		{
			name:   "upstream-refuses-websocket",
			attack: "the upstream port refuses connections; a valid WebSocket upgrade",
			want:   "101 then close 1014; an upstream_error event (kind unreachable)",
			run: func(t *testing.T) {
				rc, cr := wsTo(t, refused, "/ws")
				defer rc.Close()
				if cr.code != 1014 {
					t.Errorf("got %+v, want close 1014", cr)
				}
				if e := findEvent(refused.logs, "upstream_error", map[string]any{"kind": "unreachable"}, 2*time.Second); e == nil {
					t.Errorf("no upstream_error event")
				}
			},
		},
		{
			name:   "upstream-refuses-http",
			attack: "the upstream port refuses connections; a valid HTTP request",
			want:   "502 JSON bad_gateway",
			run: func(t *testing.T) {
				o := tryHTTP(t, refused.addr, "/api/x", "Authorization: Bearer "+hsJWT("refused http")+"\r\n")
				if o.status != 502 || jsonField(o.body, "error") != "bad_gateway" {
					t.Errorf("got %v, want 502 bad_gateway", o)
				}
			},
		},
		{
			name:   "upstream-garbage-answer",
			attack: "the upstream answers the upgrade with a non-HTTP banner",
			want:   "101 then close 1014",
			run: func(t *testing.T) {
				rc, cr := wsTo(t, in, "/raw/garbage")
				defer rc.Close()
				if cr.code != 1014 {
					t.Errorf("got %+v, want close 1014", cr)
				}
			},
		},
		{
			name:   "upstream-401-on-upgrade",
			attack: "the upstream answers the upgrade 401 with a JSON body and a forged X-Authgate-Class",
			want:   "the client gets the 401 and its body; X-Authgate-* stripped",
			run: func(t *testing.T) {
				rc, err := rawExchange(in.addr, upgradeReq(in.addr, "/raw/401?token="+hsJWT("401 jwt"), ""))
				if err != nil {
					t.Fatal(err)
				}
				defer rc.Close()
				b, _ := io.ReadAll(io.LimitReader(rc.resp.Body, 4096))
				if rc.resp.StatusCode != 401 || !strings.Contains(string(b), "Not enough segments") {
					t.Errorf("got %d %q, want 401 with the upstream's body", rc.resp.StatusCode, b)
				}
				if v := rc.resp.Header.Get("X-Authgate-Class"); v != "" {
					t.Errorf("X-Authgate-Class %q passed to the client", v)
				}
			},
		},
		{
			name:   "upstream-101-then-close",
			attack: "the upstream answers 101 and closes TCP at once",
			want:   "close 1014 to the client, then TCP closed",
			run: func(t *testing.T) {
				rc, cr := wsTo(t, in, "/raw/close-after-101")
				defer rc.Close()
				if cr.code != 1014 {
					t.Errorf("got %+v, want close 1014", cr)
				}
				replyClose(rc, 1000)
				if err := expectEOF(rc, 3*time.Second); err != nil {
					t.Error(err)
				}
			},
		},
		{
			name:   "upstream-masked-frame",
			attack: "the upstream sends a masked text frame (§5.1: server frames are never masked)",
			want:   "close 1002 to the client and (masked) to the upstream",
			run: func(t *testing.T) {
				rc, cr := wsTo(t, in, "/raw/masked")
				defer rc.Close()
				if cr.code != 1002 {
					t.Errorf("client got %+v, want close 1002", cr)
				}
				select {
				case code := <-rb.closeCh("/raw/masked"):
					if code != 1002 {
						t.Errorf("upstream got close %d, want 1002 (-2: unmasked)", code)
					}
				case <-time.After(5 * time.Second):
					t.Errorf("upstream got no close frame")
				}
				replyClose(rc, 1000)
			},
		},
		{
			name:   "upstream-length-msb",
			attack: "the upstream sends a frame whose 64-bit length has the top bit set",
			want:   "close 1002 to the client",
			run: func(t *testing.T) {
				rc, cr := wsTo(t, in, "/raw/length-msb")
				defer rc.Close()
				if cr.code != 1002 {
					t.Errorf("client got %+v, want close 1002", cr)
				}
				replyClose(rc, 1000)
			},
		},
		{
			name:   "upstream-dies-mid-small-frame",
			attack: "the upstream sends the header of a 1000-byte frame and 10 bytes, then closes",
			want:   "close 1014 to the client (nothing of the frame was forwarded)",
			run: func(t *testing.T) {
				rc, cr := wsTo(t, in, "/raw/midframe-small")
				defer rc.Close()
				if cr.code != 1014 {
					t.Errorf("got %+v, want close 1014", cr)
				}
			},
		},
		{
			name:   "upstream-dies-mid-large-frame",
			attack: "the upstream sends the header of a 1 MiB frame and 200 KiB, then closes",
			want:   "the client gets part of the frame, then a clean TCP close without a close frame (1006: no frame can follow half a frame)",
			run: func(t *testing.T) {
				rc := rawUpgrade(t, in.addr, "/raw/midframe-large?token="+hsJWT("midframe large"), "")
				defer rc.Close()
				rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
				hd, err := ws.ReadHeader(rc.br)
				if err != nil || hd.Length != 1<<20 {
					t.Fatalf("header %+v %v, want the 1 MiB frame's", hd, err)
				}
				n, err := io.Copy(io.Discard, rc.br)
				if n >= 1<<20 || n == 0 {
					t.Errorf("client got %d payload bytes, want part of 1 MiB", n)
				}
				var ne net.Error
				if err != nil && (!asNetErr(err, &ne) || ne.Timeout()) {
					t.Errorf("connection did not end: %v", err)
				}
			},
		},
	})
}

func asNetErr(err error, ne *net.Error) bool {
	e, ok := err.(net.Error)
	if ok {
		*ne = e
	}
	return ok
}

// TestJWKSFaults: the JWKS endpoint down, slow, or serving garbage.
// Asymmetric tokens are jwt_invalid promptly; HS256 keeps working.
func TestJWKSFaults(t *testing.T) {
	beginTest(t)
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL := "http://" + dead.Addr().String() + "/jwks.json"
	dead.Close()
	type fault struct {
		name, url string
		srv       *jwksServer
	}
	var faults []fault
	faults = append(faults, fault{name: "down", url: deadURL})
	for _, mode := range []string{"slow", "garbage", "500"} {
		s := newJWKSServer(mode, pubJWK(h.key, kidGood))
		defer s.srv.Close()
		faults = append(faults, fault{name: mode, url: s.srv.URL + "/jwks.json", srv: s})
	}
	var rows []tcase
	for _, f := range faults {
		rows = append(rows, tcase{
			name:   "jwks-" + f.name,
			attack: "verify.jwks_url " + f.name + "; a correctly signed RS256 token (kid k1), then a valid HS256 token",
			want:   "RS256: 101 close 4001 (jwt_invalid) within 1.5 s; HS256: 101 relayed",
			run: func(t *testing.T) {
				in, err := startInstance(mainYAML, mainEnv(h.backend.srv.URL, f.url), 500*time.Millisecond)
				if err != nil {
					t.Fatal(err)
				}
				defer in.close()
				o := tryWS(t, in.addr, "/ws?token="+rsJWT("jwks fault rs", h.key, kidGood, nil), "")
				if o.status != 101 || o.close != 4001 {
					t.Errorf("RS256: got %v, want 101 close 4001", o)
				}
				if o.elapsed > 1500*time.Millisecond {
					t.Errorf("RS256 answered after %v, want under 1.5s", o.elapsed)
				}
				o = tryWS(t, in.addr, "/ws?token="+hsJWT("jwks fault hs"), "")
				if o.status != 101 || o.close != 0 {
					t.Errorf("HS256: got %v, want 101 relayed", o)
				}
			},
		})
	}
	rows = append(rows, tcase{
		name:   "jwks-refetch-hangs",
		attack: "the JWKS answers its first fetch, then hangs; a token with an unknown kid forces a refetch",
		want:   "unknown kid: close 4001 within ~500 ms (KeyTimeout) + slack (< 1.2 s); the known kid k1 still verifies at once",
		run: func(t *testing.T) {
			s := newJWKSServer("slow-after-first", pubJWK(h.key, kidGood))
			defer s.srv.Close()
			in, err := startInstance(mainYAML, mainEnv(h.backend.srv.URL, s.srv.URL+"/jwks.json"), 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer in.close()
			o := tryWS(t, in.addr, "/ws?token="+rsJWT("refetch unknown", h.attacker, "rotated-kid", nil), "")
			if o.status != 101 || o.close != 4001 || o.elapsed > 1200*time.Millisecond {
				t.Errorf("unknown kid: got %v after %v, want close 4001 within 1.2s", o, o.elapsed)
			}
			o = tryWS(t, in.addr, "/ws?token="+rsJWT("refetch known", h.key, kidGood, nil), "")
			if o.status != 101 || o.close != 0 || o.elapsed > 1200*time.Millisecond {
				t.Errorf("known kid: got %v after %v, want relayed at once", o, o.elapsed)
			}
		},
	})
	runCases(t, rows)
}
