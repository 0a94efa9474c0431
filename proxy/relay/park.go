package relay

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Parking: an idle direction costs no goroutine. A goroutine that waits at
// a frame boundary holds a stack (2 KiB at least) and, for as long as the
// process lives, a runtime g (about 480 bytes); at 5,000 idle connections
// that was half of authgate's memory per connection. So a direction that
// has waited at a frame boundary for a sweep interval (restTick to twice
// that) is asked to rest: its read is woken with a deadline in the past,
// and its goroutine parks the socket with idlePoller, which waits on all
// parked sockets at once and starts a fresh goroutine for the direction
// when its socket is readable again (data, FIN, reset) or when the
// relay needs it back (Close, a failure of the other direction).
//
// Only a frame boundary is ever interrupted: a read in the middle of a
// frame keeps the idle deadline it always had. A direction whose source
// is not a *net.TCPConn (TLS, in-memory pipes) is not parked, as its
// socket's readiness does not say whether a read would block; it still
// moves to a fresh goroutine after restAfter (see defaultRestAfter).

// restTick is how often the sweeper looks for directions to rest.
const restTick = 100 * time.Millisecond

// parkMinConns: directions are parked only while at least this many
// relays with a parkable direction are open. Parking is for scale (5,000
// idle connections save 25 MB); a few connections keep their goroutines,
// which wake for data without the poller's extra hop. Tests lower it.
var parkMinConns atomic.Int64

func init() { parkMinConns.Store(256) }

// parkingOn reports whether enough relays are open to park directions.
func parkingOn() bool { return restSweeper.open.Load() >= parkMinConns.Load() }

// waitRest marks a pump's wait word once the sweeper asked it to rest.
const waitRest = 1 << 31

// sweeper tracks the started Conns with a parkable direction.
type sweeper struct {
	open  atomic.Int64 // len(conns)
	mu    sync.Mutex
	conns []*Conn
	timer *time.Timer   // runs sweep every restTick while conns is not empty
	todo  []restRequest // scratch of sweep, guarded by mu
}

var restSweeper sweeper

// restRequest is a direction to ask for a rest, and the wait it was in.
type restRequest struct {
	p *pump
	w uint32
}

// add starts tracking c (Start calls it).
func (s *sweeper) add(c *Conn) {
	s.mu.Lock()
	c.sweepIndex = len(s.conns)
	s.conns = append(s.conns, c)
	s.open.Store(int64(len(s.conns)))
	if len(s.conns) == 1 {
		if s.timer == nil {
			s.timer = time.AfterFunc(restTick, s.sweep)
		} else {
			s.timer.Reset(restTick)
		}
	}
	s.mu.Unlock()
}

// remove stops tracking c (finish calls it).
func (s *sweeper) remove(c *Conn) {
	s.mu.Lock()
	i := c.sweepIndex
	last := len(s.conns) - 1
	s.conns[i] = s.conns[last]
	s.conns[i].sweepIndex = i
	s.conns[last] = nil
	s.conns = s.conns[:last]
	s.open.Store(int64(last))
	if last == 0 {
		s.timer.Stop()
		s.conns = nil // a burst of connections leaves no large array behind
	}
	s.mu.Unlock()
}

// sweep asks every parkable direction that has waited at the same frame
// boundary since the last sweep to rest.
func (s *sweeper) sweep() {
	s.mu.Lock()
	// The scratch is this sweep's alone while it runs: a sweep that
	// overlaps it (add re-arming the timer) gets a fresh one. Sharing it
	// let one sweep zero the entries another was reading (a nil pump,
	// SIGSEGV, in the e2e soak).
	todo := s.todo[:0]
	s.todo = nil
	if !parkingOn() {
		s.todo = todo
		if len(s.conns) > 0 {
			s.timer.Reset(restTick)
		}
		s.mu.Unlock()
		return
	}
	for _, c := range s.conns {
		for _, p := range [2]*pump{&c.c2u, &c.u2c} {
			if !p.parkable {
				continue
			}
			w := p.wait.Load()
			if w&1 == 1 && w&waitRest == 0 && w == p.seen {
				todo = append(todo, restRequest{p, w})
			}
			p.seen = w
		}
	}
	s.mu.Unlock()
	for i, r := range todo {
		r.p.c.askRest(r.p, r.w)
		todo[i] = restRequest{}
	}
	s.mu.Lock()
	if cap(todo) <= 1024 && s.todo == nil {
		s.todo = todo[:0]
	}
	// Re-armed after the work, so sweeps do not pile up when asking
	// thousands of directions to rest takes longer than a tick.
	if len(s.conns) > 0 {
		s.timer.Reset(restTick)
	}
	s.mu.Unlock()
}

// askRest wakes p's boundary read with a deadline in the past if p is
// still in the wait w and the end has not begun.
func (c *Conn) askRest(p *pump, w uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || !p.wait.CompareAndSwap(w, w|waitRest) {
		return
	}
	p.src.conn.SetReadDeadline(aLongTimeAgo)
}

// restAnswer says what a direction does after the sweeper asked it to rest.
type restAnswer int

const (
	restGoOn  restAnswer = iota // data arrived anyway: relay it
	restRetry                   // the end has begun: read again, bounded by CloseWait
	restDone                    // parked, or moved to a fresh goroutine: return
	restFail                    // the read failed for another reason
)

// rested ends p's wait after the sweeper asked it to rest; err is what
// the boundary read returned.
func (c *Conn) rested(p *pump, err error) restAnswer {
	c.mu.Lock()
	defer c.mu.Unlock()
	p.wait.Store((p.wait.Load()&^waitRest + 1) &^ waitRest)
	switch {
	case err == nil || !isTimeout(err):
		if !c.closing {
			// Undo the deadline in the past.
			now := time.Now()
			p.src.conn.SetReadDeadline(now.Add(c.opt.restAfter))
			p.rearmAt = now.Add(c.opt.restAfter / 2)
		}
		if err != nil {
			return restFail
		}
		return restGoOn
	case c.closing:
		// begin set the closing deadline after the sweeper's: the timeout
		// may have been the sweeper's.
		return restRetry
	}
	c.restLocked(p)
	return restDone
}

// restLocked takes p off its goroutine: it clears the idle deadline and
// parks p's socket, or, if it cannot, starts a fresh goroutine for p.
// The caller's goroutine must then return. Call with mu held.
func (c *Conn) restLocked(p *pump) {
	p.src.conn.SetReadDeadline(time.Time{})
	p.rearmAt = time.Time{}
	if p.parkable && parkingOn() && idlePoller.park(p) {
		// Parked at a frame boundary: the read buffer is empty.
		inlinePool.Put(p.fr.buf)
		p.fr.buf = nil
		return
	}
	c.resume(p)
}

// resume starts a goroutine for p's direction.
func (c *Conn) resume(p *pump) {
	if p.fromClient {
		go c.relayClientToUpstream()
	} else {
		go c.relayUpstreamToClient()
	}
}

// unparkLocked gives p back a goroutine if it is parked. Call with mu held.
func (c *Conn) unparkLocked(p *pump) {
	if p.parkID == 0 {
		return
	}
	idlePoller.unpark(p)
	c.resume(p)
}

// readable is idlePoller's report that the socket p parked with id is
// readable.
func (c *Conn) readable(p *pump, id uint64) {
	c.mu.Lock()
	if p.parkID == id {
		c.unparkLocked(p)
	}
	c.mu.Unlock()
}

// canPark reports whether a direction reading conn can be parked.
func canPark(conn net.Conn) bool {
	_, ok := conn.(*net.TCPConn)
	return ok && pollerSupported
}
