package proxy

// Operations tests (issue 4): reload under traffic, rename-save and
// symlink-swap reloads, a rejected reload, stage boundaries without a
// reload, revocation, expiry, metrics and the rate limiter. They run the
// real Run loop on loopback with a config file in a temp dir.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"authgate/policy"
)

const opsSecret = "ops-test-secret-0123456789abcdef-0123456789"
const opsUUID = "6f1c2b1e-0a47-4d0e-9a51-3c2f1b0d9e77"

// opsBackend is a JWT-agnostic echo backend: HTTP answers 200 with the
// request's Authorization, WebSocket echoes every message.
func opsBackend(t *testing.T) *httptest.Server {
	t.Helper()
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if websocket.IsWebSocketUpgrade(r) {
			c, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer c.Close()
			for {
				mt, p, err := c.ReadMessage()
				if err != nil {
					return
				}
				if c.WriteMessage(mt, p) != nil {
					return
				}
			}
		}
		io.Copy(io.Discard, r.Body)
		w.Write([]byte("ok"))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// opsConfig is a config with one WebSocket route and one HTTP route whose
// uuid rule is uuidRule (YAML), plus extra top-level YAML.
func opsConfig(upstream, uuidRule, extra string) string {
	return fmt.Sprintf(`listen: "127.0.0.1:0"
admin_listen: ""
upstream: {url: "%s"}
verify: {hs256_secret: "%s", algorithms: [HS256], audience: authenticated, leeway: 0s}
mint: {hs256_secret: "%s"}
rate_limit: {per_minute: 0}
%s
routes:
  - name: ws
    match: {path: /ws, websocket: true}
    token: {from: [query:token]}
    policy:
      uuid: %s
    close_on_expiry: true
  - name: api
    match: {prefix: /api/}
    token: {from: [header:authorization]}
    policy:
      uuid: %s
`, upstream, opsSecret, opsSecret, extra, uuidRule, uuidRule)
}

type opsHarness struct {
	addr     string
	logs     *lockedBuffer
	srv      func() *Server
	cancel   context.CancelFunc
	done     chan error
	finished chan struct{} // closed when Run has returned
	reload   chan struct{}
}

// stop ends Run and waits for it: its log is then complete (log lines
// are buffered for up to logFlushDelay while it runs).
func (h *opsHarness) stop(t *testing.T) {
	t.Helper()
	h.cancel()
	select {
	case <-h.finished:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not stop")
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *lockedBuffer) count(substr string) int { return strings.Count(l.String(), substr) }

// startRun runs Run on the config at path, with file watching.
func startRun(t *testing.T, path string) *opsHarness {
	t.Helper()
	return startRunWatch(t, path, true)
}

func startRunWatch(t *testing.T, path string, watch bool) *opsHarness {
	t.Helper()
	h := &opsHarness{logs: &lockedBuffer{}, done: make(chan error, 1), finished: make(chan struct{}), reload: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	ready := make(chan string, 1)
	var srvp atomic.Pointer[Server]
	go func() {
		defer close(h.finished)
		h.done <- Run(ctx, RunOptions{
			ConfigPath: path, Logs: h.logs, Watch: watch, Reload: h.reload,
			Load: func(p string) (*policy.Snapshot, error) {
				return policy.Load(p, policy.Options{LookupEnv: func(string) (string, bool) { return "", false }})
			},
			Ready:    func(p, _ net.Addr) { ready <- p.String() },
			onServer: func(s *Server) { srvp.Store(s) },
		})
	}()
	select {
	case h.addr = <-ready:
	case err := <-h.done:
		t.Fatalf("Run: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not start")
	}
	h.srv = srvp.Load
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.finished:
		case <-time.After(30 * time.Second):
			t.Error("Run did not stop")
		}
	})
	return h
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// renameSave writes content the way editors do: a new file renamed over
// the old one.
func renameSave(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".swp"
	writeFile(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func opsDial(t *testing.T, addr, token string) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws?token="+token, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	resp.Body.Close()
	return c
}

func opsJWT(t *testing.T, sub string, exp time.Time) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": sub, "aud": "authenticated", "exp": exp.Unix()}).SignedString([]byte(opsSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func httpStatus(t *testing.T, addr, token string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+addr+"/api/x", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// expectClose reads until the connection ends and returns the close code
// the client saw.
func expectClose(t *testing.T, c *websocket.Conn, within time.Duration) int {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(within))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		if ce, ok := err.(*websocket.CloseError); ok {
			return ce.Code
		}
		t.Fatalf("read: got %v, want a close frame within %v", err, within)
	}
}

func TestReloadUnderTrafficLosesNothing(t *testing.T) {
	be := opsBackend(t)
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, opsConfig(be.URL, "rewrite", ""))
	h := startRun(t, path)

	const workers = 4
	deadline := time.Now().Add(1500 * time.Millisecond)
	var wg sync.WaitGroup
	var httpFail, wsFail atomic.Int64
	stop := make(chan struct{})
	for w := range workers {
		wg.Add(2)
		go func() { // HTTP
			defer wg.Done()
			for time.Now().Before(deadline) {
				if httpStatus(t, h.addr, opsUUID) != 200 {
					httpFail.Add(1)
				}
			}
		}()
		go func() { // one WebSocket, messages in order
			defer wg.Done()
			c := opsDial(t, h.addr, opsUUID)
			defer c.Close()
			for i := 0; time.Now().Before(deadline); i++ {
				msg := fmt.Sprintf("w%d-%d", w, i)
				if c.WriteMessage(websocket.TextMessage, []byte(msg)) != nil {
					wsFail.Add(1)
					return
				}
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, p, err := c.ReadMessage()
				if err != nil || string(p) != msg {
					wsFail.Add(1)
					return
				}
			}
			c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""))
		}()
	}
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			// Each save changes the content (a comment), so each reloads.
			renameSave(t, path, opsConfig(be.URL, "rewrite", fmt.Sprintf("# save %d", i)))
		}
	}()
	wg.Wait()
	close(stop)
	if n := httpFail.Load(); n != 0 {
		t.Errorf("HTTP requests failed during reloads: got %d, want 0", n)
	}
	if n := wsFail.Load(); n != 0 {
		t.Errorf("WebSocket messages lost during reloads: got %d connections with a lost message, want 0", n)
	}
	if n := h.logs.count(`"result":"reloaded"`); n < 2 {
		t.Errorf("reloads during traffic: got %d, want at least 2", n)
	}
}

func TestReloadRenameSymlinkAndRejected(t *testing.T) {
	be := opsBackend(t)
	dir := t.TempDir()
	// The config path is a symlink to a versioned file, as deployments
	// (Kubernetes ConfigMaps) do it.
	v1 := filepath.Join(dir, "v1.yaml")
	writeFile(t, v1, opsConfig(be.URL, "rewrite", ""))
	path := filepath.Join(dir, "config.yaml")
	if err := os.Symlink(v1, path); err != nil {
		t.Fatal(err)
	}
	h := startRun(t, path)
	if got := httpStatus(t, h.addr, opsUUID); got != 200 {
		t.Fatalf("before reload: got %d, want 200 (rewrite)", got)
	}

	t.Run("symlink swap", func(t *testing.T) {
		v2 := filepath.Join(dir, "v2.yaml")
		writeFile(t, v2, opsConfig(be.URL, "reject", ""))
		tmp := filepath.Join(dir, "config.yaml.new")
		os.Symlink(v2, tmp)
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 3*time.Second, "the symlink swap to take effect", func() bool { return httpStatus(t, h.addr, opsUUID) == 403 })
	})

	t.Run("rename save", func(t *testing.T) {
		os.Remove(path)
		writeFile(t, path, opsConfig(be.URL, "rewrite", ""))
		waitUntil(t, 3*time.Second, "replacing the symlink by a file", func() bool { return httpStatus(t, h.addr, opsUUID) == 200 })
		renameSave(t, path, opsConfig(be.URL, "reject", "# renamed"))
		waitUntil(t, 3*time.Second, "the rename-save to take effect", func() bool { return httpStatus(t, h.addr, opsUUID) == 403 })
	})

	t.Run("invalid config keeps the old one", func(t *testing.T) {
		before := h.logs.count(`"result":"rejected"`)
		renameSave(t, path, opsConfig(be.URL, "rewrite", "unknown_key: 1"))
		waitUntil(t, 3*time.Second, "the rejected reload to be logged", func() bool { return h.logs.count(`"result":"rejected"`) > before })
		if !strings.Contains(h.logs.String(), `config.yaml:7: unknown_key: unknown key`) {
			t.Errorf("rejected reload: want its FILE:LINE error in the log, got:\n%s", h.logs.String())
		}
		if got := httpStatus(t, h.addr, opsUUID); got != 403 {
			t.Errorf("after a rejected reload: got %d, want 403 from the previous policy", got)
		}
		// Truncated, then deleted: still the old policy, and each failure
		// is reported once (not once per file event).
		writeFile(t, path, "")
		os.Remove(path)
		h.reload <- struct{}{}
		time.Sleep(300 * time.Millisecond)
		if got := httpStatus(t, h.addr, opsUUID); got != 403 {
			t.Errorf("after the file was deleted: got %d, want 403 from the previous policy", got)
		}
		if n := strings.Count(h.logs.String(), `"errors":["`+path+`: cannot read config: no such file or directory"]`); n != 1 {
			t.Errorf("deleted config reported %d times, want 1", n)
		}
	})
	if got := testutil.ToFloat64(h.srv().metrics.reloads.WithLabelValues("rejected")); got < 2 {
		t.Errorf("authgate_config_reloads_total{result=rejected}: got %v, want >= 2", got)
	}
}

func TestRevokeOnReloadAndStageBoundary(t *testing.T) {
	be := opsBackend(t)
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, opsConfig(be.URL, "rewrite", ""))
	h := startRun(t, path)

	t.Run("reload", func(t *testing.T) {
		legacy := opsDial(t, h.addr, opsUUID)
		defer legacy.Close()
		modern := opsDial(t, h.addr, opsJWT(t, "modern-user", time.Now().Add(time.Hour)))
		defer modern.Close()
		renameSave(t, path, opsConfig(be.URL, "reject", ""))
		start := time.Now()
		if got := expectClose(t, legacy, 3*time.Second); got != 4003 {
			t.Errorf("revoked legacy connection: got close %d, want 4003", got)
		}
		if el := time.Since(start); el > time.Second+watchDebounce {
			t.Errorf("revocation took %v after the save, want within 1s (plus the %v debounce)", el, watchDebounce)
		}
		// The JWT connection stays open and working.
		modern.WriteMessage(websocket.TextMessage, []byte("still here"))
		modern.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, p, err := modern.ReadMessage(); err != nil || string(p) != "still here" {
			t.Errorf("JWT connection after the revoke: got %q, %v; want the echo", p, err)
		}
		waitUntil(t, 2*time.Second, "the ws_close event", func() bool {
			return strings.Contains(h.logs.String(), `"closed_by":"authgate"`)
		})
	})

	t.Run("stage boundary without reload", func(t *testing.T) {
		until := time.Now().Add(1500 * time.Millisecond).UTC().Truncate(time.Millisecond)
		rule := fmt.Sprintf(`[{until: "%s", action: rewrite}, {action: reject}]`, until.Format(time.RFC3339Nano))
		renameSave(t, path, opsConfig(be.URL, rule, ""))
		waitUntil(t, 3*time.Second, "the staged config", func() bool { return httpStatus(t, h.addr, opsUUID) == 200 })
		c := opsDial(t, h.addr, opsUUID)
		defer c.Close()
		if got := expectClose(t, c, 4*time.Second); got != 4003 {
			t.Errorf("at the stage boundary: got close %d, want 4003", got)
		}
		if late := time.Since(until); late > time.Second || late < 0 {
			t.Errorf("closed %v after the boundary, want within 1s after it", late)
		}
	})
}

func TestCloseOnExpiry(t *testing.T) {
	be := opsBackend(t)
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, opsConfig(be.URL, "rewrite", ""))
	h := startRun(t, path)
	exp := time.Now().Add(1500 * time.Millisecond).Truncate(time.Second).Add(time.Second)
	c := opsDial(t, h.addr, opsJWT(t, "user-1", exp))
	defer c.Close()
	long := opsDial(t, h.addr, opsJWT(t, "user-2", time.Now().Add(time.Hour)))
	defer long.Close()
	if got := expectClose(t, c, 5*time.Second); got != 4002 {
		t.Errorf("at exp: got close %d, want 4002", got)
	}
	if d := time.Since(exp); d < 0 || d > 500*time.Millisecond {
		t.Errorf("closed %v after exp (leeway 0), want at exp", d)
	}
	long.WriteMessage(websocket.TextMessage, []byte("x"))
	long.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, _, err := long.ReadMessage(); err != nil {
		t.Errorf("a connection with a later exp was closed too: %v", err)
	}
}

func TestMetricsCountDecisions(t *testing.T) {
	be := opsBackend(t)
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, opsConfig(be.URL, "rewrite", ""))
	h := startRun(t, path)
	for range 3 {
		httpStatus(t, h.addr, opsUUID)
	}
	httpStatus(t, h.addr, "garbage")
	httpStatus(t, h.addr, opsJWT(t, "u", time.Now().Add(time.Hour)))
	c := opsDial(t, h.addr, opsUUID)
	m := h.srv().metrics
	// The client has its 101 a moment before the relay is registered.
	waitUntil(t, 2*time.Second, "websocket_open to count the connection", func() bool { return testutil.ToFloat64(m.wsOpen.WithLabelValues("ws")) == 1 })
	tests := []struct {
		name string
		got  float64
		want float64
	}{
		{"api uuid rewrite", testutil.ToFloat64(m.decisions.WithLabelValues("api", "http", "uuid", "rewrite")), 3},
		{"api malformed reject", testutil.ToFloat64(m.decisions.WithLabelValues("api", "http", "malformed", "reject")), 1},
		{"api jwt pass", testutil.ToFloat64(m.decisions.WithLabelValues("api", "http", "jwt", "pass")), 1},
		{"ws uuid rewrite", testutil.ToFloat64(m.decisions.WithLabelValues("ws", "websocket", "uuid", "rewrite")), 1},
		{"ws open", testutil.ToFloat64(m.wsOpen.WithLabelValues("ws")), 1},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	if ts := testutil.ToFloat64(m.legacySeen.WithLabelValues("api")); time.Since(time.Unix(int64(ts), 0)) > time.Minute {
		t.Errorf("legacy_last_seen for api: got %v, want about now", ts)
	}
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""))
	expectClose(t, c, 2*time.Second)
	c.Close()
	waitUntil(t, 2*time.Second, "websocket_open back to 0", func() bool { return testutil.ToFloat64(m.wsOpen.WithLabelValues("ws")) == 0 })
	if n, err := testutil.GatherAndCount(h.srv().Registry(), "authgate_handshake_seconds"); err != nil || n != 1 {
		t.Errorf("authgate_handshake_seconds: got %d series (%v), want 1", n, err)
	}
}

func TestRateLimit(t *testing.T) {
	be := opsBackend(t)
	path := filepath.Join(t.TempDir(), "config.yaml")
	cfg := strings.Replace(opsConfig(be.URL, "reject", ""), "rate_limit: {per_minute: 0}", "rate_limit: {per_minute: 6, burst: 3}", 1)
	writeFile(t, path, cfg)
	h := startRun(t, path)
	var got []int
	for range 5 {
		got = append(got, httpStatus(t, h.addr, "garbage"))
	}
	want := []int{401, 401, 401, 429, 429}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("statuses of 5 bad attempts: got %v, want %v", got, want)
	}
	if s := httpStatus(t, h.addr, opsJWT(t, "u", time.Now().Add(time.Hour))); s != 200 {
		t.Errorf("verified JWT from a limited IP: got %d, want 200", s)
	}
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+h.addr+"/ws?token=garbage", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	resp.Body.Close()
	defer c.Close()
	if code := expectClose(t, c, 2*time.Second); code != 4029 {
		t.Errorf("WebSocket from a limited IP: got close %d, want 4029", code)
	}
}

func TestRateLimiterMemoryBound(t *testing.T) {
	l := newIPLimiter()
	l.configure(policy.RateLimit{PerMinute: 30, Burst: 10})
	now := time.Now()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range 300_000 {
		ip := fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
		l.rejected(ip, now)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if n := l.size(); n > maxLimiterEntries {
		t.Errorf("entries after 300,000 distinct IPs: got %d, want at most %d", n, maxLimiterEntries)
	}
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > 40<<20 {
		t.Errorf("heap grew by %d MiB for the limiter, want under 40 MiB", grown>>20)
	}
	// A refilled bucket is dropped by the sweep.
	l.sweep(now.Add(time.Hour))
	if n := l.size(); n != 0 {
		t.Errorf("entries after every bucket refilled: got %d, want 0", n)
	}
}
