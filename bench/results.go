package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// results holds every run's figures.
type results struct {
	echo          map[string]map[string][]echoResult  // test -> peer -> runs
	idle          map[string][]idleResult             // peer -> runs
	storm         map[string]map[string][]stormResult // mode -> peer -> runs
	stormModes    []string                            // in run order
	stormUpstream string
	decide        []decideResult
	report        *reportResult
	reportOut     string
}

func (r *results) init() {
	r.echo = map[string]map[string][]echoResult{}
	r.idle = map[string][]idleResult{}
	r.storm = map[string]map[string][]stormResult{}
}

func (r *results) addStorm(mode, peer string, s stormResult) {
	if r.storm[mode] == nil {
		r.storm[mode] = map[string][]stormResult{}
		r.stormModes = append(r.stormModes, mode)
	}
	r.storm[mode][peer] = append(r.storm[mode][peer], s)
}

func (r *results) add(test, peer string, e echoResult) {
	if r.echo[test] == nil {
		r.echo[test] = map[string][]echoResult{}
	}
	r.echo[test][peer] = append(r.echo[test][peer], e)
}

// refPeers are the proxies a user would pick instead: "best peer" is the
// best of them in the run, per figure (SPEC "Performance").
var refPeers = []string{"nginx", "haproxy", "caddy"}

// row is one line of a table: a metric's median per peer.
type row struct {
	test, metric string
	v            map[string]float64 // peer -> median; missing = n/a
	better       int                // +1 higher is better, -1 lower, 0 neither (no best peer)
	bar          string
}

// best is the best reference peer's name and value in the row.
func (rw row) best() (string, float64, bool) {
	name, val, ok := "", 0.0, false
	for _, p := range refPeers {
		v, has := rw.v[p]
		if !has || math.IsNaN(v) || rw.better == 0 {
			continue
		}
		if !ok || float64(rw.better)*(v-val) > 0 {
			name, val, ok = p, v, true
		}
	}
	return name, val, ok
}

// bar renders "OPkx WHO: met (RATIO)" for authgate against a peer or, for
// "best", the best reference peer.
func (rw row) barAgainst(who, op string, k float64) string {
	a, ok1 := rw.v["authgate"]
	b, ok2 := rw.v[who]
	label := who
	if who == "best" {
		var name string
		name, b, ok2 = rw.best()
		label = "best (" + name + ")"
		if !ok2 {
			label = "best peer"
		}
	}
	if !ok1 || !ok2 || b == 0 || math.IsNaN(a) {
		return fmt.Sprintf("%s%gx %s: n/a", op, k, label)
	}
	ok := a >= k*b
	if op == "<=" {
		ok = a <= k*b
	}
	return fmt.Sprintf("%s%gx %s: %s (%.2fx)", op, k, label, yes(ok), a/b)
}

// barsOf is barAgainst for each authgate column of the row (the storm's
// GOMAXPROCS=1 and 2), each prefixed with its column when there are two.
func (rw row) barsOf(who, op string, k float64) string {
	if _, two := rw.v[stormP2]; !two {
		return rw.barAgainst(who, op, k)
	}
	one := rw.barAgainst(who, op, k)
	alt := row{v: map[string]float64{}, better: rw.better}
	for p, v := range rw.v {
		alt.v[p] = v
	}
	alt.v["authgate"] = rw.v[stormP2]
	return "authgate " + one + "; " + stormP2 + " " + alt.barAgainst(who, op, k)
}

// limitOf is "OP LIMIT: met" for each authgate column of a row whose bar
// is an absolute figure.
func (rw row) limitOf(op string, limit float64, unit string) string {
	var out []string
	for _, p := range []string{"authgate", stormP2} {
		v, ok := rw.v[p]
		if !ok || math.IsNaN(v) {
			continue
		}
		met := v <= limit
		if op == "==" {
			met = v == limit
		}
		out = append(out, fmt.Sprintf("%s %s%g%s: %s", p, op, limit, unit, yes(met)))
	}
	return strings.Join(out, "; ")
}

func joinBars(b ...string) string { return strings.Join(b, "; ") }

func yes(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func us(d time.Duration) float64 { return float64(d) / 1e3 }

func (r *results) rows(cfg config) []row {
	var rows []row
	metric := func(test, label, name string, better int, proxiesOnly bool, f func(echoResult) float64) row {
		rw := row{test: label, metric: name, v: map[string]float64{}, better: better}
		for p, runs := range r.echo[test] {
			if proxiesOnly && p == "direct" {
				continue
			}
			v := make([]float64, 0, len(runs))
			for _, e := range runs {
				if x := f(e); !math.IsNaN(x) {
					v = append(v, x)
				}
			}
			if len(v) > 0 {
				rw.v[p] = median(v)
			}
		}
		return rw
	}
	rate := func(e echoResult) float64 { return float64(e.msgs) / e.elapsed.Seconds() }
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
		rs := []row{metric(test, "", "CPU/"+per+" us", -1, true, cpuPer), metric(test, "", "  kernel %", 0, true, kernel)}
		if l := metric(test, "", "load CPU/"+per+" us", -1, false, loadPer); len(l.v) > 0 {
			rs = append(rs, l)
		}
		return rs
	}
	for _, t := range loadTests {
		if r.echo[t.name] == nil {
			continue
		}
		if t.size == 0 {
			label := fmt.Sprintf("%s x%d", t.label, cfg.upConns)
			a := metric(t.name, label, "upgrades/s", +1, false, rate)
			cpus := cpuRows(t.name, "upgrade")
			if t.name != "tls-nores" {
				a.bar = a.barAgainst("best", ">=", 0.95)
				cpus[0].bar = joinBars(cpus[0].barAgainst("best", "<=", 1.4), cpus[0].barAgainst("copier", "<=", 1.15))
			}
			rows = append(rows, a)
			rows = append(rows, cpus...)
			rows = append(rows,
				metric(t.name, "", "p50 ms", -1, false, func(e echoResult) float64 { return us(e.p50) / 1e3 }),
				metric(t.name, "", "p99 ms", -1, false, func(e echoResult) float64 { return us(e.p99) / 1e3 }))
			if t.upstream != "" {
				rows = append(rows, metric(t.name, "", "TLS resumed %", 0, true, func(e echoResult) float64 {
					if e.full+e.resumed == 0 {
						return math.NaN()
					}
					return 100 * float64(e.resumed) / float64(e.full+e.resumed)
				}))
			}
			if t.name == "tls-nores" && r.echo["tls"] != nil {
				// What resumption saves each peer: CPU per upgrade with
				// it over CPU per upgrade without it.
				with, without := metric("tls", "", "", -1, true, cpuPer), metric(t.name, "", "", -1, true, cpuPer)
				rw := row{metric: "CPU resumed/full", v: map[string]float64{}}
				for p, v := range with.v {
					if w, ok := without.v[p]; ok && w > 0 {
						rw.v[p] = v / w
					}
				}
				if v, ok := rw.v["authgate"]; ok {
					rw.bar = fmt.Sprintf("resumption shows (<=0.9x): %s (%.2fx)", yes(v <= 0.9), v)
				}
				rows = append(rows, rw)
			}
			rows = append(rows, metric(t.name, "", "errors", 0, false, func(e echoResult) float64 { return float64(e.errs) }))
			continue
		}
		conns := cfg.smallConns
		if t.size > 4096 {
			conns = cfg.largeConns
		}
		label := fmt.Sprintf("%s x%d", t.label, conns)
		msgs := metric(t.name, label, "msgs/s", +1, false, rate)
		mbs := metric(t.name, "", "MB/s", +1, false, func(e echoResult) float64 { return rate(e) * float64(t.size) / 1e6 })
		cpus := cpuRows(t.name, "msg")
		if t.size == 64 {
			msgs.bar = msgs.barAgainst("best", ">=", 1.0)
			cpus[0].bar = cpus[0].barAgainst("best", "<=", 1.1)
		} else {
			msgs.bar = joinBars(msgs.barAgainst("best", ">=", 1.05), msgs.barAgainst("copier", ">=", 0.95))
		}
		rows = append(rows, msgs, mbs,
			metric(t.name, "", "p50 us", -1, false, func(e echoResult) float64 { return us(e.p50) }),
			metric(t.name, "", "p99 us", -1, false, func(e echoResult) float64 { return us(e.p99) }))
		rows = append(rows, cpus...)
		rows = append(rows, metric(t.name, "", "errors", 0, false, func(e echoResult) float64 { return float64(e.errs) }))
	}
	if len(r.idle) > 0 {
		n := 0
		settled := row{metric: fmt.Sprintf("RSS/conn KiB +%s", cfg.idleSettle), v: map[string]float64{}, better: -1}
		final := row{metric: "RSS/conn KiB steady", v: map[string]float64{}, better: -1}
		for p, runs := range r.idle {
			var s, f []float64
			for _, ir := range runs {
				n = ir.conns
				s = append(s, float64(ir.settled-ir.before)/float64(ir.conns))
				if ir.rested != 0 {
					f = append(f, float64(ir.rested-ir.before)/float64(ir.conns))
				}
			}
			settled.v[p] = median(s)
			if len(f) > 0 {
				final.v[p] = median(f)
			}
		}
		settled.test = fmt.Sprintf("idle x%d", n)
		settled.bar = settled.barAgainst("haproxy", "<=", 1.5)
		rows = append(rows, settled)
		if len(final.v) > 0 {
			final.metric = fmt.Sprintf("RSS/conn KiB +%s", cfg.idleRest)
			final.bar = final.barAgainst("haproxy", "<=", 1.5)
			rows = append(rows, final)
		}
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

// stormRows is the reconnect storm's table for one loop mode. The bars
// are SPEC's: per rejected attempt and per good user, not a rate (on two
// cores the load side saturates first).
func (r *results) stormRows(cfg config, mode string) []row {
	runs := r.storm[mode]
	if len(runs) == 0 {
		return nil
	}
	metric := func(name string, better int, f func(stormResult) float64) row {
		rw := row{metric: name, v: map[string]float64{}, better: better}
		for p, runs := range runs {
			v := make([]float64, 0, len(runs))
			for _, s := range runs {
				if x := f(s); !math.IsNaN(x) {
					v = append(v, x)
				}
			}
			if len(v) > 0 {
				rw.v[p] = median(v)
			}
		}
		return rw
	}
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	rate := metric("rejections/s", +1, func(s stormResult) float64 { return float64(s.rejections) / s.elapsed.Seconds() })
	rate.test = fmt.Sprintf("storm %d+%d", cfg.storm.stale, cfg.storm.jwt)
	cpu := metric("CPU/rejection us", -1, stormResult.perRejection)
	cpu.bar = joinBars(cpu.barsOf("nginx", "<=", 1.2), cpu.barsOf("backend", "<=", 0.1))
	ratio := metric("JWT p99 storm/quiet", -1, func(s stormResult) float64 {
		if s.quiet.p99 == 0 {
			return math.NaN()
		}
		return float64(s.storm.p99) / float64(s.quiet.p99)
	})
	ratio.bar = ratio.limitOf("<=", 3, "x")
	rss := metric("RSS after/before", -1, func(s stormResult) float64 {
		if s.rssBefore == 0 || s.rssAfter == 0 {
			return math.NaN()
		}
		return float64(s.rssAfter) / float64(s.rssBefore)
	})
	rss.metric = fmt.Sprintf("RSS +%s/pre-storm", cfg.storm.settle)
	rss.bar = rss.limitOf("<=", 1.25, "x")
	errs := metric("stale errors", 0, func(s stormResult) float64 { return float64(s.errors) })
	errs.bar = errs.limitOf("==", 0, "")
	jwtErrs := metric("JWT errors", 0, func(s stormResult) float64 { return float64(s.jwtErrs) })
	jwtErrs.bar = jwtErrs.limitOf("==", 0, "")
	rows := []row{rate}
	if strings.HasPrefix(mode, "open") {
		rows = append(rows, metric("missed attempts", 0, func(s stormResult) float64 { return float64(s.missed) }))
	}
	return append(rows,
		cpu,
		metric("storm client CPU/rej us", -1, func(s stormResult) float64 {
			return us(s.clientCPU) / float64(s.rejections)
		}),
		errs,
		metric("core 0 busy % (load)", 0, func(s stormResult) float64 { return s.machine.busy[0] }),
		metric("core 1 busy % (peer)", 0, func(s stormResult) float64 { return s.machine.busy[1] }),
		metric("stolen % (hypervisor)", 0, func(s stormResult) float64 { return s.machine.steal }),
		metric("JWT p50 ms quiet", -1, func(s stormResult) float64 { return ms(s.quiet.p50) }),
		metric("JWT p99 ms quiet", -1, func(s stormResult) float64 { return ms(s.quiet.p99) }),
		metric("JWT p50 ms storm", -1, func(s stormResult) float64 { return ms(s.storm.p50) }),
		metric("JWT p99 ms storm", -1, func(s stormResult) float64 { return ms(s.storm.p99) }),
		ratio,
		jwtErrs,
		metric("RSS KiB pre-storm", -1, func(s stormResult) float64 { return float64(s.rssBefore) }),
		rss,
	)
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

// ratio is authgate's value over peer's ("best": the best reference
// peer's); "-" where it means nothing.
func ratio(rw row, peer string) string {
	a, ok1 := rw.v["authgate"]
	b, ok2 := rw.v[peer]
	if peer == "best" {
		_, b, ok2 = rw.best()
	}
	if !ok1 || !ok2 || b == 0 || math.IsNaN(a) || math.IsNaN(b) || rw.better == 0 && peer == "best" || strings.HasPrefix(rw.metric, "errors") || strings.Contains(rw.metric, "%") {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// table prints rows with a column per peer (in order), the best
// reference peer's name when best is set, ratio columns and the bar.
func table(w io.Writer, rows []row, peers []string, best bool, ratios []string) {
	head := append([]string{"test", "metric"}, peers...)
	if best {
		head = append(head, "best")
	}
	for _, p := range ratios {
		label := "ag/" + p
		if p == "baseline" {
			label = "ag/base"
		}
		head = append(head, label)
	}
	cells := [][]string{append(head, "bar")}
	for _, rw := range rows {
		c := []string{rw.test, rw.metric}
		for _, p := range peers {
			v, ok := rw.v[p]
			c = append(c, num(v, ok))
		}
		if best {
			name, _, ok := rw.best()
			if !ok {
				name = "-"
			}
			c = append(c, name)
		}
		for _, p := range ratios {
			c = append(c, ratio(rw, p))
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
}

func (r *results) print(w io.Writer, cfg config) {
	var cols, stormCols []string
	for _, d := range cfg.peers {
		if d.takes("storm") {
			stormCols = append(stormCols, d.name)
			if d.name == "authgate" {
				stormCols = append(stormCols, stormP2)
			}
		}
		if d.name != "backend" {
			cols = append(cols, d.name)
		}
	}
	// The storm's status quo first.
	slices.SortStableFunc(stormCols, func(a, b string) int { return boolInt(b == "backend") - boolInt(a == "backend") })
	fmt.Fprintf(w, "\nMedians of %d run(s). msgs/s and MB/s count round trips (payload one way); latency is one\n", cfg.runs)
	fmt.Fprintf(w, "round trip; CPU is the proxy's utime+stime (/proc/PID/stat, with its child processes) over the\n")
	fmt.Fprintf(w, "measured window divided by operations, kernel %% its stime share; load CPU is the same for the\n")
	fmt.Fprintf(w, "load generator and the echo backend together (core 0), which bounds throughput when core 0 is\n")
	fmt.Fprintf(w, "saturated. best is the best of %s in that figure; ag/best is authgate over it.\n", strings.Join(refPeers, ", "))
	fmt.Fprintf(w, "TLS: the upstream is the echo backend over TLS 1.3 (test CA, ECDSA P-256), with session tickets\n")
	fmt.Fprintf(w, "(\"upgrade, TLS\") and without any resumption (\"TLS, no resumption\"); TLS resumed %% is the share\n")
	fmt.Fprintf(w, "of the backend's handshakes that resumed; CPU resumed/full is each peer's CPU per upgrade with\n")
	fmt.Fprintf(w, "resumption over without. Idle: RSS growth per open idle WebSocket (process and children).\n")
	fmt.Fprintf(w, "Per-run figures give each window's noise as \"others %% C0/C1/S\": the share of core 0 and of\n")
	fmt.Fprintf(w, "core 1 that went to processes not in the test (other work on a shared machine, kernel threads),\n")
	fmt.Fprintf(w, "and the share of both that the hypervisor stole for other guests.\n")
	ratios := []string{"best"}
	if cfg.baseline != "" {
		ratios = append(ratios, "baseline")
		fmt.Fprintf(w, "ag/base: authgate over the -baseline binary %s.\n", cfg.baseline)
	}
	fmt.Fprintln(w)
	if rows := r.rows(cfg); len(rows) > 0 {
		table(w, rows, cols, true, ratios)
	}

	for _, mode := range r.stormModes {
		rows := r.stormRows(cfg, mode)
		fmt.Fprintf(w, "\nReconnect storm, %s: %d stale clients with a legacy UUID in ?token= (authgate and the\n", mode, cfg.storm.stale)
		if strings.HasPrefix(mode, "open") {
			fmt.Fprintf(w, "backend answer 101 then close 4003, nginx 403 from a map), each on a schedule of its own that\n")
			fmt.Fprintf(w, "offers %d attempts/s in all to every peer alike (missed: attempts more than one interval late),\n", cfg.storm.rate)
		} else {
			fmt.Fprintf(w, "backend answer 101 then close 4003, nginx 403 from a map), each reconnecting at once,\n")
		}
		fmt.Fprintf(w, "for %s, while %d JWT clients echo 64 B every %s (quiet: the %s before, without the storm).\n", cfg.storm.phase, cfg.storm.jwt, cfg.storm.every, cfg.storm.phase)
		fmt.Fprintf(w, "The proxies forward the JWT clients to %s;\n", r.stormUpstream)
		fmt.Fprintf(w, "backend is the FastAPI backend alone with the seed's UUID shim (core 1). %s is authgate\n", stormP2)
		fmt.Fprintf(w, "with GOMAXPROCS=2 on the same core (Go's choice on a 0.5-CPU Render instance). CPU/rejection is\n")
		fmt.Fprintf(w, "the peer's CPU over the storm less its quiet-window rate; storm client CPU is the stale clients'\n")
		fmt.Fprintf(w, "own process (nice 10, core 0); core busy %% counts every process on the machine (with core 0\n")
		fmt.Fprintf(w, "near 100%%, rejections/s is the load side's limit, not the peer's), stolen %% the time the\n")
		fmt.Fprintf(w, "hypervisor gave other guests. RSS is the peer's VmRSS at the end of the quiet window and %s\n", cfg.storm.settle)
		fmt.Fprintf(w, "after the storm, the JWT clients still echoing.\n\n")
		var sr []string
		for _, p := range []string{"backend", "nginx"} {
			if slices.Contains(stormCols, p) {
				sr = append(sr, p)
			}
		}
		table(w, rows, stormCols, false, sr)
	}

	fmt.Fprintf(w, "\nPer-run figures (in run order):\n")
	for _, t := range loadTests {
		for _, p := range cols {
			runs := r.echo[t.name][p]
			if len(runs) == 0 {
				continue
			}
			var rates, cpus, res, steal []string
			for _, e := range runs {
				rates = append(rates, fmt.Sprintf("%.0f", float64(e.msgs)/e.elapsed.Seconds()))
				o0, o1 := fmt.Sprintf("%.0f", e.machine.others(0, e.load, e.elapsed)), e.machine.others(1, e.cpu, e.elapsed)
				if e.load == 0 { // -profile: the load side is not measured
					o0 = "-"
				}
				if p == "direct" {
					o1 = e.machine.busy[1]
				}
				steal = append(steal, fmt.Sprintf("%s/%.0f/%.0f", o0, o1, e.machine.steal))
				if p != "direct" && e.msgs > 0 {
					cpus = append(cpus, fmt.Sprintf("%.2f", float64(e.cpu)/1e3/float64(e.msgs)))
				}
				if t.upstream != "" {
					res = append(res, fmt.Sprintf("%d/%d", e.resumed, e.full+e.resumed))
				}
			}
			line := fmt.Sprintf("  %-9s %-9s ops/s %s", t.name, p, strings.Join(rates, ", "))
			if len(cpus) > 0 {
				line += fmt.Sprintf("; CPU us/op %s", strings.Join(cpus, ", "))
			}
			if len(res) > 0 {
				line += fmt.Sprintf("; resumed %s", strings.Join(res, ", "))
			}
			line += fmt.Sprintf("; others %% %s", strings.Join(steal, ", "))
			fmt.Fprintln(w, line)
		}
	}
	for _, p := range cols {
		for i, ir := range r.idle[p] {
			fmt.Fprintf(w, "  idle      %-9s run %d: VmRSS %d KiB before, %d KiB %s after opening %d", p, i+1, ir.before, ir.settled, cfg.idleSettle, ir.conns)
			if ir.rested != 0 {
				fmt.Fprintf(w, ", %d KiB after %s", ir.rested, ir.restedWaited)
			}
			fmt.Fprintln(w)
		}
	}
	for _, mode := range r.stormModes {
		for _, p := range stormCols {
			for i, s := range r.storm[mode][p] {
				fmt.Fprintf(w, "  storm     %-11s %s run %d: %.0f rejections/s (%d in %s), CPU %.1f us/rejection, %d errors, %d missed; JWT p50/p99 quiet %s/%s, storm %s/%s; RSS %d -> %d KiB; busy %% %.0f/%.0f, stolen %% %.0f\n",
					p, mode, i+1, float64(s.rejections)/s.elapsed.Seconds(), s.rejections, s.elapsed.Round(time.Millisecond), s.perRejection(), s.errors, s.missed,
					s.quiet.p50.Round(time.Microsecond), s.quiet.p99.Round(time.Microsecond), s.storm.p50.Round(time.Microsecond), s.storm.p99.Round(time.Microsecond),
					s.rssBefore, s.rssAfter, s.machine.busy[0], s.machine.busy[1], s.machine.steal)
			}
		}
	}
	if r.reportOut != "" {
		fmt.Fprintf(w, "\ngo run ./report/bench -size %s -runs %d:\n", cfg.reportSize, cfg.runs)
		for line := range strings.Lines(r.reportOut) {
			fmt.Fprintf(w, "  %s", line)
		}
	}
}
