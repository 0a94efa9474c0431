package relay

import (
	"net"
	"runtime"
	"testing"
	"time"
)

// TestIdleMemory measures what an idle relayed connection costs in heap and
// goroutine stacks, over and above its two sockets: the budget for all of
// authgate is 12 KiB of RSS per proxied WebSocket at 5,000 connections.
// Expected: two goroutines whose idle stacks shrink to the 2 KiB minimum,
// and the Conn itself (about 1.6 KiB, most of it the two 512-byte read
// buffers) - about 5.3 KiB.
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
		relays[i] = New(proxyIn, nil, proxyOut, nil, Options{})
	}
	before := memInUse()
	done := make(chan Result, n)
	for _, rc := range relays {
		go func() { done <- rc.Run() }()
	}
	// Some traffic first, so stacks have grown the way they do in use.
	msg := frame(2, true, make([]byte, 100<<10), true)
	for _, e := range ends[:100] {
		go e.client.Write(msg)
		buf := make([]byte, len(msg))
		e.upstream.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := readFull(e.upstream, buf)
		if err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	after := memInUse()
	per := float64(after-before) / n
	t.Logf("idle relay: %.0f bytes of heap and stack per connection (%d connections)", per, n)
	if per > 6144 {
		t.Errorf("idle relay memory: got %.0f bytes per connection, want at most 6144", per)
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

// memInUse is heap plus goroutine stacks in use, after collections (which
// also shrink idle stacks).
func memInUse() uint64 {
	var ms runtime.MemStats
	for i := 0; i < 3; i++ {
		runtime.GC()
	}
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse
}
