package proxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"authgate/event"
	"authgate/policy"
	"authgate/rewrite"
)

// gateClock is a clock a test moves by hand.
type gateClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *gateClock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *gateClock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// gateBuffer collects log lines from timers and tests alike.
type gateBuffer struct {
	mu    sync.Mutex
	b     bytes.Buffer
	lines int64
}

func (b *gateBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines++
	return b.b.Write(p)
}

func (b *gateBuffer) count() int64 { b.mu.Lock(); defer b.mu.Unlock(); return b.lines }

// objects returns the lines written so far, decoded.
func (b *gateBuffer) objects(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b.b.Bytes()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

type gateRig struct {
	g     *logGate
	clock *gateClock
	out   *gateBuffer
	held  prometheus.Counter
	log   zerolog.Logger
}

// t0 is the start of a UTC minute.
var gateT0 = time.Date(2026, 10, 8, 5, 0, 0, 0, time.UTC)

func newGateRig(t *testing.T, budget int, heartbeat time.Duration) *gateRig {
	r := &gateRig{clock: &gateClock{t: gateT0}, out: &gateBuffer{}}
	r.log = zerolog.New(r.out)
	r.held = prometheus.NewCounter(prometheus.CounterOpts{Name: "held"})
	r.g = newLogGate(&r.log, policy.Log{MaxLinesPerMinute: budget, Heartbeat: heartbeat, UserIDs: policy.UserIDsPlain},
		r.clock.now, r.held, func() int { return 7 })
	t.Cleanup(func() {
		r.g.stopHeartbeats()
		r.g.close()
	})
	return r
}

// decide passes one decision through the gate and writes it if admitted,
// as the handler does; it reports whether it was written.
func (r *gateRig) decide(route, user string, class rewrite.Class, action policy.Action) bool {
	l := authLine{level: zerolog.InfoLevel, route: route, transport: event.TransportWebSocket,
		class: class.String(), action: action.String(), user: user, hasUser: user != "",
		clientIP: "127.0.0.1", path: "/ws", reqID: "r1", message: "m"}
	if action == policy.ActionReject {
		l.closeCode = 4003
	}
	if r.g.admitAuth(&l, class, action, policy.ActionNone, user) {
		writeAuth(&r.log, &l, 0)
		return true
	}
	return false
}

// authCounts sums auth lines per user, counting a summary as its repeat.
func authCounts(objs []map[string]any) (lines int, decisions map[string]int64) {
	decisions = map[string]int64{}
	for _, o := range objs {
		if o[event.FieldEvent] != event.Auth {
			continue
		}
		lines++
		n := int64(1)
		if rep, ok := o[event.FieldRepeat].(float64); ok {
			n = int64(rep)
		}
		u, _ := o[event.FieldUser].(string)
		decisions[u] += n
	}
	return lines, decisions
}

func TestLogGateBudget(t *testing.T) {
	t.Run("under the budget every line is written", func(t *testing.T) {
		// One key: 9 lines and room for its summary.
		r := newGateRig(t, 10, 0)
		for i := 0; i < 9; i++ {
			if !r.decide("ws", "u1", rewrite.ClassUUID, policy.ActionReject) {
				t.Fatalf("decision %d held back, want written (budget 10)", i)
			}
		}
		if got := testutil.ToFloat64(r.held); got != 0 {
			t.Errorf("held metric %v, want 0", got)
		}
	})

	t.Run("past it repeats are held and summarised at the minute's end", func(t *testing.T) {
		r := newGateRig(t, 5, 0)
		written := 0
		for i := 0; i < 100; i++ {
			if r.decide("ws", "u1", rewrite.ClassUUID, policy.ActionReject) {
				written++
			}
		}
		if written != 4 {
			t.Fatalf("got %d lines written, want 4 (the budget, 5, less room for the summary)", written)
		}
		if got := testutil.ToFloat64(r.held); got != 96 {
			t.Errorf("held metric %v, want 96", got)
		}
		// The minute ends: the timer flushes without any new line.
		r.clock.set(gateT0.Add(time.Minute))
		r.g.tick()
		objs := r.out.objects(t)
		lines, dec := authCounts(objs)
		if lines != 5 || dec["u1"] != 100 {
			t.Fatalf("got %d lines for %d decisions, want 5 lines (4 + a summary) for 100", lines, dec["u1"])
		}
		last := objs[len(objs)-1]
		if last[event.FieldRepeat] != float64(96) || last[event.FieldCloseCode] != float64(4003) || last[event.FieldClass] != "uuid" {
			t.Errorf("summary line %v, want repeat 95 of the same decision (uuid, 4003)", last)
		}
		// The new minute has a new budget, and summaries use it.
		written = 0
		for i := 0; i < 10; i++ {
			if r.decide("ws", "u1", rewrite.ClassUUID, policy.ActionReject) {
				written++
			}
		}
		if written != 3 {
			t.Errorf("got %d lines written in the next minute, want 3 (the summary used 1 of 5, 1 kept for the next)", written)
		}
	})

	t.Run("summaries fit in the budget", func(t *testing.T) {
		r := newGateRig(t, 10, 0)
		for i := 0; i < 1000; i++ {
			r.decide("ws", fmt.Sprintf("u%d", i%5), rewrite.ClassUUID, policy.ActionReject)
		}
		r.g.close() // same minute: the summaries land in it
		lines, dec := authCounts(r.out.objects(t))
		if lines > 10 {
			t.Errorf("got %d lines in the minute, want at most the budget, 10", lines)
		}
		for u := 0; u < 5; u++ {
			if got := dec[fmt.Sprintf("u%d", u)]; got != 200 {
				t.Errorf("u%d: %d decisions in the log, want 200", u, got)
			}
		}
	})

	t.Run("the first sighting of every user is written", func(t *testing.T) {
		r := newGateRig(t, 3, 0)
		for i := 0; i < 3; i++ {
			r.decide("ws", "u0", rewrite.ClassUUID, policy.ActionReject)
		}
		for u := 1; u <= 50; u++ {
			user := fmt.Sprintf("u%d", u)
			if !r.decide("ws", user, rewrite.ClassUUID, policy.ActionReject) {
				t.Fatalf("first line of %s held back, want written", user)
			}
			if r.decide("ws", user, rewrite.ClassUUID, policy.ActionReject) {
				t.Fatalf("second line of %s written past the budget, want held", user)
			}
		}
		// A different class or action of a seen user is a new decision.
		if !r.decide("ws", "u1", rewrite.ClassJWT, policy.ActionPass) {
			t.Errorf("u1's first jwt pass held back, want written")
		}
		if !r.decide("other", "u1", rewrite.ClassUUID, policy.ActionReject) {
			t.Errorf("u1 on another route held back, want written")
		}
		r.g.close()
		_, dec := authCounts(r.out.objects(t))
		for u := 1; u <= 50; u++ {
			if got := dec[fmt.Sprintf("u%d", u)]; got != 2 && u != 1 {
				t.Errorf("u%d: %d decisions in the log, want 2", u, got)
			}
		}
	})

	t.Run("the first sighting is remembered under the budget too", func(t *testing.T) {
		r := newGateRig(t, 2, 0)
		r.decide("ws", "a", rewrite.ClassUUID, policy.ActionReject)
		r.decide("ws", "b", rewrite.ClassUUID, policy.ActionReject)
		// The budget is used; a and b were seen: their repeats are held.
		if r.decide("ws", "a", rewrite.ClassUUID, policy.ActionReject) {
			t.Errorf("a's repeat written past the budget, want held")
		}
	})

	t.Run("a new minute without a timer: the next line flushes", func(t *testing.T) {
		r := newGateRig(t, 1, 0)
		r.decide("ws", "a", rewrite.ClassUUID, policy.ActionReject)
		r.decide("ws", "a", rewrite.ClassUUID, policy.ActionReject)
		r.decide("ws", "a", rewrite.ClassUUID, policy.ActionReject)
		r.clock.set(gateT0.Add(61 * time.Second))
		r.decide("ws", "b", rewrite.ClassUUID, policy.ActionReject)
		objs := r.out.objects(t)
		if len(objs) != 3 || objs[1][event.FieldRepeat] != float64(2) || objs[2][event.FieldUser] != "b" {
			t.Errorf("got %v, want a's line, a's summary (repeat 2), then b's line", objs)
		}
	})

	t.Run("budget 0 holds nothing", func(t *testing.T) {
		r := newGateRig(t, 0, 0)
		for i := 0; i < 5000; i++ {
			if !r.decide("ws", "u1", rewrite.ClassUUID, policy.ActionReject) {
				t.Fatalf("decision %d held with no budget", i)
			}
		}
		if len(r.g.keys) != 0 {
			t.Errorf("no budget, yet %d keys remembered", len(r.g.keys))
		}
	})

	t.Run("the key table is capped; past it lines are written", func(t *testing.T) {
		r := newGateRig(t, 1, 0)
		for u := 0; u < maxBudgetKeys+500; u++ {
			r.decide("ws", fmt.Sprintf("u%d", u), rewrite.ClassUUID, policy.ActionReject)
		}
		if len(r.g.keys) != maxBudgetKeys || len(r.g.held) != maxBudgetKeys {
			t.Fatalf("got %d keys, %d entries, want the cap %d", len(r.g.keys), len(r.g.held), maxBudgetKeys)
		}
		// A remembered key is held; one past the cap is written each time.
		if r.decide("ws", "u0", rewrite.ClassUUID, policy.ActionReject) {
			t.Errorf("remembered u0 written past the budget, want held")
		}
		over := fmt.Sprintf("u%d", maxBudgetKeys+1)
		for i := 0; i < 3; i++ {
			if !r.decide("ws", over, rewrite.ClassUUID, policy.ActionReject) {
				t.Errorf("%s past the cap held, want written (not remembered: maybe a first sighting)", over)
			}
		}
	})

	t.Run("close flushes and holds nothing after", func(t *testing.T) {
		r := newGateRig(t, 1, 0)
		for i := 0; i < 4; i++ {
			r.decide("ws", "a", rewrite.ClassUUID, policy.ActionReject)
		}
		r.g.close()
		if !r.decide("ws", "a", rewrite.ClassUUID, policy.ActionReject) {
			t.Errorf("a line after close held, want written")
		}
		lines, dec := authCounts(r.out.objects(t))
		if lines != 3 || dec["a"] != 5 {
			t.Errorf("got %d lines for %d decisions, want 3 (line, summary of 3, line) for 5", lines, dec["a"])
		}
	})

	t.Run("ws_close repeats are held with their bytes summed", func(t *testing.T) {
		r := newGateRig(t, 1, 0)
		for i := 0; i < 5; i++ {
			l := closeLine{route: "ws", user: "a", hasUser: true, reqID: fmt.Sprint(i), closedBy: "authgate",
				closeCode: 4003, bytesIn: 10, bytesOut: 1, durationMS: 2}
			if r.g.admitClose(&l) {
				writeClose(&r.log, &l, 0)
			}
		}
		r.g.close()
		objs := r.out.objects(t)
		if len(objs) != 2 {
			t.Fatalf("got %d lines, want 2: %v", len(objs), objs)
		}
		s := objs[1]
		if s[event.FieldEvent] != event.WSClose || s[event.FieldRepeat] != float64(4) || s[event.FieldBytesIn] != float64(40) ||
			s[event.FieldDurationMS] != float64(8) || s[event.FieldRequestID] != "1" {
			t.Errorf("summary %v, want ws_close repeat 4, bytes_in 40, duration_ms 8, the first held's request id", s)
		}
	})
}

func TestLogGateHeartbeat(t *testing.T) {
	heartbeats := func(objs []map[string]any) []map[string]any {
		var out []map[string]any
		for _, o := range objs {
			if o[event.FieldEvent] == event.Heartbeat {
				out = append(out, o)
			}
		}
		return out
	}

	t.Run("exact counts, held lines flushed first, users named", func(t *testing.T) {
		r := newGateRig(t, 3, time.Hour) // the timer never fires in the test
		r.g.startHeartbeats(r.out.count)
		for i := 0; i < 10; i++ {
			r.decide("ws", "11111111-1111-4111-8111-111111111111", rewrite.ClassUUID, policy.ActionReject)
		}
		r.decide("ws", "j", rewrite.ClassJWT, policy.ActionPass)
		r.decide("http", "", rewrite.ClassMissing, policy.ActionReject)
		r.clock.set(gateT0.Add(30 * time.Second))
		r.g.hbMu.Lock()
		r.g.beat()
		r.g.hbMu.Unlock()
		objs := r.out.objects(t)
		hbs := heartbeats(objs)
		if len(hbs) != 1 {
			t.Fatalf("got %d heartbeats, want 1", len(hbs))
		}
		hb := hbs[0]
		want := []any{
			map[string]any{"route": "http", "class": "missing", "action": "reject", "count": float64(1)},
			map[string]any{"route": "ws", "class": "jwt", "action": "pass", "count": float64(1)},
			map[string]any{"route": "ws", "class": "uuid", "action": "reject", "count": float64(10)},
		}
		if got, _ := json.Marshal(hb[event.FieldDecisions]); string(got) != mustJSON(t, want) {
			t.Errorf("decisions %s, want %s", got, mustJSON(t, want))
		}
		if hb[event.FieldDecisionsTotal] != float64(12) || hb[event.FieldLinesHeld] != float64(8) ||
			hb[event.FieldWebSocketsOpen] != float64(7) || hb[event.FieldLegacyUsersTotal] != float64(1) ||
			hb[event.FieldSince] != gateT0.Format(time.RFC3339Nano) || hb[event.FieldIntervalSeconds] != float64(3600) {
			t.Errorf("heartbeat %v", hb)
		}
		if got := fmt.Sprint(hb[event.FieldLegacyUsers]); got != "[11111111-1111-4111-8111-111111111111]" {
			t.Errorf("legacy_users %s", got)
		}
		// Lines written: 2 uuid (the budget 3 less room for its
		// summary), the jwt and missing lines (first sightings); the 8
		// held wait for the minute's end.
		if hb[event.FieldLinesWritten] != float64(4) {
			t.Errorf("lines_written %v, want 4", hb[event.FieldLinesWritten])
		}

		// At stop, as Run does: the summaries, then the final heartbeat,
		// counting from the last one: no decisions, one line (the summary).
		r.clock.set(gateT0.Add(50 * time.Second))
		r.g.close()
		r.g.stopHeartbeats()
		objs = r.out.objects(t)
		hbs = heartbeats(objs)
		if len(hbs) != 2 || hbs[1][event.FieldDecisionsTotal] != float64(0) ||
			hbs[1][event.FieldSince] != gateT0.Add(30*time.Second).Format(time.RFC3339Nano) || hbs[1][event.FieldLinesWritten] != float64(1) {
			t.Errorf("final heartbeat %v, want since the first, with no decisions and one line", hbs[len(hbs)-1])
		}
		if s := objs[len(objs)-2]; s[event.FieldRepeat] != float64(8) {
			t.Errorf("the line before the final heartbeat is %v, want the summary of the 8 held", s)
		}
	})

	t.Run("at most 1000 users named, all counted", func(t *testing.T) {
		r := newGateRig(t, 0, time.Hour)
		r.g.startHeartbeats(nil)
		for u := 0; u < 1500; u++ {
			r.decide("ws", fmt.Sprintf("u%04d", u), rewrite.ClassUUID, policy.ActionRewrite)
			r.decide("ws", fmt.Sprintf("u%04d", u), rewrite.ClassUUID, policy.ActionRewrite)
		}
		r.g.stopHeartbeats()
		hb := heartbeats(r.out.objects(t))[0]
		if n := len(hb[event.FieldLegacyUsers].([]any)); n != maxHeartbeatUsers {
			t.Errorf("got %d users named, want %d", n, maxHeartbeatUsers)
		}
		if hb[event.FieldLegacyUsersTotal] != float64(1500) || hb[event.FieldDecisionsTotal] != float64(3000) {
			t.Errorf("total users %v, decisions %v; want 1500, 3000", hb[event.FieldLegacyUsersTotal], hb[event.FieldDecisionsTotal])
		}
	})

	t.Run("the timer writes them; a reload keeps counts and schedule", func(t *testing.T) {
		out := &gateBuffer{}
		log := zerolog.New(out)
		g := newLogGate(&log, policy.Log{Heartbeat: 50 * time.Millisecond}, nil, nil, nil)
		g.startHeartbeats(out.count)
		defer g.stopHeartbeats()
		l := authLine{route: "ws", class: "uuid", action: "reject", message: "m"}
		g.admitAuth(&l, rewrite.ClassUUID, policy.ActionReject, policy.ActionNone, "")
		g.configure(policy.Log{Heartbeat: 50 * time.Millisecond, MaxLinesPerMinute: 10}) // same interval: nothing moves
		deadline := time.Now().Add(5 * time.Second)
		for out.count() < 3 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		g.stopHeartbeats()
		var hbs []map[string]any
		for _, o := range out.objects(t) {
			hbs = append(hbs, o)
		}
		if len(hbs) < 3 {
			t.Fatalf("got %d heartbeats in 5s at 50ms, want at least 3", len(hbs))
		}
		var total float64
		for i, hb := range hbs {
			total += hb[event.FieldDecisionsTotal].(float64)
			if i > 0 {
				prev, _ := time.Parse(time.RFC3339Nano, hbs[i-1][event.FieldSince].(string))
				cur, err := time.Parse(time.RFC3339Nano, hb[event.FieldSince].(string))
				if err != nil || !cur.After(prev) {
					t.Errorf("heartbeat %d since %v, want after %v", i, hb[event.FieldSince], hbs[i-1][event.FieldSince])
				}
			}
		}
		if total != 1 {
			t.Errorf("heartbeats counted %v decisions in all, want 1 (counted once)", total)
		}
		g.configure(policy.Log{Heartbeat: time.Hour}) // after stop: no timer restarts
		n := out.count()
		time.Sleep(120 * time.Millisecond)
		if out.count() != n {
			t.Errorf("a heartbeat after stop")
		}
	})
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// BenchmarkLogGateAdmit is the budget's cost per decision on the hot
// path: a repeat under the budget, a repeat held past it, no budget.
func BenchmarkLogGateAdmit(b *testing.B) {
	for _, bc := range []struct {
		name   string
		budget int
	}{{"no budget", 0}, {"under budget", 1 << 30}, {"held", 1}} {
		b.Run(bc.name, func(b *testing.B) {
			log := zerolog.Nop()
			g := newLogGate(&log, policy.Log{MaxLinesPerMinute: bc.budget}, nil, nil, nil)
			defer g.close()
			l := authLine{route: "pam-ws", class: "uuid", action: "reject", user: "11111111-1111-4111-8111-111111111111", hasUser: true, closeCode: 4003}
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				g.admitAuth(&l, rewrite.ClassUUID, policy.ActionReject, policy.ActionNone, l.user)
			}
		})
	}
}
