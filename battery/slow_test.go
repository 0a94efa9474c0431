package battery

import (
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestSlow runs the cases bounded by authgate's fixed timeouts (read
// header 10 s, relay write 10 s, upgrade 15 s) side by side.
func TestSlow(t *testing.T) {
	beginTest(t)
	_, in := rawProxy(t)
	runGroup(t, true, []tcase{
		{
			name:   "slowloris",
			attack: "300 connections dribbling one header byte each every 500 ms",
			want: "normal HTTP requests and WebSocket echoes meanwhile answer within 2 s; the slow connections are closed " +
				"by the 10 s read-header timeout (checked at 12 s)",
			run: slowloris,
		},
		{
			name:   "client-stops-reading",
			attack: "the upstream floods 64 KiB messages while the client never reads",
			want: "memory stays bounded (heap growth < 64 MiB, backend blocked by backpressure); after the relay's 10 s write " +
				"timeout (upstream.write_timeout's default) the connection is dropped: ws_close closed_by authgate 'stopped reading', within 14 s",
			run: flood,
		},
		{
			name:   "upstream-never-answers-upgrade",
			attack: "the upstream accepts TCP and never answers the upgrade (dial_timeout 1s does not apply: the dial succeeded)",
			want:   "101 then close 1014 after the config's upgrade_timeout of 3 s (between 2.8 and 5 s); upstream_error kind timeout",
			run: func(t *testing.T) {
				start := time.Now()
				rc := rawUpgrade(t, in.addr, "/raw/hang?token="+hsJWT("hang"), "")
				defer rc.Close()
				cr := awaitClose(rc, 5*time.Second)
				d := time.Since(start)
				if cr.code != 1014 {
					t.Errorf("got %+v, want close 1014", cr)
				}
				if d < 2800*time.Millisecond || d > 5*time.Second {
					t.Errorf("answered after %v, want about 3 s (upstream.upgrade_timeout)", d)
				}
				if e := findEvent(in.logs, "upstream_error", map[string]any{"kind": "timeout"}, time.Second); e == nil {
					t.Errorf("no upstream_error event of kind timeout")
				}
			},
		},
	})
}

func slowloris(t *testing.T) {
	addr := h.main.addr
	const n = 300
	start := time.Now()
	var conns []net.Conn
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		defer c.Close()
		c.SetWriteDeadline(time.Now().Add(time.Second))
		io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nX-Slow: ")
		conns = append(conns, c)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the dribbler
		defer wg.Done()
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				for _, c := range conns {
					c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
					c.Write([]byte("a"))
				}
			}
		}
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	// Normal clients meanwhile.
	for i := 0; i < 5; i++ {
		t0 := time.Now()
		if o := tryHTTP(t, addr, "/api/x", "Authorization: Bearer "+hsJWT("slowloris http")+"\r\n"); o.status != 200 {
			t.Errorf("normal request %d: got %v, want 200", i, o)
		}
		c, _, err := wsDial(t, "ws://"+addr+"/ws?token="+hsJWT("slowloris ws"), nil)
		if err != nil {
			t.Errorf("normal websocket %d: %v", i, err)
		} else {
			if err := echoOnce(c, "normal"); err != nil {
				t.Errorf("normal websocket %d: %v", i, err)
			}
			closeWS(c)
		}
		if d := time.Since(t0); d > 2*time.Second {
			t.Errorf("normal clients took %v during slowloris, want under 2s", d)
		}
		time.Sleep(400 * time.Millisecond)
	}
	time.Sleep(time.Until(start.Add(12 * time.Second)))
	close(stop)
	wg.Wait()
	open := 0
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		b, err := io.ReadAll(c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			open++
			continue
		}
		if len(b) > 0 && !strings.HasPrefix(string(b), "HTTP/1.1 408") {
			t.Errorf("a slow connection got %.60q", b)
		}
	}
	if open > 0 {
		t.Errorf("%d of %d slowloris connections still open 12 s after they started, want 0", open, n)
	}
}

func flood(t *testing.T) {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	hdr := map[string][]string{"X-Case": {"flood-1"}, "X-Request-Id": {"flood-1"}}
	start := time.Now()
	c, _, err := wsDial(t, "ws://"+h.main.addr+"/ws?token="+hsJWT("flood"), hdr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var peak uint64
	var ev map[string]any
	for time.Since(start) < 15*time.Second {
		runtime.ReadMemStats(&ms)
		if ms.HeapInuse > peak {
			peak = ms.HeapInuse
		}
		if ev = findEvent(h.main.logs, "ws_close", map[string]any{"request_id": "flood-1"}, 0); ev != nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	d := time.Since(start)
	if ev == nil {
		t.Fatalf("no ws_close after %v", d)
	}
	if ev["closed_by"] != "authgate" || !strings.Contains(ev["reason"].(string), "stopped reading") {
		t.Errorf("ws_close %v: want closed_by authgate, reason 'stopped reading'", ev)
	}
	if d > 14*time.Second {
		t.Errorf("dropped after %v, want within 14 s", d)
	}
	if grow := int64(peak) - int64(base); grow > 64<<20 {
		t.Errorf("heap grew by %d MiB while the client did not read", grow>>20)
	}
	written := h.backend.floodWritten.Load()
	if written > 64<<20 {
		t.Errorf("the backend wrote %d MiB: no backpressure", written>>20)
	}
	t.Logf("dropped after %v; backend wrote %d KiB; heap peak +%d KiB", d.Round(time.Millisecond), written>>10, (int64(peak)-int64(base))>>10)
	select {
	case <-h.backend.floodDone:
	case <-time.After(20 * time.Second):
		t.Errorf("the backend's flood did not end")
	}
	// The client's connection is closed: draining it ends, not in a timeout.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := c.NextReader()
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("client connection still open: %v", err)
		}
		break
	}
	_ = websocket.BinaryMessage
}
