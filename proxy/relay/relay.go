// Package relay copies WebSocket frames between a client and an upstream
// connection after the handshake: authgate has forwarded the upgrade, the
// upstream has answered 101, and from then on the relay reads frame headers
// (github.com/gobwas/ws) and copies every payload unchanged, still masked
// from the client and unmasked from the upstream, so subprotocols and
// extensions such as permessage-deflate stay end to end.
//
// The relay owns the closing handshake. It lets close frames pass with their
// codes and reasons, can inject close frames of its own between frames
// (authgate-initiated: expiry, revocation, shutdown), answers a peer that
// vanishes with a close frame to the other one, fails a peer that breaks
// RFC 6455 framing with 1002, and drops a peer that stops reading.
//
// What it does not do: it never looks inside data frames. Text frames are
// not checked for valid UTF-8 (RFC 6455 §8.1) and compressed frames are not
// inflated; both endpoints do that themselves, and doing it here would cost
// the copy the relay exists to avoid. Only frame headers and close frame
// payloads are read.
//
// Memory: a direction with a goroutine waits in a read into a 512-byte
// buffer of its own; larger buffers are borrowed from a pool only while a
// frame is copied. While hundreds of relays are open, a direction idle at
// a frame boundary is parked on Linux (park.go): no goroutine and no
// buffer, only an epoll registration, until its socket is readable or the
// relay needs it (Close, a failure of the other direction).
package relay

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// Who began the end of a connection, as reported in Result.ClosedBy.
const (
	ByClient   = "client"
	ByUpstream = "upstream"
	ByAuthgate = "authgate"
)

// Close codes the relay reports or sends (RFC 6455 §7.4.1, IANA registry).
const (
	CodeNormal        uint16 = 1000
	CodeGoingAway     uint16 = 1001
	CodeProtocolError uint16 = 1002
	// CodeNoStatus is reported, never sent, for a close frame without a code.
	CodeNoStatus uint16 = 1005
	// CodeAbnormal is reported, never sent, when a connection ended
	// without a close frame (a peer vanished, or the relay dropped it).
	CodeAbnormal       uint16 = 1006
	CodeInvalidPayload uint16 = 1007
	CodeInternalError  uint16 = 1011
	CodeServiceRestart uint16 = 1012
	CodeBadGateway     uint16 = 1014
)

// Defaults for the zero Options.
const (
	DefaultCloseWait    = 2 * time.Second
	DefaultWriteTimeout = 10 * time.Second
)

// Errors reported in Result.Err. They are matched with errors.Is; the
// underlying network error is wrapped alongside.
var (
	// ErrClientGone: the client connection ended without a close frame
	// (EOF or reset) or could no longer be written to.
	ErrClientGone = errors.New("client connection lost")
	// ErrUpstreamGone: the same for the upstream connection.
	ErrUpstreamGone = errors.New("upstream connection lost")
	// ErrWriteTimeout: a peer stopped reading; a write did not finish
	// within Options.WriteTimeout and the relay dropped the connection.
	ErrWriteTimeout = errors.New("write timed out")
	// ErrCloseTimeout: a peer did not finish the closing handshake within
	// Options.CloseWait; the sockets were closed anyway.
	ErrCloseTimeout = errors.New("closing handshake timed out")
)

// ProtocolError is the Result.Err of a connection the relay failed because
// one side broke RFC 6455 framing. Code (1002, or 1007 for a close reason
// that is not UTF-8) and Reason were sent to both sides.
type ProtocolError struct {
	Side   string // ByClient or ByUpstream: who sent the offending frame
	Code   uint16
	Reason string
}

func (e *ProtocolError) Error() string {
	return fmt.Sprintf("%s protocol error %d: %s", e.Side, e.Code, e.Reason)
}

// Options tune a relay. The zero value is ready to use.
type Options struct {
	// Deflate reports that permessage-deflate (RFC 7692) was negotiated
	// between the client and the upstream. It allows RSV1 on the first
	// frame of a data message; with false, any RSV bit is a protocol
	// error (RFC 6455 §5.2), as no other extension is understood.
	Deflate bool

	// CloseWait bounds the end of a connection: from the first close
	// frame sent or received (or the first failure), each side has this
	// long to send its own close frame before both sockets are closed.
	// Zero means DefaultCloseWait.
	CloseWait time.Duration

	// WriteTimeout bounds each write to a peer, so one that stops reading
	// cannot pin the relay: the connection is dropped (Result.Err is
	// ErrWriteTimeout). A large payload is streamed in chunks of at most
	// 64 KiB, each with this timeout; the deadline is renewed lazily, so a
	// write gets between 7/8 and all of it. Zero means DefaultWriteTimeout.
	WriteTimeout time.Duration

	// restAfter is how long a direction waits for data before handing its
	// work to a fresh goroutine; zero means defaultRestAfter. Tests shorten it.
	restAfter time.Duration
}

// defaultRestAfter: an idle direction's goroutine is replaced by a fresh
// one (or, while parking is on, parked) after this long without data. Goroutine stacks grow while frames are
// copied (the write path is deeper than the 2 KiB minimum stack) and the
// runtime never shrinks a stack back to 2 KiB: that needs the stack in use
// plus 800 bytes of reserve under a quarter of it. A new goroutine starts
// small (2 KiB, or the process's average stack use when
// GODEBUG=adaptivestackstart is on, its default), so a long-idle
// connection costs two minimal stacks instead of two grown ones.
const defaultRestAfter = 30 * time.Second

// Result describes how a relayed connection ended.
type Result struct {
	// CloseCode is the code of the close frame that began the closing
	// handshake, whoever sent it; CodeNoStatus (1005) when that frame had
	// no code; CodeAbnormal (1006) when the connection ended without one
	// (a peer vanished, or the relay dropped a peer that stopped reading).
	// 1005 and 1006 are only reported, never sent.
	CloseCode uint16
	// Reason is the close frame's reason (for authgate-initiated closes,
	// the one sent to the client).
	Reason string
	// ClosedBy is ByClient, ByUpstream or ByAuthgate: who began the end.
	// A protocol error and a write timeout count as ByAuthgate; a peer that
	// vanished counts as that peer.
	ClosedBy string
	// BytesIn counts frame bytes (headers and payloads) written to the
	// upstream, BytesOut those written to the client, including close
	// frames injected by the relay.
	BytesIn, BytesOut int64
	// Err is nil after a clean closing handshake. Otherwise it matches one
	// of ErrClientGone, ErrUpstreamGone, ErrWriteTimeout, ErrCloseTimeout
	// or is a *ProtocolError.
	Err error
}

// Conn relays one WebSocket connection. Create it with New, run it with Run;
// Close may be called from any goroutine at any time.
type Conn struct {
	opt      Options
	client   side
	upstream side
	c2u      pump // reads the client, writes the upstream
	u2c      pump // reads the upstream, writes the client

	started atomic.Bool
	running atomic.Int32 // directions still relaying
	onDone  func(Result)

	swept      bool // a direction is parkable: restSweeper tracks the Conn
	sweepIndex int  // guarded by restSweeper.mu: position in its list

	mu      sync.Mutex
	closing bool   // guarded by mu: the end has begun; reads are bounded by CloseWait
	res     Result // guarded by mu: ClosedBy, CloseCode, Reason, Err
}

// side is one peer's socket as written to. Its mutex makes writes of whole
// frames atomic, so a close frame can be injected at a frame boundary.
type side struct {
	conn net.Conn
	name string // ByClient or ByUpstream
	mask bool   // frames the relay itself writes here are masked (the upstream is a server, §5.3)

	wmu     sync.Mutex
	closed  bool      // guarded by wmu: a close frame went out; no more frames
	broken  bool      // guarded by wmu: a write failed or a frame is half written; nothing more
	renewAt time.Time // guarded by wmu: when the write deadline must be pushed out again
	wdl     time.Time // guarded by wmu: the write deadline
	written int64     // guarded by wmu
}

// New prepares a relay between client and upstream, both past the
// handshake. clientBuffered and upstreamBuffered are bytes the handshake
// readers had already read past the HTTP headers (for example from a
// bufio.Reader's Peek(Buffered())): they are relayed first, then the relay
// reads the net.Conns directly, which lets payloads move socket to socket
// with splice(2) when both are *net.TCPConn. The slices are not copied and
// must not be changed afterwards. The Conn owns both connections from now
// on and closes them when Run returns.
func New(client net.Conn, clientBuffered []byte, upstream net.Conn, upstreamBuffered []byte, opt Options) *Conn {
	if opt.CloseWait <= 0 {
		opt.CloseWait = DefaultCloseWait
	}
	if opt.WriteTimeout <= 0 {
		opt.WriteTimeout = DefaultWriteTimeout
	}
	if opt.restAfter <= 0 {
		opt.restAfter = defaultRestAfter
	}
	c := &Conn{opt: opt}
	c.client = side{conn: client, name: ByClient}
	c.upstream = side{conn: upstream, name: ByUpstream, mask: true}
	c.c2u = pump{c: c, src: &c.client, dst: &c.upstream, fromClient: true}
	c.c2u.fr = frameReader{conn: client, pending: nonEmpty(clientBuffered)}
	c.u2c = pump{c: c, src: &c.upstream, dst: &c.client}
	c.u2c.fr = frameReader{conn: upstream, pending: nonEmpty(upstreamBuffered)}
	c.c2u.parkable, c.u2c.parkable = canPark(client), canPark(upstream)
	return c
}

func nonEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// Run relays frames both ways until the connection has ended, closes both
// sockets and reports how it ended. The calling goroutine only waits; use
// Start to not hold one at all. Run or Start may be called once.
func (c *Conn) Run() Result {
	ch := make(chan Result, 1)
	err := c.Start(func(r Result) { ch <- r })
	if err != nil {
		return Result{Err: err}
	}
	return <-ch
}

// Start relays frames both ways on two goroutines of its own (one per
// direction) and returns at once. When the connection has ended and both
// sockets are closed, done (if not nil) is called once, on one of those
// goroutines, with how it ended. An HTTP handler that hijacked the
// connection can call Start and return: nothing then holds its (larger)
// stack while the connection is idle. Run or Start may be called once.
func (c *Conn) Start(done func(Result)) error {
	if !c.started.CompareAndSwap(false, true) {
		return errRunTwice
	}
	c.onDone = done
	c.running.Store(2)
	if c.c2u.parkable || c.u2c.parkable {
		c.swept = true
		restSweeper.add(c)
	}
	go c.relayClientToUpstream()
	go c.relayUpstreamToClient()
	return nil
}

var errRunTwice = errors.New("relay: Run or Start called twice")

// The goroutines of the two directions, named so stacks read well. A
// direction's run returns false when it handed its work to a fresh
// goroutine after idling (see defaultRestAfter).
func (c *Conn) relayClientToUpstream() {
	if c.c2u.run() {
		c.directionDone()
	}
}

func (c *Conn) relayUpstreamToClient() {
	if c.u2c.run() {
		c.directionDone()
	}
}

// directionDone finishes the connection after the second direction ends.
func (c *Conn) directionDone() {
	if c.running.Add(-1) != 0 {
		return
	}
	res := c.finish()
	if c.onDone != nil {
		c.onDone(res)
	}
}

// finish closes the sockets and assembles the Result.
func (c *Conn) finish() Result {
	// Both directions are done: each received its peer's close frame, or
	// gave up on it. Closing the sockets ends the TCP connections.
	if c.swept {
		restSweeper.remove(c)
	}
	c.client.conn.Close()
	c.upstream.conn.Close()

	c.mu.Lock()
	res := c.res
	c.mu.Unlock()
	c.client.wmu.Lock()
	res.BytesOut = c.client.written
	c.client.wmu.Unlock()
	c.upstream.wmu.Lock()
	res.BytesIn = c.upstream.written
	c.upstream.wmu.Unlock()
	return res
}

// Close ends the connection on authgate's behalf: at the next frame boundary
// on each side (a frame being copied completes first; RFC 6455 §5.4 lets
// a control frame sit between the fragments of a message), it sends the
// client a close frame with clientCode and clientReason and the upstream a
// masked one with upstreamCode and upstreamReason. Then both peers have
// CloseWait to answer with their close frames before Run closes the sockets.
//
// A code of 0 sends a close frame without a code; a code that must not be
// sent (1004-1006, 1015, 1016-2999, below 1000, 5000 and above) is replaced
// by 1011. Reasons are cut to 123 bytes; invalid UTF-8 is replaced.
//
// Close is idempotent and safe to call concurrently with Run, before it, and
// after it; when the end of the connection has already begun (a peer's
// close frame, a failure, an earlier Close) it does nothing. It returns once
// both close frames are written, which can wait for a frame in flight:
// at most about CloseWait plus WriteTimeout. To wait for the end, wait for
// Run to return.
func (c *Conn) Close(clientCode uint16, clientReason string, upstreamCode uint16, upstreamReason string) {
	clientCode, clientReason = sendable(clientCode, clientReason)
	upstreamCode, upstreamReason = sendable(upstreamCode, upstreamReason)
	reported := clientCode
	if reported == 0 {
		reported = CodeNoStatus
	}
	if !c.begin(ByAuthgate, reported, clientReason, nil) {
		return
	}
	c.sendClose(&c.client, clientCode, clientReason)
	c.sendClose(&c.upstream, upstreamCode, upstreamReason)
}

// begin records the first event that ends the connection and bounds what
// follows: from now on every read waits at most CloseWait. It reports
// whether this event was the first.
func (c *Conn) begin(by string, code uint16, reason string, err error) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.closing = true
	c.res.ClosedBy, c.res.CloseCode, c.res.Reason, c.res.Err = by, code, reason, err
	// Under mu, so that a later stop (a deadline in the past) is not
	// overtaken by this one.
	dl := time.Now().Add(c.opt.CloseWait)
	c.client.conn.SetReadDeadline(dl)
	c.upstream.conn.SetReadDeadline(dl)
	// A parked direction needs its goroutine back to read the close frame.
	c.unparkLocked(&c.c2u)
	c.unparkLocked(&c.u2c)
	return true
}

// note records err as the reason of an unclean end when none is known yet
// (for example a peer that did not answer a close frame in time).
func (c *Conn) note(err error) {
	c.mu.Lock()
	if c.res.Err == nil {
		c.res.Err = err
	}
	c.mu.Unlock()
}

// closedBy reports who began the end ("" if nobody yet).
func (c *Conn) closedBy() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.res.ClosedBy
}

// isClosing reports whether the end of the connection has begun.
func (c *Conn) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// armIdle sets p's source read deadline restAfter ahead, unless the end
// has begun (then reads are bounded by CloseWait and that must stay).
func (c *Conn) armIdle(p *pump, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	p.src.conn.SetReadDeadline(now.Add(c.opt.restAfter))
	p.rearmAt = now.Add(c.opt.restAfter / 2)
}

// rest reports whether p's read timed out on its idle deadline (rather than
// on a closing one) and, if so, parks p or moves it to a fresh goroutine;
// the caller's goroutine must then return.
func (c *Conn) rest(p *pump) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.restLocked(p)
	return true
}

// stop wakes the reader of s at once: nothing more is wanted from it.
func (c *Conn) stop(s *side) {
	c.mu.Lock()
	s.conn.SetReadDeadline(aLongTimeAgo)
	if s == &c.client {
		c.unparkLocked(&c.c2u)
	} else {
		c.unparkLocked(&c.u2c)
	}
	c.mu.Unlock()
}

// aLongTimeAgo is a deadline in the past, to unblock a read at once.
var aLongTimeAgo = time.Unix(1, 0)

// sendClose writes a close frame to s at a frame boundary, unless a close
// frame went out there already or s cannot be written.
func (c *Conn) sendClose(s *side, code uint16, reason string) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed || s.broken {
		return
	}
	s.closed = true
	var f [ws.MaxHeaderSize + ws.MaxControlFramePayloadSize]byte
	b := appendClose(f[:0], code, reason, s.mask)
	s.armWrite(c.opt.WriteTimeout)
	n, err := s.conn.Write(b)
	s.written += int64(n)
	if err != nil {
		s.broken = true
	}
}

// armWrite makes sure a write deadline at least 7/8 WriteTimeout away is
// set. Renewing it lazily keeps SetWriteDeadline off the per-frame path.
// Call with wmu held.
func (s *side) armWrite(timeout time.Duration) {
	now := time.Now()
	if now.Before(s.renewAt) {
		return
	}
	s.wdl = now.Add(timeout)
	s.conn.SetWriteDeadline(s.wdl)
	s.renewAt = now.Add(timeout / 8)
}

// goneErr is the sentinel for a side that vanished.
func goneErr(s *side) error {
	if s.name == ByClient {
		return ErrClientGone
	}
	return ErrUpstreamGone
}
