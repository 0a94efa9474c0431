package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"
)

// TestCloseCodesPassThrough: close frames cross the relay with their codes
// and reasons in both directions, and ws_close says who closed.
func TestCloseCodesPassThrough(t *testing.T) {
	t.Run("upstream closes", func(t *testing.T) {
		be := newBackend(t)
		be.onWS = func(c *websocket.Conn, r *http.Request) {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
			c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4321, "bye"), time.Now().Add(5*time.Second))
			c.ReadMessage() // the client's answering close frame
		}
		h := startProxy(t, testConfig{Upstream: be.url})
		c, _ := h.mustDial(t, "/api/v1/pam/ws?token="+validJWT(t, "u1"), http.Header{"X-Request-Id": {"close-upstream"}}, nil)
		if err := c.WriteMessage(websocket.TextMessage, []byte("close me")); err != nil {
			t.Fatal(err)
		}
		ce := readClose(t, c)
		if ce.Code != 4321 || ce.Text != "bye" {
			t.Errorf("client saw close %d %q, want 4321 \"bye\"", ce.Code, ce.Text)
		}
		c.Close()
		ev := h.logs.waitEvent(t, "ws_close", func(l logLine) bool { return l.str("request_id") == "close-upstream" })
		if code, _ := ev.num("close_code"); code != 4321 || ev.str("closed_by") != "upstream" || ev.str("reason") != "bye" {
			t.Errorf("ws_close: got close_code %v closed_by %q reason %q, want 4321 upstream \"bye\"", ev.fields["close_code"], ev.str("closed_by"), ev.str("reason"))
		}
	})
	t.Run("client closes", func(t *testing.T) {
		got := make(chan *websocket.CloseError, 1)
		be := newBackend(t)
		be.onWS = func(c *websocket.Conn, r *http.Request) {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				_, _, err := c.ReadMessage()
				if err != nil {
					var ce *websocket.CloseError
					errors.As(err, &ce)
					got <- ce
					return
				}
			}
		}
		h := startProxy(t, testConfig{Upstream: be.url})
		c, _ := h.mustDial(t, "/api/v1/pam/ws?token="+validJWT(t, "u1"), http.Header{"X-Request-Id": {"close-client"}}, nil)
		echo := closeClient(t, c, 4000, "see ya")
		if echo.Code != 4000 {
			t.Errorf("client's close answered with %d, want 4000 echoed", echo.Code)
		}
		select {
		case ce := <-got:
			if ce == nil || ce.Code != 4000 || ce.Text != "see ya" {
				t.Errorf("backend saw close %v, want 4000 \"see ya\"", ce)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("backend saw no close frame within 5s")
		}
		ev := h.logs.waitEvent(t, "ws_close", func(l logLine) bool { return l.str("request_id") == "close-client" })
		if code, _ := ev.num("close_code"); code != 4000 || ev.str("closed_by") != "client" {
			t.Errorf("ws_close: got close_code %v closed_by %q, want 4000 client", ev.fields["close_code"], ev.str("closed_by"))
		}
	})
}

// randomSizes returns n message sizes up to 256 KiB, the frame length
// boundaries (125/126, 65535/65536) included.
func randomSizes(rng *rand.Rand, n int) []int {
	sizes := []int{0, 1, 125, 126, 127, 65535, 65536, 256 << 10}
	for len(sizes) < n {
		switch rng.IntN(3) {
		case 0:
			sizes = append(sizes, rng.IntN(256))
		case 1:
			sizes = append(sizes, rng.IntN(8<<10))
		default:
			sizes = append(sizes, rng.IntN(256<<10+1))
		}
	}
	rng.Shuffle(len(sizes), func(i, j int) { sizes[i], sizes[j] = sizes[j], sizes[i] })
	return sizes
}

func randomPayload(rng *rand.Rand, n int, text bool) []byte {
	p := make([]byte, n)
	if text {
		for i := range p {
			p[i] = byte('a' + rng.IntN(26))
		}
		return p
	}
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], rng.Uint64())
	rand.NewChaCha8(seed).Read(p)
	return p
}

// TestRelayManyMessages: 200 messages of random sizes up to 256 KiB go
// each way through the relay and come back intact and in order, with a
// gorilla client (whole messages) and with a raw client that fragments
// them and puts pings between the fragments while the backend puts pings
// between its own fragments.
func TestRelayManyMessages(t *testing.T) {
	const n = 200
	t.Run("whole messages", func(t *testing.T) {
		be := newBackend(t)
		h := startProxy(t, testConfig{Upstream: be.url})
		c, _ := h.mustDial(t, "/api/v1/pam/ws?token="+validJWT(t, "u1"), nil, nil)
		rng := rand.New(rand.NewPCG(1, 2))
		sizes := randomSizes(rng, n)
		msgs := make([][]byte, n)
		for i, sz := range sizes {
			msgs[i] = randomPayload(rng, sz, i%5 == 0)
		}
		werr := make(chan error, 1)
		go func() {
			for i, m := range msgs {
				mt := websocket.BinaryMessage
				if i%5 == 0 {
					mt = websocket.TextMessage
				}
				c.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if err := c.WriteMessage(mt, m); err != nil {
					werr <- fmt.Errorf("write %d: %w", i, err)
					return
				}
			}
			werr <- nil
		}()
		for i, want := range msgs {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			mt, got, err := c.ReadMessage()
			if err != nil {
				t.Fatalf("message %d: got %v, want %d bytes", i, err, len(want))
			}
			wantType := websocket.BinaryMessage
			if i%5 == 0 {
				wantType = websocket.TextMessage
			}
			if mt != wantType || !bytes.Equal(got, want) {
				t.Fatalf("message %d: got type %d, %d bytes, want type %d, %d bytes (equal %v)", i, mt, len(got), wantType, len(want), bytes.Equal(got, want))
			}
		}
		if err := <-werr; err != nil {
			t.Fatal(err)
		}
		closeClient(t, c, websocket.CloseNormalClosure, "")
	})
	t.Run("fragmented with pings", func(t *testing.T) {
		// The backend echoes each message in up to four parts, each part
		// flushed as its own frame (gorilla sends writes over twice its
		// 4 KiB buffer unbuffered), and pings the client between parts.
		be := newBackend(t)
		be.upgrader.WriteBufferSize = 4096
		be.onWS = func(c *websocket.Conn, r *http.Request) {
			brng := rand.New(rand.NewPCG(9, 10))
			for i := 0; ; i++ {
				mt, p, err := c.ReadMessage()
				if err != nil {
					return
				}
				w, err := c.NextWriter(mt)
				if err != nil {
					return
				}
				parts := 1
				if len(p) > 3*8192 {
					parts = 1 + brng.IntN(4)
				}
				for k := 0; k < parts; k++ {
					lo, hi := len(p)*k/parts, len(p)*(k+1)/parts
					if _, err := w.Write(p[lo:hi]); err != nil {
						return
					}
					if k < parts-1 {
						if c.WriteControl(websocket.PingMessage, []byte(fmt.Sprintf("up-%d-%d", i, k)), time.Now().Add(5*time.Second)) != nil {
							return
						}
					}
				}
				if w.Close() != nil {
					return
				}
			}
		}
		h := startProxy(t, testConfig{Upstream: be.url})
		// gorilla's default ping handler makes the backend answer the
		// client's pings; the pongs are counted below.

		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		conn, br, _, err := ws.Dialer{}.Dial(ctx, h.wsBase+"/api/v1/pam/ws?token="+validJWT(t, "u1"))
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer conn.Close()
		var rd io.Reader = conn
		if br != nil {
			rd = io.MultiReader(br, conn)
		}
		rng := rand.New(rand.NewPCG(3, 4))
		sizes := randomSizes(rng, n)
		msgs := make([][]byte, n)
		for i, sz := range sizes {
			msgs[i] = randomPayload(rng, sz, false)
		}
		var wmu sync.Mutex // the reader answers pings with pongs
		writeFrame := func(op ws.OpCode, fin bool, p []byte) error {
			wmu.Lock()
			defer wmu.Unlock()
			mask := ws.NewMask()
			conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if err := ws.WriteHeader(conn, ws.Header{Fin: fin, OpCode: op, Masked: true, Mask: mask, Length: int64(len(p))}); err != nil {
				return err
			}
			m := append([]byte(nil), p...)
			ws.Cipher(m, mask, 0)
			_, err := conn.Write(m)
			return err
		}
		pingsSent := 0
		werr := make(chan error, 1)
		go func() {
			wrng := rand.New(rand.NewPCG(5, 6))
			for i, m := range msgs {
				// 1 to 5 fragments, with a ping after some of them.
				parts := 1 + wrng.IntN(5)
				op := ws.OpBinary
				for k := 0; k < parts; k++ {
					lo, hi := len(m)*k/parts, len(m)*(k+1)/parts
					if err := writeFrame(op, k == parts-1, m[lo:hi]); err != nil {
						werr <- fmt.Errorf("message %d fragment %d: %w", i, k, err)
						return
					}
					op = ws.OpContinuation
					if k < parts-1 && wrng.IntN(2) == 0 {
						if err := writeFrame(ws.OpPing, true, []byte(fmt.Sprintf("ping-%d", pingsSent))); err != nil {
							werr <- err
							return
						}
						pingsSent++
					}
				}
			}
			werr <- nil
		}()

		var (
			cur          []byte
			inMessage    bool
			got          int
			pongsSeen    int
			upPings      int
			fragmentedIn int
		)
		for got < n {
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			hd, err := ws.ReadHeader(rd)
			if err != nil {
				t.Fatalf("after %d messages: reading a frame header: %v", got, err)
			}
			if hd.Masked {
				t.Fatalf("frame from authgate is masked (RFC 6455 §5.1: server frames are not)")
			}
			p := make([]byte, hd.Length)
			if _, err := io.ReadFull(rd, p); err != nil {
				t.Fatalf("after %d messages: reading %d payload bytes: %v", got, hd.Length, err)
			}
			switch hd.OpCode {
			case ws.OpPong:
				if want := fmt.Sprintf("ping-%d", pongsSeen); string(p) != want {
					t.Errorf("pong %d: got %q, want %q", pongsSeen, p, want)
				}
				pongsSeen++
				continue
			case ws.OpPing:
				upPings++
				if inMessage {
					fragmentedIn++
				}
				if err := writeFrame(ws.OpPong, true, p); err != nil {
					t.Fatal(err)
				}
				continue
			case ws.OpClose:
				t.Fatalf("after %d messages: got a close frame %q, want message %d", got, p, got)
			case ws.OpBinary, ws.OpText:
				if inMessage {
					t.Fatalf("message %d: new data frame inside a fragmented message", got)
				}
				cur, inMessage = p, true
			case ws.OpContinuation:
				if !inMessage {
					t.Fatalf("message %d: continuation frame outside a message", got)
				}
				cur = append(cur, p...)
			}
			if hd.Fin {
				if !bytes.Equal(cur, msgs[got]) {
					t.Fatalf("message %d: got %d bytes, want %d bytes (equal %v)", got, len(cur), len(msgs[got]), bytes.Equal(cur, msgs[got]))
				}
				got++
				cur, inMessage = nil, false
			}
		}
		if err := <-werr; err != nil {
			t.Fatal(err)
		}
		// Drain the pongs still in flight, then close.
		wmu.Lock()
		mask := ws.NewMask()
		body := ws.NewCloseFrameBody(ws.StatusNormalClosure, "done")
		ws.Cipher(body, mask, 0)
		ws.WriteHeader(conn, ws.Header{Fin: true, OpCode: ws.OpClose, Masked: true, Mask: mask, Length: int64(len(body))})
		conn.Write(body)
		wmu.Unlock()
		for {
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			hd, err := ws.ReadHeader(rd)
			if err != nil {
				t.Fatalf("waiting for the close answer: %v", err)
			}
			p := make([]byte, hd.Length)
			if _, err := io.ReadFull(rd, p); err != nil {
				t.Fatal(err)
			}
			if hd.OpCode == ws.OpPong {
				pongsSeen++
			}
			if hd.OpCode == ws.OpClose {
				if code := binary.BigEndian.Uint16(p); code != 1000 {
					t.Errorf("close answer: got %d, want 1000", code)
				}
				break
			}
		}
		if pongsSeen != pingsSent {
			t.Errorf("pongs: got %d, want %d (one per ping)", pongsSeen, pingsSent)
		}
		if pingsSent == 0 || fragmentedIn == 0 {
			t.Errorf("pings between fragments: client sent %d, upstream sent %d; want both > 0", pingsSent, fragmentedIn)
		}
		t.Logf("%d client pings between fragments, %d upstream pings (%d inside fragmented messages)", pingsSent, upPings, fragmentedIn)
	})
}

// TestPermessageDeflate: compression is negotiated end to end: the client
// sees the extension the backend accepted, and compressed messages cross
// the relay intact.
func TestPermessageDeflate(t *testing.T) {
	be := newBackend(t)
	be.upgrader.EnableCompression = true
	h := startProxy(t, testConfig{Upstream: be.url})
	c, resp := h.mustDial(t, "/api/v1/pam/ws?token="+validJWT(t, "u1"), nil, &websocket.Dialer{EnableCompression: true})
	ext := resp.Header.Get("Sec-Websocket-Extensions")
	if !strings.Contains(ext, "permessage-deflate") {
		t.Fatalf("client Sec-WebSocket-Extensions: got %q, want permessage-deflate", ext)
	}
	if off := be.last(t).Header.Get("Sec-Websocket-Extensions"); !strings.Contains(off, "permessage-deflate") {
		t.Errorf("backend was offered %q, want permessage-deflate", off)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	for i := 0; i < 50; i++ {
		var m []byte
		if i%2 == 0 {
			m = bytes.Repeat([]byte(fmt.Sprintf("compressible %d ", i)), rng.IntN(4000))
		} else {
			m = randomPayload(rng, rng.IntN(64<<10), false)
		}
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if err := c.WriteMessage(websocket.BinaryMessage, m); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, got, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !bytes.Equal(got, m) {
			t.Fatalf("message %d: got %d bytes, want %d (equal false)", i, len(got), len(m))
		}
	}
	closeClient(t, c, websocket.CloseNormalClosure, "")
}

// TestFramingViolations: a client frame that is not masked, or an
// upstream frame that is, ends the connection with 1002 (RFC 6455 §5.1).
func TestFramingViolations(t *testing.T) {
	t.Run("unmasked client frame", func(t *testing.T) {
		got := make(chan *websocket.CloseError, 1)
		be := newBackend(t)
		be.onWS = func(c *websocket.Conn, r *http.Request) {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _, err := c.ReadMessage()
			var ce *websocket.CloseError
			errors.As(err, &ce)
			got <- ce
		}
		h := startProxy(t, testConfig{Upstream: be.url})
		conn, br, resp := rawHandshake(t, h.addr, "/api/v1/pam/ws?token="+validJWT(t, "u1"), http.Header{})
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("handshake: got %d, want 101", resp.StatusCode)
		}
		// Unmasked text frame "hello".
		if err := ws.WriteFrame(conn, ws.NewTextFrame([]byte("hello"))); err != nil {
			t.Fatal(err)
		}
		code := readCloseRaw(t, br)
		if code != 1002 {
			t.Errorf("client got close %d, want 1002", code)
		}
		select {
		case ce := <-got:
			if ce == nil || ce.Code != 1002 {
				t.Errorf("backend got %v, want close 1002", ce)
			}
		case <-time.After(5 * time.Second):
			t.Error("backend saw nothing within 5s")
		}
	})
	t.Run("masked upstream frame", func(t *testing.T) {
		be := newBackend(t)
		be.onRequest = func(w http.ResponseWriter, r *http.Request) bool {
			conn, _, _, err := ws.UpgradeHTTP(r, w)
			if err != nil {
				return true
			}
			defer conn.Close()
			f := ws.MaskFrameInPlace(ws.NewTextFrame([]byte("masked by a server")))
			ws.WriteFrame(conn, f)
			// Answer authgate's close frame, so the closing handshake ends
			// at once.
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				f, err := ws.ReadFrame(conn)
				if err != nil {
					return true
				}
				if f.Header.OpCode == ws.OpClose {
					ws.WriteFrame(conn, ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusProtocolError, "")))
					return true
				}
			}
		}
		h := startProxy(t, testConfig{Upstream: be.url})
		c, _ := h.mustDial(t, "/api/v1/pam/ws?token="+validJWT(t, "u1"), nil, nil)
		ce := readClose(t, c)
		if ce.Code != 1002 {
			t.Errorf("client got close %d %q, want 1002", ce.Code, ce.Text)
		}
	})
}

// readCloseRaw reads server frames until a close frame and returns its
// code (0 without one).
func readCloseRaw(t *testing.T, r io.Reader) int {
	t.Helper()
	for {
		hd, err := ws.ReadHeader(r)
		if err != nil {
			t.Fatalf("got %v, want a close frame", err)
		}
		p := make([]byte, hd.Length)
		if _, err := io.ReadFull(r, p); err != nil {
			t.Fatal(err)
		}
		if hd.OpCode != ws.OpClose {
			continue
		}
		if hd.Masked {
			t.Errorf("close frame from authgate is masked")
		}
		if len(p) < 2 {
			return 0
		}
		return int(binary.BigEndian.Uint16(p))
	}
}

// TestEarlyFrames: frames that arrive in the same read as the handshake
// (the client's right after its request, the upstream's right after its
// 101) are relayed, not lost with the handshake buffers; hop-by-hop
// headers of the client's upgrade do not reach the upstream.
func TestEarlyFrames(t *testing.T) {
	be := newBackend(t)
	be.onRequest = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("X-Early") == "" {
			return false // gorilla echo
		}
		// Answer the upgrade and send a frame in one write.
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return true
		}
		defer conn.Close()
		var b bytes.Buffer
		b.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ")
		b.WriteString(websocketAccept(r.Header.Get("Sec-Websocket-Key")))
		b.WriteString("\r\n\r\n")
		ws.WriteFrame(&b, ws.NewTextFrame([]byte("early from upstream")))
		conn.Write(b.Bytes())
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			f, err := ws.ReadFrame(brw)
			if err != nil {
				return true
			}
			if f.Header.OpCode == ws.OpClose {
				ws.WriteFrame(conn, ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "")))
				return true
			}
		}
	}
	h := startProxy(t, testConfig{Upstream: be.url})
	jwtTok := validJWT(t, "u1")

	t.Run("client frame with the request", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", h.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		var b bytes.Buffer
		fmt.Fprintf(&b, "GET /api/v1/pam/ws?token=%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade, X-Drop-Me\r\n", jwtTok, h.addr)
		b.WriteString("X-Drop-Me: hop\r\nProxy-Authorization: Basic c2VjcmV0\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
		ws.WriteFrame(&b, ws.MaskFrameInPlace(ws.NewTextFrame([]byte("early from client"))))
		if _, err := conn.Write(b.Bytes()); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 101 {
			t.Fatalf("handshake: got %d, want 101", resp.StatusCode)
		}
		if got, want := resp.Header.Get("Sec-Websocket-Accept"), websocketAccept("dGhlIHNhbXBsZSBub25jZQ=="); got != want {
			t.Errorf("Sec-WebSocket-Accept: got %q, want %q", got, want)
		}
		f, err := ws.ReadFrame(br)
		if err != nil {
			t.Fatalf("reading the echo: %v", err)
		}
		if string(f.Payload) != "early from client" {
			t.Errorf("echo: got %q, want \"early from client\"", f.Payload)
		}
		r := be.last(t)
		for _, k := range []string{"X-Drop-Me", "Proxy-Authorization", "Keep-Alive"} {
			if got := r.Header.Values(k); len(got) != 0 {
				t.Errorf("backend %s: got %q, want removed (hop-by-hop)", k, got)
			}
		}
	})
	t.Run("upstream frame with the 101", func(t *testing.T) {
		c, _ := h.mustDial(t, "/api/v1/pam/ws?token="+jwtTok, http.Header{"X-Early": {"1"}}, nil)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, p, err := c.ReadMessage()
		if err != nil || string(p) != "early from upstream" {
			t.Errorf("first message: got %q, %v, want \"early from upstream\"", p, err)
		}
		closeClient(t, c, websocket.CloseNormalClosure, "")
	})
}

func websocketAccept(key string) string {
	h := sha1.New()
	h.Write([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}
