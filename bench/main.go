// Command bench measures authgate against the proxies a user would pick
// instead (nginx, HAProxy, Caddy), the plainest Go proxy (bench/copier)
// and the direct connection, on loopback, as SPEC "Performance" asks, and
// prints one table:
//
//	go run ./bench                   # everything, 3 runs
//	go run ./bench -quick            # a smoke run (CI): 1 short run, fewer connections
//	go run ./bench -only echo64,echo64k -runs 5
//	go run ./bench -profile /tmp/prof -only upgrade,echo64,echo64k -peers authgate -runs 1
//
// One echo backend (this program re-executed, gobwas/ws; plain and TLS)
// and the load generator (this process, gobwas/ws) run pinned to core 0;
// the proxy under test runs pinned to core 1. Every peer is a config file
// under bench/peers/ and one line in peers.go; a peer that is not
// installed is skipped with a message. Tests interleave the peers and
// repeat -runs times; the table shows medians. See bench/README.md.
//
// It measures; it does not judge: the exit status is 0 whether or not the
// bars are met (non-zero only when the benchmark itself cannot run).
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// roleEnv selects what a re-executed copy of this program does: "main"
// (the benchmark, pinned to core 0), "echo" (the echo backend), "inproc"
// (authgate in-process, for -profile), "storm" (the reconnect storm's
// stale clients).
const roleEnv = "AUTHGATE_BENCH_ROLE"

func main() {
	var err error
	switch os.Getenv(roleEnv) {
	case "echo":
		err = runEcho()
	case "inproc":
		err = runInproc(os.Args[1])
	case "storm":
		err = runStorm()
	case "main":
		err = run()
	default:
		err = launch()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// launch raises RLIMIT_NOFILE (inherited by every subprocess) and
// re-executes this program pinned to core 0 with taskset.
func launch() error {
	raiseNofile()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	env := append(os.Environ(), roleEnv+"=main")
	ts := findTaskset()
	if ts == "" {
		fmt.Fprintln(os.Stderr, "bench: taskset (util-linux) not found: nothing is pinned to a core; figures are not comparable with pinned runs")
		os.Setenv(roleEnv, "main")
		return run()
	}
	return syscall.Exec(ts, append([]string{ts, "-c", "0", self}, os.Args[1:]...), env)
}

func raiseNofile() int {
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && rl.Cur < rl.Max {
		rl.Cur = rl.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	return int(min(rl.Cur, 1<<20))
}

func findTaskset() string {
	p, _ := exec.LookPath("taskset")
	return p
}

// config is the parsed flags.
type config struct {
	runs        int
	dur, warm   time.Duration
	pause       time.Duration // between two measured windows
	upConns     int
	smallConns  int
	largeConns  int
	idleConns   int
	idleSettle  time.Duration
	idleRest    time.Duration
	storm       stormParams
	reportSize  string
	decideTime  string
	decideCount int
	tokens      int
	only        map[string]bool
	peers       []peerDef // the peers that run, in table order
	profile     string
	keep        bool
	quick       bool
	baseline    string // another authgate binary, run as peer "baseline"
}

var allTests = []string{"upgrade", "tls", "echo64", "echo64k", "idle", "storm", "decide", "report"}

// direct is the load talking to the echo backend itself.
var directDef = peerDef{name: "direct", tests: "upgrade,echo64,echo64k"}

func run() error {
	nofile := raiseNofile()
	var names []string
	for _, d := range peerDefs {
		names = append(names, d.name)
	}
	quick := flag.Bool("quick", false, "smoke run (CI): 1 run of 0.5 s per test, 300 idle connections read after 1 s, a storm of 200+20 clients for 1 s, a small report log")
	runs := flag.Int("runs", 3, "repetitions of each test; the table shows medians")
	only := flag.String("only", "", "comma list of tests to run: "+strings.Join(allTests, ","))
	peers := flag.String("peers", "direct,"+strings.Join(names, ","), "comma list of peers")
	dur := flag.Duration("duration", 5*time.Second, "measured time of one upgrade or echo run")
	idleConns := flag.Int("idle-conns", 5000, "connections held open by the idle test")
	idleRest := flag.Duration("idle-wait", 50*time.Second, "idle test: wait this long after opening before the steady-state RSS reading (authgate's relay moves idle connections to fresh small-stack goroutines after 30 s, and it returns freed memory to the OS 40 s after the last connection opened or closed); every peer is read then, and 2 s after opening")
	stormStale := flag.Int("storm-clients", 2000, "reconnect storm: stale clients reconnecting in a tight loop")
	stormJWT := flag.Int("storm-jwt", 200, "reconnect storm: JWT clients echoing every 100 ms")
	stormDur := flag.Duration("storm-duration", 10*time.Second, "reconnect storm: length of the quiet window and of the storm window")
	stormRate := flag.Int("storm-rate", 500, "reconnect storm: also run it open loop, the stale clients offering this many attempts a second in all (the same for every peer; below what the FastAPI backend can answer); 0: closed loop only")
	reportSize := flag.String("report-size", "100MB", "log size for the report benchmark")
	profile := flag.String("profile", "", "directory: run authgate in-process (proxy.Run, same config) and write a CPU profile of each measured window there")
	keep := flag.Bool("keep", false, "keep the temp dir (configs, logs)")
	baseline := flag.String("baseline", "", "path of another authgate binary (for example one built from main) to run as a further peer, \"baseline\", configured and pinned like authgate and interleaved with it: the table gains its column and an ag/base ratio, so a change is judged within one run")
	flag.Parse()

	cfg := config{
		runs: *runs, dur: *dur, warm: time.Second, pause: 300 * time.Millisecond,
		upConns: 32, smallConns: 32, largeConns: 8,
		idleConns: *idleConns, idleSettle: 2 * time.Second, idleRest: *idleRest,
		storm:      stormParams{stale: *stormStale, jwt: *stormJWT, every: 100 * time.Millisecond, phase: *stormDur, warm: time.Second, settle: 5 * time.Second, rate: *stormRate},
		reportSize: *reportSize, decideCount: *runs, tokens: 100000,
		profile: *profile, keep: *keep, quick: *quick,
	}
	if *quick {
		cfg.runs, cfg.dur, cfg.warm, cfg.pause = 1, 500*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
		cfg.idleConns, cfg.idleSettle, cfg.idleRest = min(cfg.idleConns, 300), time.Second, 0
		cfg.storm.stale, cfg.storm.jwt, cfg.storm.phase = min(cfg.storm.stale, 200), min(cfg.storm.jwt, 20), time.Second
		cfg.storm.warm, cfg.storm.settle = 300*time.Millisecond, time.Second
		cfg.storm.rate = min(cfg.storm.rate, 400)
		cfg.reportSize, cfg.decideTime, cfg.decideCount, cfg.tokens = "20MB", "200ms", 1, 10000
	}
	cfg.runs = max(cfg.runs, 1)
	cfg.only = map[string]bool{}
	for _, t := range strings.Split(*only, ",") {
		if t = strings.TrimSpace(t); t != "" {
			if !slices.Contains(allTests, t) {
				return fmt.Errorf("-only: unknown test %q (tests: %s)", t, strings.Join(allTests, ","))
			}
			cfg.only[t] = true
		}
	}
	if len(cfg.only) == 0 {
		for _, t := range allTests {
			cfg.only[t] = true
		}
	}
	var want []peerDef
	for _, p := range strings.Split(*peers, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if p == "direct" {
			want = append(want, directDef)
			continue
		}
		d, ok := findPeerDef(p)
		if !ok {
			return fmt.Errorf("-peers: unknown peer %q (peers: direct,%s)", p, strings.Join(names, ","))
		}
		want = append(want, d)
	}
	if *baseline != "" {
		if _, err := os.Stat(*baseline); err != nil {
			return fmt.Errorf("-baseline: %w", err)
		}
		cfg.baseline = *baseline
		d, _ := findPeerDef("authgate")
		d.name, d.bin = "baseline", *baseline
		want = append(want, d)
	}
	// Only the peers some selected test needs.
	want = slices.DeleteFunc(want, func(d peerDef) bool {
		return !slices.ContainsFunc(allTests, func(t string) bool { return cfg.only[t] && d.takes(t) })
	})

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	root, err := moduleRoot()
	if err != nil {
		return err
	}
	e := &env{root: root, taskset: findTaskset(), profile: cfg.profile != "", bins: map[string]string{}, nofile: nofile}
	if e.self, err = os.Executable(); err != nil {
		return err
	}
	if cfg.profile != "" {
		if err := os.MkdirAll(cfg.profile, 0o755); err != nil {
			return err
		}
	}
	if e.dir, err = os.MkdirTemp("", "authgate-bench-"); err != nil {
		return err
	}
	os.Chmod(e.dir, 0o755) // nginx workers run as another user
	if cfg.keep {
		fmt.Println("temp dir (kept):", e.dir)
	} else {
		defer os.RemoveAll(e.dir)
	}
	e.secret = randomSecret()
	if e.profile {
		e.bins["authgate"] = e.self
	}
	var direct bool
	if i := slices.IndexFunc(want, func(d peerDef) bool { return d.name == "direct" }); i >= 0 {
		direct = true
		want = slices.Delete(want, i, i+1)
	}
	if cfg.peers, err = e.resolve(want, os.Stdout); err != nil {
		return err
	}
	if direct {
		cfg.peers = append([]peerDef{directDef}, cfg.peers...)
	}

	printHeader(os.Stdout, e, cfg)

	var res results
	res.init()
	if cfg.only["upgrade"] || cfg.only["tls"] || cfg.only["echo64"] || cfg.only["echo64k"] || cfg.only["idle"] || cfg.only["storm"] {
		if e.pki, err = makeTestPKI(e.dir); err != nil {
			return fmt.Errorf("test CA: %w", err)
		}
		ec, err := startEcho(e.self, e.pki)
		if err != nil {
			return err
		}
		defer ec.stop()
		e.echoCtl = ec
		e.backend, e.tlsAddr = ec.addrs[0], map[string]string{}
		for i, l := range tlsListeners {
			e.tlsAddr[l.name] = ec.addrs[1+i]
		}
		if !e.profile {
			e.loadPIDs = []int{os.Getpid(), ec.pid}
		}
		tk, err := mintTokens(e.secret, cfg.tokens)
		if err != nil {
			return err
		}
		if err := runProxyTests(ctx, e, cfg, tk, &res); err != nil {
			return err
		}
		if cfg.only["storm"] && ctx.Err() == nil {
			if err := runStormTests(ctx, e, cfg, tk, &res); err != nil {
				return err
			}
		}
	}
	if cfg.only["decide"] && ctx.Err() == nil {
		fmt.Fprintf(os.Stderr, "== BenchmarkDecide\n")
		d, out, err := e.runDecide(root, cfg.decideCount, cfg.decideTime)
		if err != nil {
			fmt.Fprintf(os.Stderr, "decide: %v\n%s", err, out)
		}
		res.decide = d
	}
	if cfg.only["report"] && ctx.Err() == nil {
		fmt.Fprintf(os.Stderr, "== report vs jq\n")
		r, out, err := e.runReport(root, cfg.reportSize, cfg.runs)
		if err != nil {
			fmt.Fprintf(os.Stderr, "report: %v\n%s", err, out)
		} else {
			res.report, res.reportOut = &r, out
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	res.print(os.Stdout, cfg)
	if cfg.profile != "" {
		fmt.Printf("\nCPU profiles in %s; read one with: go tool pprof -top -nodecount=40 %s/<file>.pprof\n", cfg.profile, cfg.profile)
	}
	return nil
}

// echoControl is the running echo backend: its addresses (plain, then the
// TLS listeners) and its handshake counters.
type echoControl struct {
	addrs []string
	pid   int
	mu    sync.Mutex
	in    io.WriteCloser
	out   *bufio.Reader
	stop  func()
}

// startEcho runs the echo backend: this executable in role "echo",
// inheriting the bench process's pinning to core 0.
func startEcho(self string, pki testPKI) (*echoControl, error) {
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), roleEnv+"=echo", "BENCH_TLS_CERT="+pki.cert, "BENCH_TLS_KEY="+pki.key)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ec := &echoControl{pid: cmd.Process.Pid, in: in, out: bufio.NewReader(out)}
	ec.stop = func() { in.Close(); cmd.Process.Kill(); cmd.Wait() }
	line, err := ec.out.ReadString('\n')
	if err != nil {
		ec.stop()
		return nil, fmt.Errorf("echo backend: %w", err)
	}
	ec.addrs = strings.Fields(line)
	if len(ec.addrs) != 1+len(tlsListeners) {
		ec.stop()
		return nil, fmt.Errorf("echo backend: addresses %q", line)
	}
	return ec, nil
}

// handshakes returns the TLS listener's counts (full, resumed) so far.
func (ec *echoControl) handshakes(listener string) (full, resumed int64) {
	ec.mu.Lock()
	defer ec.mu.Unlock()
	fmt.Fprintln(ec.in, "stats")
	line, err := ec.out.ReadString('\n')
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(line)
	for i, l := range tlsListeners {
		if l.name == listener && len(f) >= 3+2*i {
			full, _ = strconv.ParseInt(f[1+2*i], 10, 64)
			resumed, _ = strconv.ParseInt(f[2+2*i], 10, 64)
		}
	}
	return full, resumed
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("run from inside the authgate module (cd to the repo and `go run ./bench`)")
	}
	return filepath.Dir(gomod), nil
}

func randomSecret() string {
	b := make([]byte, 24)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// mintTokens makes n HS256 JWTs as Supabase issues them, each for another
// user, handed out round robin: 100,000 is more than the upgrades of a
// full run and ten times the verifier's cache (10,000 entries), so
// upgrades verify signatures for real rather than hit the cache.
func mintTokens(secret string, n int) (*tokens, error) {
	t := &tokens{list: make([]string, n)}
	now := time.Now()
	for i := range t.list {
		claims := jwt.MapClaims{
			"sub":        fmt.Sprintf("8c3f1e2a-5b6d-4e7f-8a9b-%012d", i),
			"aud":        "authenticated",
			"role":       "authenticated",
			"iss":        "https://bench.supabase.co/auth/v1",
			"iat":        now.Unix(),
			"exp":        now.Add(6 * time.Hour).Unix(),
			"email":      fmt.Sprintf("user%d@example.com", i),
			"session_id": fmt.Sprintf("5b1c2d3e-0000-4000-8000-%012d", i),
		}
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
		if err != nil {
			return nil, err
		}
		t.list[i] = s
	}
	return t, nil
}

func printHeader(w *os.File, e *env, cfg config) {
	fmt.Fprintf(w, "authgate bench  %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "machine: %d CPUs (%s), %s, %s, load average %s\n", nproc(), cpuModel(), kernel(), runtime.Version(), loadAvg())
	pin := "proxy under test on core 1 (Go peers GOMAXPROCS=1, nginx 1 worker, HAProxy nbthread 1), load generator + echo backend on core 0"
	if e.taskset == "" {
		pin = "NOT pinned (taskset missing)"
	}
	fmt.Fprintf(w, "pinning: %s\n", pin)
	for _, d := range cfg.peers {
		if v := version(d.name, e.bins[d.name]); v != "" {
			fmt.Fprintf(w, "%s: %s\n", d.name, v)
		}
		if d.note != "" {
			fmt.Fprintf(w, "%s: %s\n", d.name, d.note)
		}
	}
	fmt.Fprintf(w, "runs: %d, %s measured per echo/upgrade run (after %s warm-up), peers interleaved\n", cfg.runs, cfg.dur, cfg.warm)
	if e.profile {
		fmt.Fprintf(w, "PROFILE MODE: authgate runs in-process (proxy.Run) with CPU profiling; its figures include profiling overhead\n")
	}
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return "unknown CPU"
}

// nproc counts the machine's CPUs (runtime.NumCPU reports this process's
// affinity, which is one core here).
func nproc() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	n := 0
	for line := range strings.Lines(string(b)) {
		if strings.HasPrefix(line, "processor") {
			n++
		}
	}
	return n
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return "Linux " + strings.TrimSpace(string(b))
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
