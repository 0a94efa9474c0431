//go:build e2e

package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"authgate/client"
)

// clientPage is a page of its own origin (neither authgate nor the
// backend) that imports client/authgate.js as an ES module and drives
// client objects by id. Every event a client emits is recorded with the
// page's Date.now(), which is this machine's clock, as authgate's log
// times are. Each client gets a WebSocket subclass that counts its live
// sockets (created, close event not yet seen).
const clientPage = `<!doctype html>
<meta charset="utf-8">
<title>authgate client e2e</title>
<link rel="icon" href="data:,">
<script type="module">
import * as ag from '/authgate.js';
const TYPES = ['connecting', 'open', 'message', 'disconnect', 'retrying', 'refresh',
  'authrequired', 'legacyblocked', 'giveup', 'closed'];
const recs = {};
// agStart(id, url, tokens, opts): getToken hands out tokens in order, the
// last one repeating; {throw: msg} rejects with msg, anything else is
// returned as it is (42, null).
window.agStart = (id, url, tokens, opts) => {
  const rec = {events: [], targetTypes: [], asked: [], sockets: 0, live: 0, maxLive: 0};
  const queue = tokens.slice();
  class CountingWebSocket extends WebSocket {
    constructor(u, p) {
      super(u, p);
      rec.sockets++;
      rec.live++;
      rec.maxLive = Math.max(rec.maxLive, rec.live);
      this.addEventListener('close', () => { rec.live--; });
    }
  }
  const getToken = async ({reason}) => {
    rec.asked.push(reason);
    const t = queue.length > 1 ? queue.shift() : queue[0];
    if (t !== null && typeof t === 'object' && 'throw' in t) throw new Error(t.throw);
    return t;
  };
  const c = ag.connect(url, {...opts, getToken, WebSocket: CountingWebSocket,
    onEvent: e => rec.events.push({...e, at: Date.now()})});
  for (const type of TYPES) c.addEventListener(type, e => rec.targetTypes.push(e.detail.type));
  rec.client = c;
  recs[id] = rec;
  return true;
};
window.agStartMany = (prefix, url, tokens, opts) => {
  tokens.forEach((tok, i) => window.agStart(prefix + String(i).padStart(3, '0'), url, [tok], opts));
  return tokens.length;
};
const view = r => ({events: r.events, targetTypes: r.targetTypes, asked: r.asked, sockets: r.sockets,
  live: r.live, maxLive: r.maxLive, state: r.client.state});
window.agState = id => view(recs[id]);
window.agStates = prefix => Object.fromEntries(Object.entries(recs).filter(([id]) => id.startsWith(prefix)).map(([id, r]) => [id, view(r)]));
window.agClose = id => { recs[id].client.close(); return recs[id].client.state; };
window.agTry = (url, opts) => {
  try { ag.connect(url, opts || {getToken: () => ''}).close(); return 'no error'; }
  catch (e) { return e.name + ': ' + e.message; }
};
window.agReady = true;
</script>
`

type clientEvent struct {
	Type        string          `json:"type"`
	Kind        string          `json:"kind"`
	Code        int             `json:"code"`
	Reason      string          `json:"reason"`
	WasClean    bool            `json:"wasClean"`
	DelayMs     float64         `json:"delayMs"`
	Attempt     int             `json:"attempt"`
	Protocol    string          `json:"protocol"`
	Reconnect   bool            `json:"reconnect"`
	ExpiresInMs float64         `json:"expiresInMs"`
	Error       string          `json:"error"`
	By          string          `json:"by"`
	Data        json.RawMessage `json:"data"`
	At          float64         `json:"at"` // the page's Date.now()
}

func (e clientEvent) time() time.Time { return time.UnixMilli(int64(e.At)) }

// String is the event as the note shows it: type(detail).
func (e clientEvent) String() string {
	switch e.Type {
	case "connecting":
		return fmt.Sprintf("connecting(%s)", e.Kind)
	case "disconnect":
		return fmt.Sprintf("disconnect(%d %q)", e.Code, e.Reason)
	case "retrying":
		return fmt.Sprintf("retrying(%s %d, %.0fms, attempt %d)", e.Kind, e.Code, e.DelayMs, e.Attempt)
	case "legacyblocked", "giveup":
		return fmt.Sprintf("%s(%d)", e.Type, e.Code)
	case "authrequired":
		if e.Error != "" {
			return fmt.Sprintf("authrequired(%q)", e.Error)
		}
		return fmt.Sprintf("authrequired(%d)", e.Code)
	case "refresh":
		return fmt.Sprintf("refresh(reconnect %v)", e.Reconnect)
	case "closed":
		return fmt.Sprintf("closed(by %s %d)", e.By, e.Code)
	}
	return e.Type
}

type clientState struct {
	Events      []clientEvent `json:"events"`
	TargetTypes []string      `json:"targetTypes"`
	Asked       []string      `json:"asked"`
	Sockets     int           `json:"sockets"`
	Live        int           `json:"live"`
	MaxLive     int           `json:"maxLive"`
	State       string        `json:"state"`
}

// seq is the events as one line: the sequences the note quotes.
func (s clientState) seq() string {
	parts := make([]string, len(s.Events))
	for i, e := range s.Events {
		parts[i] = e.String()
	}
	return strings.Join(parts, " -> ")
}

func (s clientState) types() []string {
	out := make([]string, len(s.Events))
	for i, e := range s.Events {
		out[i] = e.Type
	}
	return out
}

func (s clientState) count(typ string) int {
	n := 0
	for _, e := range s.Events {
		if e.Type == typ {
			n++
		}
	}
	return n
}

func (s clientState) last() clientEvent {
	if len(s.Events) == 0 {
		return clientEvent{}
	}
	return s.Events[len(s.Events)-1]
}

// check holds for every client: EventTarget listeners saw what onEvent
// saw, and never two sockets at once.
func (s clientState) check(t *testing.T, id string) {
	t.Helper()
	if strings.Join(s.TargetTypes, ",") != strings.Join(s.types(), ",") {
		t.Errorf("%s: EventTarget saw %v, onEvent %v", id, s.TargetTypes, s.types())
	}
	if s.MaxLive > 1 {
		t.Errorf("%s: %d sockets at once", id, s.MaxLive)
	}
}

type clientBrowser struct {
	*browser
	srv *httptest.Server
}

// newClientBrowser starts Chromium on clientPage, with authgate.js served
// from the Go embed of client/authgate.js (the file itself).
func newClientBrowser(t *testing.T) *clientBrowser {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Write([]byte(clientPage))
		case "/authgate.js":
			w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
			w.Write(client.Source)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	b := newBrowser(t)
	if err := chromedp.Do(b.ctx, chromedp.Navigate(srv.URL)); err != nil {
		t.Fatalf("navigate: %v\n%s", err, b.output.String())
	}
	if _, err := chromedp.Run(b.ctx, chromedp.Poll[bool]("window.agReady === true", chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		console, _ := b.drain()
		t.Fatalf("the page did not load authgate.js: %v\n%s", err, strings.Join(console, "\n"))
	}
	return &clientBrowser{browser: b, srv: srv}
}

func (cb *clientBrowser) eval(t *testing.T, expr string, out any) {
	t.Helper()
	raw, err := chromedp.Run(cb.ctx, chromedp.Evaluate[json.RawMessage](expr))
	if err != nil {
		t.Fatalf("%s: %v", tail(expr, 200), err)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s: %v (%s)", tail(expr, 200), err, tail(string(raw), 500))
		}
	}
}

func js(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// start creates client id on url; tokens are what getToken returns in
// turn (strings, or map{"throw": msg}, or anything else JSON can say).
func (cb *clientBrowser) start(t *testing.T, id, url string, tokens []any, opts map[string]any) {
	t.Helper()
	if opts == nil {
		opts = map[string]any{}
	}
	cb.eval(t, fmt.Sprintf("agStart(%s, %s, %s, %s)", js(id), js(url), js(tokens), js(opts)), nil)
}

func (cb *clientBrowser) state(t *testing.T, id string) clientState {
	t.Helper()
	var s clientState
	cb.eval(t, fmt.Sprintf("agState(%s)", js(id)), &s)
	return s
}

func (cb *clientBrowser) states(t *testing.T, prefix string) map[string]clientState {
	t.Helper()
	var s map[string]clientState
	cb.eval(t, fmt.Sprintf("agStates(%s)", js(prefix)), &s)
	return s
}

// wait polls client id until cond holds, for at most d.
func (cb *clientBrowser) wait(t *testing.T, id string, d time.Duration, what string, cond func(clientState) bool) clientState {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		s := cb.state(t, id)
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: after %v, still not %s; events: %s", id, d, what, s.seq())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func stopped(s clientState) bool { return s.State == "closed" }

// wsAuth returns the websocket auth events of g, for user when not "".
func wsAuth(t *testing.T, g *gate, user string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, e := range g.logEvents(t, "auth") {
		if e["transport"] == "websocket" && (user == "" || e["user"] == user) {
			out = append(out, e)
		}
	}
	return out
}

func logTime(t *testing.T, e map[string]any) time.Time {
	t.Helper()
	s, _ := e["time"].(string)
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("log time %q: %v", s, err)
	}
	return tm
}

func num(e map[string]any, k string) int {
	f, _ := e[k].(float64)
	return int(f)
}

// tokenExp reads a JWT's exp (the test's own reading, not the module's).
func tokenExp(t *testing.T, tok string) time.Time {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Exp int64 `json:"exp"`
	}
	if err := json.Unmarshal(b, &c); err != nil || c.Exp == 0 {
		t.Fatalf("JWT payload without exp: %v", err)
	}
	return time.Unix(c.Exp, 0)
}

func sameTypes(got clientState, want ...string) bool {
	return strings.Join(got.types(), " ") == strings.Join(want, " ")
}

// TestClientAuth drives client/authgate.js in Chromium against the real
// authgate and the FastAPI backend through the authentication outcomes:
// 4002 is followed by exactly one reconnect with the new token; 4003 stops
// with no further attempt within 10 s; a missing token stops after one
// retry; a JWT nearing exp is replaced before close_on_expiry; bad
// getToken answers stop at once; the bearer subprotocol works; and no
// event carries a token.
func TestClientAuth(t *testing.T) {
	be := startBackend(t)
	rewriteGate := startGate(t, gateParams{Upstream: be.URL(), UUID: rewriteStages})
	rejectGate := startGate(t, gateParams{Upstream: be.URL(), UUID: "reject"})
	missingGate := startGate(t, gateParams{Upstream: be.URL(), UUID: "reject"})
	expiryGate := startGate(t, gateParams{Upstream: be.URL(), UUID: "reject", Leeway: "0s"})
	cb := newClientBrowser(t)
	fds0 := rewriteGate.fds(t)

	expired := mint(t, -time.Hour, "client-refresh")[0]
	fresh := mint(t, time.Hour, "client-refresh")[0]
	bearerTok := mint(t, time.Hour, "client-bearer")[0]
	allTokens := []string{expired, fresh, bearerTok, legacyUser}

	t.Run("4002: exactly one reconnect, with the new token", func(t *testing.T) {
		cb.start(t, "refresh", rewriteGate.ws(""), []any{expired, fresh}, nil)
		s := cb.wait(t, "refresh", 15*time.Second, "open with the backend's hello", func(s clientState) bool { return s.count("message") == 1 || stopped(s) })
		// Quiet for a while: no third attempt of any kind.
		time.Sleep(2 * time.Second)
		s = cb.state(t, "refresh")
		t.Logf("4002 sequence: %s", s.seq())
		s.check(t, "refresh")
		if !sameTypes(s, "connecting", "open", "disconnect", "retrying", "connecting", "open", "message") {
			t.Fatalf("events %s", s.seq())
		}
		d, r, c := s.Events[2], s.Events[3], s.Events[4]
		if d.Code != 4002 || d.Reason != reason4002 || r.Kind != "expired" || r.DelayMs != 0 || c.Kind != "expired" {
			t.Fatalf("events %s", s.seq())
		}
		if gap := c.time().Sub(d.time()); gap > time.Second {
			t.Errorf("reconnected %v after the 4002; want at once", gap)
		}
		if strings.Join(s.Asked, ",") != "initial,expired" || s.Sockets != 2 {
			t.Fatalf("getToken asked for %v, %d sockets; want initial,expired and 2", s.Asked, s.Sockets)
		}
		var m string
		if err := json.Unmarshal(s.Events[6].Data, &m); err != nil {
			t.Fatal(err)
		}
		if h := parseHello(t, m); h.Sub != "client-refresh" || h.TokenSHA256 != sha256hex(fresh) {
			t.Fatalf("the backend saw %+v; want the fresh token", h)
		}
		auths := wsAuth(t, rewriteGate, "client-refresh")
		if len(auths) != 2 || auths[0]["class"] != "jwt_expired" || num(auths[0], "close_code") != 4002 || auths[1]["class"] != "jwt" || auths[1]["action"] != "pass" {
			t.Fatalf("authgate decided %v; want jwt_expired (4002), then jwt pass", auths)
		}
		var st string
		cb.eval(t, `agClose("refresh")`, &st)
		s = cb.state(t, "refresh")
		if st != "closed" || s.last().Type != "closed" || s.last().By != "app" {
			t.Fatalf("after close(): state %q, events %s", st, s.seq())
		}
		closes := wsCloseEvents(t, rewriteGate, 1)
		if last := closes[len(closes)-1]; last["closed_by"] != "client" || num(last, "close_code") != 1000 {
			t.Errorf("authgate saw the app's close as %v", last)
		}
	})

	t.Run("4003, missing token, expiring JWT", func(t *testing.T) {
		// Three clients at once, so the 10 s of silence are waited once.
		cb.start(t, "legacy", rejectGate.ws(""), []any{legacyUser}, nil)
		cb.start(t, "missing", missingGate.ws(""), []any{""}, nil)
		// Authgate closes this socket at exp (leeway 0s); the client
		// replaces the token 4 s before.
		short := mint(t, 8*time.Second, "client-expiring")[0]
		exp := tokenExp(t, short)
		next := mint(t, time.Hour, "client-expiring")[0]
		allTokens = append(allTokens, short, next)
		cb.start(t, "expiring", expiryGate.ws(""), []any{short, next}, map[string]any{"refreshBeforeExpiryMs": 4000})

		legacy := cb.wait(t, "legacy", 15*time.Second, "stopped", stopped)
		missing := cb.wait(t, "missing", 15*time.Second, "stopped", stopped)
		stoppedAt := legacy.last().time()
		if m := missing.last().time(); m.After(stoppedAt) {
			stoppedAt = m
		}
		time.Sleep(time.Until(stoppedAt.Add(10 * time.Second)))
		if time.Until(exp.Add(2*time.Second)) > 0 {
			time.Sleep(time.Until(exp.Add(2 * time.Second)))
		}

		legacy = cb.state(t, "legacy")
		t.Logf("4003 sequence: %s (getToken asked: %v)", legacy.seq(), legacy.Asked)
		legacy.check(t, "legacy")
		if !sameTypes(legacy, "connecting", "open", "disconnect", "legacyblocked") || legacy.Events[2].Code != 4003 ||
			legacy.Events[3].Code != 4003 || legacy.Events[3].Reason != reason4003 || legacy.State != "closed" {
			t.Errorf("4003: events %s, state %s", legacy.seq(), legacy.State)
		}
		if len(legacy.Asked) != 1 || legacy.Sockets != 1 {
			t.Errorf("4003: getToken asked %v, %d sockets; want once, 1", legacy.Asked, legacy.Sockets)
		}
		if a := wsAuth(t, rejectGate, ""); len(a) != 1 || a[0]["class"] != "uuid" || num(a[0], "close_code") != 4003 {
			t.Errorf("4003: authgate saw %d attempts in the 10 s after legacyblocked, want 1: %v", len(a), a)
		}

		missing = cb.state(t, "missing")
		t.Logf("missing-token sequence: %s (getToken asked: %v)", missing.seq(), missing.Asked)
		missing.check(t, "missing")
		if !sameTypes(missing, "connecting", "open", "disconnect", "retrying", "connecting", "open", "disconnect", "authrequired") ||
			missing.Events[2].Code != 4001 || missing.Events[3].Kind != "rejected" || missing.Events[7].Code != 4001 {
			t.Errorf("missing token: events %s", missing.seq())
		}
		if strings.Join(missing.Asked, ",") != "initial,rejected" || missing.Sockets != 2 {
			t.Errorf("missing token: getToken asked %v, %d sockets; want initial,rejected and 2", missing.Asked, missing.Sockets)
		}
		if a := wsAuth(t, missingGate, ""); len(a) != 2 || a[0]["class"] != "missing" || a[1]["class"] != "missing" || num(a[1], "close_code") != 4001 {
			t.Errorf("missing token: authgate saw %v; want two missing (4001)", a)
		}

		ex := cb.state(t, "expiring")
		t.Logf("expiring-JWT sequence: %s (getToken asked: %v)", ex.seq(), ex.Asked)
		ex.check(t, "expiring")
		if !sameTypes(ex, "connecting", "open", "message", "refresh", "disconnect", "retrying", "connecting", "open", "message") {
			t.Fatalf("expiring: events %s", ex.seq())
		}
		if !ex.Events[3].Reconnect || ex.Events[4].Code != 1000 || ex.Events[5].Kind != "refresh" || strings.Join(ex.Asked, ",") != "initial,expiring" {
			t.Errorf("expiring: events %s, asked %v", ex.seq(), ex.Asked)
		}
		if before := exp.Sub(ex.Events[4].time()); before < time.Second {
			t.Errorf("expiring: the old socket closed %v before exp; want the refresh ahead of close_on_expiry", before)
		}
		var m string
		json.Unmarshal(ex.Events[8].Data, &m)
		if h := parseHello(t, m); h.TokenSHA256 != sha256hex(next) {
			t.Errorf("expiring: the backend saw token %s, want the new one", h.TokenSHA256)
		}
		closes := wsCloseEvents(t, expiryGate, 1)
		if c := closes[0]; c["closed_by"] != "client" || num(c, "close_code") != 1000 {
			t.Errorf("expiring: authgate logged the first connection's end as %v; want the client's 1000, not close_on_expiry's 4002", c)
		}
		for _, e := range ex.Events {
			if e.Code == 4002 {
				t.Errorf("expiring: authgate's 4002 reached the client: %s", ex.seq())
			}
		}
		cb.eval(t, `agClose("expiring")`, nil)
	})

	t.Run("bad getToken answers and URLs", func(t *testing.T) {
		before := len(wsAuth(t, missingGate, ""))
		for id, tok := range map[string]any{
			"throws":  map[string]any{"throw": "no session"},
			"number":  42,
			"nothing": nil,
		} {
			cb.start(t, "bad-"+id, missingGate.ws(""), []any{tok}, nil)
		}
		time.Sleep(2 * time.Second)
		for id, want := range map[string]string{
			"throws":  "getToken() failed: no session",
			"number":  "getToken() returned number, not a string",
			"nothing": "getToken() returned null, not a string",
		} {
			s := cb.state(t, "bad-"+id)
			t.Logf("getToken %s: %s", id, s.seq())
			if !sameTypes(s, "authrequired") || s.Events[0].Error != want || s.Sockets != 0 || s.State != "closed" {
				t.Errorf("getToken %s: %s, %d sockets, state %s; want authrequired(%q) and no socket", id, s.seq(), s.Sockets, s.State, want)
			}
		}
		if n := len(wsAuth(t, missingGate, "")); n != before {
			t.Errorf("authgate saw %d attempts from clients without a token string", n-before)
		}
		for _, url := range []string{"http://127.0.0.1:1/api/v1/pam/ws", "https://example.invalid/ws", "/api/v1/pam/ws"} {
			var got string
			cb.eval(t, fmt.Sprintf("agTry(%s)", js(url)), &got)
			if !strings.HasPrefix(got, "TypeError: authgate: url") {
				t.Errorf("connect(%q): %s; want a synchronous TypeError", url, got)
			}
		}
	})

	t.Run("bearer subprotocol", func(t *testing.T) {
		cb.start(t, "bearer", rewriteGate.ws(""), []any{bearerTok}, map[string]any{"tokenIn": "bearer"})
		s := cb.wait(t, "bearer", 15*time.Second, "open with a hello", func(s clientState) bool { return s.count("message") == 1 || stopped(s) })
		s.check(t, "bearer")
		if !sameTypes(s, "connecting", "open", "message") || s.Events[1].Protocol != "bearer" {
			t.Fatalf("events %s (protocol %q)", s.seq(), s.Events[1].Protocol)
		}
		var m string
		json.Unmarshal(s.Events[2].Data, &m)
		if h := parseHello(t, m); h.Via != "header" || h.TokenSHA256 != sha256hex(bearerTok) || h.Protocols != "" {
			t.Fatalf("the backend saw %+v; want the token as Authorization: Bearer and no bearer entries", h)
		}
		cb.eval(t, `agClose("bearer")`, nil)
	})

	t.Run("no token in any event", func(t *testing.T) {
		all := cb.states(t, "")
		raw, _ := json.Marshal(all)
		for _, tok := range allTokens {
			if strings.Contains(string(raw), tok) || strings.Contains(strings.ToLower(string(raw)), strings.ToLower(tok)) {
				t.Errorf("a token appears in the events: %s", tail(tok, 12))
			}
		}
		console, _ := cb.drain()
		for _, c := range console {
			t.Errorf("the page reported: %s", c)
		}
	})

	// authgate let go of every socket.
	err := waitFor(10*time.Second, func() error {
		if n := rewriteGate.metrics(t)[`authgate_websocket_open{route="pam-ws"}`]; n != 0 {
			return fmt.Errorf("authgate_websocket_open %v", n)
		}
		if fds := rewriteGate.fds(t); fds > fds0+2 {
			return fmt.Errorf("authgate holds %d descriptors, %d at the start", fds, fds0)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

// TestClientRestart: 200 clients in one page get 1012 when authgate is
// SIGTERM'd, and reconnect to a restarted authgate on the same port, each
// after a random delay in the default 0-5 s window; authgate's logs show
// the reconnects spread over the window instead of a thundering herd.
func TestClientRestart(t *testing.T) {
	const n = 200
	const window = 5 * time.Second
	be := startBackend(t)
	a := startGate(t, gateParams{Upstream: be.URL(), UUID: rewriteStages})
	subs := make([]string, n)
	for i := range subs {
		subs[i] = fmt.Sprintf("restart-%03d", i)
	}
	toks := mint(t, time.Hour, subs...)
	cb := newClientBrowser(t)
	anyToks := make([]any, n)
	for i, tok := range toks {
		anyToks[i] = tok
	}
	cb.eval(t, fmt.Sprintf("agStartMany('r', %s, %s, {})", js(a.ws("")), js(anyToks)), nil)
	err := waitFor(60*time.Second, func() error {
		open := 0
		for _, s := range cb.states(t, "r") {
			if s.count("message") == 1 {
				open++
			}
		}
		if open < n {
			return fmt.Errorf("%d of %d clients open", open, n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(20 * time.Second):
		t.Fatal("authgate did not exit after SIGTERM")
	}
	if a.exitErr != nil {
		t.Fatalf("authgate exited with %v", a.exitErr)
	}
	b := startGate(t, gateParams{Listen: a.params.Listen, Admin: a.params.Admin, Upstream: be.URL(), UUID: rewriteStages})
	bReady := time.Now()

	var states map[string]clientState
	err = waitFor(window+30*time.Second, func() error {
		states = cb.states(t, "r")
		back := 0
		for _, s := range states {
			if s.count("message") == 2 {
				back++
			}
		}
		if back < n {
			return fmt.Errorf("%d of %d clients reconnected", back, n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	states = cb.states(t, "r")

	// From authgate's logs: when the old one closed each user's socket
	// (1012) and when the new one first decided on that user.
	closedAt := map[string]time.Time{}
	var firstClose time.Time
	for _, e := range a.logEvents(t, "ws_close") {
		if num(e, "close_code") != 1012 || e["closed_by"] != "authgate" {
			t.Errorf("old authgate's ws_close: %v; want 1012 by authgate", e)
			continue
		}
		u, _ := e["user"].(string)
		closedAt[u] = logTime(t, e)
		if firstClose.IsZero() || closedAt[u].Before(firstClose) {
			firstClose = closedAt[u]
		}
	}
	if stops := a.logEvents(t, "stop"); len(stops) != 1 || num(stops[0], "websockets_closed") != n {
		t.Errorf("old authgate's stop event: %v; want websockets_closed %d", stops, n)
	}
	backAt := map[string]time.Time{}
	for _, e := range wsAuth(t, b, "") {
		u, _ := e["user"].(string)
		if _, ok := backAt[u]; !ok {
			backAt[u] = logTime(t, e)
		}
	}
	t.Logf("restarted authgate ready %v after the first 1012", bReady.Sub(firstClose).Round(time.Millisecond))

	// Per client: 1012, a delay in the window, the attempt when it ends,
	// and back. Those whose delay ended before the new authgate listened
	// found nothing (1006) and backed off; the others reconnected on their
	// first attempt. Chromium lets one WebSocket per host be connecting at
	// a time (RFC 6455 §4.1), so on a loaded machine handshakes queue: the
	// attempt's time is the client's, the arrival authgate's.
	var gaps []time.Duration // first-try clients: new authgate's first auth - old one's close
	var delays []float64     // their restart delays
	early, late := 0, 0
	for i, sub := range subs {
		id := fmt.Sprintf("r%03d", i)
		s := states[id]
		s.check(t, id)
		if i == 0 {
			t.Logf("restart sequence (%s): %s", id, s.seq())
		}
		evs := s.Events
		if len(evs) < 8 || !sameTypes(clientState{Events: evs[:5]}, "connecting", "open", "message", "disconnect", "retrying") {
			t.Errorf("%s: %s", id, s.seq())
			continue
		}
		d, r := evs[3], evs[4]
		if d.Code != 1012 || r.Kind != "restart" || r.DelayMs < 0 || r.DelayMs >= float64(window/time.Millisecond) {
			t.Errorf("%s: %s; want 1012 then a restart delay in [0, %v)", id, s.seq(), window)
			continue
		}
		due := r.time().Add(time.Duration(r.DelayMs) * time.Millisecond)
		if c := evs[5]; c.Type != "connecting" || c.time().Before(due.Add(-5*time.Millisecond)) || c.time().After(due.Add(1500*time.Millisecond)) {
			t.Errorf("%s: attempted at %v for a delay ending at %v: %s", id, c.time(), due, s.seq())
		}
		rest := evs[5:]
		if sameTypes(clientState{Events: rest}, "connecting", "open", "message") {
			ca, okA := closedAt[sub]
			ba, okB := backAt[sub]
			if !okA || !okB {
				t.Errorf("%s: not in both logs (closed %v, back %v)", sub, okA, okB)
				continue
			}
			// authgate's log: never back before the client's delay ended.
			if ba.Before(due.Add(-20 * time.Millisecond)) {
				t.Errorf("%s: the new authgate saw it at %v, before its delay ended (%v)", sub, ba, due)
			}
			if ba.After(due.Add(2 * time.Second)) {
				late++
			}
			gaps = append(gaps, ba.Sub(ca))
			delays = append(delays, r.DelayMs)
			continue
		}
		early++
		for j, e := range rest {
			if e.Type == "retrying" && (e.Kind != "backoff" || e.DelayMs >= math.Min(30000, 1000*math.Pow(2, float64(e.Attempt)))) {
				t.Errorf("%s: event %d %s; want backoff within its ceiling", id, j+5, e)
			}
		}
		if due.After(bReady.Add(500 * time.Millisecond)) {
			t.Errorf("%s: its attempt was due after authgate was back, yet: %s", id, s.seq())
		}
	}
	t.Logf("%d clients reconnected on their first attempt (%d of them more than 2 s after their delay: handshakes queued), %d came before the new authgate listened and backed off", len(gaps), late, early)
	if len(gaps) < n/2 {
		t.Fatalf("only %d of %d clients got in on their first attempt: authgate took %v to restart", len(gaps), n, bReady.Sub(firstClose))
	}
	sort.Slice(gaps, func(i, j int) bool { return gaps[i] < gaps[j] })
	sort.Float64s(delays)
	q := func(p float64) time.Duration { return gaps[int(math.Round(p*float64(len(gaps)-1)))] }
	qd := func(p float64) float64 { return delays[int(math.Round(p*float64(len(delays)-1)))] }
	buckets := map[int]int{} // 500 ms each
	top, topAt := 0, 0
	for _, g := range gaps {
		if g < 0 {
			t.Errorf("a reconnect %v after its 1012", g)
		}
		i := int(g / (window / 10))
		buckets[i]++
		if buckets[i] > top {
			top, topAt = buckets[i], i
		}
	}
	var hist []int
	for i := 0; i <= int(gaps[len(gaps)-1]/(window/10)); i++ {
		hist = append(hist, buckets[i])
	}
	t.Logf("restart delays the clients drew: p10 %.0fms, median %.0fms, p90 %.0fms", qd(0.1), qd(0.5), qd(0.9))
	t.Logf("reconnects after 1012 (authgate's logs): min %v, p10 %v, median %v, p90 %v, max %v; per 500 ms: %v",
		gaps[0].Round(time.Millisecond), q(0.1).Round(time.Millisecond), q(0.5).Round(time.Millisecond),
		q(0.9).Round(time.Millisecond), gaps[len(gaps)-1].Round(time.Millisecond), hist)
	// A herd comes back at once: nearly all in the first buckets. Spread
	// over the window, a tenth falls in each 500 ms (a queue of handshakes
	// only moves arrivals later, at the rate authgate and the backend
	// take them, which bounds a bucket too).
	if first := sort.Search(len(gaps), func(i int) bool { return gaps[i] >= time.Second }); first > len(gaps)*2/5 {
		t.Errorf("%d of %d reconnects within 1 s of the 1012: a herd, not spread over the %v window", first, len(gaps), window)
	}
	if top > len(gaps)/4 {
		t.Errorf("%d of %d reconnects in the 500 ms from %v: a herd", top, len(gaps), time.Duration(topAt)*window/10)
	}
	if q(0.5) < window/4 || q(0.9) < window*7/10 {
		t.Errorf("median reconnect %v, p90 %v after the 1012; want the window used (uniform: %v, %v)", q(0.5), q(0.9), window/2, window*9/10)
	}
	cb.eval(t, `Object.keys(agStates('r')).forEach(agClose)`, nil)
	if err := waitFor(10*time.Second, func() error {
		if n := b.metrics(t)[`authgate_websocket_open{route="pam-ws"}`]; n != 0 {
			return fmt.Errorf("authgate_websocket_open %v after every client closed", n)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

// TestClientBackoff: with the backend down, authgate answers 1014 and the
// client backs off with full jitter (each attempt's time, in the client's
// events and in authgate's log, within its bound), recovers when the
// backend returns, and a client with a small budget gives up.
func TestClientBackoff(t *testing.T) {
	be := startBackend(t)
	g := startGate(t, gateParams{Upstream: be.URL(), UUID: rewriteStages})
	fds0 := g.fds(t)
	toks := mint(t, time.Hour, "backoff-user", "giveup-user")
	cb := newClientBrowser(t)
	const base, maxDelay = 250, 2000
	ceiling := func(attempt int) float64 { return math.Min(maxDelay, base*math.Pow(2, float64(attempt))) }

	cb.start(t, "b", g.ws(""), []any{toks[0]}, map[string]any{"baseDelayMs": base, "maxDelayMs": maxDelay, "maxAttemptsPerMinute": 60})
	cb.wait(t, "b", 15*time.Second, "open", func(s clientState) bool { return s.count("message") == 1 })
	be.kill()
	const failures = 6
	s := cb.wait(t, "b", 30*time.Second, fmt.Sprintf("%d retries", failures), func(s clientState) bool { return s.count("retrying") >= failures || stopped(s) })

	// Meanwhile a client with a budget of 3 attempts a minute.
	cb.start(t, "giveup", g.ws(""), []any{toks[1]}, map[string]any{"baseDelayMs": 100, "maxDelayMs": 400, "maxAttemptsPerMinute": 3})
	gu := cb.wait(t, "giveup", 15*time.Second, "stopped", stopped)

	if err := be.start(); err != nil {
		t.Fatal(err)
	}
	backendUp := time.Now()
	s = cb.wait(t, "b", 15*time.Second, "reconnected", func(s clientState) bool { return s.count("message") == 2 || stopped(s) })
	t.Logf("backoff sequence: %s", s.seq())
	s.check(t, "b")

	// The client's side: every retry a backoff with its attempt number
	// and a delay within min(cap, base*2^n), and the next attempt after
	// that delay.
	var retries []clientEvent
	for i, e := range s.Events {
		if e.Type != "retrying" {
			continue
		}
		k := len(retries)
		retries = append(retries, e)
		if e.Kind != "backoff" || e.Code != 1014 || e.Attempt != k || e.DelayMs < 0 || e.DelayMs >= ceiling(k) {
			t.Errorf("retry %d: %s; want backoff after 1014, attempt %d, delay in [0, %.0f)", k, e, k, ceiling(k))
		}
		if i+1 >= len(s.Events) || s.Events[i+1].Type != "connecting" {
			t.Errorf("retry %d not followed by an attempt: %s", k, s.seq())
			continue
		}
		waited := s.Events[i+1].At - e.At
		if waited < e.DelayMs-5 || waited > e.DelayMs+1000 {
			t.Errorf("retry %d: attempted %.0fms after scheduling a %.0fms delay", k, waited, e.DelayMs)
		}
	}
	if len(retries) < failures {
		t.Fatalf("%d retries: %s", len(retries), s.seq())
	}
	atCeiling := 0
	for k, e := range retries {
		if e.DelayMs >= 0.9*ceiling(k) {
			atCeiling++
		}
	}
	if atCeiling == len(retries) {
		t.Errorf("every delay within 10%% of its ceiling: no jitter? %s", s.seq())
	}
	last := retries[len(retries)-1]
	if opened := s.Events[len(s.Events)-2]; opened.Type != "open" || opened.time().Sub(backendUp) > time.Duration(ceiling(last.Attempt))*time.Millisecond+2*time.Second {
		t.Errorf("recovered at %v, %v after the backend was back; want within the last ceiling %.0fms (+2s)", opened.time(), opened.time().Sub(backendUp), ceiling(last.Attempt))
	}

	// authgate's side: one auth event per attempt; between attempt k and
	// k+1 at least the client's delay and at most the ceiling (+ margin
	// for the handshakes on a loaded machine).
	var auths []map[string]any
	waitFor(5*time.Second, func() error { // authgate's log is flushed within 50 ms
		if auths = wsAuth(t, g, "backoff-user"); len(auths) < len(retries)+1 {
			return fmt.Errorf("%d", len(auths))
		}
		return nil
	})
	if len(auths) != len(retries)+1 {
		t.Fatalf("authgate saw %d attempts, the client made %d:\n%s", len(auths), len(retries)+1, g.logText())
	}
	errs := 0
	for _, e := range g.logEvents(t, "upstream_error") {
		if e["route"] == "pam-ws" {
			errs++
		}
	}
	for k := 0; k+1 < len(auths); k++ {
		gap := logTime(t, auths[k+1]).Sub(logTime(t, auths[k]))
		lo := time.Duration(retries[k].DelayMs) * time.Millisecond
		hi := time.Duration(ceiling(k))*time.Millisecond + 1500*time.Millisecond
		if k == 0 {
			continue // the first gap includes the connection's life before the kill
		}
		if gap < lo-50*time.Millisecond || gap > hi {
			t.Errorf("authgate's log: attempt %d came %v after attempt %d; want in [%v, %v] (delay %v, ceiling %.0fms)", k+1, gap, k, lo, hi, lo, ceiling(k))
		}
	}

	t.Logf("giveup sequence: %s", gu.seq())
	gu.check(t, "giveup")
	if !sameTypes(gu, "connecting", "open", "disconnect", "retrying", "connecting", "open", "disconnect", "retrying", "connecting", "open", "disconnect", "giveup") ||
		gu.last().Code != 1014 || gu.Sockets != 3 {
		t.Errorf("giveup: %s (%d sockets); want three 1014s, then giveup", gu.seq(), gu.Sockets)
	}
	time.Sleep(2 * time.Second)
	if a := wsAuth(t, g, "giveup-user"); len(a) != 3 {
		t.Errorf("authgate saw %d attempts of the client that gave up, want 3", len(a))
	}
	// The failed attempts: all but the last of b's retries, and the three
	// of the client that gave up.
	if failed := len(retries) - 1 + 3; errs < failed {
		t.Errorf("%d upstream_error events for %d failed attempts", errs, failed)
	}
	cb.eval(t, `agClose("b")`, nil)
	// authgate let go of every failed and closed connection.
	err := waitFor(10*time.Second, func() error {
		if n := g.metrics(t)[`authgate_websocket_open{route="pam-ws"}`]; n != 0 {
			return fmt.Errorf("authgate_websocket_open %v", n)
		}
		if fds := g.fds(t); fds > fds0+2 {
			return fmt.Errorf("authgate holds %d descriptors, %d at the start", fds, fds0)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}
