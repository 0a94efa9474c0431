package proxy

import (
	"context"
	"runtime/debug"
	"sync"
	"time"

	"authgate/policy"
	"authgate/proxy/relay"
	"authgate/rewrite"
)

// wsConn is one relayed WebSocket as the registry knows it: enough to
// decide it again (revocation), to close it (expiry, shutdown) and to log
// its end. The relay does not know about the registry, so it costs nothing
// per frame.
type wsConn struct {
	relay     *relay.Conn
	route     *policy.Route  // nil for an unmatched path passed through
	facts     rewrite.Result // the token facts it was admitted with, to decide again
	logCfg    policy.Log     // log.user_ids of the snapshot it was admitted under
	origin    string
	requestID string
	opened    time.Time

	deadline  time.Time // close_on_expiry: when the client JWT expires (plus leeway)
	heapIndex int       // position in the expiry heap; -1 when not in it
}

// closeCause is an authgate-initiated close: the code and reason for each
// side.
type closeCause struct {
	clientCode     uint16
	clientReason   string
	upstreamCode   uint16
	upstreamReason string
}

var closeShutdown = closeCause{relay.CodeServiceRestart, "service restart", relay.CodeGoingAway, "authgate shutting down"}

type registry struct {
	mu    sync.Mutex
	conns map[*wsConn]struct{}
	wg    sync.WaitGroup
	trim  *time.Timer // returns memory to the OS once many connections sit idle

	trimmed time.Time // guarded by mu: the last trim
}

// Trimming: the garbage of thousands of handshakes, and the stacks of the
// goroutines the relay parks when connections go idle, stay in the
// process's RSS (an idle process hardly collects, and the heap goal keeps
// twice the live heap). When at least trimMinConns connections have been
// open with no connection opened or closed for trimAfter (past the relay's
// parking of idle directions, within a second), the registry returns that
// memory to the OS: a forced collection and a scavenge, about 10 ms of CPU
// at 5,000 connections, at most once per trimEvery, so a steady trickle of
// connections costs nothing measurable.
const (
	trimMinConns = 1000
	trimAfter    = time.Second
	trimEvery    = 30 * time.Second
)

func (r *registry) init() {
	r.conns = make(map[*wsConn]struct{})
	r.trim = time.AfterFunc(time.Hour, r.trimMemory)
	r.trim.Stop()
}

func (r *registry) add(c *wsConn) {
	r.mu.Lock()
	r.conns[c] = struct{}{}
	r.wg.Add(1)
	r.changed()
	r.mu.Unlock()
}

func (r *registry) remove(c *wsConn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.changed()
	r.mu.Unlock()
	r.wg.Done()
}

// changed (re)arms the trim timer while many connections are open.
// Called with mu held.
func (r *registry) changed() {
	if len(r.conns) >= trimMinConns {
		r.trim.Reset(trimAfter)
	} else {
		r.trim.Stop()
	}
}

func (r *registry) trimMemory() {
	r.mu.Lock()
	if len(r.conns) < trimMinConns {
		r.mu.Unlock()
		return
	}
	if wait := trimEvery - time.Since(r.trimmed); wait > 0 {
		r.trim.Reset(wait) // too soon after the last one: later
		r.mu.Unlock()
		return
	}
	r.trimmed = time.Now()
	r.mu.Unlock()
	debug.FreeOSMemory()
}

// begin and end bracket a WebSocket upgrade in flight, so that wait also
// waits for upgrades that will become connections after Shutdown began.
func (r *registry) begin() { r.wg.Add(1) }
func (r *registry) end()   { r.wg.Done() }

func (r *registry) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns)
}

// snapshot returns the open connections.
func (r *registry) snapshot() []*wsConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*wsConn, 0, len(r.conns))
	for c := range r.conns {
		out = append(out, c)
	}
	return out
}

// closeAll closes every open connection with cause, at a frame boundary,
// and returns how many it closed.
func (r *registry) closeAll(cause closeCause) int {
	conns := r.snapshot()
	// Close waits for a frame in flight (up to the relay's write timeout),
	// so thousands of connections are closed concurrently.
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.relay.Close(cause.clientCode, cause.clientReason, cause.upstreamCode, cause.upstreamReason)
		}()
	}
	wg.Wait()
	return len(conns)
}

// wait returns when every registered connection has ended, or ctx is done.
func (r *registry) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// routeName is the route's name, or "" for an unmatched path.
func (c *wsConn) routeName() string {
	if c.route == nil {
		return ""
	}
	return c.route.Name
}
