package main

// `authgate report` as a process: exit codes, --max-gap, and the coverage
// rules of issue 14 (point 4) on generated logs with holes, one file per
// instance as a log drain keeps them.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// genStart is the first line of the generated logs; the report's window
// ends 14 days later and its quiet period is the second week.
var genStart = time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC)

var genUntil = genStart.Add(14 * 24 * time.Hour).Format(time.RFC3339)

func hours(h float64) time.Time { return genStart.Add(time.Duration(h * float64(time.Hour))) }

// genInstance is one instance's log: a line every 10 minutes in
// [from, to) outside its holes, start and stop events where asked.
type genInstance struct {
	name        string
	from, to    float64 // hours from genStart; to 0 means the end (336)
	start, stop bool    // a start event at from, a stop event at to
	holes       []genHole
	legacyAt    float64 // a legacy request at this hour, when > 0
}

type genHole struct {
	from, to    float64
	stop, start bool // a stop at from (shutdown), a start at to (back up)
}

func (g genInstance) write(t *testing.T, dir string) string {
	t.Helper()
	to := g.to
	if to == 0 {
		to = 14 * 24
	}
	inst := ""
	if g.name != "" {
		inst = fmt.Sprintf(`"instance":%q,`, g.name)
	}
	var b strings.Builder
	line := func(h float64, ev, extra string) {
		fmt.Fprintf(&b, `{"level":"info",%s"event":%q,%s"time":%q,"message":"m"}`+"\n", inst, ev, extra,
			hours(h).Format(time.RFC3339Nano))
	}
	auth := func(h float64, class string) {
		line(h, "auth", fmt.Sprintf(`"route":"pam-ws","class":%q,"action":"pass","user":"u-%d",`, class, int(h)%7))
	}
	if g.start {
		line(g.from, "config", `"result":"loaded",`)
		line(g.from, "start", "")
	}
	for m := int(g.from * 60); m < int(to*60); m += 10 {
		h := float64(m) / 60
		in := false
		for _, hole := range g.holes {
			in = in || (h >= hole.from && h < hole.to)
		}
		if !in {
			auth(h, "jwt")
		}
	}
	for _, hole := range g.holes {
		if hole.stop {
			line(hole.from, "stop", "")
		}
		if hole.start {
			line(hole.to, "start", "")
		}
	}
	if g.legacyAt > 0 {
		auth(g.legacyAt, "uuid")
	}
	if g.stop {
		line(to, "stop", "")
	}
	name := g.name
	if name == "" {
		name = "unnamed"
	}
	path := filepath.Join(dir, name+".log")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestReportCoverage(t *testing.T) {
	const qs = 7 * 24 // the quiet period's start, hours
	a := genInstance{name: "srv-a", start: true}
	tests := []struct {
		name      string
		instances []genInstance
		args      []string
		wantExit  int
		want      []string // in the text report
	}{
		{"two instances, no hole", []genInstance{a, {name: "srv-b", start: true}}, nil, 0,
			[]string{"verdict   SAFE (exit 0)", "the logs of 2 instances cover the period without a silence over 6h0m0s"}},
		{"a log drain dropped 8h of srv-b", []genInstance{a, {name: "srv-b", holes: []genHole{{from: qs + 30, to: qs + 38}}}}, nil, 2,
			[]string{"verdict   INSUFFICIENT_DATA (exit 2)",
				`instance "srv-b" logged nothing from 2025-07-09T05:50:00Z to 2025-07-09T14:00:00Z (8h10m0s)`,
				"HOLES", "srv-b     2025-07-09T05:50:00Z  2025-07-09T14:00:00Z  8h10m0s"}},
		{"--max-gap 9h tolerates it", []genInstance{a, {name: "srv-b", holes: []genHole{{from: qs + 30, to: qs + 38}}}},
			[]string{"--max-gap", "9h"}, 0, []string{"without a silence over 9h0m0s"}},
		{"srv-b stopped and started again", []genInstance{a, {name: "srv-b", holes: []genHole{{from: qs + 30, to: qs + 80, stop: true, start: true}}}},
			nil, 0, []string{"verdict   SAFE"}},
		{"srv-b crashed: start without a stop", []genInstance{a, {name: "srv-b", holes: []genHole{{from: qs + 30, to: qs + 40, start: true}}}},
			nil, 2, []string{`instance "srv-b" logged nothing from 2025-07-09T05:50:00Z to 2025-07-09T16:00:00Z`}},
		{"srv-b silent to the end without a stop", []genInstance{a, {name: "srv-b", to: 2*qs - 8}}, nil, 2,
			[]string{`instance "srv-b" logged nothing from 2025-07-14T15:50:00Z to 2025-07-15T00:00:00Z (8h10m0s)`}},
		{"deploy: srv-c replaces srv-b mid-period", []genInstance{a, {name: "srv-b", to: qs + 60, stop: true}, {name: "srv-c", from: qs + 60, start: true}},
			nil, 0, []string{"the logs of 3 instances cover the period"}},
		{"srv-c appears mid-period without a start", []genInstance{a, {name: "srv-c", from: qs + 60}}, nil, 2,
			[]string{`instance "srv-c" logged nothing from 2025-07-08T00:00:00Z to 2025-07-10T12:00:00Z (2d12h0m0s)`}},
		{"service down for a day, every instance stopped", []genInstance{{name: "srv-a", to: qs + 24, stop: true}, {name: "srv-b", from: qs + 48, start: true}},
			nil, 2, []string{"no instance logged anything from 2025-07-09T00:00:00Z to 2025-07-10T00:00:00Z (1d)", "NO INSTANCE LOGGING"}},
		{"older logs without an instance field", []genInstance{{holes: []genHole{{from: qs + 30, to: qs + 38}}}}, nil, 2,
			[]string{"instance (unnamed) logged nothing", "(unnamed)  "}},
		{"legacy use beats a hole", []genInstance{{name: "srv-a", legacyAt: qs + 100}, {name: "srv-b", holes: []genHole{{from: qs + 30, to: qs + 38}}}}, nil, 1,
			[]string{"verdict   NOT_SAFE (exit 1)", "1 legacy request in the last 7d"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			var files []string
			// Newest instance first: the order of files must not matter.
			for i := len(tt.instances) - 1; i >= 0; i-- {
				files = append(files, tt.instances[i].write(t, dir))
			}
			args := append(append([]string{"report", "--until", genUntil}, tt.args...), files...)
			out, errOut, code := runAuthgate(t, args...)
			if code != tt.wantExit {
				t.Errorf("exit: got %d, want %d (stderr %q)\n%s", code, tt.wantExit, errOut, out)
			}
			if errOut != "" {
				t.Errorf("stderr: got %q, want nothing", errOut)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("report lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// TestReportCoverageFormats checks the coverage in the JSON, CSV and HTML
// reports of one log with a hole.
func TestReportCoverageFormats(t *testing.T) {
	dir := t.TempDir()
	files := []string{
		genInstance{name: "srv-a", start: true}.write(t, dir),
		genInstance{name: "srv-b", holes: []genHole{{from: 7*24 + 30, to: 7*24 + 38}}}.write(t, dir),
	}
	report := func(args ...string) string {
		t.Helper()
		out, errOut, code := runAuthgate(t, append(append([]string{"report", "--until", genUntil}, args...), files...)...)
		if code != 2 || errOut != "" {
			t.Fatalf("report %v: got exit %d, stderr %q; want 2 and nothing", args, code, errOut)
		}
		return out
	}

	var r struct {
		Schema   string
		Coverage struct {
			MaxGap    string `json:"max_gap"`
			From, To  time.Time
			Holes     int
			Instances []struct {
				Name        string
				Lines       int64
				First, Last time.Time
				Stopped     bool
				Gaps        []struct {
					From, To time.Time
					Duration string
					Seconds  int64
				}
			}
		}
		Verdict struct{ Status string }
	}
	if err := json.Unmarshal([]byte(report("--format", "json")), &r); err != nil {
		t.Fatal(err)
	}
	c := r.Coverage
	if r.Schema != "authgate.report/v1" || r.Verdict.Status != "insufficient_data" || c.MaxGap != "6h0m0s" || c.Holes != 1 ||
		c.From != hours(7*24) || len(c.Instances) != 2 {
		t.Fatalf("got %+v", r)
	}
	b := c.Instances[1]
	if b.Name != "srv-b" || len(b.Gaps) != 1 || b.Gaps[0].From != hours(7*24+30-1.0/6) || b.Gaps[0].To != hours(7*24+38) ||
		b.Gaps[0].Seconds != 8*3600+600 || b.Gaps[0].Duration != "8h10m0s" || b.Stopped {
		t.Errorf("srv-b: got %+v, want one gap 2025-07-09T05:50Z..14:00Z", b)
	}

	csv := report("--format", "csv", "--coverage")
	for _, w := range []string{
		"instance,lines,quiet_period_lines,first,last,starts,stops,stopped,holes,longest_hole_seconds,holes_list,truncated\n",
		"srv-a,2018,1008,2025-07-01T00:00:00Z,2025-07-14T23:50:00Z,1,0,false,0,0,,false\n",
		",false,1,29400,2025-07-09T05:50:00Z/2025-07-09T14:00:00Z,false\n",
	} {
		if !strings.Contains(csv, w) {
			t.Errorf("csv lacks %q:\n%s", w, csv)
		}
	}

	html := report("--format", "html")
	for _, w := range []string{"Log coverage of the quiet period", `class="hole"`, "srv-b", "8h10m0s"} {
		if !strings.Contains(html, w) {
			t.Errorf("html lacks %q", w)
		}
	}
	for _, bad := range []string{"http://", "https://", "<script"} {
		if strings.Contains(html, bad) {
			t.Errorf("html holds %q: not self-contained", bad)
		}
	}
}

// TestReportMaxGapUsage pins that a --max-gap that does not parse, or is
// not positive, is a usage error: exit 3, a message naming the flag, no
// report.
func TestReportMaxGapUsage(t *testing.T) {
	dir := t.TempDir()
	log := genInstance{name: "srv-a", start: true}.write(t, dir)
	tests := []struct{ value, want string }{
		{"six hours", `authgate report: --max-gap: "six hours": want a duration such as 7d, 36h or 1d12h`},
		{"", `authgate report: --max-gap: "": want a duration`},
		{"6", `authgate report: --max-gap: "6": want a duration`},
		{"0", "authgate report: --max-gap 0: must be positive"},
		{"0s", "authgate report: --max-gap 0s: must be positive"},
		{"0d", "authgate report: --max-gap 0d: must be positive"},
		{"-1h", "authgate report: --max-gap -1h: must be positive"},
		{"-1d", `authgate report: --max-gap: "-1d": want a duration`},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			out, errOut, code := runAuthgate(t, "report", "--until", genUntil, "--max-gap", tt.value, log)
			if code != 3 || out != "" || !strings.HasPrefix(errOut, tt.want) || !strings.Contains(errOut, "usage: authgate report") {
				t.Errorf("got exit %d, stdout %q, stderr %q; want 3, nothing, %q and the usage", code, out, errOut, tt.want)
			}
		})
	}
	t.Run("help documents it", func(t *testing.T) {
		out, _, code := runAuthgate(t, "report", "--help")
		for _, w := range []string{"--max-gap DUR", "(default 6h)", "unless it begins after the instance logged stop"} {
			if code != 0 || !strings.Contains(out, w) {
				t.Errorf("help: got exit %d, want 0 and %q in:\n%s", code, w, out)
			}
		}
	})
}

// TestReportReadsServeLogs runs two `authgate serve` processes as two
// instances (RENDER_INSTANCE_ID), sends each a request, stops one with
// SIGTERM, and reads both logs back with `authgate report`: the writer
// and the reader agree on the instance field and on start and stop.
func TestReportReadsServeLogs(t *testing.T) {
	backend := newEchoBackend(t)
	dir := t.TempDir()
	var stderrs = map[string]*bytes.Buffer{"srv-test-a": {}, "srv-test-b": {}}
	serve := func(id string) (*exec.Cmd, string, int) {
		port := freePort(t)
		cfg := fmt.Sprintf(`listen: "127.0.0.1:%d"
admin_listen: ""
shutdown_timeout: 5s
upstream: {url: "%s"}
verify: {hs256_secret: "%s", algorithms: [HS256]}
mint: {hs256_secret: "%s"}
routes:
  - name: ws
    match: {path: /ws, websocket: true}
    policy: {uuid: rewrite}
`, port, backend, exampleSecret, exampleSecret)
		path := filepath.Join(dir, id+".yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		logPath := filepath.Join(dir, id+".log")
		logFile, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { logFile.Close() })
		cmd := authgate("serve", "--config", path)
		cmd.Env = append(cmd.Env, "RENDER_INSTANCE_ID="+id)
		cmd.Stdout = logFile
		cmd.Stderr = stderrs[id]
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd, logPath, port
	}
	a, aLog, aPort := serve("srv-test-a")
	_, bLog, bPort := serve("srv-test-b")
	for _, port := range []int{aPort, bPort} {
		url := fmt.Sprintf("ws://127.0.0.1:%d/ws?token=21a2151a-cd37-41d5-a1c7-124bb05e7a6a", port)
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, resp, err := websocket.DefaultDialer.Dial(url, nil)
			if err == nil {
				resp.Body.Close()
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("dial %s: %v", url, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	a.Process.Signal(syscall.SIGTERM)
	if err := a.Wait(); err != nil {
		t.Fatalf("srv-test-a exit: %v\nstderr:\n%s", err, stderrs["srv-test-a"])
	}

	// The log of the one still running is read as it is being written.
	out, errOut, code := runAuthgate(t, "report", "--format", "json", "--quiet-for", "1h", bLog, aLog)
	if code != 1 { // not_safe: a legacy UUID a moment ago
		t.Fatalf("report: exit %d, want 1\nstderr %s\n%s", code, errOut, out)
	}
	var r struct {
		Coverage struct {
			Instances []struct {
				Name          string
				Lines         int64
				Starts, Stops int64
				Stopped       bool
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	type inst struct {
		name          string
		starts, stops int64
		stopped       bool
	}
	var got []inst
	for _, in := range r.Coverage.Instances {
		if in.Lines < 3 { // config, start, auth at least
			t.Errorf("instance %s: %d lines, want at least 3", in.Name, in.Lines)
		}
		got = append(got, inst{in.Name, in.Starts, in.Stops, in.Stopped})
	}
	want := []inst{{"srv-test-a", 1, 1, true}, {"srv-test-b", 1, 0, false}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("coverage instances: got %v, want %v", got, want)
	}
}
