//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// browser is one headless Chromium with one tab, and what the tab wrote to
// its console, threw, logged, or requested.
type browser struct {
	ctx      context.Context
	mu       sync.Mutex
	console  []string // console API calls, exceptions, browser log entries
	requests []string // URLs the tab requested
	output   *syncBuffer
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	b := &browser{output: &syncBuffer{}}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumBin),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("window-size", "1000,1400"),
		chromedp.CombinedOutput(b.output),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	b.ctx = ctx
	err := chromedp.Listen(ctx, func(ev any) {
		b.mu.Lock()
		defer b.mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			var args []string
			for _, a := range ev.Args {
				args = append(args, string(a.Value)+a.Description)
			}
			b.console = append(b.console, fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " ")))
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			b.console = append(b.console, "exception: "+msg)
		case *log.EventEntryAdded:
			b.console = append(b.console, fmt.Sprintf("log %s %s: %s (%s)", ev.Entry.Level, ev.Entry.Source, ev.Entry.Text, ev.Entry.URL))
		case *network.EventRequestWillBeSent:
			b.requests = append(b.requests, ev.Request.URL)
		}
	})
	if err != nil {
		t.Fatalf("starting chromium (%s): %v\n%s", chromiumBin, err, b.output.String())
	}
	return b
}

// drain returns and forgets what the tab reported so far.
func (b *browser) drain() (console, requests []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	console, requests = b.console, b.requests
	b.console, b.requests = nil, nil
	return
}

// wsPage opens WebSockets from the page's own origin (a loopback server
// that is neither authgate nor the backend). wsRun resolves when the
// socket closes: it sends each step after the previous echo (after the
// backend's hello), compares each echo with what it sent, then closes with
// 1000. Steps: "big" (about 1 MiB of compressible text), "binary" (256 KiB
// of pseudo-random bytes), "close:CODE:REASON" (the backend closes), or
// any other text.
const wsPage = `<!doctype html>
<meta charset="utf-8">
<title>authgate e2e</title>
<style>body{font:13px monospace;margin:1em}pre{white-space:pre-wrap;word-break:break-all}</style>
<h1>authgate e2e: WebSockets from a browser</h1>
<pre id="out"></pre>
<script>
function payload(step) {
  if (step === 'big') {
    const parts = [];
    for (let i = 0; i < 28000; i++) parts.push('line ' + i + ' of a compressible message; ');
    return parts.join('');
  }
  if (step === 'binary') {
    const a = new Uint8Array(262144);
    let x = 12345;
    for (let i = 0; i < a.length; i++) { x = (Math.imul(x, 1103515245) + 12345) >>> 0; a[i] = x >>> 24; }
    return a.buffer;
  }
  return step;
}
function same(a, b) {
  if (typeof a === 'string' || typeof b === 'string') return a === b;
  const x = new Uint8Array(a), y = new Uint8Array(b);
  if (x.length !== y.length) return false;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}
function size(d) { return typeof d === 'string' ? d.length : d.byteLength; }
window.wsRun = (url, protocols, steps) => new Promise(resolve => {
  const r = {url: url.replace(/token=[^&]*/, 'token=…'), opened: false, protocol: '', extensions: '',
             hello: null, echoes: [], code: 0, reason: '', wasClean: false, errors: 0, openMs: -1, closeMs: -1};
  const t0 = performance.now();
  const done = () => {
    document.getElementById('out').textContent += JSON.stringify(r) + '\n';
    resolve(r);
  };
  let ws;
  try { ws = protocols ? new WebSocket(url, protocols) : new WebSocket(url); }
  catch (e) { r.exception = String(e); done(); return; }
  ws.binaryType = 'arraybuffer';
  const timer = setTimeout(() => { r.timeout = true; ws.close(); }, 20000);
  let i = 0, sent = null;
  const sendNext = () => {
    if (i >= steps.length) { ws.close(1000, 'done'); return; }
    const step = steps[i++];
    sent = {step: step, data: payload(step)};
    ws.send(sent.data);
  };
  ws.onopen = () => { r.openMs = performance.now() - t0; r.opened = true; r.protocol = ws.protocol; r.extensions = ws.extensions; };
  ws.onerror = () => { r.errors++; };
  ws.onmessage = e => {
    if (r.hello === null) { r.hello = e.data; sendNext(); return; }
    r.echoes.push({step: sent.step, sent: size(sent.data), got: size(e.data), equal: same(sent.data, e.data)});
    sendNext();
  };
  ws.onclose = e => { r.closeMs = performance.now() - t0; clearTimeout(timer); r.code = e.code; r.reason = e.reason; r.wasClean = e.wasClean; done(); };
});
</script>
`

type wsResult struct {
	URL        string  `json:"url"`
	Opened     bool    `json:"opened"`
	Protocol   string  `json:"protocol"`
	Extensions string  `json:"extensions"`
	Hello      *string `json:"hello"` // null until the backend's first message
	Echoes     []struct {
		Step  string `json:"step"`
		Sent  int    `json:"sent"`
		Got   int    `json:"got"`
		Equal bool   `json:"equal"`
	} `json:"echoes"`
	Code      int     `json:"code"`
	Reason    string  `json:"reason"`
	WasClean  bool    `json:"wasClean"`
	Errors    int     `json:"errors"`
	Timeout   bool    `json:"timeout"`
	Exception string  `json:"exception"`
	OpenMs    float64 `json:"openMs"`
	CloseMs   float64 `json:"closeMs"`
}

func (b *browser) wsRun(t *testing.T, url string, protocols []string, steps ...string) wsResult {
	t.Helper()
	if steps == nil {
		steps = []string{}
	}
	pj, _ := json.Marshal(protocols)
	sj, _ := json.Marshal(steps)
	uj, _ := json.Marshal(url)
	expr := fmt.Sprintf("wsRun(%s, %s, %s)", uj, pj, sj)
	raw, err := chromedp.Run(b.ctx, chromedp.Evaluate[json.RawMessage](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("wsRun: %v", err)
	}
	var r wsResult
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("wsRun result %s: %v", raw, err)
	}
	if r.Timeout || r.Exception != "" {
		t.Fatalf("wsRun: %s", raw)
	}
	return r
}

// wsCloseEvents waits until g has logged at least n ws_close events and
// returns them.
func wsCloseEvents(t *testing.T, g *gate, n int) []map[string]any {
	t.Helper()
	var evs []map[string]any
	err := waitFor(10*time.Second, func() error {
		evs = g.logEvents(t, "ws_close")
		if len(evs) < n {
			return fmt.Errorf("%d ws_close events, want %d", len(evs), n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// TestBrowser drives headless Chromium through authgate: the page's own
// WebSocket code sees authgate's close codes and reasons, talks to the
// FastAPI backend under rewrite, keeps permessage-deflate end to end, and
// authenticates with a `bearer` subprotocol. Then the HTML report of these
// very runs opens in Chromium without console errors and shows its chart.
func TestBrowser(t *testing.T) {
	be := startBackend(t)
	rewriteGate := startGate(t, gateParams{Upstream: be.URL(), UUID: rewriteStages})
	rejectGate := startGate(t, gateParams{Upstream: be.URL(), UUID: "reject"})
	pageSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(wsPage))
	}))
	defer pageSrv.Close()
	jwt := mint(t, time.Hour, "browser-user")[0]
	expired := mint(t, -time.Hour, "browser-expired")[0]
	lower := strings.ToLower(legacyUser)

	b := newBrowser(t)
	if err := chromedp.Do(b.ctx, chromedp.Navigate(pageSrv.URL)); err != nil {
		t.Fatalf("navigate: %v\n%s", err, b.output.String())
	}

	t.Run("reject: onclose sees 4003 and the reason", func(t *testing.T) {
		r := b.wsRun(t, rejectGate.ws("token="+legacyUser), nil)
		if !r.Opened || r.Hello != nil || r.Code != 4003 || r.Reason != reason4003 || !r.WasClean {
			t.Fatalf("%+v; want an opened socket closed cleanly with 4003 %q", r, reason4003)
		}
		t.Logf("opened after %.0fms, onclose after %.0fms", r.OpenMs, r.CloseMs)
		// Also when the UUID comes as a bearer subprotocol: the handshake
		// must still succeed for the code to be readable.
		r = b.wsRun(t, rejectGate.ws(""), []string{"bearer", legacyUser})
		if !r.Opened || r.Protocol != "bearer" || r.Code != 4003 || r.Reason != reason4003 {
			t.Fatalf("bearer UUID under reject: %+v", r)
		}
	})

	t.Run("expired jwt: 4002", func(t *testing.T) {
		r := b.wsRun(t, rewriteGate.ws("token="+expired), nil)
		if !r.Opened || r.Code != 4002 || r.Reason != reason4002 {
			t.Fatalf("%+v", r)
		}
	})

	t.Run("rewrite: messages with the FastAPI backend", func(t *testing.T) {
		r := b.wsRun(t, rewriteGate.ws("token="+legacyUser), nil, "hello from chromium", "\u00e9\U0001F600")
		if r.Hello == nil {
			t.Fatalf("no hello: %+v", r)
		}
		h := parseHello(t, *r.Hello)
		if h.Sub != lower || !h.Legacy {
			t.Fatalf("backend saw %+v", h)
		}
		if len(r.Echoes) != 2 || !r.Echoes[0].Equal || !r.Echoes[1].Equal || r.Code != 1000 || !r.WasClean {
			t.Fatalf("%+v", r)
		}
		// The backend closes with a code of its own: it reaches onclose.
		r = b.wsRun(t, rewriteGate.ws("token="+legacyUser), nil, "close:4400:backend done")
		if r.Code != 4400 || r.Reason != "backend done" {
			t.Fatalf("backend close: %+v", r)
		}
	})

	t.Run("permessage-deflate: large messages intact", func(t *testing.T) {
		n := len(rewriteGate.logEvents(t, "ws_close"))
		r := b.wsRun(t, rewriteGate.ws("token="+jwt), nil, "big", "binary", "big")
		if !strings.Contains(r.Extensions, "permessage-deflate") {
			t.Fatalf("extensions %q: permessage-deflate was not negotiated end to end", r.Extensions)
		}
		h := parseHello(t, *r.Hello)
		if !strings.Contains(h.Extensions, "permessage-deflate") {
			t.Fatalf("the backend was not offered permessage-deflate: %q", h.Extensions)
		}
		if len(r.Echoes) != 3 || r.Code != 1000 {
			t.Fatalf("%+v", r)
		}
		total := 0
		for _, e := range r.Echoes {
			if !e.Equal || e.Got != e.Sent {
				t.Fatalf("echo of %s: sent %d, got %d, equal %v", e.Step, e.Sent, e.Got, e.Equal)
			}
			total += e.Sent
		}
		// Compressed on the wire: the bytes authgate relayed upstream are
		// far fewer than the 2 MiB of text plus 256 KiB of noise sent.
		ev := wsCloseEvents(t, rewriteGate, n+1)[n]
		in, _ := ev["bytes_in"].(float64)
		t.Logf("sent %d bytes of messages; %d bytes of frames crossed authgate upstream", total, int(in))
		if in <= 0 || int(in) > total/3 {
			t.Fatalf("bytes_in %v for %d bytes of messages: not compressed end to end?", in, total)
		}
	})

	t.Run("bearer subprotocol", func(t *testing.T) {
		r := b.wsRun(t, rewriteGate.ws(""), []string{"bearer", jwt}, "via subprotocol")
		if !r.Opened || r.Protocol != "bearer" || r.Hello == nil {
			t.Fatalf("%+v; want ws.protocol 'bearer' and the backend's hello", r)
		}
		h := parseHello(t, *r.Hello)
		if h.Sub != "browser-user" || h.Via != "header" || h.TokenSHA256 != sha256hex(jwt) || h.Protocols != "" {
			t.Fatalf("backend saw %+v; want the JWT as Authorization: Bearer and no token in Sec-WebSocket-Protocol", h)
		}
		if len(r.Echoes) != 1 || !r.Echoes[0].Equal || r.Code != 1000 {
			t.Fatalf("%+v", r)
		}
		// With another subprotocol offered, the backend's choice wins.
		r = b.wsRun(t, rewriteGate.ws(""), []string{"bearer", jwt, "echo"}, "x")
		if r.Protocol != "echo" || r.Hello == nil || parseHello(t, *r.Hello).Protocols != "echo" {
			t.Fatalf("bearer + echo: %+v", r)
		}
		// A legacy UUID as a bearer subprotocol is rewritten too.
		r = b.wsRun(t, rewriteGate.ws(""), []string{"bearer", legacyUser}, "legacy via subprotocol")
		if r.Protocol != "bearer" || r.Hello == nil {
			t.Fatalf("bearer UUID: %+v", r)
		}
		if h := parseHello(t, *r.Hello); h.Sub != lower || !h.Legacy || h.Via != "header" {
			t.Fatalf("bearer UUID: backend saw %+v", h)
		}
	})

	console, _ := b.drain()
	for _, c := range console {
		t.Errorf("the WebSocket page reported: %s", c)
	}
	shot, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err == nil {
		os.WriteFile(filepath.Join(outDir, "browser.png"), shot, 0o644)
	}

	t.Run("html report", func(t *testing.T) {
		// The report of the logs these runs just wrote, from both instances.
		cmd := exec.Command(authgateBin, "report", "--format", "html", rewriteGate.logPath, rejectGate.logPath)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("authgate report: %v (want exit 1, not_safe: legacy use just now)\n%s", err, stderr.String())
		}
		htmlPath := filepath.Join(outDir, "report.html")
		if err := os.WriteFile(htmlPath, stdout.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		b.drain()
		if err := chromedp.Do(b.ctx, chromedp.Navigate("file://"+htmlPath)); err != nil {
			t.Fatal(err)
		}
		type chart struct {
			SVGs, Rects, Legacy, JWT, Rejected int
			Tall                               int // rects with a height > 0
			Verdict, Text                      string
		}
		c, err := chromedp.Run(b.ctx, chromedp.Evaluate[chart](`(() => {
			const rects = [...document.querySelectorAll('svg rect')];
			const v = document.querySelector('.verdict');
			return {
				SVGs: document.querySelectorAll('svg').length,
				Rects: rects.length,
				Legacy: rects.filter(r => r.classList.contains('legacy')).length,
				JWT: rects.filter(r => r.classList.contains('jwt')).length,
				Rejected: rects.filter(r => r.classList.contains('rejected')).length,
				Tall: rects.filter(r => r.getBoundingClientRect().height > 0).length,
				Verdict: v ? v.className : '',
				Text: document.body.innerText,
			};
		})()`))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("report chart: %d svg, %d bars (%d legacy, %d jwt, %d rejected), verdict %q", c.SVGs, c.Rects, c.Legacy, c.JWT, c.Rejected, c.Verdict)
		if c.SVGs < 1 || c.Legacy < 1 || c.JWT < 1 || c.Rejected < 1 || c.Tall < 3 {
			t.Errorf("chart: %+v", c)
		}
		if !strings.Contains(c.Verdict, "not_safe") || !strings.Contains(c.Text, lower) || !strings.Contains(c.Text, "HeadlessChrome") {
			t.Errorf("report text lacks the verdict, the legacy user or the browser's user agent:\n%s", tail(c.Text, 3000))
		}
		shot, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(outDir, "report.png"), shot, 0o644); err != nil {
			t.Fatal(err)
		}
		console, requests := b.drain()
		for _, c := range console {
			t.Errorf("the report page reported: %s", c)
		}
		for _, u := range requests {
			if u != "file://"+htmlPath {
				t.Errorf("the report page requested %s: not self-contained", u)
			}
		}
	})
}
