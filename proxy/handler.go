package proxy

import (
	"context"
	"errors"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"time"

	"authgate/event"
	"authgate/policy"
	"authgate/rewrite"
)

// exchange is one request's state from decision to the upstream: what
// prepareOutbound needs and what the WebSocket path logs at the end.
type exchange struct {
	snap      *policy.Snapshot
	up        *upstreamClient // the upstream client in force when the request began
	d         policy.Decision
	websocket bool
	forward   string // the token the upstream gets ("" = none or unchanged)
	requestID string
	clientIP  string
	xff       string
	start     time.Time
	// answerHTTP: a rejection is answered with a status even on a
	// reject_with: close route (a refused legacy user's repeat attempt).
	answerHTTP bool
}

type exchangeKey struct{}

// ServeHTTP is the request path: health check, then decide, then reject
// or proxy. The snapshot is loaded once and used to the end.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.TransferEncoding != nil {
		// RFC 9112 §6.1: a request with Transfer-Encoding (and, worse,
		// Content-Length too, which Go's server drops) is framed by its
		// chunked encoding here, but a front proxy that frames by
		// Content-Length sees a different end of the body: what follows
		// it is the request-smuggling payload. Answer, then close, so
		// bytes after the body are never read as a request. (Chosen over
		// 400 for every such request: chunked uploads stay legitimate.)
		w.Header().Set("Connection", "close")
	}
	snap := s.snap.Load()
	if r.URL.Path == snap.HealthPath {
		w.Header().Set("Cache-Control", "no-store")
		if !s.upstreamReady() {
			// Same-service mode, the child not accepting yet: a platform
			// health check must not route traffic here (Render fails a
			// deploy whose check never passes, which is right).
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"status":"starting"}` + "\n"))
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
		return
	}
	if !cleanPath(r.URL.Path) {
		// Routes match the path as sent; a path with dot segments or
		// empty segments could match no route here and yet reach a
		// route's handler upstream after the backend normalises it.
		writeJSONError(w, requestID(r), "bad_path", rejectBadPath)
		return
	}
	ws := isWebSocketUpgrade(r)
	x := &exchange{snap: snap, up: s.ups.current(), websocket: ws, requestID: requestID(r), start: time.Now()}
	x.clientIP, x.xff = clientIP(r, snap.TrustedProxies)
	if _, ok := r.Header["X-Forwarded-For"]; ok && !s.xffWarned.Load() {
		s.warnUntrustedProxy(r, snap)
	}
	now := s.now()
	x.d = snap.Decide(r.Context(), r, ws, now)
	d := &x.d
	if d.Route != nil {
		s.limit(x, now)
		transport := event.TransportHTTP
		if ws {
			transport = event.TransportWebSocket
		}
		closeFrame := ws && !d.Route.RejectHTTP && validHandshake(r)
		if closeFrame && d.Action == policy.ActionReject && (d.Class == rewrite.ClassUUID || d.Reason == reasonRateLimited) &&
			!s.repeats.closeFrame(repeatKey{x.clientIP, d.Route.Name, d.User}, now) {
			closeFrame, x.answerHTTP = false, true
		}
		line := newAuthLine(snap.Log, &authEvent{
			d: d, transport: transport, closeFrame: closeFrame,
			clientIP: x.clientIP, origin: r.Header.Get("Origin"),
			userAgent: r.Header.Get("User-Agent"), path: r.URL.Path, requestID: x.requestID,
		})
		if s.gate.admitAuth(&line, d.Class, d.Action, d.Would, d.User) {
			writeAuth(&s.log, &line, 0)
		}
		s.metrics.decision(d.Route.Name, transport, d.Class.String(), d.Action.String())
		if d.Class == rewrite.ClassUUID {
			s.metrics.legacySeen.WithLabelValues(d.Route.Name).Set(float64(now.Unix()))
		}
	}
	if d.Action == policy.ActionReject {
		name := d.Class.String()
		switch {
		case d.Route == nil:
			name = "not_found"
		case d.Reason == reasonRateLimited:
			name = "rate_limited"
		}
		s.reject(w, r, x, name, d.Rejection)
		return
	}
	if s.draining.Load() && ws {
		s.reject(w, r, x, "shutting_down", rejectShutdown)
		return
	}
	if err := x.setForward(now); err != nil {
		s.log.Error().Str(event.FieldEvent, "mint_error").Str(event.FieldRequestID, x.requestID).Err(err).Msg("minting failed")
		s.reject(w, r, x, "internal", policy.Rejection{CloseCode: 1011, Status: http.StatusInternalServerError, Message: "internal error"})
		return
	}
	if ws {
		s.serveWebSocket(w, r, x)
		return
	}
	s.awaitUpstream(r.Context(), snap.Upstream.ResponseTimeout)
	s.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), exchangeKey{}, x)))
}

// warnUntrustedProxy logs, once per config, a request that carries
// X-Forwarded-For from a private peer trusted_proxies does not name: the
// shape of a platform proxy (Render's) left untrusted, under which every
// client shares the proxy's address.
func (s *Server) warnUntrustedProxy(r *http.Request, snap *policy.Snapshot) {
	peer := peerAddr(r)
	if !policy.IsPrivate(peer) || trusted(peer, snap.TrustedProxies) || !s.xffWarned.CompareAndSwap(false, true) {
		return
	}
	s.log.Warn().Str(event.FieldEvent, event.Config).Str("peer", peer.String()).
		Str("fix", "add the proxy to trusted_proxies (on Render: [private, cloudflare])").
		Msg("X-Forwarded-For from untrusted private peer " + peer.String() + ": every client behind it shares one client_ip and one rate-limit bucket; add it to trusted_proxies (on Render: [private, cloudflare])")
}

// setForward decides the token the upstream gets: a freshly minted JWT
// for a rewrite, the client's own on a matched route, none otherwise.
func (x *exchange) setForward(now time.Time) error {
	switch {
	case x.d.Action == policy.ActionRewrite:
		tok, _, err := x.snap.Minter.Mint(x.d.User, now)
		if err != nil {
			return err
		}
		x.forward = tok
	case x.d.Route != nil:
		x.forward = x.d.Token().Value
	}
	return nil
}

// limit applies rate_limit: a client IP whose rejected attempts used up
// its bucket gets 4029 / 429 for anything but a verified JWT (so users
// sharing its NAT with a reconnect loop still get in), and every
// rejection takes from the bucket.
func (s *Server) limit(x *exchange, now time.Time) {
	d := &x.d
	if d.Class != rewrite.ClassJWT || !d.Verified {
		if s.limiter.blocked(x.clientIP, now) {
			d.Action, d.Would, d.Reason = policy.ActionReject, policy.ActionNone, reasonRateLimited
			d.Rejection = rejectRateLimited
			s.metrics.rateLimited.Inc()
			return
		}
	}
	if d.Action == policy.ActionReject {
		s.limiter.rejected(x.clientIP, now)
	}
}

// rewriteHTTP is the ReverseProxy's Rewrite hook. ReverseProxy has
// already removed hop-by-hop and X-Forwarded-* headers from Out.
func (s *Server) rewriteHTTP(pr *httputil.ProxyRequest) {
	x, _ := pr.In.Context().Value(exchangeKey{}).(*exchange)
	if x == nil {
		// Not reachable through ServeHTTP; fail closed.
		pr.Out.URL.Host = "invalid."
		return
	}
	prepareOutbound(pr, x)
}

// prepareOutbound makes pr.Out the request the upstream receives: its
// URL and Host, X-Forwarded-*, X-Request-Id, authgate's own X-Authgate-*
// headers (client-sent ones removed), and the token where the route's
// forward rule puts it.
func prepareOutbound(pr *httputil.ProxyRequest, x *exchange) {
	up := x.snap.Upstream
	pr.SetURL(up.URL)
	switch up.HostHeader {
	case policy.HostUpstream:
		pr.Out.Host = up.URL.Host
	case policy.HostClient:
		pr.Out.Host = pr.In.Host
	default:
		pr.Out.Host = up.HostHeader
	}
	h := pr.Out.Header
	stripAuthgateHeaders(h)
	// ReverseProxy drops these before Rewrite; the WebSocket path must
	// too: a client's own Forwarded / X-Forwarded-* are not believed.
	for _, k := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		delete(h, k)
	}
	h.Set("X-Forwarded-For", x.xff)
	h.Set("X-Forwarded-Host", pr.In.Host)
	h.Set("X-Forwarded-Proto", forwardedProto(pr.In, x))
	h.Set("X-Request-Id", x.requestID)
	if x.d.Route == nil {
		return
	}
	h.Set("X-Authgate-Class", x.d.Class.String())
	if x.d.Action == policy.ActionRewrite {
		h.Set("X-Authgate-Legacy", "1")
	}
	rewrite.ApplyFrom(pr.Out, x.d.Route.Sources, x.d.Token(), x.d.Route.Forward, x.forward)
}

// forwardedProto is https for TLS clients, the client's own claim when it
// came through a trusted proxy (Render terminates TLS at its edge), and
// http otherwise.
func forwardedProto(in *http.Request, x *exchange) string {
	if in.TLS != nil {
		return "https"
	}
	if p := in.Header.Get("X-Forwarded-Proto"); (p == "https" || p == "http") && trusted(peerAddr(in), x.snap.TrustedProxies) {
		return p
	}
	return "http"
}

const reasonRateLimited = "rate limited"

var rejectRateLimited = policy.Rejection{CloseCode: 4029, Status: http.StatusTooManyRequests, Message: "too many failed attempts; retry later"}
var rejectBadPath = policy.Rejection{Status: http.StatusBadRequest, Message: "path with dot or empty segments"}
var rejectShutdown = policy.Rejection{CloseCode: 1012, Status: http.StatusServiceUnavailable, Message: "service restart"}
var rejectBadGateway = policy.Rejection{CloseCode: 1014, Status: http.StatusBadGateway, Message: "bad gateway"}
var rejectGatewayTimeout = policy.Rejection{CloseCode: 1014, Status: http.StatusGatewayTimeout, Message: "upstream timeout"}

// reject answers a refused request: for a WebSocket upgrade on a route
// with reject_with: close, a completed handshake and at once a close frame
// the browser can read; otherwise the status with a JSON body.
func (s *Server) reject(w http.ResponseWriter, r *http.Request, x *exchange, errName string, rej policy.Rejection) {
	if x.websocket && !x.answerHTTP && (x.d.Route == nil || !x.d.Route.RejectHTTP) && rej.CloseCode != 0 {
		if s.rejectWebSocket(w, r, uint16(rej.CloseCode), rej.Message) {
			return
		}
	}
	if x.answerHTTP {
		// A repeat attempt: its client reconnects on a new connection
		// anyway; closing this one spares a read of its EOF.
		w.Header().Set("Connection", "close")
	}
	writeJSONError(w, x.requestID, errName, rej)
}

func writeJSONError(w http.ResponseWriter, requestID, errName string, rej policy.Rejection) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Request-Id", requestID)
	if rej.Status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	}
	w.WriteHeader(rej.Status)
	b := make([]byte, 0, 160)
	b = append(b, `{"error":`...)
	b = strconv.AppendQuote(b, errName)
	b = append(b, `,"message":`...)
	b = strconv.AppendQuote(b, rej.Message)
	if rej.CloseCode != 0 {
		b = append(b, `,"close_code":`...)
		b = strconv.AppendInt(b, int64(rej.CloseCode), 10)
	}
	b = append(b, `,"request_id":`...)
	b = strconv.AppendQuote(b, requestID)
	b = append(b, "}\n"...)
	w.Write(b)
}

// httpError is the ReverseProxy's ErrorHandler: 502 JSON (504 on a
// timeout) and an upstream_error event; never the internal error text.
func (s *Server) httpError(w http.ResponseWriter, r *http.Request, err error) {
	x, _ := r.Context().Value(exchangeKey{}).(*exchange)
	if x == nil {
		x = &exchange{requestID: requestID(r)}
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away; nobody to answer (Caddy's 499 case).
		return
	}
	rej := s.logUpstreamError(r, x, err)
	writeJSONError(w, x.requestID, "bad_gateway", rej)
}

// cleanPath reports whether p has no "." or ".." segments and no empty
// segments ("//"), the shapes that path normalisation changes. Clients
// (browsers, HTTP libraries) normalise them before sending.
func cleanPath(p string) bool {
	if p == "" || p == "/" {
		return true
	}
	for i := 0; i < len(p); i++ {
		if p[i] != '/' {
			continue
		}
		rest := p[i+1:]
		seg, _, _ := strings.Cut(rest, "/")
		if seg == "." || seg == ".." || (seg == "" && i+1 < len(p)) {
			return false
		}
	}
	return true
}
