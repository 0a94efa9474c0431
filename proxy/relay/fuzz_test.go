package relay

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// FuzzRelay feeds arbitrary bytes to the relay as the client's and the
// upstream's streams (the frame-header parser sees untrusted input from
// both). Invariants: no panic; Run returns within its close bounds; the
// result names who ended it; every frame the relay writes to the client
// is unmasked and every frame it writes to the upstream is masked.
func FuzzRelay(f *testing.F) {
	masked := func(op ws.OpCode, fin bool, p []byte) []byte { return frame(op, fin, p, true) }
	f.Add(masked(ws.OpText, true, []byte("hello")), frame(ws.OpText, true, []byte("world"), false))         // one message each way
	f.Add(frame(ws.OpText, true, []byte("x"), false), []byte{})                                             // unmasked client frame: 1002
	f.Add([]byte{}, masked(ws.OpBinary, true, []byte("y")))                                                 // masked upstream frame: 1002
	f.Add([]byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0}, []byte{})                                          // 64-bit length, top bit set
	f.Add(masked(ws.OpClose, true, []byte{3}), []byte{})                                                    // 1-byte close body
	f.Add(masked(ws.OpPing, false, nil), []byte{})                                                          // fragmented control frame
	f.Add(masked(ws.OpText, false, []byte("a")), frame(ws.OpClose, true, closePayload(1000, "bye"), false)) // close mid-message
	f.Add([]byte{0xf1, 0x80, 1, 2, 3, 4}, []byte{0x71, 0})                                                  // RSV bits
	f.Fuzz(func(t *testing.T, fromClient, fromUpstream []byte) {
		cl, cr := net.Pipe()
		ul, ur := net.Pipe()
		c := New(cr, nil, ur, nil, Options{CloseWait: 50 * time.Millisecond, WriteTimeout: 50 * time.Millisecond})
		done := make(chan Result, 1)
		go func() { done <- c.Run() }()
		go func() { cl.Write(fromClient); cl.Close() }()
		go func() { ul.Write(fromUpstream); ul.Close() }()
		// The peers' read sides only drain (net.Pipe blocks writers
		// until read); frame masking is checked on what they receive.
		go checkFrames(t, cl, false)
		go checkFrames(t, ul, true)
		select {
		case res := <-done:
			switch res.ClosedBy {
			case ByClient, ByUpstream, ByAuthgate:
			default:
				t.Fatalf("ClosedBy %q", res.ClosedBy)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return")
		}
	})
}

// checkFrames reads frames until the stream ends and fails when one's
// mask bit is not wantMasked.
func checkFrames(t *testing.T, r io.Reader, wantMasked bool) {
	for {
		h, err := ws.ReadHeader(r)
		if err != nil {
			io.Copy(io.Discard, r)
			return
		}
		if h.Masked != wantMasked {
			t.Errorf("relay wrote a frame with masked=%v, want %v", h.Masked, wantMasked)
		}
		if _, err := io.CopyN(io.Discard, r, h.Length); err != nil {
			io.Copy(io.Discard, r)
			return
		}
	}
}
