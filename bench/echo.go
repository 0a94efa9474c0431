package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"

	"github.com/gobwas/ws"
)

// TLS listeners of the echo backend, for the TLS upgrade test: resumable
// (Go's defaults: TLS 1.3 session tickets) and not (SessionTicketsDisabled,
// and Go's server keeps no session cache, so no client can resume).
var tlsListeners = []struct {
	name      string
	noTickets bool
}{{"tls", false}, {"tls-nores", true}}

// handshakes counts the TLS handshakes of one listener, full and resumed.
type handshakes struct{ full, resumed atomic.Int64 }

// runEcho is the echo backend (role "echo"): a WebSocket server on
// loopback that sends every data frame back unmasked, answers pings and
// close frames, and closes TCP after the closing handshake (RFC 6455
// §7.1.1: the server closes first). It listens in plain TCP and, with the
// certificate in BENCH_TLS_CERT/BENCH_TLS_KEY, on the TLS listeners above;
// it prints the addresses on one line (plain first) and serves until
// killed. A line "stats" on stdin is answered on stdout with the TLS
// handshake counts: "stats FULL RESUMED FULL RESUMED" per TLS listener. It
// inherits the bench process's pinning (core 0).
func runEcho() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addrs := []string{ln.Addr().String()}
	go serveEcho(ln, nil)
	counts := make([]*handshakes, len(tlsListeners))
	if certFile := os.Getenv("BENCH_TLS_CERT"); certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, os.Getenv("BENCH_TLS_KEY"))
		if err != nil {
			return err
		}
		for i, l := range tlsListeners {
			counts[i] = &handshakes{}
			cfg := &tls.Config{Certificates: []tls.Certificate{cert}, SessionTicketsDisabled: l.noTickets}
			tl, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			addrs = append(addrs, tl.Addr().String())
			go serveEcho(tl, func(c net.Conn) (net.Conn, error) {
				tc := tls.Server(c, cfg)
				if err := tc.Handshake(); err != nil {
					return nil, err
				}
				if tc.ConnectionState().DidResume {
					counts[i].resumed.Add(1)
				} else {
					counts[i].full.Add(1)
				}
				return tc, nil
			})
		}
	}
	for i, a := range addrs {
		if i > 0 {
			fmt.Print(" ")
		}
		fmt.Print(a)
	}
	fmt.Println()
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if sc.Text() == "stats" {
			fmt.Print("stats")
			for _, h := range counts {
				if h != nil {
					fmt.Printf(" %d %d", h.full.Load(), h.resumed.Load())
				}
			}
			fmt.Println()
		}
	}
	select {} // stdin closed: serve until killed
}

// serveEcho accepts on ln; wrap, when not nil, does the TLS handshake.
func serveEcho(ln net.Listener, wrap func(net.Conn) (net.Conn, error)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "echo backend:", err)
			os.Exit(1)
		}
		go func() {
			if wrap != nil {
				tc, err := wrap(c)
				if err != nil {
					c.Close()
					return
				}
				c = tc
			}
			echoConn(c)
		}()
	}
}

func echoConn(c net.Conn) {
	defer c.Close()
	if _, err := ws.Upgrade(c); err != nil {
		return
	}
	br := bufio.NewReaderSize(c, 4096)
	var hb [ws.MaxHeaderSize - 2]byte
	var buf []byte // header room + payload, grown to the largest message seen
	for {
		h, err := ws.ReadHeaderBuffer(br, hb[:])
		if err != nil {
			return
		}
		out := ws.Header{Fin: h.Fin, OpCode: h.OpCode, Length: h.Length}
		switch h.OpCode {
		case ws.OpPing:
			out.OpCode = ws.OpPong
		case ws.OpPong:
			if _, err := br.Discard(int(h.Length)); err != nil {
				return
			}
			continue
		}
		if h.Length > 64<<20 {
			return
		}
		hs := ws.HeaderSize(out)
		need := hs + int(h.Length)
		if cap(buf) < need {
			buf = make([]byte, need)
		}
		b := buf[:need]
		if _, err := io.ReadFull(br, b[hs:]); err != nil {
			return
		}
		if h.Masked {
			ws.Cipher(b[hs:], h.Mask, 0)
		}
		putHeader(b, out)
		if _, err := c.Write(b); err != nil {
			return
		}
		if h.OpCode == ws.OpClose {
			return // close frame echoed: the closing handshake is done
		}
	}
}

// nopWriter lets ws.WriteHeaderBuffer encode a header in place.
type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }

// putHeader encodes h at the start of b and returns its length.
func putHeader(b []byte, h ws.Header) int {
	_ = ws.WriteHeaderBuffer(nopWriter{}, h, b)
	return ws.HeaderSize(h)
}
