package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"syscall"

	"authgate/proxy"
)

// runInproc is role "inproc" (-profile): authgate's own proxy.Run, as
// `authgate serve` runs it, in this process so it can CPU-profile itself.
// Its JSON log goes to stdout (a file). Lines on stdin control the
// profiler: "start PATH" begins a CPU profile into PATH, "stop" ends it.
// SIGTERM shuts it down.
func runInproc(cfg string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		var f *os.File
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			cmd, arg, _ := strings.Cut(sc.Text(), " ")
			switch {
			case cmd == "start" && f == nil:
				var err error
				if f, err = os.Create(arg); err == nil {
					if pprof.StartCPUProfile(f) != nil {
						f.Close()
						f = nil
					}
					if os.Getenv("BENCH_TRACE") != "" {
						if tf, err := os.Create(strings.TrimSuffix(arg, ".pprof") + ".trace"); err == nil {
							trace.Start(tf)
						}
					}
				}
			case cmd == "heap":
				writeHeap(arg)
			case cmd == "stop" && f != nil:
				trace.Stop()
				pprof.StopCPUProfile()
				f.Close()
				f = nil
			}
		}
		if f != nil {
			pprof.StopCPUProfile()
			f.Close()
		}
	}()
	return proxy.Run(ctx, proxy.RunOptions{ConfigPath: cfg, Logs: os.Stdout, Watch: true})
}

// writeHeap forces a GC, writes a heap profile to path and a summary of
// runtime.MemStats to path.txt: what the idle connections hold live, in
// stacks, and what RSS still holds as garbage or unreturned pages.
func writeHeap(path string) {
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	if f, err := os.Create(path); err == nil {
		pprof.Lookup("heap").WriteTo(f, 0)
		f.Close()
	}
	if f, err := os.Create(path + ".txt"); err == nil {
		fmt.Fprintf(f, "before GC: HeapAlloc %d KiB HeapInuse %d KiB HeapIdle %d KiB HeapReleased %d KiB StackInuse %d KiB Sys %d KiB NumGC %d\n",
			before.HeapAlloc>>10, before.HeapInuse>>10, before.HeapIdle>>10, before.HeapReleased>>10, before.StackInuse>>10, before.Sys>>10, before.NumGC)
		fmt.Fprintf(f, "after GC:  HeapAlloc %d KiB HeapInuse %d KiB HeapIdle %d KiB HeapReleased %d KiB StackInuse %d KiB Sys %d KiB NumGC %d goroutines %d\n",
			m.HeapAlloc>>10, m.HeapInuse>>10, m.HeapIdle>>10, m.HeapReleased>>10, m.StackInuse>>10, m.Sys>>10, m.NumGC, runtime.NumGoroutine())
		f.Close()
	}
}
