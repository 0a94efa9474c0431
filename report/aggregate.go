package report

import (
	"math"
	"time"

	"authgate/event"
)

// Bounds that keep memory proportional to distinct users: values a client
// chooses (user agents, origins, reasons) could otherwise grow without
// limit. What does not fit is counted, not dropped silently.
const (
	maxPerUser    = 10     // distinct user agents, origins and routes kept per user
	maxDistinct   = 10_000 // distinct values kept in a global table (user agents, origins, reasons, ...)
	maxLineLength = 1 << 20
)

// Query selects what a report covers.
type Query struct {
	// From is the window's inclusive start; the zero value means the
	// beginning of the logs.
	From time.Time
	// To is the window's exclusive end and the end of the quiet period. It
	// must be set: a report's "now".
	To time.Time
	// Route keeps only auth events of this route; "" keeps all.
	Route string
	// QuietFor is how long before To legacy use must have stopped for the
	// verdict safe. Zero means DefaultQuietFor.
	QuietFor time.Duration
	// MaxGap is the longest silence of an instance in the quiet period
	// that does not make the verdict insufficient_data (see coverage.go).
	// Zero means DefaultMaxGap.
	MaxGap time.Duration
}

// DefaultQuietFor is the quiet period when Query.QuietFor is zero.
const DefaultQuietFor = 7 * 24 * time.Hour

// Aggregator folds log lines into the counts a Report is built from. Its
// memory grows with distinct users (and days), never with the number of
// lines. It is not safe for concurrent use.
type Aggregator struct {
	q           Query
	from, to    int64 // nanoseconds; from is math.MinInt64 when unbounded
	quietStart  int64
	p           parser
	strs        interner
	lines       Lines
	inputs      []Input
	firstEvent  int64
	lastEvent   int64
	requests    int64
	byClass     counter
	byAction    counter
	days        map[int64]*dayStat
	users       map[string]*userStat
	legacy      legacyStat
	userAgents  counter // legacy requests per user agent
	origins     counter // legacy requests per origin
	routes      map[string]*routeStat
	rejReason   counter
	rejClass    counter
	rejected    int64
	would       int64
	wouldAction counter
	wouldLegacy int64
	quiet       quietStat
	cov         coverStat

	// Heartbeats (heartbeat.go): legacy decisions they counted in the
	// window and in the quiet period (of --route), the users they named,
	// and heartbeat lines that could not be read.
	hbLegacy, hbQuietLegacy int64
	hbUsers                 map[string]*hbUser
	hbInvalid               int64
}

type legacyStat struct {
	requests, rejected, anonymous int64
	first, last                   int64
	lastUser                      string
}

type quietStat struct {
	requests, legacy, legacyRejected, legacyAnonymous int64
}

type dayStat struct {
	requests, legacy, legacyUsers, legacyRejected, jwt, jwtRejected, rejected, would int64
}

type routeStat struct {
	requests, legacy, rejected int64
}

type userStat struct {
	id                  string
	requests, rejected  int64
	quiet, would        int64
	first, last         int64
	userAgents, origins valueList
	routes              valueList
	days                dayBits
}

// NewAggregator returns an Aggregator for q.
func NewAggregator(q Query) *Aggregator {
	if q.QuietFor <= 0 {
		q.QuietFor = DefaultQuietFor
	}
	if q.MaxGap <= 0 {
		q.MaxGap = DefaultMaxGap
	}
	a := &Aggregator{
		q:          q,
		from:       math.MinInt64,
		to:         q.To.UnixNano(),
		firstEvent: math.MaxInt64,
		lastEvent:  math.MinInt64,
		days:       make(map[int64]*dayStat),
		users:      make(map[string]*userStat),
		routes:     make(map[string]*routeStat),
		hbUsers:    make(map[string]*hbUser),
		strs:       interner{m: make(map[string]string)},
	}
	if !q.From.IsZero() {
		a.from = q.From.UnixNano()
	}
	a.quietStart = a.to - int64(q.QuietFor)
	a.legacy.first, a.legacy.last = math.MaxInt64, math.MinInt64
	a.cov.init(q.MaxGap)
	for _, c := range []*counter{&a.byClass, &a.byAction, &a.userAgents, &a.origins,
		&a.rejReason, &a.rejClass, &a.wouldAction} {
		c.m = make(map[string]*int64)
	}
	return a
}

// Line folds one log line (without its newline) into the report.
func (a *Aggregator) Line(line []byte) {
	a.lines.Read++
	if !a.p.parse(line) {
		a.lines.SkippedBy.NotJSON++
		return
	}
	r := &a.p.rec
	if !r.has(fEvent) {
		a.lines.SkippedBy.OtherProgram++
		return
	}
	kind := eventKind(r.val[fEvent])
	if kind == kindNone {
		a.lines.SkippedBy.OtherProgram++
		return
	}
	if string(r.val[fEvent]) != event.Auth {
		// Not counted as a request, but presence of its instance.
		a.lines.SkippedBy.OtherEvent++
		if r.has(fTime) && !r.isBad(fInstance) {
			if t, ok := parseTimestamp(r.val[fTime]); ok && t >= a.from && t < a.to {
				s := a.cover(t, kind)
				if kind == kindHeartbeat && s != nil {
					a.heartbeat(line[a.p.start:], s, t)
				}
			}
		}
		return
	}
	if r.bad != 0 || !r.has(fTime) {
		a.lines.SkippedBy.Invalid++
		return
	}
	t, ok := parseTimestamp(r.val[fTime])
	if !ok {
		a.lines.SkippedBy.Invalid++
		return
	}
	// A log budget summary (repeat: N) stands for N decisions.
	n := int64(1)
	if r.has(fRepeat) {
		if n, ok = parseRepeat(r.val[fRepeat]); !ok {
			a.lines.SkippedBy.Invalid++
			return
		}
	}
	if t < a.from || t >= a.to {
		a.lines.FilteredBy.OutOfWindow++
		return
	}
	// Presence does not depend on the route: the instance was logging;
	// nor do the lines heartbeats are checked against.
	if s := a.cover(t, kind); s != nil {
		s.decided(t, n, string(r.str(fClass)) == event.ClassUUID, &a.cov)
	}
	if a.q.Route != "" && string(r.val[fRoute]) != a.q.Route {
		a.lines.FilteredBy.OtherRoute++
		return
	}
	a.lines.Events++
	if r.has(fRepeat) {
		a.lines.Summaries++
		a.lines.Summarised += n
	}
	a.add(r, t, n)
}

// maxRepeat bounds a summary's repeat: a minute of the budget's held
// lines is far below it; a larger value is not authgate's.
const maxRepeat = 1 << 40

// parseRepeat reads a summary's repeat: a whole number from 1 to
// maxRepeat, as JSON writes it.
func parseRepeat(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 13 || b[0] == '0' {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, n <= maxRepeat
}

func (a *Aggregator) add(r *record, t int64, n int64) {
	class, action := r.val[fClass], r.val[fAction]
	if !r.has(fClass) {
		class = nil
	}
	if !r.has(fAction) {
		action = nil
	}
	legacy := string(class) == event.ClassUUID
	rejected := string(action) == event.ActionReject
	would := r.has(fWould) && len(r.val[fWould]) > 0
	quiet := t >= a.quietStart

	a.requests += n
	a.firstEvent = min(a.firstEvent, t)
	a.lastEvent = max(a.lastEvent, t)
	a.byClass.add(&a.strs, class, n)
	a.byAction.add(&a.strs, action, n)

	dayNum := dayOf(t)
	d := a.days[dayNum]
	if d == nil {
		d = new(dayStat)
		a.days[dayNum] = d
	}
	d.requests += n

	rt := a.routes[string(r.val[fRoute])]
	if rt == nil {
		if len(a.routes) < maxDistinct {
			rt = new(routeStat)
			a.routes[a.strs.intern(r.val[fRoute])] = rt
		} else {
			rt = &routeStat{} // counted nowhere; the route table is full
		}
	}
	rt.requests += n

	if rejected {
		a.rejected += n
		d.rejected += n
		rt.rejected += n
		reason := r.val[fReason]
		if len(reason) == 0 {
			reason = class
		}
		a.rejReason.add(&a.strs, reason, n)
		a.rejClass.add(&a.strs, class, n)
	}
	if would {
		a.would += n
		d.would += n
		a.wouldAction.add(&a.strs, r.val[fWould], n)
	}
	if string(class) == event.ClassJWT {
		d.jwt += n
		if rejected {
			d.jwtRejected += n
		}
	}
	if quiet {
		a.quiet.requests += n
	}
	if !legacy {
		return
	}

	// Legacy use: any request that carried a UUID, whatever was done with it.
	a.legacy.requests += n
	d.legacy += n
	rt.legacy += n
	if rejected {
		a.legacy.rejected += n
		d.legacyRejected += n
	}
	if would {
		a.wouldLegacy += n
	}
	if quiet {
		a.quiet.legacy += n
		if rejected {
			a.quiet.legacyRejected += n
		}
	}
	a.userAgents.add(&a.strs, r.val[fUserAgent], n)
	a.origins.add(&a.strs, r.val[fOrigin], n)

	user := r.val[fUser]
	if !r.has(fUser) || len(user) == 0 {
		a.legacy.anonymous += n
		if quiet {
			a.quiet.legacyAnonymous += n
		}
		a.legacy.first = min(a.legacy.first, t)
		if t > a.legacy.last {
			a.legacy.last, a.legacy.lastUser = t, ""
		}
		return
	}
	u := a.users[string(user)]
	if u == nil {
		u = &userStat{id: a.strs.intern(user), first: t, last: t}
		a.users[u.id] = u
	}
	u.requests += n
	u.first = min(u.first, t)
	u.last = max(u.last, t)
	if rejected {
		u.rejected += n
	}
	if quiet {
		u.quiet += n
	}
	if would {
		u.would += n
	}
	u.userAgents.add(&a.strs, r.val[fUserAgent], n)
	u.origins.add(&a.strs, r.val[fOrigin], n)
	u.routes.add(&a.strs, r.val[fRoute], n)
	if u.days.set(dayNum) {
		d.legacyUsers++
	}
	a.legacy.first = min(a.legacy.first, t)
	if t > a.legacy.last || (t == a.legacy.last && u.id < a.legacy.lastUser) {
		a.legacy.last, a.legacy.lastUser = t, u.id
	}
}

// interner stores each distinct byte string once.
type interner struct{ m map[string]string }

func (in *interner) intern(b []byte) string {
	if s, ok := in.m[string(b)]; ok {
		return s
	}
	s := string(b)
	in.m[s] = s
	return s
}

// counter counts occurrences per value, keeping at most maxDistinct values.
type counter struct {
	m        map[string]*int64
	overflow int64 // occurrences of values that did not fit
}

func (c *counter) add(in *interner, b []byte, n int64) {
	if p, ok := c.m[string(b)]; ok {
		*p += n
		return
	}
	if len(c.m) >= maxDistinct {
		c.overflow += n
		return
	}
	v := n
	c.m[in.intern(b)] = &v
}

// valueList counts up to maxPerUser distinct values.
type valueList struct {
	vals     []valueCount
	overflow int64
}

type valueCount struct {
	v string
	n int64
}

func (l *valueList) add(in *interner, b []byte, n int64) {
	for i := range l.vals {
		if l.vals[i].v == string(b) {
			l.vals[i].n += n
			return
		}
	}
	if len(l.vals) >= maxPerUser {
		l.overflow += n
		return
	}
	l.vals = append(l.vals, valueCount{in.intern(b), n})
}

// dayBits is a set of day numbers, stored as a bitmap from the lowest day
// seen; files of several instances arrive out of order, so a user's days
// cannot be counted by remembering only the last one.
type dayBits struct {
	base int64
	bits []uint64
}

// set adds day and reports whether it was new.
func (s *dayBits) set(day int64) bool {
	if s.bits == nil {
		s.base = day
		s.bits = make([]uint64, 1)
	}
	if day < s.base {
		shift := (s.base - day + 63) / 64
		s.bits = append(make([]uint64, shift, int(shift)+len(s.bits)), s.bits...)
		s.base -= shift * 64
	}
	i := day - s.base
	for int(i/64) >= len(s.bits) {
		s.bits = append(s.bits, 0)
	}
	w, m := &s.bits[i/64], uint64(1)<<(i%64)
	if *w&m != 0 {
		return false
	}
	*w |= m
	return true
}
