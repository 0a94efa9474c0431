package report

// Log coverage (issue 14, point 4): the verdict safe rests on silence, so
// the report must know that the logs it read are not themselves silent
// where they should speak. A log drain drops data; an instance that
// crashed logs nothing; both look exactly like "no legacy use".
//
// What is measured. Every line of an authgate event kind (auth, ws_close,
// config, upstream_error, http_error, start, stop) with a valid time in the
// window is presence of its instance (the "instance" field; a line without
// one, from an older authgate, belongs to one unnamed instance ""). --route
// does not apply: a line of any route shows the instance was logging.
// Only the quiet period [to - quiet_for, to) is checked, because only it
// carries the verdict; a silence that begins before the period counts from
// the period's start.
//
// The rules, per instance, over the quiet period:
//   - A silence between two consecutive lines (ordered by time, whatever
//     the order of the files or lines) longer than --max-gap is a hole,
//     unless the instance had stopped: its latest start/stop event before
//     the silence is a stop, and nothing was served after it (a later
//     start resumes it). A silence that ends in a start without a stop
//     before it is a crash and a hole.
//   - Its last line before the window's end begins a silence to the end:
//     a hole unless it had stopped (scale-down, deploy, suspension).
//   - The silence from the period's start to its first line in the period
//     is a hole if it is longer than --max-gap and the instance was running
//     when the period began (it logged before the period, and not a stop
//     last). An instance first seen in the period is a new one (a deploy, a
//     scale-up) when it logged start before serving anything: no hole, the
//     instances before it cover that time. First seen serving without a
//     start, its earlier log is missing: a hole.
//
// And across instances: every stretch of the period longer than --max-gap
// in which no instance logged anything is uncovered, even when each
// instance explained its own silence (every instance had stopped: the
// service was down, and its clients were not tested). Both rules apply: at
// every moment some instance is logging, and no instance falls silent
// without saying so.
//
// How it streams. Lines arrive in any order: several files, each instance
// in its own or all merged, possibly given newest first. Sorting them
// would need memory for every line. Instead each instance keeps a sorted
// list of spans: maximal stretches whose lines are at most --max-gap apart,
// separated from each other by more than --max-gap. A line inside or within
// --max-gap of a span extends it (and may join it to its neighbour); any
// other line opens a span of its own. The gaps between spans are then
// exactly the silences longer than --max-gap between consecutive lines, as
// if the lines had been sorted, and a span records the first and last
// start, stop and serving line in it, which is all the rules above need.
// Memory per instance is one span per hole plus one, not per line: an
// instance without holes is one span however many lines it wrote. Lines
// in order touch the last span only; out of order a binary search finds
// the span. Instances, spans per instance and spans in all are bounded
// (maxInstances, maxSpansPerInstance, maxSpans); past a bound the lines
// are counted as untracked and the verdict cannot be safe.

import (
	"cmp"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"authgate/event"
)

// DefaultMaxGap is the longest silence of an instance inside the quiet
// period that does not make the verdict insufficient_data, when
// Query.MaxGap is zero.
const DefaultMaxGap = 6 * time.Hour

// Bounds on the coverage tables. They hold authgate's own instance names
// and one span per hole, so real logs stay far below them; they exist so
// that crafted or broken input cannot grow memory with its line count.
const (
	maxInstances        = 10_000
	maxSpansPerInstance = 4096    // holes of one instance; also bounds an out-of-order insert's copy
	maxSpans            = 1 << 18 // spans of all instances: 14 MiB
)

// lineKind is what a line says about its instance's life.
type lineKind uint8

const (
	kindServe  lineKind = iota // auth, ws_close, upstream_error, http_error: it was serving
	kindConfig                 // config: present; written before start, too
	kindStart
	kindStop
	kindHeartbeat // heartbeat: present (and its counts, heartbeat.go)
	kindNone      // not an authgate event
)

// eventKind classifies an event value.
func eventKind(ev []byte) lineKind {
	switch string(ev) {
	case event.Auth, event.WSClose, event.UpstreamError, event.HTTPError:
		return kindServe
	case event.Config:
		return kindConfig
	case event.Start:
		return kindStart
	case event.Stop:
		return kindStop
	case event.Heartbeat:
		return kindHeartbeat
	}
	return kindNone
}

const (
	none    = math.MinInt64 // a latest time not seen
	noneMin = math.MaxInt64 // an earliest time not seen
)

// span is a stretch of one instance's log in which consecutive lines are
// at most max-gap apart.
type span struct {
	from, to                       int64 // its first and last line
	firstStart, firstServe         int64 // earliest start event, serving line; noneMin if none
	lastStart, lastStop, lastServe int64 // latest ones; none if none
}

func newSpan(t int64) span {
	return span{from: t, to: t, firstStart: noneMin, firstServe: noneMin,
		lastStart: none, lastStop: none, lastServe: none}
}

func (s *span) note(t int64, k lineKind) {
	switch k {
	case kindServe:
		s.firstServe = min(s.firstServe, t)
		s.lastServe = max(s.lastServe, t)
	case kindStart:
		s.firstStart = min(s.firstStart, t)
		s.lastStart = max(s.lastStart, t)
	case kindStop:
		s.lastStop = max(s.lastStop, t)
	}
}

func (s *span) absorb(o *span) {
	s.from, s.to = min(s.from, o.from), max(s.to, o.to)
	s.firstStart, s.firstServe = min(s.firstStart, o.firstStart), min(s.firstServe, o.firstServe)
	s.lastStart, s.lastStop, s.lastServe = max(s.lastStart, o.lastStart), max(s.lastStop, o.lastStop), max(s.lastServe, o.lastServe)
}

// stopped reports whether the instance had stopped at the span's end: its
// latest start/stop event is a stop, and it served nothing after it. A
// start and a stop at the same instant count as running (the cautious
// reading).
func (s *span) stopped() bool {
	return s.lastStop != none && s.lastStop > s.lastStart && s.lastStop >= s.lastServe
}

// startedFirst reports whether the span holds a start event before (or
// with) its first serving line: the instance began here.
func (s *span) startedFirst() bool {
	return s.firstStart != noneMin && s.firstStart <= s.firstServe
}

// instStat is one instance's coverage.
type instStat struct {
	name              string
	lines, quietLines int64
	starts, stops     int64
	first, last       int64
	before            span // its lines in the window before the quiet period; valid if hasBefore
	hasBefore         bool
	spans             []span // in the quiet period, sorted, more than max-gap apart
	hint              int    // the span the last line fell in
	truncated         bool   // a span did not fit; later lines are untracked
	hb                hbStat // its heartbeats and the decision lines they are checked against
}

// coverStat is the Aggregator's coverage state.
type coverStat struct {
	maxGap    int64
	insts     map[string]*instStat
	recent    [recentInstances]*instStat // the instances of recent lines; parser.known holds their names
	budget    int                        // spans that may still be opened
	untracked int64
	buckets   int // line buckets of all instances (heartbeat.go)
}

func (c *coverStat) init(maxGap time.Duration) {
	c.maxGap = int64(maxGap)
	c.insts = make(map[string]*instStat)
	c.budget = maxSpans
}

// instance returns the instance of the line just parsed, or nil when the
// table is full.
func (a *Aggregator) instance() *instStat {
	c, r := &a.cov, &a.p.rec
	if r.known != 0 {
		return c.recent[r.known-1]
	}
	name := r.str(fInstance) // nil (unnamed) when absent
	for _, s := range c.recent {
		if s != nil && s.name == string(name) {
			return s
		}
	}
	s := c.insts[string(name)]
	if s == nil {
		if len(c.insts) >= maxInstances {
			return nil
		}
		s = &instStat{name: string(name), first: noneMin, last: none}
		c.insts[s.name] = s
	}
	copy(c.recent[1:], c.recent[:])
	c.recent[0] = s
	copy(a.p.known[1:], a.p.known[:])
	copy(a.p.knownUsable[1:], a.p.knownUsable[:])
	a.p.known[0], a.p.knownUsable[0] = s.name, !strings.Contains(s.name, `\`)
	return s
}

// cover records that the line just parsed, of kind k at t, shows its
// instance, and returns the instance (nil when the table is full); the
// caller has checked that t is in the window.
func (a *Aggregator) cover(t int64, k lineKind) *instStat {
	c := &a.cov
	s := a.instance()
	if s == nil {
		c.untracked++
		return nil
	}
	s.lines++
	s.first, s.last = min(s.first, t), max(s.last, t)
	switch k {
	case kindStart:
		s.starts++
	case kindStop:
		s.stops++
	}
	if t < a.quietStart {
		if !s.hasBefore {
			s.before, s.hasBefore = newSpan(t), true
		}
		s.before.from, s.before.to = min(s.before.from, t), max(s.before.to, t)
		s.before.note(t, k)
		return s
	}
	s.quietLines++
	if s.truncated || !s.add(t, k, c.maxGap, &c.budget) {
		s.truncated = true
		c.untracked++
	}
	return s
}

// add folds a line of the quiet period into the spans. It reports false
// when a new span was needed and no more may be opened. Times are compared
// by difference: all lie in the quiet period, so differences cannot
// overflow.
func (s *instStat) add(t int64, k lineKind, maxGap int64, budget *int) bool {
	i := s.hint
	if i >= len(s.spans) || s.spans[i].from-t > maxGap || t-s.spans[i].to > maxGap {
		// The first span that ends no more than maxGap before t.
		i, _ = slices.BinarySearchFunc(s.spans, t, func(sp span, t int64) int {
			if t-sp.to > maxGap {
				return -1
			}
			return 1
		})
		if i == len(s.spans) || s.spans[i].from-t > maxGap {
			// More than maxGap from every span: a span of its own.
			if len(s.spans) >= maxSpansPerInstance || *budget <= 0 {
				return false
			}
			*budget--
			s.spans = slices.Insert(s.spans, i, newSpan(t))
		}
	}
	sp := &s.spans[i]
	switch {
	case t < sp.from:
		sp.from = t
		if i > 0 && t-s.spans[i-1].to <= maxGap {
			i--
			s.join(i, budget)
		}
	case t > sp.to:
		sp.to = t
		if i+1 < len(s.spans) && s.spans[i+1].from-t <= maxGap {
			s.join(i, budget)
		}
	}
	s.spans[i].note(t, k)
	s.hint = i
	return true
}

// mergeSpans returns spans with those at most g apart joined: the spans
// of a longer allowed silence (g is more than the max-gap they were built
// with).
func mergeSpans(spans []span, g int64) []span {
	out := make([]span, 0, len(spans))
	for _, sp := range spans {
		if n := len(out); n > 0 && sp.from-out[n-1].to <= g {
			out[n-1].absorb(&sp)
			continue
		}
		out = append(out, sp)
	}
	return out
}

// join merges span i+1 into span i.
func (s *instStat) join(i int, budget *int) {
	s.spans[i].absorb(&s.spans[i+1])
	s.spans = slices.Delete(s.spans, i+1, i+2)
	*budget++
}

// Coverage is how well the logs cover the quiet period, per instance (see
// SCHEMA.md and the comment at the top of coverage.go).
type Coverage struct {
	MaxGap    string     `json:"max_gap"` // --max-gap, normalised like quiet_for
	From      time.Time  `json:"from"`    // the quiet period checked: verdict.quiet_from ..
	To        time.Time  `json:"to"`      // .. window.to
	Instances []Instance `json:"instances"`
	// Holes counts the gaps of all instances.
	Holes int `json:"holes"`
	// Uncovered lists the stretches of the period longer than max_gap in
	// which no instance logged anything, oldest first.
	Uncovered []Gap `json:"uncovered"`
	// UntrackedLines counts lines beyond the bounds on instances and
	// holes; when it is not zero coverage is unknown and the verdict is
	// insufficient_data.
	UntrackedLines int64 `json:"untracked_lines"`
	// LostLines sums the instances' lost_lines: decisions heartbeats
	// counted that have no line (a log pipeline dropped them).
	LostLines       int64 `json:"lost_lines"`
	LostLegacyLines int64 `json:"lost_legacy_lines"`
}

// Instance is one instance's coverage.
type Instance struct {
	Name       string    `json:"name"`  // the instance field; "" for lines without one (older logs)
	Lines      int64     `json:"lines"` // its lines of any authgate event in the window
	QuietLines int64     `json:"quiet_period_lines"`
	First      time.Time `json:"first"` // its first and last line in the window
	Last       time.Time `json:"last"`
	Starts     int64     `json:"starts"` // start and stop events in the window
	Stops      int64     `json:"stops"`
	// Stopped is true when it had stopped at the window's end: its latest
	// start/stop event is a stop and it served nothing after it.
	Stopped bool `json:"stopped"`
	// Gaps are its holes in the quiet period, oldest first: silences
	// longer than max_gap that no stop explains.
	Gaps []Gap `json:"gaps"`
	// Truncated is true when it had more separate stretches of log than
	// are tracked; its later lines are counted in untracked_lines.
	Truncated bool `json:"truncated"`
	// MaxSilence is the longest silence it may keep without a hole:
	// max_gap, or two heartbeat intervals when it writes heartbeats and
	// that is longer.
	MaxSilence string `json:"max_silence"`
	// Heartbeats are its heartbeat lines in the window (0: an authgate
	// without them, or log.heartbeat: 0s); HeartbeatInterval the longest
	// interval they state.
	Heartbeats        int64  `json:"heartbeats"`
	HeartbeatInterval string `json:"heartbeat_interval,omitempty"`
	// HeartbeatDecisions are the decisions its heartbeats counted (those
	// whose interval lies in the window); LostLines how many of them have
	// no line in the logs read, LostLegacyLines those of class uuid.
	// LostUnknown: too many heartbeats or minutes to compare.
	HeartbeatDecisions int64 `json:"heartbeat_decisions"`
	LostLines          int64 `json:"lost_lines"`
	LostLegacyLines    int64 `json:"lost_legacy_lines"`
	LostUnknown        bool  `json:"lost_lines_unknown"`
	// HeldLines are the lines its log budget held back in that time, as
	// its heartbeats say (they are in summary lines, not lost).
	HeldLines int64 `json:"held_lines"`

	present []Gap // its spans in the quiet period, for the HTML timeline
}

// Gap is a stretch of time without lines.
type Gap struct {
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	Duration string    `json:"duration"` // like quiet_for, to the second: "7h30m0s", "2d"
	Seconds  int64     `json:"seconds"`  // whole seconds, rounded down
}

func newGap(from, to int64) Gap {
	d := time.Duration(to - from)
	return Gap{From: utc(from), To: utc(to), Duration: FormatDuration(d.Round(time.Second)), Seconds: int64(d / time.Second)}
}

// coverage builds the Coverage of the quiet period [quietStart, to).
func (a *Aggregator) coverage() Coverage {
	c := &a.cov
	qs, end, g := a.quietStart, a.to, c.maxGap
	cov := Coverage{
		MaxGap: FormatDuration(time.Duration(g)), From: utc(qs), To: utc(end),
		Instances: make([]Instance, 0, len(c.insts)), Uncovered: []Gap{}, UntrackedLines: c.untracked,
	}
	var all []span
	gAll := g // silences of all instances: the longest any instance may keep
	for _, s := range c.insts {
		gAll = max(gAll, s.hb.hbGap(g))
	}
	for _, s := range c.insts {
		g := s.hb.hbGap(g)
		spans := s.spans
		if g > c.maxGap {
			spans = mergeSpans(spans, g)
		}
		in := Instance{Name: s.name, Lines: s.lines, QuietLines: s.quietLines, First: utc(s.first),
			Last: utc(s.last), Starts: s.starts, Stops: s.stops, Gaps: []Gap{}, Truncated: s.truncated,
			MaxSilence: FormatDuration(time.Duration(g)), Heartbeats: s.hb.beats, HeartbeatDecisions: s.hb.counted, HeldLines: s.hb.held}
		if s.hb.beats > 0 {
			s.hb.flush(c)
			in.HeartbeatInterval = FormatDuration(time.Duration(s.hb.interval))
			var known bool
			in.LostLines, in.LostLegacyLines, known = s.hb.lost()
			in.LostUnknown = !known
			cov.LostLines += in.LostLines
			cov.LostLegacyLines += in.LostLegacyLines
		}
		// explained: a silence from cursor on has a reason. At the period's
		// start that is a stop before it, or, for an instance first seen in
		// the period, a start before it served (see the top of the file).
		var explained bool
		if s.hasBefore {
			explained = s.before.stopped()
			in.Stopped = explained
		} else if len(spans) > 0 { // none only when its lines did not fit (truncated)
			explained = spans[0].startedFirst()
		}
		cursor := qs
		for i := range spans {
			sp := &spans[i]
			if sp.from-cursor > g && !explained {
				in.Gaps = append(in.Gaps, newGap(cursor, sp.from))
			}
			in.present = append(in.present, newGap(sp.from, sp.to))
			cursor, explained = sp.to, sp.stopped()
			in.Stopped = explained
		}
		if end-cursor > g && !explained {
			in.Gaps = append(in.Gaps, newGap(cursor, end))
		}
		cov.Holes += len(in.Gaps)
		cov.Instances = append(cov.Instances, in)
		all = append(all, spans...)
	}
	g = gAll
	slices.SortFunc(cov.Instances, func(x, y Instance) int { return strings.Compare(x.Name, y.Name) })

	slices.SortFunc(all, func(x, y span) int { return cmp.Compare(x.from, y.from) })
	cursor := qs
	for _, sp := range all {
		if sp.from-cursor > g {
			cov.Uncovered = append(cov.Uncovered, newGap(cursor, sp.from))
		}
		cursor = max(cursor, sp.to)
	}
	if end-cursor > g {
		cov.Uncovered = append(cov.Uncovered, newGap(cursor, end))
	}
	return cov
}

// instanceHole is one instance's gap, for the verdict's reason.
type instanceHole struct {
	Name string
	Gap  Gap
}

// holes lists every instance's gaps, oldest first.
func (c *Coverage) holes() []instanceHole {
	var hs []instanceHole
	for _, in := range c.Instances {
		for _, g := range in.Gaps {
			hs = append(hs, instanceHole{in.Name, g})
		}
	}
	slices.SortStableFunc(hs, func(x, y instanceHole) int { return x.Gap.From.Compare(y.Gap.From) })
	return hs
}

// instanceLabel names an instance in a table cell.
func instanceLabel(name string) string {
	if name == "" {
		return "(unnamed)"
	}
	return printable(name)
}

// quoteInstance names an instance in a sentence.
func quoteInstance(name string) string {
	if name == "" {
		return "(unnamed)"
	}
	return strconv.Quote(name)
}

// downtimes lists the uncovered stretches that no instance's hole
// contains: every instance had stopped (or not yet started). The others
// are already shown as holes.
func (c *Coverage) downtimes() []Gap {
	var out []Gap
	hs := c.holes()
	for _, u := range c.Uncovered {
		if !slices.ContainsFunc(hs, func(h instanceHole) bool {
			return !h.Gap.From.After(u.From) && !h.Gap.To.Before(u.To)
		}) {
			out = append(out, u)
		}
	}
	return out
}
