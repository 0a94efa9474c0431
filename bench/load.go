package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// The load generator runs in the bench process itself, which re-executed
// itself pinned to core 0 (with the echo backend). It speaks RFC 6455 at
// the frame level with gobwas/ws: every client frame is masked with a
// fresh key (the payload is re-masked in place with old^new key, one pass),
// buffers are reused, one goroutine per connection does closed-loop
// write-then-read round trips.

// client is one load-generator WebSocket connection.
type client struct {
	c     net.Conn
	br    *bufio.Reader
	hb    [ws.MaxHeaderSize - 2]byte
	frame []byte // masked header + masked payload, ready to write
	hs    int    // header length in frame
	mask  [4]byte
	rbuf  []byte
	rng   uint64
}

var dialer = ws.Dialer{Timeout: 10 * time.Second}

// dial opens a WebSocket to url (which carries its ?token=).
func dial(ctx context.Context, url string) (*client, error) {
	c, br, _, err := dialer.Dial(ctx, url)
	if err != nil {
		return nil, err
	}
	if br == nil {
		br = bufio.NewReaderSize(c, 4096)
	}
	return &client{c: c, br: br, rng: uint64(time.Now().UnixNano()) | 1}, nil
}

// nextMask is xorshift64*: cheap, and a different key for every frame.
func (cl *client) nextMask() [4]byte {
	cl.rng ^= cl.rng >> 12
	cl.rng ^= cl.rng << 25
	cl.rng ^= cl.rng >> 27
	v := cl.rng * 2685821657736338717
	return [4]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}
}

// prepare builds the binary message of size bytes this client echoes.
func (cl *client) prepare(size int) {
	h := ws.Header{Fin: true, OpCode: ws.OpBinary, Length: int64(size), Masked: true}
	h.Mask = cl.nextMask()
	hs := ws.HeaderSize(h)
	if cap(cl.frame) < hs+size {
		cl.frame = make([]byte, hs+size)
	}
	cl.frame = cl.frame[:hs+size]
	for i := range cl.frame[hs:] {
		cl.frame[hs+i] = byte('a' + i%26)
	}
	ws.Cipher(cl.frame[hs:], h.Mask, 0)
	putHeader(cl.frame, h)
	cl.hs, cl.mask = hs, h.Mask
	if cap(cl.rbuf) < size {
		cl.rbuf = make([]byte, size)
	}
	cl.rbuf = cl.rbuf[:size]
}

// echo sends the prepared message with a fresh mask and reads its echo.
func (cl *client) echo() error {
	m := cl.nextMask()
	delta := [4]byte{m[0] ^ cl.mask[0], m[1] ^ cl.mask[1], m[2] ^ cl.mask[2], m[3] ^ cl.mask[3]}
	ws.Cipher(cl.frame[cl.hs:], delta, 0)
	copy(cl.frame[cl.hs-4:cl.hs], m[:])
	cl.mask = m
	if _, err := cl.c.Write(cl.frame); err != nil {
		return err
	}
	for {
		h, err := ws.ReadHeaderBuffer(cl.br, cl.hb[:])
		if err != nil {
			return err
		}
		switch h.OpCode {
		case ws.OpBinary, ws.OpText, ws.OpContinuation:
			if h.Length != int64(len(cl.rbuf)) {
				return fmt.Errorf("echo of %d bytes came back as %d", len(cl.rbuf), h.Length)
			}
			_, err = io.ReadFull(cl.br, cl.rbuf)
			return err
		case ws.OpClose:
			return errors.New("server closed the connection")
		default: // ping, pong: not expected; skip
			if _, err := cl.br.Discard(int(h.Length)); err != nil {
				return err
			}
		}
	}
}

// closeClean does the closing handshake: a masked close frame (1000),
// the server's close frame, then the server's TCP close (it closes first).
func (cl *client) closeClean() error {
	defer cl.c.Close()
	f := ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
	f.Header.Mask = cl.nextMask()
	f.Header.Masked = true
	ws.Cipher(f.Payload, f.Header.Mask, 0)
	cl.c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := ws.WriteFrame(cl.c, f); err != nil {
		return err
	}
	for {
		h, err := ws.ReadHeaderBuffer(cl.br, cl.hb[:])
		if err != nil {
			return fmt.Errorf("awaiting close frame: %w", err)
		}
		if _, err := cl.br.Discard(int(h.Length)); err != nil {
			return err
		}
		if h.OpCode == ws.OpClose {
			break
		}
	}
	if _, err := cl.br.Discard(1); err != io.EOF {
		return fmt.Errorf("awaiting the server's TCP close: %v", err)
	}
	return nil
}

// tokens hands out the pre-minted JWTs round robin.
type tokens struct {
	list []string
	next atomic.Uint64
}

func (t *tokens) url(base string) string {
	i := t.next.Add(1)
	return base + "/api/v1/pam/ws?token=" + t.list[i%uint64(len(t.list))]
}

// echoResult is one echo run.
type echoResult struct {
	msgs    int64
	errs    int64
	elapsed time.Duration
	p50     time.Duration
	p99     time.Duration
	cpu     time.Duration // proxy process CPU over the window
	sys     time.Duration // the part of cpu spent in the kernel
	load    time.Duration // the load side's CPU over the window (see meter)
	// TLS upstreams: the echo backend's handshakes over the window.
	full, resumed int64
	machine       windowLoad // both cores over the window
}

// measure records the CPU used between two samples.
func (r *echoResult) measure(from, to cpuSample) {
	d := to.proxy.sub(from.proxy)
	r.cpu, r.sys, r.load = d.total(), d.sys, to.load-from.load
	r.machine = loadBetween(from.cores, to.cores)
}

// echoRun opens conns connections to base, warms them up, then runs
// closed-loop round trips of size-byte messages for dur, measuring the
// proxy's and the load side's CPU (m) over exactly that window.
func echoRun(ctx context.Context, base string, tk *tokens, conns, size int, warm, dur time.Duration, m meter, hooks windowHooks) (echoResult, error) {
	var res echoResult
	cls := make([]*client, conns)
	var derr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range cls {
		wg.Go(func() {
			cl, err := dial(ctx, tk.url(base))
			if err != nil {
				mu.Lock()
				derr = err
				mu.Unlock()
				return
			}
			cl.prepare(size)
			cls[i] = cl
		})
	}
	wg.Wait()
	defer func() {
		var cw sync.WaitGroup
		for _, cl := range cls {
			if cl != nil {
				cw.Go(func() { cl.closeClean() })
			}
		}
		cw.Wait()
	}()
	if derr != nil {
		return res, fmt.Errorf("dial: %w", derr)
	}

	var stop atomic.Bool
	var errs atomic.Int64
	loop := func(cl *client, lat *[]time.Duration) int64 {
		var n int64
		t0 := time.Now()
		for !stop.Load() {
			if err := cl.echo(); err != nil {
				errs.Add(1)
				return n
			}
			n++
			if lat != nil {
				t1 := time.Now()
				*lat = append(*lat, t1.Sub(t0))
				t0 = t1
			}
		}
		return n
	}
	phase := func(d time.Duration, record bool) (int64, [][]time.Duration) {
		stop.Store(false)
		var total atomic.Int64
		lats := make([][]time.Duration, conns)
		var wg sync.WaitGroup
		for i, cl := range cls {
			if record {
				lats[i] = make([]time.Duration, 0, 1<<14)
			}
			wg.Go(func() {
				var lp *[]time.Duration
				if record {
					lp = &lats[i]
				}
				total.Add(loop(cl, lp))
			})
		}
		t := time.AfterFunc(d, func() { stop.Store(true) })
		wg.Wait()
		t.Stop()
		return total.Load(), lats
	}
	phase(warm, false)
	if errs.Load() > 0 {
		return res, errors.New("errors during warm-up")
	}
	hooks.begin()
	c0 := m.sample()
	t0 := time.Now()
	n, lats := phase(dur, true)
	res.elapsed = time.Since(t0)
	res.measure(c0, m.sample())
	hooks.end()
	res.msgs, res.errs = n, errs.Load()
	res.p50, res.p99 = percentiles(lats)
	return res, nil
}

func percentiles(lats [][]time.Duration) (p50, p99 time.Duration) {
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	if len(all) == 0 {
		return 0, 0
	}
	slices.Sort(all)
	return all[len(all)*50/100], all[len(all)*99/100]
}

// upgradeRun: conns goroutines, each in a closed loop: dial and upgrade
// with a JWT, one 16-byte message and its echo, the closing handshake.
func upgradeRun(ctx context.Context, base string, tk *tokens, conns int, dur time.Duration, m meter, hooks windowHooks) (echoResult, error) {
	var res echoResult
	var stop atomic.Bool
	var ok, errs atomic.Int64
	var firstErr atomic.Value
	lats := make([][]time.Duration, conns)
	var wg sync.WaitGroup
	hooks.begin()
	c0 := m.sample()
	t0 := time.Now()
	for i := range conns {
		lats[i] = make([]time.Duration, 0, 1<<13)
		wg.Go(func() {
			var frame, rbuf []byte // reused across connections
			for !stop.Load() {
				s := time.Now()
				cl, err := dial(ctx, tk.url(base))
				if err == nil {
					cl.frame, cl.rbuf = frame, rbuf
					cl.prepare(16)
					frame, rbuf = cl.frame, cl.rbuf
					if err = cl.echo(); err == nil {
						err = cl.closeClean()
					} else {
						cl.c.Close()
					}
				}
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				ok.Add(1)
				lats[i] = append(lats[i], time.Since(s))
			}
		})
	}
	t := time.AfterFunc(dur, func() { stop.Store(true) })
	wg.Wait()
	t.Stop()
	res.elapsed = time.Since(t0)
	res.measure(c0, m.sample())
	hooks.end()
	res.msgs, res.errs = ok.Load(), errs.Load()
	res.p50, res.p99 = percentiles(lats)
	if res.msgs == 0 {
		return res, fmt.Errorf("no upgrade succeeded: %v", firstErr.Load())
	}
	return res, nil
}

// idleResult is one idle-memory run.
type idleResult struct {
	conns        int
	before       int64 // VmRSS KiB before opening
	settled      int64 // VmRSS KiB settleWait after the last one opened
	rested       int64 // VmRSS KiB restWait after (0 when not waited for)
	restedWaited time.Duration
}

// idleRun opens n connections (each upgraded with a JWT and one 64-byte
// round trip, then left idle) and reads the proxy's VmRSS before, after
// settle, and after rest (if rest > settle).
func idleRun(ctx context.Context, base string, tk *tokens, n int, settle, rest time.Duration, pid int, atRest func()) (idleResult, error) {
	res := idleResult{conns: n}
	var err error
	if res.before, err = treeRSS(pid); err != nil {
		return res, err
	}
	cls := make([]*client, n)
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				cl, err := dial(ctx, tk.url(base))
				if err == nil {
					cl.prepare(64)
					err = cl.echo()
					cl.frame, cl.rbuf = nil, nil
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("connection %d: %w", i, err)
					}
					mu.Unlock()
					return
				}
				cls[i] = cl
			}
		})
	}
	wg.Wait()
	defer func() {
		next.Store(0)
		var cw sync.WaitGroup
		for range 64 {
			cw.Go(func() {
				for {
					i := int(next.Add(1) - 1)
					if i >= n {
						return
					}
					if cls[i] != nil {
						cls[i].closeClean()
					}
				}
			})
		}
		cw.Wait()
	}()
	if firstErr != nil {
		return res, firstErr
	}
	opened := time.Now()
	sleepUntil(ctx, opened.Add(settle))
	if res.settled, err = treeRSS(pid); err != nil {
		return res, err
	}
	if rest > settle {
		sleepUntil(ctx, opened.Add(rest))
		if res.rested, err = treeRSS(pid); err != nil {
			return res, err
		}
		res.restedWaited = rest
	}
	atRest()
	return res, ctx.Err()
}

func sleepUntil(ctx context.Context, t time.Time) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(t)):
	}
}

// windowHooks run around a measured window (CPU profiling in -profile).
type windowHooks struct {
	begin, end func()
}

func noHooks() windowHooks { return windowHooks{begin: func() {}, end: func() {}} }
