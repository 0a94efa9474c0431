//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// The Render path on a simulated network (issue 13, item 5). On Render a
// request reaches the service from Render's proxy on a private address,
// with X-Forwarded-For: <browser>, <Cloudflare edge>. TestRenderNetwork
// builds that with two network namespaces of its own joined by a veth
// pair: "svc" holds the backend (on its own loopback) and authgate with
// the shipped config.yaml; "edge" plays Render's proxy, connecting from a
// private address and writing the X-Forwarded-For a browser behind
// Cloudflare gets. Traffic goes only to loopback and to the addresses of
// these two namespaces; the client and Cloudflare addresses (documentation
// ranges and Cloudflare's own) are header values, never dialled. The root
// namespace gets no address.

const (
	svcAddr   = "10.213.7.1" // authgate's side of the veth pair
	edgeAddr  = "10.213.7.2" // "Render's proxy": the peer authgate sees
	vethMask  = "/30"
	svcPort   = 8080 // PORT
	upPort    = 8000 // the backend, on svc's loopback
	cfEdge4   = "173.245.48.5"
	cfEdge4b  = "104.16.0.7"
	cfEdge6   = "2606:4700:10::6814:107"
	ipCommand = "/usr/sbin/ip"

	// renderHelperEnv carries a plan to the test binary re-executed inside
	// a namespace (see init).
	renderHelperEnv = "AUTHGATE_RENDER_HELPER"
)

// init turns the test binary into the namespace helper when
// renderHelperEnv is set: it runs the plan, prints the results as JSON and
// exits, before TestMain (which would build authgate again).
func init() {
	if plan := os.Getenv(renderHelperEnv); plan != "" {
		os.Exit(renderHelperMain(plan))
	}
}

// edgeStep is one request of a helper's plan.
type edgeStep struct {
	ID     string            `json:"id"`   // X-Request-Id, so the auth event can be found
	Kind   string            `json:"kind"` // ws | http | probe (GET until 200)
	URL    string            `json:"url"`
	Header map[string]string `json:"header,omitempty"`
}

// edgeResult is what the client saw.
type edgeResult struct {
	ID        string         `json:"id"`
	Status    int            `json:"status,omitempty"`     // http, probe; 101 for an opened WebSocket
	CloseCode int            `json:"close_code,omitempty"` // ws closed before any message
	Reason    string         `json:"reason,omitempty"`
	Hello     *hello         `json:"hello,omitempty"` // the backend's hello on an accepted WebSocket
	Echoed    bool           `json:"echoed,omitempty"`
	Body      map[string]any `json:"body,omitempty"`
	Err       string         `json:"err,omitempty"`
	Millis    int64          `json:"ms"` // since the plan started
}

func renderHelperMain(plan string) int {
	var steps []edgeStep
	if err := json.Unmarshal([]byte(plan), &steps); err != nil {
		fmt.Fprintln(os.Stderr, "render helper:", err)
		return 2
	}
	if len(steps) > 500 {
		fmt.Fprintln(os.Stderr, "render helper: plan too long")
		return 2
	}
	start := time.Now()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var out []edgeResult
	for _, s := range steps {
		r := edgeResult{ID: s.ID}
		switch s.Kind {
		case "probe":
			renderProbe(client, s, &r)
		case "http":
			renderHTTP(client, s, &r)
		case "ws":
			renderWS(s, &r)
		default:
			r.Err = "unknown kind " + s.Kind
		}
		r.Millis = time.Since(start).Milliseconds()
		out = append(out, r)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "render helper:", err)
		return 2
	}
	return 0
}

func renderRequest(s edgeStep) (*http.Request, error) {
	req, err := http.NewRequest("GET", s.URL, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range s.Header {
		req.Header.Set(k, v)
	}
	if s.ID != "" {
		req.Header.Set("X-Request-Id", s.ID)
	}
	return req, nil
}

// renderProbe polls until 200, at most 30 s (300 tries).
func renderProbe(client *http.Client, s edgeStep, r *edgeResult) {
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; i < 300 && time.Now().Before(deadline); i++ {
		req, err := renderRequest(s)
		if err != nil {
			r.Err = err.Error()
			return
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			r.Status, r.Err = resp.StatusCode, ""
			if resp.StatusCode == 200 {
				return
			}
		} else {
			r.Err = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func renderHTTP(client *http.Client, s edgeStep, r *edgeResult) {
	req, err := renderRequest(s)
	if err != nil {
		r.Err = err.Error()
		return
	}
	resp, err := client.Do(req)
	if err != nil {
		r.Err = err.Error()
		return
	}
	defer resp.Body.Close()
	r.Status = resp.StatusCode
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err := json.Unmarshal(b, &r.Body); err != nil {
		r.Err = fmt.Sprintf("body not JSON: %q", b)
	}
}

// renderWS opens a WebSocket: a close before any message is reported
// with its code; an accepted one is the backend's hello, an echo round
// trip, and a normal close.
func renderWS(s edgeStep, r *edgeResult) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	h := http.Header{}
	for k, v := range s.Header {
		h.Set(k, v)
	}
	h.Set("X-Request-Id", s.ID)
	c, err := dialWS(ctx, s.URL, h)
	if err != nil {
		var re *refusedError
		if errors.As(err, &re) {
			r.Status = re.status
		}
		r.Err = err.Error()
		return
	}
	defer c.Close()
	r.Status = 101
	msg, err := c.next(10 * time.Second)
	var ce *closeErr
	if errors.As(err, &ce) {
		r.CloseCode, r.Reason = ce.Code, ce.Reason
		return
	}
	if err != nil {
		r.Err = err.Error()
		return
	}
	var hl struct {
		Hello *hello `json:"hello"`
	}
	if err := json.Unmarshal([]byte(msg), &hl); err != nil || hl.Hello == nil {
		r.Err = fmt.Sprintf("not a hello: %q", msg)
		return
	}
	r.Hello = hl.Hello
	if err := c.sendText("echo " + s.ID); err == nil {
		if got, err := c.next(10 * time.Second); err == nil && got == "echo "+s.ID {
			r.Echoed = true
		}
	}
	c.closeWith(1000, "", 5*time.Second)
}

// ---- namespaces ----

var renderNetnsSeq atomic.Int32

var renderNetnsName = regexp.MustCompile(`^ag-(svc|edge)-(\d+)(-\d+)?$`)

// runIP runs ip with args, bounded to 10 s.
func runIP(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, ipCommand, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// cleanStaleNetns deletes the ag-svc-PID / ag-edge-PID namespaces of test
// processes that are gone (a run killed before its cleanup), ending what
// still runs inside them first: those processes were started by that run.
func cleanStaleNetns(t *testing.T) {
	out, err := runIP("netns", "list")
	if err != nil {
		t.Fatalf("network namespaces are needed (run as root, with iproute2): %v", err)
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		m := renderNetnsName.FindStringSubmatch(f[0])
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[2])
		if err := syscall.Kill(pid, 0); err == nil || errors.Is(err, syscall.EPERM) {
			continue // its test still runs
		}
		if pids, err := runIP("netns", "pids", f[0]); err == nil {
			for _, p := range strings.Fields(pids) {
				if n, err := strconv.Atoi(p); err == nil && n > 1 {
					syscall.Kill(n, syscall.SIGKILL)
				}
			}
		}
		if _, err := runIP("netns", "del", f[0]); err != nil {
			t.Logf("stale namespace %s: %v", f[0], err)
		} else {
			t.Logf("deleted the stale namespace %s (pid %d is gone)", f[0], pid)
		}
	}
}

// renderNet is the pair of namespaces.
type renderNet struct{ svc, edge string }

// newRenderNet makes the two namespaces and the veth pair, deleted at the
// end of the test (after the processes in them, registered later, end).
func newRenderNet(t *testing.T) renderNet {
	t.Helper()
	if _, err := os.Stat(ipCommand); err != nil {
		t.Fatalf("%s is needed (apt-get install iproute2): %v", ipCommand, err)
	}
	cleanStaleNetns(t)
	suffix := fmt.Sprintf("%d-%d", os.Getpid(), renderNetnsSeq.Add(1))
	n := renderNet{svc: "ag-svc-" + suffix, edge: "ag-edge-" + suffix}
	for _, ns := range []string{n.svc, n.edge} {
		if _, err := runIP("netns", "add", ns); err != nil {
			t.Fatalf("network namespaces are needed (CI runs as root): %v", err)
		}
		t.Cleanup(func() {
			if _, err := runIP("netns", "del", ns); err != nil {
				t.Errorf("deleting namespace %s: %v", ns, err)
			}
		})
	}
	// The veth pair is made inside svc with its peer in edge: neither end
	// ever sits in the root namespace.
	for _, args := range [][]string{
		{"-n", n.svc, "link", "add", "ag-svc", "type", "veth", "peer", "name", "ag-edge", "netns", n.edge},
		{"-n", n.svc, "addr", "add", svcAddr + vethMask, "dev", "ag-svc"},
		{"-n", n.edge, "addr", "add", edgeAddr + vethMask, "dev", "ag-edge"},
		{"-n", n.svc, "link", "set", "lo", "up"},
		{"-n", n.svc, "link", "set", "ag-svc", "up"},
		{"-n", n.edge, "link", "set", "lo", "up"},
		{"-n", n.edge, "link", "set", "ag-edge", "up"},
	} {
		if _, err := runIP(args...); err != nil {
			t.Fatalf("setting up the network: %v", err)
		}
	}
	if out, err := runIP("-br", "addr"); err != nil {
		t.Fatal(err)
	} else if strings.Contains(out, "10.213.7.") {
		t.Fatalf("the root namespace has an address of this test:\n%s", out)
	}
	return n
}

// exec returns a command running argv inside namespace ns.
func (n renderNet) exec(ctx context.Context, ns string, argv ...string) *exec.Cmd {
	return exec.CommandContext(ctx, ipCommand, append([]string{"netns", "exec", ns}, argv...)...)
}

// run re-executes the test binary in ns with the plan and returns its
// results, one per step.
func (n renderNet) run(t *testing.T, ns string, steps []edgeStep) map[string]edgeResult {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	plan, _ := json.Marshal(steps)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := n.exec(ctx, ns, self)
	cmd.Env = []string{renderHelperEnv + "=" + string(plan)}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper in %s: %v\n%s", ns, err, stderr.String())
	}
	var res []edgeResult
	if err := json.Unmarshal(out, &res); err != nil || len(res) != len(steps) {
		t.Fatalf("helper in %s: %d results for %d steps (%v): %q", ns, len(res), len(steps), err, out)
	}
	m := map[string]edgeResult{}
	for _, r := range res {
		m[r.ID] = r
	}
	return m
}

// rateLimit is config.yaml's rate_limit.
type rateLimit struct {
	PerMinute int `yaml:"per_minute"`
	Burst     int `yaml:"burst"`
}

func renderRateLimit(t *testing.T, config []byte) rateLimit {
	t.Helper()
	var c struct {
		RateLimit rateLimit `yaml:"rate_limit"`
	}
	if err := yaml.Unmarshal(config, &c); err != nil {
		t.Fatal(err)
	}
	if c.RateLimit.PerMinute <= 0 || c.RateLimit.Burst <= 0 {
		t.Fatalf("config.yaml: rate_limit %+v: this test needs it on", c.RateLimit)
	}
	return c.RateLimit
}

// withTrustedProxies returns config with trusted_proxies replaced.
func withTrustedProxies(t *testing.T, config []byte, list []string) []byte {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal(config, &doc); err != nil {
		t.Fatal(err)
	}
	m := doc.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "trusted_proxies" {
			seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle}
			for _, s := range list {
				seq.Content = append(seq.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s})
			}
			m.Content[i+1] = seq
			out, err := yaml.Marshal(&doc)
			if err != nil {
				t.Fatal(err)
			}
			return out
		}
	}
	t.Fatal("config.yaml has no trusted_proxies")
	return nil
}

// startNetnsGate runs authgate in svc with the config at cfgPath and the
// environment Render gives it, and waits until the edge sees its health
// check answer.
func startNetnsGate(t *testing.T, n renderNet, cfgPath, logPath string) *renderProc {
	t.Helper()
	cmd := n.exec(context.Background(), n.svc, authgateBin, "serve")
	cmd.Env = []string{
		"AUTHGATE_CONFIG=" + cfgPath,
		"PORT=" + strconv.Itoa(svcPort),
		fmt.Sprintf("UPSTREAM_URL=http://127.0.0.1:%d", upPort),
		"SUPABASE_JWT_SECRET=" + secret,
	}
	p := startRenderProc(t, "authgate", cmd, logPath, 30*time.Second)
	health := n.run(t, n.edge, []edgeStep{{ID: "health", Kind: "probe", URL: fmt.Sprintf("http://%s:%d/healthz", svcAddr, svcPort)}})["health"]
	if health.Status != 200 {
		t.Fatalf("authgate's health check from the edge: %+v\nstderr:\n%s\nlog:\n%s", health, p.stderr.String(), p.logText())
	}
	return p
}

// renderClient is one browser behind Cloudflare, as Render's proxy
// forwards it.
type renderClient struct{ ip, edge string }

func (c renderClient) header(token string) map[string]string {
	h := map[string]string{
		"X-Forwarded-For":   c.ip + ", " + c.edge,
		"X-Forwarded-Proto": "https",
		"Origin":            "https://app.example.com",
		"User-Agent":        "render-netns/" + c.ip,
	}
	if token != "" {
		h["Authorization"] = "Bearer " + token
	}
	return h
}

// TestRenderNetwork: the shipped config.yaml behind a simulated Render
// (see the top of this file). Each browser is its own client_ip in the
// logs, taken from X-Forwarded-For past the private peer and the
// Cloudflare edge; a client looping with a bad token is limited after its
// burst (4029 on the WebSocket, 429 on HTTP) while other clients, a legacy
// UUID (rewritten) and JWTs, go through. With trusted_proxies emptied the
// same traffic shows what the shipped value prevents: every client is
// the proxy, one warn says so once, and the looping client locks the
// legacy one out.
func TestRenderNetwork(t *testing.T) {
	root := renderRepoRoot(t)
	config, err := os.ReadFile(filepath.Join(root, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	rl := renderRateLimit(t, config)
	n := newRenderNet(t)
	dir := t.TempDir()

	// The backend on svc's loopback.
	be := n.exec(context.Background(), n.svc, pythonBin, "-m", "uvicorn", "app:app", "--app-dir", backendDir,
		"--host", "127.0.0.1", "--port", strconv.Itoa(upPort), "--ws", "websockets",
		"--log-level", "warning", "--no-access-log")
	be.Env = []string{"JWT_SECRET=" + secret, "PYTHONDONTWRITEBYTECODE=1", "PATH=/usr/bin:/bin"}
	bp := startRenderProc(t, "backend", be, filepath.Join(dir, "backend.log"), 10*time.Second)
	up := n.run(t, n.svc, []edgeStep{{ID: "backend", Kind: "probe", URL: fmt.Sprintf("http://127.0.0.1:%d/healthz", upPort)}})["backend"]
	if up.Status != 200 {
		t.Fatalf("the backend in %s did not come up: %+v\n%s", n.svc, up, bp.stderr.String())
	}

	jwts := mint(t, time.Hour, "render-jwt-user", "render-spoof-user")
	wsURL := fmt.Sprintf("ws://%s:%d/api/v1/pam/ws", svcAddr, svcPort)
	meURL := fmt.Sprintf("http://%s:%d/api/v1/me", svcAddr, svcPort)
	var (
		looperWS   = renderClient{"203.0.113.7", cfEdge4}
		looperHTTP = renderClient{"198.51.100.23", cfEdge4b}
		legacy     = renderClient{"198.51.100.7", cfEdge6}
		jwtClient  = renderClient{"203.0.113.99", cfEdge4}
	)
	loops := rl.Burst + 5

	// plan is the traffic of both phases; want maps each request id to the
	// client_ip its auth event must carry under the shipped config.
	var plan []edgeStep
	want := map[string]string{}
	add := func(id, kind, url string, c renderClient, token string, header map[string]string) {
		if header == nil {
			header = c.header(token)
		}
		plan = append(plan, edgeStep{ID: id, Kind: kind, URL: url, Header: header})
		want[id] = c.ip
	}
	add("jwt-first", "ws", wsURL+"?token="+jwts[0], jwtClient, "", nil)
	for i := range loops {
		add(fmt.Sprintf("loop-ws-%02d", i), "ws", wsURL+"?token=not-a-jwt", looperWS, "", nil)
	}
	// Right after the loop, before its bucket refills (one every
	// 60/per_minute s): the looper itself, then another client.
	add("looper-uuid", "ws", wsURL+"?token="+legacyUser, looperWS, "", nil)
	add("legacy-uuid", "ws", wsURL+"?token="+legacyUser, legacy, "", nil)
	for i := range loops {
		add(fmt.Sprintf("loop-http-%02d", i), "http", meURL, looperHTTP, "not-a-jwt", nil)
	}
	add("jwt-ws", "ws", wsURL+"?token="+jwts[0], jwtClient, "", nil)
	add("jwt-http", "http", meURL, jwtClient, jwts[0], nil)
	// A client that writes its own X-Forwarded-For: the part left of the
	// first untrusted hop is not believed.
	spoof := jwtClient.header("")
	spoof["X-Forwarded-For"] = "192.0.2.1, 203.0.113.50, " + cfEdge4
	add("spoofed-prefix", "ws", wsURL+"?token="+jwts[1], renderClient{ip: "203.0.113.50"}, "", spoof)

	t.Run("shipped config", func(t *testing.T) {
		logPath := filepath.Join(dir, "authgate-shipped.log")
		g := startNetnsGate(t, n, filepath.Join(root, "config.yaml"), logPath)
		res := n.run(t, n.edge, plan)
		stopNetnsGate(t, g)
		byID := authByRequestID(t, logPath)

		// One line per client that was logged wrong, in plan order.
		var order []string
		wrong := map[string][]string{} // client ip -> "id: got"
		for _, s := range plan {
			e, ip := byID[s.ID], want[s.ID]
			switch {
			case e == nil:
				t.Errorf("%s: no auth event (the client saw %+v)", s.ID, res[s.ID])
			case e["client_ip"] != ip:
				if wrong[ip] == nil {
					order = append(order, ip)
				}
				wrong[ip] = append(wrong[ip], fmt.Sprintf("%s: %v", s.ID, e["client_ip"]))
			}
		}
		for _, ip := range order {
			var xff string
			for _, s := range plan {
				if want[s.ID] == ip {
					xff = s.Header["X-Forwarded-For"]
					break
				}
			}
			t.Errorf("client %s (X-Forwarded-For %q from %s): %d requests logged with another client_ip, want %s: %s",
				ip, xff, edgeAddr, len(wrong[ip]), ip, strings.Join(wrong[ip], ", "))
		}
		// A looper told 4029 three times within the minute is answered
		// 429 before the upgrade from then on (issue 23's cheaper answer
		// to repeat attempts).
		checkLooper(t, "WebSocket", res, "loop-ws-", loops, rl, func(r edgeResult) int {
			if r.CloseCode == 0 && r.Status != 101 {
				return r.Status
			}
			return r.CloseCode
		}, 4001, 4029, 429)
		checkLooper(t, "HTTP", res, "loop-http-", loops, rl, func(r edgeResult) int { return r.Status }, 401, 429)
		if r := res["looper-uuid"]; r.CloseCode != 4029 {
			t.Errorf("the looping client, now with a UUID: %+v; want 4029 (its bucket is empty)", r)
		}
		lower := strings.ToLower(legacyUser)
		if r := res["legacy-uuid"]; r.Hello == nil || r.Hello.Sub != lower || !r.Hello.Legacy || r.Hello.XAuthgateLegacy != "1" || !r.Echoed {
			t.Errorf("another client with a legacy UUID: %+v (hello %+v); want it rewritten to a JWT for sub %s", r, r.Hello, lower)
		}
		for _, id := range []string{"jwt-first", "jwt-ws"} {
			if r := res[id]; r.Hello == nil || r.Hello.Sub != "render-jwt-user" || r.Hello.TokenSHA256 != sha256hex(jwts[0]) || !r.Echoed {
				t.Errorf("%s: %+v (hello %+v); want the JWT passed untouched", id, r, r.Hello)
			}
		}
		if r := res["jwt-http"]; r.Status != 200 || r.Body["sub"] != "render-jwt-user" {
			t.Errorf("jwt-http: %+v; want 200 for render-jwt-user", r)
		}
		if r := res["spoofed-prefix"]; r.Hello == nil || r.Hello.Sub != "render-spoof-user" {
			t.Errorf("spoofed-prefix: %+v; want the JWT passed", r)
		}
		for _, e := range renderLogEvents(t, logPath, "") {
			if e["level"] == "warn" && e["event"] != "auth" {
				t.Errorf("unexpected warning: %v", e)
			}
		}
	})

	t.Run("trusted_proxies empty", func(t *testing.T) {
		cfgPath := filepath.Join(dir, "untrusted.yaml")
		if err := os.WriteFile(cfgPath, withTrustedProxies(t, config, nil), 0o644); err != nil {
			t.Fatal(err)
		}
		logPath := filepath.Join(dir, "authgate-untrusted.log")
		g := startNetnsGate(t, n, cfgPath, logPath)
		res := n.run(t, n.edge, plan)
		stopNetnsGate(t, g)
		byID := authByRequestID(t, logPath)
		for id := range want {
			if e := byID[id]; e == nil || e["client_ip"] != edgeAddr {
				t.Errorf("%s: auth event %v; want client_ip %s (the peer: nothing is trusted)", id, e, edgeAddr)
			}
		}
		// One bucket for everyone: after the loopers, the legacy client is
		// refused too.
		if r := res["legacy-uuid"]; r.CloseCode != 4029 {
			t.Errorf("legacy-uuid: %+v; want 4029 (it shares the loopers' bucket)", r)
		}
		// Two warnings: the config's, at load, and the first request's from
		// the private peer, once however many follow.
		var loadWarns, peerWarns []map[string]any
		for _, e := range renderLogEvents(t, logPath, "") {
			switch {
			case e["level"] != "warn" || e["event"] == "auth":
			case e["peer"] != nil:
				peerWarns = append(peerWarns, e)
			default:
				loadWarns = append(loadWarns, e)
			}
		}
		if len(peerWarns) != 1 || peerWarns[0]["peer"] != edgeAddr || !strings.Contains(fmt.Sprint(peerWarns[0]["message"]), "trusted_proxies") {
			t.Errorf("peer warnings: %v; want exactly one, naming the peer %s and trusted_proxies", peerWarns, edgeAddr)
		} else {
			t.Logf("the peer warning: %s", peerWarns[0]["message"])
		}
		if len(loadWarns) != 1 || !strings.Contains(fmt.Sprint(loadWarns[0]["warning"]), "trusted_proxies") {
			t.Errorf("config warnings: %v; want one, about trusted_proxies", loadWarns)
		}
	})
}

// stopNetnsGate sends SIGTERM and wants exit 0 within 30 s.
func stopNetnsGate(t *testing.T, g *renderProc) {
	t.Helper()
	g.cmd.Process.Signal(syscall.SIGTERM)
	err, ok := g.wait(30 * time.Second)
	if !ok {
		t.Fatalf("authgate did not exit within 30 s of SIGTERM")
	}
	if err != nil {
		t.Errorf("authgate exited with %v\nstderr:\n%s", err, g.stderr.String())
	}
}

// authByRequestID indexes the auth events of a log by request_id; a
// request id seen twice is an error.
func authByRequestID(t *testing.T, logPath string) map[string]map[string]any {
	t.Helper()
	m := map[string]map[string]any{}
	for _, e := range renderLogEvents(t, logPath, "auth") {
		id, _ := e["request_id"].(string)
		if m[id] != nil {
			t.Errorf("two auth events for request %s", id)
		}
		m[id] = e
	}
	return m
}

// checkLooper checks a client's loop of rejected attempts: the first
// burst get the rejection (reject), later ones the limit's (limited), and
// no more than the bucket refilled meanwhile got past it.
// checkLooper checks a client looping a bad token: rejected (reject)
// within the burst, then limited; with repeat set, limited answers past
// the third are repeat (the status before the upgrade).
func checkLooper(t *testing.T, what string, res map[string]edgeResult, prefix string, loops int, rl rateLimit, code func(edgeResult) int, reject, limited int, repeat ...int) {
	t.Helper()
	var codes []int
	var first, last int64
	for i := range loops {
		r := res[fmt.Sprintf("%s%02d", prefix, i)]
		codes = append(codes, code(r))
		if i == 0 {
			first = r.Millis
		}
		last = r.Millis
	}
	refills := int(math.Ceil(float64(last-first) / 1000 * float64(rl.PerMinute) / 60))
	nRej, nLim, nFrames := 0, 0, 0
	for i, c := range codes {
		switch {
		case c == reject:
			nRej++
		case c == limited:
			nLim++
			nFrames++
			if len(repeat) > 0 && nFrames > 3 {
				t.Errorf("%s loop attempt %d: %d, want %d (the fourth refusal in a minute is answered before the upgrade)", what, i, c, repeat[0])
			}
		case len(repeat) > 0 && c == repeat[0]:
			nLim++
			if nFrames < 3 {
				t.Errorf("%s loop attempt %d: %d after %d close frames %d, want three of those first", what, i, c, nFrames, limited)
			}
		default:
			t.Errorf("%s loop attempt %d: %d, want %d or %d", what, i, c, reject, limited)
		}
		if i < rl.Burst && c != reject {
			t.Errorf("%s loop attempt %d: %d, want %d (within the burst of %d)", what, i, c, reject, rl.Burst)
		}
	}
	if nLim == 0 || nRej > rl.Burst+refills {
		t.Errorf("%s loop: %v: %d rejected, %d limited over %d ms; want at most %d+%d rejected before %d", what, codes, nRej, nLim, last-first, rl.Burst, refills, limited)
	}
	t.Logf("%s loop over %d ms: %v", what, last-first, codes)
}
