package battery

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// rawEcho sends a masked text frame and requires it back.
func rawEcho(rc *rawConn, msg string) error {
	rc.c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	if err := writeFrame(rc.c, ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Length: int64(len(msg))}, []byte(msg)); err != nil {
		return err
	}
	rc.c.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		hd, p, err := readFrame(rc.br)
		if err != nil {
			return err
		}
		if hd.OpCode == ws.OpPong {
			continue
		}
		if hd.OpCode != ws.OpText || string(p) != msg {
			return fmt.Errorf("got %v %q, want text %q", hd.OpCode, p, msg)
		}
		if hd.Masked {
			return fmt.Errorf("frame to the client is masked")
		}
		return nil
	}
}

// closeBody is a close frame payload.
func closeBody(code int, reason string) []byte {
	return append([]byte{byte(code >> 8), byte(code)}, reason...)
}

// frameCase: after a relayed echo, the client sends raw bytes; the
// client and the backend must both get close code want.
type frameCase struct {
	name, attack string
	frame        func(w *bytes.Buffer)
	want         int // close code to the client and to the backend
}

func hdr(op ws.OpCode, fin, masked bool, rsv byte, n int) ws.Header {
	return ws.Header{Fin: fin, Rsv: rsv, OpCode: op, Masked: masked, Length: int64(n)}
}

func frameOf(hd ws.Header, p []byte) func(*bytes.Buffer) {
	return func(b *bytes.Buffer) { writeFrame(b, hd, p) }
}

func TestFrames(t *testing.T) {
	beginTest(t)
	cases := []frameCase{
		{"unmasked-client-frame", "a text frame without a mask (RFC 6455 §5.1)",
			frameOf(hdr(ws.OpText, true, false, 0, 5), []byte("hello")), 1002},
		{"length-msb-set", "a binary frame whose 64-bit length has the top bit set (§5.2)",
			func(b *bytes.Buffer) {
				b.Write([]byte{0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4})
			}, 1002},
		{"rsv1-without-extension", "RSV1 on a text frame, no extension negotiated",
			frameOf(hdr(ws.OpText, true, true, ws.Rsv(true, false, false), 5), []byte("hello")), 1002},
		{"rsv3-on-ping", "RSV3 on a ping",
			frameOf(hdr(ws.OpPing, true, true, ws.Rsv(false, false, true), 0), nil), 1002},
		{"fragmented-control-frame", "a ping with FIN clear (§5.5: control frames must not be fragmented)",
			frameOf(hdr(ws.OpPing, false, true, 0, 2), []byte("hi")), 1002},
		{"control-frame-over-125", "a ping with a 126-byte payload (§5.5)",
			frameOf(hdr(ws.OpPing, true, true, 0, 126), bytes.Repeat([]byte{'p'}, 126)), 1002},
		{"reserved-opcode", "opcode 0x3 (reserved non-control)",
			frameOf(hdr(ws.OpCode(0x3), true, true, 0, 1), []byte("x")), 1002},
		{"orphan-continuation", "a continuation frame with no message started",
			frameOf(hdr(ws.OpContinuation, true, true, 0, 1), []byte("x")), 1002},
		{"close-1-byte-body", "a close frame with a 1-byte payload (§5.5.1)",
			frameOf(hdr(ws.OpClose, true, true, 0, 1), []byte{0x03}), 1002},
		{"close-code-1005", "close code 1005 on the wire (§7.4.1: never sent)",
			frameOf(hdr(ws.OpClose, true, true, 0, 2), closeBody(1005, "")), 1002},
		{"close-code-1006", "close code 1006 on the wire",
			frameOf(hdr(ws.OpClose, true, true, 0, 2), closeBody(1006, "")), 1002},
		{"close-code-1015", "close code 1015 on the wire",
			frameOf(hdr(ws.OpClose, true, true, 0, 2), closeBody(1015, "")), 1002},
		{"close-code-1004", "close code 1004 (reserved)",
			frameOf(hdr(ws.OpClose, true, true, 0, 2), closeBody(1004, "")), 1002},
		{"close-code-999", "close code 999 (below the range)",
			frameOf(hdr(ws.OpClose, true, true, 0, 2), closeBody(999, "")), 1002},
		{"close-code-2999", "close code 2999 (unassigned)",
			frameOf(hdr(ws.OpClose, true, true, 0, 2), closeBody(2999, "")), 1002},
		{"close-code-5000", "close code 5000 (above the range)",
			frameOf(hdr(ws.OpClose, true, true, 0, 2), closeBody(5000, "")), 1002},
		{"close-reason-not-utf8", "close 1000 with reason bytes 0xFF 0xFE (§8.1)",
			frameOf(hdr(ws.OpClose, true, true, 0, 4), closeBody(1000, "\xff\xfe")), 1007},
		{"close-4000-passes", "baseline: a valid close 4000 'bye' passes through to the backend",
			frameOf(hdr(ws.OpClose, true, true, 0, 5), closeBody(4000, "bye")), 4000},
	}
	var rows []tcase
	for _, c := range cases {
		rows = append(rows, tcase{
			name:   c.name,
			attack: c.attack + ", from the client, after one echo",
			want:   fmt.Sprintf("close %d to the client and to the backend; TCP closed within 3 s", c.want),
			run: func(t *testing.T) {
				id := "frame-" + c.name
				rc := rawUpgrade(t, h.main.addr, "/ws?token="+hsJWT(id), "X-Case: "+id+"\r\n")
				defer rc.Close()
				if err := rawEcho(rc, "before"); err != nil {
					t.Fatalf("echo before the attack: %v", err)
				}
				var b bytes.Buffer
				c.frame(&b)
				rc.c.SetWriteDeadline(time.Now().Add(2 * time.Second))
				if _, err := rc.c.Write(b.Bytes()); err != nil {
					t.Fatalf("write: %v", err)
				}
				cr := awaitClose(rc, 5*time.Second)
				if cr.code != c.want {
					t.Errorf("client got %+v, want close %d", cr, c.want)
				}
				if cr.masked {
					t.Errorf("close frame to the client is masked")
				}
				if code, ok := h.backend.waitClose(id, 5*time.Second); !ok || code != c.want {
					t.Errorf("backend got close %d (ok=%v), want %d", code, ok, c.want)
				}
				if cr.code != 0 && c.want != 4000 {
					replyClose(rc, 1000)
				}
				if err := expectEOF(rc, 3*time.Second); err != nil {
					t.Error(err)
				}
			},
		})
	}
	rows = append(rows,
		tcase{
			name:   "ping-between-fragments",
			attack: "a text message in two fragments with a ping between them (allowed, §5.4)",
			want:   "relayed: the client gets a pong and the whole message echoed",
			run: func(t *testing.T) {
				id := "frame-ping-between"
				rc := rawUpgrade(t, h.main.addr, "/ws?token="+hsJWT(id), "X-Case: "+id+"\r\n")
				defer rc.Close()
				var b bytes.Buffer
				writeFrame(&b, hdr(ws.OpText, false, true, 0, 3), []byte("abc"))
				writeFrame(&b, hdr(ws.OpPing, true, true, 0, 1), []byte("p"))
				writeFrame(&b, hdr(ws.OpContinuation, true, true, 0, 3), []byte("def"))
				rc.c.Write(b.Bytes())
				rc.c.SetReadDeadline(time.Now().Add(3 * time.Second))
				gotPong, gotText := false, ""
				for gotText == "" {
					hd, p, err := readFrame(rc.br)
					if err != nil {
						t.Fatalf("read: %v", err)
					}
					switch hd.OpCode {
					case ws.OpPong:
						gotPong = true
					case ws.OpText:
						gotText = string(p)
					default:
						t.Fatalf("unexpected %v %q", hd.OpCode, p)
					}
				}
				if !gotPong || gotText != "abcdef" {
					t.Errorf("pong %v, text %q; want a pong and abcdef", gotPong, gotText)
				}
				replyClose(rc, 1000)
				awaitClose(rc, 3*time.Second)
			},
		},
		tcase{
			name:   "client-vanishes",
			attack: "the client closes TCP without a close frame",
			want:   "the backend gets close 1001 (client gone)",
			run: func(t *testing.T) {
				id := "frame-vanish"
				rc := rawUpgrade(t, h.main.addr, "/ws?token="+hsJWT(id), "X-Case: "+id+"\r\n")
				if err := rawEcho(rc, "x"); err != nil {
					t.Fatal(err)
				}
				rc.Close()
				if code, ok := h.backend.waitClose(id, 5*time.Second); !ok || code != 1001 {
					t.Errorf("backend got close %d (ok=%v), want 1001", code, ok)
				}
			},
		},
		tcase{
			name:   "client-dies-mid-frame",
			attack: "the client sends the header of a 100-byte frame and 10 bytes, then closes TCP",
			want:   "the backend gets close 1001 and no partial frame",
			run: func(t *testing.T) {
				id := "frame-midframe"
				rc := rawUpgrade(t, h.main.addr, "/ws?token="+hsJWT(id), "X-Case: "+id+"\r\n")
				hd := hdr(ws.OpBinary, true, true, 0, 100)
				hd.Mask = ws.NewMask()
				ws.WriteHeader(rc.c, hd)
				rc.c.Write(make([]byte, 10))
				time.Sleep(50 * time.Millisecond)
				rc.Close()
				if code, ok := h.backend.waitClose(id, 5*time.Second); !ok || code != 1001 {
					t.Errorf("backend got close %d (ok=%v), want 1001", code, ok)
				}
			},
		},
		tcase{
			name:   "expiry-client-never-closes",
			attack: "a JWT expiring in 1-2 s on a close_on_expiry route; the client never answers authgate's close frame",
			want:   "close 4002 at exp (leeway 0), the backend gets 1001; TCP closed by CloseWait (2 s) after the close frame",
			run: func(t *testing.T) {
				id := "frame-expiry"
				tok := makeJWT(map[string]any{"alg": "HS256", "typ": "JWT"}, stdClaims(newSub(), time.Now().Add(1500*time.Millisecond)), hs256([]byte(hsSecret)))
				secrets.add("expiring jwt", tok)
				rc := rawUpgrade(t, h.main.addr, "/ws?token="+tok, "X-Case: "+id+"\r\n")
				defer rc.Close()
				cr := awaitClose(rc, 5*time.Second)
				if cr.code != 4002 {
					t.Fatalf("got %+v, want close 4002", cr)
				}
				at := time.Now()
				if code, ok := h.backend.waitClose(id, 3*time.Second); !ok || code != 1001 {
					t.Errorf("backend got close %d (ok=%v), want 1001", code, ok)
				}
				if err := expectEOF(rc, 4*time.Second); err != nil {
					t.Fatal(err)
				}
				if d := time.Since(at); d > 3500*time.Millisecond {
					t.Errorf("TCP closed %v after the close frame, want about CloseWait (2 s)", d)
				}
				if e := findEvent(h.main.logs, "ws_close", map[string]any{"close_code": 4002, "closed_by": "authgate"}, 2*time.Second); e == nil {
					t.Errorf("no ws_close event with close_code 4002 closed_by authgate")
				}
			},
		},
	)
	runCases(t, rows)
}
