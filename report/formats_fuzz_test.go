package report

import (
	"bytes"
	"encoding/json"
	"testing"
)

// accounted checks that every line read is counted once, and in a format.
func accounted(t *testing.T, r *Report, what string) {
	t.Helper()
	l, b := r.Lines, r.Lines.ByFormat
	if l.Events+l.Skipped+l.Filtered != l.Read || b.Plain+b.Syslog+b.RenderCLIText+b.RenderCLIJSON+b.RenderAPI != l.Read {
		t.Fatalf("%s: lines not accounted for: %+v", what, l)
	}
}

// FuzzLineFormats: a line of a line-oriented input (plain, RFC 5424,
// `render logs -o text`) is one line, in one format; a message found is
// the line's own tail; a syslog line's message is what the same line
// without its header gives.
func FuzzLineFormats(f *testing.F) {
	for _, s := range []string{
		`<0>1 2021-03-31T16:00:00-08:00 test-service cron-12345 74440 cron-12345 - hello this is a test`, // Render's docs' example
		`<134>1 2026-10-08T05:00:00.123Z web srv-1 7 srv-1 - {"event":"auth","time":"2026-10-08T05:00:00Z","class":"uuid"}`,
		`<134>1 2026-10-08T05:00:00Z web srv-1 7 srv-1 [a b="x\]\"y"][c] {"event":"start","time":"2026-10-08T05:00:00Z"}`, // structured data with escapes
		"<134>1 2026-10-08T05:00:00Z web srv-1 7 srv-1 - \xef\xbb\xbf{}",                                                  // a BOM before MSG
		`<191>999 - - - - - -`,         // every field nil, the largest PRI and VERSION
		`<1>1 a b c d e [unterminated`, // structured data never closed
		`2026-10-08 05:00:00  {"event":"auth","time":"2026-10-08T05:00:00Z","instance":"i"}`, // the CLI's text output
		`2026-10-08 05:00:00 {"event":"auth"}`,                                               // one space: a plain line with a prefix
		"2026-10-08 05:00:00  \x1b[32m==> Build successful\x1b[0m",                           // build output with colour codes
		`{"level":"info","event":"auth","time":"2026-10-08T05:00:00Z"}`,                      // a plain line
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		if bytes.IndexByte(line, '\n') >= 0 {
			return // one line
		}
		if msg, ok := syslogMessage(line); ok {
			if !bytes.HasSuffix(line, msg) {
				t.Fatalf("syslog message %q is not the tail of %q", msg, line)
			}
		}
		if msg, ok := cliTextMessage(line); ok && !bytes.Equal(line[21:], msg) {
			t.Fatalf("text message %q of %q", msg, line)
		}
		a := NewAggregator(Query{To: testNow})
		a.inputLine(line)
		r := a.Report()
		if r.Lines.Read != 1 {
			t.Fatalf("line %q: read %d", line, r.Lines.Read)
		}
		accounted(t, r, string(line))
	})
}

// FuzzJSONStream: any bytes read as Render's JSON (`render logs -o json`,
// API pages) are accounted for, never panic, give at most one warning, and
// a stream that encoding/json decodes whole as log objects with string
// messages gives one line per object and no warning.
func FuzzJSONStream(f *testing.F) {
	for _, s := range []string{
		"{\n  \"id\": \"1\",\n  \"labels\": [\n    {\n      \"name\": \"instance\",\n      \"value\": \"srv-1-abcde\"\n    }\n  ],\n  \"message\": \"{\\\"event\\\":\\\"auth\\\",\\\"time\\\":\\\"2025-08-02T10:00:00Z\\\"}\",\n  \"timestamp\": \"2025-08-02T10:00:00Z\"\n}{\n  \"id\": \"2\",\n  \"message\": \"INFO: started\"\n}", // -o json, two objects back to back
		`{"hasMore":true,"logs":[{"id":"1","labels":[],"message":"x","timestamp":"2025-08-02T10:00:00Z"}],"nextEndTime":"2025-08-03T00:00:00Z","nextStartTime":"2025-08-02T10:00:00Z"}` + "\n" + `{"logs":[],"hasMore":false}`,                                                                                                        // two API pages
		"{\n  \"id\": \"1\",\n  \"message\": \"cut", // cut mid-object
		`{"logs":[{"message":1},{"message":"ok"}]}`, // a record of another shape
		`{"logs":{}}`,              // logs not an array
		`[1,2]`,                    // not an object
		`{"message":"a"} trailing`, // garbage after an object
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a := NewAggregator(Query{To: testNow})
		warnings, err := a.readJSONStream("f", false, bytes.NewReader(data))
		if err != nil {
			t.Fatalf("reading from memory: %v", err)
		}
		if len(warnings) > 1 {
			t.Fatalf("%d warnings", len(warnings))
		}
		r := a.Report()
		accounted(t, r, string(data))
		// The reference: encoding/json over the whole stream.
		dec := json.NewDecoder(bytes.NewReader(data))
		var n int64
		for {
			var obj map[string]json.RawMessage
			err := dec.Decode(&obj)
			if err != nil {
				if err.Error() != "EOF" {
					return // not a clean stream of objects: no reference
				}
				break
			}
			var msg string
			if _, isPage := obj["logs"]; isPage || json.Unmarshal(obj["message"], &msg) != nil {
				return // only streams of plain log objects are compared
			}
			n++
		}
		if r.Lines.Read != n || len(warnings) != 0 || r.Lines.ByFormat.RenderCLIJSON != n {
			t.Fatalf("%d objects decode, report read %+v, warnings %q", n, r.Lines, warnings)
		}
	})
}
