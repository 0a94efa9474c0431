package demo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/golang-jwt/jwt/v5"

	"authgate/policy"
	"authgate/proxy"
	"authgate/report"
)

// Options configure Run.
type Options struct {
	// Serve keeps the demo running after the sample clients, until ctx
	// ends, and prints URLs to try by hand.
	Serve bool
	// Dir receives the log file; "" means a new temporary directory.
	Dir string
}

const policyTemplate = `# the demo's embedded policy
listen: "127.0.0.1:0"
admin_listen: "%s"
upstream: {url: "%s"}
verify: {hs256_secret: "%s", algorithms: [HS256], audience: authenticated}
mint: {hs256_secret: "%s", ttl: 5m}
log: {format: json}
rate_limit: {per_minute: 0}
routes:
  - name: pam-ws
    match: {path: /api/v1/pam/ws, websocket: true}
    token: {from: [query:token, protocol]}
    close_on_expiry: true
    policy:
      uuid:
        - {until: "%s", action: rewrite}
        - {action: reject}
  - name: api
    match: {prefix: /api/, websocket: false}
    token: {from: [header:authorization]}
    policy:
      uuid:
        - {until: "%s", action: rewrite}
        - {action: reject}
`

// Run starts the sample backend and authgate on loopback, drives the
// sample clients through it, prints each outcome and the report of the
// logs it wrote. It returns the process exit status.
func Run(ctx context.Context, out io.Writer, opt Options) int {
	if err := run(ctx, out, opt); err != nil {
		fmt.Fprintf(out, "demo: %v\n", err)
		return 1
	}
	return 0
}

func run(ctx context.Context, out io.Writer, opt Options) error {
	var secretBytes [32]byte
	rand.Read(secretBytes[:])
	secret := hex.EncodeToString(secretBytes[:])
	// The demo's clock: real time, moved on past the cut-over for the
	// second act, so one run shows both stages of the schedule.
	var shift atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(shift.Load())) }
	be := &backend{secret: []byte(secret), now: now}
	bln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	bsrv := &http.Server{Handler: be.handler(), ReadHeaderTimeout: 5 * time.Second}
	go bsrv.Serve(bln)
	defer bsrv.Close()

	dir := opt.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "authgate-demo-"); err != nil {
			return err
		}
	}
	logPath := filepath.Join(dir, "authgate.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()

	cutover := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	admin := ""
	if opt.Serve {
		admin = "127.0.0.1:0"
	}
	yaml := fmt.Sprintf(policyTemplate, admin, "http://"+bln.Addr().String(), secret, secret, cutover.Format(time.RFC3339), cutover.Format(time.RFC3339))
	load := func(string) (*policy.Snapshot, error) {
		return policy.Parse("demo-policy.yaml", []byte(yaml), policy.Options{})
	}

	type addrs struct{ public, admin net.Addr }
	ready := make(chan addrs, 1)
	pctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- proxy.Run(pctx, proxy.RunOptions{
			ConfigPath: "demo-policy.yaml", Load: load, Logs: logFile, Now: now,
			Ready: func(p, a net.Addr) { ready <- addrs{p, a} },
		})
	}()
	var a addrs
	select {
	case a = <-ready:
	case err := <-done:
		stop()
		return fmt.Errorf("proxy did not start: %w", err)
	}
	base := a.public.String()
	fmt.Fprintf(out, "authgate demo\n\n")
	fmt.Fprintf(out, "  sample backend  http://%s  (accepts only JWTs: a UUID gets close 4001)\n", bln.Addr())
	fmt.Fprintf(out, "  authgate        http://%s  (policy: legacy UUIDs rewritten until %s, rejected after)\n", base, cutover.Format(time.RFC3339))
	fmt.Fprintf(out, "  decision log    %s\n\n", logPath)

	user := "21a2151a-cd37-41d5-a1c7-124bb05e7a6a"
	valid := sign(secret, "7d0e3a52-7f39-4c64-9d3c-2b6f0c1de5a1", time.Now().Add(24*time.Hour))
	expired := sign(secret, "7d0e3a52-7f39-4c64-9d3c-2b6f0c1de5a1", time.Now().Add(-time.Hour))
	wsURL := "ws://" + base + "/api/v1/pam/ws"
	meURL := "http://" + base + "/api/v1/me"

	fmt.Fprintf(out, "Now (stage 0: uuid -> rewrite)\n")
	cases := []struct{ what, how, token string }{
		{"valid JWT", "ws", valid},
		{"expired JWT", "ws", expired},
		{"legacy UUID", "ws", user},
		{"garbage", "ws", "not-a-token"},
		{"missing token", "ws", ""},
		{"legacy UUID", "http", user},
		{"valid JWT", "http", valid},
	}
	for _, c := range cases {
		printOutcome(ctx, out, c.how, c.what, wsURL, meURL, c.token)
	}
	shift.Store(int64(2 * time.Hour))
	fmt.Fprintf(out, "\nTwo hours later, past the cut-over (stage 1: uuid -> reject)\n")
	printOutcome(ctx, out, "ws", "legacy UUID", wsURL, meURL, user)
	printOutcome(ctx, out, "http", "legacy UUID", wsURL, meURL, user)
	printOutcome(ctx, out, "ws", "valid JWT", wsURL, meURL, valid)

	if opt.Serve {
		fmt.Fprintf(out, "\nServing until Ctrl-C (the clock stays past the cut-over; restart for stage 0). Try:\n")
		fmt.Fprintf(out, "  browser    http://%s/   (client/authgate.js: pick a token, watch what the client does with each close code)\n", base)
		fmt.Fprintf(out, "  websocket  %s?token=%s\n", wsURL, user)
		fmt.Fprintf(out, "  websocket  %s?token=%s\n", wsURL, valid)
		fmt.Fprintf(out, "  http       curl -i -H 'Authorization: Bearer %s' %s\n", valid, meURL)
		if a.admin != nil {
			fmt.Fprintf(out, "  admin      http://%s/policy\n", a.admin)
		}
		fmt.Fprintf(out, "  report     go run ./cmd/authgate report %s\n", logPath)
		<-ctx.Done()
	}
	stop()
	if err := <-done; err != nil {
		return err
	}
	logFile.Sync()
	fmt.Fprintf(out, "\nThe report of the decisions just logged (authgate report --quiet-for 1h %s):\n\n", logPath)
	// The verdict is not_safe (legacy use a moment ago); the demo itself
	// succeeded, so its status does not become the demo's.
	report.Command([]string{"--quiet-for", "1h", logPath}, nil, out, out)
	return nil
}

func sign(secret, sub string, exp time.Time) string {
	return signAt(secret, sub, time.Now(), exp)
}

func signAt(secret, sub string, iat, exp time.Time) string {
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": sub, "aud": "authenticated", "role": "authenticated",
		"iat": iat.Unix(), "exp": exp.Unix(),
	})
	s, _ := t.SignedString([]byte(secret))
	return s
}

func label(token string) string {
	if len(token) > 16 {
		return token[:10] + "…"
	}
	return token
}

func printOutcome(ctx context.Context, out io.Writer, how, what, wsURL, meURL, token string) {
	var res string
	if how == "ws" {
		res = tryWebSocket(ctx, wsURL, token)
		how = "WebSocket"
	} else {
		res = tryHTTP(ctx, meURL, token)
		how = "HTTP"
	}
	shown := label(token)
	if shown == "" {
		shown = "(none)"
	}
	fmt.Fprintf(out, "  %-9s  %-13s %-14s -> %s\n", how, what, shown, res)
}

// tryWebSocket connects through authgate and reports what the client saw:
// the backend's greeting and echo, or the close code and reason.
func tryWebSocket(ctx context.Context, url, token string) string {
	if token != "" {
		url += "?token=" + token
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	d := ws.Dialer{Header: ws.HandshakeHeaderHTTP(http.Header{"User-Agent": {userAgent(token)}, "Origin": {"https://app.example.com"}})}
	conn, br, _, err := d.Dial(dctx, url)
	if err != nil {
		return "dial failed: " + err.Error()
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	rw := struct {
		io.Reader
		io.Writer
	}{conn, conn}
	if br != nil {
		rw.Reader = io.MultiReader(br, conn)
		defer ws.PutReader(br)
	}
	msg, _, err := wsutil.ReadServerData(rw)
	if err != nil {
		return closeText(err)
	}
	if err := wsutil.WriteClientText(rw, []byte("ping")); err != nil {
		return "backend said " + string(msg) + ", then write failed"
	}
	echo, _, err := wsutil.ReadServerData(rw)
	if err != nil {
		return "backend said " + string(msg) + ", then " + closeText(err)
	}
	ws.WriteFrame(rw, ws.MaskFrameInPlace(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye"))))
	return fmt.Sprintf("backend said %s, echoed %q", msg, echo)
}

// userAgent names the client build, as a real app's would: the report's
// "top legacy user agents" is how an operator finds who still sends UUIDs.
func userAgent(token string) string {
	if len(token) == 36 && strings.Count(token, "-") == 4 {
		return "pam-app/1.4.2 (legacy build)"
	}
	return "pam-app/2.0.0"
}

func closeText(err error) string {
	var ce wsutil.ClosedError
	if errors.As(err, &ce) {
		return fmt.Sprintf("closed %d %q", ce.Code, ce.Reason)
	}
	return "error: " + err.Error()
}

func tryHTTP(ctx context.Context, url, token string) string {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("User-Agent", userAgent(token))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "request failed: " + err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
}
