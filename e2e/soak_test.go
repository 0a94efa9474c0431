//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// soakStats are shared by all soak clients.
type soakStats struct {
	sessions     atomic.Int64 // WebSocket sessions that got the backend's hello
	open         atomic.Int64 // sessions open now
	sent, echoed atomic.Int64 // messages
	cuts         atomic.Int64 // sessions ended by something else than our close
	reconnects   atomic.Int64 // sessions opened after a cut
	refused      atomic.Int64 // dial attempts that got no session

	mu         sync.Mutex
	cutCodes   map[int]int // close code of each cut (0: none)
	refusedBy  map[string]int
	cutTimes   []time.Time
	violations []string
}

func (s *soakStats) violation(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.violations) < 50 {
		s.violations = append(s.violations, fmt.Sprintf(format, args...))
	} else if len(s.violations) == 50 {
		s.violations = append(s.violations, "...")
	}
}

// soakClient is one simulated user: it keeps one WebSocket open, sends a
// message every interval, checks each echo, and reconnects (with backoff)
// whenever its connection is cut.
type soakClient struct {
	id       int
	url      string
	header   http.Header
	wantSub  string
	interval time.Duration
	stats    *soakStats

	lastCut     time.Time
	lastSession time.Time
}

// cutCodesOK are the codes a cut connection may end with: authgate's
// upstream-gone 1014, or what the backend says when it stops by itself
// (uvicorn: 1012 service restart, 1001 going away, 1011).
var cutCodesOK = map[int]bool{1014: true, 1012: true, 1001: true, 1011: true}

func (c *soakClient) msg(session, seq int) string {
	return fmt.Sprintf("c%d s%d m%d %s", c.id, session, seq, strings.Repeat("x", 40+c.id%50))
}

func (c *soakClient) run(ctx context.Context, stop <-chan struct{}) {
	backoff := 100 * time.Millisecond
	cut := false
	for session := 0; ; {
		select {
		case <-stop:
			return
		default:
		}
		conn, err := dialWS(ctx, c.url, c.header)
		if err == nil {
			var first string
			first, err = conn.next(15 * time.Second)
			if err == nil {
				var h struct {
					Hello struct {
						Sub string `json:"sub"`
					} `json:"hello"`
				}
				if jerr := jsonUnmarshal(first, &h); jerr != nil || h.Hello.Sub != c.wantSub {
					c.stats.violation("client %d: hello %q, want sub %s", c.id, first, c.wantSub)
				}
			} else {
				conn.Close()
			}
		}
		if err != nil {
			c.stats.refused.Add(1)
			key := err.Error()
			if cc := closeCode(err); cc != 0 {
				key = "close " + strconv.Itoa(cc)
			} else if len(key) > 60 {
				key = key[:60]
			}
			c.stats.mu.Lock()
			c.stats.refusedBy[key]++
			c.stats.mu.Unlock()
			select {
			case <-stop:
				return
			case <-time.After(backoff/2 + mrand.N(backoff)):
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		c.stats.sessions.Add(1)
		if cut {
			c.stats.reconnects.Add(1)
		}
		c.lastSession = time.Now()
		c.stats.open.Add(1)
		cut = c.session(conn, session, stop)
		c.stats.open.Add(-1)
		session++
		if !cut {
			return
		}
		c.lastCut = time.Now()
	}
}

// session runs one connection until stop (then drains the echoes and
// closes with 1000: every message must have come back exactly once, in
// order) or until the connection is cut (then it must have ended with a
// close code; the echoes received must be a prefix of what was sent).
func (c *soakClient) session(conn *wsClient, session int, stop <-chan struct{}) (cut bool) {
	defer conn.Close()
	var received atomic.Int64
	readerDone := make(chan error, 1)
	go func() {
		for n := 0; ; n++ {
			m, err := conn.next(0)
			if err != nil {
				readerDone <- err
				return
			}
			if want := c.msg(session, n); m != want {
				c.stats.violation("client %d session %d: echo %d is %.40q, want %.40q (lost, duplicated or reordered)", c.id, session, n, m, want)
			}
			received.Add(1)
			c.stats.echoed.Add(1)
		}
	}()
	endCut := func(err error) bool {
		code := closeCode(err)
		c.stats.cuts.Add(1)
		c.stats.mu.Lock()
		c.stats.cutCodes[code]++
		c.stats.cutTimes = append(c.stats.cutTimes, time.Now())
		c.stats.mu.Unlock()
		if !cutCodesOK[code] {
			c.stats.violation("client %d session %d: cut without an expected close code: %v", c.id, session, err)
		}
		return true
	}
	tick := time.NewTimer(mrand.N(c.interval))
	defer tick.Stop()
	sent := 0
	for {
		select {
		case err := <-readerDone:
			return endCut(err)
		case <-tick.C:
			tick.Reset(c.interval/2 + mrand.N(c.interval))
			if err := conn.sendText(c.msg(session, sent)); err != nil {
				// The connection is going; the reader reports how.
				select {
				case err := <-readerDone:
					return endCut(err)
				case <-time.After(10 * time.Second):
					return endCut(err)
				}
			}
			sent++
			c.stats.sent.Add(1)
			continue
		case <-stop:
		}
		break
	}
	// Drain: every echo must arrive before we close.
	deadline := time.Now().Add(20 * time.Second)
	for received.Load() < int64(sent) {
		select {
		case err := <-readerDone:
			return endCut(err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.stats.violation("client %d session %d: %d of %d echoes after 20s", c.id, session, received.Load(), sent)
			break
		}
	}
	if err := conn.sendClose(1000, "soak done"); err != nil {
		c.stats.violation("client %d: sending close: %v", c.id, err)
		return false
	}
	select {
	case err := <-readerDone:
		if code := closeCode(err); code != 1000 {
			c.stats.violation("client %d: closing handshake answered with %v, want 1000", c.id, err)
		}
	case <-time.After(10 * time.Second):
		c.stats.violation("client %d: no close frame back within 10s", c.id)
	}
	if got := received.Load(); got != int64(sent) {
		c.stats.violation("client %d session %d: %d echoes for %d messages", c.id, session, got, sent)
	}
	return false
}

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
		return v
	}
	return def
}

func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// gateFigures are authgate's descriptors and goroutines.
func gateFigures(t *testing.T, g *gate) (fds, goroutines int) {
	return g.fds(t), int(g.metrics(t)["go_goroutines"])
}

func rssKiB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// TestSoak: E2E_SOAK_CONNS (default 2000) concurrent WebSockets through
// authgate to the FastAPI backend, half legacy UUIDs (rewritten), half
// PyJWT tokens; messages flow for E2E_SOAK_SECONDS (default 40) while the
// config is reloaded several times (renamed over, rewritten in place, once
// invalid) and the backend is killed (SIGKILL; E2E_SOAK_RESTART=term for
// uvicorn's own shutdown) and restarted. Every message on a
// connection that was not cut is echoed exactly once; every cut connection
// ends with a close code and reconnects; authgate's descriptors and
// goroutines return to their baseline.
func TestSoak(t *testing.T) {
	conns := envInt("E2E_SOAK_CONNS", 2000)
	runFor := time.Duration(envInt("E2E_SOAK_SECONDS", 40)) * time.Second
	be := startBackend(t)
	params := gateParams{Upstream: be.URL(), UUID: rewriteStages}
	g := startGate(t, params)

	var jwtSubs []string
	for i := 0; i < conns/2; i++ {
		jwtSubs = append(jwtSubs, fmt.Sprintf("soak-jwt-%05d", i))
	}
	jwts := mint(t, 3*time.Hour, jwtSubs...)

	// Warm up (first handshake, first mint), then take the baseline.
	if _, c := expectHello(t, g.ws("token="+newUUID()), nil); c != nil {
		c.closeWith(1000, "", 5*time.Second)
	}
	time.Sleep(500 * time.Millisecond)
	fds0, gr0 := gateFigures(t, g)

	stats := &soakStats{cutCodes: map[int]int{}, refusedBy: map[string]int{}}
	clients := make([]*soakClient, conns)
	for i := range clients {
		c := &soakClient{id: i, interval: time.Second, stats: stats}
		switch {
		case i%2 == 0:
			u := newUUID()
			c.url, c.wantSub = g.ws("token="+strings.ToUpper(u)), u
		case i%4 == 1:
			c.url, c.wantSub = g.ws("token="+jwts[i/2]), jwtSubs[i/2]
		default:
			c.url, c.wantSub = g.ws(""), jwtSubs[i/2]
			c.header = http.Header{"Authorization": {"Bearer " + jwts[i/2]}}
		}
		clients[i] = c
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	const ramp = 5 * time.Second
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(ramp * time.Duration(i) / time.Duration(conns))
			c.run(ctx, stop)
		}()
	}
	stopAll := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
	}
	defer func() { stopAll(); wg.Wait() }()
	allOpen := func(what string) {
		t.Helper()
		err := waitFor(90*time.Second, func() error {
			if n := stats.open.Load(); n < int64(conns) {
				return fmt.Errorf("%d of %d connections open", n, conns)
			}
			return nil
		})
		if err != nil {
			stopAll()
			t.Fatalf("%s: %v (refused: %v)", what, err, stats.refusedBy)
		}
	}
	allOpen("ramp")
	rampTime := time.Since(start)
	openGauge := g.metrics(t)[`authgate_websocket_open{route="pam-ws"}`]
	fdsPeak, grPeak := gateFigures(t, g)
	rssPeak := rssKiB(g.pid())
	if int(openGauge) != conns {
		t.Errorf("authgate_websocket_open = %v with %d connections open", openGauge, conns)
	}
	phase := start.Add(rampTime)
	at := func(f float64) {
		if d := time.Until(phase.Add(time.Duration(f * float64(runFor)))); d > 0 {
			time.Sleep(d)
		}
	}

	reloads := 0
	at(0.10)
	p := g.params
	p.TTL = "10m"
	g.reload(t, p.yaml(t), false, "reloaded")
	reloads++
	at(0.20)
	p.ExtraRoutes = "  - name: extra\n    match: {prefix: /extra/}\n    policy: {jwt: pass, uuid: rewrite}"
	g.reload(t, p.yaml(t), true, "reloaded") // rewritten in place
	reloads++
	at(0.30)
	g.reload(t, []byte("listen: [this is not a config\n"), false, "rejected")
	if c := stats.cuts.Load(); c != 0 {
		t.Errorf("%d connections cut by reloads alone", c)
	}

	at(0.40)
	killedAt := time.Now()
	restartMode := "SIGKILLed"
	if os.Getenv("E2E_SOAK_RESTART") == "term" {
		// uvicorn's graceful stop (0.17 closes WebSockets without a close
		// frame, so authgate's 1014 is what clients get either way).
		restartMode = "SIGTERMed"
		be.stop()
	} else {
		be.kill()
	}
	time.Sleep(3 * time.Second)
	if err := be.start(); err != nil {
		stopAll()
		t.Fatal(err)
	}
	restartedAt := time.Now()
	allOpen("after the backend restart")
	recovered := time.Since(killedAt)

	at(0.65)
	p.UUID = "[{until: 2999-06-01, action: rewrite}, {until: 3000-01-01, action: reject, percent: 50, otherwise: rewrite}, {action: reject}]"
	g.reload(t, p.yaml(t), false, "reloaded")
	reloads++
	at(0.80)
	g.reload(t, g.params.yaml(t), false, "reloaded")
	reloads++
	at(1.0)
	stopAll()
	wg.Wait()
	elapsed := time.Since(start)

	// authgate lets go of everything.
	var fds1, gr1 int
	err := waitFor(30*time.Second, func() error {
		if n := g.metrics(t)[`authgate_websocket_open{route="pam-ws"}`]; n != 0 {
			return fmt.Errorf("authgate_websocket_open %v", n)
		}
		fds1, gr1 = gateFigures(t, g)
		if fds1 > fds0+2 || gr1 > gr0+3 {
			return fmt.Errorf("fds %d (baseline %d), goroutines %d (baseline %d)", fds1, fds0, gr1, gr0)
		}
		return nil
	})
	if err != nil {
		t.Errorf("authgate did not return to its baseline: %v", err)
	}

	stats.mu.Lock()
	defer stats.mu.Unlock()
	var codes []string
	for code, n := range stats.cutCodes {
		codes = append(codes, fmt.Sprintf("%d x%d", code, n))
	}
	sort.Strings(codes)
	var refused []string
	for k, n := range stats.refusedBy {
		refused = append(refused, fmt.Sprintf("%s x%d", k, n))
	}
	sort.Strings(refused)
	closeEvents := map[string]int{}
	for _, e := range g.logEvents(t, "ws_close") {
		closeEvents[fmt.Sprintf("%v by %v", e["close_code"], e["closed_by"])]++
	}
	report := fmt.Sprintf(`soak figures:
  connections        %d concurrent (ramp %v), %d sessions in all
  messages           %d sent, %d echoed
  backend            %s at +%v, restarted after 3s, all %d reconnected %v after the kill
  cut connections    %d (close codes: %s); authgate's ws_close events: %v
  reconnects         %d (refused attempts while the backend was down: %d: %s)
  reloads            %d applied, 1 invalid config rejected
  time               %v
  authgate fds       %d before, %d at peak, %d after
  authgate goroutines %d before, %d at peak, %d after
  authgate RSS       %d KiB at peak (%.1f KiB per connection)
`, conns, rampTime.Round(time.Millisecond), stats.sessions.Load(),
		stats.sent.Load(), stats.echoed.Load(),
		restartMode, killedAt.Sub(start).Round(time.Millisecond), conns, recovered.Round(time.Millisecond),
		stats.cuts.Load(), strings.Join(codes, ", "), closeEvents,
		stats.reconnects.Load(), stats.refused.Load(), strings.Join(refused, ", "),
		reloads, elapsed.Round(time.Millisecond),
		fds0, fdsPeak, fds1, gr0, grPeak, gr1, rssPeak, float64(rssPeak)/float64(conns))
	fmt.Print(report)
	t.Log("\n" + report)

	for _, v := range stats.violations {
		t.Error(v)
	}
	if stats.cuts.Load() == 0 {
		t.Errorf("the backend restart cut no connection")
	}
	for _, at := range stats.cutTimes {
		if at.Before(killedAt) || at.After(restartedAt.Add(5*time.Second)) {
			t.Errorf("a connection was cut at +%v, outside the backend restart (+%v .. +%v)", at.Sub(start), killedAt.Sub(start), restartedAt.Sub(start))
			break
		}
	}
	for _, c := range clients {
		if !c.lastCut.IsZero() && c.lastSession.Before(c.lastCut) {
			t.Errorf("client %d was cut at +%v and never reconnected", c.id, c.lastCut.Sub(start))
		}
	}
	if stats.reconnects.Load() != stats.cuts.Load() {
		t.Errorf("%d cuts but %d reconnects", stats.cuts.Load(), stats.reconnects.Load())
	}
	if stats.echoed.Load() < stats.sent.Load()-stats.cuts.Load()*3 {
		t.Errorf("%d of %d messages echoed", stats.echoed.Load(), stats.sent.Load())
	}
}
