package child

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sh runs a shell script as the child.
func sh(t *testing.T, script string, opt Options) *Process {
	t.Helper()
	path, err := Lookup("sh")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Start(path, []string{"sh", "-c", script}, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(time.Second) })
	return p
}

func waitDone(t *testing.T, p *Process, d time.Duration) Status {
	t.Helper()
	select {
	case <-p.Done():
		return p.Status()
	case <-time.After(d):
		t.Fatalf("child %d still running after %s", p.PID(), d)
		return Status{}
	}
}

func TestExitStatus(t *testing.T) {
	for _, reap := range []bool{false, true} {
		for _, tc := range []struct {
			name, script string
			code         int
			sig          syscall.Signal
			exit         int
			str          string
		}{
			{"zero", "exit 0", 0, 0, 0, "exited with code 0"},
			{"seven", "exit 7", 7, 0, 7, "exited with code 7"},
			{"sigkill", "kill -KILL $$", -1, syscall.SIGKILL, 137, "killed by signal 9 (SIGKILL)"},
			{"sigterm", "kill -TERM $$", -1, syscall.SIGTERM, 143, "killed by signal 15 (SIGTERM)"},
		} {
			t.Run(tc.name+"/reap_orphans="+strconv.FormatBool(reap), func(t *testing.T) {
				st := waitDone(t, sh(t, tc.script, Options{ReapOrphans: reap}), 5*time.Second)
				if st.Code != tc.code || st.Signal != tc.sig || st.ExitCode() != tc.exit || st.String() != tc.str {
					t.Errorf("got %+v (exit %d, %q), want code %d signal %d exit %d %q", st, st.ExitCode(), st, tc.code, tc.sig, tc.exit, tc.str)
				}
				if st.Uptime <= 0 || st.Uptime > 5*time.Second {
					t.Errorf("uptime %s", st.Uptime)
				}
			})
		}
	}
}

func TestLookup(t *testing.T) {
	dir := t.TempDir()
	noexec := filepath.Join(dir, "noexec")
	if err := os.WriteFile(noexec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		code int
		msg  string
	}{
		{"authgate-no-such-command", ExitNotFound, "authgate-no-such-command: not found: no such file in $PATH"},
		{filepath.Join(dir, "missing"), ExitNotFound, filepath.Join(dir, "missing") + ": not found: no such file or directory"},
		{noexec, ExitNotExecutable, noexec + ": cannot run: permission denied"},
		{dir, ExitNotExecutable, dir + ": cannot run: is a directory"},
	} {
		t.Run(filepath.Base(tc.name), func(t *testing.T) {
			_, err := Lookup(tc.name)
			var se *StartError
			if !errors.As(err, &se) {
				t.Fatalf("got %v, want a *StartError", err)
			}
			if se.Code != tc.code || err.Error() != tc.msg {
				t.Errorf("got %d %q, want %d %q", se.Code, err, tc.code, tc.msg)
			}
		})
	}
	if path, err := Lookup("sh"); err != nil || !filepath.IsAbs(path) {
		t.Errorf("Lookup(sh) = %q, %v", path, err)
	}
}

// TestStartFails: a file that passes Lookup but cannot be executed (no
// interpreter behind its #!) is a StartError too.
func TestStartFails(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.WriteFile(bad, []byte("#!/nonexistent/interpreter\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Start(bad, []string{bad}, Options{ReapOrphans: true})
	var se *StartError
	if !errors.As(err, &se) || se.Code != ExitNotFound {
		t.Fatalf("got %v, want a StartError with 127", err)
	}
}

// TestOwnGroupAndEnv: the child leads a process group of its own and gets
// exactly the environment given.
func TestOwnGroupAndEnv(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := sh(t, `echo "pgid=$(ps -o pgid= -p $$ | tr -d ' ') pid=$$ port=$PORT"; echo err >&2`,
		Options{Env: []string{"PORT=8001", "PATH=" + os.Getenv("PATH")}, Stdout: f, Stderr: f})
	if st := waitDone(t, p, 5*time.Second); st.Code != 0 {
		t.Fatalf("child: %s", st)
	}
	b, _ := os.ReadFile(out)
	want := "pgid=" + strconv.Itoa(p.PID()) + " pid=" + strconv.Itoa(p.PID()) + " port=8001\nerr\n"
	if string(b) != want {
		t.Errorf("got %q, want %q", b, want)
	}
	if pgid, _ := syscall.Getpgid(p.PID()); pgid == syscall.Getpgrp() {
		t.Errorf("child shares the test's process group %d", pgid)
	}
}

// TestStop: SIGTERM reaches the whole group (the shell and its own
// child); a group that ignores SIGTERM is killed after the timeout.
func TestStop(t *testing.T) {
	t.Run("sigterm", func(t *testing.T) {
		p := sh(t, `trap 'exit 3' TERM; sleep 30 & wait`, Options{ReapOrphans: true})
		time.Sleep(200 * time.Millisecond) // let the trap be set
		start := time.Now()
		st := p.Stop(5 * time.Second)
		if st.Code != 3 || time.Since(start) > 3*time.Second {
			t.Errorf("got %s after %s, want code 3 at once", st, time.Since(start))
		}
	})
	t.Run("sigkill_after_timeout", func(t *testing.T) {
		p := sh(t, `trap '' TERM; while :; do sleep 0.05; done`, Options{ReapOrphans: true})
		time.Sleep(200 * time.Millisecond)
		start := time.Now()
		st := p.Stop(500 * time.Millisecond)
		if el := time.Since(start); st.Signal != syscall.SIGKILL || st.ExitCode() != 137 || el < 500*time.Millisecond || el > 3*time.Second {
			t.Errorf("got %s after %s, want SIGKILL after 500ms", st, el)
		}
		if again := p.Stop(time.Second); again != st {
			t.Errorf("second Stop: got %+v, want %+v", again, st)
		}
	})
}

// TestSignalForwarded: Signal reaches the child's group; a reaped child is
// not signalled.
func TestSignalForwarded(t *testing.T) {
	out := filepath.Join(t.TempDir(), "got")
	p := sh(t, `trap 'echo usr1 > `+out+`; exit 0' USR1; while :; do sleep 0.05; done`, Options{ReapOrphans: true})
	time.Sleep(200 * time.Millisecond)
	if err := p.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if st := waitDone(t, p, 5*time.Second); st.Code != 0 {
		t.Fatalf("child: %s", st)
	}
	if b, _ := os.ReadFile(out); string(b) != "usr1\n" {
		t.Errorf("got %q, want usr1", b)
	}
	if err := p.Signal(syscall.SIGUSR1); err != nil {
		t.Errorf("signal after reaping: %v", err)
	}
}

// TestReapOrphans: with the test process a subreaper, a child that leaves
// an orphan behind (a grandchild whose parent is gone) hands it to this
// process, and the wait loop reaps it: no zombie remains, and the direct
// child's status is still its own.
func TestReapOrphans(t *testing.T) {
	if err := BecomeSubreaper(); err != nil {
		t.Fatal(err)
	}
	defer unsetSubreaper(t)
	p := sh(t, `sh -c 'sleep 0.3 & echo $! > `+filepath.Join(t.TempDir(), "x")+`'; sleep 1; exit 5`, Options{ReapOrphans: true})
	// While the child sleeps, the orphan (sleep 0.3) ends: it must be
	// reaped then, not left a zombie until the child ends.
	time.Sleep(800 * time.Millisecond)
	if z := zombies(t, os.Getpid()); len(z) > 0 {
		t.Errorf("zombie children of the test process: %v", z)
	}
	if st := waitDone(t, p, 5*time.Second); st.Code != 5 {
		t.Errorf("got %s, want code 5", st)
	}
}

// zombies lists the zombie children of ppid, from /proc.
func zombies(t *testing.T, ppid int) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces; split after ')'.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[0] == "Z" && f[1] == strconv.Itoa(ppid) {
			out = append(out, s[:i+1])
		}
	}
	return out
}

func unsetSubreaper(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0); err != nil {
		t.Error(err)
	}
}

// TestNoDescriptorLeak: starting and reaping children leaves no
// descriptor behind (os.StartProcess holds a pidfd until the process is
// waited for or released), in both wait loops.
func TestNoDescriptorLeak(t *testing.T) {
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	for _, reap := range []bool{false, true} {
		before := fds()
		for i := 0; i < 20; i++ {
			waitDone(t, sh(t, "exit 0", Options{ReapOrphans: reap}), 5*time.Second)
		}
		if after := fds(); after != before {
			t.Errorf("reap_orphans=%v: %d descriptors after 20 children, %d before", reap, after, before)
		}
	}
}
