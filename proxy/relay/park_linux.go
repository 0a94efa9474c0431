package relay

import (
	"net"
	"os"
	"sync"
	"syscall"
)

const pollerSupported = true

// poller waits for parked sockets to become readable with one epoll
// instance of its own, itself waited on through the Go runtime's poller,
// so that no thread blocks in epoll_wait. It exists only while something
// is parked: the last unpark closes it and its goroutine ends.
type poller struct {
	mu     sync.Mutex
	ep     *os.File // nil while nothing is parked
	epfd   int      // ep's descriptor (ep.Fd would make it blocking)
	parked map[uint64]*pump
	nextID uint64
}

var idlePoller poller

// park registers p's source socket, reporting false if it cannot (the
// caller then keeps a goroutine for p). Call with p.c.mu held.
func (pl *poller) park(p *pump) bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.ep == nil {
		fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			return false
		}
		if err := syscall.SetNonblock(fd, true); err != nil {
			syscall.Close(fd)
			return false
		}
		pl.ep, pl.epfd = os.NewFile(uintptr(fd), "relay-idle-epoll"), fd
		pl.parked = make(map[uint64]*pump)
		go pl.waitIdle(pl.ep)
	}
	pl.nextID++
	id := pl.nextID
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT}
	ev.Fd, ev.Pad = int32(uint32(id)), int32(uint32(id>>32))
	if !pl.ctl(p, syscall.EPOLL_CTL_ADD, &ev) {
		pl.closeIfEmpty()
		return false
	}
	pl.parked[id] = p
	p.parkID = id
	return true
}

// unpark deregisters p's socket. Call with p.c.mu held and p parked.
func (pl *poller) unpark(p *pump) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	delete(pl.parked, p.parkID)
	p.parkID = 0
	pl.ctl(p, syscall.EPOLL_CTL_DEL, nil)
	pl.closeIfEmpty()
}

// ctl changes p's source socket's registration. Call with mu held.
func (pl *poller) ctl(p *pump, op int, ev *syscall.EpollEvent) bool {
	rc, err := p.src.conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		return false
	}
	var cerr error
	err = rc.Control(func(fd uintptr) {
		cerr = syscall.EpollCtl(pl.epfd, op, int(fd), ev)
	})
	return err == nil && cerr == nil
}

// closeIfEmpty closes the epoll instance once nothing is parked, which
// ends its goroutine (and frees the map a burst may have grown). Call
// with mu held.
func (pl *poller) closeIfEmpty() {
	if len(pl.parked) == 0 && pl.ep != nil {
		pl.ep.Close()
		pl.ep, pl.parked = nil, nil
	}
}

// waitIdle is the goroutine of one epoll instance: it hands every socket
// that became readable (data, FIN, reset) back to its direction, until ep
// is closed.
func (pl *poller) waitIdle(ep *os.File) {
	rc, err := ep.SyscallConn()
	if err != nil {
		return
	}
	var evs [64]syscall.EpollEvent
	for {
		var n int
		err := rc.Read(func(fd uintptr) bool {
			var werr error
			n, werr = syscall.EpollWait(int(fd), evs[:], 0)
			// Nothing ready (or EINTR): wait until the epoll instance is
			// readable, which it is while an event is ready.
			return werr == nil && n > 0
		})
		if err != nil {
			return // closed: nothing is parked
		}
		for _, ev := range evs[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			pl.mu.Lock()
			p := pl.parked[id]
			pl.mu.Unlock()
			if p != nil {
				p.c.readable(p, id)
			}
		}
	}
}
