package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"authgate/proxy"
)

// TestOpenWebSocketsCount: OpenWebSockets counts relayed connections and
// returns to 0 however they end; rejected upgrades are never counted.
func TestOpenWebSocketsCount(t *testing.T) {
	be := newBackend(t)
	h := startProxy(t, testConfig{Upstream: be.url})
	jwtTok := validJWT(t, "u1")
	var conns []*websocket.Conn
	for i := 0; i < 5; i++ {
		c, _ := h.mustDial(t, "/api/v1/pam/ws?token="+jwtTok, nil, nil)
		echoOnce(t, c, "hi")
		conns = append(conns, c)
	}
	rej, _ := h.mustDial(t, "/ws/strict", nil, nil)
	if got := h.srv.OpenWebSockets(); got != 5 {
		t.Errorf("OpenWebSockets with 5 relayed and 1 rejected: got %d, want 5", got)
	}
	readClose(t, rej)
	// End them every way: clean close, client vanishing.
	for i, c := range conns {
		if i%2 == 0 {
			closeClient(t, c, websocket.CloseNormalClosure, "")
		} else {
			c.NetConn().Close()
		}
	}
	if !waitFor(5*time.Second, func() bool { return h.srv.OpenWebSockets() == 0 }) {
		t.Errorf("OpenWebSockets after every client left: got %d, want 0", h.srv.OpenWebSockets())
	}
}

// TestShutdownClosesWebSockets: Shutdown closes every open WebSocket with
// 1012 to the client and 1001 to the upstream and returns how many it
// closed.
func TestShutdownClosesWebSockets(t *testing.T) {
	const n = 3
	backendCodes := make(chan int, n)
	be := newBackend(t)
	be.onWS = func(c *websocket.Conn, r *http.Request) {
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					backendCodes <- ce.Code
				} else {
					backendCodes <- -1
				}
				return
			}
			c.WriteMessage(mt, p)
		}
	}
	h := startProxy(t, testConfig{Upstream: be.url})
	clientCloses := make(chan *websocket.CloseError, n)
	for i := 0; i < n; i++ {
		c, _ := h.mustDial(t, "/api/v1/pam/ws?token="+validJWT(t, "u1"), nil, nil)
		echoOnce(t, c, "hi")
		// Keep reading, as a browser does, so the closing handshake
		// completes at once.
		go func() {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					var ce *websocket.CloseError
					errors.As(err, &ce)
					clientCloses <- ce
					return
				}
			}
		}()
	}
	if got := h.srv.OpenWebSockets(); got != n {
		t.Fatalf("OpenWebSockets before Shutdown: got %d, want %d", got, n)
	}
	start := time.Now()
	closed, err := h.shutdown(t)
	if err != nil {
		t.Errorf("Shutdown: got error %v, want nil", err)
	}
	if closed != n {
		t.Errorf("Shutdown: got %d closed, want %d", closed, n)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown took %v, want well under the relay's close wait", d)
	}
	for i := 0; i < n; i++ {
		ce := <-clientCloses
		if ce == nil || ce.Code != 1012 || ce.Text != "service restart" {
			t.Errorf("client %d: got %v, want close 1012 \"service restart\"", i, ce)
		}
		select {
		case code := <-backendCodes:
			if code != 1001 {
				t.Errorf("backend %d: got close %d, want 1001", i, code)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("backend %d saw no close within 5s", i)
		}
	}
	if got := h.srv.OpenWebSockets(); got != 0 {
		t.Errorf("OpenWebSockets after Shutdown: got %d, want 0", got)
	}
	for _, ev := range h.logs.events(t, "ws_close") {
		if code, _ := ev.num("close_code"); code != 1012 || ev.str("closed_by") != "authgate" {
			t.Errorf("ws_close: got close_code %v closed_by %q, want 1012 authgate", ev.fields["close_code"], ev.str("closed_by"))
		}
	}
}

// TestShutdownDuringUpgrade pins a race: an upgrade that is waiting for
// the upstream's 101 when Shutdown begins is registered after Shutdown
// closed the open connections, so it escaped the 1012 and stayed open
// after Shutdown returned. It must end with 1012 (or be refused) before
// Shutdown returns.
func TestShutdownDuringUpgrade(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	be := newBackend(t)
	be.onRequest = func(w http.ResponseWriter, r *http.Request) bool {
		close(entered)
		<-release
		return false // go on with the upgrade and echo
	}
	h := startProxy(t, testConfig{Upstream: be.url})
	type dialed struct {
		c    *websocket.Conn
		resp *http.Response
		err  error
	}
	dialDone := make(chan dialed, 1)
	go func() {
		d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
		c, resp, err := d.Dial(h.wsBase+"/api/v1/pam/ws?token="+validJWT(t, "u1"), nil)
		dialDone <- dialed{c, resp, err}
	}()
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("backend never saw the upgrade")
	}
	type shut struct {
		n   int
		err error
	}
	shutDone := make(chan shut, 1)
	go func() {
		n, err := h.shutdown(t)
		shutDone <- shut{n, err}
	}()
	time.Sleep(100 * time.Millisecond) // Shutdown is now waiting for the request in flight
	close(release)

	dr := <-dialDone
	closed := make(chan error, 1)
	if dr.c != nil {
		defer dr.c.Close()
		// Read at once, as a browser does, so a closing handshake can
		// complete while Shutdown waits for it.
		go func() {
			dr.c.SetReadDeadline(time.Now().Add(3 * time.Second))
			_, _, err := dr.c.ReadMessage()
			closed <- err
		}()
	}
	var sr shut
	select {
	case sr = <-shutDone:
	case <-time.After(8 * time.Second):
		t.Fatal("Shutdown did not return within 8s")
	}
	if sr.err != nil {
		t.Errorf("Shutdown: got %v, want nil", sr.err)
	}
	if got := h.srv.OpenWebSockets(); got != 0 {
		t.Errorf("OpenWebSockets after Shutdown returned: got %d, want 0", got)
	}
	switch {
	case dr.err != nil:
		if dr.resp == nil || dr.resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("dial during shutdown: got %v, want a handshake closed with 1012 or a 503", dr.err)
		}
	default:
		err := <-closed
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != 1012 {
			t.Errorf("connection upgraded during shutdown: got %v, want close 1012", err)
		}
	}
}

// TestServeAfterShutdown pins a race between Serve and Shutdown (Run
// starts Serve on a goroutine and may be cancelled at once): Serve
// registered its http.Server only when it ran, so a Shutdown that came
// first did not stop it and it served on. Like http.Server, Serve after
// Shutdown must return at once.
func TestServeAfterShutdown(t *testing.T) {
	be := newBackend(t)
	srv := proxy.New(parseConfig(t, testConfig{Upstream: be.url}), proxy.Options{Logger: zerolog.Nop()})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Errorf("Serve after Shutdown: still serving after 2s, want it to return at once")
		ln.Close()
		<-done
	}
	ln.Close()
}

// TestNoLeaks: 200 WebSocket connects and disconnects of every kind
// (relayed and closed cleanly, relayed and dropped by the client,
// rejected with a close frame, rejected with HTTP) leave no goroutine and
// no descriptor behind.
func TestNoLeaks(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	// Registered first, so it runs after the proxy and backend are shut
	// down by their own cleanups.
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })

	be := newBackend(t)
	h := startProxy(t, testConfig{Upstream: be.url})
	jwtTok := validJWT(t, "u1")
	d := &websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	cycle := func(i int) {
		switch i % 5 {
		case 0: // relayed, clean close
			c, _, err := d.Dial(h.wsBase+"/api/v1/pam/ws?token="+jwtTok, nil)
			if err != nil {
				t.Fatalf("cycle %d: %v", i, err)
			}
			echoOnce(t, c, "x")
			closeClient(t, c, websocket.CloseNormalClosure, "")
		case 1: // relayed, client vanishes
			c, _, err := d.Dial(h.wsBase+"/api/v1/pam/ws?token="+jwtTok, nil)
			if err != nil {
				t.Fatalf("cycle %d: %v", i, err)
			}
			echoOnce(t, c, "x")
			c.Close()
		case 2: // rejected with a close frame (a user of its own each
			// time: a user's repeats past three a minute get a 403)
			c, _, err := d.Dial(h.wsBase+fmt.Sprintf("/ws/strict?token=%08x-cd37-41d5-a1c7-124bb05e7a6a", i), nil)
			if err != nil {
				t.Fatalf("cycle %d: %v", i, err)
			}
			readClose(t, c)
			c.Close()
		case 3: // rejected with HTTP
			c, resp, err := d.Dial(h.wsBase+"/ws/http", nil)
			if err == nil {
				c.Close()
				t.Fatalf("cycle %d: handshake completed, want 401", i)
			}
			if resp != nil {
				readAll(resp)
			}
		case 4: // relayed, client goes away without reading the close
			c, _, err := d.Dial(h.wsBase+"/api/v1/pam/ws?token="+jwtTok, nil)
			if err != nil {
				t.Fatalf("cycle %d: %v", i, err)
			}
			c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4000, "gone"), time.Now().Add(time.Second))
			c.Close()
		}
	}
	// Warm up (lazily created pools, timers), then take the baseline.
	for i := 0; i < 5; i++ {
		cycle(i)
	}
	waitFor(5*time.Second, func() bool { return h.srv.OpenWebSockets() == 0 })
	base := fdCount(t)
	for i := 0; i < 200; i++ {
		cycle(i)
	}
	if !waitFor(10*time.Second, func() bool { return h.srv.OpenWebSockets() == 0 }) {
		t.Errorf("OpenWebSockets after 200 cycles: got %d, want 0", h.srv.OpenWebSockets())
	}
	const tolerance = 4
	var got int
	if !waitFor(10*time.Second, func() bool { got = fdCount(t); return got <= base+tolerance }) {
		t.Errorf("descriptors after 200 cycles: got %d, want at most %d (baseline %d + %d)", got, base+tolerance, base, tolerance)
	}
}

// slowCloseLog delays every ws_close line, as a slow log sink would.
type slowCloseLog struct{ buf *syncBuffer }

func (w slowCloseLog) Write(p []byte) (int, error) {
	if strings.Contains(string(p), `"event":"ws_close"`) {
		time.Sleep(50 * time.Millisecond)
	}
	return w.buf.Write(p)
}

// TestShutdownWaitsForCloseEvents pins an ordering bug: a relayed
// connection left the registry before its ws_close event was written, so
// Shutdown could return (and Run log "stop" and exit) with ws_close lines
// still unwritten, and the report would miss those connections. Every
// ws_close must be written when Shutdown returns.
func TestShutdownWaitsForCloseEvents(t *testing.T) {
	const n = 3
	be := newBackend(t)
	logs := &syncBuffer{}
	h := startProxyWith(t, testConfig{Upstream: be.url}, slowCloseLog{logs})
	for i := 0; i < n; i++ {
		c, _ := h.mustDial(t, "/api/v1/pam/ws?token="+validJWT(t, "u1"), nil, nil)
		echoOnce(t, c, "hi")
		go func() {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
		}()
	}
	if _, err := h.shutdown(t); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if got := len(logs.events(t, "ws_close")); got != n {
		t.Errorf("ws_close events when Shutdown returned: got %d, want %d", got, n)
	}
}
