package report

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"authgate/event"
	"authgate/report/internal/loggen"
)

// typicalLine is an auth event as zerolog writes it for a legacy request.
const typicalLine = `{"level":"warn","event":"auth","route":"pam-ws","transport":"websocket","class":"uuid",` +
	`"action":"rewrite","stage":0,"reason":"legacy uuid rewritten","user":"11111111-1111-4111-8111-111111111111",` +
	`"token_source":"query:token","verified":false,"client_ip":"203.0.113.9","origin":"https://app.example.com",` +
	`"user_agent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/138.0.0.0 Safari/537.36",` +
	`"path":"/api/v1/pam/ws","request_id":"0000000000000001","time":"2025-08-02T10:00:00.123456Z","message":"auth decision"}`

// extracted returns the fields the parser found, by name: a string, or
// "<bad>" for a value of another type; absent fields are left out.
func extracted(p *parser) map[string]string {
	m := make(map[string]string)
	for f, name := range fieldNames {
		switch {
		case p.rec.has(f):
			m[name] = string(p.rec.val[f])
		case p.rec.isBad(f):
			m[name] = "<bad>"
		}
	}
	return m
}

// reference extracts the same fields with encoding/json.
func reference(t testing.TB, line []byte) map[string]string {
	var obj map[string]any
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber() // repeat is the one numeric field: its literal
	if err := dec.Decode(&obj); err != nil {
		t.Fatalf("encoding/json: %v", err)
	}
	m := make(map[string]string)
	for _, name := range fieldNames {
		switch v := obj[name].(type) {
		case nil:
		case json.Number:
			if name == event.FieldRepeat {
				m[name] = string(v)
			} else {
				m[name] = "<bad>"
			}
		case string:
			if name == event.FieldRepeat {
				m[name] = "<bad>"
				break
			}
			m[name] = v
		default:
			m[name] = "<bad>"
		}
	}
	return m
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		line string
		want map[string]string // nil: not an object
	}{
		{"typical", typicalLine, map[string]string{
			"time": "2025-08-02T10:00:00.123456Z", "event": "auth", "route": "pam-ws", "class": "uuid",
			"action": "rewrite", "reason": "legacy uuid rewritten", "user": "11111111-1111-4111-8111-111111111111",
			"origin":     "https://app.example.com",
			"user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/138.0.0.0 Safari/537.36"}},
		{"field order", `{"user":"u","time":"t","event":"auth"}`, map[string]string{"user": "u", "time": "t", "event": "auth"}},
		{"whitespace", " { \"event\" :\t\"auth\" , \"user\" : \"u\" } ", map[string]string{"event": "auth", "user": "u"}},
		{"collector prefix", `2025-08-02T10:00:00.000Z {"event":"auth"}`, map[string]string{"event": "auth"}},
		{"prefix with a brace", `[web-1] {pid 7} {"event":"auth"}`, map[string]string{"event": "auth"}},
		{"trailing text ignored", `{"event":"auth"} trailing`, map[string]string{"event": "auth"}},
		{"escapes", `{"user_agent":"a\"b\\c\/d\n\t\u00e9\ud83d\ude00"}`, map[string]string{"user_agent": "a\"b\\c/d\n\té😀"}},
		{"lone high surrogate", `{"user_agent":"x\ud83dy"}`, map[string]string{"user_agent": "x\uFFFDy"}},
		{"lone low surrogate", `{"user_agent":"\ude00"}`, map[string]string{"user_agent": "\uFFFD"}},
		{"high surrogate then escape", `{"user_agent":"\ud83d\n"}`, map[string]string{"user_agent": "\uFFFD\n"}},
		{"invalid utf-8", "{\"user_agent\":\"a\xffb\xc3\"}", map[string]string{"user_agent": "a\uFFFDb\uFFFD"}},
		{"escaped key", `{"\u0065vent":"auth","us\u0065r":"u"}`, map[string]string{"event": "auth", "user": "u"}},
		{"duplicate key: last wins", `{"user":"a","user":"b"}`, map[string]string{"user": "b"}},
		{"null is absent", `{"user":"a","user":null}`, map[string]string{}},
		{"number where a string belongs", `{"user":12345,"event":"auth"}`, map[string]string{"user": "<bad>", "event": "auth"}},
		{"bool, object, array", `{"user":true,"origin":{"a":"}"},"route":[1,"]",[]]}`,
			map[string]string{"user": "<bad>", "origin": "<bad>", "route": "<bad>"}},
		{"string then number", `{"user":"a","user":1}`, map[string]string{"user": "<bad>"}},
		{"nested keys ignored", `{"x":{"event":"auth","user":"no"},"event":"e"}`, map[string]string{"event": "e"}},
		{"escaped quote ends skipped value", `{"x":"a\\","event":"e"}`, map[string]string{"event": "e"}},
		{"key case matters", `{"Event":"auth"}`, map[string]string{}},
		{"empty object", `{}`, map[string]string{}},
		{"numbers skipped", `{"a":-1.5e+10,"b":0,"event":"e"}`, map[string]string{"event": "e"}},

		{"not json", `INFO: 10.0.0.3 - "GET / HTTP/1.1" 200`, nil},
		{"empty", ``, nil},
		{"truncated", `{"event":"auth","user":"tru`, nil},
		{"missing colon", `{"event" "auth"}`, nil},
		{"missing comma", `{"event":"auth" "user":"u"}`, nil},
		{"bad escape", `{"user":"\x"}`, nil},
		{"short unicode escape", `{"user":"\u12"}`, nil},
		{"unclosed nested", `{"x":[[[1]]`, nil},
		{"mismatched brackets", `{"x":[}`, nil},
		{"bad literal", `{"x":nul}`, nil},
		{"trailing comma", `{"event":"auth",}`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p parser
			ok := p.parse([]byte(tt.line))
			if ok != (tt.want != nil) {
				t.Fatalf("parse: got %v, want %v", ok, tt.want != nil)
			}
			if !ok {
				return
			}
			if got := extracted(&p); !equalMaps(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestParseAgreesWithEncodingJSON runs the reference comparison of the fuzz
// target on the test table's valid objects and the testdata logs.
func TestParseAgreesWithEncodingJSON(t *testing.T) {
	for _, seed := range fuzzSeeds {
		checkAgainstReference(t, []byte(seed))
	}
}

func checkAgainstReference(t *testing.T, line []byte) {
	var p parser
	ok := p.parse(line)
	trimmed := bytes.TrimLeft(line, " \t\r\n")
	if !json.Valid(line) || len(trimmed) == 0 || trimmed[0] != '{' {
		return // invalid input only must not crash
	}
	if !ok {
		t.Fatalf("parse %q: got false, want true for a valid object", line)
	}
	want := reference(t, line)
	if got := extracted(&p); !equalMaps(got, want) {
		t.Fatalf("parse %q:\ngot  %q\nwant %q (encoding/json)", line, got, want)
	}
	// Again with instance names of earlier lines known, among them this
	// line's own (the fast path of parser.known): the same fields.
	var pk parser
	for k, name := range []string{"srv-a", want["instance"], `srv-\u0062`, ""} {
		pk.known[k], pk.knownUsable[k] = name, !strings.Contains(name, `\`)
	}
	if !pk.parse(line) {
		t.Fatalf("parse %q with known instances: got false, want true", line)
	}
	if got := extracted(&pk); !equalMaps(got, want) {
		t.Fatalf("parse %q with known instances %q:\ngot  %q\nwant %q (encoding/json)", line, pk.known, got, want)
	}
}

// fuzzSeeds is the seed corpus of FuzzParseLine.
var fuzzSeeds = []string{
	`{"event":"auth","time":"2025-08-02T10:00:00Z","class":"uuid","user":"u","repeat":95}`, // a log budget summary
	`{"event":"auth","repeat":"95"}`,                // repeat as a string: bad
	`{"event":"auth","repeat":1.5e3,"repeat":null}`, // a number, then null: absent
	`{"event":"heartbeat","decisions":[{"route":"r","class":"uuid","action":"reject","count":3}],"legacy_users":["u"]}`,
	typicalLine,
	// escapes in values and keys, surrogate pairs and lone surrogates
	`{"user_agent":"a\"b\\c\/\b\f\n\r\t\u00e9\ud83d\ude00\ud800\udc00x\ud800"}`,
	`{"\u0075ser":"u","event":"\u0061uth"}`,
	// invalid UTF-8 inside a valid JSON string
	"{\"user\":\"\xff\xfe\xed\xa0\x80\"}",
	// duplicates, null, wrong types
	`{"user":"a","user":null,"route":1,"route":"r","class":["uuid"],"action":{"x":"y"},"would":false}`,
	// nested values with brackets inside strings
	`{"x":[{"y":"]}"},[[[]]],"\"]"],"event":"auth"}`,
	// numbers of every shape
	`{"a":-0.5E-3,"b":1e9,"c":-0,"time":"2025-08-02T10:00:00Z"}`,
	// whitespace everywhere
	" \n{ \"event\" : \"auth\" ,\r\n\"user\"\t:\t\"u\" }\n",
	`{}`,
	// the instance field (issue 14): present, escaped, null after a value, a number
	`{"level":"info","instance":"srv-d2f7k3-7x9q2","event":"start","time":"2025-08-02T10:00:00Z"}`,
	`{"instance":"srv-\u0061","instance":null,"event":"auth"}`,
	`{"instance":7,"event":"stop","time":"2025-08-02T10:00:00Z"}`,
	// instance values the known-name fast path must not take for a known name
	`{"instance":"srv-a\"x","instance":"srv-a","event":"auth"}`,
	`{"instance":"srv-\u0062","event":"auth"}`,
	`{"instance":"srv-a","instance":1,"event":"auth"}`,
	`{"instance":"","event":"auth"}`,
}

// FuzzParseLine checks that the scanner never crashes, and that on every
// valid JSON object it extracts exactly what encoding/json does.
func FuzzParseLine(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		checkAgainstReference(t, line)
		// And through the aggregator, which must count the line somewhere.
		a := NewAggregator(Query{To: testNow})
		a.Line(line)
		r := a.Report()
		if r.Lines.Read != 1 || r.Lines.Events+r.Lines.Skipped+r.Lines.Filtered != 1 {
			t.Fatalf("line %q not accounted for: %+v", line, r.Lines)
		}
	})
}

func TestParseTimestamp(t *testing.T) {
	tests := []struct {
		in   string
		want string // RFC3339Nano UTC, "" for an error
	}{
		{"2025-08-02T10:00:00Z", "2025-08-02T10:00:00Z"},
		{"2025-08-02T10:00:00.5Z", "2025-08-02T10:00:00.5Z"},
		{"2025-08-02T10:00:00.123456789Z", "2025-08-02T10:00:00.123456789Z"},
		{"2025-08-02T10:00:00+02:00", "2025-08-02T08:00:00Z"},
		{"2025-08-02T00:30:00-01:30", "2025-08-02T02:00:00Z"},
		{"2024-02-29T23:59:59Z", "2024-02-29T23:59:59Z"},
		{"1969-12-31T23:59:59Z", "1969-12-31T23:59:59Z"},
		{"2025-08-02T10:00:00.1234567891Z", "2025-08-02T10:00:00.123456789Z"}, // time.Parse truncates
		{"2025-02-29T10:00:00Z", ""},
		{"2025-08-02T24:00:00Z", ""},
		{"2025-08-02 10:00:00Z", ""},
		{"2025-08-02T10:00:00", ""},
		{"1722600000", ""},
		{"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			ns, ok := parseTimestamp([]byte(tt.in))
			got := ""
			if ok {
				got = time.Unix(0, ns).UTC().Format(time.RFC3339Nano)
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// FuzzParseTimestamp checks the hand-rolled RFC 3339 parser against
// time.Parse.
func FuzzParseTimestamp(f *testing.F) {
	f.Add("2025-08-02T10:00:00Z")           // zerolog's default
	f.Add("2025-08-02T10:00:00.123456789Z") // RFC3339Nano
	f.Add("2025-08-02T10:00:00+02:00")      // an offset
	f.Add("0000-01-01T00:00:00-23:59")      // extremes
	f.Add("2025-02-29T10:00:00Z")           // not a leap year
	f.Fuzz(func(t *testing.T, s string) {
		ns, ok := parseRFC3339Fast([]byte(s))
		if !ok {
			return // the fallback is time.Parse itself
		}
		want, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatalf("%q: fast parser accepted what time.Parse rejects: %v", s, err)
		}
		if ns != want.UnixNano() {
			t.Fatalf("%q: got %v, want %v", s, time.Unix(0, ns).UTC(), want.UTC())
		}
	})
}

func TestDurations(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		out  string
	}{
		{"7d", 7 * 24 * time.Hour, "7d"},
		{"1d12h", 36 * time.Hour, "1d12h0m0s"},
		{"36h", 36 * time.Hour, "1d12h0m0s"},
		{"90m", 90 * time.Minute, "1h30m0s"},
		{"0d", 0, "0s"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseDuration(tt.in)
			if err != nil || got != tt.want {
				t.Fatalf("ParseDuration: got %v, %v, want %v", got, err, tt.want)
			}
			if s := FormatDuration(got); s != tt.out {
				t.Errorf("FormatDuration: got %q, want %q", s, tt.out)
			}
		})
	}
	for _, bad := range []string{"", "d", "7", "-1d", "1d-2h", "xd", "1.5d", "7days"} {
		if d, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q): got %v, want an error", bad, d)
		}
	}
}

// TestRobustness feeds hostile lines through the whole reader: none may
// crash, each must be counted.
func TestRobustness(t *testing.T) {
	huge := `{"event":"auth","class":"uuid","user_agent":"` + strings.Repeat("A", 10<<20) + `","time":"2025-08-02T10:00:00Z"}`
	deep := `{"event":"auth","x":` + strings.Repeat("[", 500_000) + strings.Repeat("]", 500_000) + `}`
	deepOpen := strings.Repeat("{", 900_000)
	tests := []struct {
		name string
		line string
		want SkippedBy
	}{
		{"10 MB line", huge, SkippedBy{TooLong: 1}},
		{"10 MB of newline-free garbage", strings.Repeat("\xff", 10<<20), SkippedBy{TooLong: 1}},
		{"invalid utf-8", "\xff\xfe{\"event\":\"auth\xff\",\"user\":\"\xc3\x28\"}", SkippedBy{OtherProgram: 1}},
		{"deeply nested", deep, SkippedBy{Invalid: 1}},
		{"deeply nested, unclosed", deepOpen, SkippedBy{NotJSON: 1}},
		{"number where a string belongs", `{"event":"auth","user":42,"time":"2025-08-02T10:00:00Z"}`, SkippedBy{Invalid: 1}},
		{"number as event", `{"event":7,"time":"2025-08-02T10:00:00Z"}`, SkippedBy{OtherProgram: 1}},
		{"number as time", `{"event":"auth","time":1722600000}`, SkippedBy{Invalid: 1}},
		{"nul bytes", "\x00\x00{\"event\":\"start\"}\x00", SkippedBy{OtherEvent: 1}},
		{"only braces", strings.Repeat("{}", 1000), SkippedBy{OtherProgram: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := NewAggregator(Query{To: testNow})
			// Surround the line with good ones: they must still count.
			good := authLine("2025-08-02T10:00:00Z", "jwt", "pass", "u")
			in := good + "\n" + tt.line + "\n" + good + "\n"
			if err := a.ReadFrom("test", strings.NewReader(in)); err != nil {
				t.Fatal(err)
			}
			r := a.Report()
			if r.Lines.SkippedBy != tt.want || r.Lines.Read != 3 || r.Lines.Events != 2 {
				t.Errorf("got read %d, events %d, skipped %+v; want 3, 2, %+v", r.Lines.Read, r.Lines.Events, r.Lines.SkippedBy, tt.want)
			}
		})
	}
}

// TestLineAllocs pins the streaming promise: a line of a user already
// seen allocates nothing.
func TestLineAllocs(t *testing.T) {
	a := NewAggregator(Query{To: testNow})
	lines := [][]byte{
		[]byte(typicalLine),
		[]byte(`2025-08-02T10:00:00Z {"event":"auth","class":"jwt","action":"pass","user":"x","time":"2025-08-02T10:00:01Z"}`),
		[]byte(`{"event":"auth","class":"uuid","user_agent":"caf\u00e9 \"q\"","user":"y","time":"2025-08-02T10:00:02Z"}`),
		[]byte(`{"event":"ws_close","user":"x"}`),
		[]byte(`garbage`),
		// Instances, lifecycle events and lines out of order (issue 14):
		// presence is tracked per instance without allocating either.
		[]byte(`{"level":"info","instance":"srv-a","event":"auth","class":"jwt","action":"pass","user":"x","time":"2025-08-10T10:00:00Z"}`),
		[]byte(`{"level":"info","instance":"srv-b","event":"ws_close","user":"x","time":"2025-08-10T09:00:00Z"}`),
		[]byte(`{"level":"info","instance":"srv-a","event":"stop","time":"2025-08-10T11:00:00Z"}`),
		[]byte(`{"level":"info","instance":"srv-a","event":"start","time":"2025-08-10T08:00:00Z"}`),
		[]byte(`{"level":"info","instance":"srv-b","event":"config","result":"loaded","time":"2025-08-12T09:00:00Z"}`),
		[]byte(`{"level":"info","event":"http_error","time":"2025-08-11T09:00:00Z"}`),
	}
	for _, l := range lines {
		a.Line(l)
	}
	allocs := testing.AllocsPerRun(100, func() {
		for _, l := range lines {
			a.Line(l)
		}
	})
	if allocs != 0 {
		t.Errorf("allocations per run of known lines: got %v, want 0", allocs)
	}
}

func BenchmarkParseLine(b *testing.B) {
	line := []byte(typicalLine)
	var p parser
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	for b.Loop() {
		if !p.parse(line) {
			b.Fatal("parse failed")
		}
	}
}

func BenchmarkAggregate(b *testing.B) {
	var log bytes.Buffer
	if _, err := loggen.Write(&log, loggen.Config{Size: 32 << 20, Seed: 1}); err != nil {
		b.Fatal(err)
	}
	to := time.Date(2025, 8, 3, 0, 0, 0, 0, time.UTC)
	b.SetBytes(int64(log.Len()))
	b.ReportAllocs()
	for b.Loop() {
		a := NewAggregator(Query{To: to})
		if err := a.ReadFrom("bench", bytes.NewReader(log.Bytes())); err != nil {
			b.Fatal(err)
		}
		a.Report()
	}
}
