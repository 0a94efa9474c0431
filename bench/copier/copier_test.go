package main

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// TestCopier: bytes pass both ways unchanged, in order, small and large
// (4 MiB, far beyond a pipe's 64 KiB, so splice runs many times), and the
// client's FIN reaches the upstream, whose own close then reaches the
// client.
func TestCopier(t *testing.T) {
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	echoed := make(chan int64, 1)
	go func() {
		c, err := up.Accept()
		if err != nil {
			echoed <- -1
			return
		}
		n, _ := io.Copy(c, c) // echo until the FIN the copier passes on
		c.Close()
		echoed <- n
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- serve(ln, up.Addr().String()) }()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	small := []byte("hello")
	large := bytes.Repeat([]byte("0123456789abcdef"), 256<<10)
	want := append(append([]byte{}, small...), large...)
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(small)
		if err == nil {
			_, err = c.Write(large)
		}
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		wrote <- err
	}()
	got, err := io.ReadAll(c) // ends with the upstream's close, passed on
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := <-wrote; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes back, want the %d sent, unchanged", len(got), len(want))
	}
	if n := <-echoed; n != int64(len(want)) {
		t.Fatalf("upstream echoed %d bytes, want %d", n, len(want))
	}
	ln.Close()
	if err := <-served; err == nil {
		t.Fatal("serve returned nil after its listener closed")
	}
}
