package report

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

const (
	nsPerSec = int64(time.Second)
	nsPerDay = int64(24 * time.Hour)
)

// parseTimestamp returns the Unix time in nanoseconds of an RFC 3339
// timestamp. The shape zerolog writes — YYYY-MM-DDTHH:MM:SS, optional
// fraction, Z or ±HH:MM — is decoded by hand; anything else goes through
// time.Parse, which allocates but is rare.
func parseTimestamp(b []byte) (int64, bool) {
	if ns, ok := parseRFC3339Fast(b); ok {
		return ns, true
	}
	t, err := time.Parse(time.RFC3339, string(b))
	if err != nil {
		return 0, false
	}
	return t.UnixNano(), true
}

func parseRFC3339Fast(b []byte) (int64, bool) {
	if len(b) < len("2006-01-02T15:04:05Z") || b[4] != '-' || b[7] != '-' || b[10] != 'T' ||
		b[13] != ':' || b[16] != ':' {
		return 0, false
	}
	year, ok1 := digits(b[0:4])
	month, ok2 := digits(b[5:7])
	day, ok3 := digits(b[8:10])
	hour, ok4 := digits(b[11:13])
	minute, ok5 := digits(b[14:16])
	sec, ok6 := digits(b[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) ||
		month < 1 || month > 12 || day < 1 || day > daysIn(month, year) ||
		hour > 23 || minute > 59 || sec > 59 {
		return 0, false
	}
	i := 19
	var frac int64
	if i < len(b) && b[i] == '.' {
		i++
		start := i
		scale := int64(100_000_000)
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			if i-start >= 9 {
				return 0, false // time.Parse accepts at most nanoseconds too
			}
			frac += int64(b[i]-'0') * scale
			scale /= 10
			i++
		}
		if i == start {
			return 0, false
		}
	}
	if i >= len(b) {
		return 0, false
	}
	var offset int64
	switch b[i] {
	case 'Z':
		i++
	case '+', '-':
		if len(b)-i != 6 || b[i+3] != ':' {
			return 0, false
		}
		oh, ok1 := digits(b[i+1 : i+3])
		om, ok2 := digits(b[i+4 : i+6])
		if !ok1 || !ok2 || oh > 23 || om > 59 {
			return 0, false
		}
		offset = int64(oh*3600+om*60) * nsPerSec
		if b[i] == '-' {
			offset = -offset
		}
		i += 6
	default:
		return 0, false
	}
	if i != len(b) {
		return 0, false
	}
	days := daysFromCivil(int64(year), int64(month), int64(day))
	secs := days*86400 + int64(hour*3600+minute*60+sec)
	return secs*nsPerSec + frac - offset, true
}

func digits(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func isLeap(y int) bool { return y%4 == 0 && (y%100 != 0 || y%400 == 0) }

func daysIn(month, year int) int {
	switch month {
	case 2:
		if isLeap(year) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// daysFromCivil returns the days since 1970-01-01 of a proleptic
// Gregorian date (Howard Hinnant's algorithm).
func daysFromCivil(y, m, d int64) int64 {
	if m <= 2 {
		y--
	}
	era := y / 400
	if y < 0 && y%400 != 0 {
		era--
	}
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468
}

// dayOf returns the UTC day number (days since 1970-01-01) of ns.
func dayOf(ns int64) int64 {
	d := ns / nsPerDay
	if ns%nsPerDay < 0 {
		d--
	}
	return d
}

func dayString(day int64) string {
	return time.Unix(day*86400, 0).UTC().Format(time.DateOnly)
}

var errBadDuration = errors.New("want a duration such as 7d, 36h or 1d12h")

// ParseDuration parses a Go duration with an optional leading day count:
// "7d", "1d12h", "90m". Days are 24 hours.
func ParseDuration(s string) (time.Duration, error) {
	var days int64
	rest := s
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		n, err := strconv.ParseInt(s[:i], 10, 64)
		if err != nil || n < 0 || n > 365*1000 {
			return 0, fmt.Errorf("%q: %w", s, errBadDuration)
		}
		days, rest = n, s[i+1:]
		if rest == "" {
			rest = "0s"
		}
		if rest[0] == '-' || rest[0] == '+' {
			return 0, fmt.Errorf("%q: %w", s, errBadDuration)
		}
	}
	d, err := time.ParseDuration(rest)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", s, errBadDuration)
	}
	// A time.Duration holds about 292 years; more days would wrap around.
	const day = int64(24 * time.Hour)
	if days > (math.MaxInt64-max(int64(d), 0))/day {
		return 0, fmt.Errorf("%q: longer than 106751 days", s)
	}
	return time.Duration(days*day) + d, nil
}

// FormatDuration writes d the way ParseDuration reads it: "7d", "1d12h0m0s",
// "36m0s".
func FormatDuration(d time.Duration) string {
	day := 24 * time.Hour
	if d >= day {
		days, rest := d/day, d%day
		if rest == 0 {
			return fmt.Sprintf("%dd", days)
		}
		return fmt.Sprintf("%dd%s", days, rest)
	}
	return d.String()
}

// ParseTime parses RFC 3339 or YYYY-MM-DD (midnight UTC).
func ParseTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), nil
	}
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: want RFC 3339 (2025-08-02T15:04:05Z) or YYYY-MM-DD", s)
	}
	return t, nil
}
