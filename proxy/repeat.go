package proxy

import (
	"sync"
	"time"
)

// Repeat attempts of a refused legacy user (issue 23). A stale build
// that is told 4003 reconnects at once, forever: each attempt then costs
// a WebSocket handshake and a closing handshake (101, a close frame, the
// client's close frame) where nginx's rule would answer one 403. The
// first repeatCloseFrames refusals of one user from one client address
// on one route within a minute are close frames, so the browser code can
// read 4003 and any fixed build stops; past them, until the minute is
// over, the same decision is answered before the upgrade with the status
// and JSON body a reject_with: http route gets (403; no 101: the browser
// sees 1006, which the client module backs off on). The same holds for a
// client the rate limiter refuses (4029, then 429), whatever its token.
// The decision and its log line are the same either way, with status in
// place of close_code.
const (
	repeatCloseFrames = 3
	repeatWindow      = time.Minute
	// maxRepeatEntries bounds the table however many users and addresses
	// appear (about 120 bytes each); when it is full, a new key is
	// answered with close frames and not remembered.
	maxRepeatEntries = 100_000
)

type repeatKey struct{ ip, route, user string }

type repeatEntry struct {
	since time.Time // the window's start
	n     int       // close frames sent in it
}

// repeatRefusals counts the close frames sent per key and window.
type repeatRefusals struct {
	mu      sync.Mutex
	entries map[repeatKey]repeatEntry
	swept   time.Time
}

func newRepeatRefusals() *repeatRefusals {
	return &repeatRefusals{entries: map[repeatKey]repeatEntry{}}
}

// closeFrame reports whether this refusal of k at now gets a close frame
// (and counts it) or is a repeat past the allowance, to be answered
// before the upgrade.
func (t *repeatRefusals) closeFrame(k repeatKey, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.entries[k]
	if !ok || now.Sub(e.since) >= repeatWindow || now.Before(e.since) {
		t.sweep(now)
		if len(t.entries) >= maxRepeatEntries {
			return true
		}
		t.entries[k] = repeatEntry{since: now, n: 1}
		return true
	}
	if e.n >= repeatCloseFrames {
		return false
	}
	e.n++
	t.entries[k] = e
	return true
}

// sweep drops the entries whose window is over, at most once a second.
// Called with mu held.
func (t *repeatRefusals) sweep(now time.Time) {
	if now.Sub(t.swept) < time.Second {
		return
	}
	t.swept = now
	for k, e := range t.entries {
		if now.Sub(e.since) >= repeatWindow {
			delete(t.entries, k)
		}
	}
}

func (t *repeatRefusals) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.entries)
}
