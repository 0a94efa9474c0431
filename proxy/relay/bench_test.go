package relay

import (
	"bufio"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"

	"github.com/gobwas/ws"
)

// The benchmarks echo one message per operation through a relay between
// two loopback TCP pairs: the client writes a masked frame, an echo server
// unmasks it and sends it back, the client reads it. "direct" is the same
// without the relay, and "rawcopy" a byte copier (io.Copy both ways, which
// is splice on TCP) in its place, for comparison. Client and echo server allocate
// nothing in steady state, so allocs/op are the relay's. cpu-ns/op is the
// process's CPU time per message (steadier than throughput on a shared
// machine).

func BenchmarkRelay64B(b *testing.B)   { benchEcho(b, 64) }
func BenchmarkRelay64KiB(b *testing.B) { benchEcho(b, 64<<10) }

func benchEcho(b *testing.B, size int) {
	for _, via := range []string{"relay", "rawcopy", "direct"} {
		b.Run(via, func(b *testing.B) {
			echoAddr, stopEcho := benchEchoServer(b)
			defer stopEcho()
			addr := echoAddr
			if via != "direct" {
				relayAddr, stopRelay := benchRelay(b, echoAddr, via == "rawcopy")
				defer stopRelay()
				addr = relayAddr
			}
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			payload := make([]byte, size)
			out, err := ws.CompileFrame(ws.MaskFrame(ws.NewBinaryFrame(payload)))
			if err != nil {
				b.Fatal(err)
			}
			in := make([]byte, size+ws.MaxHeaderSize)
			want := len(out) - 4 // echoed unmasked
			b.SetBytes(int64(size))
			b.ReportAllocs()
			cpu0 := cpuTime()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				_, err := c.Write(out)
				if err != nil {
					b.Fatal(err)
				}
				_, err = io.ReadFull(c, in[:want])
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			// CPU time of the whole process (client, echo server and
			// relay) per message; the relay's share is relay minus direct.
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// benchEchoServer sends every frame back unmasked.
func benchEchoServer(b *testing.B) (string, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				benchEchoConn(c)
			}()
		}
	}()
	return ln.Addr().String(), func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}
}

func benchEchoConn(c net.Conn) {
	br := bufio.NewReaderSize(c, 64<<10)
	hb := make([]byte, ws.MaxHeaderSize)
	buf := make([]byte, 0, 1<<20)
	for {
		h, err := ws.ReadHeaderBuffer(br, hb)
		if err != nil {
			return
		}
		if int64(cap(buf)) < int64(ws.MaxHeaderSize)+h.Length {
			return
		}
		mask := h.Mask
		h.Masked = false
		hs := ws.HeaderSize(h)
		frame := buf[:hs+int(h.Length)]
		_ = ws.WriteHeaderBuffer(nopWriter{}, h, frame)
		_, err = io.ReadFull(br, frame[hs:])
		if err != nil {
			return
		}
		ws.Cipher(frame[hs:], mask, 0)
		_, err = c.Write(frame)
		if err != nil {
			return
		}
	}
}

// benchRelay accepts connections and relays each to upstream, with no
// handshake: the relay does not need one. raw copies bytes instead.
func benchRelay(b *testing.B, upstream string, raw bool) (string, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			if raw {
				wg.Add(2)
				go func() {
					defer wg.Done()
					io.Copy(up, c)
					up.Close()
				}()
				go func() {
					defer wg.Done()
					io.Copy(c, up)
					c.Close()
				}()
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				New(c, nil, up, nil, Options{}).Run()
			}()
		}
	}()
	return ln.Addr().String(), func() {
		ln.Close()
		wg.Wait()
	}
}

// cpuTime is the process's user plus system CPU time in nanoseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkEmptyRead is the cost of the read that returns EAGAIN on a
// drained loopback TCP socket. Go's netpoller reads until EAGAIN before a
// goroutine parks, so the relay makes one such read per forwarded frame
// (strace -c during `go run ./bench -only echo64`: as many EAGAIN reads as
// writes); nginx skips it after a short read because epoll tells it about
// a pending FIN (EPOLLRDHUP), which Go's poller does not pass on. Two per
// 64 B round trip are most of the CPU gap to nginx (README, Performance).
func BenchmarkEmptyRead(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if peer, ok := <-accepted; ok {
		defer peer.Close()
	}
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 4096)
	rc.Control(func(fd uintptr) {
		for b.Loop() {
			if _, err := syscall.Read(int(fd), buf); err != syscall.EAGAIN {
				b.Fatalf("read on a drained socket: %v, want EAGAIN", err)
			}
		}
	})
}
