package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"authgate/event"
)

// hbLogConfig shapes a generated log of one or more instances that write
// heartbeats, as authgate does with log.heartbeat (issue 21).
type hbLogConfig struct {
	start      time.Time
	days       int
	instances  []string
	heartbeat  time.Duration // 0: no heartbeat lines
	dayFrom    int           // JWT traffic from this hour (UTC) ..
	dayTo      int           // .. to this one; nights are silent but for heartbeats
	every      time.Duration // one JWT request per instance this often in daytime
	drop       map[string]float64
	seed       uint64
	stopAtEnd  bool
	lostCounts map[string]int64 // out: lines dropped per instance
}

func hbAuthLine(inst string, t time.Time, class, action, user string) string {
	u := ""
	if user != "" {
		u = `,"user":"` + user + `"`
	}
	return fmt.Sprintf(`{"level":"info","instance":%q,"event":"auth","route":"pam-ws","transport":"websocket","class":%q,"action":%q%s,"time":%q,"message":"m"}`,
		inst, class, action, u, t.Format(time.RFC3339Nano))
}

type hbCount struct{ class, action string }

func hbLine(inst string, since, t time.Time, interval time.Duration, counts map[hbCount]int64, users []string) string {
	var ds []string
	keys := make([]hbCount, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y hbCount) int { return strings.Compare(x.class+x.action, y.class+y.action) })
	var total int64
	for _, k := range keys {
		ds = append(ds, fmt.Sprintf(`{"route":"pam-ws","class":%q,"action":%q,"count":%d}`, k.class, k.action, counts[k]))
		total += counts[k]
	}
	us, _ := json.Marshal(users)
	if users == nil {
		us = []byte("[]")
	}
	return fmt.Sprintf(`{"level":"info","instance":%q,"event":"heartbeat","since":%q,"interval_seconds":%g,"decisions_total":%d,"decisions":[%s],"legacy_users":%s,"legacy_users_total":%d,"lines_written":%d,"lines_held":0,"websockets_open":0,"time":%q,"message":"heartbeat"}`,
		inst, since.Format(time.RFC3339Nano), interval.Seconds(), total, strings.Join(ds, ","), us, len(users), total, t.Format(time.RFC3339Nano))
}

// genHeartbeatLog writes the log: per instance a config and start line,
// its daytime requests, a heartbeat every interval (counting every
// decision, also those whose lines are then dropped), a final heartbeat
// and stop when stopAtEnd.
func genHeartbeatLog(c *hbLogConfig) []string {
	rng := rand.New(rand.NewPCG(c.seed, 1))
	end := c.start.Add(time.Duration(c.days) * 24 * time.Hour)
	c.lostCounts = map[string]int64{}
	var out []string
	for _, inst := range c.instances {
		out = append(out, fmt.Sprintf(`{"level":"info","instance":%q,"event":"config","result":"loaded","time":%q}`, inst, c.start.Format(time.RFC3339)),
			fmt.Sprintf(`{"level":"info","instance":%q,"event":"start","time":%q}`, inst, c.start.Format(time.RFC3339)))
		since := c.start
		counts := map[hbCount]int64{}
		var users []string
		beat := func(t time.Time) {
			if c.heartbeat > 0 {
				out = append(out, hbLine(inst, since, t, c.heartbeat, counts, users))
			}
			since, counts, users = t, map[hbCount]int64{}, nil
		}
		next := c.start.Add(c.heartbeat)
		for t := c.start.Add(c.every / 2); t.Before(end); t = t.Add(c.every) {
			for c.heartbeat > 0 && !next.After(t) {
				beat(next)
				next = next.Add(c.heartbeat)
			}
			if h := t.Hour(); h < c.dayFrom || h >= c.dayTo {
				continue
			}
			counts[hbCount{"jwt", "pass"}]++
			if rng.Float64() < c.drop[inst] {
				c.lostCounts[inst]++
				continue
			}
			out = append(out, hbAuthLine(inst, t, "jwt", "pass", "jwt-user"))
		}
		for c.heartbeat > 0 && next.Before(end) {
			beat(next)
			next = next.Add(c.heartbeat)
		}
		if c.stopAtEnd {
			beat(end.Add(-time.Second))
			out = append(out, fmt.Sprintf(`{"level":"info","instance":%q,"event":"stop","time":%q}`, inst, end.Add(-time.Second).Format(time.RFC3339)))
		}
	}
	return out
}

// withLegacyInHeartbeat adds to the heartbeat of inst whose interval holds
// at the uuid decision of user (the line itself is in the log or not, as
// the caller chose).
func withLegacyInHeartbeat(t *testing.T, lines []string, inst string, at time.Time, user string) []string {
	t.Helper()
	for i, l := range lines {
		var hb struct {
			Event, Instance, Since, Time string
			Decisions                    []map[string]any `json:"decisions"`
			LegacyUsers                  []string         `json:"legacy_users"`
		}
		if json.Unmarshal([]byte(l), &hb) != nil || hb.Event != event.Heartbeat || hb.Instance != inst {
			continue
		}
		s, _ := time.Parse(time.RFC3339Nano, hb.Since)
		e, _ := time.Parse(time.RFC3339Nano, hb.Time)
		if at.Before(s) || !at.Before(e) {
			continue
		}
		var m map[string]any
		json.Unmarshal([]byte(l), &m)
		m["decisions"] = append(m["decisions"].([]any), map[string]any{"route": "pam-ws", "class": "uuid", "action": "reject", "count": 1})
		m["legacy_users"] = append(m["legacy_users"].([]any), user)
		b, _ := json.Marshal(m)
		lines[i] = string(b)
		return lines
	}
	t.Fatalf("no heartbeat of %s covers %v", inst, at)
	return nil
}

func reportOfLines(t *testing.T, q Query, lines []string) *Report {
	t.Helper()
	a := NewAggregator(q)
	for _, l := range lines {
		if l != "" {
			a.Line([]byte(l))
		}
	}
	return a.Report()
}

var hbStart = time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)

// eightDays is issue 21's idle-at-night case: JWT traffic from 08:00 to
// 20:00 UTC, nothing at night but heartbeats, for eight days.
func eightDays(heartbeat time.Duration) *hbLogConfig {
	return &hbLogConfig{start: hbStart, days: 8, instances: []string{"srv-a", "srv-b"}, heartbeat: heartbeat,
		dayFrom: 8, dayTo: 20, every: 7 * time.Minute, seed: 1}
}

func TestHeartbeatsIdleNights(t *testing.T) {
	q := Query{To: hbStart.Add(8 * 24 * time.Hour)} // default --quiet-for 7d, --max-gap 6h

	t.Run("with heartbeats: safe", func(t *testing.T) {
		lines := genHeartbeatLog(eightDays(5 * time.Minute))
		r := reportOfLines(t, q, lines)
		if r.Verdict.Status != StatusSafe || r.Coverage.Holes != 0 {
			t.Fatalf("got %s (%s), %d holes; want safe, no holes", r.Verdict.Status, r.Verdict.Reason, r.Coverage.Holes)
		}
		for _, in := range r.Coverage.Instances {
			if in.Heartbeats < 8*24*12-1 || in.LostLines != 0 || in.HeartbeatInterval != "5m0s" || in.MaxSilence != "6h0m0s" {
				t.Errorf("instance %s: %d heartbeats (interval %s, max silence %s), %d lost; want about %d, 5m, 6h, none lost",
					in.Name, in.Heartbeats, in.HeartbeatInterval, in.MaxSilence, in.LostLines, 8*24*12)
			}
		}
		// The report does not depend on line order: newest first, shuffled.
		want := mustReportJSON(t, r)
		rev := slices.Clone(lines)
		slices.Reverse(rev)
		if got := mustReportJSON(t, reportOfLines(t, q, rev)); got != want {
			t.Errorf("newest first: the report differs")
		}
		rng := rand.New(rand.NewPCG(2, 2))
		rng.Shuffle(len(rev), func(i, j int) { rev[i], rev[j] = rev[j], rev[i] })
		if got := mustReportJSON(t, reportOfLines(t, q, rev)); got != want {
			t.Errorf("shuffled: the report differs")
		}
	})

	t.Run("without heartbeats: insufficient_data", func(t *testing.T) {
		r := reportOfLines(t, q, genHeartbeatLog(eightDays(0)))
		if r.Verdict.Status != StatusInsufficientData || r.Coverage.Holes == 0 {
			t.Fatalf("got %s (%s), %d holes; want insufficient_data with the nights as holes", r.Verdict.Status, r.Verdict.Reason, r.Coverage.Holes)
		}
	})

	t.Run("two heartbeat intervals beat a shorter --max-gap", func(t *testing.T) {
		// --max-gap 6m, heartbeats every 5m: one heartbeat line lost at
		// night leaves 10m of silence, not a hole; two in a row leave 15m,
		// more than two intervals: a hole.
		q := q
		q.MaxGap = 6 * time.Minute
		night := hbStart.Add(5*24*time.Hour + 2*time.Hour)
		drop := func(n int) []string {
			lines := genHeartbeatLog(eightDays(5 * time.Minute))
			return slices.DeleteFunc(lines, func(l string) bool {
				var m struct{ Instance, Event, Time string }
				json.Unmarshal([]byte(l), &m)
				ts, _ := time.Parse(time.RFC3339Nano, m.Time)
				return m.Instance == "srv-a" && m.Event == event.Heartbeat && !ts.Before(night) && ts.Before(night.Add(time.Duration(n)*5*time.Minute))
			})
		}
		r := reportOfLines(t, q, drop(1))
		if r.Verdict.Status != StatusSafe || r.Coverage.Holes != 0 {
			t.Fatalf("one heartbeat lost: got %s (%s), %d holes; want safe, none", r.Verdict.Status, r.Verdict.Reason, r.Coverage.Holes)
		}
		if in := r.Coverage.Instances[0]; in.MaxSilence != "10m0s" {
			t.Errorf("max_silence %s, want 10m0s", in.MaxSilence)
		}
		r = reportOfLines(t, q, drop(2))
		if r.Verdict.Status != StatusInsufficientData || r.Coverage.Holes != 1 {
			t.Fatalf("two heartbeats lost: got %s (%s), %d holes; want insufficient_data, 1", r.Verdict.Status, r.Verdict.Reason, r.Coverage.Holes)
		}
	})

	t.Run("a silence over two intervals and --max-gap is still a hole", func(t *testing.T) {
		lines := genHeartbeatLog(eightDays(5 * time.Minute))
		// srv-b loses a whole night: from day 5 20:00 to day 6 08:00.
		from, to := hbStart.Add(5*24*time.Hour+20*time.Hour), hbStart.Add(6*24*time.Hour+8*time.Hour)
		lines = slices.DeleteFunc(lines, func(l string) bool {
			var m struct{ Instance, Time string }
			json.Unmarshal([]byte(l), &m)
			ts, _ := time.Parse(time.RFC3339Nano, m.Time)
			return m.Instance == "srv-b" && !ts.Before(from) && ts.Before(to)
		})
		r := reportOfLines(t, q, lines)
		if r.Verdict.Status != StatusInsufficientData || r.Coverage.Holes != 1 {
			t.Fatalf("got %s (%s), %d holes; want insufficient_data, srv-b's night", r.Verdict.Status, r.Verdict.Reason, r.Coverage.Holes)
		}
	})
}

func mustReportJSON(t *testing.T, r *Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestHeartbeatsLostLines(t *testing.T) {
	q := Query{To: hbStart.Add(8 * 24 * time.Hour)}
	c := eightDays(5 * time.Minute)
	c.drop = map[string]float64{"srv-b": 0.3}
	c.stopAtEnd = true
	lines := genHeartbeatLog(c)
	r := reportOfLines(t, q, lines)
	if c.lostCounts["srv-b"] < 100 {
		t.Fatalf("the generator dropped %d lines, want many", c.lostCounts["srv-b"])
	}
	byName := map[string]Instance{}
	for _, in := range r.Coverage.Instances {
		byName[in.Name] = in
	}
	if a := byName["srv-a"]; a.LostLines != 0 || a.LostUnknown {
		t.Errorf("srv-a: %d lost lines (unknown %v), want 0", a.LostLines, a.LostUnknown)
	}
	b := byName["srv-b"]
	if b.LostLines != c.lostCounts["srv-b"] || b.LostLegacyLines != 0 {
		t.Errorf("srv-b: %d lost lines, %d legacy; want %d, 0", b.LostLines, b.LostLegacyLines, c.lostCounts["srv-b"])
	}
	if r.Coverage.LostLines != c.lostCounts["srv-b"] {
		t.Errorf("coverage.lost_lines %d, want %d", r.Coverage.LostLines, c.lostCounts["srv-b"])
	}
	// Lost JWT lines do not change the verdict: heartbeats counted no legacy use.
	if r.Verdict.Status != StatusSafe {
		t.Errorf("got %s (%s), want safe", r.Verdict.Status, r.Verdict.Reason)
	}
	// Text and HTML name the lost lines per instance.
	var text, html bytes.Buffer
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteHTML(&html); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%d lost", c.lostCounts["srv-b"])
	if !strings.Contains(text.String(), want) || !strings.Contains(html.String(), fmt.Sprint(c.lostCounts["srv-b"])) {
		t.Errorf("text/HTML do not show srv-b's %d lost lines:\n%s", c.lostCounts["srv-b"], text.String())
	}

	t.Run("a window that begins inside a heartbeat's interval", func(t *testing.T) {
		// That heartbeat counts decisions before the window: not compared.
		q := Query{From: hbStart.Add(24*time.Hour + 9*time.Hour + 2*time.Minute), To: q.To}
		c := eightDays(5 * time.Minute)
		r := reportOfLines(t, q, genHeartbeatLog(c))
		if r.Coverage.LostLines != 0 {
			t.Errorf("got %d lost lines, want 0: every line is there", r.Coverage.LostLines)
		}
	})
}

func TestHeartbeatsLegacy(t *testing.T) {
	q := Query{To: hbStart.Add(8 * 24 * time.Hour)}
	at := hbStart.Add(6*24*time.Hour + 10*time.Hour + 1*time.Minute) // in the quiet period
	user := "55555555-5555-4555-8555-555555555555"

	t.Run("a legacy use counted only in a heartbeat: not_safe, named", func(t *testing.T) {
		lines := withLegacyInHeartbeat(t, genHeartbeatLog(eightDays(5*time.Minute)), "srv-a", at, user)
		r := reportOfLines(t, q, lines)
		if r.Verdict.Status != StatusNotSafe || !strings.Contains(r.Verdict.Reason, user) || !strings.Contains(r.Verdict.Reason, "heartbeats counted 1 legacy request") {
			t.Fatalf("got %s (%s), want not_safe naming %s and the heartbeat count", r.Verdict.Status, r.Verdict.Reason, user)
		}
		if len(r.Users) != 1 || r.Users[0].User != user || r.Users[0].Requests != 0 || r.Users[0].QuietHeartbeats != 1 || r.Legacy.Users != 1 {
			t.Errorf("users %+v, legacy.users %d; want %s named by 1 heartbeat, 0 request lines", r.Users, r.Legacy.Users, user)
		}
		if r.Coverage.LostLegacyLines != 1 || r.Legacy.HeartbeatQuietRequests != 1 {
			t.Errorf("lost legacy lines %d, heartbeat quiet requests %d; want 1, 1", r.Coverage.LostLegacyLines, r.Legacy.HeartbeatQuietRequests)
		}
		var text bytes.Buffer
		r.WriteText(&text)
		if !strings.Contains(text.String(), user) {
			t.Errorf("text report does not name %s", user)
		}
	})

	t.Run("its line present too: counted once", func(t *testing.T) {
		lines := withLegacyInHeartbeat(t, genHeartbeatLog(eightDays(5*time.Minute)), "srv-a", at, user)
		lines = append(lines, hbAuthLine("srv-a", at, "uuid", "reject", user))
		r := reportOfLines(t, q, lines)
		if r.Verdict.Status != StatusNotSafe || r.Verdict.LegacyRequests != 1 || r.Coverage.LostLegacyLines != 0 || len(r.Users) != 1 || r.Users[0].Requests != 1 {
			t.Errorf("got %s, %d legacy requests, %d lost, users %+v; want not_safe, 1, 0, one user with 1 request",
				r.Verdict.Status, r.Verdict.LegacyRequests, r.Coverage.LostLegacyLines, r.Users)
		}
	})

	t.Run("before the quiet period: still safe", func(t *testing.T) {
		early := hbStart.Add(10*time.Hour + time.Minute) // day 0, before the 7d
		lines := withLegacyInHeartbeat(t, genHeartbeatLog(eightDays(5*time.Minute)), "srv-a", early, user)
		r := reportOfLines(t, q, lines)
		if r.Verdict.Status != StatusSafe || r.Legacy.HeartbeatRequests != 1 || len(r.Users) != 1 {
			t.Errorf("got %s (%s), heartbeat requests %d, users %d; want safe, 1, 1", r.Verdict.Status, r.Verdict.Reason, r.Legacy.HeartbeatRequests, len(r.Users))
		}
	})
}

func TestRepeatCountsN(t *testing.T) {
	tests := []struct {
		name   string
		repeat string
		want   int64 // requests; -1: the line is invalid
	}{
		{"summary", `95`, 95},
		{"one", `1`, 1},
		{"zero", `0`, -1},
		{"negative", `-3`, -1},
		{"fraction", `1.5`, -1},
		{"exponent", `1e3`, -1},
		{"string", `"95"`, -1},
		{"huge", `99999999999999`, -1},
		{"null", `null`, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			line := `{"event":"auth","instance":"a","route":"r","class":"uuid","action":"reject","user":"u","time":"2025-08-13T10:00:00Z","repeat":` + tt.repeat + `}`
			r := reportOfLines(t, Query{To: testNow}, []string{line})
			switch {
			case tt.want < 0 && r.Lines.SkippedBy.Invalid != 1:
				t.Errorf("got %+v, want the line invalid", r.Lines)
			case tt.want > 0 && (r.Totals.Requests != tt.want || r.Legacy.Requests != tt.want || r.Users[0].Requests != tt.want ||
				r.Totals.ByClass["uuid"] != tt.want || r.Rejections.Requests != tt.want || r.Verdict.LegacyRequests != tt.want):
				t.Errorf("got totals %+v, legacy %+v; want %d everywhere", r.Totals, r.Legacy, tt.want)
			}
		})
	}
}

// FuzzHeartbeatLine feeds heartbeat and summary lines, valid or not,
// through the aggregator beside a fixed log: it must not crash, must
// account for every line, and lost lines are never negative.
func FuzzHeartbeatLine(f *testing.F) {
	// A heartbeat as authgate writes it.
	f.Add([]byte(`{"level":"info","instance":"srv-a","event":"heartbeat","since":"2025-08-13T09:55:00Z","interval_seconds":300,"decisions_total":3,"decisions":[{"route":"pam-ws","class":"uuid","action":"reject","count":3}],"legacy_users":["u1"],"legacy_users_total":1,"lines_written":3,"lines_held":0,"websockets_open":0,"time":"2025-08-13T10:00:00Z","message":"heartbeat"}`))
	// Counts of the wrong type, a negative count, since after time.
	f.Add([]byte(`{"event":"heartbeat","instance":"srv-a","since":"2025-08-13T11:00:00Z","decisions":[{"count":"3"}],"time":"2025-08-13T10:00:00Z"}`))
	f.Add([]byte(`{"event":"heartbeat","since":"2025-08-13T09:00:00Z","interval_seconds":-1,"decisions":[{"class":"uuid","count":-5}],"time":"2025-08-13T10:00:00Z"}`))
	f.Add([]byte(`{"event":"heartbeat","since":"x","time":"2025-08-13T10:00:00Z"}`))
	// Counts that would wrap a sum around.
	f.Add([]byte(`{"event":"heartbeat","instance":"srv-a","since":"2025-08-13T09:55:00Z","decisions":[{"class":"uuid","count":9223372036854775807},{"class":"uuid","count":9223372036854775807}],"time":"2025-08-13T10:00:00Z"}`))
	// A summary line.
	f.Add([]byte(`{"event":"auth","instance":"srv-a","class":"uuid","action":"reject","user":"u1","repeat":1099511627776,"time":"2025-08-13T10:00:00Z"}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		a := NewAggregator(Query{To: testNow})
		a.Line([]byte(`{"event":"start","instance":"srv-a","time":"2025-08-13T09:00:00Z"}`))
		a.Line([]byte(`{"event":"auth","instance":"srv-a","class":"jwt","action":"pass","time":"2025-08-13T09:56:00Z"}`))
		a.Line(line)
		a.Line(line) // twice: duplicates and order are the reader's lot
		r := a.Report()
		if r.Lines.Read != 4 || r.Lines.Events+r.Lines.Skipped+r.Lines.Filtered != 4 {
			t.Fatalf("lines not accounted for: %+v", r.Lines)
		}
		for _, in := range r.Coverage.Instances {
			if in.LostLines < 0 || in.LostLegacyLines < 0 || in.LostLegacyLines > in.HeartbeatDecisions {
				t.Fatalf("instance %+v", in)
			}
		}
		var b bytes.Buffer
		for _, w := range []func(*bytes.Buffer) error{
			func(b *bytes.Buffer) error { return r.WriteJSON(b) },
			func(b *bytes.Buffer) error { return r.WriteText(b) },
			func(b *bytes.Buffer) error { return r.WriteHTML(b) },
		} {
			if err := w(&b); err != nil {
				t.Fatal(err)
			}
		}
	})
}
