package proxy

import (
	"context"
	"sync"
	"time"

	"authgate/policy"
	"authgate/proxy/relay"
)

// wsConn is one relayed WebSocket as the registry knows it: enough to
// decide it again (revocation), to close it (expiry, shutdown) and to log
// its end. The relay does not know about the registry, so it costs nothing
// per frame.
type wsConn struct {
	relay     *relay.Conn
	route     *policy.Route
	decision  policy.Decision // the decision it was admitted with (its token facts)
	origin    string
	requestID string
	user      string
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
}

func (r *registry) init() { r.conns = make(map[*wsConn]struct{}) }

func (r *registry) add(c *wsConn) {
	r.mu.Lock()
	r.conns[c] = struct{}{}
	r.wg.Add(1)
	r.mu.Unlock()
}

func (r *registry) remove(c *wsConn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
	r.wg.Done()
}

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
	for _, c := range conns {
		c.relay.Close(cause.clientCode, cause.clientReason, cause.upstreamCode, cause.upstreamReason)
	}
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
