package relay

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
)

// pump relays one direction: it reads frames from src and writes them to
// dst. Its goroutine is the only reader of src; writes to dst are shared
// with Close and the other pump's failure paths through dst.wmu.
type pump struct {
	c          *Conn
	src, dst   *side
	fromClient bool // src is the client: its frames must be masked

	fr         frameReader
	hb         [ws.MaxHeaderSize - 2]byte // ws.ReadHeaderBuffer scratch
	lr         io.LimitedReader           // reused so streaming allocates nothing
	fragmented bool                       // a data message from src is unfinished

	// The idle deadline (see defaultRestAfter): rearmAt is when it must be
	// pushed out again; zero when none is set.
	rearmAt time.Time

	// Parking (park.go). wait counts waits at a frame boundary: odd while
	// in one, plus waitRest once the sweeper asked for a rest; only this
	// direction's goroutine changes it, but for the sweeper's CAS that
	// sets waitRest. seen is the sweeper's last look (guarded by
	// restSweeper.mu); parkID is non-zero while parked (guarded by c.mu).
	parkable bool
	wait     atomic.Uint32
	seen     uint32
	parkID   uint64
}

// copyError tells a failed frame copy's failures apart.
type copyError struct {
	err     error
	write   bool  // writing dst failed; otherwise reading src did
	partial bool  // dst has been sent part of a frame
	skip    int64 // write failures: payload bytes of the frame src has yet to send, or srcLost
}

// After a failure, what is left to read of src before its close frame.
const (
	srcLost = -1 // src stopped mid-frame at an unknown point: drain it blindly
	srcDone = -2 // src has sent its close frame: nothing
)

func (e *copyError) Error() string { return e.err.Error() }
func (e *copyError) Unwrap() error { return e.err }

// run relays frames until src sends its close frame or the direction fails
// (then it returns true), or until src has rested (restAfter without data,
// or the sweeper's request; see park.go): then src is parked or a fresh
// goroutine goes on, and run returns false.
func (p *pump) run() bool {
	if p.fr.buf == nil {
		p.fr.buf = inlinePool.Get().(*[inlineSize]byte)
	}
	if p.relay() {
		inlinePool.Put(p.fr.buf)
		p.fr.buf = nil
		return true
	}
	return false
}

// relay is run's loop; it returns false once the direction has rested.
func (p *pump) relay() bool {
	for {
		// An idle direction waits here, in a read into the Conn's own
		// small buffer, called straight from this loop so the stack in
		// use stays under 1 KiB and fits a minimal stack.
		if p.fr.idle() {
			p.keepAlive()
			w := (p.wait.Load() + 1) &^ waitRest // odd: the sweeper may ask for a rest
			p.wait.Store(w)
			err := p.fr.fill()
			if !p.wait.CompareAndSwap(w, (w+1)&^waitRest) {
				switch p.c.rested(p, err) {
				case restGoOn:
				case restRetry:
					continue
				case restDone:
					return false
				}
			}
			if err != nil {
				if isTimeout(err) && p.c.rest(p) {
					return false
				}
				p.srcFailed(err)
				return true
			}
		}
		h, inline, err := p.readHeader()
		if errors.Is(err, ws.ErrHeaderLengthMSB) {
			p.violation(CodeProtocolError, "invalid payload length", srcLost)
			return true
		}
		if err != nil {
			p.srcFailed(err)
			return true
		}
		code, reason := checkHeader(h, p.fromClient, p.c.opt.Deflate, &p.fragmented)
		if code != 0 {
			p.violation(code, reason, h.Length)
			return true
		}
		if h.OpCode == ws.OpClose {
			p.closeFrame(h)
			return true
		}
		err = p.forward(h, inline)
		if err != nil {
			p.copyFailed(err.(*copyError))
			return true
		}
	}
}

// keepAlive keeps src's idle deadline at least restAfter/2 ahead, so it
// only fires after that long without data, and mid-frame reads (bounded
// by it too) have time. It is lazy: one clock read per call, a deadline
// change at most every restAfter/2. A long-idle connection thus moves to
// fresh goroutines every restAfter, which lets its stacks follow the
// runtime's current starting size.
func (p *pump) keepAlive() {
	now := time.Now()
	if !p.rearmAt.IsZero() && now.Before(p.rearmAt) {
		return
	}
	p.c.armIdle(p, now)
}

// readHeader reads the next frame header. inline reports that the header's
// bytes sit in fr.buf just before fr.r, exactly as received, so a frame
// whose payload is buffered too can be written on from there in one write.
func (p *pump) readHeader() (h ws.Header, inline bool, err error) {
	fr := &p.fr
	if fr.idle() {
		err = fr.fill()
		if err != nil {
			return h, false, err
		}
	}
	start, fills, pending := fr.r, fr.fills, len(fr.pending) > 0
	h, err = ws.ReadHeaderBuffer(fr, p.hb[:])
	if err != nil {
		return h, false, err
	}
	// A header longer than necessary (legal to read, RFC 6455 §5.2 says
	// MUST NOT) is not inline and gets re-encoded by the slower paths.
	inline = !pending && fr.fills == fills && fr.r-start == ws.HeaderSize(h)
	return h, inline, nil
}

// forward copies one data, ping or pong frame to dst unchanged, or drops
// it when a close frame has already gone to dst.
func (p *pump) forward(h ws.Header, inline bool) error {
	fr := &p.fr
	hs := ws.HeaderSize(h)
	if inline && h.Length <= int64(fr.w-fr.r) {
		start := fr.r - hs
		fr.r += int(h.Length)
		return p.write(fr.buf[start:fr.r])
	}
	if int64(hs)+h.Length <= poolSize {
		return p.forwardSmall(h, hs)
	}
	return p.forwardLarge(h, hs)
}

// forwardSmall reads a payload that fits a pooled buffer, then writes it
// with its header in one write.
func (p *pump) forwardSmall(h ws.Header, hs int) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	b := (*bp)[:hs+int(h.Length)]
	putHeader(b, h)
	off := hs + p.readBuffered(b[hs:])
	if off < len(b) {
		_, err := io.ReadFull(p.src.conn, b[off:])
		if err != nil {
			return &copyError{err: err}
		}
	}
	return p.write(b)
}

// readBuffered fills b from bytes already read from src and returns how
// many it copied.
func (p *pump) readBuffered(b []byte) int {
	n := 0
	for n < len(b) && p.fr.buffered() > 0 {
		n += copy(b[n:], p.fr.take(len(b)-n))
	}
	return n
}

// write writes one whole frame to dst, unless a close frame went there.
func (p *pump) write(b []byte) error {
	d := p.dst
	d.wmu.Lock()
	if d.closed || d.broken {
		d.wmu.Unlock()
		return nil
	}
	d.armWrite(p.c.opt.WriteTimeout)
	n, err := d.conn.Write(b)
	d.written += int64(n)
	if err != nil {
		d.broken = true
	}
	d.wmu.Unlock()
	if err != nil {
		return &copyError{err: err, write: true, partial: n > 0, skip: 0}
	}
	return nil
}

// forwardLarge writes the header and the payload bytes already buffered,
// then streams the rest socket to socket, holding dst's write lock for the
// whole frame so nothing is injected inside it.
func (p *pump) forwardLarge(h ws.Header, hs int) error {
	d := p.dst
	rem := h.Length
	d.wmu.Lock()
	if d.closed || d.broken {
		d.wmu.Unlock()
		return p.discard(rem)
	}
	bp := bufPool.Get().(*[]byte)
	b := *bp
	putHeader(b, h)
	nb := p.readBuffered(b[hs:min(int64(len(b)), int64(hs)+rem)])
	rem -= int64(nb)
	d.armWrite(p.c.opt.WriteTimeout)
	n, err := d.conn.Write(b[:hs+nb])
	bufPool.Put(bp)
	d.written += int64(n)
	if err != nil {
		d.broken = true
		d.wmu.Unlock()
		return &copyError{err: err, write: true, partial: n > 0, skip: rem}
	}
	for rem > 0 {
		var n int64
		var write bool
		if p.fr.buffered() > 0 {
			// Handshake leftovers longer than a pooled buffer.
			var nn int
			d.armWrite(p.c.opt.WriteTimeout)
			nn, err = d.conn.Write(p.fr.take(int(min(rem, poolSize))))
			n, write = int64(nn), true
		} else {
			p.keepAlive()
			n, write, err = p.stream(d, min(rem, streamChunk))
		}
		rem -= n
		d.written += n
		if err != nil {
			d.broken = true
			d.wmu.Unlock()
			return &copyError{err: err, write: write, partial: true, skip: srcLost}
		}
	}
	d.wmu.Unlock()
	return nil
}

// stream copies n payload bytes from src's socket to d's. Between two TCP
// sockets it is io.CopyN's path, (*net.TCPConn).ReadFrom on a LimitedReader,
// which the runtime turns into splice(2): the bytes never enter user space.
// Otherwise (TLS) it goes through a pooled buffer. write reports whether a
// failure was on d's side.
func (p *pump) stream(d *side, n int64) (copied int64, write bool, err error) {
	d.armWrite(p.c.opt.WriteTimeout)
	if dt, ok := d.conn.(*net.TCPConn); ok {
		if st, ok := p.src.conn.(*net.TCPConn); ok {
			p.lr = io.LimitedReader{R: st, N: n}
			copied, err = dt.ReadFrom(&p.lr)
			p.lr.R = nil
			if err == nil && copied < n {
				return copied, false, io.ErrUnexpectedEOF
			}
			if err != nil {
				return copied, p.spliceWriteSide(d, err), err
			}
			return copied, false, nil
		}
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	for copied < n {
		b := (*bp)[:min(n-copied, poolSize)]
		r, rerr := p.src.conn.Read(b)
		if r > 0 {
			d.armWrite(p.c.opt.WriteTimeout)
			w, werr := d.conn.Write(b[:r])
			copied += int64(w)
			if werr != nil {
				return copied, true, werr
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				rerr = io.ErrUnexpectedEOF
			}
			return copied, false, rerr
		}
	}
	return copied, false, nil
}

// spliceWriteSide tells which socket a failed splice copy failed on, as
// splice reports errors of both ends alike. A timeout is the write side's
// if the write deadline has passed (reads are bounded by the idle or the
// closing deadline); EPIPE only comes from writing. Otherwise (a reset)
// src is probed with a short read: its stream is of no further use, as the
// copy stopped mid-frame. Call with d.wmu held.
func (p *pump) spliceWriteSide(d *side, err error) bool {
	if isTimeout(err) {
		return !time.Now().Before(d.wdl)
	}
	if errors.Is(err, syscall.EPIPE) {
		return true
	}
	if p.c.isClosing() {
		return false // who failed no longer matters
	}
	p.src.conn.SetReadDeadline(time.Now().Add(time.Millisecond))
	_, rerr := p.src.conn.Read(p.fr.buf[:])
	return rerr == nil || isTimeout(rerr)
}

// discard consumes n payload bytes of src.
func (p *pump) discard(n int64) error {
	for n > 0 && p.fr.buffered() > 0 {
		n -= int64(len(p.fr.take(int(min(n, inlineSize)))))
	}
	if n == 0 {
		return nil
	}
	p.lr = io.LimitedReader{R: p.src.conn, N: n}
	m, err := io.Copy(io.Discard, &p.lr)
	p.lr.R = nil
	if err == nil && m < n {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return &copyError{err: err}
	}
	return nil
}

// closeFrame handles src's close frame: it validates the payload (the only
// payload the relay looks into, unmasking a copy), records it if it begins
// the end of the connection, and forwards it unchanged unless a close frame
// already went to dst. src sends nothing after it (RFC 6455 §5.5.1), so the
// direction is done.
func (p *pump) closeFrame(h ws.Header) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	b := *bp
	hs := putHeader(b, h)
	b = b[:hs+int(h.Length)]
	_, err := io.ReadFull(&p.fr, b[hs:])
	if err != nil {
		p.srcFailed(err)
		return
	}
	var plain [ws.MaxControlFramePayloadSize]byte
	pl := plain[:copy(plain[:], b[hs:])]
	if h.Masked {
		ws.Cipher(pl, h.Mask, 0)
	}
	code, reason, failCode, failReason := checkClose(pl)
	if failCode != 0 {
		p.violation(failCode, failReason, srcDone)
		return
	}
	if !p.c.begin(p.src.name, code, reason, nil) && p.c.closedBy() == ByAuthgate {
		// The peer's answer to authgate's own close frame: the closing
		// handshake with this side is done, and the other side gets
		// authgate's frame (its own code), not this echo of it.
		return
	}
	d := p.dst
	d.wmu.Lock()
	defer d.wmu.Unlock()
	if d.closed || d.broken {
		return
	}
	d.closed = true
	d.armWrite(p.c.opt.WriteTimeout)
	n, err := d.conn.Write(b)
	d.written += int64(n)
	if err != nil {
		d.broken = true
	}
}

// srcFailed handles a read from src that failed at a frame boundary of dst:
// src vanished (EOF, reset), or, once the end has begun, did not send its
// close frame within CloseWait. dst is told with a close frame of its own:
// 1014 when the upstream is gone, 1001 when the client is.
func (p *pump) srcFailed(err error) {
	gone := fmt.Errorf("%w: %w", goneErr(p.src), err)
	if !p.c.begin(p.src.name, CodeAbnormal, "", gone) && isTimeout(err) {
		p.c.note(fmt.Errorf("%w: no close frame from %s: %w", ErrCloseTimeout, p.src.name, err))
	}
	p.markBroken(p.src)
	code, reason := goneCode(p.src)
	p.c.sendClose(p.dst, code, reason)
}

// violation fails the connection for a framing error of src: the close
// code goes to both sides, then src is read only to find its answering
// close frame; skip is the offending frame's payload length (or srcLost,
// srcDone).
func (p *pump) violation(code uint16, reason string, skip int64) {
	perr := &ProtocolError{Side: p.src.name, Code: code, Reason: reason}
	if !p.c.begin(ByAuthgate, code, reason, perr) {
		p.c.note(perr)
	}
	p.c.sendClose(p.src, code, reason)
	p.c.sendClose(p.dst, code, reason)
	p.finishSrc(skip)
}

// copyFailed handles a frame copy that failed after its header was read.
func (p *pump) copyFailed(ce *copyError) {
	if !ce.write && !ce.partial {
		p.srcFailed(ce.err)
		return
	}
	if !ce.write {
		// src failed mid-frame and dst holds half of it: no close frame can
		// follow on dst, so both just end (dst sees 1006).
		gone := fmt.Errorf("%w: %w", goneErr(p.src), ce.err)
		if !p.c.begin(p.src.name, CodeAbnormal, "", gone) && isTimeout(ce.err) {
			p.c.note(fmt.Errorf("%w: no close frame from %s: %w", ErrCloseTimeout, p.src.name, ce.err))
		}
		p.markBroken(p.src)
		p.c.stop(p.dst)
		return
	}
	// dst is gone or stopped reading, and may hold half a frame. src is
	// fine but mid-frame: it gets a close frame, then is drained.
	by, cause := p.dst.name, fmt.Errorf("%w: %w", goneErr(p.dst), ce.err)
	if isTimeout(ce.err) {
		by, cause = ByAuthgate, fmt.Errorf("%w: %s stopped reading: %w", ErrWriteTimeout, p.dst.name, ce.err)
	}
	p.c.begin(by, CodeAbnormal, "", cause)
	p.c.stop(p.dst)
	code, reason := goneCode(p.dst)
	p.c.sendClose(p.src, code, reason)
	p.finishSrc(ce.skip)
}

// finishSrc reads what is left of src once a close frame has gone to it.
func (p *pump) finishSrc(skip int64) {
	switch skip {
	case srcDone:
	case srcLost:
		p.linger()
	default:
		p.awaitClose(skip)
	}
}

// awaitClose reads src only to find its close frame, after skipping the
// rest of the current frame: frames are not checked or forwarded. Peers
// that wait for the server to close TCP after the closing handshake (as
// RFC 6455 §7.1.1 asks of clients) end here at once, not after CloseWait.
func (p *pump) awaitClose(skip int64) {
	if p.discard(skip) != nil {
		return
	}
	for {
		h, _, err := p.readHeader()
		if err != nil || h.OpCode == ws.OpClose {
			return
		}
		if p.discard(h.Length) != nil {
			return
		}
	}
}

// goneCode is what the other side is told when s is gone.
func goneCode(s *side) (uint16, string) {
	if s.name == ByUpstream {
		return CodeBadGateway, "bad gateway"
	}
	return CodeGoingAway, "client gone"
}

// markBroken stops all writes to s.
func (p *pump) markBroken(s *side) {
	s.wmu.Lock()
	s.broken = true
	s.wmu.Unlock()
}

// linger ends a src whose stream can no longer be parsed: it half-closes
// src, so the peer reads the close frame sent to it and then EOF, and
// discards what src still sends until it closes or CloseWait has passed.
// Closing a socket with unread input would send a reset, which can destroy
// the close frame before the peer has read it.
func (p *pump) linger() {
	s := p.src
	s.wmu.Lock()
	s.broken = true
	if cw, ok := s.conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	s.wmu.Unlock()
	io.Copy(io.Discard, s.conn)
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
