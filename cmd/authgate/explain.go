package main

import (
	"crypto/rand"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"authgate/policy"
	"authgate/proxy"
	"authgate/rewrite"
)

type headerFlags []string

func (h *headerFlags) String() string     { return strings.Join(*h, ", ") }
func (h *headerFlags) Set(v string) error { *h = append(*h, v); return nil }

func cmdExplain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := fs.String("config", "", "config file (default $AUTHGATE_CONFIG, then config.yaml)")
	at := fs.String("at", "", "decide as of this time (RFC 3339 or YYYY-MM-DD) instead of now")
	var headers headerFlags
	fs.Var(&headers, "header", "a request header 'Key: Value' (repeatable)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: authgate explain [--config PATH] [--at TIME] [--header 'K: V']... URL\n\nSays, without any network, what the proxy would do with a request to URL.\nws:// and wss:// URLs are WebSocket upgrades. Tokens are shown shortened.")
		fs.PrintDefaults()
	}
	// Flags may come before or after the URL.
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(positional) != 1 {
		fs.Usage()
		return 2
	}
	now := time.Now()
	if *at != "" {
		t, err := policy.ParseTime(*at)
		if err != nil {
			fmt.Fprintf(stderr, "explain: --at: %v\n", err)
			return 2
		}
		now = t
	}
	r, err := explainRequest(positional[0], headers)
	if err != nil {
		fmt.Fprintf(stderr, "explain: %v\n", err)
		return 2
	}
	snap, err := policy.Load(configPath(*cfg), policy.Options{})
	if err != nil {
		printLoadError(stderr, err)
		return 1
	}
	e, err := proxy.Explain(snap, r, now)
	if err != nil {
		fmt.Fprintf(stderr, "explain: %v\n", err)
		return 1
	}
	printExplanation(stdout, snap, r, e, now)
	return 0
}

// explainRequest builds the request a client would send to rawURL.
func explainRequest(rawURL string, headers []string) (*http.Request, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("bad URL %q; want like ws://localhost/api/v1/pam/ws?token=...", rawURL)
	}
	ws := false
	switch u.Scheme {
	case "ws":
		u.Scheme, ws = "http", true
	case "wss":
		u.Scheme, ws = "https", true
	case "http", "https":
	default:
		return nil, fmt.Errorf("URL scheme %q: want http, https, ws or wss", u.Scheme)
	}
	r, err := http.NewRequest(http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	r.RemoteAddr = "192.0.2.1:50000" // documentation address (RFC 5737)
	r.RequestURI = u.RequestURI()
	if ws {
		var key [16]byte
		rand.Read(key[:])
		r.Header.Set("Connection", "Upgrade")
		r.Header.Set("Upgrade", "websocket")
		r.Header.Set("Sec-WebSocket-Version", "13")
		r.Header.Set("Sec-WebSocket-Key", base64.StdEncoding.EncodeToString(key[:]))
	}
	for _, h := range headers {
		k, v, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("--header %q: want 'Key: Value'", h)
		}
		r.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	if host := r.Header.Get("Host"); host != "" {
		r.Host = host
		r.Header.Del("Host")
	}
	return r, nil
}

func printExplanation(w io.Writer, snap *policy.Snapshot, r *http.Request, e proxy.Explanation, now time.Time) {
	d := e.Decision
	tok := d.Token()
	secrets := []string{tok.Value, e.Minted}
	transport := "http"
	if e.WebSocket {
		transport = "websocket"
	}
	fmt.Fprintf(w, "at:        %s\n", now.UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "request:   %s %s (%s)\n", r.Method, proxy.RedactedURL(r.URL, secrets), transport)
	if d.Route == nil {
		fmt.Fprintf(w, "route:     none matches; unmatched: %s\n", snap.Unmatched)
	} else {
		desc := snap.Description(now).Routes[d.Route.Index]
		fmt.Fprintf(w, "route:     %s (%s)\n", d.Route.Name, desc.Match)
		if tok.Missing() {
			fmt.Fprintf(w, "token:     none found in %s\n", strings.Join(desc.TokenFrom, ", "))
		} else {
			fmt.Fprintf(w, "token:     %s from %s\n", rewrite.Redact(tok.Value), tok.Source)
		}
		verified := "verified"
		if !d.Verified {
			verified = "not verified"
		}
		if d.Class == rewrite.ClassJWT || d.Class == rewrite.ClassJWTExpired {
			fmt.Fprintf(w, "class:     %s (%s, %s)\n", d.Class, d.Reason, verified)
		} else {
			fmt.Fprintf(w, "class:     %s (%s)\n", d.Class, d.Reason)
		}
		if d.User != "" {
			fmt.Fprintf(w, "user:      %s\n", d.User)
		}
		if d.Stage >= 0 {
			fmt.Fprintf(w, "stage:     %d of %s: %s\n", d.Stage, d.Class, desc.Current[d.Class.String()])
			if st := d.Route.Rules[d.Class].Stages[d.Stage]; st.Percent > 0 {
				side := "outside"
				if d.Route.InRollout(d.User, st.Percent) {
					side = "inside"
				}
				fmt.Fprintf(w, "share:     this user is %s the %d%% share (stable per route and user)\n", side, st.Percent)
			}
		}
	}
	action := d.Action.String()
	if d.Would != policy.ActionNone {
		action += fmt.Sprintf(" (dry run: would %s)", d.Would)
	}
	fmt.Fprintf(w, "action:    %s\n", action)
	if d.Action == policy.ActionReject {
		if e.WebSocket && (d.Route == nil || !d.Route.RejectHTTP) {
			fmt.Fprintf(w, "answer:    handshake completed, then close %d %q\n", d.Rejection.CloseCode, d.Rejection.Message)
		} else {
			fmt.Fprintf(w, "answer:    HTTP %d %q\n", d.Rejection.Status, d.Rejection.Message)
		}
		return
	}
	if e.Minted != "" {
		fmt.Fprintf(w, "minted:    %s JWT for sub %s, valid %s\n", snap.Minter.Algorithm(), d.User, policy.FormatDuration(snap.Minter.TTL()))
	}
	fmt.Fprintf(w, "upstream request:\n")
	for _, line := range strings.Split(strings.TrimSuffix(proxy.RedactedRequest(e.Upstream, secrets...), "\n"), "\n") {
		fmt.Fprintf(w, "  %s\n", line)
	}
}
