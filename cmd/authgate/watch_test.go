package main

import (
	"bytes"
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
)

// Issue 22: a file written without pause beside the config (authgate's
// own log, under traffic) must neither delay nor trigger a reload. These
// tests run `authgate serve` as a process with such a neighbour and time
// the reload of a real save from the moment the save is done.

// maxReloadDelay is issue 22's bar: a save is in force within a second.
const maxReloadDelay = time.Second

// watchConfigYAML is a config whose uuid action is the variable part:
// rewrite before a save, reject after it.
func watchConfigYAML(port int, upstream, uuidAction string) string {
	return fmt.Sprintf(`listen: "127.0.0.1:%d"
admin_listen: ""
shutdown_timeout: 3s
upstream: {url: "%s"}
verify: {hs256_secret: "%s", algorithms: [HS256]}
mint: {hs256_secret: "%s"}
rate_limit: {per_minute: 0}
routes:
  - name: api
    match: {prefix: /api/}
    token: {from: [header:authorization]}
    policy: {uuid: %s}
`, port, upstream, exampleSecret, exampleSecret, uuidAction)
}

// logTail follows a log file as authgate writes it, noting when each line
// was first seen.
type logTail struct {
	mu    sync.Mutex
	lines []string
	seen  []time.Time
	stop  chan struct{}
	done  chan struct{}
}

func tailFile(t *testing.T, path string) *logTail {
	lt := &logTail{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(lt.done)
		var off int64
		var partial []byte
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for range 12000 { // a minute at most
			if f, err := os.Open(path); err == nil {
				f.Seek(off, io.SeekStart)
				b, _ := io.ReadAll(f)
				f.Close()
				off += int64(len(b))
				partial = append(partial, b...)
				now := time.Now()
				for {
					i := bytes.IndexByte(partial, '\n')
					if i < 0 {
						break
					}
					lt.mu.Lock()
					lt.lines = append(lt.lines, string(partial[:i]))
					lt.seen = append(lt.seen, now)
					lt.mu.Unlock()
					partial = partial[i+1:]
				}
			}
			select {
			case <-lt.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(lt.close)
	return lt
}

func (lt *logTail) close() {
	select {
	case <-lt.stop:
	default:
		close(lt.stop)
	}
	<-lt.done
}

// wait returns when the first line containing substr (after the first
// skip such lines) was seen, or fails after 10 s.
func (lt *logTail) wait(t *testing.T, substr string, skip int) time.Time {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		lt.mu.Lock()
		n := 0
		for i, l := range lt.lines {
			if strings.Contains(l, substr) {
				if n == skip {
					at := lt.seen[i]
					lt.mu.Unlock()
					return at
				}
				n++
			}
		}
		lt.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no line %d with %s within 10s:\n%s", skip+1, substr, lt.String())
	return time.Time{}
}

// configEvents lists the result of every config event so far.
func (lt *logTail) configEvents() []string {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	var out []string
	for _, l := range lt.lines {
		if strings.Contains(l, `"event":"config"`) && strings.Contains(l, `"result":`) {
			r := l[strings.Index(l, `"result":"`)+len(`"result":"`):]
			out = append(out, r[:strings.IndexByte(r, '"')])
		}
	}
	return out
}

func (lt *logTail) String() string {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	return strings.Join(lt.lines, "\n")
}

// startServeLogged runs `authgate serve --config cfg` with its log going
// to logPath, and stops it with SIGTERM at the end of the test.
func startServeLogged(t *testing.T, cfg, logPath string) *logTail {
	t.Helper()
	out, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := authgate("serve", "--config", cfg)
	cmd.Stdout = out
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	out.Close()
	lt := tailFile(t, logPath)
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("serve did not stop within 10s of SIGTERM")
		}
		if strings.Contains(stderr.String(), "panic") {
			t.Errorf("stderr: %s", stderr.String())
		}
	})
	lt.wait(t, `"event":"start"`, 0)
	return lt
}

// neighbour appends a line to path every 10 ms until stopped (5 s at
// most), as a busy log file beside the config does.
func neighbour(t *testing.T, path string) (stop func()) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		defer f.Close()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := range 500 {
			fmt.Fprintf(f, "neighbour line %d\n", i)
			select {
			case <-quit:
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { close(quit); <-done }) }
	t.Cleanup(stop)
	return stop
}

// renameSave writes content to path the way editors and deploy tools do:
// a temporary file in the same directory, renamed over path.
func renameSave(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".swp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// swapData points dir/..data at a new directory holding config.yaml, the
// way the kubelet updates a ConfigMap volume: write ..NAME, link
// ..data_tmp to it, rename the link over ..data, remove the old one.
func swapData(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name, "config.yaml"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	if err := os.Symlink(name, filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if old != "" {
		os.RemoveAll(filepath.Join(dir, old))
	}
}

func TestWatchBusyNeighbour(t *testing.T) {
	t.Run("rename-save", func(t *testing.T) {
		dir := t.TempDir()
		port := freePort(t)
		cfg := filepath.Join(dir, "config.yaml")
		renameSave(t, cfg, watchConfigYAML(port, "http://127.0.0.1:1", "rewrite"))
		lt := startServeLogged(t, cfg, filepath.Join(t.TempDir(), "authgate.log"))

		// The baseline: a save in a quiet directory.
		renameSave(t, cfg, watchConfigYAML(port, "http://127.0.0.1:1", "reject"))
		saved := time.Now()
		delay := lt.wait(t, `"result":"reloaded"`, 0).Sub(saved)
		t.Logf("reload delay in a quiet directory: %v", delay.Round(time.Millisecond))
		if delay > maxReloadDelay {
			t.Errorf("reload delay in a quiet directory: got %v, want at most %v", delay, maxReloadDelay)
		}

		stop := neighbour(t, filepath.Join(dir, "neighbour.log"))
		time.Sleep(time.Second)
		if got := lt.configEvents(); strings.Join(got, ",") != "loaded,reloaded" {
			t.Errorf("config events after 1 s of neighbour writes: got %v, want only [loaded reloaded]", got)
		}
		renameSave(t, cfg, watchConfigYAML(port, "http://127.0.0.1:1", "rewrite"))
		saved = time.Now()
		delay = lt.wait(t, `"result":"reloaded"`, 1).Sub(saved)
		t.Logf("reload delay with a neighbour written every 10 ms: %v", delay.Round(time.Millisecond))
		if delay > maxReloadDelay {
			t.Errorf("reload delay under a busy neighbour: got %v, want at most %v", delay, maxReloadDelay)
		}
		time.Sleep(1500 * time.Millisecond) // the neighbour goes on
		stop()
		time.Sleep(300 * time.Millisecond)
		if got := lt.configEvents(); strings.Join(got, ",") != "loaded,reloaded,reloaded" {
			t.Errorf("config events: got %v, want [loaded reloaded reloaded]: one reload a save; neighbour writes none", got)
		}
	})

	t.Run("symlink swap after a rejected config", func(t *testing.T) {
		dir := t.TempDir()
		port := freePort(t)
		swapData(t, dir, "..v1", watchConfigYAML(port, "http://127.0.0.1:1", "rewrite"))
		cfg := filepath.Join(dir, "config.yaml")
		if err := os.Symlink("..data/config.yaml", cfg); err != nil {
			t.Fatal(err)
		}
		lt := startServeLogged(t, cfg, filepath.Join(t.TempDir(), "authgate.log"))

		stop := neighbour(t, filepath.Join(dir, "neighbour.log"))
		time.Sleep(500 * time.Millisecond)
		swapData(t, dir, "..v2", "listen: [broken\n")
		saved := time.Now()
		delay := lt.wait(t, `"result":"rejected"`, 0).Sub(saved)
		if delay > maxReloadDelay {
			t.Errorf("a broken swap answered after %v, want at most %v", delay, maxReloadDelay)
		}
		time.Sleep(500 * time.Millisecond)
		swapData(t, dir, "..v3", watchConfigYAML(port, "http://127.0.0.1:1", "reject"))
		saved = time.Now()
		delay = lt.wait(t, `"result":"reloaded"`, 0).Sub(saved)
		t.Logf("reload delay of a symlink swap after a rejected config, neighbour busy: %v", delay.Round(time.Millisecond))
		if delay > maxReloadDelay {
			t.Errorf("reload delay of the fixing swap: got %v, want at most %v", delay, maxReloadDelay)
		}
		time.Sleep(time.Second)
		stop()
		time.Sleep(300 * time.Millisecond)
		if got := lt.configEvents(); strings.Join(got, ",") != "loaded,rejected,reloaded" {
			t.Errorf("config events: got %v, want [loaded rejected reloaded]", got)
		}
	})

	t.Run("own log as the neighbour", func(t *testing.T) {
		var backendHits sync.Map
		backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			backendHits.Store(r.Header.Get("X-Request-Id"), true)
		}))
		defer backend.Close()
		dir := t.TempDir()
		port := freePort(t)
		cfg := filepath.Join(dir, "config.yaml")
		renameSave(t, cfg, watchConfigYAML(port, backend.URL, "rewrite"))
		lt := startServeLogged(t, cfg, filepath.Join(dir, "authgate.log"))

		// 200 requests a second with a legacy UUID for 5 s: rewritten
		// (200) before the save, rejected (403) after it.
		type result struct {
			at     time.Time
			status int
		}
		results := make(chan result, 1100)
		quit := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(results)
			client := &http.Client{Timeout: 5 * time.Second}
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for range 1000 {
				req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/api/me", port), nil)
				req.Header.Set("Authorization", "Bearer 21a2151a-cd37-41d5-a1c7-124bb05e7a6a")
				resp, err := client.Do(req)
				if err != nil {
					results <- result{time.Now(), 0}
				} else {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					results <- result{time.Now(), resp.StatusCode}
				}
				select {
				case <-quit:
					return
				case <-tick.C:
				}
			}
		}()
		time.Sleep(1500 * time.Millisecond)
		if got := lt.configEvents(); len(got) != 1 {
			t.Errorf("config events while only the log is written: got %v, want only [loaded]", got)
		}
		renameSave(t, cfg, watchConfigYAML(port, backend.URL, "reject"))
		saved := time.Now()
		reloaded := lt.wait(t, `"result":"reloaded"`, 0)
		time.Sleep(1500 * time.Millisecond)
		close(quit)
		wg.Wait()

		var firstReject time.Time
		var before, after, failed int
		for r := range results {
			switch {
			case r.status == 200 && firstReject.IsZero():
				before++
			case r.status == 403:
				if firstReject.IsZero() {
					firstReject = r.at
				}
				after++
			default:
				failed++
			}
		}
		first := "never"
		if !firstReject.IsZero() {
			first = firstReject.Sub(saved).Round(time.Millisecond).String()
		}
		t.Logf("%d requests rewritten before the save, %d rejected after; reload logged %v and first 403 %s after the save",
			before, after, reloaded.Sub(saved).Round(time.Millisecond), first)
		if failed > 0 || before < 100 || after < 100 {
			t.Errorf("requests: %d rewritten, %d rejected, %d other: want every request answered, 200 before the save and 403 after", before, after, failed)
		}
		if d := reloaded.Sub(saved); d > maxReloadDelay {
			t.Errorf("reload delay with the log as the neighbour: got %v, want at most %v", d, maxReloadDelay)
		}
		if d := firstReject.Sub(saved); firstReject.IsZero() || d > maxReloadDelay {
			t.Errorf("the new policy decided %s after the save, want at most %v", first, maxReloadDelay)
		}
		if got := lt.configEvents(); strings.Join(got, ",") != "loaded,reloaded" {
			t.Errorf("config events: got %v, want [loaded reloaded]", got)
		}
	})
}
