package proxy

import (
	"bufio"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/rs/zerolog"

	"authgate/event"
	"authgate/policy"
	"authgate/proxy/relay"
	"authgate/rewrite"
)

// hopHeaders are removed from a forwarded upgrade (RFC 9110 §7.6.1), except
// that Connection and Upgrade are then set for the WebSocket upgrade.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func removeHopHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				h.Del(f)
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
}

// upstreamKeepAlive probes an idle upstream connection after a minute,
// leaving interval and count to the OS: two socket options per upgrade
// instead of Go's default four (measured: setsockopt was a tenth of an
// upgrade's system calls).
var upstreamKeepAlive = net.KeepAliveConfig{Enable: true, Idle: time.Minute, Interval: -1, Count: -1}

// clientKeepAlive finds a relayed client that vanished (a phone that
// lost its network) after a minute idle and the OS's probes 15 s apart.
var clientKeepAlive = net.KeepAliveConfig{Enable: true, Idle: time.Minute, Interval: 15 * time.Second, Count: -1}

// upgradeError says why the upstream did not take the upgrade; it maps to
// 1014 / 502 and an upstream_error event.
type upgradeError struct {
	stage string // dial, write, read
	err   error
}

func (e *upgradeError) Error() string { return e.stage + ": " + e.err.Error() }
func (e *upgradeError) Unwrap() error { return e.err }

// serveWebSocket forwards the upgrade to the upstream so that subprotocol
// and extension negotiation stay end to end, then, on 101, hijacks the
// client, answers it, and relays frames until either side ends.
func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request, x *exchange) {
	s.conns.begin()
	defer s.conns.end()
	if !validHandshake(r) {
		writeJSONError(w, x.requestID, "bad_handshake", badHandshake)
		return
	}
	out := r.Clone(r.Context())
	removeHopHeaders(out.Header)
	out.Header.Set("Connection", "Upgrade")
	out.Header.Set("Upgrade", "websocket")
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = []string{""} // keep Request.Write from adding Go's
	}
	out.Body, out.ContentLength = nil, 0
	prepareOutbound(&httputil.ProxyRequest{In: r, Out: out}, x)

	s.awaitUpstream(r.Context(), x.snap.Upstream.UpgradeTimeout)
	up, br, resp, err := s.dialUpgrade(r.Context(), out, x)
	if err != nil {
		s.upstreamFailed(w, r, x, err)
		return
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		// The upstream refused (401, 404, ...): the client gets its answer.
		defer up.Close()
		copyResponse(w, resp)
		return
	}
	rc := http.NewResponseController(w)
	client, cbuf, err := rc.Hijack()
	if err != nil {
		up.Close()
		s.log.Error().Str(event.FieldEvent, event.UpstreamError).Str(event.FieldRequestID, x.requestID).Err(err).Msg("cannot hijack client")
		return
	}
	client.SetDeadline(time.Time{})
	up.SetDeadline(time.Time{})
	if tc, ok := client.(*net.TCPConn); ok {
		tc.SetKeepAliveConfig(clientKeepAlive)
	}
	if err := writeSwitching(client, r, resp); err != nil {
		client.Close()
		up.Close()
		return
	}
	var clientBuffered, upBuffered []byte
	if n := cbuf.Reader.Buffered(); n > 0 {
		clientBuffered, _ = cbuf.Reader.Peek(n)
	}
	if n := br.Buffered(); n > 0 {
		upBuffered, _ = br.Peek(n)
	}
	deflate := headerHasPrefixToken(resp.Header, "Sec-Websocket-Extensions", "permessage-deflate")
	// The connection keeps copies of the few strings it needs: substrings
	// would pin the whole request line (token included) for its lifetime.
	facts := x.d.Facts()
	facts.Subject = strings.Clone(facts.Subject)
	conn := &wsConn{
		relay:     relay.New(client, clientBuffered, up, upBuffered, relay.Options{Deflate: deflate, WriteTimeout: x.snap.Upstream.WriteTimeout}),
		route:     x.d.Route,
		facts:     facts,
		logCfg:    x.snap.Log,
		origin:    strings.Clone(r.Header.Get("Origin")),
		requestID: strings.Clone(x.requestID),
		opened:    time.Now(),
		heapIndex: -1,
	}
	s.conns.add(conn)
	s.metrics.wsOpen.WithLabelValues(conn.routeName()).Inc()
	s.metrics.handshake.Observe(time.Since(x.start).Seconds())
	if conn.route != nil && conn.route.CloseOnExpiry && x.d.Class == rewrite.ClassJWT && !x.d.Expiry.IsZero() {
		s.expiry.add(conn, x.d.Expiry.Add(x.snap.Verifier.Config().Leeway))
	}
	// The relay runs on goroutines of its own and this handler returns:
	// an idle connection then holds two small stacks, not the handler's.
	err = conn.relay.Start(func(res relay.Result) {
		s.expiry.remove(conn)
		s.metrics.wsOpen.WithLabelValues(conn.routeName()).Dec()
		s.logClose(conn, res)
		s.conns.remove(conn) // last: Shutdown waits for the ws_close event
	})
	if err != nil {
		s.expiry.remove(conn)
		s.conns.remove(conn)
		s.metrics.wsOpen.WithLabelValues(conn.routeName()).Dec()
		client.Close()
		up.Close()
		return
	}
	if s.draining.Load() {
		// Shutdown began while this upgrade was in flight and may have
		// closed the registry before this connection joined it.
		go conn.relay.Close(closeShutdown.clientCode, closeShutdown.clientReason, closeShutdown.upstreamCode, closeShutdown.upstreamReason)
	}
}

var badHandshake = policy.Rejection{Status: http.StatusBadRequest, Message: "invalid websocket handshake"}

// validHandshake checks what authgate relies on to complete a handshake
// itself (RFC 6455 §4.2.1): GET, HTTP/1.1, no body, a 16-byte base64 key,
// version 13.
func validHandshake(r *http.Request) bool {
	if r.Method != http.MethodGet || !r.ProtoAtLeast(1, 1) {
		return false
	}
	if r.ContentLength != 0 || r.TransferEncoding != nil {
		// A handshake has no body (§4.1); one would be read as frames.
		return false
	}
	key := r.Header.Get("Sec-Websocket-Key")
	if b, err := base64.StdEncoding.DecodeString(key); err != nil || len(b) != 16 {
		return false
	}
	return r.Header.Get("Sec-Websocket-Version") == "13"
}

func headerHasPrefixToken(h http.Header, key, prefix string) bool {
	for _, v := range h[key] {
		for _, t := range strings.Split(v, ",") {
			if strings.HasPrefix(strings.TrimSpace(t), prefix) {
				return true
			}
		}
	}
	return false
}

// dialUpgrade connects to the upstream (TLS for https, resuming a cached
// session when it can), sends the upgrade and reads the response head,
// bounded by upstream.dial_timeout (TCP and TLS handshake) and
// upstream.upgrade_timeout (the answer: a backend waking from a cold
// start takes a while).
func (s *Server) dialUpgrade(ctx context.Context, out *http.Request, x *exchange) (net.Conn, *bufio.Reader, *http.Response, error) {
	u := x.snap.Upstream.URL
	addr := u.Host
	if u.Port() == "" {
		if u.Scheme == "https" {
			addr = net.JoinHostPort(u.Hostname(), "443")
		} else {
			addr = net.JoinHostPort(u.Hostname(), "80")
		}
	}
	dctx, cancel := context.WithTimeout(ctx, x.snap.Upstream.DialTimeout)
	defer cancel()
	var (
		conn net.Conn
		err  error
	)
	if u.Scheme == "https" {
		d := &tls.Dialer{NetDialer: &net.Dialer{KeepAliveConfig: upstreamKeepAlive}, Config: x.up.tls}
		conn, err = d.DialContext(dctx, "tcp", addr)
	} else {
		d := net.Dialer{KeepAliveConfig: upstreamKeepAlive}
		conn, err = d.DialContext(dctx, "tcp", addr)
	}
	if err != nil {
		return nil, nil, nil, &upgradeError{"dial", err}
	}
	conn.SetDeadline(time.Now().Add(x.snap.Upstream.UpgradeTimeout))
	// A client that gives up frees the upstream socket at once.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := writeUpgradeRequest(conn, out); err != nil {
		conn.Close()
		return nil, nil, nil, &upgradeError{"write", err}
	}
	br := bufio.NewReaderSize(conn, 2048)
	resp, err := http.ReadResponse(br, out)
	if err != nil {
		conn.Close()
		return nil, nil, nil, &upgradeError{"read", err}
	}
	return conn, br, resp, nil
}

// copyResponse passes a non-101 upstream answer to the client, body
// bounded to 1 MiB.
func copyResponse(w http.ResponseWriter, resp *http.Response) {
	defer resp.Body.Close()
	removeHopHeaders(resp.Header)
	stripAuthgateHeaders(resp.Header)
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, io.LimitReader(resp.Body, 1<<20))
}

// writeUpgradeRequest sends out's head to the upstream in one write.
func writeUpgradeRequest(conn net.Conn, out *http.Request) error {
	buf := headBuf()
	defer putHead(buf)
	b, ok := appendUpgradeRequest(*buf, out)
	*buf = b
	if !ok {
		bw := bufio.NewWriterSize(conn, 2048)
		if err := out.Write(bw); err != nil {
			return err
		}
		return bw.Flush()
	}
	_, err := conn.Write(b)
	return err
}

// writeSwitching answers the client's upgrade with the upstream's 101,
// choosing the subprotocol the client needs when its token came as one.
func writeSwitching(client net.Conn, r *http.Request, resp *http.Response) error {
	buf := headBuf()
	defer putHead(buf)
	*buf = appendSwitching(*buf, r, resp)
	client.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := client.Write(*buf)
	client.SetWriteDeadline(time.Time{})
	return err
}

// acceptKey is Sec-WebSocket-Accept for key (RFC 6455 §4.2.2).
func acceptKey(key string) string {
	h := sha1.New()
	h.Write([]byte(key))
	h.Write([]byte("258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// rejectWebSocket completes the handshake itself and at once sends a close
// frame with code and reason, so browser code reads them in onclose (a
// refused handshake shows only 1006). It reports false if the request is
// not a handshake it can complete, and the caller answers with HTTP.
func (s *Server) rejectWebSocket(w http.ResponseWriter, r *http.Request, code uint16, reason string) bool {
	if !validHandshake(r) {
		return false
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return false
	}
	defer conn.Close()
	offered := r.Header.Values("Sec-Websocket-Protocol")
	proto := rewrite.ProtocolAnswer(offered, "")
	if proto == "" && len(offered) > 0 {
		// A browser that offered subprotocols fails a handshake that
		// selects none, and would see 1006 instead of our code.
		proto, _, _ = strings.Cut(offered[0], ",")
		proto = strings.TrimSpace(proto)
	}
	var b strings.Builder
	b.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ")
	b.WriteString(acceptKey(r.Header.Get("Sec-Websocket-Key")))
	b.WriteString("\r\n")
	if proto != "" {
		b.WriteString("Sec-WebSocket-Protocol: " + proto + "\r\n")
	}
	b.WriteString("\r\n")
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := brw.WriteString(b.String()); err != nil {
		return true
	}
	if err := relay.WriteClose(brw, code, reason, false); err != nil {
		return true
	}
	if err := brw.Flush(); err != nil {
		return true
	}
	// Wait, briefly, for the client's close frame, then close TCP at once
	// (RFC 6455 §7.1.1: the server closes TCP first, after the closing
	// handshake; a browser reports the code when TCP closes).
	conn.SetReadDeadline(time.Now().Add(time.Second))
	awaitClose(io.LimitReader(brw, 64<<10))
	return true
}

// awaitClose reads frames from r until a close frame, an error or the
// end of r.
func awaitClose(r io.Reader) {
	for {
		h, err := ws.ReadHeader(r)
		if err != nil || h.OpCode == ws.OpClose {
			return
		}
		if _, err := io.CopyN(io.Discard, r, h.Length); err != nil {
			return
		}
	}
}

// upstreamFailed answers 1014 / 502 (504 on a timeout) and logs an
// upstream_error event.
func (s *Server) upstreamFailed(w http.ResponseWriter, r *http.Request, x *exchange, err error) {
	s.reject(w, r, x, "bad_gateway", s.logUpstreamError(r, x, err))
}

// logUpstreamError writes the upstream_error event of a failed request
// and returns how to answer it.
func (s *Server) logUpstreamError(r *http.Request, x *exchange, err error) policy.Rejection {
	kind, rej := "unreachable", rejectBadGateway
	var ne net.Error
	var ce *tls.CertificateVerificationError
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		kind, rej = "timeout", rejectGatewayTimeout
	case errors.As(err, &ce):
		kind = "tls" // the upstream's certificate did not verify; never a plaintext fallback
	}
	ev := s.log.Error().Str(event.FieldEvent, event.UpstreamError).Str(event.FieldRequestID, x.requestID).
		Str(event.FieldPath, r.URL.Path).Str("kind", kind).Str(event.FieldError, sanitizeErr(err))
	if x.d.Route != nil {
		ev = ev.Str(event.FieldRoute, x.d.Route.Name)
	}
	ev.Msg("upstream failed")
	route := ""
	if x.d.Route != nil {
		route = x.d.Route.Name
	}
	s.metrics.upstreamErrs.WithLabelValues(route).Inc()
	return rej
}

// sanitizeErr renders a transport error without the request URL, which
// may carry a token in its query (url.Error quotes it).
func sanitizeErr(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + ": " + ue.Err.Error()
	}
	return err.Error()
}

// closeLine is a ws_close line's fields, flat (see authLine).
type closeLine struct {
	route, user, reqID, closedBy, reason string
	hasUser                              bool
	durationMS, bytesIn, bytesOut        int64
	closeCode                            int
}

func (l closeLine) clone() closeLine {
	for _, p := range []*string{&l.route, &l.user, &l.reqID, &l.reason} {
		*p = strings.Clone(*p)
	}
	return l
}

// logClose writes the ws_close event of a relayed connection, within the
// log budget.
func (s *Server) logClose(c *wsConn, res relay.Result) {
	l := closeLine{route: c.routeName(), reqID: c.requestID,
		durationMS: time.Since(c.opened).Milliseconds(), bytesIn: res.BytesIn, bytesOut: res.BytesOut,
		closeCode: int(res.CloseCode), closedBy: res.ClosedBy, reason: res.Reason}
	l.user, l.hasUser = userField(c.logCfg, c.facts.Subject)
	if res.Err != nil && l.reason == "" {
		l.reason = res.Err.Error()
	}
	if !utf8.ValidString(l.reason) {
		l.reason = strings.ToValidUTF8(l.reason, "?")
	}
	if s.gate.admitClose(&l) {
		writeClose(&s.log, &l, 0)
	}
}

// writeClose writes a ws_close line; repeat > 0 makes it the log budget's
// summary of that many held lines (durations and bytes are their sums).
func writeClose(log *zerolog.Logger, l *closeLine, repeat int64) {
	ev := log.Info().Str(event.FieldEvent, event.WSClose).Str(event.FieldRoute, l.route)
	if l.hasUser {
		ev = ev.Str(event.FieldUser, l.user)
	}
	ev = ev.Str(event.FieldRequestID, l.reqID).
		Int64(event.FieldDurationMS, l.durationMS).
		Int64(event.FieldBytesIn, l.bytesIn).Int64(event.FieldBytesOut, l.bytesOut).
		Int(event.FieldCloseCode, l.closeCode).Str(event.FieldClosedBy, l.closedBy)
	if repeat > 0 {
		ev = ev.Int64(event.FieldRepeat, repeat)
	}
	ev.Str(event.FieldReason, l.reason).Msg("websocket closed")
}
