package proxy

// The log budget and the heartbeat counts (issue 21, SPEC "Logs").
//
// Render keeps at most 6,000 application lines a minute per instance and
// silently drops the rest; a reconnect storm of stale clients writes far
// more. The budget (log.max_lines_per_minute) keeps authgate under such a
// cap without losing evidence: within a UTC minute, once the budget is
// used, a decision line whose key (event, route, class, action, dry-run
// action, answer code, user as logged) was already seen in the minute is
// held back and counted; at the minute's end (and at shutdown) each held
// key is written once as a summary line of the same event with repeat: N,
// the fields of its first held line and, for ws_close, the bytes and
// durations summed. Room for those summaries is kept inside the budget. A
// key not yet seen in the minute is always written, so the first sighting
// of every user is a line of its own (only such first sightings can take
// a minute past its budget). Only auth and ws_close lines are budgeted
// and counted against it (summaries included); config, start, stop,
// error and heartbeat lines are never held back and come on top.
//
// Memory is bounded: at most maxBudgetKeys keys are remembered per minute.
// Past that, a line whose key is not remembered is written as it comes
// (it may be a first sighting, and the first-sighting rule already needs
// a line per key at that rate, more than Render keeps): the budget then
// overflows rather than hide a user, and the heartbeat's exact counts let
// the report see what a pipeline dropped.
//
// The heartbeat (log.heartbeat) writes, every interval, exact counts of
// the decisions since the last one per route, class and action, the
// distinct legacy users among them (names as log.user_ids writes them, at
// most maxHeartbeatUsers; the total counted exactly up to
// maxHeartbeatDistinct), the lines written and held back, and the open
// WebSockets. A reload keeps the schedule and the counts (a new interval
// applies from the last heartbeat); a final heartbeat is written at stop,
// after the held lines' summaries and before the stop event, so the last
// interval's counts are not lost.

import (
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"authgate/event"
	"authgate/policy"
	"authgate/rewrite"
)

const (
	// maxBudgetKeys bounds the keys the budget remembers per minute
	// (about 200 bytes each, plus a held line's copy).
	maxBudgetKeys = 10_000
	// maxHeartbeatUsers bounds the legacy users a heartbeat names.
	maxHeartbeatUsers = 1000
	// maxHeartbeatDistinct bounds the distinct legacy users a heartbeat
	// counts (8 bytes each); past it legacy_users_total is a lower bound
	// (legacy_users_total_capped).
	maxHeartbeatDistinct = 100_000
)

// Line kinds of the budget.
const (
	lineAuth uint8 = iota + 1
	lineClose
)

// budgetKey is what makes two decision lines repeats of each other.
type budgetKey struct {
	route, user, closedBy string
	kind                  uint8
	class                 rewrite.Class
	action, would         policy.Action
	code                  int32 // close code or status of a rejection; ws_close: its close code
}

// heldLine is one key of the minute: how many of its lines are held back
// now, and a copy of the first held one (nil until one is held).
type heldLine struct {
	n     int64
	auth  *authLine
	close *closeLine
	// ws_close summaries: totals over the held lines.
	durationMS, bytesIn, bytesOut int64
}

// hbKey counts decisions for the heartbeat.
type hbKey struct {
	route  string
	class  rewrite.Class
	action policy.Action
}

// logGate is the budget and the heartbeat counters of one Server. All
// decision lines pass through it; it is cheap when nothing is held: one
// uncontended lock, a clock read and two map lookups.
type logGate struct {
	log       *zerolog.Logger
	now       func() time.Time
	heldTotal prometheus.Counter // authgate_log_lines_held_total
	lines     func() int64       // lines written so far (the writer's count); nil: not known
	openWS    func() int

	mu      sync.Mutex
	max     int   // log.max_lines_per_minute; 0: no budget
	minute  int64 // the current UTC minute, Unix seconds / 60
	used    int   // budgeted lines written in it
	keys    map[budgetKey]int32
	held    []heldLine
	holding int // keys with held lines
	closed  bool
	flushT  *time.Timer
	armed   bool

	// Heartbeat counters since the last heartbeat.
	since      time.Time
	decisions  map[hbKey]int64
	users      map[string]struct{}
	distinct   map[uint64]struct{}
	capped     bool
	linesHeld  int64
	linesAtHB  int64
	seed       maphash.Seed
	hbMu       sync.Mutex // serialises heartbeats
	hbInterval time.Duration
	hbTimer    *time.Timer
	hbNext     time.Time
	hbStopped  bool
}

func newLogGate(l *zerolog.Logger, cfg policy.Log, now func() time.Time, held prometheus.Counter, openWS func() int) *logGate {
	if now == nil {
		now = time.Now
	}
	g := &logGate{
		log: l, now: now, heldTotal: held, openWS: openWS,
		max: cfg.MaxLinesPerMinute, keys: make(map[budgetKey]int32),
		decisions: make(map[hbKey]int64), users: make(map[string]struct{}), distinct: make(map[uint64]struct{}),
		seed: maphash.MakeSeed(), hbInterval: cfg.Heartbeat,
	}
	t := now()
	g.minute, g.since = minuteOf(t), t
	return g
}

func minuteOf(t time.Time) int64 {
	s := t.Unix()
	if s < 0 {
		return (s - 59) / 60
	}
	return s / 60
}

// configure applies a reloaded log config: the new budget from now on,
// the new heartbeat interval from the last heartbeat on. Counts and the
// schedule are kept.
func (g *logGate) configure(cfg policy.Log) {
	g.mu.Lock()
	g.max = cfg.MaxLinesPerMinute
	g.mu.Unlock()
	g.hbMu.Lock()
	defer g.hbMu.Unlock()
	if cfg.Heartbeat == g.hbInterval {
		return
	}
	g.hbInterval = cfg.Heartbeat
	if g.hbTimer == nil || g.hbStopped {
		return // not started (a Server without Run) or stopped
	}
	g.hbTimer.Stop()
	if g.hbInterval > 0 {
		g.mu.Lock()
		since := g.since
		g.mu.Unlock()
		g.hbNext = since.Add(g.hbInterval)
		g.hbTimer.Reset(max(0, g.hbNext.Sub(g.now())))
	}
}

// admitAuth counts a decision for the heartbeat and reports whether its
// line is to be written now (false: held back for a summary). rawUser is
// the user id before log.user_ids, for counting distinct legacy users.
func (g *logGate) admitAuth(l *authLine, class rewrite.Class, action, would policy.Action, rawUser string) bool {
	g.mu.Lock()
	sums := g.rollover()
	g.decisions[hbKey{l.route, class, action}]++
	if class == rewrite.ClassUUID && rawUser != "" {
		g.countUser(l, rawUser)
	}
	ok := true
	if g.max > 0 {
		code := int32(l.closeCode)
		if code == 0 {
			code = int32(l.status)
		}
		k := budgetKey{route: l.route, user: l.user, kind: lineAuth, class: class, action: action, would: would, code: code}
		ok = g.admit(k, func(h *heldLine) {
			if h.auth == nil {
				c := l.clone()
				h.auth = &c
			}
		})
	}
	g.mu.Unlock()
	g.writeSummaries(sums)
	return ok
}

// admitClose is admitAuth for a ws_close line (not a decision: it is not
// counted in heartbeats).
func (g *logGate) admitClose(l *closeLine) bool {
	g.mu.Lock()
	sums := g.rollover()
	ok := true
	if g.max > 0 {
		k := budgetKey{route: l.route, user: l.user, closedBy: l.closedBy, kind: lineClose, code: int32(l.closeCode)}
		ok = g.admit(k, func(h *heldLine) {
			if h.close == nil {
				c := l.clone()
				h.close = &c
			}
			h.durationMS += l.durationMS
			h.bytesIn += l.bytesIn
			h.bytesOut += l.bytesOut
		})
	}
	g.mu.Unlock()
	g.writeSummaries(sums)
	return ok
}

// admit applies the budget to a line of key k; hold records a held line.
// Called with g.mu held.
func (g *logGate) admit(k budgetKey, hold func(*heldLine)) bool {
	i, seen := g.keys[k]
	if !seen {
		// A first sighting in the minute: always written.
		if len(g.keys) < maxBudgetKeys {
			k.route, k.user = strings.Clone(k.route), strings.Clone(k.user)
			g.keys[k] = int32(len(g.held))
			g.held = append(g.held, heldLine{})
		}
		g.used++
		return true
	}
	// Each key of the minute may come to owe a summary line: room is kept
	// for one per key, so a minute's lines stay within the budget,
	// summaries included (only first sightings past it can exceed it).
	if g.used+len(g.keys) < g.max || g.closed {
		g.used++
		return true
	}
	h := &g.held[i]
	if h.n == 0 {
		g.holding++
	}
	h.n++
	hold(h)
	g.linesHeld++
	if g.heldTotal != nil {
		g.heldTotal.Inc()
	}
	if !g.armed {
		// Flush at the minute's end even if no line comes then.
		end := time.Unix((g.minute+1)*60, 0)
		d := max(end.Sub(g.now()), time.Millisecond)
		if g.flushT == nil {
			g.flushT = time.AfterFunc(d, g.tick)
		} else {
			g.flushT.Reset(d)
		}
		g.armed = true
	}
	return false
}

// countUser adds a legacy user to the heartbeat's sets. Called with g.mu
// held.
func (g *logGate) countUser(l *authLine, raw string) {
	if !g.capped {
		h := maphash.String(g.seed, raw)
		if _, ok := g.distinct[h]; !ok {
			if len(g.distinct) >= maxHeartbeatDistinct {
				g.capped = true
			} else {
				g.distinct[h] = struct{}{}
			}
		}
	}
	if l.hasUser && len(g.users) < maxHeartbeatUsers {
		if _, ok := g.users[l.user]; !ok {
			g.users[strings.Clone(l.user)] = struct{}{}
		}
	}
}

// rollover starts a new minute when the clock has passed the current
// one, returning the summaries to write. Called with g.mu held.
func (g *logGate) rollover() []heldLine {
	m := minuteOf(g.now())
	if m == g.minute {
		return nil
	}
	sums := g.takeHeld()
	g.minute, g.used = m, len(sums)
	clear(g.keys)
	clear(g.held)
	g.held = g.held[:0]
	return sums
}

// takeHeld returns the held lines as summaries and zeroes their counts,
// keeping the keys (they stay seen for the rest of the minute). Called
// with g.mu held.
func (g *logGate) takeHeld() []heldLine {
	if g.holding == 0 {
		return nil
	}
	sums := make([]heldLine, 0, g.holding)
	for i := range g.held {
		if h := &g.held[i]; h.n > 0 {
			sums = append(sums, *h)
			*h = heldLine{}
		}
	}
	g.holding = 0
	return sums
}

// tick is the minute-end timer.
func (g *logGate) tick() {
	g.mu.Lock()
	g.armed = false
	sums := g.rollover()
	if g.holding > 0 && !g.closed {
		// Fired early (clock adjustment): try again at the minute's end.
		g.armed = true
		g.flushT.Reset(max(time.Unix((g.minute+1)*60, 0).Sub(g.now()), time.Millisecond))
	}
	g.mu.Unlock()
	g.writeSummaries(sums)
}

// close writes what is held and holds nothing from now on (shutdown).
func (g *logGate) close() {
	g.mu.Lock()
	g.closed = true
	if g.flushT != nil {
		g.flushT.Stop()
		g.armed = false
	}
	sums := g.takeHeld()
	g.mu.Unlock()
	g.writeSummaries(sums)
}

func (g *logGate) writeSummaries(sums []heldLine) {
	for i := range sums {
		h := &sums[i]
		switch {
		case h.auth != nil:
			writeAuth(g.log, h.auth, h.n)
		case h.close != nil:
			c := *h.close
			c.durationMS, c.bytesIn, c.bytesOut = h.durationMS, h.bytesIn, h.bytesOut
			writeClose(g.log, &c, h.n)
		}
	}
}

// startHeartbeats writes a heartbeat every log.heartbeat from now on;
// lines reports the lines written so far.
func (g *logGate) startHeartbeats(lines func() int64) {
	g.hbMu.Lock()
	defer g.hbMu.Unlock()
	g.lines = lines
	if lines != nil {
		g.linesAtHB = lines()
	}
	// The first interval runs from the gate's creation (New), before the
	// first request: no decision falls outside a heartbeat.
	g.mu.Lock()
	since := g.since
	g.mu.Unlock()
	g.hbNext = since.Add(g.hbInterval)
	g.hbTimer = time.AfterFunc(time.Hour, g.beatTimer)
	g.hbTimer.Stop()
	if g.hbInterval > 0 {
		g.hbTimer.Reset(max(g.hbNext.Sub(g.now()), 0))
	}
}

func (g *logGate) beatTimer() {
	g.hbMu.Lock()
	defer g.hbMu.Unlock()
	if g.hbStopped || g.hbInterval <= 0 {
		return
	}
	if d := g.hbNext.Sub(g.now()); d > 10*time.Millisecond {
		// A timer that fired for a schedule a reload has since moved.
		g.hbTimer.Reset(d)
		return
	}
	g.beat()
	g.hbNext = g.hbNext.Add(g.hbInterval)
	if now := g.now(); !g.hbNext.After(now) {
		g.hbNext = now.Add(g.hbInterval) // a stalled process does not burst
	}
	g.hbTimer.Reset(g.hbNext.Sub(g.now()))
}

// stopHeartbeats writes the final heartbeat (when heartbeats are on) and
// stops the schedule.
func (g *logGate) stopHeartbeats() {
	g.hbMu.Lock()
	defer g.hbMu.Unlock()
	if g.hbTimer == nil || g.hbStopped {
		return
	}
	g.hbStopped = true
	g.hbTimer.Stop()
	if g.hbInterval > 0 {
		g.beat()
	}
}

// beat writes one heartbeat. Held lines stay held until the minute's end:
// their summary may fall in the next interval (the report compares counts
// and lines over a whole stretch of heartbeats, not interval by interval).
// Called with g.hbMu held.
func (g *logGate) beat() {
	g.mu.Lock()
	since := g.since
	g.since = g.now()
	decisions, users := g.decisions, g.users
	total, capped, held := len(g.distinct), g.capped, g.linesHeld
	g.decisions, g.users = make(map[hbKey]int64, len(decisions)), make(map[string]struct{})
	clear(g.distinct)
	g.capped, g.linesHeld = false, 0
	g.mu.Unlock()

	keys := make([]hbKey, 0, len(decisions))
	var n int64
	for k, c := range decisions {
		keys = append(keys, k)
		n += c
	}
	slices.SortFunc(keys, func(x, y hbKey) int {
		if c := strings.Compare(x.route, y.route); c != 0 {
			return c
		}
		if c := strings.Compare(x.class.String(), y.class.String()); c != 0 {
			return c
		}
		return strings.Compare(x.action.String(), y.action.String())
	})
	arr := zerolog.Arr()
	for _, k := range keys {
		arr.Dict(zerolog.Dict().Str(event.FieldRoute, k.route).Str(event.FieldClass, k.class.String()).
			Str(event.FieldAction, k.action.String()).Int64(event.FieldCount, decisions[k]))
	}
	names := make([]string, 0, len(users))
	for u := range users {
		names = append(names, u)
	}
	slices.Sort(names)
	var written int64
	if g.lines != nil {
		now := g.lines()
		written, g.linesAtHB = now-g.linesAtHB, now+1 // +1: this heartbeat line
	}
	open := 0
	if g.openWS != nil {
		open = g.openWS()
	}
	ev := g.log.Info().Str(event.FieldEvent, event.Heartbeat).
		Str(event.FieldSince, since.UTC().Format(time.RFC3339Nano)).
		Float64(event.FieldIntervalSeconds, g.hbInterval.Seconds()).
		Int64(event.FieldDecisionsTotal, n).Array(event.FieldDecisions, arr).
		Strs(event.FieldLegacyUsers, names).Int(event.FieldLegacyUsersTotal, total)
	if capped {
		ev = ev.Bool(event.FieldLegacyUsersCapped, true)
	}
	ev.Int64(event.FieldLinesWritten, written).Int64(event.FieldLinesHeld, held).
		Int(event.FieldWebSocketsOpen, open).Msg("heartbeat")
}
