package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"authgate/policy"
)

// tlsSessionCacheSize is how many upstream TLS sessions are kept for
// resumption. One upstream host needs one entry per concurrent handshake
// burst at most; 256 is ample and small.
const tlsSessionCacheSize = 256

// upstreamClient is how authgate reaches the upstream of one config: the
// HTTP transport and the TLS settings of WebSocket dials, both verifying
// certificates against the same roots and sharing one TLS session cache,
// so an upgrade resumes a session instead of paying a full handshake.
// It is immutable; a reload that changes the upstream builds a new one.
type upstreamClient struct {
	cfg       policy.Upstream
	transport *http.Transport
	// tls is for WebSocket dials to an https upstream (nil for http). Its
	// ServerName is empty: tls.Dialer then takes it from the address, the
	// upstream's host, as the transport does.
	tls *tls.Config
}

func newUpstreamClient(cfg policy.Upstream, sessions tls.ClientSessionCache) *upstreamClient {
	if sessions == nil {
		sessions = tls.NewLRUClientSessionCache(tlsSessionCacheSize)
	}
	c := &upstreamClient{cfg: cfg}
	tc := &tls.Config{
		RootCAs:            cfg.RootCAs, // nil: the system roots
		ClientSessionCache: sessions,
		MinVersion:         tls.VersionTLS12,
		NextProtos:         []string{"http/1.1"},
	}
	if cfg.URL != nil && cfg.URL.Scheme == "https" {
		c.tls = tc
	}
	dialer := &net.Dialer{KeepAlive: 30 * time.Second}
	c.transport = &http.Transport{
		Proxy: nil, // authgate talks to its upstream directly
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
			defer cancel()
			return dialer.DialContext(ctx, network, addr)
		},
		TLSClientConfig:       tc,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		// The wait for the response head only: a streamed body (SSE, a
		// long download) may take as long as it takes.
		ResponseHeaderTimeout: cfg.ResponseTimeout,
	}
	return c
}

// sameTLS reports whether a and b verify the same server the same way, so
// sessions cached under one may be resumed under the other.
func sameTLS(a, b policy.Upstream) bool {
	if a.URL == nil || b.URL == nil || a.URL.Scheme != b.URL.Scheme || a.URL.Host != b.URL.Host {
		return false
	}
	if a.RootCAs == nil || b.RootCAs == nil {
		return a.RootCAs == nil && b.RootCAs == nil
	}
	return a.RootCAs.Equal(b.RootCAs)
}

func sameUpstream(a, b policy.Upstream) bool {
	return sameTLS(a, b) && a.DialTimeout == b.DialTimeout && a.ResponseTimeout == b.ResponseTimeout
}

// upstreams holds the current upstreamClient and replaces it when a new
// config changes the upstream.
type upstreams struct {
	mu  sync.Mutex // serialises configure
	cur atomic.Pointer[upstreamClient]
}

func (u *upstreams) current() *upstreamClient { return u.cur.Load() }

// configure puts cfg in force. An unchanged upstream keeps its client
// (and its idle connections); a changed one gets a new client, keeping
// the session cache when the server and roots are the same, and the old
// client's idle connections are closed (requests in flight finish).
func (u *upstreams) configure(cfg policy.Upstream) {
	u.mu.Lock()
	defer u.mu.Unlock()
	old := u.cur.Load()
	if old != nil && sameUpstream(old.cfg, cfg) {
		return
	}
	var sessions tls.ClientSessionCache
	if old != nil && sameTLS(old.cfg, cfg) {
		sessions = old.transport.TLSClientConfig.ClientSessionCache
	}
	u.cur.Store(newUpstreamClient(cfg, sessions))
	if old != nil {
		old.transport.CloseIdleConnections()
	}
}

func (u *upstreams) closeIdle() {
	if c := u.current(); c != nil {
		c.transport.CloseIdleConnections()
	}
}

// RoundTrip sends an HTTP request through the current client: the
// ReverseProxy's Transport.
func (u *upstreams) RoundTrip(r *http.Request) (*http.Response, error) {
	if x, ok := r.Context().Value(exchangeKey{}).(*exchange); ok && x.up != nil {
		return x.up.transport.RoundTrip(r)
	}
	return u.current().transport.RoundTrip(r)
}
