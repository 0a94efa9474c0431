package proxy

import (
	"context"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDeferAccept: the public listener is handed a connection only once
// its request has arrived (issue 23: one wake-up and one empty read less
// per handshake); a connection that has sent its request is accepted at
// once.
func TestDeferAccept(t *testing.T) {
	lc := net.ListenConfig{Control: deferAccept}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT) })
	if gerr != nil || v <= 0 {
		t.Fatalf("TCP_DEFER_ACCEPT on the listener: %d (%v), want it set", v, gerr)
	}

	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case <-accepted:
		t.Fatal("a connection that sent nothing was accepted")
	case <-time.After(300 * time.Millisecond):
	}
	c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	select {
	case sc := <-accepted:
		if sc == nil {
			t.Fatal("accept failed")
		}
		sc.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("a connection that sent its request was not accepted within 5s")
	}
}
