package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"authgate/event"
	"authgate/policy"
	"authgate/rewrite"
)

// TestRunHeartbeatsAcrossReloads: Run writes a heartbeat every
// log.heartbeat; SIGHUP reloads (unchanged and changed) neither reset nor
// double them, and a final one at stop, before the stop event, carries
// the last interval's counts: the decisions add up exactly.
func TestRunHeartbeatsAcrossReloads(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	cfg := `listen: "127.0.0.1:0"
admin_listen: ""
trusted_proxies: [private]
upstream: {url: "http://127.0.0.1:1"}
log: {heartbeat: 1s}
routes: [{name: a, match: {path: /a}, policy: {uuid: reject}}]
`
	writeFile(t, path, cfg)
	h := startRunWatch(t, path, false)
	client := &http.Client{Timeout: 5 * time.Second}
	get := func() {
		resp, err := client.Get("http://" + h.addr + "/a?token=21a2151a-cd37-41d5-a1c7-124bb05e7a6a")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("got %d, want 403", resp.StatusCode)
		}
	}
	get()
	for i := 0; i < 3; i++ {
		h.reload <- struct{}{}
		waitUntil(t, 3*time.Second, "the unchanged event", func() bool { return h.logs.count(`"result":"unchanged"`) == i+1 })
	}
	get()
	writeFile(t, path, strings.Replace(cfg, "uuid: reject", "uuid: reject, missing: reject", 1))
	h.reload <- struct{}{}
	waitUntil(t, 3*time.Second, "the reloaded event", func() bool { return h.logs.count(`"result":"reloaded"`) == 1 })
	get()
	waitUntil(t, 5*time.Second, "two heartbeats", func() bool { return h.logs.count(`"event":"heartbeat"`) >= 2 })
	get()
	h.stop(t)

	type hb struct {
		Time           time.Time
		Since          time.Time
		DecisionsTotal int64 `json:"decisions_total"`
		LegacyUsers    []string
		Event          string
	}
	var beats []hb
	var last string
	sc := bufio.NewScanner(strings.NewReader(h.logs.String()))
	for sc.Scan() {
		var l hb
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("%q: %v", sc.Text(), err)
		}
		last = l.Event
		if l.Event == event.Heartbeat {
			beats = append(beats, l)
		}
	}
	if last != event.Stop {
		t.Errorf("last line is %q, want stop (after the final heartbeat)", last)
	}
	if len(beats) < 3 {
		t.Fatalf("got %d heartbeats, want at least 2 and the final one", len(beats))
	}
	var total int64
	for i, b := range beats {
		total += b.DecisionsTotal
		if i == 0 {
			continue
		}
		if !b.Since.After(beats[i-1].Since) {
			t.Errorf("heartbeat %d: since %v, not after the one before (%v)", i, b.Since, beats[i-1].Since)
		}
		if gap := b.Time.Sub(beats[i-1].Time); i < len(beats)-1 && gap < 900*time.Millisecond {
			t.Errorf("heartbeats %d and %d %v apart, want about 1s: a reload doubled them", i-1, i, gap)
		}
	}
	if total != 4 {
		t.Errorf("heartbeats counted %d decisions, want the 4 made", total)
	}
}

// TestLogGateReloadMovesSchedule: a reload with a new interval applies it
// from the last heartbeat, and keeps the counts.
func TestLogGateReloadMovesSchedule(t *testing.T) {
	out := &gateBuffer{}
	log := zerolog.New(out)
	g := newLogGate(&log, policy.Log{Heartbeat: time.Hour}, nil, nil, nil)
	g.startHeartbeats(nil)
	defer g.stopHeartbeats()
	l := authLine{route: "a", class: "uuid", action: "reject", message: "m"}
	g.admitAuth(&l, rewrite.ClassUUID, policy.ActionReject, policy.ActionNone, "")
	g.configure(policy.Log{Heartbeat: 30 * time.Millisecond})
	waitUntil(t, 3*time.Second, "a heartbeat at the new interval", func() bool { return out.count() >= 1 })
	objs := out.objects(t)
	if objs[0][event.FieldDecisionsTotal] != float64(1) || objs[0][event.FieldIntervalSeconds] != 0.03 {
		t.Errorf("first heartbeat after the reload %v, want the decision from before it, interval 0.03", objs[0])
	}
}

// TestLogHeldMetric: authgate_log_lines_held_total counts the lines the
// budget held, is registered once, and survives a reload (Swap).
func TestLogHeldMetric(t *testing.T) {
	cfg := `listen: "127.0.0.1:0"
admin_listen: ""
upstream: {url: "http://127.0.0.1:1"}
log: {max_lines_per_minute: 3}
rate_limit: {per_minute: 0}
routes: [{name: a, match: {path: /a}, policy: {uuid: reject}}]
`
	parse := func(text string) *policy.Snapshot {
		s, err := policy.Parse("m.yaml", []byte(text), policy.Options{LookupEnv: func(string) (string, bool) { return "", false }})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	out := &gateBuffer{}
	srv := New(parse(cfg), Options{Logger: zerolog.New(out)})
	get := func() {
		req := httptest.NewRequest(http.MethodGet, "/a?token=21a2151a-cd37-41d5-a1c7-124bb05e7a6a", nil)
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden {
			t.Fatalf("got %d, want 403", rec.Code)
		}
	}
	for i := 0; i < 10; i++ {
		get()
	}
	srv.Swap(parse(strings.Replace(cfg, "uuid: reject", "uuid: reject, missing: reject", 1)))
	for i := 0; i < 5; i++ {
		get()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	mfs, err := srv.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var held float64
	n := 0
	for _, mf := range mfs {
		if mf.GetName() == "authgate_log_lines_held_total" {
			n++
			held = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	// 2 lines and room for the summary, then 8 held; the reload keeps
	// the minute's budget: 5 more held.
	if n != 1 || held != 13 {
		t.Errorf("got the metric %d times, value %v; want once, 13", n, held)
	}
	_, dec := authCounts(out.objects(t))
	if dec["21a2151a-cd37-41d5-a1c7-124bb05e7a6a"] != 15 {
		t.Errorf("the log holds %d decisions, want 15 (summary at shutdown)", dec["21a2151a-cd37-41d5-a1c7-124bb05e7a6a"])
	}
}
