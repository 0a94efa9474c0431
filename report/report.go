// Package report reads authgate's JSON log lines and turns them into the
// evidence an operator needs to delete the legacy UUID path: who still
// sends a UUID, since when, from which client build, and a verdict on
// whether it is safe to remove now.
//
// It owns the reading side of the log contract named in package event: a
// single-pass scanner that extracts only the needed fields of each line
// (parse.go), an Aggregator whose memory grows with distinct users rather
// than with the size of the logs (aggregate.go), the Report it builds with
// its verdict, and the text, JSON, CSV and HTML renderings. Command is the
// `authgate report` subcommand. The JSON schema is documented in SCHEMA.md.
//
// The verdict never trusts silence it cannot vouch for: coverage.go checks,
// per instance (the lines' instance field), that the logs have no hole
// longer than --max-gap in the quiet period that a stop event does not
// explain, and that some instance logged throughout it, in one pass over
// lines in any order.
//
// Legacy use means an auth event of class uuid, whatever its action: a
// request that carried a UUID shows a client that still sends one, whether
// it was rewritten, passed or rejected. Rejected legacy requests are
// counted separately too.
package report

import (
	"cmp"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strings"
	"time"

	"authgate/event"
)

// Schema is the value of the JSON report's "schema" key.
const Schema = "authgate.report/v1"

// Verdict statuses and the exit codes Command returns for them.
const (
	StatusSafe             = "safe"
	StatusNotSafe          = "not_safe"
	StatusInsufficientData = "insufficient_data"

	ExitSafe             = 0
	ExitNotSafe          = 1
	ExitInsufficientData = 2
	ExitError            = 3 // usage or read error
)

// Report limits on list lengths; JSON users are never truncated.
const (
	topN = 20
)

// minCoverage is the share of the quiet period the logs must cover: logs
// that begin after the period started say nothing about its beginning.
const minCoverage = 0.9

// Report is the result of a run, and the JSON document (see SCHEMA.md).
// Times are UTC; a nil time means "none".
type Report struct {
	Schema        string     `json:"schema"`
	Window        Window     `json:"window"`
	Lines         Lines      `json:"lines"`
	Inputs        []Input    `json:"inputs"`
	Totals        Totals     `json:"totals"`
	Legacy        Legacy     `json:"legacy"`
	Days          []Day      `json:"days"`
	Users         []User     `json:"users"`
	TopUserAgents []Top      `json:"top_user_agents"`
	TopOrigins    []Top      `json:"top_origins"`
	Routes        []Route    `json:"routes"`
	Rejections    Rejections `json:"rejections"`
	Would         Would      `json:"would"`
	Coverage      Coverage   `json:"coverage"`
	Verdict       Verdict    `json:"verdict"`
}

// Window is the time range the report covers: [From, To).
type Window struct {
	From       *time.Time `json:"from"` // --since, else the first event; nil if neither
	To         time.Time  `json:"to"`
	Unbounded  bool       `json:"unbounded"` // no --since: from is the first event
	Route      string     `json:"route"`     // "" = all routes
	FirstEvent *time.Time `json:"first_event"`
	LastEvent  *time.Time `json:"last_event"`
}

// Lines accounts for every line read: Read = Events + Skipped + Filtered.
type Lines struct {
	Read       int64      `json:"read"`
	Events     int64      `json:"events"`   // auth events counted in this report
	Skipped    int64      `json:"skipped"`  // not an auth event, or unusable
	Filtered   int64      `json:"filtered"` // auth events outside the window or route
	SkippedBy  SkippedBy  `json:"skipped_by"`
	FilteredBy FilteredBy `json:"filtered_by"`
	ByFormat   ByFormat   `json:"by_format"` // how the lines came (see formats.go)
	// Summaries are the events that are log budget summaries (repeat:
	// N), Summarised the decisions they stand for (the sum of their N),
	// all counted in totals.
	Summaries  int64 `json:"summaries"`
	Summarised int64 `json:"summarised"`
}

// SkippedBy breaks down Lines.Skipped.
type SkippedBy struct {
	NotJSON      int64 `json:"not_json"`      // no JSON object (garbage, stack traces, blank)
	TooLong      int64 `json:"too_long"`      // over 1 MiB
	OtherProgram int64 `json:"other_program"` // JSON without an authgate event kind
	OtherEvent   int64 `json:"other_event"`   // authgate's other events (ws_close, config, ...)
	Invalid      int64 `json:"invalid"`       // auth event with a missing or bad time, or a non-string field
}

// FilteredBy breaks down Lines.Filtered.
type FilteredBy struct {
	OutOfWindow int64 `json:"out_of_window"`
	OtherRoute  int64 `json:"other_route"`
}

// Input is one file (or stdin) read.
type Input struct {
	Name     string   `json:"name"`
	Lines    int64    `json:"lines"`
	Gzip     bool     `json:"gzip"`
	ByFormat ByFormat `json:"by_format"`
	// Warnings say what of the input could not be read (a JSON stream
	// cut off mid-object, with its byte offset); never nil.
	Warnings []string `json:"warnings"`
}

// Totals counts auth events in the window.
type Totals struct {
	Requests int64            `json:"requests"`
	ByClass  map[string]int64 `json:"by_class"`
	ByAction map[string]int64 `json:"by_action"`
}

// Legacy summarises requests of class uuid.
type Legacy struct {
	Requests  int64      `json:"requests"`
	Users     int        `json:"users"`
	FirstSeen *time.Time `json:"first_seen"`
	LastSeen  *time.Time `json:"last_seen"`
	LastUser  string     `json:"last_user"` // "" when the last request had no user
	Rejected  int64      `json:"rejected"`
	Anonymous int64      `json:"anonymous_requests"` // requests without a user field
	// HeartbeatRequests are the legacy decisions heartbeats counted in
	// the window (with or without a line), HeartbeatQuietRequests those
	// counted by heartbeats written in the quiet period.
	HeartbeatRequests      int64 `json:"heartbeat_requests"`
	HeartbeatQuietRequests int64 `json:"heartbeat_quiet_period_requests"`
}

// Day counts one UTC day.
type Day struct {
	Day            string `json:"day"`
	Requests       int64  `json:"requests"`
	Legacy         int64  `json:"legacy"`
	LegacyUsers    int64  `json:"legacy_users"`
	Rejected       int64  `json:"rejected"`
	LegacyRejected int64  `json:"legacy_rejected"`
	JWT            int64  `json:"jwt"`
	JWTRejected    int64  `json:"jwt_rejected"`
	Would          int64  `json:"would"`
}

// User is one user id that sent a UUID.
type User struct {
	User               string    `json:"user"`
	Requests           int64     `json:"requests"`
	FirstSeen          time.Time `json:"first_seen"`
	LastSeen           time.Time `json:"last_seen"`
	UserAgents         []string  `json:"user_agents"`
	Origins            []string  `json:"origins"`
	Routes             []string  `json:"routes"`
	Rejected           int64     `json:"rejected"`
	Would              int64     `json:"would"`
	QuietRequests      int64     `json:"quiet_period_requests"`
	Days               int       `json:"days"`
	UserAgentsOverflow int64     `json:"user_agents_overflow"`
	OriginsOverflow    int64     `json:"origins_overflow"`
	RoutesOverflow     int64     `json:"routes_overflow"`
	// Heartbeats are the heartbeats that named the user (their times
	// bound first_seen and last_seen when no line of it survived: then
	// requests is 0); QuietHeartbeats those in the quiet period.
	Heartbeats      int64 `json:"heartbeats"`
	QuietHeartbeats int64 `json:"quiet_period_heartbeats"`
}

// Top is a value with its count of legacy requests and legacy users.
type Top struct {
	Value    string `json:"value"`
	Requests int64  `json:"requests"`
	Users    int    `json:"users"`
}

// Route counts one route.
type Route struct {
	Route       string `json:"route"`
	Requests    int64  `json:"requests"`
	Legacy      int64  `json:"legacy"`
	LegacyUsers int    `json:"legacy_users"`
	Rejected    int64  `json:"rejected"`
}

// Rejections counts requests with action reject.
type Rejections struct {
	Requests int64            `json:"requests"`
	ByReason map[string]int64 `json:"by_reason"`
	ByClass  map[string]int64 `json:"by_class"`
}

// Would counts dry-run decisions: the action that would have applied.
type Would struct {
	Requests       int64            `json:"requests"`
	ByAction       map[string]int64 `json:"by_action"`
	LegacyRequests int64            `json:"legacy_requests"`
	LegacyUsers    int              `json:"legacy_users"`
}

// Verdict says whether the legacy path can be deleted.
type Verdict struct {
	Status         string    `json:"status"`
	Reason         string    `json:"reason"`
	QuietFor       string    `json:"quiet_for"`
	QuietFrom      time.Time `json:"quiet_from"`
	Requests       int64     `json:"requests"` // auth events in the quiet period
	LegacyRequests int64     `json:"legacy_requests"`
	LegacyRejected int64     `json:"legacy_rejected"`
	LegacyUsers    int       `json:"legacy_users"`
	ExitCode       int       `json:"exit_code"`
}

func timePtr(ns int64) *time.Time {
	if ns == math.MaxInt64 || ns == math.MinInt64 {
		return nil
	}
	t := time.Unix(0, ns).UTC()
	return &t
}

func utc(ns int64) time.Time { return time.Unix(0, ns).UTC() }

// Report builds the report from what has been read so far.
func (a *Aggregator) Report() *Report {
	l := a.lines
	l.Skipped = l.SkippedBy.NotJSON + l.SkippedBy.TooLong + l.SkippedBy.OtherProgram +
		l.SkippedBy.OtherEvent + l.SkippedBy.Invalid
	l.Filtered = l.FilteredBy.OutOfWindow + l.FilteredBy.OtherRoute
	r := &Report{
		Schema: Schema,
		Window: Window{
			To:         utc(a.to),
			Unbounded:  a.from == math.MinInt64,
			Route:      a.q.Route,
			FirstEvent: timePtr(a.firstEvent),
			LastEvent:  timePtr(a.lastEvent),
		},
		Lines:  l,
		Inputs: slices.Clone(a.inputs),
		Totals: Totals{
			Requests: a.requests,
			ByClass: a.byClass.mapWith(event.ClassJWT, event.ClassJWTExpired, event.ClassJWTInvalid,
				event.ClassUUID, event.ClassMalformed, event.ClassMissing),
			ByAction: a.byAction.mapWith(event.ActionPass, event.ActionRewrite, event.ActionReject),
		},
		Legacy: Legacy{
			Requests:  a.legacy.requests,
			Users:     len(a.users),
			FirstSeen: timePtr(a.legacy.first),
			LastSeen:  timePtr(a.legacy.last),
			LastUser:  a.legacy.lastUser,
			Rejected:  a.legacy.rejected,
			Anonymous: a.legacy.anonymous,
		},
		Rejections: Rejections{
			Requests: a.rejected,
			ByReason: a.rejReason.mapWith(),
			ByClass:  a.rejClass.mapWith(),
		},
		Would: Would{
			Requests:       a.would,
			ByAction:       a.wouldAction.mapWith(),
			LegacyRequests: a.wouldLegacy,
		},
	}
	if r.Inputs == nil {
		r.Inputs = []Input{}
	}
	if a.from != math.MinInt64 {
		r.Window.From = timePtr(a.from)
	} else {
		r.Window.From = timePtr(a.firstEvent)
	}

	r.Days = a.dayList()
	r.Users, r.TopUserAgents, r.TopOrigins, r.Routes = a.userLists()
	r.Legacy.Users = len(r.Users) // users named only by heartbeats included
	r.Legacy.HeartbeatRequests, r.Legacy.HeartbeatQuietRequests = a.hbLegacy, a.hbQuietLegacy
	for _, u := range r.Users {
		if u.Would > 0 {
			r.Would.LegacyUsers++
		}
	}
	r.Coverage = a.coverage()
	r.Verdict = a.verdict(r)
	return r
}

// mapWith returns the counts as a map that always holds the given keys.
// An absent value is keyed "" and overflow "(other)".
func (c *counter) mapWith(keys ...string) map[string]int64 {
	m := make(map[string]int64, len(c.m)+len(keys))
	for _, k := range keys {
		m[k] = 0
	}
	for k, v := range c.m {
		m[k] = *v
	}
	if c.overflow > 0 {
		m["(other)"] += c.overflow
	}
	return m
}

// maxFilledDays bounds how many empty days are listed between days with
// data; beyond it only days with data are listed.
const maxFilledDays = 1000

// dayList lists days from the window's start (or the first event) to the
// window's end, including days without traffic: a gap is evidence too.
func (a *Aggregator) dayList() []Day {
	if len(a.days) == 0 && a.from == math.MinInt64 {
		return []Day{}
	}
	first := dayOf(a.firstEvent)
	if a.from != math.MinInt64 {
		first = dayOf(a.from)
	}
	last := dayOf(a.to - 1)
	var nums []int64
	if len(a.days) == 0 || last-first > maxFilledDays {
		for d := range a.days {
			nums = append(nums, d)
		}
		slices.Sort(nums)
	} else {
		for d := first; d <= last; d++ {
			nums = append(nums, d)
		}
	}
	days := make([]Day, 0, len(nums))
	for _, n := range nums {
		d := Day{Day: dayString(n)}
		if s := a.days[n]; s != nil {
			d.Requests, d.Legacy, d.LegacyUsers, d.Rejected = s.requests, s.legacy, s.legacyUsers, s.rejected
			d.LegacyRejected, d.JWT, d.JWTRejected, d.Would = s.legacyRejected, s.jwt, s.jwtRejected, s.would
		}
		days = append(days, d)
	}
	return days
}

func (a *Aggregator) userLists() (users []User, uas, origins []Top, routes []Route) {
	users = make([]User, 0, len(a.users))
	uaUsers := make(map[string]int)
	originUsers := make(map[string]int)
	routeUsers := make(map[string]int)
	for _, u := range a.users {
		days := 0
		for _, w := range u.days.bits {
			days += bits.OnesCount64(w)
		}
		users = append(users, User{
			User:               u.id,
			Requests:           u.requests,
			FirstSeen:          utc(u.first),
			LastSeen:           utc(u.last),
			UserAgents:         u.userAgents.sorted(),
			Origins:            u.origins.sorted(),
			Routes:             u.routes.sorted(),
			Rejected:           u.rejected,
			Would:              u.would,
			QuietRequests:      u.quiet,
			Days:               days,
			UserAgentsOverflow: u.userAgents.overflow,
			OriginsOverflow:    u.origins.overflow,
			RoutesOverflow:     u.routes.overflow,
		})
		for _, v := range u.userAgents.vals {
			uaUsers[v.v]++
		}
		for _, v := range u.origins.vals {
			originUsers[v.v]++
		}
		for _, v := range u.routes.vals {
			routeUsers[v.v]++
		}
	}
	for id, h := range a.hbUsers {
		u := a.users[id]
		if u == nil {
			users = append(users, User{User: id, FirstSeen: utc(h.first), LastSeen: utc(h.last),
				UserAgents: []string{}, Origins: []string{}, Routes: []string{}, Heartbeats: h.beats, QuietHeartbeats: h.quiet})
		}
	}
	for i := range users {
		if h := a.hbUsers[users[i].User]; h != nil {
			users[i].Heartbeats, users[i].QuietHeartbeats = h.beats, h.quiet
		}
	}
	slices.SortFunc(users, func(x, y User) int {
		if c := y.LastSeen.Compare(x.LastSeen); c != 0 {
			return c
		}
		return strings.Compare(x.User, y.User)
	})
	uas = a.userAgents.top(uaUsers)
	origins = a.origins.top(originUsers)
	routes = make([]Route, 0, len(a.routes))
	for name, s := range a.routes {
		routes = append(routes, Route{Route: name, Requests: s.requests, Legacy: s.legacy,
			LegacyUsers: routeUsers[name], Rejected: s.rejected})
	}
	slices.SortFunc(routes, func(x, y Route) int { return strings.Compare(x.Route, y.Route) })
	return users, uas, origins, routes
}

// sorted returns the values by count, then value.
func (l *valueList) sorted() []string {
	vals := slices.Clone(l.vals)
	slices.SortFunc(vals, func(x, y valueCount) int {
		if c := cmp.Compare(y.n, x.n); c != 0 {
			return c
		}
		return strings.Compare(x.v, y.v)
	})
	out := make([]string, len(vals))
	for i, v := range vals {
		out[i] = v.v
	}
	return out
}

// top returns the topN values by requests, then value.
func (c *counter) top(users map[string]int) []Top {
	out := make([]Top, 0, len(c.m))
	for k, v := range c.m {
		out = append(out, Top{Value: k, Requests: *v, Users: users[k]})
	}
	slices.SortFunc(out, func(x, y Top) int {
		if c := cmp.Compare(y.Requests, x.Requests); c != 0 {
			return c
		}
		return strings.Compare(x.Value, y.Value)
	})
	if len(out) > topN {
		out = out[:topN]
	}
	return out
}

// verdict decides whether the legacy path can go:
//   - not_safe: legacy use in the quiet period (who and when are named),
//     whatever the coverage: seen use is proof;
//   - insufficient_data: no auth traffic in the quiet period, or the logs
//     begin too late to cover it, or they have holes (coverage.go): an
//     instance silent for longer than --max-gap without a stop, or a
//     stretch in which no instance logged — silence is not proof;
//   - safe: otherwise.
func (a *Aggregator) verdict(r *Report) Verdict {
	quietFor := FormatDuration(a.q.QuietFor)
	v := Verdict{
		QuietFor:       quietFor,
		QuietFrom:      utc(a.quietStart),
		Requests:       a.quiet.requests,
		LegacyRequests: a.quiet.legacy,
		LegacyRejected: a.quiet.legacyRejected,
	}
	var recent []User
	for _, u := range r.Users {
		if u.QuietRequests > 0 || u.QuietHeartbeats > 0 {
			recent = append(recent, u)
		}
	}
	v.LegacyUsers = len(recent)
	since := utc(a.quietStart).Format(time.RFC3339)

	switch {
	case a.quiet.legacy > 0 || a.hbQuietLegacy > 0:
		v.Status, v.ExitCode = StatusNotSafe, ExitNotSafe
		var b strings.Builder
		if a.quiet.legacy > 0 {
			fmt.Fprintf(&b, "%s in the last %s (since %s)", plural(a.quiet.legacy, "legacy request"), quietFor, since)
		} else {
			fmt.Fprintf(&b, "no legacy request line in the last %s (since %s), but heartbeats counted %s there: "+
				"their lines were lost on the way (see coverage lost_lines)", quietFor, since, plural(a.hbQuietLegacy, "legacy request"))
		}
		if v.LegacyUsers > 0 {
			fmt.Fprintf(&b, " from %s", plural(int64(v.LegacyUsers), "user"))
		}
		if a.quiet.legacyAnonymous > 0 {
			fmt.Fprintf(&b, " (%d without a user id)", a.quiet.legacyAnonymous)
		}
		if a.quiet.legacyRejected > 0 {
			fmt.Fprintf(&b, ", %d of them rejected", a.quiet.legacyRejected)
		}
		if a.quiet.legacy > 0 && a.hbQuietLegacy > a.quiet.legacy {
			fmt.Fprintf(&b, " (heartbeats counted %d: some lines were lost)", a.hbQuietLegacy)
		}
		if r.Legacy.LastSeen != nil {
			fmt.Fprintf(&b, "; last seen %s", r.Legacy.LastSeen.Format(time.RFC3339))
			if r.Legacy.LastUser != "" {
				fmt.Fprintf(&b, " from user %s", r.Legacy.LastUser)
			}
		}
		if len(recent) > 0 {
			slices.SortFunc(recent, func(x, y User) int {
				if c := cmp.Compare(y.QuietRequests, x.QuietRequests); c != 0 {
					return c
				}
				if c := cmp.Compare(y.QuietHeartbeats, x.QuietHeartbeats); c != 0 {
					return c
				}
				return strings.Compare(x.User, y.User)
			})
			b.WriteString("; top users:")
			for i, u := range recent[:min(3, len(recent))] {
				if i > 0 {
					b.WriteByte(',')
				}
				if u.QuietRequests == 0 {
					fmt.Fprintf(&b, " %s (named by %s)", u.User, plural(u.QuietHeartbeats, "heartbeat"))
				} else {
					fmt.Fprintf(&b, " %s (%d)", u.User, u.QuietRequests)
				}
			}
		}
		var agents []string
		for _, u := range recent {
			for _, ua := range u.UserAgents {
				if len(agents) < 3 && !slices.Contains(agents, ua) {
					agents = append(agents, ua)
				}
			}
		}
		if len(agents) > 0 {
			b.WriteString("; their user agents:")
			for i, ua := range agents {
				if i > 0 {
					b.WriteByte(',')
				}
				fmt.Fprintf(&b, " %q", ua)
			}
		}
		v.Reason = b.String()
	case a.quiet.requests == 0:
		v.Status, v.ExitCode = StatusInsufficientData, ExitInsufficientData
		v.Reason = fmt.Sprintf("no auth traffic in the last %s (since %s): silence is not proof; "+
			"check that these are the right logs, route and window", quietFor, since)
	case float64(a.firstEvent-a.quietStart) > (1-minCoverage)*float64(a.q.QuietFor):
		v.Status, v.ExitCode = StatusInsufficientData, ExitInsufficientData
		v.Reason = fmt.Sprintf("no legacy use since %s, but the logs in the window begin only at %s: "+
			"proving %s without legacy use needs logs from %s; add older logs, widen --since or shorten --quiet-for",
			since, utc(a.firstEvent).Format(time.RFC3339), quietFor, since)
	case r.Coverage.UntrackedLines > 0:
		v.Status, v.ExitCode = StatusInsufficientData, ExitInsufficientData
		v.Reason = fmt.Sprintf("no legacy use since %s, but %s could not be checked for coverage (more than %d instances, "+
			"or more than %d separate stretches of one instance's log): whether the logs cover the period is unknown; "+
			"narrow the window with --since, or raise --max-gap", since, plural(r.Coverage.UntrackedLines, "line"),
			maxInstances, maxSpansPerInstance)
	case r.Coverage.Holes > 0:
		v.Status, v.ExitCode = StatusInsufficientData, ExitInsufficientData
		var b strings.Builder
		fmt.Fprintf(&b, "no legacy use since %s, but the logs have %s:", since, plural(int64(r.Coverage.Holes), "hole"))
		hs := r.Coverage.holes()
		for i, h := range hs[:min(3, len(hs))] {
			if i > 0 {
				b.WriteByte(';')
			}
			fmt.Fprintf(&b, " instance %s logged nothing from %s to %s (%s)", quoteInstance(h.Name),
				h.Gap.From.Format(time.RFC3339), h.Gap.To.Format(time.RFC3339), h.Gap.Duration)
		}
		if len(hs) > 3 {
			fmt.Fprintf(&b, "; and %d more", len(hs)-3)
		}
		if slices.ContainsFunc(hs[:min(3, len(hs))], func(h instanceHole) bool { return h.Name == "" }) {
			b.WriteString(" ((unnamed) are lines without an instance field, as older versions wrote them)")
		}
		fmt.Fprintf(&b, "; a silence longer than --max-gap %s that no stop event explains is not proof "+
			"(a log drain drops lines, a crashed instance logs nothing): add the missing logs, "+
			"or raise --max-gap if the instance was only idle", r.Coverage.MaxGap)
		v.Reason = b.String()
	case len(r.Coverage.Uncovered) > 0:
		v.Status, v.ExitCode = StatusInsufficientData, ExitInsufficientData
		var b strings.Builder
		fmt.Fprintf(&b, "no legacy use since %s, but no instance logged anything", since)
		u := r.Coverage.Uncovered
		for i, g := range u[:min(3, len(u))] {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, " from %s to %s (%s)", g.From.Format(time.RFC3339), g.To.Format(time.RFC3339), g.Duration)
		}
		if len(u) > 3 {
			fmt.Fprintf(&b, " and %d more times", len(u)-3)
		}
		fmt.Fprintf(&b, ": every instance had stopped or not yet started, so no client was seen then; "+
			"a silence longer than --max-gap %s is not proof: add the missing logs, or let the quiet period pass the outage",
			r.Coverage.MaxGap)
		v.Reason = b.String()
	default:
		v.Status, v.ExitCode = StatusSafe, ExitSafe
		var b strings.Builder
		fmt.Fprintf(&b, "no legacy use in the last %s (since %s) across %s", quietFor, since,
			plural(a.quiet.requests, "request"))
		if r.Legacy.LastSeen != nil {
			fmt.Fprintf(&b, "; last legacy use %s", r.Legacy.LastSeen.Format(time.RFC3339))
			if r.Legacy.LastUser != "" {
				fmt.Fprintf(&b, " from user %s", r.Legacy.LastUser)
			}
		} else {
			b.WriteString("; no legacy use in the window at all")
		}
		fmt.Fprintf(&b, "; the logs of %s cover the period without a silence over %s",
			plural(int64(len(r.Coverage.Instances)), "instance"), r.Coverage.MaxGap)
		if gaps := a.quietGaps(); len(gaps) > 0 {
			fmt.Fprintf(&b, "; note: no traffic on %s", strings.Join(gaps, ", "))
		}
		v.Reason = b.String()
	}
	return v
}

// quietGaps lists whole UTC days of the quiet period without any auth
// event: a missing instance's logs look like this.
func (a *Aggregator) quietGaps() []string {
	var gaps []string
	for d := dayOf(a.quietStart-1) + 1; (d+1)*nsPerDay <= a.to; d++ {
		if a.days[d] == nil {
			gaps = append(gaps, dayString(d))
		}
	}
	if len(gaps) > 5 {
		gaps = append(gaps[:5], fmt.Sprintf("and %d more days", len(gaps)-5))
	}
	return gaps
}

func plural(n int64, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
