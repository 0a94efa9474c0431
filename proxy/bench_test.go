package proxy_test

import (
	"bytes"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// The benchmarks run client, authgate and an echo backend in this one
// process on loopback, so allocations and time include all three; compare
// runs with each other, not with SPEC "Performance" (cmd's benchmark
// command measures the proxy process alone, against nginx).

// BenchmarkProxyUpgrade: one WebSocket life per op through authgate: dial
// and upgrade with an HS256 JWT (verified, decided, logged), one message
// each way, the closing handshake.
func BenchmarkProxyUpgrade(b *testing.B) {
	be := newBackend(b, withoutRecording)
	h := startProxyWith(b, testConfig{Upstream: be.url}, io.Discard)
	url := h.wsBase + "/api/v1/pam/ws?token=" + validJWT(b, "7d0e3a52-7f39-4c64-9d3c-2b6f0c1de5a1")
	d := &websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	msg := []byte("hello")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c, _, err := d.Dial(url, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.WriteMessage(websocket.TextMessage, msg); err != nil {
			b.Fatal(err)
		}
		if _, _, err := c.ReadMessage(); err != nil {
			b.Fatal(err)
		}
		c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(5*time.Second))
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				break
			}
		}
		c.Close()
	}
	b.StopTimer()
}

// BenchmarkProxyReject4003: one stale client's attempt per op, the
// reconnect storm's unit: a legacy UUID on a route that rejects it, the
// handshake completed by authgate and closed with 4003, the auth line
// logged. Without a budget every attempt writes its line; with the
// default budget (3000 a minute) the repeats past it are held, counted
// and summarised (issue 21).
func BenchmarkProxyReject4003(b *testing.B) {
	for _, bc := range []struct {
		name string
		log  []string
	}{{"no budget", []string{"max_lines_per_minute: 0"}}, {"default budget", nil}} {
		b.Run(bc.name, func(b *testing.B) {
			be := newBackend(b, withoutRecording)
			h := startProxyWith(b, testConfig{Upstream: be.url, LogExtra: bc.log}, io.Discard)
			url := h.wsBase + "/ws/strict?token=7d0e3a52-7f39-4c64-9d3c-2b6f0c1de5a1"
			d := &websocket.Dialer{HandshakeTimeout: 5 * time.Second}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				c, _, err := d.Dial(url, nil)
				if err != nil {
					b.Fatal(err)
				}
				_, _, err = c.ReadMessage()
				if ce, ok := err.(*websocket.CloseError); !ok || ce.Code != 4003 {
					b.Fatalf("got %v, want close 4003", err)
				}
				c.Close()
			}
			b.StopTimer()
		})
	}
}

func benchEcho(b *testing.B, size int) {
	be := newBackend(b, withoutRecording)
	be.upgrader.ReadBufferSize = 64 << 10
	be.upgrader.WriteBufferSize = 64 << 10
	be.onWS = func(c *websocket.Conn, _ *http.Request) {
		// An echo that reuses its buffer, so the backend's allocations
		// do not drown authgate's.
		var buf bytes.Buffer
		for {
			mt, r, err := c.NextReader()
			if err != nil {
				return
			}
			buf.Reset()
			if _, err := buf.ReadFrom(r); err != nil {
				return
			}
			if err := c.WriteMessage(mt, buf.Bytes()); err != nil {
				return
			}
		}
	}
	h := startProxyWith(b, testConfig{Upstream: be.url}, io.Discard)
	d := &websocket.Dialer{HandshakeTimeout: 5 * time.Second, ReadBufferSize: 64 << 10, WriteBufferSize: 64 << 10}
	c, _, err := d.Dial(h.wsBase+"/api/v1/pam/ws?token="+validJWT(b, "u1"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg := bytes.Repeat([]byte{'x'}, size)
	buf := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			b.Fatal(err)
		}
		_, r, err := c.NextReader()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(r, buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(5*time.Second))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			break
		}
	}
}

// BenchmarkProxyEcho64B: 64-byte messages echoed over one WebSocket
// through authgate; bytes/s counts one direction.
func BenchmarkProxyEcho64B(b *testing.B) { benchEcho(b, 64) }

// BenchmarkProxyEcho64KiB: 64 KiB messages, as BenchmarkProxyEcho64B.
func BenchmarkProxyEcho64KiB(b *testing.B) { benchEcho(b, 64<<10) }
