package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// results holds every run's figures.
type results struct {
	echo      map[string]map[string][]echoResult // test -> peer -> runs
	idle      map[string][]idleResult            // peer -> runs
	decide    []decideResult
	report    *reportResult
	reportOut string
}

func (r *results) init() {
	r.echo = map[string]map[string][]echoResult{}
	r.idle = map[string][]idleResult{}
}

func (r *results) add(test, peer string, e echoResult) {
	if r.echo[test] == nil {
		r.echo[test] = map[string][]echoResult{}
	}
	r.echo[test][peer] = append(r.echo[test][peer], e)
}

func rotate(s []string, n int) []string {
	if len(s) == 0 {
		return nil
	}
	n %= len(s)
	return append(slices.Clone(s[n:]), s[:n]...)
}

var loadTests = []struct {
	name  string
	size  int // 0: upgrade
	label string
}{
	{"upgrade", 0, "upgrade"},
	{"echo64", 64, "echo 64 B"},
	{"echo64k", 64 << 10, "echo 64 KiB"},
}

// runProxyTests runs the upgrade and echo tests against long-lived peers
// and the idle test against fresh ones, interleaving peers (their order
// rotates every run).
func runProxyTests(ctx context.Context, e *env, cfg config, tk *tokens, res *results) error {
	progress := func(format string, a ...any) { fmt.Fprintf(os.Stderr, format+"\n", a...) }
	start := func(name string) (*peer, error) {
		switch name {
		case "nginx":
			return e.startNginx()
		case "authgate":
			return e.startAuthgate()
		case "baseline":
			return e.runAuthgate("baseline", cfg.baseline, false)
		}
		return &peer{name: "direct", base: "ws://" + e.backend, stop: func() {}}, nil
	}
	if cfg.only["upgrade"] || cfg.only["echo64"] || cfg.only["echo64k"] {
		peers := map[string]*peer{}
		defer func() {
			for _, p := range peers {
				p.stop()
			}
		}()
		for _, name := range cfg.peers {
			p, err := start(name)
			if err != nil {
				return err
			}
			peers[name] = p
		}
		for r := range cfg.runs {
			for _, t := range loadTests {
				if !cfg.only[t.name] {
					continue
				}
				for _, name := range rotate(cfg.peers, r) {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					p := peers[name]
					hooks := p.hooks(func() string {
						return filepath.Join(cfg.profile, fmt.Sprintf("%s-run%d.pprof", t.name, r+1))
					})
					var er echoResult
					var err error
					if t.size == 0 {
						er, err = upgradeRun(ctx, p.base, tk, cfg.upConns, cfg.dur, meter{p.pid, e.loadPIDs}, hooks)
					} else {
						conns := cfg.smallConns
						if t.size > 4096 {
							conns = cfg.largeConns
						}
						er, err = echoRun(ctx, p.base, tk, conns, t.size, cfg.warm, cfg.dur, meter{p.pid, e.loadPIDs}, hooks)
					}
					if err != nil {
						return fmt.Errorf("%s via %s (run %d): %w", t.name, name, r+1, err)
					}
					progress("run %d  %-8s %-9s %9.0f ops/s  p50 %8s  p99 %8s  cpu %6s  errors %d",
						r+1, t.name, name, float64(er.msgs)/er.elapsed.Seconds(), er.p50.Round(time.Microsecond), er.p99.Round(time.Microsecond), er.cpu, er.errs)
					res.add(t.name, name, er)
					time.Sleep(300 * time.Millisecond)
				}
			}
		}
	}
	if cfg.only["idle"] {
		var proxies []string
		for _, p := range cfg.peers {
			if p != "direct" {
				proxies = append(proxies, p)
			}
		}
		for r := range cfg.runs {
			for _, name := range rotate(proxies, r) {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				p, err := start(name)
				if err != nil {
					return err
				}
				// Warm up: a few connection lifetimes and echoes, so the
				// "before" figure is a running proxy's, not a cold one's.
				_, err = echoRun(ctx, p.base, tk, 32, 64, 200*time.Millisecond, 300*time.Millisecond, meter{}, noHooks())
				time.Sleep(500 * time.Millisecond)
				rest := time.Duration(0)
				if name == "authgate" || name == "baseline" {
					rest = cfg.idleRest
				}
				var ir idleResult
				if err == nil {
					ir, err = idleRun(ctx, p.base, tk, cfg.idleConns, cfg.idleSettle, rest, p.pid, func() {
						if p.ctl != nil { // -profile: what the idle connections hold
							fmt.Fprintf(p.ctl, "heap %s\n", filepath.Join(cfg.profile, fmt.Sprintf("heap-idle-run%d.pprof", r+1)))
							time.Sleep(2 * time.Second)
						}
					})
				}
				p.stop()
				if err != nil {
					return fmt.Errorf("idle via %s (run %d): %w", name, r+1, err)
				}
				progress("run %d  idle     %-9s before %d KiB, +%s %d KiB, rested %d KiB (%d conns)",
					r+1, name, ir.before, cfg.idleSettle, ir.settled, ir.rested, ir.conns)
				res.idle[name] = append(res.idle[name], ir)
			}
		}
	}
	return nil
}

// allPeers in table order; "baseline" only runs with -baseline.
var allPeers = []string{"direct", "nginx", "authgate", "baseline"}

// row is one line of the table: a metric's median per peer.
type row struct {
	test, metric string
	v            map[string]float64 // peer -> median; missing = n/a
	bar          string
}

func (r *results) rows(cfg config) []row {
	var rows []row
	med := func(test, peer string, f func(echoResult) float64) (float64, bool) {
		runs := r.echo[test][peer]
		if len(runs) == 0 {
			return 0, false
		}
		v := make([]float64, len(runs))
		for i, e := range runs {
			v[i] = f(e)
		}
		return median(v), true
	}
	metric := func(test, label, name string, proxiesOnly bool, f func(echoResult) float64) row {
		rw := row{test: label, metric: name, v: map[string]float64{}}
		for _, p := range allPeers {
			if proxiesOnly && p == "direct" {
				continue
			}
			if m, ok := med(test, p, f); ok && !math.IsNaN(m) {
				rw.v[p] = m
			}
		}
		return rw
	}
	rate := func(e echoResult) float64 { return float64(e.msgs) / e.elapsed.Seconds() }
	us := func(d time.Duration) float64 { return float64(d) / 1e3 }
	cpuPer := func(e echoResult) float64 {
		if e.msgs == 0 {
			return math.NaN()
		}
		return us(e.cpu) / float64(e.msgs)
	}
	kernel := func(e echoResult) float64 {
		if e.cpu == 0 {
			return math.NaN()
		}
		return 100 * float64(e.sys) / float64(e.cpu)
	}
	// loadPer is NaN when the load side was not measured, which drops it
	// from the row.
	loadPer := func(e echoResult) float64 {
		if e.msgs == 0 || e.load == 0 {
			return math.NaN()
		}
		return us(e.load) / float64(e.msgs)
	}
	cpuRows := func(test, per string) []row {
		rs := []row{metric(test, "", "CPU/"+per+" us", true, cpuPer), metric(test, "", "  kernel %", true, kernel)}
		if l := metric(test, "", "load CPU/"+per+" us", false, loadPer); len(l.v) > 0 {
			rs = append(rs, l)
		}
		return rs
	}
	for _, t := range loadTests {
		if r.echo[t.name] == nil {
			continue
		}
		if t.size == 0 {
			label := fmt.Sprintf("upgrade x%d", cfg.upConns)
			a := metric(t.name, label, "upgrades/s", false, rate)
			a.bar = barRatio(a, "nginx", ">=", 0.95)
			rows = append(rows, a)
			rows = append(rows, cpuRows(t.name, "upgrade")...)
			rows = append(rows,
				metric(t.name, "", "p50 ms", false, func(e echoResult) float64 { return us(e.p50) / 1e3 }),
				metric(t.name, "", "p99 ms", false, func(e echoResult) float64 { return us(e.p99) / 1e3 }),
				metric(t.name, "", "errors", false, func(e echoResult) float64 { return float64(e.errs) }),
			)
			continue
		}
		conns := cfg.smallConns
		if t.size > 4096 {
			conns = cfg.largeConns
		}
		label := fmt.Sprintf("%s x%d", t.label, conns)
		msgs := metric(t.name, label, "msgs/s", false, rate)
		mbs := metric(t.name, "", "MB/s", false, func(e echoResult) float64 { return rate(e) * float64(t.size) / 1e6 })
		cpus := cpuRows(t.name, "msg")
		cpu := &cpus[0]
		if t.size == 64 {
			msgs.bar = barRatio(msgs, "nginx", ">=", 1.0)
			cpu.bar = barRatio(*cpu, "nginx", "<=", 1.0)
		} else {
			msgs.bar = barRatio(msgs, "nginx", ">=", 2.0) + "; " + barRatio(msgs, "direct", ">=", 0.85)
		}
		rows = append(rows, msgs, mbs,
			metric(t.name, "", "p50 us", false, func(e echoResult) float64 { return us(e.p50) }),
			metric(t.name, "", "p99 us", false, func(e echoResult) float64 { return us(e.p99) }))
		rows = append(rows, cpus...)
		rows = append(rows, metric(t.name, "", "errors", false, func(e echoResult) float64 { return float64(e.errs) }))
	}
	if len(r.idle) > 0 {
		n := 0
		settled := row{test: "", metric: fmt.Sprintf("RSS/conn KiB +%s", cfg.idleSettle), v: map[string]float64{}}
		final := row{test: "", metric: "RSS/conn KiB", v: map[string]float64{}}
		for p, runs := range r.idle {
			var s, f []float64
			for _, ir := range runs {
				n = ir.conns
				s = append(s, float64(ir.settled-ir.before)/float64(ir.conns))
				end := ir.settled
				if ir.rested != 0 {
					end = ir.rested
				}
				f = append(f, float64(end-ir.before)/float64(ir.conns))
			}
			settled.v[p], final.v[p] = median(s), median(f)
		}
		final.test = fmt.Sprintf("idle x%d", n)
		if cfg.idleRest > cfg.idleSettle {
			final.metric = fmt.Sprintf("RSS/conn KiB (ag +%s)", cfg.idleRest)
		}
		if v, ok := final.v["authgate"]; ok {
			final.bar = fmt.Sprintf("<=12 KiB: %s", yes(v <= 12))
		}
		rows = append(rows, final, settled)
	}
	for i, d := range r.decide {
		label := ""
		if i == 0 {
			label = "BenchmarkDecide"
		}
		rw := row{test: label, metric: fmt.Sprintf("%s ns (%.0f B, %.0f allocs)", d.name, d.bytes, d.allocs), v: map[string]float64{"authgate": d.ns}}
		if d.name == "jwt-uncached" {
			rw.bar = fmt.Sprintf("<5 us: %s", yes(d.ns < 5000))
		}
		rows = append(rows, rw)
	}
	if rep := r.report; rep != nil {
		rw := row{test: "report", metric: "MB/s (1 core)", v: map[string]float64{"authgate": rep.mbps}}
		rw.bar = fmt.Sprintf(">=200 MB/s: %s", yes(rep.mbps >= 200))
		rows = append(rows, rw)
		if rep.jq {
			rows = append(rows, row{metric: "jq MB/s", v: map[string]float64{"authgate": rep.jqMBps}},
				row{metric: "x jq", v: map[string]float64{"authgate": rep.speedup}, bar: fmt.Sprintf(">=10x jq: %s", yes(rep.speedup >= 10))})
		} else {
			rows = append(rows, row{metric: "x jq", v: map[string]float64{}, bar: "jq not installed"})
		}
	}
	return rows
}

func yes(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

// barRatio renders "authgate OP k x peer: met" for a row.
func barRatio(rw row, peer, op string, k float64) string {
	a, ok1 := rw.v["authgate"]
	b, ok2 := rw.v[peer]
	if !ok1 || !ok2 || b == 0 {
		return fmt.Sprintf("%s%.2gx %s: n/a", op, k, peer)
	}
	ok := a >= k*b
	if op == "<=" {
		ok = a <= k*b
	}
	return fmt.Sprintf("%s%.2gx %s: %s", op, k, peer, yes(ok))
}

func num(v float64, ok bool) string {
	switch {
	case !ok || math.IsNaN(v):
		return "-"
	case v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 1000:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func ratio(rw row, peer string) string {
	a, ok1 := rw.v["authgate"]
	b, ok2 := rw.v[peer]
	if !ok1 || !ok2 || b == 0 || math.IsNaN(a) || math.IsNaN(b) || strings.HasPrefix(rw.metric, "errors") || strings.Contains(rw.metric, "kernel %") {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

func (r *results) print(w io.Writer, cfg config) {
	fmt.Fprintf(w, "\nMedians of %d run(s). msgs/s and MB/s count round trips (payload one way); latency is one\n", cfg.runs)
	fmt.Fprintf(w, "round trip; CPU is the proxy process's utime+stime (/proc/PID/stat) over the measured window\n")
	fmt.Fprintf(w, "divided by operations, kernel %% its stime share; load CPU is the same for the load generator\n")
	fmt.Fprintf(w, "and the echo backend together (core 0), which bounds throughput when core 0 is saturated;\n")
	fmt.Fprintf(w, "ratio columns are authgate/nginx and authgate/direct")
	base := cfg.baseline != ""
	if base {
		fmt.Fprintf(w, ",\nand authgate/baseline (baseline: %s)", cfg.baseline)
	}
	fmt.Fprintf(w, ".\n\n")
	head := []string{"test", "metric", "direct", "nginx", "authgate"}
	if base {
		head = append(head, "baseline")
	}
	head = append(head, "ag/nginx", "ag/direct")
	if base {
		head = append(head, "ag/base")
	}
	cells := [][]string{append(head, "bar")}
	for _, rw := range r.rows(cfg) {
		c := []string{rw.test, rw.metric}
		for _, p := range allPeers {
			if p != "baseline" || base {
				v, ok := rw.v[p]
				c = append(c, num(v, ok))
			}
		}
		c = append(c, ratio(rw, "nginx"), ratio(rw, "direct"))
		if base {
			c = append(c, ratio(rw, "baseline"))
		}
		cells = append(cells, append(c, rw.bar))
	}
	width := make([]int, len(cells[0]))
	for _, c := range cells {
		for i, s := range c {
			width[i] = max(width[i], len(s))
		}
	}
	for _, c := range cells {
		var b strings.Builder
		for i, s := range c {
			switch {
			case i < 2:
				fmt.Fprintf(&b, "%-*s  ", width[i], s)
			case i < len(c)-1:
				fmt.Fprintf(&b, "%*s  ", width[i], s)
			default:
				b.WriteString(s)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}

	fmt.Fprintf(w, "\nPer-run figures (in run order):\n")
	for _, t := range loadTests {
		for _, p := range allPeers {
			runs := r.echo[t.name][p]
			if len(runs) == 0 {
				continue
			}
			var rates, cpus []string
			for _, e := range runs {
				rates = append(rates, fmt.Sprintf("%.0f", float64(e.msgs)/e.elapsed.Seconds()))
				if p != "direct" && e.msgs > 0 {
					cpus = append(cpus, fmt.Sprintf("%.2f", float64(e.cpu)/1e3/float64(e.msgs)))
				}
			}
			line := fmt.Sprintf("  %-8s %-9s ops/s %s", t.name, p, strings.Join(rates, ", "))
			if len(cpus) > 0 {
				line += fmt.Sprintf("; CPU us/op %s", strings.Join(cpus, ", "))
			}
			fmt.Fprintln(w, line)
		}
	}
	for _, p := range allPeers[1:] {
		for i, ir := range r.idle[p] {
			fmt.Fprintf(w, "  idle     %-9s run %d: VmRSS %d KiB before, %d KiB %s after opening %d", p, i+1, ir.before, ir.settled, cfg.idleSettle, ir.conns)
			if ir.rested != 0 {
				fmt.Fprintf(w, ", %d KiB after %s", ir.rested, ir.restedWaited)
			}
			fmt.Fprintln(w)
		}
	}
	if r.reportOut != "" {
		fmt.Fprintf(w, "\ngo run ./report/bench -size %s -runs %d:\n", cfg.reportSize, cfg.runs)
		for line := range strings.Lines(r.reportOut) {
			fmt.Fprintf(w, "  %s", line)
		}
	}
}
