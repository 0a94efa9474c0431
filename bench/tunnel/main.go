// Command tunnel is a reference peer for the benchmark, not part of
// authgate: the least a Go proxy can do. It copies bytes between each
// client and a fresh upstream connection (no HTTP or WebSocket parsing,
// no token check, no log, like nginx's tunnel for an upgraded connection)
// on one edge-triggered epoll loop of its own, with the two savings Go's
// runtime does not allow authgate: it skips the read that would return
// EAGAIN after a short read, trusting EPOLLRDHUP to report a FIN, and it
// reads and writes its non-blocking sockets with raw system calls, without
// the runtime's syscall bookkeeping.
//
// The benchmark runs it as its -baseline binary, so it takes authgate's
// command line and config (listen address and upstream URL):
//
//	go build -o /tmp/tunnel ./bench/tunnel
//	go run ./bench -only upgrade,echo64 -peers nginx,authgate -baseline /tmp/tunnel
//
// Its CPU per operation is a floor for any Go relay on this machine.
// Linux only; IPv4 only; plain TCP upstreams only.
package main

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"authgate/policy"
)

// conn is one side of a tunnelled connection.
type conn struct {
	fd         int
	peer       *conn
	pending    []byte // bytes read from peer, not yet written to fd
	connecting bool   // upstream connect in progress
	readable   bool   // fd may have data: an edge came and it is not drained
	rdhup      bool   // the peer of fd has shut down writing (FIN), or fd failed
	closed     bool
}

type tunnel struct {
	epfd     int
	upstream *syscall.SockaddrInet4
	conns    map[int]*conn
	buf      []byte
}

const edgeEvents = syscall.EPOLLIN | syscall.EPOLLOUT | syscall.EPOLLRDHUP | syscall.EPOLLET&0xffffffff

func main() {
	if err := run(os.Args[len(os.Args)-1]); err != nil {
		fmt.Fprintln(os.Stderr, "tunnel:", err)
		os.Exit(1)
	}
}

func run(configPath string) error {
	snap, err := policy.Load(configPath, policy.Options{})
	if err != nil {
		return err
	}
	if snap.Upstream.URL.Scheme != "http" {
		return fmt.Errorf("upstream %s: only http", snap.Upstream.URL.Redacted())
	}
	listen, err := sockaddr(snap.Listen)
	if err != nil {
		return err
	}
	up, err := sockaddr(snap.Upstream.URL.Host)
	if err != nil {
		return err
	}
	runtime.LockOSThread()
	lfd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if err := syscall.SetsockoptInt(lfd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		return err
	}
	if err := syscall.Bind(lfd, listen); err != nil {
		return err
	}
	if err := syscall.Listen(lfd, 4096); err != nil {
		return err
	}
	t := &tunnel{upstream: up, conns: map[int]*conn{}, buf: make([]byte, 16<<10)}
	if t.epfd, err = syscall.EpollCreate1(syscall.EPOLL_CLOEXEC); err != nil {
		return err
	}
	if err := syscall.EpollCtl(t.epfd, syscall.EPOLL_CTL_ADD, lfd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(lfd)}); err != nil {
		return err
	}
	events := make([]syscall.EpollEvent, 256)
	for {
		n, err := syscall.EpollWait(t.epfd, events, -1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		for _, ev := range events[:n] {
			if int(ev.Fd) == lfd {
				t.acceptAll(lfd)
				continue
			}
			t.event(ev)
		}
	}
}

func sockaddr(hostport string) (*syscall.SockaddrInet4, error) {
	a, err := net.ResolveTCPAddr("tcp4", hostport)
	if err != nil {
		return nil, err
	}
	sa := &syscall.SockaddrInet4{Port: a.Port}
	copy(sa.Addr[:], a.IP.To4())
	return sa, nil
}

func (t *tunnel) event(ev syscall.EpollEvent) {
	c := t.conns[int(ev.Fd)]
	if c == nil || c.closed {
		return
	}
	if ev.Events&(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
		c.rdhup = true
	}
	if c.connecting {
		if ev.Events&(syscall.EPOLLOUT|syscall.EPOLLERR|syscall.EPOLLHUP) == 0 {
			return
		}
		if e, _ := syscall.GetsockoptInt(c.fd, syscall.SOL_SOCKET, syscall.SO_ERROR); e != 0 {
			t.closePair(c)
			return
		}
		c.connecting = false
		syscall.SetsockoptInt(c.fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	}
	if ev.Events&syscall.EPOLLOUT != 0 && len(c.pending) > 0 && !t.flush(c) {
		return
	}
	if len(c.pending) == 0 && c.peer.readable {
		t.pump(c.peer) // c can take what its peer held back
	}
	if !c.closed && ev.Events&(syscall.EPOLLIN|syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
		c.readable = true
		t.pump(c)
	}
}

func (t *tunnel) acceptAll(lfd int) {
	for {
		cfd, _, err := syscall.Accept4(lfd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
		if err != nil {
			return
		}
		syscall.SetsockoptInt(cfd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
		ufd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			syscall.Close(cfd)
			continue
		}
		client := &conn{fd: cfd}
		up := &conn{fd: ufd, connecting: true}
		client.peer, up.peer = up, client
		t.conns[cfd], t.conns[ufd] = client, up
		if err := syscall.Connect(ufd, t.upstream); err != nil && err != syscall.EINPROGRESS {
			t.closePair(client)
			continue
		}
		syscall.EpollCtl(t.epfd, syscall.EPOLL_CTL_ADD, ufd, &syscall.EpollEvent{Events: edgeEvents, Fd: int32(ufd)})
		syscall.EpollCtl(t.epfd, syscall.EPOLL_CTL_ADD, cfd, &syscall.EpollEvent{Events: edgeEvents, Fd: int32(cfd)})
	}
}

// pump moves bytes from c to its peer until c is drained or the peer can
// take no more; EOF or an error on either side closes both.
func (t *tunnel) pump(c *conn) {
	p := c.peer
	for c.readable && !c.closed {
		if p.connecting || len(p.pending) > 0 {
			return
		}
		n, err := rawIO(syscall.SYS_READ, c.fd, t.buf)
		if err == syscall.EAGAIN {
			c.readable = false
			return
		}
		if err != nil || n == 0 {
			t.closePair(c)
			return
		}
		p.pending = append(p.pending[:0], t.buf[:n]...)
		if !t.flush(p) {
			return
		}
		if n < len(t.buf) && !c.rdhup {
			// A short read drained the socket, and no FIN has come: new
			// data raises a new edge, so the read that would return
			// EAGAIN is skipped.
			c.readable = false
			return
		}
	}
}

// flush writes p.pending to p; it reports false if p was closed.
func (t *tunnel) flush(p *conn) bool {
	for len(p.pending) > 0 {
		w, err := rawIO(syscall.SYS_WRITE, p.fd, p.pending)
		if err == syscall.EAGAIN {
			return true // EPOLLOUT resumes
		}
		if err != nil {
			t.closePair(p)
			return false
		}
		p.pending = p.pending[w:]
	}
	p.pending = p.pending[:0]
	return true
}

func (t *tunnel) closePair(c *conn) {
	for _, x := range []*conn{c, c.peer} {
		if !x.closed {
			x.closed = true
			syscall.Close(x.fd) // also leaves the epoll set
			delete(t.conns, x.fd)
		}
	}
}

// rawIO is read(2) or write(2) on a non-blocking socket, which never
// blocks, so the runtime need not know about it.
func rawIO(trap uintptr, fd int, b []byte) (int, error) {
	r, _, e := syscall.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}
