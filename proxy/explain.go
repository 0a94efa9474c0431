package proxy

import (
	"context"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"time"

	"authgate/policy"
	"authgate/rewrite"
)

// Explanation is what the proxy would do with one request, for `authgate
// explain`. Upstream is nil when the request would not reach it.
type Explanation struct {
	Decision  policy.Decision
	WebSocket bool
	Minted    string // the token a rewrite would forward (secret)
	Upstream  *http.Request
}

// Explain runs the request path on r without any network: decide, mint,
// and build the upstream request exactly as the handler would.
func Explain(snap *policy.Snapshot, r *http.Request, now time.Time) (Explanation, error) {
	ws := isWebSocketUpgrade(r)
	x := &exchange{snap: snap, websocket: ws, requestID: requestID(r)}
	x.clientIP, x.xff = clientIP(r, snap.TrustedProxies)
	x.d = snap.Decide(context.Background(), r, ws, now)
	e := Explanation{Decision: x.d, WebSocket: ws}
	if x.d.Action == policy.ActionReject {
		return e, nil
	}
	if err := x.setForward(now); err != nil {
		return e, err
	}
	if x.d.Action == policy.ActionRewrite {
		e.Minted = x.forward
	}
	out := r.Clone(context.Background())
	removeHopHeaders(out.Header)
	if ws {
		out.Header.Set("Connection", "Upgrade")
		out.Header.Set("Upgrade", "websocket")
	}
	prepareOutbound(&httputil.ProxyRequest{In: r, Out: out}, x)
	e.Upstream = out
	return e, nil
}

// RedactedRequest renders req as request line and headers with every
// secret shortened: the given tokens wherever they appear, and the values
// of Authorization and Cookie headers.
func RedactedRequest(req *http.Request, secrets ...string) string {
	var b strings.Builder
	b.WriteString(req.Method + " " + RedactedURL(req.URL, secrets) + "\n")
	b.WriteString("Host: " + req.Host + "\n")
	keys := make([]string, 0, len(req.Header))
	for k := range req.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range req.Header[k] {
			switch k {
			case "Authorization":
				scheme, cred, ok := strings.Cut(v, " ")
				if ok {
					v = scheme + " " + rewrite.Redact(cred)
				} else {
					v = rewrite.Redact(v)
				}
			case "Cookie":
				v = rewrite.Redact(v)
			default:
				v = redactAll(v, secrets)
			}
			b.WriteString(k + ": " + v + "\n")
		}
	}
	return b.String()
}

func redactAll(s string, secrets []string) string {
	for _, sec := range secrets {
		if len(sec) < 4 {
			continue
		}
		s = strings.ReplaceAll(s, sec, rewrite.Redact(sec))
		if esc := url.QueryEscape(sec); esc != sec {
			s = strings.ReplaceAll(s, esc, rewrite.Redact(sec))
		}
	}
	return s
}

// RedactedURL renders u with the given secrets shortened.
func RedactedURL(u *url.URL, secrets []string) string { return redactAll(u.String(), secrets) }
