package relay

import (
	"net"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

// TestIdleMemory measures what an idle relayed connection costs in heap and
// goroutine stacks, over and above its two sockets: the bar for all of
// authgate is 1.5x HAProxy's RSS per proxied WebSocket at 5,000
// connections (about 6.9 KiB). Every connection first carries a large
// frame each way (which grows the goroutines' stacks), then idles past
// restAfter, so both directions park (park.go): no goroutine is left but
// the poller's. Expected: the Conn itself (about 1.8 KiB, most of it the
// two 512-byte read buffers) and the poller's bookkeeping.
func TestIdleMemory(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("memory figures need a full, race-free run")
	}
	checkLeaks(t)
	const n = 2000
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// pair returns both ends of a loopback TCP connection.
	pair := func() (net.Conn, net.Conn) {
		a, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		b, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return a, b
	}
	type peers struct{ client, upstream net.Conn }
	ends := make([]peers, n)
	relays := make([]*Conn, n)
	for i := range relays {
		client, proxyIn := pair()
		proxyOut, upstream := pair()
		ends[i] = peers{client, upstream}
		relays[i] = New(proxyIn, nil, proxyOut, nil, Options{restAfter: 100 * time.Millisecond})
	}
	before := memInUse()
	goroutines := runtime.NumGoroutine()
	done := make(chan Result, n)
	for _, rc := range relays {
		rc.Start(func(r Result) { done <- r })
	}
	up := frame(2, true, make([]byte, 100<<10), true)
	down := frame(2, true, make([]byte, 100<<10), false)
	buf := make([]byte, len(up))
	for _, e := range ends {
		go e.client.Write(up)
		go e.upstream.Write(down)
		e.upstream.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := readFull(e.upstream, buf[:len(up)])
		if err != nil {
			t.Fatal(err)
		}
		e.client.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = readFull(e.client, buf[:len(down)])
		if err != nil {
			t.Fatal(err)
		}
	}
	// Collections while all are idle, before they rest: the runtime
	// starts new goroutines with the average stack use that the
	// collection before the last one saw.
	time.Sleep(20 * time.Millisecond)
	runtime.GC()
	runtime.GC()
	time.Sleep(500 * time.Millisecond)
	after := memInUse()
	if got, want := runtime.NumGoroutine()-goroutines, 1; got > want {
		t.Errorf("relay goroutines: got %d, want at most %d (the poller's)", got, want)
	}
	per := float64(int64(after)-int64(before)) / n
	sample := []metrics.Sample{{Name: "/gc/stack/starting-size:bytes"}}
	metrics.Read(sample)
	t.Logf("idle relay: %.0f bytes of heap and stack per connection (%d connections; new goroutines start with %d-byte stacks)", per, n, sample[0].Value.Uint64())
	if per > 2560 {
		t.Errorf("idle relay memory: got %.0f bytes per connection, want at most 2560", per)
	}
	for _, e := range ends {
		e.client.Close()
		e.upstream.Close()
	}
	for range relays {
		<-done
	}
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// memInUse is live heap plus goroutine stacks in use, after collections
// (which also shrink idle stacks and free dead goroutines' stacks). Live
// bytes, not spans in use: with -count, spans half filled by an earlier
// run would make the difference meaningless.
func memInUse() uint64 {
	var ms runtime.MemStats
	for i := 0; i < 3; i++ {
		runtime.GC()
	}
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc + ms.StackInuse
}
