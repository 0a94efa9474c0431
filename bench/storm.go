package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
)

// The reconnect storm (SPEC "Performance"): stale clients reconnecting in
// a tight loop with a legacy UUID that the peer turns away (authgate and
// the FastAPI backend: 101, then a 4003 close frame; nginx: 403), while
// JWT clients echo a message every 100 ms through the same peer.
//
// The stale clients run in a process of their own (role "storm", this
// program re-executed under `nice -n 10`, on core 0 with the rest of the
// load): the JWT clients (in the bench process) and the FastAPI upstream
// behind the proxies then get core 0 first, so their latency shows what
// the peer does to them, not the storm generator's own scheduling. It
// stops by itself after its duration (and exits 30 s past it whatever
// happens); each client makes at most stormMaxPerClient attempts.

const stormMaxPerClient = 1_000_000

// stormParams is the storm's size and timing.
type stormParams struct {
	stale, jwt int           // clients
	every      time.Duration // a JWT client's message interval
	phase      time.Duration // quiet window, then storm window
	warm       time.Duration // JWT clients echoing before the quiet window
	settle     time.Duration // after the storm, before the RSS reading
	// rate is the open loop's offered rate of stale attempts per second,
	// spread evenly over the stale clients; 0 is the closed loop (each
	// client reconnects at once). A closed loop hits a faster rejecter
	// harder; an open loop offers every peer the same attempts.
	rate int
}

// stormP2 is the column of authgate run with GOMAXPROCS=2.
const stormP2 = "authgate-p2"

// modeFile is mode for a file name.
func (sp stormParams) modeFile() string {
	if sp.rate > 0 {
		return fmt.Sprintf("open%d", sp.rate)
	}
	return "closed"
}

// mode names the loop for the tables.
func (sp stormParams) mode() string {
	if sp.rate > 0 {
		return fmt.Sprintf("open loop %d/s", sp.rate)
	}
	return "closed loop"
}

// stormResult is one peer's run.
type stormResult struct {
	rejections int64         // 4003 close frames or 403 answers
	errors     int64         // stale-client attempts ending any other way
	firstErr   string        // the first of them
	missed     int64         // open loop: attempts that could not start within an interval of their time
	elapsed    time.Duration // the storm window
	cpu        time.Duration // the peer's CPU over the storm window
	quietCPU   time.Duration // the peer's CPU over the quiet window (JWT echoes only)
	quietDur   time.Duration
	clientCPU  time.Duration // the storm process's own CPU (utime+stime)
	machine    windowLoad    // both cores over the storm window (every process on the machine)
	quiet      latencies     // JWT clients' echo round trips without the storm
	storm      latencies     // and during it
	jwtErrs    int64
	// The peer's VmRSS (KiB, with its children) at the end of the quiet
	// window and settle after the storm ended.
	rssBefore, rssAfter int64
}

type latencies struct {
	n        int
	p50, p99 time.Duration
}

// perRejection is the peer's CPU per rejection, less what the JWT clients'
// echoes cost it (the quiet window's CPU rate over the storm window).
func (s stormResult) perRejection() float64 {
	if s.rejections == 0 || s.quietDur == 0 {
		return 0
	}
	extra := float64(s.cpu) - float64(s.quietCPU)*float64(s.elapsed)/float64(s.quietDur)
	return max(extra, 0) / 1e3 / float64(s.rejections)
}

// stormRun runs the storm against base: hello says the upstream (or the
// peer itself) is the FastAPI backend, which greets every JWT client with
// a message before echoing.
func stormRun(ctx context.Context, e *env, base string, tk *tokens, sp stormParams, hello bool, m meter, hooks windowHooks) (stormResult, error) {
	var res stormResult
	// The JWT clients: connect, read the greeting, then echo 64 bytes every
	// sp.every, recording the round trip in the current phase.
	var phase atomic.Int32 // 0 warm-up, 1 quiet, 2 between, 3 storm, 4 done
	cls := make([]*client, sp.jwt)
	var wg sync.WaitGroup
	var derr error
	var mu sync.Mutex
	for i := range cls {
		wg.Go(func() {
			cl, err := dial(ctx, tk.url(base))
			if err == nil && hello {
				err = cl.readMessage()
			}
			if err != nil {
				mu.Lock()
				derr = err
				mu.Unlock()
				if cl != nil {
					cl.c.Close()
				}
				return
			}
			cl.prepare(64)
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
		return res, fmt.Errorf("JWT clients: %w", derr)
	}
	lat := [2][][]time.Duration{make([][]time.Duration, sp.jwt), make([][]time.Duration, sp.jwt)}
	var jwtErrs atomic.Int64
	var jw sync.WaitGroup
	for i, cl := range cls {
		jw.Go(func() {
			// Spread the clients over the interval.
			time.Sleep(time.Duration(i) * sp.every / time.Duration(sp.jwt))
			t := time.NewTicker(sp.every)
			defer t.Stop()
			for range t.C {
				ph := phase.Load()
				if ph == 4 || ctx.Err() != nil {
					return
				}
				s := time.Now()
				if err := cl.echo(); err != nil {
					jwtErrs.Add(1)
					return
				}
				d := time.Since(s)
				switch ph {
				case 1:
					lat[0][i] = append(lat[0][i], d)
				case 3:
					lat[1][i] = append(lat[1][i], d)
				}
			}
		})
	}
	defer func() { phase.Store(4); jw.Wait() }()

	sleepUntil(ctx, time.Now().Add(sp.warm))
	phase.Store(1)
	c0 := m.sample()
	t0 := time.Now()
	sleepUntil(ctx, t0.Add(sp.phase))
	c1 := m.sample()
	res.quietDur = time.Since(t0)
	res.quietCPU = c1.proxy.sub(c0.proxy).total()
	phase.Store(2)
	if ctx.Err() != nil {
		return res, ctx.Err()
	}

	// The storm process: it prints "start" when its clients begin and
	// "done ..." when they have stopped.
	argv := []string{e.self}
	if n, err := exec.LookPath("nice"); err == nil {
		argv = append([]string{n, "-n", "10"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), roleEnv+"=storm",
		"BENCH_STORM_URL="+base+"/api/v1/pam/ws",
		"BENCH_STORM_CLIENTS="+strconv.Itoa(sp.stale),
		"BENCH_STORM_DURATION="+sp.phase.String(),
		"BENCH_STORM_RATE="+strconv.Itoa(sp.rate))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return res, err
	}
	if err := cmd.Start(); err != nil {
		return res, err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "start" {
		return res, fmt.Errorf("storm process did not start: %q", sc.Text())
	}
	res.rssBefore, _ = treeRSS(m.proxy)
	hooks.begin()
	c2 := m.sample()
	b2 := coreTimes()
	t2 := time.Now()
	phase.Store(3)
	if !sc.Scan() {
		return res, errors.New("storm process ended without its figures")
	}
	c3 := m.sample()
	res.machine = loadBetween(b2, coreTimes())
	res.elapsed = time.Since(t2)
	phase.Store(2)
	hooks.end()
	res.cpu = c3.proxy.sub(c2.proxy).total()
	f := strings.SplitN(sc.Text(), " ", 6)
	if len(f) < 5 || f[0] != "done" {
		return res, fmt.Errorf("storm process: unexpected %q", sc.Text())
	}
	res.rejections, _ = strconv.ParseInt(f[1], 10, 64)
	res.errors, _ = strconv.ParseInt(f[2], 10, 64)
	ns, _ := strconv.ParseInt(f[3], 10, 64)
	res.clientCPU = time.Duration(ns)
	res.missed, _ = strconv.ParseInt(f[4], 10, 64)
	if len(f) == 6 {
		res.firstErr = f[5]
	}
	// The good users go on echoing while the peer settles.
	sleepUntil(ctx, time.Now().Add(sp.settle))
	res.rssAfter, _ = treeRSS(m.proxy)
	phase.Store(4)
	jw.Wait()
	res.jwtErrs = jwtErrs.Load()
	res.quiet = summarize(lat[0])
	res.storm = summarize(lat[1])
	if res.rejections == 0 {
		return res, fmt.Errorf("no stale client was rejected (%d errors; first: %s)", res.errors, res.firstErr)
	}
	return res, nil
}

func summarize(l [][]time.Duration) latencies {
	n := 0
	for _, s := range l {
		n += len(s)
	}
	p50, p99 := percentiles(l)
	return latencies{n: n, p50: p50, p99: p99}
}

// readMessage reads one data message (the FastAPI backend's greeting).
func (cl *client) readMessage() error {
	cl.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer cl.c.SetReadDeadline(time.Time{})
	for {
		h, err := ws.ReadHeaderBuffer(cl.br, cl.hb[:])
		if err != nil {
			return err
		}
		if _, err := cl.br.Discard(int(h.Length)); err != nil {
			return err
		}
		switch h.OpCode {
		case ws.OpClose:
			return errors.New("closed before its greeting")
		case ws.OpText, ws.OpBinary:
			if h.Fin {
				return nil
			}
		}
	}
}

// runStorm is role "storm": BENCH_STORM_CLIENTS stale clients, each
// reconnecting after every rejection until BENCH_STORM_DURATION has
// passed: at once (closed loop), or, with BENCH_STORM_RATE attempts a
// second, each client on a schedule of its own that together offers that
// rate (open loop; an attempt more than one interval late starts at once
// and counts as missed, and the schedule moves on from it rather than
// bursting to catch up). Prints "start", then "done REJECTIONS ERRORS
// CPU_NS MISSED [FIRST ERROR]".
func runStorm() error {
	url := os.Getenv("BENCH_STORM_URL")
	n, _ := strconv.Atoi(os.Getenv("BENCH_STORM_CLIENTS"))
	dur, err := time.ParseDuration(os.Getenv("BENCH_STORM_DURATION"))
	rate, rerr := strconv.Atoi(os.Getenv("BENCH_STORM_RATE"))
	if err != nil || rerr != nil || n <= 0 || rate < 0 || url == "" {
		return fmt.Errorf("storm: bad parameters")
	}
	var interval time.Duration // each client's, open loop
	if rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(n) / float64(rate))
	}
	time.AfterFunc(dur+30*time.Second, func() {
		fmt.Fprintln(os.Stderr, "storm: still running 30 s past its duration; exiting")
		os.Exit(2)
	})
	var rejections, errs, missed atomic.Int64
	var firstErr atomic.Value
	fail := func(err error) {
		errs.Add(1)
		firstErr.CompareAndSwap(nil, err.Error())
		time.Sleep(10 * time.Millisecond) // an error is not a rejection: do not spin on it
	}
	var ru0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	fmt.Println("start")
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	start := time.Now()
	for k := range n {
		wg.Go(func() {
			u := url + "?token=" + randomUUID()
			d := ws.Dialer{Timeout: 5 * time.Second}
			var hb [ws.MaxHeaderSize - 2]byte
			next := start.Add(time.Duration(k) * interval / time.Duration(n)) // spread over one interval
			for i := 0; i < stormMaxPerClient && time.Now().Before(deadline); i++ {
				if interval > 0 {
					if !next.Before(deadline) {
						break
					}
					if wait := time.Until(next); wait > 0 {
						time.Sleep(wait)
					} else if -wait > interval {
						missed.Add(1)
						next = time.Now()
					}
					next = next.Add(interval)
				}
				c, br, _, err := d.Dial(context.Background(), u)
				if err != nil {
					var se ws.StatusError
					if errors.As(err, &se) && int(se) == 403 {
						rejections.Add(1) // nginx's map (gobwas closed the connection)
						continue
					}
					fail(err)
					continue
				}
				if br == nil {
					br = bufio.NewReaderSize(c, 512)
				}
				code, err := readRejection(c, br, hb[:])
				c.Close()
				if err != nil {
					fail(err)
					continue
				}
				if code != 4003 {
					fail(fmt.Errorf("closed with %d, want 4003", code))
					continue
				}
				rejections.Add(1)
			}
		})
	}
	wg.Wait()
	var ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(syscall.TimevalToNsec(ru1.Utime) - syscall.TimevalToNsec(ru0.Utime) + syscall.TimevalToNsec(ru1.Stime) - syscall.TimevalToNsec(ru0.Stime))
	line := fmt.Sprintf("done %d %d %d %d", rejections.Load(), errs.Load(), cpu.Nanoseconds(), missed.Load())
	if v, ok := firstErr.Load().(string); ok {
		line += " " + strings.ReplaceAll(v, "\n", " ")
	}
	fmt.Println(line)
	return nil
}

// readRejection reads the close frame a rejected client gets after its
// 101, answers it (masked, as a browser does) and waits for the server's
// TCP close (RFC 6455 §7.1.1: the server closes first). It returns the
// close code.
func readRejection(c io.ReadWriter, br *bufio.Reader, hb []byte) (int, error) {
	if d, ok := c.(interface{ SetDeadline(time.Time) error }); ok {
		d.SetDeadline(time.Now().Add(5 * time.Second))
	}
	for {
		h, err := ws.ReadHeaderBuffer(br, hb)
		if err != nil {
			return 0, fmt.Errorf("awaiting the close frame: %w", err)
		}
		if h.OpCode != ws.OpClose {
			if _, err := br.Discard(int(h.Length)); err != nil {
				return 0, err
			}
			continue
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(br, p); err != nil {
			return 0, err
		}
		code := 1005
		if len(p) >= 2 {
			code = int(binary.BigEndian.Uint16(p))
		}
		f := ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusCode(code), ""))
		f.Header.Masked = true
		rand.Read(f.Header.Mask[:])
		ws.Cipher(f.Payload, f.Header.Mask, 0)
		if err := ws.WriteFrame(c, f); err != nil {
			return code, nil // the server may have closed already
		}
		br.Discard(1) // until the server's FIN (EOF) or the deadline
		return code, nil
	}
}

func randomUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// coreStat is one core's jiffies from /proc/stat: busy (user, nice,
// system, irq, softirq), stolen by the hypervisor, and all.
type coreStat struct{ busy, steal, total int64 }

// coreTimes reads cpu0 and cpu1.
func coreTimes() [2]coreStat {
	var t [2]coreStat
	b, _ := os.ReadFile("/proc/stat")
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 9 || (f[0] != "cpu0" && f[0] != "cpu1") {
			continue
		}
		i := int(f[0][3] - '0')
		for j, v := range f[1:] {
			if j >= 8 { // guest time is already in user
				break
			}
			n, _ := strconv.ParseInt(v, 10, 64)
			t[i].total += n
			switch j {
			case 3, 4: // idle, iowait
			case 7:
				t[i].steal += n
			default:
				t[i].busy += n
			}
		}
	}
	return t
}

// windowLoad is what the whole machine did to both cores over a window:
// each core's busy share and the share the hypervisor stole (a shared
// machine's noise, outside anything the bench runs).
type windowLoad struct {
	busy  [2]float64 // percent
	steal float64    // percent of both cores' time
	secs  [2]float64 // each core's busy seconds
}

// others is the share of core i, in percent, that went to processes other
// than ours (own, their CPU over the window): other work on a shared
// machine (or kernel threads), the noise in a window.
func (w windowLoad) others(i int, own, elapsed time.Duration) float64 {
	if elapsed <= 0 {
		return 0
	}
	return max(0, 100*(w.secs[i]-own.Seconds())/elapsed.Seconds())
}

func loadBetween(a, b [2]coreStat) windowLoad {
	var w windowLoad
	var steal, total int64
	for i := range a {
		d := b[i].total - a[i].total
		if d > 0 {
			w.busy[i] = 100 * float64(b[i].busy-a[i].busy) / float64(d)
		}
		w.secs[i] = float64(b[i].busy-a[i].busy) / 100 // USER_HZ
		steal += b[i].steal - a[i].steal
		total += d
	}
	if total > 0 {
		w.steal = 100 * float64(steal) / float64(total)
	}
	return w
}
