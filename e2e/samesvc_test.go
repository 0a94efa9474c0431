//go:build e2e

package e2e

// Same-service mode (issue 20): `authgate serve -- COMMAND` runs the
// FastAPI backend as its child. Real processes throughout: authgate's
// binary, uvicorn from Debian as the child, signals sent as a platform
// sends them.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ssGate is one `authgate serve --config FILE -- COMMAND...` process, in a
// process group of its own (as a platform starts a service).
type ssGate struct {
	*renderProc
	listen string
	admin  string
}

// uvicornChild is the e2e backend as the child, listening on $PORT (which
// only authgate sets: a child without it never becomes ready).
func uvicornChild(extra string) []string {
	return []string{"/bin/sh", "-c", extra + "exec " + pythonBin + " -m uvicorn app:app --app-dir " + backendDir +
		` --host 127.0.0.1 --port "$PORT" --ws websockets --log-level info --no-access-log`}
}

// startSameService writes the harness's config with upstream.url on an
// internal loopback port and starts authgate with command as its child.
// It does not wait for readiness.
func startSameService(t *testing.T, command []string, wrap ...string) (*ssGate, int) {
	t.Helper()
	internal := freePort(t)
	p := gateParams{
		Listen: fmt.Sprintf("127.0.0.1:%d", freePort(t)), Admin: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		Upstream: fmt.Sprintf("http://127.0.0.1:%d", internal), UUID: "rewrite",
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "authgate.yaml")
	yaml := strings.Replace(string(p.yaml(t)), "  dial_timeout: 2s\n", "  dial_timeout: 2s\n  stop_timeout: 5s\n", 1)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	argv := append(append(append([]string(nil), wrap...), authgateBin, "serve", "--config", cfg, "--"), command...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "E2E_JWT_SECRET="+secret, "JWT_SECRET="+secret, "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	g := &ssGate{listen: p.Listen, admin: p.Admin}
	g.renderProc = startRenderProc(t, "authgate", cmd, filepath.Join(dir, "authgate.log"), 20*time.Second)
	t.Cleanup(func() { killChildren(g) })
	return g, internal
}

// killChildren ends a child left behind by a failed test (authgate dies
// with the test process; its child, in a group of its own, would not).
func killChildren(g *ssGate) {
	for _, e := range readEvents(g.logPath, "upstream_start") {
		if pid, ok := e["pid"].(float64); ok && pid > 1 {
			syscall.Kill(-int(pid), syscall.SIGKILL)
		}
	}
}

// readEvents is renderLogEvents without a testing.TB: lines that are not
// JSON (the child's own output, passed through) are skipped.
func readEvents(path, kind string) []map[string]any {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && (kind == "" || m["event"] == kind) {
			out = append(out, m)
		}
	}
	return out
}

func (g *ssGate) event(t *testing.T, kind string, d time.Duration) map[string]any {
	t.Helper()
	var e map[string]any
	err := renderPoll(nil, d, func() error {
		if evs := readEvents(g.logPath, kind); len(evs) > 0 {
			e = evs[0]
			return nil
		}
		return fmt.Errorf("no %s event", kind)
	})
	if err != nil {
		t.Fatalf("%v within %s\nlog:\n%s\nstderr:\n%s", err, d, g.logText(), g.stderr.String())
	}
	return e
}

func (g *ssGate) childPID(t *testing.T) int {
	t.Helper()
	return int(g.event(t, "upstream_start", 10*time.Second)["pid"].(float64))
}

func (g *ssGate) health(t *testing.T) (int, string) {
	t.Helper()
	resp, err := noKeepAlive.Get("http://" + g.listen + "/healthz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (g *ssGate) waitHealthy(t *testing.T, d time.Duration) {
	t.Helper()
	err := renderPoll(g.renderProc, d, func() error {
		if code, body := g.health(t); code != 200 {
			return fmt.Errorf("health: %d %q", code, body)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\nlog:\n%s\nstderr:\n%s", err, g.logText(), g.stderr.String())
	}
}

func (g *ssGate) exitCode(t *testing.T, d time.Duration) int {
	t.Helper()
	err, ok := g.wait(d)
	if !ok {
		t.Fatalf("authgate still running after %s\nlog:\n%s\nstderr:\n%s", d, g.logText(), g.stderr.String())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}

func processGone(pid int) bool {
	return syscall.Kill(pid, 0) == syscall.ESRCH
}

// pgidOf reads a process's group from /proc.
func pgidOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	n, _ := strconv.Atoi(f[2]) // state ppid pgrp
	return n
}

// TestSameServiceProxy: the FastAPI backend (JWT-only) as the child on an
// internal port from $PORT: a JWT passes, a legacy UUID is rewritten and
// the backend accepts it; the child leads a process group of its own.
func TestSameServiceProxy(t *testing.T) {
	g, internal := startSameService(t, uvicornChild(""))
	g.waitHealthy(t, 30*time.Second)
	pid := g.childPID(t)
	if got := pgidOf(t, pid); got != pid || got == g.cmd.Process.Pid {
		t.Errorf("child %d in process group %d, want its own (authgate's is %d)", pid, got, g.cmd.Process.Pid)
	}
	env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if !strings.Contains("\x00"+string(env), "\x00PORT="+strconv.Itoa(internal)+"\x00") {
		t.Errorf("child's environment lacks PORT=%d", internal)
	}
	ws := "ws://" + g.listen + "/api/v1/pam/ws?token="
	jwt := mint(t, time.Hour, "same-service-jwt-user")[0]
	h, _ := expectHello(t, ws+jwt, nil)
	if h.Sub != "same-service-jwt-user" || h.Legacy || h.TokenSHA256 != sha256hex(jwt) {
		t.Errorf("JWT: the backend saw %+v; want the client's own token", h)
	}
	h, legacy := expectHello(t, ws+legacyUser, nil)
	if h.Sub != strings.ToLower(legacyUser) || !h.Legacy || h.Iss != "authgate" {
		t.Errorf("legacy UUID: the backend saw %+v; want a minted JWT", h)
	}
	legacy.closeWith(1000, "", 5*time.Second)
	ready := g.event(t, "upstream_ready", time.Second)
	if ready["pid"] != float64(pid) {
		t.Errorf("upstream_ready %v: want pid %d", ready, pid)
	}
	g.cmd.Process.Signal(syscall.SIGTERM)
	if code := g.exitCode(t, 15*time.Second); code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0 (uvicorn's own status)\nstderr:\n%s", code, g.stderr.String())
	}
	if !processGone(pid) {
		t.Errorf("child %d still there after authgate exited", pid)
	}
}

// TestSameServiceLateStart: a child that listens 2 s late: the health path
// answers 503 {"status":"starting"} until it does, 200 after, and a
// WebSocket opened meanwhile is relayed once it is up.
func TestSameServiceLateStart(t *testing.T) {
	g, _ := startSameService(t, uvicornChild("sleep 2; "))
	g.event(t, "start", 10*time.Second) // authgate listens
	opened := time.Now()
	type probe struct {
		at   time.Duration
		code int
		body string
	}
	var (
		mu     sync.Mutex
		probes []probe
	)
	stop := make(chan struct{})
	probing := make(chan struct{})
	go func() {
		defer close(probing)
		for i := 0; i < 200; i++ { // 20 s at most
			code, body := g.health(t)
			mu.Lock()
			probes = append(probes, probe{time.Since(opened), code, body})
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	jwt := mint(t, time.Hour, "late-start-user")[0]
	h, _ := expectHello(t, "ws://"+g.listen+"/api/v1/pam/ws?token="+jwt, nil)
	helloAt := time.Since(opened)
	g.waitHealthy(t, 10*time.Second)
	time.Sleep(200 * time.Millisecond)
	close(stop)
	<-probing
	if h.Sub != "late-start-user" {
		t.Errorf("hello: %+v", h)
	}
	if helloAt < 1500*time.Millisecond {
		t.Errorf("hello after %s: the child was to listen 2 s late", helloAt)
	}
	mu.Lock()
	defer mu.Unlock()
	var starting, ok int
	for i, p := range probes {
		switch {
		case p.code == 503 && p.body == "{\"status\":\"starting\"}\n":
			starting++
			if ok > 0 {
				t.Errorf("probe %d at %s: 503 after a 200", i, p.at)
			}
		case p.code == 200 && p.body == "ok\n":
			ok++
		default:
			t.Errorf("probe %d at %s: got %d %q", i, p.at, p.code, p.body)
		}
	}
	if starting < 10 || ok == 0 {
		t.Errorf("health probes: %d answered 503 starting, %d answered 200; want about 20, then 200s", starting, ok)
	}
	t.Logf("%d probes 503 starting, then %d 200; hello after %s", starting, ok, helloAt.Round(time.Millisecond))
}

// TestSameServiceSIGTERMOrder: SIGTERM to authgate's whole process group,
// as a platform sends it. authgate's own shutdown comes first: every open
// WebSocket gets 1012 and an HTTP request in flight gets its answer before
// the child receives SIGTERM (the child records when), the child is gone
// afterwards, and authgate exits with the child's status, 0. (The request
// in flight is what makes a wrong order visible: a child signalled first
// records its SIGTERM a second before the request ends.)
func TestSameServiceSIGTERMOrder(t *testing.T) {
	sigLog := filepath.Join(t.TempDir(), "signals")
	child := []string{"/bin/sh", "-c", "SIGNAL_LOG=" + sigLog + " exec " + pythonBin + " " + filepath.Join(backendDir, "recording.py")}
	g, _ := startSameService(t, child)
	g.waitHealthy(t, 30*time.Second)
	pid := g.childPID(t)
	ws := "ws://" + g.listen + "/api/v1/pam/ws?token="
	tokens := append(mint(t, time.Hour, "order-a", "order-b"), legacyUser)
	var clients []*wsClient
	for _, tok := range tokens {
		_, c := expectHello(t, ws+tok, nil)
		clients = append(clients, c)
	}
	// SIGHUP reloads authgate and is not forwarded: the child (whose
	// Python would die of a SIGHUP) stays, and authgate answers with a
	// config event.
	g.cmd.Process.Signal(syscall.SIGHUP)
	g.event(t, "config", 5*time.Second)
	if err := renderPoll(nil, 5*time.Second, func() error {
		for _, e := range readEvents(g.logPath, "config") {
			if e["result"] == "unchanged" {
				return nil
			}
		}
		return errors.New("no config unchanged event after SIGHUP")
	}); err != nil {
		t.Fatal(err)
	}
	if processGone(pid) || isZombie(pid) {
		t.Fatalf("the child ended after authgate's SIGHUP: it was forwarded")
	}
	if code, _ := g.health(t); code != 200 {
		t.Errorf("health after SIGHUP: %d", code)
	}
	// USR1 is forwarded to the child's group (the recording backend
	// writes it down and carries on).
	g.cmd.Process.Signal(syscall.SIGUSR1)
	if err := renderPoll(nil, 5*time.Second, func() error {
		if b, _ := os.ReadFile(sigLog); !strings.HasPrefix(string(b), "10 ") {
			return fmt.Errorf("signal log %q", b)
		}
		return nil
	}); err != nil {
		t.Fatalf("SIGUSR1 not forwarded: %v", err)
	}
	os.Remove(sigLog)

	var slowAt time.Time
	var slowCode int
	var slowErr error
	slowDone := make(chan struct{})
	go func() {
		defer close(slowDone)
		resp, err := noKeepAlive.Get("http://" + g.listen + "/slow?ms=1000")
		if err != nil {
			slowErr = err
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		slowAt, slowCode = time.Now(), resp.StatusCode
	}()
	time.Sleep(300 * time.Millisecond) // the request is in flight
	closedAt := make([]time.Time, len(clients))
	codes := make([]int, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.next(15 * time.Second)
			closedAt[i], codes[i] = time.Now(), closeCode(err)
		}()
	}
	sent := time.Now()
	if err := syscall.Kill(-g.cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	<-slowDone
	code := g.exitCode(t, 20*time.Second)
	b, err := os.ReadFile(sigLog)
	if err != nil {
		t.Fatalf("the child never got a signal: %v\nstderr:\n%s", err, g.stderr.String())
	}
	var sig int
	var ns int64
	if _, err := fmt.Sscanf(string(b), "%d %d", &sig, &ns); err != nil || sig != int(syscall.SIGTERM) {
		t.Fatalf("signal log %q: want SIGTERM first", b)
	}
	childTerm := time.Unix(0, ns)
	for i := range clients {
		if codes[i] != 1012 {
			t.Errorf("client %d: close %d, want 1012", i, codes[i])
		}
		if !closedAt[i].Before(childTerm) {
			t.Errorf("client %d got its close %s after the child's SIGTERM: the backend was signalled before authgate drained",
				i, closedAt[i].Sub(childTerm))
		}
	}
	if slowErr != nil || slowCode != 200 {
		t.Errorf("HTTP request in flight at SIGTERM: got %d %v, want 200", slowCode, slowErr)
	} else if !slowAt.Before(childTerm) {
		t.Errorf("the HTTP request in flight ended %s after the child's SIGTERM: the backend was signalled before authgate drained",
			slowAt.Sub(childTerm))
	}
	if strings.Count(string(b), "\n") != 1 {
		t.Errorf("signal log %q: want one SIGTERM", b)
	}
	if code != 0 {
		t.Errorf("authgate exited %d, want 0 (uvicorn's status after SIGTERM)", code)
	}
	if !processGone(pid) {
		t.Errorf("child %d still there", pid)
	}
	last := closedAt[0]
	for _, c := range closedAt {
		if c.After(last) {
			last = c
		}
	}
	t.Logf("SIGTERM to the group; last 1012 after %s; the HTTP request in flight answered after %s; child's SIGTERM after %s; exit %d",
		last.Sub(sent).Round(time.Microsecond), slowAt.Sub(sent).Round(time.Microsecond), childTerm.Sub(sent).Round(time.Microsecond), code)
	t.Logf("authgate's log and the child's stdout:\n%s\nstderr (the child's):\n%s", g.logText(), g.stderr.String())
	exits := readEvents(g.logPath, "upstream_exit")
	if len(exits) != 1 || exits[0]["code"] != 0.0 || exits[0]["message"] != "backend stopped" {
		t.Errorf("upstream_exit events %v: want one, code 0, backend stopped", exits)
	}
}

// TestSameServiceChildExit: a child that ends on its own ends authgate
// within 2 s with its status, after an upstream_exit line: 7 for exit 7,
// 137 for SIGKILL.
func TestSameServiceChildExit(t *testing.T) {
	t.Run("exit_7", func(t *testing.T) {
		// Listens (so authgate is ready), then exits 7.
		g, _ := startSameService(t, []string{pythonBin, "-c",
			"import os, socket, sys, time\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n" +
				"s.bind(('127.0.0.1', int(os.environ['PORT'])))\ns.listen()\ntime.sleep(1.5)\nsys.exit(7)"})
		g.waitHealthy(t, 10*time.Second)
		pid := g.childPID(t)
		err := renderPoll(nil, 10*time.Second, func() error {
			if !processGone(pid) && !isZombie(pid) {
				return errors.New("child running")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		ended := time.Now()
		if code := g.exitCode(t, 2*time.Second); code != 7 {
			t.Errorf("exit %d, want 7", code)
		}
		t.Logf("authgate exited %s after its child", time.Since(ended).Round(time.Millisecond))
		exits := readEvents(g.logPath, "upstream_exit")
		if len(exits) != 1 || exits[0]["code"] != 7.0 || exits[0]["exit_status"] != 7.0 || exits[0]["level"] != "error" ||
			exits[0]["message"] != "backend exited; authgate stops with its status" || exits[0]["uptime_ms"].(float64) < 1000 {
			t.Errorf("upstream_exit events %v: want one with code 7", exits)
		}
	})
	t.Run("sigkill", func(t *testing.T) {
		g, _ := startSameService(t, uvicornChild(""))
		g.waitHealthy(t, 30*time.Second)
		pid := g.childPID(t)
		killed := time.Now()
		syscall.Kill(pid, syscall.SIGKILL)
		if code := g.exitCode(t, 2*time.Second); code != 137 {
			t.Errorf("exit %d, want 137", code)
		}
		t.Logf("authgate exited %s after its child was killed", time.Since(killed).Round(time.Millisecond))
		exits := readEvents(g.logPath, "upstream_exit")
		if len(exits) != 1 || exits[0]["signal"] != "SIGKILL" || exits[0]["exit_status"] != 137.0 {
			t.Errorf("upstream_exit events %v: want one with signal SIGKILL", exits)
		}
	})
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] == "Z"
}

// TestSameServiceNeverAccepts: a child that never listens keeps the health
// path at 503, is reported every 10 s with its PID and uptime, and, when
// it exits before it ever accepted, authgate exits with its status and
// says so.
func TestSameServiceNeverAccepts(t *testing.T) {
	g, _ := startSameService(t, []string{pythonBin, "-c", "import sys, time\ntime.sleep(10.7)\nsys.exit(3)"})
	g.event(t, "start", 10*time.Second)
	pid := g.childPID(t)
	for i := 0; i < 3; i++ {
		if code, body := g.health(t); code != 503 || body != "{\"status\":\"starting\"}\n" {
			t.Errorf("health: %d %q, want 503 starting", code, body)
		}
		time.Sleep(time.Second)
	}
	if code := g.exitCode(t, 15*time.Second); code != 3 {
		t.Errorf("exit %d, want 3", code)
	}
	var warns []map[string]any
	for _, e := range readEvents(g.logPath, "upstream_start") {
		if e["level"] == "warn" {
			warns = append(warns, e)
		}
	}
	if len(warns) != 1 || warns[0]["pid"] != float64(pid) || warns[0]["uptime_ms"].(float64) < 9900 ||
		warns[0]["message"] != "backend not accepting connections yet; the health path answers 503" {
		t.Errorf("not-accepting warnings %v: want one after 10 s with pid %d and uptime", warns, pid)
	}
	exits := readEvents(g.logPath, "upstream_exit")
	if len(exits) != 1 || exits[0]["code"] != 3.0 ||
		exits[0]["message"] != "backend exited before it ever accepted connections; authgate stops with its status" {
		t.Errorf("upstream_exit %v: want code 3, never accepted", exits)
	}
	if len(readEvents(g.logPath, "upstream_ready")) != 0 {
		t.Errorf("an upstream_ready event for a child that never listened")
	}
}

// TestSameServicePID1: authgate as PID 1 of a PID namespace of the test's
// own (unshare --pid --fork), its child leaving an orphan behind: the
// orphan is handed to authgate, which reaps it: no zombie.
func TestSameServicePID1(t *testing.T) {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatalf("unshare (util-linux) is required: %v", err)
	}
	// The child's child exits at once and leaves "sleep 1.37" an orphan;
	// the child itself then serves on $PORT.
	child := uvicornChild("sh -c 'sleep 1.37 &'; ")
	g, _ := startSameService(t, child, unshare, "--pid", "--fork", "--kill-child")
	g.waitHealthy(t, 30*time.Second)
	start := g.event(t, "upstream_start", time.Second)
	if start["pid1"] != true {
		t.Fatalf("upstream_start %v: authgate is not PID 1 in its namespace", start)
	}
	// authgate's pid as this (the parent) namespace sees it: unshare's
	// one child.
	kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", g.cmd.Process.Pid, g.cmd.Process.Pid))
	if err != nil || len(strings.Fields(string(kids))) != 1 {
		t.Fatalf("unshare's children: %q %v", kids, err)
	}
	gate, _ := strconv.Atoi(strings.Fields(string(kids))[0])
	orphan := 0
	for _, p := range procs(t) {
		if p.cmdline == "sleep\x001.37" {
			orphan = p.pid
			if p.ppid != gate {
				t.Errorf("orphan %d has parent %d, want authgate (%d)", p.pid, p.ppid, gate)
			}
		}
	}
	if orphan == 0 {
		t.Fatalf("no orphan sleep found (it lives 1.37 s)")
	}
	// Once it has ended, authgate must have reaped it.
	err = renderPoll(nil, 5*time.Second, func() error {
		for _, p := range procs(t) {
			if p.pid == orphan {
				return fmt.Errorf("orphan %d still there, state %s", p.pid, p.state)
			}
		}
		return nil
	})
	if err != nil {
		t.Errorf("%v: a zombie authgate did not reap", err)
	}
	for _, p := range procs(t) {
		if p.ppid == gate && p.state == "Z" {
			t.Errorf("zombie child of authgate: %+v", p)
		}
	}
	syscall.Kill(gate, syscall.SIGTERM)
	if code := g.exitCode(t, 15*time.Second); code != 0 {
		t.Errorf("unshare exited %d, want 0 (authgate's status, the child's)", code)
	}
}

type procInfo struct {
	pid, ppid int
	state     string
	cmdline   string
}

func procs(t *testing.T) []procInfo {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []procInfo
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		cl, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		out = append(out, procInfo{pid, ppid, f[0], strings.TrimRight(string(cl), "\x00")})
	}
	return out
}
