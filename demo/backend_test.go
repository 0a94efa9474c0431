package demo

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"authgate/client"
)

// TestPageUsesClientModule: the demo's browser page imports
// client/authgate.js, and the backend serves that very file as a
// JavaScript module.
func TestPageUsesClientModule(t *testing.T) {
	srv := httptest.NewServer((&backend{secret: []byte("s"), now: time.Now}).handler())
	defer srv.Close()
	get := func(path string) (*http.Response, []byte) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	resp, body := get("/")
	if resp.StatusCode != 200 || !strings.Contains(string(body), `import { connect } from '/authgate.js';`) {
		t.Fatalf("GET /: %s, page without the module import:\n%s", resp.Status, body)
	}
	resp, body = get("/authgate.js")
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || !strings.HasPrefix(ct, "text/javascript") {
		t.Fatalf("GET /authgate.js: %s, Content-Type %q; a browser runs a module only as JavaScript", resp.Status, ct)
	}
	if !bytes.Equal(body, client.Source) || !bytes.Contains(body, []byte("export function connect(")) {
		t.Fatalf("GET /authgate.js is not client/authgate.js (%d bytes)", len(body))
	}
	if resp, _ = get("/elsewhere"); resp.StatusCode != 404 {
		t.Errorf("GET /elsewhere: %s, want 404", resp.Status)
	}
}

// TestDemoTokens: /demo/token hands out tokens on authgate's clock (which
// the demo moves two hours on), and the backend accepts the valid ones.
func TestDemoTokens(t *testing.T) {
	secret := []byte("demo-secret")
	shifted := time.Now().Add(2 * time.Hour)
	b := &backend{secret: secret, now: func() time.Time { return shifted }}
	srv := httptest.NewServer(b.handler())
	defer srv.Close()
	for _, c := range []struct {
		kind string
		ttl  time.Duration
	}{{"jwt", time.Hour}, {"short", 20 * time.Second}, {"expired", -time.Hour}} {
		resp, err := http.Get(srv.URL + "/demo/token?kind=" + c.kind)
		if err != nil {
			t.Fatal(err)
		}
		tok, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		claims := jwt.MapClaims{}
		if _, _, err := jwt.NewParser().ParseUnverified(string(tok), claims); err != nil {
			t.Fatalf("%s: %v", c.kind, err)
		}
		exp, _ := claims.GetExpirationTime()
		if want := shifted.Add(c.ttl).Truncate(time.Second); !exp.Time.Equal(want) {
			t.Errorf("%s: exp %v, want %v (authgate's clock + %v)", c.kind, exp.Time, want, c.ttl)
		}
		if c.ttl > 0 {
			if _, err := b.verify(string(tok)); err != nil {
				t.Errorf("%s: the backend refuses it: %v", c.kind, err)
			}
		}
	}
	resp, err := http.Get(srv.URL + "/demo/token?kind=other")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("kind=other: %s, want 400", resp.Status)
	}
}
