//go:build e2e

package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	legacyUser = "8F14E45F-CEEA-467A-9575-6D4B4B3C7F21" // as an old client build sends it
	reason4003 = "legacy authentication no longer accepted"
	reason4002 = "token expired (refresh and reconnect)"
)

// rewriteStages is a UUID schedule whose current stage is rewrite.
const rewriteStages = "[{until: 2999-01-01, action: rewrite}, {action: reject}]"

// expectClose dials url and expects the connection to be closed with code
// (and reason, when not "") before any message.
func expectClose(t *testing.T, url string, header http.Header, code int, reason string, protocols ...string) {
	t.Helper()
	c, err := dialWS(ctxT(t, 15*time.Second), url, header, protocols...)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	msg, err := c.next(10 * time.Second)
	var ce *closeErr
	if !asCloseErr(err, &ce) {
		t.Fatalf("want close %d, got message %q, err %v", code, msg, err)
	}
	if ce.Code != code || (reason != "" && ce.Reason != reason) {
		t.Fatalf("closed with %d %q, want %d %q", ce.Code, ce.Reason, code, reason)
	}
}

func asCloseErr(err error, ce **closeErr) bool {
	c, ok := err.(*closeErr)
	if ok {
		*ce = c
	}
	return ok
}

// expectHello dials url, reads the backend's hello, checks an echo round
// trip, and returns the hello and the open client.
func expectHello(t *testing.T, url string, header http.Header, protocols ...string) (hello, *wsClient) {
	t.Helper()
	c, err := dialWS(ctxT(t, 15*time.Second), url, header, protocols...)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	msg, err := c.next(10 * time.Second)
	if err != nil {
		t.Fatalf("want the backend's hello, got %v", err)
	}
	h := parseHello(t, msg)
	const ping = "ping \u00e9\u00e8 \U0001F600"
	if err := c.sendText(ping); err != nil {
		t.Fatal(err)
	}
	if got, err := c.next(10 * time.Second); err != nil || got != ping {
		t.Fatalf("echo: got %q, %v; want %q", got, err, ping)
	}
	return h, c
}

func getMe(t *testing.T, url, bearer string) (int, map[string]any, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := noKeepAlive.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("GET %s: %d, body not JSON: %q", url, resp.StatusCode, body)
	}
	return resp.StatusCode, m, resp.Header
}

// TestTokens: legacy UUID clients under a rewrite stage reach the JWT-only
// FastAPI backend as that user; under reject they get 4003 (and open ones
// are revoked); JWTs minted by PyJWT pass untouched; expired ones get 4002.
func TestTokens(t *testing.T) {
	be := startBackend(t)
	g := startGate(t, gateParams{Upstream: be.URL(), UUID: rewriteStages})
	toks := mint(t, time.Hour, "5d7c1a0e-jwt-user", "second-jwt-user")
	jwt, jwt2 := toks[0], toks[1]
	expired := mint(t, -time.Hour, "expired-user")[0]
	lower := strings.ToLower(legacyUser)

	t.Run("backend alone refuses a UUID and takes a PyJWT token", func(t *testing.T) {
		direct := "ws://" + be.Addr() + "/api/v1/pam/ws?token="
		expectClose(t, direct+legacyUser, nil, 4001, "invalid token")
		h, _ := expectHello(t, direct+jwt, nil)
		if h.Sub != "5d7c1a0e-jwt-user" || h.Legacy {
			t.Fatalf("hello %+v", h)
		}
		if code, _, _ := getMe(t, be.URL()+"/api/v1/me", legacyUser); code != 401 {
			t.Fatalf("backend /me with a UUID: %d, want 401", code)
		}
	})

	t.Run("uuid is rewritten and served as that user", func(t *testing.T) {
		h, c := expectHello(t, g.ws("v=2&token="+legacyUser), http.Header{"Origin": {"https://app.example.com"}})
		if h.Sub != lower || !h.Legacy || h.Iss != "authgate" || h.Via != "query" {
			t.Fatalf("backend saw %+v; want sub %s, legacy, iss authgate, via query", h, lower)
		}
		if h.XAuthgateClass != "uuid" || h.XAuthgateLegacy != "1" {
			t.Fatalf("X-Authgate-Class %q, X-Authgate-Legacy %q", h.XAuthgateClass, h.XAuthgateLegacy)
		}
		// A close code the backend chooses reaches the client unchanged.
		if err := c.sendText("close:4321:backend says bye"); err != nil {
			t.Fatal(err)
		}
		_, err := c.next(10 * time.Second)
		var ce *closeErr
		if !asCloseErr(err, &ce) || ce.Code != 4321 || ce.Reason != "backend says bye" {
			t.Fatalf("want close 4321 from the backend, got %v", err)
		}
	})

	t.Run("jwt passes untouched", func(t *testing.T) {
		h, c := expectHello(t, g.ws("token="+jwt), nil)
		if h.Sub != "5d7c1a0e-jwt-user" || h.Legacy || h.TokenSHA256 != sha256hex(jwt) || h.XAuthgateClass != "jwt" {
			t.Fatalf("backend saw %+v; want the client's own token (sha %s)", h, sha256hex(jwt))
		}
		if code, err := c.closeWith(1000, "bye", 5*time.Second); err != nil || code != 1000 {
			t.Fatalf("closing handshake: %d, %v", code, err)
		}
		// In the Authorization header (non-browser clients).
		h, _ = expectHello(t, g.ws(""), http.Header{"Authorization": {"Bearer " + jwt2}})
		if h.Sub != "second-jwt-user" || h.Via != "header" || h.TokenSHA256 != sha256hex(jwt2) {
			t.Fatalf("backend saw %+v", h)
		}
	})

	t.Run("expired jwt gets 4002", func(t *testing.T) {
		expectClose(t, g.ws("token="+expired), nil, 4002, reason4002)
	})
	t.Run("garbage and missing get 4001", func(t *testing.T) {
		expectClose(t, g.ws("token=not-a-token"), nil, 4001, "invalid token")
		expectClose(t, g.ws(""), nil, 4001, "authentication required")
	})

	t.Run("http", func(t *testing.T) {
		code, m, _ := getMe(t, g.http("/api/v1/me"), legacyUser)
		if code != 200 || m["sub"] != lower || m["legacy"] != true {
			t.Fatalf("/me with a UUID: %d %v", code, m)
		}
		code, m, _ = getMe(t, g.http("/api/v1/me"), jwt)
		if code != 200 || m["sub"] != "5d7c1a0e-jwt-user" || m["token_sha256"] != sha256hex(jwt) {
			t.Fatalf("/me with a JWT: %d %v", code, m)
		}
		code, m, hdr := getMe(t, g.http("/api/v1/me"), expired)
		if code != 401 || m["error"] != "jwt_expired" || m["close_code"] != 4002.0 || !strings.Contains(hdr.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Fatalf("/me with an expired JWT: %d %v %q", code, m, hdr.Get("WWW-Authenticate"))
		}
	})

	t.Run("reject stage: 4003, open legacy sockets revoked, JWTs unaffected", func(t *testing.T) {
		_, legacyConn := expectHello(t, g.ws("token="+legacyUser), nil)
		_, jwtConn := expectHello(t, g.ws("token="+jwt), nil)
		p := g.params
		p.UUID = "reject"
		start := time.Now()
		g.reload(t, p.yaml(t), false, "reloaded")
		// revoke_open: within a second of the reload (allow for the
		// watcher's debounce and a loaded machine).
		_, err := legacyConn.next(5 * time.Second)
		var ce *closeErr
		if !asCloseErr(err, &ce) || ce.Code != 4003 || ce.Reason != reason4003 {
			t.Fatalf("open legacy connection after the reload: want 4003 %q, got %v", reason4003, err)
		}
		t.Logf("legacy connection revoked %v after the config was written", time.Since(start).Round(time.Millisecond))
		expectClose(t, g.ws("token="+legacyUser), nil, 4003, reason4003)
		if err := jwtConn.sendText("still here"); err != nil {
			t.Fatal(err)
		}
		if got, err := jwtConn.next(5 * time.Second); err != nil || got != "still here" {
			t.Fatalf("JWT connection after the reload: %q %v", got, err)
		}
		code, m, _ := getMe(t, g.http("/api/v1/me"), legacyUser)
		if code != 403 || m["error"] != "uuid" || m["close_code"] != 4003.0 {
			t.Fatalf("/me with a UUID under reject: %d %v", code, m)
		}
		// Back to rewrite: legacy clients get in again.
		g.reload(t, g.params.yaml(t), false, "reloaded")
		if h, _ := expectHello(t, g.ws("token="+legacyUser), nil); h.Sub != lower {
			t.Fatalf("after reverting: %+v", h)
		}
	})

	t.Run("logs", func(t *testing.T) {
		text := g.logText()
		for _, tok := range []string{jwt, jwt2, expired} {
			sig := tok[strings.LastIndexByte(tok, '.')+1:]
			if strings.Contains(text, sig) || strings.Contains(text, tok[:strings.IndexByte(tok, '.')+20]) {
				t.Errorf("a token (or part of one) is in authgate's log")
			}
		}
		if strings.Contains(text, "token=") {
			t.Errorf("a query string with its token is in authgate's log")
		}
		var jwtVerified, uuidRewrite, uuidReject, expiredReject int
		for _, e := range g.logEvents(t, "auth") {
			switch {
			case e["class"] == "jwt" && e["verified"] == true:
				jwtVerified++
			case e["class"] == "uuid" && e["action"] == "rewrite" && e["user"] == lower:
				uuidRewrite++
			case e["class"] == "uuid" && e["action"] == "reject" && e["close_code"] == 4003.0:
				uuidReject++
			case e["class"] == "jwt_expired" && e["action"] == "reject":
				expiredReject++
			}
		}
		if jwtVerified < 4 || uuidRewrite < 3 || uuidReject < 1 || expiredReject < 2 {
			t.Errorf("auth events: %d verified jwt, %d uuid rewrite, %d uuid reject, %d expired", jwtVerified, uuidRewrite, uuidReject, expiredReject)
		}
	})
}

// TestES256MintVerifiedViaJWKS: authgate mints ES256 tokens for legacy
// UUIDs and the backend verifies them with PyJWT against authgate's own
// /jwks.json, the setup for backends that verify via JWKS.
func TestES256MintVerifiedViaJWKS(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pemPath := filepath.Join(t.TempDir(), "mint.pem")
	if err := os.WriteFile(pemPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	admin := "127.0.0.1:" + itoa(freePort(t))
	be := startBackend(t, "JWKS_URL=http://"+admin+"/jwks.json")
	g := startGate(t, gateParams{Upstream: be.URL(), Admin: admin, UUID: "rewrite",
		Mint: "  private_key_file: " + pemPath + "\n  kid: e2e-es256"})
	h, _ := expectHello(t, g.ws("token="+legacyUser), nil)
	if h.Sub != strings.ToLower(legacyUser) || !h.Legacy || h.Iss != "authgate" {
		t.Fatalf("backend saw %+v", h)
	}
	// The backend still takes its ordinary HS256 tokens, and nothing else.
	jwt := mint(t, time.Hour, "hs-user")[0]
	if h, _ := expectHello(t, g.ws("token="+jwt), nil); h.Sub != "hs-user" {
		t.Fatalf("backend saw %+v", h)
	}
}
