// Command copier is a reference peer for the benchmark, not part of
// authgate: the plainest Go proxy. For each client it dials a fresh
// upstream connection and copies bytes both ways with io.Copy, which
// between two TCP sockets is splice(2), on goroutines and Go's poller:
// the runtime authgate runs on, with none of its work (no HTTP or
// WebSocket parsing, no token check, no log).
//
// The benchmark runs it as the peer "copier" (`copier -listen ADDR
// -upstream HOST:PORT`, the Go floor column); given no flags it takes
// authgate's command line and config instead (listen address and upstream
// URL), so it can also be the -baseline binary:
//
//	go build -o /tmp/copier ./bench/copier
//	go run ./bench -only upgrade,echo64k -peers direct,nginx,authgate -baseline /tmp/copier
//
// Its CPU per upgrade is what Go's net package, goroutines and poller cost
// without authgate's layers; its 64 KiB figures show what any
// splice-based proxy gets on this machine's pinning. Plain TCP upstreams
// only.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"

	"authgate/policy"
)

func main() {
	listen := flag.String("listen", "", "address to listen on (without it: authgate's command line, the config's listen and upstream.url)")
	upstream := flag.String("upstream", "", "host:port to copy each connection to")
	flag.Parse()
	var err error
	if *listen == "" {
		var snap *policy.Snapshot
		snap, err = policy.Load(os.Args[len(os.Args)-1], policy.Options{})
		if err == nil && snap.Upstream.URL.Scheme != "http" {
			err = fmt.Errorf("upstream %s: only http", snap.Upstream.URL.Redacted())
		}
		if err == nil {
			*listen, *upstream = snap.Listen, snap.Upstream.URL.Host
		}
	}
	var ln net.Listener
	if err == nil {
		ln, err = net.Listen("tcp", *listen)
	}
	if err == nil {
		err = serve(ln, *upstream)
	}
	fmt.Fprintln(os.Stderr, "copier:", err)
	os.Exit(1)
}

// serve proxies every connection ln accepts to upstream until ln fails.
func serve(ln net.Listener, upstream string) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go proxy(c.(*net.TCPConn), upstream)
	}
}

// proxy copies both ways, passes each side's FIN on to the other, and
// closes both when both directions are done.
func proxy(c *net.TCPConn, upstream string) {
	defer c.Close()
	uc, err := net.Dial("tcp", upstream)
	if err != nil {
		return
	}
	u := uc.(*net.TCPConn)
	defer u.Close()
	done := make(chan struct{})
	go func() {
		io.Copy(c, u)
		c.CloseWrite()
		close(done)
	}()
	io.Copy(u, c)
	u.CloseWrite()
	<-done
}
