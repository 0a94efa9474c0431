package report

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

var renderJSONSize = flag.Int64("render-json-size", 24<<20,
	"bytes of `render logs -o json` TestRenderJSONMemory streams (go test -run TestRenderJSONMemory -v -args -render-json-size 209715200)")

// cliJSONReader generates a `render logs -o json` stream of about size
// bytes on the fly, cycling through lines: the test holds no more of it
// than one object.
type cliJSONReader struct {
	lines   []string
	size, n int64
	i       int
	buf     []byte
	peak    uint64 // the largest heap seen, sampled every 1 MiB
	next    int64
}

func (r *cliJSONReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.n >= r.size {
			return 0, io.EOF
		}
		l := r.lines[r.i%len(r.lines)]
		inst := ""
		if m := instanceField.FindStringSubmatch(l); m != nil {
			inst, l = m[1], strings.Replace(l, m[0], "", 1)
		}
		rec := testRecord{id: fmt.Sprintf("log-%010d", r.i), line: l, instance: inst, at: fmtUntil.Add(-time.Duration(r.i) * time.Millisecond)}
		r.buf, _ = json.MarshalIndent(rec.log(), "", "  ")
		r.i++
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	r.n += int64(n)
	if r.n >= r.next {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		r.peak = max(r.peak, ms.HeapAlloc)
		r.next = r.n + 1<<20
	}
	return n, nil
}

// streamPeak reads size bytes of -o json and returns the peak heap and
// the lines read.
func streamPeak(t *testing.T, lines []string, size int64) (uint64, int64, time.Duration) {
	runtime.GC()
	r := &cliJSONReader{lines: lines, size: size}
	a := NewAggregator(Query{To: fmtUntil})
	start := time.Now()
	if err := a.ReadFrom("big.json", r); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	rep := a.Report()
	if rep.Lines.ByFormat.RenderCLIJSON != int64(r.i) || rep.Lines.Events == 0 || len(rep.Inputs[0].Warnings) != 0 {
		t.Fatalf("%d objects written, lines %+v, warnings %q", r.i, rep.Lines, rep.Inputs[0].Warnings)
	}
	return r.peak, rep.Lines.Read, took
}

// The report's memory over a `render logs -o json` stream does not grow
// with the stream: a stream six times longer peaks within a few MiB of
// the short one.
func TestRenderJSONMemory(t *testing.T) {
	_, lines := genLines(t, 2<<20)
	small := *renderJSONSize / 6
	peakSmall, _, _ := streamPeak(t, lines, small)
	peakBig, n, took := streamPeak(t, lines, *renderJSONSize)
	t.Logf("-o json: %d MiB: peak heap %.1f MiB; %d MiB (%d records in %s, %.0f MB/s): peak heap %.1f MiB",
		small>>20, float64(peakSmall)/(1<<20), *renderJSONSize>>20, n, took.Round(time.Millisecond),
		float64(*renderJSONSize)/1e6/took.Seconds(), float64(peakBig)/(1<<20))
	if status, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(l, "VmHWM:") {
				t.Logf("process peak RSS (test data included): %s", strings.TrimSpace(strings.TrimPrefix(l, "VmHWM:")))
			}
		}
	}
	if peakBig > peakSmall+8<<20 {
		t.Errorf("peak heap %.1f MiB over %d MiB, %.1f MiB over %d MiB: memory grows with the stream",
			float64(peakBig)/(1<<20), *renderJSONSize>>20, float64(peakSmall)/(1<<20), small>>20)
	}
}
