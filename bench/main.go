// Command bench measures authgate against nginx and the direct connection
// on loopback, as SPEC "Performance" asks, and prints one table:
//
//	go run ./bench                   # everything, 3 runs (about 7 minutes)
//	go run ./bench -quick            # a smoke run (CI): 1 short run, fewer connections
//	go run ./bench -only echo64,echo64k -runs 5
//	go run ./bench -profile /tmp/prof -only upgrade,echo64,echo64k -peers authgate -runs 1
//
// One echo backend (this program re-executed, gobwas/ws) and the load
// generator (this process, gobwas/ws) run pinned to core 0; the proxy
// under test, authgate (`authgate serve`, GOMAXPROCS=1) or nginx (one
// worker), runs pinned to core 1. Tests interleave the peers and repeat
// -runs times; the table shows medians. See bench/README.md.
//
// It measures; it does not judge: the exit status is 0 whether or not the
// bars are met (non-zero only when the benchmark itself cannot run).
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// roleEnv selects what a re-executed copy of this program does: "main"
// (the benchmark, pinned to core 0), "echo" (the echo backend), "inproc"
// (authgate in-process, for -profile).
const roleEnv = "AUTHGATE_BENCH_ROLE"

func main() {
	var err error
	switch os.Getenv(roleEnv) {
	case "echo":
		err = runEcho()
	case "inproc":
		err = runInproc(os.Args[1])
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

func raiseNofile() {
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && rl.Cur < rl.Max {
		rl.Cur = rl.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
}

func findTaskset() string {
	p, _ := exec.LookPath("taskset")
	return p
}

func findNginx() string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	return ""
}

// config is the parsed flags.
type config struct {
	runs         int
	dur, warm    time.Duration
	upConns      int
	smallConns   int
	largeConns   int
	idleConns    int
	idleSettle   time.Duration
	idleRest     time.Duration
	reportSize   string
	decideTime   string
	decideCount  int
	tokens       int
	only         map[string]bool
	peers        []string
	profile      string
	keep         bool
	quick        bool
	nginxMissing bool
	baseline     string // another authgate binary, run as peer "baseline"
}

var allTests = []string{"upgrade", "echo64", "echo64k", "idle", "decide", "report"}

func run() error {
	raiseNofile()
	quick := flag.Bool("quick", false, "smoke run: 1 run of 1 s per test, 300 idle connections, small report log")
	runs := flag.Int("runs", 3, "repetitions of each test; the table shows medians")
	only := flag.String("only", "", "comma list of tests to run: "+strings.Join(allTests, ","))
	peers := flag.String("peers", "direct,nginx,authgate", "comma list of peers")
	dur := flag.Duration("duration", 5*time.Second, "measured time of one upgrade or echo run")
	idleConns := flag.Int("idle-conns", 5000, "connections held open by the idle test")
	idleRest := flag.Duration("idle-wait", 50*time.Second, "idle test: wait this long after opening before reading authgate's RSS (its relay moves idle connections to fresh small-stack goroutines after 30 s, and it returns freed memory to the OS 40 s after the last connection opened or closed)")
	reportSize := flag.String("report-size", "100MB", "log size for the report benchmark")
	profile := flag.String("profile", "", "directory: run authgate in-process (proxy.Run, same config) and write a CPU profile of each measured window there")
	keep := flag.Bool("keep", false, "keep the temp dir (configs, logs)")
	baseline := flag.String("baseline", "", "path of another authgate binary (for example one built from main) to run as a further peer, \"baseline\", configured and pinned like authgate and interleaved with it: the table gains its column and an ag/base ratio, so a change is judged within one run")
	flag.Parse()

	cfg := config{
		runs: *runs, dur: *dur, warm: time.Second,
		upConns: 32, smallConns: 32, largeConns: 8,
		idleConns: *idleConns, idleSettle: 2 * time.Second, idleRest: *idleRest,
		reportSize: *reportSize, decideCount: *runs, tokens: 100000,
		profile: *profile, keep: *keep, quick: *quick,
	}
	if *quick {
		cfg.runs, cfg.dur, cfg.warm = 1, time.Second, 200*time.Millisecond
		cfg.idleConns, cfg.idleRest = min(cfg.idleConns, 300), 0
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
	for _, p := range strings.Split(*peers, ",") {
		if p = strings.TrimSpace(p); p != "" {
			if p != "direct" && p != "nginx" && p != "authgate" {
				return fmt.Errorf("-peers: unknown peer %q", p)
			}
			cfg.peers = append(cfg.peers, p)
		}
	}
	if *baseline != "" {
		if _, err := os.Stat(*baseline); err != nil {
			return fmt.Errorf("-baseline: %w", err)
		}
		cfg.baseline = *baseline
		cfg.peers = append(cfg.peers, "baseline")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	root, err := moduleRoot()
	if err != nil {
		return err
	}
	e := &env{taskset: findTaskset(), nginx: findNginx(), profile: cfg.profile != ""}
	if e.self, err = os.Executable(); err != nil {
		return err
	}
	if e.nginx == "" && slices.Contains(cfg.peers, "nginx") {
		fmt.Println("NOTE: nginx not found on PATH or at /usr/sbin/nginx: the nginx peer is skipped and ratios to nginx are n/a.")
		fmt.Println("      Install it with: apt-get update && apt-get install -y nginx")
		cfg.peers = slices.DeleteFunc(cfg.peers, func(p string) bool { return p == "nginx" })
		cfg.nginxMissing = true
	}
	if cfg.profile != "" {
		if err := os.MkdirAll(cfg.profile, 0o755); err != nil {
			return err
		}
	}
	if e.dir, err = os.MkdirTemp("", "authgate-bench-"); err != nil {
		return err
	}
	os.Chmod(e.dir, 0o755) // nginx workers run as nobody
	if cfg.keep {
		fmt.Println("temp dir (kept):", e.dir)
	} else {
		defer os.RemoveAll(e.dir)
	}
	e.secret = randomSecret()

	printHeader(os.Stdout, e, cfg)

	needProxies := cfg.only["upgrade"] || cfg.only["echo64"] || cfg.only["echo64k"] || cfg.only["idle"]
	var res results
	res.init()
	if needProxies {
		if slices.Contains(cfg.peers, "authgate") && !e.profile {
			e.authgate = filepath.Join(e.dir, "authgate")
			build := exec.Command("go", "build", "-o", e.authgate, "./cmd/authgate")
			build.Dir = root
			if out, err := build.CombinedOutput(); err != nil {
				return fmt.Errorf("go build ./cmd/authgate: %w\n%s", err, out)
			}
		}
		addr, echoPID, stopEcho, err := startEcho(e.self)
		if err != nil {
			return err
		}
		defer stopEcho()
		e.backend = addr
		if !e.profile {
			e.loadPIDs = []int{os.Getpid(), echoPID}
		}
		tk, err := mintTokens(e.secret, cfg.tokens)
		if err != nil {
			return err
		}
		if err := runProxyTests(ctx, e, cfg, tk, &res); err != nil {
			return err
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
	fmt.Fprintf(w, "machine: %d CPUs (%s), %s, %s\n", nproc(), cpuModel(), kernel(), runtime.Version())
	pin := "proxy under test on core 1 (authgate GOMAXPROCS=1; nginx 1 worker), load generator + echo backend on core 0"
	if e.taskset == "" {
		pin = "NOT pinned (taskset missing)"
	}
	fmt.Fprintf(w, "pinning: %s\n", pin)
	if e.nginx != "" {
		out, _ := exec.Command(e.nginx, "-v").CombinedOutput()
		fmt.Fprintf(w, "nginx: %s (access_log off)\n", strings.TrimSpace(string(out)))
	}
	fmt.Fprintf(w, "runs: %d, %s measured per echo/upgrade run (after %s warm-up), peers interleaved\n", cfg.runs, cfg.dur, cfg.warm)
	if e.profile {
		fmt.Fprintf(w, "PROFILE MODE: authgate runs in-process (proxy.Run) with CPU profiling; its figures include profiling overhead\n")
	}
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
