// Package demo is `authgate demo`: an embedded sample backend that, like
// the real one after its UUID shim is removed, accepts only JWTs; an
// embedded policy; and sample clients driven through the proxy.
package demo

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/golang-jwt/jwt/v5"
)

// backend is the sample upstream: /api/v1/pam/ws (WebSocket, ?token=) and
// /api/v1/me (Authorization: Bearer) verify an HS256 JWT with audience
// "authenticated" and refuse anything else, UUIDs included.
type backend struct {
	secret []byte
}

type whoami struct {
	Sub    string `json:"sub"`
	Legacy bool   `json:"legacy"` // the JWT was minted by authgate for a UUID
}

func (b *backend) verify(token string) (whoami, error) {
	claims := jwt.MapClaims{}
	_, err := jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithAudience("authenticated"), jwt.WithExpirationRequired()).
		ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return b.secret, nil })
	if err != nil {
		return whoami{}, err
	}
	sub, _ := claims["sub"].(string)
	if sub == "" {
		return whoami{}, errors.New("no sub")
	}
	w := whoami{Sub: sub}
	if amr, ok := claims["amr"].([]any); ok {
		for _, a := range amr {
			if m, ok := a.(map[string]any); ok && m["method"] == "legacy_uuid" {
				w.Legacy = true
			}
		}
	}
	return w, nil
}

func (b *backend) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v1/pam/ws", b.pamWS)
	mux.HandleFunc("/api/v1/me", b.me)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(page))
	})
	return mux
}

func (b *backend) me(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	if len(auth) < 7 {
		http.Error(w, `{"detail":"not authenticated"}`, http.StatusUnauthorized)
		return
	}
	who, err := b.verify(auth[7:])
	if err != nil {
		http.Error(w, `{"detail":"invalid token"}`, http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(who)
}

func (b *backend) pamWS(w http.ResponseWriter, r *http.Request) {
	who, verr := b.verify(r.URL.Query().Get("token"))
	conn, _, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		return
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Minute))
	if verr != nil {
		// What the backend did before authgate: "Invalid JWT format" and
		// close. Now it never has to know about UUIDs.
		ws.WriteFrame(conn, ws.NewCloseFrame(ws.NewCloseFrameBody(4001, "invalid token")))
		return
	}
	hello, _ := json.Marshal(map[string]any{"hello": who.Sub, "legacy": who.Legacy})
	if err := wsutil.WriteServerMessage(conn, ws.OpText, hello); err != nil {
		return
	}
	for {
		msg, op, err := wsutil.ReadClientData(conn)
		if err != nil {
			return
		}
		if err := wsutil.WriteServerMessage(conn, op, msg); err != nil {
			return
		}
	}
}

// page is served at / through the proxy (unmatched paths pass) for trying
// the WebSocket from a browser with `authgate demo --serve`.
const page = `<!doctype html>
<meta charset="utf-8">
<title>authgate demo</title>
<style>body{font:14px system-ui;margin:2em;max-width:50em}input{width:100%}pre{background:#f4f4f4;padding:1em}</style>
<h1>authgate demo</h1>
<p>Token (a legacy UUID, a JWT, or anything):</p>
<input id="tok" value="21a2151a-cd37-41d5-a1c7-124bb05e7a6a">
<p><button id="go">Connect</button></p>
<pre id="out"></pre>
<script>
const out = document.getElementById('out');
document.getElementById('go').onclick = () => {
  const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host +
    '/api/v1/pam/ws?token=' + encodeURIComponent(document.getElementById('tok').value);
  const s = new WebSocket(url);
  s.onmessage = e => { out.textContent += 'message: ' + e.data + '\n'; s.close(1000, 'bye'); };
  s.onclose = e => { out.textContent += 'closed: ' + e.code + ' ' + e.reason + '\n'; };
};
</script>
`
