//go:build e2e

package e2e

import (
	"syscall"
	"testing"
	"time"
)

// TestLifecycle: an open WebSocket is closed by authgate at its JWT's exp
// (4002), at a stage's until that turns UUIDs to reject (4003, without a
// reload), and on SIGTERM (1012), after which authgate exits 0.
func TestLifecycle(t *testing.T) {
	be := startBackend(t)
	until := time.Now().Add(5 * time.Second).Truncate(time.Second).Add(time.Second)
	g := startGate(t, gateParams{Upstream: be.URL(), Leeway: "0s",
		UUID: "[{until: " + until.UTC().Format(time.RFC3339) + ", action: rewrite}, {action: reject}]"})
	short := mint(t, 3*time.Second, "short-lived")[0]
	exp := time.Now().Add(3 * time.Second).Truncate(time.Second)
	long := mint(t, time.Hour, "long-lived")[0]

	_, shortConn := expectHello(t, g.ws("token="+short), nil)
	_, legacyConn := expectHello(t, g.ws("token="+legacyUser), nil)
	_, longConn := expectHello(t, g.ws("token="+long), nil)

	waitClose := func(c *wsClient, code int, reason string, want time.Time) {
		t.Helper()
		_, err := c.next(time.Until(want) + 5*time.Second)
		var ce *closeErr
		if !asCloseErr(err, &ce) || ce.Code != code || ce.Reason != reason {
			t.Fatalf("want close %d %q, got %v", code, reason, err)
		}
		late := time.Since(want)
		t.Logf("closed with %d %v after the deadline", code, late.Round(time.Millisecond))
		if late < -time.Second || late > 1500*time.Millisecond {
			t.Errorf("closed with %d at %v from its deadline; want within a second", code, late)
		}
	}
	waitClose(shortConn, 4002, reason4002, exp)
	waitClose(legacyConn, 4003, reason4003, until)
	expectClose(t, g.ws("token="+legacyUser), nil, 4003, reason4003)

	if err := longConn.sendText("still open"); err != nil {
		t.Fatal(err)
	}
	if m, err := longConn.next(5 * time.Second); err != nil || m != "still open" {
		t.Fatalf("long-lived connection: %q %v", m, err)
	}
	g.cmd.Process.Signal(syscall.SIGTERM)
	_, err := longConn.next(10 * time.Second)
	var ce *closeErr
	if !asCloseErr(err, &ce) || ce.Code != 1012 {
		t.Fatalf("on SIGTERM: want close 1012, got %v", err)
	}
	select {
	case <-g.done:
	case <-time.After(15 * time.Second):
		t.Fatal("authgate did not exit after SIGTERM")
	}
	if g.exitErr != nil {
		t.Fatalf("authgate exited with %v", g.exitErr)
	}
	if stops := g.logEvents(t, "stop"); len(stops) != 1 || stops[0]["websockets_closed"] != 1.0 {
		t.Errorf("stop events: %v", stops)
	}
}
