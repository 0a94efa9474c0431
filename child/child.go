// Package child runs one process under authgate (same-service mode: the
// backend as authgate's child). It finds the command as a shell would,
// starts it in a process group of its own with stdout and stderr passed
// through, forwards signals to that group, stops it (SIGTERM, then
// SIGKILL after a timeout), reaps it and reports how it ended. As PID 1,
// or as a child subreaper, it also reaps the orphans handed to it.
//
// tini's src/tini.c is the model, step for step: spawn (exec failures are
// 127 for not found, 126 otherwise), forward signals, reap zombies in one
// wait loop, return the child's exit status (128+N for a signal). One
// loop reaps everything because a second waiter could take the direct
// child's status first: a wait4(-1) elsewhere would leave exec.Cmd.Wait
// with ECHILD and the exit code lost.
package child

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Exit codes of a command that did not start, as a shell gives them.
const (
	ExitNotFound      = 127
	ExitNotExecutable = 126
)

// StartError is a command that could not be started: Code is
// ExitNotFound or ExitNotExecutable.
type StartError struct {
	Name string
	Code int
	Err  error
}

func (e *StartError) Error() string {
	what := "cannot run"
	if e.Code == ExitNotFound {
		what = "not found"
	}
	return fmt.Sprintf("%s: %s: %v", e.Name, what, e.Err)
}

func (e *StartError) Unwrap() error { return e.Err }

// Lookup resolves name as a shell would (through $PATH unless it has a
// slash) and returns the file to execute, or a *StartError.
func Lookup(name string) (string, error) {
	path, err := exec.LookPath(name)
	if err == nil || errors.Is(err, exec.ErrDot) {
		// A relative $PATH entry: the operator wrote it, a shell runs it.
		return path, nil
	}
	if e := (*exec.Error)(nil); errors.As(err, &e) {
		err = e.Err
	}
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
		err = pe.Err
	}
	return "", startError(name, err)
}

func startError(name string, err error) *StartError {
	code := ExitNotExecutable
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		code = ExitNotFound
	}
	if errors.Is(err, exec.ErrNotFound) {
		err = errors.New("no such file in $PATH")
	}
	return &StartError{Name: name, Code: code, Err: err}
}

// Options configure Start.
type Options struct {
	// Env is the child's environment; nil means this process's.
	Env []string
	// Stdout and Stderr are passed to the child as they are; nil means
	// this process's own.
	Stdout, Stderr *os.File
	// ReapOrphans makes the wait loop reap every child of this process,
	// not only the one started: right as PID 1 or a subreaper (see
	// BecomeSubreaper), where orphans are handed to this process, and
	// wrong when anything else in it starts and waits for processes.
	ReapOrphans bool
}

// Status is how a child ended.
type Status struct {
	// Code is the exit code, or -1 when a signal ended it.
	Code int
	// Signal is the signal that ended it, or 0.
	Signal syscall.Signal
	// Uptime is from Start to the reaping.
	Uptime time.Duration
}

// ExitCode is the status as a shell reports it: the code, or 128+N for
// signal N.
func (s Status) ExitCode() int {
	if s.Signal != 0 {
		return 128 + int(s.Signal)
	}
	return s.Code
}

// SignalName is the name of the signal that ended the child ("SIGKILL"),
// or "" when it exited.
func (s Status) SignalName() string {
	if s.Signal == 0 {
		return ""
	}
	if n := unix.SignalName(s.Signal); n != "" {
		return n
	}
	return fmt.Sprintf("signal %d", int(s.Signal))
}

func (s Status) String() string {
	if s.Signal != 0 {
		return fmt.Sprintf("killed by signal %d (%s)", int(s.Signal), s.SignalName())
	}
	return fmt.Sprintf("exited with code %d", s.Code)
}

// Process is a started child. Its methods are safe for concurrent use.
type Process struct {
	pid   int
	start time.Time
	proc  *os.Process
	done  chan struct{} // closed once reaped; status is set before
	mu    sync.Mutex
	st    Status
}

// Start runs path with argv (argv[0] included) in a new process group and
// starts the wait loop. A failure to execute is a *StartError.
func Start(path string, argv []string, opt Options) (*Process, error) {
	if opt.Stdout == nil {
		opt.Stdout = os.Stdout
	}
	if opt.Stderr == nil {
		opt.Stderr = os.Stderr
	}
	if opt.Env == nil {
		opt.Env = os.Environ()
	}
	var sigchld chan os.Signal
	if opt.ReapOrphans {
		// Before the fork: a child that exits at once must still wake
		// the loop.
		sigchld = make(chan os.Signal, 1)
		signal.Notify(sigchld, syscall.SIGCHLD)
	}
	// stdin is /dev/null: a child in a background process group that read
	// the terminal would be stopped by SIGTTIN.
	proc, err := os.StartProcess(path, argv, &os.ProcAttr{
		Env:   opt.Env,
		Files: []*os.File{nil, opt.Stdout, opt.Stderr},
		// Its own process group: a platform's SIGTERM to authgate's
		// group must not reach the backend before authgate has drained.
		Sys: &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		if sigchld != nil {
			signal.Stop(sigchld)
		}
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, startError(argv[0], err)
	}
	p := &Process{pid: proc.Pid, start: time.Now(), proc: proc, done: make(chan struct{})}
	if opt.ReapOrphans {
		go p.reapAll(sigchld)
	} else {
		go p.wait()
	}
	return p, nil
}

// PID is the child's process id, which is also its process group id.
func (p *Process) PID() int { return p.pid }

// Uptime is the time since Start, or the child's lifetime once reaped.
func (p *Process) Uptime() time.Duration {
	select {
	case <-p.done:
		return p.Status().Uptime
	default:
		return time.Since(p.start)
	}
}

// Done is closed once the child has been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Status is how the child ended; valid once Done is closed.
func (p *Process) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.st
}

// Signal sends sig to the child's process group. A child already reaped
// is not signalled (its id may belong to someone else by now).
func (p *Process) Signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := syscall.Kill(-p.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signalling process group %d: %w", p.pid, err)
	}
	return nil
}

// Stop sends SIGTERM to the child's group, SIGKILL after timeout, and
// returns how the child ended. Stopping a child that has ended returns
// its status at once.
func (p *Process) Stop(timeout time.Duration) Status {
	select {
	case <-p.done:
		return p.Status()
	default:
	}
	p.Signal(syscall.SIGTERM)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		p.Signal(syscall.SIGKILL)
		<-p.done
	}
	return p.Status()
}

// wait is the loop when only the direct child is ours to reap.
func (p *Process) wait() {
	state, err := p.proc.Wait()
	st := Status{Code: -1, Uptime: time.Since(p.start)}
	if err == nil {
		st = statusOf(state.Sys().(syscall.WaitStatus), st.Uptime)
	}
	p.finish(st)
}

// reapAll is tini's reap_zombies: on every SIGCHLD (and each second, in
// case one was coalesced), wait4(-1, WNOHANG) until nothing is left to
// reap, recording the direct child's status when it comes. It ends once
// the direct child is reaped.
func (p *Process) reapAll(sigchld chan os.Signal) {
	defer signal.Stop(sigchld)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if st, ok := p.reapZombies(); ok {
			p.proc.Release()
			p.finish(st)
			return
		}
		select {
		case <-sigchld:
		case <-tick.C:
		}
	}
}

// reapZombies reaps every child that has ended; ok reports whether the
// direct child was among them.
func (p *Process) reapZombies() (st Status, ok bool) {
	for range 1 << 16 { // bounded: no process has more children
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			// ECHILD: no children at all; 0: none has ended.
			return st, ok
		}
		if pid == p.pid {
			st, ok = statusOf(ws, time.Since(p.start)), true
		}
	}
	return st, ok
}

func statusOf(ws syscall.WaitStatus, uptime time.Duration) Status {
	st := Status{Code: -1, Uptime: uptime}
	switch {
	case ws.Exited():
		st.Code = ws.ExitStatus()
	case ws.Signaled():
		st.Signal = ws.Signal()
	}
	return st
}

func (p *Process) finish(st Status) {
	p.mu.Lock()
	p.st = st
	p.mu.Unlock()
	close(p.done)
}

// BecomeSubreaper makes this process the child subreaper of its
// descendants (Linux prctl PR_SET_CHILD_SUBREAPER): an orphan of the
// child's is handed to this process, which reaps it, instead of to init.
// PID 1 is that already.
func BecomeSubreaper() error {
	if os.Getpid() == 1 {
		return nil
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl PR_SET_CHILD_SUBREAPER: %w", err)
	}
	return nil
}
