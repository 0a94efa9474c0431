package relay

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
)

// The tests run real sockets on loopback: an independent WebSocket
// implementation (gorilla/websocket, or raw gobwas frames where a test must
// send what gorilla would not) on each side, and between them a minimal
// proxy that forwards the HTTP upgrade byte for byte and then hands both
// connections, with whatever the handshake readers had buffered, to New.

// checkLeaks fails the test if goroutines started during it are still
// running after it (and its cleanups) ended. Call it first.
func checkLeaks(t *testing.T) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

// harness is the proxy under test.
type harness struct {
	t        *testing.T
	ln       net.Listener
	upstream string // host:port
	opt      Options
	// deflate, when set, overrides Options.Deflate (which is otherwise
	// taken from the negotiated Sec-WebSocket-Extensions).
	deflate *bool

	conns   chan *Conn
	results chan Result
	wg      sync.WaitGroup
}

func startProxy(t *testing.T, upstream string, opt Options) *harness {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{
		t:        t,
		ln:       ln,
		upstream: upstream,
		opt:      opt,
		conns:    make(chan *Conn, 1000),
		results:  make(chan Result, 1000),
	}
	h.wg.Add(1)
	go h.serve()
	t.Cleanup(func() {
		ln.Close()
		h.wg.Wait()
	})
	return h
}

func (h *harness) addr() string { return h.ln.Addr().String() }
func (h *harness) url() string  { return "ws://" + h.addr() + "/ws" }

func (h *harness) serve() {
	defer h.wg.Done()
	for {
		c, err := h.ln.Accept()
		if err != nil {
			return
		}
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.handle(c)
		}()
	}
}

// handle forwards one upgrade and relays the connection.
func (h *harness) handle(c net.Conn) {
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		c.Close()
		return
	}
	up, err := net.Dial("tcp", h.upstream)
	if err != nil {
		c.Close()
		return
	}
	err = req.Write(up)
	if err != nil {
		c.Close()
		up.Close()
		return
	}
	ubr := bufio.NewReader(up)
	resp, err := http.ReadResponse(ubr, req)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		c.Close()
		up.Close()
		return
	}
	var b strings.Builder
	b.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	resp.Header.Write(&b)
	b.WriteString("\r\n")
	_, err = io.WriteString(c, b.String())
	if err != nil {
		c.Close()
		up.Close()
		return
	}
	opt := h.opt
	opt.Deflate = strings.Contains(resp.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate")
	if h.deflate != nil {
		opt.Deflate = *h.deflate
	}
	cb, _ := br.Peek(br.Buffered())
	ub, _ := ubr.Peek(ubr.Buffered())
	rc := New(c, cb, up, ub, opt)
	h.conns <- rc
	h.results <- rc.Run()
}

// conn returns the relay of the next connection.
func (h *harness) conn() *Conn {
	h.t.Helper()
	select {
	case c := <-h.conns:
		return c
	case <-time.After(5 * time.Second):
		h.t.Fatal("no relayed connection within 5s")
		return nil
	}
}

// result waits for the next relayed connection to end.
func (h *harness) result() Result {
	h.t.Helper()
	select {
	case r := <-h.results:
		return r
	case <-time.After(10 * time.Second):
		h.t.Fatal("relay did not end within 10s")
		return Result{}
	}
}

// gorillaServer runs fn for each WebSocket connection to an httptest
// server and returns the server's host:port.
func gorillaServer(t *testing.T, up websocket.Upgrader, fn func(*websocket.Conn)) string {
	t.Helper()
	// httptest.Server.Close does not wait for hijacked connections, so
	// the handlers are counted here. The Add happens under mu, before
	// cleanup marks the server closed, so that it happens before Wait
	// (an Add from zero racing with Wait is a WaitGroup misuse the race
	// detector reports).
	var (
		mu     sync.Mutex
		closed bool
		wg     sync.WaitGroup
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if closed {
			mu.Unlock()
			http.Error(w, "closing", http.StatusServiceUnavailable)
			return
		}
		wg.Add(1)
		mu.Unlock()
		defer wg.Done()
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		fn(c)
	}))
	t.Cleanup(func() {
		mu.Lock()
		closed = true
		mu.Unlock()
		srv.Close()
		wg.Wait()
	})
	return srv.Listener.Addr().String()
}

// echo is an upstream that sends every message back.
func echo(c *websocket.Conn) {
	for {
		typ, r, err := c.NextReader()
		if err != nil {
			return
		}
		w, err := c.NextWriter(typ)
		if err != nil {
			return
		}
		_, err = io.Copy(w, r)
		if err != nil {
			return
		}
		err = w.Close()
		if err != nil {
			return
		}
	}
}

// rawServer runs fn for each connection to a listener after a gobwas
// server handshake, for upstreams that send frames gorilla would not.
func rawServer(t *testing.T, fn func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_, err := ws.Upgrade(c)
				if err != nil {
					return
				}
				fn(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// rawDial opens a WebSocket with gobwas and returns the connection and the
// reader to read frames from (which holds bytes buffered by the handshake).
func rawDial(t *testing.T, url string) (net.Conn, io.Reader) {
	t.Helper()
	c, br, _, err := ws.Dial(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if br != nil {
		return c, io.MultiReader(br, c)
	}
	return c, c
}

// gorillaDial opens a WebSocket with gorilla.
func gorillaDial(t *testing.T, d websocket.Dialer, url string) *websocket.Conn {
	t.Helper()
	c, resp, err := d.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	t.Cleanup(func() { c.Close() })
	return c
}

// frame builds a frame; masked frames get a mask key and a masked payload.
func frame(op ws.OpCode, fin bool, payload []byte, masked bool) []byte {
	f := ws.NewFrame(op, fin, append([]byte(nil), payload...))
	if masked {
		f = ws.MaskFrameInPlace(f)
	}
	b, err := ws.CompileFrame(f)
	if err != nil {
		panic(err)
	}
	return b
}

// closePayload is a close frame payload.
func closePayload(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}

// readUntilClose reads frames from r until a close frame and returns its
// code (1005 for none) and reason, checking the masking of every frame.
func readUntilClose(r io.Reader, wantMasked bool) (uint16, string, error) {
	for {
		f, err := ws.ReadFrame(r)
		if err != nil {
			return 0, "", err
		}
		if f.Header.Masked != wantMasked {
			return 0, "", fmt.Errorf("frame masked: got %v, want %v", f.Header.Masked, wantMasked)
		}
		if f.Header.Masked {
			ws.Cipher(f.Payload, f.Header.Mask, 0)
		}
		if f.Header.OpCode != ws.OpClose {
			continue
		}
		if len(f.Payload) < 2 {
			return CodeNoStatus, "", nil
		}
		return binary.BigEndian.Uint16(f.Payload), string(f.Payload[2:]), nil
	}
}

// closeCode returns the code of a gorilla close error, or -1.
func closeCode(err error) int {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return -1
}

// readClose reads gorilla messages until an error and returns it.
func readClose(c *websocket.Conn) error {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := c.ReadMessage()
		if err != nil {
			return err
		}
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}
