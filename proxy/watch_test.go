package proxy

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestLinkChain: the names a watch needs for a Kubernetes-style volume
// (config.yaml -> ..data/config.yaml, ..data -> ..2026_12_06): both links
// by the paths they are met at, and the real file.
func TestLinkChain(t *testing.T) {
	dir := t.TempDir()
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	os.Mkdir(filepath.Join(dir, "..2026_12_06"), 0o755)
	os.WriteFile(filepath.Join(dir, "..2026_12_06", "config.yaml"), []byte("x"), 0o644)
	os.Symlink("..2026_12_06", filepath.Join(dir, "..data"))
	os.Symlink("..data/config.yaml", filepath.Join(dir, "config.yaml"))
	os.Symlink(filepath.Join(dir, "nowhere", "key.pem"), filepath.Join(dir, "dangling.pem"))

	tests := []struct {
		name, path string
		links      []string
		final      string
	}{
		{"plain file", filepath.Join(dir, "..2026_12_06", "config.yaml"), nil, filepath.Join(dir, "..2026_12_06", "config.yaml")},
		{"two links", filepath.Join(dir, "config.yaml"),
			[]string{filepath.Join(dir, "config.yaml"), filepath.Join(dir, "..data")},
			filepath.Join(dir, "..2026_12_06", "config.yaml")},
		{"through a linked directory", filepath.Join(dir, "..data", "config.yaml"),
			[]string{filepath.Join(dir, "..data")}, filepath.Join(dir, "..2026_12_06", "config.yaml")},
		{"missing", filepath.Join(dir, "missing.yaml"), nil, filepath.Join(dir, "missing.yaml")},
		{"dangling link", filepath.Join(dir, "dangling.pem"),
			[]string{filepath.Join(dir, "dangling.pem")}, filepath.Join(dir, "nowhere", "key.pem")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			links, final := linkChain(tt.path)
			if !slices.Equal(links, tt.links) || final != tt.final {
				t.Errorf("linkChain(%s): got %v, %s; want %v, %s", tt.path, links, final, tt.links, tt.final)
			}
		})
	}

	t.Run("loop", func(t *testing.T) {
		os.Symlink("b", filepath.Join(dir, "a"))
		os.Symlink("a", filepath.Join(dir, "b"))
		links, _ := linkChain(filepath.Join(dir, "a"))
		if len(links) != maxLinkHops {
			t.Errorf("a symlink loop: %d hops, want the walk to stop at %d", len(links), maxLinkHops)
		}
	})
}

// TestWatchDebounceBounded pins issue 22's second point: the watched file
// itself written every 10 ms for 2 s still reloads within a second of the
// first write, and again after the last; a burst of three quick writes is
// one reload; writes to a neighbour are none.
func TestWatchDebounceBounded(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	os.WriteFile(path, []byte("v0"), 0o644)
	reload := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := watchConfig(ctx, []string{path}, reload, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	count := func(d time.Duration) int {
		n := 0
		deadline := time.After(d)
		for {
			select {
			case <-reload:
				n++
			case <-deadline:
				return n
			}
		}
	}

	t.Run("neighbour only", func(t *testing.T) {
		for i := range 50 {
			os.WriteFile(filepath.Join(dir, "authgate.log"), []byte{byte(i)}, 0o644)
			time.Sleep(10 * time.Millisecond)
		}
		if n := count(300 * time.Millisecond); n != 0 {
			t.Errorf("neighbour writes: got %d reloads, want 0", n)
		}
	})

	t.Run("burst", func(t *testing.T) {
		for i := range 3 {
			os.WriteFile(path, []byte{byte(i)}, 0o644)
		}
		if n := count(400 * time.Millisecond); n != 1 {
			t.Errorf("three writes in a row: got %d reloads, want 1", n)
		}
	})

	t.Run("continuous", func(t *testing.T) {
		// Reloads are timed as they come, by a reader of their own.
		var mu sync.Mutex
		var at []time.Time
		quit, done := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-reload:
					mu.Lock()
					at = append(at, time.Now())
					mu.Unlock()
				case <-quit:
					return
				}
			}
		}()
		start := time.Now()
		for i := range 200 {
			os.WriteFile(path, []byte{byte(i)}, 0o644)
			time.Sleep(10 * time.Millisecond)
		}
		last := time.Now()
		time.Sleep(700 * time.Millisecond)
		close(quit)
		<-done
		if len(at) == 0 || at[0].Sub(start) > time.Second {
			t.Fatalf("the watched file written every 10 ms for 2 s: reloads at %v, want the first within 1s", at)
		}
		// One reload every watchMaxDelay at most while the writes go
		// on, and one (two if the last write's event came just after
		// a capped one) once they end, reading the final content.
		after := 0
		for _, a := range at {
			if a.After(last) {
				after++
			}
		}
		if after < 1 || after > 2 || len(at) > int(last.Sub(start)/watchMaxDelay)+2 {
			t.Errorf("reloads: %d in all, %d after the last write; want one per %v while writing and 1 or 2 after", len(at), after, watchMaxDelay)
		}
	})
}
