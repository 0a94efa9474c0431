package proxy

import (
	"fmt"
	"testing"
	"time"
)

// TestRepeatRefusals: per client address, route and user, the first
// repeatCloseFrames refusals in a minute get close frames and the rest of
// the minute does not; a new minute starts over; other keys are apart;
// the table stays bounded.
func TestRepeatRefusals(t *testing.T) {
	tr := newRepeatRefusals()
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	k := repeatKey{"203.0.113.7", "pam-ws", "21a2151a-cd37-41d5-a1c7-124bb05e7a6a"}
	var got []bool
	for i := range 6 {
		got = append(got, tr.closeFrame(k, t0.Add(time.Duration(i)*time.Second)))
	}
	if want := "[true true true false false false]"; fmt.Sprint(got) != want {
		t.Errorf("six refusals within a minute: close frames %v, want %s", got, want)
	}
	for _, other := range []repeatKey{
		{"203.0.113.8", k.route, k.user},
		{k.ip, "api", k.user},
		{k.ip, k.route, "7d0e3a52-7f39-4c64-9d3c-2b6f0c1de5a1"},
	} {
		if !tr.closeFrame(other, t0.Add(10*time.Second)) {
			t.Errorf("%v: the first refusal of another key got no close frame", other)
		}
	}
	if !tr.closeFrame(k, t0.Add(repeatWindow)) {
		t.Error("a minute after the first: no close frame, want the count started over")
	}
	if !tr.closeFrame(k, t0.Add(-time.Hour)) {
		t.Error("a clock that went back: no close frame, want the count started over")
	}

	t.Run("bounded", func(t *testing.T) {
		tr := newRepeatRefusals()
		for i := range maxRepeatEntries + 10 {
			tr.closeFrame(repeatKey{fmt.Sprint(i), "r", "u"}, t0)
		}
		if n := tr.size(); n != maxRepeatEntries {
			t.Errorf("entries after %d keys: %d, want the cap %d", maxRepeatEntries+10, n, maxRepeatEntries)
		}
		full := repeatKey{"full", "r", "u"}
		for i := range 5 {
			if !tr.closeFrame(full, t0) {
				t.Fatalf("refusal %d of a key the full table cannot hold: no close frame, want one", i+1)
			}
		}
		// A minute on, the sweep empties the table.
		tr.closeFrame(full, t0.Add(repeatWindow+time.Second))
		if n := tr.size(); n != 1 {
			t.Errorf("entries a minute on: %d, want 1", n)
		}
	})
}
