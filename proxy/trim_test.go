package proxy

import (
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// TestConnTrimmer: a burst of connections (a reconnect storm's
// handshakes) returns memory once it is over, once; a smaller crowd, or
// a burst still going on, does not; nothing ticks once traffic stops.
func TestConnTrimmer(t *testing.T) {
	var freed atomic.Int32
	tr := newConnTrimmer()
	tr.free = func() { freed.Add(1) }
	defer tr.stop()
	var c net.Conn
	arrive := func(n int) {
		for range n {
			tr.connState(c, http.StateNew)
			tr.connState(c, http.StateHijacked) // ignored
		}
	}
	// Two seconds of burst: no trim while it goes on.
	arrive(burstMinConns + 100)
	time.Sleep(burstTick + 100*time.Millisecond)
	arrive(burstMinConns + 100)
	time.Sleep(burstTick)
	if n := freed.Load(); n != 0 {
		t.Fatalf("during the burst: %d trims, want 0", n)
	}
	// Over: the next quiet second trims, once.
	time.Sleep(2*burstTick + 200*time.Millisecond)
	if n := freed.Load(); n != 1 {
		t.Fatalf("after the burst: %d trims, want 1", n)
	}
	// A crowd under burstMinConns a second is no burst.
	arrive(burstMinConns / 2)
	time.Sleep(2*burstTick + 200*time.Millisecond)
	if n := freed.Load(); n != 1 {
		t.Errorf("after a crowd under burstMinConns: %d trims, want still 1", n)
	}
	tr.mu.Lock()
	armed := tr.armed
	tr.mu.Unlock()
	if armed {
		t.Error("no connection for two seconds: the tick still runs")
	}
}
