//go:build e2e

package e2e

// Process plumbing shared by the Render tests (render_image_test.go,
// render_netns_test.go). They start authgate the way Render does, which
// the harness's startGate (its own config, the test's environment) does
// not fit.

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// renderProc is one subprocess of a Render test, its stdout in a file.
type renderProc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	stderr  *syncBuffer
	done    chan struct{}
	exitErr error
}

// startRenderProc starts cmd with stdout to logPath and stderr kept for
// failure messages. It dies with the test process (Pdeathsig), and is
// ended at the end of the test: SIGTERM, then SIGKILL after grace.
func startRenderProc(t testing.TB, name string, cmd *exec.Cmd, logPath string, grace time.Duration) *renderProc {
	t.Helper()
	p := &renderProc{name: name, cmd: cmd, logPath: logPath, stderr: &syncBuffer{}, done: make(chan struct{})}
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, p.stderr
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	logf.Close()
	go func() { p.exitErr = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop(t, grace) })
	return p
}

func (p *renderProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the process if it still runs: SIGTERM, then SIGKILL.
func (p *renderProc) stop(t testing.TB, grace time.Duration) {
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not exit within %v of SIGTERM; killed", p.name, grace)
	}
}

// wait waits up to d for the process to exit and returns its exit error.
func (p *renderProc) wait(d time.Duration) (error, bool) {
	select {
	case <-p.done:
		return p.exitErr, true
	case <-time.After(d):
		return nil, false
	}
}

func (p *renderProc) logText() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// renderLogEvents returns the JSON lines of a log file whose event is kind
// ("" = all); a line that is not JSON is an error (authgate logs JSON).
func renderLogEvents(t testing.TB, path, kind string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
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
			t.Errorf("%s: a line is not JSON: %q", path, sc.Text())
			continue
		}
		if kind == "" || m["event"] == kind {
			out = append(out, m)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// renderPoll calls cond every 100ms until it returns nil, the process
// exits, or d passes; it returns the last error.
func renderPoll(p *renderProc, d time.Duration, cond func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if p != nil && p.exited() {
			return errors.Join(err, errors.New(p.name+" exited"))
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
