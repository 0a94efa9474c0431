package report

// Heartbeats (issue 21). authgate writes, every log.heartbeat per
// instance, the exact number of decisions since the last heartbeat per
// route, class and action, and the distinct legacy users among them. The
// report uses them three ways, in one pass over lines in any order:
//
//   - Presence: a heartbeat is a line of its instance (coverage.go), and
//     for an instance with heartbeats a silence of at most two heartbeat
//     intervals is never a hole, whatever --max-gap says.
//   - Lost lines: the decisions heartbeats counted, against the decision
//     lines (a summary counting as its repeat) of the same instance in
//     the time those heartbeats cover, give the lines a log pipeline
//     dropped. Lines are kept as counts per instance and ten minutes (a
//     bucket: memory grows with the time the logs span, a few bytes an
//     hour, not with their lines), so the comparison runs over whole
//     buckets from each covered stretch's first to its last: an edge bucket
//     may hold lines of a time no heartbeat in the window covers, which can
//     hide a loss there but never invent one. Only heartbeats whose whole
//     interval lies in the window count.
//   - Legacy use: a heartbeat written in the quiet period that counts
//     decisions of class uuid shows legacy use there even when no line of
//     it survived (not_safe), and the users it names are listed. Its
//     interval may begin up to one interval before the period: the cautious
//     reading.

import (
	"bytes"
	"cmp"
	"encoding/json"
	"math"
	"slices"
	"time"

	"authgate/event"
)

// Bounds of the heartbeat tables (see coverStat's bounds).
const (
	maxHeartbeatIntervals = 1 << 16 // per instance: 227 days at 5m
	maxBuckets            = 1 << 18 // buckets with decision lines, all instances: 5 years of one
	bucketSize            = int64(10 * time.Minute)
)

// hbStat is one instance's heartbeats in the window.
type hbStat struct {
	beats        int64
	interval     int64      // the longest interval_seconds seen, in ns
	spans        [][2]int64 // [since, time] of each heartbeat in the window
	spansDropped bool       // more than maxHeartbeatIntervals
	counted      int64      // decisions the heartbeats counted
	legacy       int64      // of class uuid
	held         int64      // lines_held: lines the budget summarised
	written      int64      // lines_written

	// Decision lines of the instance per bucket: [all, uuid]; cur holds
	// the bucket of the latest lines until another one begins (lines in
	// order change buckets once in ten minutes).
	buckets   map[int64][2]int64
	cur       [2]int64
	curBucket int64
	hasCur    bool
	noBuckets bool // a bucket did not fit: lost lines are unknown
}

// decided counts a decision line (n decisions) of the instance at t.
func (s *instStat) decided(t, n int64, legacy bool, c *coverStat) {
	h := &s.hb
	if m := floorDiv(t, bucketSize); !h.hasCur || m != h.curBucket {
		h.flush(c)
		h.curBucket, h.hasCur = m, true
	}
	h.cur[0] = satAdd(h.cur[0], n)
	if legacy {
		h.cur[1] = satAdd(h.cur[1], n)
	}
}

// flush adds the current bucket to the table.
func (h *hbStat) flush(c *coverStat) {
	if !h.hasCur {
		return
	}
	h.hasCur = false
	if h.buckets == nil {
		h.buckets = make(map[int64][2]int64)
	}
	b, ok := h.buckets[h.curBucket]
	if !ok {
		if c.buckets >= maxBuckets {
			h.noBuckets = true
			return
		}
		c.buckets++
	}
	b[0], b[1] = satAdd(b[0], h.cur[0]), satAdd(b[1], h.cur[1])
	h.buckets[h.curBucket] = b
	h.cur = [2]int64{}
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// heartbeatLine is what the report reads of a heartbeat.
type heartbeatLine struct {
	Since           string  `json:"since"`
	IntervalSeconds float64 `json:"interval_seconds"`
	Decisions       []struct {
		Route  string `json:"route"`
		Class  string `json:"class"`
		Action string `json:"action"`
		Count  int64  `json:"count"`
	} `json:"decisions"`
	LegacyUsers  []string `json:"legacy_users"`
	LinesWritten int64    `json:"lines_written"`
	LinesHeld    int64    `json:"lines_held"`
}

// hbUser is a legacy user named by heartbeats in the window.
type hbUser struct {
	first, last int64 // the heartbeats' times
	beats       int64 // heartbeats naming it
	quiet       int64 // of them in the quiet period
}

// heartbeat folds a heartbeat line (obj, the JSON object) of instance s at
// t into the report. One it cannot read is counted invalid and is only
// presence.
func (a *Aggregator) heartbeat(obj []byte, s *instStat, t int64) {
	var hb heartbeatLine
	if err := json.NewDecoder(bytes.NewReader(obj)).Decode(&hb); err != nil {
		a.hbInvalid++
		return
	}
	since, ok := parseTimestamp([]byte(hb.Since))
	if !ok || since > t || hb.IntervalSeconds < 0 || hb.IntervalSeconds > 366*24*3600 {
		a.hbInvalid++
		return
	}
	h := &s.hb
	h.beats++
	h.interval = max(h.interval, int64(hb.IntervalSeconds*float64(time.Second)))
	if since < a.from {
		return // its interval began before the window: its counts are not all in it
	}
	if len(h.spans) < maxHeartbeatIntervals {
		h.spans = append(h.spans, [2]int64{since, t})
	} else {
		h.spansDropped = true
	}
	h.held = satAdd(h.held, hb.LinesHeld)
	h.written = satAdd(h.written, hb.LinesWritten)
	var legacy int64
	for _, d := range hb.Decisions {
		h.counted = satAdd(h.counted, d.Count)
		if d.Class == event.ClassUUID {
			h.legacy = satAdd(h.legacy, d.Count)
			if a.q.Route == "" || d.Route == a.q.Route {
				legacy = satAdd(legacy, d.Count)
			}
		}
	}
	quiet := t >= a.quietStart
	if legacy == 0 {
		return
	}
	a.hbLegacy = satAdd(a.hbLegacy, legacy)
	if quiet {
		a.hbQuietLegacy = satAdd(a.hbQuietLegacy, legacy)
	}
	for _, u := range hb.LegacyUsers {
		if u == "" {
			continue
		}
		hu := a.hbUsers[u]
		if hu == nil {
			hu = &hbUser{first: t, last: t}
			a.hbUsers[a.strs.intern([]byte(u))] = hu
		}
		hu.first, hu.last = min(hu.first, t), max(hu.last, t)
		hu.beats++
		if quiet {
			hu.quiet++
		}
	}
}

// lost returns the decisions the instance's heartbeats counted that have
// no line (all, and of class uuid), and whether that is known.
func (h *hbStat) lost() (all, legacy int64, known bool) {
	if h.noBuckets || h.spansDropped {
		return 0, 0, false
	}
	spans := slices.Clone(h.spans)
	slices.SortFunc(spans, func(x, y [2]int64) int { return cmp.Compare(x[0], y[0]) })
	var lines, legacyLines int64
	counted := int64(-1 << 62) // buckets already summed
	for i := 0; i < len(spans); {
		from, to := spans[i][0], spans[i][1]
		for i++; i < len(spans) && spans[i][0] <= to; i++ {
			to = max(to, spans[i][1])
		}
		m0 := max(floorDiv(from, bucketSize), counted+1)
		m1 := floorDiv(to, bucketSize)
		if m1-m0 < int64(len(h.buckets)) {
			for m := m0; m <= m1; m++ {
				if b, ok := h.buckets[m]; ok {
					lines += b[0]
					legacyLines += b[1]
				}
			}
		} else {
			for m, b := range h.buckets {
				if m >= m0 && m <= m1 {
					lines += b[0]
					legacyLines += b[1]
				}
			}
		}
		counted = max(counted, m1)
	}
	return max(h.counted-lines, 0), max(h.legacy-legacyLines, 0), true
}

// hbGap is the silence an instance with heartbeats may keep without a
// hole: two of its intervals, or maxGap if that is longer.
func (h *hbStat) hbGap(maxGap int64) int64 {
	if h.beats == 0 {
		return maxGap
	}
	return max(maxGap, 2*h.interval)
}

// heartbeatInstances counts the instances that wrote heartbeats.
func heartbeatInstances(c *Coverage) int {
	n := 0
	for _, in := range c.Instances {
		if in.Heartbeats > 0 {
			n++
		}
	}
	return n
}

// satAdd adds a count read from a log (ignored when negative), stopping
// at math.MaxInt64: crafted counts must not wrap a sum around.
func satAdd(sum, n int64) int64 {
	if n <= 0 {
		return sum
	}
	if sum > math.MaxInt64-n {
		return math.MaxInt64
	}
	return sum + n
}
