package relay

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"
)

func TestEcho(t *testing.T) {
	tests := []struct {
		name     string
		bufSize  int  // gorilla write buffer: frames are at most this long
		compress bool // permessage-deflate on both ends
	}{
		{
			name:    "small frames",
			bufSize: 1024,
		},
		{
			name:    "whole-message frames",
			bufSize: 512 << 10,
		},
		{
			name:     "deflate",
			bufSize:  4096,
			compress: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			up := gorillaServer(t, websocket.Upgrader{
				WriteBufferSize:   tt.bufSize,
				EnableCompression: tt.compress,
			}, echo)
			h := startProxy(t, up, Options{})
			d := websocket.Dialer{WriteBufferSize: tt.bufSize, EnableCompression: tt.compress}
			c, resp, err := d.Dial(h.url(), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			negotiated := strings.Contains(resp.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate")
			if negotiated != tt.compress {
				t.Fatalf("permessage-deflate negotiated: got %v, want %v", negotiated, tt.compress)
			}

			rng := rand.New(rand.NewSource(1))
			const n = 200
			msgs := make([][]byte, n)
			for i := range msgs {
				size := rng.Intn(256 << 10)
				if i%4 == 0 {
					size = rng.Intn(200) // many small ones too
				}
				m := make([]byte, size)
				if tt.compress {
					// Compressible text, so RSV1 frames really carry deflate.
					for j := range m {
						m[j] = "abcdefgh "[rng.Intn(9)]
					}
				} else {
					rng.Read(m)
				}
				msgs[i] = m
			}
			errc := make(chan error, 1)
			go func() {
				for i, m := range msgs {
					typ := websocket.BinaryMessage
					if tt.compress || i%2 == 1 {
						typ = websocket.TextMessage
					}
					err := c.WriteMessage(typ, m)
					if err != nil {
						errc <- err
						return
					}
				}
				errc <- nil
			}()
			for i, want := range msgs {
				_, got, err := c.ReadMessage()
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("message %d: got %d bytes, want %d bytes (equal: false)", i, len(got), len(want))
				}
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			err = c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "done"))
			if err != nil {
				t.Fatal(err)
			}
			if code := closeCode(readClose(c)); code != 1000 {
				t.Errorf("client close echo: got %d, want 1000", code)
			}
			res := h.result()
			if res.ClosedBy != ByClient || res.CloseCode != 1000 || res.Reason != "done" || res.Err != nil {
				t.Errorf("result: got %+v, want closed by client with 1000 done", res)
			}
			var total int64
			for _, m := range msgs {
				total += int64(len(m))
			}
			if !tt.compress && (res.BytesIn < total || res.BytesOut < total) {
				t.Errorf("bytes in/out: got %d/%d, want at least %d each", res.BytesIn, res.BytesOut, total)
			}
		})
	}
}

// TestFragmentedWithPings sends fragmented messages with pings between the
// fragments (RFC 6455 §5.4); the upstream answers the pings and echoes the
// messages whole.
func TestFragmentedWithPings(t *testing.T) {
	checkLeaks(t)
	up := gorillaServer(t, websocket.Upgrader{WriteBufferSize: 1 << 20}, echo)
	h := startProxy(t, up, Options{})
	c, r := rawDial(t, h.url())

	rng := rand.New(rand.NewSource(2))
	for _, size := range []int{10, 3000, 100 << 10} {
		parts := [][]byte{make([]byte, size), make([]byte, size), make([]byte, size)}
		var want []byte
		for _, p := range parts {
			rng.Read(p)
			want = append(want, p...)
		}
		var out []byte
		out = append(out, frame(ws.OpBinary, false, parts[0], true)...)
		out = append(out, frame(ws.OpPing, true, []byte("p1"), true)...)
		out = append(out, frame(ws.OpContinuation, false, parts[1], true)...)
		out = append(out, frame(ws.OpPing, true, []byte("p2"), true)...)
		out = append(out, frame(ws.OpContinuation, true, parts[2], true)...)
		_, err := c.Write(out)
		if err != nil {
			t.Fatal(err)
		}
		var pongs []string
		var got []byte
		for got == nil {
			f, err := ws.ReadFrame(r)
			if err != nil {
				t.Fatalf("size %d: %v", size, err)
			}
			if f.Header.Masked {
				t.Fatalf("size %d: frame to the client is masked", size)
			}
			switch f.Header.OpCode {
			case ws.OpPong:
				pongs = append(pongs, string(f.Payload))
			case ws.OpBinary:
				if !f.Header.Fin {
					t.Fatalf("size %d: echo fragmented", size)
				}
				got = f.Payload
			default:
				t.Fatalf("size %d: unexpected opcode %v", size, f.Header.OpCode)
			}
		}
		if !bytes.Equal(got, want) {
			t.Errorf("size %d: echo differs (got %d bytes, want %d)", size, len(got), len(want))
		}
		if strings.Join(pongs, ",") != "p1,p2" {
			t.Errorf("size %d: pongs: got %q, want p1,p2", size, pongs)
		}
	}
	_, err := c.Write(frame(ws.OpClose, true, closePayload(1000, ""), true))
	if err != nil {
		t.Fatal(err)
	}
	code, _, err := readUntilClose(r, false)
	if err != nil || code != 1000 {
		t.Errorf("close: got %d (%v), want 1000", code, err)
	}
	h.result()
}

func TestCloseCodes(t *testing.T) {
	tests := []struct {
		name       string
		upstream   func(c *websocket.Conn, got chan<- error)
		client     func(c *websocket.Conn)
		wantClient int // close code the client reads
		wantUp     int // close code the upstream reads, -1: none expected
		want       Result
	}{
		{
			name: "upstream closes with 4321",
			upstream: func(c *websocket.Conn, got chan<- error) {
				c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4321, "bye from upstream"), time.Now().Add(time.Second))
				got <- readClose(c)
			},
			client:     func(c *websocket.Conn) {},
			wantClient: 4321,
			wantUp:     4321, // gorilla answers with the same code
			want:       Result{ClosedBy: ByUpstream, CloseCode: 4321, Reason: "bye from upstream"},
		},
		{
			name: "client closes with 4000",
			upstream: func(c *websocket.Conn, got chan<- error) {
				got <- readClose(c)
			},
			client: func(c *websocket.Conn) {
				c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4000, "bye from client"), time.Now().Add(time.Second))
			},
			wantClient: 4000,
			wantUp:     4000,
			want:       Result{ClosedBy: ByClient, CloseCode: 4000, Reason: "bye from client"},
		},
		{
			name: "client closes without a code",
			upstream: func(c *websocket.Conn, got chan<- error) {
				got <- readClose(c)
			},
			client: func(c *websocket.Conn) {
				c.WriteControl(websocket.CloseMessage, nil, time.Now().Add(time.Second))
			},
			wantClient: websocket.CloseNoStatusReceived,
			wantUp:     websocket.CloseNoStatusReceived,
			want:       Result{ClosedBy: ByClient, CloseCode: CodeNoStatus},
		},
		{
			name: "upstream closes with 1001",
			upstream: func(c *websocket.Conn, got chan<- error) {
				c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1001, "restart"), time.Now().Add(time.Second))
				got <- readClose(c)
			},
			client:     func(c *websocket.Conn) {},
			wantClient: 1001,
			wantUp:     1001,
			want:       Result{ClosedBy: ByUpstream, CloseCode: 1001, Reason: "restart"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			upGot := make(chan error, 1)
			up := gorillaServer(t, websocket.Upgrader{}, func(c *websocket.Conn) { tt.upstream(c, upGot) })
			h := startProxy(t, up, Options{})
			c := gorillaDial(t, websocket.Dialer{}, h.url())
			tt.client(c)
			if got := closeCode(readClose(c)); got != tt.wantClient {
				t.Errorf("client read close code: got %d, want %d", got, tt.wantClient)
			}
			select {
			case err := <-upGot:
				if got := closeCode(err); got != tt.wantUp {
					t.Errorf("upstream read close code: got %d (%v), want %d", got, err, tt.wantUp)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("upstream saw no close")
			}
			res := h.result()
			if res.ClosedBy != tt.want.ClosedBy || res.CloseCode != tt.want.CloseCode || res.Reason != tt.want.Reason || res.Err != nil {
				t.Errorf("result: got %+v, want %+v", res, tt.want)
			}
		})
	}
}

// TestDeflateNotNegotiated: a compressed frame (RSV1) when the relay was told
// no extension was negotiated is a protocol error.
func TestDeflateNotNegotiated(t *testing.T) {
	checkLeaks(t)
	upGot := make(chan error, 1)
	up := gorillaServer(t, websocket.Upgrader{EnableCompression: true}, func(c *websocket.Conn) { upGot <- readClose(c) })
	h := startProxy(t, up, Options{})
	no := false
	h.deflate = &no
	c := gorillaDial(t, websocket.Dialer{EnableCompression: true}, h.url())
	c.EnableWriteCompression(true)
	err := c.WriteMessage(websocket.TextMessage, []byte(strings.Repeat("compress me ", 100)))
	if err != nil {
		t.Fatal(err)
	}
	if got := closeCode(readClose(c)); got != 1002 {
		t.Errorf("client close code: got %d, want 1002", got)
	}
	if got := closeCode(<-upGot); got != 1002 {
		t.Errorf("upstream close code: got %d, want 1002", got)
	}
	res := h.result()
	var pe *ProtocolError
	if !errors.As(res.Err, &pe) || pe.Reason != "reserved bits set" {
		t.Errorf("result err: got %v, want protocol error reserved bits set", res.Err)
	}
}

func TestAuthgateClose(t *testing.T) {
	t.Run("idle", func(t *testing.T) {
		checkLeaks(t)
		upGot := make(chan error, 1)
		up := gorillaServer(t, websocket.Upgrader{}, func(c *websocket.Conn) { upGot <- readClose(c) })
		h := startProxy(t, up, Options{})
		c := gorillaDial(t, websocket.Dialer{}, h.url())
		rc := h.conn()
		start := time.Now()
		rc.Close(4002, "token expired", 4102, "authgate: client token expired")
		rc.Close(1012, "again", 1012, "again") // idempotent: no second frame
		err := readClose(c)
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != 4002 || ce.Text != "token expired" {
			t.Errorf("client: got %v, want close 4002 token expired", err)
		}
		err = <-upGot
		if !errors.As(err, &ce) || ce.Code != 4102 || ce.Text != "authgate: client token expired" {
			t.Errorf("upstream: got %v, want close 4102", err)
		}
		res := h.result()
		if res.ClosedBy != ByAuthgate || res.CloseCode != 4002 || res.Reason != "token expired" || res.Err != nil {
			t.Errorf("result: got %+v, want authgate 4002 token expired, no error", res)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("closing handshake took %v, want well under CloseWait", d)
		}
	})

	t.Run("mid-stream", func(t *testing.T) {
		checkLeaks(t)
		upGot := make(chan error, 1)
		up := gorillaServer(t, websocket.Upgrader{WriteBufferSize: 1024}, func(c *websocket.Conn) {
			done := make(chan error, 1)
			go func() { done <- readClose(c) }()
			for i := 0; ; i++ {
				msg := fmt.Sprintf("%08d%s", i, strings.Repeat("x", 3000)) // three frames each
				if c.WriteMessage(websocket.TextMessage, []byte(msg)) != nil {
					break
				}
			}
			upGot <- <-done
		})
		h := startProxy(t, up, Options{})
		c := gorillaDial(t, websocket.Dialer{}, h.url())
		rc := h.conn()
		for i := 0; ; i++ {
			if i == 100 {
				go rc.Close(4002, "token expired", 4002, "token expired")
			}
			_, m, err := c.ReadMessage()
			if err != nil {
				if got := closeCode(err); got != 4002 {
					t.Fatalf("client: got %v, want close 4002", err)
				}
				if i < 100 {
					t.Fatalf("closed after %d messages, want at least 100", i)
				}
				break
			}
			if want := fmt.Sprintf("%08d", i); string(m[:8]) != want || len(m) != 3008 {
				t.Fatalf("message %d: got %q... (%d bytes), want %s... (3008 bytes)", i, m[:8], len(m), want)
			}
		}
		if got := closeCode(<-upGot); got != 4002 {
			t.Errorf("upstream: got %d, want 4002", got)
		}
		res := h.result()
		if res.ClosedBy != ByAuthgate || res.CloseCode != 4002 {
			t.Errorf("result: got %+v, want authgate 4002", res)
		}
	})

	t.Run("large frame in flight", func(t *testing.T) {
		checkLeaks(t)
		const size = 2 << 20
		payload := make([]byte, size)
		rand.New(rand.NewSource(3)).Read(payload)
		started := make(chan struct{})
		upGot := make(chan string, 1)
		up := rawServer(t, func(c net.Conn) {
			err := ws.WriteHeader(c, ws.Header{Fin: true, OpCode: ws.OpBinary, Length: size})
			if err != nil {
				return
			}
			const chunk = size / 32
			for i := 0; i < size; i += chunk {
				if _, err := c.Write(payload[i : i+chunk]); err != nil {
					return
				}
				if i == 0 {
					close(started)
				}
				time.Sleep(5 * time.Millisecond)
			}
			code, reason, err := readUntilClose(c, true)
			upGot <- fmt.Sprintf("%d %s %v", code, reason, err)
			c.Write(frame(ws.OpClose, true, closePayload(code, ""), false))
		})
		// CloseWait bounds the frame in flight too; leave it room on a
		// loaded machine.
		h := startProxy(t, up, Options{CloseWait: 10 * time.Second})
		c := gorillaDial(t, websocket.Dialer{}, h.url())
		rc := h.conn()
		<-started
		// Close only once the client has the frame's header: the frame is
		// then in flight for certain (the upstream having written its
		// start does not mean the relay has read it yet; on a loaded
		// machine Close could otherwise find the relay at a boundary).
		_, r, err := c.NextReader()
		if err != nil {
			t.Fatalf("client: no frame: %v", err)
		}
		go rc.Close(4002, "token expired", 4003, "revoked")
		m, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(m, payload) {
			t.Fatalf("client: got %d bytes, %v; want the whole %d-byte message first", len(m), err, size)
		}
		if got := closeCode(readClose(c)); got != 4002 {
			t.Errorf("client: got close %d, want 4002", got)
		}
		if got := <-upGot; got != "4003 revoked <nil>" {
			t.Errorf("upstream: got %q, want %q", got, "4003 revoked <nil>")
		}
		res := h.result()
		if res.ClosedBy != ByAuthgate || res.CloseCode != 4002 || res.Err != nil {
			t.Errorf("result: got %+v, want authgate 4002, no error", res)
		}
	})

	t.Run("peer does not answer", func(t *testing.T) {
		checkLeaks(t)
		up := rawServer(t, func(c net.Conn) {
			io.Copy(io.Discard, c) // never answers the close frame
		})
		h := startProxy(t, up, Options{CloseWait: 200 * time.Millisecond})
		c := gorillaDial(t, websocket.Dialer{}, h.url())
		rc := h.conn()
		rc.Close(1012, "service restart", 1001, "going away")
		if got := closeCode(readClose(c)); got != 1012 {
			t.Errorf("client: got close %d, want 1012", got)
		}
		res := h.result()
		if res.ClosedBy != ByAuthgate || res.CloseCode != 1012 || !errors.Is(res.Err, ErrCloseTimeout) {
			t.Errorf("result: got %+v, want authgate 1012 with ErrCloseTimeout", res)
		}
	})
}

func TestClientProtocolErrors(t *testing.T) {
	masked := func(op ws.OpCode, fin bool, p []byte) []byte { return frame(op, fin, p, true) }
	withRsv := func(rsv byte) []byte {
		f := ws.MaskFrameInPlace(ws.NewFrame(ws.OpText, true, []byte("hi")))
		f.Header.Rsv = rsv
		b, _ := ws.CompileFrame(f)
		return b
	}
	closeWith := func(code uint16) []byte { return masked(ws.OpClose, true, closePayload(code, "")) }
	tests := []struct {
		name       string
		send       []byte
		wantCode   uint16
		wantReason string
	}{
		{
			name:       "unmasked frame",
			send:       frame(ws.OpText, true, []byte("hi"), false),
			wantCode:   1002,
			wantReason: "unmasked client frame",
		},
		{
			name:       "RSV1 without deflate",
			send:       withRsv(4),
			wantCode:   1002,
			wantReason: "reserved bits set",
		},
		{
			name:       "RSV3",
			send:       withRsv(1),
			wantCode:   1002,
			wantReason: "reserved bits set",
		},
		{
			name:       "ping with 126 bytes",
			send:       masked(ws.OpPing, true, make([]byte, 126)),
			wantCode:   1002,
			wantReason: "control frame too long",
		},
		{
			name:       "fragmented ping",
			send:       masked(ws.OpPing, false, []byte("x")),
			wantCode:   1002,
			wantReason: "fragmented control frame",
		},
		{
			name:       "64-bit length with the top bit set",
			send:       []byte{0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4},
			wantCode:   1002,
			wantReason: "invalid payload length",
		},
		{
			name:       "reserved data opcode",
			send:       masked(3, true, []byte("x")),
			wantCode:   1002,
			wantReason: "reserved opcode",
		},
		{
			name:       "reserved control opcode",
			send:       masked(0xB, true, []byte("x")),
			wantCode:   1002,
			wantReason: "reserved opcode",
		},
		{
			name:       "continuation without a message",
			send:       masked(ws.OpContinuation, true, []byte("x")),
			wantCode:   1002,
			wantReason: "unexpected continuation frame",
		},
		{
			name:       "new message inside a fragmented one",
			send:       append(masked(ws.OpText, false, []byte("a")), masked(ws.OpText, true, []byte("b"))...),
			wantCode:   1002,
			wantReason: "data frame inside a fragmented message",
		},
		{
			name:       "close with a 1-byte payload",
			send:       masked(ws.OpClose, true, []byte{3}),
			wantCode:   1002,
			wantReason: "close frame with a 1-byte payload",
		},
		{
			name:       "close code 999",
			send:       closeWith(999),
			wantCode:   1002,
			wantReason: "invalid close code",
		},
		{
			name:       "close code 1004",
			send:       closeWith(1004),
			wantCode:   1002,
			wantReason: "invalid close code",
		},
		{
			name:       "close code 1005",
			send:       closeWith(1005),
			wantCode:   1002,
			wantReason: "invalid close code",
		},
		{
			name:       "close code 1006",
			send:       closeWith(1006),
			wantCode:   1002,
			wantReason: "invalid close code",
		},
		{
			name:       "close code 1015",
			send:       closeWith(1015),
			wantCode:   1002,
			wantReason: "invalid close code",
		},
		{
			name:       "close code 1016",
			send:       closeWith(1016),
			wantCode:   1002,
			wantReason: "invalid close code",
		},
		{
			name:       "close code 2999",
			send:       closeWith(2999),
			wantCode:   1002,
			wantReason: "invalid close code",
		},
		{
			name:       "close code 5000",
			send:       closeWith(5000),
			wantCode:   1002,
			wantReason: "invalid close code",
		},
		{
			name:       "close reason not UTF-8",
			send:       masked(ws.OpClose, true, closePayload(1000, "\xff\xfe")),
			wantCode:   1007,
			wantReason: "close reason is not UTF-8",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			upGot := make(chan error, 1)
			up := gorillaServer(t, websocket.Upgrader{}, func(c *websocket.Conn) { upGot <- readClose(c) })
			h := startProxy(t, up, Options{})
			c, r := rawDial(t, h.url())
			// A good message first, so the violation comes mid-stream.
			_, err := c.Write(append(masked(ws.OpText, true, []byte("ok")), tt.send...))
			if err != nil {
				t.Fatal(err)
			}
			code, reason, err := readUntilClose(r, false)
			if err != nil || code != tt.wantCode || reason != tt.wantReason {
				t.Errorf("client: got %d %q (%v), want %d %q", code, reason, err, tt.wantCode, tt.wantReason)
			}
			c.Close()
			var ce *websocket.CloseError
			if err := <-upGot; !errors.As(err, &ce) || uint16(ce.Code) != tt.wantCode {
				t.Errorf("upstream: got %v, want close %d", err, tt.wantCode)
			}
			res := h.result()
			var pe *ProtocolError
			if !errors.As(res.Err, &pe) || pe.Side != ByClient || pe.Code != tt.wantCode {
				t.Errorf("result err: got %v, want client protocol error %d", res.Err, tt.wantCode)
			}
			if res.ClosedBy != ByAuthgate || res.CloseCode != tt.wantCode {
				t.Errorf("result: got %s %d, want authgate %d", res.ClosedBy, res.CloseCode, tt.wantCode)
			}
		})
	}
}

func TestUpstreamProtocolErrors(t *testing.T) {
	tests := []struct {
		name       string
		send       []byte
		wantReason string
	}{
		{
			name:       "masked frame",
			send:       frame(ws.OpText, true, []byte("hi"), true),
			wantReason: "masked server frame",
		},
		{
			name:       "continuation without a message",
			send:       frame(ws.OpContinuation, true, []byte("x"), false),
			wantReason: "unexpected continuation frame",
		},
		{
			name:       "close code 1006",
			send:       frame(ws.OpClose, true, closePayload(1006, ""), false),
			wantReason: "invalid close code",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			upGot := make(chan string, 1)
			up := rawServer(t, func(c net.Conn) {
				c.Write(append(frame(ws.OpText, true, []byte("ok"), false), tt.send...))
				code, reason, err := readUntilClose(c, true)
				upGot <- fmt.Sprintf("%d %s %v", code, reason, err)
			})
			h := startProxy(t, up, Options{})
			c := gorillaDial(t, websocket.Dialer{}, h.url())
			_, m, err := c.ReadMessage()
			if err != nil || string(m) != "ok" {
				t.Fatalf("first message: got %q, %v; want ok", m, err)
			}
			err = readClose(c)
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != 1002 || ce.Text != tt.wantReason {
				t.Errorf("client: got %v, want close 1002 %s", err, tt.wantReason)
			}
			if got, want := <-upGot, "1002 "+tt.wantReason+" <nil>"; got != want {
				t.Errorf("upstream: got %q, want %q", got, want)
			}
			res := h.result()
			var pe *ProtocolError
			if !errors.As(res.Err, &pe) || pe.Side != ByUpstream {
				t.Errorf("result err: got %v, want upstream protocol error", res.Err)
			}
		})
	}
}

func TestUpstreamGone(t *testing.T) {
	t.Run("between frames", func(t *testing.T) {
		checkLeaks(t)
		up := gorillaServer(t, websocket.Upgrader{}, func(c *websocket.Conn) {
			c.ReadMessage()
			c.NetConn().Close() // crash: no close frame
		})
		h := startProxy(t, up, Options{})
		// A raw client: gorilla refuses to read 1014 ("bad close code"),
		// although it is registered with IANA and browsers accept it.
		c, r := rawDial(t, h.url())
		c.Write(frame(ws.OpText, true, []byte("hello"), true))
		code, reason, err := readUntilClose(r, false)
		if err != nil || code != 1014 || reason != "bad gateway" {
			t.Errorf("client: got %d %q (%v), want close 1014 bad gateway", code, reason, err)
		}
		c.Write(frame(ws.OpClose, true, closePayload(1014, ""), true))
		res := h.result()
		if res.ClosedBy != ByUpstream || res.CloseCode != CodeAbnormal || !errors.Is(res.Err, ErrUpstreamGone) {
			t.Errorf("result: got %+v, want upstream 1006 ErrUpstreamGone", res)
		}
	})
	t.Run("mid-frame", func(t *testing.T) {
		checkLeaks(t)
		up := rawServer(t, func(c net.Conn) {
			ws.WriteHeader(c, ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 1 << 20})
			c.Write(make([]byte, 100<<10))
			time.Sleep(50 * time.Millisecond)
			c.(*net.TCPConn).SetLinger(0) // reset
		})
		h := startProxy(t, up, Options{})
		c := gorillaDial(t, websocket.Dialer{}, h.url())
		err := readClose(c)
		if err == nil || closeCode(err) > 0 && closeCode(err) != websocket.CloseAbnormalClosure {
			t.Errorf("client: got %v, want an abnormal end", err)
		}
		res := h.result()
		if res.ClosedBy != ByUpstream || !errors.Is(res.Err, ErrUpstreamGone) {
			t.Errorf("result: got %+v, want upstream ErrUpstreamGone", res)
		}
	})
}

func TestClientGone(t *testing.T) {
	checkLeaks(t)
	upGot := make(chan error, 1)
	up := gorillaServer(t, websocket.Upgrader{}, func(c *websocket.Conn) { upGot <- readClose(c) })
	h := startProxy(t, up, Options{})
	c := gorillaDial(t, websocket.Dialer{}, h.url())
	c.WriteMessage(websocket.TextMessage, []byte("hello"))
	c.NetConn().Close()
	err := <-upGot
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 1001 {
		t.Errorf("upstream: got %v, want close 1001", err)
	}
	res := h.result()
	if res.ClosedBy != ByClient || res.CloseCode != CodeAbnormal || !errors.Is(res.Err, ErrClientGone) {
		t.Errorf("result: got %+v, want client 1006 ErrClientGone", res)
	}
}

// TestSlowClient: a client that stops reading while the upstream floods is
// dropped after WriteTimeout, and the relay buffers nothing meanwhile.
func TestSlowClient(t *testing.T) {
	checkLeaks(t)
	upGot := make(chan error, 1)
	up := gorillaServer(t, websocket.Upgrader{WriteBufferSize: 64 << 10}, func(c *websocket.Conn) {
		done := make(chan error, 1)
		go func() { done <- readClose(c) }()
		msg := make([]byte, 64<<10)
		for c.WriteMessage(websocket.BinaryMessage, msg) == nil {
		}
		upGot <- <-done
	})
	h := startProxy(t, up, Options{WriteTimeout: 300 * time.Millisecond, CloseWait: 300 * time.Millisecond})
	c, _ := rawDial(t, h.url()) // never reads

	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
	}()
	res := h.result()
	close(stop)
	wg.Wait()
	if res.ClosedBy != ByAuthgate || res.CloseCode != CodeAbnormal || !errors.Is(res.Err, ErrWriteTimeout) {
		t.Errorf("result: got %+v, want authgate 1006 ErrWriteTimeout", res)
	}
	if grew := int64(peak) - int64(base); grew > 8<<20 {
		t.Errorf("heap grew by %d bytes during the flood, want under 8 MiB", grew)
	}
	if got := closeCode(<-upGot); got != 1001 {
		t.Errorf("upstream: got close %d, want 1001", got)
	}
	c.Close()
}

// TestNoLeaks runs many connections to every kind of end and checks that no
// goroutine and no file descriptor is left.
func TestNoLeaks(t *testing.T) {
	checkLeaks(t)
	up := gorillaServer(t, websocket.Upgrader{}, echo)
	h := startProxy(t, up, Options{CloseWait: 300 * time.Millisecond})
	before := openFDs(t)
	const cycles = 150
	for i := 0; i < cycles; i++ {
		c, resp, err := (&websocket.Dialer{}).Dial(h.url(), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		c.WriteMessage(websocket.BinaryMessage, make([]byte, i*997%70000))
		c.ReadMessage()
		switch i % 3 {
		case 0: // clean close
			c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
			readClose(c)
		case 1: // vanish
		case 2: // authgate close
			h.conn().Close(4003, "revoked", 4003, "revoked")
			readClose(c)
		}
		c.Close()
		if i%3 != 2 {
			<-h.conns
		}
		h.result()
	}
	deadline := time.Now().Add(5 * time.Second)
	for openFDs(t) > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if after := openFDs(t); after > before {
		t.Errorf("open descriptors after %d connections: got %d, want at most %d", cycles, after, before)
	}
}

// TestBufferedBytes: frames that arrived with the handshake, already read
// by the handshake readers, are relayed first, on both sides.
func TestBufferedBytes(t *testing.T) {
	checkLeaks(t)
	up := rawServer(t, func(c net.Conn) {
		// ws.Upgrade has answered; this goes out at once, so the proxy's
		// response reader will likely buffer it.
		c.Write(frame(ws.OpText, true, []byte("early from upstream"), false))
		code, _, _ := readUntilClose(c, true)
		c.Write(frame(ws.OpClose, true, closePayload(code, ""), false))
	})
	h := startProxy(t, up, Options{})
	// Handshake and a first frame in one write: the proxy's request
	// reader buffers the frame.
	c, err := net.Dial("tcp", h.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	big := bytes.Repeat([]byte("B"), 40<<10) // larger than a pooled buffer's small path
	_, err = c.Write(append(append([]byte(req), frame(ws.OpText, true, []byte("early"), true)...), frame(ws.OpBinary, true, big, true)...))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Write(frame(ws.OpClose, true, closePayload(1000, ""), true))
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("handshake: got %v, %v; want 101", resp, err)
	}
	f, err := ws.ReadFrame(br)
	if err != nil || string(f.Payload) != "early from upstream" {
		t.Fatalf("first frame: got %q, %v; want early from upstream", f.Payload, err)
	}
	code, _, err := readUntilClose(br, false)
	if err != nil || code != 1000 {
		t.Errorf("close: got %d, %v; want 1000", code, err)
	}
	res := h.result()
	// text "early", binary big (16-bit length), close 1000, all masked
	if want := int64(2+4+5) + int64(2+2+4+len(big)) + (2 + 4 + 2); res.BytesIn != want {
		t.Errorf("bytes to upstream: got %d, want %d", res.BytesIn, want)
	}
}

func TestCheckHeader(t *testing.T) {
	tests := []struct {
		name       string
		h          ws.Header
		fromClient bool
		deflate    bool
		fragmented bool
		want       string
	}{
		{
			name:       "masked client text",
			h:          ws.Header{Fin: true, OpCode: ws.OpText, Masked: true},
			fromClient: true,
		},
		{
			name:    "server text with RSV1 under deflate",
			h:       ws.Header{Fin: true, OpCode: ws.OpText, Rsv: 4},
			deflate: true,
		},
		{
			name:    "server text with RSV2 under deflate",
			h:       ws.Header{Fin: true, OpCode: ws.OpText, Rsv: 2},
			deflate: true,
			want:    "reserved bits set",
		},
		{
			name:       "continuation with RSV1 under deflate",
			h:          ws.Header{Fin: true, OpCode: ws.OpContinuation, Rsv: 4},
			deflate:    true,
			fragmented: true,
			want:       "reserved bits set",
		},
		{
			name:    "ping with RSV1 under deflate",
			h:       ws.Header{Fin: true, OpCode: ws.OpPing, Rsv: 4},
			deflate: true,
			want:    "reserved bits set",
		},
		{
			name:       "ping between fragments",
			h:          ws.Header{Fin: true, OpCode: ws.OpPing, Length: 125},
			fragmented: true,
		},
		{
			name: "close with 125 bytes",
			h:    ws.Header{Fin: true, OpCode: ws.OpClose, Length: 125},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frag := tt.fragmented
			_, got := checkHeader(tt.h, tt.fromClient, tt.deflate, &frag)
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestWriteClose(t *testing.T) {
	tests := []struct {
		name       string
		code       uint16
		reason     string
		masked     bool
		wantErr    bool
		wantLen    int
		wantReason string
	}{
		{
			name:       "client-bound",
			code:       4001,
			reason:     "invalid token",
			wantLen:    15,
			wantReason: "invalid token",
		},
		{
			name:       "server-bound is masked",
			code:       1000,
			masked:     true,
			wantLen:    2,
			wantReason: "",
		},
		{
			name:    "no code",
			wantLen: 0,
		},
		{
			name:       "long reason is cut at a rune boundary",
			code:       4003,
			reason:     strings.Repeat("é", 100),
			wantLen:    2 + 122,
			wantReason: strings.Repeat("é", 61),
		},
		{
			name:    "1006 is refused",
			code:    1006,
			wantErr: true,
		},
		{
			name:    "1015 is refused",
			code:    1015,
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			err := WriteClose(&b, tt.code, tt.reason, tt.masked)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error: got %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				if b.Len() != 0 {
					t.Errorf("written: got %d bytes, want 0", b.Len())
				}
				return
			}
			f, err := ws.ReadFrame(&b)
			if err != nil {
				t.Fatal(err)
			}
			if f.Header.OpCode != ws.OpClose || !f.Header.Fin || f.Header.Masked != tt.masked {
				t.Fatalf("header: got %+v, want a final close frame masked=%v", f.Header, tt.masked)
			}
			if f.Header.Masked {
				ws.Cipher(f.Payload, f.Header.Mask, 0)
			}
			if len(f.Payload) != tt.wantLen {
				t.Fatalf("payload length: got %d, want %d", len(f.Payload), tt.wantLen)
			}
			if tt.wantLen >= 2 {
				code, reason := ws.ParseCloseFrameData(f.Payload)
				if uint16(code) != tt.code || reason != tt.wantReason {
					t.Errorf("got %d %q, want %d %q", code, reason, tt.code, tt.wantReason)
				}
			}
		})
	}
}

// TestRestAndResume: directions that idle past restAfter move to fresh
// goroutines, or are parked (park.go), and go on relaying, closing and
// being closed as before.
func TestRestAndResume(t *testing.T) {
	t.Run("fresh goroutines", func(t *testing.T) { testRestAndResume(t) })
	t.Run("parked", func(t *testing.T) {
		parkAlways(t)
		testRestAndResume(t)
	})
}

func testRestAndResume(t *testing.T) {
	checkLeaks(t)
	upGot := make(chan error, 1)
	up := gorillaServer(t, websocket.Upgrader{}, func(c *websocket.Conn) {
		for {
			typ, m, err := c.ReadMessage()
			if err != nil {
				upGot <- err
				return
			}
			c.WriteMessage(typ, m)
		}
	})
	h := startProxy(t, up, Options{restAfter: 20 * time.Millisecond})
	c := gorillaDial(t, websocket.Dialer{}, h.url())
	rc := h.conn()
	for i := 0; i < 5; i++ {
		want := strings.Repeat("r", i*20000)
		err := c.WriteMessage(websocket.TextMessage, []byte(want))
		if err != nil {
			t.Fatal(err)
		}
		_, got, err := c.ReadMessage()
		if err != nil || string(got) != want {
			t.Fatalf("round %d: got %d bytes, %v; want %d bytes", i, len(got), err, len(want))
		}
		time.Sleep(70 * time.Millisecond) // several rests
	}
	rc.Close(4003, "revoked", 4003, "revoked")
	if got := closeCode(readClose(c)); got != 4003 {
		t.Errorf("client: got close %d, want 4003", got)
	}
	if got := closeCode(<-upGot); got != 4003 {
		t.Errorf("upstream: got close %d, want 4003", got)
	}
	res := h.result()
	if res.ClosedBy != ByAuthgate || res.CloseCode != 4003 || res.Err != nil {
		t.Errorf("result: got %+v, want authgate 4003, no error", res)
	}
}
