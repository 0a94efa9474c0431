package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"authgate/child"
	"authgate/event"
	"authgate/policy"
	"authgate/proxy"
)

// Same-service mode's timings.
const (
	// probeEvery is how often the upstream is tried with a TCP connect
	// until it accepts.
	probeEvery = 100 * time.Millisecond
	// notAcceptingEvery is how often a child that does not accept yet is
	// reported.
	notAcceptingEvery = 10 * time.Second
)

// serveWithChild is same-service mode (SPEC "Command line"): authgate
// takes the public port and runs the backend as its child, wired to the
// proxy through Run's hooks: started once the config has loaded,
// readiness once it accepts TCP connections, stopped after authgate's own
// shutdown. authgate exits with the child's status.
func serveWithChild(cfgPath string, command []string, stdout, stderr io.Writer) int {
	path, err := child.Lookup(command[0])
	if err != nil {
		fmt.Fprintf(stderr, "authgate: %v\n", err)
		return startErrorCode(err)
	}
	// Signals are caught before the child starts: one that arrives while
	// it does is not lost.
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(term)
	usr := make(chan os.Signal, 4)
	signal.Notify(usr, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(usr)
	reload, stopHUP := reloadOnHUP() // SIGHUP reloads authgate, never forwarded
	defer stopHUP()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sv := &supervisor{path: path, argv: command, cancel: cancel, ready: make(chan struct{}), watched: make(chan struct{})}
	go sv.relaySignals(ctx, term, usr)
	err = proxy.Run(ctx, proxy.RunOptions{
		ConfigPath: cfgPath, Logs: stdout, Reload: reload, Watch: true,
		Loaded: sv.start, UpstreamReady: sv.ready, Drained: sv.stop,
	})
	if err != nil {
		sv.stop() // a listener that failed once the child was up
		if sv.proc.Load() != nil && ctx.Err() != nil {
			// The child ended, or a signal came, before authgate listened
			// (Run's listen was cancelled): the child's status, as
			// upstream_exit said.
			return sv.exitCode()
		}
		var se *child.StartError
		if errors.As(err, &se) {
			fmt.Fprintf(stderr, "authgate: %v\n", err)
			return se.Code
		}
		printLoadError(stderr, err)
		fmt.Fprintln(stderr, "authgate: not started")
		return 1
	}
	return sv.exitCode()
}

func startErrorCode(err error) int {
	var se *child.StartError
	if errors.As(err, &se) {
		return se.Code
	}
	return 1
}

// supervisor is the child's side of the wiring.
type supervisor struct {
	path   string
	argv   []string
	cancel context.CancelFunc // ends Run: the child ended on its own
	ready  chan struct{}      // closed once the child accepts
	proc   atomic.Pointer[child.Process]

	log         zerolog.Logger // Run's logger, set by start
	stopTimeout time.Duration
	stopping    atomic.Bool   // authgate is stopping the child
	ownExit     atomic.Bool   // the child ended on its own
	watched     chan struct{} // closed once upstream_exit is written
	stopOnce    sync.Once
}

// start is Run's Loaded hook: the child starts once the config has
// loaded, before authgate listens.
func (s *supervisor) start(snap *policy.Snapshot, log zerolog.Logger) error {
	s.log, s.stopTimeout = log, snap.Upstream.StopTimeout
	if err := child.BecomeSubreaper(); err != nil {
		log.Warn().Str(event.FieldEvent, event.UpstreamStart).Err(err).
			Msg("cannot become a child subreaper: orphans of the backend go to init")
	}
	port := upstreamPort(snap.Upstream.URL)
	p, err := child.Start(s.path, s.argv, child.Options{Env: withEnv(os.Environ(), "PORT", port), ReapOrphans: true})
	if err != nil {
		return err
	}
	s.proc.Store(p)
	// The command's name only: arguments may carry what a log must not.
	log.Info().Str(event.FieldEvent, event.UpstreamStart).Int("pid", p.PID()).Str("command", s.argv[0]).
		Str("port", port).Bool("pid1", os.Getpid() == 1).Msg("backend started")
	go s.watch(p, upstreamAddr(snap.Upstream.URL))
	return nil
}

// watch reports readiness and the child's end; a child that ends on its
// own ends authgate.
func (s *supervisor) watch(p *child.Process, addr string) {
	defer close(s.watched)
	accepted := s.awaitAccepting(p, addr)
	<-p.Done()
	st := p.Status()
	ev := s.log.Error()
	msg := "backend exited; authgate stops with its status"
	switch {
	case s.stopping.Load():
		ev, msg = s.log.Info(), "backend stopped"
	case !accepted:
		msg = "backend exited before it ever accepted connections; authgate stops with its status"
	}
	ev = ev.Str(event.FieldEvent, event.UpstreamExit).Int("pid", p.PID())
	if st.Signal != 0 {
		ev = ev.Str("signal", st.SignalName())
	} else {
		ev = ev.Int("code", st.Code)
	}
	ev.Int("exit_status", st.ExitCode()).Int64("uptime_ms", st.Uptime.Milliseconds()).Msg(msg)
	if !s.stopping.Load() {
		s.ownExit.Store(true)
		s.cancel()
	}
}

// awaitAccepting tries a TCP connect to addr every probeEvery until one
// succeeds (then readiness: true) or the child ends (false), reporting a
// child that does not accept every notAcceptingEvery.
func (s *supervisor) awaitAccepting(p *child.Process, addr string) bool {
	probe := time.NewTicker(probeEvery)
	defer probe.Stop()
	report := time.NewTicker(notAcceptingEvery)
	defer report.Stop()
	d := net.Dialer{Timeout: time.Second}
	for {
		if c, err := d.Dial("tcp", addr); err == nil {
			c.Close()
			close(s.ready)
			s.log.Info().Str(event.FieldEvent, event.UpstreamReady).Int("pid", p.PID()).Str("upstream", addr).
				Int64("uptime_ms", p.Uptime().Milliseconds()).Msg("backend accepting connections")
			return true
		}
		select {
		case <-p.Done():
			return false
		case <-report.C:
			s.log.Warn().Str(event.FieldEvent, event.UpstreamStart).Int("pid", p.PID()).Str("upstream", addr).
				Int64("uptime_ms", p.Uptime().Milliseconds()).
				Msg("backend not accepting connections yet; the health path answers 503")
		case <-probe.C:
		}
	}
}

// stop is Run's Drained hook (and what a failed start calls): SIGTERM to
// the child's group, SIGKILL after upstream.stop_timeout, then wait for
// upstream_exit to be written.
func (s *supervisor) stop() {
	p := s.proc.Load()
	if p == nil {
		return
	}
	s.stopOnce.Do(func() {
		select {
		case <-p.Done(): // it ended on its own: nothing to stop
		default:
			s.stopping.Store(true)
			s.log.Info().Str(event.FieldEvent, event.UpstreamStop).Int("pid", p.PID()).Str("signal", "SIGTERM").
				Str("stop_timeout", policy.FormatDuration(s.stopTimeout)).Msg("stopping the backend")
			start := time.Now()
			if st := p.Stop(s.stopTimeout); st.Signal == syscall.SIGKILL && time.Since(start) >= s.stopTimeout {
				s.log.Warn().Str(event.FieldEvent, event.UpstreamStop).Int("pid", p.PID()).Str("signal", "SIGKILL").
					Msg("backend still running after upstream.stop_timeout: killed")
			}
		}
		<-s.watched
	})
}

// relaySignals ends authgate on SIGTERM/SIGINT (the child is stopped
// after its shutdown, by stop) and forwards SIGUSR1/SIGUSR2 to the
// child's group.
func (s *supervisor) relaySignals(ctx context.Context, term, usr <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-term:
			s.cancel()
		case sig := <-usr:
			if p := s.proc.Load(); p != nil {
				if err := p.Signal(sig.(syscall.Signal)); err != nil {
					s.log.Warn().Str(event.FieldEvent, event.UpstreamStart).Err(err).Msg("cannot forward the signal")
				}
			}
		}
	}
}

func (s *supervisor) exitCode() int {
	p := s.proc.Load()
	if p == nil {
		return 1
	}
	<-p.Done()
	return p.Status().ExitCode()
}

// upstreamPort is the port of the upstream URL, the scheme's default
// when it names none.
func upstreamPort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "https" {
		return "443"
	}
	return "80"
}

func upstreamAddr(u *url.URL) string { return net.JoinHostPort(u.Hostname(), upstreamPort(u)) }

// withEnv returns env with key set to value (replacing every earlier
// setting of it).
func withEnv(env []string, key, value string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return append(out, key+"="+value)
}
