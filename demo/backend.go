// Package demo is `authgate demo`: an embedded sample backend that, like
// the real one after its UUID shim is removed, accepts only JWTs; an
// embedded policy; and sample clients driven through the proxy.
package demo

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/golang-jwt/jwt/v5"

	"authgate/client"
)

// backend is the sample upstream: /api/v1/pam/ws (WebSocket, ?token= or
// Authorization: Bearer, where authgate puts a `bearer` subprotocol token)
// and /api/v1/me (Authorization: Bearer) verify an HS256 JWT with audience
// "authenticated" and refuse anything else, UUIDs included. For the
// browser page it also serves client/authgate.js and, standing in for the
// app's auth provider (Supabase), /demo/token.
type backend struct {
	secret []byte
	now    func() time.Time // authgate's clock, for the tokens of /demo/token
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
	mux.HandleFunc("/demo/token", b.token)
	mux.HandleFunc("/authgate.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		w.Write(client.Source)
	})
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(page))
	})
	return mux
}

// demoUser is the sub of the JWTs /demo/token hands out.
const demoUser = "7d0e3a52-7f39-4c64-9d3c-2b6f0c1de5a1"

// token plays the app's auth provider for the page: ?kind=jwt (an hour),
// short (20 s: the client replaces it before authgate closes it) or
// expired (an hour ago). Times are authgate's clock, which the demo moves.
func (b *backend) token(w http.ResponseWriter, r *http.Request) {
	ttl := map[string]time.Duration{"jwt": time.Hour, "short": 20 * time.Second, "expired": -time.Hour}
	d, ok := ttl[r.URL.Query().Get("kind")]
	if !ok {
		http.Error(w, "kind: jwt, short or expired", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write([]byte(signAt(string(b.secret), demoUser, b.now(), b.now().Add(d))))
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
	token := r.URL.Query().Get("token")
	if auth := r.Header.Get("Authorization"); token == "" && len(auth) > 7 && strings.EqualFold(auth[:7], "bearer ") {
		token = auth[7:]
	}
	who, verr := b.verify(token)
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
