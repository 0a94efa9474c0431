package proxy

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func writeECKey(t *testing.T, path string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalECPrivateKey(k)
	renameSave(t, path, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})))
}

func keyConfig(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "config.yaml")
	writeFile(t, path, `listen: "127.0.0.1:0"
admin_listen: ""
trusted_proxies: [private]
upstream: {url: "http://127.0.0.1:1"}
mint: {private_key_file: mint.pem, kid: k1}
routes: [{name: a, match: {path: /a}, policy: {uuid: rewrite}}]
`)
	return path
}

// TestSIGHUPRereadsNamedFiles pins issue 14, point 1, without the file
// watch: a SIGHUP re-reads the files the config names, so a replaced mint
// key takes effect though config.yaml did not change, and every SIGHUP is
// answered with a config event.
func TestSIGHUPRereadsNamedFiles(t *testing.T) {
	dir := t.TempDir()
	writeECKey(t, filepath.Join(dir, "mint.pem"))
	h := startRunWatch(t, keyConfig(t, dir), false)
	before := h.srv().Snapshot().Minter.PublicJWK()

	h.reload <- struct{}{}
	waitUntil(t, 3*time.Second, "the unchanged event", func() bool { return h.logs.count(`"result":"unchanged"`) == 1 })

	writeECKey(t, filepath.Join(dir, "mint.pem"))
	h.reload <- struct{}{}
	waitUntil(t, 3*time.Second, "the reloaded event", func() bool { return h.logs.count(`"result":"reloaded"`) == 1 })
	if bytes.Equal(h.srv().Snapshot().Minter.PublicJWK(), before) {
		t.Error("after SIGHUP with a new key file: the old key still signs")
	}

	os.Remove(filepath.Join(dir, "mint.pem"))
	h.reload <- struct{}{}
	waitUntil(t, 3*time.Second, "the rejected event", func() bool { return h.logs.count(`"result":"rejected"`) == 1 })
	h.reload <- struct{}{} // the same broken state: still answered
	waitUntil(t, 3*time.Second, "a second rejected event", func() bool { return h.logs.count(`"result":"rejected"`) == 2 })
	if h.srv().Snapshot().Minter == nil {
		t.Error("after a rejected reload: the previous config stopped serving")
	}
}

// TestWatchNamedFiles: with the watch on, replacing the mint key file
// alone reloads (its directory is watched, and its content is part of
// the hash); a burst of events for content already loaded does not.
func TestWatchNamedFiles(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	os.Mkdir(keys, 0o755)
	writeECKey(t, filepath.Join(keys, "mint.pem"))
	path := filepath.Join(dir, "config.yaml")
	writeFile(t, path, `listen: "127.0.0.1:0"
admin_listen: ""
trusted_proxies: [private]
upstream: {url: "http://127.0.0.1:1"}
mint: {private_key_file: keys/mint.pem, kid: k1}
routes: [{name: a, match: {path: /a}, policy: {uuid: rewrite}}]
`)
	h := startRun(t, path)
	before := h.srv().Snapshot().Minter.PublicJWK()
	writeECKey(t, filepath.Join(keys, "mint.pem"))
	waitUntil(t, 3*time.Second, "a reload on the key file's change", func() bool { return h.logs.count(`"result":"reloaded"`) == 1 })
	if bytes.Equal(h.srv().Snapshot().Minter.PublicJWK(), before) {
		t.Error("the new key does not sign")
	}
	os.Chtimes(filepath.Join(keys, "mint.pem"), time.Now(), time.Now()) // an event, same content
	time.Sleep(500 * time.Millisecond)
	if n := h.logs.count(`"result":"reloaded"`) + h.logs.count(`"result":"rejected"`) + h.logs.count(`"result":"unchanged"`); n != 1 {
		t.Errorf("reload events: got %d, want 1: a touch is not a reload\n%s", n, h.logs.String())
	}
}
