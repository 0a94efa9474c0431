package report

import (
	"encoding/csv"
	"io"
	"strconv"
	"strings"
	"time"
)

// WriteCSV writes one row per UTC day, with a header row:
//
//	day,requests,jwt,legacy,legacy_users,legacy_rejected,jwt_rejected,rejected,would
func (r *Report) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"day", "requests", "jwt", "legacy", "legacy_users", "legacy_rejected",
		"jwt_rejected", "rejected", "would"})
	n := func(v int64) string { return strconv.FormatInt(v, 10) }
	for _, d := range r.Days {
		cw.Write([]string{d.Day, n(d.Requests), n(d.JWT), n(d.Legacy), n(d.LegacyUsers),
			n(d.LegacyRejected), n(d.JWTRejected), n(d.Rejected), n(d.Would)})
	}
	cw.Flush()
	return cw.Error()
}

// WriteUsersCSV writes one row per legacy user, most recent first, with a
// header row:
//
//	user,requests,rejected,would,quiet_period_requests,days,first_seen,last_seen,user_agents,origins,routes
//
// Lists are joined with " | ", most used first; "+N other requests" ends a list
// whose values did not all fit. A cell that a spreadsheet would read as a
// formula (starting with = + - @) is prefixed with a single quote: user
// agents and origins are chosen by clients.
func (r *Report) WriteUsersCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"user", "requests", "rejected", "would", "quiet_period_requests", "days",
		"first_seen", "last_seen", "user_agents", "origins", "routes"})
	n := func(v int64) string { return strconv.FormatInt(v, 10) }
	for _, u := range r.Users {
		cw.Write([]string{cell(u.User), n(u.Requests), n(u.Rejected), n(u.Would), n(u.QuietRequests),
			strconv.Itoa(u.Days), u.FirstSeen.Format(time.RFC3339Nano), u.LastSeen.Format(time.RFC3339Nano),
			joinCell(u.UserAgents, u.UserAgentsOverflow), joinCell(u.Origins, u.OriginsOverflow),
			joinCell(u.Routes, u.RoutesOverflow)})
	}
	cw.Flush()
	return cw.Error()
}

func joinCell(vals []string, overflow int64) string {
	s := strings.Join(vals, " | ")
	if overflow > 0 {
		s += " | +" + strconv.FormatInt(overflow, 10) + " other requests"
	}
	return cell(s)
}

// cell defuses spreadsheet formula injection (OWASP "CSV injection").
func cell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// WriteCoverageCSV writes one row per instance, by name, with a header
// row:
//
//	instance,lines,quiet_period_lines,first,last,starts,stops,stopped,holes,longest_hole_seconds,holes_list,truncated
//
// instance is "" for lines without an instance field. holes_list joins
// the holes as FROM/TO (RFC 3339) with " | ", oldest first. Stretches in
// which no instance logged are not per instance; they are in the JSON
// report's coverage.uncovered and the text and HTML reports.
func (r *Report) WriteCoverageCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"instance", "lines", "quiet_period_lines", "first", "last", "starts", "stops", "stopped",
		"holes", "longest_hole_seconds", "holes_list", "truncated"})
	n := func(v int64) string { return strconv.FormatInt(v, 10) }
	for _, in := range r.Coverage.Instances {
		var longest int64
		list := make([]string, len(in.Gaps))
		for i, g := range in.Gaps {
			longest = max(longest, g.Seconds)
			list[i] = g.From.Format(time.RFC3339Nano) + "/" + g.To.Format(time.RFC3339Nano)
		}
		cw.Write([]string{cell(in.Name), n(in.Lines), n(in.QuietLines), in.First.Format(time.RFC3339Nano),
			in.Last.Format(time.RFC3339Nano), n(in.Starts), n(in.Stops), strconv.FormatBool(in.Stopped),
			strconv.Itoa(len(in.Gaps)), n(longest), strings.Join(list, " | "), strconv.FormatBool(in.Truncated)})
	}
	cw.Flush()
	return cw.Error()
}
