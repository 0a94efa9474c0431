package battery

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"authgate/report"
)

// reportNow is the fixed clock of the report cases.
var reportNow = time.Date(2025, 9, 1, 12, 0, 0, 0, time.UTC)

// authLine is a well-formed legacy auth event a day before reportNow.
func authLine(user string) string {
	return `{"level":"warn","time":"2025-08-31T10:00:00Z","event":"auth","route":"ws","transport":"websocket","class":"uuid","action":"rewrite","stage":0,"reason":"legacy uuid","user":"` +
		user + `","path":"/ws","message":"rewritten"}`
}

type reportOut struct {
	Lines struct {
		Read, Events, Skipped int64
	}
	Totals struct {
		Requests int64
	}
	Legacy struct {
		Requests, Users int64
	}
	Verdict struct {
		Status string
	}
}

// TestReportParser feeds hostile log files to `authgate report`.
func TestReportParser(t *testing.T) {
	beginTest(t)
	deep := strings.Repeat(`{"a":`, 200000) + "1" + strings.Repeat("}", 200000)
	deepArr := `{"event":"auth","x":` + strings.Repeat("[", 500000) + strings.Repeat("]", 500000) + `}`
	cases := []struct {
		name, attack string
		lines        []string
		wantExit     int
		wantRead     int64 // lines read
		wantEvents   int64 // auth events counted
		wantUsers    int64 // distinct legacy users
	}{
		{"10MB-line", "one 10 MB JSON line between two good auth lines",
			[]string{authLine("u1"), `{"event":"auth","class":"uuid","user_agent":"` + strings.Repeat("A", 10<<20) + `"}`, authLine("u2")},
			report.ExitNotSafe, 3, 2, 2},
		{"10MB-no-newline", "a 10 MB line of garbage without a final newline after a good line",
			[]string{authLine("u1"), strings.Repeat("z", 10<<20)}, report.ExitNotSafe, 2, 1, 1},
		{"invalid-utf8", "auth lines whose strings hold invalid UTF-8, and raw binary lines",
			[]string{authLine("u\xff\xfe1"), "\xff\xfe\x00\x01 binary", `{"event":"auth","class":"uuid\xc0","user":"x"}`, authLine("u2")},
			report.ExitNotSafe, 4, -1, -1},
		{"deeply-nested-object", "200,000 nested objects, then a good line",
			[]string{deep, authLine("u1")}, report.ExitNotSafe, 2, 1, 1},
		{"deeply-nested-array", "an auth event holding 500,000 nested arrays, then a good line",
			[]string{deepArr, authLine("u1")}, report.ExitNotSafe, 2, -1, 1},
		{"numbers-for-strings", "class, user, time, event, route as numbers, booleans, null, objects",
			[]string{
				`{"event":"auth","time":5,"class":"uuid","user":"n1","route":"ws"}`,
				`{"event":"auth","time":"2025-08-31T10:00:00Z","class":123,"user":"n2","route":"ws"}`,
				`{"event":"auth","time":"2025-08-31T10:00:00Z","class":"uuid","user":true,"route":"ws"}`,
				`{"event":7,"time":"2025-08-31T10:00:00Z","class":"uuid","user":"n4"}`,
				`{"event":"auth","time":"2025-08-31T10:00:00Z","class":"uuid","user":null,"route":{"x":1}}`,
				authLine("good"),
			}, report.ExitNotSafe, 6, -1, -1},
		{"nul-and-escapes", "NUL bytes, \\u0000 escapes, lone surrogates",
			[]string{"{\"event\":\"auth\",\"class\":\"uuid\",\"user\":\"a\x00b\"}", `{"event":"auth","class":"uuid","user":"\u0000\ud800"}`, authLine("u1")},
			report.ExitNotSafe, 3, -1, -1},
		{"gzip-magic-then-garbage", "a file that starts with the gzip magic number and then garbage",
			[]string{"\x1f\x8b\x08\x00garbage"}, report.ExitError, -1, -1, -1},
	}
	var rows []tcase
	for _, c := range cases {
		rows = append(rows, tcase{
			name:   "report-" + c.name,
			attack: c.attack,
			want:   "no crash; exit status and line counts as pinned",
			run: func(t *testing.T) {
				dir := t.TempDir()
				path := filepath.Join(dir, "authgate.log")
				if err := os.WriteFile(path, []byte(strings.Join(c.lines, "\n")), 0o644); err != nil {
					t.Fatal(err)
				}
				var out, errb bytes.Buffer
				start := time.Now()
				code := report.Options{Now: func() time.Time { return reportNow }}.Command(
					[]string{"--format", "json", "--since", "30d", path}, strings.NewReader(""), &out, &errb)
				if d := time.Since(start); d > 20*time.Second {
					t.Errorf("report took %v", d)
				}
				if code != c.wantExit {
					t.Fatalf("exit %d, want %d; stderr %q", code, c.wantExit, errb.String())
				}
				if code == report.ExitError {
					if errb.Len() == 0 {
						t.Errorf("exit 3 without a message")
					}
					return
				}
				var r reportOut
				if err := json.Unmarshal(out.Bytes(), &r); err != nil {
					t.Fatalf("report JSON: %v", err)
				}
				if c.wantRead >= 0 && r.Lines.Read != c.wantRead {
					t.Errorf("lines.read %d, want %d", r.Lines.Read, c.wantRead)
				}
				if c.wantEvents >= 0 && r.Lines.Events != c.wantEvents {
					t.Errorf("lines.events %d, want %d", r.Lines.Events, c.wantEvents)
				}
				if c.wantUsers >= 0 && r.Legacy.Users != c.wantUsers {
					t.Errorf("legacy.users %d, want %d", r.Legacy.Users, c.wantUsers)
				}
				if r.Lines.Events+r.Lines.Skipped > r.Lines.Read {
					t.Errorf("events %d + skipped %d > read %d", r.Lines.Events, r.Lines.Skipped, r.Lines.Read)
				}
				if r.Verdict.Status != "not_safe" {
					t.Errorf("verdict %q, want not_safe", r.Verdict.Status)
				}
			},
		})
	}
	runCases(t, rows)
}
