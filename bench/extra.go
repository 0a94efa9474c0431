package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// decideResult: one sub-benchmark of BenchmarkDecide, medians over -count.
type decideResult struct {
	name   string
	ns     float64
	bytes  float64
	allocs float64
}

var decideLine = regexp.MustCompile(`^BenchmarkDecide/(\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op(?:\s+([\d.]+) B/op\s+([\d.]+) allocs/op)?`)

// runDecide runs `go test -run=NONE -bench=Decide -benchmem ./policy`
// pinned to core 1 (GOMAXPROCS=1) and parses it.
func (e *env) runDecide(root string, count int, benchtime string) ([]decideResult, string, error) {
	args := []string{"go", "test", "-run=NONE", "-bench=Decide", "-benchmem", "-count=" + strconv.Itoa(count)}
	if benchtime != "" {
		args = append(args, "-benchtime="+benchtime)
	}
	args = append(args, "./policy")
	argv := e.pinned("1", args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, string(out), fmt.Errorf("%s: %w", strings.Join(args, " "), err)
	}
	samples := map[string][][3]float64{}
	var order []string
	for line := range strings.Lines(string(out)) {
		m := decideLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		ns, _ := strconv.ParseFloat(m[2], 64)
		b, _ := strconv.ParseFloat(m[3], 64)
		a, _ := strconv.ParseFloat(m[4], 64)
		if _, ok := samples[m[1]]; !ok {
			order = append(order, m[1])
		}
		samples[m[1]] = append(samples[m[1]], [3]float64{ns, b, a})
	}
	var res []decideResult
	for _, name := range order {
		s := samples[name]
		col := func(i int) float64 {
			v := make([]float64, len(s))
			for j := range s {
				v[j] = s[j][i]
			}
			return median(v)
		}
		res = append(res, decideResult{name: name, ns: col(0), bytes: col(1), allocs: col(2)})
	}
	if len(res) == 0 {
		return nil, string(out), fmt.Errorf("no BenchmarkDecide results in:\n%s", out)
	}
	return res, string(out), nil
}

// reportResult: `go run ./report/bench` figures.
type reportResult struct {
	mbps, jqMBps, speedup float64
	jq                    bool
}

var (
	reportLine  = regexp.MustCompile(`(?m)^authgate report\s+([\d.]+) MB/s wall`)
	jqLine      = regexp.MustCompile(`(?m)^jq\s+([\d.]+) MB/s wall`)
	speedupLine = regexp.MustCompile(`(?m)^speedup\s+([\d.]+)x jq`)
)

// runReport runs the report's own benchmark command (it pins itself to
// core 1 with taskset and uses GOMAXPROCS=1).
func (e *env) runReport(root, size string, runs int) (reportResult, string, error) {
	var r reportResult
	args := []string{"go", "run", "./report/bench", "-size", size, "-runs", strconv.Itoa(runs), "-dir", e.dir}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = root
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	os.Remove(e.dir + "/authgate.log")
	if err != nil {
		return r, out.String(), fmt.Errorf("%s: %w", strings.Join(args, " "), err)
	}
	s := out.String()
	m := reportLine.FindStringSubmatch(s)
	if m == nil {
		return r, s, fmt.Errorf("no report figure in:\n%s", s)
	}
	r.mbps, _ = strconv.ParseFloat(m[1], 64)
	if m := jqLine.FindStringSubmatch(s); m != nil {
		r.jq = true
		r.jqMBps, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := speedupLine.FindStringSubmatch(s); m != nil {
		r.speedup, _ = strconv.ParseFloat(m[1], 64)
	}
	return r, s, nil
}
