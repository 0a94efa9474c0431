package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// loadTests are the closed-loop tests against long-lived instances.
// upstream names the echo backend's listener ("" plain, else a TLS one);
// sel is the -only name that selects the test.
var loadTests = []struct {
	name, sel string
	size      int // 0: upgrade
	label     string
	upstream  string
}{
	{"upgrade", "upgrade", 0, "upgrade", ""},
	{"tls", "tls", 0, "upgrade, TLS", "tls"},
	{"tls-nores", "tls", 0, "TLS, no resumption", "tls-nores"},
	{"echo64", "echo64", 64, "echo 64 B", ""},
	{"echo64k", "echo64k", 64 << 10, "echo 64 KiB", ""},
}

func rotate[T any](s []T, n int) []T {
	if len(s) == 0 {
		return nil
	}
	n %= len(s)
	return append(slices.Clone(s[n:]), s[:n]...)
}

func progress(format string, a ...any) { fmt.Fprintf(os.Stderr, format+"\n", a...) }

// instanceFor is what an instance of a load test forwards to.
func (e *env) instanceFor(upstream string) instance {
	if upstream == "" {
		return instance{Upstream: e.backend}
	}
	return instance{Upstream: e.tlsAddr[upstream], TLS: true, CA: e.pki.ca}
}

// runProxyTests runs the upgrade and echo tests against long-lived
// instances (one per peer and upstream) and the idle test against fresh
// ones, interleaving peers (their order rotates every run).
func runProxyTests(ctx context.Context, e *env, cfg config, tk *tokens, res *results) error {
	type key struct{ peer, upstream string }
	insts := map[key]*peer{}
	defer func() {
		for _, p := range insts {
			p.stop()
		}
	}()
	get := func(d peerDef, upstream string) (*peer, error) {
		k := key{d.name, upstream}
		if p := insts[k]; p != nil {
			return p, nil
		}
		if d.name == "direct" {
			insts[k] = &peer{name: "direct", base: "ws://" + e.backend, stop: func() {}}
			return insts[k], nil
		}
		p, err := e.start(d, e.instanceFor(upstream), "1")
		if err != nil {
			return nil, err
		}
		insts[k] = p
		return p, nil
	}
	// Start every instance first, so none starts inside another's window.
	for _, t := range loadTests {
		if !cfg.only[t.sel] {
			continue
		}
		for _, d := range cfg.peers {
			if d.takes(t.sel) {
				if _, err := get(d, t.upstream); err != nil {
					return err
				}
			}
		}
	}
	for r := range cfg.runs {
		for _, t := range loadTests {
			if !cfg.only[t.sel] {
				continue
			}
			var ds []peerDef
			for _, d := range cfg.peers {
				if d.takes(t.sel) {
					ds = append(ds, d)
				}
			}
			for _, d := range rotate(ds, r) {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				p, _ := get(d, t.upstream)
				hooks := p.hooks(func() string {
					return filepath.Join(cfg.profile, fmt.Sprintf("%s-run%d.pprof", t.name, r+1))
				})
				m := meter{p.pid, e.loadPIDs}
				var f0, r0 int64
				if t.upstream != "" {
					f0, r0 = e.echoCtl.handshakes(t.upstream)
				}
				var er echoResult
				var err error
				if t.size == 0 {
					er, err = upgradeRun(ctx, p.base, tk, cfg.upConns, cfg.dur, m, hooks)
				} else {
					conns := cfg.smallConns
					if t.size > 4096 {
						conns = cfg.largeConns
					}
					er, err = echoRun(ctx, p.base, tk, conns, t.size, cfg.warm, cfg.dur, m, hooks)
				}
				if err != nil {
					return fmt.Errorf("%s via %s (run %d): %w", t.name, d.name, r+1, err)
				}
				tlsNote := ""
				if t.upstream != "" {
					f1, r1 := e.echoCtl.handshakes(t.upstream)
					er.full, er.resumed = f1-f0, r1-r0
					tlsNote = fmt.Sprintf("  TLS full %d resumed %d", er.full, er.resumed)
				}
				progress("run %d  %-9s %-9s %9.0f ops/s  p50 %8s  p99 %8s  cpu %6s  errors %d  others %.0f/%.0f/%.0f%%%s",
					r+1, t.name, d.name, float64(er.msgs)/er.elapsed.Seconds(), er.p50.Round(time.Microsecond), er.p99.Round(time.Microsecond), er.cpu, er.errs,
					er.machine.others(0, er.load, er.elapsed), er.machine.others(1, er.cpu, er.elapsed), er.machine.steal, tlsNote)
				res.add(t.name, d.name, er)
				time.Sleep(cfg.pause)
			}
		}
	}
	for _, p := range insts {
		p.stop()
	}
	clear(insts)
	if !cfg.only["idle"] {
		return nil
	}
	var ds []peerDef
	for _, d := range cfg.peers {
		if d.takes("idle") {
			ds = append(ds, d)
		}
	}
	for r := range cfg.runs {
		for _, d := range rotate(ds, r) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			p, err := e.start(d, e.instanceFor(""), "1")
			if err != nil {
				return err
			}
			// Warm up: a few connection lifetimes and echoes, so the
			// "before" figure is a running proxy's, not a cold one's.
			_, err = echoRun(ctx, p.base, tk, 32, 64, 200*time.Millisecond, 300*time.Millisecond, meter{}, noHooks())
			time.Sleep(500 * time.Millisecond)
			var ir idleResult
			if err == nil {
				ir, err = idleRun(ctx, p.base, tk, cfg.idleConns, cfg.idleSettle, cfg.idleRest, p.pid, func() {
					if p.ctl != nil { // -profile: what the idle connections hold
						fmt.Fprintf(p.ctl, "heap %s\n", filepath.Join(cfg.profile, fmt.Sprintf("heap-idle-run%d.pprof", r+1)))
						time.Sleep(2 * time.Second)
					}
				})
			}
			p.stop()
			if err != nil {
				return fmt.Errorf("idle via %s (run %d): %w", d.name, r+1, err)
			}
			progress("run %d  idle      %-9s before %d KiB, +%s %d KiB, +%s %d KiB (%d conns)",
				r+1, d.name, ir.before, cfg.idleSettle, ir.settled, ir.restedWaited, ir.rested, ir.conns)
			res.idle[d.name] = append(res.idle[d.name], ir)
		}
	}
	return nil
}

// runStormTests runs the reconnect storm against each peer that takes
// it, a fresh instance per run. The proxies forward the JWT clients to
// the FastAPI backend without its shim (pinned to core 0 with the load);
// without Debian's FastAPI, to the Go echo backend.
func runStormTests(ctx context.Context, e *env, cfg config, tk *tokens, res *results) error {
	var ds []peerDef
	for _, d := range cfg.peers {
		if d.takes("storm") {
			ds = append(ds, d)
		}
	}
	if len(ds) == 0 {
		return nil
	}
	upstream, hello := e.backend, false
	if bin, err := e.binary(stormUpstream); err == nil && bin != "" {
		e.bins[stormUpstream.name] = bin
		up, err := e.start(stormUpstream, instance{}, "0")
		if err != nil {
			return err
		}
		defer up.stop()
		upstream, hello = up.base[len("ws://"):], true
		res.stormUpstream = "the FastAPI backend (e2e/backend, uvicorn, core 0)"
	} else {
		fmt.Println("NOTE: FastAPI/uvicorn not found for /usr/bin/python3: the storm's proxies forward the JWT clients to the Go echo backend instead.")
		res.stormUpstream = "the Go echo backend (FastAPI not installed)"
	}
	// authgate runs the storm twice, with GOMAXPROCS=1 and with 2 (what
	// Go picks on a 0.5-CPU Render instance), on the same core.
	if i := slices.IndexFunc(ds, func(d peerDef) bool { return d.name == "authgate" }); i >= 0 {
		p2 := ds[i]
		p2.name, p2.env = stormP2, strings.Replace(p2.env, "GOMAXPROCS=1", "GOMAXPROCS=2", 1)
		ds = slices.Insert(ds, i+1, p2)
	}
	modes := []stormParams{cfg.storm}
	if cfg.storm.rate > 0 {
		closed := cfg.storm
		closed.rate = 0
		modes = []stormParams{closed, cfg.storm}
	}
	for r := range cfg.runs {
		for _, sp := range modes {
			for _, d := range rotate(ds, r) {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				p, err := e.start(d, instance{Upstream: upstream, Storm: true}, "1")
				if err != nil {
					return err
				}
				hooks := p.hooks(func() string {
					return filepath.Join(cfg.profile, fmt.Sprintf("storm-%s-run%d.pprof", sp.modeFile(), r+1))
				})
				sr, err := stormRun(ctx, e, p.base, tk, sp, hello || d.name == "backend", meter{proxy: p.pid}, hooks)
				p.stop()
				if err != nil {
					return fmt.Errorf("storm (%s) via %s (run %d): %w", sp.mode(), d.name, r+1, err)
				}
				progress("run %d  storm %-14s %-11s %7.0f rejections/s  CPU %.1f us/rejection  errors %d  missed %d  JWT p50/p99 quiet %s/%s storm %s/%s (%d, %d echoes, %d errors)  RSS %d -> %d KiB",
					r+1, sp.mode(), d.name, float64(sr.rejections)/sr.elapsed.Seconds(), sr.perRejection(), sr.errors, sr.missed,
					sr.quiet.p50.Round(time.Microsecond), sr.quiet.p99.Round(time.Microsecond), sr.storm.p50.Round(time.Microsecond), sr.storm.p99.Round(time.Microsecond),
					sr.quiet.n, sr.storm.n, sr.jwtErrs, sr.rssBefore, sr.rssAfter)
				if sr.firstErr != "" {
					progress("        first storm error: %s", sr.firstErr)
				}
				res.addStorm(sp.mode(), d.name, sr)
			}
		}
	}
	return nil
}
