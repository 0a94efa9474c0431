package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/gobwas/ws"
)

// runEcho is the echo backend (role "echo"): a WebSocket server on
// loopback that sends every data frame back unmasked, answers pings and
// close frames, and closes TCP after the closing handshake (RFC 6455
// §7.1.1: the server closes first). It prints its address on stdout and
// serves until killed. It inherits the bench process's pinning (core 0).
func runEcho() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr().String())
	os.Stdout.Sync()
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go echoConn(c)
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
