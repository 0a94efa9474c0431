package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServeArgs: a stray argument or a bare -- is a usage error (exit 2);
// a command that is not found or not executable is one line naming it
// and exit 127 / 126, before anything listens (issue 20).
func TestServeArgs(t *testing.T) {
	dir := t.TempDir()
	noexec := filepath.Join(dir, "backend.py")
	os.WriteFile(noexec, []byte("print('hi')\n"), 0o644)
	cfg := filepath.Join(dir, "c.yaml")
	port := freePort(t)
	os.WriteFile(cfg, []byte(fmt.Sprintf("listen: 127.0.0.1:%d\nadmin_listen: \"\"\nupstream: {url: http://127.0.0.1:1}\nverify: {hs256_secret: 0123456789abcdef0123456789abcdef}\nroutes: [{name: a, match: {path: /a}}]\n", port)), 0o644)
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"stray argument", []string{"serve", "--config", cfg, "uvicorn"}, 2,
			`serve: unexpected argument "uvicorn" (the backend's command goes after --: authgate serve -- COMMAND [ARGS...])` + "\n"},
		{"nothing after --", []string{"serve", "--config", cfg, "--"}, 2,
			"serve: nothing after --: want authgate serve [--config PATH] -- COMMAND [ARGS...]\n"},
		{"not found", []string{"serve", "--config", cfg, "--", "authgate-no-such-backend", "--port", "1"}, 127,
			"authgate: authgate-no-such-backend: not found: no such file in $PATH\n"},
		{"not executable", []string{"serve", "--config", cfg, "--", noexec}, 126,
			"authgate: " + noexec + ": cannot run: permission denied\n"},
		{"check stray argument", []string{"check", "--config", cfg, "x"}, 2,
			`check: unexpected argument "x" (the backend's command goes after --: authgate check -- COMMAND [ARGS...])` + "\n"},
		{"check nothing after --", []string{"check", "--config", cfg, "--"}, 2,
			"check: nothing after --: want authgate check [--config PATH] -- COMMAND [ARGS...]\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runAuthgate(t, tc.args...)
			if code != tc.code || errOut != tc.stderr || out != "" {
				t.Errorf("got exit %d, stderr %q, stdout %q; want exit %d, stderr %q, no stdout", code, errOut, out, tc.code, tc.stderr)
			}
		})
	}
}

// TestCheckMode: check prints the mode, and in same-service mode warns of
// an upstream off loopback and of a shutdown longer than Render's 30 s.
func TestCheckMode(t *testing.T) {
	dir := t.TempDir()
	write := func(name, upstream, extra string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte("upstream: {url: "+upstream+"}\ntrusted_proxies: [private]\n"+extra+"verify: {hs256_secret: 0123456789abcdef0123456789abcdef}\nroutes: [{name: a, match: {path: /a}}]\n"), 0o644)
		return p
	}
	fits := write("fits.yaml", "http://127.0.0.1:8001", "shutdown_timeout: 15s\n")
	remote := write("remote.yaml", "http://10.0.0.5:8001", "shutdown_timeout: 15s\n")
	long := write("long.yaml", "http://localhost:8001", "") // 25s + 10s
	for _, tc := range []struct {
		name     string
		args     []string
		mode     string
		warnings []string
	}{
		{"separate", []string{"check", "--config", fits}, "mode: separate: the backend runs elsewhere, at http://127.0.0.1:8001 (serve -- COMMAND would run it here, in authgate's own service)", nil},
		{"same-service", []string{"check", "--config", fits, "--", "sh", "-c", "exec uvicorn app:app --port $PORT"},
			"mode: same-service: authgate runs sh -c 'exec uvicorn app:app --port $PORT' as its child with PORT=8001 and proxies to http://127.0.0.1:8001; on SIGTERM authgate drains first (up to shutdown_timeout 15s), then stops the child (SIGTERM, SIGKILL after upstream.stop_timeout 10s) and exits with its status", nil},
		{"not loopback", []string{"check", "--config", remote, "--", "sh"}, "mode: same-service:", []string{
			"warning: " + remote + ": upstream.url: http://10.0.0.5:8001 is not a loopback address: in same-service mode the backend should listen on 127.0.0.1 only (on Render any other port of a service is reachable over the private network, around authgate)"}},
		{"too long for Render", []string{"check", "--config", long, "--", "sh"}, "mode: same-service:", []string{
			"warning: " + long + ": shutdown_timeout 25s + upstream.stop_timeout 10s = 35s, more than the 30s Render waits between SIGTERM and SIGKILL: lower them (shutdown_timeout: 15s with the default stop_timeout fits) or raise the service's maxShutdownDelaySeconds"}},
		{"command not here", []string{"check", "--config", fits, "--", "authgate-no-such-backend"}, "mode: same-service:", []string{
			"warning: authgate-no-such-backend: not found: no such file in $PATH (here; serve would exit 127)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runAuthgate(t, tc.args...)
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if code != 0 || len(lines) != 3 || lines[0] != "ok" || !strings.HasPrefix(lines[2], tc.mode) {
				t.Fatalf("got exit %d, stdout:\n%s\nwant exit 0, ok, the summary and a line starting %q", code, out, tc.mode)
			}
			if got := strings.Join(tc.warnings, "\n"); strings.TrimSpace(errOut) != got {
				t.Errorf("stderr:\n%s\nwant:\n%s", errOut, got)
			}
		})
	}
}

// TestServeChildExit: a child that exits on its own ends authgate with its
// status at once (128+N for a signal), after an upstream_exit line.
func TestServeChildExit(t *testing.T) {
	for _, tc := range []struct {
		script string
		code   int
		field  string
	}{
		{"exit 7", 7, `"code":7`},
		{"kill -KILL $$", 137, `"signal":"SIGKILL"`},
	} {
		t.Run(strconv.Itoa(tc.code), func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "c.yaml")
			os.WriteFile(cfg, []byte(fmt.Sprintf("listen: 127.0.0.1:%d\nadmin_listen: \"\"\ntrusted_proxies: [private]\nupstream: {url: http://127.0.0.1:%d}\nverify: {hs256_secret: 0123456789abcdef0123456789abcdef}\nroutes: [{name: a, match: {path: /a}}]\n", freePort(t), freePort(t))), 0o644)
			start := time.Now()
			out, errOut, code := runAuthgate(t, "serve", "--config", cfg, "--", "sh", "-c", "sleep 0.2; "+tc.script)
			if code != tc.code || time.Since(start) > 5*time.Second {
				t.Fatalf("got exit %d after %s, want %d at once\nstdout:\n%s\nstderr:\n%s", code, time.Since(start), tc.code, out, errOut)
			}
			var exit string
			for _, l := range strings.Split(out, "\n") {
				if strings.Contains(l, `"event":"upstream_exit"`) {
					exit = l
				}
			}
			if !strings.Contains(exit, tc.field) || !strings.Contains(exit, `"exit_status":`+strconv.Itoa(tc.code)) ||
				!strings.Contains(exit, "before it ever accepted connections") || !strings.Contains(exit, `"level":"error"`) {
				t.Errorf("upstream_exit: got %q, want %s, exit_status %d and that it never accepted", exit, tc.field, tc.code)
			}
		})
	}
}

// TestServeStopTimeout: a child that ignores SIGTERM is killed once
// upstream.stop_timeout has passed, and authgate exits 137 saying so.
func TestServeStopTimeout(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yaml")
	up := freePort(t)
	os.WriteFile(cfg, []byte(fmt.Sprintf("listen: 127.0.0.1:%d\nadmin_listen: \"\"\nshutdown_timeout: 2s\ntrusted_proxies: [private]\nupstream: {url: \"http://127.0.0.1:%d\", stop_timeout: 1s}\nverify: {hs256_secret: 0123456789abcdef0123456789abcdef}\nroutes: [{name: a, match: {path: /a}}]\n", freePort(t), up)), 0o644)
	cmd := authgate("serve", "--config", cfg, "--", "sh", "-c", "trap '' TERM; while :; do sleep 0.05; done")
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	time.Sleep(500 * time.Millisecond) // started, the trap set
	sent := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("authgate still running 10s after SIGTERM\n%s", out.String())
	}
	el := time.Since(sent)
	if code := cmd.ProcessState.ExitCode(); code != 137 || el < time.Second || el > 5*time.Second {
		t.Errorf("got exit %d after %s, want 137 after stop_timeout 1s\nstdout:\n%s\nstderr:\n%s", code, el, out.String(), errOut.String())
	}
	var term, kill, exit bool
	for _, l := range strings.Split(out.String(), "\n") {
		term = term || strings.Contains(l, `"event":"upstream_stop"`) && strings.Contains(l, `"signal":"SIGTERM"`) && strings.Contains(l, `"stop_timeout":"1s"`)
		kill = kill || strings.Contains(l, `"event":"upstream_stop"`) && strings.Contains(l, `"signal":"SIGKILL"`) && strings.Contains(l, `"level":"warn"`)
		exit = exit || strings.Contains(l, `"event":"upstream_exit"`) && strings.Contains(l, `"signal":"SIGKILL"`) && strings.Contains(l, `"message":"backend stopped"`)
	}
	if !term || !kill || !exit {
		t.Errorf("want upstream_stop SIGTERM (%v), upstream_stop SIGKILL (%v), upstream_exit SIGKILL (%v):\n%s", term, kill, exit, out.String())
	}
}
