package proxy_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// testCA is a certificate authority made for one test: its PEM file is
// what upstream.ca_file names, and it issues the backend's certificate.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	pemFile string
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "authgate test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	file := filepath.Join(t.TempDir(), "upstream-ca.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pemFile: file}
}

// serverConfig is a TLS config with a certificate for names, signed by ca.
func (ca *testCA) serverConfig(t testing.TB, names ...string) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// tlsUpstream starts an https backend with a certificate for localhost
// from ca and returns it with its URL by name (https://localhost:PORT),
// so that SNI and Host are a name, as on Render.
func tlsUpstream(t testing.TB, ca *testCA, opts ...backendOption) (*backend, string) {
	t.Helper()
	b := newBackend(t, append(opts, withTLS(ca.serverConfig(t, "localhost")))...)
	u, _ := url.Parse(b.url)
	return b, "https://localhost:" + u.Port()
}

// TestTLSUpstreamWebSocket: through an https upstream verified with
// upstream.ca_file, messages from 1 B to 1 MiB arrive intact both ways,
// the backend sees the upstream's name as SNI and Host, and the second
// upgrade resumes the first one's TLS session (issue 13: every upgrade
// paid a full handshake).
func TestTLSUpstreamWebSocket(t *testing.T) {
	ca := newTestCA(t)
	b, upURL := tlsUpstream(t, ca)
	h := startProxy(t, testConfig{Upstream: upURL, UpstreamExtra: []string{"ca_file: " + ca.pemFile}})
	host := strings.TrimPrefix(upURL, "https://")

	for i := range 3 {
		c, _ := h.mustDial(t, "/api/v1/pam/ws?token="+validJWT(t, "tls-user"), nil, nil)
		sizes := []int{1, 125, 126, 65535, 65536, 1 << 20}
		if i > 0 {
			sizes = []int{1}
		}
		for _, n := range sizes {
			msg := bytes.Repeat([]byte{byte('a' + n%26)}, n)
			msg[0], msg[n-1] = '<', '>'
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
				t.Fatalf("write %d B: %v", n, err)
			}
			_, got, err := c.ReadMessage()
			if err != nil {
				t.Fatalf("read %d B: %v", n, err)
			}
			if !bytes.Equal(got, msg) {
				t.Fatalf("%d B message: got %d B back, not the same bytes", n, len(got))
			}
		}
		closeClient(t, c, websocket.CloseNormalClosure, "")
	}
	reqs := b.requests()
	if len(reqs) != 3 {
		t.Fatalf("backend saw %d upgrades, want 3", len(reqs))
	}
	for i, r := range reqs {
		if r.ServerName != "localhost" || r.Host != host {
			t.Errorf("upgrade %d: SNI %q Host %q, want localhost and %s", i, r.ServerName, r.Host, host)
		}
	}
	if reqs[0].DidResume {
		t.Errorf("first upgrade resumed a session; there was none to resume")
	}
	for i, r := range reqs[1:] {
		if !r.DidResume {
			t.Errorf("upgrade %d: full TLS handshake, want the session resumed", i+2)
		}
	}
}

// TestTLSUpstreamHTTPAndRewrite: HTTP requests and legacy UUID rewrites
// work over TLS, and the HTTP transport and the WebSocket dials share one
// session cache (an upgrade after an HTTP request resumes).
func TestTLSUpstreamHTTPAndRewrite(t *testing.T) {
	ca := newTestCA(t)
	b, upURL := tlsUpstream(t, ca)
	h := startProxy(t, testConfig{Upstream: upURL, UpstreamExtra: []string{"ca_file: " + ca.pemFile}})

	jwtTok := validJWT(t, "u-http")
	resp, body := h.do(t, "GET", "/api/v1/me", http.Header{"Authorization": {"Bearer " + jwtTok}})
	if resp.StatusCode != 200 || !strings.Contains(string(body), "backend") {
		t.Fatalf("http jwt: got %d %s, want 200 from the backend", resp.StatusCode, body)
	}
	if got := b.last(t).Header.Get("Authorization"); got != "Bearer "+jwtTok {
		t.Errorf("http jwt: backend got Authorization %q, want the client's token unchanged", truncate([]byte(got)))
	}

	resp, body = h.do(t, "GET", "/api/v1/me", http.Header{"Authorization": {"Bearer " + testUUID}})
	if resp.StatusCode != 200 {
		t.Fatalf("http uuid: got %d %s, want 200 (rewritten)", resp.StatusCode, body)
	}
	last := b.last(t)
	verifyMinted(t, strings.TrimPrefix(last.Header.Get("Authorization"), "Bearer "), testUUID)
	if last.Header.Get("X-Authgate-Legacy") != "1" {
		t.Errorf("http uuid: X-Authgate-Legacy %q, want 1", last.Header.Get("X-Authgate-Legacy"))
	}

	c, _ := h.mustDial(t, "/api/v1/pam/ws?token="+testUUID, nil, nil)
	echoOnce(t, c, "legacy over tls")
	closeClient(t, c, websocket.CloseNormalClosure, "")
	last = b.last(t)
	q, _ := url.ParseQuery(strings.SplitN(last.RequestURI, "?", 2)[1])
	verifyMinted(t, q.Get("token"), testUUID)
	if !last.DidResume {
		t.Errorf("upgrade after HTTP requests: full handshake, want the transport's session resumed (one cache)")
	}
}

// TestTLSUpstreamUnverified: a certificate that does not verify (unknown
// CA, or a name that is not the upstream's) is 1014 / 502 and an
// upstream_error of kind tls; nothing reaches the backend, in particular
// not in plaintext.
func TestTLSUpstreamUnverified(t *testing.T) {
	ca := newTestCA(t)
	cases := []struct {
		name  string
		names []string
		extra []string
	}{
		{"unknown CA (no ca_file)", []string{"localhost"}, nil},
		{"wrong name", []string{"backend.example"}, []string{"ca_file: " + ca.pemFile}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackend(t, withTLS(ca.serverConfig(t, tc.names...)))
			u, _ := url.Parse(b.url)
			h := startProxy(t, testConfig{Upstream: "https://localhost:" + u.Port(), UpstreamExtra: tc.extra})
			code, _ := dialReadClose(t, h, "/api/v1/pam/ws?token="+validJWT(t, "u"), http.Header{"X-Request-Id": {"ws-tls"}})
			if code != 1014 {
				t.Errorf("websocket: got close %d, want 1014", code)
			}
			resp, body := h.do(t, "GET", "/api/v1/me", http.Header{"Authorization": {"Bearer " + validJWT(t, "u")}, "X-Request-Id": {"http-tls"}})
			if resp.StatusCode != http.StatusBadGateway {
				t.Errorf("http: got %d %s, want 502", resp.StatusCode, body)
			}
			for _, id := range []string{"ws-tls", "http-tls"} {
				ev := h.logs.waitEvent(t, "upstream_error", func(l logLine) bool { return l.str("request_id") == id })
				if ev.str("kind") != "tls" {
					t.Errorf("upstream_error %s: kind %q, want tls (%s)", id, ev.str("kind"), ev.raw)
				}
			}
			if n := b.hits.Load(); n != 0 {
				t.Errorf("backend handled %d requests, want none", n)
			}
		})
	}
}

// TestTLSUpstreamCAReload: a reload that changes upstream.ca_file takes
// effect for the next request (the upstream client is rebuilt).
func TestTLSUpstreamCAReload(t *testing.T) {
	ca1, ca2 := newTestCA(t), newTestCA(t)
	_, upURL := tlsUpstream(t, ca2)
	h := startProxy(t, testConfig{Upstream: upURL, UpstreamExtra: []string{"ca_file: " + ca1.pemFile}})
	resp, body := h.do(t, "GET", "/api/v1/me", http.Header{"Authorization": {"Bearer " + validJWT(t, "u")}})
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("with the wrong CA: got %d %s, want 502", resp.StatusCode, body)
	}
	h.srv.Swap(parseConfig(t, testConfig{Upstream: upURL, UpstreamExtra: []string{"ca_file: " + ca2.pemFile}}))
	resp, body = h.do(t, "GET", "/api/v1/me", http.Header{"Authorization": {"Bearer " + validJWT(t, "u")}})
	if resp.StatusCode != 200 {
		t.Fatalf("after reloading the right CA: got %d %s, want 200", resp.StatusCode, body)
	}
}

// TestUpstreamTimeouts: a backend that takes its time (a cold start) is
// waited for up to upgrade_timeout / response_timeout, then 1014 / 504
// and an upstream_error of kind timeout. The timeout bounds the response
// head only: a body streamed for longer is not cut.
func TestUpstreamTimeouts(t *testing.T) {
	const delay = 1500 * time.Millisecond
	slow := func(b *backend) {
		b.onRequest = func(w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path == "/api/v1/stream" {
				w.WriteHeader(200)
				w.(http.Flusher).Flush()
				time.Sleep(delay)
				w.Write([]byte("late body"))
				return true
			}
			time.Sleep(delay)
			return false
		}
	}
	b := newBackend(t, slow)
	tok := validJWT(t, "cold")
	hdr := http.Header{"Authorization": {"Bearer " + tok}}
	t.Run("longer than the timeouts", func(t *testing.T) {
		h := startProxy(t, testConfig{Upstream: b.url, UpstreamExtra: []string{"upgrade_timeout: 400ms", "response_timeout: 400ms"}})
		start := time.Now()
		code, _ := dialReadClose(t, h, "/api/v1/pam/ws?token="+tok, http.Header{"X-Request-Id": {"ws-slow"}})
		if code != 1014 {
			t.Errorf("websocket: got close %d, want 1014", code)
		}
		if el := time.Since(start); el > delay {
			t.Errorf("websocket: closed after %v, want about the 400ms upgrade_timeout", el)
		}
		hdr := hdr.Clone()
		hdr.Set("X-Request-Id", "http-slow")
		resp, body := h.do(t, "GET", "/api/v1/me", hdr)
		if resp.StatusCode != http.StatusGatewayTimeout {
			t.Errorf("http: got %d %s, want 504", resp.StatusCode, body)
		}
		for _, id := range []string{"ws-slow", "http-slow"} {
			ev := h.logs.waitEvent(t, "upstream_error", func(l logLine) bool { return l.str("request_id") == id })
			if ev.str("kind") != "timeout" {
				t.Errorf("upstream_error %s: kind %q, want timeout", id, ev.str("kind"))
			}
		}
		resp, body = h.do(t, "GET", "/api/v1/stream", hdr)
		if resp.StatusCode != 200 || string(body) != "late body" {
			t.Errorf("stream: got %d %q, want 200 and the whole late body (the timeout is for the head)", resp.StatusCode, body)
		}
	})
	t.Run("within the timeouts", func(t *testing.T) {
		h := startProxy(t, testConfig{Upstream: b.url, UpstreamExtra: []string{"upgrade_timeout: 10s", "response_timeout: 10s"}})
		c, _ := h.mustDial(t, "/api/v1/pam/ws?token="+tok, nil, nil)
		echoOnce(t, c, "awake")
		closeClient(t, c, websocket.CloseNormalClosure, "")
		resp, body := h.do(t, "GET", "/api/v1/me", hdr)
		if resp.StatusCode != 200 {
			t.Errorf("http: got %d %s, want 200 after the backend woke", resp.StatusCode, body)
		}
	})
}

// TestUntrustedProxyWarning: X-Forwarded-For from a private peer that
// trusted_proxies does not name logs one warning naming the peer and the
// fix; a trusted peer, or a request without the header, logs none.
func TestUntrustedProxyWarning(t *testing.T) {
	b := newBackend(t)
	xff := http.Header{"X-Forwarded-For": {"203.0.113.9, 172.70.1.1"}, "Authorization": {"Bearer " + validJWT(t, "u")}}
	t.Run("untrusted", func(t *testing.T) {
		h := startProxy(t, testConfig{Upstream: b.url})
		h.do(t, "GET", "/api/v1/me", http.Header{"Authorization": {"Bearer " + validJWT(t, "u")}})
		for range 3 {
			h.do(t, "GET", "/api/v1/me", xff)
		}
		var warns []logLine
		waitFor(2*time.Second, func() bool {
			warns = nil
			for _, l := range h.logs.lines(t) {
				if l.str("level") == "warn" && strings.Contains(l.str("message"), "X-Forwarded-For") {
					warns = append(warns, l)
				}
			}
			return len(warns) > 0
		})
		if len(warns) != 1 {
			t.Fatalf("got %d warnings, want exactly 1", len(warns))
		}
		msg := warns[0].str("message")
		for _, want := range []string{"127.0.0.1", "one client_ip and one rate-limit bucket", "trusted_proxies"} {
			if !strings.Contains(msg, want) {
				t.Errorf("warning %q: want it to say %q", msg, want)
			}
		}
		if ip := h.logs.events(t, "auth")[1].str("client_ip"); ip != "127.0.0.1" {
			t.Errorf("client_ip: got %q, want the peer 127.0.0.1 (untrusted)", ip)
		}
	})
	t.Run("trusted", func(t *testing.T) {
		h := startProxy(t, testConfig{Upstream: b.url, Trusted: []string{"private", "cloudflare"}})
		h.do(t, "GET", "/api/v1/me", xff)
		ev := h.logs.waitEvent(t, "auth", func(logLine) bool { return true })
		if ip := ev.str("client_ip"); ip != "203.0.113.9" {
			t.Errorf("client_ip: got %q, want 203.0.113.9 (Render's proxy and the Cloudflare hop skipped)", ip)
		}
		if got := b.last(t).Header.Get("X-Forwarded-For"); got != "203.0.113.9, 172.70.1.1, 127.0.0.1" {
			t.Errorf("upstream X-Forwarded-For: got %q, want the chain plus the peer", got)
		}
		for _, l := range h.logs.lines(t) {
			if l.str("level") == "warn" {
				t.Errorf("unexpected warning: %s", l.raw)
			}
		}
	})
}
