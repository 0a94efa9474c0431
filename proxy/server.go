package proxy

import (
	"context"
	"errors"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"authgate/event"
	"authgate/policy"
)

// Limits of the public listener.
const (
	// ReadHeaderTimeout bounds how long a client may take to send its
	// request headers (slowloris).
	ReadHeaderTimeout = 10 * time.Second
	// MaxHeaderBytes bounds request headers: tokens are at most 8 KiB, and
	// cookies and the rest fit easily in 64 KiB.
	MaxHeaderBytes = 64 << 10
)

// Options configure a Server. The zero value logs nowhere and uses the
// wall clock.
type Options struct {
	Logger zerolog.Logger
	// Now is the clock decisions are made with; nil means time.Now.
	Now func() time.Time
	// UpstreamReady, when not nil, is closed once the upstream accepts
	// connections (see RunOptions.UpstreamReady); nil means ready.
	UpstreamReady <-chan struct{}
}

// Server is authgate's public handler, with its registry of open
// WebSockets. It serves one policy snapshot at a time; Swap replaces it.
type Server struct {
	snap atomic.Pointer[policy.Snapshot]
	log  zerolog.Logger
	now  func() time.Time

	ups      upstreams
	mintKeys mintKeys // what /jwks.json serves, retired keys included
	rp       *httputil.ReverseProxy
	conns    registry
	metrics  *metrics
	limiter  *ipLimiter
	repeats  *repeatRefusals
	trimmer  *connTrimmer
	expiry   expiryQueue
	boundary boundaryTimer
	gate     *logGate // log budget and heartbeat counts (issue 21)

	draining  atomic.Bool
	stopping  chan struct{} // closed by Shutdown: waits for readiness end
	stopOnce  sync.Once
	upReady   <-chan struct{}
	xffWarned atomic.Bool // the untrusted-proxy warning was logged under this config
	mu        sync.Mutex
	servers   []*http.Server
}

var _ http.Handler = (*Server)(nil)

// New returns a Server serving snap.
func New(snap *policy.Snapshot, opt Options) *Server {
	s := &Server{log: opt.Logger, now: opt.Now, metrics: newMetrics(), limiter: newIPLimiter(),
		repeats: newRepeatRefusals(), trimmer: newConnTrimmer(),
		stopping: make(chan struct{}), upReady: opt.UpstreamReady}
	if s.now == nil {
		s.now = time.Now
	}
	s.snap.Store(snap)
	s.gate = newLogGate(&s.log, snap.Log, nil, s.metrics.logHeld, s.OpenWebSockets)
	s.limiter.configure(snap.RateLimit)
	s.conns.init()
	s.expiry.init(s.expire)
	s.boundary.schedule(snap, s.now(), s.onBoundary)
	s.ups.configure(snap.Upstream)
	s.rp = &httputil.ReverseProxy{
		Rewrite:      s.rewriteHTTP,
		Transport:    &s.ups,
		ErrorHandler: s.httpError,
		// Streaming responses (SSE, long polls) flush at once.
		FlushInterval: -1,
		ErrorLog:      s.stdLogger(),
	}
	return s
}

// Snapshot returns the policy in force.
func (s *Server) Snapshot() *policy.Snapshot { return s.snap.Load() }

// Swap puts snap in force for requests that start from now on; requests
// in flight finish with the snapshot they started with. Open WebSockets
// are decided again under snap (revoke_open), and the next stage boundary
// is scheduled.
func (s *Server) Swap(snap *policy.Snapshot) {
	s.ups.configure(snap.Upstream)
	if s.mintKeys.rotate(s.snap.Load(), snap, s.now()) {
		s.log.Warn().Str(event.FieldEvent, event.Config).Str("kid", snap.Minter.KID()).
			Msg("mint key changed under the same kid: /jwks.json serves both for a while, but a backend that looks keys up by kid alone may pick the old one; give a new key a new kid")
	}
	s.snap.Store(snap)
	s.gate.configure(snap.Log)
	s.xffWarned.Store(false)
	s.limiter.configure(snap.RateLimit)
	now := s.now()
	s.revoke(snap, now, "policy reloaded")
	s.boundary.schedule(snap, now, s.onBoundary)
}

// OpenWebSockets returns how many relayed WebSockets are open.
func (s *Server) OpenWebSockets() int { return s.conns.len() }

// HTTPServer returns an http.Server for this handler with authgate's
// limits: a read-header timeout and a header size limit.
func (s *Server) HTTPServer() *http.Server {
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: ReadHeaderTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          s.stdLogger(),
		ConnState:         s.trimmer.connState,
	}
	s.mu.Lock()
	s.servers = append(s.servers, hs)
	s.mu.Unlock()
	return hs
}

// Serve accepts connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	if s.draining.Load() {
		ln.Close()
		return nil
	}
	err := s.HTTPServer().Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, closes every open WebSocket with 1012 (1001
// to the upstream), lets HTTP requests finish, and returns when all is
// done or ctx ends. It returns how many WebSockets it closed.
func (s *Server) Shutdown(ctx context.Context) (int, error) {
	s.draining.Store(true)
	defer s.trimmer.stop()
	s.stopOnce.Do(func() { close(s.stopping) })
	s.mu.Lock()
	servers := append([]*http.Server(nil), s.servers...)
	s.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(servers))
	for i, hs := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = hs.Shutdown(ctx)
		}()
	}
	s.boundary.stop()
	s.expiry.stop()
	s.conns.trim.Stop()
	n := s.conns.closeAll(closeShutdown)
	wsErr := s.conns.wait(ctx)
	wg.Wait()
	s.gate.close() // held lines as summaries, ws_close ones included
	s.ups.closeIdle()
	return n, errors.Join(append(errs, wsErr)...)
}

// upstreamReady reports whether the upstream accepts connections.
func (s *Server) upstreamReady() bool {
	if s.upReady == nil {
		return true
	}
	select {
	case <-s.upReady:
		return true
	default:
		return false
	}
}

// awaitUpstream waits until the upstream accepts connections, limit
// passes, ctx ends or shutdown begins, whichever is first; the request
// then goes on (and fails as it would have, if the upstream is still
// not there).
func (s *Server) awaitUpstream(ctx context.Context, limit time.Duration) {
	if s.upstreamReady() {
		return
	}
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-s.upReady:
	case <-t.C:
	case <-ctx.Done():
	case <-s.stopping:
	}
}

// stdLogger routes net/http's own messages (TLS handshake errors, a
// recovered handler panic, a failed body copy) into the JSON log as
// event "http_error" instead of the process's stderr.
func (s *Server) stdLogger() *log.Logger {
	l := s.log.With().Str(event.FieldEvent, event.HTTPError).Logger()
	return log.New(&levelWriter{l: l}, "", 0)
}

// levelWriter writes each message as one warn-level line.
type levelWriter struct{ l zerolog.Logger }

func (w *levelWriter) Write(p []byte) (int, error) {
	w.l.Warn().Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}

// LogStart writes the start event; cmd calls it once listening.
func (s *Server) LogStart(addr string) {
	snap := s.snap.Load()
	s.log.Info().Str(event.FieldEvent, event.Start).Str("listen", addr).
		Str("upstream", snap.Upstream.URL.Redacted()).Int("routes", len(snap.Routes)).
		Msg("authgate started")
}

// StartHeartbeats writes a heartbeat every log.heartbeat from now on;
// lines reports how many lines have been written (nil: not known). Run
// calls it once serving; StopHeartbeats ends them.
func (s *Server) StartHeartbeats(lines func() int64) { s.gate.startHeartbeats(lines) }

// StopHeartbeats writes the final heartbeat (the last interval's counts)
// and stops them; call it after Shutdown, before LogStop.
func (s *Server) StopHeartbeats() { s.gate.stopHeartbeats() }

// LogStop writes the stop event.
func (s *Server) LogStop(closed int, err error) {
	ev := s.log.Info().Str(event.FieldEvent, event.Stop).Int("websockets_closed", closed)
	if err != nil {
		ev = ev.Str(event.FieldError, err.Error())
	}
	ev.Msg("authgate stopped")
}
