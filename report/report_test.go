package report

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// testNow is "now" for every test: the testdata logs run from 2025-08-01
// to 2025-08-13; legacy use stops on 2025-08-10.
var testNow = time.Date(2025, 8, 14, 0, 0, 0, 0, time.UTC)

// testLogs are two instances' logs: a plain file with collector prefixes,
// garbage and other programs' lines, and a gzip file with \u escapes.
var testLogs = []string{"testdata/instance-a.log", "testdata/instance-b.log.gz"}

func run(t *testing.T, stdin []byte, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Options{Now: func() time.Time { return testNow }}.Command(args, bytes.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), code
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./report -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (run with -update to accept):\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestGolden(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantExit int
	}{
		{"text", []string{"--format", "text"}, ExitNotSafe},
		{"json", []string{"--format", "json"}, ExitNotSafe},
		{"csv", []string{"--format", "csv"}, ExitNotSafe},
		{"users.csv", []string{"--format", "csv", "--users"}, ExitNotSafe},
		{"html", []string{"--format", "html"}, ExitNotSafe},
		{"safe.text", []string{"--quiet-for", "3d", "--max-gap", "1d"}, ExitSafe},
		{"holes.text", []string{"--quiet-for", "3d"}, ExitInsufficientData},
		{"coverage.csv", []string{"--format", "csv", "--coverage", "--quiet-for", "3d"}, ExitInsufficientData},
		{"route.text", []string{"--route", "pam-ws", "--since", "2025-08-02", "--until", "2025-08-12"}, ExitNotSafe},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := run(t, nil, append(tt.args, testLogs...)...)
			if code != tt.wantExit {
				t.Errorf("exit: got %d, want %d (stderr %q)", code, tt.wantExit, errOut)
			}
			if errOut != "" {
				t.Errorf("stderr: got %q, want nothing", errOut)
			}
			golden(t, tt.name, out)
		})
	}
}

func TestVerdicts(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantStatus string
		wantExit   int
		wantReason []string
	}{
		{
			name:       "legacy in the quiet period",
			wantStatus: StatusNotSafe, wantExit: ExitNotSafe,
			wantReason: []string{"2 legacy requests in the last 7d", "from 2 users", "1 of them rejected",
				"last seen 2025-08-10T12:00:00Z from user 33333333-3333-4333-8333-333333333333", `"python-requests/2.31.0"`},
		},
		{
			name:       "quiet for 3 days with traffic",
			args:       []string{"--quiet-for", "3d", "--max-gap", "1d"},
			wantStatus: StatusSafe, wantExit: ExitSafe,
			wantReason: []string{"no legacy use in the last 3d (since 2025-08-11T00:00:00Z) across 14 requests",
				"last legacy use 2025-08-10T12:00:00Z", "the logs of 1 instance cover the period without a silence over 1d"},
		},
		{
			// The testdata logs have traffic by day only: idle nights are
			// silences as long as a dropped log, and only --max-gap can
			// tell the report which they are.
			name:       "quiet for 3 days, but silent nights",
			args:       []string{"--quiet-for", "3d"},
			wantStatus: StatusInsufficientData, wantExit: ExitInsufficientData,
			wantReason: []string{"no legacy use since 2025-08-11T00:00:00Z, but the logs have 4 holes",
				"instance (unnamed) logged nothing from 2025-08-11T00:00:00Z to 2025-08-11T08:15:00Z (8h15m0s)",
				"from 2025-08-11T11:15:00Z to 2025-08-12T08:15:00Z (21h0m0s)", "and 1 more",
				"(unnamed) are lines without an instance field", "raise --max-gap"},
		},
		{
			name:       "no traffic in the quiet period",
			args:       []string{"--until", "2025-08-30"},
			wantStatus: StatusInsufficientData, wantExit: ExitInsufficientData,
			wantReason: []string{"no auth traffic in the last 7d", "silence is not proof"},
		},
		{
			name:       "window shorter than the quiet period",
			args:       []string{"--since", "2025-08-12", "--quiet-for", "3d"},
			wantStatus: StatusInsufficientData, wantExit: ExitInsufficientData,
			wantReason: []string{"the logs in the window begin only at 2025-08-12T08:15:00Z", "needs logs from 2025-08-11T00:00:00Z"},
		},
		{
			name:       "legacy only on another route",
			args:       []string{"--route", "pam-ws", "--quiet-for", "4d", "--max-gap", "1d"},
			wantStatus: StatusSafe, wantExit: ExitSafe,
			wantReason: []string{"no legacy use in the last 4d", "last legacy use 2025-08-09T07:00:00Z from user 22222222"},
		},
		{
			name:       "dry run counts as legacy use",
			args:       []string{"--route", "pam-ws", "--since", "2025-08-09", "--until", "2025-08-10", "--quiet-for", "1d"},
			wantStatus: StatusNotSafe, wantExit: ExitNotSafe,
			wantReason: []string{"1 legacy request in the last 1d", "22222222-2222-4222-8222-222222222222 (1)"},
		},
		{
			name:       "window as long as the quiet period",
			args:       []string{"--since", "6d", "--quiet-for", "6d"},
			wantStatus: StatusNotSafe, wantExit: ExitNotSafe,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := run(t, nil, append(append([]string{"--format", "json"}, tt.args...), testLogs...)...)
			if code != tt.wantExit {
				t.Errorf("exit: got %d, want %d (stderr %q)", code, tt.wantExit, errOut)
			}
			var r Report
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatalf("decoding JSON: %v", err)
			}
			if r.Verdict.Status != tt.wantStatus {
				t.Errorf("status: got %q, want %q (reason %q)", r.Verdict.Status, tt.wantStatus, r.Verdict.Reason)
			}
			if r.Verdict.ExitCode != code {
				t.Errorf("verdict.exit_code: got %d, want %d", r.Verdict.ExitCode, code)
			}
			for _, want := range tt.wantReason {
				if !strings.Contains(r.Verdict.Reason, want) {
					t.Errorf("reason: got %q, want it to contain %q", r.Verdict.Reason, want)
				}
			}
		})
	}
}

// authLine is an auth event as the proxy writes it.
func authLine(ts, class, action, user string) string {
	return `{"level":"warn","event":"auth","route":"pam-ws","class":"` + class + `","action":"` + action +
		`","user":"` + user + `","time":"` + ts + `","message":"auth decision"}`
}

func TestWindowEdges(t *testing.T) {
	const u = "44444444-4444-4444-8444-444444444444"
	log := strings.Join([]string{
		authLine("2025-08-09T23:59:59.999999999Z", "uuid", "rewrite", u), // before: out
		authLine("2025-08-10T00:00:00Z", "uuid", "rewrite", u),           // at from: in
		authLine("2025-08-10T02:00:00+02:00", "uuid", "rewrite", u),      // = from, other zone: in
		authLine("2025-08-10T23:59:59.999999999Z", "jwt", "pass", u),     // last instant: in
		authLine("2025-08-11T00:00:00Z", "uuid", "rewrite", u),           // at to: out
		authLine("2025-08-11T01:00:00+01:00", "uuid", "rewrite", u),      // = to, other zone: out
	}, "\n")
	out, errOut, code := run(t, []byte(log), "--format", "json", "--since", "2025-08-10", "--until", "2025-08-11",
		"--quiet-for", "1d")
	if code != ExitNotSafe {
		t.Fatalf("exit: got %d, want %d (stderr %q)", code, ExitNotSafe, errOut)
	}
	var r Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if r.Lines.Events != 3 || r.Lines.FilteredBy.OutOfWindow != 3 {
		t.Errorf("events, out of window: got %d, %d, want 3, 3", r.Lines.Events, r.Lines.FilteredBy.OutOfWindow)
	}
	if r.Legacy.Requests != 2 {
		t.Errorf("legacy requests: got %d, want 2", r.Legacy.Requests)
	}
	if got, want := r.Legacy.FirstSeen.Format(time.RFC3339Nano), "2025-08-10T00:00:00Z"; got != want {
		t.Errorf("legacy first seen: got %s, want %s", got, want)
	}
	if len(r.Days) != 1 || r.Days[0].Day != "2025-08-10" || r.Days[0].Requests != 3 || r.Days[0].LegacyUsers != 1 {
		t.Errorf("days: got %+v, want one day 2025-08-10 with 3 requests, 1 legacy user", r.Days)
	}
}

func TestSinceDuration(t *testing.T) {
	out, _, _ := run(t, nil, append([]string{"--format", "json", "--since", "36h", "--until", "2025-08-12T12:00:00Z"}, testLogs...)...)
	var r Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if got, want := r.Window.From.Format(time.RFC3339), "2025-08-11T00:00:00Z"; got != want {
		t.Errorf("window.from: got %s, want %s", got, want)
	}
	if r.Window.Unbounded {
		t.Errorf("window.unbounded: got true, want false")
	}
}

func TestCommandErrors(t *testing.T) {
	corrupt := []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 'n', 'o', 't', ' ', 'g', 'z', 'i', 'p'}
	tests := []struct {
		name       string
		args       []string
		stdin      []byte
		wantStderr string
	}{
		{"unknown flag", []string{"--bogus"}, nil, "flag provided but not defined: -bogus"},
		{"bad since", []string{"--since", "yesterday"}, nil, `--since: want a duration (7d, 36h) or a time: "yesterday"`},
		{"since after until", []string{"--since", "2025-08-20", "--until", "2025-08-10"}, nil, "is not before the window's end"},
		{"bad until", []string{"--until", "2025-13-01"}, nil, "--until:"},
		{"bad quiet-for", []string{"--quiet-for", "a week"}, nil, "--quiet-for:"},
		{"zero quiet-for", []string{"--quiet-for", "0d"}, nil, "must be positive"},
		{"bad max-gap", []string{"--max-gap", "six hours"}, nil, `--max-gap: "six hours": want a duration such as 7d, 36h or 1d12h`},
		{"empty max-gap", []string{"--max-gap", ""}, nil, `--max-gap: "": want a duration`},
		{"zero max-gap", []string{"--max-gap", "0"}, nil, "--max-gap 0: must be positive"},
		{"zero max-gap in days", []string{"--max-gap", "0d"}, nil, "--max-gap 0d: must be positive"},
		{"negative max-gap", []string{"--max-gap", "-1h"}, nil, "--max-gap -1h: must be positive"},
		{"max-gap too long", []string{"--max-gap", "200000d"}, nil, `--max-gap: "200000d": longer than 106751 days`},
		{"coverage without csv", []string{"--coverage"}, nil, "--coverage applies to --format csv only"},
		{"coverage and users", []string{"--format", "csv", "--coverage", "--users"}, nil, "--users and --coverage: choose one CSV"},
		{"bad format", []string{"--format", "xml"}, nil, `--format "xml": want text, json, csv or html`},
		{"users without csv", []string{"--users"}, nil, "--users applies to --format csv only"},
		{"missing file", []string{"testdata/no-such.log"}, nil, "open testdata/no-such.log: no such file or directory"},
		{"missing file after a good one", []string{testLogs[0], "testdata/no-such.log"}, nil, "no such file"},
		{"directory", []string{"testdata"}, nil, "reading testdata:"},
		{"corrupt gzip", []string{"-"}, corrupt, "reading stdin:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := run(t, tt.stdin, tt.args...)
			if code != ExitError {
				t.Errorf("exit: got %d, want %d", code, ExitError)
			}
			if !strings.Contains(errOut, tt.wantStderr) {
				t.Errorf("stderr: got %q, want it to contain %q", errOut, tt.wantStderr)
			}
			if out != "" {
				t.Errorf("stdout: got %q, want nothing", out)
			}
		})
	}
}

func TestCommandHelp(t *testing.T) {
	out, errOut, code := run(t, nil, "-h")
	if code != 0 || !strings.HasPrefix(out, "usage: authgate report") || errOut != "" {
		t.Errorf("got exit %d, stdout %.40q, stderr %q; want 0, the usage, nothing", code, out, errOut)
	}
}

func TestCommandInputs(t *testing.T) {
	plain, err := os.ReadFile(testLogs[0])
	if err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(plain)
	zw.Close()
	crlf := bytes.ReplaceAll(bytes.TrimSuffix(plain, []byte("\n")), []byte("\n"), []byte("\r\n"))

	want := func(t *testing.T, args []string, stdin []byte) Report {
		t.Helper()
		out, errOut, _ := run(t, stdin, append([]string{"--format", "json"}, args...)...)
		var r Report
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("decoding JSON: %v (stderr %q)", err, errOut)
		}
		return r
	}
	base := want(t, []string{testLogs[0]}, nil)
	tests := []struct {
		name  string
		args  []string
		stdin []byte
		gzip  bool
	}{
		{"stdin without files", nil, plain, false},
		{"stdin as -", []string{"-"}, plain, false},
		{"gzip on stdin", nil, gz.Bytes(), true},
		{"crlf without final newline", nil, crlf, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := want(t, tt.args, tt.stdin)
			if r.Lines != base.Lines || r.Legacy.Requests != base.Legacy.Requests {
				t.Errorf("got lines %+v, legacy %d; want %+v, %d", r.Lines, r.Legacy.Requests, base.Lines, base.Legacy.Requests)
			}
			if len(r.Inputs) != 1 || r.Inputs[0].Name != "stdin" || r.Inputs[0].Gzip != tt.gzip {
				t.Errorf("inputs: got %+v, want stdin with gzip %v", r.Inputs, tt.gzip)
			}
		})
	}

	t.Run("flags after files", func(t *testing.T) {
		out, _, code := run(t, nil, testLogs[0], "--format", "csv", testLogs[1], "--quiet-for", "3d", "--max-gap", "1d")
		if code != ExitSafe || !strings.HasPrefix(out, "day,requests,") {
			t.Errorf("got exit %d, output %.30q; want 0 and CSV", code, out)
		}
	})
	t.Run("merged instances equal concatenation", func(t *testing.T) {
		both := want(t, testLogs, nil)
		b, err := os.ReadFile(testLogs[1])
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		var cat bytes.Buffer
		cat.Write(plain)
		cat.ReadFrom(zr)
		one := want(t, nil, cat.Bytes())
		one.Inputs, both.Inputs = nil, nil
		j1, _ := json.Marshal(one)
		j2, _ := json.Marshal(both)
		if !bytes.Equal(j1, j2) {
			t.Errorf("report of both files differs from the report of their concatenation:\n%s\n%s", j2, j1)
		}
	})
}

// TestHTMLSelfContained pins that the page loads nothing: no URL in the
// source at all, no script, and src/href only as data: URIs.
func TestHTMLSelfContained(t *testing.T) {
	out, _, _ := run(t, nil, append([]string{"--format", "html"}, testLogs...)...)
	for _, bad := range []string{"http://", "https://", "//", "<script", "url(", "@import"} {
		if strings.Contains(out, bad) {
			t.Errorf("page contains %q", bad)
		}
	}
	for _, m := range regexp.MustCompile(`(?i)\b(?:src|href)\s*=\s*["']?([^"'\s>]*)`).FindAllStringSubmatch(out, -1) {
		if !strings.HasPrefix(m[1], "data:") {
			t.Errorf("page references %q, want only data: URIs", m[1])
		}
	}
	for _, want := range []string{"<svg", `class="legacy"`, "https:&#47;&#47;app.example.com", "PamWeb&#47;1.8 &#34;beta&#34; café 😀"} {
		if !strings.Contains(out, want) {
			t.Errorf("page does not contain %q", want)
		}
	}
}
