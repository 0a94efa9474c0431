package relay

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"
)

// parkedDirections reports how many directions of rc are parked.
func parkedDirections(rc *Conn) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	n := 0
	for _, p := range []*pump{&rc.c2u, &rc.u2c} {
		if p.parkID != 0 {
			n++
		}
	}
	return n
}

// parkAlways parks directions for the rest of t, however few relays are open.
func parkAlways(t *testing.T) {
	old := parkMinConns.Load()
	parkMinConns.Store(1)
	t.Cleanup(func() { parkMinConns.Store(old) })
}

func waitParked(t *testing.T, rc *Conn, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for parkedDirections(rc) != want {
		if time.Now().After(deadline) {
			t.Fatalf("parked directions: got %d, want %d", parkedDirections(rc), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestParkAndWake: with the default options, directions idle at a frame
// boundary are parked by the sweeper within a few restTicks (no
// goroutine left), wake for data either way (a small frame, then a large
// one that is spliced), and are woken to finish an authgate close.
func TestParkAndWake(t *testing.T) {
	if !pollerSupported {
		t.Skip("no parking on this OS")
	}
	checkLeaks(t)
	parkAlways(t)
	upGot := make(chan error, 1)
	push := make(chan string, 1)
	up := gorillaServer(t, websocket.Upgrader{}, func(c *websocket.Conn) {
		var wmu sync.Mutex // gorilla allows one writer at a time
		go func() {
			for m := range push {
				wmu.Lock()
				c.WriteMessage(websocket.TextMessage, []byte(m))
				wmu.Unlock()
			}
		}()
		for {
			typ, m, err := c.ReadMessage()
			if err != nil {
				close(push)
				upGot <- err
				return
			}
			wmu.Lock()
			c.WriteMessage(typ, m)
			wmu.Unlock()
		}
	})
	h := startProxy(t, up, Options{})
	c := gorillaDial(t, websocket.Dialer{}, h.url())
	rc := h.conn()
	for i, size := range []int{10, 200 << 10, 3} {
		waitParked(t, rc, 2)
		want := strings.Repeat("p", size)
		if err := c.WriteMessage(websocket.TextMessage, []byte(want)); err != nil {
			t.Fatal(err)
		}
		if _, got, err := c.ReadMessage(); err != nil || string(got) != want {
			t.Fatalf("round %d: got %d bytes, %v; want %d bytes", i, len(got), err, len(want))
		}
	}
	// The upstream speaks first: only the upstream-to-client direction wakes.
	waitParked(t, rc, 2)
	push <- "from upstream"
	if _, got, err := c.ReadMessage(); err != nil || string(got) != "from upstream" {
		t.Fatalf("pushed: got %q, %v", got, err)
	}
	waitParked(t, rc, 2)
	rc.Close(4003, "revoked", 4003, "revoked")
	if got := closeCode(readClose(c)); got != 4003 {
		t.Errorf("client: got close %d, want 4003", got)
	}
	if got := closeCode(<-upGot); got != 4003 {
		t.Errorf("upstream: got close %d, want 4003", got)
	}
	res := h.result()
	if res.ClosedBy != ByAuthgate || res.CloseCode != 4003 || res.Err != nil {
		t.Errorf("result: got %+v, want authgate 4003, no error", res)
	}
}

// TestParkedPeerVanishes: a parked direction whose peer closes TCP
// without a close frame wakes and tells the other side (1014 to the
// client for a vanished upstream), and nothing stays parked.
func TestParkedPeerVanishes(t *testing.T) {
	if !pollerSupported {
		t.Skip("no parking on this OS")
	}
	checkLeaks(t)
	parkAlways(t)
	drop := make(chan struct{})
	up := gorillaServer(t, websocket.Upgrader{}, func(c *websocket.Conn) {
		<-drop
		c.NetConn().Close() // crash: no close frame
	})
	h := startProxy(t, up, Options{})
	// A raw client: gorilla refuses to read 1014.
	c, r := rawDial(t, h.url())
	rc := h.conn()
	waitParked(t, rc, 2)
	close(drop)
	code, reason, err := readUntilClose(r, false)
	if err != nil || code != 1014 || reason != "bad gateway" {
		t.Errorf("client: got %d %q (%v), want close 1014 bad gateway", code, reason, err)
	}
	c.Write(frame(ws.OpClose, true, closePayload(1014, ""), true))
	res := h.result()
	if res.ClosedBy != ByUpstream || res.CloseCode != CodeAbnormal || !errors.Is(res.Err, ErrUpstreamGone) {
		t.Errorf("result: got %+v, want upstream 1006 ErrUpstreamGone", res)
	}
	if n := parkedDirections(rc); n != 0 {
		t.Errorf("parked after the end: got %d, want 0", n)
	}
}

// TestOverlappingSweeps: sweeps that overlap (the timer's and the one add
// re-arms; here eight at once, three times each, twenty rounds) each work
// on a scratch of their own. Sharing it let one sweep zero the entries
// another was reading: a nil pump and a SIGSEGV in the e2e soak's 2,000
// connections (fixed in 98c6fa4; under -race the shared scratch is also a
// reported data race). Every connection still relays afterwards.
func TestOverlappingSweeps(t *testing.T) {
	if !pollerSupported {
		t.Skip("no parking on this OS")
	}
	checkLeaks(t)
	parkAlways(t)
	h := startProxy(t, gorillaServer(t, websocket.Upgrader{}, echo), Options{})
	const n = 64
	clients := make([]*websocket.Conn, n)
	for i := range clients {
		clients[i] = gorillaDial(t, websocket.Dialer{}, h.url())
		h.conn()
	}
	roundTrip := func(i int, c *websocket.Conn) {
		t.Helper()
		want := "m" + strings.Repeat("x", i)
		c.NetConn().SetDeadline(time.Now().Add(5 * time.Second))
		if err := c.WriteMessage(websocket.TextMessage, []byte(want)); err != nil {
			t.Fatalf("client %d: write: %v", i, err)
		}
		if _, got, err := c.ReadMessage(); err != nil || string(got) != want {
			t.Fatalf("client %d: got %q, %v; want %q", i, got, err, want)
		}
	}
	for range 20 {
		// Wake every direction (parked ones get a goroutine back), so
		// each sweep finds directions waiting at a frame boundary.
		for i, c := range clients {
			roundTrip(i, c)
		}
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 3 {
					restSweeper.sweep()
				}
			})
		}
		wg.Wait()
	}
	for i, c := range clients {
		roundTrip(i, c)
		c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	}
	for range n {
		if res := h.result(); res.CloseCode != websocket.CloseNormalClosure {
			t.Errorf("result: got %+v, want a 1000 close", res)
		}
	}
}
