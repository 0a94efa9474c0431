package proxy

// Tests of Run's hooks for a caller that runs something beside the proxy
// (issue 20, same-service mode): Loaded before anything listens,
// UpstreamReady holding the health path at 503 and requests until the
// upstream accepts, Drained after authgate's own shutdown.

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"

	"authgate/policy"
)

type hookRun struct {
	addr   string
	logs   *lockedBuffer
	cancel context.CancelFunc
	done   chan error
}

func startHookRun(t *testing.T, cfg string, opt RunOptions) *hookRun {
	t.Helper()
	path := filepath.Join(t.TempDir(), "authgate.yaml")
	writeFile(t, path, cfg)
	h := &hookRun{logs: &lockedBuffer{}, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	ready := make(chan string, 1)
	opt.ConfigPath, opt.Logs = path, h.logs
	opt.Load = func(p string) (*policy.Snapshot, error) {
		return policy.Load(p, policy.Options{LookupEnv: func(string) (string, bool) { return "", false }})
	}
	opt.Ready = func(p, _ net.Addr) { ready <- p.String() }
	go func() { h.done <- Run(ctx, opt) }()
	select {
	case h.addr = <-ready:
	case err := <-h.done:
		t.Fatalf("Run: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not start")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(30 * time.Second):
			t.Error("Run did not stop")
		}
	})
	return h
}

func healthOf(t *testing.T, addr string) (int, string) {
	t.Helper()
	resp, err := noKeepAliveClient.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("health: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type") + " " + string(b)
}

var noKeepAliveClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// TestUpstreamReady: until UpstreamReady is closed the health path answers
// 503 {"status":"starting"}; a WebSocket and an HTTP request sent while the
// upstream does not even listen wait, and are relayed once it does; the
// health path answers 200 after.
func TestUpstreamReady(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	upAddr := ln.Addr().String()
	ln.Close() // nothing listens there until the "child" is up
	ready := make(chan struct{})
	var loadedLogger atomic.Bool
	h := startHookRun(t, opsConfig("http://"+upAddr, "rewrite", ""), RunOptions{
		UpstreamReady: ready,
		Loaded: func(snap *policy.Snapshot, log zerolog.Logger) error {
			if snap.Upstream.URL.Host != upAddr {
				t.Errorf("Loaded: upstream %s, want %s", snap.Upstream.URL.Host, upAddr)
			}
			log.Info().Str("event", "hook_test").Msg("logged through the hook")
			loadedLogger.Store(true)
			return nil
		},
	})
	if !loadedLogger.Load() {
		t.Fatal("Loaded was not called before Ready")
	}
	if code, body := healthOf(t, h.addr); code != 503 || body != "application/json {\"status\":\"starting\"}\n" {
		t.Errorf("health before ready: got %d %q, want 503 {\"status\":\"starting\"}", code, body)
	}
	tok := opsJWT(t, "u1", time.Now().Add(time.Hour))
	var wg sync.WaitGroup
	var wsErr, httpErr error
	var httpCode int
	var echoed string
	wg.Add(2)
	go func() {
		defer wg.Done()
		c, resp, err := websocket.DefaultDialer.Dial("ws://"+h.addr+"/ws?token="+tok, nil)
		if err != nil {
			wsErr = err
			return
		}
		resp.Body.Close()
		defer c.Close()
		if err := c.WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
			wsErr = err
			return
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, p, err := c.ReadMessage()
		wsErr, echoed = err, string(p)
	}()
	go func() {
		defer wg.Done()
		req, _ := http.NewRequest("GET", "http://"+h.addr+"/api/x", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := noKeepAliveClient.Do(req)
		if err != nil {
			httpErr = err
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		httpCode = resp.StatusCode
	}()
	time.Sleep(500 * time.Millisecond) // both are waiting by now
	be := opsBackend(t)
	be.Listener.Close() // move the backend to the address authgate expects
	upLn, err := net.Listen("tcp", upAddr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: upLn, Config: be.Config}
	srv.Start()
	defer srv.Close()
	close(ready)
	wg.Wait()
	if wsErr != nil || echoed != "hi" {
		t.Errorf("WebSocket opened before ready: got %q, %v; want the echo", echoed, wsErr)
	}
	if httpErr != nil || httpCode != 200 {
		t.Errorf("HTTP sent before ready: got %d, %v; want 200", httpCode, httpErr)
	}
	if code, body := healthOf(t, h.addr); code != 200 || body != "text/plain; charset=utf-8 ok\n" {
		t.Errorf("health after ready: got %d %q, want 200 ok", code, body)
	}
	h.cancel()
	if err := <-h.done; err != nil {
		t.Errorf("Run: %v", err)
	}
	h.done <- nil // for the cleanup
	if !strings.Contains(h.logs.String(), `"logged through the hook"`) {
		t.Errorf("the Loaded logger wrote nothing to Run's log:\n%s", h.logs.String())
	}
}

// TestUpstreamReadyTimeout: a request waits for readiness no longer than
// response_timeout, then goes on and fails as it would have (502).
func TestUpstreamReadyTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	upAddr := ln.Addr().String()
	ln.Close()
	cfg := strings.Replace(opsConfig("http://"+upAddr, "rewrite", ""), `upstream: {url: "http://`+upAddr+`"}`,
		`upstream: {url: "http://`+upAddr+`", response_timeout: 400ms, upgrade_timeout: 400ms}`, 1)
	h := startHookRun(t, cfg, RunOptions{UpstreamReady: make(chan struct{})})
	start := time.Now()
	code := httpStatus(t, h.addr, opsJWT(t, "u1", time.Now().Add(time.Hour)))
	if el := time.Since(start); code != http.StatusBadGateway || el < 400*time.Millisecond || el > 3*time.Second {
		t.Errorf("got %d after %s, want 502 after about 400ms", code, el)
	}
}

// TestLoadedError: an error from Loaded ends Run before anything listens,
// returned as it is.
func TestLoadedError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "authgate.yaml")
	writeFile(t, path, opsConfig("http://127.0.0.1:1", "rewrite", ""))
	errChild := errors.New("child: not found")
	var listened atomic.Bool
	err := Run(context.Background(), RunOptions{
		ConfigPath: path, Logs: io.Discard,
		Loaded: func(*policy.Snapshot, zerolog.Logger) error { return errChild },
		Ready:  func(net.Addr, net.Addr) { listened.Store(true) },
	})
	if !errors.Is(err, errChild) || listened.Load() {
		t.Errorf("got %v (listened %v), want the hook's error before listening", err, listened.Load())
	}
}

// TestDrainedAfterShutdown: Drained runs after open WebSockets were closed
// with 1012 and before the stop event (same-service mode signals its
// child there: the backend must outlive authgate's own drain).
func TestDrainedAfterShutdown(t *testing.T) {
	be := opsBackend(t)
	var closeCode atomic.Int32
	var h *hookRun
	drained := make(chan struct{}, 1)
	h = startHookRun(t, opsConfig(be.URL, "rewrite", ""), RunOptions{Drained: func() {
		drained <- struct{}{}
		if closeCode.Load() != 1012 {
			t.Errorf("Drained ran before the client had its 1012 (got %d)", closeCode.Load())
		}
	}})
	c := opsDial(t, h.addr, opsJWT(t, "u1", time.Now().Add(time.Hour)))
	got := make(chan struct{})
	go func() {
		defer close(got)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					closeCode.Store(int32(ce.Code))
				}
				return
			}
		}
	}()
	h.cancel()
	// The client's reader records the code as soon as the frame arrives;
	// Shutdown waits for the relay to finish, which follows the frame.
	<-got
	select {
	case <-drained:
	case <-time.After(10 * time.Second):
		t.Fatal("Drained was not called")
	}
	if err := <-h.done; err != nil {
		t.Errorf("Run: %v", err)
	}
	h.done <- nil // for the cleanup
	if !strings.Contains(h.logs.String(), `"event":"stop"`) {
		t.Errorf("no stop event after Drained:\n%s", h.logs.String())
	}
	c.Close()
}
