package proxy

import (
	"container/heap"
	"sync"
	"time"

	"authgate/event"
	"authgate/policy"
	"authgate/proxy/relay"
	"authgate/rewrite"
)

// revoke decides every open WebSocket again under snap as of now, with
// the token facts it was admitted with, and closes those now rejected on
// routes with revoke_open: the class's close code to the client, 1001 to
// the upstream.
func (s *Server) revoke(snap *policy.Snapshot, now time.Time, why string) int {
	n := 0
	for _, c := range s.conns.snapshot() {
		if c.route == nil {
			continue
		}
		rt := snap.RouteByName(c.route.Name)
		if rt == nil || !rt.RevokeOpen {
			continue
		}
		d := rt.Evaluate(c.facts, c.origin, now)
		if d.Action != policy.ActionReject {
			continue
		}
		n++
		s.log.Warn().Str(event.FieldEvent, "revoke").Str(event.FieldRoute, rt.Name).
			Str(event.FieldRequestID, c.requestID).Str(event.FieldClass, d.Class.String()).
			Int(event.FieldCloseCode, d.Rejection.CloseCode).Str(event.FieldReason, why).
			Msg("open websocket revoked")
		go c.relay.Close(uint16(d.Rejection.CloseCode), d.Rejection.Message, relay.CodeGoingAway, "revoked: "+why)
	}
	return n
}

// onBoundary runs when a stage's until passes: the same re-decision as a
// reload, and the next boundary is scheduled.
func (s *Server) onBoundary() {
	snap := s.snap.Load()
	now := s.now()
	s.revoke(snap, now, "stage changed")
	s.boundary.schedule(snap, now, s.onBoundary)
}

// boundaryTimer fires at the next stage boundary of the snapshot in
// force. It is a time.AfterFunc, so nothing runs while it waits.
type boundaryTimer struct {
	mu      sync.Mutex
	t       *time.Timer
	stopped bool
}

func (b *boundaryTimer) schedule(snap *policy.Snapshot, now time.Time, f func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.t != nil {
		b.t.Stop()
		b.t = nil
	}
	next := snap.NextBoundary(now)
	if b.stopped || next.IsZero() {
		return
	}
	// A few milliseconds past the boundary, so Rule.At sees the new stage.
	b.t = time.AfterFunc(next.Sub(now)+5*time.Millisecond, f)
}

func (b *boundaryTimer) stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = true
	if b.t != nil {
		b.t.Stop()
	}
}

// expiryQueue closes WebSockets whose client JWT expires (close_on_expiry)
// at exp plus leeway: one heap and one timer for all connections, not a
// goroutine each.
type expiryQueue struct {
	mu      sync.Mutex
	h       expiryHeap
	t       *time.Timer
	at      time.Time // when t fires
	fire    func(*wsConn)
	stopped bool
}

func (q *expiryQueue) init(fire func(*wsConn)) { q.fire = fire }

// add schedules c to be closed at deadline.
func (q *expiryQueue) add(c *wsConn, deadline time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.stopped {
		return
	}
	c.deadline = deadline
	heap.Push(&q.h, c)
	q.rearm()
}

// remove unschedules c (it closed by itself).
func (q *expiryQueue) remove(c *wsConn) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if c.heapIndex >= 0 && c.heapIndex < len(q.h) && q.h[c.heapIndex] == c {
		heap.Remove(&q.h, c.heapIndex)
	}
}

// rearm points the timer at the earliest deadline. Called with mu held.
func (q *expiryQueue) rearm() {
	if len(q.h) == 0 {
		return
	}
	next := q.h[0].deadline
	if q.t != nil && !q.at.After(next) {
		return
	}
	if q.t != nil {
		q.t.Stop()
	}
	q.at = next
	q.t = time.AfterFunc(time.Until(next), q.run)
}

func (q *expiryQueue) run() {
	q.mu.Lock()
	q.t = nil
	now := time.Now()
	var due []*wsConn
	for len(q.h) > 0 && !q.h[0].deadline.After(now) {
		due = append(due, heap.Pop(&q.h).(*wsConn))
	}
	q.rearm()
	q.mu.Unlock()
	for _, c := range due {
		q.fire(c)
	}
}

func (q *expiryQueue) stop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.stopped = true
	if q.t != nil {
		q.t.Stop()
	}
}

func (s *Server) expire(c *wsConn) {
	rej := c.route.Codes[rewrite.ClassJWTExpired]
	s.log.Info().Str(event.FieldEvent, "expiry").Str(event.FieldRoute, c.route.Name).
		Str(event.FieldRequestID, c.requestID).Int(event.FieldCloseCode, rej.CloseCode).Msg("client token expired")
	go c.relay.Close(uint16(rej.CloseCode), rej.Message, relay.CodeGoingAway, "token expired")
}

type expiryHeap []*wsConn

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].deadline.Before(h[j].deadline) }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIndex, h[j].heapIndex = i, j
}
func (h *expiryHeap) Push(x any) {
	c := x.(*wsConn)
	c.heapIndex = len(*h)
	*h = append(*h, c)
}
func (h *expiryHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	c.heapIndex = -1
	return c
}
