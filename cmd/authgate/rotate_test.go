package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
)

// TestServeSIGHUPAndKeyRotation runs `authgate serve` as a process and
// pins issue 14, point 1: a SIGHUP with nothing changed answers with a
// config event "unchanged"; replacing the mint key file (config.yaml
// untouched) makes the new key sign; and /jwks.json, read by an
// independent JWKS consumer (go-jose), keeps the previous public key for
// one mint ttl plus leeway, so a token minted just before the swap still
// verifies, and drops it afterwards.
func TestServeSIGHUPAndKeyRotation(t *testing.T) {
	var mu sync.Mutex
	var seen []string // Authorization headers the backend received
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		mu.Unlock()
		w.Write([]byte("ok"))
	}))
	defer backend.Close()

	dir := t.TempDir()
	keyFile := filepath.Join(dir, "mint.pem")
	writeKey := func(k *ecdsa.PrivateKey) {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		// Save by rename, as editors and secret mounts do.
		tmp := keyFile + ".tmp"
		if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, keyFile); err != nil {
			t.Fatal(err)
		}
	}
	key1, key2 := newECKey(t), newECKey(t)
	writeKey(key1)
	port, admin := freePort(t), freePort(t)
	const ttl, leeway = 3 * time.Second, time.Second
	cfg := fmt.Sprintf(`listen: "127.0.0.1:%d"
admin_listen: "127.0.0.1:%d"
trusted_proxies: [private]
upstream: {url: "%s"}
verify: {hs256_secret: "%s", algorithms: [HS256], leeway: 1s}
mint: {private_key_file: mint.pem, kid: authgate-1, ttl: 3s}
routes:
  - name: api
    match: {prefix: /api/}
    token: {from: [header:authorization]}
    policy: {uuid: rewrite}
`, port, admin, backend.URL, exampleSecret)
	cfgPath := filepath.Join(dir, "config.yaml")
	os.WriteFile(cfgPath, []byte(cfg), 0o644)

	cmd := authgate("serve", "--config", cfgPath)
	cmd.Env = append(cmd.Env, "RENDER_INSTANCE_ID=srv-d0test-abcde")
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1000)
	var all []string // every line, for the instance check
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			mu.Lock()
			all = append(all, sc.Text())
			mu.Unlock()
			lines <- sc.Text()
		}
		close(lines)
	}()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		<-scanned
		cmd.Wait()
		if strings.Contains(stderr.String(), "panic") {
			t.Errorf("stderr: %s", stderr.String())
		}
		// Issue 14, point 3: every line names its instance.
		mu.Lock()
		defer mu.Unlock()
		if len(all) < 5 {
			t.Errorf("got %d log lines, want the run's events", len(all))
		}
		for _, l := range all {
			var v map[string]any
			if json.Unmarshal([]byte(l), &v) != nil || v["instance"] != "srv-d0test-abcde" {
				t.Errorf("log line without instance srv-d0test-abcde: %s", l)
			}
		}
	}()
	waitLine(t, lines, `"event":"start"`)

	mintOne := func() string {
		t.Helper()
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/api/me", port), nil)
		req.Header.Set("Authorization", "Bearer 21a2151a-cd37-41d5-a1c7-124bb05e7a6a")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("uuid request: got %d, want 200 (rewritten)", resp.StatusCode)
		}
		mu.Lock()
		defer mu.Unlock()
		return seen[len(seen)-1]
	}
	jwks := func() jose.JSONWebKeySet {
		t.Helper()
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/jwks.json", admin))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var set jose.JSONWebKeySet
		if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
			t.Fatalf("jwks.json: %v", err)
		}
		return set
	}
	// verifies reports whether tok verifies with a key of set: the way a
	// backend on JWKS does it, by kid, trying every key with that kid.
	verifies := func(set jose.JSONWebKeySet, tok string) bool {
		parsed, err := josejwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
		if err != nil || len(parsed.Headers) != 1 {
			t.Fatalf("minted token does not parse: %v", err)
		}
		for _, k := range set.Key(parsed.Headers[0].KeyID) {
			var c josejwt.Claims
			if parsed.Claims(k.Key, &c) == nil {
				return true
			}
		}
		return false
	}
	signedBy := func(tok string, k *ecdsa.PrivateKey) bool {
		parsed, err := josejwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
		if err != nil {
			t.Fatal(err)
		}
		var c josejwt.Claims
		return parsed.Claims(&k.PublicKey, &c) == nil
	}

	t1 := mintOne()
	if !signedBy(t1, key1) || !verifies(jwks(), t1) {
		t.Fatalf("before rotation: token not signed by key 1 or not verifiable from /jwks.json")
	}

	cmd.Process.Signal(syscall.SIGHUP)
	if l := waitLine(t, lines, `"event":"config"`); !strings.Contains(l, `"result":"unchanged"`) {
		t.Errorf("SIGHUP with nothing changed: got %s, want result unchanged", l)
	}

	writeKey(key2)
	cmd.Process.Signal(syscall.SIGHUP)
	waitLine(t, lines, `"result":"reloaded"`) // the watch or the signal, whichever is first
	rotated := time.Now()
	t2 := mintOne()
	if !signedBy(t2, key2) {
		t.Errorf("after rotating the key file: the new token is not signed by the new key")
	}
	set := jwks()
	if len(set.Keys) != 2 {
		t.Errorf("jwks.json after rotation: %d keys, want 2 (new and previous)", len(set.Keys))
	}
	if !verifies(set, t1) || !verifies(set, t2) {
		t.Errorf("jwks.json after rotation: old token verifies %v, new %v; want both", verifies(set, t1), verifies(set, t2))
	}
	// The signal is always answered: the SIGHUP after the reload (or the
	// reload's own SIGHUP, if the watch came first) logs a config event.
	cmd.Process.Signal(syscall.SIGHUP)
	if l := waitLine(t, lines, `"event":"config"`); !strings.Contains(l, `"result":"unchanged"`) && !strings.Contains(l, `"result":"reloaded"`) {
		t.Errorf("SIGHUP after the rotation: got %s, want a config event", l)
	}

	// Past ttl + leeway the previous key is gone.
	time.Sleep(time.Until(rotated.Add(ttl + leeway + 500*time.Millisecond)))
	set = jwks()
	if len(set.Keys) != 1 || verifies(set, t1) || !verifies(set, t2) {
		t.Errorf("jwks.json past ttl+leeway: %d keys, old token verifies %v; want only the new key", len(set.Keys), verifies(set, t1))
	}
}

func newECKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
