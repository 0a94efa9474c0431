package main

// These tests run the real command: the test binary re-executes itself as
// authgate when AUTHGATE_TEST_MAIN is set, so `serve` runs as its own
// process and receives real signals.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"authgate/policy"
)

func TestMain(m *testing.M) {
	if os.Getenv("AUTHGATE_TEST_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

const exampleSecret = "super-secret-jwt-token-with-at-least-32-characters-long"

// authgate returns a command running this binary as authgate.
func authgate(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "AUTHGATE_TEST_MAIN=1",
		"UPSTREAM_URL=http://127.0.0.1:8000", "SUPABASE_JWT_SECRET="+exampleSecret)
	return cmd
}

func runAuthgate(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := authgate(args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = cmd.ProcessState.ExitCode()
	if err != nil && code < 0 {
		t.Fatalf("running authgate %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

func TestCheck(t *testing.T) {
	t.Run("example config", func(t *testing.T) {
		out, errOut, code := runAuthgate(t, "check", "--config", "../../config.yaml")
		if code != 0 || !strings.HasPrefix(out, "ok\n") {
			t.Fatalf("check config.yaml: got exit %d, stdout %q, stderr %q; want exit 0 and ok", code, out, errOut)
		}
		for _, want := range []string{"pam-ws", "api", "stage 0", "trusted proxies private, cloudflare",
			"Cloudflare's ranges as published on " + policy.CloudflareRangesDate, "1m30s to answer an upgrade"} {
			if !strings.Contains(out, want) {
				t.Errorf("summary lacks %q:\n%s", want, out)
			}
		}
		if errOut != "" {
			t.Errorf("shipped config: got warnings %q, want none", errOut)
		}
	})
	t.Run("rate limit with nothing trusted warns", func(t *testing.T) {
		cfg := filepath.Join(t.TempDir(), "c.yaml")
		os.WriteFile(cfg, []byte("upstream: {url: http://127.0.0.1:1}\nverify: {hs256_secret: 0123456789abcdef0123456789abcdef}\nroutes: [{name: a, match: {path: /a}}]\n"), 0o644)
		out, errOut, code := runAuthgate(t, "check", "--config", cfg)
		if code != 0 || !strings.HasPrefix(out, "ok\n") {
			t.Fatalf("got exit %d, stdout %q; want 0 and ok (a warning does not fail)", code, out)
		}
		if !strings.Contains(errOut, "warning: "+cfg+": trusted_proxies: empty while rate_limit is on") {
			t.Errorf("stderr %q: want the trusted_proxies warning", errOut)
		}
	})
	t.Run("misspelt key", func(t *testing.T) {
		_, errOut, code := runAuthgate(t, "check", "--config", "testdata/misspelt.yaml")
		want := `testdata/misspelt.yaml:8: routes[0].token.forwrd: unknown key (did you mean "forward"?); valid keys here: from, forward`
		if code != 1 || strings.TrimSpace(errOut) != want {
			t.Errorf("got exit %d, stderr:\n%s\nwant exit 1, stderr:\n%s", code, errOut, want)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		_, errOut, code := runAuthgate(t, "check", "--config", "testdata/nope.yaml")
		if code != 1 || !strings.Contains(errOut, "testdata/nope.yaml: cannot read config") {
			t.Errorf("got exit %d, stderr %q; want 1 and the file named", code, errOut)
		}
	})
}

func TestExplain(t *testing.T) {
	const uuid = "21a2151a-cd37-41d5-a1c7-124bb05e7a6a"
	url := "ws://localhost/api/v1/pam/ws?token=" + uuid
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"today: rewrite", []string{"explain", "--config", "../../config.yaml", "--at", "2026-12-01", url},
			[]string{"class:     uuid", "stage:     0 of uuid", "action:    rewrite", "X-Authgate-Legacy: 1", "?token=eyJhbG…"}},
		{"later: percent stage", []string{"explain", "--config", "../../config.yaml", "--at", "2027-01-01", url},
			[]string{"stage:     1 of uuid", "reject 25%", "share:     this user is"}},
		{"flags after the URL", []string{"explain", url, "--config", "../../config.yaml", "--at", "2027-02-01"},
			[]string{"stage:     2 of uuid", "dry run: would reject"}},
		{"missing token", []string{"explain", "--config", "../../config.yaml", "ws://localhost/api/v1/pam/ws"},
			[]string{"class:     missing", "action:    reject", "close 4001"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := runAuthgate(t, tt.args...)
			if code != 0 {
				t.Fatalf("exit %d, stderr %s", code, errOut)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			// Never a whole token: not the UUID in the request line, not a
			// JWT anywhere.
			if regexp.MustCompile(`eyJ[A-Za-z0-9_-]{10,}\.`).MatchString(out) {
				t.Errorf("output shows a whole JWT:\n%s", out)
			}
			for _, line := range strings.Split(out, "\n") {
				if strings.Contains(line, "token="+uuid) {
					t.Errorf("output shows the whole legacy token: %q", line)
				}
			}
		})
	}
}

func TestUsageAndVersion(t *testing.T) {
	_, errOut, code := runAuthgate(t)
	if code != 2 || !strings.Contains(errOut, "Usage:") {
		t.Errorf("bare authgate: got exit %d, stderr %q; want 2 and usage", code, errOut)
	}
	out, _, code := runAuthgate(t, "version")
	if code != 0 || !strings.HasPrefix(out, "authgate ") {
		t.Errorf("version: got exit %d, %q", code, out)
	}
}

func TestDemo(t *testing.T) {
	out, errOut, code := runAuthgate(t, "demo")
	if code != 0 {
		t.Fatalf("demo: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	// Every outcome the demo promises, in the order it prints them.
	want := []string{
		`valid JWT     eyJhbGciOi…    -> backend said {"hello":"7d0e3a52`,
		`expired JWT   eyJhbGciOi…    -> closed 4002`,
		`legacy UUID   21a2151a-c…    -> backend said {"hello":"21a2151a-cd37-41d5-a1c7-124bb05e7a6a","legacy":true}`,
		`garbage       not-a-token    -> closed 4001 "invalid token"`,
		`missing token (none)         -> closed 4001 "authentication required"`,
		`HTTP       legacy UUID   21a2151a-c…    -> 200 {"sub":"21a2151a-cd37-41d5-a1c7-124bb05e7a6a","legacy":true}`,
		`WebSocket  legacy UUID   21a2151a-c…    -> closed 4003 "legacy authentication no longer accepted"`,
		`HTTP       legacy UUID   21a2151a-c…    -> 403`,
		`verdict   NOT_SAFE`,
	}
	rest := out
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Fatalf("demo output lacks %q (in order):\n%s", w, out)
		}
		rest = rest[i+len(w):]
	}
}

// TestServeSIGTERM runs `authgate serve` as a process with an open
// WebSocket, sends SIGTERM, and checks the client sees 1012, the process
// exits in time, and the stop event counts the connection.
func TestServeSIGTERM(t *testing.T) {
	backend := newEchoBackend(t)
	dir := t.TempDir()
	port := freePort(t)
	cfg := fmt.Sprintf(`listen: "127.0.0.1:%d"
admin_listen: ""
shutdown_timeout: 5s
upstream: {url: "%s"}
verify: {hs256_secret: "%s", algorithms: [HS256]}
mint: {hs256_secret: "%s"}
routes:
  - name: ws
    match: {path: /ws, websocket: true}
    policy: {uuid: rewrite}
`, port, backend, exampleSecret, exampleSecret)
	path := filepath.Join(dir, "config.yaml")
	os.WriteFile(path, []byte(cfg), 0o644)
	cmd := authgate("serve", "--config", path)
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	waitLine(t, lines, `"event":"start"`)
	c, resp, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://127.0.0.1:%d/ws?token=21a2151a-cd37-41d5-a1c7-124bb05e7a6a", port), nil)
	if err != nil {
		t.Fatalf("dial: %v (stderr %s)", err, stderr.String())
	}
	resp.Body.Close()
	defer c.Close()
	c.WriteMessage(websocket.TextMessage, []byte("hi"))
	if _, p, err := c.ReadMessage(); err != nil || string(p) != "hi" {
		t.Fatalf("echo: got %q, %v", p, err)
	}
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err = c.ReadMessage()
	if ce, ok := err.(*websocket.CloseError); !ok || ce.Code != 1012 {
		t.Errorf("client after SIGTERM: got %v, want close 1012", err)
	}
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1012, ""))
	stop := waitLine(t, lines, `"event":"stop"`)
	if !strings.Contains(stop, `"websockets_closed":1`) {
		t.Errorf("stop event: got %s, want websockets_closed 1", stop)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve exit: %v, want 0", err)
		}
	case <-time.After(6 * time.Second):
		t.Fatal("serve did not exit within shutdown_timeout")
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("shutdown took %v, want under shutdown_timeout 5s", el)
	}
}

func waitLine(t *testing.T, lines <-chan string, substr string) string {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("output ended before a line with %s", substr)
			}
			if strings.Contains(l, substr) {
				var v map[string]any
				if json.Unmarshal([]byte(l), &v) != nil {
					t.Errorf("log line is not JSON: %s", l)
				}
				return l
			}
		case <-timeout:
			t.Fatalf("no line with %s within 10s", substr)
		}
	}
}

// freePort returns a loopback port that was free a moment ago, below the
// kernel's ephemeral range (32768-60999 by default), so that no outgoing
// connection of a test running beside this one can take it before the
// authgate process binds it; never the same port twice in one run.
func freePort(t *testing.T) int {
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

// newEchoBackend is a gorilla WebSocket echo server on loopback.
func newEchoBackend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := websocket.Upgrader{}
	srv := &httpServer{ln: ln, handle: func(c *websocket.Conn) {
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			c.WriteMessage(mt, p)
		}
	}, up: up}
	go srv.serve()
	t.Cleanup(func() { ln.Close() })
	return "http://" + ln.Addr().String()
}
