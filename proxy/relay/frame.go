package relay

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// inlineSize is the size of a direction's read buffer. A direction that
// has a goroutine holds one (from inlinePool) and waits in a read into it;
// a small frame (header and payload, here up to 498 bytes) usually arrives
// whole in that one read and is written on from it in one write. A parked
// direction gives its buffer back (park.go), so an idle connection holds
// none.
const inlineSize = 512

// inlinePool holds the read buffers of directions that have a goroutine.
var inlinePool = sync.Pool{New: func() any { return new([inlineSize]byte) }}

// poolSize is the size of pooled buffers: payloads up to poolSize minus a
// header are read whole and written with their header in one write; larger
// ones are streamed socket to socket.
const poolSize = 32 << 10

// streamChunk bounds one socket-to-socket copy, so the deadlines are
// renewed while a large payload streams: a peer must move 64 KiB per
// WriteTimeout (6.5 KB/s at the default), not the whole payload.
const streamChunk = 64 << 10

// bufPool holds poolSize buffers, borrowed only while a frame is copied.
var bufPool = sync.Pool{New: func() any {
	b := make([]byte, poolSize)
	return &b
}}

// frameReader reads one peer: first the bytes its handshake reader had
// buffered, then the socket, through a small inline buffer.
type frameReader struct {
	conn    net.Conn
	pending []byte            // handshake leftovers, read before the socket
	buf     *[inlineSize]byte // nil while parked or done
	r, w    int               // buf[r:w] is unread
	fills   uint32            // counts socket reads into buf
}

// Read serves buffered bytes, refilling buf from the socket when empty. It
// is the io.Reader ws.ReadHeaderBuffer parses headers from.
func (fr *frameReader) Read(p []byte) (int, error) {
	if len(fr.pending) > 0 {
		n := copy(p, fr.pending)
		fr.pending = unpin(fr.pending[n:])
		return n, nil
	}
	if fr.r == fr.w {
		err := fr.fill()
		if err != nil {
			return 0, err
		}
	}
	n := copy(p, fr.buf[fr.r:fr.w])
	fr.r += n
	return n, nil
}

// fill reads the socket into the empty buf. This is where an idle
// direction waits: the stack is shallow and no pooled buffer is held.
func (fr *frameReader) fill() error {
	n, err := fr.conn.Read(fr.buf[:])
	fr.r, fr.w = 0, n
	fr.fills++
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// unpin drops an empty rest of the handshake leftovers: its array is a
// handshake reader's buffer (4 KiB for net/http's), which would otherwise
// stay with the connection for its lifetime.
func unpin(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// idle reports that nothing read from the peer is waiting to be parsed.
func (fr *frameReader) idle() bool { return len(fr.pending) == 0 && fr.r == fr.w }

func (fr *frameReader) buffered() int {
	if len(fr.pending) > 0 {
		return len(fr.pending)
	}
	return fr.w - fr.r
}

// take consumes and returns up to max buffered bytes.
func (fr *frameReader) take(max int) []byte {
	var b []byte
	if len(fr.pending) > 0 {
		b = fr.pending
		if len(b) > max {
			b = b[:max]
		}
		fr.pending = unpin(fr.pending[len(b):])
		return b
	}
	b = fr.buf[fr.r:fr.w]
	if len(b) > max {
		b = b[:max]
	}
	fr.r += len(b)
	return b
}

// nopWriter lets ws.WriteHeaderBuffer encode a header in place: it writes
// the header into the buffer it is given, then hands it to the writer.
type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }

// putHeader encodes h at the start of b (cap(b) >= ws.MaxHeaderSize) and
// returns its length.
func putHeader(b []byte, h ws.Header) int {
	_ = ws.WriteHeaderBuffer(nopWriter{}, h, b) // cannot fail: cap is checked, length is < 2^63
	return ws.HeaderSize(h)
}

// checkHeader validates a frame header against RFC 6455 §5 for a direction
// and updates the fragmentation state. It returns 0 or the close code and
// reason to fail the connection with. Payloads are not looked at here.
func checkHeader(h ws.Header, fromClient, deflate bool, fragmented *bool) (uint16, string) {
	// §5.1: a client masks every frame, a server none.
	if fromClient && !h.Masked {
		return CodeProtocolError, "unmasked client frame"
	}
	if !fromClient && h.Masked {
		return CodeProtocolError, "masked server frame"
	}
	switch h.OpCode {
	case ws.OpContinuation:
		if !*fragmented {
			return CodeProtocolError, "unexpected continuation frame"
		}
		// RFC 7692 §6: RSV1 only on the first frame of a message.
		if h.Rsv != 0 {
			return CodeProtocolError, "reserved bits set"
		}
		if h.Fin {
			*fragmented = false
		}
	case ws.OpText, ws.OpBinary:
		if *fragmented {
			return CodeProtocolError, "data frame inside a fragmented message"
		}
		var allowed byte
		if deflate {
			allowed = ws.Rsv(true, false, false)
		}
		if h.Rsv&^allowed != 0 {
			return CodeProtocolError, "reserved bits set"
		}
		if !h.Fin {
			*fragmented = true
		}
	case ws.OpClose, ws.OpPing, ws.OpPong:
		// §5.5: control frames are short and whole; they may sit between
		// the fragments of a data message (§5.4).
		if !h.Fin {
			return CodeProtocolError, "fragmented control frame"
		}
		if h.Length > ws.MaxControlFramePayloadSize {
			return CodeProtocolError, "control frame too long"
		}
		if h.Rsv != 0 {
			return CodeProtocolError, "reserved bits set"
		}
	default:
		return CodeProtocolError, "reserved opcode"
	}
	return 0, ""
}

// checkClose validates an unmasked close frame payload (§5.5.1, §7.4). It
// returns the code (CodeNoStatus for an empty payload) and reason, or a
// nonzero failure code and its reason.
func checkClose(p []byte) (code uint16, reason string, failCode uint16, failReason string) {
	switch len(p) {
	case 0:
		return CodeNoStatus, "", 0, ""
	case 1:
		return 0, "", CodeProtocolError, "close frame with a 1-byte payload"
	}
	code = binary.BigEndian.Uint16(p)
	if !validWireCode(code) {
		return 0, "", CodeProtocolError, "invalid close code"
	}
	if !utf8.Valid(p[2:]) {
		return 0, "", CodeInvalidPayload, "close reason is not UTF-8"
	}
	return code, string(p[2:]), 0, ""
}

// validWireCode reports whether code may appear in a close frame (RFC 6455
// §7.4.1-2 and the IANA registry): 1000-1003, 1007-1014, 3000-4999.
// 1004 is reserved, 1005, 1006 and 1015 are only ever reported.
func validWireCode(code uint16) bool {
	switch {
	case code >= 3000 && code <= 4999:
		return true
	case code >= 1000 && code <= 1014:
		return code != 1004 && code != 1005 && code != 1006
	}
	return false
}

// maxReason is the longest close reason that fits a control frame.
const maxReason = ws.MaxControlFramePayloadSize - 2

// sendable returns a code and reason the relay may put on the wire: an
// invalid code becomes 1011, the reason valid UTF-8 of at most 123 bytes.
func sendable(code uint16, reason string) (uint16, string) {
	if code != 0 && !validWireCode(code) {
		code = CodeInternalError
	}
	if code == 0 {
		return 0, ""
	}
	if !utf8.ValidString(reason) {
		reason = strings.ToValidUTF8(reason, "\uFFFD")
	}
	if len(reason) > maxReason {
		i := maxReason
		for i > 0 && !utf8.RuneStart(reason[i]) {
			i--
		}
		reason = reason[:i]
	}
	return code, reason
}

// appendClose appends a close frame to dst; code 0 means no code and no
// reason. masked frames get a random mask key (§5.3: unpredictable, so from
// crypto/rand). The code and reason must already be sendable.
func appendClose(dst []byte, code uint16, reason string, masked bool) []byte {
	h := ws.Header{Fin: true, OpCode: ws.OpClose}
	if code != 0 {
		h.Length = int64(2 + len(reason))
	}
	if masked {
		h.Masked = true
		rand.Read(h.Mask[:])
	}
	var hb [ws.MaxHeaderSize]byte
	n := putHeader(hb[:], h)
	dst = append(dst, hb[:n]...)
	if code == 0 {
		return dst
	}
	start := len(dst)
	dst = binary.BigEndian.AppendUint16(dst, code)
	dst = append(dst, reason...)
	if masked {
		ws.Cipher(dst[start:], h.Mask, 0)
	}
	return dst
}

// errBadCode is returned by WriteClose for a code that must not be sent.
var errBadCode = errors.New("close code must not be sent on the wire")

// WriteClose writes one close frame with code and reason to w: for the
// proxy, which completes a handshake itself to reject a client with a code
// the browser can read. masked must be true when w leads to a server
// (client-to-server frames are masked, RFC 6455 §5.3). Code 0 writes a
// close frame without a code. A code that must not be sent (1004-1006,
// 1015, 1016-2999, below 1000, 5000 and above) is an error and nothing is
// written. A reason longer than 123 bytes is cut at a rune boundary and
// invalid UTF-8 is replaced. The frame is written with one Write.
func WriteClose(w io.Writer, code uint16, reason string, masked bool) error {
	if code != 0 && !validWireCode(code) {
		return fmt.Errorf("writing close frame: code %d: %w", code, errBadCode)
	}
	code, reason = sendable(code, reason)
	var f [ws.MaxHeaderSize + ws.MaxControlFramePayloadSize]byte
	_, err := w.Write(appendClose(f[:0], code, reason, masked))
	if err != nil {
		return fmt.Errorf("writing close frame: %w", err)
	}
	return nil
}
