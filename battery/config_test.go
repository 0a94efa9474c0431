package battery

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"authgate/policy"
	"authgate/proxy"
)

// runYAML is the file-based config; %s is a comment that makes versions
// differ by content (the reloader skips content it has already seen).
const runYAML = `# version %s
listen: "127.0.0.1:0"
admin_listen: ""
shutdown_timeout: 5s
upstream:
  url: "${UP}"
verify:
  hs256_secret: "${SECRET}"
rate_limit: {per_minute: 0}
unmatched: reject
routes:
  - name: ws
    match: {path: /ws, websocket: true}
    token: {from: [query:token]}
  - name: api
    match: {prefix: /api/, websocket: false}
    token: {from: [header:authorization]}
    reject_with: http
`

// runningProxy is proxy.Run on a config file.
type runningProxy struct {
	path   string
	logs   *lockedBuf
	addr   string
	reload chan struct{}
	cancel context.CancelFunc
	done   chan error
}

func startRun(t *testing.T, dir string) *runningProxy {
	t.Helper()
	rp := &runningProxy{path: filepath.Join(dir, "authgate.yaml"), logs: newLogBuf(), reload: make(chan struct{}), done: make(chan error, 1)}
	writeAtomic(t, rp.path, fmt.Sprintf(runYAML, "v1"))
	env := rawEnv(h.backend.srv.URL)
	ready := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	rp.cancel = cancel
	go func() {
		rp.done <- proxy.Run(ctx, proxy.RunOptions{
			ConfigPath: rp.path,
			Load: func(p string) (*policy.Snapshot, error) {
				return policy.Load(p, policy.Options{LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }})
			},
			Logs:   rp.logs,
			Reload: rp.reload,
			Watch:  true,
			Ready:  func(pub, _ net.Addr) { ready <- pub.String() },
		})
	}()
	select {
	case rp.addr = <-ready:
	case err := <-rp.done:
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run not ready after 10s")
	}
	return rp
}

func (rp *runningProxy) stop(t *testing.T) {
	rp.cancel()
	select {
	case err := <-rp.done:
		rp.done <- nil // for the group's cleanup
		if err != nil {
			t.Errorf("Run returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("Run did not return 10s after cancel")
	}
}

// writeAtomic replaces path by rename, as editors do.
func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// countConfig counts config events with result.
func countConfig(b *lockedBuf, result string) int {
	n := 0
	for _, e := range events(b.String()) {
		if e["event"] == "config" && e["result"] == result {
			n++
		}
	}
	return n
}

// waitConfig waits until there are more than before config events of result.
func waitConfig(b *lockedBuf, result string, before int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if countConfig(b, result) > before {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// TestConfigFile: the config file broken in every way while authgate runs.
func TestConfigFile(t *testing.T) {
	beginTest(t)
	var rp *runningProxy
	var ws *websocket.Conn
	dir := t.TempDir() // the group's, not a row's: it must outlive "start"
	defer func() {     // a row that failed early must not leave Run behind
		if rp != nil {
			rp.cancel()
			select {
			case <-rp.done:
			case <-time.After(10 * time.Second):
			}
		}
		if ws != nil {
			ws.Close()
		}
	}()
	serving := func(t *testing.T) {
		t.Helper()
		if rp == nil || ws == nil {
			t.Fatal("the proxy did not start")
		}
		if o := tryHTTP(t, rp.addr, "/api/x", "Authorization: Bearer "+hsJWT("config serving")+"\r\n"); o.status != 200 {
			t.Errorf("a valid request got %v, want 200: the old policy must keep serving", o)
		}
		if err := echoOnce(ws, "still-open"); err != nil {
			t.Errorf("open websocket broken: %v", err)
		}
	}
	rejectedAfter := func(t *testing.T, mutate func(t *testing.T)) {
		t.Helper()
		before := countConfig(rp.logs, "rejected")
		mutate(t)
		select {
		case rp.reload <- struct{}{}: // SIGHUP too, in case the watcher missed it
		case <-time.After(2 * time.Second):
		}
		if !waitConfig(rp.logs, "rejected", before, 3*time.Second) {
			t.Errorf("no config event with result rejected")
		}
		serving(t)
	}
	runGroup(t, false, []tcase{
		{
			name:   "start",
			attack: "proxy.Run with Watch on a valid config file, one open WebSocket",
			want:   "config loaded; requests served",
			run: func(t *testing.T) {
				rp = startRun(t, dir)
				var err error
				ws, _, err = wsDial(t, "ws://"+rp.addr+"/ws?token="+hsJWT("config ws"), nil)
				if err != nil {
					t.Fatal(err)
				}
				serving(t)
			},
		},
		{
			name:   "file-deleted",
			attack: "the config file is deleted",
			want:   "config event rejected (cannot read config); the old policy keeps serving; the open WebSocket stays",
			run:    func(t *testing.T) { rejectedAfter(t, func(t *testing.T) { os.Remove(rp.path) }) },
		},
		{
			name:   "file-restored",
			attack: "a valid config is written back",
			want:   "config event reloaded",
			run: func(t *testing.T) {
				before := countConfig(rp.logs, "reloaded")
				writeAtomic(t, rp.path, fmt.Sprintf(runYAML, "v2"))
				if !waitConfig(rp.logs, "reloaded", before, 3*time.Second) {
					t.Errorf("no config event with result reloaded")
				}
				serving(t)
			},
		},
		{
			name:   "file-truncated-empty",
			attack: "the config file is truncated to 0 bytes in place",
			want:   "rejected (config is empty); old policy serves",
			run:    func(t *testing.T) { rejectedAfter(t, func(t *testing.T) { os.Truncate(rp.path, 0) }) },
		},
		{
			name:   "file-truncated-half",
			attack: "the config file is cut in the middle of a line",
			want:   "rejected; old policy serves",
			run: func(t *testing.T) {
				full := fmt.Sprintf(runYAML, "v3")
				rejectedAfter(t, func(t *testing.T) { os.WriteFile(rp.path, []byte(full[:len(full)/2+7]), 0o644) })
			},
		},
		{
			name:   "file-unreadable",
			attack: "a valid new config, then chmod 000",
			want: "as root (this machine) the file stays readable, so the new config is reloaded, not rejected; as another user " +
				"it would be rejected (permission denied). Either way the old or new policy serves",
			run: func(t *testing.T) {
				writeAtomic(t, rp.path, fmt.Sprintf(runYAML, "v4"))
				os.Chmod(rp.path, 0)
				defer os.Chmod(rp.path, 0o644)
				rp.reload <- struct{}{}
				time.Sleep(300 * time.Millisecond)
				if _, err := os.ReadFile(rp.path); err == nil {
					t.Logf("chmod 000 does not stop reads here (running as root): the content was loaded")
					if !waitConfig(rp.logs, "reloaded", 1, 3*time.Second) {
						t.Errorf("v4 was not reloaded")
					}
				} else if !waitConfig(rp.logs, "rejected", 0, 3*time.Second) {
					t.Errorf("unreadable file not rejected")
				}
				serving(t)
			},
		},
		{
			name:   "file-replaced-by-directory",
			attack: "the config file is removed and a directory of the same name created",
			want:   "rejected (is a directory); old policy serves",
			run: func(t *testing.T) {
				rejectedAfter(t, func(t *testing.T) {
					os.Remove(rp.path)
					os.Mkdir(rp.path, 0o755)
				})
				os.Remove(rp.path)
				writeAtomic(t, rp.path, fmt.Sprintf(runYAML, "v5"))
			},
		},
		{
			name:   "sighup-storm",
			attack: "100 reload requests within a second while the file alternates between two valid versions, under HTTP and WebSocket traffic",
			want:   "every request 200, the open WebSocket echoes throughout, no rejected config, at least one reload",
			run: func(t *testing.T) {
				reloadsBefore := countConfig(rp.logs, "reloaded")
				rejectedBefore := countConfig(rp.logs, "rejected")
				stop := make(chan struct{})
				var wg sync.WaitGroup
				var once sync.Once
				halt := func() { once.Do(func() { close(stop) }); wg.Wait() }
				defer halt()
				var failed, served atomic.Int64
				for w := 0; w < 3; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						tok := hsJWT("storm")
						for {
							select {
							case <-stop:
								return
							default:
							}
							if tryHTTPQuiet(rp.addr, "/api/x", "Authorization: Bearer "+tok+"\r\n") != 200 {
								failed.Add(1)
							}
							served.Add(1)
						}
					}()
				}
				var wsErr error
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						if err := echoOnce(ws, fmt.Sprintf("storm-%d", i)); err != nil {
							wsErr = err
							return
						}
					}
				}()
				start := time.Now()
				for i := 0; i < 100; i++ {
					if i%10 == 0 {
						writeAtomic(t, rp.path, fmt.Sprintf(runYAML, fmt.Sprintf("storm-%d", i%20)))
					}
					select {
					case rp.reload <- struct{}{}:
					case <-time.After(time.Second):
						t.Errorf("reload %d not taken within 1s", i)
					}
					time.Sleep(5 * time.Millisecond)
				}
				took := time.Since(start)
				time.Sleep(300 * time.Millisecond)
				halt()
				t.Logf("100 reload requests sent in %v; %d requests served meanwhile", took.Round(time.Millisecond), served.Load())
				if failed.Load() > 0 || served.Load() == 0 {
					t.Errorf("%d of %d requests failed during the storm", failed.Load(), served.Load())
				}
				if wsErr != nil {
					t.Errorf("websocket during the storm: %v", wsErr)
				}
				if countConfig(rp.logs, "rejected") != rejectedBefore {
					t.Errorf("a valid config was rejected during the storm")
				}
				if countConfig(rp.logs, "reloaded") <= reloadsBefore {
					t.Errorf("no reload during the storm")
				}
			},
		},
		{
			name:   "shutdown",
			attack: "cancel Run's context with the WebSocket open",
			want:   "the WebSocket gets close 1012; Run returns nil; a stop event",
			run: func(t *testing.T) {
				rp.cancel()
				code, _, err := wsCloseCode(ws, 5*time.Second)
				if code != 1012 {
					t.Errorf("websocket got %d %v, want close 1012", code, err)
				}
				ws.Close()
				rp.stop(t)
				if e := findEvent(rp.logs, "stop", nil, time.Second); e == nil {
					t.Errorf("no stop event")
				}
			},
		},
	})
}
