package proxy

import (
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"sync"
	"time"
)

// connTrimmer returns memory to the OS after a burst of connections: a
// reconnect storm's handshakes (issue 23) leave their goroutine stacks,
// buffers and garbage in the process's RSS long after they are gone (the
// heap goal keeps twice the live heap, and Go's scavenger returns the
// rest slowly). The registry's trim covers open WebSockets; this covers
// connections that never became one. While connections arrive it counts
// them per second (a timer that runs only then); after a second with at
// least burstMinConns new connections, the first second with fewer than
// a tenth of that ends the burst, and it forces a collection and a
// scavenge (debug.FreeOSMemory, a few ms), at most once per
// burstTrimEvery.
type connTrimmer struct {
	mu       sync.Mutex
	accepted int  // new connections since the last tick
	armed    bool // the tick timer is running
	burst    bool // a second of the burst has been seen
	timer    *time.Timer
	trimmed  time.Time
	free     func() // debug.FreeOSMemory; tests count calls
}

const (
	burstMinConns  = 1000
	burstTick      = time.Second
	burstTrimEvery = 5 * time.Second
)

func newConnTrimmer() *connTrimmer {
	t := &connTrimmer{free: freeOSMemory}
	t.timer = time.AfterFunc(time.Hour, t.tick)
	t.timer.Stop()
	return t
}

// connState is the http.Server's ConnState hook.
func (t *connTrimmer) connState(_ net.Conn, st http.ConnState) {
	if st != http.StateNew {
		return
	}
	t.mu.Lock()
	t.accepted++
	if !t.armed {
		t.armed = true
		t.timer.Reset(burstTick)
	}
	t.mu.Unlock()
}

func (t *connTrimmer) tick() {
	t.mu.Lock()
	n := t.accepted
	t.accepted = 0
	trim := false
	switch {
	case n >= burstMinConns:
		t.burst = true
	case t.burst && n*10 < burstMinConns && time.Since(t.trimmed) >= burstTrimEvery:
		t.burst, trim, t.trimmed = false, true, time.Now()
	}
	// Tick on while connections arrive or a burst waits for its trim.
	t.armed = n > 0 || t.burst
	if t.armed {
		t.timer.Reset(burstTick)
	}
	t.mu.Unlock()
	if trim {
		t.free()
	}
}

// freeOSMemory collects twice before it scavenges: a sync.Pool keeps
// what it held through one collection (its victim cache), and net/http
// pools every connection's bufio buffers, 4 KiB each way, thousands of
// them after a storm.
func freeOSMemory() {
	runtime.GC()
	debug.FreeOSMemory()
}

func (t *connTrimmer) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.timer.Stop()
	t.armed = false
}
