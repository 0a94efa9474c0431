package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"authgate/policy"
	"authgate/proxy"
)

// TestMain fails the package when any test leaves a goroutine behind:
// proxies, backends and clients are all shut down by their tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	testSecret  = "authgate-test-secret-0123456789abcdef" // >= 32 bytes
	testHashKey = "authgate-test-hash-key-0123"
	testUUID    = "21a2151a-cd37-41d5-a1c7-124bb05e7a6a"
	otherSecret = "some-other-secret-that-is-not-ours-0123456789"
	testUA      = "pam-app/2.0.0 (authgate proxy tests)"
)

// testEnv resolves the ${VAR}s of the test configs; nothing comes from
// the real environment.
func testEnv(name string) (string, bool) {
	switch name {
	case "AUTHGATE_TEST_SECRET":
		return testSecret, true
	case "AUTHGATE_TEST_HASH_KEY":
		return testHashKey, true
	}
	return "", false
}

// testConfig is the part of config.yaml the tests vary; the routes are
// always standardRoutes.
type testConfig struct {
	Upstream   string
	HostHeader string   // "" = upstream
	Trusted    []string // trusted_proxies
	UserIDs    string   // "" = plain
	Unmatched  string   // "" = reject
	RateLimit  string   // "" = {per_minute: 0} (off, so rejection-heavy tests are not throttled)
	// UpstreamExtra are more upstream keys, one "key: value" per entry
	// (ca_file, upgrade_timeout, ...).
	UpstreamExtra []string
	// LogExtra are more log keys, likewise (max_lines_per_minute, ...).
	LogExtra []string
}

// standardRoutes cover every kind of route the tests drive.
const standardRoutes = `
routes:
  - name: pam-ws
    match: {path: /api/v1/pam/ws, websocket: true}
    token:
      from: [query:token, header:authorization, protocol, cookie:sb-access-token]
      forward: same
    policy: {uuid: rewrite}
  - name: ws-strict
    match: {path: /ws/strict, websocket: true}
    token: {from: [query:token, header:authorization, protocol]}
  - name: ws-origin
    match: {path: /ws/origin, websocket: true}
    token: {from: [query:token]}
    legacy: {origins: ["https://app.example.com"]}
    policy: {uuid: rewrite}
  - name: ws-codes
    match: {path: /ws/codes, websocket: true}
    token: {from: [query:token]}
    close_codes: {missing: 4401, malformed: 4400, jwt_expired: 4419, uuid: 4403}
  - name: ws-http
    match: {path: /ws/http, websocket: true}
    token: {from: [query:token]}
    reject_with: http
  - name: ws-fwd
    match: {path: /ws/fwd, websocket: true}
    token:
      from: [protocol, query:token]
      forward: header:authorization
    policy: {uuid: rewrite}
  - name: api
    match: {prefix: /api/, websocket: false}
    token: {from: [header:authorization]}
    policy: {uuid: rewrite}
  - name: api-strict
    match: {prefix: /strict/, websocket: false}
    token: {from: [header:authorization]}
`

func (c testConfig) yaml() string {
	hostHeader := c.HostHeader
	if hostHeader == "" {
		hostHeader = "upstream"
	}
	userIDs := c.UserIDs
	if userIDs == "" {
		userIDs = "plain"
	}
	unmatched := c.Unmatched
	if unmatched == "" {
		unmatched = "reject"
	}
	rate := c.RateLimit
	if rate == "" {
		rate = "{per_minute: 0}"
	}
	var extra, logExtra strings.Builder
	for _, kv := range c.UpstreamExtra {
		extra.WriteString("  " + kv + "\n")
	}
	for _, kv := range c.LogExtra {
		logExtra.WriteString("  " + kv + "\n")
	}
	var trusted []string
	for _, p := range c.Trusted {
		trusted = append(trusted, fmt.Sprintf("%q", p))
	}
	return fmt.Sprintf(`# authgate proxy test config
listen: "127.0.0.1:0"
admin_listen: ""
health_path: /healthz
shutdown_timeout: 5s
trusted_proxies: [%s]
upstream:
  url: %q
  host_header: %q
  dial_timeout: 2s
%sverify:
  hs256_secret: "${AUTHGATE_TEST_SECRET}"
  algorithms: [HS256]
  audience: authenticated
  leeway: 5s
mint:
  hs256_secret: "${AUTHGATE_TEST_SECRET}"
  ttl: 5m
  issuer: authgate
  audience: authenticated
log:
  user_ids: %s
  hash_key: "${AUTHGATE_TEST_HASH_KEY}"
%sunmatched: %s
rate_limit: %s
%s`, strings.Join(trusted, ", "), c.Upstream, hostHeader, extra.String(), userIDs, logExtra.String(), unmatched, rate, standardRoutes)
}

// syncBuffer collects log lines written from many goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// logLine is one decoded JSON log line, with its raw text.
type logLine struct {
	raw    string
	fields map[string]any
}

func (l logLine) str(k string) string {
	s, _ := l.fields[k].(string)
	return s
}

func (l logLine) num(k string) (float64, bool) {
	f, ok := l.fields[k].(float64)
	return f, ok
}

// lines decodes every log line; a line that is not a JSON object fails t.
func (b *syncBuffer) lines(t testing.TB) []logLine {
	t.Helper()
	var out []logLine
	for _, raw := range strings.Split(b.String(), "\n") {
		if raw == "" {
			continue
		}
		m := map[string]any{}
		if err := json.Unmarshal([]byte(raw), &m); err != nil {
			t.Fatalf("log line %q: got %v, want a JSON object", raw, err)
		}
		out = append(out, logLine{raw: raw, fields: m})
	}
	return out
}

// events returns the log lines of one event kind.
func (b *syncBuffer) events(t testing.TB, kind string) []logLine {
	var out []logLine
	for _, l := range b.lines(t) {
		if l.str("event") == kind {
			out = append(out, l)
		}
	}
	return out
}

// waitEvent polls for an event matching ok (log lines of relayed
// connections are written when the relay ends, after the client saw it).
func (b *syncBuffer) waitEvent(t testing.TB, kind string, ok func(logLine) bool) logLine {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, l := range b.events(t, kind) {
			if ok(l) {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s event matched within 5s; log:\n%s", kind, b.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// harness is one authgate proxy on a loopback port, logging to logs.
type harness struct {
	srv    *proxy.Server
	addr   string // host:port
	base   string // http://host:port
	wsBase string // ws://host:port
	logs   *syncBuffer
	client *http.Client

	shutdownOnce sync.Once
	served       chan error
}

func parseConfig(t testing.TB, cfg testConfig) *policy.Snapshot {
	t.Helper()
	snap, err := policy.Parse("proxy-test.yaml", []byte(cfg.yaml()), policy.Options{LookupEnv: testEnv})
	if err != nil {
		t.Fatalf("policy.Parse: %v\nconfig:\n%s", err, cfg.yaml())
	}
	return snap
}

// startProxy serves cfg on 127.0.0.1:0 until the test ends.
func startProxy(t testing.TB, cfg testConfig) *harness {
	t.Helper()
	return startProxyWith(t, cfg, nil)
}

func startProxyWith(t testing.TB, cfg testConfig, logOut io.Writer) *harness {
	t.Helper()
	snap := parseConfig(t, cfg)
	logs := &syncBuffer{}
	var w io.Writer = logs
	if logOut != nil {
		w = logOut
	}
	srv := proxy.New(snap, proxy.Options{Logger: zerolog.New(w).With().Timestamp().Logger(), Now: time.Now})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{
		srv: srv, addr: ln.Addr().String(), logs: logs, served: make(chan error, 1),
		client: &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second},
	}
	h.base, h.wsBase = "http://"+h.addr, "ws://"+h.addr
	go func() { h.served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		h.client.CloseIdleConnections()
		h.shutdown(t)
	})
	// Serve registers its http.Server asynchronously; make sure it is
	// serving before a test (or its cleanup) calls Shutdown.
	resp, err := h.client.Get(h.base + "/healthz")
	if err != nil {
		t.Fatalf("proxy not serving: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return h
}

// shutdown stops the proxy (once) and reports what Shutdown returned.
func (h *harness) shutdown(t testing.TB) (n int, err error) {
	h.shutdownOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n, err = h.srv.Shutdown(ctx)
		select {
		case serr := <-h.served:
			if serr != nil {
				t.Errorf("Serve: got %v, want nil after Shutdown", serr)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Serve did not return within 5s of Shutdown")
		}
	})
	return n, err
}

// get sends an HTTP request through the proxy.
func (h *harness) do(t testing.TB, method, path string, hdr http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, h.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v[0]
			continue
		}
		req.Header[k] = v
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", testUA)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp, body
}

// dial opens a WebSocket through the proxy with gorilla's client.
func (h *harness) dial(t testing.TB, path string, hdr http.Header, d *websocket.Dialer) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	if d == nil {
		d = &websocket.Dialer{}
	}
	if d.HandshakeTimeout == 0 {
		d.HandshakeTimeout = 5 * time.Second
	}
	if hdr == nil {
		hdr = http.Header{}
	}
	if hdr.Get("User-Agent") == "" {
		hdr.Set("User-Agent", testUA)
	}
	c, resp, err := d.Dial(h.wsBase+path, hdr)
	if c != nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, resp, err
}

// mustDial is dial that fails t unless the handshake succeeds.
func (h *harness) mustDial(t testing.TB, path string, hdr http.Header, d *websocket.Dialer) (*websocket.Conn, *http.Response) {
	t.Helper()
	c, resp, err := h.dial(t, path, hdr, d)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: got error %v (status %d), want a completed handshake", path, err, status)
	}
	return c, resp
}

// readClose reads c until a close frame arrives and returns it.
func readClose(t testing.TB, c *websocket.Conn) *websocket.CloseError {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, p, err := c.ReadMessage()
		if err == nil {
			t.Fatalf("got a data message %q, want a close frame", truncate(p))
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce
		}
		t.Fatalf("got read error %v, want a close frame", err)
	}
}

// closeClient runs the client side of a clean closing handshake.
func closeClient(t testing.TB, c *websocket.Conn, code int, reason string) *websocket.CloseError {
	t.Helper()
	err := c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatalf("writing close: %v", err)
	}
	ce := readClose(t, c)
	c.Close()
	return ce
}

func echoOnce(t testing.TB, c *websocket.Conn, msg string) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, p, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read echo: got %v, want %q", err, msg)
	}
	if string(p) != msg {
		t.Fatalf("echo: got %q, want %q", truncate(p), msg)
	}
}

func truncate(p []byte) string {
	if len(p) > 64 {
		return string(p[:64]) + fmt.Sprintf("...(%d bytes)", len(p))
	}
	return string(p)
}

// seenRequest is what a backend received.
type seenRequest struct {
	Method     string
	RequestURI string
	Host       string
	Header     http.Header
	// TLS: the server name the client sent (SNI) and whether the
	// handshake resumed a session; zero for plain connections.
	ServerName string
	DidResume  bool
}

// backend is an httptest upstream that records every request (and every
// byte it read), echoes WebSocket messages with gorilla, and answers
// plain requests 200.
type backend struct {
	srv      *httptest.Server
	url      string
	raw      syncBuffer  // every byte read from every connection
	noRecord bool        // leave raw empty (benchmarks)
	tls      *tls.Config // serve TLS with this config (withTLS)
	hits     atomic.Int64

	mu   sync.Mutex
	reqs []seenRequest

	upgrader websocket.Upgrader
	// onWS runs on an upgraded connection; nil means echo.
	onWS func(c *websocket.Conn, r *http.Request)
	// onRequest, when set, answers a request before the upgrade (return
	// true when it answered).
	onRequest func(w http.ResponseWriter, r *http.Request) bool
}

type backendOption func(*backend)

// withoutRecording keeps the backend from copying what it reads.
func withoutRecording(b *backend) { b.noRecord = true }

// withTLS serves https with cfg (its certificate from a test CA); the
// raw bytes would be ciphertext, so nothing is recorded.
func withTLS(cfg *tls.Config) backendOption {
	return func(b *backend) { b.tls, b.noRecord = cfg, true }
}

func newBackend(t testing.TB, opts ...backendOption) *backend {
	t.Helper()
	b := &backend{upgrader: websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}}
	for _, o := range opts {
		o(b)
	}
	b.srv = httptest.NewUnstartedServer(http.HandlerFunc(b.serve))
	if !b.noRecord {
		b.srv.Listener = &recordingListener{Listener: b.srv.Listener, rec: &b.raw}
	}
	if b.tls != nil {
		b.srv.TLS = b.tls
		b.srv.StartTLS()
	} else {
		b.srv.Start()
	}
	b.url = b.srv.URL
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) serve(w http.ResponseWriter, r *http.Request) {
	b.hits.Add(1)
	b.mu.Lock()
	seen := seenRequest{Method: r.Method, RequestURI: r.RequestURI, Host: r.Host, Header: r.Header.Clone()}
	if r.TLS != nil {
		seen.ServerName, seen.DidResume = r.TLS.ServerName, r.TLS.DidResume
	}
	b.reqs = append(b.reqs, seen)
	b.mu.Unlock()
	if b.onRequest != nil && b.onRequest(w, r) {
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"backend":"ok"}`))
		return
	}
	c, err := b.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	if b.onWS != nil {
		b.onWS(c, r)
		return
	}
	echo(c)
}

// echo sends every message back until the connection ends.
func echo(c *websocket.Conn) {
	for {
		mt, p, err := c.ReadMessage()
		if err != nil {
			return
		}
		if err := c.WriteMessage(mt, p); err != nil {
			return
		}
	}
}

// last returns the last request the backend received.
func (b *backend) last(t testing.TB) seenRequest {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.reqs) == 0 {
		t.Fatalf("backend received no request, want one")
	}
	return b.reqs[len(b.reqs)-1]
}

func (b *backend) requests() []seenRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]seenRequest(nil), b.reqs...)
}

// recordingListener copies every byte its connections read into rec.
type recordingListener struct {
	net.Listener
	rec *syncBuffer
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &recordingConn{Conn: c, rec: l.rec}, nil
}

type recordingConn struct {
	net.Conn
	rec *syncBuffer
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.rec.Write(p[:n])
	}
	return n, err
}

// signJWT signs claims with HS256.
func signJWT(t testing.TB, secret string, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// validJWT is a token authgate verifies: HS256 with the test secret,
// audience authenticated, an hour left.
func validJWT(t testing.TB, sub string) string {
	return signJWT(t, testSecret, jwt.MapClaims{
		"sub": sub, "aud": "authenticated", "role": "authenticated",
		"iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix(),
	})
}

func expiredJWT(t testing.TB, sub string) string {
	return signJWT(t, testSecret, jwt.MapClaims{
		"sub": sub, "aud": "authenticated",
		"iat": time.Now().Add(-2 * time.Hour).Unix(), "exp": time.Now().Add(-time.Hour).Unix(),
	})
}

func forgedJWT(t testing.TB, sub string) string {
	return signJWT(t, otherSecret, jwt.MapClaims{
		"sub": sub, "aud": "authenticated", "exp": time.Now().Add(time.Hour).Unix(),
	})
}

// verifyMinted checks a token authgate minted for user: the backend's own
// check (signature with the shared secret, audience, expiry) passes and
// the claims say what SPEC "mint" says.
func verifyMinted(t testing.TB, tok, user string) jwt.MapClaims {
	t.Helper()
	claims := jwt.MapClaims{}
	_, err := jwt.NewParser(
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithAudience("authenticated"),
		jwt.WithIssuer("authgate"), jwt.WithExpirationRequired(), jwt.WithIssuedAt(),
	).ParseWithClaims(tok, claims, func(*jwt.Token) (any, error) { return []byte(testSecret), nil })
	if err != nil {
		t.Fatalf("minted token does not verify: %v", err)
	}
	if got := claims["sub"]; got != user {
		t.Errorf("minted sub: got %v, want %s", got, user)
	}
	if got := claims["role"]; got != "authenticated" {
		t.Errorf("minted role: got %v, want authenticated", got)
	}
	if jti, _ := claims["jti"].(string); jti == "" {
		t.Errorf("minted jti: got %v, want a non-empty string", claims["jti"])
	}
	amr, _ := claims["amr"].([]any)
	if len(amr) != 1 {
		t.Fatalf("minted amr: got %v, want one entry", claims["amr"])
	}
	if m, _ := amr[0].(map[string]any); m == nil || m["method"] != "legacy_uuid" {
		t.Errorf("minted amr[0]: got %v, want method legacy_uuid", amr[0])
	}
	exp, _ := claims.GetExpirationTime()
	iat, _ := claims.GetIssuedAt()
	if exp == nil || iat == nil {
		t.Fatalf("minted exp/iat: got %v/%v, want both", exp, iat)
	}
	if d := exp.Sub(iat.Time); d != 5*time.Minute {
		t.Errorf("minted exp-iat: got %v, want the ttl 5m", d)
	}
	if d := time.Until(exp.Time); d < 4*time.Minute || d > 5*time.Minute+2*time.Second {
		t.Errorf("minted exp: %v from now, want about 5m", d)
	}
	return claims
}

// fdCount is the number of open descriptors of this process.
func fdCount(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// waitFor polls cond for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// rawHandshake writes a WebSocket upgrade by hand on a fresh TCP
// connection and returns it after reading the response head.
func rawHandshake(t testing.TB, addr, path string, extra http.Header) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n", path, addr)
	b.WriteString("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
	extra.Write(&b)
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading handshake response: %v", err)
	}
	return conn, br, resp
}
