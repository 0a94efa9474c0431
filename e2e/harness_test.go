//go:build e2e

// Package e2e runs authgate as the real product (the binary, `authgate
// serve --config FILE`, as a subprocess) in front of a real FastAPI backend
// that accepts only JWTs (e2e/backend, uvicorn, PyJWT), with tokens minted
// by PyJWT (e2e/backend/mint.py), a real browser (headless Chromium via
// chromedp) and a soak of thousands of WebSockets.
//
//	go test -tags e2e -count=1 -v ./e2e/...
//
// It needs /usr/bin/python3 with Debian's python3-fastapi, python3-uvicorn,
// python3-websockets and python3-jwt, and /usr/bin/chromium. A missing one
// is a failure, not a skip. E2E_PYTHON and E2E_CHROMIUM override the paths.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"
)

// secret is the Supabase JWT secret the backend verifies with and authgate
// both verifies and mints with.
const secret = "e2e-supabase-jwt-secret-0123456789abcdef"

var (
	authgateBin string
	pythonBin   = envOr("E2E_PYTHON", "/usr/bin/python3")
	chromiumBin = envOr("E2E_CHROMIUM", "/usr/bin/chromium")
	backendDir  string // absolute e2e/backend
	outDir      string // absolute e2e/out (git-ignored)
)

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	// The soak holds thousands of sockets in this process, in authgate and
	// in uvicorn; the subprocesses inherit the raised limit (an explicit
	// Setrlimit is what os/exec passes on; Go's own automatic raise is
	// undone for children).
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: setrlimit:", err)
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	backendDir = filepath.Join(wd, "backend")
	outDir = filepath.Join(wd, "out")
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	tmp, err := os.MkdirTemp("", "authgate-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	authgateBin = filepath.Join(tmp, "authgate")
	build := exec.Command("go", "build", "-o", authgateBin, "./cmd/authgate")
	build.Dir = filepath.Dir(wd)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building authgate:", err)
		return 1
	}
	for _, bin := range []string{pythonBin, chromiumBin} {
		if _, err := os.Stat(bin); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %s is required (apt-get install python3-fastapi python3-uvicorn python3-websockets python3-jwt chromium): %v\n", bin, err)
			return 1
		}
	}
	return m.Run()
}

// freePort returns a loopback port that was free a moment ago, chosen
// below the kernel's ephemeral range (ip_local_port_range, 32768-60999 by
// default) and never twice in one run: a port taken from the ephemeral
// range with :0 can be handed to one of the thousands of outgoing test
// connections before authgate binds it ("address already in use" was seen
// in CI while the soak and the client tests dialled).
func freePort(t testing.TB) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 200 {
		p := 20000 + rand.IntN(12000)
		if portsUsed[p] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		portsUsed[p] = true
		return p
	}
	t.Fatal("no free loopback port in 20000-31999 after 200 tries")
	return 0
}

var (
	portsMu   sync.Mutex
	portsUsed = map[int]bool{}
)

// syncBuffer collects a subprocess's output for failure messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// noKeepAlive is the client for admin and health requests: it holds no
// idle connection, so authgate's descriptor count is not ours to explain.
var noKeepAlive = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// get200 GETs url on a fresh connection and reports an error unless the
// answer is 200.
func get200(url string) error {
	resp, err := noKeepAlive.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// waitFor polls cond every 50ms until it returns nil or d passes.
func waitFor(d time.Duration, cond func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ---- the FastAPI backend ----

// backend is e2e/backend/app.py under uvicorn, on a fixed loopback port so
// that it can be restarted where authgate expects it.
type backend struct {
	t    testing.TB
	port int
	env  []string
	out  *syncBuffer
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// startBackend starts the backend and waits until it answers; extraEnv
// adds variables (JWKS_URL=...). It stops at the end of the test.
func startBackend(t testing.TB, extraEnv ...string) *backend {
	t.Helper()
	b := &backend{t: t, port: freePort(t), out: &syncBuffer{}}
	b.env = append(os.Environ(), "JWT_SECRET="+secret, "PYTHONDONTWRITEBYTECODE=1")
	b.env = append(b.env, extraEnv...)
	if err := b.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.stop)
	return b
}

func (b *backend) URL() string  { return fmt.Sprintf("http://127.0.0.1:%d", b.port) }
func (b *backend) Addr() string { return fmt.Sprintf("127.0.0.1:%d", b.port) }

func (b *backend) start() error {
	cmd := exec.Command(pythonBin, "-m", "uvicorn", "app:app", "--app-dir", backendDir,
		"--host", "127.0.0.1", "--port", strconv.Itoa(b.port), "--ws", "websockets",
		"--backlog", "4096", "--log-level", "warning", "--no-access-log")
	cmd.Env = b.env
	cmd.Stdout, cmd.Stderr = b.out, b.out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the backend: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	b.mu.Lock()
	b.cmd, b.done = cmd, done
	b.mu.Unlock()
	err := waitFor(30*time.Second, func() error {
		select {
		case <-done:
			return errors.New("exited")
		default:
		}
		return get200(b.URL() + "/healthz")
	})
	if err != nil {
		b.kill()
		return fmt.Errorf("backend did not come up: %v\n%s", err, b.out.String())
	}
	return nil
}

// kill ends the backend abruptly (SIGKILL: sockets reset, no close frames).
func (b *backend) kill() {
	b.mu.Lock()
	cmd, done := b.cmd, b.done
	b.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-done
}

func (b *backend) stop() {
	b.mu.Lock()
	cmd, done := b.cmd, b.done
	b.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// ---- authgate ----

// gateParams fill the config template.
type gateParams struct {
	Listen, Admin, Upstream string
	// UUID is the uuid policy of both routes: an action, or a YAML flow
	// list of stages.
	UUID string
	// Mint is the mint key block; empty means the HS256 secret.
	Mint string
	// Extra is appended to the config (more routes live in ExtraRoutes).
	ExtraRoutes string
	TTL         string
	Leeway      string // verify.leeway; "" means 30s
	RateLimit   int    // per_minute; 0 means the default 30
}

var gateTemplate = template.Must(template.New("config").Parse(`# authgate e2e config
listen: "{{.Listen}}"
admin_listen: "{{.Admin}}"
health_path: /healthz
shutdown_timeout: 10s
upstream:
  url: "{{.Upstream}}"
  dial_timeout: 2s
verify:
  hs256_secret: "${E2E_JWT_SECRET}"
  algorithms: [HS256]
  audience: authenticated
  leeway: {{.Leeway}}
mint:
{{- if .Mint}}
{{.Mint}}
{{- else}}
  hs256_secret: "${E2E_JWT_SECRET}"
{{- end}}
  ttl: {{.TTL}}
  issuer: authgate
  audience: authenticated
  claims: {role: authenticated}
log:
  level: info
  format: json
  user_ids: plain
routes:
  - name: pam-ws
    match: {path: /api/v1/pam/ws, websocket: true}
    token:
      from: [query:token, header:authorization, protocol]
      forward: same
    reject_with: close
    policy:
      jwt: pass
      jwt_expired: reject
      jwt_invalid: reject
      malformed: reject
      missing: reject
      uuid: {{.UUID}}
    close_on_expiry: true
    revoke_open: true
  - name: api
    match: {prefix: /api/, websocket: false}
    token:
      from: [header:authorization]
      forward: same
    policy:
      jwt: pass
      jwt_expired: reject
      jwt_invalid: reject
      malformed: reject
      missing: reject
      uuid: {{.UUID}}
{{.ExtraRoutes}}
unmatched: pass
rate_limit:
  per_minute: {{.RateLimit}}
  burst: 10
`))

func (p gateParams) yaml(t testing.TB) []byte {
	t.Helper()
	if p.TTL == "" {
		p.TTL = "5m"
	}
	if p.Leeway == "" {
		p.Leeway = "30s"
	}
	if p.RateLimit == 0 {
		p.RateLimit = 30
	}
	var b bytes.Buffer
	if err := gateTemplate.Execute(&b, p); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// gate is one `authgate serve` process.
type gate struct {
	t       testing.TB
	params  gateParams
	dir     string
	cfgPath string
	logPath string
	stderr  *syncBuffer
	cmd     *exec.Cmd
	done    chan struct{}
	exitErr error
}

// startGate writes the config, starts `authgate serve --config FILE` with
// its JSON log in a file, and waits for /readyz. It is stopped with SIGTERM
// at the end of the test, and must exit 0.
func startGate(t testing.TB, p gateParams) *gate {
	t.Helper()
	if p.Listen == "" {
		p.Listen = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	}
	if p.Admin == "" {
		p.Admin = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	}
	g := &gate{t: t, params: p, dir: t.TempDir(), stderr: &syncBuffer{}, done: make(chan struct{})}
	g.cfgPath = filepath.Join(g.dir, "authgate.yaml")
	g.logPath = filepath.Join(g.dir, "authgate.log")
	if err := os.WriteFile(g.cfgPath, p.yaml(t), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(g.logPath)
	if err != nil {
		t.Fatal(err)
	}
	g.cmd = exec.Command(authgateBin, "serve", "--config", g.cfgPath)
	g.cmd.Env = append(os.Environ(), "E2E_JWT_SECRET="+secret)
	g.cmd.Stdout, g.cmd.Stderr = logf, g.stderr
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	go func() { g.exitErr = g.cmd.Wait(); close(g.done) }()
	t.Cleanup(g.stop)
	err = waitFor(15*time.Second, func() error {
		select {
		case <-g.done:
			return errors.New("exited")
		default:
		}
		return get200("http://" + p.Admin + "/readyz")
	})
	if err != nil {
		t.Fatalf("authgate did not become ready: %v\nstderr:\n%s\nlog:\n%s", err, g.stderr.String(), g.logText())
	}
	return g
}

func (g *gate) pid() int { return g.cmd.Process.Pid }

// ws is the public WebSocket URL of the PAM route with query (may be "").
func (g *gate) ws(query string) string {
	u := "ws://" + g.params.Listen + "/api/v1/pam/ws"
	if query != "" {
		u += "?" + query
	}
	return u
}

func (g *gate) http(path string) string { return "http://" + g.params.Listen + path }

func (g *gate) stop() {
	select {
	case <-g.done:
	default:
		g.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-g.done:
		case <-time.After(20 * time.Second):
			g.cmd.Process.Kill()
			<-g.done
			g.t.Errorf("authgate did not exit within 20s of SIGTERM")
		}
	}
	if g.exitErr != nil {
		g.t.Errorf("authgate exited with %v\nstderr:\n%s", g.exitErr, g.stderr.String())
	}
}

func (g *gate) logText() string {
	b, _ := os.ReadFile(g.logPath)
	return string(b)
}

// logEvents returns the JSON log lines whose event is kind ("" = all).
func (g *gate) logEvents(t testing.TB, kind string) []map[string]any {
	t.Helper()
	f, err := os.Open(g.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Errorf("authgate log line is not JSON: %q", sc.Text())
			continue
		}
		if kind == "" || m["event"] == kind {
			out = append(out, m)
		}
	}
	return out
}

// metrics returns the admin /metrics samples by series ("name{labels}").
func (g *gate) metrics(t testing.TB) map[string]float64 {
	t.Helper()
	resp, err := noKeepAlive.Get("http://" + g.params.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out
}

// fds counts authgate's open descriptors.
func (g *gate) fds(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", g.pid()))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// reload writes a new config the way editors do (a new file renamed over
// the old one; inPlace truncates and rewrites instead) and waits until
// authgate counts one more reload with result want (reloaded | rejected).
func (g *gate) reload(t testing.TB, content []byte, inPlace bool, want string) {
	t.Helper()
	key := `authgate_config_reloads_total{result="` + want + `"}`
	before := g.metrics(t)[key]
	if inPlace {
		if err := os.WriteFile(g.cfgPath, content, 0o600); err != nil {
			t.Fatal(err)
		}
	} else {
		tmp := g.cfgPath + ".tmp"
		if err := os.WriteFile(tmp, content, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, g.cfgPath); err != nil {
			t.Fatal(err)
		}
	}
	err := waitFor(10*time.Second, func() error {
		if got := g.metrics(t)[key]; got <= before {
			return fmt.Errorf("%s still %v", key, got)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reload: %v\nlog tail:\n%s", err, tail(g.logText(), 2000))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// ---- tokens (PyJWT, independent of authgate's golang-jwt) ----

// mint returns one HS256 JWT per sub from e2e/backend/mint.py, expiring
// exp from now (negative: already expired).
func mint(t testing.TB, exp time.Duration, subs ...string) []string {
	t.Helper()
	args := []string{filepath.Join(backendDir, "mint.py"), "--exp", strconv.Itoa(int(exp / time.Second))}
	for _, s := range subs {
		args = append(args, "--sub", s)
	}
	cmd := exec.Command(pythonBin, args...)
	cmd.Env = append(os.Environ(), "JWT_SECRET="+secret)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("mint.py: %v\n%s", err, stderr.String())
	}
	toks := strings.Fields(string(out))
	if len(toks) != len(subs) {
		t.Fatalf("mint.py: %d tokens for %d subs", len(toks), len(subs))
	}
	return toks
}

func sha256hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// hello is the backend's first message on an accepted WebSocket.
type hello struct {
	Sub             string `json:"sub"`
	Legacy          bool   `json:"legacy"`
	Iss             string `json:"iss"`
	Via             string `json:"via"`
	TokenSHA256     string `json:"token_sha256"`
	XAuthgateClass  string `json:"x_authgate_class"`
	XAuthgateLegacy string `json:"x_authgate_legacy"`
	Protocols       string `json:"protocols"`
	Extensions      string `json:"extensions"`
}

func parseHello(t testing.TB, msg string) hello {
	t.Helper()
	var h struct {
		Hello *hello `json:"hello"`
	}
	if err := json.Unmarshal([]byte(msg), &h); err != nil || h.Hello == nil {
		t.Fatalf("not a hello message: %q (%v)", msg, err)
	}
	return *h.Hello
}

// ctxT is a context ending with the test, bounded by d.
func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func itoa(i int) string { return strconv.Itoa(i) }
