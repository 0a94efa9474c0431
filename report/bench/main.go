// Command bench measures `authgate report` against jq on a large,
// realistic generated log (three instances' lines merged), side by side in
// one run:
//
//	go run ./report/bench                 # ~1 GiB log in a temp dir
//	go run ./report/bench -size 200MB -runs 3
//
// Both tools run pinned to one core (taskset, when installed) and the
// report with GOMAXPROCS=1; the log is read once first so both read from
// the page cache. jq does the least it can for the same answer, the count
// of legacy events:
//
//	jq -cR 'fromjson? | select(.event=="auth" and .class=="uuid")' | wc -l
//
// (-R with fromjson? because plain `jq -c` stops at the first line that is
// not JSON; jq still cannot see events behind a collector's prefix, which
// the report counts.) The report does all its work: every table and the
// verdict, rendered as JSON.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"authgate/report"
	"authgate/report/internal/loggen"
)

// childEnv marks the re-executed process that runs the report itself.
const childEnv = "AUTHGATE_REPORT_BENCH_CHILD"

// until is the report's "now" for the generated log: a day after its end.
var until = time.Date(2025, 8, 3, 0, 0, 0, 0, time.UTC)

func main() {
	if os.Getenv(childEnv) != "" {
		os.Exit(report.Command(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	size := flag.String("size", "1GB", "approximate size of the generated log (e.g. 200MB, 1GB)")
	dir := flag.String("dir", "", "directory for the log (default: a new temp dir, removed afterwards)")
	runs := flag.Int("runs", 3, "runs of each tool; the median is reported")
	cpu := flag.String("cpu", "1", "core to pin both tools to with taskset")
	flag.Parse()
	n, err := parseSize(*size)
	if err != nil {
		return err
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "authgate-report-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	path := filepath.Join(*dir, "authgate.log")
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	start := time.Now()
	// Three instances behind one service, merged the way Render's log
	// stream merges them: every line carries its instance (issue 14), and
	// the report tracks each instance's coverage.
	st, err := loggen.Write(f, loggen.Config{Size: n, Seed: 1, Instances: []loggen.Instance{
		{Name: "srv-d2f7k3-7x9q2", Start: true}, {Name: "srv-d2f7k3-m4p8w", Start: true}, {Name: "srv-d2f7k3-z1c6v", Start: true},
	}})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing log: %w", err)
	}
	fmt.Printf("log: %s, %.0f MB, %d lines (%d auth, %d uuid, %d uuid on unprefixed lines), written in %s\n",
		path, mb(st.Bytes), st.Lines, st.Auth, st.UUID, st.UUIDPlain, time.Since(start).Round(time.Millisecond))
	if err := warm(path); err != nil {
		return err
	}

	var pin []string
	if p, err := exec.LookPath("taskset"); err == nil {
		pin = []string{p, "-c", *cpu}
		fmt.Printf("pinned to core %s with taskset; report with GOMAXPROCS=1\n", *cpu)
	} else {
		fmt.Println("taskset not found: not pinned; report with GOMAXPROCS=1")
	}

	self, err := os.Executable()
	if err != nil {
		return err
	}
	reportCmd := func() *exec.Cmd {
		args := append(slices.Clone(pin), self, "--format", "json", "--until", until.Format(time.RFC3339), path)
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append(os.Environ(), childEnv+"=1", "GOMAXPROCS=1")
		return cmd
	}
	var count string
	reportTimes, err := timeRuns(*runs, func() (time.Duration, time.Duration, error) {
		cmd := reportCmd()
		t0 := time.Now()
		out, err := cmd.Output()
		wall := time.Since(t0)
		var ee *exec.ExitError
		if err != nil && !(errors.As(err, &ee) && ee.ExitCode() < report.ExitError) {
			return 0, 0, fmt.Errorf("report: %w", err)
		}
		var r report.Report
		if err := json.Unmarshal(out, &r); err != nil {
			return 0, 0, fmt.Errorf("report output: %w", err)
		}
		count = fmt.Sprintf("%d legacy requests, %d users, verdict %s", r.Legacy.Requests, r.Legacy.Users, r.Verdict.Status)
		return wall, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
	})
	if err != nil {
		return err
	}
	fmt.Printf("authgate report  %s  (%s)\n", reportTimes.summary(st.Bytes), count)

	jq, err := exec.LookPath("jq")
	if err != nil {
		fmt.Println("jq               not installed (apt-get install -y jq); skipped")
		return nil
	}
	filter := `fromjson? | select(.event=="auth" and .class=="uuid")`
	var jqCount string
	jqTimes, err := timeRuns(*runs, func() (time.Duration, time.Duration, error) {
		args := append(slices.Clone(pin), jq, "-cR", filter, path)
		cmd := exec.Command(args[0], args[1:]...)
		out, err := cmd.StdoutPipe()
		if err != nil {
			return 0, 0, err
		}
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			return 0, 0, err
		}
		lines, err := countLines(out) // what `| wc -l` does
		if werr := cmd.Wait(); err == nil {
			err = werr
		}
		wall := time.Since(t0)
		if err != nil {
			return 0, 0, fmt.Errorf("jq: %w", err)
		}
		jqCount = fmt.Sprintf("%d uuid events", lines)
		return wall, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
	})
	if err != nil {
		return err
	}
	fmt.Printf("jq               %s  (%s)\n", jqTimes.summary(st.Bytes), jqCount)
	fmt.Printf("speedup          %.1fx jq (median wall time)\n",
		float64(jqTimes.median())/float64(reportTimes.median()))
	return nil
}

type runTimes struct{ wall, cpu []time.Duration }

func timeRuns(n int, f func() (wall, cpu time.Duration, err error)) (runTimes, error) {
	var rt runTimes
	for range max(n, 1) {
		w, c, err := f()
		if err != nil {
			return rt, err
		}
		rt.wall = append(rt.wall, w)
		rt.cpu = append(rt.cpu, c)
	}
	return rt, nil
}

func medianOf(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func (rt runTimes) median() time.Duration { return medianOf(rt.wall) }

func (rt runTimes) summary(bytes int64) string {
	var runs []string
	for _, w := range rt.wall {
		runs = append(runs, fmt.Sprintf("%.0f", mb(bytes)/w.Seconds()))
	}
	w, c := medianOf(rt.wall), medianOf(rt.cpu)
	return fmt.Sprintf("%7.1f MB/s wall, %7.1f MB/s per CPU second (median of %d: %s MB/s; %s)",
		mb(bytes)/w.Seconds(), mb(bytes)/c.Seconds(), len(rt.wall), strings.Join(runs, ", "), w.Round(time.Millisecond))
}

func mb(n int64) float64 { return float64(n) / 1e6 }

func countLines(r io.Reader) (int64, error) {
	buf := make([]byte, 1<<20)
	var n int64
	for {
		k, err := r.Read(buf)
		for _, c := range buf[:k] {
			if c == '\n' {
				n++
			}
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// warm reads the file once so every run reads from the page cache.
func warm(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	return err
}

func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(num, 64)
			if err != nil || v <= 0 {
				break
			}
			return int64(v * float64(u.mult)), nil
		}
	}
	return 0, fmt.Errorf("-size %q: want a size such as 200MB or 1GB", s)
}
