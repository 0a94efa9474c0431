package proxy

import (
	"bufio"
	"encoding/json"
	"net/http"
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
