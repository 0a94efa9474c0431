package report

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"
)

// textUsers is how many legacy users the text report lists; JSON and
// `--format csv --users` list all.
const textUsers = 25

// textHoles is how many holes the text report lists; JSON lists all.
const textHoles = 50

// WriteText writes the report as aligned tables for a terminal, verdict
// first. Values from the logs are shown quoted when they hold control
// characters, so a crafted user agent cannot drive the terminal.
func (r *Report) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	p := func(format string, args ...any) { fmt.Fprintf(ew, format, args...) }
	v := r.Verdict

	p("verdict   %s (exit %d)\n", strings.ToUpper(v.Status), v.ExitCode)
	p("reason    %s\n", printable(v.Reason))
	route := "all routes"
	if r.Window.Route != "" {
		route = "route " + printable(r.Window.Route)
	}
	from := "start of logs"
	if r.Window.From != nil {
		from = r.Window.From.Format(time.RFC3339)
	}
	p("window    %s .. %s (%s)\n", from, r.Window.To.Format(time.RFC3339), route)
	p("quiet     %s since %s: %s, %s (%d rejected) from %s\n", v.QuietFor, v.QuietFrom.Format(time.RFC3339),
		plural(v.Requests, "request"), plural(v.LegacyRequests, "legacy request"), v.LegacyRejected,
		plural(int64(v.LegacyUsers), "user"))
	l := r.Lines
	p("lines     %d read: %d events, %d skipped (%d not json, %d too long, %d other programs, %d other events, %d invalid), %d filtered (%d out of window, %d other route)\n",
		l.Read, l.Events, l.Skipped, l.SkippedBy.NotJSON, l.SkippedBy.TooLong, l.SkippedBy.OtherProgram,
		l.SkippedBy.OtherEvent, l.SkippedBy.Invalid, l.Filtered, l.FilteredBy.OutOfWindow, l.FilteredBy.OtherRoute)
	var ins []string
	for _, in := range r.Inputs {
		s := fmt.Sprintf("%s (%d lines", printable(in.Name), in.Lines)
		if in.Gzip {
			s += ", gzip"
		}
		s += in.ByFormat.text()
		if len(in.Warnings) > 0 {
			s += ", " + plural(int64(len(in.Warnings)), "warning")
		}
		ins = append(ins, s+")")
	}
	p("inputs    %s\n", strings.Join(ins, ", "))
	lg := r.Legacy
	p("legacy    %s from %s (%d rejected, %d without a user id)", plural(lg.Requests, "request"),
		plural(int64(lg.Users), "user"), lg.Rejected, lg.Anonymous)
	if lg.FirstSeen != nil {
		p("; first %s, last %s", lg.FirstSeen.Format(time.RFC3339), lg.LastSeen.Format(time.RFC3339))
		if lg.LastUser != "" {
			p(" (%s)", printable(lg.LastUser))
		}
	}
	p("\n")
	cv := r.Coverage
	p("coverage  %s in the quiet period (--max-gap %s): %s, %d stretches without any instance",
		plural(int64(len(cv.Instances)), "instance"), cv.MaxGap, plural(int64(cv.Holes), "hole"), len(cv.Uncovered))
	if cv.UntrackedLines > 0 {
		p(", %d lines untracked", cv.UntrackedLines)
	}
	p("\n")
	if hb := heartbeatInstances(&cv); hb > 0 {
		p("heartbeats from %s: %s counted without a line (lost on the way)", plural(int64(hb), "instance"),
			plural(cv.LostLines, "decision"))
		if cv.LostLegacyLines > 0 {
			p(", %d of them legacy", cv.LostLegacyLines)
		}
		if lg.HeartbeatRequests > 0 {
			p("; %s counted by heartbeats (%d in the quiet period)", plural(lg.HeartbeatRequests, "legacy request"), lg.HeartbeatQuietRequests)
		}
		p("\n")
	}
	if r.Lines.Summaries > 0 {
		p("summaries %d log budget summary lines stand for %d decisions (counted in full)\n", r.Lines.Summaries, r.Lines.Summarised)
	}

	table := func(title string, header string, rows [][]string) {
		p("\n%s\n", title)
		tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, header)
		for _, row := range rows {
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
		tw.Flush()
	}
	n := strconv.FormatInt

	table("TOTALS BY CLASS", "class\trequests", mapRows(r.Totals.ByClass))
	table("TOTALS BY ACTION", "action\trequests", mapRows(r.Totals.ByAction))

	var rows [][]string
	for _, d := range r.Days {
		rows = append(rows, []string{d.Day, n(d.Requests, 10), n(d.JWT, 10), n(d.Legacy, 10),
			n(d.LegacyUsers, 10), n(d.LegacyRejected, 10), n(d.Rejected, 10), n(d.Would, 10)})
	}
	table("PER DAY (UTC)", "day\trequests\tjwt\tlegacy\tlegacy users\tlegacy rejected\trejected\twould", rows)

	rows = nil
	for _, in := range cv.Instances {
		holes := strconv.Itoa(len(in.Gaps))
		if in.Truncated {
			holes += " (truncated)"
		}
		rows = append(rows, []string{instanceLabel(in.Name), n(in.Lines, 10), n(in.QuietLines, 10),
			in.First.Format(time.RFC3339), in.Last.Format(time.RFC3339), n(in.Starts, 10), n(in.Stops, 10),
			strconv.FormatBool(in.Stopped), holes})
	}
	table(fmt.Sprintf("COVERAGE PER INSTANCE (quiet period %s .. %s)", cv.From.Format(time.RFC3339), cv.To.Format(time.RFC3339)),
		"instance\tlines\tquiet period lines\tfirst\tlast\tstarts\tstops\tstopped\tholes", rows)
	if heartbeatInstances(&cv) > 0 {
		rows = nil
		for _, in := range cv.Instances {
			lost := n(in.LostLines, 10) + " lost"
			if in.LostUnknown {
				lost = "unknown"
			} else if in.LostLegacyLines > 0 {
				lost += fmt.Sprintf(" (%d legacy)", in.LostLegacyLines)
			}
			rows = append(rows, []string{instanceLabel(in.Name), n(in.Heartbeats, 10), in.HeartbeatInterval, in.MaxSilence,
				n(in.HeartbeatDecisions, 10), lost, n(in.HeldLines, 10)})
		}
		table("HEARTBEATS PER INSTANCE (decisions counted against the lines read)",
			"instance	heartbeats	interval	max silence	decisions counted	lines missing	held (in summaries)", rows)
	}
	if cv.Holes > 0 {
		rows = nil
		hs := cv.holes()
		for _, h := range hs[:min(textHoles, len(hs))] {
			rows = append(rows, []string{instanceLabel(h.Name), h.Gap.From.Format(time.RFC3339),
				h.Gap.To.Format(time.RFC3339), h.Gap.Duration})
		}
		title := fmt.Sprintf("HOLES (silences over %s without a stop event, oldest first)", cv.MaxGap)
		if len(hs) > textHoles {
			title = fmt.Sprintf("HOLES (%d of %d, silences over %s without a stop event, oldest first; all with --format json)",
				textHoles, len(hs), cv.MaxGap)
		}
		table(title, "instance\tfrom\tto\tsilent for", rows)
	}
	if down := cv.downtimes(); len(down) > 0 {
		rows = nil
		for _, g := range down {
			rows = append(rows, []string{g.From.Format(time.RFC3339), g.To.Format(time.RFC3339), g.Duration})
		}
		table(fmt.Sprintf("NO INSTANCE LOGGING (over %s, every instance stopped or not yet started)", cv.MaxGap),
			"from\tto\tfor", rows)
	}

	rows = nil
	for _, u := range r.Users[:min(textUsers, len(r.Users))] {
		rows = append(rows, []string{printable(u.User), n(u.Requests, 10), n(u.Rejected, 10),
			u.FirstSeen.Format(time.RFC3339), u.LastSeen.Format(time.RFC3339),
			listCell(u.UserAgents, u.UserAgentsOverflow, 40), listCell(u.Origins, u.OriginsOverflow, 30),
			listCell(u.Routes, u.RoutesOverflow, 20)})
	}
	title := fmt.Sprintf("LEGACY USERS (%d, most recent first)", len(r.Users))
	if len(r.Users) > textUsers {
		title = fmt.Sprintf("LEGACY USERS (%d of %d, most recent first; all with --format csv --users)",
			textUsers, len(r.Users))
	}
	table(title, "user\trequests\trejected\tfirst seen\tlast seen\tuser agents\torigins\troutes", rows)

	table("TOP LEGACY USER AGENTS", "requests\tusers\tuser agent", topRows(r.TopUserAgents))
	table("TOP LEGACY ORIGINS", "requests\tusers\torigin", topRows(r.TopOrigins))

	rows = nil
	for _, rt := range r.Routes {
		rows = append(rows, []string{orNone(rt.Route), n(rt.Requests, 10), n(rt.Legacy, 10),
			strconv.Itoa(rt.LegacyUsers), n(rt.Rejected, 10)})
	}
	table("ROUTES", "route\trequests\tlegacy\tlegacy users\trejected", rows)

	table("REJECTIONS BY REASON", "reason\trequests", mapRows(r.Rejections.ByReason))
	table("REJECTIONS BY CLASS", "class\trequests", mapRows(r.Rejections.ByClass))
	p("\nDRY RUN: %s would have been decided otherwise (%d legacy, from %s)\n",
		plural(r.Would.Requests, "request"), r.Would.LegacyRequests, plural(int64(r.Would.LegacyUsers), "user"))
	if len(r.Would.ByAction) > 0 {
		table("WOULD BY ACTION", "would\trequests", mapRows(r.Would.ByAction))
	}
	return ew.err
}

// mapRows sorts a count map by count, then key.
func mapRows(m map[string]int64) [][]string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			if m[a] > m[b] {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	rows := make([][]string, len(keys))
	for i, k := range keys {
		rows[i] = []string{orNone(k), strconv.FormatInt(m[k], 10)}
	}
	return rows
}

func topRows(tops []Top) [][]string {
	rows := make([][]string, len(tops))
	for i, t := range tops {
		rows[i] = []string{strconv.FormatInt(t.Requests, 10), strconv.Itoa(t.Users), orNone(t.Value)}
	}
	return rows
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return printable(s)
}

// listCell joins values for a table cell, each shortened to width runes.
func listCell(vals []string, overflow int64, width int) string {
	parts := make([]string, len(vals))
	for i, v := range vals {
		parts[i] = shorten(orNone(v), width)
	}
	s := strings.Join(parts, " | ")
	if overflow > 0 {
		s += fmt.Sprintf(" | +%d other requests", overflow)
	}
	return s
}

func shorten(s string, width int) string {
	if utf8.RuneCountInString(s) <= width {
		return s
	}
	r := []rune(s)
	return string(r[:width-1]) + "…"
}

// printable returns s, or s quoted when it holds non-printable characters
// (escape sequences, tabs that would break the table alignment).
func printable(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) < 0 {
		return s
	}
	return strconv.Quote(s)
}

// errWriter keeps the first write error so renderers can write freely.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(b []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(b)
	e.err = err
	return n, err
}
