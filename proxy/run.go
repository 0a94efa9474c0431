package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"authgate/event"
	"authgate/policy"
	"authgate/rewrite"
)

// RunOptions configure Run.
type RunOptions struct {
	// ConfigPath is the policy file; it is loaded at start and reloaded
	// on Reload.
	ConfigPath string
	// Load overrides policy.Load (tests, demo). Nil means policy.Load.
	Load func(path string) (*policy.Snapshot, error)
	// Logs receives the JSON log lines.
	Logs io.Writer
	// Reload asks for a reload (SIGHUP).
	Reload <-chan struct{}
	// Watch reloads when the config file changes on disk.
	Watch bool
	// Ready is called once the listeners are up, with their addresses
	// (admin is nil when admin_listen is "").
	Ready func(public, admin net.Addr)
	// Now is the decision clock; nil means time.Now.
	Now func() time.Time

	// The hooks below let a caller run something beside the proxy
	// (cmd/authgate's same-service mode runs the backend as its child)
	// while the proxy knows nothing of what it is.

	// Loaded is called once, after the config has loaded and before
	// anything listens, with the config and the logger Run writes its
	// events with (valid until Run returns). An error ends Run and is
	// returned as it is.
	Loaded func(snap *policy.Snapshot, log zerolog.Logger) error
	// UpstreamReady, when not nil, is closed once the upstream accepts
	// connections. Until then the health path answers 503
	// {"status":"starting"}, and requests wait for it as for a cold start
	// (within upgrade_timeout for an upgrade, response_timeout for HTTP).
	// Nil means the upstream is taken as ready (separate mode).
	UpstreamReady <-chan struct{}
	// Drained is called once at shutdown, after authgate's own graceful
	// shutdown (listeners closed, WebSockets closed with 1012, HTTP
	// requests finished or shutdown_timeout spent) and before the stop
	// event; Run returns after it does.
	Drained func()

	onServer func(*Server) // tests: the Server once created
}

// Run loads the policy, serves it until ctx ends, reloads on request,
// and shuts down gracefully within shutdown_timeout. A config that does
// not load at start is returned as an error (a *policy.Error).
func Run(ctx context.Context, opt RunOptions) error {
	load := opt.Load
	if load == nil {
		load = func(p string) (*policy.Snapshot, error) { return policy.Load(p, policy.Options{}) }
	}
	snap, err := load(opt.ConfigPath)
	if err != nil {
		return err
	}
	logs := newBufferedWriter(opt.Logs)
	defer logs.Close()
	logger := NewLogger(logs, snap.Log.Format, snap.Log.Level)
	jwks := &jwksCache{log: logger}
	defer jwks.stop()
	if snap, err = jwks.attach(ctx, snap); err != nil {
		return err
	}
	logConfig(&logger, "loaded", snap, nil)
	if opt.Loaded != nil {
		if err := opt.Loaded(snap, logger); err != nil {
			return err
		}
	}

	srv := New(snap, Options{Logger: logger, Now: opt.Now, UpstreamReady: opt.UpstreamReady})
	if opt.onServer != nil {
		opt.onServer(srv)
	}
	// No TCP keep-alive on accept: a relayed WebSocket gets it when it
	// starts (clientKeepAlive); a rejection or a plain HTTP exchange, which
	// ends or idles out on its own, is spared three socket options.
	lc := net.ListenConfig{KeepAlive: -1, Control: deferAccept}
	ln, err := lc.Listen(ctx, "tcp", snap.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", snap.Listen, err)
	}
	var adminAddr net.Addr
	var admin *adminServer
	if snap.AdminListen != "" {
		aln, err := net.Listen("tcp", snap.AdminListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("admin listen %s: %w", snap.AdminListen, err)
		}
		admin = newAdmin(srv)
		adminAddr = aln.Addr()
		go admin.serve(aln)
	}
	// Two kinds of reload: a SIGHUP (opt.Reload) always re-reads
	// everything and always answers with a config event, so an operator
	// sees the signal was heard; a file-watch event skips content already
	// loaded or rejected (the BBE config/reload.go rule), as one save
	// makes a burst of events.
	hup := make(chan struct{}, 1)
	if opt.Reload != nil {
		go forward(ctx, opt.Reload, hup)
	}
	watched := make(chan struct{}, 1)
	var watcher *configWatcher
	if opt.Watch {
		if watcher, err = watchConfig(ctx, watchPaths(opt.ConfigPath, snap), watched, logger); err != nil {
			logger.Warn().Str(event.FieldEvent, event.Config).Err(err).Msg("cannot watch the config file; reload with SIGHUP")
		}
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	srv.LogStart(ln.Addr().String())
	srv.StartHeartbeats(logs.lines.Load)
	if opt.Ready != nil {
		opt.Ready(ln.Addr(), adminAddr)
	}

	// serving is the hash of the config in force (config and the files
	// it names); lastTried that of the last content loaded or rejected.
	serving, lastTried := snap.Hash, snap.Hash
	reload := func(signalled bool) {
		next, err := load(opt.ConfigPath)
		var pe *policy.Error
		var hash [32]byte
		switch {
		case err == nil:
			hash = next.Hash
		case errors.As(err, &pe):
			hash = pe.Hash
		}
		if watcher != nil {
			// The files the new config names are watched from now on,
			// even if it is rejected: fixing them should reload.
			paths := watchPaths(opt.ConfigPath, next)
			if pe != nil {
				paths = append(paths, pe.Files...)
			}
			watcher.watch(paths)
		}
		switch {
		case err == nil && hash == serving:
			lastTried = hash
			srv.metrics.reloads.WithLabelValues("unchanged").Inc()
			if signalled {
				logger.Info().Str(event.FieldEvent, event.Config).Str(event.FieldResult, "unchanged").
					Str("file", next.File).Int("routes", len(next.Routes)).Msg("config unchanged")
			}
			return
		case !signalled && hash != [32]byte{} && hash == lastTried:
			srv.metrics.reloads.WithLabelValues("unchanged").Inc()
			return
		}
		lastTried = hash
		if err == nil {
			next, err = jwks.attach(ctx, next)
		}
		if err != nil {
			srv.metrics.reloads.WithLabelValues("rejected").Inc()
			logConfig(&logger, "rejected", nil, err)
			return
		}
		srv.Swap(next)
		serving = hash
		srv.metrics.reloads.WithLabelValues("reloaded").Inc()
		logConfig(&logger, "reloaded", next, nil)
	}
	for {
		select {
		case <-hup:
			reload(true)
		case <-watched:
			reload(false)
		case err := <-serveErr:
			srv.StopHeartbeats()
			return err
		case <-ctx.Done():
			timeout := srv.Snapshot().ShutdownTimeout
			sctx, cancel := context.WithTimeout(context.Background(), timeout)
			n, err := srv.Shutdown(sctx)
			if admin != nil {
				admin.close(sctx)
			}
			cancel()
			srv.StopHeartbeats()
			if opt.Drained != nil {
				opt.Drained()
			}
			srv.LogStop(n, err)
			return nil
		}
	}
}

// watchPaths are the files a reload depends on: the config and the files
// it names (snap may be nil when the config did not load).
func watchPaths(config string, snap *policy.Snapshot) []string {
	paths := []string{config}
	if snap != nil {
		paths = append(paths, snap.Files...)
	}
	return paths
}

// forward copies reload requests from in to out until ctx ends,
// coalescing them while one is pending.
func forward(ctx context.Context, in <-chan struct{}, out chan<- struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-in:
			if !ok {
				return
			}
			select {
			case out <- struct{}{}:
			default:
			}
		}
	}
}

func logConfig(l *zerolog.Logger, result string, snap *policy.Snapshot, err error) {
	if err != nil {
		ev := l.Error().Str(event.FieldEvent, event.Config).Str(event.FieldResult, result)
		var pe *policy.Error
		if errors.As(err, &pe) {
			msgs := make([]string, len(pe.Problems))
			for i, p := range pe.Problems {
				msgs[i] = p.String()
			}
			ev = ev.Strs("errors", msgs)
		}
		ev.Str(event.FieldError, err.Error()).Msg("config rejected; the previous config keeps serving")
		return
	}
	ev := l.Info().Str(event.FieldEvent, event.Config).Str(event.FieldResult, result).
		Str("file", snap.File).Int("routes", len(snap.Routes))
	for _, w := range snap.Warnings {
		l.Warn().Str(event.FieldEvent, event.Config).Str("warning", w.String()).Msg("config warning")
	}
	ev.Msg("config " + result)
}

// jwksCache keeps one JWKS client per URL across reloads, so a reload
// does not refetch keys or drop a warm cache.
type jwksCache struct {
	log    zerolog.Logger
	mu     sync.Mutex
	url    string
	ks     rewrite.KeySet
	cancel context.CancelFunc
}

func (c *jwksCache) attach(ctx context.Context, snap *policy.Snapshot) (*policy.Snapshot, error) {
	if snap.JWKSURL == "" {
		return snap, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.url != snap.JWKSURL {
		if c.cancel != nil {
			c.cancel()
		}
		kctx, cancel := context.WithCancel(ctx)
		url := snap.JWKSURL
		ks, err := rewrite.NewJWKS(kctx, url, rewrite.JWKSOptions{OnError: func(err error) {
			c.log.Warn().Str(event.FieldEvent, "jwks_error").Str("url", url).Err(err).Msg("jwks refresh failed")
		}})
		if err != nil {
			cancel()
			return nil, err
		}
		c.url, c.ks, c.cancel = url, ks, cancel
	}
	return snap.WithKeySet(c.ks), nil
}

func (c *jwksCache) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cancel != nil {
		c.cancel()
	}
}

// deferAccept sets TCP_DEFER_ACCEPT on the public listener (nginx's
// "listen ... deferred"): the kernel hands a connection to accept only
// once its first bytes, the request, have arrived, so a handshake costs
// no wake-up and no read that finds nothing (EAGAIN) before the request
// is there. Every client of an HTTP proxy speaks first. A kernel that
// refuses the option leaves the listener as it was.
func deferAccept(network, address string, c syscall.RawConn) error {
	c.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, deferAcceptSeconds)
	})
	return nil
}

// deferAcceptSeconds bounds how long the kernel holds back a connection
// that has sent nothing (tcp(7): it bounds the SYN-ACK retransmissions).
const deferAcceptSeconds = 5
