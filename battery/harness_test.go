package battery

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"authgate/policy"
	"authgate/proxy"
	"authgate/rewrite"
)

// ---------------------------------------------------------------------
// Process-wide state: the standard log (net/http's recovered panics), every
// authgate log buffer, every secret used, and the shared harness.

const (
	hsSecret = "battery-hs256-secret-0123456789abcdef-xyz" // >= 32 bytes
	hashKey  = "battery-log-hash-key-0123456789"
	kidGood  = "k1"
)

var (
	stdlog  lockedBuf // the standard log package's output
	logsMu  sync.Mutex
	allLogs []*lockedBuf
	secrets secretSet
	h       *harness
)

func TestMain(m *testing.M) {
	log.SetOutput(&stdlog)
	fdStart := countFDs()
	var err error
	h, err = newHarness()
	if err != nil {
		fmt.Fprintln(os.Stderr, "battery: harness:", err)
		os.Exit(1)
	}
	code := m.Run()
	h.close()
	// The battery-wide checks run even when a case failed: a failing case
	// must not hide a leak or a panic.
	{
		if s := stdlog.All(); strings.Contains(s, "panic") {
			fmt.Fprintf(os.Stderr, "battery: a panic was logged by net/http:\n%s\n", s)
			code = 1
		}
		if leaks := findSecretLeaks(allLogText()); len(leaks) > 0 {
			fmt.Fprintf(os.Stderr, "battery: tokens found in logs: %v\n", leaks)
			code = 1
		}
		if err := findLeaks(10*time.Second, nil); err != nil {
			fmt.Fprintf(os.Stderr, "battery: goroutines left behind: %v\n", err)
			code = 1
		}
		if n := settleFDs(fdStart+2, 5*time.Second); n > fdStart+2 {
			fmt.Fprintf(os.Stderr, "battery: %d descriptors open at the end, %d at the start\n%s", n, fdStart, fdList())
			code = 1
		}
		fmt.Fprintf(os.Stderr, "battery: %d secrets checked against %d bytes of authgate logs\n", secretCount(), len(allLogText()))
	}
	os.Exit(code)
}

// lockedBuf is a goroutine-safe log sink.
type lockedBuf struct {
	mu   sync.Mutex
	b    bytes.Buffer
	base int // String's start: the length when the top-level test began
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns what was written since the current top-level test began
// (see beginTest); All returns everything.
func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b.Bytes()[l.base:])
}

func (l *lockedBuf) All() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *lockedBuf) rebase() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.base = l.b.Len()
}

func (l *lockedBuf) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Len()
}

func (l *lockedBuf) Since(off int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if off > l.b.Len() {
		return ""
	}
	return string(l.b.Bytes()[off:])
}

// beginTest starts a top-level test on the shared harness: log searches
// (lockedBuf.String) and the backend's records then cover this test only.
// Case names, request IDs and X-Case values repeat from run to run, so
// without it `go test -count=N` would find the previous run's events.
func beginTest(t *testing.T) {
	t.Helper()
	logsMu.Lock()
	for _, b := range allLogs {
		b.rebase()
	}
	logsMu.Unlock()
	stdlog.rebase()
	h.backend.reset()
}

func newLogBuf() *lockedBuf {
	b := &lockedBuf{}
	logsMu.Lock()
	allLogs = append(allLogs, b)
	logsMu.Unlock()
	return b
}

func allLogText() string {
	logsMu.Lock()
	defer logsMu.Unlock()
	var sb strings.Builder
	for _, b := range allLogs {
		sb.WriteString(b.All())
	}
	return sb.String()
}

// events parses the JSON lines of a log buffer.
func events(text string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(text, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// findEvent waits up to d for an event of kind ev whose fields match.
func findEvent(b *lockedBuf, ev string, match map[string]any, d time.Duration) map[string]any {
	deadline := time.Now().Add(d)
	for {
		for _, e := range events(b.String()) {
			if e["event"] != ev {
				continue
			}
			ok := true
			for k, v := range match {
				if fmt.Sprint(e[k]) != fmt.Sprint(v) {
					ok = false
					break
				}
			}
			if ok {
				return e
			}
		}
		if time.Now().After(deadline) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// secretSet holds every token the battery sent, and the pieces of them
// that must never reach a log line.
type secretSet struct {
	mu sync.Mutex
	m  map[string]string // needle -> label
}

func (s *secretSet) add(label, tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]string{}
	}
	put := func(n string) {
		if len(n) >= 12 {
			s.m[n] = label
		}
	}
	if len(tok) > 4096 {
		put(tok[:64])
		put(tok[len(tok)-64:])
	} else {
		put(tok)
	}
	if rewrite.IsUUID(tok) {
		put(strings.ToLower(tok))
		put(strings.ToUpper(tok))
	}
	if strings.Count(tok, ".") == 2 && len(tok) <= 4096 {
		for _, seg := range strings.Split(tok, ".") {
			if len(seg) >= 16 {
				put(seg)
			}
		}
	}
}

func secretCount() int {
	secrets.mu.Lock()
	defer secrets.mu.Unlock()
	return len(secrets.m)
}

// findSecretLeaks returns the labels of secrets found in text.
func findSecretLeaks(text string) []string {
	secrets.mu.Lock()
	defer secrets.mu.Unlock()
	var out []string
	seen := map[string]bool{}
	for n, label := range secrets.m {
		if strings.Contains(text, n) && !seen[label] {
			seen[label] = true
			out = append(out, label)
		}
	}
	sort.Strings(out)
	return out
}

// ---------------------------------------------------------------------
// Leak accounting.

func countFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	return len(ents)
}

func fdList() string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var sb strings.Builder
	for _, e := range ents {
		l, _ := os.Readlink("/proc/self/fd/" + e.Name())
		fmt.Fprintf(&sb, "  fd %s -> %s\n", e.Name(), l)
	}
	return sb.String()
}

// settleFDs waits up to d for the descriptor count to fall to max. It
// collects garbage meanwhile: Go keeps the pipes of splice(2) in a
// sync.Pool and closes them by finalizer, so a relay that spliced leaves
// pipe pairs open until the pool is dropped by two collections.
func settleFDs(max int, d time.Duration) int {
	deadline := time.Now().Add(d)
	for {
		n := countFDs()
		if n <= max || time.Now().After(deadline) {
			return n
		}
		runtime.GC()
		time.Sleep(25 * time.Millisecond)
	}
}

// findLeaks retries goleak.Find for up to d: connections in their
// closing handshake legitimately take up to CloseWait (2 s) to end.
func findLeaks(d time.Duration, ignore goleak.Option) error {
	deadline := time.Now().Add(d)
	for {
		var err error
		if ignore != nil {
			err = goleak.Find(ignore)
		} else {
			err = goleak.Find()
		}
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tcase is one row of the battery: what is done and the exact answer.
type tcase struct {
	name   string
	attack string
	want   string
	run    func(t *testing.T)
}

// runCases runs each row as a subtest with the invariants around it.
func runCases(t *testing.T, cases []tcase) {
	t.Helper()
	for _, c := range cases {
		runCase(t, c, modeFull)
	}
}

// runGroup runs rows that share long-lived state (a proxy.Run, slow
// parallel cases): each row gets the canary, log and panic checks, and
// the goroutine and descriptor accounting is done around the group.
func runGroup(t *testing.T, parallel bool, cases []tcase) {
	t.Helper()
	st := snapshotState(true)
	t.Run("group", func(t *testing.T) {
		mode := modeShared
		if parallel {
			mode = modeParallel
		}
		for _, c := range cases {
			runCase(t, c, mode)
		}
	})
	checkInvariants(t, st, true)
}

const (
	modeFull = iota
	modeShared
	modeParallel
)

type caseState struct {
	fds    int
	goro   goleak.Option
	offs   map[*lockedBuf]int
	stdOff int
}

func snapshotState(full bool) caseState {
	st := caseState{offs: map[*lockedBuf]int{}, stdOff: stdlog.Len()}
	logsMu.Lock()
	for _, b := range allLogs {
		st.offs[b] = b.Len()
	}
	logsMu.Unlock()
	if full {
		st.fds = countFDs()
		st.goro = goleak.IgnoreCurrent()
	}
	return st
}

// runCase runs c; shared and parallel rows skip the goroutine and
// descriptor accounting (their group does it).
func runCase(t *testing.T, c tcase, mode int) {
	t.Run(c.name, func(t *testing.T) {
		if mode == modeParallel {
			t.Parallel()
		}
		t.Logf("attack: %s", c.attack)
		t.Logf("want:   %s", c.want)
		st := snapshotState(mode == modeFull)
		c.run(t)
		checkInvariants(t, st, mode == modeFull)
	})
}

// checkInvariants: the canary still echoes, no new log line holds a
// secret or is not JSON, nothing panicked, and (full) no goroutine or
// descriptor was left behind.
func checkInvariants(t *testing.T, st caseState, full bool) {
	t.Helper()
	if err := h.echoCanary(); err != nil {
		t.Errorf("canary websocket broken after this case: %v", err)
	}
	logsMu.Lock()
	bufs := append([]*lockedBuf(nil), allLogs...)
	logsMu.Unlock()
	for _, b := range bufs {
		text := b.Since(st.offs[b])
		if leaks := findSecretLeaks(text); len(leaks) > 0 {
			t.Errorf("tokens in log lines: %v", leaks)
		}
		for _, line := range strings.Split(text, "\n") {
			if line != "" && !json.Valid([]byte(line)) {
				t.Errorf("log line is not one JSON object: %.200q", line)
			}
			// The proxy routes net/http's own messages (a recovered
			// handler panic among them) into its JSON log as http_error.
			if strings.Contains(line, `"event":"http_error"`) && strings.Contains(line, "panic") {
				t.Errorf("a handler panicked: %.400s", line)
			}
		}
	}
	if s := stdlog.Since(st.stdOff); strings.Contains(s, "panic") {
		t.Errorf("a panic reached the standard log:\n%s", s)
	}
	if !full {
		return
	}
	if n := h.main.srv.OpenWebSockets(); n != 1 {
		deadline := time.Now().Add(4 * time.Second)
		for n != 1 && time.Now().Before(deadline) {
			time.Sleep(25 * time.Millisecond)
			n = h.main.srv.OpenWebSockets()
		}
		if n != 1 {
			t.Errorf("main proxy holds %d open websockets, want 1 (the canary)", n)
		}
	}
	if err := findLeaks(5*time.Second, st.goro); err != nil {
		t.Errorf("goroutines left behind: %v", err)
	}
	if n := settleFDs(st.fds+2, 4*time.Second); n > st.fds+2 {
		t.Errorf("descriptors: %d after the case, %d before (tolerance 2)\n%s", n, st.fds, fdList())
	}
}

// ---------------------------------------------------------------------
// Tokens: hand-built JWS (independent of golang-jwt, the implementation
// under test) and go-jose for the canary and JWKS.

var b64 = base64.RawURLEncoding

func makeJWT(header, claims map[string]any, sign func([]byte) []byte) string {
	hb, _ := json.Marshal(header)
	cb, _ := json.Marshal(claims)
	input := b64.EncodeToString(hb) + "." + b64.EncodeToString(cb)
	sig := ""
	if sign != nil {
		sig = b64.EncodeToString(sign([]byte(input)))
	}
	return input + "." + sig
}

func hs256(key []byte) func([]byte) []byte {
	return func(in []byte) []byte {
		m := hmac.New(sha256.New, key)
		m.Write(in)
		return m.Sum(nil)
	}
}

func rs256(k *rsa.PrivateKey) func([]byte) []byte {
	return func(in []byte) []byte {
		d := sha256.Sum256(in)
		s, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, d[:])
		if err != nil {
			panic(err)
		}
		return s
	}
}

func stdClaims(sub string, exp time.Time) map[string]any {
	return map[string]any{
		"sub": sub, "aud": "authenticated", "role": "authenticated",
		"iat": time.Now().Add(-time.Minute).Unix(), "exp": exp.Unix(),
	}
}

var subCounter atomic.Int64

// newSub returns a fresh subject (a UUID-shaped id) for a JWT.
func newSub() string {
	n := subCounter.Add(1)
	return fmt.Sprintf("0000%04x-aaaa-4bbb-8ccc-%012x", n, time.Now().UnixNano()&0xffffffffffff)
}

// hsJWT returns a valid HS256 JWT for the battery's secret.
func hsJWT(label string) string {
	tok := makeJWT(map[string]any{"alg": "HS256", "typ": "JWT"}, stdClaims(newSub(), time.Now().Add(time.Hour)), hs256([]byte(hsSecret)))
	secrets.add(label, tok)
	return tok
}

// rsJWT returns an RS256 JWT signed by k with kid.
func rsJWT(label string, k *rsa.PrivateKey, kid string, extra map[string]any) string {
	hdr := map[string]any{"alg": "RS256", "typ": "JWT", "kid": kid}
	for k, v := range extra {
		hdr[k] = v
	}
	tok := makeJWT(hdr, stdClaims(newSub(), time.Now().Add(time.Hour)), rs256(k))
	secrets.add(label, tok)
	return tok
}

func newUUID(label string) string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	u := fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
	secrets.add(label, u)
	return u
}

// ---------------------------------------------------------------------
// Backends.

// seen is what the backend received.
type seen struct {
	Method, Host, Path, RawPath, RawQuery, Proto string
	Header                                       http.Header
	TE                                           []string
	CL                                           int64
	Body                                         string
}

// backend is the well-behaved upstream: HTTP requests are recorded and
// answered 200; WebSocket upgrades are accepted with gorilla and echoed.
// Requests are keyed by their X-Case header.
type backend struct {
	srv    *httptest.Server
	mu     sync.Mutex
	reqs   map[string][]seen
	closes map[string]chan int
	// flood: bytes the flooding handler managed to write.
	floodWritten atomic.Int64
	floodDone    chan struct{}
}

func newBackend() *backend {
	b := &backend{reqs: map[string][]seen{}, closes: map[string]chan int{}, floodDone: make(chan struct{}, 4)}
	b.srv = httptest.NewUnstartedServer(http.HandlerFunc(b.serve))
	// No idle keep-alive connections: every case ends with nothing open.
	b.srv.Config.SetKeepAlivesEnabled(false)
	b.srv.Config.ErrorLog = log.New(&stdlog, "backend: ", 0)
	b.srv.Start()
	return b
}

func (b *backend) closeCh(c string) chan int {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch, ok := b.closes[c]
	if !ok {
		ch = make(chan int, 1)
		b.closes[c] = ch
	}
	return ch
}

// reset forgets the requests, close codes and flood figures recorded so
// far, except the canary's.
func (b *backend) reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for c := range b.reqs {
		if c != "canary" {
			delete(b.reqs, c)
		}
	}
	for c := range b.closes {
		if c != "canary" {
			delete(b.closes, c)
		}
	}
	b.floodWritten.Store(0)
	for len(b.floodDone) > 0 {
		<-b.floodDone
	}
}

// got returns the requests the backend saw for case c.
func (b *backend) got(c string) []seen {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]seen(nil), b.reqs[c]...)
}

// waitClose waits for the close code the backend's websocket of case c
// ended with (-1: ended without a close frame).
func (b *backend) waitClose(c string, d time.Duration) (int, bool) {
	select {
	case code := <-b.closeCh(c):
		return code, true
	case <-time.After(d):
		return 0, false
	}
}

func (b *backend) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	s := seen{Method: r.Method, Host: r.Host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery,
		Proto: r.Proto, Header: r.Header.Clone(), TE: r.TransferEncoding, CL: r.ContentLength, Body: string(body)}
	c := r.Header.Get("X-Case")
	b.mu.Lock()
	b.reqs[c] = append(b.reqs[c], s)
	b.mu.Unlock()
	if websocket.IsWebSocketUpgrade(r) {
		up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
		conn, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		if strings.HasPrefix(c, "flood") {
			b.flood(conn)
			return
		}
		for {
			// 60 s without a message ends it; the canary, checked after
			// every case, lives as long as the battery runs.
			conn.SetReadDeadline(time.Now().Add(60 * time.Second))
			mt, msg, err := conn.ReadMessage()
			if err != nil {
				code := -1
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					code = ce.Code
				}
				select {
				case b.closeCh(c) <- code:
				default:
				}
				return
			}
			conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if conn.WriteMessage(mt, msg) != nil {
				return
			}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(s)
}

// flood writes 64 KiB binary messages until a write fails or 30 s pass.
func (b *backend) flood(conn *websocket.Conn) {
	defer func() { b.floodDone <- struct{}{} }()
	go func() { // read, so the close handshake can complete
		for {
			if _, _, err := conn.NextReader(); err != nil {
				return
			}
		}
	}()
	msg := bytes.Repeat([]byte{'f'}, 64<<10)
	end := time.Now().Add(30 * time.Second)
	for time.Now().Before(end) {
		conn.SetWriteDeadline(time.Now().Add(15 * time.Second))
		if err := conn.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			return
		}
		b.floodWritten.Add(int64(len(msg)))
	}
}

// jwksServer serves a key set and counts fetches. mode: "ok", "garbage",
// "500", "slow" (hangs until the fetch is abandoned), "slow-after-first".
type jwksServer struct {
	srv  *httptest.Server
	hits atomic.Int64
	mode atomic.Value
	body []byte
}

func newJWKSServer(mode string, keys ...jose.JSONWebKey) *jwksServer {
	j := &jwksServer{}
	j.mode.Store(mode)
	j.body, _ = json.Marshal(jose.JSONWebKeySet{Keys: keys})
	j.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := j.hits.Add(1)
		mode := j.mode.Load().(string)
		if mode == "slow-after-first" && n > 1 || mode == "slow" {
			select {
			case <-r.Context().Done():
			case <-time.After(8 * time.Second):
			}
			return
		}
		switch mode {
		case "garbage":
			w.Write([]byte("<html>not a key set \x00\xff</html>"))
		case "500":
			http.Error(w, "boom", http.StatusInternalServerError)
		default:
			w.Header().Set("Content-Type", "application/json")
			w.Write(j.body)
		}
	}))
	j.srv.Config.SetKeepAlivesEnabled(false)
	j.srv.Config.ErrorLog = log.New(&stdlog, "jwks: ", 0)
	j.srv.Start()
	return j
}

func pubJWK(k *rsa.PrivateKey, kid string) jose.JSONWebKey {
	return jose.JSONWebKey{Key: &k.PublicKey, KeyID: kid, Algorithm: "RS256", Use: "sig"}
}

// ---------------------------------------------------------------------
// authgate instances.

type instance struct {
	srv    *proxy.Server
	addr   string
	logs   *lockedBuf
	cancel context.CancelFunc
	done   chan struct{}
}

// startInstance parses yamlText, attaches a JWKS client as proxy.Run
// does (with a short fetch timeout), and serves on 127.0.0.1:0.
func startInstance(yamlText string, env map[string]string, jwksTimeout time.Duration) (*instance, error) {
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	snap, err := policy.Parse("battery.yaml", []byte(yamlText), policy.Options{LookupEnv: lookup})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	if snap.JWKSURL != "" {
		cl := &http.Client{Timeout: jwksTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
		ks, err := rewrite.NewJWKS(ctx, snap.JWKSURL, rewrite.JWKSOptions{Client: cl, HTTPTimeout: jwksTimeout})
		if err != nil {
			cancel()
			return nil, err
		}
		snap = snap.WithKeySet(ks)
	}
	logs := newLogBuf()
	srv := proxy.New(snap, proxy.Options{Logger: zerolog.New(logs).With().Timestamp().Logger()})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		return nil, err
	}
	in := &instance{srv: srv, addr: ln.Addr().String(), logs: logs, cancel: cancel, done: make(chan struct{})}
	go func() {
		srv.Serve(ln)
		close(in.done)
	}()
	return in, nil
}

func (in *instance) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	in.srv.Shutdown(ctx)
	<-in.done
	in.cancel()
}

// mainYAML is the policy of the shared proxy. Rate limiting is off so
// that the rejection-heavy battery is not throttled.
const mainYAML = `
listen: "127.0.0.1:0"
admin_listen: ""
upstream:
  url: "${UP}"
  dial_timeout: 2s
verify:
  hs256_secret: "${SECRET}"
  jwks_url: "${JWKS}"
  algorithms: [HS256, RS256, ES256]
  audience: authenticated
  leeway: 0s
mint:
  hs256_secret: "${SECRET}"
  ttl: 5m
log:
  user_ids: hash
  hash_key: "${HASHKEY}"
rate_limit: {per_minute: 0}
unmatched: reject
routes:
  - name: ws
    match: {path: /ws, websocket: true}
    token:
      from: [query:token, header:authorization, protocol, cookie:sb-access-token]
    close_on_expiry: true
    policy: {uuid: rewrite}
  - name: ws-origin
    match: {path: /ws-origin, websocket: true}
    token: {from: [query:token]}
    legacy: {origins: ["https://app.example.com"]}
    policy: {uuid: rewrite}
  - name: api
    match: {prefix: /api/, websocket: false}
    token: {from: [header:authorization, query:token, cookie:sb-access-token]}
    reject_with: http
    policy: {uuid: rewrite}
`

func mainEnv(up, jwks string) map[string]string {
	return map[string]string{"UP": up, "JWKS": jwks, "SECRET": hsSecret, "HASHKEY": hashKey}
}

// harness is the shared proxy, its backends, keys and the canary.
type harness struct {
	backend   *backend
	jwks      *jwksServer
	main      *instance
	key       *rsa.PrivateKey // published in the JWKS as kid k1
	attacker  *rsa.PrivateKey // never published
	canary    *websocket.Conn
	canaryMu  sync.Mutex
	canaryN   int
	canaryTok string
}

func newHarness() (*harness, error) {
	hh := &harness{}
	var err error
	if hh.key, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return nil, err
	}
	if hh.attacker, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return nil, err
	}
	hh.backend = newBackend()
	hh.jwks = newJWKSServer("ok", pubJWK(hh.key, kidGood))
	hh.main, err = startInstance(mainYAML, mainEnv(hh.backend.srv.URL, hh.jwks.srv.URL+"/jwks.json"), 2*time.Second)
	if err != nil {
		return nil, err
	}
	// The canary's token comes from go-jose, an independent JWT library.
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: hh.key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kidGood))
	if err != nil {
		return nil, err
	}
	hh.canaryTok, err = josejwt.Signed(sig).Claims(josejwt.Claims{
		Subject: "canary-user", Audience: josejwt.Audience{"authenticated"},
		Expiry: josejwt.NewNumericDate(time.Now().Add(2 * time.Hour)), IssuedAt: josejwt.NewNumericDate(time.Now()),
	}).Serialize()
	if err != nil {
		return nil, err
	}
	secrets.add("canary jwt", hh.canaryTok)
	hdr := http.Header{"X-Case": {"canary"}}
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+hh.main.addr+"/ws?token="+hh.canaryTok, hdr)
	if err != nil {
		return nil, fmt.Errorf("canary: %w", err)
	}
	resp.Body.Close()
	hh.canary = c
	if err := hh.echoCanary(); err != nil {
		return nil, err
	}
	return hh, nil
}

func (hh *harness) echoCanary() error {
	hh.canaryMu.Lock()
	defer hh.canaryMu.Unlock()
	hh.canaryN++
	msg := fmt.Sprintf("canary-%d", hh.canaryN)
	hh.canary.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := hh.canary.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		return err
	}
	hh.canary.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, got, err := hh.canary.ReadMessage()
	if err != nil {
		return err
	}
	if string(got) != msg {
		return fmt.Errorf("canary echoed %q, want %q", got, msg)
	}
	return nil
}

func (hh *harness) close() {
	hh.canaryMu.Lock()
	hh.canary.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "bye"), time.Now().Add(time.Second))
	hh.canary.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		if _, _, err := hh.canary.ReadMessage(); err != nil {
			break
		}
	}
	hh.canary.Close()
	hh.canaryMu.Unlock()
	hh.main.close()
	hh.backend.srv.Close()
	hh.jwks.srv.Close()
}

// ---------------------------------------------------------------------
// Clients.

// httpClient never keeps idle connections, so cases leave nothing open.
func httpClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
}

type httpResult struct {
	status int
	header http.Header
	body   string
}

func doHTTP(t *testing.T, method, url string, hdr http.Header, body io.Reader) httpResult {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if hv := hdr.Get("Host"); hv != "" {
		req.Host = hv
	}
	resp, err := httpClient().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return httpResult{resp.StatusCode, resp.Header, string(b)}
}

// rawConn is a hand-driven client connection.
type rawConn struct {
	c     net.Conn
	br    *bufio.Reader
	resp  *http.Response
	wrote chan struct{} // closed when the request write has ended
}

// Close closes the connection and waits for the request writer.
func (r *rawConn) Close() {
	r.c.Close()
	<-r.wrote
}

// rawExchange sends raw bytes and reads one response head. The request
// is written concurrently with the read: a server that answers early
// (431) and stops reading must not deadlock the client.
func rawExchange(addr, raw string) (*rawConn, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(25 * time.Second))
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		io.WriteString(c, raw)
	}()
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		<-wrote
		return nil, err
	}
	return &rawConn{c: c, br: br, resp: resp, wrote: wrote}, nil
}

const wsKey = "dGhlIHNhbXBsZSBub25jZQ=="

// upgradeReq builds a WebSocket upgrade request; extra lines end in \r\n.
func upgradeReq(addr, target, extra string) string {
	return "GET " + target + " HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + wsKey + "\r\nSec-WebSocket-Version: 13\r\n" + extra + "\r\n"
}

// rawUpgrade upgrades through authgate by hand and requires a 101.
func rawUpgrade(t *testing.T, addr, target, extra string) *rawConn {
	t.Helper()
	rc, err := rawExchange(addr, upgradeReq(addr, target, extra))
	if err != nil {
		t.Fatalf("upgrade %s: %v", target, err)
	}
	if rc.resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(io.LimitReader(rc.resp.Body, 4096))
		rc.Close()
		t.Fatalf("upgrade %s: status %d (%s), want 101", target, rc.resp.StatusCode, b)
	}
	return rc
}

// readFrame reads one frame (payload unmasked).
func readFrame(r io.Reader) (ws.Header, []byte, error) {
	hd, err := ws.ReadHeader(r)
	if err != nil {
		return hd, nil, err
	}
	if hd.Length > 16<<20 {
		return hd, nil, fmt.Errorf("frame of %d bytes", hd.Length)
	}
	p := make([]byte, hd.Length)
	if _, err := io.ReadFull(r, p); err != nil {
		return hd, nil, err
	}
	if hd.Masked {
		ws.Cipher(p, hd.Mask, 0)
	}
	return hd, p, nil
}

// closeResult is how a connection ended as its client saw it.
type closeResult struct {
	code     int // close frame code; 1005 no code; 0: no close frame
	reason   string
	masked   bool
	err      error // the read error if no close frame came
	frameErr bool
}

// awaitClose reads frames (skipping data) until a close frame or an error,
// for at most d.
func awaitClose(rc *rawConn, d time.Duration) closeResult {
	rc.c.SetReadDeadline(time.Now().Add(d))
	for {
		hd, p, err := readFrame(rc.br)
		if err != nil {
			return closeResult{err: err}
		}
		if hd.OpCode != ws.OpClose {
			continue
		}
		res := closeResult{code: 1005, masked: hd.Masked}
		if len(p) >= 2 {
			res.code = int(p[0])<<8 | int(p[1])
			res.reason = string(p[2:])
		}
		return res
	}
}

// writeFrame writes a client frame; a masked one gets a random key.
func writeFrame(w io.Writer, hd ws.Header, payload []byte) error {
	p := append([]byte(nil), payload...)
	if hd.Masked {
		if hd.Mask == [4]byte{} {
			hd.Mask = ws.NewMask()
		}
		ws.Cipher(p, hd.Mask, 0)
	}
	if err := ws.WriteHeader(w, hd); err != nil {
		return err
	}
	_, err := w.Write(p)
	return err
}

// replyClose answers a close frame with one of our own (masked).
func replyClose(rc *rawConn, code int) {
	body := []byte{byte(code >> 8), byte(code)}
	rc.c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	writeFrame(rc.c, ws.Header{Fin: true, OpCode: ws.OpClose, Masked: true, Length: 2}, body)
}

// expectEOF waits up to d for the server to close the TCP connection.
func expectEOF(rc *rawConn, d time.Duration) error {
	rc.c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, rc.br)
	if err == nil {
		return nil
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("connection still open after %v", d)
	}
	return nil // a reset is a close too
}

// wsDial dials with gorilla; it returns the response status on failure.
func wsDial(t *testing.T, url string, hdr http.Header) (*websocket.Conn, int, error) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 20 * time.Second, Proxy: nil}
	c, resp, err := d.Dial(url, hdr)
	status := 0
	if resp != nil {
		status = resp.StatusCode
		if resp.Body != nil {
			resp.Body.Close()
		}
	}
	return c, status, err
}

// wsCloseCode reads from c until it fails and returns the close code
// (0 when the connection ended without a close frame).
func wsCloseCode(c *websocket.Conn, d time.Duration) (int, string, error) {
	c.SetReadDeadline(time.Now().Add(d))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code, ce.Text, nil
		}
		return 0, "", err
	}
}

// echoOnce sends msg on c and requires it back.
func echoOnce(c *websocket.Conn, msg string) error {
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, got, err := c.ReadMessage()
	if err != nil {
		return err
	}
	if string(got) != msg {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

// closeWS ends a gorilla connection politely.
func closeWS(c *websocket.Conn) {
	c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			break
		}
	}
	c.Close()
}

// authEvent returns the auth event of request id rid on in.
func authEvent(in *instance, rid string) map[string]any {
	return findEvent(in.logs, "auth", map[string]any{"request_id": rid}, 2*time.Second)
}

func jsonField(body, key string) string {
	var m map[string]any
	if json.Unmarshal([]byte(body), &m) != nil {
		return "<not json>"
	}
	return fmt.Sprint(m[key])
}
