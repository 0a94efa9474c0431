package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"authgate/report/internal/loggen"
)

// covDay is the start of the generated logs of these tests; the quiet
// period is its last 7 days.
var covDay = time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC)

func at(h float64) time.Time { return covDay.Add(time.Duration(h * float64(time.Hour))) }

// covArgs are the report's flags for a generated log of 14 days: the
// window's end is the log's end, the quiet period its second week.
func covArgs(extra ...string) []string {
	return append([]string{"--format", "json", "--until", covDay.Add(14 * 24 * time.Hour).Format(time.RFC3339)}, extra...)
}

// genLog writes a 14-day log of these instances, a line every ~4 minutes
// in all, with no legacy use in its second week.
func genLog(t testing.TB, instances ...loggen.Instance) []byte {
	t.Helper()
	var b bytes.Buffer
	_, err := loggen.Write(&b, loggen.Config{Size: 3_000_000, Days: 14, Start: covDay, Seed: 7,
		LegacyShare: 10, Users: 200, Instances: instances})
	if err != nil {
		t.Fatal(err)
	}
	// The generator's legacy population shrinks but never ends; the tests
	// here are about coverage, so the second week has no legacy use.
	quiet := covDay.Add(7 * 24 * time.Hour)
	var out bytes.Buffer
	for line := range bytes.Lines(b.Bytes()) {
		if bytes.Contains(line, []byte(`"class":"uuid"`)) {
			_, rest, _ := bytes.Cut(line, []byte(`"time":"`))
			ts, _, _ := bytes.Cut(rest, []byte(`"`))
			if at, err := time.Parse(time.RFC3339, string(ts)); err != nil || !at.Before(quiet) {
				continue
			}
		}
		out.Write(line)
	}
	return out.Bytes()
}

func decode(t testing.TB, out string) Report {
	t.Helper()
	var r Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("decoding JSON: %v\n%.300s", err, out)
	}
	return r
}

// hole is an instance's gap as the tests name it: instance and hours from
// covDay.
type hole struct {
	inst     string
	from, to float64
}

func holesOf(r Report) []hole {
	var hs []hole
	for _, in := range r.Coverage.Instances {
		for _, g := range in.Gaps {
			hs = append(hs, hole{in.Name, g.From.Sub(covDay).Hours(), g.To.Sub(covDay).Hours()})
		}
	}
	return hs
}

// TestCoverage runs the verdict's coverage rules on generated logs with
// holes of every kind (issue 14, point 4).
func TestCoverage(t *testing.T) {
	const qs = 7 * 24 // the quiet period's start, in hours
	a := loggen.Instance{Name: "a", Start: true}
	tests := []struct {
		name       string
		instances  []loggen.Instance
		args       []string
		wantStatus string
		wantHoles  []hole // approximately: the log has a line every few minutes
		wantDown   int    // uncovered stretches
		wantReason []string
	}{
		{name: "one instance, no hole", instances: []loggen.Instance{a}, wantStatus: StatusSafe,
			wantReason: []string{"the logs of 1 instance cover the period without a silence over 6h0m0s"}},
		{name: "two instances, no hole", instances: []loggen.Instance{a, {Name: "b", Start: true}}, wantStatus: StatusSafe},
		{name: "lines without an instance field", instances: []loggen.Instance{{}}, wantStatus: StatusSafe},
		{
			name:       "a log drain dropped 8h of b",
			instances:  []loggen.Instance{a, {Name: "b", Holes: []loggen.Hole{{From: at(qs + 30), To: at(qs + 38)}}}},
			wantStatus: StatusInsufficientData,
			wantHoles:  []hole{{"b", qs + 30, qs + 38}},
			wantReason: []string{`instance "b" logged nothing from 2025-07-09T05:5`, "to 2025-07-09T14:", "(8h"},
		},
		{
			name:       "a hole before the quiet period does not count",
			instances:  []loggen.Instance{a, {Name: "b", Holes: []loggen.Hole{{From: at(24), To: at(48)}}}},
			wantStatus: StatusSafe,
		},
		{
			name:       "a hole across the period's start counts from it",
			instances:  []loggen.Instance{a, {Name: "b", Holes: []loggen.Hole{{From: at(qs - 10), To: at(qs + 8)}}}},
			wantStatus: StatusInsufficientData,
			wantHoles:  []hole{{"b", qs, qs + 8}},
		},
		{
			name:       "a silence of max-gap or less is no hole",
			instances:  []loggen.Instance{{Name: "a", Holes: []loggen.Hole{{From: at(qs + 30), To: at(qs + 35.9)}}}},
			wantStatus: StatusSafe,
		},
		{
			name:       "--max-gap 12h tolerates 8h",
			instances:  []loggen.Instance{a, {Name: "b", Holes: []loggen.Hole{{From: at(qs + 30), To: at(qs + 38)}}}},
			args:       []string{"--max-gap", "12h"},
			wantStatus: StatusSafe,
		},
		{
			name:       "stop and start again: explained",
			instances:  []loggen.Instance{a, {Name: "b", Holes: []loggen.Hole{{From: at(qs + 30), To: at(qs + 80), Stop: true, Start: true}}}},
			wantStatus: StatusSafe,
		},
		{
			name:       "crash: start again without a stop",
			instances:  []loggen.Instance{a, {Name: "b", Holes: []loggen.Hole{{From: at(qs + 30), To: at(qs + 40), Start: true}}}},
			wantStatus: StatusInsufficientData,
			wantHoles:  []hole{{"b", qs + 30, qs + 40}},
		},
		{
			name:       "scale-down: b stops for good",
			instances:  []loggen.Instance{a, {Name: "b", To: at(qs + 50), Stop: true}},
			wantStatus: StatusSafe,
		},
		{
			name:       "b stopped before the period",
			instances:  []loggen.Instance{a, {Name: "b", To: at(qs - 50), Stop: true}},
			wantStatus: StatusSafe,
		},
		{
			name:       "b falls silent before the end without a stop",
			instances:  []loggen.Instance{a, {Name: "b", To: at(2*qs - 10)}},
			wantStatus: StatusInsufficientData,
			wantHoles:  []hole{{"b", 2*qs - 10, 2 * qs}},
		},
		{
			name:       "b falls silent before the period without a stop",
			instances:  []loggen.Instance{a, {Name: "b", To: at(qs - 50)}},
			wantStatus: StatusInsufficientData,
			wantHoles:  []hole{{"b", qs, 2 * qs}},
		},
		{
			name:       "deploy: c starts mid-period, b stops",
			instances:  []loggen.Instance{a, {Name: "b", To: at(qs + 60), Stop: true}, {Name: "c", From: at(qs + 60), Start: true}},
			wantStatus: StatusSafe,
		},
		{
			name:       "c appears mid-period without a start: its earlier log is missing",
			instances:  []loggen.Instance{a, {Name: "c", From: at(qs + 60)}},
			wantStatus: StatusInsufficientData,
			wantHoles:  []hole{{"c", qs, qs + 60}},
		},
		{
			name: "service down: every instance stopped for a day",
			instances: []loggen.Instance{
				{Name: "a", To: at(qs + 24), Stop: true},
				{Name: "b", From: at(qs + 48), Start: true},
			},
			wantStatus: StatusInsufficientData,
			wantDown:   1,
			wantReason: []string{"no instance logged anything from 2025-07-09T0", "to 2025-07-10T00:00:00Z", "every instance had stopped or not yet started"},
		},
		{
			name:       "unnamed instance with a hole",
			instances:  []loggen.Instance{{Holes: []loggen.Hole{{From: at(qs + 30), To: at(qs + 38)}}}},
			wantStatus: StatusInsufficientData,
			wantHoles:  []hole{{"", qs + 30, qs + 38}},
			wantReason: []string{"instance (unnamed) logged nothing", "(unnamed) are lines without an instance field"},
		},
		{
			name:       "holes do not hide legacy use",
			instances:  []loggen.Instance{a, {Name: "b", Holes: []loggen.Hole{{From: at(qs + 30), To: at(qs + 38)}}}},
			args:       []string{"--quiet-for", "10d"},
			wantStatus: StatusNotSafe,
			wantHoles:  []hole{{"b", qs + 30, qs + 38}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := run(t, genLog(t, tt.instances...), covArgs(tt.args...)...)
			r := decode(t, out)
			if r.Verdict.Status != tt.wantStatus || code != r.Verdict.ExitCode {
				t.Errorf("verdict: got %s (exit %d, stderr %q), want %s; reason %q", r.Verdict.Status, code, errOut,
					tt.wantStatus, r.Verdict.Reason)
			}
			got := holesOf(r)
			if len(got) != len(tt.wantHoles) {
				t.Fatalf("holes: got %v, want %v", got, tt.wantHoles)
			}
			for i, h := range got {
				w := tt.wantHoles[i]
				// A hole runs from the last line before it to the first
				// after: within a few line intervals of the generator's.
				if h.inst != w.inst || h.from < w.from-0.3 || h.from > w.from || h.to < w.to || h.to > w.to+0.3 {
					t.Errorf("hole %d: got %v, want about %v", i, h, w)
				}
			}
			if len(r.Coverage.Uncovered) < tt.wantDown || (tt.wantDown == 0 && len(got) == 0 && len(r.Coverage.Uncovered) > 0) {
				t.Errorf("uncovered: got %v, want %d", r.Coverage.Uncovered, tt.wantDown)
			}
			for _, w := range tt.wantReason {
				if !strings.Contains(r.Verdict.Reason, w) {
					t.Errorf("reason: got %q, want it to contain %q", r.Verdict.Reason, w)
				}
			}
		})
	}
}

// TestCoverageFileOrder pins that coverage depends on the lines, not on
// their order: one file per instance given newest first, a merged log,
// and its lines shuffled all give the same report.
func TestCoverageFileOrder(t *testing.T) {
	const qs = 7 * 24
	instances := []loggen.Instance{
		{Name: "a", Start: true, Holes: []loggen.Hole{{From: at(qs + 10), To: at(qs + 20), Stop: true, Start: true}}},
		{Name: "b", Start: true, Holes: []loggen.Hole{{From: at(qs + 30), To: at(qs + 38)}}},
		{Name: "c", From: at(qs + 50), Start: true, To: at(qs + 100)},
	}
	merged := genLog(t, instances...)
	want, _, _ := run(t, merged, covArgs()...)
	wantCov, _ := json.Marshal(decode(t, want).Coverage)
	if r := decode(t, want); len(holesOf(r)) != 2 { // b's drop, c's silence to the end
		t.Fatalf("holes: got %v, want b's and c's", holesOf(r))
	}

	lines := bytes.SplitAfter(merged, []byte("\n"))
	byInstance := map[string][][]byte{}
	for _, l := range lines {
		name := ""
		if i := bytes.Index(l, []byte(`"instance":"`)); i >= 0 {
			name = string(l[i+12 : i+13])
		}
		byInstance[name] = append(byInstance[name], l)
	}
	reversed := func(ls [][]byte) []byte {
		ls = slices.Clone(ls)
		slices.Reverse(ls)
		return bytes.Join(ls, nil)
	}
	shuffled := slices.Clone(lines)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })

	dir := t.TempDir()
	write := func(name string, b []byte) string {
		path := dir + "/" + name
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	cases := map[string][]string{
		"one file per instance, newest first": {
			write("c.log", reversed(byInstance["c"])), write("b.log", reversed(byInstance["b"])),
			write("a.log", reversed(byInstance["a"])), write("other.log", bytes.Join(byInstance[""], nil))},
		"merged, reversed": {write("rev.log", reversed(lines))},
		"merged, shuffled": {write("shuffled.log", bytes.Join(shuffled, nil))},
	}
	for name, files := range cases {
		t.Run(name, func(t *testing.T) {
			out, _, _ := run(t, nil, append(covArgs(), files...)...)
			got, _ := json.Marshal(decode(t, out).Coverage)
			if !bytes.Equal(got, wantCov) {
				t.Errorf("coverage differs from the sorted log's:\ngot  %s\nwant %s", got, wantCov)
			}
		})
	}
}

// covLine is one line of a reference test: instance, minutes from
// covDay, and what the line says.
type covLine struct {
	inst string
	min  int64
	kind lineKind
}

func (l covLine) json() string {
	ev := map[lineKind]string{kindServe: "auth", kindConfig: "config", kindStart: "start", kindStop: "stop"}[l.kind]
	inst := ""
	if l.inst != "" {
		inst = `"instance":"` + l.inst + `",`
	}
	ts := covDay.Add(time.Duration(l.min) * time.Minute).Format(time.RFC3339)
	return `{"level":"info",` + inst + `"event":"` + ev + `","class":"jwt","action":"pass","time":"` + ts + `"}`
}

// referenceCoverage computes the holes of each instance and the
// uncovered stretches the slow way, sorting every line; times are minutes
// from covDay, the quiet period [qs, end), the max gap g.
func referenceCoverage(lines []covLine, qs, end, g int64) (holes map[string][][2]int64, down [][2]int64) {
	holes = map[string][][2]int64{}
	by := map[string][]covLine{}
	for _, l := range lines {
		if l.min < end {
			by[l.inst] = append(by[l.inst], l)
		}
	}
	type grp struct{ from, to int64 }
	var all []grp
	for name, ls := range by {
		slices.SortFunc(ls, func(x, y covLine) int { return int(x.min - y.min) })
		// state reports whether the lines say stopped (the latest
		// start/stop is a stop, nothing served after) and whether they
		// start before serving.
		state := func(ls []covLine) (stopped, started bool) {
			lastStart, lastStop, lastServe := int64(-1<<62), int64(-1<<62), int64(-1<<62)
			firstStart, firstServe := int64(1<<62), int64(1<<62)
			for _, l := range ls {
				switch l.kind {
				case kindStart:
					lastStart, firstStart = max(lastStart, l.min), min(firstStart, l.min)
				case kindStop:
					lastStop = max(lastStop, l.min)
				case kindServe:
					lastServe, firstServe = max(lastServe, l.min), min(firstServe, l.min)
				}
			}
			return lastStop > -1<<62 && lastStop > lastStart && lastStop >= lastServe, firstStart < 1<<62 && firstStart <= firstServe
		}
		var before, in []covLine
		for _, l := range ls {
			if l.min < qs {
				before = append(before, l)
			} else {
				in = append(in, l)
			}
		}
		// Spans of the period: runs with steps of at most g.
		var spans [][]covLine
		for i, l := range in {
			if i == 0 || l.min-in[i-1].min > g {
				spans = append(spans, nil)
			}
			spans[len(spans)-1] = append(spans[len(spans)-1], l)
		}
		var explained bool
		if len(before) > 0 {
			explained, _ = state(before)
		} else {
			_, explained = state(spans[0])
		}
		cursor := qs
		for _, sp := range spans {
			if sp[0].min-cursor > g && !explained {
				holes[name] = append(holes[name], [2]int64{cursor, sp[0].min})
			}
			cursor = sp[len(sp)-1].min
			explained, _ = state(sp)
			all = append(all, grp{sp[0].min, cursor})
		}
		if end-cursor > g && !explained {
			holes[name] = append(holes[name], [2]int64{cursor, end})
		}
	}
	slices.SortFunc(all, func(x, y grp) int { return int(x.from - y.from) })
	cursor := qs
	for _, s := range all {
		if s.from-cursor > g {
			down = append(down, [2]int64{cursor, s.from})
		}
		cursor = max(cursor, s.to)
	}
	if end-cursor > g {
		down = append(down, [2]int64{cursor, end})
	}
	return holes, down
}

// checkCoverage runs lines, in the order given, through the aggregator
// and compares its coverage with the reference.
func checkCoverage(t *testing.T, lines []covLine) {
	t.Helper()
	const qs, end, g = 24 * 60, 48 * 60, 60 // minutes: a 1-day quiet period after a day before, max gap 1h
	a := NewAggregator(Query{To: covDay.Add(end * time.Minute), QuietFor: (end - qs) * time.Minute, MaxGap: g * time.Minute})
	for _, l := range lines {
		a.Line([]byte(l.json()))
	}
	cov := a.Report().Coverage
	min := func(tm time.Time) int64 { return int64(tm.Sub(covDay) / time.Minute) }
	got := map[string][][2]int64{}
	for _, in := range cov.Instances {
		for _, gp := range in.Gaps {
			got[in.Name] = append(got[in.Name], [2]int64{min(gp.From), min(gp.To)})
		}
	}
	var gotDown [][2]int64
	for _, u := range cov.Uncovered {
		gotDown = append(gotDown, [2]int64{min(u.From), min(u.To)})
	}
	wantHoles, wantDown := referenceCoverage(lines, qs, end, g)
	if fmt.Sprint(got) != fmt.Sprint(wantHoles) || fmt.Sprint(gotDown) != fmt.Sprint(wantDown) {
		t.Fatalf("lines %v:\ngot holes %v, uncovered %v\nwant holes %v, uncovered %v (sorting every line)",
			lines, got, gotDown, wantHoles, wantDown)
	}
}

// covLines decodes fuzz bytes into lines: three bytes each, for the
// instance, the kind, and the time (in two-minute steps over two days).
func covLines(b []byte) []covLine {
	var ls []covLine
	for ; len(b) >= 3; b = b[3:] {
		ls = append(ls, covLine{inst: []string{"", "a", "b"}[b[0]%3], kind: lineKind(b[1] % 4),
			min: int64(b[2]) * 2 * 48 * 60 / 512})
	}
	return ls
}

// TestCoverageAgreesWithSorting compares streaming gap detection with
// sorting all lines, on random lines in random order.
func TestCoverageAgreesWithSorting(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		b := make([]byte, 3*rng.IntN(60))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		checkCoverage(t, covLines(b))
	}
}

// FuzzCoverage checks streaming gap detection against sorting every line,
// whatever the lines and their order.
func FuzzCoverage(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1, 2, 0, 1, 0, 128, 1, 3, 255})              // a: start before the period, a line in it, a stop at its end
	f.Add([]byte{0, 0, 200, 0, 0, 100, 0, 0, 150, 0, 0, 130}) // unnamed, out of order, closing its gaps
	f.Add([]byte{2, 2, 180, 2, 0, 181, 2, 3, 190, 2, 2, 230}) // b: new instance, stop, start
	f.Fuzz(func(t *testing.T, b []byte) {
		checkCoverage(t, covLines(b))
	})
}

// TestCoverageSpanLimits pins what happens past the bounds: the lines are
// counted as untracked and the verdict cannot be safe.
func TestCoverageSpanLimits(t *testing.T) {
	a := NewAggregator(Query{To: covDay.Add(30 * 24 * time.Hour), QuietFor: 30 * 24 * time.Hour, MaxGap: time.Second})
	// One line every 2 s: every line is its own span.
	for i := range maxSpansPerInstance + 10 {
		ts := covDay.Add(time.Duration(2*i) * time.Second).Format(time.RFC3339)
		a.Line([]byte(`{"event":"auth","instance":"a","class":"jwt","action":"pass","time":"` + ts + `"}`))
	}
	r := a.Report()
	if r.Coverage.UntrackedLines != 10 || !r.Coverage.Instances[0].Truncated {
		t.Errorf("got %d untracked lines, truncated %v; want 10, true", r.Coverage.UntrackedLines, r.Coverage.Instances[0].Truncated)
	}
	if r.Verdict.Status != StatusInsufficientData || !strings.Contains(r.Verdict.Reason, "10 lines could not be checked for coverage") {
		t.Errorf("verdict: got %s %q, want insufficient_data naming the untracked lines", r.Verdict.Status, r.Verdict.Reason)
	}
}

// TestCoverageSpanBudget pins the bound on spans of all instances: an
// instance whose first line finds the budget spent is untracked, and the
// report still renders.
func TestCoverageSpanBudget(t *testing.T) {
	a := NewAggregator(Query{To: covDay.Add(24 * time.Hour), QuietFor: 24 * time.Hour})
	a.cov.budget = 1
	for _, l := range []string{
		`{"event":"start","instance":"a","time":"2025-07-01T01:00:00Z"}`,
		`{"event":"auth","instance":"b","class":"jwt","action":"pass","time":"2025-07-01T02:00:00Z"}`,
	} {
		a.Line([]byte(l))
	}
	r := a.Report()
	if r.Coverage.UntrackedLines != 1 || len(r.Coverage.Instances) != 2 || !r.Coverage.Instances[1].Truncated ||
		r.Verdict.Status != StatusInsufficientData {
		t.Errorf("got %+v, verdict %s; want b truncated, 1 untracked line, insufficient_data", r.Coverage, r.Verdict.Status)
	}
	var b bytes.Buffer
	for _, w := range []func(io.Writer) error{r.WriteText, r.WriteJSON, r.WriteHTML, r.WriteCoverageCSV} {
		if err := w(&b); err != nil {
			t.Error(err)
		}
	}
}

// TestCoverageMemory pins the streaming promise with instances and holes:
// eight times the lines, from the same users and instances over the same
// days, take no more memory.
func TestCoverageMemory(t *testing.T) {
	heap := func(size int64) uint64 {
		pr, pw := io.Pipe()
		go func() {
			_, err := loggen.Write(pw, loggen.Config{Size: size, Days: 14, Start: covDay, Users: 100, Seed: 1,
				Instances: []loggen.Instance{
					{Name: "srv-a", Start: true},
					{Name: "srv-b", Start: true, Holes: []loggen.Hole{{From: at(200), To: at(210)}, {From: at(250), To: at(260), Stop: true, Start: true}}},
				}})
			pw.CloseWithError(err)
		}()
		a := NewAggregator(Query{To: covDay.Add(14 * 24 * time.Hour)})
		if err := a.ReadFrom("gen", pr); err != nil {
			t.Fatal(err)
		}
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		if r := a.Report(); len(holesOf(*r)) != 1 {
			t.Fatalf("holes: got %v, want srv-b's one", holesOf(*r))
		}
		runtime.KeepAlive(a)
		return ms.HeapAlloc
	}
	small, large := heap(4<<20), heap(32<<20)
	t.Logf("heap after 4 MiB of log: %d KiB, after 32 MiB: %d KiB", small>>10, large>>10)
	if large > small+512<<10 {
		t.Errorf("heap grew with the lines: %d KiB after 4 MiB of log, %d KiB after 32 MiB", small>>10, large>>10)
	}
}

func BenchmarkAggregateInstances(b *testing.B) {
	var log bytes.Buffer
	if _, err := loggen.Write(&log, loggen.Config{Size: 32 << 20, Seed: 1, Instances: []loggen.Instance{
		{Name: "srv-d2f7k3-7x9q2", Start: true}, {Name: "srv-d2f7k3-m4p8w", Start: true}, {Name: "srv-d2f7k3-z1c6v", Start: true},
	}}); err != nil {
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
