package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"authgate/report/internal/loggen"
)

// Render's formats are built here from the same generated lines, as
// Render's sources write them (render-oss/cli: cmd/logs.go writeLog for
// -o json and -o text, pkg/client/types_gen.go Logs200Response for API
// pages; render.com/docs/log-streams for RFC 5424), and each must give
// the report the plain lines give.

var (
	fmtStart = time.Date(2026, 9, 24, 0, 0, 0, 0, time.UTC)
	fmtUntil = fmtStart.Add(15 * 24 * time.Hour)
)

// testRecord is one Render log: the app's line and its labels.
type testRecord struct {
	id       string
	line     string
	instance string // the instance label; "" for none
	at       time.Time
}

var (
	timeField     = regexp.MustCompile(`"time":"([^"]+)"`)
	instanceField = regexp.MustCompile(`,"instance":"([^"]*)"`)
)

// genLines returns a generated multi-instance log and its lines.
func genLines(t testing.TB, size int64) ([]byte, []string) {
	t.Helper()
	var b bytes.Buffer
	_, err := loggen.Write(&b, loggen.Config{
		Size: size, Days: 14, Start: fmtStart, Users: 300, Seed: 21,
		Instances: []loggen.Instance{
			{Name: "srv-d1abc-7f9c4-xk2pq", Start: true},
			{Name: "srv-d1abc-7f9c4-m8n3v", Start: true, Holes: []loggen.Hole{{
				From: fmtStart.Add(3 * 24 * time.Hour), To: fmtStart.Add(4 * 24 * time.Hour), Stop: true, Start: true}}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
}

// toRecords makes Render logs of lines: the timestamp Render gives a line
// is when it was written (the line's time, else the previous one's). With
// labelOnly, a line's instance field moves to the instance label.
func toRecords(lines []string, labelOnly bool) []testRecord {
	recs := make([]testRecord, 0, len(lines))
	at := fmtStart
	for i, l := range lines {
		if m := timeField.FindStringSubmatch(l); m != nil {
			if ts, err := time.Parse(time.RFC3339Nano, m[1]); err == nil {
				at = ts
			}
		}
		r := testRecord{id: fmt.Sprintf("log-%08d", i), line: l, at: at}
		if m := instanceField.FindStringSubmatch(l); m != nil {
			r.instance = m[1]
			if labelOnly {
				r.line = strings.Replace(l, m[0], "", 1)
			}
		}
		recs = append(recs, r)
	}
	return recs
}

type jsonLabel struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// jsonLog has the field order and types of the CLI's Log (logs_gen.go).
type jsonLog struct {
	ID        string      `json:"id"`
	Labels    []jsonLabel `json:"labels"`
	Message   string      `json:"message"`
	Timestamp time.Time   `json:"timestamp"`
}

func (r testRecord) log() jsonLog {
	labels := []jsonLabel{{"resource", "srv-d1abc"}, {"type", "app"}, {"level", "info"}}
	if r.instance != "" {
		labels = append(labels, jsonLabel{"instance", r.instance})
	}
	return jsonLog{ID: r.id, Labels: labels, Message: r.line, Timestamp: r.at}
}

// cliJSON is `render logs -o json`: newest first, each log indented,
// nothing between them.
func cliJSON(t testing.TB, recs []testRecord) []byte {
	var b bytes.Buffer
	for _, r := range slices.Backward(recs) {
		out, err := json.MarshalIndent(r.log(), "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		b.Write(out)
	}
	return b.Bytes()
}

// apiPages is GET /v1/logs pages of per logs, oldest first, one a line
// (as --save writes them); indent writes them as `curl | jq .` would.
func apiPages(t testing.TB, recs []testRecord, per int, indent bool) []byte {
	var b bytes.Buffer
	for i := 0; i < len(recs); i += per {
		chunk := recs[i:min(i+per, len(recs))]
		page := struct {
			HasMore       bool      `json:"hasMore"`
			Logs          []jsonLog `json:"logs"`
			NextEndTime   time.Time `json:"nextEndTime"`
			NextStartTime time.Time `json:"nextStartTime"`
		}{HasMore: i+per < len(recs), NextEndTime: fmtUntil, NextStartTime: chunk[len(chunk)-1].at}
		for _, r := range chunk {
			page.Logs = append(page.Logs, r.log())
		}
		// Logs200Response's own field order is hasMore first; a page that
		// starts with "logs" must be told apart too.
		var out []byte
		var err error
		if indent {
			out, err = json.MarshalIndent(page, "", "  ")
		} else {
			out, err = json.Marshal(page)
		}
		if err != nil {
			t.Fatal(err)
		}
		b.Write(out)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// syslogLines is a Render log stream: RFC 5424, as render.com/docs/log-streams
// shows it (`<0>1 2021-03-31T16:00:00-08:00 test-service cron-12345 74440
// cron-12345 - hello this is a test`).
func syslogLines(recs []testRecord) []byte {
	var b bytes.Buffer
	for _, r := range recs {
		inst := r.instance
		if inst == "" {
			inst = "srv-d1abc"
		}
		fmt.Fprintf(&b, "<134>1 %s authgate-web %s 7 %s - %s\n", r.at.Format(time.RFC3339Nano), inst, inst, r.line)
	}
	return b.Bytes()
}

// cliText is `render logs -o text`: fmt.Sprintf("%s  %s\n",
// log.Timestamp.Format(time.DateTime), log.Message), newest first.
func cliText(recs []testRecord) []byte {
	var b bytes.Buffer
	for _, r := range slices.Backward(recs) {
		fmt.Fprintf(&b, "%s  %s\n", r.at.Format(time.DateTime), r.line)
	}
	return b.Bytes()
}

func reportOf(t testing.TB, name string, data []byte) *Report {
	t.Helper()
	a := NewAggregator(Query{To: fmtUntil})
	if err := a.ReadFrom(name, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	return a.Report()
}

// findings is a report without its line accounting: what the logs said.
func findings(t testing.TB, r *Report) string {
	c := *r
	c.Lines, c.Inputs = Lines{}, nil
	out, err := json.MarshalIndent(&c, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestRenderFormatsMatchPlainLines(t *testing.T) {
	plainLog, lines := genLines(t, 1<<20)
	plain := reportOf(t, "plain.log", plainLog)
	if plain.Totals.Requests < 1000 || plain.Verdict.Status != StatusNotSafe || plain.Legacy.Users == 0 {
		t.Fatalf("the generated log is not a useful baseline: %d requests, verdict %s, %d legacy users",
			plain.Totals.Requests, plain.Verdict.Status, plain.Legacy.Users)
	}
	if plain.Lines.SkippedBy.NotJSON == 0 || plain.Lines.ByFormat.Plain != plain.Lines.Read {
		t.Fatalf("plain baseline lines: %+v", plain.Lines)
	}
	want := findings(t, plain)
	withFields := toRecords(lines, false)
	labelOnly := toRecords(lines, true)
	if n := len(labelOnly); n == 0 || !strings.Contains(withFields[n/2].line, `"instance"`) && !strings.Contains(withFields[n/2+1].line, `"instance"`) {
		t.Fatal("the generated lines carry no instance field to move to the label")
	}
	for _, tt := range []struct {
		name   string
		data   []byte
		format func(ByFormat) int64
	}{
		{"cli-json", cliJSON(t, withFields), func(b ByFormat) int64 { return b.RenderCLIJSON }},
		{"cli-json-label-only", cliJSON(t, labelOnly), func(b ByFormat) int64 { return b.RenderCLIJSON }},
		{"api-pages", apiPages(t, withFields, 1000, false), func(b ByFormat) int64 { return b.RenderAPI }},
		{"api-pages-label-only-indented", apiPages(t, labelOnly, 333, true), func(b ByFormat) int64 { return b.RenderAPI }},
		{"syslog", syslogLines(withFields), func(b ByFormat) int64 { return b.Syslog }},
		{"cli-text", cliText(withFields), func(b ByFormat) int64 { return b.RenderCLIText }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := reportOf(t, tt.name, tt.data)
			if g := findings(t, got); g != want {
				t.Errorf("the report differs from the plain lines' one:\n%s", lineDiff(want, g))
			}
			l := got.Lines
			if l.Read != plain.Lines.Read || l.Events != plain.Lines.Events || tt.format(l.ByFormat) != l.Read {
				t.Errorf("lines %+v, want %d read (%d events), all in this format", l, plain.Lines.Read, plain.Lines.Events)
			}
			// The app lines that are not JSON are another program's
			// records here, not garbage.
			if l.SkippedBy.NotJSON != 0 || l.SkippedBy.OtherProgram != plain.Lines.SkippedBy.OtherProgram+plain.Lines.SkippedBy.NotJSON {
				t.Errorf("skipped_by %+v; plain lines had %+v", l.SkippedBy, plain.Lines.SkippedBy)
			}
			if len(got.Inputs) != 1 || got.Inputs[0].ByFormat != l.ByFormat || len(got.Inputs[0].Warnings) != 0 {
				t.Errorf("inputs %+v", got.Inputs)
			}
		})
	}
	// Several inputs of several formats: one report, as if one log.
	t.Run("mixed", func(t *testing.T) {
		half := len(withFields) / 2
		a := NewAggregator(Query{To: fmtUntil})
		for name, data := range map[string][]byte{
			"new.json":  cliJSON(t, labelOnly[half:]),
			"old.pages": apiPages(t, withFields[:half/2], 100, false),
			"mid.log":   syslogLines(withFields[half/2 : half]),
		} {
			if err := a.ReadFrom(name, bytes.NewReader(data)); err != nil {
				t.Fatal(err)
			}
		}
		if g := findings(t, a.Report()); g != want {
			t.Errorf("the report differs from the plain lines' one:\n%s", lineDiff(want, g))
		}
	})
}

// lineDiff shows the first lines where two texts differ.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := range min(len(w), len(g)) {
		if w[i] != g[i] {
			return fmt.Sprintf("line %d:\nwant %s\ngot  %s", i+1, w[i], g[i])
		}
	}
	return fmt.Sprintf("want %d lines, got %d", len(w), len(g))
}

func TestRenderRecordInstanceLabel(t *testing.T) {
	at := fmtUntil.Add(-time.Hour).Format(time.RFC3339)
	line := func(inst string) string {
		f := ""
		if inst != "" {
			f = fmt.Sprintf(`"instance":%q,`, inst)
		}
		return fmt.Sprintf(`{"level":"warn",%s"event":"auth","route":"r","class":"uuid","action":"rewrite","user":"u1","time":%q}`, f, at)
	}
	recs := []testRecord{
		{id: "1", line: line(""), instance: "srv-x-aaaaa", at: fmtUntil},         // takes the label
		{id: "2", line: line("own-name"), instance: "srv-x-bbbbb", at: fmtUntil}, // keeps its own
		{id: "3", line: line(""), at: fmtUntil},                                  // neither: unnamed
	}
	got := reportOf(t, "labels.json", cliJSON(t, recs))
	var names []string
	for _, in := range got.Coverage.Instances {
		names = append(names, in.Name)
	}
	slices.Sort(names)
	if want := []string{"", "own-name", "srv-x-aaaaa"}; !slices.Equal(names, want) {
		t.Errorf("instances %q, want %q", names, want)
	}
}

func TestRenderJSONCutOff(t *testing.T) {
	_, lines := genLines(t, 256<<10)
	recs := toRecords(lines, true)
	full := cliJSON(t, recs)
	whole := reportOf(t, "whole.json", full)
	// Cut inside the 101st object (newest first), after its message began.
	var b bytes.Buffer
	var cutAt int
	for i, r := range slices.Backward(recs) {
		out, _ := json.MarshalIndent(r.log(), "", "  ")
		if i == len(recs)-101 {
			cutAt = b.Len()
			b.Write(out[:len(out)/2])
			break
		}
		b.Write(out)
	}
	got := reportOf(t, "cut.json", b.Bytes())
	if got.Lines.Read != 101 || got.Lines.ByFormat.RenderCLIJSON != 101 {
		t.Errorf("read %d lines (%+v), want the 100 complete objects and the broken tail", got.Lines.Read, got.Lines.ByFormat)
	}
	if d := got.Lines.SkippedBy.Invalid - whole.Lines.SkippedBy.Invalid; d < 1 {
		t.Errorf("invalid %d, want the tail counted invalid", got.Lines.SkippedBy.Invalid)
	}
	w := got.Inputs[0].Warnings
	if len(w) != 1 || !strings.Contains(w[0], "cut.json") || !strings.Contains(w[0], fmt.Sprintf("byte %d:", cutAt)) ||
		!strings.Contains(w[0], "cut off") || !strings.Contains(w[0], "100 complete records") {
		t.Errorf("warnings %q, want one naming cut.json, byte %d and the 100 records read", w, cutAt)
	}
	// A page cut inside its logs keeps the logs before the cut.
	pages := apiPages(t, recs[:50], 1000, false)
	got = reportOf(t, "cut.pages", pages[:len(pages)*3/4])
	if r := got.Lines.ByFormat.RenderAPI; r < 30 || r > 40 || len(got.Inputs[0].Warnings) != 1 {
		t.Errorf("a page cut at 3/4: %d records, warnings %q", r, got.Inputs[0].Warnings)
	}
	// A record of the wrong shape is one invalid line, the stream goes on.
	got = reportOf(t, "odd.json", []byte("{\n  \"id\": \"1\",\n  \"message\": 42\n}{\n  \"message\": \"not authgate\",\n  \"labels\": 7\n}"))
	if l := got.Lines; l.Read != 2 || l.SkippedBy.Invalid != 1 || l.SkippedBy.OtherProgram != 1 || len(got.Inputs[0].Warnings) != 0 {
		t.Errorf("odd records: %+v, warnings %q", l, got.Inputs[0].Warnings)
	}
}

func TestSyslogAndTextLines(t *testing.T) {
	for _, tt := range []struct {
		line string
		msg  string
		ok   bool
	}{
		{`<0>1 2021-03-31T16:00:00-08:00 test-service cron-12345 74440 cron-12345 - hello this is a test`, "hello this is a test", true},
		{`<134>1 2026-10-08T05:00:00Z web srv-1 7 srv-1 [meta a="x\"]y" b="2"][two] {"event":"auth"}`, `{"event":"auth"}`, true},
		{"<134>1 2026-10-08T05:00:00Z web srv-1 7 srv-1 - \xef\xbb\xbf{}", `{}`, true},
		{`<134>1 2026-10-08T05:00:00Z web srv-1 7 srv-1 -`, ``, true},
		{`<192>1 2026-10-08T05:00:00Z web srv-1 7 srv-1 - x`, ``, false},    // PRI over 191
		{`<13>0 2026-10-08T05:00:00Z web srv-1 7 srv-1 - x`, ``, false},     // version 0
		{`<13>1 2026-10-08T05:00:00Z web srv-1 7 - x`, ``, false},           // a header field missing
		{`<13>1 2026-10-08T05:00:00Z web srv-1 7 srv-1 [open x`, ``, false}, // SD never closed
		{`<13> 1 2026-10-08T05:00:00Z web srv-1 7 srv-1 - x`, ``, false},
	} {
		msg, ok := syslogMessage([]byte(tt.line))
		if ok != tt.ok || string(msg) != tt.msg {
			t.Errorf("syslogMessage(%q) = %q, %v; want %q, %v", tt.line, msg, ok, tt.msg, tt.ok)
		}
	}
	for _, tt := range []struct {
		line, msg string
		ok        bool
	}{
		{`2026-10-08 05:00:00  {"event":"auth"}`, `{"event":"auth"}`, true},
		{`2026-10-08 05:00:00  `, ``, true},
		{`2026-10-08 05:00:00 {"event":"auth"}`, ``, false}, // one space: a collector's prefix, read as a plain line
		{`2026-10-08T05:00:00Z  x`, ``, false},
	} {
		msg, ok := cliTextMessage([]byte(tt.line))
		if ok != tt.ok || string(msg) != tt.msg {
			t.Errorf("cliTextMessage(%q) = %q, %v; want %q, %v", tt.line, msg, ok, tt.msg, tt.ok)
		}
	}
	// The backend's own lines in a log stream are other programs' lines.
	data := "<134>1 2026-10-08T05:00:00Z web srv-1 7 srv-1 - INFO:     10.0.0.3:51234 - \"GET /healthz HTTP/1.1\" 200 OK\n" +
		"2026-10-08 05:00:00  \x1b[32m==> Build successful\x1b[0m\n" +
		"<134>1 2026-10-08T05:00:00Z web srv-1 7 srv-1 - [2026-10-08 05:00:00 +0000] [7] [INFO] Booting worker with pid: 7\n"
	got := reportOf(t, "stream.log", []byte(data))
	if l := got.Lines; l.Read != 3 || l.SkippedBy.OtherProgram != 3 || l.ByFormat.Syslog != 2 || l.ByFormat.RenderCLIText != 1 {
		t.Errorf("backend lines: %+v", l)
	}
}
